"""Accuracy drop of a quantized model versus its float original on an evaluation set.

Both models restore the same degraded images through the same tiling (the quantized graph has
a fixed input size, the export tile; the float model runs on the same tiles so instance
normalisation and borders see the same pixels), outputs are clamped and rounded to 8 bits as a
saved PNG would be, and PSNR/SSIM follow the conventions of ``zoo eval``
(:class:`zoo.evaluate.MetricSettings`). Per image and mean: float PSNR/SSIM, quantized
PSNR/SSIM, the drop (float - quantized) and the PSNR between the quantized and float outputs.

Evaluating a *final* quantized model on Set5/Set14/CBSD68 is what those sets are for;
calibration and layer selection never see them (see :mod:`quantize.calibration`).
"""

from __future__ import annotations

import statistics
from pathlib import Path

import torch

from zoo.errors import ZooError

#: Version of the JSON written by :func:`accuracy_drop_report`.
REPORT_SCHEMA_VERSION = 1
#: Per-image keys averaged into the "mean" row.
_MEAN_KEYS = ("float_psnr", "float_ssim", "quant_psnr", "quant_ssim", "drop_psnr", "drop_ssim",
              "psnr_quant_vs_float")


def quantized_input_size(graph_module: torch.nn.Module) -> int | None:
    """The square tile a quantized graph was exported at (from its recorded input shape), or None."""
    from quantize.ptq import quantization_info

    shape = quantization_info(graph_module).get("input_shape") if hasattr(graph_module, "meta") else None
    if not shape:
        return None
    if shape[-1] != shape[-2]:
        raise ZooError(f"quantized model input {shape} is not square", "quantize with a square --tile")
    return int(shape[-1])


def _restore(fn, image: torch.Tensor, card, tile: int, overlap: int) -> torch.Tensor:
    from zoo.data.io import quantize
    from zoo.tiling import tiled_forward

    with torch.no_grad():
        out = tiled_forward(fn, image, tile=tile, overlap=overlap, size_multiple=card.size_multiple,
                            scale=card.scale)
    return quantize(out.clamp(0.0, 1.0), 8)


def accuracy_drop_report(float_model: torch.nn.Module, quantized_model: torch.nn.Module, card, *,
                         dataset: str = "bsd68", degradation: str | None = None,
                         data_root: str | Path | None = None, limit: int | None = None, seed: int = 0,
                         tile: int | None = None, overlap: int | None = None,
                         json_path: str | Path | None = None, progress: bool = False) -> dict:
    """Float vs quantized PSNR/SSIM on ``dataset`` with ``degradation`` (default: the card's).

    Args:
        float_model, quantized_model: map NCHW batches in [0, 1] to restored batches; the
            quantized one takes ``tile`` x ``tile`` inputs only.
        card: the model's :class:`zoo.registry.ModelCard` (task, scale, size multiple, overlap).
        tile: input tile (default: the quantized graph's recorded input size, else the card's).
        overlap: tile overlap in pixels (default: the card's, reduced to fit a small tile).
        limit, seed, data_root: as in :func:`zoo.data.datasets.open_dataset`.
        json_path: also write the result there (atomically).
    Returns:
        ``{"dataset", "degradation", "tile", "overlap", "metric", "rows": [...], "mean": {...}}``;
        PSNR in dB on the 0-255 scale, SSIM in [-1, 1]; ``drop_*`` = float - quantized.
    """
    from zoo.atomic import write_json
    from zoo.data.datasets import open_dataset
    from zoo.evaluate import MetricSettings, degradation_for, measure
    from zoo.metrics import psnr

    exported_tile = quantized_input_size(quantized_model)
    if tile and exported_tile and tile != exported_tile:
        raise ZooError(f"the quantized model takes {exported_tile}x{exported_tile} tiles, not {tile}",
                       f"use tile {exported_tile} or quantize again with --tile {tile}")
    tile = tile or exported_tile or card.tile
    if not tile or tile % card.size_multiple:
        raise ZooError(f"tile {tile} is not a multiple of {card.name}'s size multiple {card.size_multiple}",
                       f"use a tile that is a multiple of {card.size_multiple}")
    if overlap is None:
        # The card's overlap, reduced where a small tile cannot hold it (tiling needs 2 * overlap
        # < tile after rounding the overlap up to the size multiple).
        multiple = card.size_multiple
        largest = (tile - 1) // 2 // multiple * multiple
        overlap = min(-(-card.overlap // multiple) * multiple, largest)
    degrade = degradation_for(card, degradation)
    data = open_dataset(dataset, degradation=degrade, data_root=data_root, limit=limit, seed=seed)
    settings = MetricSettings.for_task(card.task, card.scale)
    float_model = float_model.eval()

    indices = range(len(data))
    if progress:
        from tqdm.auto import tqdm

        indices = tqdm(indices, desc=f"report {card.name}", unit="img")
    rows = []
    for index in indices:
        sample = data[index]
        float_out = _restore(float_model, sample.degraded, card, tile, overlap)
        quant_out = _restore(quantized_model, sample.degraded, card, tile, overlap)
        float_metrics = measure(float_out, sample.target, settings)
        quant_metrics = measure(quant_out, sample.target, settings)
        rows.append({
            "image": sample.name,
            "float_psnr": float_metrics["psnr"], "float_ssim": float_metrics["ssim"],
            "quant_psnr": quant_metrics["psnr"], "quant_ssim": quant_metrics["ssim"],
            "drop_psnr": float_metrics["psnr"] - quant_metrics["psnr"],
            "drop_ssim": float_metrics["ssim"] - quant_metrics["ssim"],
            "psnr_quant_vs_float": psnr(quant_out, float_out, crop_border=settings.crop_border,
                                        y_channel=settings.y_channel),
        })
    result = {
        "schema_version": REPORT_SCHEMA_VERSION,
        "model": card.name,
        "dataset": dataset,
        "degradation": degrade.spec,
        "seed": seed,
        "images": len(rows),
        "tile": tile,
        "overlap": overlap,
        "metric": {"y_channel": settings.y_channel, "crop_border": settings.crop_border,
                   "outputs": "clamped to [0, 1] and rounded to 8 bits"},
        "rows": rows,
        "mean": {key: statistics.fmean(row[key] for row in rows) for key in _MEAN_KEYS},
    }
    if json_path is not None:
        write_json(json_path, result)
    return result


def format_report_table(result: dict) -> str:
    """Plain-text table of :func:`accuracy_drop_report` (per image, then the mean)."""
    rows = result["rows"]
    width = max([len("image"), len("mean"), *(len(str(row["image"])) for row in rows)])
    header = (f"{'image':<{width}}  {'float PSNR':>10} {'int8 PSNR':>9} {'drop':>6}  "
              f"{'float SSIM':>10} {'int8 SSIM':>9} {'drop':>7}  {'int8 vs float':>13}")
    lines = [f"{result['model']} on {result['dataset']} ({result['degradation']}), tile {result['tile']}",
             header, "-" * len(header)]
    for row in [*rows, {"image": "mean", **result["mean"]}]:
        lines.append(f"{str(row['image']):<{width}}  {row['float_psnr']:>10.2f} {row['quant_psnr']:>9.2f} "
                     f"{row['drop_psnr']:>6.2f}  {row['float_ssim']:>10.4f} {row['quant_ssim']:>9.4f} "
                     f"{row['drop_ssim']:>7.4f}  {row['psnr_quant_vs_float']:>13.2f}")
    return "\n".join(lines)
