"""Training recipes, one module each, and the registry that the trainer, ``--init-from`` and the exporter ask.

    recipe = recipe_for(model)   # model: a ModelConfig (a run's, a checkpoint's, a bundle's)
    gen = recipe.build(model)

:data:`RECIPES` holds each recipe under its name; ``g2g.config.RECIPE_OF_ENCODER``
names the recipe of every ``--identity-encoder``. The interface is
:class:`g2g.train.recipes.base.Recipe`; a new recipe is a module with one Recipe
subclass, its entry in RECIPES, and its identity encoders in RECIPE_OF_ENCODER.
"""

from __future__ import annotations

from g2g.config import IDENTITY_ENCODERS, RECIPE_OF_ENCODER, ModelConfig
from g2g.train import TrainError
from g2g.train.recipes.appearance import AppearanceRecipe
from g2g.train.recipes.base import Recipe
from g2g.train.recipes.funit import FunitRecipe

RECIPES: dict[str, Recipe] = {r.name: r for r in (FunitRecipe(), AppearanceRecipe())}


def recipe_for(model: ModelConfig) -> Recipe:
    """The recipe that trains, samples and exports ``model`` (picked by its identity encoder)."""
    recipe = RECIPES.get(RECIPE_OF_ENCODER.get(model.identity_encoder, ""))
    if recipe is None:
        raise TrainError(f"unknown identity encoder {model.identity_encoder!r}; "
                         f"choose from {', '.join(IDENTITY_ENCODERS)}")
    return recipe
