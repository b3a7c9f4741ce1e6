"""Faults a hostile user or a bad day brings: nothing lost, nothing damaged trusted, no verb in another's folder."""

from __future__ import annotations

import errno
import json
import os
import shutil
import time
from pathlib import Path

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

    import g2g.prepare.crops
    from g2g.cli import app

    def full(path, image, **kw):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(g2g.prepare.crops, "atomic_save_image", full)  # the disk fills up at the first crop
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


def test_output_and_identity_names_never_collide(tmp_path, raw_small):
    """Inputs whose names would map to one output (x.jpg and x.JPG; pose p__q with identity r and pose p with
    identity q__r) get distinct files, and a photo alice.jpg beside a folder alice/ is not merged into that person;
    reruns keep every name (nothing redone)."""
    from typer.testing import CliRunner

    from g2g.cli import app

    people = sorted(p for p in raw_small.iterdir() if p.is_dir())
    photos = [f for person in people[:3] for f in sorted(person.glob("*.jpg"))[:2]]
    src = tmp_path / "src"
    (src / "alice").mkdir(parents=True)
    shutil.copy(photos[0], src / "alice" / "1.jpg")
    shutil.copy(photos[2], src / "alice.jpg")
    shutil.copy(photos[3], src / "x.jpg")
    shutil.copy(photos[4], src / "x.JPG")
    run = CliRunner()
    data = tmp_path / "data"
    args = ["prepare", str(src), "-o", str(data), "--size", "64", "--device", "cpu"]
    assert run.invoke(app, args).exit_code == 0
    ok = [r for r in map(json.loads, (data / "manifest.jsonl").read_text().splitlines()) if r["status"] == "ok"]
    assert len(ok) == 4 and len({r["output"].casefold() for r in ok}) == 4, [r["output"] for r in ok]
    by_source = {r["source"]: r for r in ok}
    assert by_source["alice/1.jpg"]["identity"] == "alice" and by_source["alice.jpg"]["identity"] == "alice.jpg"
    assert (data / by_source["x.jpg"]["output"]).read_bytes() != (data / by_source["x.JPG"]["output"]).read_bytes()
    again = json.loads(run.invoke(app, [*args, "--json"]).stdout)
    assert again["n_resumed"] == 4 and again["n_processed"] == 0

    poses, ids = tmp_path / "poses", tmp_path / "ids"
    poses.mkdir()
    shutil.copy(photos[0], poses / "p.jpg")
    shutil.copy(photos[1], poses / "p__q.jpg")
    for name, f in (("r", photos[2]), ("q__r", photos[4])):
        (ids / name).mkdir(parents=True)
        shutil.copy(f, ids / name / "a.jpg")
    out = tmp_path / "out"
    margs = ["mix", str(poses), str(ids), "-o", str(out), "--method", "paste", "--size", "64", "--device", "cpu"]
    assert run.invoke(app, margs).exit_code == 0
    lines = [json.loads(ln) for ln in (out / "manifest.jsonl").read_text().splitlines()]
    outputs = [r["output"] for r in lines if r["status"] == "ok"]
    assert len(outputs) == 4 and len(set(outputs)) == 4 and all((out / o).is_file() for o in outputs), outputs
    assert len({r["mixed_crop"] for r in lines}) == 4
    assert json.loads(run.invoke(app, [*margs, "--json"]).stdout)["written"] == 0  # a rerun finds every name again


