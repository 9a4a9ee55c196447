"""Model registry: name -> builder, model card and weights.

Every module of the ``zoo.models`` package is a model family (shared modules excepted: ``blocks``
and names starting with ``_``); it registers its variants at import with
``register(ModelCard(...))``. The registry finds the family modules itself (:func:`family_modules`),
so a new family is one new file in ``zoo/models`` and nothing else. ``ZOO_EXTRA_FAMILIES`` (comma-
separated importable module names, e.g. ``my_lab.models.toynet``) adds families that live outside
the package; the contract tests use it to check that a new family gets them all.

``zoo list`` and ``zoo info`` read the cards; everything else builds models through
:func:`create_model` so that weights are always loaded the same way (strictly, safely).
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import os
import pkgutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

from zoo.errors import ZooError
from zoo.hashing import file_sha256
from zoo.tasks import get_task

#: Folder holding the weights that ship inside the package (safetensors).
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
#: Folder of measured-results files, one ``<model name>.yaml`` per model (a list under ``results``).
RESULTS_DIR = Path(__file__).resolve().parent / "cards"
#: Package whose modules are the model families.
MODELS_PACKAGE = "zoo.models"
#: Modules of :data:`MODELS_PACKAGE` that hold shared building blocks, not a family.
SHARED_MODULES = ("blocks",)
#: Environment variable naming extra family modules to import (comma-separated module names).
EXTRA_FAMILIES_ENV = "ZOO_EXTRA_FAMILIES"


@dataclass(frozen=True)
class ModelCard:
    """Everything the zoo knows about one model variant.

    ``builder`` returns a fresh ``torch.nn.Module`` in eval mode whose ``forward(x)`` maps a
    float32 NCHW RGB batch in [0, 1] to the restored batch (same size, or ``scale`` times larger).
    """

    name: str
    family: str
    #: A name or alias of :data:`zoo.tasks.TASKS`; :func:`register` stores the table's spelling.
    task: str
    variant: str
    summary: str
    builder: Callable[[], object]
    scale: int = 1
    size_multiple: int = 1
    #: Safetensors file under :data:`WEIGHTS_DIR`, or None when the zoo ships no weights.
    weights: str | None = None
    #: QAT int8 state the zoo ships, per quantization recipe: recipe name (``xnnpack``, ``coreml``,
    #: ``tflite``) -> safetensors file under :data:`WEIGHTS_DIR` written by ``zoo quantize MODEL
    #: --backend RECIPE --pack RUN_DIR`` (quantize/qat_state.py). ``zoo export --precision int8``
    #: to a target of that recipe rebuilds its int8 model from it instead of calibrating.
    qat_weights: Mapping[str, str] = field(default_factory=dict)
    #: Where official weights come from and their container format (for --weights).
    official_weights: str | None = None
    #: Default tile and overlap (pixels of the input) for tiled inference; tile None = no tiling.
    tile: int | None = 256
    overlap: int = 32
    #: Whether the model is a per-image optimisation (no trained weights, not exportable).
    zero_shot: bool = False
    #: Degradation the shipped weights were trained for (e.g. "gaussian:15-50" for a blind
    #: denoiser); calibration and QAT crops use it. None: the task's default degradation.
    training_degradation: str | None = None
    paper: str | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)
    #: Measured results, one dict per row (dataset, degradation, metric values, source).
    results: tuple[dict, ...] = field(default_factory=tuple)
    #: Measured rows per artifact (PSNR, drop, latency per host), the ``measured`` section of
    #: ``zoo/cards/<name>.yaml`` written by ``zoo report --update-cards`` (measure.measured).
    measured: tuple[dict, ...] = field(default_factory=tuple)
    #: The ``nn.Module`` class ``builder`` makes; None: found by building on the meta device
    #: when first asked (:func:`architecture_of`).
    architecture: type | None = None
    #: File in ``../shared/notes/official-checkpoints`` listing the official checkpoint's keys and
    #: shapes (``name<TAB>shape`` lines), e.g. ``HINet-SIDD-1x.txt``; None when there is none.
    official_layout: str | None = None
    #: fnmatch patterns of keys an official checkpoint holds that the forward never uses; they
    #: are dropped when loading (``zoo.checkpoints.load_weights(..., ignore=...)``).
    checkpoint_ignore: tuple[str, ...] = ()
    #: The int8 model must lower to ONE ExecuTorch XNNPACK partition with no operator outside
    #: (checked by the export matrix and the contract tests).
    single_int8_partition: bool = False

    @property
    def default_degradation(self) -> str:
        """The task's default evaluation degradation at this model's scale (``zoo.tasks``)."""
        return get_task(self.task).degradation(self.scale)

    @property
    def calibration_degradation(self) -> str:
        """Degradation of calibration / QAT crops: what the weights were trained for, else the
        task's default evaluation degradation."""
        return self.training_degradation or self.default_degradation

    @property
    def weights_path(self) -> Path | None:
        return WEIGHTS_DIR / self.weights if self.weights else None

    @property
    def has_weights(self) -> bool:
        return self.zero_shot or (self.weights_path is not None and self.weights_path.is_file())

    def qat_weights_path(self, recipe: str) -> Path | None:
        """The shipped QAT int8 state file for quantization ``recipe``, or None when the card
        lists none; a :class:`ZooError` when it lists one that is not installed."""
        name = self.qat_weights.get(recipe)
        if not name:
            return None
        path = WEIGHTS_DIR / name
        if not path.is_file():
            raise ZooError(f"{self.name}'s card lists the QAT int8 state {name} for {recipe}, but {path} is missing",
                           "reinstall the package (zoo/weights ships it), or pass --calibration to calibrate here")
        return path

    @property
    def shipped_qat_recipes(self) -> tuple[str, ...]:
        """Recipes whose QAT int8 state ships (the file is installed), sorted."""
        return tuple(sorted(recipe for recipe, name in self.qat_weights.items()
                            if name and (WEIGHTS_DIR / name).is_file()))

    @property
    def ships_trained_weights(self) -> bool:
        """True when the package holds trained weights for this card (zero-shot models need none)."""
        return self.has_weights and not self.zero_shot


