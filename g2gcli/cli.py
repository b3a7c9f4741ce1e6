"""The ``g2g`` command line: a thin Typer layer over library functions.

Each verb parses its options into a config, calls one function that tests call
too, and renders the result with rich. Heavy imports happen inside the verbs so
``g2g --version`` and ``--help`` answer at once.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from g2g import __version__

app = typer.Typer(
    name="g2g",
    help="G2G: dataset-scale face editing by cross training (identity x pose mixing).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)


class G2GError(Exception):
    """An error with a one-line message for the user (no traceback)."""


def _version(value: bool) -> None:
    if value:
        typer.echo(f"g2g {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """G2G: content encoder (pose, expression, background, lighting) + class encoder (identity) + AdaIN decoder."""


# --- prepare -------------------------------------------------------------------------------------------------------
# (owned by the prepare module; see g2g/prepare.py)
@app.command()
def prepare(
    src: Path = typer.Argument(..., help="Folder of photos: one subfolder per identity, or a flat folder (each photo its own identity)."),
    out: Path = typer.Option(..., "-o", "--out", help="Output DATA folder: aligned crops per identity, manifest.jsonl, prepare_config.json. Rerun to resume."),
    size: int = typer.Option(128, help="Side of the square aligned crops, px (64 to 256)."),
    zoom: float = typer.Option(1.3, help="Crop covers ZOOM x dlib's 150 px face chip (1.3: forehead, chin, some hair)."),
    faces: str = typer.Option("largest", help="Photos with several faces: largest (keep the biggest), all (one crop each), skip-multiple."),
    min_face: int = typer.Option(40, help="Skip faces whose box (longer side) is smaller than this, px in the photo."),
    min_score: float = typer.Option(0.95, help="Skip faces whose MTCNN detection probability is below this."),
    device: str = typer.Option("auto", help="Detector device: auto (CUDA when available), cpu, cuda, cuda:N."),
    batch_size: int = typer.Option(16, help="Photos per MTCNN batch (photos of one size run as one stack)."),
    workers: int = typer.Option(4, help="Threads decoding photos ahead of detection."),
    fmt: str = typer.Option("png", "--format", help="Crop format: png (lossless) or jpg (quality 95)."),
) -> None:
    """Detect faces (MTCNN, 5 landmarks) and align them to a fixed template; every skip gets a reason in the manifest."""
    from g2g.config import PrepareConfig
    from g2g.prepare import PrepareError, prepare_folder

    cfg = PrepareConfig(size=size, zoom=zoom, faces=faces, min_face=min_face, min_score=min_score,
                        device=device, batch_size=batch_size, workers=workers, fmt=fmt)
    try:
        report = prepare_folder(src, out, cfg)
    except PrepareError as e:
        raise G2GError(str(e)) from None
    console.print(report.table())


# --- train ---------------------------------------------------------------------------------------------------------
# (owned by the trainer; see g2g/train/trainer.py)
from g2g.config import TrainConfig as _TC  # torch-free: only its defaults are read here

_T = _TC()


@app.command()
def train(
    data: Path = typer.Argument(..., help="A `g2g prepare` output folder (manifest.jsonl + aligned crops per identity)."),
    out: Path = typer.Option(..., "-o", "--out", help="Run folder: config.json, split.json, checkpoints/, metrics.jsonl, losses.png, samples/."),
    steps: int = typer.Option(_T.steps, help="Total generator updates of the run (with --resume: the new total)."),
    batch_size: int = typer.Option(_T.batch_size, help="Pairs (a, b) of different people per step, per process (under torchrun: per GPU)."),
    size: Optional[int] = typer.Option(None, help="Image side the model works at, px (default: the crop size in DATA/prepare_config.json)."),
    preset: str = typer.Option("full", help="Model: tiny (tests, 2 CPU cores), small (CPU runs), full (FUNIT size): the seed's FUNIT generator; appearance (the default model's recipe: masked rest + identity photos warped onto the pose's expression, 64 px on a CPU), appearance-tiny (tests)."),
    identity_encoder: Optional[str] = typer.Option(None, "--identity-encoder", help="funit (pooled class code into AdaIN, the seed's) or appearance (spatial features of identity photos warped onto the rest's geometry); default: the preset's."),
    k_shot: int = typer.Option(_T.k_shot, help="Images of one person whose class codes are averaged into the identity code (K-shot)."),
    alpha: float = typer.Option(_T.alpha_vgg, help="α: perceptual loss weight (cycle and self reconstructions vs originals)."),
    gamma: float = typer.Option(_T.gamma_cyc, help="γ: cycle-consistency L1 weight (a' vs a and b' vs b)."),
    lambda_adv: float = typer.Option(_T.lambda_adv, "--lambda-adv", help="λ_g: generator GAN loss weight."),
    delta: float = typer.Option(_T.delta_id, help="δ: identity loss weight (dlib embedding distance of mixed vs target person); the final value of --id-schedule."),
    zeta: float = typer.Option(_T.zeta_dis, help="ζ: discriminator loss scale, L_dis = ζ·(L_real + L_fake)/2."),
    self_recon: float = typer.Option(_T.self_recon, help="Weight of the self-reconstruction L1, G(E_A(a), E_B(a)) vs a."),
    gan_loss: str = typer.Option(_T.gan_loss, help="hinge (FUNIT's) or nonsat (non-saturating logistic)."),
    id_schedule: str = typer.Option(_T.id_schedule, help="δ over training: constant; linear (ramp from --id-start over --id-warmup steps); step (raise from --id-start in --id-step-count equal steps, one every --id-step-every steps)."),
    id_start: float = typer.Option(_T.id_start, help="δ at step 0 for the linear and step schedules."),
    id_warmup: int = typer.Option(_T.id_warmup, help="linear schedule: ramp length in steps (0: the whole run)."),
    id_step_every: int = typer.Option(_T.id_step_every, help="step schedule: steps between two increases of δ."),
    id_step_count: int = typer.Option(_T.id_step_count, help="step schedule: number of equal increases up to --delta."),
    perceptual: str = typer.Option(_T.perceptual, help="stlpips: shift-tolerant LPIPS VGG16, trained for perceptual similarity (not ImageNet classification), ships with stlpips-pytorch, works offline. vgg19: torchvision's ImageNet VGG19 features (weights must be cached or downloadable)."),
    erase_landmarks: bool = typer.Option(_T.erase_landmarks, "--erase-landmarks", help="Grey out eyes, nose and mouth (from the manifest's 5 landmarks) of the image that supplies the rest, so E_A cannot pass identity through."),
    optimizer: str = typer.Option(_T.optimizer, help="rmsprop (FUNIT) or adam."),
    lr: float = typer.Option(_T.lr_gen, help="Learning rate of generator and discriminator."),
    resume: bool = typer.Option(False, "--resume", help="Continue RUN from checkpoints/last.pt exactly (saved config; only --steps, --device, --compile, --*-every, --workers change)."),
    seed: int = typer.Option(_T.seed, help="Seed of weights, identity split and pair sampling (CPU runs repeat exactly)."),
    device: str = typer.Option(_T.device, help="auto (CUDA when available), cpu, cuda, cuda:N. Under torchrun each process takes cuda:LOCAL_RANK."),
    compile: bool = typer.Option(_T.compile, "--compile", help="torch.compile the generator step (slow start, faster steps on GPU)."),
    checkpoint_every: int = typer.Option(_T.checkpoint_every, help="Write checkpoints/step_XXXXXXXX.pt and last.pt every N steps (and on Ctrl-C)."),
    sample_every: int = typer.Option(_T.sample_every, help="Write samples/step_XXXXXXXX.png (Original / Mixed / Reconstructed) and losses.png every N steps."),
    log_every: int = typer.Option(_T.log_every, help="Append a metrics.jsonl line (mean of each loss term, δ, images/s) every N steps."),
    workers: int = typer.Option(_T.workers, help="DataLoader processes decoding crops (0: in the main process)."),
    flip: bool = typer.Option(_T.flip, "--flip/--no-flip", help="Random horizontal flips of training crops (landmarks follow)."),
    init_from: Optional[Path] = typer.Option(None, "--init-from", help="Fine-tune: start the generator from a checkpoint, a run folder or an exported model folder (e.g. the one g2g ships); its architecture and size replace --preset and --size. Discriminator and optimisers start afresh."),
) -> None:
    """Cross-train E_A (rest), E_B (identity) and the AdaIN decoder on a `g2g prepare` folder. Ctrl-C checkpoints and stops.

    Multi-GPU: torchrun --nproc_per_node N -m g2g.train DATA -o RUN OPTIONS (DistributedDataParallel; gloo on CPU, nccl on CUDA).
    """
    from g2g.train.checkpoint import CheckpointError
    from g2g.train.data import DataError
    from g2g.train.perceptual import PerceptualWeightsError
    from g2g.train.trainer import TrainError, build_config, result_table, train as _train
    from g2g.weights import WeightsError

    try:
        cfg = build_config(data, preset, size, identity_encoder=identity_encoder, steps=steps, batch_size=batch_size, k_shot=k_shot, lr_gen=lr, lr_dis=lr,
                           optimizer=optimizer, alpha_vgg=alpha, gamma_cyc=gamma, lambda_adv=lambda_adv, delta_id=delta,
                           zeta_dis=zeta, self_recon=self_recon, gan_loss=gan_loss, id_schedule=id_schedule, id_start=id_start,
                           id_warmup=id_warmup, id_step_every=id_step_every, id_step_count=id_step_count,
                           perceptual=perceptual, erase_landmarks=erase_landmarks, seed=seed, device=device, compile=compile,
                           checkpoint_every=checkpoint_every, sample_every=sample_every, log_every=log_every, workers=workers,
                           flip=flip)
        result = _train(data, out, cfg, resume=resume, init_from=init_from)
    except (TrainError, DataError, PerceptualWeightsError, WeightsError, CheckpointError) as e:
        raise G2GError(str(e)) from None
    if result.world_size == 1 or int(os.environ.get("RANK", "0")) == 0:
        console.print(result_table(result))


# --- export --------------------------------------------------------------------------------------------------------
# (owned by the exporter; see g2g/export/)
@app.command()
def export(
    run: Path = typer.Argument(..., help="A training RUN folder (its latest checkpoint is used) or a checkpoint .pt file."),
    out: Path = typer.Option(..., "-o", "--out", help="MODEL_DIR to write: content_encoder/class_encoder/decoder/identity .onnx, g2g_model.json, SHA256SUMS."),
    onnx: bool = typer.Option(False, "--onnx", help="Export to ONNX (the only format; required)."),
    fp16: bool = typer.Option(False, "--fp16", help="Store the generator in float16 (half the size, fast on GPU); inputs and outputs stay float32."),
    check_data: Optional[Path] = typer.Option(None, "--check-data", help="A g2g prepare DATA folder: check ONNX Runtime vs PyTorch on its real aligned faces (default: random input)."),
    opset: int = typer.Option(18, help="ONNX opset."),
    identity: bool = typer.Option(True, "--identity/--no-identity", help="Include the identity network (identity.onnx; g2g eval needs it, mix does not)."),
) -> None:
    """Export a checkpoint's EMA generator to a self-describing ONNX bundle, parity-checked against PyTorch."""
    from g2g.export.onnx_export import ExportError, export_bundle

    if not onnx:
        raise G2GError("say --onnx: ONNX is the only export format (g2g export --onnx RUN -o MODEL_DIR)")
    try:
        report = export_bundle(run, out, fp16=fp16, opset=opset, check_images=check_data, identity=identity)
    except ExportError as e:
        raise G2GError(str(e)) from None
    console.print(report.table())
    for note in report.notes:
        console.print(f"note: {note}")


