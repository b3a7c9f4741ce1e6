"""The identity path that cannot be shortcut: masks, warps, expression, the appearance recipe end to end."""

from __future__ import annotations

import json

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from conftest import aligned_faces


def _faces(n: int = 6, size: int = 64) -> np.ndarray:
    return aligned_faces(n, size)


@pytest.fixture(scope="module")
def faces():
    from g2g.faces.landmarks import landmarks68

    crops = _faces()
    return crops, landmarks68(crops, 1.3)


def test_landmarks_follow_the_face(faces):
    crops, lm = faces
    from g2g.config import AlignConfig

    tpl = np.asarray(AlignConfig(size=64).template())
    eyes = np.stack([lm[:, 36:42].mean(1), lm[:, 42:48].mean(1)], 1)  # (N, 2, 2)
    assert np.abs(eyes - tpl[None, :2]).max() < 4.0  # the 68-point eyes sit where alignment put the 5-point eyes
    from g2g.faces.landmarks import flip68

    flipped = flip68(lm, 64)
    assert np.allclose(flip68(flipped, 64), lm)
    assert (flipped[:, 36, 0] > flipped[:, 45, 0]).sum() == 0  # the image-left eye stays image-left after a flip


def test_masked_rest_holds_nothing_of_the_hard_masked_pixels(faces):
    """With the mask on, E_A's output does not depend on pixels inside the hard mask (exactly)."""
    import torch

    from g2g.faces.masked_rest import rest_inputs
    from g2g.config import model_preset
    from g2g.faces.geometry import transfer_expression
    from g2g.train.appearance_model import RestEncoder

    crops, lm = faces
    geom = transfer_expression(lm[1], lm[0])
    content, mask, _ = rest_inputs(crops[0], lm[0], geom)
    changed = crops[0].copy()
    changed[mask >= 1.0] = np.random.default_rng(0).integers(0, 256, (int((mask >= 1.0).sum()), 3))
    content2, mask2, _ = rest_inputs(changed, lm[0], geom)
    assert (mask >= 1.0).mean() > 0.12  # the face interior, not a sliver
    assert np.array_equal(mask, mask2) and np.array_equal(content, content2)
    enc = RestEncoder(model_preset("appearance-tiny", image_size=64)).eval()
    with torch.no_grad():
        a = enc(torch.from_numpy(content[None]))
        b = enc(torch.from_numpy(content2[None]))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    # and the pixels outside the mask do reach it
    other = crops[0].copy()
    other[mask == 0] = 255 - other[mask == 0]
    assert not np.array_equal(rest_inputs(other, lm[0], geom)[0], content)


def test_warp_moves_landmarks_onto_their_targets(faces):
    from g2g.faces.geometry import warp_to
    from g2g.faces.landmarks import landmarks68

    crops, lm = faces
    assert np.abs(warp_to(crops[0], lm[0], lm[0]).astype(int) - crops[0]).max() <= 1  # identity warp
    moved = warp_to(crops[1], lm[1], lm[0])
    before = np.abs(lm[1] - lm[0]).mean()
    after = np.abs(landmarks68(moved, 1.3)[0] - lm[0]).mean()
    assert after < 0.6 * before  # the warped face now has (nearly) the target's landmarks


def test_expression_measure_zero_for_identical_and_large_for_an_open_mouth(faces):
    from g2g.eval.expression import expression_error
    from g2g.faces.geometry import warp_to
    from g2g.faces.landmarks import interocular68, landmarks68

    crops, lm = faces
    same = expression_error(landmarks68(crops[:1], 1.3), landmarks68(crops[:1].copy(), 1.3))
    assert np.all(same == 0)
    opened = lm[0].copy()
    iod = float(interocular68(lm[0]))
    opened[[56, 57, 58, 65, 66, 67], 1] += 0.25 * iod  # lower lip and chin side of the mouth drop
    opened[[5, 6, 7, 8, 9, 10, 11], 1] += 0.25 * iod
    assert np.isclose(expression_error(opened, lm[0])[0], 0.25, atol=1e-6)  # the measure itself, in IOD
    changed = warp_to(crops[0], lm[0], opened)  # the same change made to the photo, measured through dlib
    err = expression_error(landmarks68(changed, 1.3)[0], lm[0])
    assert err[0] > 0.02  # a warp opens the lips without a dark mouth interior: dlib sees part of it
    assert err[0] > 2 * err[2]  # and far more than the eyes, which did not change


