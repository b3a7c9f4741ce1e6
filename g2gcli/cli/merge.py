"""``g2g merge``: the shard folders to merge, and one call into the library."""

from __future__ import annotations

from pathlib import Path

import typer

from g2g.cli.common import JSON_HELP, _flag, _print_json, _verb, app, console


# (owned by the mix package: g2gcli/mix/merge.py)
@app.command()
@_verb
def merge(
    shards: list[Path] = typer.Argument(..., metavar="SHARD_OUT", help="OUT folders of g2g mix --shard i/n runs of one plan."),
    out: Path = typer.Option(..., "-o", "--out", help="OUT folder to merge them into (new, or an earlier merge's)."),
    as_json: bool = _flag(False, "--json", help=JSON_HELP),
) -> None:
    """Merge the OUT folders of sharded mix runs into one OUT, as one run of the whole plan.

    Details: docs/cli/merge.md
    """
    from g2g.mix.merge import merge_runs

    report = merge_runs(shards, out)
    console.print(report.table())
    _print_json(report, as_json)
