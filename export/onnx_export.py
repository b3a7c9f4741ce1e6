"""``g2g export --onnx``: a checkpoint's EMA generator -> a self-describing ONNX bundle.

The bundle (MODEL_DIR) is everything ``g2g mix`` and ``g2g eval`` need, with no
PyTorch and no training run: three generator parts (what they are is the
model's recipe's, g2g.train.recipes) and the identity network, each one
self-contained ``.onnx`` file, plus ``g2g_model.json`` and ``SHA256SUMS`` (the
format ``g2g.bundle`` reads).

Exporter. torch 2.14's default ``torch.onnx.export(dynamo=True)`` (torch.export
+ onnxscript) with ``dynamic_shapes`` gives symbolic N (and K for the class
encoder) and exact parity; the legacy TorchScript exporter (``dynamo=False``,
deprecated) also works but names some output dims oddly. The dynamo exporter
writes weights above a size threshold to a ``.onnx.data`` sidecar by default,
so each part is exported into a private staging folder, loaded back with its
external data, inlined and written as one file.

Parity. Every part runs on ONNX Runtime (CPU) against PyTorch on real aligned
faces (a ``g2g prepare`` DATA folder) or, without one, on random input (the
report says which). Bounds (g2g.export.parts) scale with the reference's magnitude
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
from g2g.bundle import BUNDLE_FORMAT, META_FILE, SUMS_FILE
from g2g.errors import G2GError
from g2g.export.parts import ExportParts, PartSpec
from g2g.io.files import atomic_write_bytes, atomic_write_text
from g2g.io.runfolder import claim_output
from g2g.faces.preprocess import NORMALISATION, resize_to_model, to_input
from g2g.progress import say  # exports take tens of seconds per part on a CPU: a line per step


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


def _export_part(spec: PartSpec, opset: int, staging: Path, name: str, inlined: list[str]):
    """torch module -> one in-memory onnx.ModelProto with all weights inlined."""
    import onnx
    import torch
    from onnx.external_data_helper import convert_model_from_external_data

    folder = Path(tempfile.mkdtemp(dir=staging, prefix=f"{name}-"))
    path = folder / f"{name}.onnx"
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")  # exporter chatter (deprecations, dynamic-shape renames)
        torch.onnx.export(
            spec.module, spec.args, str(path), input_names=spec.inputs, output_names=spec.outputs,
            dynamic_shapes=spec.dynamic, dynamo=True, opset_version=opset, verbose=False,
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
    from g2g.io.images import SkipImage, list_images, load_rgb
    from g2g.prepare.records import read_manifest

    files = list_images(folder)
    if not files:
        raise ExportError(f"--check-data {folder}: no images found")
    manifest = folder / "manifest.jsonl"
    known = {str(folder / r["output"]): r.get("crop_landmarks68") for r in read_manifest(folder)} \
        if manifest.is_file() else {}
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
    g2g_model.json last, so a half-finished export is not a bundle. The parts
    are the generator's recipe's (g2g.train.recipes). Raises :class:`ExportError`
    when a check fails.
    """
    from g2g.train.recipes import recipe_for

    gen, mcfg, state, report = _open_checkpoint(run_or_checkpoint, Path(out), fp16)
    faces, check_lm = _check_faces(check_images, mcfg.image_size, report)
    parts = recipe_for(mcfg).export_parts(gen, faces, check_lm, mcfg)
    meta = _bundle_meta(mcfg, state, report, opset)
    staging = Path(tempfile.mkdtemp(dir=report.out, prefix=".export-"))
    try:
        models = _export_models(parts, mcfg, staging, opset, identity, progress, report)
        _check_parity(models, parts, meta, staging, report)
        _write_models(models, meta, identity, report)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _write_index(meta, report)
    return report


def _open_checkpoint(run_or_checkpoint: Path, out: Path, fp16: bool) -> tuple[Any, ModelConfig, dict, ExportReport]:
    """The checkpoint's EMA generator, its ModelConfig and state, and the report of its export to ``out`` (claimed)."""
    from g2g.io.files import sha256_file as file_sha256
    from g2g.train.checkpoint import CheckpointError, load_generator

    ckpt = _resolve_checkpoint(run_or_checkpoint)
    try:
        gen, mcfg, state = load_generator(ckpt, ema=True)
    except CheckpointError as e:
        raise ExportError(str(e)) from None
    claim_output(out, "export")
    report = ExportReport(out=out, checkpoint=ckpt, checkpoint_sha256=file_sha256(ckpt),
                          step=int(state.get("step", 0)), fp16=fp16)
    if "generator_ema" not in state:
        report.notes.append("checkpoint has no EMA generator; exported the raw generator")
    return gen, mcfg, state, report


