"""The GPU run kit's helpers (see bench/device_run.sh): pack here, unpack and measure on the GPU machine.

    python bench/device_kit.py pack DATA [--split RUN/split.json] [--out .device/carry] [--size 128] [--resume MODEL_DIR]
    python bench/device_kit.py check [KIT]                # here, before copying: kit + working tree under the size cap?
    python bench/device_kit.py unpack KIT STAGE           # on the GPU machine: the kit -> data, weights, libraries
    python bench/device_kit.py slim RUN OUT.pt            # on the GPU machine: the EMA generator, float16, under 16 MiB
    python bench/device_kit.py bench MODEL_DIR OUT.json   # decode throughput: PyTorch eager (CUDA, CPU), ONNX Runtime

``pack`` turns a ``g2g prepare`` folder into ONE folder that goes to the GPU machine beside a copy of the working
tree, both together under a size cap (64 MiB unless ``--budget-mib`` says otherwise; checked here), so that the
first command there already trains:

- the training people's crops at ``--size`` as WebP, with a manifest that keeps their 5 and 68 landmarks, so the
  GPU machine runs no detector and no dlib;
- the two networks the recipe's losses read (dlib's ResNet for L_id, ST-LPIPS VGG16 for α) as packed copies
  (``g2g.weights.pack_state``: float16, or int8 with a scale per output channel where float16 leaves too little
  room for the crops), found there through ``G2G_WEIGHTS_DIR``;
- the pure-Python library the image lacks (onnxconverter-common, for the fp16 export);
- with ``--resume MODEL_DIR``: a bundle an earlier run brought back, to fine-tune from on a fresh machine.

What fits is chosen in this order, and ``plan.json`` says what was chosen: float16 weights with crops at WebP
quality 95 down to 90, then int8 weights with quality 95 down to 80, then fewer crops per person (every training
person kept). Measured on 160 real crops, int8 moves dlib's embeddings by 0.023 (same-person pairs are 0.46
apart) and ST-LPIPS distances by 0.2%; float16 by 0.001 and 0.01%.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import subprocess
import tarfile
from collections import Counter
from pathlib import Path

CALL_BYTES = 64 * 2**20  # the default size cap of the kit and the working tree together
SLACK_BYTES = 2**20  # for the copy's own files and rounding
LIBRARIES = ("onnxconverter_common",)  # pure-Python packages the GPU machine lacks
LADDER = (*(("float16", q) for q in range(95, 89, -1)), *(("int8", q) for q in range(95, 79, -1)))
SAMPLE = 300  # crops encoded to estimate a quality's size


def _tree_bytes(repo: Path) -> int:
    """Bytes of the working tree copied beside the kit: tracked files and untracked ones git does not ignore."""
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=repo, capture_output=True,
                         check=True).stdout.decode().split("\0")
    return sum((repo / f).stat().st_size for f in out if f and (repo / f).is_file())


def _tar(members: dict[str, bytes]) -> bytes:
    """A gzipped tar (level 1: its 512-byte headers would add a quarter to 3 KiB crops; the crops and weights
    themselves do not compress)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=1) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _webp(rgb, quality: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="WEBP", quality=quality, method=6)
    return buf.getvalue()


def _read_crops(data: Path, people: set[str] | None, size: int) -> tuple[list, list[dict]]:
    """The ok crops of ``people`` at ``size`` (as g2g resizes them) and their manifest lines, landmarks rescaled."""
    import numpy as np
    from PIL import Image

    from g2g.prepare import read_manifest
    from g2g.faces.preprocess import resize_to_model

    crops, lines = [], []
    for rec in read_manifest(data):
        if rec.get("status") != "ok" or not rec.get("output") or (people is not None and str(rec["identity"]) not in people):
            continue
        if not isinstance(rec.get("crop_landmarks68"), list):
            raise SystemExit(f"{data}: {rec['output']} has no 68 landmarks; prepare DATA with this g2g "
                             "(or merge it with bench/merge_data.py, which adds them)")
        with Image.open(data / rec["output"]) as im:
            crop = np.asarray(im.convert("RGB"))
        scale = size / crop.shape[1]
        crops.append(resize_to_model(crop, size))
        lines.append({"source": rec["source"], "identity": str(rec["identity"]), "status": "ok",
                      "output": str(Path(rec["output"]).with_suffix(".webp")),
                      **{k: [[round(x * scale, 2), round(y * scale, 2)] for x, y in rec[k]]
                         for k in ("crop_landmarks", "crop_landmarks68")}})
    if not lines:
        raise SystemExit(f"{data}: no aligned crops of the training people")
    return crops, lines


