"""Building the network a training or distillation run optimises, from a config's ``model`` section.

A :class:`~zoo.train.config.ModelSpec` names either a registered model (``name``, built by its
card, optionally with the weights the zoo ships) or a family plus constructor arguments
(``family`` + ``kwargs``); :func:`build_model` turns either into a freshly initialised module.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import torch
from torch import nn

from zoo.errors import ZooError
from zoo.train.config import ModelSpec

def _family_class(family: str):
    """The nn.Module class of a model family: ``package.module:Class``, or a family name the registry
    knows (:func:`zoo.registry.family_class`: ``hinet``, ``hinet-lite``, ``mhnet``, ...)."""
    import importlib

    if ":" in family:
        module_name, _, class_name = family.partition(":")
        if not module_name.startswith("zoo."):
            raise ZooError(f"model.family {family!r} is outside the zoo package", "use zoo.models.MODULE:CLASS")
        try:
            return getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError) as err:
            raise ZooError(f"model.family {family!r} cannot be imported ({err})",
                           "check the module and class name") from err
    from zoo.registry import family_class

    return family_class(family)


def build_model(spec: ModelSpec, what: str = "model") -> tuple[nn.Module, int]:
    """A freshly initialised network from ``spec`` (plus ``spec.weights`` if set) and its size multiple.

    ``spec.weights`` may be a checkpoint path, ``shipped`` for the weights the zoo ships for this
    model, or ``shipped:OTHER`` for those of another model of the same architecture (e.g. a
    deblurring run started from ``shipped:mhnet-lite-derain``; works from an installed package).
    Initialisation draws from torch's global RNG (seed it first for a reproducible start).
    """
    from zoo.checkpoints import load_weights

    if spec.name:
        from zoo.registry import get_card

        card = get_card(spec.name)
        if card.zero_shot:
            raise ZooError(f"{spec.name} fits each image from scratch and cannot be trained", "pick a trainable model")
        model = card.builder()
        size_multiple = card.size_multiple
        weights = start_weights_file(spec, what)
    else:
        cls = _family_class(spec.family)
        try:
            model = cls(**spec.kwargs)
        except TypeError as err:
            raise ZooError(f"{what}.kwargs do not fit {cls.__name__}: {err}",
                           f"use the arguments of {cls.__name__}{inspect.signature(cls)}") from err
        size_multiple = int(getattr(model, "size_multiple", 1))
        weights = spec.weights
        if names_shipped(weights):
            raise ZooError(f"{what}.weights {weights!r} needs {what}.name", "pass a checkpoint path")
    if weights and spec.name:
        from zoo.registry import load_card_weights

        # An official checkpoint's unused keys are skipped (the card's checkpoint_ignore).
        load_card_weights(model, card, weights, reinit=tuple(spec.reinit))
    elif weights:
        load_weights(model, weights, reinit=tuple(spec.reinit))
    return model, size_multiple


def start_weights_file(spec: ModelSpec, what: str = "model") -> str | None:
    """The checkpoint file a run starts from (``shipped`` resolved to the zoo's file), or None;
    ``what`` names the config section in errors (``model``, ``distill.teacher``)."""
    if not spec.weights:
        return None
    if names_shipped(spec.weights) and spec.name:
        from zoo.registry import get_card

        return _shipped_weights(spec.weights, get_card(spec.name), what)
    return spec.weights


#: The file in a run folder that records the weights the run started from.
START_RECORD = "start.json"


def start_record(spec: ModelSpec) -> dict:
    """What a run starts from, for :data:`START_RECORD`: ``{"weights": path or None, "sha256",
    "metadata"}`` (the file's safetensors header, e.g. a shipped file's ``training`` text), so the
    provenance of weights survives a later change of the file behind ``shipped``."""
    from zoo.checkpoints import read_metadata
    from zoo.hashing import file_sha256

    path = start_weights_file(spec)
    if path is None or not Path(path).expanduser().is_file():
        return {"weights": path, "sha256": None, "metadata": {}}
    path = Path(path).expanduser()
    try:
        metadata = read_metadata(path) if path.suffix.lower() == ".safetensors" else {}
    except ZooError:
        metadata = {}
    return {"weights": str(path), "sha256": file_sha256(path), "metadata": metadata}


def names_shipped(weights: str | None) -> bool:
    """Whether ``model.weights`` names shipped weights (``shipped`` or ``shipped:OTHER``), not a file."""
    return weights is not None and weights.split(":", 1)[0] == "shipped"


def _shipped_weights(weights: str, card, what: str) -> str:
    """The file behind ``shipped`` (this card's weights) or ``shipped:OTHER`` (another card's)."""
    from zoo.registry import get_card

    source = card
    if weights != "shipped":
        other = weights.split(":", 1)[1].strip()
        if not other:
            raise ZooError(f"{what}.weights {weights!r} names no model", "write shipped:MODEL, e.g. shipped:hinet-lite")
        source = get_card(other)  # an architecture that differs fails the strict load, naming the keys
    if not source.has_weights:
        raise ZooError(f"{what}.weights is {weights!r} but the zoo ships no weights for {source.name}",
                       "pass a checkpoint path, or zoo list to see which models ship weights")
    return str(source.weights_path)
