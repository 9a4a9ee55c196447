"""``zoo export``: build a model, quantize it when int8 is asked, hand it to a target, write the
artifact and its manifest.json atomically, and check the artifact against PyTorch.

One export folder holds one artifact and its ``manifest.json``. The folder is built under a
temporary name beside the destination and renamed into place at the end, so a failed export
leaves nothing half-written and an earlier export in the destination stays as it was. A
destination that holds another model's export, or files that are not part of an export, is
refused.

An int8 export takes its int8 model from ``--quantized``, else from the QAT int8 state the card
ships for the target's recipe (``ModelCard.qat_weights``, when no ``--calibration`` or
``--weights`` is given), else calibrates it here (PTQ on ``--calibration`` crops).

All arguments are checked before the model is built (unknown target or precision, a tile that is
not a multiple of the model's size multiple, int8 without calibration data, a quantized model or
shipped QAT state, a per-image model that cannot be exported, ``--dynamic`` where the target does not
support it); each failure is a :class:`ZooError` naming the problem and the fix.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from export_mobile.manifest import (
    FORMAT,
    TOOL_PACKAGES,
    FORMAT_VERSION,
    FP16_MAX,
    MANIFEST_NAME,
    sha256_of,
    tensor_spec,
    tool_versions,
    utc_now,
    weights_record,
    write_manifest,
)
from export_mobile.targets import PRECISIONS, get_target, int8_recipe_of, supports_dynamic
from export_mobile.targets.base import ExportRequest, ExportResult, check_options
from quantize.provenance import make_provenance, recorded_provenance
from zoo.errors import ZooError

__all__ = ["ExportOutcome", "export_model", "parse_tile", "resolve_overlap", "reference_input",
           "activation_range", "compare_outputs", "check_output_folder", "artifact_name"]

#: Tiling specification the manifest points apps to.
TILING_SPEC = "docs/tiling.md (zoo.tiling.plan_tiles / tiled_forward)"
_RUNTIMES = {"executorch": "executorch", "coreml": "coreml", "tflite": "litert", "onnx": "onnxruntime"}
_FORMATS = {".pte": "pte", ".mlpackage": "mlpackage", ".tflite": "tflite", ".onnx": "onnx"}


@dataclass
class ExportOutcome:
    """What :func:`export_model` made: the folder, the artifact in it, its manifest and timings."""

    folder: Path
    artifact: Path
    manifest: dict
    result: ExportResult
    export_seconds: float
    replaced: str | None = None  # description of the earlier export of the same model it replaced
    timings: dict = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# Argument checks
# --------------------------------------------------------------------------------------------


def parse_tile(tile) -> tuple[int, int]:
    """``64``, ``"64"`` or ``"64x64"`` -> ``(64, 64)`` (height, width in input pixels)."""
    if isinstance(tile, (tuple, list)) and len(tile) == 2:
        height, width = tile
    elif isinstance(tile, int) and not isinstance(tile, bool):
        height = width = tile
    else:
        text = str(tile).lower().strip()
        parts = text.split("x")
        if len(parts) not in (1, 2) or not all(part.strip().isdigit() for part in parts):
            raise ZooError(f"tile {tile!r} is not a size", "write the tile as HxW in pixels, e.g. 256x256 (or 256)")
        height, width = (int(parts[0]), int(parts[-1]))
    if not all(isinstance(v, int) and v > 0 for v in (height, width)):
        raise ZooError(f"tile {tile!r} is not a positive size", "write the tile as HxW in pixels, e.g. 256x256")
    return int(height), int(width)


def _check_tile(tile: tuple[int, int], card) -> int:
    height, width = tile
    multiple = card.size_multiple
    for side in (height, width):
        if side % multiple:
            suggestion = max(multiple, -(-side // multiple) * multiple)
            raise ZooError(f"tile {height}x{width} is not divisible by {card.name}'s size multiple {multiple}",
                           f"use a multiple of {multiple}, e.g. {suggestion}x{suggestion}")
    if height != width:
        raise ZooError(f"tile {height}x{width} is not square; the zoo's tiling (docs/tiling.md) uses square tiles",
                       f"use {max(height, width)}x{max(height, width)}")
    return height


def resolve_overlap(tile: int, size_multiple: int, overlap: int | None, card_overlap: int) -> int:
    """The overlap to record: ``overlap`` as given (checked by the tile planner), or the card's
    default reduced to the largest valid value below ``tile / 2`` on the size-multiple grid."""
    from zoo.tiling import plan_tiles

    if overlap is None:
        largest = size_multiple * ((tile - 1) // (2 * size_multiple))
        overlap = min(-(-card_overlap // size_multiple) * size_multiple, largest)
    return plan_tiles(tile, tile, tile=tile, overlap=overlap, size_multiple=size_multiple).overlap


def artifact_name(model_name: str, target_name: str, precision: str, tile: int, suffix: str) -> str:
    """File name of an artifact, e.g. ``hinet-lite_executorch-xnnpack_int8_256x256.pte``."""
    return f"{model_name}_{target_name}_{precision}_{tile}x{tile}{suffix}"


def check_output_folder(folder: str | Path, model_name: str) -> dict | None:
    """Refuse a destination that holds another model's export or unrelated files.

    Returns the earlier manifest (as a dict) when the folder holds an export of ``model_name``
    that may be replaced, None when the folder is new or empty.
    """
    import json

    folder = Path(folder)
    if not folder.exists():
        return None
    if not folder.is_dir():
        raise ZooError(f"output {folder} exists and is not a folder", "choose a new folder with -o")
    entries = sorted(path.name for path in folder.iterdir())
    if not entries:
        return None
    manifest_file = folder / MANIFEST_NAME
    if not manifest_file.is_file():
        raise ZooError(f"output folder {folder} is not empty and holds no zoo export ({', '.join(entries[:3])} ...)",
                       "choose an empty or new folder with -o")
    try:
        existing = json.loads(manifest_file.read_text(encoding="utf-8"))
        owner = existing["model"]["name"]
        artifact = existing["artifact"]["file"]
    except (ValueError, KeyError, TypeError):
        raise ZooError(f"{manifest_file} is not a readable zoo manifest",
                       "choose another folder with -o, or delete this one") from None
    if owner != model_name:
        raise ZooError(f"output folder {folder} holds artifacts of another model ({owner})",
                       f"choose another folder for {model_name} with -o, or delete {folder} first")
    strangers = [name for name in entries if name not in (MANIFEST_NAME, artifact)]
    if strangers:
        raise ZooError(f"output folder {folder} holds files that are not part of its export: {', '.join(strangers[:3])}",
                       "move them away or choose another folder with -o")
    return existing


# --------------------------------------------------------------------------------------------
# Inputs and numeric checks
# --------------------------------------------------------------------------------------------


def _test_card(size: int) -> torch.Tensor:
    """A deterministic synthetic RGB photo stand-in (3, size, size) in [0, 1]: smooth colour
    gradients, a fine texture and sharp edges (what restoration models see in photos)."""
    axis = torch.linspace(0.0, 1.0, size, dtype=torch.float64)
    rows, cols = torch.meshgrid(axis, axis, indexing="ij")
    red = 0.2 + 0.6 * cols
    green = 0.5 + 0.3 * torch.sin(2 * math.pi * 3 * rows) * torch.cos(2 * math.pi * 2 * cols)
    blue = 0.8 - 0.6 * rows
    texture = 0.08 * torch.sin(2 * math.pi * size / 6 * (rows + 0.5 * cols))
    square = ((rows - 0.5).abs() < 0.2) & ((cols - 0.35).abs() < 0.15)
    image = torch.stack([red, green, blue]) + texture
    image = torch.where(square, 1.0 - image, image)
    return image.clamp(0.0, 1.0).to(torch.float32)


def reference_input(card, tile: int, seed: int = 0) -> tuple[torch.Tensor, str]:
    """The fixed input exports are checked on: ``((1, 3, tile, tile) float32, description)``.

    A synthetic test card (:func:`_test_card`, ``tile * scale`` pixels) degraded with the model's
    default degradation and ``seed``; noise is not clipped, so values may leave [0, 1] a little,
    as the model's inputs do in use.
    """
    from zoo.data.degradations import parse_degradation

    degradation = parse_degradation(card.default_degradation)
    clean = _test_card(tile * card.scale)
    degraded = degradation(clean, seed)
    if tuple(degraded.shape[-2:]) != (tile, tile):
        degraded = torch.nn.functional.interpolate(degraded[None], size=(tile, tile), mode="bilinear")[0]
    description = (f"zoo synthetic test card {tile * card.scale}x{tile * card.scale} degraded with "
                   f"{card.default_degradation}, seed {seed} (export_mobile.api.reference_input)")
    return degraded[None].contiguous().float(), description


def activation_range(model: torch.nn.Module, batches) -> dict:
    """Largest |activation| of each leaf module of ``model`` over ``batches`` (NCHW tensors).

    Returns ``{"max_abs_activation", "layer", "overflowing_layers", "per_layer"}``:
    the largest value and the module holding it, the modules whose outputs exceed the float16
    range (|x| > 65504, which becomes inf in fp16) and the maximum per module name.
    """
    per_layer: dict[str, float] = {}
    handles = []

    def hook(name):
        def record(_module, _inputs, output):
            values = output if isinstance(output, (tuple, list)) else (output,)
            for value in values:
                if isinstance(value, torch.Tensor) and value.is_floating_point() and value.numel():
                    peak = float(value.detach().abs().max())
                    per_layer[name] = max(per_layer.get(name, 0.0), peak)
        return record

    for name, module in model.named_modules():
        if name and not any(True for _ in module.children()):
            handles.append(module.register_forward_hook(hook(name)))
    try:
        with torch.no_grad():
            for batch in batches:
                model(batch)
    finally:
        for handle in handles:
            handle.remove()
    if not per_layer:
        return {"max_abs_activation": 0.0, "layer": None, "overflowing_layers": [], "per_layer": {}}
    layer = max(per_layer, key=per_layer.get)
    over = [name for name, peak in per_layer.items() if not peak <= FP16_MAX]
    return {"max_abs_activation": per_layer[layer], "layer": layer, "overflowing_layers": over,
            "per_layer": per_layer}


def _half_precision_finite(model: torch.nn.Module, example: torch.Tensor) -> bool | None:
    """Whether ``model`` run in float16 in PyTorch gives a finite output (None if fp16 is unsupported here)."""
    import copy

    try:
        half = copy.deepcopy(model).half()
        with torch.no_grad():
            output = half(example.half())
    except (RuntimeError, NotImplementedError):
        return None
    return bool(torch.isfinite(output).all())


def compare_outputs(output: np.ndarray, reference: np.ndarray) -> dict:
    """Max abs error and PSNR (dB, peak 1) of ``output`` against ``reference`` (same shape).

    ``psnr_db`` is None when the outputs are identical; both are None when ``output`` holds
    inf/NaN (``nonfinite`` True).
    """
    output = np.asarray(output, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    if output.shape != reference.shape:
        raise ZooError(f"the artifact returned shape {output.shape}, PyTorch {reference.shape}",
                       "re-export: the artifact does not compute what the model computes")
    if not np.isfinite(output).all():
        return {"max_abs_error": None, "psnr_db": None, "nonfinite": True}
    difference = output - reference
    mse = float(np.mean(difference ** 2))
    return {"max_abs_error": float(np.max(np.abs(difference))),
            "psnr_db": None if mse == 0 else 10.0 * math.log10(1.0 / mse), "nonfinite": False}


# --------------------------------------------------------------------------------------------
# Model, quantization
# --------------------------------------------------------------------------------------------


def _quantized_model(model, card, example, recipe: str, tile: int, *, quantized, calibration,
                     calibration_images: int, data_root, mixed: str | None, cache: dict | None,
                     cache_key, shipped_qat: Path | None = None) -> tuple[torch.nn.Module, dict]:
    """The PT2E int8 model for ``recipe`` and its manifest ``quantization`` entry: from the
    ``quantized`` .pt2, else rebuilt from the card's ``shipped_qat`` state, else calibrated (PTQ)."""
    if quantized is not None:
        from quantize.ptq import load_quantized

        graph_module, sidecar = load_quantized(quantized)
        if recipe is not None and sidecar.get("recipe") not in (None, recipe):
            raise ZooError(f"{Path(quantized).name} was quantized for {sidecar.get('recipe')}, this target needs {recipe}",
                           f"quantize with the {recipe} recipe (zoo quantize --backend {recipe})")
        if list(sidecar.get("input_shape", [3, tile, tile])) != [3, tile, tile]:
            raise ZooError(f"{Path(quantized).name} was quantized at input shape {sidecar.get('input_shape')}, "
                           f"the export tile is {tile}x{tile}", f"quantize at --tile {tile} or export at its tile")
        owner = sidecar.get("model")
        if owner not in (None, card.name):
            raise ZooError(f"{Path(quantized).name} is a quantized {owner}, not {card.name}",
                           f"pass a quantized model of {card.name}")
        info = {"method": sidecar.get("method", "ptq"), "recipe": sidecar.get("recipe", recipe),
                "numerics": sidecar.get("numerics"),
                "calibration": sidecar.get("calibration"), "source": Path(quantized).name,
                "provenance": recorded_provenance(sidecar)}
        return graph_module, info
    if shipped_qat is not None:
        from quantize.ptq import quantization_info
        from quantize.qat_state import rebuild_qat_model

        # The card's own architecture, without the export rewrites: the QAT state names the fake
        # quantizers of the graph the run traced. Every weight comes from the file.
        with torch.random.fork_rng():
            architecture = card.builder()
        graph_module, sidecar = rebuild_qat_model(architecture, shipped_qat, model_name=card.name, recipe=recipe,
                                                  tile=tile)
        recorded = quantization_info(graph_module)
        info = {"method": "qat", "recipe": recipe, "numerics": recorded.get("numerics"),
                "calibration": sidecar.get("calibration"), "source": shipped_qat.name,
                "provenance": recorded.get("provenance")}
        return graph_module, info
    if cache is not None and cache_key in cache:
        return cache[cache_key]
    from quantize.calibration import build_calibration_set
    from quantize.ptq import quantization_info, quantize_ptq
    from quantize.recipes import MixedPrecision

    degradation = card.calibration_degradation
    calibration_set = build_calibration_set(degradation, tile=tile, count=calibration_images,
                                            source=calibration, data_root=data_root)
    graph_module = quantize_ptq(model, example, recipe, calibration_set, mixed=MixedPrecision.parse(mixed))
    recorded = quantization_info(graph_module)
    info = {"method": "ptq", "recipe": recipe, "numerics": recorded.get("numerics"),
            "calibration": {**calibration_set.describe(), "mixed_precision": mixed or "none"}, "source": None,
            "provenance": recorded.get("provenance")}
    if cache is not None:
        cache[cache_key] = (graph_module, info)
    return graph_module, info