_REGISTRY: dict[str, ModelCard] = {}
_ARCHITECTURES: dict[str, type] = {}
_loaded = False


def register(card: ModelCard) -> ModelCard:
    """Add a model card to the registry (called by the family modules at import).

    The task is stored as :mod:`zoo.tasks` spells it (an alias such as ``"sr"`` is accepted).
    """
    if card.name in _REGISTRY:
        raise ValueError(f"model {card.name!r} is registered twice")
    try:
        task = get_task(card.task)
    except ZooError:
        raise ValueError(f"model {card.name!r} has unknown task {card.task!r}") from None
    if task.name != card.task:
        card = dataclasses.replace(card, task=task.name)
    measured = _measured_results(card.name)
    if measured:
        card = dataclasses.replace(card, results=tuple(card.results) + measured)
    rows = _measured_results(card.name, key="measured")
    if rows:
        card = dataclasses.replace(card, measured=tuple(card.measured) + rows)
    _REGISTRY[card.name] = card
    return card


def _measured_results(name: str, key: str = "results") -> tuple[dict, ...]:
    """Rows under ``key`` of ``zoo/cards/<name>.yaml`` (measured PSNR, latency, ...), kept beside the code."""
    path = RESULTS_DIR / f"{name}.yaml"
    if not path.is_file():
        return ()
    import yaml

    return tuple(yaml.safe_load(path.read_text(encoding="utf-8")).get(key) or [])


def family_modules() -> list[str]:
    """Module names of the model families, in import order: every module of ``zoo.models``
    except the shared ones, then those named in ``$ZOO_EXTRA_FAMILIES``."""
    package = importlib.import_module(MODELS_PACKAGE)
    names = [f"{MODELS_PACKAGE}.{info.name}" for info in pkgutil.iter_modules(package.__path__)
             if not info.ispkg and info.name not in SHARED_MODULES and not info.name.startswith("_")]
    extra = [name.strip() for name in os.environ.get(EXTRA_FAMILIES_ENV, "").split(",") if name.strip()]
    return sorted(names) + [name for name in extra if name not in names]


def _load_families() -> None:
    """Import every family module once; a module that fails to import is a :class:`ZooError`
    naming it (a missing family must not just vanish from ``zoo list``)."""
    global _loaded
    if _loaded:
        return
    for module in family_modules():
        try:
            importlib.import_module(module)
        except Exception as err:
            raise ZooError(f"model family module {module} failed to import: {type(err).__name__}: {err}",
                           f"fix the module (python -c 'import {module}' shows the traceback)"
                           + (f" or drop it from ${EXTRA_FAMILIES_ENV}" if not module.startswith(MODELS_PACKAGE + ".")
                              else "")) from err
    _loaded = True


def list_models() -> list[ModelCard]:
    """All registered model cards, sorted by name."""
    _load_families()
    return [_REGISTRY[name] for name in sorted(_REGISTRY)]


def get_card(name: str) -> ModelCard:
    """The card of model ``name``; a :class:`ZooError` suggesting close names when unknown."""
    _load_families()
    if name in _REGISTRY:
        return _REGISTRY[name]
    close = difflib.get_close_matches(name, _REGISTRY, n=3)
    hint = f"did you mean {', '.join(close)}?" if close else "run `zoo list` to see the models"
    raise ZooError(f"unknown model {name!r}", hint)


def architecture_of(card: ModelCard) -> type:
    """The ``nn.Module`` class ``card.builder`` makes: ``card.architecture``, else the type of a
    model built once on the meta device (no memory for weights), cached per card."""
    if card.architecture is not None:
        return card.architecture
    if card.name not in _ARCHITECTURES:
        import torch

        try:
            with torch.device("meta"):
                _ARCHITECTURES[card.name] = type(card.builder())
        except (NotImplementedError, RuntimeError):  # a builder that needs real tensors
            _ARCHITECTURES[card.name] = type(card.builder())
    return _ARCHITECTURES[card.name]


