"""Faults a hostile user or a bad day brings: nothing lost, nothing damaged trusted, no verb in another's folder."""

from __future__ import annotations

import errno
import json
import os
import shutil
import time

import pytest

from conftest import cli_error, crop_folders, resum_bundle


def _stale(path, age: float = 3600) -> None:
    t = time.time() - age
    os.utime(path, (t, t))


def test_a_damaged_or_deleted_crop_is_redone_and_write_errors_are_retried(tmp_path, raw_small):
    from g2g.config import PrepareConfig
    from g2g.prepare import prepare_folder, read_manifest

    src = tmp_path / "src"
    shutil.copytree(raw_small / sorted(os.listdir(raw_small))[0], src / "p")
    out = tmp_path / "data"
    cfg = PrepareConfig(size=64, device="cpu")
    first = prepare_folder(src, out, cfg, progress=False)
    recs = read_manifest(out)
    assert first.n_ok >= 3 and all(r["output_digest"]["bytes"] > 0 for r in recs)
    a, b, c = (out / r["output"] for r in recs[:3])
    a.write_bytes(a.read_bytes()[:100])  # truncated by a crash
    b.write_bytes(b"")  # zero bytes left by a full disk
    c.unlink()  # deleted by another program
    stale = out / "p" / ".x.png.abc123.tmp"  # what a SIGKILL mid-write leaves
    stale.write_bytes(b"partial")
    _stale(stale)
    fresh = out / "p" / ".y.png.def456.tmp"  # another process's write in flight: never touched
    fresh.write_bytes(b"partial")
    again = prepare_folder(src, out, cfg, progress=False)
    assert again.n_redone == 3 and again.n_processed == 3 and again.n_ok == 3
    assert not stale.exists() and fresh.exists()
    from g2g.io.files import intact

    assert all(intact(out / r["output"], r["output_digest"]) for r in read_manifest(out))
    assert len(read_manifest(out)) == len(recs)  # the current state: one line per crop, not old and new

    # a write error is a verdict on the run, not the photo: the next run tries again
    lines = (out / "manifest.jsonl").read_text().splitlines()
    rec = json.loads(lines[0])
    rec.update(status="skipped", reason="write-error", output=None, output_digest=None, face_index=None)
    (out / "manifest.jsonl").write_text("\n".join(lines + [json.dumps(rec)]) + "\n")
    third = prepare_folder(src, out, cfg, progress=False)
    assert third.n_redone == 1 and third.n_ok == 1


