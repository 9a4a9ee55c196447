"""``zoo check FILE.pt2``: a quantized PT2E model checked like an exported artifact.

A ``.pt2`` written by ``zoo quantize`` (``quantize.ptq.save_quantized``) or by a QAT run
(``runs/<run>/quantized.pt2``) is the converted graph: int8 weights and quantize/dequantize operators
around the recipe's int8 operators. Run in PyTorch it simulates the int8 numerics of the recipe's
quantizer (XNNPACK, Core ML or LiteRT: scales, zero points, rounding, which layers stay float), not
a device runtime's kernels. On Linux it is the only measurement of the Core ML recipe, whose
artifacts (``.mlpackage``, Core ML-delegated ``.pte``) only predict on macOS.

:func:`describe_quantized_model` reads the sidecar (cheap: no graph) into the manifest-shaped dict
``zoo check`` reads of an artifact: ``model`` (name, the float weights it was made from, see
:func:`recorded_float_weights`), ``artifact`` (file, sha256, bytes, format ``pt2``), ``target``
``pt2e-<recipe>``, ``precision`` int8, ``quantization`` (the sidecar, which holds the provenance
record), ``tiling`` (tile = the graph's fixed input size, overlap = the card's as ``zoo export``
records it) and ``backend`` (the simulation's runtime label). :func:`load_quantized_model` loads
the graph into an :class:`export_mobile.runners.LoadedArtifact`, so images are restored by the same
tiling code as an artifact.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NoReturn

from zoo.errors import ZooError

__all__ = ["SUFFIX", "TARGET_PREFIX", "is_quantized_model_file", "simulation_runtime_name", "recorded_float_weights",
           "describe_quantized_model", "load_quantized_model", "simulation_runtime", "results_name"]

#: File suffix of a saved quantized model.
SUFFIX = ".pt2"
#: ``artifact.target`` of a results record of a .pt2: ``pt2e-xnnpack``, ``pt2e-coreml``, ``pt2e-tflite``.
TARGET_PREFIX = "pt2e-"
#: Fix offered when a file is not a quantized zoo model.
_QUANTIZED_FIX = "pass a .pt2 written by zoo quantize or a QAT run (runs/RUN/quantized.pt2), with its .json sidecar"


def is_quantized_model_file(location: str | Path) -> bool:
    """Whether ``location`` names a saved quantized model (a ``.pt2`` file) rather than an export."""
    return Path(location).suffix == SUFFIX


def simulation_runtime_name(recipe: str) -> str:
    """``"pytorch pt2e int8 simulation (coreml quantizer numerics)"``: what runs a .pt2 in a check."""
    return f"pytorch pt2e int8 simulation ({recipe} quantizer numerics)"


def results_name(path: str | Path) -> str:
    """The file name a check's default results file is named after: the .pt2's, with the run
    folder in front for a QAT run's generic ``quantized.pt2`` (two runs must not share one file)."""
    from quantize.qat_phase import QUANTIZED_MODEL

    path = Path(path)
    return f"{path.parent.name}_{path.name}" if path.name == QUANTIZED_MODEL and path.parent.name else path.name


def _is_shipped_path(text: str, card) -> bool:
    """Whether a recorded weights path is the card's shipped file (here, or in another checkout:
    ``.../zoo/weights/<file>``)."""
    shipped = card.weights_path
    if shipped is None:
        return False
    recorded = Path(text)
    return recorded.parts[-3:] == ("zoo", "weights", shipped.name) or recorded.resolve() == shipped.resolve()


