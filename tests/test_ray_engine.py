"""``g2g mix --engine ray`` on a local 2-CPU Ray cluster: the same files and manifest lines as a local run, a killed
worker retried with no line written twice, a rerun that does no work, and a local run that never imports ray."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import need_shared
from g2g.config import MixConfig
from g2g.io.parts import PARTS_DIR
from g2g.mix import mix_folders

pytest.importorskip("ray.data", reason="--engine ray needs the ray extra (pip install 'g2g[ray]')")
pytestmark = pytest.mark.slow

POSE_PEOPLE = ["7224", "7226", "7227", "7228", "7229", "7231"]
ID_PEOPLE = ["7201", "7203"]
SKIP = {"run.json", "manifest.jsonl", ".g2g-folder.json"}


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> tuple[Path, Path]:
    wild = need_shared()
    root = tmp_path_factory.mktemp("ray_inputs")
    (root / "poses").mkdir()
    for p in POSE_PEOPLE:
        shutil.copy(sorted((wild / p).glob("*.jpg"))[0], root / "poses" / f"{p}.jpg")
    for p in ID_PEOPLE:
        (root / "ids" / p).mkdir(parents=True)
        for f in sorted((wild / p).glob("*.jpg"))[:2]:
            shutil.copy(f, root / "ids" / p / f.name)
    return root / "poses", root / "ids"


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
    return {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in out.rglob("*")
            if p.is_file() and p.name not in SKIP and not p.name.startswith(".g2g-lock")}


def lines(out: Path) -> list[str]:
    return sorted(l for l in (out / "manifest.jsonl").read_text().splitlines() if l.strip())


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


def test_a_killed_mixing_worker_is_retried_and_no_line_is_written_twice(folders, local_run, cluster, tmp_path):
    import psutil

    out = tmp_path / "ray"
    killed: list[int] = []

    def kill_the_mixer() -> None:  # once a first pose is written, kill the actor that mixes the next ones
        deadline = time.time() + 120
        while time.time() < deadline and not killed:
            if any((out / PARTS_DIR).rglob("*.jsonl")):
                for proc in psutil.process_iter(["cmdline"]):
                    if "MixPoses" in " ".join(proc.info["cmdline"] or []):
                        proc.kill()
                        killed.append(len(list((out / PARTS_DIR).rglob("*.jsonl"))))
                        break
            time.sleep(0.02)

    watcher = threading.Thread(target=kill_the_mixer)
    watcher.start()
    report = mix_folders(*folders, out, MixConfig(size=128, engine="ray"), progress=False)
    watcher.join()
    assert killed and killed[0] < len(POSE_PEOPLE), "the mixing actor was not killed mid-run"
    assert report.written == len(POSE_PEOPLE) * len(ID_PEOPLE)
    keys = [(r["pose"], r["identity"]) for r in map(json.loads, lines(out))]
    assert len(keys) == len(set(keys)) == len(POSE_PEOPLE) * len(ID_PEOPLE)  # each pair once
    assert files(out) == files(local_run)


def test_a_local_run_does_not_import_ray(folders, tmp_path):
    code = (f"import sys; from pathlib import Path; from g2g.config import MixConfig; from g2g.mix import mix_folders\n"
            f"r = mix_folders(Path({str(folders[0])!r}), Path({str(folders[1])!r}), Path({str(tmp_path / 'o')!r}), "
            f"MixConfig(size=64, pairs='zip'), progress=False)\n"
            "assert r.written, r\nassert 'ray' not in sys.modules, 'ray imported'\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]


def test_engine_ray_without_ray_says_how_to_install_it(monkeypatch, folders, tmp_path):
    import builtins

    real = builtins.__import__

    def no_ray(name, *a, **k):
        if name == "ray" or name.startswith("ray."):
            raise ImportError(name)
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    from g2g.cluster import ClusterError

    with pytest.raises(ClusterError, match=r"pip install 'g2g\[ray\]'"):
        mix_folders(*folders, tmp_path / "o", MixConfig(engine="ray"), progress=False)
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
