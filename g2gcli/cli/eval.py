"""``g2g eval``: its options, parsed into a config, and one call into the library."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from g2g.cli.common import _downloads, _flag, _verb, app, console


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