def test_keep_mouth_brings_the_pose_mouth_opening_and_nothing_else(faces):
    from g2g.faces.geometry import inner_mouth_mask, warp_to, with_pose_mouth
    from g2g.faces.landmarks import interocular68

    crops, lm = faces
    opened = lm[0].copy()
    opened[[56, 57, 58, 65, 66, 67], 1] += 0.25 * float(interocular68(lm[0]))  # the pose opens its mouth
    pose = warp_to(crops[0], lm[0], opened)
    inside = inner_mouth_mask(opened, pose.shape[0])
    pose[inside > 0.5] = (20, 10, 10)  # ... showing its dark interior
    face = warp_to(crops[1], lm[1], opened)  # another person drawn on that geometry: lips apart, no interior
    out = with_pose_mouth(face, opened, pose, opened)
    assert np.array_equal(out[inside == 0], face[inside == 0])  # only the opening changes
    assert out[inside > 0.5].mean() < 0.5 * face[inside > 0.5].mean()  # and it is the pose's dark inside


def test_the_default_method_runs_every_fix_and_explicit_methods_none():
    from g2g.methods.compose import Fixes
    from g2g.errors import G2GError
    from g2g.methods import open_mixer

    auto = open_mixer("auto", None)
    assert auto.name == "expression-paste" and auto.fixes == Fixes()  # chosen by the held-out numbers (docs)
    assert open_mixer("auto", None, keep_mouth=False).fixes == Fixes.parse("default,-mouth")  # --no-keep-mouth
    assert open_mixer("expression-paste", None).fixes is None and not open_mixer("expression-paste", None).keep_mouth
    assert open_mixer("paste", None, keep_mouth=True).keep_mouth
    assert open_mixer("expression-paste", None, fixes="none").fixes is None  # "none" is the plain method
    shas = {open_mixer("auto", None).sha256, open_mixer("auto", None, keep_mouth=False).sha256,
            open_mixer("expression-paste", None).sha256, open_mixer("expression-paste", None, keep_mouth=True).sha256}
    assert len(shas) == 4  # resume tells them apart
    with pytest.raises(G2GError, match="applies to expression-paste"):
        open_mixer("paste", None, fixes="eyes")
    with pytest.raises(G2GError, match="not to a model"):  # refused before the bundle is read, never ignored
        open_mixer("auto", Path("some-model"), fixes="default,eyes")


def test_sampler_never_uses_the_target_as_its_identity_source(tmp_path, prepared_small):
    from g2g.train.appearance_data import AppearanceBatches, load_bank

    recs = [json.loads(line) for line in open(prepared_small / "manifest.jsonl")]
    assert all(len(r["crop_landmarks68"]) == 68 for r in recs if r["status"] == "ok")  # prepare stores the 68 points
    ids = sorted({r["identity"] for r in recs})
    bank = load_bank(prepared_small, ids, 32, 1.3, tmp_path / "lm.npz")
    assert not (tmp_path / "lm.npz").exists()  # nothing to compute: they came from the manifest
    old = tmp_path / "old"  # a DATA folder prepared before g2g stored them: computed once, cached
    old.mkdir()
    for r in recs:
        if r["status"] == "ok":
            (old / r["output"]).parent.mkdir(parents=True, exist_ok=True)
            (old / r["output"]).write_bytes((prepared_small / r["output"]).read_bytes())
    (old / "manifest.jsonl").write_text("".join(json.dumps({**r, "crop_landmarks68": None}) + "\n" for r in recs))
    bank_old = load_bank(old, ids, 32, 1.3, tmp_path / "lm.npz")
    assert (tmp_path / "lm.npz").is_file() and np.abs(bank_old.lm - bank.lm).max() < 0.1
    ds = AppearanceBatches(bank, 16, seed=0)
    for step in range(20):
        for x, y, z, _ in ds.plan(step):
            assert x != y and bank.person[x] == bank.person[y] and bank.person[z] != bank.person[x]
    again = AppearanceBatches(bank, 16, seed=0)  # a fresh sampler (a resumed run) draws the same step
    assert all(a[:3] == b[:3] and np.array_equal(a[3], b[3]) for a, b in zip(ds.plan(3), again.plan(3)))
    batch = ds[0]
    assert batch["rec_content"].shape == (16, 10, 32, 32) and batch["cyc_map"].shape == (16, 32, 32, 2)


