"""One preprocessing for every verb: a crop reaches training and mix as the same tensor; bundles say theirs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import crop_folders, resum_bundle


def test_a_crop_reaches_training_and_mix_as_the_same_tensor(prepared_small):
    """64 px prepared crops read by a 32 px model: the funit loader, the appearance bank and mix --aligned agree."""
    from g2g.appearance import _float
    from g2g.config import AlignConfig, MixConfig
    from g2g.mix import _Aligner
    from g2g.preprocess import to_input
    from g2g.prepare import read_manifest
    from g2g.train.appearance_data import load_bank
    from g2g.train.data import load_image

    rec = read_manifest(prepared_small)[0]
    path = prepared_small / rec["output"]
    size = 32
    train_funit = load_image(path, size)[0].numpy()
    bank = load_bank(prepared_small, [str(rec["identity"])], size, 1.3)
    train_appearance = _float(bank.crops[bank.rels.index(rec["output"])])
    with ThreadPoolExecutor(1) as pool:
        mixer = SimpleNamespace(align=AlignConfig(size=size))
        src = _Aligner(MixConfig(aligned=True), mixer, pool).run(prepared_small, [rec["output"]], False)[0]
    mix_input = to_input(src.crop[None])[0]
    assert train_funit.shape == (3, size, size)
    assert np.array_equal(train_funit, mix_input) and np.array_equal(train_appearance, mix_input)


def test_a_bundle_with_another_normalisation_is_refused(tmp_path):
    from g2g.bundle import META_FILE, BundleError, default_model_dir, open_bundle

    m = tmp_path / "model"
    shutil.copytree(default_model_dir(), m)
    meta = json.loads((m / META_FILE).read_text())
    assert meta["normalisation"]["range"] == [-1, 1]
    open_bundle(m)  # as shipped: opens
    meta["normalisation"] = {"mean": 0.0, "std": 1.0, "range": [0, 1], "channels": "RGB"}
    text = json.dumps(meta)
    (m / META_FILE).write_text(text)
    with pytest.raises(BundleError, match="SHA256SUMS"):  # an edited g2g_model.json is refused as such
        open_bundle(m)
    resum_bundle(m, text)  # even with its checksum redone, g2g will not feed a model another normalisation
    with pytest.raises(BundleError, match="normalisation"):
        open_bundle(m)


def test_mix_and_eval_import_no_torch(tmp_path, prepared_small):
    """mix of aligned crops and eval of its identity and expression run without torch (once dlib's network is in
    the user cache); importing the verbs imports none either."""
    code = "import sys, g2g.mix, g2g.eval, g2g.mixers, g2g.appearance; assert 'torch' not in sys.modules, 'torch'"
    subprocess.run([sys.executable, "-c", code], check=True)
    from g2g.identity import cached_identity_onnx

    cached_identity_onnx("dlib", 1.3, 64)  # the one export, done here
    crop_folders(tmp_path, prepared_small, 3)
    code = (
        "import sys\n"
        "from g2g.cli import main\n"
        f"sys.argv = ['g2g', 'mix', '{tmp_path / 'poses'}', '{tmp_path / 'ids'}', '-o', '{tmp_path / 'out'}',"
        " '--method', 'paste', '--aligned', '--size', '64']\n"
        "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        f"sys.argv = ['g2g', 'eval', '{tmp_path / 'out'}', '--metric', 'id-retrieval,expression', '--device', 'cpu']\n"
        "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
