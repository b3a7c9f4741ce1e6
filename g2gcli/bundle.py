"""An exported model bundle (MODEL_DIR) on ONNX Runtime: the inference side of ``g2g mix``.

``open_bundle`` checks every file against the sha256 in ``g2g_model.json``
(a bundle copied half-way or edited by hand fails with one line naming the
file), reads the model and alignment settings from it, and opens one session
per part through :mod:`g2g.runtime`. The three calls take and return float32
NCHW arrays in [-1, 1] and split their input into batches of ``batch_size``.
On CUDA, runs go through IO binding (inputs copied to the GPU once, outputs
allocated there and copied back once). Torch-free.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from g2g.config import AlignConfig, ModelConfig, from_dict
from g2g.errors import G2GError
from g2g.io.files import sha256_file
from g2g.faces.preprocess import check_normalisation
from g2g.runtime import SessionInfo, open_session, run_bound

BUNDLE_FORMAT = "g2g-onnx-bundle/1"
META_FILE = "g2g_model.json"
SUMS_FILE = "SHA256SUMS"
PARTS = ("content_encoder", "class_encoder", "decoder")
NO_DEFAULT = "no default model ships yet; pass --model MODEL_DIR (from g2g export --onnx)"


class BundleError(G2GError):
    """A missing, incomplete or tampered model folder: a one-line user error."""


DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "assets" / "model"


def default_model_dir() -> Path:
    """The model that ships inside the package (``g2g/assets/model``)."""
    root = DEFAULT_MODEL_DIR
    if not (root / META_FILE).is_file():
        raise BundleError(NO_DEFAULT)
    return root


def _check_sums(model_dir: Path, meta_raw: bytes) -> None:
    """SHA256SUMS (written last by export) must be there and name this very g2g_model.json: an edited metadata file
    (a changed zoom frames every face differently, a changed size fails inside ONNX Runtime) is refused up front.
    A bundle without it is refused too: export always writes it, so its absence means a partial copy."""
    sums = model_dir / SUMS_FILE
    if not sums.is_file():
        raise BundleError(f"{model_dir} has no {SUMS_FILE} (an incomplete copy of an export?); re-copy or re-export it")
    listed = {}
    for line in sums.read_text(errors="replace").splitlines():
        parts = line.strip().split(None, 1)
        if len(parts) == 2:
            listed[parts[1].lstrip("*")] = parts[0]
    if listed.get(META_FILE) != hashlib.sha256(meta_raw).hexdigest():
        raise BundleError(f"{META_FILE} in {model_dir} does not match {SUMS_FILE} (edited or damaged); re-export or "
                          "re-copy the model folder")


def _check_parts_agree(root: Path, meta: dict[str, Any], sessions: dict[str, SessionInfo]) -> None:
    """The facts every part carries in its own metadata (written by export, covered by the files' sha256) must be
    g2g_model.json's, and the content encoder's input side must be the model's image size."""
    for part, info in sessions.items():
        role = info.session.get_modelmeta().custom_metadata_map.get("g2g_part")
        if role is not None and role != part:
            raise BundleError(f"{part}.onnx in {root} is the model's {role} (its own metadata says so): the parts are "
                              "swapped or renamed; re-export or re-copy the model folder")
        embedded = info.session.get_modelmeta().custom_metadata_map.get("g2g")
        if embedded is None:
            continue
        facts = json.loads(embedded)
        for key in ("model", "align", "normalisation"):
            if key in facts and facts[key] != meta.get(key):
                raise BundleError(f"{META_FILE} in {root} disagrees with {part}.onnx on {key!r}; re-export or re-copy "
                                  "the model folder")
    side = sessions["content_encoder"].session.get_inputs()[0].shape[-1]
    if isinstance(side, int) and side != int(meta["model"]["image_size"]):
        raise BundleError(f"{META_FILE} in {root} says {meta['model']['image_size']} px, content_encoder.onnx reads {side}")


def read_bundle_meta(model_dir: Path, verify: bool = True) -> tuple[dict[str, Any], str]:
    """(g2g_model.json as a dict, its sha256), checking every listed file's sha256."""
    model_dir = Path(model_dir)
    meta_path = model_dir / META_FILE
    if not model_dir.is_dir():
        raise BundleError(f"model folder {model_dir} does not exist")
    if not meta_path.is_file():
        raise BundleError(f"{model_dir} is not a g2g model folder (no {META_FILE}; make one with g2g export --onnx)")
    raw = meta_path.read_bytes()
    try:
        meta = json.loads(raw)
    except ValueError as e:
        raise BundleError(f"{meta_path} is not valid JSON ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{meta_path}: format {meta.get('format') if isinstance(meta, dict) else None!r}, "
                          f"expected {BUNDLE_FORMAT!r}")
    files = meta.get("files") or {}
    missing = [f"{p}.onnx" for p in PARTS if f"{p}.onnx" not in files]
    if missing:
        raise BundleError(f"{meta_path} lists no {', '.join(missing)}")
    if verify:
        _check_sums(model_dir, raw)
        for name, want in files.items():
            path = model_dir / name
            if Path(name).name != name:
                raise BundleError(f"{meta_path} lists a file outside the folder: {name!r}")
            if not path.is_file():
                raise BundleError(f"{name} is missing from {model_dir}")
            if sha256_file(path) != want:
                raise BundleError(f"{name} in {model_dir} does not match the sha256 in {META_FILE} "
                                  "(damaged or modified; re-export or re-copy the model folder)")
    return meta, hashlib.sha256(raw).hexdigest()


@dataclass
class Bundle:
    """The three generator parts of a bundle, ready to run."""

    root: Path
    meta: dict[str, Any]
    sha256: str  # of g2g_model.json: names the model in mix manifests
    model: ModelConfig
    align: AlignConfig
    sessions: dict[str, SessionInfo]
    batch_size: int = 16
    io_binding: bool = False

    @property
    def providers(self) -> list[str]:
        return self.sessions["decoder"].providers

    @property
    def device(self) -> str:
        return self.sessions["decoder"].device

    @property
    def note(self) -> str:
        """Why CUDA was not used (empty when it was, or when the CPU was asked for)."""
        return self.sessions["decoder"].note

    @property
    def size(self) -> int:
        return self.model.image_size

    def _run(self, part: str, feeds: dict[str, np.ndarray]) -> np.ndarray:
        return self._run_all(part, feeds)[0]

    def _batched(self, part: str, feeds: dict[str, np.ndarray], step: int) -> np.ndarray:
        n = len(next(iter(feeds.values())))
        outs = [self._run(part, {k: v[i : i + step] for k, v in feeds.items()}) for i in range(0, n, step)]
        return np.concatenate(outs) if len(outs) != 1 else outs[0]

    def encode_content(self, images: np.ndarray) -> np.ndarray:
        """E_A: (N, 3, S, S) in [-1, 1] -> content maps (N, C, S/8, S/8)."""
        self._check(images, 4)
        return self._batched("content_encoder", {"image": images}, self.batch_size)

    def encode_class(self, images_nk: np.ndarray) -> np.ndarray:
        """E_B: (N, K, 3, S, S) -> identity codes (N, code), each the mean over its K images."""
        self._check(images_nk, 5)
        step = max(1, self.batch_size // images_nk.shape[1])  # about batch_size images per run
        return self._batched("class_encoder", {"images": images_nk}, step)

    def decode(self, content: np.ndarray, code: np.ndarray) -> np.ndarray:
        """G: content (N, C, h, w) + codes (N, code) -> images (N, 3, S, S) in [-1, 1]."""
        if len(content) != len(code):
            raise ValueError(f"decode needs as many codes as content maps, got {len(code)} and {len(content)}")
        return self._batched("decoder", {"content": content, "code": code}, self.batch_size)

    def generate(self, content: np.ndarray, identity: np.ndarray, base: np.ndarray) -> np.ndarray:
        """A masked-rest bundle's three parts in a row (see g2g.faces.masked_rest.pair_inputs for the inputs):
        content (N, C, S, S), warped identity crops (N, K, 3, S, S), base (N, 3, S, S) -> face (N, 3, S, S)."""
        if "base" not in {i.name for i in self.sessions["decoder"].session.get_inputs()}:
            raise ValueError("generate() needs a masked-rest bundle, whose decoder reads 'base' (use encode_*/decode)")
        outs = []
        step = max(1, self.batch_size // identity.shape[1])
        for i in range(0, len(content), step):
            r = self._run_all("content_encoder", {"content": content[i : i + step]})
            a = self._run_all("class_encoder", {"images": identity[i : i + step]})
            feeds = {**{f"r{j}": x for j, x in enumerate(r)}, **{f"a{j}": x for j, x in enumerate(a)},
                     "base": base[i : i + step]}
            outs.append(self._run_all("decoder", feeds)[0])
        return np.concatenate(outs)

    def _run_all(self, part: str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        info = self.sessions[part]
        feeds = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in feeds.items()}
        if self.io_binding:
            return run_bound(info, feeds)
        return info.session.run(None, feeds)

    def _check(self, x: np.ndarray, ndim: int) -> None:
        S = self.size
        if x.ndim != ndim or x.shape[-3:] != (3, S, S):
            raise ValueError(f"expected {'(N, K, 3, S, S)' if ndim == 5 else '(N, 3, S, S)'} with S={S}, got {x.shape}")


def open_bundle(model_dir: Path | None, device: str = "auto", batch_size: int = 16,
                io_binding: bool | None = None, threads: int | None = None) -> Bundle:
    """Verify and open a model folder (``None``: the packaged default model).

    ``io_binding=None`` turns IO binding on exactly when the sessions run on CUDA.
    """
    root = default_model_dir() if model_dir is None else Path(model_dir)
    meta, digest = read_bundle_meta(root)
    model = from_dict(ModelConfig, meta["model"])
    check_normalisation(meta.get("normalisation"), str(root / META_FILE), BundleError)
    a = meta.get("align") or {}
    align = AlignConfig(size=int(a.get("size", model.image_size)), zoom=float(a.get("zoom", model.zoom)))
    sessions = {}
    for part in PARTS:
        try:
            sessions[part] = open_session(root / f"{part}.onnx", device=device, threads=threads)
        except ValueError:
            raise
        except Exception as e:  # onnxruntime refused the file
            raise BundleError(f"{part}.onnx in {root}: ONNX Runtime cannot load it ({str(e).splitlines()[0][:160]})") from None
    _check_parts_agree(root, meta, sessions)
    on_cuda = sessions["decoder"].device.startswith("cuda")
    return Bundle(root, meta, digest, model, align, sessions, max(1, int(batch_size)),
                  on_cuda if io_binding is None else bool(io_binding))
