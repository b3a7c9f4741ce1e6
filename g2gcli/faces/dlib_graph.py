"""dlib's face ResNet as ONNX graphs, written with numpy and ``onnx.helper`` straight from its weights.

``g2g eval`` runs two networks on ONNX Runtime: the identity network (embeddings
of aligned crops) and the realism texture statistics. Both are dlib's face ResNet
behind the resampling of a crop to dlib's 150 px chip. Building them here, from the
weights that ``g2g.faces.dlib_dat`` reads, lets the inference install build them
on first use without torch; ``g2g.export.identity_onnx`` and ``g2g.export.texture_onnx``
trace the same graphs from PyTorch (``IdentityNet``, ``TextureStats``) and stay as
the references the tests compare these with.

The graphs, op for op as PyTorch computes them:

- ``GridSample`` (bilinear, border, align_corners 0) of the crops on a constant
  grid: ``F.affine_grid`` of ``IdentityNet.theta``, the same for every crop;
- ``(x + 1) * 127.5``, minus dlib's RGB mean, over 256;
- conv 7x7/2, relu, max pool 3/2, then the 14 residual blocks, whose add pads the
  smaller tensor with zeros at the end of C, H and W (dlib's ``tt::add``): every
  shape is static (the chip is 150 px), so the pads are computed here;
- identity: mean over H and W, then the fc; realism: masked means and stds of the
  stages in ``STAGES``.

The callers keep a built graph in the user cache (``g2g.io.cache``) beside a
``.sha256`` file, so that a damaged copy is rebuilt rather than fed to ONNX Runtime.
"""

from __future__ import annotations


import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from g2g.faces.dlib_dat import BLOCKS, CHIP_SIZE, EMBED_DIM, dlib_state

OPSET = 18  # GridSample needs >= 16; 18 is what the PyTorch exports use
IR_VERSION = 10
GREY = 128.0 / 127.5 - 1.0  # pixel 128 in the crops' [-1, 1]
# (name, channels, side px, end): the stages described; dlib's ResNet blocks[:end] (after the stem) give each one
STAGES: tuple[tuple[str, int, int, int], ...] = (
    ("stem", 32, 35, 0), ("res32", 32, 35, 3), ("res64", 64, 17, 7), ("res128", 128, 8, 10), ("res256", 256, 4, 13),
)
FEATURE_DIM = 2 * sum(c for _, c, _, _ in STAGES)

Shape = tuple[int, int]  # (channels, side) of a square activation


def area_matrix(out: int, inp: int) -> np.ndarray:
    """(out, inp) weights that average ``inp`` samples onto ``out`` equal cells (exact box area, any ratio)."""
    m = np.zeros((out, inp), np.float64)
    edges = np.linspace(0.0, inp, out + 1)
    for i in range(out):
        lo, hi = edges[i], edges[i + 1]
        for j in range(int(np.floor(lo)), min(inp, int(np.ceil(hi)))):
            m[i, j] = max(0.0, min(hi, j + 1) - max(lo, j))
    return (m / m.sum(1, keepdims=True)).astype(np.float32)


def chip_grid(zoom: float, size: int, chip: int = CHIP_SIZE) -> np.ndarray:
    """(1, chip, chip, 2) sampling grid from crops of ``size`` px aligned at ``zoom`` to dlib's chip:
    ``F.affine_grid(IdentityNet.theta, align_corners=False)``, in float64 then rounded to float32."""
    r = size / (zoom * chip)  # crop px per chip px
    scale, shift = 1.0 / zoom, (1.0 - r) / size
    base = (2.0 * np.arange(chip) + 1.0) / chip - 1.0  # pixel centres in [-1, 1], align_corners=False
    gx, gy = np.meshgrid(scale * base + shift, scale * base + shift, indexing="xy")
    return np.stack([gx, gy], -1)[None].astype(np.float32)


