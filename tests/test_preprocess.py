"""One preprocessing for every verb: a crop reaches training and mix as the same tensor; bundles say theirs."""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import resum_bundle


def test_a_crop_reaches_training_and_mix_as_the_same_tensor(prepared_small):
    """64 px prepared crops read by a 32 px model: the funit loader, the appearance bank and mix --aligned agree."""
    from g2g.faces.masked_rest import _float
    from g2g.config import AlignConfig, MixConfig
    from g2g.mix.sources import Aligner
    from g2g.faces.preprocess import to_input
    from g2g.prepare import read_manifest
    from g2g.train.appearance_data import load_bank
    from g2g.train.dataset import load_image

    rec = read_manifest(prepared_small)[0]
    path = prepared_small / rec["output"]
    size = 32
    train_funit = load_image(path, size)[0].numpy()
    bank = load_bank(prepared_small, [str(rec["identity"])], size, 1.3)
    train_appearance = _float(bank.crops[bank.rels.index(rec["output"])])
    with ThreadPoolExecutor(1) as pool:
        mixer = SimpleNamespace(align=AlignConfig(size=size))
        src = Aligner(MixConfig(aligned=True), mixer, pool).run(prepared_small, [rec["output"]], False)[0]
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
