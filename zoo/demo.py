"""The main job of ``make demo``: restore the bundled photos with what the zoo can honestly run.

Denoising: it picks the first registered denoiser that ships trained weights; until one ships it
uses the zero-shot INR denoiser, which needs no weights. Super-resolution: when a
super-resolution model ships trained weights, the same photos are downscaled with its
``bicubic:xS`` degradation and upscaled again, against bicubic upscaling. Models without weights
are listed, never run: a randomly initialised network's output is not a restoration.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from zoo.errors import ZooError

#: Degradation applied to the bundled photos (sigma on the 0-255 scale, unclipped).
DEMO_DEGRADATION = "gaussian:25"
#: Centre crop (high-resolution pixels) of the super-resolution part when ``crop`` is 0: Y-channel
#: SSIM of whole photos takes longer than the model, and a crop shows the detail as well.
SR_CROP = 256


def shipped_models(task: str) -> list[str]:
    """Names of the registered models of ``task`` that ship trained weights (zero-shot ones excluded)."""
    from zoo.registry import list_models

    return [c.name for c in list_models() if c.task == task and c.ships_trained_weights]


def pick_demo_model() -> str:
    """Name of the denoiser the demo runs: a shipped trained one if any, else ``inr-zeroshot``."""
    trained = shipped_models("denoise")
    return trained[0] if trained else "inr-zeroshot"


def pick_demo_sr_model() -> str | None:
    """Name of the super-resolution model the demo runs: the first one with shipped weights, or None."""
    trained = shipped_models("super-resolution")
    return trained[0] if trained else None


def centre_crop(image: torch.Tensor, size: int) -> torch.Tensor:
    """The central ``size`` x ``size`` pixels of a CHW image (the whole image if it is smaller)."""
    _, height, width = image.shape
    if size <= 0 or (height <= size and width <= size):
        return image
    top, left = max(0, (height - size) // 2), max(0, (width - size) // 2)
    return image[:, top:top + size, left:left + size]


def _size(image: torch.Tensor) -> str:
    return f"{image.shape[2]}x{image.shape[1]}"


def _with_mean(rows: list[dict], keys: tuple[str, ...]) -> dict:
    """The mean of ``keys`` over ``rows`` (zoo.evaluate's mean: missing values skipped)."""
    from zoo.evaluate import mean_of

    return {key: mean_of(rows, key) for key in keys}


def _print_table(rows: list[dict], mean: dict, before: str) -> None:
    """Per photo and the mean: PSNR/SSIM of the input (``before``: noisy, bicubic) and of the output."""
    width = max(10, len(before) + 5)
    print(f"{'photo':<22} {'size':>9} {before + ' PSNR':>{width}} {'PSNR':>7} {before + ' SSIM':>{width}} "
          f"{'SSIM':>6} {'sec':>6}")
    for row in rows + [dict(mean, photo="mean", size="")]:
        print(f"{row['photo'][:22]:<22} {row['size']:>9} {row[before + '_psnr']:>{width}.2f} {row['psnr']:>7.2f} "
              f"{row[before + '_ssim']:>{width}.4f} {row['ssim']:>6.4f} {row['seconds']:>6.1f}")


def _denoise(photos, output: Path, *, crop: int, overwrite: bool, model_name: str | None, device,
             progress: bool) -> dict:
    """The denoising part of :func:`run_demo`: prints its table, returns its part of demo.json."""
    from zoo.data.degradations import parse_degradation
    from zoo.data.io import quantize, read_image, write_image
    from zoo.evaluate import MetricSettings, measure
    from zoo.inference import TileSettings, restore_tensor
    from zoo.registry import create_model

    model_name = model_name or pick_demo_model()
    model, card = create_model(model_name)
    model.to(device)
    if hasattr(model, "progress"):
        model.progress = progress
    degrade = parse_degradation(DEMO_DEGRADATION)
    settings = MetricSettings.for_task(card.task, card.scale)
    tiles = TileSettings.for_card(card)

    print(f"zoo demo: {len(photos)} bundled photos, {DEMO_DEGRADATION} noise, model {model_name} "
          f"({'zero-shot, no trained weights needed' if card.zero_shot else 'shipped weights'}), device {device}")
    rows = []
    for index, photo in enumerate(photos):
        clean = centre_crop(read_image(photo.path).image, crop)
        noisy = degrade(clean, index)
        start = time.perf_counter()
        restored = quantize(restore_tensor(model, card, noisy, tiles, device=device, progress=progress))
        seconds = time.perf_counter() - start
        for suffix, image in (("clean", clean), ("noisy", noisy), ("restored", restored)):
            write_image(output / f"{photo.name}_{suffix}.png", image.clamp(0, 1), overwrite=overwrite)
        row = {"photo": photo.name, "license": photo.license, "size": _size(clean), "seconds": round(seconds, 2)}
        name = f"photo {photo.name}"
        row.update({f"noisy_{k}": v for k, v in measure(noisy, clean, settings, name=name).items()})
        row.update(measure(restored, clean, settings, name=name))
        row.update({k: v for k, v in (getattr(model, "last_report", None) or {}).items() if k not in row})
        rows.append(row)
    mean = _with_mean(rows, ("noisy_psnr", "noisy_ssim", "psnr", "ssim", "seconds"))
    _print_table(rows, mean, "noisy")
    return {"model": model_name, "degradation": DEMO_DEGRADATION, "device": str(device), "photos": rows,
            "mean": mean}


def _super_resolve(photos, output: Path, *, crop: int, overwrite: bool, model_name: str, device) -> dict:
    """The super-resolution part of :func:`run_demo`: prints its table, returns demo.json's
    ``super_resolution``."""
    from zoo.data.io import quantize, read_image, write_image
    from zoo.evaluate import MetricSettings, degradation_for, input_reference, measure
    from zoo.inference import TileSettings, restore_tensor
    from zoo.registry import create_model

    model, card = create_model(model_name)
    model.to(device)
    degrade = degradation_for(card)  # the card's bicubic:xS, checked against its scale
    settings = MetricSettings.for_task(card.task, card.scale)
    tiles = TileSettings.for_card(card)
    channel = "Y (BT.601)" if settings.y_channel else "RGB"
    print(f"\nzoo demo: super-resolution x{card.scale} of {len(photos)} bundled photos ({crop} px centre crops, "
          f"low-resolution input made with {degrade.spec}), model {model_name} (shipped weights); "
          f"PSNR/SSIM on {channel}, border crop {settings.crop_border}, against bicubic upscaling")
    rows = []
    for index, photo in enumerate(photos):
        high = degrade.target(centre_crop(read_image(photo.path).image, crop))  # mod-cropped to the scale
        low = degrade(high, index)
        bicubic = input_reference(low, card.scale)
        start = time.perf_counter()
        restored = quantize(restore_tensor(model, card, low, tiles, device=device))
        seconds = time.perf_counter() - start
        for suffix, image in (("hr", high), ("lr", low), ("bicubic", bicubic), ("sr", restored)):
            write_image(output / f"{photo.name}_{suffix}.png", image, overwrite=overwrite)
        row = {"photo": photo.name, "license": photo.license, "size": _size(high), "input_size": _size(low),
               "seconds": round(seconds, 2)}
        name = f"photo {photo.name}"
        row.update({f"bicubic_{k}": v for k, v in measure(bicubic, high, settings, name=name).items()})
        row.update(measure(restored, high, settings, name=name))
        rows.append(row)
    mean = _with_mean(rows, ("bicubic_psnr", "bicubic_ssim", "psnr", "ssim", "seconds"))
    _print_table(rows, mean, "bicubic")
    return {"model": model_name, "degradation": degrade.spec, "scale": card.scale, "crop": crop,
            "metrics": {"y_channel": settings.y_channel, "crop_border": settings.crop_border,
                        "output_quantized_to_8_bit": True},
            "photos": rows, "mean": mean}


def run_demo(output: str | Path = "demo_out", *, limit: int = 6, crop: int = 0, overwrite: bool = True,
             model_name: str | None = None, sr_model_name: str | None = None, progress: bool = False) -> dict:
    """Restore bundled photos, print and return the tables (also written to ``demo.json``).

    Denoising: each photo (centre-cropped to ``crop`` pixels when ``crop`` > 0) gets
    ``DEMO_DEGRADATION``; writes ``<name>_clean.png``, ``<name>_noisy.png`` (clipped for viewing; the
    model sees the unclipped values) and ``<name>_restored.png``; RGB PSNR (dB) / SSIM per photo
    and their mean. Super-resolution, when a model with shipped weights exists (``sr_model_name``,
    else :func:`pick_demo_sr_model`): the centre ``crop`` (:data:`SR_CROP` when 0) of each photo is
    downscaled with the model's ``bicubic:xS`` degradation and restored; writes ``<name>_hr.png``
    (the reference), ``<name>_lr.png``, ``<name>_bicubic.png`` and ``<name>_sr.png``; Y PSNR/SSIM
    with a border of ``scale`` (``zoo eval``'s protocol) of bicubic upscaling and of the model,
    under ``demo.json``'s ``super_resolution`` key (null when no model ships weights).
    """
    from zoo.atomic import write_json
    from zoo.data.bundled import bundled_photos
    from zoo.inference import pick_device
    from zoo.registry import list_models

    output = Path(output)
    photos = [p for p in bundled_photos() if not p.in_evaluation_sets][:limit]
    if not photos:
        raise ZooError("no bundled photos were found", "pip install scikit-image sporco")
    device = pick_device("auto")
    result = _denoise(photos, output, crop=crop, overwrite=overwrite, model_name=model_name, device=device,
                      progress=progress)
    sr_model_name = sr_model_name or pick_demo_sr_model()
    if sr_model_name is None:
        print("\nsuper-resolution: no model ships trained weights yet (zoo list)")
        result["super_resolution"] = None
    else:
        result["super_resolution"] = _super_resolve(photos, output, crop=crop or SR_CROP, overwrite=overwrite,
                                                    model_name=sr_model_name, device=device)
    untrained = [c.name for c in list_models() if not c.zero_shot and not c.has_weights]
    if untrained:
        print(f"not run (no trained weights ship yet; pass --weights to `zoo restore`/`zoo eval`): "
              f"{', '.join(untrained)}")
    print("note: the zoo's training configs use these bundled photos (with urban100), so these are not held-out "
          "scores; `zoo info MODEL` has those")
    result["models_without_weights"] = untrained
    write_json(output / "demo.json", result)
    written = "clean, noisy and restored PNGs" + (", hr, lr, bicubic and sr PNGs" if result["super_resolution"] else "")
    print(f"wrote {output}/ ({written}, demo.json)")
    return result