def _qat_run_start_weights(path: Path, card) -> dict:
    """The weights a QAT run started from, read from its ``config.json`` beside ``quantized.pt2``."""
    config_file = path.parent / "config.json"
    try:
        model = json.loads(config_file.read_text(encoding="utf-8")).get("model") or {}
    except (OSError, ValueError, AttributeError):
        return {"source": "unknown", "file": None, "sha256": None,
                "how": f"a QAT run whose config.json is not beside {path.name}"}
    start = model.get("weights")
    how = f"the weights the QAT run started from ({config_file})"
    if model.get("name") != card.name:
        return {"source": "unknown", "file": None, "sha256": None, "how": f"a QAT run of {model.get('name')!r}"}
    if start is None:
        return {"source": "untrained", "file": None, "sha256": None, "how": how}
    if start == "shipped":
        return {"source": "shipped", "file": card.weights_path.name if card.weights_path else None, "sha256": None,
                "how": how}
    return {"source": "file", "file": Path(start).name, "path": str(start), "sha256": None, "how": how}


def recorded_float_weights(sidecar: dict, path: str | Path, card) -> dict:
    """Which float weights the quantized model at ``path`` was made from, as a manifest's
    ``model.weights``: ``{"source": "shipped" | "file" | "untrained" | "unknown", "file", "sha256"}``,
    plus ``path`` (the recorded path of a file) and ``how`` (where this was read).

    In order: the sidecar's ``float_weights`` (written by ``zoo quantize`` since it exists, with
    the sha256); a QAT run's start weights (its ``config.json``, ``model.weights``); the sidecar's
    ``weights`` text (untrained, the shipped file, or another file's path).
    """
    path = Path(path)
    recorded = sidecar.get("float_weights")
    text = sidecar.get("weights")
    if isinstance(recorded, dict) and recorded.get("source"):
        entry = dict(recorded, how="the sidecar's float_weights")
        if entry["source"] == "file" and isinstance(text, str):
            entry["path"] = text
        return entry
    if not isinstance(text, str) or not text:
        return {"source": "unknown", "file": None, "sha256": None, "how": "a sidecar without weights"}
    if text.startswith("untrained"):
        return {"source": "untrained", "file": None, "sha256": None, "how": "the sidecar's weights"}
    if text.startswith("QAT run "):  # the training engine's QAT phase: "QAT run DIR at iteration N (...)"
        return _qat_run_start_weights(path, card)
    if _is_shipped_path(text, card):
        return {"source": "shipped", "file": card.weights_path.name, "sha256": None, "how": "the sidecar's weights"}
    return {"source": "file", "file": Path(text).name, "path": text, "sha256": None, "how": "the sidecar's weights"}


def _refuse(path: Path, problem: str, fix: str = _QUANTIZED_FIX) -> NoReturn:
    raise ZooError(f"{path.name}: {problem}", fix)