# --- mix -----------------------------------------------------------------------------------------------------------
# (owned by the mixer; see g2g/mix.py)
@app.command()
def mix(
    poses: Path = typer.Argument(..., help="Folder of photos (recursive) that give pose, expression, background and lighting."),
    ids: Path = typer.Argument(..., help="Identities: a folder of photos (each photo one identity) or of subfolders (each one identity; its photos' codes are averaged)."),
    out: Path = typer.Option(..., "-o", "--out", help="Output folder: mixed photos, aligned crops, manifest.jsonl, run.json. Rerun to resume."),
    model: Optional[Path] = typer.Option(None, "--model", help="MODEL_DIR from g2g export --onnx (with --method model and no --model: the model shipped with g2g)."),
    method: str = typer.Option("auto", help="auto (the model of --model when given, else expression-paste: the best held-out numbers, see the model card), model (the network of --model, or the shipped one), paste (the identity photo's face pasted through the face mask, colour-matched: identity right, expression the identity photo's) warp-paste (the same, warped onto the pose's 68 landmarks first) or expression-paste (warped onto the identity's own face shape with the pose's expression: what an untrained appearance model draws). The pastes need no model."),
    size: int = typer.Option(128, help="Crop side, px, for the paste methods (a model uses its own)."),
    pairs: str = typer.Option("all", help="all (every pose x identity), zip (pose i with identity i mod M), by-name (pose folder or stem = identity), random, or a CSV of pose,identity rows."),
    per_pose: int = typer.Option(1, help="Identities per pose with --pairs random."),
    seed: int = typer.Option(0, help="Seed of --pairs random (each pose's draw depends only on the seed and its path)."),
    batch_size: int = typer.Option(16, help="Pairs per decoder call (and images per encoder call)."),
    crop_only: bool = typer.Option(False, "--crop-only", help="Write the aligned mixed crop instead of pasting it back into the pose photo."),
    aligned: bool = typer.Option(False, "--aligned", help="Inputs are already aligned crops (g2g prepare output): no detection; resized to the model's size if needed."),
    grid: bool = typer.Option(False, "--grid", help="Also write OUT/grid.jpg: poses as rows, identities as columns."),
    shard: str = typer.Option("1/1", help="i/n: do only the i-th of n deterministic parts of the plan (run n processes or machines)."),
    device: str = typer.Option("auto", help="auto (CUDA when usable), cpu, cuda, cuda:N; the providers really used are reported."),
    strict: bool = typer.Option(False, "--strict", help="Exit with status 1 when anything was skipped."),
    faces: str = typer.Option("largest", help="Photos with several faces: largest (mix the biggest) or skip-multiple."),
    min_face: int = typer.Option(40, help="Ignore faces whose box is smaller than this, px in the photo."),
    min_score: float = typer.Option(0.95, help="Ignore faces whose MTCNN probability is below this."),
    feather: float = typer.Option(0.1, help="Soft edge of the paste-back mask, as a fraction of the crop (0 = hard edge)."),
    fmt: str = typer.Option("jpg", "--format", help="Output format: jpg (quality 95), png or webp."),
    workers: int = typer.Option(4, help="Threads decoding, aligning and writing images."),
) -> None:
    """Put each identity's face into each pose photo (content encoder x class encoder -> decoder, on ONNX Runtime)."""
    from g2g.bundle import BundleError
    from g2g.config import MixConfig
    from g2g.mix import MixError, mix_folders
    from g2g.pairing import PairingError
    from g2g.runtime import DeviceError
    from g2g.weights import WeightsError

    cfg = MixConfig(method=method, size=size, pairs=pairs, per_pose=per_pose, seed=seed, batch_size=batch_size, crop_only=crop_only, aligned=aligned,
                    grid=grid, shard=shard, device=device, strict=strict, faces=faces, min_face=min_face,
                    min_score=min_score, feather=feather, workers=workers, fmt=fmt)
    try:
        report = mix_folders(poses, ids, out, cfg, model_dir=model)
    except (MixError, BundleError, PairingError, DeviceError, WeightsError) as e:
        raise G2GError(str(e)) from None
    console.print(report.table())
    for note in report.notes:
        console.print(f"note: {note}")
    if report.grid:
        console.print(f"grid: {report.grid}")
    if strict and report.any_skips:
        console.print("[red]--strict: some inputs were skipped (see the table and manifest.jsonl)[/red]")
        raise typer.Exit(1)


