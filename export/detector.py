"""``python -m g2g.export.detector``: facenet-pytorch's MTCNN nets -> the ONNX files g2g's detector ships.

PNet, RNet and ONet are loaded with the weights inside the facenet-pytorch wheel
and exported with ``torch.onnx.export(dynamo=True)`` (torch.export + onnxscript),
which gives a plain Conv/PRelu/MaxPool/Gemm/Softmax graph with a symbolic batch
axis (and symbolic H, W for PNet, which slides over whole images). Each file is
checked with ``onnx.checker`` and on ONNX Runtime (CPU) against PyTorch before
anything is written; then the three files and ``SHA256SUMS`` are written
atomically into ``g2g/assets/mtcnn`` (``SHA256SUMS`` last), where
:mod:`g2g.faces.mtcnn` finds them. The input convention (pixel mean and scale,
crop side) travels in each file's ``metadata_props``. The export is deterministic:
two runs with the same torch and onnx write byte-identical files, wherever they are installed (the nodes'
Python stack traces, which name this machine's paths, are dropped).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from g2g.faces.mtcnn import DEFAULT_ASSETS as ASSET_DIR, OUTPUTS, SUMS_FILE
from g2g.io.files import atomic_write_bytes, atomic_write_text, sha256_file

OPSET = 18
PARITY_TOL = 1e-4  # max |ORT - PyTorch| on any output
SOURCE = "facenet-pytorch 2.5.3 (https://github.com/timesler/facenet-pytorch)"
LICENSE = "MIT (facenet-pytorch, Copyright (c) 2019 Timothy Esler)"
MEAN, SCALE = 127.5, 0.0078125  # facenet-pytorch's input: (pixel - 127.5) * 0.0078125, RGB
SIDES = {"pnet": 0, "rnet": 24, "onet": 48}  # crop side; 0: PNet is fully convolutional. Outputs: OUTPUTS
OUTPUT_DOC = {
    "reg": "box regression (dx1, dy1, dx2, dy2) in box-size units",
    "prob": "softmax (not face, face)",
    "landmarks": "5 points, x1..x5 then y1..y5, in box-size units",
}


STACK_TRACE = "pkg.torch.onnx.stack_trace"  # dropped, so the files do not depend on where packages are installed


def load_net(name: str) -> torch.nn.Module:
    """facenet-pytorch's PNet, RNet or ONet with the wheel's weights, in eval mode."""
    from facenet_pytorch.models import mtcnn

    return {"pnet": mtcnn.PNet, "rnet": mtcnn.RNet, "onet": mtcnn.ONet}[name]().eval()


def _weights_file(name: str) -> Path:
    """The wheel's state dict for ``name`` (its sha256 goes into the metadata)."""
    import facenet_pytorch

    return Path(facenet_pytorch.__file__).parent / "data" / f"{name}.pt"


def _metadata(name: str) -> dict[str, str]:
    """What a reader of the file needs: where the weights come from, their licence, the input convention."""
    side, outputs = SIDES[name], OUTPUTS[name]
    shape = "(N, 3, H, W), H and W >= 12" if side == 0 else f"(N, 3, {side}, {side})"
    return {
        "source": f"{SOURCE}, MTCNN {name.upper()} (Zhang et al. 2016), weights facenet_pytorch/data/{name}.pt",
        "source_sha256": sha256_file(_weights_file(name)),
        "license": LICENSE,
        "input": f"image: float32 {shape} RGB, (pixel - {MEAN}) * {SCALE}",
        "outputs": "; ".join(f"{o}: {OUTPUT_DOC[o]}" for o in outputs),
        "mean": repr(MEAN),
        "scale": repr(SCALE),
        "input_size": str(side),
        "exporter": f"torch.onnx.export(dynamo=True, opset {OPSET}), torch {torch.__version__.split('+')[0]}",
    }