def describe_quantized_model(location: str | Path) -> dict:
    """The manifest-shaped description (module docstring) of the quantized model ``location``,
    from its sidecar; the graph is not loaded.

    Raises :class:`ZooError` (one line, with the fix) for: a missing file or sidecar, a sidecar
    that is not a zoo quantized-model sidecar or records no PTQ/QAT method or input size, a model
    this zoo does not know, an input size off the model's size multiple, another scale than the model's.
    """
    from export_mobile.api import resolve_overlap
    from export_mobile.manifest import sha256_of
    from quantize.ptq import read_sidecar, sidecar_path
    from zoo.registry import get_card
    from zoo.tiling import plan_tiles

    path = Path(location)
    if not path.is_file():
        raise ZooError(f"quantized model {path} does not exist",
                       "check the path (zoo quantize -o DIR writes DIR/MODEL_BACKEND_METHOD.pt2, a QAT run "
                       "RUN/quantized.pt2)")
    sidecar = read_sidecar(path)
    sidecar_name = sidecar_path(path).name
    if sidecar.get("method") not in ("ptq", "qat"):
        _refuse(path, f"its sidecar {sidecar_name} records no PTQ/QAT method (method {sidecar.get('method')!r}): "
                      "not a quantized zoo model")
    model_name = sidecar.get("model")
    try:
        card = get_card(str(model_name))
    except ZooError as err:
        raise ZooError(f"{sidecar_name} names the model {model_name!r}, which this zoo does not know ({err.problem})",
                       "check it with the zoo that made it (zoo list shows this zoo's models), or name the "
                       "model the weights belong to in the sidecar's \"model\"") from None
    recipe = sidecar.get("recipe") or sidecar.get("backend")
    if not recipe:
        _refuse(path, f"its sidecar {sidecar_name} records no recipe (backend)")
    shape = sidecar.get("input_shape")
    if not (isinstance(shape, list) and len(shape) == 3 and all(isinstance(v, int) and v > 0 for v in shape)
            and shape[1] == shape[2]):
        _refuse(path, f"its sidecar {sidecar_name} records no square input shape [3, tile, tile] (got {shape!r})")
    tile = int(shape[2])
    if tile % card.size_multiple:
        _refuse(path, f"its tile {tile} is not a multiple of {card.name}'s size multiple {card.size_multiple}",
                f"quantize {card.name} again with a --tile that is a multiple of {card.size_multiple}")
    if int(sidecar.get("scale", card.scale)) != card.scale:
        _refuse(path, f"it upscales x{sidecar['scale']} but {card.name} is x{card.scale}",
                f"name the model it was quantized from in {sidecar_name}")
    overlap = resolve_overlap(tile, card.size_multiple, None, card.overlap)  # what zoo export records
    plan = plan_tiles(tile, tile, tile=tile, overlap=overlap, size_multiple=card.size_multiple)
    digest, method, size = sha256_of(path)
    numerics = sidecar.get("numerics") or {}
    return {
        "model": {"name": card.name, "task": card.task, "scale": int(card.scale),
                  "weights": recorded_float_weights(sidecar, path, card)},
        "artifact": {"file": path.name, "format": "pt2", "bytes": int(size), "sha256": digest, "sha256_method": method},
        "target": f"{TARGET_PREFIX}{recipe}",
        "precision": "int8",
        "quantization": sidecar,
        "tiling": {"tile": [tile, tile], "overlap": plan.overlap, "margin": plan.margin,
                   "size_multiple": int(card.size_multiple), "scale": int(card.scale), "pad_mode": "reflect"},
        "backend": {"runtime": simulation_runtime_name(recipe), "delegate": None,
                    "options": {"recipe": recipe, "method": sidecar["method"], "quantizer": numerics.get("quantizer"),
                                "fold_quantize": sidecar.get("fold_quantize")}},
    }


def load_quantized_model(location: str | Path, description: dict):
    """Load the graph of the quantized model ``location`` (described by
    :func:`describe_quantized_model`) as an :class:`export_mobile.runners.LoadedArtifact`: float32
    NCHW tiles in and out, ``restore`` tiled with ``description["tiling"]``.

    Raises :class:`ZooError` when the file is not a ``torch.export`` program or holds no
    quantize/dequantize operators (a float graph is not a quantized zoo model).
    """
    from export_mobile.runners import LoadedArtifact, torch_runner
    from quantize.ptq import load_quantized, quantization_op_counts

    path = Path(location)
    graph, _sidecar = load_quantized(path)
    if not quantization_op_counts(graph):
        _refuse(path, "the graph holds no quantize/dequantize operators: it is a float model, not a quantized one")
    return LoadedArtifact(artifact=path, manifest=description, runner=torch_runner(graph))


def simulation_runtime(description: dict) -> dict:
    """The results record's ``runtime`` for a .pt2 run by ``zoo check``: the simulation's name
    (:func:`simulation_runtime_name`), torch's version, the CPU, int8 and torch's thread count."""
    import torch

    backend = description["backend"]
    return {"name": backend["runtime"], "version": torch.__version__, "delegate": None, "device": "cpu",
            "precision": "int8", "threads": torch.get_num_threads(),
            "options": {key: value for key, value in backend["options"].items() if value is not None}}
