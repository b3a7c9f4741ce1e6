"""``g2g prepare``: its options, parsed into a config, and one call into the library."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

import typer

from g2g.cli.common import JSON_HELP, _flag, _print_json, _verb, app, console
from g2g.errors import EXIT_SKIPPED, G2GError
from g2g.cluster import ENGINES
from g2g.config import FACE_POLICIES, PREPARE_FORMATS
from g2g.faces.preprocess import DEFAULT_ZOOM


# (owned by the prepare package: g2gcli/prepare/)
@app.command()
@_verb
def prepare(
    src: Path = typer.Argument(..., help="Folder of photos: a subfolder per person, or a flat folder (a person per photo)."),
    out: Path = typer.Option(..., "-o", "--out", help="DATA folder to write (aligned crops, manifest.jsonl); rerun to resume."),
    size: int = typer.Option(128, help="Side of the square aligned crops, px (64 to 256)."),
    zoom: float = typer.Option(DEFAULT_ZOOM, help=f"Crop covers ZOOM x dlib's 150 px face chip ({DEFAULT_ZOOM}: forehead, chin, some hair)."),
    faces: Literal[FACE_POLICIES] = typer.Option("largest", metavar="POLICY", help="Photos with several faces: largest, all (a crop each) or skip-multiple."),
    min_face: int = typer.Option(40, help="Skip faces whose box (longer side) is smaller than this, px in the photo."),
    min_score: float = typer.Option(0.95, help="Skip faces whose MTCNN detection probability is below this."),
    device: str = typer.Option("auto", help="Detector device: auto (CUDA when available), cpu, cuda or cuda:N."),
    batch_size: int = typer.Option(16, help="Photos per MTCNN batch."),
    workers: int = typer.Option(4, help="Threads decoding photos ahead of detection."),
    fmt: Literal[PREPARE_FORMATS] = typer.Option("png", "--format", help="Crop format: png (lossless) or jpg (quality 95)."),
    engine: Literal[ENGINES] = typer.Option("local", metavar="ENGINE", help="local or ray (a cluster)."),
    address: Optional[str] = typer.Option(None, "--address", metavar="ADDR", show_default=False, help="Ray cluster to join (default: start one)."),
    ray_workers: Optional[int] = typer.Option(None, "--ray-workers", metavar="N", show_default=False, help="Detecting actors on Ray (GPUs, or CPUs)."),
    as_json: bool = _flag(False, "--json", help=JSON_HELP),
    strict: bool = _flag(False, "--strict", help="Exit with status 1 when this run skipped any photo."),
) -> None:
    """Detect and align the faces in a folder of photos; each skip gets a reason in the manifest.

    Details: docs/cli/prepare.md
    """
    from g2g.config import PrepareConfig
    from g2g.prepare import prepare_folder

    cfg = PrepareConfig(size=size, zoom=zoom, faces=faces, min_face=min_face, min_score=min_score,
                        device=device, batch_size=batch_size, workers=workers, fmt=fmt,
                        engine=engine, address=address, ray_workers=ray_workers)
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
