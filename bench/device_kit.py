"""The GPU run kit's helpers (see bench/device_run.sh): pack here, assemble and measure there.

    python bench/device_kit.py pack DATA [--split RUN/split.json] [--out .device] [--size 128] [--max-crops N]
    python bench/device_kit.py assemble CARRIED STAGE     # on the device: pieces -> data, weights, libraries
    python bench/device_kit.py bench MODEL_DIR OUT.json   # CUDA decode throughput, eager PyTorch and ONNX Runtime

``pack`` turns a ``g2g prepare`` folder into what a lent GPU machine (no network, its
own torch, none of g2g's weight packages) needs: the training people's crops as JPEG
(quality 95) with a manifest that keeps their 68 landmarks, so the device runs no
detector and no dlib; the weight files the recipe's losses read (dlib's ResNet for
L_id, ST-LPIPS VGG16 for α), found there through ``G2G_WEIGHTS_DIR`` and checked by
the same sha256; and the pure-Python libraries the image lacks (onnxconverter-common).
Everything is cut into pieces and grouped into ``call-K`` folders that each fit one
``device`` call (64 MiB with the working tree), checked before anything is sent; the
machine stays warm between consecutive calls, so the pieces add up there.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

CALL_MIB = 64  # what one device call carries, working tree included
PIECE_MIB = 15  # pieces are cut to this size
LIBRARIES = ("onnxconverter_common",)  # pure-Python packages the device image lacks
WEIGHTS = ("dlib-resnet", "stlpips-vgg")


def _tree_bytes(repo: Path) -> int:
    """Bytes of what a device call sends: tracked files and untracked ones git does not ignore."""
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=repo, capture_output=True,
                         check=True).stdout.decode().split("\0")
    return sum((repo / f).stat().st_size for f in out if f and (repo / f).is_file())


def _tar(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _data_tar(data: Path, people: set[str] | None, size: int, max_crops: int | None) -> tuple[bytes, int]:
    """The crops (JPEG, at ``size``) and a manifest of their lines with outputs renamed to .jpg."""
    import numpy as np
    from PIL import Image

    from g2g.prepare import read_manifest
    from g2g.preprocess import resize_to_model

    members: dict[str, bytes] = {}
    lines = []
    for rec in read_manifest(data):
        if people is not None and str(rec["identity"]) not in people:
            continue
        if max_crops is not None and len(lines) >= max_crops:
            break
        with Image.open(data / rec["output"]) as im:
            crop = np.asarray(im.convert("RGB"))
        rgb, scale = resize_to_model(crop, size), size / crop.shape[1]
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, format="JPEG", quality=95)
        rel = str(Path(rec["output"]).with_suffix(".jpg"))
        members[rel] = buf.getvalue()
        lines.append({**rec, "output": rel, "output_digest": None, "size": size,
                      "crop_landmarks": [[x * scale, y * scale] for x, y in rec["crop_landmarks"]],
                      "crop_landmarks68": [[x * scale, y * scale] for x, y in rec["crop_landmarks68"]]})
    prep = json.loads((data / "prepare_config.json").read_text())
    members["prepare_config.json"] = json.dumps({**prep, "size": size, "fmt": "jpg"}).encode()
    members["manifest.jsonl"] = "".join(json.dumps(r) + "\n" for r in lines).encode()
    return _tar(members), len(lines)


def pack(data: Path, out: Path, split: Path | None, size: int, max_crops: int | None, repo: Path) -> dict:
    from g2g.weights import locate

    people = set(json.loads(split.read_text())["train"]) if split else None
    payloads: dict[str, bytes] = {}
    payloads["data.tar"], n = _data_tar(data, people, size, max_crops)
    payloads["weights.tar"] = _tar({path.name: path.read_bytes() for path in map(locate, WEIGHTS)})
    libs: dict[str, bytes] = {}
    for lib in LIBRARIES:
        root = Path(__import__(lib).__file__).parent
        for f in sorted(root.rglob("*.py")):
            libs[str(f.relative_to(root.parent))] = f.read_bytes()
    payloads["libs.tar"] = _tar(libs)
    budget = CALL_MIB * 2**20 - _tree_bytes(repo) - 2**20  # a MiB of slack for the transfer's own files
    if budget < PIECE_MIB * 2**20:
        raise SystemExit(f"the working tree leaves {budget / 2**20:.1f} MiB per call: less than one piece")
    for old in out.glob("call-*/*"):
        old.unlink()
    pieces, calls, used = {}, [[]], 0
    for name, blob in payloads.items():
        chunks = [blob[i : i + PIECE_MIB * 2**20] for i in range(0, len(blob), PIECE_MIB * 2**20)]
        pieces[name] = {"sha256": hashlib.sha256(blob).hexdigest(), "parts": []}
        for k, chunk in enumerate(chunks):
            if used + len(chunk) > budget:
                calls.append([])
                used = 0
            part = f"{name}.{k:03d}"
            calls[-1].append(part)
            used += len(chunk)
            folder = out / f"call-{len(calls)}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / part).write_bytes(chunk)
            pieces[name]["parts"].append(part)
    plan = {"pieces": pieces, "calls": len(calls), "crops": n, "size": size}
    for k in range(1, len(calls) + 1):  # every call carries the plan, so the device knows what is still to come
        (out / f"call-{k}" / "plan.json").write_text(json.dumps(plan, indent=1))
        total = sum(f.stat().st_size for f in (out / f"call-{k}").iterdir())
        assert total <= budget + 2**20, (k, total)
    return plan


def assemble(carried: Path, stage: Path) -> bool:
    """Move this call's pieces into STAGE; once all have come, join, verify and unpack them. True when ready."""
    pieces_dir = stage / "pieces"
    pieces_dir.mkdir(parents=True, exist_ok=True)
    plans = sorted(carried.glob("call-*/plan.json"))
    if plans:
        (stage / "plan.json").write_bytes(plans[0].read_bytes())
    for f in carried.glob("call-*/*"):
        if f.name != "plan.json":
            shutil.copyfile(f, pieces_dir / f.name)
    if not (stage / "plan.json").is_file():
        print("device_kit: no plan.json carried or staged; run bench/device_kit.py pack first")
        return False
    plan = json.loads((stage / "plan.json").read_text())
    missing = [p for v in plan["pieces"].values() for p in v["parts"] if not (pieces_dir / p).is_file()]
    if missing:
        have = sum(len(v["parts"]) for v in plan["pieces"].values()) - len(missing)
        print(f"device_kit: {have} of {have + len(missing)} pieces here; carry the next call-K folder")
        return False
    for name, v in plan["pieces"].items():
        blob = b"".join((pieces_dir / p).read_bytes() for p in v["parts"])
        if hashlib.sha256(blob).hexdigest() != v["sha256"]:
            raise SystemExit(f"device_kit: {name} arrived damaged (sha256 differs); pack and carry it again")
        target = {"data.tar": stage / "data", "weights.tar": stage / "weights", "libs.tar": stage / "libs"}[name]
        target.mkdir(parents=True, exist_ok=True)
        with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
            tar.extractall(target, filter="data")
    print(f"device_kit: ready: {plan['crops']} crops at {plan['size']} px, weights, libraries in {stage}")
    return True


