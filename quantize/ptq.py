"""Post-training quantization (PT2E) and the saved form of a quantized model.

``quantize_ptq``: ``torch.export`` -> ``prepare_pt2e`` (the recipe's quantizer inserts observers)
-> calibration (the observers record activation ranges on degraded training-pool crops) ->
``convert_pt2e``. The result is a ``torch.fx.GraphModule`` with quantize/dequantize nodes around
the int8 operators: it runs in PyTorch and is the "quantized model in PyTorch" reference that
the mobile exports (``export_mobile``) are checked against.

``save_quantized`` writes it with ``torch.export.save`` (``.pt2``) and a JSON sidecar
(model, recipe, method, mixed precision, calibration source and count, versions);
``load_quantized`` reads both back. Writes are atomic.

Graphs are exported with a dynamic batch dimension, so one quantized model takes any batch
size; height and width are fixed at the export tile size (run larger images tiled with
``zoo.tiling.tiled_forward``, as :func:`quantize.report.accuracy_drop_report` does).
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
from collections import Counter
from pathlib import Path
from typing import Iterable

import torch

from quantize.provenance import calibration_record, make_provenance
from quantize.recipes import MixedPrecision, get_recipe, require_recipe
from quantize.recipes.mixed import is_weighted_layer, module_path
from zoo.errors import ZooError

#: Key of ``GraphModule.meta`` where the quantization settings of a converted graph are kept.
META_KEY = "zoo_quantization"
#: ``format`` and ``format_version`` of the JSON sidecar.
SIDECAR_FORMAT = "zoo-quantized-model"
SIDECAR_VERSION = 1
#: Largest batch the exported graphs accept (dynamic batch dimension 1..MAX_BATCH).
MAX_BATCH = 64


def _as_batch(image: torch.Tensor) -> torch.Tensor:
    """An NCHW float32 batch from a CHW image or an NCHW batch."""
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"expected a tensor, got {type(image).__name__}")
    if image.dim() == 3:
        image = image.unsqueeze(0)
    if image.dim() != 4:
        raise ValueError(f"expected a CHW image or an NCHW batch, got shape {tuple(image.shape)}")
    return image.float()


def _dynamic_batch_example(example_input: torch.Tensor) -> torch.Tensor:
    # torch.export specialises a dimension of size 1 to the constant 1, so the example must hold
    # at least two images for the batch dimension to stay dynamic.
    batch = _as_batch(example_input)
    return batch if batch.shape[0] >= 2 else batch.expand(2, -1, -1, -1).contiguous()


def export_for_quantization(model: torch.nn.Module, example_input: torch.Tensor, *, train: bool = False):
    """``torch.export`` ``model`` (in train or eval mode) with a dynamic batch dimension.

    ``example_input``: a CHW image or NCHW batch in [0, 1] at the export tile size; its height
    and width are fixed in the graph. Returns the exported program's ``GraphModule``. The
    model's train/eval mode is restored afterwards.
    """
    from torch.export import Dim

    was_training = model.training
    example = _dynamic_batch_example(example_input)
    model.train(train)
    try:
        program = torch.export.export(
            model, (example,), dynamic_shapes=({0: Dim("batch", min=1, max=MAX_BATCH)},))
    finally:
        model.train(was_training)
    return program.module()


def _batches(source: Iterable) -> Iterable[torch.Tensor]:
    """Model inputs from an iterable of tensors or of (input, target) pairs."""
    for item in source:
        if isinstance(item, (tuple, list)):
            item = item[0]
        yield _as_batch(item)


def _resolved_mixed(quantizer, mixed: MixedPrecision | None) -> dict:
    selection = getattr(quantizer, "selection", None)
    return {
        "requested": mixed.describe() if mixed is not None else None,
        "resolved": selection.describe() if selection is not None else None,
    }


def calibration_provenance(calibration, images: int | None = None) -> dict:
    """The provenance ``calibration`` entry of calibration inputs: a
    :class:`quantize.calibration.CalibrationSet` names its data and degradation; other batches
    are the caller's (``images``: how many inputs they held)."""
    described = calibration.describe() if callable(getattr(calibration, "describe", None)) else {}
    return calibration_record(described.get("source", "inputs given by the caller"),
                              images if images is not None else described.get("count"),
                              degradation=described.get("degradation"))


