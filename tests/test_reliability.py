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