def _packed_weights() -> dict[str, dict[str, bytes]]:
    """{dtype: {member name: npz bytes}} of the networks the losses read, packed both ways."""
    import numpy as np

    from g2g.train.dlib_resnet import load_dlib_resnet
    from g2g.train.perceptual import load_stlpips
    from g2g.weights import PACKED_DTYPES, PACKED_SUFFIX, pack_state

    states = {name: {k: v.numpy() for k, v in net.state_dict().items()}
              for name, net in (("dlib-resnet", load_dlib_resnet()), ("stlpips-vgg", load_stlpips()))}
    out: dict[str, dict[str, bytes]] = {}
    for dtype in PACKED_DTYPES:
        for name, state in states.items():
            buf = io.BytesIO()
            np.savez(buf, **pack_state(state, name, dtype))
            out.setdefault(dtype, {})[f"weights/{name}{PACKED_SUFFIX}"] = buf.getvalue()
    return out


def _libraries() -> dict[str, bytes]:
    libs: dict[str, bytes] = {}
    for lib in LIBRARIES:
        root = Path(__import__(lib).__file__).parent
        for f in sorted(root.rglob("*.py")):
            libs[f"libs/{f.relative_to(root.parent)}"] = f.read_bytes()
    return libs


def pack(data: Path, out: Path, split: Path | None, size: int, repo: Path, resume: Path | None = None,
         budget: int | None = None) -> dict:
    """Write ``out/kit.tar.gz`` and ``out/plan.json``: the most that fits the size cap (see the module doc)."""
    from g2g.train.appearance_data import first_per_person

    people = set(json.loads(split.read_text())["train"]) if split else None
    crops, lines = _read_crops(Path(data), people, size)
    fixed = _libraries()
    if resume is not None:
        from g2g.bundle import open_bundle

        open_bundle(resume)  # a whole, verified bundle, or one line saying why not
        fixed.update({f"resume/{f.name}": f.read_bytes() for f in sorted(Path(resume).iterdir()) if f.is_file()})
    prep = json.loads((Path(data) / "prepare_config.json").read_text())
    fixed["data/prepare_config.json"] = json.dumps({**prep, "size": size, "fmt": "webp"}).encode()
    if budget is None:
        budget = CALL_BYTES - _tree_bytes(repo) - SLACK_BYTES
    weights = _packed_weights()
    sample = crops[:: max(1, len(crops) // SAMPLE)]
    sizes: dict[int, float] = {}

    def per_crop(q: int) -> float:  # mean WebP bytes of a crop at quality q, from a sample
        if q not in sizes:
            sizes[q] = sum(len(_webp(c, q)) for c in sample) / len(sample)
        return sizes[q]

    def manifest(keep: list[int]) -> bytes:
        return "".join(json.dumps(lines[i]) + "\n" for i in keep).encode()

    held = {d: len(gzip.compress(b"".join((*fixed.values(), *w.values())), 1)) for d, w in weights.items()}

    def room(dtype: str, keep: list[int]) -> float:  # bytes left for the crops (their tar headers gzip to ~64 each)
        return budget - held[dtype] - len(gzip.compress(manifest(keep), 1)) - 64 * len(keep)

    def candidates():  # (weights, quality, crops per person) from the best down, with the estimated crop bytes
        every = list(range(len(lines)))
        for dtype, quality in LADDER:
            yield dtype, quality, None, every
        most = max(Counter(r["identity"] for r in lines).values())
        for cap in range(most - 1, 1, -1):
            yield "int8", LADDER[-1][1], cap, first_per_person([r["identity"] for r in lines], cap)

    encoded: dict[tuple[int, int], bytes] = {}
    for dtype, quality, cap, keep in candidates():
        if per_crop(quality) * len(keep) > room(dtype, keep):
            continue
        members = dict(fixed)
        members.update(weights[dtype])
        for i in keep:
            if (quality, i) not in encoded:
                encoded[quality, i] = _webp(crops[i], quality)
            members[f"data/{lines[i]['output']}"] = encoded[quality, i]
        members["data/manifest.jsonl"] = manifest(keep)
        blob = _tar(members)
        if len(blob) <= budget:  # the estimate was right (else: the next candidate)
            break
    else:
        raise SystemExit(f"not even two crops per person fit under the size cap ({budget / 2**20:.1f} MiB)")
    from g2g.io.files import atomic_write_bytes

    atomic_write_bytes(out / "kit.tar.gz", blob)  # a stale plan.json can then no longer match it: unpack checks
    plan = {
        "sha256": hashlib.sha256(blob).hexdigest(), "kit_mib": round(len(blob) / 2**20, 2), "kit_bytes": len(blob),
        "budget_mib": round(budget / 2**20, 2), "size": size, "crops": len(keep), "crops_available": len(lines),
        "people": len({lines[i]["identity"] for i in keep}), "crops_per_person_cap": cap, "webp_quality": quality,
        "weights": dtype, "weights_mib": round(sum(map(len, weights[dtype].values())) / 2**20, 2),  # before gzip
        "crops_bytes": sum(len(v) for k, v in members.items() if k.endswith(".webp")),
        "resume": str(resume) if resume else None,
    }
    atomic_write_bytes(out / "plan.json", json.dumps(plan, indent=1).encode())
    return plan


def _need_kit(carry: Path) -> None:
    if not ((carry / "plan.json").is_file() and (carry / "kit.tar.gz").is_file()):
        raise SystemExit(f"device_kit: no kit in {carry}: run bench/device_kit.py pack DATA first")


def check(carry: Path, repo: Path) -> bool:
    """Whether the kit and the working tree still fit the size cap: the tree may have grown since ``pack``."""
    _need_kit(carry)
    tree, kit = _tree_bytes(repo), sum(f.stat().st_size for f in carry.iterdir())
    ok = tree + kit <= CALL_BYTES
    print(f"copying the working tree with the kit sends {(tree + kit) / 2**20:.1f} MiB of {CALL_BYTES / 2**20:.0f} "
          f"(working tree {tree / 2**20:.1f}, kit {kit / 2**20:.1f}){'' if ok else ': too much, pack again'}")
    return ok


def unpack(carry: Path, stage: Path) -> dict:
    """Verify and unpack the kit into STAGE/{data,weights,libs,resume}."""
    from PIL import features

    _need_kit(carry)
    plan = json.loads((carry / "plan.json").read_text())
    blob = (carry / "kit.tar.gz").read_bytes()
    if hashlib.sha256(blob).hexdigest() != plan["sha256"]:
        raise SystemExit("device_kit: kit.tar.gz arrived damaged (sha256 differs); pack and copy it again")
    if not features.check("webp"):
        raise SystemExit("device_kit: this machine's Pillow cannot read WebP; the kit's crops are WebP")
    stage.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        tar.extractall(stage, filter="data")
    print(f"device_kit: {plan['crops']} crops of {plan['people']} people at {plan['size']} px (WebP q{plan['webp_quality']}), "
          f"{plan['weights']} loss weights{', a bundle to resume from' if plan.get('resume') else ''} in {stage}")
    return plan


def slim(run: Path, out: Path) -> None:
    """The run's latest EMA generator as a float16 checkpoint (12 MB at the appearance-gpu preset, where the whole
    checkpoint with its optimiser is 94 MB): what ``g2g export`` and ``g2g train --init-from`` read."""
    from g2g.train.checkpoint import load_checkpoint, save_checkpoint

    state = load_checkpoint(run)
    ema = {k: v.half() if v.is_floating_point() else v for k, v in state["generator_ema"].items()}
    save_checkpoint(out, {"config": state["config"], "step": state["step"], "generator": ema, "generator_ema": ema,
                          **{k: state[k] for k in ("data", "init_from") if k in state}})


def bench(model_dir: Path, out: Path) -> dict:
    """Decode throughput (pairs/s) of the exported generator at batch 1/8/32/128: PyTorch eager from the bundle's
    weights (bf16 autocast on CUDA; fp32 on the CPU), and ONNX Runtime with the providers it has here. No
    onnxruntime-gpu: its CUDA provider library alone is 284 MB, four times the kit's whole size cap."""
    import time

    import numpy as np

    from g2g.faces.masked_rest import CONTENT_CHANNELS
    from g2g.bundle import open_bundle
    from g2g.train.init_weights import load_init_weights
    from g2g.train.recipes import recipe_for

    res: dict = {"model": str(model_dir), "unit": "pairs/s"}
    init = load_init_weights(model_dir)
    bundle = open_bundle(model_dir, device="auto")
    res["onnxruntime_providers"] = bundle.providers
    s = init.model.image_size
    import torch

    gens = {"cpu": recipe_for(init.model).build(init.model).eval()}
    gens["cpu"].load_state_dict(init.state)
    if torch.cuda.is_available():
        res["cuda_device"] = torch.cuda.get_device_name()
        gens["cuda"] = recipe_for(init.model).build(init.model).to("cuda").eval()
        gens["cuda"].load_state_dict(init.state)
    res["cpu_threads"] = torch.get_num_threads()

    def timed(fn, n: int) -> float:
        fn()
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        return (time.perf_counter() - t0) / n

    for b in (1, 8, 32, 128):
        rng = np.random.default_rng(b)
        content = rng.uniform(-1, 1, (b, CONTENT_CHANNELS, s, s)).astype(np.float32)
        ids = rng.uniform(-1, 1, (b, 1, 3, s, s)).astype(np.float32)
        base = rng.uniform(-1, 1, (b, 3, s, s)).astype(np.float32)
        row = {}
        for dev, gen in gens.items():
            if dev == "cpu" and b > 32:
                continue  # minutes of CPU for a figure the smaller batches already give
            t = [torch.from_numpy(a).to(dev) for a in (content, ids, base)]

            def run(gen=gen, t=t, dev=dev):
                with torch.no_grad(), torch.autocast(dev, dtype=torch.bfloat16, enabled=dev == "cuda"):
                    gen(*t)
                if dev == "cuda":
                    torch.cuda.synchronize()

            row[f"torch_{dev}"] = b / timed(run, 20 if dev == "cuda" else 2)
        if b <= 32:
            row["onnxruntime"] = b / timed(lambda: bundle.generate(content, ids, base), 2)
        if "torch_cuda" in row and "onnxruntime" in row:
            row["cuda_vs_onnxruntime_cpu"] = row["torch_cuda"] / row["onnxruntime"]
        res[f"batch_{b}"] = row
    out.write_text(json.dumps(res, indent=1))
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack")
    p.add_argument("data", type=Path)
    p.add_argument("--split", type=Path, help="a run's split.json: only its training people are packed")
    p.add_argument("--out", type=Path, default=Path(".device/carry"))
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--resume", type=Path, help="a bundle an earlier run brought back (model.tar, unpacked)")
    p.add_argument("--budget-mib", type=float, help="size cap of the kit (default: 64 MiB less the working tree "
                   "and 1 MiB)")
    c = sub.add_parser("check")
    c.add_argument("carry", type=Path, nargs="?", default=Path(".device/carry"), metavar="KIT")
    a = sub.add_parser("unpack")
    a.add_argument("carry", type=Path, metavar="KIT")
    a.add_argument("stage", type=Path)
    sl = sub.add_parser("slim")
    sl.add_argument("run", type=Path)
    sl.add_argument("out", type=Path)
    b = sub.add_parser("bench")
    b.add_argument("model", type=Path)
    b.add_argument("out", type=Path)
    args = ap.parse_args()
    if args.cmd == "pack":
        repo = Path(__file__).resolve().parents[1]
        budget = int(args.budget_mib * 2**20) if args.budget_mib else None
        plan = pack(args.data, args.out, args.split, args.size, repo, args.resume, budget)
        print(json.dumps(plan))
        print(f"next, on the GPU machine, with {args.out} in a copy of the working tree: "
              "bash bench/device_run.sh --minutes M")
    elif args.cmd == "check":
        raise SystemExit(0 if check(args.carry, Path(__file__).resolve().parents[1]) else 1)
    elif args.cmd == "unpack":
        unpack(args.carry, args.stage)
    elif args.cmd == "slim":
        slim(args.run, args.out)
    else:
        print(json.dumps(bench(args.model, args.out), indent=1))


if __name__ == "__main__":
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from g2g.errors import G2GError

    try:
        main()
    except (G2GError, OSError) as e:  # a bad DATA, split, bundle or folder: one line, as g2g's verbs say it
        raise SystemExit(f"device_kit: {e}") from None
