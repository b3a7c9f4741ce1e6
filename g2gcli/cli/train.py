"""``g2g train``: its options, parsed into a config, and one call into the library."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, Optional

import typer

from g2g.cli.common import _downloads, _flag, _print_json, _verb, app, console
from g2g.errors import EXIT_INTERRUPTED, G2GError
from g2g.config import GAN_LOSSES, ID_SCHEDULES, IDENTITY_ENCODERS, OPTIMIZERS, PERCEPTUAL_NETS, PRESETS


def _val_split(text: str) -> dict[str, Any]:
    """--val-people: a count of people or a fraction of them."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0  # not a number: refused below
    if not 0 <= value < float("inf") or (value >= 1 and value != int(value)):  # NaN and inf fail the range
        raise G2GError(f"--val-people must be a count (6) or a fraction (0.1), got {text!r}", usage=True)
    return {"val_people": int(value)} if value >= 1 else {"val_fraction": value, "val_people": 0}


# (owned by the trainer: train/trainer.py)
from g2g.config import TrainConfig as _TC  # torch-free: only its defaults are read here

_T = _TC()


@app.command()
@_verb
def train(
    data: Path = typer.Argument(..., help="A `g2g prepare` output folder (manifest.jsonl + aligned crops per identity)."),
    out: Path = typer.Option(..., "-o", "--out", help="Run folder: config.json, split.json, checkpoints/, metrics.jsonl, losses.png, samples/.", rich_help_panel="Data"),
    steps: int = typer.Option(_T.steps, help="Total generator updates of the run (with --resume: the new total).", rich_help_panel="Schedule"),
    batch_size: int = typer.Option(_T.batch_size, help="Pairs (a, b) of different people per step, per process (under torchrun: per GPU).", rich_help_panel="Schedule"),
    max_minutes: float = typer.Option(_T.max_minutes, "--max-minutes", help="Stop after this many minutes of training, with a checkpoint (a lease, a queue slot); 0: no limit. --resume goes on.", rich_help_panel="Schedule"),
    size: Optional[int] = typer.Option(None, help="Image side the model works at, px (default: the crop size in DATA/prepare_config.json).", rich_help_panel="Data"),
    preset: Literal[tuple(PRESETS)] = typer.Option("full", help="Model: tiny (tests, 2 CPU cores), small (CPU runs), full (FUNIT size): the seed's FUNIT generator; appearance (the default model's recipe: masked rest + identity photos warped onto the pose's expression, 64 px on a CPU), appearance-tiny (tests).", rich_help_panel="Model"),
    identity_encoder: Optional[Literal[IDENTITY_ENCODERS]] = typer.Option(None, "--identity-encoder", help="funit (the seed: whole rest, pooled class code into AdaIN); on the masked rest: appearance (identity photos warped onto the rest's geometry), pooled (funit's pooled code of the unwarped photos), dlib (frozen dlib embedding + trained projection); default: the preset's.", rich_help_panel="Model"),
    k_shot: int = typer.Option(_T.k_shot, help="Images of one person whose class codes are averaged into the identity code (K-shot).", rich_help_panel="Data"),
    alpha: float = typer.Option(_T.alpha_vgg, help="α: perceptual loss weight (cycle and self reconstructions vs originals).", rich_help_panel="Losses"),
    gamma: float = typer.Option(_T.gamma_cyc, help="γ: cycle-consistency L1 weight (a' vs a and b' vs b).", rich_help_panel="Losses"),
    lambda_adv: float = typer.Option(_T.lambda_adv, "--lambda-adv", help="λ_g: generator GAN loss weight.", rich_help_panel="Losses"),
    delta: float = typer.Option(_T.delta_id, help="δ: identity loss weight (dlib embedding distance of mixed vs target person); the final value of --id-schedule.", rich_help_panel="Losses"),
    zeta: float = typer.Option(_T.zeta_dis, help="ζ: discriminator loss scale, L_dis = ζ·(L_real + L_fake)/2.", rich_help_panel="Losses"),
    self_recon: float = typer.Option(_T.self_recon, help="Weight of the self-reconstruction L1, G(E_A(a), E_B(a)) vs a.", rich_help_panel="Losses"),
    gan_loss: Literal[GAN_LOSSES] = typer.Option(_T.gan_loss, help="hinge (FUNIT's) or nonsat (non-saturating logistic).", rich_help_panel="Losses"),
    id_schedule: Literal[ID_SCHEDULES] = typer.Option(_T.id_schedule, help="δ over training: constant; linear (ramp from --id-start over --id-warmup steps); step (raise from --id-start in --id-step-count equal steps, one every --id-step-every steps).", rich_help_panel="Schedule"),
    id_start: float = typer.Option(_T.id_start, help="δ at step 0 for the linear and step schedules.", rich_help_panel="Schedule"),
    id_warmup: int = typer.Option(_T.id_warmup, help="linear schedule: ramp length in steps (0: the whole run).", rich_help_panel="Schedule"),
    id_step_every: int = typer.Option(_T.id_step_every, help="step schedule: steps between two increases of δ.", rich_help_panel="Schedule"),
    id_step_count: int = typer.Option(_T.id_step_count, help="step schedule: number of equal increases up to --delta.", rich_help_panel="Schedule"),
    perceptual: Literal[PERCEPTUAL_NETS] = typer.Option(_T.perceptual, help="stlpips: shift-tolerant LPIPS VGG16, trained for perceptual similarity (not ImageNet classification), ships with stlpips-pytorch, works offline. vgg19: torchvision's ImageNet VGG19 features (weights must be cached or downloadable).", rich_help_panel="Losses"),
    erase_landmarks: bool = _flag(_T.erase_landmarks, "--erase-landmarks", help="Grey out eyes, nose and mouth (from the manifest's 5 landmarks) of the image that supplies the rest, so E_A cannot pass identity through.", rich_help_panel="Losses"),
    optimizer: Literal[OPTIMIZERS] = typer.Option(_T.optimizer, help="rmsprop (FUNIT) or adam.", rich_help_panel="Schedule"),
    lr: float = typer.Option(_T.lr_gen, help="Learning rate of generator and discriminator.", rich_help_panel="Schedule"),
    resume: bool = _flag(False, "--resume", help="Continue RUN from checkpoints/last.pt exactly (saved config; only --steps, --max-minutes, --device, --compile, --*-every, --workers change).", rich_help_panel="Run"),
    seed: int = typer.Option(_T.seed, help="Seed of weights, identity split and pair sampling (CPU runs repeat exactly).", rich_help_panel="Run"),
    val_people: str = typer.Option("0.1", "--val-people", help="People held out from training (sample sheets, g2g eval --split): a count (6) or a fraction (0.1).", rich_help_panel="Data"),
    device: str = typer.Option(_T.device, help="auto (CUDA when available), cpu, cuda, cuda:N. Under torchrun each process takes cuda:LOCAL_RANK.", rich_help_panel="Run"),
    compile: bool = _flag(_T.compile, "--compile", help="torch.compile the generator step (slow start, faster steps on GPU).", rich_help_panel="Run"),
    tensorboard: bool = _flag(False, "--tensorboard", help="Also log the losses and sample sheets for TensorBoard (RUN/tensorboard; pip install 'g2g[tensorboard]').", rich_help_panel="Run"),
    allow_download: bool = _flag(False, "--allow-download", help="Fetch optional weights that are not on disk (facenet, torchvision's VGG19); off: one clear line instead.", rich_help_panel="Run"),
    checkpoint_every: int = typer.Option(_T.checkpoint_every, help="Write checkpoints/step_XXXXXXXX.pt and last.pt every N steps (and on Ctrl-C).", rich_help_panel="Run"),
    sample_every: int = typer.Option(_T.sample_every, help="Write samples/step_XXXXXXXX.png (Original / Mixed / Reconstructed) and losses.png every N steps.", rich_help_panel="Run"),
    log_every: int = typer.Option(_T.log_every, help="Append a metrics.jsonl line (mean of each loss term, δ, images/s) every N steps.", rich_help_panel="Run"),
    workers: int = typer.Option(_T.workers, help="DataLoader processes decoding crops (0: in the main process).", rich_help_panel="Data"),
    flip: bool = _flag(_T.flip, "--flip/--no-flip", help="Random horizontal flips of training crops (landmarks follow).", rich_help_panel="Data"),
    init_from: Optional[Path] = typer.Option(None, "--init-from", help="Fine-tune: start the generator from a checkpoint, a run folder or an exported model folder (e.g. the one g2g ships); its architecture and size replace --preset and --size. Discriminator and optimisers start afresh.", rich_help_panel="Model"),
    as_json: bool = _flag(False, "--json", help="Also print the summary as JSON on stdout (the table goes to stderr).", rich_help_panel="Run"),
) -> None:
    """Cross-train E_A (rest), E_B (identity) and the AdaIN decoder on a `g2g prepare` folder. Ctrl-C checkpoints and stops.

    Multi-GPU: torchrun --nproc_per_node N -m g2g train DATA -o RUN OPTIONS (DistributedDataParallel; gloo on CPU, nccl on CUDA).
    """
    from g2g.train.trainer import build_config, result_table, train as _train

    _downloads(allow_download)

    cfg = build_config(data, preset, size, identity_encoder=identity_encoder, steps=steps, max_minutes=max_minutes, batch_size=batch_size, k_shot=k_shot, lr_gen=lr, lr_dis=lr,
                       optimizer=optimizer, alpha_vgg=alpha, gamma_cyc=gamma, lambda_adv=lambda_adv, delta_id=delta,
                       zeta_dis=zeta, self_recon=self_recon, gan_loss=gan_loss, id_schedule=id_schedule, id_start=id_start,
                       id_warmup=id_warmup, id_step_every=id_step_every, id_step_count=id_step_count,
                       perceptual=perceptual, erase_landmarks=erase_landmarks, seed=seed, device=device, compile=compile,
                       checkpoint_every=checkpoint_every, sample_every=sample_every, log_every=log_every, workers=workers,
                       flip=flip, tensorboard=tensorboard, **_val_split(val_people))
    result = _train(data, out, cfg, resume=resume, init_from=init_from)
    if result.world_size == 1 or int(os.environ.get("RANK", "0")) == 0:
        console.print(result_table(result))
        _print_json(result, as_json)
    if result.interrupted:
        raise typer.Exit(EXIT_INTERRUPTED)
