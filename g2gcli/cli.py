"""The ``g2g`` command line: a thin Typer layer over library functions.

Each verb parses its options into a config, calls one function that tests call
too, and renders the result with rich. Heavy imports happen inside the verbs so
``g2g --version`` and ``--help`` answer at once.
"""

from __future__ import annotations

import errno
import functools
import os
from pathlib import Path
from typing import Any, Callable, Literal, Optional

import typer
from rich.console import Console

from g2g import __version__
from g2g.config import (FACE_POLICIES, GAN_LOSSES, ID_SCHEDULES, IDENTITY_ENCODERS, MIX_FACE_POLICIES,
                        MIX_FORMATS, OPTIMIZERS, PERCEPTUAL_NETS, PREPARE_FORMATS, PRESETS)
from g2g.errors import EXIT_INPUT, EXIT_INTERRUPTED, EXIT_SKIPPED, G2GError
from g2g.limits import out_of_memory
from g2g.methods import DEFAULT_METHOD, METHODS, TABLE
from g2g.faces.preprocess import DEFAULT_ZOOM

METHOD_HELP = (f"auto (the model of --model when given, else {DEFAULT_METHOD} with the default --fixes: the best held-out "
               "numbers, docs/realism.md); " + "; ".join(f"{m.name}: {m.summary}" for m in TABLE) + ".")

app = typer.Typer(
    name="g2g",
    help="G2G: dataset-scale face editing by cross training (identity x pose mixing).",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)


def _verb(fn: Callable) -> Callable:
    """Every verb: the user's mistakes and the environment's (G2GError; OSError: a full disk, a read-only -o) are
    one line on stderr and an exit status (README, "Exit status"), never a traceback; Ctrl-C exits 130."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except G2GError as e:
            console.print(f"[red]error:[/red] {str(e).splitlines()[0] if str(e) else type(e).__name__}", soft_wrap=True)
            raise typer.Exit(e.exit_code) from None
        except OSError as e:
            where = f" ({e.filename})" if getattr(e, "filename", None) else ""
            full = e.errno in (errno.ENOSPC, errno.EDQUOT)
            hint = "; free some space and rerun the same command: finished work is kept" if full else ""
            console.print(f"[red]error:[/red] {e.strerror or e}{where}{hint}", soft_wrap=True)
            raise typer.Exit(EXIT_INPUT) from None
        except KeyboardInterrupt:
            console.print("[red]interrupted[/red]")
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except Exception as e:
            if not out_of_memory(e):
                raise
            said = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            console.print(f"[red]error:[/red] out of memory ({said}): lower --batch-size or --workers, or raise the "
                          "memory limit (ulimit -v), and rerun: finished work is kept", soft_wrap=True)
            raise typer.Exit(EXIT_INPUT) from None

    return run


def _flag(default: bool, *names: str, **kw: Any) -> Any:
    """An on/off option shown without a value placeholder."""
    return typer.Option(default, *names, metavar="", **kw)


def _downloads(allow: bool) -> None:
    """--allow-download: let this process fetch optional weights (g2g.weights.downloads_allowed)."""
    if allow:
        from g2g.weights import DOWNLOAD_ENV

        os.environ[DOWNLOAD_ENV] = "1"


def _val_split(text: str) -> dict[str, Any]:
    """--val-people: a count of people or a fraction of them."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0  # not a number: refused below
    if not 0 <= value < float("inf") or (value >= 1 and value != int(value)):  # NaN and inf fail the range
        raise G2GError(f"--val-people must be a count (6) or a fraction (0.1), got {text!r}", usage=True)
    return {"val_people": int(value)} if value >= 1 else {"val_fraction": value, "val_people": 0}


def _print_json(report: Any, enabled: bool) -> None:
    """--json: the verb's summary on stdout, one JSON document (everything else goes to stderr)."""
    if enabled:
        import json

        from g2g.io.files import jsonable

        typer.echo(json.dumps(jsonable(report), indent=2, sort_keys=True))