# --------------------------------------------------------------------------------------------
# Publishing
# --------------------------------------------------------------------------------------------


def _publish(temporary: Path, folder: Path) -> None:
    """Move the finished ``temporary`` folder to ``folder``, replacing an earlier export there."""
    from zoo.atomic import DIR_MODE

    os.chmod(temporary, DIR_MODE)  # mkdtemp made it private (0700)
    if not folder.exists():
        os.rename(temporary, folder)
        return
    backup = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old-", dir=folder.parent))
    backup.rmdir()
    os.rename(folder, backup)
    try:
        os.rename(temporary, folder)
    except BaseException:
        os.rename(backup, folder)
        raise
    shutil.rmtree(backup, ignore_errors=True)


def _run_artifact_once(target, artifact: Path, manifest: dict, example: torch.Tensor) -> tuple[np.ndarray | None, str | None]:
    try:
        runner = target.load_runner(artifact, manifest)
        return np.asarray(runner(example.numpy()), dtype=np.float32), None
    except ZooError as err:
        return None, str(err)


# --------------------------------------------------------------------------------------------
# The export
# --------------------------------------------------------------------------------------------


def export_model(model_name: str, target: str, precision: str, tile, out_dir: str | Path, *,
                 weights: str | Path | None = None, untrained: bool = False, overlap: int | None = None,
                 calibration: str | Path | None = None, calibration_images: int = 32,
                 quantized: str | Path | None = None, data_root: str | Path | None = None, mixed: str | None = None,
                 dynamic: bool = False, rewrite: bool = True, verify: bool = True, options: dict | None = None,
                 cache: dict | None = None, progress: Callable[[str, str], None] | None = None) -> ExportOutcome:
    """Export zoo model ``model_name`` to ``target`` at ``precision`` into folder ``out_dir``.

    Args:
        tile: the fixed input size, ``256``, ``"256"`` or ``"256x256"`` (square; a multiple of the
            model's size multiple). Photos of any size are restored tiled (``zoo run``).
        weights / untrained: as :func:`zoo.registry.create_model` (untrained = random weights,
            for pipeline checks only; the manifest says so).
        overlap: tile overlap recorded for apps (default: the card's, capped below tile / 2).
        calibration, calibration_images: for int8, the training-pool source of degraded crops
            (``auto``, ``urban100``, ``bundled`` or a folder; never an evaluation set) and how many.
        quantized: for int8, a ``.pt2`` written by ``zoo quantize`` instead of calibrating here.
            Without ``quantized``, ``calibration``, ``weights`` and ``untrained``, an int8 export
            rebuilds the int8 model from the QAT state the card ships for the target's recipe
            (``ModelCard.qat_weights``; :mod:`quantize.qat_state`) when there is one; the
            manifest's ``quantization.provenance`` is then that QAT run's.
        mixed: for int8 calibrated here, layers kept in float (``first-last``, module names; see
            ``quantize.recipes.MixedPrecision``); default None quantizes every layer, which keeps
            the lite models in one int8 XNNPACK partition.
        dynamic: dynamic height/width; refused unless the target supports it.
        rewrite: apply the exact export-friendly rewrites of :mod:`export_mobile.rewrites`.
        verify: run the artifact on :func:`reference_input` where this machine can and record
            the difference to PyTorch (the float model; the PT2E model for int8).
        options: target-specific settings (e.g. ``compute_units`` for Core ML): the names the
            target declares in ``accepted_options``; any other name, or a value it rules out, is
            refused before anything is built.
        cache: dict shared between calls (the matrix) to reuse quantized models.
        progress: called as ``progress(step, detail)`` when each long step starts (prepare,
            quantize, lower, write, verify), so a command can show where a minute goes.
    Returns:
        :class:`ExportOutcome`; ``out_dir`` then holds the artifact and ``manifest.json``.
    """
    started = time.perf_counter()
    from zoo.registry import create_model, get_card

    def step(name: str, detail: str) -> None:
        if progress is not None:
            progress(name, detail)

    target_object = get_target(target)
    if precision not in PRECISIONS:
        raise ZooError(f"unknown precision {precision!r}", f"use one of {', '.join(PRECISIONS)}")
    if precision not in getattr(target_object, "precisions", ()):
        offered = ", ".join(getattr(target_object, "precisions", ())) or "nothing here"
        raise ZooError(f"target {target} does not export {precision}", f"{target} exports {offered}")
    reason = target_object.available()
    if reason:
        raise ZooError(f"target {target} is unavailable here: {reason}", "install the missing toolchain or pick another target")
    # Before anything is built: a misspelt or foreign option would otherwise be ignored.
    options = check_options(target_object, precision, options)
    card = get_card(model_name)
    if card.zero_shot:
        raise ZooError(f"{model_name} is a per-image optimisation (it fits each photo from scratch), not a trained "
                       "network, so it cannot be exported", "export a trained model (see `zoo list`)")
    tile_size = _check_tile(parse_tile(tile), card)
    used_overlap = resolve_overlap(tile_size, card.size_multiple, overlap, card.overlap)
    if dynamic and not supports_dynamic(target_object):
        raise ZooError(f"--dynamic is not supported for {target}: dynamic shapes are fragile in mobile runtimes "
                       "(inputs outside the exported bounds can give silently wrong output)",
                       "export a fixed tile and restore photos tiled (zoo run does this)")
    recipe = int8_recipe_of(target_object) if precision == "int8" else None
    # A target that quantizes by itself (recipe None) still takes a quantized model when given one.
    use_quantized_model = precision == "int8" and (recipe is not None or quantized is not None)
    # int8 with neither a quantized model nor calibration data: the QAT state the card ships for
    # the target's recipe, when the shipped float weights are the ones asked for.
    shipped_qat = None
    if recipe and quantized is None and calibration is None and weights is None and not untrained:
        shipped_qat = card.qat_weights_path(recipe)
        if shipped_qat is not None and mixed is not None:
            raise ZooError(f"--mixed applies to calibration, and {model_name}'s shipped QAT int8 state for {recipe} "
                           "keeps the layers in float that its run kept",
                           "drop --mixed, or pass --calibration to calibrate with it here")
    if recipe and quantized is None and calibration is None and shipped_qat is None:
        raise ZooError(f"int8 export of {model_name} needs calibration data or a quantized model",
                       "pass --calibration auto|urban100|bundled|FOLDER (training images) or --quantized PATH.pt2"
                       + (" (the shipped QAT int8 state goes with the shipped weights, not --weights/--untrained)"
                          if recipe in card.qat_weights else ""))
    out_dir = Path(out_dir)
    existing = check_output_folder(out_dir, model_name)

    step("prepare", f"building {model_name}" + (" (untrained)" if untrained else "") + " and its reference input")
    with torch.random.fork_rng():
        # Untrained (random) weights are the same in every export, so artifacts of one model for
        # different targets compute the same function; trained weights overwrite them anyway.
        torch.manual_seed(0)
        model, card = create_model(model_name, weights, untrained=untrained)
    rewrites: list[str] = []
    if rewrite:
        from export_mobile.rewrites import rewrite_for_export

        model, report = rewrite_for_export(model)
        rewrites = report.describe()
    example, input_description = reference_input(card, tile_size)
    timings = {"prepare_s": time.perf_counter() - started}

    quantized_model, quantization = None, None
    if use_quantized_model:
        quantize_start = time.perf_counter()
        step("quantize", f"int8 from {Path(quantized).name}" if quantized is not None else
             f"int8 ({recipe}) from the shipped QAT state {shipped_qat.name}, no calibration"
             if shipped_qat is not None else
             f"calibrating int8 ({recipe}) on {calibration_images} crops from {calibration}")
        key = (model_name, str(weights), rewrite, recipe, tile_size, str(calibration), calibration_images,
               str(data_root), mixed)
        quantized_model, quantization = _quantized_model(
            model, card, example, recipe, tile_size, quantized=quantized, calibration=calibration,
            calibration_images=calibration_images, data_root=data_root, mixed=mixed, cache=cache, cache_key=key,
            shipped_qat=shipped_qat)
        timings["quantize_s"] = time.perf_counter() - quantize_start
    elif precision == "int8":
        quantization = {"method": "target", "recipe": None, "numerics": None, "calibration": None, "source": None,
                        "provenance": make_provenance("target", target, mixed=None)}

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.export-", dir=out_dir.parent))
    try:
        name = artifact_name(model_name, target, precision, tile_size, target_object.suffix)
        request = ExportRequest(model=model, example=example, precision=precision, out_path=temporary / name,
                                quantized=quantized_model, options=dict(options))
        lower_start = time.perf_counter()
        step("lower", f"torch.export and lowering to {target} {precision} at {tile_size}x{tile_size}")
        result = target_object.export(request)
        timings["export_s"] = time.perf_counter() - lower_start
        artifact = Path(result.path)
        if artifact.parent != temporary or not artifact.exists():
            raise ZooError(f"target {target} did not write its artifact into the export folder",
                           "report this bug: the target must write request.out_path")
        digest, method, size = sha256_of(artifact)

        with torch.no_grad():
            reference_model = quantized_model if quantized_model is not None else model
            reference = reference_model(example).detach().float().numpy()
        manifest = _manifest(card, model, weights, target, target_object, precision, result, artifact, digest,
                             method, size, tile_size, used_overlap, quantization, example, reference, rewrites,
                             dynamic)
        if shipped_qat is not None:
            manifest["notes"].append(f"int8 weights: the shipped QAT state {shipped_qat.name} (weights trained with "
                                     "fake quantization); model.weights names the float model they are compared with")
        if precision == "fp16":
            report = activation_range(model, [example])
            manifest["fp16_range"] = {"max_abs_activation": report["max_abs_activation"], "layer": report["layer"],
                                      "overflowing_layers": report["overflowing_layers"],
                                      "pytorch_half_finite": _half_precision_finite(model, example)}
            if report["overflowing_layers"]:
                manifest["notes"].append("activations exceed the fp16 range in " + ", ".join(report["overflowing_layers"])
                                         + ": expect inf/NaN in fp16; use fp32 compute or int8 for this model")
        if verify:
            step("verify", f"running {artifact.name} on the reference input against PyTorch")
            run_start = time.perf_counter()
            output, why_not = _run_artifact_once(target_object, artifact, manifest, example)
            timings["run_s"] = time.perf_counter() - run_start
            reference_name = ("pytorch int8 (PT2E) model" if quantized_model is not None
                              else "pytorch float32 model")
            verification = {"ran": output is not None, "reference": reference_name, "input": input_description,
                            "max_abs_error": None, "psnr_db": None, "nonfinite": None, "reason": why_not}
            if output is not None:
                verification.update(compare_outputs(output, reference))
            manifest["verification"] = verification
        step("write", f"manifest.json and {out_dir}")
        write_manifest(temporary, manifest)
        _publish(temporary, out_dir)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    replaced = None
    if existing is not None:
        replaced = f"{existing.get('target')} {existing.get('precision')} ({existing.get('artifact', {}).get('file')})"
    return ExportOutcome(folder=out_dir, artifact=out_dir / artifact.name, manifest=manifest, result=result,
                         export_seconds=time.perf_counter() - started, replaced=replaced, timings=timings)