def test_identity_loss_on_random_views_is_finite_with_a_gradient():
    import torch

    from g2g.train.appearance_step import random_view
    from g2g.train.identity_net import load_identity_net
    from g2g.train.losses import identity_distance

    net = load_identity_net("dlib", zoom=1.3)
    x = (torch.rand(2, 3, 64, 64) * 2 - 1).requires_grad_(True)
    target = net(torch.rand(2, 3, 64, 64) * 2 - 1).detach()
    loss = identity_distance(net(random_view(x, torch.Generator().manual_seed(0))), target)
    loss.backward()
    assert torch.isfinite(loss) and x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    a, b = random_view(x, torch.Generator().manual_seed(1)), random_view(x, torch.Generator().manual_seed(2))
    assert (a - b).abs().mean() > 1e-3  # each call is a different view


@pytest.mark.parametrize("encoder", ["appearance", "pooled", "dlib"])
def test_untrained_generator_is_its_base_and_gradients_reach_every_part(encoder):
    import torch

    from g2g.config import model_preset
    from g2g.train.appearance_model import AppearanceGenerator

    g = AppearanceGenerator(model_preset("appearance-tiny", identity_encoder=encoder))
    content, ident, base = torch.randn(2, 10, 32, 32), torch.randn(2, 3, 3, 32, 32), torch.rand(2, 3, 32, 32)
    if encoder == "dlib":
        ident = torch.randn(2, 3, 128)  # training reads the cached embeddings
    assert torch.equal(g(content, ident, base), base)  # zero-initialised head: the residual starts at 0
    with torch.no_grad():
        g.decoder.head.weight.normal_(0, 0.01)
    out = g(content, ident, base)
    (out - base).square().mean().backward()
    for name, p in g.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    first = g.class_encoder.heads.mlp[0] if encoder == "dlib" else g.class_encoder.net.stem[0]
    assert g.content_encoder.stem[0].weight.grad.abs().sum() > 0 and first.weight.grad.abs().sum() > 0


