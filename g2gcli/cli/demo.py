"""``g2g demo``: its options, parsed into a config, and one call into the library."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import typer

from g2g.cli.common import _verb, app, console
from g2g.cli.mix import METHOD_HELP
from g2g.methods import METHODS


@app.command()
@_verb
def demo(
    out: Path = typer.Option(Path("g2g-demo"), "-o", "--out", help="Folder for the example photos and results."),
    device: str = typer.Option("auto", help="auto (CUDA when usable), cpu, cuda or cuda:N."),
    method: Literal[METHODS] = typer.Option("auto", metavar="METHOD", help=METHOD_HELP),
) -> None:
    """Run the main job on two bundled public-domain portraits and write a contact sheet to open.

    Details: docs/cli/demo.md
    """
    from g2g.demo import run_demo

    result = run_demo(out, device=device, method=method)
    if hasattr(result.report, "table"):
        console.print(result.report.table())
    for note in result.notes:
        console.print(f"note: {note}")
    console.print(f"open: {result.grid}")