def _manifest(card, model, weights, target_name, target_object, precision, result: ExportResult, artifact: Path,
              digest: str, method: str, size: int, tile: int, overlap: int, quantization, example: torch.Tensor,
              reference: np.ndarray, rewrites: list[str], dynamic: bool) -> dict:
    """The manifest dict (before verification) for one artifact; see the JSON Schema."""
    def shaped(shape, layout):
        shape = [int(v) for v in shape]
        return [shape[0], shape[2], shape[3], shape[1]] if layout == "NHWC" else shape

    runtime = result.runtime or _RUNTIMES.get(target_name.split("-")[0], target_name)
    input_shape = shaped(example.shape, result.input_layout)
    output_shape = shaped(reference.shape, result.output_layout)
    if dynamic:
        input_shape = [input_shape[0]] + [-1 if v == tile else v for v in input_shape[1:]]
        output_shape = [output_shape[0]] + [-1 if v == tile * card.scale else v for v in output_shape[1:]]
    from zoo.tiling import plan_tiles

    plan = plan_tiles(tile, tile, tile=tile, overlap=overlap, size_multiple=card.size_multiple)
    suffix = "".join(artifact.suffixes[-1:])
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": {"name": card.name, "family": card.family, "variant": card.variant, "task": card.task,
                  "scale": int(card.scale), "summary": card.summary, "paper": card.paper, "notes": list(card.notes),
                  "weights": weights_record(card, weights, untrained=getattr(model, "zoo_untrained", False))},
        "artifact": {"file": artifact.name, "format": _FORMATS.get(suffix, suffix.lstrip(".")), "bytes": int(size),
                     "sha256": digest, "sha256_method": method},
        "target": target_name,
        "backend": {"runtime": runtime, "delegate": result.delegate, "partitions": result.partitions,
                    "ops_outside_delegate": list(result.ops_outside_delegate),
                    "options": dict(result.backend_options)},
        "precision": precision,
        "quantization": quantization,
        "inputs": [tensor_spec(result.input_name, input_shape, dtype=result.input_dtype, layout=result.input_layout,
                               quantization=result.input_quantization)],
        "outputs": [tensor_spec(result.output_name, output_shape, dtype=result.output_dtype,
                                layout=result.output_layout,
                                quantization=result.output_quantization)],
        "tiling": {"tile": [tile, tile], "overlap": plan.overlap, "margin": plan.margin,
                   "size_multiple": int(card.size_multiple), "scale": int(card.scale), "pad_mode": "reflect",
                   "spec": TILING_SPEC},
        "dynamic_shapes": bool(dynamic),
        "tools": tool_versions(tuple(dict.fromkeys(TOOL_PACKAGES + tuple(getattr(target_object, "tool_packages", ()))))),
        "created": utc_now(),
        "verification": None,
        "fp16_range": None,
        "rewrites": rewrites,
        "notes": list(result.notes) + (["untrained (random) weights: for pipeline and numeric checks only, "
                                        "not a restoration model"] if getattr(model, "zoo_untrained", False) else []),
    }