def test_paste_methods_change_only_the_face_and_follow_the_identity(tmp_path, faces):
    from PIL import Image

    from g2g.config import MixConfig
    from g2g.mix import mix_folders
    from g2g.methods.base import faces_of

    crops, _ = faces
    for i, c in enumerate(crops[:2]):
        Image.fromarray(c).save(tmp_path / f"pose{i}.png")
    (tmp_path / "ids").mkdir()
    for i, c in enumerate(crops[2:5]):
        Image.fromarray(c).save(tmp_path / "ids" / f"id{i}.png")
    poses = tmp_path / "poses"
    poses.mkdir()
    for f in tmp_path.glob("pose*.png"):
        f.rename(poses / f.name)
    for method in ("paste", "warp-paste"):
        out = tmp_path / method
        rep = mix_folders(poses, tmp_path / "ids", out, MixConfig(method=method, aligned=True, size=64, fmt="png"),
                          progress=False)
        assert rep.written == 6 and not rep.any_skips
        recs = [json.loads(line) for line in open(out / "manifest.jsonl")]
        img = {(r["pose"], r["identity"]): np.asarray(Image.open(out / r["output"])).astype(int) for r in recs}
        pose0 = crops[0].astype(int)
        mask = faces_of(crops[:1], 1.3)[1][0]
        for ident in ("id0", "id1", "id2"):
            diff = np.abs(img[("pose0.png", ident)] - pose0).sum(-1)
            assert diff[mask == 0].max() == 0  # outside the face mask, the pose crop exactly
            assert diff.mean() > 5  # the face changed
        between = np.abs(img[("pose0.png", "id0")] - img[("pose0.png", "id1")]).mean()
        assert between > 5  # another identity column, another face
    from g2g.config import EvalConfig
    from g2g.eval import evaluate

    rep = evaluate(tmp_path / "warp-paste", ["id-retrieval", "expression"], EvalConfig(baselines=True, max_pairs=50))
    base = rep.results["baselines"]
    assert set(base) == {"paste", "warp-paste", "expression-paste"} and base["paste"]["expression_error"] is not None
    # the warp-paste baseline on the run's own pairs is the run itself: the same numbers
    assert np.isclose(base["warp-paste"]["expression_error"], rep.results["expression"]["error"]["mean"], atol=1e-6)
    assert base["paste"]["expression_error"] > rep.results["expression"]["error"]["mean"]  # paste keeps the id's


def test_appearance_recipe_trains_exports_and_mixes(tmp_path, prepared_small, one_thread):
    """Tiny appearance run: losses finite, resume exact, export parity, mix output follows the identity."""
    from PIL import Image

    from g2g.config import MixConfig
    from g2g.export.onnx_export import export_bundle
    from g2g.mix import mix_folders
    from g2g.train.trainer import build_config, train

    cfg = build_config(prepared_small, preset="appearance-tiny", size=32, steps=3, batch_size=2, workers=0,
                       log_every=1, sample_every=3, checkpoint_every=2, optimizer="adam", lr_gen=1e-3,
                       gamma_cyc=1.0, delta_id=1.0, alpha_vgg=1.0, lambda_adv=1.0, val_fraction=0.34)
    seen: list[dict] = []
    r = train(prepared_small, tmp_path / "run", cfg, progress=False, on_step=lambda s, t: seen.append(t))
    assert r.step == 3 and all(np.isfinite(list(t.values())).all() for t in seen)
    assert {"self", "cyc", "vgg", "id", "adv", "dis"} <= set(seen[0])
    sheet = Image.open(tmp_path / "run" / "samples" / "step_00000003.png")
    assert sheet.size[1] >= 5 * 128  # five rows of at least 128 px cells
    rep = export_bundle(tmp_path / "run", tmp_path / "model", check_images=prepared_small, identity=False)
    assert all(rep.parity[k] <= rep.bounds[k] for k in rep.parity) and set(rep.parity) >= {"decoder", "mix"}
    meta = json.loads((tmp_path / "model" / "g2g_model.json").read_text())
    assert meta["model"]["identity_encoder"] == "appearance"
    rep16 = export_bundle(tmp_path / "run", tmp_path / "model16", fp16=True, check_images=prepared_small, identity=False)
    assert all(rep16.parity[k] <= rep16.bounds[k] for k in rep16.parity)  # fp16 weights, float32 inputs and outputs
    assert sum(rep16.sizes[f] for f in rep16.sizes if f.endswith(".onnx")) < 0.7 * sum(
        rep.sizes[f] for f in rep.sizes if f.endswith(".onnx"))
    from g2g.train.init_weights import load_init_weights

    init = load_init_weights(tmp_path / "model16")  # --init-from an appearance bundle maps its weights back
    assert init.model.identity_encoder == "appearance" and init.step == 3
    crops = [p for p in sorted(prepared_small.rglob("*.png"))]
    poses, ids = tmp_path / "poses", tmp_path / "ids"
    for folder, files in ((poses, crops[:1]), (ids, crops[-2:])):
        folder.mkdir()
        for f in files:
            (folder / f"{f.parent.name}_{f.name}").write_bytes(f.read_bytes())
    out = tmp_path / "mix"
    rep = mix_folders(poses, ids, out, MixConfig(aligned=True, fmt="png"), model_dir=tmp_path / "model",
                      progress=False)
    assert rep.written == 2
    recs = [json.loads(line) for line in open(out / "manifest.jsonl")]
    a, b = (np.asarray(Image.open(out / r["output"])).astype(int) for r in recs)
    assert np.abs(a - b).mean() > 1  # the identity input changes the output


