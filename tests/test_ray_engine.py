"""``g2g mix --engine ray`` and ``g2g prepare --engine ray`` on a local 2-CPU Ray cluster: the same files and
manifest lines as a local run, a killed worker retried with no line written twice, a rerun that does no work, and a
local run that never imports ray."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from conftest import need_shared, output_files, pose_and_id_folders, sorted_manifest as lines
from g2g.config import MixConfig, PrepareConfig
from g2g.io.parts import PARTS_DIR
from g2g.mix import mix_folders
from g2g.prepare import prepare_folder

pytest.importorskip("ray.data", reason="--engine ray needs the ray extra (pip install 'g2g[ray]')")
pytestmark = pytest.mark.slow

POSE_PEOPLE = ["7224", "7226", "7227", "7228", "7229", "7231"]
ID_PEOPLE = ["7201", "7203"]
SKIP = {"run.json", "manifest.jsonl", ".g2g-folder.json", "prepare_config.json"}


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> tuple[Path, Path]:
    wild = need_shared()
    return pose_and_id_folders(tmp_path_factory.mktemp("ray_inputs"), [wild / p for p in POSE_PEOPLE],
                               [wild / p for p in ID_PEOPLE], 2)


@pytest.fixture(scope="module")
def cluster():
    from g2g.cluster import ray_cluster

    with ray_cluster(num_cpus=2) as c:  # every run of this module joins it
        yield c


@pytest.fixture(scope="module")
def local_run(folders, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("local") / "out"
    report = mix_folders(*folders, out, MixConfig(size=128), progress=False)
    assert report.written == len(POSE_PEOPLE) * len(ID_PEOPLE)
    return out


def files(out: Path) -> dict[str, str]:
    return output_files(out, SKIP)


@contextmanager
def killing(actor: str, out: Path) -> Iterator[list[int]]:
    """Kill the Ray worker process of ``actor`` (its class name) once a first part file exists under ``out``; yields
    the list that gets the number of part files there were at the kill."""
    import psutil

    killed: list[int] = []

    def watch() -> None:
        deadline = time.time() + 120
        while time.time() < deadline and not killed:
            if any((out / PARTS_DIR).rglob("*.jsonl")):
                for proc in psutil.process_iter(["cmdline"]):
                    if actor in " ".join(proc.info["cmdline"] or []):
                        proc.kill()
                        killed.append(len(list((out / PARTS_DIR).rglob("*.jsonl"))))
                        break
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        yield killed
    finally:
        watcher.join()


def test_ray_writes_the_local_runs_files_and_a_rerun_does_no_work(folders, local_run, cluster, tmp_path):
    out = tmp_path / "ray"
    report = mix_folders(*folders, out, MixConfig(size=128, engine="ray"), progress=False)
    assert report.written == len(POSE_PEOPLE) * len(ID_PEOPLE) and not report.skipped
    assert files(out) == files(local_run)  # every output and crop, byte for byte
    assert lines(out) == lines(local_run)  # the same manifest lines (the order of a parallel run may differ)
    assert not (out / PARTS_DIR).exists()  # every part folded
    again = mix_folders(*folders, out, MixConfig(size=128, engine="ray"), progress=False)
    assert (again.written, again.resumed, again.poses_encoded) == (0, report.written, 0)
    assert lines(out) == lines(local_run)


def test_the_model_on_ray_writes_the_local_runs_files(folders, cluster, tmp_path):
    cfg = MixConfig(method="model")
    local = mix_folders(*folders, tmp_path / "local", cfg, progress=False)
    on_ray = mix_folders(*folders, tmp_path / "ray", MixConfig(method="model", engine="ray"), progress=False)
    assert on_ray.written == local.written == len(POSE_PEOPLE) * len(ID_PEOPLE)
    assert files(tmp_path / "ray") == files(tmp_path / "local")
    assert lines(tmp_path / "ray") == lines(tmp_path / "local")


def test_a_killed_mixing_worker_is_retried_and_no_line_is_written_twice(folders, local_run, cluster, tmp_path):
    out = tmp_path / "ray"
    with killing("MixPoses", out) as killed:  # once a first pose is written, the actor that mixes the next ones
        report = mix_folders(*folders, out, MixConfig(size=128, engine="ray"), progress=False)
    assert killed and killed[0] < len(POSE_PEOPLE), "the mixing actor was not killed mid-run"
    assert report.written == len(POSE_PEOPLE) * len(ID_PEOPLE)
    keys = [(r["pose"], r["identity"]) for r in map(json.loads, lines(out))]
    assert len(keys) == len(set(keys)) == len(POSE_PEOPLE) * len(ID_PEOPLE)  # each pair once
    assert files(out) == files(local_run)


def test_a_local_run_does_not_import_ray(folders, tmp_path):
    code = (f"import sys; from pathlib import Path; from g2g.config import MixConfig, PrepareConfig\n"
            "from g2g.mix import mix_folders; from g2g.prepare import prepare_folder\n"
            f"r = mix_folders(Path({str(folders[0])!r}), Path({str(folders[1])!r}), Path({str(tmp_path / 'o')!r}), "
            f"MixConfig(size=64, pairs='zip'), progress=False)\n"
            f"p = prepare_folder(Path({str(folders[1])!r}), Path({str(tmp_path / 'd')!r}), PrepareConfig(size=64), "
            "progress=False)\n"
            "assert r.written and p.n_ok, (r, p)\nassert 'ray' not in sys.modules, 'ray imported'\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]


@pytest.mark.parametrize("verb", ["mix", "prepare"])
def test_engine_ray_without_ray_says_how_to_install_it(monkeypatch, folders, tmp_path, verb):
    import builtins

    real = builtins.__import__

    def no_ray(name, *a, **k):
        if name == "ray" or name.startswith("ray."):
            raise ImportError(name)
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    from g2g.cluster import ClusterError

    with pytest.raises(ClusterError, match=r"pip install 'g2g\[ray\]'"):
        if verb == "mix":
            mix_folders(*folders, tmp_path / "o", MixConfig(engine="ray"), progress=False)
        else:
            prepare_folder(folders[1], tmp_path / "o", PrepareConfig(engine="ray"), progress=False)
    assert not (tmp_path / "o").exists()  # refused before anything is written


@pytest.mark.parametrize("verb", ["mix", "prepare"])
def test_an_address_nothing_answers_at_is_one_line_at_once(folders, tmp_path, verb):
    import socket

    from g2g.cluster import ClusterError

    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfgs = {"mix": MixConfig(engine="ray", address=f"127.0.0.1:{port}"),
            "prepare": PrepareConfig(engine="ray", address=f"127.0.0.1:{port}")}
    with pytest.raises(ClusterError, match=f"cannot reach the Ray cluster at 127.0.0.1:{port}"):
        if verb == "mix":
            mix_folders(*folders, tmp_path / "o", cfgs[verb], progress=False)
        else:
            prepare_folder(folders[1], tmp_path / "o", cfgs[verb], progress=False)
    assert not (tmp_path / "o").exists()  # refused before anything is written


def test_folding_parts_again_after_a_killed_fold_writes_no_line_twice(tmp_path):
    from g2g.io.parts import fold_parts, open_part, part_files
    from g2g.io.runfolder import Manifest

    key = lambda r: (r["pose"], r["identity"])  # noqa: E731
    with open_part(tmp_path, "1-1", "a.jpg") as part:
        part.append([{"pose": "a.jpg", "identity": "x", "status": "skipped"}])
        part.append([{"pose": "a.jpg", "identity": "x", "status": "ok"}, {"pose": "a.jpg", "identity": "y", "status": "ok"}])
    with open_part(tmp_path, "1-1", "a.jpg") as part:  # a retry sees the first try's lines
        assert len(part.lines) == 3
    manifest = Manifest(tmp_path)
    manifest.append([{"pose": "a.jpg", "identity": "x", "status": "ok"}])  # a fold killed after its first line
    assert fold_parts(manifest, key) == 1  # only y: x's last line is already the manifest's
    assert not part_files(tmp_path)
    assert [(r["identity"], r["status"]) for r in manifest.lines()] == [("x", "ok"), ("y", "ok")]


@pytest.fixture(scope="module")
def photos(folders, tmp_path_factory) -> Path:
    """SRC for prepare: two people's photos, one photo holding two faces (two lines, two crops) and a text file."""
    from PIL import Image

    src = tmp_path_factory.mktemp("prepare_src") / "src"
    shutil.copytree(folders[1], src)
    pair = [Image.open(p).convert("RGB") for p in sorted(folders[0].glob("*.jpg"))[:2]]
    both = Image.new("RGB", (pair[0].width + pair[1].width, max(p.height for p in pair)))
    both.paste(pair[0], (0, 0))
    both.paste(pair[1], (pair[0].width, 0))
    both.save(src / "two.jpg", quality=95)
    (src / "notes.txt").write_text("not a photo")
    return src


