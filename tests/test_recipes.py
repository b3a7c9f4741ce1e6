"""g2g train's presets: a preset is the whole recipe, the default one is the shipped model's, an option given on the
command line replaces one field of it, option names are the config's field names, and docs/cli/train.md shows the
presets as they are."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from conftest import cli_error
from g2g.bundle import DEFAULT_MODEL_DIR
from g2g.cli import app
from g2g.config import (DEFAULT_PRESET, PRESET_ALIASES, PRESETS, RECIPE_FIELDS, ModelConfig, TrainConfig, from_dict,
                        get_preset)

DOC = Path(__file__).resolve().parents[1] / "docs" / "cli" / "train.md"


@pytest.fixture
def built(monkeypatch, tmp_path):
    """Run `g2g train DATA -o RUN ARGS` up to the library call and return the TrainConfig it would train (DATA: a
    prepare folder of 128 px crops at zoom 1.3, as `g2g prepare` writes by default)."""
    import g2g.train.trainer as trainer

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "prepare_config.json").write_text(json.dumps({"size": 128, "zoom": 1.3}))
    seen: list[TrainConfig] = []

    def fake_train(data, out, cfg, **kw):
        seen.append(cfg)
        raise typer.Exit(0)

    monkeypatch.setattr(trainer, "train", fake_train)

    def build(*args: str) -> TrainConfig:
        res = CliRunner().invoke(app, ["train", str(tmp_path / "data"), "-o", str(tmp_path / "run"), *args])
        assert res.exit_code == 0 and seen, res.output
        return seen.pop()

    return build


def _recipe(cfg: TrainConfig) -> dict:
    return {k: getattr(cfg, k) for k in RECIPE_FIELDS}


def test_no_options_train_the_shipped_models_recipe(built, tmp_path):
    """`g2g train DATA -o RUN` and build_config with no overrides are the recipe saved in the shipped model."""
    from g2g.train.trainer import build_config

    shipped = json.loads((DEFAULT_MODEL_DIR / "g2g_model.json").read_text())["train"]
    cfg = built()
    assert _recipe(cfg) == _recipe(from_dict(TrainConfig, shipped))  # a field newer than the bundle: its default
    assert cfg.model == from_dict(ModelConfig, shipped["model"])  # 64 px although DATA's crops are 128 px
    assert build_config(tmp_path / "data") == cfg == PRESETS[DEFAULT_PRESET].config(model={"zoom": 1.3})


def test_an_option_replaces_one_field_and_keeps_the_rest_of_the_preset(built):
    default = built()
    assert built("--gamma-cyc", "3") == dataclasses.replace(default, gamma_cyc=3.0)
    assert built("--gamma", "3") == built("--gamma-cyc", "3")  # the old short names still work
    assert built("--alpha", "0", "--delta", "2", "--zeta", "1") == dataclasses.replace(
        default, alpha_vgg=0.0, delta_id=2.0, zeta_dis=1.0)
    assert built("--lr", "1e-3", "--lr-dis", "5e-4") == dataclasses.replace(default, lr_gen=1e-3, lr_dis=5e-4)
    assert built("--size", "96").model == dataclasses.replace(default.model, image_size=96)
    assert built("--no-flip", "--erase-landmarks") == dataclasses.replace(default, flip=False, erase_landmarks=True)
    funit = built("--preset", "funit-tiny", "--optimizer", "adam")
    assert funit == dataclasses.replace(get_preset("funit-tiny").config(model={"zoom": 1.3}), optimizer="adam")
    assert (funit.gamma_cyc, funit.lambda_adv, funit.lr_gen, funit.model.image_size) == (10.0, 1.0, 1e-4, 64)
    for old, new in PRESET_ALIASES.items():
        assert built("--preset", old) == built("--preset", new)


def test_an_unknown_preset_is_one_line(tmp_path):
    res = CliRunner().invoke(app, ["train", str(tmp_path), "-o", str(tmp_path / "r"), "--preset", "huge"])
    cli_error(res, 2, "unknown preset 'huge'; choose from appearance")


def test_every_option_of_a_config_field_has_the_fields_name():
    command = typer.main.get_command(app).commands["train"]
    options = {p.name: p for p in command.params}
    for f in dataclasses.fields(TrainConfig):
        if f.name in ("model", "val_fraction"):  # --preset, --size, --identity-encoder; --val-people 0.1
            continue
        assert f.name in options, f"TrainConfig.{f.name} has no option"
        assert f"--{f.name.replace('_', '-')}" in options[f.name].opts, (f.name, options[f.name].opts)
    for p in get_preset(DEFAULT_PRESET).train:
        assert p in RECIPE_FIELDS
    for name, preset in PRESETS.items():
        assert set(preset.train) <= set(RECIPE_FIELDS), name  # a preset sets the recipe, never the run's own options
        preset.config()  # every model field it names is a ModelConfig field


def test_help_is_short_and_shows_the_default_recipe():
    command = typer.main.get_command(app).commands["train"]
    long = [(p.name, len(p.help)) for p in command.params if getattr(p, "help", None) and len(p.help) > 90]
    assert long == []
    res = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "80", "NO_COLOR": "1"})
    assert res.exit_code == 0
    assert max(len(line) for line in res.output.splitlines()) <= 80
    flat = re.sub(r"\s+", " ", res.output.replace("│", " "))
    assert "[default: appearance]" in flat  # --preset
    assert re.search(r"--lr-gen <float> Generator learning rate\. \[default: \(0\.0002\)\]", flat), flat
    assert re.search(r"--gamma-cyc <float> .*?\[default: \(1\)\]", flat)
    assert "--gamma " not in flat and "--alpha " not in flat  # the old names are hidden


def test_docs_page_shows_every_preset_and_every_option():
    from g2g.config import preset_tables

    text = DOC.read_text()
    assert preset_tables() in text  # the table is PRESETS, so the page cannot drift from it
    for name, preset in PRESETS.items():
        assert f"| `{name}` | {preset.summary} |" in text, name
    command = typer.main.get_command(app).commands["train"]
    options = [p.opts[-1] for p in command.params if isinstance(p, typer.core.TyperOption) and not p.hidden]
    assert "--gamma-cyc" in options and [o for o in options if f"**{o}" not in text] == []  # a paragraph each


def test_a_preset_trains_through_the_cli_and_resume_keeps_its_recipe(prepared_small, tmp_path, one_thread):
    """`--preset appearance-tiny --steps 2` end to end; a later `--resume --steps 3` without --preset goes on with
    the saved appearance-tiny recipe, not the default preset's, and says that a recipe option is not applied."""
    run = tmp_path / "run"
    args = ["train", str(prepared_small), "-o", str(run), "--workers", "0", "--val-people", "2"]
    res = CliRunner().invoke(app, [*args, "--preset", "appearance-tiny", "--steps", "2", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["step"] == 2 and (run / "checkpoints" / "last.pt").exists()
    saved = from_dict(TrainConfig, json.loads((run / "config.json").read_text())["train"])
    want = get_preset("appearance-tiny").config(model={"zoom": saved.model.zoom}, steps=2, workers=0, val_people=2)
    assert saved == want
    res = CliRunner().invoke(app, [*args, "--resume", "--steps", "3", "--gamma-cyc", "5", "--json"])
    assert res.exit_code == 0, res.output
    assert "saved recipe; not applied: --gamma-cyc" in res.output  # said, not silently dropped
    assert (json.loads(res.stdout)["step"], json.loads(res.stdout)["resumed_from"]) == (3, 2)
    again = from_dict(TrainConfig, json.loads((run / "config.json").read_text())["train"])
    assert again == dataclasses.replace(want, steps=3)