def test_appearance_without_gan_term_builds_and_saves_no_discriminator(tmp_path, prepared_small, one_thread):
    """λ_g = 0 (the default model's recipe, and so the appearance presets'): no discriminator in memory or in
    checkpoints, and --resume still works."""
    from g2g.train.checkpoint import load_checkpoint
    from g2g.train.trainer import build_config, train

    cfg = build_config(prepared_small, preset="appearance-tiny", size=32, steps=2, batch_size=2, workers=0,
                       log_every=1, checkpoint_every=1, val_fraction=0.34)
    assert (cfg.lambda_adv, cfg.optimizer) == (0.0, "adam")
    train(prepared_small, tmp_path / "run", cfg, progress=False)
    state = load_checkpoint(tmp_path / "run")
    assert "discriminator" not in state and "opt_d" not in state and state["step"] == 2
    r = train(prepared_small, tmp_path / "run", replace(cfg, steps=3), resume=True, progress=False)
    assert (r.resumed_from, r.step) == (2, 3)


@pytest.mark.parametrize("encoder", ["pooled", "dlib"])
def test_pooled_identity_encoders_train_export_and_follow_the_code(tmp_path, prepared_small, one_thread, encoder):
    """The masked-rest recipe with a pooled identity code: trains, exports (fp16 parity, dlib inside the class
    encoder), maps back for --init-from, and its output moves with the identity input alone."""
    from g2g.bundle import open_bundle
    from g2g.export.onnx_export import export_bundle
    from g2g.train.init_weights import load_init_weights
    from g2g.train.trainer import build_config, train

    cfg = build_config(prepared_small, preset="appearance-tiny", size=32, identity_encoder=encoder, steps=2,
                       batch_size=2, workers=0, log_every=1, sample_every=2, checkpoint_every=2, optimizer="adam",
                       lr_gen=1e-3, gamma_cyc=1.0, delta_id=0.0, alpha_vgg=0.0, val_fraction=0.34)
    seen: list[dict] = []
    train(prepared_small, tmp_path / "run", cfg, progress=False, on_step=lambda s, t: seen.append(t))
    assert {"self", "cyc"} <= set(seen[0]) and all(np.isfinite(list(t.values())).all() for t in seen)
    if encoder == "dlib":  # the frozen embeddings were computed once and cached in the run
        assert (tmp_path / "run" / "cache" / "dlib_embeddings.npz").is_file()
    rep = export_bundle(tmp_path / "run", tmp_path / "model", fp16=True, check_images=prepared_small, identity=False)
    assert all(rep.parity[k] <= rep.bounds[k] for k in rep.parity) and set(rep.parity) >= {"class_encoder", "mix"}
    init = load_init_weights(tmp_path / "model")
    assert init.model.identity_encoder == encoder
    bundle = open_bundle(tmp_path / "model")
    s = bundle.size
    rng = np.random.default_rng(0)
    from g2g.faces.masked_rest import CONTENT_CHANNELS

    content = np.repeat(rng.uniform(-1, 1, (1, CONTENT_CHANNELS, s, s)).astype(np.float32), 2, 0)
    base = np.zeros((2, 3, s, s), np.float32)
    from PIL import Image

    from g2g.faces.preprocess import resize_to_model, to_input

    people = sorted(p for p in prepared_small.iterdir() if p.is_dir())
    crops = [np.asarray(Image.open(sorted(d.glob("*.png"))[0]).convert("RGB")) for d in people[:2]]
    ids = np.stack([to_input(resize_to_model(c, s)[None]) for c in crops])  # (2, 1, 3, S, S): two people
    a = bundle._run_all("class_encoder", {"images": ids})
    assert all(x.shape[2:] == (1, 1) for x in a)  # one pooled code per scale
    out = bundle.generate(content, ids, base)  # same rest, two identity inputs
    assert np.abs(out[0] - out[1]).max() > 0  # two steps from the zero head: the code already reaches the output