def _version(value: bool) -> None:
    if value:
        typer.echo(f"g2g {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = _flag(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """G2G: content encoder (pose, expression, background, lighting) + class encoder (identity) + AdaIN decoder."""


# --- prepare -------------------------------------------------------------------------------------------------------
# (owned by the prepare package: g2gcli/prepare/)
@app.command()
@_verb
def prepare(
    src: Path = typer.Argument(..., help="Folder of photos: one subfolder per identity, or a flat folder (each photo its own identity)."),
    out: Path = typer.Option(..., "-o", "--out", help="Output DATA folder: aligned crops per identity, manifest.jsonl, prepare_config.json. Rerun to resume."),
    size: int = typer.Option(128, help="Side of the square aligned crops, px (64 to 256)."),
    zoom: float = typer.Option(DEFAULT_ZOOM, help=f"Crop covers ZOOM x dlib's 150 px face chip ({DEFAULT_ZOOM}: forehead, chin, some hair)."),
    faces: Literal[FACE_POLICIES] = typer.Option("largest", help="Photos with several faces: largest (keep the biggest), all (one crop each), skip-multiple."),
    min_face: int = typer.Option(40, help="Skip faces whose box (longer side) is smaller than this, px in the photo."),
    min_score: float = typer.Option(0.95, help="Skip faces whose MTCNN detection probability is below this."),
    device: str = typer.Option("auto", help="Detector device: auto (CUDA when available), cpu, cuda, cuda:N."),
    batch_size: int = typer.Option(16, help="Photos per MTCNN batch (photos of one size run as one stack)."),
    workers: int = typer.Option(4, help="Threads decoding photos ahead of detection."),
    fmt: Literal[PREPARE_FORMATS] = typer.Option("png", "--format", help="Crop format: png (lossless) or jpg (quality 95)."),
    as_json: bool = _flag(False, "--json", help="Also print the summary as JSON on stdout (the table goes to stderr)."),
    strict: bool = _flag(False, "--strict", help="Exit with status 1 when this run skipped any photo."),
) -> None:
    """Detect faces (MTCNN, 5 landmarks) and align them to a fixed template; every skip gets a reason in the manifest."""
    from g2g.config import PrepareConfig
    from g2g.prepare import prepare_folder

    cfg = PrepareConfig(size=size, zoom=zoom, faces=faces, min_face=min_face, min_score=min_score,
                        device=device, batch_size=batch_size, workers=workers, fmt=fmt)
    report = prepare_folder(src, out, cfg)
    console.print(report.table())
    if report.preview:
        console.print(f"preview: {report.preview}")
    _print_json(report, as_json)
    if report.total_ok == 0:
        raise G2GError(f"no face was aligned in any of the {report.total} files under {src} (reasons in the table "
                       f"and {out / 'manifest.jsonl'})")
    if strict and sum(report.skipped.values()):
        console.print("[red]--strict: some photos were skipped (see the table and manifest.jsonl)[/red]")
        raise typer.Exit(EXIT_SKIPPED)


# --- train ---------------------------------------------------------------------------------------------------------
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


# --- export --------------------------------------------------------------------------------------------------------
# (owned by the exporter: export/onnx_export.py)
@app.command()
@_verb
def export(
    run: Path = typer.Argument(..., help="A training RUN folder (its latest checkpoint is used) or a checkpoint .pt file."),
    out: Path = typer.Option(..., "-o", "--out", help="MODEL_DIR to write: content_encoder/class_encoder/decoder/identity .onnx, g2g_model.json, SHA256SUMS."),
    onnx: bool = _flag(True, "--onnx", help="Export to ONNX (the only format today, so the default; accepted for scripts)."),
    fp16: bool = _flag(False, "--fp16", help="Store the generator in float16 (half the size, fast on GPU); inputs and outputs stay float32."),
    check_data: Optional[Path] = typer.Option(None, "--check-data", help="A g2g prepare DATA folder: check ONNX Runtime vs PyTorch on its real aligned faces (default: random input)."),
    opset: int = typer.Option(18, help="ONNX opset."),
    identity: bool = _flag(False, "--identity/--no-identity", help="Also put dlib's identity network in the bundle (identity.onnx, 23 MB; g2g eval otherwise exports it once into ~/.cache/g2g; mix never needs it)."),
    as_json: bool = _flag(False, "--json", help="Also print the summary as JSON on stdout (the table goes to stderr)."),
) -> None:
    """Export a checkpoint's EMA generator to a self-describing ONNX bundle, parity-checked against PyTorch."""
    from g2g.export.onnx_export import export_bundle

    report = export_bundle(run, out, fp16=fp16, opset=opset, check_images=check_data, identity=identity, progress=True)
    console.print(report.table())
    _print_json(report, as_json)
    for note in report.notes:
        console.print(f"note: {note}")


# --- mix -----------------------------------------------------------------------------------------------------------
def _side(text: str) -> int | None:
    """``--size auto`` -> None; a number of px -> int (checked with the other options)."""
    if text.strip().lower() == "auto":
        return None
    try:
        return int(text)
    except ValueError:
        raise G2GError(f"--size must be auto or a number of px, got {text!r}", usage=True) from None


# (owned by the mix package: g2gcli/mix/)
@app.command()
@_verb
def mix(
    poses: Path = typer.Argument(..., help="Folder of photos (recursive) that give pose, expression, background and lighting."),
    ids: Path = typer.Argument(..., help="Identities: a folder of photos (each photo one identity) or of subfolders (each one identity; its photos' codes are averaged)."),
    out: Path = typer.Option(..., "-o", "--out", help="Output folder: mixed photos, aligned crops, manifest.jsonl, run.json. Rerun to resume."),
    model: Optional[Path] = typer.Option(None, "--model", help="MODEL_DIR from g2g export --onnx (with --method model and no --model: the model shipped with g2g)."),
    method: Literal[METHODS] = typer.Option("auto", help=METHOD_HELP),
    size: str = typer.Option("auto", help="Crop side for the paste methods: auto (the pose faces' own resolution, 128 to 512 px) or px (a model uses its own)."),
    pairs: str = typer.Option("all", help="all (every pose x identity), zip (pose i with identity i mod M), by-name (pose folder or stem = identity), random, or a CSV of pose,identity rows."),
    per_pose: int = typer.Option(1, help="Identities per pose with --pairs random."),
    seed: int = typer.Option(0, help="Seed of --pairs random (each pose's draw depends only on the seed and its path)."),
    batch_size: int = typer.Option(16, help="Pairs per decoder call (and images per encoder call)."),
    crop_only: bool = _flag(False, "--crop-only", help="Write the aligned mixed crop instead of pasting it back into the pose photo."),
    aligned: bool = _flag(False, "--aligned", help="Inputs are already aligned crops (g2g prepare output): no detection; resized to the model's size if needed."),
    grid: bool = _flag(False, "--grid", help="Also write OUT/grid.jpg: poses as rows, identities as columns."),
    shard: str = typer.Option("1/1", help="i/n: do only the i-th of n deterministic parts of the plan (run n processes or machines)."),
    device: str = typer.Option("auto", help="auto (CUDA when usable), cpu, cuda, cuda:N; the providers really used are reported."),
    strict: bool = _flag(False, "--strict", help="Exit with status 1 when anything was skipped."),
    wait: bool = _flag(False, "--wait", help="Another g2g mix is writing OUT (the same shard): wait for it to finish, then resume, instead of stopping."),
    faces: Literal[MIX_FACE_POLICIES] = typer.Option("largest", help="Photos with several faces: largest (mix the biggest) or skip-multiple."),
    min_face: int = typer.Option(40, help="Ignore faces whose box is smaller than this, px in the photo."),
    min_score: float = typer.Option(0.95, help="Ignore faces whose MTCNN probability is below this."),
    feather: float = typer.Option(0.1, help="Soft edge of the paste-back mask, as a fraction of the crop (0 = hard edge)."),
    keep_mouth: Optional[bool] = typer.Option(None, "--keep-mouth/--no-keep-mouth", metavar="", show_default=False, help="Keep the pose photo's own mouth opening (teeth, tongue, the dark inside), as FaceFusion's mouth mask region does: the expression follows the pose, at some cost in identity. Off by default; for --method auto without --model the 'mouth' fix does it, and --no-keep-mouth drops that fix."),
    fixes: Optional[str] = typer.Option(None, "--fixes", show_default=False, help="expression-paste's give-away removers: default (mouth, sharp, tone), all, none, or a list of mouth, sharp, tone, eyes, skin, pose-occluders, occlusion, seam, quality ('default,eyes' adds one, 'default,-tone' drops one). Default: default for --method auto without --model, none otherwise (docs/realism.md)."),
    fmt: Literal[MIX_FORMATS] = typer.Option("jpg", "--format", help="Output format: jpg (quality 95), png or webp."),
    workers: int = typer.Option(4, help="Threads decoding, aligning and writing images."),
    as_json: bool = _flag(False, "--json", help="Also print the summary as JSON on stdout (the table goes to stderr)."),
) -> None:
    """Put each identity's face into each pose photo (content encoder x class encoder -> decoder, on ONNX Runtime)."""
    from g2g.config import MixConfig
    from g2g.mix import mix_folders

    cfg = MixConfig(method=method, size=_side(size), pairs=pairs, per_pose=per_pose, seed=seed, batch_size=batch_size, crop_only=crop_only, aligned=aligned,
                    grid=grid, shard=shard, device=device, strict=strict, wait=wait, faces=faces, min_face=min_face,
                    min_score=min_score, feather=feather, workers=workers, fmt=fmt, keep_mouth=keep_mouth,
                    fixes=fixes)
    report = mix_folders(poses, ids, out, cfg, model_dir=model)
    console.print(report.table())
    _print_json(report, as_json)
    for note in report.notes:
        console.print(f"note: {note}")
    if report.grid:
        console.print(f"grid: {report.grid}")
    if strict and report.any_skips:
        console.print("[red]--strict: some inputs were skipped (see the table and manifest.jsonl)[/red]")
        raise typer.Exit(EXIT_SKIPPED)


# --- eval ----------------------------------------------------------------------------------------------------------
# (owned by the evaluator: g2gcli/eval/run.py)
@app.command("eval")
@_verb
def eval_(
    target: Path = typer.Argument(..., help="A g2g mix output folder (OUT), or an exported MODEL folder for --metric recon."),
    data: Optional[Path] = typer.Argument(None, help="recon only: a g2g prepare folder of aligned crops (held-out faces)."),
    metric: list[str] = typer.Option(["all"], "--metric", "-m", help="id-sim, id-retrieval, pose, expression, realism, recon or all; repeat or comma-separate."),
    eval_net: str = typer.Option("dlib", help="Identity network(s), comma list: dlib, facenet-vggface2, facenet-casia-webface (facenet needs its weights on disk)."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Also write the report as JSON here ('-' prints it to stdout)."),
    out_dir: Optional[Path] = typer.Option(None, help="Folder for report.json, per_image.csv and plots (default: TARGET/eval; ./g2g-eval/model for the model shipped inside g2g)."),
    split: Optional[Path] = typer.Option(None, help="recon: a training RUN folder or its split.json; its 'val' identities are the held-out set."),
    device: str = typer.Option("auto", help="auto (CUDA when available), cpu, cuda, cuda:N."),
    batch_size: int = typer.Option(32, help="Crops per network call."),
    max_pairs: int = typer.Option(2000, help="Same- and different-person reference samples (each), drawn with --seed."),
    max_images: int = typer.Option(256, help="recon: held-out crops used, drawn with --seed."),
    seed: int = typer.Option(0, help="Seed of every sampling step."),
    allow_download: bool = _flag(False, "--allow-download", help="Fetch the --eval-net weights when they are not on disk (needs a network)."),
    baselines: bool = _flag(False, "--baselines", help="Also run paste, warp-paste and expression-paste (no model) on the run's own pairs and report their numbers next to the model's."),
    real: Optional[Path] = typer.Option(None, "--real", help="realism: aligned crops of real people, one folder per person (e.g. a g2g prepare output at the run's zoom); default: the run's own identity and pose crops."),
    real_max: int = typer.Option(1000, "--real-max", help="realism: at most this many crops of --real, drawn with --seed."),
) -> None:
    """Identity similarity, retrieval, pose leak, expression and pose preservation and realism of a mix run; reconstruction quality of a model."""
    import json as _json

    from g2g.config import EvalConfig
    from g2g.eval import evaluate

    _downloads(allow_download)

    cfg = EvalConfig(eval_net=eval_net, device=device, batch_size=batch_size, max_pairs=max_pairs, max_images=max_images,
                     json=None if json_path in (None, Path("-")) else str(json_path), split=str(split) if split else None,
                     out_dir=str(out_dir) if out_dir else None, seed=seed, baselines=baselines,
                     real=str(real) if real else None, real_max=real_max)
    report = evaluate(target, metric, cfg, data=data)
    console.print(report.table())
    for w in report.warnings:
        console.print(f"[yellow]warning:[/yellow] {w}")
    for n in report.notes:
        console.print(f"note: {n}")
    console.print(f"written: {', '.join(report.files.values())}")
    if json_path == Path("-"):
        typer.echo(_json.dumps(report.to_dict(), indent=2, sort_keys=True))


# --- demo ----------------------------------------------------------------------------------------------------------
@app.command()
@_verb
def demo(
    out: Path = typer.Option(Path("g2g-demo"), "-o", "--out", help="Folder for the example photos and results."),
    device: str = typer.Option("auto", help="auto (CUDA when usable), cpu, cuda, cuda:N."),
    method: Literal[METHODS] = typer.Option("auto", help="As g2g mix --method."),
) -> None:
    """The main job on bundled public-domain example photos (from scikit-image and matplotlib) with the default method."""
    from g2g.demo import run_demo

    result = run_demo(out, device=device, method=method)
    if hasattr(result.report, "table"):
        console.print(result.report.table())
    for note in result.notes:
        console.print(f"note: {note}")
    console.print(f"open: {result.grid}")


def main() -> None:
    """The CLI (the ``g2g`` command is :func:`g2g.__main__.main`: it checks the memory limit first)."""
    app()


if __name__ == "__main__":
    main()