PREPARE = dict(faces="all", batch_size=2, size=64)


@pytest.fixture(scope="module")
def local_prepare(photos, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("local_prepare") / "data"
    report = prepare_folder(photos, out, PrepareConfig(**PREPARE), progress=False)
    assert report.n_crops == report.n_ok + 1  # two.jpg gave two crops
    return out


def manifest_lines(out: Path) -> list[str]:
    return [l for l in (out / "manifest.jsonl").read_text().splitlines() if l.strip()]


def test_prepare_on_ray_writes_the_local_runs_crops_and_lines_and_a_rerun_does_no_work(photos, local_prepare, cluster,
                                                                                       tmp_path):
    out = tmp_path / "data"
    report = prepare_folder(photos, out, PrepareConfig(**PREPARE, engine="ray"), progress=False)
    local = files(local_prepare)
    assert files(out) == local and len([f for f in local if f.endswith(".png")]) >= 5  # crops, byte for byte
    assert manifest_lines(out) == manifest_lines(local_prepare)  # the same lines in the same order
    assert not (out / PARTS_DIR).exists()
    again = prepare_folder(photos, out, PrepareConfig(**PREPARE, engine="ray"), progress=False)
    assert (again.n_processed, again.n_resumed) == (0, report.n_resumed + report.n_processed)
    assert manifest_lines(out) == manifest_lines(local_prepare)


def test_prepare_a_killed_detecting_worker_is_retried_and_no_line_is_written_twice(photos, local_prepare, cluster,
                                                                                    tmp_path):
    out = tmp_path / "data"
    with killing("CropPhotos", out) as killed:  # once a first photo is recorded, an actor that detects the others
        prepare_folder(photos, out, PrepareConfig(**PREPARE, engine="ray"), progress=False)
    n_photos = len(list(photos.rglob("*.jpg")))
    assert killed and killed[0] < n_photos, "the detecting actor was not killed mid-run"
    keys = [(r["source"], r["face_index"]) for r in map(json.loads, manifest_lines(out))]
    assert len(keys) == len(set(keys)) == n_photos + 2  # each face once: two.jpg's two, notes.txt's skip
    assert files(out) == files(local_prepare)