def bench(model_dir: Path, out: Path) -> dict:
    """Decode throughput (pairs/s) of the exported generator at batch 1/8/32/128: eager PyTorch on CUDA from the
    ONNX weights, and ONNX Runtime with whatever providers it has there."""
    import time

    import numpy as np

    from g2g.bundle import open_bundle
    from g2g.train.init_weights import load_init_weights
    from g2g.train.step import build_generator

    res: dict = {"model": str(model_dir)}
    init = load_init_weights(model_dir)
    bundle = open_bundle(model_dir, device="auto")
    res["onnxruntime_providers"] = bundle.providers
    s = init.model.image_size
    try:
        import torch

        dev = "cuda" if torch.cuda.is_available() else "cpu"
        res["torch_device"] = torch.cuda.get_device_name() if dev == "cuda" else "cpu"
        gen = build_generator(init.model).to(dev).eval()
        gen.load_state_dict(init.state)
    except Exception as e:  # noqa: BLE001 (a measurement script: say what failed and go on)
        res["torch_error"] = f"{type(e).__name__}: {e}"
        gen = None
    from g2g.appearance import CONTENT_CHANNELS

    for b in (1, 8, 32, 128):
        content = np.random.default_rng(0).uniform(-1, 1, (b, CONTENT_CHANNELS, s, s)).astype(np.float32)
        ids = np.random.default_rng(1).uniform(-1, 1, (b, 1, 3, s, s)).astype(np.float32)
        base = np.zeros((b, 3, s, s), np.float32)
        row = {}
        if gen is not None:
            with torch.no_grad(), torch.autocast(dev, dtype=torch.bfloat16, enabled=dev == "cuda"):
                t = [torch.from_numpy(a).to(dev) for a in (content, ids, base)]
                for _ in range(3):
                    gen(*t)
                if dev == "cuda":
                    torch.cuda.synchronize()
                t0, n = time.perf_counter(), 10
                for _ in range(n):
                    gen(*t)
                if dev == "cuda":
                    torch.cuda.synchronize()
                row["torch_pairs_per_s"] = n * b / (time.perf_counter() - t0)
        if b <= 32:  # ONNX Runtime on the CPU provider is too slow at 128 to be worth the minutes
            bundle.generate(content, ids, base)
            t0 = time.perf_counter()
            bundle.generate(content, ids, base)
            row["onnxruntime_pairs_per_s"] = b / (time.perf_counter() - t0)
        res[f"batch_{b}"] = row
    out.write_text(json.dumps(res, indent=1))
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack")
    p.add_argument("data", type=Path)
    p.add_argument("--split", type=Path)
    p.add_argument("--out", type=Path, default=Path(".device"))
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--max-crops", type=int)
    a = sub.add_parser("assemble")
    a.add_argument("carried", type=Path)
    a.add_argument("stage", type=Path)
    b = sub.add_parser("bench")
    b.add_argument("model", type=Path)
    b.add_argument("out", type=Path)
    args = ap.parse_args()
    if args.cmd == "pack":
        repo = Path(__file__).resolve().parents[1]
        plan = pack(args.data, args.out, args.split, args.size, args.max_crops, repo)
        print(json.dumps({"calls": plan["calls"], "crops": plan["crops"],
                          "pieces": {k: len(v["parts"]) for k, v in plan["pieces"].items()}}))
        for k in range(1, plan["calls"] + 1):
            print(f"device call {k}: run(command='bash bench/device_run.sh --minutes M', carry=['{args.out}/call-{k}'])")
    elif args.cmd == "assemble":
        sys.exit(0 if assemble(args.carried, args.stage) else 3)
    else:
        print(json.dumps(bench(args.model, args.out), indent=1))


if __name__ == "__main__":
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    main()
