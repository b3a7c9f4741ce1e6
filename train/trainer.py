"""Cross training of E_A (rest), E_B (identity) and G: ``g2g train``, the loop around one step.

The loop: the run folder, the identity split, resume and --init-from, checkpoints,
logging, sample sheets, Ctrl-C. The step itself (networks, losses, optimisers) is
g2g.train.step (the seed's FUNIT recipe) and g2g.train.appearance_step (the
appearance recipe); torchrun helpers are g2g.train.distributed; sheets and plots
g2g.train.run_files.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from g2g.config import TrainConfig, from_dict
from g2g.fsutil import append_jsonl, atomic_write_json, claim_output
from g2g.preprocess import same_zoom
from g2g.progress import BatchProgress, say
from g2g.train import losses as L
from g2g.train.checkpoint import CheckpointError, latest_checkpoint, load_checkpoint, save_checkpoint
from g2g.train.data import PairBatches, fixed_val_pairs, load_items, make_batch, read_prepare_config, split_identities
from g2g.train.distributed import Dist, _all_mean, _any_flag, _init_dist, resolve_device
from g2g.train.run_files import (TensorBoardLog, _link_last, _truncate_metrics, plot_losses, write_appearance_sheet,
                                 write_sample_sheet)
from g2g.train.step import (LOSS_TERMS, CrossForward, CrossTrainer, TrainError, build_generator, ema_beta, ema_update,
                            load_identity, make_optimizer, validate)

__all__ = ["train", "build_config", "result_table", "TrainResult", "TrainError", "CrossTrainer", "CrossForward",
           "build_generator", "resolve_device", "Dist", "ema_beta", "ema_update", "load_identity", "make_optimizer",
           "validate", "plot_losses", "write_sample_sheet"]

# fields that may change when resuming; everything else (architecture, losses, seed) comes from the checkpoint
RUNTIME_FIELDS = ("steps", "max_minutes", "device", "checkpoint_every", "sample_every", "log_every", "workers", "compile", "amp")
VAL_PAIRS = 4


@dataclass
class TrainResult:
    run: Path
    step: int  # last completed step
    steps: int  # the run's horizon (cfg.steps)
    checkpoint: Path | None  # last checkpoint written
    interrupted: bool  # stopped early by Ctrl-C (a checkpoint was written)
    time_limited: bool  # stopped by --max-minutes (a checkpoint was written)
    resumed_from: int | None  # step the run resumed at, if any
    images_per_s: float  # 2·batch·world images per step / wall time per step, over this call
    data_wait: float  # share of this call's wall time spent waiting for batches (high: the DataLoader limits)
    seconds: float
    world_size: int
    metrics: dict[str, float] = field(default_factory=dict)  # last logged line


# --- entry point -----------------------------------------------------------------------------------------------------


def _resolve_config(run: Path, cfg: TrainConfig, resume: bool) -> tuple[TrainConfig, dict | None]:
    """The run's config and the state to resume from (None for a fresh run)."""
    ckpts = list((run / "checkpoints").glob("*.pt")) if (run / "checkpoints").is_dir() else []
    if not resume:
        if ckpts:
            raise TrainError(f"{run} already holds a training run ({len(ckpts)} checkpoints); "
                             "pass --resume to continue it or choose another -o folder")
        return cfg, None
    if not ckpts:
        return cfg, None  # --resume on a new folder simply starts
    try:
        state = load_checkpoint(latest_checkpoint(run))
    except CheckpointError as e:
        raise TrainError(str(e)) from None
    saved = from_dict(TrainConfig, state["config"])
    merged = replace(saved, **{k: getattr(cfg, k) for k in RUNTIME_FIELDS})
    if merged.steps <= state["step"]:
        raise TrainError(f"{run} is already at step {state['step']} of {saved.steps}; pass a larger --steps to go on")
    return merged, state


def _init_weights(source: Path, prep: dict[str, Any]):
    """Weights for --init-from; the crops must be aligned as the source model's were."""
    from g2g.train.init_weights import InitError, load_init_weights

    try:
        init = load_init_weights(source)
    except InitError as e:
        raise TrainError(str(e)) from None
    if prep.get("zoom") and not same_zoom(prep["zoom"], init.model.zoom):
        raise TrainError(f"--init-from {source}: its model was trained on crops at zoom {init.model.zoom}, "
                         f"these were prepared at zoom {prep['zoom']}; prepare them with --zoom {init.model.zoom}")
    return init


