"""Quantization recipes, one per mobile backend: name -> module.

Every recipe module defines

* ``NAME`` and ``DESCRIPTION``;
* ``NUMERICS``: a JSON-ready dict saying how weights and activations are quantized;
* ``FOLD_QUANTIZE``: the ``convert_pt2e(fold_quantize=...)`` value its converter wants;
* ``unavailable_reason() -> str | None``: why the backend's quantizer cannot be used here
  (a missing package), or None;
* ``quantizer(is_qat: bool, mixed: MixedPrecision | None = None)``: a fresh PT2E quantizer
  for ``prepare_pt2e`` (PTQ) or ``prepare_qat_pt2e`` (QAT), leaving ``mixed`` in float.

Backend packages (executorch, coremltools, litert-torch) are imported inside those functions,
so ``import quantize`` needs torch only.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from quantize.recipes.mixed import FIRST, LAST, MixedPrecision
from zoo.errors import ZooError

#: Backend name -> module defining the recipe.
RECIPES = {
    "xnnpack": "quantize.recipes.xnnpack",
    "coreml": "quantize.recipes.coreml",
    "tflite": "quantize.recipes.tflite",
}

__all__ = ["RECIPES", "FIRST", "LAST", "MixedPrecision", "get_recipe", "require_recipe", "list_recipes"]


def list_recipes() -> list[str]:
    """The backend names, e.g. ``["xnnpack", "coreml", "tflite"]``."""
    return list(RECIPES)


def get_recipe(name: str | ModuleType) -> ModuleType:
    """The recipe module for backend ``name`` (a recipe module is returned as is).

    Raises :class:`ZooError` for an unknown name. Importing the module needs torch only; the
    backend is imported when :func:`quantizer` is called.
    """
    if isinstance(name, ModuleType):
        return name
    key = str(name).lower()
    if key not in RECIPES:
        raise ZooError(f"unknown quantization backend {name!r}", f"use one of {', '.join(RECIPES)}")
    return importlib.import_module(RECIPES[key])


def require_recipe(name: str | ModuleType) -> ModuleType:
    """Like :func:`get_recipe`, but raises :class:`ZooError` when the backend's packages are missing."""
    recipe = get_recipe(name)
    reason = recipe.unavailable_reason()
    if reason:
        raise ZooError(f"the {recipe.NAME} quantizer is unavailable: {reason}",
                       "pip install 'mobile-restoration-zoo[mobile]' (the mobile stack)")
    return recipe
