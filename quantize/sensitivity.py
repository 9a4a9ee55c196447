"""Per-layer quantization sensitivity: which layer, kept in float, helps the int8 model most.

For every conv/linear layer the model is quantized with that ONE layer left in float (all others
int8, same recipe, same calibration crops), and its output on held-out crops is compared with the
float model's output (PSNR in dB, outputs clamped to [0, 1]). The all-int8 model is the
reference: ``gain_db`` = PSNR with the layer in float - PSNR of the all-int8 model. Layers with
the largest gain are the ones worth keeping in float (``--mixed first,last,NAME``) or worth
attention in QAT.

The held-out crops are calibration-style (degraded training-pool crops) but drawn from images
the calibration set did not use (``build_calibration_set(..., skip_images=...)``): selecting
layers is model selection, so evaluation images are never used here.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Iterable, Sequence

import torch

from quantize.ptq import _as_batch, layer_precision, quantize_ptq
from quantize.recipes import MixedPrecision, require_recipe

#: Version of the JSON written by :func:`write_sensitivity`.
SENSITIVITY_SCHEMA_VERSION = 1


def _outputs(model, inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    with torch.no_grad():
        return [model(_as_batch(x)).clamp(0.0, 1.0) for x in inputs]


def _mean_psnr(outputs: Sequence[torch.Tensor], references: Sequence[torch.Tensor]) -> float:
    from zoo.metrics import psnr

    return statistics.fmean(psnr(out[0], ref[0]) for out, ref in zip(outputs, references))


def layer_sensitivity(model: torch.nn.Module, example_input: torch.Tensor, recipe,
                      calibration_batches: Iterable, held_out_inputs: Sequence[torch.Tensor], *,
                      layers: Sequence[str] | None = None, progress: bool = False) -> dict:
    """Sweep the conv/linear layers of ``model``, one float layer at a time.

    Args:
        model: float model (eval mode is used).
        example_input: CHW/NCHW tensor at the export tile size.
        recipe: backend name or recipe module.
        calibration_batches: degraded training-pool crops (a re-iterable such as a list or
            :class:`~quantize.calibration.CalibrationSet`); every variant is calibrated on them.
        held_out_inputs: degraded crops (CHW or NCHW, export size) the PSNR is measured on.
        layers: module names to sweep (default: every conv/linear layer, execution order).
    Returns:
        ``{"recipe", "held_out_images", "float_reference": "float model output",
        "all_int8_psnr_db", "rows": [...]}``; rows sorted by ``gain_db`` (largest first), one
        per layer: ``layer``, ``psnr_db`` (vs the float output, mean over the held-out crops),
        ``gain_db`` (vs all-int8), ``int8_in_all_int8_model`` (False for layers the recipe
        leaves in float anyway, whose gain is then about 0).
    """
    recipe = require_recipe(recipe)
    calibration = list(calibration_batches)
    held_out = [_as_batch(x) for x in held_out_inputs]
    model = model.eval()
    reference = _outputs(model, held_out)

    baseline = quantize_ptq(model, example_input, recipe, calibration, mixed=None)
    baseline_psnr = _mean_psnr(_outputs(baseline, held_out), reference)
    precision = layer_precision(baseline)
    names = list(layers) if layers is not None else list(precision)

    iterator = names
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(names, desc="sensitivity", unit="layer")
    rows = []
    for name in iterator:
        variant = quantize_ptq(model, example_input, recipe, calibration,
                               mixed=MixedPrecision(float_modules=(name,), float_output_ops=False))
        layer_psnr = _mean_psnr(_outputs(variant, held_out), reference)
        rows.append({
            "layer": name,
            "psnr_db": layer_psnr,
            "gain_db": layer_psnr - baseline_psnr,
            "int8_in_all_int8_model": precision.get(name) == "int8",
        })
    rows.sort(key=lambda row: row["gain_db"], reverse=True)
    return {
        "schema_version": SENSITIVITY_SCHEMA_VERSION,
        "recipe": recipe.NAME,
        "held_out_images": len(held_out),
        "calibration_batches": len(calibration),
        "float_reference": "float model output, clamped to [0, 1]",
        "all_int8_psnr_db": baseline_psnr,
        "rows": rows,
    }


def format_sensitivity_table(result: dict, limit: int | None = None) -> str:
    """A plain-text table of :func:`layer_sensitivity`'s rows (most sensitive first)."""
    rows = result["rows"][:limit] if limit else result["rows"]
    width = max([len("layer"), *(len(row["layer"]) for row in rows)])
    lines = [
        f"recipe {result['recipe']}: all-int8 output vs float {result['all_int8_psnr_db']:.2f} dB "
        f"(mean of {result['held_out_images']} held-out crops)",
        f"{'layer':<{width}}  {'PSNR vs float':>13}  {'gain (dB)':>9}  all-int8 precision",
        "-" * (width + 45),
    ]
    for row in rows:
        lines.append(f"{row['layer']:<{width}}  {row['psnr_db']:>13.2f}  {row['gain_db']:>+9.2f}  "
                     f"{'int8' if row['int8_in_all_int8_model'] else 'float'}")
    return "\n".join(lines)


def write_sensitivity(result: dict, path: str | Path) -> Path:
    """Write :func:`layer_sensitivity`'s result as JSON (atomically); returns the path."""
    from zoo.atomic import write_json

    return write_json(path, result)