def calibrated_observers(model: torch.nn.Module, example: torch.Tensor, quantizer, calibration_batches: Iterable,
                         progress_label: str | None = None) -> tuple[torch.fx.GraphModule, int, int]:
    """``prepare_pt2e`` ``model`` (eval mode) with ``quantizer`` and run ``calibration_batches``
    through its observers; returns (prepared graph, batches, images).

    ``example``: NCHW batch at the export size; every batch must have its height and width.
    ``progress_label``: show a progress bar with this label. Raises :class:`ZooError` for no
    batches or a batch of another size.
    """
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e

    prepared = prepare_pt2e(export_for_quantization(model.eval(), example, train=False), quantizer)
    batches = images = 0
    iterator = _batches(calibration_batches)
    if progress_label:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, desc=progress_label, unit="batch")
    with torch.no_grad():
        for batch in iterator:
            if batch.shape[1:] != example.shape[1:]:
                raise ZooError(f"calibration batch of shape {tuple(batch.shape)} does not match the export "
                               f"shape {tuple(example.shape[1:])}", "draw calibration crops at the export tile size")
            prepared(batch)
            batches += 1
            images += batch.shape[0]
    if batches == 0:
        raise ZooError("no calibration batches were given", "pass at least one degraded training-pool crop")
    return prepared, batches, images


def quantize_ptq(model: torch.nn.Module, example_input: torch.Tensor, recipe, calibration_batches: Iterable,
                 mixed: MixedPrecision | None = None, *, progress: bool = False) -> torch.fx.GraphModule:
    """Post-training int8 quantization of ``model`` with the backend ``recipe``.

    Args:
        model: float model mapping an NCHW batch in [0, 1] to the restored batch.
        example_input: CHW or NCHW tensor at the export tile size (fixes height and width).
        recipe: backend name (``xnnpack``, ``coreml``, ``tflite``) or recipe module.
        calibration_batches: iterable of NCHW/CHW degraded inputs (or (input, target) pairs)
            of the example's height and width, from the training pool
            (:func:`quantize.calibration.build_calibration_set`).
        mixed: layers kept in float (:class:`MixedPrecision`); None quantizes every supported op.
    Returns:
        The converted ``GraphModule`` (runs in PyTorch; eval semantics). Its
        ``meta["zoo_quantization"]`` records recipe, method, mixed precision (requested and
        resolved module names), the calibration count and the ``provenance`` record
        (:mod:`quantize.provenance`).
    Raises:
        ZooError: unavailable backend, no calibration batches, or a calibration batch of the
        wrong size.
    """
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    recipe = require_recipe(recipe)
    example = _as_batch(example_input)
    quantizer = recipe.quantizer(is_qat=False, mixed=mixed)
    prepared, batches, images = calibrated_observers(model, example, quantizer, calibration_batches,
                                                     progress_label=f"calibrate {recipe.NAME}" if progress else None)

    converted = convert_pt2e(prepared, fold_quantize=recipe.FOLD_QUANTIZE)
    converted.meta[META_KEY] = {
        "recipe": recipe.NAME,
        "method": "ptq",
        "numerics": dict(recipe.NUMERICS),
        "fold_quantize": recipe.FOLD_QUANTIZE,
        "mixed_precision": _resolved_mixed(quantizer, mixed),
        "calibration_batches": batches,
        "calibration_images": images,
        "input_shape": list(example.shape[1:]),
        "provenance": make_provenance("ptq", recipe.NAME, mixed=MixedPrecision.flag(mixed),
                                      calibration=calibration_provenance(calibration_batches, images)),
    }
    return converted


# ----------------------------------------------------------------------------- inspecting graphs


def quantization_op_counts(graph_module: torch.fx.GraphModule) -> Counter:
    """How many quantize / dequantize operator calls the graph holds, by operator name
    (e.g. ``quantize_per_tensor``, ``dequantize_per_channel``)."""
    counts: Counter = Counter()
    for node in graph_module.graph.nodes:
        if node.op == "call_function":
            name = str(node.target)
            if name.startswith("quantized_decomposed."):
                counts[name.split(".")[1]] += 1
    return counts


def _dequantized(node) -> bool:
    return (isinstance(node, torch.fx.Node) and node.op == "call_function"
            and "dequantize" in str(node.target))


def layer_precision(graph_module: torch.fx.GraphModule) -> dict[str, str]:
    """Module name -> ``"int8"`` or ``"float"`` for every conv/linear layer of a converted graph.

    A layer is int8 when its weight reaches it through a dequantize node (int8 storage) and so
    does its input activation; otherwise it computes in float.
    """
    precision: dict[str, str] = {}
    for node in graph_module.graph.nodes:
        if not is_weighted_layer(node):
            continue
        name = module_path(node) or node.name
        quantized = len(node.args) > 1 and _dequantized(node.args[0]) and _dequantized(node.args[1])
        precision[name] = "int8" if quantized else "float"
    return precision


def quantization_info(graph_module: torch.fx.GraphModule) -> dict:
    """The settings recorded on a graph by :func:`quantize_ptq` / ``quantize_qat`` ({} if none)."""
    return dict(graph_module.meta.get(META_KEY, {}))


# ----------------------------------------------------------------------------- saving


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def sidecar_path(path: str | Path) -> Path:
    """The JSON sidecar beside a ``.pt2`` file (same name, ``.json``)."""
    return Path(path).with_suffix(".json")


