"""Cross training of E_A (rest), E_B (identity) and G: ``g2g train``, the loop around one step.

The loop: the run folder, the identity split, resume and --init-from, checkpoints,
logging, sample sheets, Ctrl-C. The step itself (networks, losses, optimisers) is
g2g.train.step, and what differs between recipes (generator, batches, sample
sheet) the run's recipe (g2g.train.recipes); torchrun helpers are
g2g.train.distributed; sheets and plots g2g.train.run_files.
"""

from __future__ import annotations

import contextlib
import json
import signal
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np
import torch

from g2g.config import DEFAULT_PRESET, IDENTITY_ENCODERS, TrainConfig, from_dict, get_preset
from g2g.io.files import append_jsonl, atomic_write_json
from g2g.io.runfolder import claim_output
from g2g.faces.preprocess import same_zoom
from g2g.progress import BatchProgress, say
from g2g.train.checkpoint import CheckpointError, latest_checkpoint, load_checkpoint, save_checkpoint
from g2g.train.dataset import Item, fixed_val_pairs, load_items, read_prepare_config, split_identities
from g2g.train.distributed import Dist, _all_mean, _any_flag, _init_dist
from g2g.train.recipes.base import DataPlan, RecipeData
from g2g.train.run_files import TensorBoardLog, _link_last, _truncate_metrics, plot_losses
from g2g.train import TrainError
from g2g.train.step import LOSS_TERMS, CrossTrainer, validate

if TYPE_CHECKING:
    from g2g.train.init_weights import InitWeights

__all__ = ["train", "build_config", "result_table", "TrainResult", "TrainError"]

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


@dataclass(frozen=True)
class _Run:
    """What one train() call works on, before any network is built."""

    data: Path
    run: Path
    cfg: TrainConfig
    d: Dist
    device: torch.device
    state: dict[str, Any] | None  # the checkpoint a resume continues from
    init: InitWeights | None  # --init-from's generator (fresh runs only)
    by_id: dict[str, list[Item]]
    train_ids: list[str]
    val_ids: list[str]
    val_pairs: list[tuple[str, str]]  # the sample sheet's fixed pairs

    @property
    def start(self) -> int:
        return int(self.state["step"]) if self.state is not None else 0

    @property
    def resumed_from(self) -> int | None:
        return self.start if self.state is not None else None

    @property
    def init_record(self) -> dict[str, Any] | None:
        """Where the weights began (kept across resumes; export copies it into g2g_model.json)."""
        if self.init is not None:
            return {"source": self.init.source, "step": self.init.step}
        return (self.state or {}).get("init_from")


# --- entry point -----------------------------------------------------------------------------------------------------


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
    r = _open_run(Path(data), Path(run), cfg, resume, init_from)
    if r.d.main:  # before anything is written into RUN (the recipe's data may cache there)
        claim_output(r.run, "train")
    trainer, batches = _build_step(r, progress)
    if r.d.main:
        _write_run_files(r)
    loop = _Loop(r, trainer, batches.val_batch, progress, on_step)
    with _stop_signals() as stop:
        loop.run(_loader(r, batches), stop)
    loop.close_interrupted()
    return _finish(r, loop)


def _open_run(data: Path, run: Path, cfg: TrainConfig, resume: bool, init_from: Path | None) -> _Run:
    """The run's config (saved, --init-from's or ``cfg``), the checkpoint it resumes, its data and split."""
    d, device = _init_dist(cfg.device)
    cfg, state = _resolve_config(run, cfg, resume)
    validate(cfg)
    notes: list[str] = []
    by_id = load_items(data, notes)
    for line in notes if d.main else []:
        say(f"[yellow]note:[/yellow] {line}")
    prep = read_prepare_config(data)
    init = _init_weights(init_from, prep) if (init_from is not None and state is None) else None
    if d.main:
        _note_enlarged_crops(data, prep, (init.model if init is not None else cfg.model).image_size)
    if init is not None:
        cfg = replace(cfg, model=init.model)
    elif state is None and prep.get("zoom") and not same_zoom(prep["zoom"], cfg.model.zoom):
        cfg = replace(cfg, model=replace(cfg.model, zoom=float(prep["zoom"])))  # the model records its crops' alignment
    train_ids, val_ids = _split(run, by_id, cfg, state)
    if len(train_ids) < 2:
        raise TrainError(f"{data}: fewer than 2 training identities after the split")
    val_pairs = fixed_val_pairs(by_id, val_ids, train_ids, VAL_PAIRS, cfg.seed)
    return _Run(data, run, cfg, d, device, state, init, by_id, train_ids, val_ids, val_pairs)


