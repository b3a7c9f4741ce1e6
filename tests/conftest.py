"""Shared fixtures: real faces from ../shared, prepared once per test session."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
WILD = SHARED / "faces" / "celeba-wild"
ALIGNED = SHARED / "faces" / "celeba-aligned"


def pytest_collection_modifyitems(config, items):
    """Deselect GPU tests where there is no CUDA device."""
    try:
        import torch

        has_gpu = torch.cuda.is_available()
    except Exception:
        has_gpu = False
    if has_gpu:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU; none here")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for training tests: on 2 shared cores, OpenMP threads of tiny convs spin against other
    processes (measured 5x slower per step with 2 threads than with 1 on a loaded machine)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def need_shared() -> Path:
    if not WILD.is_dir():
        pytest.skip(f"real test photos not found at {WILD} (../shared is absent)")
    return WILD


def pose_and_id_folders(root: Path, pose_people: list[Path], id_people: list[Path], per_id: int | list[int],
                        pattern: str = "*.jpg", last: bool = False) -> tuple[Path, Path]:
    """ROOT/poses: the first photo of each of ``pose_people`` (folders of one person's photos), named after its
    folder; ROOT/ids/<person>: ``per_id`` photos (a count, or one per person) of each of ``id_people``, the first
    ones (``last``: the last ones)."""
    poses, ids = root / "poses", root / "ids"
    poses.mkdir(parents=True)
    for d in pose_people:
        first = sorted(d.glob(pattern))[0]
        shutil.copy(first, poses / f"{d.name}{first.suffix}")
    counts = per_id if isinstance(per_id, list) else [per_id] * len(id_people)
    for d, k in zip(id_people, counts):
        (ids / d.name).mkdir(parents=True)
        photos = sorted(d.glob(pattern))
        for f in (photos[-k:] if last else photos[:k]):
            shutil.copy(f, ids / d.name / f.name)
    return poses, ids


def output_files(out: Path, skip: set[str]) -> dict[str, str]:
    """Every file under an output folder by its path -> its sha256 (the names in ``skip`` and run locks left out):
    what two runs that should write the same files are compared by."""
    import hashlib

    return {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in out.rglob("*")
            if p.is_file() and p.name not in skip and not p.name.startswith(".g2g-lock")}


def sorted_manifest(out: Path) -> list[str]:
    """OUT/manifest.jsonl's lines, sorted (a parallel run may write them in another order)."""
    return sorted(line for line in (out / "manifest.jsonl").read_text().splitlines() if line.strip())


def copy_subset(dst: Path, identities: int, per_identity: int, root: Path = WILD) -> Path:
    """Copy a few real photos into a temporary folder (never into the repository)."""
    ids = sorted(p for p in root.iterdir() if p.is_dir())[:identities]
    for d in ids:
        for f in sorted(d.glob("*.jpg"))[:per_identity]:
            (dst / d.name).mkdir(parents=True, exist_ok=True)
            shutil.copy(f, dst / d.name / f.name)
    return dst


@pytest.fixture(scope="session")
def raw_small(tmp_path_factory) -> Path:
    """6 identities x 6 unaligned real photos, in a temp folder."""
    need_shared()
    return copy_subset(tmp_path_factory.mktemp("raw"), identities=6, per_identity=6)


@pytest.fixture(scope="session")
def prepared_small(tmp_path_factory, raw_small) -> Path:
    """``g2g prepare`` output (64 px crops) of ``raw_small``: a DATA folder with manifest.jsonl."""
    from g2g.config import PrepareConfig
    from g2g.prepare import prepare_folder

    out = tmp_path_factory.mktemp("prepared")
    prepare_folder(raw_small, out, PrepareConfig(size=64), progress=False)
    return out


def celeba(identities: int, per_id: int) -> list[tuple[str, np.ndarray]]:
    """(person, RGB photo) of CelebA's aligned set in ../shared; skips where it is absent."""
    from PIL import Image

    if not ALIGNED.is_dir():
        pytest.skip(f"real test photos not found at {ALIGNED} (../shared is absent)")
    out = []
    for d in sorted(p for p in ALIGNED.iterdir() if p.is_dir())[:identities]:
        for f in sorted(d.glob("*.jpg"))[:per_id]:
            out.append((d.name, np.asarray(Image.open(f).convert("RGB"))))
    return out


def celeba_chips(n: int) -> list[np.ndarray]:
    """n real faces as dlib's 150 px chips: CelebA's aligned 218 x 178 photos, centre square, resized."""
    from PIL import Image

    chips = []
    for _, img in celeba(n, 1):
        h, w = img.shape[:2]
        top = (h - w) // 2
        chips.append(np.asarray(Image.fromarray(img[top : top + w]).resize((150, 150), Image.BILINEAR)))
    return chips


def dlib_descriptors(chips: list[np.ndarray]) -> np.ndarray:
    """dlib's own descriptors (dlib-bin) of 150 px chips: the reference every port of its network is held to."""
    from g2g import weights

    dlib = pytest.importorskip("dlib", reason="dlib (dlib-bin, a dev dependency) is not installed")
    model = dlib.face_recognition_model_v1(str(weights.locate("dlib-resnet")))
    return np.array([np.array(model.compute_face_descriptor(np.ascontiguousarray(c))) for c in chips])


def aligned_faces(n: int = 6, size: int = 64) -> np.ndarray:
    """n real aligned faces (N, S, S, 3) uint8 of different people (CelebA's aligned set, aligned again by g2g's
    template); skips where ../shared is absent."""
    need_shared()
    if not ALIGNED.is_dir():
        pytest.skip(f"{ALIGNED} not found")
    from PIL import Image

    from g2g.faces.align import align_face
    from g2g.config import AlignConfig
    from g2g.faces.detect import FaceDetector

    det = FaceDetector("cpu")
    out = []
    for d in sorted(p for p in ALIGNED.iterdir() if p.is_dir())[: 2 * n]:
        rgb = np.asarray(Image.open(sorted(d.glob("*.jpg"))[0]).convert("RGB"))
        faces = det.detect_batch([rgb])[0]
        if faces:
            out.append(align_face(rgb, max(faces, key=lambda f: f.score).landmarks, AlignConfig(size=size))[0])
        if len(out) == n:
            break
    return np.stack(out)


def cli_error(res, code: int, match: str = "") -> str:
    """The one-line error of a CliRunner result that must have failed with exit status ``code``."""
    lines = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert res.exit_code == code, (res.exit_code, res.output)
    assert len(lines) == 1 and "Traceback" not in res.output, res.output
    assert match in lines[0], (match, lines[0])
    return lines[0]


def crop_folders(tmp: Path, prepared: Path, n: int) -> tuple[Path, Path]:
    """tmp/poses and tmp/ids, each holding the first ``n`` crops of a prepare folder (for mix --aligned)."""
    crops = sorted(prepared.rglob("*.png"))[:n]
    folders = (tmp / "poses", tmp / "ids")
    for d in folders:
        d.mkdir()
        for f in crops:
            shutil.copy(f, d / f"{f.parent.name}_{f.name}")
    return folders


def resum_bundle(model_dir: Path, meta_text: str) -> None:
    """Rewrite a bundle's SHA256SUMS line for an edited g2g_model.json (what a determined hand edit would do)."""
    import hashlib

    from g2g.bundle import META_FILE, SUMS_FILE

    lines = [ln for ln in (model_dir / SUMS_FILE).read_text().splitlines() if not ln.endswith(META_FILE)]
    lines.append(f"{hashlib.sha256(meta_text.encode()).hexdigest()}  {META_FILE}")
    (model_dir / SUMS_FILE).write_text("\n".join(lines) + "\n")