def test_shipped_model_is_an_appearance_bundle_that_follows_the_identity(faces):
    from g2g.bundle import open_bundle
    from g2g.methods import open_mixer

    bundle = open_bundle(None)  # verifies every file's sha256
    assert bundle.model.identity_encoder == "appearance" and bundle.meta["step"] > 0
    mixer = open_mixer("model", None)
    crops, _ = faces
    size = mixer.align.size
    import cv2

    crops = np.stack([cv2.resize(c, (size, size), interpolation=cv2.INTER_AREA) for c in crops])
    poses = mixer.encode_poses(crops[:1])
    idents = mixer.encode_identities([crops[1:2], crops[2:3]])
    out, masks = mixer.mix(poses * 2, idents)
    inside = masks[0] > 0.5
    assert np.abs(out[0].astype(int) - out[1].astype(int))[inside].mean() > 5  # another identity, another face
    assert np.array_equal(out[0][masks[0] == 0], crops[0][masks[0] == 0])  # nothing outside the mask changes


@pytest.mark.parametrize("method", ["auto", "model"])
def test_demo_faces_change_with_the_identity_column(tmp_path, method):
    import re

    from PIL import Image

    from g2g.demo import run_demo

    res = run_demo(tmp_path / "demo", progress=False, method=method)
    assert res.mixed and res.grid is not None and res.grid.is_file()
    changes = [float(m.group(1)) for n in res.notes if (m := re.search(r"([\d.]+)/255 mean change", n))]
    assert len(changes) == 4 and min(changes) > 5  # every pose row: another identity, another face
    with Image.open(res.grid) as im:
        assert im.size[0] >= 3 * 128  # cells of at least 128 px


def test_an_untrained_refiner_is_the_default_method_and_trains_with_the_gan_term(tmp_path, prepared_small, one_thread):
    """--base-fixes default: the decoder draws over the default method's composition, so before any update (lr 0)
    the exported model mixes as `g2g mix` without a model does, not as the plain warped paste; the refiner preset
    trains its GAN term on the mixed faces and records what it draws over in the bundle."""
    from PIL import Image

    from g2g.config import MixConfig
    from g2g.export.onnx_export import export_bundle
    from g2g.mix import mix_folders
    from g2g.train.trainer import build_config, train

    cfg = build_config(prepared_small, preset="appearance-tiny", size=64, base_fixes="default", residual_sigma=2.0,
                       steps=1, batch_size=2, workers=0, log_every=1, sample_every=1, checkpoint_every=1, lr_gen=0.0,
                       lambda_adv=1.0, val_fraction=0.34)
    assert cfg.model.base_fixes == "default"
    seen: list[dict] = []
    train(prepared_small, tmp_path / "run", cfg, progress=False, on_step=lambda s, t: seen.append(t))
    assert {"adv", "dis"} <= set(seen[0]) and np.isfinite(list(seen[0].values())).all()
    export_bundle(tmp_path / "run", tmp_path / "model", check_images=prepared_small, identity=False)
    bundle = json.loads((tmp_path / "model" / "g2g_model.json").read_text())["model"]
    assert (bundle["base_fixes"], bundle["residual_sigma"]) == ("default", 2.0)  # the export checked its ONNX parity
    crops = sorted(prepared_small.rglob("*.png"))
    poses, ids = tmp_path / "poses", tmp_path / "ids"
    for folder, files in ((poses, crops[:2]), (ids / "a", crops[-3:])):
        folder.mkdir(parents=True)
        for f in files:
            (folder / f"{f.parent.name}_{f.name}").write_bytes(f.read_bytes())

    def mixed(name: str, **kw) -> list[np.ndarray]:
        out = tmp_path / f"mix-{name}"
        mix_folders(poses, ids, out, MixConfig(aligned=True, fmt="png", **kw), progress=False,
                    model_dir=tmp_path / "model" if name == "model" else None)
        recs = sorted((json.loads(line) for line in open(out / "manifest.jsonl")), key=lambda r: r["pose"])
        return [np.asarray(Image.open(out / r["output"])).astype(int) for r in recs]

    model, default, plain = mixed("model", method="model"), mixed("default"), mixed("plain", fixes="none")
    near = [np.abs(m - d).mean() for m, d in zip(model, default)]
    far = [np.abs(m - p).mean() for m, p in zip(model, plain)]
    assert max(near) < 0.5 < min(far)  # rounding apart, the default method's faces
    from g2g.errors import G2GError

    with pytest.raises(G2GError, match="unknown fix"):
        build_config(prepared_small, preset="appearance-tiny", base_fixes="default,shine")


