"""``g2g train``: its options, parsed into a config, and one call into the library.

Every option that sets a TrainConfig field has that field's name (``--gamma-cyc`` sets ``gamma_cyc``); a recipe
option left out takes the preset's value, so its default is None here and --help shows the default preset's value.
The long explanations are docs/cli/train.md.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Literal, Optional

import typer

from g2g.cli.common import JSON_HELP, _downloads, _flag, _print_json, _verb, app, console
from g2g.errors import EXIT_INTERRUPTED, G2GError
from g2g.config import (DEFAULT_PRESET, DISCRIMINATORS, GAN_LOSSES, ID_SCHEDULES, IDENTITY_ENCODERS, OPTIMIZERS,
                        PERCEPTUAL_NETS, PRESETS, RECIPE_FIELDS, TrainConfig, format_value)

_T = TrainConfig()  # torch-free: the defaults of the options that belong to the run, not to the recipe
_D = PRESETS[DEFAULT_PRESET].config()  # the default recipe: what --help shows for each recipe option
_FIELDS = {f.name for f in dataclasses.fields(TrainConfig)} - {"model", "val_people", "val_fraction"}  # --val-people
_ALIASES = {"alpha": "alpha_vgg", "gamma": "gamma_cyc", "delta": "delta_id", "zeta": "zeta_dis"}  # hidden: the old names


def _val_split(text: str) -> dict[str, Any]:
    """--val-people: a count of people or a fraction of them."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0  # not a number: refused below
    if not 0 <= value < float("inf") or (value >= 1 and value != int(value)):  # NaN and inf fail the range
        raise G2GError(f"--val-people must be a count (6) or a fraction (0.1), got {text!r}", usage=True)
    return {"val_people": int(value)} if value >= 1 else {"val_fraction": value, "val_people": 0}


def _recipe(field: str, *aliases: str, help: str, panel: str, flag: str = "") -> Any:
    """The option of recipe field ``field``, named after it (plus the old ``aliases``): None unless given."""
    names = (flag or f"--{field.replace('_', '-')}", *aliases)
    return typer.Option(None, *names, help=help, show_default=format_value(getattr(_D, field)), rich_help_panel=panel,
                        **({"metavar": ""} if flag else {}))


