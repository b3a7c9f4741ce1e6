"""``g2g export --onnx``: a checkpoint's EMA generator -> a self-describing ONNX bundle.

The bundle (MODEL_DIR) is everything ``g2g mix`` and ``g2g eval`` need, with no
PyTorch and no training run: three generator parts and the identity network,
each one self-contained ``.onnx`` file, plus ``g2g_model.json`` and
``SHA256SUMS`` (the format ``g2g.bundle`` reads).

Exporter. torch 2.14's default ``torch.onnx.export(dynamo=True)`` (torch.export
+ onnxscript) with ``dynamic_shapes`` gives symbolic N (and K for the class
encoder) and exact parity; the legacy TorchScript exporter (``dynamo=False``,
deprecated) also works but names some output dims oddly. The dynamo exporter
writes weights above a size threshold to a ``.onnx.data`` sidecar by default,
so each part is exported into a private staging folder, loaded back with its
external data, inlined and written as one file.

Parity. Every part runs on ONNX Runtime (CPU) against PyTorch on real aligned
faces (a ``g2g prepare`` DATA folder) or, without one, on random input (the
report says which). Bounds scale with the reference's magnitude
(``bound * max(1, max|ref|)``): fp32 1e-3 everywhere; fp16 1e-2 for the
encoders and 5e-2 for the decoder and the full mix (outputs in [-1, 1]).
Measured on untrained tiny/full models: fp32 <= 1.1e-5, fp16 about 7e-3 on
content maps of magnitude 8 and 1.3e-3 on decoder output.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import shutil
import tempfile
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from g2g import __version__
from g2g.config import AlignConfig, ModelConfig, TrainConfig, from_dict
from g2g.bundle import BUNDLE_FORMAT, META_FILE, PARTS, SUMS_FILE
from g2g.errors import G2GError
from g2g.fsutil import atomic_write_bytes, atomic_write_text, claim_output
from g2g.preprocess import NORMALISATION, resize_to_model, to_input
from g2g.progress import say  # exports take tens of seconds per part on a CPU: a line per step
# max |onnx - torch| allowed, times max(1, max |torch output|)
BOUNDS_FP32 = {"content_encoder": 1e-3, "class_encoder": 1e-3, "decoder": 1e-3, "mix": 1e-3}
BOUNDS_FP16 = {"content_encoder": 1e-2, "class_encoder": 1e-2, "decoder": 5e-2, "mix": 5e-2}
MAX_DIM = 1 << 16  # upper limit of the symbolic batch dims given to torch.export


class ExportError(G2GError):
    """The export failed a check (parity, checker, bad inputs): a one-line user error."""


@dataclass
class ExportReport:
    out: Path
    checkpoint: Path
    checkpoint_sha256: str
    step: int
    fp16: bool
    files: dict[str, str] = field(default_factory=dict)  # file name -> sha256
    sizes: dict[str, int] = field(default_factory=dict)  # file name -> bytes
    parity: dict[str, float] = field(default_factory=dict)  # part -> max |onnx - torch|
    bounds: dict[str, float] = field(default_factory=dict)  # part -> enforced bound (already scaled)
    parity_source: str = ""  # what the parity check ran on
    notes: list[str] = field(default_factory=list)  # e.g. inlined external data

    def table(self):
        from g2g.progress import summary_table

        t = summary_table(f"g2g export -> {self.out}  ({'fp16' if self.fp16 else 'fp32'}, step {self.step})",
                          ["file", "size", "max |onnx - torch|", "bound"])
        t.add_column("sha256")
        for name, sha in self.files.items():
            part = name.removesuffix(".onnx")
            diff = f"{self.parity[part]:.2e}" if part in self.parity else ""
            bound = f"{self.bounds[part]:.1e}" if part in self.bounds else ""
            t.add_row(name, f"{self.sizes.get(name, 0) / 1e6:.1f} MB", diff, bound, sha[:16])
        if "mix" in self.parity:
            t.add_row("(full mix)", "", f"{self.parity['mix']:.2e}", f"{self.bounds['mix']:.1e}", "")
        t.caption = f"parity on {self.parity_source}"
        return t


def _resolve_checkpoint(run_or_checkpoint: Path) -> Path:
    from g2g.train.checkpoint import CheckpointError, latest_checkpoint

    p = Path(run_or_checkpoint)
    if p.is_dir():
        try:
            return latest_checkpoint(p)
        except CheckpointError as e:
            raise ExportError(str(e)) from None
    if not p.exists():
        raise ExportError(f"no checkpoint or run folder at {p}")
    return p


def _export_part(module, args: tuple, names: tuple[list[str], list[str]], dyn: dict, opset: int,
                 staging: Path, name: str, inlined: list[str]):
    """torch module -> one in-memory onnx.ModelProto with all weights inlined."""
    import onnx
    import torch
    from onnx.external_data_helper import convert_model_from_external_data

    folder = Path(tempfile.mkdtemp(dir=staging, prefix=f"{name}-"))
    path = folder / f"{name}.onnx"
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")  # exporter chatter (deprecations, dynamic-shape renames)
        torch.onnx.export(
            module, args, str(path), input_names=names[0], output_names=names[1], dynamic_shapes=dyn,
            dynamo=True, opset_version=opset, verbose=False,
        )
    sidecars = sorted(p.name for p in folder.iterdir() if p != path)
    model = onnx.load(str(path), load_external_data=True)  # reads any sidecar into the model
    if sidecars:
        convert_model_from_external_data(model)  # mark every tensor as stored inside the file
        inlined.append(name)
    shutil.rmtree(folder, ignore_errors=True)
    return model


def _feed_outputs_as_fp16(model) -> None:
    """After fp16 conversion with float32 I/O, nodes that read a graph output (an encoder's feature maps are both
    outputs and inputs of the next layer) must read the fp16 tensor before its Cast to float32, not the output."""
    outputs = {o.name for o in model.graph.output}
    before_cast = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "Cast" and n.output[0] in outputs}
    for node in model.graph.node:
        if node.op_type == "Cast" and node.output[0] in before_cast:
            continue
        for i, name in enumerate(node.input):
            if name in before_cast:
                node.input[i] = before_cast[name]


def _set_metadata(model, meta: dict[str, Any], part: str) -> None:
    """Put the bundle facts (``meta`` without "files") in the model's metadata_props."""
    keep = {p.key: p.value for p in model.metadata_props if p.key not in ("g2g", "g2g_part")}
    del model.metadata_props[:]
    for k, v in {**keep, "g2g": json.dumps(meta, sort_keys=True), "g2g_part": part}.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v
    model.producer_name, model.producer_version = "g2g", __version__
    model.doc_string = f"g2g {part}: see metadata_props['g2g'] (format {BUNDLE_FORMAT})"


