"""Benchmark evaluation with the literature's conventions (``zoo eval``).

Conventions (docs/conventions.md): the degraded input is fed to the model as generated (Gaussian
noise unclipped, as in the DnCNN/FFDNet protocol); the restored output is clamped and quantized
to 8 bits, as a saved PNG would be, before PSNR/SSIM; denoising, deblurring and deraining are
measured on RGB without a border crop, super-resolution on the BT.601 Y channel with a border of
``scale`` pixels cropped. The "input" row is the degraded image itself (bicubic upscaling of the
low-resolution input for super-resolution), the reference every model must beat.
"""

from __future__ import annotations

import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from zoo.errors import ZooError

#: Version of the JSON written by :func:`evaluate`.
EVAL_SCHEMA_VERSION = 1


@dataclass
class MetricSettings:
    """How PSNR/SSIM are measured: Y channel or RGB, and pixels cropped at each border."""

    y_channel: bool
    crop_border: int

    @classmethod
    def for_task(cls, task: str, scale: int, y_channel: bool | None = None,
                 crop_border: int | None = None) -> "MetricSettings":
        """The task's settings (``zoo.tasks``: Y and a border of ``scale`` for super-resolution,
        RGB without a crop otherwise), each overridden when given."""
        from zoo.tasks import get_task

        settings = get_task(task)
        return cls(settings.y_channel if y_channel is None else y_channel,
                   settings.crop_border(scale) if crop_border is None else crop_border)


def measure(pred: torch.Tensor, target: torch.Tensor, settings: MetricSettings, *,
            name: str = "the image") -> dict[str, float]:
    """PSNR (dB) and SSIM of ``pred`` against ``target`` (both 3xHxW in [0,1]).

    A target too small to measure (SSIM's window must fit once the border is cropped) raises
    :class:`ZooError` naming ``name`` and the size it needs.
    """
    from zoo.metrics import _SSIM_WINDOW, psnr, ssim

    height, width = (int(v) for v in target.shape[-2:])
    border = settings.crop_border
    if min(height, width) - 2 * border < _SSIM_WINDOW:
        cropped = f", {max(0, width - 2 * border)}x{max(0, height - 2 * border)} after a border crop of {border}" \
            if border else ""
        side = _SSIM_WINDOW + 2 * border
        raise ZooError(f"{name} is {width}x{height} pixels{cropped}: smaller than SSIM's "
                       f"{_SSIM_WINDOW}x{_SSIM_WINDOW} window", f"use images of at least {side}x{side} pixels")
    kwargs = {"crop_border": settings.crop_border, "y_channel": settings.y_channel}
    return {"psnr": psnr(pred, target, **kwargs), "ssim": ssim(pred, target, **kwargs)}


def degradation_for(card, spec: str | None = None):
    """Parse ``spec`` (default: the card's task default) and check it fits the model's scale."""
    from zoo.data.degradations import parse_degradation

    spec = spec or card.default_degradation
    degrade = parse_degradation(spec)
    if degrade.scale != card.scale:
        raise ZooError(f"degradation {spec!r} has scale x{degrade.scale} but {card.name} upscales x{card.scale}",
                       f"use --degradation {card.default_degradation}" + ("" if card.scale > 1 else
                                                                          " or another noise, blur or rain one"))
    return degrade


def input_reference(degraded: torch.Tensor, scale: int) -> torch.Tensor:
    """The degraded image at the target's size, the "do nothing" baseline every row is compared
    with: ``degraded`` itself for ``scale`` 1, else its MATLAB-bicubic upscaling by ``scale``
    clamped to [0, 1] (the bicubic row of SR papers). (..., 3, H, W) float32 in [0, 1]."""
    if scale == 1:
        return degraded
    from zoo.data.resize import imresize

    return imresize(degraded, scale).clamp(0, 1)


def mean_of(rows: list[dict], key: str) -> float:
    """Mean of ``row[key]`` over the rows that have a value for it (NaN when none do)."""
    values = [r[key] for r in rows if r.get(key) is not None]
    return statistics.fmean(values) if values else float("nan")


