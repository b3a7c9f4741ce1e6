"""g2g train: networks, losses, perceptual net, data, cross training on real faces, resume, DDP, CLI.

Everything uses the funit-tiny preset on 32-64 px crops so the file runs on 2 CPU cores.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from g2g.config import AlignConfig, TrainConfig, model_preset
from g2g.train import losses as L
from g2g.train.dataset import (PairBatches, fixed_val_pairs, landmark_mask, load_items, split_identities)
from g2g.train.model import Generator, PatchDiscriminator
from g2g.train.recipes.funit import CrossForward
from g2g.train.trainer import TrainError, train

REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_cfg(size: int = 64, **kw) -> TrainConfig:
    base = dict(steps=6, batch_size=2, log_every=1, sample_every=1000, checkpoint_every=1000, workers=0, device="cpu")
    base.update(kw)
    return TrainConfig(model=model_preset("funit-tiny", image_size=size), **base)


def template_landmarks(n: int, size: int) -> torch.Tensor:
    return torch.tensor(AlignConfig(size=size).template(), dtype=torch.float32)[None].repeat(n, 1, 1)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory, prepared_small) -> Path:
    """A fixed tiny DATA folder: 2 identities x 2 crops copied from ``prepared_small``."""
    by_id = load_items(prepared_small)
    out = tmp_path_factory.mktemp("tiny_data")
    lines = []
    for identity in list(by_id)[:2]:
        for item in by_id[identity][:2]:
            (out / item.rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(prepared_small / item.rel, out / item.rel)
            lines.append({"status": "ok", "identity": identity, "output": item.rel,
                          "crop_landmarks": [list(p) for p in item.landmarks]})
    (out / "manifest.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    shutil.copy(prepared_small / "prepare_config.json", out / "prepare_config.json")
    return out


# --- networks --------------------------------------------------------------------------------------------------------


def test_cross_forward_shapes_and_every_parameter_gets_a_gradient():
    cfg = model_preset("funit-tiny")
    torch.manual_seed(0)
    gen, dis = Generator(cfg), PatchDiscriminator(cfg)
    a_k, b_k = torch.rand(2, 2, 3, 64, 64) * 2 - 1, torch.rand(2, 2, 3, 64, 64) * 2 - 1  # K = 2
    lm = template_landmarks(2, 64)
    assert gen.content_encoder(a_k[:, 0]).shape == (2, cfg.content_channels, 8, 8)
    assert gen.encode_class(a_k).shape == (2, cfg.class_code)
    out = CrossForward(gen, erase=True)(a_k, b_k, lm, lm)
    for k in ("mixed", "self", "recon"):
        assert out[k].shape == (4, 3, 64, 64)
        assert torch.isfinite(out[k]).all() and out[k].abs().max() <= 1
    logits = dis(torch.cat([out["mixed"], a_k[:, 0]]))
    assert logits.shape[:2] == (6, 1) and torch.isfinite(logits).all()
    target = torch.rand(4, 3, 64, 64) * 2 - 1
    loss = sum((out[k] - target).abs().mean() for k in out) + logits.mean()
    loss.backward()
    for name, p in [*gen.named_parameters(prefix="gen"), *dis.named_parameters(prefix="dis")]:
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        if p.dim() > 1:  # weights (biases right before an instance norm get ~0 by construction)
            assert p.grad.abs().sum() > 0, name


def test_every_identity_encoder_has_a_recipe_and_an_unknown_one_is_one_line():
    from g2g.config import IDENTITY_ENCODERS
    from g2g.train.recipes import RECIPES, recipe_for

    assert {recipe_for(model_preset("funit-tiny", identity_encoder=e)).name for e in IDENTITY_ENCODERS} == set(RECIPES)
    assert recipe_for(model_preset("funit-tiny")).name == "funit"
    assert recipe_for(model_preset("appearance-tiny", identity_encoder="dlib")).name == "appearance"
    with pytest.raises(TrainError, match="unknown identity encoder 'nope'; choose from funit"):
        recipe_for(model_preset("funit-tiny", identity_encoder="nope"))


# --- losses ----------------------------------------------------------------------------------------------------------


def test_gan_losses_on_known_values():
    real, fake = torch.tensor([2.0, 0.5, -1.0]), torch.tensor([-2.0, 0.0, 1.0])
    l_real, l_fake = L.d_gan_loss(real, fake, "hinge")
    assert l_real.item() == pytest.approx((0 + 0.5 + 2) / 3)
    assert l_fake.item() == pytest.approx((0 + 1 + 2) / 3)
    assert L.g_gan_loss(fake, "hinge").item() == pytest.approx(1 / 3)
    z = torch.zeros(4)
    assert [v.item() for v in L.d_gan_loss(z, z, "nonsat")] == pytest.approx([np.log(2)] * 2)
    assert L.g_gan_loss(torch.full((2,), 10.0), "nonsat").item() == pytest.approx(np.log1p(np.exp(-10)), rel=1e-4)
    assert L.discriminator_loss(torch.tensor(0.8), torch.tensor(1.0), 0.2).item() == pytest.approx(0.18)
    with pytest.raises(ValueError):
        L.g_gan_loss(fake, "wgan")


def test_identity_distance_is_euclidean_with_finite_gradient():
    e1 = torch.zeros(2, 128, requires_grad=True)
    e2 = torch.zeros(2, 128)
    e2[0, :2] = torch.tensor([3.0, 4.0])
    d = L.identity_distance(e1, e2)
    assert d.item() == pytest.approx((5.0 + 0.0) / 2, abs=1e-3)
    d.backward()
    assert torch.isfinite(e1.grad).all()  # coinciding embeddings (row 1) included
    assert L.l1(torch.ones(3), torch.zeros(3)).item() == 1.0


def test_identity_weight_schedules():
    c = TrainConfig(delta_id=2.0, steps=1000)
    assert L.id_weight(0, c) == L.id_weight(999, c) == 2.0
    lin = replace(c, id_schedule="linear", id_start=0.0, delta_id=1.0, id_warmup=100)
    assert [L.id_weight(s, lin) for s in (0, 50, 100, 500)] == pytest.approx([0.0, 0.5, 1.0, 1.0])
    lin_run = replace(lin, id_warmup=0)  # ramp over the whole run
    assert L.id_weight(250, lin_run) == pytest.approx(0.25)
    st = replace(c, id_schedule="step", id_start=0.5, delta_id=2.5, id_step_every=10, id_step_count=4)
    assert [L.id_weight(s, st) for s in (0, 9, 10, 25, 39, 40, 10_000)] == pytest.approx([0.5, 0.5, 1.0, 1.5, 2.0, 2.5, 2.5])
    with pytest.raises(ValueError):
        L.id_weight(0, replace(c, id_schedule="cosine"))


# --- perceptual ------------------------------------------------------------------------------------------------------


def _crops(data: Path, n: int) -> tuple[torch.Tensor, list[str]]:
    from g2g.train.dataset import load_image

    by_id = load_items(data)
    items = [by_id[i][0] for i in list(by_id)[:n]]
    return torch.stack([load_image(data / it.rel, 64)[0] for it in items]), [it.identity for it in items]


def test_stlpips_matches_the_package_and_ranks_real_faces(prepared_small):
    from g2g.train.perceptual import load_perceptual

    net = load_perceptual("stlpips")
    x, _ = _crops(prepared_small, 3)
    shifted = torch.roll(x, shifts=2, dims=-1)  # a 2 px shift of the same faces
    other = x.roll(1, dims=0)  # other people
    d_same, d_shift, d_other = net(x, x), net(x, shifted), net(x, other)
    assert torch.allclose(d_same, torch.zeros(3), atol=1e-6)
    assert (d_shift < d_other).all(), (d_shift, d_other)
    try:  # the package's own class (imports IPython/torchsummary, so only here)
        from stlpips_pytorch import stlpips
    except Exception as e:  # pragma: no cover
        pytest.skip(f"stlpips_pytorch.stlpips not importable: {e}")
    ref = stlpips.LPIPS(net="vgg", variant="shift_tolerant", verbose=False).eval()
    with torch.no_grad():
        assert torch.allclose(net(x, other), ref(x, other).flatten(), rtol=1e-4, atol=1e-6)


def test_vgg19_without_weights_is_one_clear_line(monkeypatch, tmp_path):
    from g2g.train import perceptual

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*a, **k):
        raise OSError("network unreachable")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    for allowed in ("", "1"):  # downloads off (the default), and allowed on a machine without a network
        monkeypatch.setenv("G2G_ALLOW_DOWNLOAD", allowed)
        with pytest.raises(perceptual.PerceptualWeightsError) as e:
            perceptual.load_perceptual("vgg19")
        msg = str(e.value)
        assert "\n" not in msg and "stlpips" in msg and str(tmp_path) in msg


# --- data ------------------------------------------------------------------------------------------------------------


def test_identity_split_pairs_and_kshot(prepared_small):
    by_id = load_items(prepared_small)
    ids = list(by_id)
    train_ids, val_ids = split_identities(ids, 0.2, seed=3)
    assert set(train_ids).isdisjoint(val_ids) and sorted(train_ids + val_ids) == sorted(ids)
    assert len(val_ids) >= 1 and len(train_ids) >= 2
    assert split_identities(ids, 0.2, seed=3) == (train_ids, val_ids)
    ds = PairBatches(prepared_small, by_id, train_ids, batch_size=5, k_shot=3, size=48, seed=1)
    groups, _ = ds.plan(7)
    for ga, gb in groups:
        assert len(ga) == len(gb) == 3
        assert {g.identity for g in ga} == {ga[0].identity} and {g.identity for g in gb} == {gb[0].identity}
        assert ga[0].identity != gb[0].identity and ga[0].identity in train_ids
    assert [g[0][0].rel for g in ds.plan(7)[0]] == [g[0][0].rel for g in groups]  # a pure function of the step
    other_rank = PairBatches(prepared_small, by_id, train_ids, 5, 3, 48, seed=1, rank=1)
    assert [g[0][0].rel for g in other_rank.plan(7)[0]] != [g[0][0].rel for g in groups]
    batch = ds[7]
    assert batch["a_k"].shape == (5, 3, 3, 48, 48) and batch["lm_b"].shape == (5, 5, 2)
    assert batch["a_k"].min() >= -1 and batch["a_k"].max() <= 1
    pairs = fixed_val_pairs(by_id, val_ids, train_ids, 4, seed=0)
    assert all(a != b for a, b in pairs)


def test_landmark_mask_covers_eyes_nose_mouth_only():
    lm = template_landmarks(1, 64)
    m = landmark_mask(lm, 64)
    assert m.shape == (1, 1, 64, 64)
    for x, y in lm[0].round().long().tolist():
        assert m[0, 0, y, x] == 1
    assert 0.05 < m.mean() < 0.4
    assert m[0, 0, :6].sum() == 0 and m[0, 0, :, :4].sum() == 0  # hair/background untouched


# --- training --------------------------------------------------------------------------------------------------------


def test_train_on_real_faces(prepared_small, tmp_path):
    """All losses (ST-LPIPS, real dlib identity net, hinge GAN, erasing, K=2) finite; run folder complete."""
    from g2g.train.checkpoint import load_checkpoint, load_generator

    run = tmp_path / "run"
    cfg = tiny_cfg(steps=12, k_shot=2, erase_landmarks=True, sample_every=6, checkpoint_every=6, seed=5)
    seen: list[dict] = []
    res = train(prepared_small, run, cfg, progress=False, on_step=lambda s, t: seen.append(t))
    assert res.step == 12 and not res.interrupted and res.images_per_s > 0
    assert len(seen) == 12
    for t in seen:
        for k in ("vgg", "cyc", "self", "adv", "id", "gen", "d_real", "d_fake", "dis"):
            assert np.isfinite(t[k]), (k, t)
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == list(range(1, 13)) and all(x["delta"] == 1.0 for x in lines)
    assert "val_cyc" in lines[5] and lines[0]["images_per_s"] > 0
    split = json.loads((run / "split.json").read_text())
    assert set(split["train"]).isdisjoint(split["val"])
    assert json.loads((run / "config.json").read_text())["train"]["k_shot"] == 2
    from PIL import Image

    with Image.open(run / "samples" / "step_00000012.png") as im:
        w, h = im.size
    assert h > 3 * 96 and w > 8 * 96  # 3 rows x (4 pairs x 2) columns
    assert (run / "losses.png").stat().st_size > 10_000
    assert (run / "checkpoints" / "step_00000006.pt").exists()
    state = load_checkpoint(run)
    assert state["step"] == 12
    gen, mcfg, _ = load_generator(run / "checkpoints" / "last.pt")
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    assert torch.isfinite(gen.mix(x, x)).all() and mcfg.image_size == 64


def test_overfit_cycle_loss_falls(tiny_data, tmp_path):
    """On 2 people x 2 crops, the cycle loss falls clearly (generator can learn the cross-training task)."""
    cfg = tiny_cfg(size=32, steps=100, alpha_vgg=0.0, delta_id=0.0, optimizer="adam", lr_gen=1e-3, lr_dis=1e-3,
                   log_every=10)
    cyc: list[float] = []
    train(tiny_data, tmp_path / "run", cfg, progress=False, on_step=lambda s, t: cyc.append(t["cyc"]))
    first, last = np.mean(cyc[:10]), np.mean(cyc[-10:])
    assert last < 0.6 * first, (first, last)


def test_tensorboard_log_holds_each_loss_and_the_sample_sheets(tiny_data, tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard is an optional extra (g2g[tensorboard])")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = tiny_cfg(size=32, steps=2, alpha_vgg=0.0, delta_id=0.0, sample_every=2, tensorboard=True)
    train(tiny_data, tmp_path / "run", cfg, progress=False)
    logs = EventAccumulator(str(tmp_path / "run" / "tensorboard")).Reload()
    assert [e.step for e in logs.Scalars("loss/cyc")] == [1, 2]
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert np.isclose(logs.Scalars("loss/cyc")[-1].value, metrics[-1]["cyc"], rtol=1e-5)
    assert [e.step for e in logs.Images("samples")] == [2]


@pytest.mark.parametrize("discriminator", ["patch", "projected"])
def test_ctrl_c_then_resume_matches_uninterrupted_run(tiny_data, tmp_path, discriminator):
    """6 steps straight == 3 steps, Ctrl-C (checkpoint), resume for 3 (CPU, fixed seed): same losses, with either
    discriminator (the projected one's checkpoint holds its heads and spectral-norm state, not its frozen trunk)."""
    cfg = tiny_cfg(size=32, steps=6, alpha_vgg=1.0, gan_loss="nonsat", optimizer="adam",
                   id_schedule="linear", id_start=0.2, delta_id=1.0, seed=11, discriminator=discriminator)
    straight: list[dict] = []
    train(tiny_data, tmp_path / "a", cfg, progress=False, on_step=lambda s, t: straight.append(t))

    first: list[dict] = []

    def interrupt_at_3(step, terms):
        first.append(terms)
        if step == 3:
            os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C: handled after the step

    r1 = train(tiny_data, tmp_path / "b", cfg, progress=False, on_step=interrupt_at_3)
    assert r1.interrupted and r1.step == 3 and r1.checkpoint.exists()
    with pytest.raises(TrainError, match="--resume"):
        train(tiny_data, tmp_path / "b", cfg, progress=False)
    second: list[dict] = []
    r2 = train(tiny_data, tmp_path / "b", cfg, resume=True, progress=False, on_step=lambda s, t: second.append(t))
    assert r2.resumed_from == 3 and r2.step == 6 and not r2.interrupted
    resumed = first + second
    assert len(resumed) == len(straight) == 6
    for s, r in zip(straight, resumed):
        for k in s:
            assert r[k] == pytest.approx(s[k], rel=1e-6, abs=1e-7), k
    steps = [json.loads(x)["step"] for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_max_minutes_stops_with_a_checkpoint_and_a_sheet_and_resume_goes_on(tiny_data, tmp_path):
    """--max-minutes (a time-limited job): the step it stops after is checkpointed and drawn, exit as done."""
    cfg = tiny_cfg(size=32, steps=5, max_minutes=1e-6, log_every=4)  # the deadline passes during the first step
    r = train(tiny_data, tmp_path / "run", cfg, progress=False)
    assert r.time_limited and not r.interrupted and r.step == 1
    assert r.checkpoint.name == "step_00000001.pt" and (tmp_path / "run" / "samples" / "step_00000001.png").is_file()
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1]
    # workers=0: batches are made in this process, so part of the time is spent waiting for them, and said
    assert 0 < lines[0]["data_wait"] < 1 and 0 < r.data_wait < 1
    r2 = train(tiny_data, tmp_path / "run", tiny_cfg(size=32, steps=3), resume=True, progress=False)
    assert (r2.resumed_from, r2.step, r2.time_limited) == (1, 3, False)
    with pytest.raises(TrainError, match="--max-minutes"):
        train(tiny_data, tmp_path / "other", tiny_cfg(size=32, max_minutes=-1), progress=False)


def test_torchrun_two_processes_on_cpu(tiny_data, tmp_path):
    from g2g.train.checkpoint import load_checkpoint, load_generator

    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "g2g", "train", str(tiny_data), "-o", str(run), "--preset", "funit-tiny", "--size", "32", "--steps", "3",
           "--batch-size", "2", "--alpha-vgg", "0", "--delta-id", "0", "--workers", "0", "--device", "cpu",
           "--log-every", "1", "--checkpoint-every", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    assert json.loads((run / "config.json").read_text())["world_size"] == 2
    assert load_checkpoint(run)["step"] == 3 and load_checkpoint(run)["data"]["world_size"] == 2
    assert (run / "checkpoints" / "step_00000002.pt").exists()
    gen, _, _ = load_generator(run)
    assert torch.isfinite(gen.mix(torch.zeros(1, 3, 32, 32), torch.zeros(1, 3, 32, 32))).all()
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 3


def test_cli_train_and_one_line_errors(tiny_data, tmp_path):
    from typer.testing import CliRunner

    from conftest import cli_error
    from g2g.cli import app

    run = tmp_path / "run"
    args = ["train", str(tiny_data), "-o", str(run), "--preset", "funit-tiny", "--size", "32", "--steps", "2",
            "--batch-size", "2", "--alpha-vgg", "0", "--delta-id", "0", "--workers", "0", "--log-every", "1"]
    r = CliRunner().invoke(app, args + ["--json"])
    assert r.exit_code == 0, r.output
    assert (run / "checkpoints" / "last.pt").exists()
    assert json.loads(r.stdout)["step"] == 2 and not json.loads(r.stdout)["interrupted"]
    # not a terminal: plain progress lines (the first step at once, then every 30 s and the last), step and ETA first
    lines = [line for line in r.output.splitlines() if line.startswith("train: ")]
    assert [line.split(",")[0] for line in lines] == ["train: 1/2 steps", "train: 2/2 steps"], r.output
    assert all("ETA" in line and "img/s" in line and "self " in line for line in lines)
    r = CliRunner().invoke(app, args)  # same folder again without --resume
    cli_error(r, 3, "--resume")
    from g2g.train.checkpoint import load_checkpoint

    short = tmp_path / "short"
    assert args[8:10] == ["--steps", "2"]
    r = CliRunner().invoke(app, [*args[:3], str(short), *args[4:8], "--steps", "3", *args[10:], "--max-minutes", "1e-6"])
    assert r.exit_code == 0 and load_checkpoint(short)["step"] == 1, r.output  # the time limit stops it at step 1
    r = CliRunner().invoke(app, ["train", str(tiny_data), "-o", str(short), "--resume", "--workers", "0", "--json",
                                 "--max-minutes", "0.5"])  # bounded: a wrong total would run on to the limit
    assert r.exit_code == 0 and json.loads(r.stdout)["step"] == 3, r.output  # the run's own 3 steps, not 100,000
    r = CliRunner().invoke(app, ["train", str(tmp_path / "nowhere"), "-o", str(tmp_path / "r2")])
    cli_error(r, 3, "manifest.jsonl")
    r = CliRunner().invoke(app, ["train", str(tiny_data), "-o", str(tmp_path / "r3"), "--preset", "funit-tiny", "--gan-loss", "wgan"])
    assert r.exit_code == 2 and "--gan-loss" in r.output and "Traceback" not in r.output  # typer: not a choice


def test_sigterm_checkpoints_and_exits_130(tiny_data, tmp_path):
    """What a scheduler or `timeout` sends: the step finishes, a checkpoint is written, the exit status says so."""
    import time

    run = tmp_path / "run"
    cmd = [sys.executable, "-c", "from g2g.cli import main; main()", "train", str(tiny_data), "-o", str(run),
           "--preset", "funit-tiny", "--size", "32", "--steps", "100000", "--batch-size", "2", "--alpha-vgg", "0", "--delta-id", "0",
           "--workers", "0", "--log-every", "1", "--checkpoint-every", "100000"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 120
    while not (run / "metrics.jsonl").is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, proc.stderr.read()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    ckpts = sorted((run / "checkpoints").glob("step_*.pt"))
    assert ckpts and int(ckpts[-1].stem.split("_")[1]) >= 1  # the interrupted step's checkpoint, not the 100000th


@pytest.mark.parametrize("option", [("--lr", "nan"), ("--lr", "-1"), ("--lr-gen", "inf"), ("--delta-id", "inf"),
                                    ("--alpha-vgg", "nan"), ("--zeta-dis", "-inf"), ("--gamma", "nan")])  # old name
def test_non_finite_or_negative_numbers_are_usage_errors_before_anything_is_written(tiny_data, tmp_path, option):
    from typer.testing import CliRunner

    from conftest import cli_error
    from g2g.cli import app

    run = tmp_path / "run"
    r = CliRunner().invoke(app, ["train", str(tiny_data), "-o", str(run), "--preset", "funit-tiny", "--size", "32",
                                 "--steps", "1", "--workers", "0", *option])
    cli_error(r, 2, "")
    assert not run.exists()  # refused before the run folder is made


def test_a_loss_that_turns_non_finite_stops_the_run_and_keeps_the_last_good_checkpoint(tiny_data, tmp_path,
                                                                                        monkeypatch):
    """From step 3 on the generator's loss is NaN (an exploding run): the run stops with one line before that update,
    step 2's checkpoint is the last one, and its weights are finite."""
    from g2g.train import TrainError
    from g2g.train.checkpoint import load_generator
    from g2g.train.recipes.funit import FunitRecipe

    real = FunitRecipe.generator_losses

    def exploding(self, trainer, batch, step):
        total, terms, extra = real(self, trainer, batch, step)
        if step >= 2:
            terms["cyc"] = terms["cyc"] * float("nan")
            total = total + terms["cyc"]
        return total, terms, extra

    monkeypatch.setattr(FunitRecipe, "generator_losses", exploding)
    run = tmp_path / "run"
    with pytest.raises(TrainError, match=r"step 3: the loss became non-finite \(cyc\)"):
        train(tiny_data, run, tiny_cfg(size=32, steps=5, alpha_vgg=0.0, delta_id=0.0, checkpoint_every=1),
              progress=False)
    assert sorted(p.name for p in (run / "checkpoints").glob("step_*.pt")) == ["step_00000001.pt", "step_00000002.pt"]
    gen, _, state = load_generator(run)
    assert state["step"] == 2 and all(torch.isfinite(p).all() for p in gen.parameters())


def test_crops_missing_or_damaged_on_disk_are_left_out_and_counted(prepared_small, tmp_path):
    from g2g.train.dataset import load_items

    data = tmp_path / "data"
    shutil.copytree(prepared_small, data)
    before = sum(len(v) for v in load_items(data).values())
    crops = sorted(data.rglob("*.png"))
    crops = [c for c in crops if c.name != "preview.png"]
    crops[0].unlink()
    crops[1].write_bytes(crops[1].read_bytes()[:100])  # truncated
    notes: list[str] = []
    after = sum(len(v) for v in load_items(data, notes).values())
    assert after == before - 2
    assert len(notes) == 1 and "1 crop(s) damaged and 1 crop(s) missing on disk" in notes[0], notes