def _serialize_checked(model, name: str) -> bytes:
    """Check the model and serialise it as one self-contained file."""
    import onnx
    from onnx.external_data_helper import uses_external_data

    if any(uses_external_data(t) for t in model.graph.initializer):
        raise ExportError(f"{name}: tensors still point to external data after inlining")
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as e:
        raise ExportError(f"{name}: onnx.checker failed: {str(e).splitlines()[0]}") from None
    return model.SerializeToString()


def load_check_faces(folder: Path, size: int, limit: int = 8) -> tuple[np.ndarray, np.ndarray | None]:
    """Up to ``limit`` aligned crops of a DATA folder -> (n, 3, size, size) float32 in [-1, 1], and their 68
    landmarks at ``size`` (n, 68, 2) where the folder's manifest has them for every crop picked (else None).

    Crops are taken evenly across the sorted listing (so several identities
    show up) and resized to the model's size when the folder was prepared at
    another one.
    """
    from g2g.fsutil import read_jsonl
    from g2g.images import SkipImage, list_images, load_rgb

    files = list_images(folder)
    if not files:
        raise ExportError(f"--check-data {folder}: no images found")
    manifest = folder / "manifest.jsonl"
    known = {str(folder / r["output"]): r.get("crop_landmarks68") for r in read_jsonl(manifest)
             if r.get("output")} if manifest.is_file() else {}
    pick = [files[i] for i in np.linspace(0, len(files) - 1, min(limit, len(files))).round().astype(int)]
    faces, marks = [], []
    for f in dict.fromkeys(pick):
        try:
            rgb = load_rgb(f).rgb
        except SkipImage:
            continue
        faces.append(resize_to_model(rgb, size))
        points = known.get(str(f))
        marks.append(np.asarray(points, np.float32) * (size / rgb.shape[1]) if isinstance(points, list) else None)
    if not faces:
        raise ExportError(f"--check-data {folder}: none of the sampled images could be read")
    lm = np.stack(marks) if all(m is not None for m in marks) else None
    return to_input(np.stack(faces)), lm