class _Graph:
    """Nodes and initialisers of one graph under construction, with fresh value names."""

    def __init__(self, state: dict[str, np.ndarray]):
        self.state = state
        self.nodes: list[onnx.NodeProto] = []
        self.inits: dict[str, onnx.TensorProto] = {}

    def const(self, value: np.ndarray | float | list[int], name: str | None = None) -> str:
        """An initialiser (float32 unless ``value`` is an integer array) named ``name`` or ``c<n>``."""
        a = np.asarray(value)
        a = a.astype(np.int64 if a.dtype.kind in "iu" else np.float32)
        name = name or f"c{len(self.inits)}"
        if name not in self.inits:
            self.inits[name] = numpy_helper.from_array(a, name)
        return name

    def weight(self, key: str, transpose: bool = False) -> str:
        """The state entry ``key`` as an initialiser (one copy however often it is used)."""
        value = self.state[key].T if transpose else self.state[key]
        return self.const(np.ascontiguousarray(value), key + (".T" if transpose else ""))

    def op(self, op_type: str, *inputs: str, out: str | None = None, **attrs: object) -> str:
        """Append a node; returns its (single) output's name."""
        out = out or f"{op_type.lower()}_{len(self.nodes)}"
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], **attrs))
        return out

    def model(self, inputs: list[onnx.ValueInfoProto], outputs: list[onnx.ValueInfoProto], name: str,
              meta: dict[str, str], doc: str) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, name, inputs, outputs, list(self.inits.values()))
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION,
                                  producer_name="g2g.faces.dlib_graph", doc_string=doc)
        for k, v in meta.items():
            model.metadata_props.add(key=k, value=v)
        return model


# --- pieces shared by both graphs -------------------------------------------------------------------------------------


def _to_chip(g: _Graph, x: str, zoom: float, size: int) -> str:
    """(N, C, S, S) -> (N, C, 150, 150): the crops resampled to dlib's chip, one constant grid for all N."""
    grid = g.const(chip_grid(zoom, size), "chip_grid")
    n = g.op("Shape", x, start=0, end=1)  # (1,) int64: N
    shape = g.op("Concat", n, g.const([CHIP_SIZE, CHIP_SIZE, 2]), axis=0)
    grids = g.op("Expand", grid, shape)  # (N, 150, 150, 2)
    return g.op("GridSample", x, grids, mode="bilinear", padding_mode="border", align_corners=0)


