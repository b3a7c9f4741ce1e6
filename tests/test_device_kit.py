"""The GPU run kit end to end on this CPU machine (--dry-run), so a lent GPU's minutes go to training, not debugging."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_pack_then_dry_run_trains_exports_and_brings_back_what_fits(tmp_path, prepared_small):
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("the kit sizes what a device call sends with git; this tree is not a git checkout")
    carry = tmp_path / "carry"
    pack = subprocess.run([sys.executable, "bench/device_kit.py", "pack", str(prepared_small), "--out", str(carry),
                           "--size", "32"], cwd=REPO, capture_output=True, text=True)
    assert pack.returncode == 0, pack.stderr
    summary = json.loads(pack.stdout.splitlines()[0])
    calls = sorted(carry.glob("call-*"))
    assert len(calls) == summary["calls"] >= 2  # the 80 MB of weights cannot travel in one call
    for c in calls:  # every call fits the device tool's 64 MiB with the working tree
        assert sum(f.stat().st_size for f in c.iterdir()) < 64 * 2**20

    out, stage = tmp_path / "out", tmp_path / "stage"
    env = {**os.environ, "OUT": str(out), "G2G_DEVICE_STAGE": str(stage), "G2G_DEVICE_CARRY": str(carry),
           "OMP_NUM_THREADS": "1"}
    run = subprocess.run(["bash", "bench/device_run.sh", "--dry-run"], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    files = {p.name for p in out.iterdir()}
    assert {"model.tar", "run.tar", "ema.pt", "bench.json", "train.log", "train.json"} <= files and len(files) <= 8
    assert all(p.stat().st_size < 16 * 2**20 for p in out.iterdir())
    with tarfile.open(out / "model.tar") as t:
        t.extractall(tmp_path / "model", filter="data")
    from g2g.bundle import open_bundle
    from g2g.train.init_weights import load_init_weights

    bundle = open_bundle(tmp_path / "model")  # verified: every file, the metadata, the parts' own facts
    assert bundle.meta["fp16"] and bundle.model.identity_encoder == "appearance"
    assert json.loads((out / "train.json").read_text())["step"] == 3
    assert load_init_weights(out / "ema.pt").step == 3  # what a later call fine-tunes from (--resume)
    bench = json.loads((out / "bench.json").read_text())
    assert bench["batch_1"]["onnxruntime_pairs_per_s"] > 0 and "torch_pairs_per_s" in bench["batch_8"]
    with tarfile.open(out / "run.tar") as t:
        assert {"metrics.jsonl", "losses.png", "config.json", "split.json"} <= {Path(n).name for n in t.getnames()}