def evaluate(model_name: str, dataset: str, *, degradation: str | None = None,
             weights: str | Path | None = None, untrained: bool = False, data_root: str | Path | None = None,
             limit: int | None = None, seed: int = 0, tile: int | None = None, overlap: int | None = None,
             y_channel: bool | None = None, crop_border: int | None = None, device: str = "auto",
             json_path: str | Path | None = None, progress: bool = True) -> dict:
    """Evaluate a model on a benchmark set; returns (and optionally writes) the results dict.

    ``dataset`` is a set name (set5, set14, bsd68, urban100, bundled) or a folder of clean images;
    ``degradation`` a spec such as ``gaussian:25`` (default: the model's task default). Results
    hold per-image and mean PSNR (dB) / SSIM of the input and the output, and model seconds.
    """
    from tqdm import tqdm

    from zoo.atomic import write_json
    from zoo.data.datasets import open_dataset
    from zoo.data.io import quantize
    from zoo.inference import TileSettings, pick_device, restore_tensor
    from zoo.registry import create_model

    model, card = create_model(model_name, weights, untrained=untrained)
    degrade = degradation_for(card, degradation)
    spec = degrade.spec
    data = open_dataset(dataset, degradation=degrade, data_root=data_root, limit=limit, seed=seed)
    torch_device = pick_device(device)
    model.to(torch_device)
    if hasattr(model, "progress"):
        model.progress = False
    tiles = TileSettings.for_card(card, tile, overlap)
    metric_settings = MetricSettings.for_task(card.task, card.scale, y_channel, crop_border)

    rows = []
    for index in tqdm(range(len(data)), desc=f"eval {model_name}", disable=not progress, unit="img"):
        sample = data[index]
        reference = input_reference(sample.degraded, card.scale)
        row = {"image": sample.name, "height": int(sample.target.shape[1]), "width": int(sample.target.shape[2])}
        # The input first: an image too small to measure is refused before the model runs on it.
        row.update({f"input_{k}": v for k, v in measure(reference, sample.target, metric_settings,
                                                          name=f"image {sample.name}").items()})
        start = time.perf_counter()
        restored = restore_tensor(model, card, sample.degraded, tiles, device=torch_device)
        if torch_device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        row.update(measure(quantize(restored, 8), sample.target, metric_settings))
        row["seconds"] = seconds
        row.update({k: v for k, v in (getattr(model, "last_report", None) or {}).items() if k not in row})
        rows.append(row)

    result = {
        "schema_version": EVAL_SCHEMA_VERSION,
        "model": model_name,
        "task": card.task,
        "weights": "untrained (random init): NOT a restoration" if getattr(model, "zoo_untrained", False)
        else (str(weights) if weights else ("zero-shot" if card.zero_shot else str(card.weights_path))),
        "untrained": bool(getattr(model, "zoo_untrained", False)),
        "dataset": str(dataset),
        "degradation": spec,
        "seed": seed,
        "metrics": {"y_channel": metric_settings.y_channel, "crop_border": metric_settings.crop_border,
                    "output_quantized_to_8_bit": True},
        "tile": tiles.tile,
        "overlap": tiles.overlap,
        "device": str(torch_device),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "images": rows,
        "mean": {key: mean_of(rows, key) for key in ("input_psnr", "input_ssim", "psnr", "ssim", "seconds")},
    }
    if json_path is not None:
        write_json(json_path, result)
    return result


def format_table(result: dict) -> str:
    """A plain-text table of an :func:`evaluate` result: per image, then the mean."""
    header = f"{'image':<24} {'input PSNR':>10} {'PSNR':>8} {'input SSIM':>10} {'SSIM':>7} {'sec':>7}"
    lines = [header, "-" * len(header)]
    for row in result["images"] + [dict(result["mean"], image="mean")]:
        lines.append(f"{row['image'][:24]:<24} {row['input_psnr']:>10.2f} {row['psnr']:>8.2f} "
                     f"{row['input_ssim']:>10.4f} {row['ssim']:>7.4f} {row['seconds']:>7.2f}")
    settings = result["metrics"]
    channel = "Y (BT.601)" if settings["y_channel"] else "RGB"
    lines.append(f"{result['model']} on {result['dataset']} with {result['degradation']}: {channel}, "
                 f"border crop {settings['crop_border']}, outputs quantized to 8 bits")
    if result["untrained"]:
        lines.append("WARNING: untrained (random) weights - the output is NOT a restoration; "
                     "these numbers only check the pipeline and its speed")
    return "\n".join(lines)
