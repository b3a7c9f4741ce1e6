"""``g2g merge``: the OUT folders of ``g2g mix --shard i/n`` runs (one per machine or job, each on its own disk) made
into one OUT that reads as one run of the whole plan.

Each pair's last line is taken from the shard that made it, with the files it
names (hard links where the folders share a file system, else copies, each
written atomically); a line whose output or mixed crop is no longer the file its
shard wrote is left out, so a resume redoes that pair. The shard folders are only
read, under their run locks (a shard still running is refused). A merge killed
half-way is run again; a later ``g2g mix POSES IDS -o OUT`` does only the pairs
no shard finished, and ``g2g eval`` reads OUT as any run's.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from g2g.errors import G2GError
from g2g.io.files import atomic_write_json, read_jsonl, refuse_links, safe_join
from g2g.io.parts import part_files, shard_tag
from g2g.io.runfolder import Manifest, claim_output, run_lock
from g2g.mix.resume import files_of, is_mix_record, mix_manifest, outputs_intact, pair_of
from g2g.pairing import parse_shard
from g2g.progress import summary_table

RUN_FILE = "run.json"
# what every shard of one plan shares in its run.json (the settings hash covers method, size, format, ...)
SAME = {"poses_root": "POSES", "ids_root": "IDS", "model_sha256": "model", "settings_sha256": "settings"}


class MergeError(G2GError):
    """Folders that are not shards of one plan, or a shard still running: a one-line user error."""


@dataclass
class MergeReport:
    out: Path
    shards: list[str] = field(default_factory=list)  # "i/n" of each folder merged, in the order given
    missing: list[str] = field(default_factory=list)  # shards of the plan that no folder holds
    total_plan: int = 0  # pairs of the whole plan
    added: int = 0  # lines this merge added to OUT's manifest
    files: int = 0  # files linked or copied into OUT
    damaged: int = 0  # pairs whose files in their shard are not as written: left out (a resume redoes them)
    done: int = 0  # pairs ok in OUT after the merge
    notes: list[str] = field(default_factory=list)

    def table(self) -> Any:
        t = summary_table(f"g2g merge -> {self.out}", ["", "pairs"])
        t.add_row("shards merged", ", ".join(self.shards))
        t.add_row("lines added", str(self.added))
        t.add_row("files linked or copied", str(self.files))
        if self.damaged:
            t.add_row("[yellow]left out: files damaged in their shard[/yellow]", str(self.damaged))
        t.add_row("done in OUT", f"{self.done} of {self.total_plan}")
        for note in self.notes:
            t.add_row("note", note)
        return t


def _run_file(folder: Path) -> dict[str, Any]:
    try:
        run = json.loads((folder / RUN_FILE).read_text())
    except FileNotFoundError:
        raise MergeError(f"{folder} is not the OUT folder of a g2g mix run (no {RUN_FILE})") from None
    except (OSError, ValueError) as e:
        raise MergeError(f"cannot read {folder / RUN_FILE}: {e}") from None
    plan = run.get("plan") if isinstance(run, dict) else None
    if not isinstance(plan, dict) or not isinstance(plan.get("shard"), str) or not isinstance(plan.get("pairs"), int):
        raise MergeError(f"{folder / RUN_FILE} is not the run file g2g mix writes (no plan and shard)")
    return run


def _check_same_plan(runs: dict[Path, dict[str, Any]]) -> int:
    """Refuse folders that are not shards of one plan (other inputs, model, settings, pairing or shard count) ->
    the shard count."""
    (first, ref), *others = runs.items()
    n = _shard_count(ref["plan"])
    for folder, run in others:
        for key, what in SAME.items():
            if run.get(key) != ref.get(key):
                raise MergeError(f"{folder} and {first} are not shards of one plan (other {what}: "
                                 f"{run.get(key)} vs {ref.get(key)})")
        plan = run["plan"]
        m = _shard_count(plan)
        if (plan.get("mode"), plan.get("pairs"), m) != (ref["plan"].get("mode"), ref["plan"].get("pairs"), n):
            raise MergeError(f"{folder} and {first} are not shards of one plan (pairing {plan.get('mode')}, "
                             f"{plan.get('pairs')} pairs in {m} shards vs {ref['plan'].get('mode')}, "
                             f"{ref['plan'].get('pairs')} pairs in {n} shards)")
    return n


def _shard_count(plan: dict[str, Any]) -> int:
    """n of a run's ``--shard i/n`` (of the shards an earlier merge merged)."""
    return int(plan.get("of") or 1) if plan["shard"] == "merged" else parse_shard(plan["shard"])[1]


def _shards_of(run: dict[str, Any]) -> list[str]:
    """The shards a run.json's outputs come from: its own, or those an earlier merge merged."""
    plan = run["plan"]
    return list(plan.get("merged") or []) if plan["shard"] == "merged" else [plan["shard"]]