def _module_family(cls: type) -> str:
    """``zoo.models.hinet_lite`` -> ``hinet-lite``: the family name of the module defining ``cls``."""
    return cls.__module__.rpartition(".")[2].replace("_", "-")


def family_class(family: str) -> type:
    """The ``nn.Module`` class of model family ``family``, to build it by name (training).

    ``family`` is the name of the module that defines the architecture, hyphenated
    (``hinet`` -> ``zoo.models.hinet.HINet``, ``hinet-lite`` -> ``zoo.models.hinet_lite.HINetLite``),
    or a card's ``family`` whose trainable cards all share one architecture. Per-image
    (zero-shot) models are not trainable and not looked at. :class:`ZooError` listing the valid
    names when there is no such family, and naming the ``module:Class`` choices when the name
    covers several architectures (``idsanet``, ``mhnet``).
    """
    cards = [card for card in list_models() if not card.zero_shot]

    def architectures(name: str) -> set[type]:
        # The module's name first, then a card family.
        found = {architecture_of(card) for card in cards if _module_family(architecture_of(card)) == name}
        return found or {architecture_of(card) for card in cards if card.family == name}

    classes = architectures(family)
    if len(classes) == 1:
        return classes.pop()
    names = sorted(name for name in {_module_family(architecture_of(card)) for card in cards}
                   | {card.family for card in cards} if len(architectures(name)) == 1)
    if classes:
        found = sorted(f"{cls.__module__}:{cls.__name__}" for cls in classes)
        raise ZooError(f"model family {family!r} has several architectures ({', '.join(found)})",
                       f"name one as module:Class, e.g. {found[0]}")
    raise ZooError(f"unknown model family {family!r}",
                   f"use one of {', '.join(names)}, or name a class as module:Class (e.g. zoo.models.mhnet:MHNetLite)")


def load_card_weights(model, card: ModelCard, weights, reinit: tuple[str, ...] = ()) -> None:
    """Load ``weights`` into ``model`` (in place) the way :func:`create_model` does: strictly and
    safely, without the keys ``card.checkpoint_ignore`` names (and keeping the fresh values of
    the model keys ``reinit`` patterns match, see :func:`zoo.checkpoints.load_weights`).

    ``weights`` is a checkpoint path (.safetensors or an official .pth) or an in-memory state
    dict / official container (``{'params': state_dict}`` ...), as ``zoo.checkpoints.load_weights`` reads.
    """
    from zoo.checkpoints import load_weights

    load_weights(model, weights, ignore=tuple(card.checkpoint_ignore or ()), reinit=tuple(reinit))


def create_model(name: str, weights: str | Path | None = None, *, untrained: bool = False,
                 offers_untrained: bool = True):
    """Build model ``name`` in eval mode with its weights; returns ``(model, card)``.

    Weights come from ``weights`` (a .safetensors or official .pth checkpoint, loaded strictly and
    safely), else from the weights the zoo ships. A model without weights is refused;
    ``untrained=True`` keeps the random initialisation (even where weights ship), which the
    caller must only use for pipeline or timing checks, never to present an output as a
    restoration (the model gets ``zoo_untrained = True``). ``offers_untrained=False``: the
    caller has no ``--untrained`` option (``zoo restore``), so the refusal does not suggest it.
    """
    card = get_card(name)
    if untrained and weights is not None:
        raise ZooError("--untrained and --weights contradict each other", "pass only one of them")
    model = card.builder()
    if card.zero_shot:
        if weights is not None:
            raise ZooError(f"{name} fits each image from scratch and takes no weights", "drop --weights")
    elif untrained:
        model.zoo_untrained = True
    elif weights is not None:
        load_card_weights(model, card, weights)
    elif card.weights_path is not None and card.weights_path.is_file():
        load_card_weights(model, card, card.weights_path)
    else:
        source = f" (official weights: {card.official_weights})" if card.official_weights else ""
        raise ZooError(
            f"the zoo ships no trained weights for {name}{source}",
            "pass --weights PATH to a checkpoint"
            + (", or --untrained for a pipeline/timing check only" if offers_untrained else ""),
        )
    return model.eval(), card


def weights_record(card, weights: str | os.PathLike | None, *, untrained: bool) -> dict:
    """Which float weights a model was built from: the manifest's ``model.weights`` (and the
    ``float_weights`` of a quantized model's sidecar, so ``zoo check`` can rebuild the float model).

    ``{"source": "file", "file": name, "sha256": hex}`` for ``weights`` (a checkpoint path),
    ``{"source": "untrained", ...None}`` for random weights (``untrained``), else the card's
    shipped file (``"source": "shipped"``).
    """
    if weights is not None:
        path = Path(weights)
        return {"source": "file", "file": path.name, "sha256": file_sha256(path)}
    if untrained:
        return {"source": "untrained", "file": None, "sha256": None}
    path = card.weights_path
    return {"source": "shipped", "file": path.name, "sha256": file_sha256(path)}
