"""`g2g VERB --help` reads at 80 columns: one short sentence per option, no choice list cut, a page at most."""

from __future__ import annotations

import re
from typing import Any, Literal, get_args, get_origin

import pytest
import typer
from typer.testing import CliRunner

from g2g.cli import app

MAX_HELP = 90  # characters of one option's help sentence
MAX_LINES = 60  # lines of a verb's whole --help at 80 columns
# train has an option per recipe field (the option names are the config's field names): two lines each at most
TRAIN_LINES = 130
COMMAND = typer.main.get_command(app)
VERBS = sorted(COMMAND.commands)  # type: ignore[attr-defined]
# a choice metavar such as <auto|model|past that the column cut before its closing bracket
CUT_CHOICES = re.compile(r"[<\[][^<>\[\]\s│]*\|[^<>\[\]\s│]*(?=[\s│]|$)")


def _choices(param: Any) -> tuple[str, ...]:
    """The choices of a Literal (or Optional[Literal]) option; () for any other."""
    annotation = getattr(getattr(param, "type_descriptor", None), "annotation", None)
    for a in (annotation, *get_args(annotation)):
        if get_origin(a) is Literal:
            return tuple(str(c) for c in get_args(a))
    return ()


def _render(*verb: str) -> str:
    res = CliRunner().invoke(app, [*verb, "--help"], env={"COLUMNS": "80", "TERM": "dumb"})
    assert res.exit_code == 0, res.output
    return res.output


def test_every_verb_is_covered():
    assert {"prepare", "train", "export", "mix", "eval", "demo"} <= set(VERBS)


@pytest.mark.parametrize("verb", ["", *VERBS])
def test_help_strings_are_one_short_sentence(verb):
    cmd = COMMAND.commands[verb] if verb else COMMAND  # type: ignore[attr-defined]
    long = {p.name: len(p.help) for p in cmd.params if len(getattr(p, "help", None) or "") > MAX_HELP}
    assert not long, f"help longer than {MAX_HELP} characters: {long}"
    assert f"docs/cli/{verb or 'README'}.md" in (cmd.help or ""), "the docstring names the verb's page"


@pytest.mark.parametrize("verb", ["", *VERBS])
def test_help_fits_80_columns_without_cut_choices(verb):
    text = _render(*([verb] if verb else []))
    lines = text.splitlines()
    assert all(len(line) <= 80 for line in lines)
    cut = [line for line in lines if CUT_CHOICES.search(line)]
    assert not cut, f"choice list cut at 80 columns: {cut}"
    cmd = COMMAND.commands[verb] if verb else COMMAND  # type: ignore[attr-defined]
    for p in cmd.params:  # every choice list is either shown whole or replaced by a short metavar
        if _choices(p) and p.metavar is None:
            assert "<" + "|".join(_choices(p)) + ">" in text, p.name
    assert len(lines) <= (TRAIN_LINES if verb == "train" else MAX_LINES), f"{len(lines)} lines of help"


def test_choices_are_read_from_the_options():
    params = {p.name: p for p in COMMAND.commands["prepare"].params}  # type: ignore[attr-defined]
    assert _choices(params["fmt"]) == ("png", "jpg") and _choices(params["size"]) == ()


def test_the_cut_check_catches_a_cut_choice_list():
    assert CUT_CHOICES.search("│    --method      <auto|model|past  auto (the model │")
    assert not CUT_CHOICES.search("│    --format      <png|jpg>  Crop format [default: png] │")