def _link_or_copy(src: Path, dst: Path) -> None:
    """``dst`` becomes the file ``src`` (a hard link, else a copy), atomically: a killed merge leaves a temporary
    file that the next run removes, never half a file."""
    refuse_links(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    short = os.fsdecode(os.fsencode(dst.name)[:64])
    tmp = dst.with_name(f".{short}.{secrets.token_hex(4)}.tmp")
    try:
        try:
            os.link(src, tmp, follow_symlinks=False)
        except OSError:
            shutil.copyfile(src, tmp, follow_symlinks=False)
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _same_file(src: Path, dst: Path) -> bool:
    """``dst`` is ``src`` already (the same link, or the same bytes: an earlier merge's copy)."""
    from g2g.io.files import sha256_file

    try:
        if os.path.samefile(src, dst):
            return True
        return os.stat(src).st_size == os.stat(dst).st_size and sha256_file(src) == sha256_file(dst)
    except OSError:
        return False


def _shard_lines(folder: Path, shard: str) -> dict[tuple[str, str], dict[str, Any]]:
    """Each pair's last line in a shard folder: its manifest, then the parts a killed ``--engine ray`` run left."""
    last = mix_manifest(folder).latest(pair_of)
    for path in part_files(folder, [shard_tag(shard)]):
        last.update((pair_of(r), r) for r in read_jsonl(path) if is_mix_record(r))
    return last


def _whole(folder: Path, rec: dict[str, Any]) -> bool:
    """The files a line names are in ``folder`` as its shard wrote them (none is a link to elsewhere)."""
    paths = [safe_join(folder, f) for f in files_of(rec)]
    return outputs_intact(Manifest(folder), rec) and all(not p.is_symlink() and p.is_file() for p in paths)


def _merge_shard(folder: Path, shard: str, out: Manifest, last: dict, report: MergeReport) -> None:
    """Add a shard's pairs to OUT: the files of each ok line, then its lines (a pair OUT already ends on is left)."""
    lines = []
    for pair, rec in _shard_lines(folder, shard).items():
        if last.get(pair) == rec:
            continue
        if rec.get("status") == "ok":
            if not _whole(folder, rec):
                report.damaged += 1
                continue
            for rel in files_of(rec):
                src, dst = safe_join(folder, rel), safe_join(out.out, rel)
                if not _same_file(src, dst):
                    _link_or_copy(src, dst)
                    report.files += 1
        lines.append(rec)
        last[pair] = rec
    out.append(lines)
    report.added += len(lines)


def merge_runs(shards: list[str | Path], out: str | Path) -> MergeReport:
    """Merge the OUT folders ``shards`` of one plan's ``--shard i/n`` runs into ``out`` (new, or an earlier merge's
    to add more shards); resumable. Raises :class:`MergeError` for folders that cannot be merged."""
    out = Path(out).resolve()
    folders = list(dict.fromkeys(Path(s).resolve() for s in shards))
    folders = [f for f in folders if f != out]  # OUT's own lines are there already
    if not folders:
        raise MergeError("give the OUT folders of the shard runs to merge, and another folder as -o")
    for f in folders:
        if not f.is_dir():
            raise MergeError(f"{f} is not a folder" + ("" if f.exists() else ": it does not exist"))
    runs = {f: _run_file(f) for f in folders}
    if (out / RUN_FILE).is_file():  # an earlier merge (or a run) of the same plan
        runs = {out: _run_file(out), **runs}
    n = _check_same_plan(runs)
    report = MergeReport(out=out, total_plan=runs[folders[0]]["plan"]["pairs"])
    with ExitStack() as locks:
        for f in folders:  # a shard still running is refused, in one line, before anything is written
            try:
                locks.enter_context(run_lock(f, f"mix shard {runs[f]['plan']['shard']}", reader=True))
            except G2GError as e:
                raise MergeError(f"{e}; merge when it is done") from None
        claim_output(out, "mix")
        locks.enter_context(run_lock(out, "mix shard 1/1"))  # no mix of the whole plan writes OUT meanwhile
        manifest = mix_manifest(out)
        manifest.repair()
        last = manifest.latest(pair_of)
        for f in folders:
            report.shards.append(runs[f]["plan"]["shard"])
            _merge_shard(f, runs[f]["plan"]["shard"], manifest, last, report)
        report.done = sum(r.get("status") == "ok" for r in last.values())
        merged = sorted({s for run in runs.values() for s in _shards_of(run)}, key=lambda s: parse_shard(s))
        report.missing = [f"{i}/{n}" for i in range(1, n + 1) if f"{i}/{n}" not in merged]
        _write_run_file(out, runs[folders[0]], merged, n, report.done)
    if report.missing:
        report.notes.append(f"shard(s) {', '.join(report.missing)} not merged: run them and merge again, or run "
                            "g2g mix POSES IDS -o OUT (no --shard) to do what is left here")
    return report


def _write_run_file(out: Path, run: dict[str, Any], merged: list[str], n: int, done: int) -> None:
    """OUT/run.json: the shards' (they agree on inputs, model and settings), its plan naming the shards merged."""
    plan = {**run["plan"], "shard": "merged", "merged": merged, "of": n, "shard_pairs": done}
    atomic_write_json(out / RUN_FILE, {**run, "plan": plan})
