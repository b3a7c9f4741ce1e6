"""Shared fixtures: real faces from ../shared, prepared once per test session."""

from __future__ import annotations

import shutil
from pathlib import Path

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