def export_net(name: str, net: torch.nn.Module) -> bytes:
    """One net -> a checked, self-contained ONNX file (bytes) with its metadata."""
    import onnx

    side, outputs = SIDES[name], OUTPUTS[name]
    n = torch.export.Dim("N", min=1, max=1 << 20)
    if side == 0:
        example = torch.zeros(2, 3, 31, 35)
        dims = {0: n, 2: torch.export.Dim("H", min=12, max=1 << 15), 3: torch.export.Dim("W", min=12, max=1 << 15)}
    else:
        example = torch.zeros(2, 3, side, side)
        dims = {0: n}
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")  # exporter chatter
        raw = Path(tmp) / f"{name}.onnx"
        torch.onnx.export(net, (example,), str(raw), input_names=["image"], output_names=list(outputs),
                          dynamic_shapes={"x": dims}, opset_version=OPSET, dynamo=True, external_data=False)
        model = onnx.load(str(raw))
    for node in model.graph.node:  # torch records each node's Python stack: file paths of this machine's install
        keep = [(p.key, p.value) for p in node.metadata_props if p.key != STACK_TRACE]
        del node.metadata_props[:]
        for key, value in keep:
            node.metadata_props.add(key=key, value=value)
    del model.metadata_props[:]
    for key, value in _metadata(name).items():
        model.metadata_props.add(key=key, value=value)
    model.doc_string = f"MTCNN {name.upper()} from {SOURCE}; licence {LICENSE}"
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


def parity(name: str, net: torch.nn.Module, data: bytes) -> float:
    """Max |ORT (CPU) - PyTorch| over all outputs, on pixel-like inputs of several batch sizes (and sizes, for PNet)."""
    import onnxruntime as ort

    side, outputs = SIDES[name], OUTPUTS[name]
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    shapes = [(1, 12, 12), (2, 57, 101), (3, 241, 180)] if side == 0 else [(1, side, side), (7, side, side)]
    gen = torch.Generator().manual_seed(0)
    worst = 0.0
    for b, h, w in shapes:
        x = (torch.randint(0, 256, (b, 3, h, w), generator=gen).float() - MEAN) * SCALE
        with torch.no_grad():
            ref = [t.numpy() for t in net(x)]
        got = sess.run(list(outputs), {"image": x.numpy()})
        if [g.shape for g in got] != [r.shape for r in ref]:
            shapes = [g.shape for g in got], [r.shape for r in ref]
            raise RuntimeError(f"{name}: ONNX output shapes {shapes[0]} != PyTorch {shapes[1]}")
        worst = max(worst, *(float(np.abs(g - r).max()) for g, r in zip(got, ref)))
    return worst


def export_detector(out: Path = ASSET_DIR, tol: float = PARITY_TOL, verbose: bool = True) -> dict[str, str]:
    """Export, check and write the three nets and SHA256SUMS into ``out``; returns file name -> sha256.

    Nothing is written unless all three pass: a failed check leaves the shipped files as they were.
    """
    files: dict[str, bytes] = {}
    for name in SIDES:
        net = load_net(name)
        data = export_net(name, net)
        diff = parity(name, net, data)
        if verbose:
            print(f"{name}.onnx: {len(data)} bytes, max |ORT - PyTorch| = {diff:.2e}")
        if not diff <= tol:
            raise RuntimeError(f"{name}: ONNX Runtime and PyTorch disagree by {diff:.2e} (> {tol:.0e}); "
                               "nothing written")
        files[f"{name}.onnx"] = data
    sums = {fname: hashlib.sha256(data).hexdigest() for fname, data in files.items()}
    for fname, data in files.items():
        atomic_write_bytes(Path(out) / fname, data)
    atomic_write_text(Path(out) / SUMS_FILE, "".join(f"{sha}  {fname}\n" for fname, sha in sums.items()))
    return sums


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m g2g.export.detector", description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--out", type=Path, default=ASSET_DIR, help=f"folder to write (default {ASSET_DIR})")
    args = parser.parse_args(argv)
    for fname, sha in export_detector(args.out).items():
        print(f"{sha}  {args.out / fname}")


if __name__ == "__main__":
    main()