def _parity(gen, paths: dict[str, Path], faces: np.ndarray, fp16: bool) -> tuple[dict[str, float], dict[str, float]]:
    """max |ORT - torch| per part and for the whole mix, and the bounds they must meet."""
    import torch

    from g2g.runtime import open_session

    sess = {p: open_session(paths[p], device="cpu").session for p in PARTS}
    n = len(faces)
    k = 2 if n >= 2 else 1
    nk = faces[: (n // k) * k].reshape(n // k, k, *faces.shape[1:])  # (n/k, k, 3, S, S)
    ids = np.roll(faces, 1, axis=0)[:, None]  # (n, 1, 3, S, S): each face mixed with its neighbour
    with torch.no_grad():
        t = torch.from_numpy
        ref_content = gen.content_encoder(t(faces)).numpy()
        ref_code_nk = gen.encode_class(t(nk)).numpy()
        ref_code = gen.encode_class(t(ids)).numpy()
        ref_dec = gen.decoder(t(ref_content), t(ref_code)).numpy()
    ort_content = sess["content_encoder"].run(None, {"image": faces})[0]
    ort_code_nk = sess["class_encoder"].run(None, {"images": nk})[0]
    ort_dec = sess["decoder"].run(None, {"content": ref_content, "code": ref_code})[0]
    ort_code = sess["class_encoder"].run(None, {"images": ids})[0]
    ort_mix = sess["decoder"].run(None, {"content": ort_content, "code": ort_code})[0]
    pairs = {
        "content_encoder": (ort_content, ref_content), "class_encoder": (ort_code_nk, ref_code_nk),
        "decoder": (ort_dec, ref_dec), "mix": (ort_mix, ref_dec),
    }
    return diffs_and_bounds(pairs, fp16)


def diffs_and_bounds(pairs: dict[str, tuple[np.ndarray, np.ndarray]], fp16: bool
                     ) -> tuple[dict[str, float], dict[str, float]]:
    """max |onnx - torch| per part of (onnx, torch) pairs, and each bound scaled by the reference's magnitude."""
    base = BOUNDS_FP16 if fp16 else BOUNDS_FP32
    diffs = {k: float(np.abs(a - b).max()) for k, (a, b) in pairs.items()}
    bounds = {k: base[k] * max(1.0, float(np.abs(b).max())) for k, (a, b) in pairs.items()}
    return diffs, bounds


def export_bundle(
    run_or_checkpoint: Path,
    out: Path,
    fp16: bool = False,
    opset: int = 18,
    check_images: Path | None = None,
    identity: bool = True,
    progress: bool = False,
) -> ExportReport:
    """Export the EMA generator of a run (its latest checkpoint) or a checkpoint file to ``out``.

    Writes content_encoder.onnx, class_encoder.onnx, decoder.onnx, identity.onnx
    (``identity=False`` leaves the identity network out; ``g2g eval`` needs it,
    ``g2g mix`` does not), g2g_model.json and SHA256SUMS, all atomically;
    g2g_model.json last, so a half-finished export is not a bundle.
    Raises :class:`ExportError` when a check fails.
    """
    import torch

    from g2g.train.checkpoint import CheckpointError, file_sha256, load_generator
    from g2g.train.model import KShotClassEncoder

    ckpt = _resolve_checkpoint(run_or_checkpoint)
    try:
        gen, mcfg, state = load_generator(ckpt, ema=True)
    except CheckpointError as e:
        raise ExportError(str(e)) from None
    out = Path(out)
    claim_output(out, "export")
    S = mcfg.image_size
    report = ExportReport(out=out, checkpoint=ckpt, checkpoint_sha256=file_sha256(ckpt),
                          step=int(state.get("step", 0)), fp16=fp16)
    if "generator_ema" not in state:
        report.notes.append("checkpoint has no EMA generator; exported the raw generator")

    check_lm = None  # 68 landmarks of the check faces, where DATA's manifest has them (no dlib needed then)
    if check_images is not None:
        faces, check_lm = load_check_faces(Path(check_images), S)
        report.parity_source = f"{len(faces)} real aligned faces from {check_images}"
    else:
        faces = np.random.default_rng(0).uniform(-1, 1, (4, 3, S, S)).astype(np.float32)
        report.parity_source = "random input (no --check-data DATA given)"

    from torch.export import Dim

    N, K = Dim("N", min=1, max=MAX_DIM), Dim("K", min=1, max=MAX_DIM)
    appearance = mcfg.masked_rest
    if appearance:
        from g2g.export.appearance import appearance_inputs, appearance_specs
        from g2g.train.appearance_model import image_class_encoder

        check_inputs = appearance_inputs(faces, mcfg.zoom, warp=mcfg.warped_identity, lm=check_lm)
        class_encoder = image_class_encoder(gen)  # dlib: the frozen network in front of the trained projection
        specs = appearance_specs(gen, class_encoder, check_inputs, N, K)
    else:
        x = torch.from_numpy(faces[:2] if len(faces) >= 2 else np.repeat(faces, 2, 0))  # (2, 3, S, S) sample
        with torch.no_grad():
            content, code = gen.content_encoder(x), gen.class_encoder(x)
        specs = {  # part -> (module, example args, (input names, output names), dynamic shapes)
            "content_encoder": (gen.content_encoder, (x,), (["image"], ["content"]), {"x": {0: N}}),
            "class_encoder": (KShotClassEncoder(gen.class_encoder), (x[:, None].repeat(1, 2, 1, 1, 1),),
                              (["images"], ["code"]), {"x": {0: N, 1: K}}),
            "decoder": (gen.decoder, (content, code), (["content", "code"], ["image"]),
                        {"content": {0: N}, "code": {0: N}}),
        }
    train_cfg = asdict(from_dict(TrainConfig, state["config"]))
    align = AlignConfig(size=S, zoom=mcfg.zoom)
    meta: dict[str, Any] = {
        "format": BUNDLE_FORMAT,
        "model": asdict(mcfg),
        "train": train_cfg,
        "align": {"size": S, "zoom": mcfg.zoom, "template": [list(p) for p in align.template()]},
        "normalisation": NORMALISATION,
        "checkpoint_sha256": report.checkpoint_sha256,
        "step": report.step,
        "fp16": fp16,
        "opset": opset,
        "exporter": f"torch.onnx.export(dynamo=True), torch {torch.__version__}",
        "g2g_version": __version__,
        "parity_source": report.parity_source,
    }
    if state.get("init_from"):  # a fine-tuned run: the steps before ``step`` were trained elsewhere
        meta["init_from"] = state["init_from"]

    staging = Path(tempfile.mkdtemp(dir=out, prefix=".export-"))
    try:
        models, inlined = {}, []
        for k, (part, (module, args, names, dyn)) in enumerate(specs.items()):
            if progress:
                say(f"export: {part} ({k + 1}/{len(specs)}){', fp16' if fp16 else ''}")
            model = _export_part(module, args, names, dyn, opset, staging, part, inlined)
            if fp16:
                from onnxconverter_common.float16 import convert_float_to_float16

                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # "number truncated to 1e-07" for tiny weights
                    model = convert_float_to_float16(model, keep_io_types=True)  # I/O stay float32
                _feed_outputs_as_fp16(model)
            models[part] = model
        if identity:
            if progress:
                say("export: identity network (dlib ResNet)")
            models["identity"] = _identity_model(staging, mcfg)
        if progress:
            say(f"export: parity on {report.parity_source}")
        if inlined:  # torch's default for the dynamo exporter, not a problem once inlined
            report.notes.append(f"torch wrote the weights of {', '.join(inlined)} as external data; "
                                "inlined (one self-contained file per model)")

        # parity on staged copies (metadata does not change the computation)
        staged = {}
        for part, model in models.items():
            _set_metadata(model, meta, part)
            staged[part] = staging / f"{part}.onnx"
            atomic_write_bytes(staged[part], _serialize_checked(model, part))
        if appearance:
            from g2g.export.appearance import appearance_parity

            report.parity, report.bounds = appearance_parity(gen, class_encoder, staged, check_inputs, fp16)
        else:
            report.parity, report.bounds = _parity(gen, staged, faces, fp16)
        meta["parity"] = report.parity
        bad = [f"{k} {report.parity[k]:.2e} > {report.bounds[k]:.1e}" for k in report.parity
               if not report.parity[k] <= report.bounds[k]]  # `not <=` also catches NaN
        if bad:
            raise ExportError(f"ONNX Runtime disagrees with PyTorch ({'; '.join(bad)}) on {report.parity_source}")

        (out / META_FILE).unlink(missing_ok=True)  # an old bundle here stops being one until the new one is whole
        if not identity:
            (out / "identity.onnx").unlink(missing_ok=True)  # never leave a stale part from an earlier export
        for part, model in models.items():
            _set_metadata(model, meta, part)
            data = _serialize_checked(model, part)
            name = f"{part}.onnx"
            atomic_write_bytes(out / name, data)
            report.files[name] = hashlib.sha256(data).hexdigest()
            report.sizes[name] = len(data)
    finally:
        shutil.rmtree(staging, ignore_errors=True)

    record = {**meta, "files": dict(report.files)}
    text = json.dumps(record, indent=2, sort_keys=True) + "\n"
    report.files[META_FILE] = hashlib.sha256(text.encode()).hexdigest()
    report.sizes[META_FILE] = len(text.encode())
    sums = "".join(f"{sha}  {name}\n" for name, sha in report.files.items())
    atomic_write_text(out / SUMS_FILE, sums)
    atomic_write_text(out / META_FILE, text)  # last: its presence marks a complete bundle
    return report


def _identity_model(staging: Path, mcfg: ModelConfig):
    """The identity network as an ONNX model reading g2g crops of this model's size and zoom."""
    import onnx

    try:
        from g2g.export.identity import export_identity
    except ImportError as e:
        raise ExportError(f"cannot export the identity network ({e}); pass identity=False to leave it out") from None
    folder = Path(tempfile.mkdtemp(dir=staging, prefix="identity-"))
    path = folder / "identity.onnx"
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            export_identity(path, name="dlib", zoom=mcfg.zoom, size=mcfg.image_size, verbose=False)
    except (RuntimeError, ValueError, OSError) as e:  # its own parity check, missing weights
        raise ExportError(f"identity network export failed: {str(e).splitlines()[0]}") from None
    model = onnx.load(str(path))  # export_identity writes one self-contained file (external_data=False)
    shutil.rmtree(folder, ignore_errors=True)
    return model