def train(data: Path, run: Path, cfg: TrainConfig, resume: bool = False, progress: bool = True,
          on_step: Callable[[int, dict[str, float]], None] | None = None,
          init_from: Path | None = None) -> TrainResult:
    """Cross-train on the ``g2g prepare`` folder ``data``, writing the run folder ``run``.

    ``resume`` continues from RUN/checkpoints/last.pt with the saved config (only
    the fields in RUNTIME_FIELDS, e.g. ``steps``, come from ``cfg``). Ctrl-C stops
    after the current step, writes a checkpoint and returns ``interrupted=True``.
    Under ``torchrun`` each process trains on its own share of pairs and rank 0
    writes the files; ``batch_size`` is per process. ``on_step(step, terms)`` is
    called after every step (tests, notebooks). ``init_from`` (a checkpoint, run
    folder or ONNX bundle) gives a fresh run its generator weights and architecture
    (see g2g.train.init_weights); a resumed run ignores it.
    """
    data, run = Path(data), Path(run)
    d, device = _init_dist(cfg.device)
    cfg, state = _resolve_config(run, cfg, resume)
    validate(cfg)
    by_id = load_items(data)
    prep = read_prepare_config(data)
    init = _init_weights(init_from, prep) if (init_from is not None and state is None) else None
    init_record = {"source": init.source, "step": init.step} if init is not None else (state or {}).get("init_from")
    if init is not None:
        cfg = replace(cfg, model=init.model)
    elif state is None and prep.get("zoom") and not same_zoom(prep["zoom"], cfg.model.zoom):
        cfg = replace(cfg, model=replace(cfg.model, zoom=float(prep["zoom"])))  # the model records its crops' alignment

    split_path = run / "split.json"
    if split_path.exists() and state is not None:
        split = json.loads(split_path.read_text())
        train_ids = [i for i in split["train"] if i in by_id]
        val_ids = [i for i in split["val"] if i in by_id]
    else:
        train_ids, val_ids = split_identities(list(by_id), cfg.val_fraction, cfg.seed, cfg.val_people)
    if len(train_ids) < 2:
        raise TrainError(f"{data}: fewer than 2 training identities after the split")
    val_pairs = fixed_val_pairs(by_id, val_ids, train_ids, VAL_PAIRS, cfg.seed)
    size = cfg.model.image_size
    trainer = CrossTrainer(cfg, device, ddp=d.world > 1)
    if progress and d.main and device.type == "cpu" and not cfg.model.masked_rest and cfg.model.content_dim >= 64:
        say("[yellow]warning:[/yellow] a FUNIT-size model on a CPU: each step takes minutes (the first progress line "
            "gives the ETA); --preset appearance is the recipe sized for a CPU")
    appearance, warp = cfg.model.masked_rest, cfg.model.warped_identity
    if appearance:
        from g2g.train.appearance_data import AppearanceBatches, embed_bank, load_bank

        cache = run / "cache" / "landmarks68.npz"
        bank = load_bank(data, train_ids, size, cfg.model.zoom, cache)
        val_bank = load_bank(data, val_ids if len(val_ids) >= 2 else val_ids + train_ids[:2], size, cfg.model.zoom,
                             cache, max_per_person=4)
        if cfg.model.identity_encoder == "dlib":  # frozen: each crop's embedding once, cached in the run
            for b in (bank, val_bank):
                b.emb = embed_bank(b, trainer.identity, run / "cache" / "dlib_embeddings.npz")
        val_batch = AppearanceBatches(val_bank, 2 * VAL_PAIRS, cfg.seed, flip=False, jitter=False, warp=warp)[0]
    else:
        val_groups = [(by_id[a][: cfg.k_shot], by_id[b][: cfg.k_shot]) for a, b in val_pairs]
        val_batch = make_batch(data, val_groups, size)

    start = 0
    if state is not None:
        trainer.load_state(state)
        start = int(state["step"])
    elif init is not None:
        trainer.gen.load_state_dict(init.state)
        trainer.ema.load_state_dict(init.state)
    ckpt_dir, metrics_path = run / "checkpoints", run / "metrics.jsonl"
    if d.main:
        claim_output(run, "train")
        atomic_write_json(run / "config.json", {
            "train": asdict(cfg), "data": str(data.resolve()), "world_size": d.world, "device": str(device),
            "torch": torch.__version__, "resumed_from": start if state is not None else None,
            **({"init_from": init_record} if init_record else {}),
        })
        atomic_write_json(split_path, {
            "seed": cfg.seed, "val_fraction": cfg.val_fraction, "train": train_ids, "val": val_ids,
            "images": {"train": sum(len(by_id[i]) for i in train_ids), "val": sum(len(by_id[i]) for i in val_ids)},
            "val_pairs": [[a, b] for a, b in val_pairs],
        })
        if state is not None:
            _truncate_metrics(metrics_path, start)

    if appearance:
        dataset = AppearanceBatches(bank, cfg.batch_size, cfg.seed, d.rank, cfg.flip, cfg.steps, warp=warp)
    else:
        dataset = PairBatches(data, by_id, train_ids, cfg.batch_size, cfg.k_shot, size, cfg.seed, d.rank, cfg.flip,
                              cfg.steps)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=None, sampler=range(start, cfg.steps), num_workers=cfg.workers,
        pin_memory=device.type == "cuda", persistent_workers=False,
    )

    stop = {"flag": False}
    old_handlers: dict[int, Any] = {}

    def _on_stop(signum, frame):  # first Ctrl-C or SIGTERM (schedulers, timeout): finish the step, checkpoint,
        stop["flag"] = True  # leave; a second Ctrl-C aborts
        signal.signal(signal.SIGINT, signal.default_int_handler)

    if threading.current_thread() is threading.main_thread():
        old_handlers = {s: signal.signal(s, _on_stop) for s in (signal.SIGINT, signal.SIGTERM)}

    last_ckpt: Path | None = latest_checkpoint(run) if state is not None else None
    extra_state = {"data": {"train": train_ids, "val": val_ids, "seed": cfg.seed, "world_size": d.world}}
    if init_record:
        extra_state["init_from"] = init_record  # kept across resumes; export copies it into g2g_model.json

    def save(step: int) -> Path:
        path = ckpt_dir / f"step_{step:08d}.pt"
        save_checkpoint(path, trainer.state(step, extra_state))
        _link_last(path, ckpt_dir / "last.pt")
        return path

    def write_samples(step: int) -> dict[str, float]:
        s = trainer.sample(val_batch)
        sheet = run / "samples" / f"step_{step:08d}.png"
        if appearance:
            image = write_appearance_sheet(sheet, s, "Warped paste" if warp else "Masked rest")
            val = {"val_rec": float((s["recon"] - s["identity"]).abs().mean())}
        else:
            image = write_sample_sheet(sheet, s, val_pairs)
            n = len(val_pairs)
            val = {"val_cyc": float(L.l1(s["recon"][:n], s["original"][:n]) + L.l1(s["recon"][n:], s["original"][n:]))}
        plot_losses(metrics_path, run / "losses.png")
        tb.sheet(image, step)
        return val

    imgs_per_step = 2 * cfg.batch_size * d.world
    window: dict[str, list[float]] = {}
    t_start = t_log = time.perf_counter()
    step, interrupted, time_limited, last_metrics, in_step = start, False, False, {}, False
    deadline = t_start + cfg.max_minutes * 60 if cfg.max_minutes > 0 else None
    sampled = start  # the step of the last sample sheet
    tb = TensorBoardLog(run, cfg.tensorboard and d.main)  # before the bar: a missing package is one line, no bar left
    bar = BatchProgress("train", "steps", cfg.steps, start, enabled=progress and d.main, counts=False, deadline=deadline)
    waited = waited_total = 0.0
    t_ready = time.perf_counter()  # time spent waiting for the DataLoader (is it the bottleneck?)
    try:
        for batch in loader:
            w = time.perf_counter() - t_ready
            waited, waited_total = waited + w, waited_total + w
            in_step = True
            terms = trainer.step(batch, step)
            step, in_step = step + 1, False
            for k, v in terms.items():
                window.setdefault(k, []).append(v)
            if on_step is not None:
                on_step(step, terms)
            out_of_time = deadline is not None and time.perf_counter() >= deadline
            stopping = _any_flag(stop["flag"] or out_of_time, d, device)  # every rank stops after the same step
            logged = step % cfg.log_every == 0 or step == cfg.steps or stopping  # a stop logs, draws, checkpoints
            if logged:
                keys = sorted(window)
                means = _all_mean([float(np.mean(window[k])) for k in keys], d, device)
                now = time.perf_counter()
                ips = imgs_per_step * len(window[keys[0]]) / max(now - t_log, 1e-9)
                last_metrics = {"step": step, **dict(zip(keys, means)), "images_per_s": ips,
                                "data_wait": waited / max(now - t_log, 1e-9), "time": round(now - t_start, 3)}
                window, t_log, waited = {}, now, 0.0
                if step % cfg.sample_every == 0 or step == cfg.steps or stopping:
                    if d.main:
                        last_metrics.update(write_samples(step))
                        sampled = step
                if d.main:
                    append_jsonl(metrics_path, [last_metrics])
                    tb.scalars(last_metrics)
                bar.set(step, _loss_line(last_metrics))
            else:
                bar.set(step)
                if step % cfg.sample_every == 0 and d.main:
                    write_samples(step)
                    sampled = step
            if step % cfg.checkpoint_every == 0 or step == cfg.steps or stopping:
                if d.main:
                    last_ckpt = save(step)
            if stopping:
                interrupted, time_limited = stop["flag"], not stop["flag"]
                break
            t_ready = time.perf_counter()
    except KeyboardInterrupt:
        if in_step:  # a second Ctrl-C inside a step: abort, the last periodic checkpoint stays
            raise
        interrupted = True  # raised between steps (e.g. by on_step): the state is consistent, save it
    finally:
        bar.close()
        tb.close()
        for s, h in old_handlers.items():
            signal.signal(s, h)
    if interrupted and d.main and step > start:  # stopped between steps (on_step raised): checkpoint and sheet
        if last_ckpt is None or not last_ckpt.name.endswith(f"{step:08d}.pt"):
            last_ckpt = save(step)
        if sampled != step:
            write_samples(step)
    if d.main and metrics_path.exists():
        plot_losses(metrics_path, run / "losses.png")
    if d.world > 1:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
    seconds = time.perf_counter() - t_start
    done = step - start
    return TrainResult(run=run, step=step, steps=cfg.steps, checkpoint=last_ckpt, interrupted=interrupted,
                       time_limited=time_limited,
                       resumed_from=start if state is not None else None,
                       images_per_s=imgs_per_step * done / max(seconds, 1e-9), seconds=seconds, world_size=d.world,
                       data_wait=waited_total / max(seconds, 1e-9),
                       metrics=last_metrics)