# --- eval ----------------------------------------------------------------------------------------------------------
# (owned by the evaluator; see g2g/evaluate.py)
@app.command("eval")
def eval_(
    target: Path = typer.Argument(..., help="A g2g mix output folder (OUT), or an exported MODEL folder for --metric recon."),
    data: Optional[Path] = typer.Argument(None, help="recon only: a g2g prepare folder of aligned crops (held-out faces)."),
    metric: list[str] = typer.Option(["all"], "--metric", "-m", help="id-sim, id-retrieval, pose, expression, recon or all; repeat or comma-separate."),
    eval_net: str = typer.Option("dlib", help="Identity network(s), comma list: dlib, facenet-vggface2, facenet-casia-webface (facenet needs its weights on disk)."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Also write the report as JSON here ('-' prints it to stdout)."),
    out_dir: Optional[Path] = typer.Option(None, help="Folder for report.json, per_image.csv and plots (default: OUT/eval for a mix run, ./g2g-eval/<model> for a model)."),
    split: Optional[Path] = typer.Option(None, help="recon: a training RUN folder or its split.json; its 'val' identities are the held-out set."),
    device: str = typer.Option("auto", help="auto (CUDA when available), cpu, cuda, cuda:N."),
    batch_size: int = typer.Option(32, help="Crops per network call."),
    max_pairs: int = typer.Option(2000, help="Same- and different-person reference samples (each), drawn with --seed."),
    max_images: int = typer.Option(256, help="recon: held-out crops used, drawn with --seed."),
    seed: int = typer.Option(0, help="Seed of every sampling step."),
    baselines: bool = typer.Option(False, "--baselines", help="Also run paste and warp-paste (no model) on the run's own pairs and report their numbers next to the model's."),
) -> None:
    """Identity similarity, retrieval, pose leak, expression and pose preservation of a mix run; reconstruction quality of a model."""
    import json as _json

    from g2g.config import EvalConfig
    from g2g.evaluate import EvalError, evaluate

    cfg = EvalConfig(eval_net=eval_net, device=device, batch_size=batch_size, max_pairs=max_pairs, max_images=max_images,
                     json=None if json_path in (None, Path("-")) else str(json_path), split=str(split) if split else None,
                     out_dir=str(out_dir) if out_dir else None, seed=seed, baselines=baselines)
    try:
        report = evaluate(target, metric, cfg, data=data)
    except (EvalError, ValueError, FileNotFoundError) as e:
        raise G2GError(str(e).splitlines()[0] if str(e) else type(e).__name__) from None
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
def demo(
    out: Path = typer.Option(Path("g2g-demo"), "-o", "--out", help="Folder for the example photos and results."),
    device: str = typer.Option("auto", help="auto (CUDA when usable), cpu, cuda, cuda:N."),
    method: str = typer.Option("auto", help="As g2g mix --method: auto (the default method), model (the shipped model), paste, warp-paste, expression-paste."),
) -> None:
    """The main job on bundled public-domain example photos (from scikit-image and matplotlib) with the default method."""
    from g2g.demo import run_demo
    from g2g.mix import MixError

    try:
        result = run_demo(out, device=device, method=method)
    except (MixError, ValueError) as e:
        raise G2GError(str(e)) from None
    if hasattr(result.report, "table"):
        console.print(result.report.table())
    for note in result.notes:
        console.print(f"note: {note}")
    console.print(f"open: {result.grid}")


def main() -> None:
    """Console-script entry point: one-line errors instead of tracebacks for user mistakes."""
    try:
        app()
    except G2GError as e:
        console.print(f"[red]error:[/red] {e}")
        raise SystemExit(2)


if __name__ == "__main__":
    main()
