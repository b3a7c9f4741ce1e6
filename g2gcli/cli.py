"""The ``g2g`` command line: a thin Typer layer over library functions.

Each verb parses its options into a config, calls one function that tests call
too, and renders the result with rich. Heavy imports happen inside the verbs so
``g2g --version`` and ``--help`` answer at once.
"""

from __future__ import annotations

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


# --- train ---------------------------------------------------------------------------------------------------------
# (owned by the trainer; see g2g/train/trainer.py)


# --- export --------------------------------------------------------------------------------------------------------
# (owned by the exporter; see g2g/export/)


# --- mix -----------------------------------------------------------------------------------------------------------
# (owned by the mixer; see g2g/mix.py)


# --- eval ----------------------------------------------------------------------------------------------------------
# (owned by the evaluator; see g2g/evaluate.py)


def main() -> None:
    """Console-script entry point: one-line errors instead of tracebacks for user mistakes."""
    try:
        app()
    except G2GError as e:
        console.print(f"[red]error:[/red] {e}")
        raise SystemExit(2)


if __name__ == "__main__":
    main()
