"""The GPU run kit end to end on this CPU machine (--dry-run), so a lent GPU's minutes go to training, not debugging."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from conftest import crop_folders

REPO = Path(__file__).resolve().parents[1]


def _kit():
    spec = importlib.util.spec_from_file_location("device_kit", REPO / "bench" / "device_kit.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _need_git():
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("the kit sizes the working tree with git; this tree is not a git checkout")


def test_pack_trades_weight_precision_then_crops_for_room_and_keeps_every_person(tmp_path, prepared_small):
    kit = _kit()
    roomy = kit.pack(prepared_small, tmp_path / "a", None, 32, REPO, budget=60 * 2**20)
    assert (roomy["weights"], roomy["webp_quality"], roomy["crops_per_person_cap"]) == ("float16", 95, None)
    assert roomy["crops"] == roomy["crops_available"] > 0
    # room for int8 weights (19.5 MiB, 17 gzipped) and the libraries, not for float16's 38.8 MiB (35.5)
    tight = kit.pack(prepared_small, tmp_path / "b", None, 32, REPO, budget=22 * 2**20)
    assert (tight["weights"], tight["webp_quality"]) == ("int8", 95) and tight["crops"] == roomy["crops"]
    # less room than int8 weights and all crops at quality 95: lower quality, then fewer crops of every person
    squeezed = kit.pack(prepared_small, tmp_path / "c", None, 32, REPO,
                        budget=tight["kit_bytes"] - int(0.7 * tight["crops_bytes"]))
    assert (squeezed["weights"], squeezed["webp_quality"]) == ("int8", 80)
    assert squeezed["crops_per_person_cap"] is not None and squeezed["crops"] < roomy["crops"]
    assert squeezed["people"] == roomy["people"] and squeezed["kit_bytes"] <= squeezed["budget_mib"] * 2**20
    with pytest.raises(SystemExit, match="not even two crops per person"):
        kit.pack(prepared_small, tmp_path / "d", None, 32, REPO, budget=10 * 2**20)


def test_unpack_refuses_a_damaged_kit(tmp_path, prepared_small):
    kit = _kit()
    kit.pack(prepared_small, tmp_path / "carry", None, 32, REPO, budget=60 * 2**20)
    blob = bytearray((tmp_path / "carry" / "kit.tar.gz").read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    (tmp_path / "carry" / "kit.tar.gz").write_bytes(bytes(blob))
    with pytest.raises(SystemExit, match="arrived damaged"):
        kit.unpack(tmp_path / "carry", tmp_path / "stage")


@pytest.mark.slow
def test_pack_then_dry_run_trains_exports_and_brings_back_a_bundle_that_mixes(tmp_path, prepared_small):
    _need_git()
    carry = tmp_path / "carry"
    split = tmp_path / "split.json"
    people = sorted(p.name for p in prepared_small.iterdir() if p.is_dir())
    split.write_text(json.dumps({"train": people[:-1], "val": people[-1:]}))  # the held-out person is not carried
    pack = subprocess.run([sys.executable, "bench/device_kit.py", "pack", str(prepared_small), "--out", str(carry),
                           "--size", "32", "--split", str(split)], cwd=REPO, capture_output=True, text=True)
    assert pack.returncode == 0, pack.stderr
    plan = json.loads(pack.stdout.splitlines()[0])
    assert plan["people"] == len(people) - 1 and plan["weights"] == "float16"
    sent = sum(f.stat().st_size for f in carry.iterdir()) + _kit()._tree_bytes(REPO)
    assert sent < 64 * 2**20  # under the default size cap, working tree included
    check = subprocess.run([sys.executable, "bench/device_kit.py", "check", str(carry)], cwd=REPO, capture_output=True,
                           text=True)
    assert check.returncode == 0 and f"sends {sent / 2**20:.1f} MiB of 64" in check.stdout, check.stdout + check.stderr

    out, stage = tmp_path / "out", tmp_path / "stage"
    env = {**os.environ, "OUT": str(out), "G2G_DEVICE_STAGE": str(stage), "G2G_DEVICE_CARRY": str(carry),
           "OMP_NUM_THREADS": "1"}
    run = subprocess.run(["bash", "bench/device_run.sh", "--dry-run"], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=900)
    log = run.stdout[-3000:] + run.stderr[-3000:]
    assert run.returncode == 0, log
    assert f"g2g from {stage}/site" in run.stdout, log  # the linked install, not this venv's g2g
    files = {p.name for p in out.iterdir()}
    assert {"model.tar", "ema.pt", "run.tar", "bench.json", "train.log", "train.json", "export.log"} <= files
    assert len(files) <= 8
    assert all(p.stat().st_size < 16 * 2**20 for p in out.iterdir())
    trained = json.loads((out / "train.json").read_text())
    assert trained["step"] == 3 and trained["images_per_s"] > 0
    with tarfile.open(out / "model.tar") as t:
        t.extractall(tmp_path / "model", filter="data")
    from g2g.bundle import open_bundle
    from g2g.config import MixConfig
    from g2g.mix import mix_folders

    bundle = open_bundle(tmp_path / "model")  # verified: every file, the metadata, the parts' own facts
    assert bundle.meta["fp16"] and bundle.model.identity_encoder == "appearance" and bundle.model.image_size == 32
    poses, ids = crop_folders(tmp_path, prepared_small, 2)
    mixed = mix_folders(poses, ids, tmp_path / "mixed", MixConfig(aligned=True), model_dir=tmp_path / "model",
                        progress=False)
    assert mixed.written == 4
    from g2g.export.onnx_export import export_bundle

    again = export_bundle(out / "ema.pt", tmp_path / "re-export", fp16=True)  # what to do here if the export there failed
    assert again.step == 3 and all(again.parity[k] <= again.bounds[k] for k in again.parity)
    bench = json.loads((out / "bench.json").read_text())
    assert bench["batch_1"]["onnxruntime"] > 0 and bench["batch_8"]["torch_cpu"] > 0
    with tarfile.open(out / "run.tar") as t:
        names = {Path(n).name for n in t.getnames()}
    assert {"metrics.jsonl", "losses.png", "config.json", "split.json", "step_00000003.png"} <= names

    # a second call on the same (warm) machine goes on from the checkpoint, exactly
    again = subprocess.run(["bash", "bench/device_run.sh", "--dry-run", "--steps", "5"], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "unpacking" in again.stdout and "device_kit: " not in again.stdout  # the kit was not unpacked twice
    resumed = json.loads((out / "train.json").read_text())
    assert (resumed["resumed_from"], resumed["step"]) == (3, 5)


@pytest.mark.slow
def test_a_fresh_machine_fine_tunes_from_the_bundle_a_first_call_brought_back(tmp_path, prepared_small):
    """pack --resume MODEL carries a bundle; a stage without a checkpoint then starts from it (--init-from)."""
    _need_git()
    from g2g.bundle import default_model_dir

    carry = tmp_path / "carry"
    plan = _kit().pack(prepared_small, carry, None, 32, REPO, resume=default_model_dir(), budget=60 * 2**20)
    assert plan["resume"]
    out, stage = tmp_path / "out", tmp_path / "stage"
    env = {**os.environ, "OUT": str(out), "G2G_DEVICE_STAGE": str(stage), "G2G_DEVICE_CARRY": str(carry),
           "OMP_NUM_THREADS": "1"}
    run = subprocess.run(["bash", "bench/device_run.sh", "--dry-run", "--steps", "2"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "--init-from" in run.stdout
    with tarfile.open(out / "run.tar") as t:
        config = json.load(t.extractfile("config.json"))
    assert "bundle" in config["init_from"]["source"] and config["train"]["model"]["image_size"] == 64  # the bundle's


def test_the_refiner_dry_run_trains_over_the_default_composition(tmp_path, prepared_small):
    """--preset refiner-gpu on the dry run: the tiny networks with the refiner's base (config.json records it);
    what follows -- reaches g2g train (here the GAN term against the projected discriminator, from the packed
    ST-LPIPS weights, and a detail-only residual)."""
    _need_git()
    carry = tmp_path / "carry"
    _kit().pack(prepared_small, carry, None, 32, REPO, budget=60 * 2**20)
    out, stage = tmp_path / "out", tmp_path / "stage"
    env = {**os.environ, "OUT": str(out), "G2G_DEVICE_STAGE": str(stage), "G2G_DEVICE_CARRY": str(carry),
           "OMP_NUM_THREADS": "1"}
    run = subprocess.run(["bash", "bench/device_run.sh", "--dry-run", "--steps", "1", "--preset", "refiner-gpu", "--",
                          "--residual-sigma", "2", "--discriminator", "projected", "--lambda-adv", "1"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    with tarfile.open(out / "run.tar") as t:
        config = json.load(t.extractfile("config.json"))
    train = config["train"]
    assert (train["model"]["base_fixes"], train["model"]["residual_sigma"]) == ("default", 2.0)
    assert (train["discriminator"], train["lambda_adv"]) == ("projected", 1.0)