def _note_enlarged_crops(data: Path, prep: dict[str, Any], side: int) -> None:
    """Say so when DATA's crops are smaller than the model's side (they are resized up to it)."""
    try:
        crops = int(prep.get("size") or side)
    except (TypeError, ValueError):
        return
    if crops < side:
        say(f"[yellow]note:[/yellow] the crops in {data} are {crops} px and the model works at {side} px: they are "
            f"enlarged (g2g prepare --size {side} gives sharper training crops)")


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


def saved_steps(run: Path) -> int | None:
    """The total number of steps RUN was started (or last resumed) with, from RUN/config.json; None where there is
    none: what ``--resume`` without ``--steps`` goes on to."""
    try:
        steps = json.loads((Path(run) / "config.json").read_text())["train"]["steps"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return steps if isinstance(steps, int) and not isinstance(steps, bool) else None


def _init_weights(source: Path, prep: dict[str, Any]) -> InitWeights:
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


def _split(run: Path, by_id: dict[str, list[Item]], cfg: TrainConfig, state: dict | None
           ) -> tuple[list[str], list[str]]:
    """(training, held-out) identities: a resumed run's own split, else a fresh seeded one."""
    split_path = run / "split.json"
    if split_path.exists() and state is not None:
        split = json.loads(split_path.read_text())
        return [i for i in split["train"] if i in by_id], [i for i in split["val"] if i in by_id]
    return split_identities(list(by_id), cfg.val_fraction, cfg.seed, cfg.val_people)


def _build_step(r: _Run, progress: bool) -> tuple[CrossTrainer, RecipeData]:
    """The step (networks, optimisers) at the weights it starts from, and the recipe's batches."""
    trainer = CrossTrainer(r.cfg, r.device, ddp=r.d.world > 1)
    if progress and r.d.main:
        for line in trainer.recipe.warnings(r.cfg, r.device):
            say(f"[yellow]warning:[/yellow] {line}")
    batches = trainer.recipe.data(DataPlan(r.data, r.run, r.cfg, r.by_id, r.train_ids, r.val_ids, r.val_pairs,
                                           r.d.rank, trainer.identity))
    if r.state is not None:
        trainer.load_state(r.state)
    elif r.init is not None:
        trainer.gen.load_state_dict(r.init.state)
        trainer.ema.load_state_dict(r.init.state)
    return trainer, batches


def _write_run_files(r: _Run) -> None:
    """Write config.json and split.json; drop metrics a resume goes back over."""
    cfg, by_id = r.cfg, r.by_id
    atomic_write_json(r.run / "config.json", {
        "train": asdict(cfg), "data": str(r.data.resolve()), "world_size": r.d.world, "device": str(r.device),
        "torch": torch.__version__, "resumed_from": r.resumed_from,
        **({"init_from": r.init_record} if r.init_record else {}),
    })
    atomic_write_json(r.run / "split.json", {
        "seed": cfg.seed, "val_fraction": cfg.val_fraction, "train": r.train_ids, "val": r.val_ids,
        "images": {"train": sum(len(by_id[i]) for i in r.train_ids), "val": sum(len(by_id[i]) for i in r.val_ids)},
        "val_pairs": [[a, b] for a, b in r.val_pairs],
    })
    if r.state is not None:
        _truncate_metrics(r.run / "metrics.jsonl", r.start)


def _loader(r: _Run, batches: RecipeData) -> torch.utils.data.DataLoader:
    """The batches of steps start..steps (item t is the whole batch of step t)."""
    return torch.utils.data.DataLoader(
        batches.train, batch_size=None, sampler=range(r.start, r.cfg.steps), num_workers=r.cfg.workers,
        pin_memory=r.device.type == "cuda", persistent_workers=False,
    )


@contextlib.contextmanager
def _stop_signals() -> Iterator[dict[str, bool]]:
    """``{"flag"}``, set by the first Ctrl-C or SIGTERM (schedulers, timeout): finish the step, checkpoint, leave.
    A second Ctrl-C aborts. Handlers are installed from the main thread only, and restored on exit."""
    stop = {"flag": False}

    def _on_stop(signum, frame):
        stop["flag"] = True
        signal.signal(signal.SIGINT, signal.default_int_handler)

    old: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        old = {s: signal.signal(s, _on_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for s, h in old.items():
            signal.signal(s, h)


class _Loop:
    """The steps of one train() call: the logging window, sample sheets, checkpoints, the stop after a step."""

    def __init__(self, r: _Run, trainer: CrossTrainer, val_batch: dict[str, torch.Tensor], progress: bool,
                 on_step: Callable[[int, dict[str, float]], None] | None):
        cfg = r.cfg
        self.r, self.trainer, self.val_batch, self.on_step = r, trainer, val_batch, on_step
        self.ckpt_dir, self.metrics_path = r.run / "checkpoints", r.run / "metrics.jsonl"
        self.last_ckpt: Path | None = latest_checkpoint(r.run) if r.state is not None else None
        self.extra_state = {"data": {"train": r.train_ids, "val": r.val_ids, "seed": cfg.seed, "world_size": r.d.world}}
        if r.init_record:
            self.extra_state["init_from"] = r.init_record
        self.imgs_per_step = 2 * cfg.batch_size * r.d.world
        self.window: dict[str, list[float]] = {}
        self.t_start = self.t_log = time.perf_counter()
        self.step = self.sampled = r.start  # sampled: the step of the last sample sheet
        self.interrupted, self.time_limited, self.last_metrics = False, False, {}
        self.deadline = self.t_start + cfg.max_minutes * 60 if cfg.max_minutes > 0 else None
        self.tb = TensorBoardLog(r.run, cfg.tensorboard and r.d.main)  # before the bar: a missing package is one line
        self.bar = BatchProgress("train", "steps", cfg.steps, r.start, enabled=progress and r.d.main, counts=False,
                                 deadline=self.deadline)
        self.waited = self.waited_total = 0.0  # time spent waiting for the DataLoader (is it the bottleneck?)

    def run(self, loader: torch.utils.data.DataLoader, stop: dict[str, bool]) -> None:
        """Step through ``loader`` until its end or a stop; Ctrl-C between steps counts as a stop."""
        in_step = False
        t_ready = time.perf_counter()
        try:
            for batch in loader:
                w = time.perf_counter() - t_ready
                self.waited, self.waited_total = self.waited + w, self.waited_total + w
                in_step = True
                terms = self.trainer.step(batch, self.step)
                self.step, in_step = self.step + 1, False
                if self._after_step(terms, stop):
                    break
                t_ready = time.perf_counter()
        except KeyboardInterrupt:
            if in_step:  # a second Ctrl-C inside a step: abort, the last periodic checkpoint stays
                raise
            self.interrupted = True  # raised between steps (e.g. by on_step): the state is consistent, save it
        finally:
            self.bar.close()
            self.tb.close()

    def _after_step(self, terms: dict[str, float], stop: dict[str, bool]) -> bool:
        """Log, draw and checkpoint what is due after a step; whether the run stops here."""
        cfg, d, step = self.r.cfg, self.r.d, self.step
        for k, v in terms.items():
            self.window.setdefault(k, []).append(v)
        if self.on_step is not None:
            self.on_step(step, terms)
        out_of_time = self.deadline is not None and time.perf_counter() >= self.deadline
        stopping = _any_flag(stop["flag"] or out_of_time, d, self.r.device)  # every rank stops after the same step
        if step % cfg.log_every == 0 or step == cfg.steps or stopping:  # a stop logs, draws, checkpoints
            self._log(stopping)
        else:
            self.bar.set(step)
            if step % cfg.sample_every == 0 and d.main:
                self.write_samples(step)
        if (step % cfg.checkpoint_every == 0 or step == cfg.steps or stopping) and d.main:
            self.last_ckpt = self.save(step)
        if stopping:
            self.interrupted, self.time_limited = stop["flag"], not stop["flag"]
        return stopping

    def _log(self, stopping: bool) -> None:
        """A metrics.jsonl line of the window's means (all ranks), with the sample sheet's numbers when one is due."""
        cfg, d, step = self.r.cfg, self.r.d, self.step
        keys = sorted(self.window)
        means = _all_mean([float(np.mean(self.window[k])) for k in keys], d, self.r.device)
        now = time.perf_counter()
        span = max(now - self.t_log, 1e-9)
        self.last_metrics = {"step": step, **dict(zip(keys, means)),
                             "images_per_s": self.imgs_per_step * len(self.window[keys[0]]) / span,
                             "data_wait": self.waited / span, "time": round(now - self.t_start, 3)}
        self.window, self.t_log, self.waited = {}, now, 0.0
        if (step % cfg.sample_every == 0 or step == cfg.steps or stopping) and d.main:
            self.last_metrics.update(self.write_samples(step))
        if d.main:
            append_jsonl(self.metrics_path, [self.last_metrics])
            self.tb.scalars(self.last_metrics)
        self.bar.set(step, _loss_line(self.last_metrics))

    def save(self, step: int) -> Path:
        """checkpoints/step_XXXXXXXX.pt, and last.pt pointing at it."""
        path = self.ckpt_dir / f"step_{step:08d}.pt"
        if not all(bool(torch.isfinite(p).all()) for p in self.trainer.gen.parameters()):
            raise TrainError(f"step {step}: the generator's weights are no longer finite; not saving them (the last "
                             "checkpoint is the last good state: lower --lr and train again or --resume)")
        save_checkpoint(path, self.trainer.state(step, self.extra_state))
        _link_last(path, self.ckpt_dir / "last.pt")
        return path

    def write_samples(self, step: int) -> dict[str, float]:
        """The recipe's sample sheet of ``step`` and the loss plot; returns the sheet's validation numbers."""
        run = self.r.run
        s = self.trainer.sample(self.val_batch)
        image, val = self.trainer.recipe.write_sheet(run / "samples" / f"step_{step:08d}.png", s, self.r.val_pairs,
                                                     self.r.cfg.model)
        plot_losses(self.metrics_path, run / "losses.png")
        self.tb.sheet(image, step)
        self.sampled = step
        return val

    def close_interrupted(self) -> None:
        """After a stop between steps (on_step raised): the checkpoint and sheet of the last step, where missing."""
        step = self.step
        if self.interrupted and self.r.d.main and step > self.r.start:
            if self.last_ckpt is None or not self.last_ckpt.name.endswith(f"{step:08d}.pt"):
                self.last_ckpt = self.save(step)
            if self.sampled != step:
                self.write_samples(step)


def _finish(r: _Run, loop: _Loop) -> TrainResult:
    """The final loss plot, the end of the process group, and the result of this call."""
    if r.d.main and loop.metrics_path.exists():
        plot_losses(loop.metrics_path, r.run / "losses.png")
    if r.d.world > 1:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
    seconds = time.perf_counter() - loop.t_start
    return TrainResult(run=r.run, step=loop.step, steps=r.cfg.steps, checkpoint=loop.last_ckpt,
                       interrupted=loop.interrupted, time_limited=loop.time_limited, resumed_from=r.resumed_from,
                       images_per_s=loop.imgs_per_step * (loop.step - r.start) / max(seconds, 1e-9), seconds=seconds,
                       world_size=r.d.world, data_wait=loop.waited_total / max(seconds, 1e-9),
                       metrics=loop.last_metrics)


def _loss_line(metrics: dict[str, float]) -> str:
    """images/s and each loss term of a metrics.jsonl line, for the progress display."""
    terms = " ".join(f"{k} {metrics[k]:.3f}" for k in (*LOSS_TERMS, "delta") if k in metrics)
    wait = f", data wait {metrics['data_wait']:.0%}" if "data_wait" in metrics else ""
    return f"{metrics['images_per_s']:.1f} img/s{wait} | {terms}"


def build_config(data: Path, preset: str = DEFAULT_PRESET, size: int | None = None, identity_encoder: str | None = None,
                 base_fixes: str | None = None, residual_sigma: float | None = None, **fields: Any) -> TrainConfig:
    """TrainConfig of ``preset``'s recipe for ``data``, with ``fields`` (TrainConfig fields) replacing its own.

    The model works at ``size`` px, default the preset's (crops of another size are resized to it, as g2g mix
    resizes), on crops aligned at DATA's zoom (prepare_config.json). ``base_fixes``: what an appearance decoder
    draws over (``ModelConfig.base_fixes``: "none" for the plain warped paste, or a ``g2g mix --fixes`` spec);
    ``residual_sigma``: the low-pass taken out of its residual (``ModelConfig.residual_sigma``, 0: none).
    """
    if identity_encoder is not None and identity_encoder not in IDENTITY_ENCODERS:
        raise TrainError(f"--identity-encoder must be one of {', '.join(IDENTITY_ENCODERS)}, got {identity_encoder!r}",
                         usage=True)
    recipe = get_preset(preset)
    prep = read_prepare_config(Path(data))
    model: dict[str, Any] = {"identity_encoder": identity_encoder} if identity_encoder else {}
    if base_fixes is not None:
        from g2g.methods.compose import base_fixes as parse_base

        fixes = parse_base(base_fixes)  # an unknown fix is a one-line usage error
        model["base_fixes"] = fixes.spec() if fixes else "none"
    if residual_sigma is not None:  # validate() checks it with the other options
        model["residual_sigma"] = float(residual_sigma)
    if size:
        model["image_size"] = int(size)
    if prep.get("zoom"):
        model["zoom"] = float(prep["zoom"])
    return recipe.config(model, **fields)


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