def test_names_near_the_file_system_limit_are_written_or_skipped_never_fatal(tmp_path, raw_small):
    """A 245-byte photo name is prepared and mixed (the temporary file's name no longer grows with it); a pair whose
    output name would pass 255 bytes is a skipped pair with its reason, and the run goes on."""
    from typer.testing import CliRunner

    from g2g.cli import app

    photos = sorted(sorted(p for p in raw_small.iterdir() if p.is_dir())[0].glob("*.jpg"))
    src = tmp_path / "src"
    src.mkdir()
    long, longer = "a" * 241 + ".jpg", "b" * 251 + ".jpg"  # 245 and 255 bytes
    shutil.copy(photos[0], src / long)
    shutil.copy(photos[1], src / longer)
    run = CliRunner()
    res = run.invoke(app, ["prepare", str(src), "-o", str(tmp_path / "data"), "--size", "64", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    ok = {r["source"] for r in map(json.loads, (tmp_path / "data" / "manifest.jsonl").read_text().splitlines())
          if r["status"] == "ok"}
    assert ok == {long, longer}
    ids = tmp_path / "ids"
    (ids / "someone").mkdir(parents=True)
    shutil.copy(photos[2], ids / "someone" / "x.jpg")
    out = tmp_path / "out"
    res = run.invoke(app, ["mix", str(src), str(ids), "-o", str(out), "--method", "paste", "--size", "64",
                           "--device", "cpu"])
    assert res.exit_code == 0, res.output
    lines = {r["pose"]: r for r in map(json.loads, (out / "manifest.jsonl").read_text().splitlines())}
    assert lines[long]["status"] == "ok" and (out / lines[long]["output"]).is_file()
    assert (lines[longer]["status"], lines[longer]["reason"]) == ("skipped", "write-error")
    assert "File name too long" in lines[longer]["message"]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are a POSIX thing")
def test_a_fifo_and_an_unlistable_folder_in_src_get_a_line_each_and_nothing_hangs(tmp_path, raw_small, monkeypatch):
    """A FIFO named like a photo is never opened (the preview used to block on it forever) and an unlistable folder
    is a counted line, not silence."""
    import subprocess
    import sys

    from g2g.config import PrepareConfig
    from g2g.prepare import prepare_folder

    src = tmp_path / "src"
    shutil.copytree(raw_small / sorted(os.listdir(raw_small))[0], src / "p")
    os.mkfifo(src / "p" / "pipe.jpg")
    code = "import sys; from g2g.cli import main; sys.argv = ['g2g', *sys.argv[1:]]; main()"
    res = subprocess.run([sys.executable, "-c", code, "prepare", str(src), "-o", str(tmp_path / "data"), "--size", "64",
                          "--device", "cpu"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    lines = {r["source"]: r for r in map(json.loads, (tmp_path / "data" / "manifest.jsonl").read_text().splitlines())}
    assert lines["p/pipe.jpg"]["reason"] == "not-a-regular-file"

    (src / "locked").mkdir()
    shutil.copy(sorted((src / "p").glob("*.jpg"))[0], src / "locked" / "x.jpg")
    real_scandir = os.scandir

    def scandir(path="."):  # what a folder without read permission does (the tests may run as root)
        if os.path.basename(os.fspath(path)) == "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    rep = prepare_folder(src, tmp_path / "data", PrepareConfig(size=64, device="cpu"), progress=False)
    assert rep.skipped["unreadable-folder"] == 1 and rep.total_skipped["unreadable-folder"] == 1
    lines = {r["source"]: r for r in map(json.loads, (tmp_path / "data" / "manifest.jsonl").read_text().splitlines())}
    assert lines["locked"]["reason"] == "unreadable-folder" and "locked/x.jpg" not in lines


def test_a_folder_g2g_did_not_make_is_refused_before_anything_is_written(tmp_path, raw_small, prepared_small):
    """-o into the user's own folder holding files the verb would write (no g2g marker) is one line, exit 3, and
    their files are untouched; a g2g folder made before markers existed is still resumed."""
    from typer.testing import CliRunner

    from g2g.cli import app
    from g2g.io.runfolder import FOLDER_MARKER, claim_output

    def users_folder(name: str, files: dict[str, str]) -> tuple[Path, dict[str, bytes]]:
        d = tmp_path / name
        d.mkdir()
        for f, text in files.items():
            (d / f).write_text(text)
        return d, {f: (d / f).read_bytes() for f in files}

    run = CliRunner()
    src = raw_small / sorted(os.listdir(raw_small))[0]
    poses, ids = crop_folders(tmp_path, prepared_small, 2)
    cases = {
        "prepare": (["prepare", str(src)], {"manifest.jsonl": '{"mine": 1}\n'}),
        "mix": (["mix", str(poses), str(ids), "--aligned", "--method", "paste"], {"run.json": '{"mine": 1}'}),
        "train": (["train", str(prepared_small), "--preset", "tiny", "--size", "32", "--steps", "1"],
                  {"config.json": '{"mine": 1}', "metrics.jsonl": "{}\n"}),
    }
    for verb, (args, files) in cases.items():
        d, before = users_folder(verb, files)
        cli_error(run.invoke(app, [*args, "-o", str(d), "--device", "cpu"]), 3, "that g2g did not write")
        assert {f: (d / f).read_bytes() for f in files} == before and sorted(os.listdir(d)) == sorted(files), verb
    d, _ = users_folder("export", {"decoder.onnx": "mine"})
    with pytest.raises(ValueError, match="decoder.onnx that g2g did not write"):
        claim_output(d, "export")
    legacy = tmp_path / "legacy"  # a mix folder from before the marker: its run.json is g2g's, so it resumes
    assert run.invoke(app, ["mix", str(poses), str(ids), "-o", str(legacy), "--aligned", "--method", "paste",
                            "--device", "cpu"]).exit_code == 0
    (legacy / FOLDER_MARKER).unlink()
    res = run.invoke(app, ["mix", str(poses), str(ids), "-o", str(legacy), "--aligned", "--method", "paste",
                           "--device", "cpu", "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout)["written"] == 0, res.output


def test_a_symlink_planted_at_a_manifest_is_refused_and_its_target_untouched(tmp_path, prepared_small):
    from typer.testing import CliRunner

    from g2g.cli import app

    poses, ids = crop_folders(tmp_path, prepared_small, 2)
    out = tmp_path / "out"
    args = ["mix", str(poses), str(ids), "-o", str(out), "--aligned", "--method", "paste", "--device", "cpu"]
    assert CliRunner().invoke(app, args).exit_code == 0
    victim = tmp_path / "elsewhere.txt"
    victim.write_text("the user's file\n")
    (out / "manifest.jsonl").unlink()
    (out / "manifest.jsonl").symlink_to(victim)
    cli_error(CliRunner().invoke(app, args), 3, "is a symbolic link")
    assert victim.read_text() == "the user's file\n"


def test_a_source_photo_replaced_between_runs_is_redone_and_a_copy_is_not(tmp_path, raw_small):
    from typer.testing import CliRunner

    from g2g.cli import app

    photos = sorted(sorted(p for p in raw_small.iterdir() if p.is_dir())[0].glob("*.jpg"))
    src, data = tmp_path / "src" / "p", tmp_path / "data"
    src.mkdir(parents=True)
    shutil.copy(photos[0], src / "a.jpg")
    shutil.copy(photos[1], src / "b.jpg")
    args = ["prepare", str(src.parent), "-o", str(data), "--size", "64", "--device", "cpu", "--json"]
    run = CliRunner()
    assert run.invoke(app, args).exit_code == 0
    crop = data / "p" / "a.png"
    first = crop.read_bytes()
    shutil.copy(photos[2], src / "a.jpg")  # same path, another photo
    os.utime(src / "b.jpg")  # touched only: same content, new mtime
    rep = json.loads(run.invoke(app, args).stdout)
    assert rep["n_redone"] == 1 and rep["n_resumed"] == 1, rep
    assert crop.read_bytes() != first
    rep = json.loads(run.invoke(app, args).stdout)
    assert rep["n_resumed"] == 2 and rep["n_processed"] == 0  # both trusted again


def test_a_symlink_planted_inside_o_is_refused_by_every_verb_and_what_it_points_to_is_untouched(
        tmp_path, raw_small, prepared_small):
    """A link at a file or a subfolder of a verb's output folder (RUN/samples -> elsewhere, OUT/eval -> elsewhere,
    OUT/run.json -> the user's file) is one line, exit 3, before anything is written through it."""
    from typer.testing import CliRunner

    from g2g.cli import app

    run = CliRunner()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("the user's file\n")

    def plant(folder: Path, name: str, target: Path) -> None:
        link = folder / name
        if link.is_dir() and not link.is_symlink():
            shutil.rmtree(link)
        link.unlink(missing_ok=True)
        link.symlink_to(target, target_is_directory=target.is_dir())

    def untouched() -> None:
        assert victim.read_text() == "the user's file\n" and os.listdir(elsewhere) == []

    src = raw_small / sorted(os.listdir(raw_small))[0]
    poses, ids = crop_folders(tmp_path, prepared_small, 2)
    data = tmp_path / "data"
    assert run.invoke(app, ["prepare", str(src), "-o", str(data), "--device", "cpu", "--size", "64"]).exit_code == 0
    plant(data, "preview.jpg", victim)
    cli_error(run.invoke(app, ["prepare", str(src), "-o", str(data), "--device", "cpu", "--size", "64"]), 3,
              "is a symbolic link inside the output folder")
    untouched()

    mix = ["mix", str(poses), str(ids), "--method", "paste", "--device", "cpu"]
    out = tmp_path / "mixed"
    assert run.invoke(app, [*mix, "--aligned", "-o", str(out)]).exit_code == 0
    plant(out, "run.json", victim)
    cli_error(run.invoke(app, [*mix, "--aligned", "-o", str(out)]), 3, "is a symbolic link")
    untouched()
    full = tmp_path / "pasted"  # photos pasted back: OUT/aligned holds the crops
    full.mkdir()
    plant(full, "aligned", elsewhere)
    cli_error(run.invoke(app, [*mix, "-o", str(full)]), 3, "is a symbolic link")
    untouched()

    evalled = tmp_path / "evalled"
    assert run.invoke(app, [*mix, "--aligned", "-o", str(evalled)]).exit_code == 0
    plant(evalled, "eval", elsewhere)
    cli_error(run.invoke(app, ["eval", str(evalled), "--metric", "id-sim", "--device", "cpu"]), 3,
              "is a symbolic link")
    untouched()

    train = ["train", str(prepared_small), "--preset", "tiny", "--size", "32", "--steps", "1", "--device", "cpu"]
    trained = tmp_path / "run"
    assert run.invoke(app, [*train, "-o", str(trained)]).exit_code == 0
    for name in ("samples", "checkpoints"):
        again = tmp_path / f"run-{name}"
        shutil.copytree(trained, again)
        plant(again, name, elsewhere)
        cli_error(run.invoke(app, [*train, "-o", str(again), "--resume", "--steps", "2"]), 3, "is a symbolic link")
        untouched()

    bundle = tmp_path / "bundle"
    bundle.mkdir()
    plant(bundle, "SHA256SUMS", victim)
    cli_error(run.invoke(app, ["export", "--onnx", str(trained), "-o", str(bundle)]), 3, "is a symbolic link")
    untouched()


def test_pages_past_the_first_of_a_multi_page_file_are_a_counted_note(tmp_path, raw_small):
    from PIL import Image

    from g2g.config import MixConfig, PrepareConfig
    from g2g.io.images import load_rgb
    from g2g.mix import mix_folders
    from g2g.prepare import prepare_folder, read_manifest

    person = raw_small / sorted(os.listdir(raw_small))[0]
    photos = [Image.open(p).convert("RGB") for p in sorted(person.iterdir())[:3]]
    src = tmp_path / "src" / "p"
    src.mkdir(parents=True)
    photos[0].save(src / "scan.tif", save_all=True, append_images=photos[1:])  # three photos, one file
    photos[1].save(src / "single.tif")
    assert load_rgb(src / "scan.tif").pages == 3 and load_rgb(src / "single.tif").pages == 1

    rep = prepare_folder(src.parent, tmp_path / "data", PrepareConfig(size=64, device="cpu"), progress=False)
    assert rep.n_ok == 2 and len(rep.notes) == 1, rep.notes
    assert "1 multi-page file(s)" in rep.notes[0] and "2 more page(s)" in rep.notes[0]
    scan = next(r for r in read_manifest(tmp_path / "data") if r["source"].endswith("scan.tif"))
    assert any("page 1 of 3" in c for c in scan["conversions"])

    ids = tmp_path / "ids"
    ids.mkdir()
    photos[2].save(ids / "x.jpg")
    mixed = mix_folders(src, ids, tmp_path / "out", MixConfig(method="paste", device="cpu"), progress=False)
    assert mixed.written == 2 and any("1 multi-page file(s)" in n for n in mixed.notes), mixed.notes


GARBAGE = (b'[1, 2]\n{"mine": true}\n\xff\xfe not json\n{"pose": "a.png", "identity": 3, "status": "ok"}\n'
           b'{"source": "p/x.jpg", "status": "ok", "output": "p/x.png", "crop_landmarks": "abc"}\n'
           b'{"pose": "x", "ident')  # a list, the user's line, binary, wrong types (mix, prepare), a torn tail


def test_torn_and_foreign_manifest_lines_are_counted_by_every_reader_and_the_rest_is_read(tmp_path, raw_small):
    """prepare, mix, eval and train read their manifests past lines that are not theirs: a counted note each time,
    the same work done, no traceback."""
    from g2g.config import EvalConfig, MixConfig, PrepareConfig
    from g2g.eval import evaluate
    from g2g.mix import mix_folders
    from g2g.prepare import prepare_folder, read_manifest
    from g2g.train.dataset import load_items

    src = tmp_path / "src"
    for person in sorted(os.listdir(raw_small))[:2]:
        shutil.copytree(raw_small / person, src / person)
    data = tmp_path / "data"
    pcfg = PrepareConfig(size=64, device="cpu")
    first = prepare_folder(src, data, pcfg, progress=False)
    clean_items = load_items(data)
    with open(data / "manifest.jsonl", "ab") as f:
        f.write(GARBAGE + b"\n")
    again = prepare_folder(src, data, pcfg, progress=False)
    assert again.n_processed == 0 and again.total_ok == first.total_ok, again
    assert [n for n in again.notes if n.startswith("manifest.jsonl: 6 line(s) not read")], again.notes
    notes: list[str] = []
    assert load_items(data, notes) == clean_items and "6 line(s) not read" in notes[0], notes
    assert len(read_manifest(data)) == first.n_crops

    crops = sorted(data.rglob("*.png"))
    poses, ids = tmp_path / "poses", tmp_path / "ids"
    for d, pick in ((poses, crops[:2]), (ids, crops[-2:])):
        d.mkdir()
        for c in pick:
            shutil.copy(c, d / f"{c.parent.name}_{c.name}")
    out = tmp_path / "out"
    mcfg = MixConfig(method="paste", aligned=True, device="cpu")
    mix_folders(poses, ids, out, mcfg, progress=False)
    clean = evaluate(out, ["id-sim"], EvalConfig(device="cpu", out_dir=str(tmp_path / "ev0")))
    with open(out / "manifest.jsonl", "ab") as f:
        f.write(GARBAGE + b"\n")
    resumed = mix_folders(poses, ids, out, mcfg, progress=False)
    assert resumed.written == 0 and resumed.resumed == 4
    assert [n for n in resumed.notes if n.startswith("manifest.jsonl: 6 line(s) not read")], resumed.notes
    dirty = evaluate(out, ["id-sim"], EvalConfig(device="cpu", out_dir=str(tmp_path / "ev1")))
    assert dirty.counts == clean.counts and dirty.counts["planned"] == 4
    note = [n for n in dirty.notes if n.startswith("manifest.jsonl")]
    assert len(note) == 1 and all(f"{k}: {v}" in note[0] for k, v in
                                  {"not-json": 2, "foreign": 3, "not-an-object": 1}.items()), dirty.notes
    assert not [n for n in clean.notes if n.startswith("manifest.jsonl")]


def test_too_little_memory_is_one_line_before_any_library_loads_and_running_out_later_too(tmp_path, monkeypatch):
    """Under ``ulimit -v`` too small for the verb the command stops before importing numpy (whose BLAS would spin
    for minutes); a MemoryError inside a verb is one line, exit 3."""
    import subprocess
    import sys

    from typer.testing import CliRunner

    import g2g.mix
    from g2g.cli import app
    from g2g.limits import address_space_needed

    resource = pytest.importorskip("resource")
    limit = 400 << 20  # below every verb's need, above Python's own

    def small() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))

    out = tmp_path / "out"
    for args in (["mix", str(tmp_path), str(tmp_path), "-o", str(out)], ["train", str(tmp_path), "-o", str(out)]):
        res = subprocess.run([sys.executable, "-m", "g2g", *args], preexec_fn=small, capture_output=True, text=True,
                             timeout=60)
        lines = res.stderr.strip().splitlines()
        assert res.returncode == 3 and len(lines) == 1 and lines[0].startswith("error: the address-space limit"), res
        assert f"{address_space_needed(args[0]) / (1 << 30):.1f} GiB" in lines[0] and not out.exists()
    assert address_space_needed("train") > address_space_needed("mix") > address_space_needed(None)

    def exhausted(*a, **kw):
        raise MemoryError("std::bad_alloc")

    monkeypatch.setattr(g2g.mix, "mix_folders", exhausted)
    res = CliRunner().invoke(app, ["mix", str(tmp_path), str(tmp_path), "-o", str(out)])
    assert "lower --batch-size" in cli_error(res, 3, "out of memory (std::bad_alloc)")
