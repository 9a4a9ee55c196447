"""Model registry: name -> builder, model card and weights.

Each model family registers its variants from its own file in ``zoo/models`` with
:func:`register`. ``zoo list`` and ``zoo info`` read the cards; everything else builds models
through :func:`create_model` so that weights are always loaded the same way (strictly, safely).
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from zoo.errors import ZooError

#: Folder holding the weights that ship inside the package (safetensors).
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
#: Folder of measured-results files, one ``<model name>.yaml`` per model (a list under ``results``).
RESULTS_DIR = Path(__file__).resolve().parent / "cards"

#: Tasks a model can have; the degradation a task is evaluated with by default.
TASK_DEFAULT_DEGRADATION = {
    "denoise": "gaussian:25",
    "blind-denoise": "gaussian:25",
    "deblur": "motion-blur",
    "derain": "rain",
    "sr": "bicubic:x4",
}

# Model families whose modules register their variants when imported (one file per family).
_FAMILY_MODULES = ("zoo.models.hinet", "zoo.models.hinet_lite", "zoo.models.inr")


@dataclass(frozen=True)
class ModelCard:
    """Everything the zoo knows about one model variant.

    ``builder`` returns a fresh ``torch.nn.Module`` in eval mode whose ``forward(x)`` maps a
    float32 NCHW RGB batch in [0, 1] to the restored batch (same size, or ``scale`` times larger).
    """

    name: str
    family: str
    task: str
    variant: str
    summary: str
    builder: Callable[[], object]
    scale: int = 1
    size_multiple: int = 1
    #: Safetensors file under :data:`WEIGHTS_DIR`, or None when the zoo ships no weights.
    weights: str | None = None
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

    @property
    def default_degradation(self) -> str:
        if self.task == "sr":
            return f"bicubic:x{self.scale}"
        return TASK_DEFAULT_DEGRADATION[self.task]

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


_REGISTRY: dict[str, ModelCard] = {}
_loaded = False


def register(card: ModelCard) -> ModelCard:
    """Add a model card to the registry (called by the family modules at import)."""
    if card.name in _REGISTRY:
        raise ValueError(f"model {card.name!r} is registered twice")
    if card.task not in TASK_DEFAULT_DEGRADATION:
        raise ValueError(f"model {card.name!r} has unknown task {card.task!r}")
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


def _load_families() -> None:
    global _loaded
    if not _loaded:
        for module in _FAMILY_MODULES:
            importlib.import_module(module)
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


def create_model(name: str, weights: str | Path | None = None, *, untrained: bool = False):
    """Build model ``name`` in eval mode with its weights; returns ``(model, card)``.

    Weights come from ``weights`` (a .safetensors or official .pth checkpoint, loaded strictly and
    safely), else from the weights the zoo ships. A model without weights is refused;
    ``untrained=True`` keeps the random initialisation (even where weights ship), which the
    caller must only use for pipeline or timing checks, never to present an output as a
    restoration (the model gets ``zoo_untrained = True``).
    """
    from zoo.checkpoints import load_weights

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
        load_weights(model, weights)
    elif card.weights_path is not None and card.weights_path.is_file():
        load_weights(model, card.weights_path)
    else:
        source = f" (official weights: {card.official_weights})" if card.official_weights else ""
        raise ZooError(
            f"the zoo ships no trained weights for {name}{source}",
            "pass --weights PATH to a checkpoint, or --untrained for a pipeline/timing check only",
        )
    return model.eval(), card