def test_a_full_disk_stops_prepare_with_one_line(tmp_path, raw_small, monkeypatch):
    from typer.testing import CliRunner

    import g2g.prepare.run
    from g2g.cli import app

    def full(path, image, **kw):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(g2g.prepare.run, "atomic_save_image", full)  # the disk fills up at the first crop
    src = tmp_path / "src"
    shutil.copytree(raw_small / sorted(os.listdir(raw_small))[0], src / "p")
    res = CliRunner().invoke(app, ["prepare", str(src), "-o", str(tmp_path / "data"), "--size", "64", "--device", "cpu"])
    line = cli_error(res, 3, "No space left on device")
    assert "rerun" in line  # says what to do
    monkeypatch.undo()
    res = CliRunner().invoke(app, ["prepare", str(src), "-o", str(tmp_path / "data"), "--size", "64", "--device", "cpu",
                                   "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout)["n_ok"] >= 3  # with space again, nothing was lost


def test_verbs_refuse_each_others_folders(tmp_path, prepared_small):
    from typer.testing import CliRunner

    from g2g.cli import app

    runner = CliRunner()
    poses, ids = crop_folders(tmp_path, prepared_small, 2)
    mixed = tmp_path / "mixed"
    res = runner.invoke(app, ["mix", str(poses), str(ids), "-o", str(mixed), "--method", "paste", "--aligned",
                              "--size", "64"])
    assert res.exit_code == 0, res.output
    before = (mixed / "manifest.jsonl").read_bytes()
    cli_error(runner.invoke(app, ["prepare", str(poses), "-o", str(mixed), "--device", "cpu"]), 3, "g2g mix")
    assert (mixed / "manifest.jsonl").read_bytes() == before  # refused before writing anything
    cli_error(runner.invoke(app, ["mix", str(poses), str(ids), "-o", str(prepared_small), "--method", "paste",
                                  "--aligned"]), 3, "g2g prepare")


def test_bundle_metadata_edits_are_refused_before_any_output(tmp_path):
    from g2g.bundle import META_FILE, SUMS_FILE, BundleError, default_model_dir, open_bundle

    m = tmp_path / "model"
    shutil.copytree(default_model_dir(), m)
    meta = json.loads((m / META_FILE).read_text())
    meta["align"]["zoom"] = 1.6  # would frame every face differently, silently
    text = json.dumps(meta)
    (m / META_FILE).write_text(text)
    with pytest.raises(BundleError, match=SUMS_FILE):
        open_bundle(m)
    resum_bundle(m, text)
    with pytest.raises(BundleError, match="disagrees with .*align"):  # the parts carry the true facts
        open_bundle(m)
    (m / SUMS_FILE).unlink()
    with pytest.raises(BundleError, match=f"no {SUMS_FILE}"):
        open_bundle(m)



def test_a_bundle_with_swapped_parts_is_one_line_before_any_output(tmp_path, prepared_small):
    """Parts renamed into each other's roles, with every checksum redone to match, are caught by each part's own
    metadata: exit 3 with one line, and no OUT folder."""
    import hashlib

    from typer.testing import CliRunner

    from g2g.bundle import META_FILE, default_model_dir
    from g2g.cli import app

    m = tmp_path / "model"
    shutil.copytree(default_model_dir(), m)
    (m / "content_encoder.onnx").rename(m / "tmp.onnx")
    (m / "class_encoder.onnx").rename(m / "content_encoder.onnx")
    (m / "tmp.onnx").rename(m / "class_encoder.onnx")
    meta = json.loads((m / META_FILE).read_text())
    for name in meta["files"]:
        if name.endswith(".onnx"):
            meta["files"][name] = hashlib.sha256((m / name).read_bytes()).hexdigest()
    text = json.dumps(meta)
    (m / META_FILE).write_text(text)
    resum_bundle(m, text)
    lines = [ln for ln in (m / "SHA256SUMS").read_text().splitlines() if ln.endswith(META_FILE)]
    (m / "SHA256SUMS").write_text("".join(f"{hashlib.sha256((m / n).read_bytes()).hexdigest()}  {n}\n"
                                          for n in meta["files"] if n.endswith(".onnx")) + "\n".join(lines) + "\n")
    poses, ids = crop_folders(tmp_path, prepared_small, 2)
    res = CliRunner().invoke(app, ["mix", str(poses), str(ids), "-o", str(tmp_path / "out"), "--model", str(m),
                                   "--aligned", "--device", "cpu"])
    cli_error(res, 3, "content_encoder.onnx in")
    assert "swapped" in res.output and not (tmp_path / "out").exists()


def test_every_file_under_src_gets_a_line_or_is_followed(tmp_path, raw_small):
    from g2g.config import PrepareConfig
    from g2g.prepare import prepare_folder, read_manifest

    photos = sorted((raw_small / sorted(os.listdir(raw_small))[0]).glob("*.jpg"))
    src, outside = tmp_path / "src", tmp_path / "outside"
    (src / "p").mkdir(parents=True)
    outside.mkdir()
    shutil.copy(photos[0], src / "p" / "a.jpg")
    shutil.copy(photos[1], outside / "b.jpg")
    (src / "q").symlink_to(outside, target_is_directory=True)  # a folder elsewhere: followed
    (src / "r").symlink_to(outside, target_is_directory=True)  # the same folder again: read once
    (src / ".cache").mkdir()
    shutil.copy(photos[2], src / ".cache" / "c.jpg")  # a hidden folder: one line, not read
    (src / "..odd").mkdir()  # dot-dot names are hidden too, and said so
    shutil.copy(photos[3], src / "p" / ".d.jpg")
    rep = prepare_folder(src, tmp_path / "data", PrepareConfig(size=64, device="cpu"), progress=False)
    lines = {r["source"]: r for r in read_manifest(tmp_path / "data", ok_only=False)}
    assert lines["q/b.jpg"]["status"] == "ok" and "r/b.jpg" not in lines and lines["r"]["reason"] == "repeated-folder"
    assert {lines[k]["reason"] for k in (".cache", "..odd", "p/.d.jpg")} == {"hidden"}
    assert rep.n_sources == len(lines) == 6 and rep.skipped["hidden"] == 3


def test_a_damaged_mixed_crop_is_neither_scored_nor_trusted(tmp_path, prepared_small):
    from g2g.config import EvalConfig, MixConfig
    from g2g.eval import evaluate
    from g2g.mix import latest_records, mix_folders

    poses, ids = crop_folders(tmp_path, prepared_small, 2)
    out = tmp_path / "out"
    cfg = MixConfig(method="paste", aligned=True, size=64, fmt="png")
    assert mix_folders(poses, ids, out, cfg, progress=False).written == 4
    rec = next(iter(latest_records(out).values()))
    (out / rec["output"]).write_bytes((out / rec["output"]).read_bytes()[:200])  # truncated after the fact
    rep = evaluate(out, ["id-retrieval"], EvalConfig(device="cpu", out_dir=str(tmp_path / "ev")))
    assert rep.counts["skipped"] == {"eval:damaged-crop": 1} and rep.counts["ok"] == 3  # not a "no face" miss
    again = mix_folders(poses, ids, out, cfg, progress=False)
    assert again.resumed == 3 and again.written == 1  # the damaged one is redone


def test_mix_onto_a_full_disk_and_export_into_a_run_folder_are_one_line(tmp_path, prepared_small, monkeypatch):
    from typer.testing import CliRunner

    import g2g.mix.pairs
    from g2g.cli import app

    poses, ids = crop_folders(tmp_path, prepared_small, 2)

    def full(path, image, **kw):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(g2g.mix.pairs, "atomic_save_image", full)  # the writer threads hit a full disk
    res = CliRunner().invoke(app, ["mix", str(poses), str(ids), "-o", str(tmp_path / "m"), "--method", "paste",
                                   "--aligned", "--size", "64"])
    assert "rerun" in cli_error(res, 3, "No space left on device")
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)  # a training run folder
    from g2g.io.runfolder import claim_output
    from g2g.errors import G2GError

    with pytest.raises(G2GError, match="g2g train"):  # export checks the folder before writing a file
        claim_output(run, "export")


def test_bad_plan_options_are_usage_errors_and_a_mix_of_faceless_identities_exits_3(tmp_path, raw_small):
    """--shard 3/2 and --per-pose 0 are bad option values (exit 2); a mix where no identity photo has a face wrote
    nothing and says so in one line (exit 3), with every pair recorded as skipped."""
    from PIL import Image
    from typer.testing import CliRunner

    from g2g.cli import app

    person = sorted(p for p in raw_small.iterdir() if p.is_dir())[0]
    poses, ids = tmp_path / "poses", tmp_path / "ids"
    poses.mkdir()
    shutil.copy(sorted(person.glob("*.jpg"))[0], poses / "p.jpg")
    (ids / "nobody").mkdir(parents=True)
    Image.new("RGB", (160, 160), (120, 120, 120)).save(ids / "nobody" / "grey.jpg")
    run = CliRunner()
    base = ["mix", str(poses), str(ids), "--size", "64", "--device", "cpu"]
    cli_error(run.invoke(app, [*base, "-o", str(tmp_path / "o1"), "--shard", "3/2"]), 2, "--shard")
    cli_error(run.invoke(app, [*base, "-o", str(tmp_path / "o2"), "--pairs", "random", "--per-pose", "0"]), 2,
              "--per-pose")
    cli_error(run.invoke(app, [*base, "-o", str(tmp_path / "o3")]), 3, "no identity photo had a usable face")
    lines = [json.loads(ln) for ln in (tmp_path / "o3" / "manifest.jsonl").read_text().splitlines()]
    assert [(r["status"], r["reason"]) for r in lines] == [("skipped", "no-face")]


def test_a_second_mix_into_one_out_stops_or_waits_while_shards_run_side_by_side(tmp_path, prepared_small):
    """While a run holds OUT (same shard), a second one stops with one line (exit 3) and writes nothing; --wait
    starts it once the first is done; another shard of the plan runs at the same time; a lock left by a process
    that died is no lock."""
    import subprocess
    import sys
    import threading

    from typer.testing import CliRunner

    from g2g.cli import app
    from g2g.io.runfolder import claim_output, run_lock

    poses, ids = crop_folders(tmp_path, prepared_small, 2)
    out = tmp_path / "out"
    args = ["mix", str(poses), str(ids), "-o", str(out), "--aligned", "--method", "paste", "--device", "cpu"]
    claim_output(out, "mix")
    with run_lock(out, "mix shard 1/1"):
        cli_error(CliRunner().invoke(app, args), 3, "another g2g mix shard 1/1 is writing")
        assert not (out / "manifest.jsonl").exists()
        res = CliRunner().invoke(app, [*args, "--shard", "2/2"])  # another shard: not held up
        assert res.exit_code == 0, res.output
    shard2 = (out / "manifest.jsonl").read_text().splitlines()
    held = threading.Event()

    def first_run() -> None:  # holds the lock for a second, as a run would, then finishes
        with run_lock(out, "mix shard 1/1"):
            held.set()
            time.sleep(1.0)

    t = threading.Thread(target=first_run)
    t.start()
    held.wait()
    res = CliRunner().invoke(app, [*args, "--wait"])
    t.join()
    assert res.exit_code == 0, res.output
    lines = [json.loads(ln) for ln in (out / "manifest.jsonl").read_text().splitlines()]
    keys = [(r["pose"], r["identity"]) for r in lines]
    assert len(keys) == len(set(keys)) == 4 and len(shard2) == 2  # every pair once: shard 2's two, then the rest
    code = "import os, sys; from g2g.io.runfolder import run_lock\nwith run_lock(sys.argv[1], 'mix shard 1/1'):\n" \
           "    os._exit(9)  # dies holding it\n"
    assert subprocess.run([sys.executable, "-c", code, str(out)]).returncode == 9
    res = CliRunner().invoke(app, args)  # the dead process's lock is gone with it: a resume with nothing to do
    assert res.exit_code == 0 and len((out / "manifest.jsonl").read_text().splitlines()) == 4, res.output


def test_a_second_prepare_into_one_data_folder_stops_before_any_work(tmp_path, raw_small):
    from typer.testing import CliRunner

    from g2g.cli import app
    from g2g.io.runfolder import claim_output, run_lock

    src, data = tmp_path / "src", tmp_path / "data"
    shutil.copytree(raw_small / sorted(os.listdir(raw_small))[0], src / "p")
    claim_output(data, "prepare")
    args = ["prepare", str(src), "-o", str(data), "--size", "64", "--device", "cpu"]
    with run_lock(data, "prepare"):
        line = cli_error(CliRunner().invoke(app, args), 3, "another g2g prepare is writing")
        assert "--wait" not in line and not (data / "manifest.jsonl").exists()
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0 and (data / "manifest.jsonl").exists(), res.output