def _stem(g: _Graph, chips: str) -> tuple[str, Shape]:
    """(N, 3, 150, 150) chips in [-1, 1] -> (N, 32, 35, 35): dlib's input scaling, conv 7x7/2, relu, max pool 3/2."""
    x = g.op("Mul", g.op("Add", chips, g.const(1.0)), g.const(127.5))  # RGB 0-255
    x = g.op("Div", g.op("Sub", x, g.weight("mean")), g.const(256.0))
    x = g.op("Relu", _conv(g, x, "conv", 7, 2, 0))
    x = g.op("MaxPool", x, kernel_shape=[3, 3], strides=[2, 2])
    side = ((CHIP_SIZE - 7) // 2 + 1 - 3) // 2 + 1
    return x, (32, side)


def _conv(g: _Graph, x: str, key: str, k: int, stride: int, pad: int) -> str:
    return g.op("Conv", x, g.weight(f"{key}.weight"), g.weight(f"{key}.bias"), kernel_shape=[k, k],
                strides=[stride, stride], pads=[pad] * 4)


def _pad_to(g: _Graph, x: str, shape: Shape, target: Shape) -> str:
    """``x`` of ``shape`` zero-padded at the end of C, H and W up to ``target``."""
    dc, dh = target[0] - shape[0], target[1] - shape[1]
    if not (dc or dh):
        return x
    return g.op("Pad", x, g.const([0, 0, 0, 0, 0, dc, dh, dh]), mode="constant")


def _block(g: _Graph, x: str, i: int, shape: Shape) -> tuple[str, Shape]:
    """Residual block ``i``: relu(conv2(relu(conv1(x))) + skip), dlib's padded add; stride-2 convs are unpadded."""
    cout, down = BLOCKS[i]
    stride, pad = (2, 0) if down else (1, 1)
    y = g.op("Relu", _conv(g, x, f"blocks.{i}.conv1", 3, stride, pad))
    y = _conv(g, y, f"blocks.{i}.conv2", 3, 1, 1)
    y_shape = (cout, (shape[1] + 2 * pad - 3) // stride + 1)
    skip, skip_shape = x, shape
    if down:
        skip, skip_shape = g.op("AveragePool", x, kernel_shape=[2, 2], strides=[2, 2]), (shape[0], shape[1] // 2)
    target = (max(y_shape[0], skip_shape[0]), max(y_shape[1], skip_shape[1]))
    out = g.op("Add", _pad_to(g, y, y_shape, target), _pad_to(g, skip, skip_shape, target))
    return g.op("Relu", out), target


def _weights_sha256() -> str:
    from g2g.weights import verified_sha256

    return verified_sha256("dlib-resnet")


def _crops_input(size: int, channels: int = 3, name: str = "crops") -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", channels, size, size])


# --- the two graphs ---------------------------------------------------------------------------------------------------


def identity_model(zoom: float, size: int, state: dict[str, np.ndarray] | None = None) -> onnx.ModelProto:
    """``crops`` (N, 3, S, S) in [-1, 1] aligned at ``zoom`` -> ``embeddings`` (N, 128): ``IdentityNet("dlib")``.
    ``state``: the weights (default :func:`~g2g.faces.dlib_dat.dlib_state`); the metadata names the verified file."""
    g = _Graph(dlib_state() if state is None else state)
    x, shape = _stem(g, _to_chip(g, "crops", zoom, size))
    for i in range(len(BLOCKS)):
        x, shape = _block(g, x, i, shape)
    pooled = g.op("ReduceMean", x, g.const([2, 3]), keepdims=0)  # (N, 256)
    g.op("MatMul", pooled, g.weight("fc.weight", transpose=True), out="embeddings")
    meta = identity_meta("dlib", zoom, size, EMBED_DIM, _weights_sha256())
    out = helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["N", EMBED_DIM])
    return g.model([_crops_input(size)], [out], "g2g_identity_dlib", meta, identity_doc("dlib"))


def identity_meta(name: str, zoom: float, size: int, dim: int, weights_sha256: str) -> dict[str, str]:
    """What an identity network's ONNX file says about itself (dlib's built here, a facenet net exported from
    PyTorch): everything :class:`g2g.faces.embedder.IdentityEmbedder` needs to feed and compare it."""
    from g2g.faces.distances import distance_convention

    conv = distance_convention(name)
    return {
        "g2g_model": "identity",
        "identity_net": name,
        "zoom": repr(float(zoom)),
        "input_size": str(size),
        "input": "crops: float32 (N, 3, S, S) RGB in [-1, 1] = pixel / 127.5 - 1, aligned with AlignConfig(size, zoom)",
        "output": f"embeddings: float32 (N, {dim})",
        "embedding_dim": str(dim),
        "distance": conv.metric,
        "threshold": repr(conv.threshold),
        "also_reported": "cosine",
        "weights_sha256": weights_sha256,
    }


def identity_doc(name: str) -> str:
    from g2g.faces.distances import distance_convention

    return f"g2g identity network ({name}); {distance_convention(name).note}"


def _masked_stats(g: _Graph, a: str, w: str) -> tuple[str, str]:
    """Per-channel weighted mean and std of ``a`` (N, C, h, w) under weights ``w`` (N, 1, h, w) -> (N, C) each."""
    axes = g.const([2, 3])
    total = g.op("Max", g.op("ReduceSum", w, axes, keepdims=1), g.const(1e-6))  # (N, 1, 1, 1)
    mean = g.op("Div", g.op("ReduceSum", g.op("Mul", a, w), axes, keepdims=1), total)  # (N, C, 1, 1)
    d = g.op("Sub", a, mean)
    var = g.op("Div", g.op("ReduceSum", g.op("Mul", w, g.op("Mul", d, d)), axes, keepdims=1), total)
    std = g.op("Sqrt", g.op("Add", var, g.const(1e-6)))
    return g.op("Flatten", mean, axis=1), g.op("Flatten", std, axis=1)


def _region_weights(g: _Graph, m: str, name: str, side: int) -> str:
    """(N, 1, 150, 150) chip mask -> (N, 1, side, side): its area on each cell of a stage's grid."""
    a = area_matrix(side, CHIP_SIZE)
    return g.op("MatMul", g.op("MatMul", g.const(a, f"area_{name}"), m), g.const(np.ascontiguousarray(a.T)))


def realism_model(zoom: float, size: int, state: dict[str, np.ndarray] | None = None) -> onnx.ModelProto:
    """``crops`` (N, 3, S, S) in [-1, 1] and ``mask`` (N, 1, S, S) in [0, 1] -> ``features`` (N, FEATURE_DIM):
    ``g2g.export.texture_onnx.TextureStats``, masked means then stds of the activations of each stage in ``STAGES``."""
    g = _Graph(dlib_state() if state is None else state)
    inv = g.op("Sub", g.const(1.0), "mask")
    grey = g.op("Add", g.op("Mul", "crops", "mask"), g.op("Mul", g.const(GREY), inv))
    both = _to_chip(g, g.op("Concat", grey, "mask", axis=1), zoom, size)  # (N, 4, 150, 150): one resampling
    x = g.op("Slice", both, g.const([0]), g.const([3]), g.const([1]))
    m = g.op("Slice", both, g.const([3]), g.const([4]), g.const([1]))
    x, shape = _stem(g, x)
    means, stds, done = [], [], 0
    for name, _, side, end in STAGES:
        for i in range(done, end):
            x, shape = _block(g, x, i, shape)
        done = end
        mu, sd = _masked_stats(g, x, _region_weights(g, m, name, side))
        means.append(mu)
        stds.append(sd)
    g.op("Concat", *means, *stds, axis=1, out="features")
    out = helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", FEATURE_DIM])
    inputs = [_crops_input(size), _crops_input(size, 1, "mask")]
    return g.model(inputs, [out], "g2g_realism_dlib", realism_meta(zoom, size, _weights_sha256()), REALISM_DOC)


REALISM_DOC = "g2g realism features: texture statistics of the face region in dlib's face ResNet"


def realism_meta(zoom: float, size: int, weights_sha256: str) -> dict[str, str]:
    """What the realism network's ONNX file says about itself (the same built here and exported from PyTorch)."""
    stages = ", ".join(f"{name} {ch} ch at {side} px" for name, ch, side, _ in STAGES)
    return {
        "g2g_model": "realism-features",
        "network": "dlib face-recognition ResNet v1",
        "zoom": repr(float(zoom)),
        "input_size": str(size),
        "input": "crops: float32 (N, 3, S, S) RGB in [-1, 1] aligned with AlignConfig(size, zoom); "
                 "mask: float32 (N, 1, S, S) in [0, 1], the face region described",
        "output": f"features: float32 (N, {FEATURE_DIM}): masked per-channel means, then masked stds",
        "features": f"masked mean and std of activations after {stages}; outside the mask the crop is grey (128)",
        "feature_dim": str(FEATURE_DIM),
        "weights_sha256": weights_sha256,
    }


def checked_bytes(model: onnx.ModelProto) -> bytes:
    """``model`` serialised, once ``onnx.checker`` (with shape inference) accepts it."""
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()
