"""What every verb of the command line shares: the Typer app, the one-line error handling, flags and ``--json``."""

from __future__ import annotations

import errno
import functools
import os
from typing import Any, Callable

import typer
from rich.console import Console

from g2g import __version__
from g2g.errors import EXIT_INPUT, EXIT_INTERRUPTED, G2GError
from g2g.limits import out_of_memory

app = typer.Typer(
    name="g2g",
    help="Dataset-scale face editing: put each identity's face into each pose photo.\n\nDetails: docs/cli/README.md",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
console = Console(stderr=True)
JSON_HELP = "Print the summary as one JSON document on stdout (the table goes to stderr)."


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
    """Dataset-scale face editing: put each identity's face into each pose photo.

    Details: docs/cli/README.md
    """