def _check_faces(check_images: Path | None, size: int, report: ExportReport) -> tuple[np.ndarray, np.ndarray | None]:
    """The faces parity runs on (--check-data's crops, else random input) and their 68 landmarks where known."""
    if check_images is not None:
        faces, lm = load_check_faces(Path(check_images), size)  # lm: from DATA's manifest (no dlib needed then)
        report.parity_source = f"{len(faces)} real aligned faces from {check_images}"
        return faces, lm
    report.parity_source = "random input (no --check-data DATA given)"
    return np.random.default_rng(0).uniform(-1, 1, (4, 3, size, size)).astype(np.float32), None


def _bundle_meta(mcfg: ModelConfig, state: dict, report: ExportReport, opset: int) -> dict[str, Any]:
    """g2g_model.json without its "parity" and "files" (every part's metadata holds it too)."""
    import torch

    align = AlignConfig(size=mcfg.image_size, zoom=mcfg.zoom)
    meta: dict[str, Any] = {
        "format": BUNDLE_FORMAT,
        "model": asdict(mcfg),
        "train": asdict(from_dict(TrainConfig, state["config"])),
        "align": {"size": mcfg.image_size, "zoom": mcfg.zoom, "template": [list(p) for p in align.template()]},
        "normalisation": NORMALISATION,
        "checkpoint_sha256": report.checkpoint_sha256,
        "step": report.step,
        "fp16": report.fp16,
        "opset": opset,
        "exporter": f"torch.onnx.export(dynamo=True), torch {torch.__version__}",
        "g2g_version": __version__,
        "parity_source": report.parity_source,
    }
    if state.get("init_from"):  # a fine-tuned run: the steps before ``step`` were trained elsewhere
        meta["init_from"] = state["init_from"]
    return meta


def _export_models(parts: ExportParts, mcfg: ModelConfig, staging: Path, opset: int, identity: bool,
                   progress: bool, report: ExportReport) -> dict[str, Any]:
    """Each part (and the identity network) as an in-memory ONNX model, fp16 where asked."""
    models, inlined, fp16 = {}, [], report.fp16
    for k, (part, spec) in enumerate(parts.specs.items()):
        if progress:
            say(f"export: {part} ({k + 1}/{len(parts.specs)}){', fp16' if fp16 else ''}")
        model = _export_part(spec, opset, staging, part, inlined)
        models[part] = _to_fp16(model) if fp16 else model
    if identity:
        if progress:
            say("export: identity network (dlib ResNet)")
        models["identity"] = _identity_model(staging, mcfg)
    if progress:
        say(f"export: parity on {report.parity_source}")
    if inlined:  # torch's default for the dynamo exporter, not a problem once inlined
        report.notes.append(f"torch wrote the weights of {', '.join(inlined)} as external data; "
                            "inlined (one self-contained file per model)")
    return models


def _to_fp16(model):
    """The model with float16 weights and float32 inputs and outputs."""
    from onnxconverter_common.float16 import convert_float_to_float16

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "number truncated to 1e-07" for tiny weights
        model = convert_float_to_float16(model, keep_io_types=True)
    _feed_outputs_as_fp16(model)
    return model


def _check_parity(models: dict[str, Any], parts: ExportParts, meta: dict[str, Any], staging: Path,
                  report: ExportReport) -> None:
    """ONNX Runtime against PyTorch on staged copies (metadata does not change the computation); out of bounds
    raises :class:`ExportError`. The differences go into the report and ``meta``."""
    staged = {}
    for part, model in models.items():
        _set_metadata(model, meta, part)
        staged[part] = staging / f"{part}.onnx"
        atomic_write_bytes(staged[part], _serialize_checked(model, part))
    report.parity, report.bounds = parts.parity(staged, report.fp16)
    meta["parity"] = report.parity
    bad = [f"{k} {report.parity[k]:.2e} > {report.bounds[k]:.1e}" for k in report.parity
           if not report.parity[k] <= report.bounds[k]]  # `not <=` also catches NaN
    if bad:
        raise ExportError(f"ONNX Runtime disagrees with PyTorch ({'; '.join(bad)}) on {report.parity_source}")


def _write_models(models: dict[str, Any], meta: dict[str, Any], identity: bool, report: ExportReport) -> None:
    """Each model into the bundle folder with the final metadata; its sha256 and size into the report."""
    out = report.out
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


def _write_index(meta: dict[str, Any], report: ExportReport) -> None:
    """SHA256SUMS, then g2g_model.json: its presence marks a complete bundle."""
    record = {**meta, "files": dict(report.files)}
    text = json.dumps(record, indent=2, sort_keys=True) + "\n"
    report.files[META_FILE] = hashlib.sha256(text.encode()).hexdigest()
    report.sizes[META_FILE] = len(text.encode())
    sums = "".join(f"{sha}  {name}\n" for name, sha in report.files.items())
    atomic_write_text(report.out / SUMS_FILE, sums)
    atomic_write_text(report.out / META_FILE, text)


def _identity_model(staging: Path, mcfg: ModelConfig):
    """The identity network as an ONNX model reading g2g crops of this model's size and zoom."""
    import onnx

    try:
        from g2g.export.identity_onnx import export_identity
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