def _loss_line(metrics: dict[str, float]) -> str:
    """images/s and each loss term of a metrics.jsonl line, for the progress display."""
    terms = " ".join(f"{k} {metrics[k]:.3f}" for k in (*LOSS_TERMS, "delta") if k in metrics)
    wait = f", data wait {metrics['data_wait']:.0%}" if "data_wait" in metrics else ""
    return f"{metrics['images_per_s']:.1f} img/s{wait} | {terms}"


def build_config(data: Path, preset: str = "full", size: int | None = None, identity_encoder: str | None = None,
                 **fields: Any) -> TrainConfig:
    """TrainConfig for ``data``: the preset's model at ``size`` (default: the crops' size from prepare_config.json)."""
    from g2g.config import IDENTITY_ENCODERS, model_preset

    prep = read_prepare_config(Path(data))
    if identity_encoder is not None and identity_encoder not in IDENTITY_ENCODERS:
        raise TrainError(f"--identity-encoder must be one of {', '.join(IDENTITY_ENCODERS)}, got {identity_encoder!r}",
                         usage=True)
    model = model_preset(preset, **({"identity_encoder": identity_encoder} if identity_encoder else {}))
    size = size or int(prep.get("size") or model.image_size)
    model = replace(model, image_size=size, zoom=float(prep.get("zoom") or model.zoom))
    return TrainConfig(model=model, **fields)


def result_table(r: TrainResult):
    """A rich table of a finished (or interrupted) run."""
    from rich.table import Table

    t = Table(title=f"g2g train: {r.run}", show_header=False)
    state = ("interrupted (checkpoint written)" if r.interrupted else "time limit (checkpoint written)"
             if r.time_limited else "done" if r.step >= r.steps else "stopped")
    t.add_row("steps", f"{r.step} / {r.steps} ({state})" + (f", resumed at {r.resumed_from}" if r.resumed_from else ""))
    t.add_row("throughput", f"{r.images_per_s:.1f} images/s, {r.seconds:.0f} s, {r.world_size} process(es), "
                            f"{r.data_wait:.0%} of it waiting for batches")
    if r.metrics:
        t.add_row("last losses", " ".join(f"{k} {r.metrics[k]:.3f}" for k in (*LOSS_TERMS, "delta") if k in r.metrics))
    t.add_row("checkpoint", str(r.checkpoint))
    t.add_row("samples", str(r.run / "samples"))
    return t
