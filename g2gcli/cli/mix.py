"""``g2g mix``: its options, parsed into a config, and one call into the library."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

import typer

from g2g.cli.common import _flag, _print_json, _verb, app, console
from g2g.errors import EXIT_SKIPPED, G2GError
from g2g.config import MIX_FACE_POLICIES, MIX_FORMATS
from g2g.methods import DEFAULT_METHOD, METHODS, TABLE

METHOD_HELP = (f"auto (the model of --model when given, else {DEFAULT_METHOD} with the default --fixes: the best held-out "
               "numbers, docs/realism.md); " + "; ".join(f"{m.name}: {m.summary}" for m in TABLE) + ".")


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
