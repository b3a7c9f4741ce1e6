"""``g2g eval``: its options, parsed into a config, and one call into the library."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from g2g.cli.common import _downloads, _flag, _print_json, _verb, app, console
from g2g.errors import G2GError


# (owned by the evaluator: g2gcli/eval/run.py)
@app.command("eval")
@_verb
def eval_(
    target: Path = typer.Argument(..., help="A g2g mix OUT folder, or an exported MODEL folder for --metric recon."),
    data: Optional[Path] = typer.Argument(None, help="recon only: a g2g prepare DATA folder of held-out aligned faces."),
    metric: list[str] = typer.Option(["all"], "--metric", "-m", metavar="METRIC", help="id-sim, id-retrieval, pose, expression, realism, recon or all (repeat or comma-list)."),
    eval_net: str = typer.Option("dlib", metavar="NETS", help="Identity networks, comma list: dlib, facenet-vggface2, facenet-casia-webface."),
    as_json: bool = _flag(False, "--json", help="Print the report as JSON on stdout (report.json is written anyway)."),
    out_dir: Optional[Path] = typer.Option(None, help="Folder for report.json, per_image.csv and plots (default: TARGET/eval)."),
    split: Optional[Path] = typer.Option(None, help="recon: a training RUN folder or its split.json (its held-out people)."),
    device: str = typer.Option("auto", help="auto (CUDA when available), cpu, cuda or cuda:N."),
    batch_size: int = typer.Option(32, help="Crops per network call."),
    max_pairs: int = typer.Option(2000, help="Same- and different-person reference pairs (each), drawn with --seed."),
    max_images: int = typer.Option(256, help="recon: held-out crops used, drawn with --seed."),
    seed: int = typer.Option(0, help="Seed of every sampling step."),
    allow_download: bool = _flag(False, "--allow-download", help="Fetch missing --eval-net weights (needs a network)."),
    baselines: bool = _flag(False, "--baselines", help="Also score paste, warp-paste and expression-paste on the same pairs."),
    real: Optional[Path] = typer.Option(None, "--real", help="realism: aligned crops of real people, a folder each (default: the run's own)."),
    real_max: int = typer.Option(1000, "--real-max", help="realism: at most this many --real crops, drawn with --seed."),
) -> None:
    """Measure a mix run (identity, pose leak, expression, realism) or a model's reconstructions.

    Details: docs/cli/eval.md
    """
    from g2g.config import EvalConfig
    from g2g.eval import evaluate

    _check_data(target, data, out_dir)
    _downloads(allow_download)

    cfg = EvalConfig(eval_net=eval_net, device=device, batch_size=batch_size, max_pairs=max_pairs, max_images=max_images,
                     split=str(split) if split else None, out_dir=str(out_dir) if out_dir else None, seed=seed,
                     baselines=baselines, real=str(real) if real else None, real_max=real_max)
    report = evaluate(target, metric, cfg, data=data)
    console.print(report.table())
    for w in report.warnings:
        console.print(f"[yellow]warning:[/yellow] {w}")
    for n in report.notes:
        console.print(f"note: {n}")
    console.print(f"written: {', '.join(report.files.values())}")
    _print_json(report.to_dict(), as_json)


def _check_data(target: Path, data: Optional[Path], out_dir: Optional[Path]) -> None:
    """DATA ending in .json is the old ``--json PATH`` form (the path fell into DATA): say what changed."""
    if data is not None and data.suffix.lower() == ".json":
        where = (out_dir or target / "eval") / "report.json"
        raise G2GError(f"--json is a flag now; the report is written to {where} (DATA is only for --metric recon)",
                       usage=True)
