"""``g2g merge``: shard runs into their own OUT folders, merged, read as one run of the whole plan (the same files and
lines as an unsharded run; a resume does no work, or only what no shard finished), with the shard folders only read."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from conftest import need_shared, output_files, pose_and_id_folders, sorted_manifest as lines
from g2g.config import MixConfig
from g2g.io.runfolder import run_lock
from g2g.mix import mix_folders
from g2g.mix.merge import MergeError, merge_runs

CFG = MixConfig(method="paste", size=64)
N_PAIRS = 4 * 2
SKIP = {"run.json", "manifest.jsonl", ".g2g-folder.json"}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> tuple[Path, Path]:
    wild = need_shared()
    return pose_and_id_folders(tmp_path_factory.mktemp("merge_inputs"), [wild / p for p in ("7224", "7226", "7227", "7228")],
                               [wild / p for p in ("7201", "7203")], 2)


@pytest.fixture(scope="module")
def whole(inputs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("whole") / "out"
    assert mix_folders(*inputs, out, CFG, progress=False).written == N_PAIRS
    return out


@pytest.fixture(scope="module")
def shards(inputs, tmp_path_factory) -> list[Path]:
    """Three shard runs of the plan, each into its own folder (as on three machines' own disks)."""
    root = tmp_path_factory.mktemp("shards")
    outs = [root / f"out-{i}" for i in (1, 2, 3)]
    for i, out in enumerate(outs, 1):
        mix_folders(*inputs, out, replace(CFG, shard=f"{i}/3"), progress=False)
    return outs


def files(out: Path) -> dict[str, str]:
    return output_files(out, SKIP)


def state(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.relative_to(folder).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def test_merged_shards_read_as_one_run_of_the_plan(inputs, whole, shards, tmp_path):
    before = [state(s) for s in shards]
    out = tmp_path / "merged"
    report = merge_runs(shards, out)
    assert (report.shards, report.missing, report.done, report.total_plan) == (["1/3", "2/3", "3/3"], [], N_PAIRS,
                                                                                N_PAIRS)
    assert files(out) == files(whole)  # every output and crop, byte for byte
    assert lines(out) == lines(whole)  # the same lines: each pair once
    assert [state(s) for s in shards] == before  # the shard folders only read (not even a lock written)
    run = json.loads((out / "run.json").read_text())
    assert run["plan"]["merged"] == ["1/3", "2/3", "3/3"] and run["settings_sha256"] == json.loads(
        (whole / "run.json").read_text())["settings_sha256"]
    again = merge_runs(shards, out)
    assert (again.added, again.files) == (0, 0)  # a second merge adds nothing
    resumed = mix_folders(*inputs, out, CFG, progress=False)
    assert (resumed.written, resumed.resumed) == (0, N_PAIRS)  # a resume of the whole plan does no work


def test_a_missing_shard_is_named_and_a_resume_does_only_its_pairs(inputs, whole, shards, tmp_path):
    out = tmp_path / "merged"
    report = merge_runs(shards[:2], out)
    assert report.missing == ["3/3"] and "3/3" in report.notes[0]
    third = sum(1 for _ in (shards[2] / "manifest.jsonl").read_text().splitlines())
    resumed = mix_folders(*inputs, out, CFG, progress=False)
    assert (resumed.written, resumed.resumed) == (third, N_PAIRS - third)
    assert files(out) == files(whole)


def test_a_damaged_output_in_a_shard_is_left_out_and_redone(inputs, whole, shards, tmp_path):
    second = tmp_path / "out-2"
    shutil.copytree(shards[1], second)
    rec = json.loads((second / "manifest.jsonl").read_text().splitlines()[0])
    (second / rec["output"]).write_bytes(b"truncated")
    out = tmp_path / "merged"
    report = merge_runs([shards[0], second, shards[2]], out)
    assert report.damaged == 1 and report.done == N_PAIRS - 1
    assert not (out / rec["output"]).exists()
    resumed = mix_folders(*inputs, out, CFG, progress=False)
    assert resumed.written == 1
    assert files(out) == files(whole)


def test_folders_of_other_plans_or_still_running_are_refused_in_one_line(inputs, shards, tmp_path):
    other = tmp_path / "png"
    mix_folders(*inputs, other, replace(CFG, shard="2/3", fmt="png"), progress=False)
    with pytest.raises(MergeError, match="not shards of one plan .other settings"):
        merge_runs([shards[0], other], tmp_path / "m1")
    fewer = tmp_path / "halves"
    mix_folders(*inputs, fewer, replace(CFG, shard="2/2"), progress=False)
    with pytest.raises(MergeError, match="pairs in 2 shards vs .* in 3 shards"):
        merge_runs([shards[0], fewer], tmp_path / "m2")
    with pytest.raises(MergeError, match="not the OUT folder of a g2g mix run"):
        merge_runs([shards[0], inputs[0]], tmp_path / "m3")
    with run_lock(shards[1], "mix shard 2/3"):  # a shard still being written
        with pytest.raises(MergeError, match="is writing into .* merge when it is done"):
            merge_runs(shards, tmp_path / "m4")
    assert not any((tmp_path / m).exists() for m in ("m1", "m2", "m3", "m4"))  # refused before anything is written


def test_cli_merges_and_errors_are_one_line(shards, tmp_path):
    from typer.testing import CliRunner

    from g2g.cli import app

    res = CliRunner().invoke(app, ["merge", *map(str, shards), "-o", str(tmp_path / "m"), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["done"] == N_PAIRS
    bad = CliRunner().invoke(app, ["merge", str(tmp_path / "nowhere"), "-o", str(tmp_path / "m2")])
    assert bad.exit_code == 3 and bad.output.count("\n") == 1 and "does not exist" in bad.output
