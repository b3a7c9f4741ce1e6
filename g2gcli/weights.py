"""Model files g2g uses, each named with its sha256 and checked before use.

A truncated download or a wrong file is caught here, with one line naming the
file, instead of as a protobuf or unpickling error far from the cause. Files come
from installed packages (found with ``importlib.util.find_spec``, never by
importing the package) or, for optional ones, from a user cache that a download
fills. Torch-free.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.request
import warnings
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

from g2g.io.files import sha256_file
from g2g.errors import G2GError


class WeightsError(G2GError):
    """A model file is missing, unreadable or not the expected one (one-line message)."""


@dataclass(frozen=True)
class WeightFile:
    name: str  # registry key
    sha256: str | None  # expected hash; None only where no hash is published (warned)
    package: str | None = None  # installed package holding the file ...
    relpath: str = ""  # ... at this path inside it
    url: str | None = None  # optional files: where to download from into the user cache
    cache_name: str = ""  # file name in the cache folder
    use: str = ""  # what g2g uses it for


REGISTRY: dict[str, WeightFile] = {
    w.name: w
    for w in [
        WeightFile(
            "dlib-resnet",
            "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30",
            package="face_recognition_models",
            relpath="models/dlib_face_recognition_resnet_model_v1.dat",
            use="identity network (dlib ResNet, 128-d); pip install face-recognition-models",
        ),
        WeightFile(
            "dlib-shape68",
            "fbdc2cb80eb9aa7a758672cbfdda32ba6300efe9b6e6c7a299ff7e736b11b92f",
            package="face_recognition_models",
            relpath="models/shape_predictor_68_face_landmarks.dat",
            use="68-point face landmarks (dlib shape predictor): masks, warps, expression; "
                "pip install face-recognition-models",
        ),
        WeightFile(
            "stlpips-vgg",
            "44597da68f49c1837c100ff52299050f274d102eb102e5837178c79be6f0e250",
            package="stlpips_pytorch",
            relpath="weights/vST0.0/vgg_shift_tolerant.pth",
            use="perceptual loss (shift-tolerant LPIPS, VGG16); pip install stlpips-pytorch",
        ),
        # Optional: facenet-pytorch's InceptionResnetV1, in the torch hub cache where
        # facenet-pytorch itself puts it. The vggface2 hash is one published elsewhere
        # for this release file (the same source's MTCNN hashes match the wheel's);
        # no hash is published for casia-webface, so that file is accepted with a warning.
        WeightFile(
            "facenet-vggface2",
            "281cebca8662831adb987a874bdcb36e73f5b1c6dc5ee5878f305e985625d99b",
            url="https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/20180402-114759-vggface2.pt",
            cache_name="20180402-114759-vggface2.pt",
            use="optional identity network (facenet InceptionResnetV1, VGGFace2)",
        ),
        WeightFile(
            "facenet-casia-webface",
            None,
            url="https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/20180408-102900-casia-webface.pt",
            cache_name="20180408-102900-casia-webface.pt",
            use="optional identity network (facenet InceptionResnetV1, CASIA-WebFace)",
        ),
    ]
}

_VERIFIED: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256, per process


def torch_cache_dir() -> Path:
    """``$TORCH_HOME/checkpoints`` as torch hub and facenet-pytorch compute it (without importing torch)."""
    home = os.getenv("TORCH_HOME") or os.path.join(os.getenv("XDG_CACHE_HOME", "~/.cache"), "torch")
    return Path(os.path.expanduser(home)) / "checkpoints"


WEIGHTS_DIR_ENV = "G2G_WEIGHTS_DIR"  # a folder holding weight files by their own names (a machine without the packages)


def path_of(name: str) -> Path:
    """Where the file ``name`` is expected (not checked): ``$G2G_WEIGHTS_DIR/<file name>`` when that file exists
    (the GPU kit carries weights there; the sha256 check is the same), else inside its package or the cache."""
    w = _entry(name)
    override = os.environ.get(WEIGHTS_DIR_ENV)
    if override:
        candidate = Path(override) / (Path(w.relpath).name if w.package else w.cache_name)
        if candidate.is_file():
            return candidate
    if w.package:
        spec = find_spec(w.package)
        if spec is None or not spec.submodule_search_locations:
            raise WeightsError(f"{name}: package {w.package} is not installed ({w.use})")
        return Path(list(spec.submodule_search_locations)[0]) / w.relpath
    return torch_cache_dir() / w.cache_name


def verify(name: str, path: Path) -> Path:
    """Check ``path`` against the registry hash of ``name`` (cached per process by size and mtime)."""
    w = _entry(name)
    path = Path(path)
    try:
        st = path.stat()
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
        digest = _VERIFIED.get(key) or sha256_file(path)
    except OSError as e:
        raise WeightsError(f"{name}: cannot read {path} ({e.strerror or e})") from None
    if w.sha256 is None:
        if key not in _VERIFIED:
            warnings.warn(f"{name}: no published sha256 to check {path} against (its sha256 is {digest})", stacklevel=2)
    elif digest != w.sha256:
        raise WeightsError(
            f"{name}: {path} has sha256 {digest[:16]}..., expected {w.sha256[:16]}... "
            f"(corrupted or wrong file; {'reinstall the package' if w.package else 'delete it to download again'})"
        )
    _VERIFIED[key] = digest
    return path


DOWNLOAD_ENV = "G2G_ALLOW_DOWNLOAD"  # set to 1 (or pass --allow-download) to fetch optional weights


def downloads_allowed() -> bool:
    """Optional weights are fetched only when asked for: an offline machine gets one clear line, not a timeout."""
    return os.environ.get(DOWNLOAD_ENV, "").strip().lower() in ("1", "yes", "true")


def locate(name: str, download: bool | None = None) -> Path:
    """Path of the verified file ``name``; an optional file absent from the cache is downloaded when ``download``
    (default: :func:`downloads_allowed`)."""
    w = _entry(name)
    path = path_of(name)
    if not path.is_file():
        if w.url is None:
            raise WeightsError(f"{name}: {path} is missing ({w.use})")
        if not (downloads_allowed() if download is None else download):
            raise WeightsError(f"{name}: {path} is missing and downloads are off; pass --allow-download (or set "
                               f"{DOWNLOAD_ENV}=1) with a network, or fetch {w.url} there by hand")
        _download(w, path)
    return verify(name, path)


def verified_sha256(name: str, download: bool = False) -> str:
    """sha256 of the verified file ``name`` (recorded in exports so a model names its source weights); for a
    packed copy (:func:`read_packed`), the sha256 of the file it was made from."""
    packed = packed_path(name)
    if packed is not None:
        return _packed_meta(packed)["source_sha256"]
    path = locate(name, download=download)
    st = path.stat()
    return _VERIFIED[(str(path.resolve()), st.st_size, st.st_mtime_ns)]


# --- packed copies: a network's weights, reduced, for a machine that has no room for the original files -------------
PACKED_SUFFIX = ".packed.npz"
PACKED_DTYPES = ("float16", "int8")


def packed_path(name: str) -> Path | None:
    """``$G2G_WEIGHTS_DIR/<name>.packed.npz`` when it exists: a reduced copy of the network that the verified file
    ``name`` holds (bench/device_kit.py makes it, and checks what it carries by sha256), else None."""
    folder = os.environ.get(WEIGHTS_DIR_ENV)
    path = Path(folder) / f"{_entry(name).name}{PACKED_SUFFIX}" if folder else None
    return path if path is not None and path.is_file() else None


def pack_state(state: dict, name: str, dtype: str) -> dict:
    """npz members of a network's state dict (``{key: float32 array}``) stored as ``dtype``: float16, or int8 with
    one float32 scale per output channel (symmetric) for tensors of two or more dimensions and float32 for the rest.
    The ``__meta__`` member names the source file and its sha256."""
    import json

    import numpy as np

    if dtype not in PACKED_DTYPES:
        raise WeightsError(f"cannot pack weights as {dtype!r}; choose from {', '.join(PACKED_DTYPES)}")
    out: dict = {"__meta__": np.frombuffer(json.dumps({
        "source": name, "source_sha256": verified_sha256(name), "dtype": dtype, "keys": list(state)}).encode(), np.uint8)}
    for i, (key, value) in enumerate(state.items()):
        a = np.asarray(value, np.float32)
        if dtype == "int8" and a.ndim >= 2:
            scale = np.abs(a.reshape(len(a), -1)).max(1).clip(min=1e-12) / 127.0
            out[f"q{i}"] = np.clip(np.rint(a / scale.reshape(-1, *[1] * (a.ndim - 1))), -127, 127).astype(np.int8)
            out[f"s{i}"] = scale.astype(np.float32)
        else:  # biases and buffers: small, so int8 keeps them float32
            out[f"h{i}"] = a.astype(np.float16 if dtype == "float16" else np.float32)
    return out


def _packed_meta(path: Path) -> dict:
    import json

    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as z:
            return json.loads(z["__meta__"].tobytes())
    except (OSError, ValueError, KeyError) as e:
        raise WeightsError(f"{path} is not a packed weight file ({type(e).__name__})") from None


def read_packed(name: str) -> dict | None:
    """The state dict (``{key: float32 array}``) of the packed copy of ``name``, or None when there is none."""
    import numpy as np

    path = packed_path(name)
    if path is None:
        return None
    meta = _packed_meta(path)
    if meta.get("source") != name:
        raise WeightsError(f"{path} holds {meta.get('source')!r}, not {name!r}")
    state = {}
    with np.load(path, allow_pickle=False) as z:
        for i, key in enumerate(meta["keys"]):
            if f"q{i}" in z.files:
                q, s = z[f"q{i}"], z[f"s{i}"]
                state[key] = q.astype(np.float32) * s.reshape(-1, *[1] * (q.ndim - 1))
            else:
                state[key] = z[f"h{i}"].astype(np.float32)
    return state


def _download(w: WeightFile, path: Path, timeout: float = 30.0) -> None:
    """Fetch ``w.url`` to ``path`` atomically, hashing on the way (nothing is left behind on failure)."""
    assert w.url is not None
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    h = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as f, urllib.request.urlopen(w.url, timeout=timeout) as r:
            for block in iter(lambda: r.read(1 << 20), b""):
                f.write(block)
                h.update(block)
        if w.sha256 is not None and h.hexdigest() != w.sha256:
            Path(tmp).unlink(missing_ok=True)
            raise WeightsError(f"{w.name}: the download from {w.url} has sha256 {h.hexdigest()[:16]}..., "
                               f"expected {w.sha256[:16]}... (truncated or changed upstream); not kept")
        os.replace(tmp, path)
    except OSError as e:  # URLError, timeouts, disk errors
        Path(tmp).unlink(missing_ok=True)
        reason = getattr(e, "reason", None) or e
        raise WeightsError(
            f"{w.name}: not available offline: {path} is missing and downloading {w.url} failed ({reason}); "
            f"copy the file there by hand, or use the dlib identity network"
        ) from None


def _entry(name: str) -> WeightFile:
    if name not in REGISTRY:
        raise WeightsError(f"unknown model file {name!r}; known: {', '.join(REGISTRY)}")
    return REGISTRY[name]