@app.command()
@_verb
def train(
    data: Path = typer.Argument(..., help="A `g2g prepare` output folder (manifest.jsonl and aligned crops per person)."),
    out: Path = typer.Option(..., "-o", "--out", help="Run folder: config.json, split.json, checkpoints/, metrics.jsonl, samples/.", rich_help_panel="Data"),
    preset: str = typer.Option(DEFAULT_PRESET, metavar="PRESET", help=f"Recipe: {', '.join(n for n in PRESETS if not n.endswith('-tiny'))}.", rich_help_panel="Model"),
    size: Optional[int] = typer.Option(None, help="Side the model works at, px (crops of another size are resized to it).", show_default=str(_D.model.image_size), rich_help_panel="Model"),
    identity_encoder: Optional[Literal[IDENTITY_ENCODERS]] = typer.Option(None, "--identity-encoder", metavar="ENCODER", help=f"{', '.join(IDENTITY_ENCODERS)}: in place of the preset's.", show_default=_D.model.identity_encoder, rich_help_panel="Model"),
    base_fixes: Optional[str] = typer.Option(None, "--base-fixes", metavar="FIXES", help="What an appearance decoder draws over: none (the warped paste) or a --fixes spec.", show_default=_D.model.base_fixes, rich_help_panel="Model"),
    residual_sigma: Optional[float] = typer.Option(None, "--residual-sigma", metavar="PX", help="Take a Gaussian low-pass of σ px out of the decoder's residual: it redraws detail only.", show_default=format_value(_D.model.residual_sigma), rich_help_panel="Model"),
    init_from: Optional[Path] = typer.Option(None, "--init-from", help="Fine-tune from a checkpoint, run or model folder (its architecture, not the preset's).", rich_help_panel="Model"),
    steps: Optional[int] = _recipe("steps", help="Total generator updates (with --resume: a new total; without: the run's own).", panel="Schedule"),
    batch_size: Optional[int] = _recipe("batch_size", help="Pairs of different people per step, per process (under torchrun: per GPU).", panel="Schedule"),
    max_minutes: float = typer.Option(_T.max_minutes, "--max-minutes", help="Stop after this many minutes with a checkpoint (--resume goes on); 0: no limit.", rich_help_panel="Schedule"),
    optimizer: Optional[Literal[OPTIMIZERS]] = _recipe("optimizer", help="rmsprop (FUNIT's) or adam.", panel="Schedule"),
    lr: Optional[float] = typer.Option(None, help="Learning rate of generator and discriminator (--lr-gen, --lr-dis: one each).", show_default=format_value(_D.lr_gen), rich_help_panel="Schedule"),
    lr_gen: Optional[float] = _recipe("lr_gen", help="Generator learning rate.", panel="Schedule"),
    lr_dis: Optional[float] = _recipe("lr_dis", help="Discriminator learning rate.", panel="Schedule"),
    weight_decay: Optional[float] = _recipe("weight_decay", help="Weight decay of both optimisers.", panel="Schedule"),
    beta1: Optional[float] = _recipe("beta1", help="Adam's β1.", panel="Schedule"),
    beta2: Optional[float] = _recipe("beta2", help="Adam's β2.", panel="Schedule"),
    ema_beta: Optional[float] = _recipe("ema_beta", help="Decay of the generator's EMA (sample sheets and export use it).", panel="Schedule"),
    id_schedule: Optional[Literal[ID_SCHEDULES]] = _recipe("id_schedule", help="δ over training: constant, linear (a ramp) or step (equal raises).", panel="Schedule"),
    id_start: Optional[float] = _recipe("id_start", help="δ at step 0 of the linear and step schedules.", panel="Schedule"),
    id_warmup: Optional[int] = _recipe("id_warmup", help="Linear schedule: ramp length in steps (0: the whole run).", panel="Schedule"),
    id_step_every: Optional[int] = _recipe("id_step_every", help="Step schedule: steps between two raises of δ.", panel="Schedule"),
    id_step_count: Optional[int] = _recipe("id_step_count", help="Step schedule: number of equal raises up to --delta-id.", panel="Schedule"),
    alpha_vgg: Optional[float] = _recipe("alpha_vgg", help="α: perceptual loss weight (reconstructions vs originals).", panel="Losses"),
    gamma_cyc: Optional[float] = _recipe("gamma_cyc", help="γ: cycle-consistency L1 weight.", panel="Losses"),
    lambda_adv: Optional[float] = _recipe("lambda_adv", help="λ_g: generator GAN loss weight.", panel="Losses"),
    delta_id: Optional[float] = _recipe("delta_id", help="δ: identity loss weight (dlib distance to the identity); --id-schedule's end.", panel="Losses"),
    zeta_dis: Optional[float] = _recipe("zeta_dis", help="ζ: discriminator loss scale, L_dis = ζ·(L_real + L_fake)/2.", panel="Losses"),
    self_recon: Optional[float] = _recipe("self_recon", help="Weight of the L1 between a photo and its own reconstruction.", panel="Losses"),
    gan_loss: Optional[Literal[GAN_LOSSES]] = _recipe("gan_loss", help="hinge (FUNIT's) or nonsat (non-saturating logistic).", panel="Losses"),
    perceptual: Optional[Literal[PERCEPTUAL_NETS]] = _recipe("perceptual", help="stlpips (shift-tolerant LPIPS, offline) or vgg19 (ImageNet VGG19).", panel="Losses"),
    discriminator: Optional[Literal[DISCRIMINATORS]] = _recipe("discriminator", help="patch (FUNIT's, from scratch) or projected (heads on frozen VGG16).", panel="Losses"),
    erase_landmarks: Optional[bool] = _recipe("erase_landmarks", flag="--erase-landmarks", help="Grey out eyes, nose and mouth of the image that supplies the rest.", panel="Losses"),
    k_shot: Optional[int] = _recipe("k_shot", help="Photos of one person averaged into the identity code (K-shot).", panel="Data"),
    val_people: str = typer.Option("0.1", "--val-people", help="People held out (sample sheets, eval --split): a count (6) or a fraction (0.1).", rich_help_panel="Data"),
    workers: int = typer.Option(_T.workers, help="DataLoader processes decoding crops (0: in the main process).", rich_help_panel="Data"),
    flip: Optional[bool] = _recipe("flip", flag="--flip/--no-flip", help="Random horizontal flips of training crops (landmarks follow).", panel="Data"),
    resume: bool = _flag(False, "--resume", help="Continue RUN from checkpoints/last.pt exactly, with its saved recipe.", rich_help_panel="Run"),
    seed: int = typer.Option(_T.seed, help="Seed of weights, identity split and pair sampling (CPU runs repeat exactly).", rich_help_panel="Run"),
    device: str = typer.Option(_T.device, help="auto (CUDA when there is one), cpu, cuda, cuda:N; torchrun: cuda:LOCAL_RANK.", rich_help_panel="Run"),
    amp: bool = _flag(_T.amp, "--amp/--no-amp", help="Mixed precision on CUDA (bf16 where the GPU has it, else fp16).", rich_help_panel="Run"),
    compile: bool = _flag(_T.compile, "--compile", help="torch.compile the generator step (slow start, faster steps on a GPU).", rich_help_panel="Run"),
    tensorboard: bool = _flag(False, "--tensorboard", help="Also log losses and sample sheets to RUN/tensorboard (needs the tensorboard package).", rich_help_panel="Run"),
    allow_download: bool = _flag(False, "--allow-download", help="Fetch optional weights not on disk (facenet, VGG19); off: one line instead.", rich_help_panel="Run"),
    checkpoint_every: int = typer.Option(_T.checkpoint_every, help="Write checkpoints/step_N.pt and last.pt every N steps (and on Ctrl-C).", rich_help_panel="Run"),
    sample_every: int = typer.Option(_T.sample_every, help="Write samples/step_N.png and losses.png every N steps.", rich_help_panel="Run"),
    log_every: int = typer.Option(_T.log_every, help="Append a metrics.jsonl line (each loss term, δ, images/s) every N steps.", rich_help_panel="Run"),
    alpha: Optional[float] = typer.Option(None, hidden=True), gamma: Optional[float] = typer.Option(None, hidden=True), delta: Optional[float] = typer.Option(None, hidden=True), zeta: Optional[float] = typer.Option(None, hidden=True),
    as_json: bool = _flag(False, "--json", help=JSON_HELP, rich_help_panel="Run"),
) -> None:
    """Train a model (a rest encoder, an identity encoder and a decoder) on a `g2g prepare` folder; Ctrl-C checkpoints.

    With no options it trains the shipped model's recipe (--preset appearance), whose values the defaults
    below show; every option: docs/cli/train.md.
    Several GPUs: torchrun --nproc_per_node N -m g2g train DATA -o RUN (DistributedDataParallel).
    """
    given = {k: v for k, v in locals().items() if k in _FIELDS and v is not None}  # option names are field names
    given |= {_ALIASES[k]: v for k, v in locals().items() if k in _ALIASES and v is not None and _ALIASES[k] not in given}
    from g2g.train.trainer import build_config, result_table, saved_steps, train as _train

    _downloads(allow_download)
    if lr is not None:  # --lr sets both; --lr-gen and --lr-dis win over it
        given = {"lr_gen": lr, "lr_dis": lr, **given}
    if resume and "steps" not in given and (own_steps := saved_steps(out)):  # to the run's own total, not the preset's
        given["steps"] = own_steps
    kept = [k for k in given if k in RECIPE_FIELDS and k != "steps"] + ["size"] * (size is not None)
    main = int(os.environ.get("RANK", "0")) == 0  # under torchrun only rank 0 speaks
    if resume and kept and main and any((out / "checkpoints").glob("*.pt")):
        console.print(f"[yellow]note:[/yellow] --resume goes on with the run's saved recipe; not applied: "
                      f"{', '.join('--' + k.replace('_', '-') for k in kept)}", soft_wrap=True)
    cfg = build_config(data, preset, size, identity_encoder=identity_encoder, base_fixes=base_fixes,
                       residual_sigma=residual_sigma, **given, **_val_split(val_people))
    result = _train(data, out, cfg, resume=resume, init_from=init_from)
    if result.world_size == 1 or main:
        console.print(result_table(result))
        _print_json(result, as_json)
    if result.interrupted:
        raise typer.Exit(EXIT_INTERRUPTED)
