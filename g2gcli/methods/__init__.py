"""The mixing methods of ``g2g mix --method``, one module each, and the table that ``--method``, ``g2g eval
--baselines``, the demo and the docs read.

A method is a class with the :class:`g2g.methods.base.Mixer` interface. The
learned ``model`` method opens a bundle and runs the mixer of the recipe that
trained it (:data:`MODEL_MIXERS`). Modules are imported only when their method
is opened, so reading the table costs nothing. A new method is one module and
one :class:`Method` row.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from g2g.errors import G2GError


@dataclass(frozen=True)
class Method:
    name: str
    summary: str  # one line for --help and the docs
    target: str  # "module:Class" of the mixer
    baseline: bool = False  # needs no model: g2g eval --baselines scores it next to a model


TABLE: tuple[Method, ...] = (
    Method("model", "the network of --model (or the one that ships)", "g2g.methods.model:open_model"),
    Method("paste", "the identity photo's face, colour-matched, pasted through the face mask (expression: the "
           "identity photo's)", "g2g.methods.paste:PasteMixer", baseline=True),
    Method("warp-paste", "the paste, warped onto the pose's 68 landmarks first (identity weaker)",
           "g2g.methods.warp_paste:WarpPasteMixer", baseline=True),
    Method("expression-paste", "warped onto the identity's own face shape with the pose's expression",
           "g2g.methods.expression_paste:ExpressionPasteMixer", baseline=True),
)
REGISTRY: dict[str, Method] = {m.name: m for m in TABLE}
METHODS: tuple[str, ...] = ("auto", *REGISTRY)  # --method's choices
BASELINES: tuple[str, ...] = tuple(m.name for m in TABLE if m.baseline)
# ``auto``: the model when one is given (--model), else this with the default fixes of g2g.methods.compose: the method with
# the best held-out numbers (docs/realism.md). ``--method model`` runs the shipped model.
DEFAULT_METHOD = "expression-paste"
# the mixer of each training recipe (ModelConfig.recipe) for the ``model`` method
MODEL_MIXERS = {"funit": "g2g.methods.funit_mixer:FunitMixer", "appearance": "g2g.methods.appearance_mixer:AppearanceMixer"}


def markdown_table() -> str:
    """The methods as a markdown table (tests/test_readme.py keeps docs/cli/mix.md's copy equal to this)."""
    rows = [f"| `{m.name}` | {m.summary} | {'no' if m.baseline else 'yes'} | `{m.target}` |" for m in TABLE]
    auto = (f"| `auto` (default) | the model of --model when one is given, else `{DEFAULT_METHOD}` with the default "
            "fixes | — | — |")
    return "\n".join(["| method | what it does | model | module |", "|---|---|---|---|", auto, *rows])


def load(target: str) -> Any:
    """The object that ``"module:name"`` names."""
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)


def open_mixer(method: str, model_dir: Path | None, device: str = "auto", batch_size: int = 16,
               size: int | None = None, zoom: float | None = None, keep_mouth: bool | None = None,
               fixes: str | None = None) -> Any:
    """The mixer for ``--method``; ``model`` opens the bundle (default: the shipped one).

    ``fixes=None`` runs the default give-away removers of :mod:`g2g.methods.compose` for the default method only (``auto``
    without a model); an explicit ``--method`` is the plain method unless ``fixes`` says otherwise. ``keep_mouth``
    (the older, plain mouth rule) applies where no fixes run."""
    from g2g.methods.compose import Fixes
    from g2g.config import AlignConfig
    from g2g.faces.preprocess import DEFAULT_ZOOM

    if method not in METHODS:
        raise G2GError(f"--method must be one of {', '.join(METHODS)}, got {method!r}", usage=True)
    if fixes is None and method == "auto" and model_dir is None:  # the default fixes; --no-keep-mouth drops 'mouth'
        fixes, keep_mouth = ("default,-mouth" if keep_mouth is False else "default"), None
    keep_mouth = bool(keep_mouth)
    if method == "auto":
        method = "model" if model_dir is not None else DEFAULT_METHOD
    if method == "model":
        if fixes is not None:  # else --fixes would be dropped without a word
            raise G2GError("--fixes applies to expression-paste (the default method), not to a model: it draws over "
                           "the composition it was trained on (base_fixes in its g2g_model.json)", usage=True)
        return load(REGISTRY["model"].target)(model_dir, device=device, batch_size=batch_size, keep_mouth=keep_mouth)
    fx = Fixes.parse(fixes) if fixes is not None else None
    if fx is not None and fx != Fixes.none() and method != "expression-paste":
        raise G2GError(f"--fixes applies to expression-paste (the default method), not to {method}", usage=True)
    if fx is not None and keep_mouth:
        raise G2GError("--keep-mouth is the plain mouth rule: with --fixes, the 'mouth' fix keeps an open mouth",
                       usage=True)
    fx = None if fx == Fixes.none() else fx
    align = AlignConfig(size=size or 128, zoom=zoom or DEFAULT_ZOOM)
    return load(REGISTRY[method].target)(align, keep_mouth=keep_mouth, **({"fixes": fx} if fx is not None else {}))