def save_quantized(graph_module: torch.fx.GraphModule, path: str | Path, example_input: torch.Tensor,
                   metadata: dict | None = None) -> Path:
    """Write a converted graph as ``path`` (``torch.export.save``, ``.pt2``) plus its JSON sidecar.

    ``example_input``: a CHW image or NCHW batch at the export size (the saved program keeps
    the dynamic batch dimension). ``metadata``: extra JSON-ready fields (model name, weights,
    calibration source, ...), merged over :func:`quantization_info`. Both files are written
    atomically; returns the ``.pt2`` path.
    """
    from torch.export import Dim

    from zoo.atomic import atomic_path, write_json

    path = Path(path)
    if path.suffix != ".pt2":
        raise ZooError(f"quantized models are saved as .pt2, got {path.name}", "use a file name ending in .pt2")
    example = _dynamic_batch_example(example_input)
    program = torch.export.export(graph_module, (example,),
                                  dynamic_shapes=({0: Dim("batch", min=1, max=MAX_BATCH)},))
    with atomic_path(path) as temporary:
        torch.export.save(program, str(temporary))
    sidecar = {
        "format": SIDECAR_FORMAT,
        "format_version": SIDECAR_VERSION,
        "file": path.name,
        **quantization_info(graph_module),
        **(metadata or {}),
        "input_shape": list(example.shape[1:]),
        "batch": f"dynamic, 1..{MAX_BATCH}",
        "versions": {package: _version(package) for package in
                     ("torch", "torchao", "executorch", "coremltools", "litert-torch")},
        "saved_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    write_json(sidecar_path(path), sidecar)
    return path


def read_sidecar(path: str | Path) -> dict:
    """The JSON sidecar of the ``.pt2`` file ``path`` (:func:`sidecar_path`), checked to be a zoo
    quantized-model sidecar this zoo can read; the graph itself is not loaded (cheap).

    Raises :class:`ZooError` when the sidecar is missing, not JSON, of another format or newer.
    """
    path = Path(path)
    sidecar_file = sidecar_path(path)
    try:
        sidecar = json.loads(sidecar_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ZooError(f"{path.name} has no sidecar {sidecar_file.name}",
                       "keep the .json written beside the .pt2 by zoo quantize (or the QAT run)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ZooError(f"sidecar {sidecar_file} is not valid JSON ({err})", "re-run zoo quantize") from None
    if not isinstance(sidecar, dict) or sidecar.get("format") != SIDECAR_FORMAT:
        raise ZooError(f"{sidecar_file} is not a zoo quantized-model sidecar, so {path.name} is not a quantized "
                       "zoo model", "pass a .pt2 written by zoo quantize or a QAT run, with its .json")
    if sidecar.get("format_version", 0) > SIDECAR_VERSION:
        raise ZooError(f"{path.name} was written by a newer zoo (format {sidecar['format_version']})",
                       "upgrade mobile-restoration-zoo")
    return sidecar


def load_quantized(path: str | Path) -> tuple[torch.fx.GraphModule, dict]:
    """Read a model written by :func:`save_quantized`: ``(graph_module, sidecar dict)``.

    The graph runs in PyTorch on NCHW batches of the saved height and width. Raises
    :class:`ZooError` when the file or its sidecar is missing, the sidecar is not a zoo
    quantized-model sidecar (:func:`read_sidecar`) or the file is not a ``torch.export`` program.
    """
    import torchao.quantization.pt2e  # noqa: F401  (registers the quantize/dequantize operators)

    path = Path(path)
    if path.is_dir():
        candidates = sorted(path.glob("*.pt2"))
        if len(candidates) != 1:
            raise ZooError(f"{path} holds {len(candidates)} .pt2 files", "name the .pt2 file to load")
        path = candidates[0]
    if not path.is_file():
        raise ZooError(f"quantized model {path} does not exist", "check the path (zoo quantize -o DIR writes DIR/*.pt2)")
    sidecar = read_sidecar(path)
    try:
        program = torch.export.load(str(path))
    except Exception as err:  # noqa: BLE001 - torch raises many types (zip, pickle, schema) for a bad file
        detail = " ".join(str(err).split())[:120]  # one line: torch's messages span several
        raise ZooError(f"{path.name} is not a torch.export program ({type(err).__name__}: {detail})",
                       "pass the .pt2 written by zoo quantize or a QAT run (re-run it if the file is damaged)") from None
    graph_module = program.module()
    graph_module.meta[META_KEY] = {key: sidecar[key] for key in sidecar
                                   if key not in ("format", "format_version", "file", "versions", "saved_at")}
    return graph_module, sidecar


__all__ = [
    "META_KEY", "MixedPrecision", "export_for_quantization", "quantize_ptq", "quantization_op_counts",
    "layer_precision", "quantization_info", "save_quantized", "load_quantized", "read_sidecar", "sidecar_path",
    "get_recipe",
]
