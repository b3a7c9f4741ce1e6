"""``g2g mix``: its options, parsed into a config, and one call into the library."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

import typer

from g2g.cli.common import JSON_HELP, _flag, _print_json, _verb, app, console
from g2g.errors import EXIT_SKIPPED, G2GError
from g2g.cluster import ENGINES
from g2g.config import MIX_FACE_POLICIES, MIX_FORMATS
from g2g.methods import METHODS

METHOD_HELP = f"{', '.join(METHODS)}."  # the choices' meaning is the doc's (g2g.methods.TABLE)


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
    poses: Path = typer.Argument(..., metavar="POSES", help="A photo or a folder of photos: pose, expression, scene."),
    ids: Path = typer.Argument(..., metavar="IDS", help="A photo, a folder (a person per photo) or subfolders."),
    out: Path = typer.Option(..., "-o", "--out", metavar="OUT", help="Output folder; rerun to resume."),
    model: Optional[Path] = typer.Option(None, "--model", metavar="DIR", help="A g2g export folder (a model)."),
    method: Literal[METHODS] = typer.Option("auto", metavar="METHOD", help=METHOD_HELP),
    size: str = typer.Option("auto", metavar="PX", help="Crop side; auto: the pose face's own."),
    pairs: str = typer.Option("all", metavar="PLAN", help="all, zip, by-name, random or a CSV."),
    per_pose: int = typer.Option(1, metavar="N", help="Identities per pose (--pairs random)."),
    seed: int = typer.Option(0, metavar="N", help="Seed of --pairs random."),
    faces: Literal[MIX_FACE_POLICIES] = typer.Option("largest", metavar="POLICY", help="largest, all or skip-multiple."),
    reference: Optional[Path] = typer.Option(None, "--reference", metavar="PHOTO", help="Mix only this person's face."),
    reference_distance: float = typer.Option(0.6, metavar="D", help="Match bound of --reference (dlib)."),
    min_face: int = typer.Option(40, metavar="PX", help="Ignore smaller faces."),
    min_score: float = typer.Option(0.95, metavar="P", help="Ignore less certain detections."),
    keep_mouth: Optional[bool] = typer.Option(None, "--keep-mouth/--no-keep-mouth", metavar="", show_default=False, help="The pose's own mouth opening."),
    fixes: Optional[str] = typer.Option(None, "--fixes", metavar="LIST", show_default=False, help="Realism fixes: default, all, none or a list."),
    feather: float = typer.Option(0.1, metavar="F", help="Soft edge of the paste, share of crop."),
    crop_only: bool = _flag(False, "--crop-only", help="Write the mixed crop, not the photo."),
    aligned: bool = _flag(False, "--aligned", help="Inputs are g2g prepare crops."),
    grid: bool = _flag(False, "--grid", help="Also write OUT/grid.jpg."),
    fmt: Literal[MIX_FORMATS] = typer.Option("jpg", "--format", metavar="FMT", help="jpg, png or webp."),
    quality: Optional[int] = typer.Option(None, "--quality", metavar="Q", show_default=False, help="JPEG/WebP quality, 1-100 (95)."),
    overwrite: bool = _flag(False, "--overwrite", help="Replace outputs of other settings."),
    shard: str = typer.Option("1/1", metavar="I/N", help="Do only part i of n of the plan."),
    wait: bool = _flag(False, "--wait", help="Wait for a run writing OUT, then resume."),
    strict: bool = _flag(False, "--strict", help="Exit 1 when anything was skipped."),
    device: str = typer.Option("auto", metavar="DEV", help="auto, cpu, cuda or cuda:N."),
    batch_size: int = typer.Option(16, metavar="N", help="Pairs per network call."),
    workers: int = typer.Option(4, metavar="N", help="Threads reading and writing."),
    engine: Literal[ENGINES] = typer.Option("local", metavar="ENGINE", help="local or ray (a cluster)."),
    address: Optional[str] = typer.Option(None, "--address", metavar="ADDR", show_default=False, help="Ray cluster to join (default: start one)."),
    ray_workers: Optional[int] = typer.Option(None, "--ray-workers", metavar="N", show_default=False, help="Mixing actors on Ray (GPUs, or CPUs/2)."),
    as_json: bool = _flag(False, "--json", help=JSON_HELP),
) -> None:
    """Put each identity's face into each pose photo (by default a warped paste: no network).

    Details: docs/cli/mix.md
    """
    from g2g.config import MixConfig
    from g2g.mix import mix_folders

    cfg = MixConfig(method=method, size=_side(size), pairs=pairs, per_pose=per_pose, seed=seed, batch_size=batch_size, crop_only=crop_only, aligned=aligned,
                    grid=grid, shard=shard, device=device, strict=strict, wait=wait, faces=faces, min_face=min_face,
                    reference=None if reference is None else str(reference), reference_distance=reference_distance,
                    min_score=min_score, feather=feather, workers=workers, fmt=fmt, keep_mouth=keep_mouth,
                    fixes=fixes, quality=quality, overwrite=overwrite, engine=engine, address=address,
                    ray_workers=ray_workers)
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
