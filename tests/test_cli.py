"""The command line as a user meets it: choices in --help, grouped train options, exit statuses, one-line errors."""

from __future__ import annotations

import re
from pathlib import Path

from typer.testing import CliRunner

from conftest import cli_error
from g2g.cli import app
from g2g.config import IDENTITY_ENCODERS
from g2g.methods import METHODS

README = Path(__file__).resolve().parents[1] / "README.md"


def _help(*verb: str) -> str:
    res = CliRunner().invoke(app, [*verb, "--help"], env={"COLUMNS": "250"})
    assert res.exit_code == 0, res.output
    return res.output


def test_help_shows_choices_panels_and_plain_flags():
    mix = _help("mix")
    assert ", ".join(METHODS) in re.sub(r"-\s+", "-", " ".join(mix.split()))  # click wraps at a hyphen  # --method's choices (metavar METHOD), from the one list the mixers check
    strict = next(line for line in mix.splitlines() if "--strict" in line)
    assert "<bool>" not in strict  # a flag takes no value
    train = _help("train")
    assert ", ".join(IDENTITY_ENCODERS) in " ".join(train.split())  # the choices, in the help sentence
    assert "<hinge|nonsat>" in train and "<rmsprop|adam>" in train


def test_exit_statuses(tmp_path):
    runner = CliRunner()
    assert runner.invoke(app, ["--version"]).exit_code == 0
    res = runner.invoke(app, ["mix", str(tmp_path), str(tmp_path), "-o", str(tmp_path / "o"), "--method", "nope"])
    assert res.exit_code == 2 and "nope" in res.output  # typer refuses a value outside the choices
    cli_error(runner.invoke(app, ["mix", str(tmp_path / "none"), str(tmp_path), "-o", str(tmp_path / "o")]), 3,
              "is not a folder")
    cli_error(runner.invoke(app, ["mix", str(tmp_path), str(tmp_path), "-o", str(tmp_path / "o"), "--min-face", "5"]),
              2, "--min-face")  # mix now refuses what prepare refuses (MTCNN's 12 px window)


def test_readme_documents_every_exit_status():
    from g2g import errors

    text = README.read_text()
    table = text[text.index("## Exit status"):]
    for name in ("EXIT_OK", "EXIT_SKIPPED", "EXIT_USAGE", "EXIT_INPUT", "EXIT_INTERRUPTED"):
        assert re.search(rf"^\| {getattr(errors, name)} \|", table, re.M), name


def test_val_people_takes_a_count_or_a_fraction(tmp_path):
    from g2g.cli.train import _val_split
    from g2g.train.dataset import split_identities

    people = [f"p{i:02d}" for i in range(20)]
    assert _val_split("6") == {"val_people": 6} and _val_split("0.25") == {"val_fraction": 0.25, "val_people": 0}
    train, val = split_identities(people, **{"val_fraction": 0.1, **_val_split("6")}, seed=0)
    assert len(val) == 6 and not set(train) & set(val) and len(train) == 14
    assert len(split_identities(people, seed=0, **_val_split("0.25"))[1]) == 5
    res = CliRunner().invoke(app, ["train", str(tmp_path), "-o", str(tmp_path / "r"), "--val-people", "2.5"])
    cli_error(res, 2, "--val-people")