def test_a_detail_only_decoder_cannot_change_its_bases_tone_and_keeps_its_detail():
    """--residual-sigma: the decoder's residual loses its Gaussian low-pass, so a residual that would shift the
    face's tone (a constant, a slow gradient) leaves the base as it is, and a fine pattern still gets through."""
    import torch

    from g2g.config import model_preset
    from g2g.faces.masked_rest import CONTENT_CHANNELS
    from g2g.train.appearance_model import AppearanceGenerator, HighPass

    hp = HighPass(2.0)
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    ramp = (0.3 + xx / 64 + 0.5 * yy / 64).expand(1, 3, 64, 64)
    fine = ((xx + yy) % 2 * 2 - 1).expand(1, 3, 64, 64) * 0.2  # a one-pixel checkerboard
    assert hp(ramp)[..., 8:-8, 8:-8].abs().max() < 1e-4  # a tone ramp is removed inside (its edge: reflect padding)
    assert hp(torch.full((1, 3, 64, 64), 0.3)).abs().max() < 1e-5
    assert torch.allclose(hp(fine), fine, atol=0.02)
    torch.manual_seed(0)
    cfg = model_preset("appearance-tiny", image_size=64)
    content, identity = torch.rand(2, CONTENT_CHANNELS, 64, 64), torch.rand(2, 1, 3, 64, 64)
    base = torch.rand(2, 3, 64, 64) * 2 - 1
    for sigma, shifted in ((0.0, True), (2.0, False)):
        g = AppearanceGenerator(replace(cfg, residual_sigma=sigma)).eval()
        with torch.no_grad():
            g.decoder.head.bias.fill_(0.3)  # the residual a tone drift would be: +0.3 everywhere
            out = g(content, identity, base)
        assert torch.allclose(out, base + 0.3, atol=1e-5) is shifted
        assert torch.allclose(out, base, atol=1e-5) is not shifted



def test_a_residual_sigma_out_of_range_is_one_line_before_anything_is_written(tmp_path, prepared_small):
    from g2g.train import TrainError
    from g2g.train.trainer import build_config, train

    for sigma in (-1.0, 11.0):  # 11 px at 64 px: the blur's reach would pass the crop's edge
        cfg = build_config(prepared_small, preset="appearance-tiny", size=64, residual_sigma=sigma, workers=0)
        with pytest.raises(TrainError, match="--residual-sigma must be >= 0"):
            train(prepared_small, tmp_path / "run", cfg, progress=False)
        assert not (tmp_path / "run").exists()
