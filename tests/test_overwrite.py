"""A rerun of ``g2g mix`` into an OUT made with other settings is refused (or, with --overwrite, a fresh start), and
the output options: --quality for jpg and webp, png lossless."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from conftest import cli_error, pose_and_id_folders

FAST = ["--size", "64", "--device", "cpu", "--workers", "2"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory, raw_small) -> tuple[Path, Path]:
    """POSES: 2 real photos of 2 people; IDS: 2 people, 2 photos and 1."""
    people = sorted(d for d in raw_small.iterdir() if d.is_dir())
    return pose_and_id_folders(tmp_path_factory.mktemp("ow"), people[:2], people[2:4], [2, 1])


def mix(poses: Path, ids: Path, out: Path, *args: str):
    from g2g.cli import app

    return CliRunner().invoke(app, ["mix", str(poses), str(ids), "-o", str(out), *FAST, *args])


def files(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and not p.name.startswith(".g2g-lock")}


def manifest(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def test_a_rerun_with_other_settings_is_refused_and_overwrite_starts_afresh(tmp_path, folders):
    poses, ids = folders
    out = tmp_path / "out"
    res = mix(poses, ids, out, "--method", "paste", "--grid")
    assert res.exit_code == 0, res.output
    first = files(out)
    assert len(manifest(out)) == 4 and "grid.jpg" in first

    for args, said in [(["--method", "warp-paste"], "was made with --method paste (this run: --method warp-paste)"),
                       (["--method", "paste", "--feather", "0.2"], "--feather 0.1 (this run: --feather 0.2)"),
                       (["--method", "paste", "--quality", "40"], "--quality 95 (this run: --quality 40)"),
                       (["--method", "paste", "--format", "png"], "--format jpg (this run: --format png)")]:
        line = cli_error(mix(poses, ids, out, *args), 3, said)
        assert line.endswith("use another -o, or --overwrite to replace its outputs")
        assert files(out) == first  # nothing written, nothing removed: manifest, run.json and outputs as they were

    res = mix(poses, ids, out, "--method", "paste", "--grid")  # the same settings: a plain resume, as before
    assert res.exit_code == 0 and {k: v for k, v in files(out).items() if k != "grid.jpg"} == {
        k: v for k, v in first.items() if k != "grid.jpg"}

    # --overwrite with another method and a smaller plan: OUT ends as a fresh run of that plan would leave it
    res = mix(poses, ids, out, "--method", "warp-paste", "--overwrite", "--pairs", "zip", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["written"] == 2
    lines = manifest(out)
    run = json.loads((out / "run.json").read_text())
    assert len(lines) == 2 and len({(r["pose"], r["identity"]) for r in lines}) == 2  # no duplicate rows
    assert all(r["status"] == "ok" and r["settings_sha256"] == run["settings_sha256"] for r in lines)
    assert run["method"] == "warp-paste"
    named = {f for r in lines for f in (r["output"], r["mixed_crop"], r["pose_crop"], *r["identity_crops"])}
    assert set(files(out)) - {".g2g-folder.json", "manifest.jsonl", "run.json"} == named  # stale outputs gone
    assert all(files(out)[r["output"]] != first[r["output"]] for r in lines)  # made by warp-paste

    res = mix(poses, ids, out, "--method", "warp-paste", "--pairs", "zip", "--json")  # resumes as before
    assert res.exit_code == 0 and json.loads(res.stdout)["resumed"] == 2 and len(manifest(out)) == 2
    # the pairs zip left out, added later with the same settings: only they are done
    res = mix(poses, ids, out, "--method", "warp-paste", "--json")
    assert res.exit_code == 0 and json.loads(res.stdout)["resumed"] == 2 and json.loads(res.stdout)["written"] == 2


def test_overwrite_of_one_shard_keeps_the_other_shards_work(tmp_path, folders):
    poses, ids = folders
    out = tmp_path / "out"
    for i in (1, 2):
        assert mix(poses, ids, out, "--method", "paste", "--shard", f"{i}/2").exit_code == 0
    before = {r["output"]: (out / r["output"]).stat().st_mtime_ns for r in manifest(out)}
    res = mix(poses, ids, out, "--method", "paste", "--shard", "1/2", "--overwrite", "--json")
    assert res.exit_code == 0 and json.loads(res.stdout)["written"] == 2
    after = {r["output"]: (out / r["output"]).stat().st_mtime_ns for r in manifest(out)}
    assert set(after) == set(before) and len(manifest(out)) == 4 and all(r["status"] == "ok" for r in manifest(out))
    assert sum(after[k] == before[k] for k in before) == 2  # shard 2's outputs kept as they were, shard 1's redone


def test_quality_changes_jpeg_size_webp_100_is_lossless_and_png_takes_no_quality(tmp_path, folders):
    poses, ids = folders

    def outputs(name: str, *args: str) -> dict[tuple[str, str], Path]:
        out = tmp_path / name
        res = mix(poses, ids, out, "--method", "paste", "--pairs", "zip", *args)
        assert res.exit_code == 0, res.output
        return {(r["pose"], r["identity"]): out / r["output"] for r in manifest(out)}

    q95, q30 = outputs("q95"), outputs("q30", "--quality", "30")
    for pair in q95:
        assert q30[pair].stat().st_size < q95[pair].stat().st_size
        assert Image.open(q30[pair]).format == "JPEG"
    png = outputs("png", "--format", "png")
    webp = outputs("webp", "--format", "webp", "--quality", "100")
    lossy = outputs("webp90", "--format", "webp", "--quality", "90")
    for pair in png:
        exact = np.asarray(Image.open(png[pair]).convert("RGB"))
        assert Image.open(webp[pair]).format == "WEBP" and webp[pair].suffix == ".webp"
        assert np.array_equal(np.asarray(Image.open(webp[pair]).convert("RGB")), exact)  # lossless
        assert not np.array_equal(np.asarray(Image.open(lossy[pair]).convert("RGB")), exact)
    cli_error(mix(poses, ids, tmp_path / "bad", "--format", "png", "--quality", "80"), 2, "--quality is for jpg")
    cli_error(mix(poses, ids, tmp_path / "bad", "--quality", "101"), 2, "between 1 and 100")
    assert not (tmp_path / "bad").exists()


def test_prepare_refuses_another_size_into_the_same_data(tmp_path, raw_small):
    from g2g.cli import app

    src = tmp_path / "src"
    shutil.copytree(sorted(d for d in raw_small.iterdir() if d.is_dir())[0], src / "p")
    run = CliRunner().invoke
    assert run(app, ["prepare", str(src), "-o", str(tmp_path / "data"), "--size", "64"]).exit_code == 0
    before = files(tmp_path / "data")
    cli_error(run(app, ["prepare", str(src), "-o", str(tmp_path / "data"), "--size", "96"]), 3, "size 64 -> 96")
    assert files(tmp_path / "data") == before


def test_an_out_from_before_run_json_kept_its_settings_is_still_told_apart(tmp_path, folders):
    """A run.json written before it kept ``settings``: what differs is read from its ``mix`` and ``align``."""
    poses, ids = folders
    out = tmp_path / "out"
    assert mix(poses, ids, out, "--method", "paste", "--pairs", "zip").exit_code == 0
    run = json.loads((out / "run.json").read_text())
    del run["settings"]
    (out / "run.json").write_text(json.dumps(run))
    cli_error(mix(poses, ids, out, "--method", "paste", "--pairs", "zip", "--size", "96"), 3,
              "was made with --size 64 (this run: --size 96)")
    (out / "run.json").unlink()  # no run.json at all: the manifest alone says the outputs are another run's
    cli_error(mix(poses, ids, out, "--method", "warp-paste", "--pairs", "zip"), 3,
              "holds 2 output(s) made with another model or other settings")
