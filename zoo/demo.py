"""The main job of ``make demo``: denoise the bundled photos with what the zoo can honestly run.

It picks the first registered denoiser that ships trained weights; until one ships it uses the
zero-shot INR denoiser, which needs no weights. Models without weights are listed, never run:
a randomly initialised network's output is not a restoration.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from zoo.errors import ZooError

#: Degradation applied to the bundled photos (sigma on the 0-255 scale, unclipped).
DEMO_DEGRADATION = "gaussian:25"


def pick_demo_model() -> str:
    """Name of the denoiser the demo runs: a shipped trained one if any, else ``inr-zeroshot``."""
    from zoo.registry import list_models

    trained = [c.name for c in list_models() if c.task == "denoise" and c.has_weights and not c.zero_shot]
    return trained[0] if trained else "inr-zeroshot"


def centre_crop(image: torch.Tensor, size: int) -> torch.Tensor:
    """The central ``size`` x ``size`` pixels of a CHW image (the whole image if it is smaller)."""
    _, height, width = image.shape
    if size <= 0 or (height <= size and width <= size):
        return image
    top, left = max(0, (height - size) // 2), max(0, (width - size) // 2)
    return image[:, top:top + size, left:left + size]


def run_demo(output: str | Path = "demo_out", *, limit: int = 6, crop: int = 0, overwrite: bool = True,
             model_name: str | None = None, progress: bool = False) -> dict:
    """Degrade bundled photos with ``DEMO_DEGRADATION``, restore them, print and return the table.

    Writes ``<name>_clean.png``, ``<name>_noisy.png`` (clipped for viewing; the model sees the
    unclipped values), ``<name>_restored.png`` and ``demo.json`` into ``output``.
    """
    from zoo.atomic import write_json
    from zoo.data.bundled import bundled_photos
    from zoo.data.degradations import parse_degradation
    from zoo.data.io import quantize, read_image, write_image
    from zoo.evaluate import MetricSettings, measure
    from zoo.inference import TileSettings, pick_device, restore_tensor
    from zoo.registry import create_model, list_models

    output = Path(output)
    photos = [p for p in bundled_photos() if not p.in_evaluation_sets][:limit]
    if not photos:
        raise ZooError("no bundled photos were found", "pip install scikit-image sporco")
    model_name = model_name or pick_demo_model()
    model, card = create_model(model_name)
    device = pick_device("auto")
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
        row = {"photo": photo.name, "license": photo.license, "size": f"{clean.shape[2]}x{clean.shape[1]}",
               "seconds": round(seconds, 2)}
        row.update({f"noisy_{k}": v for k, v in measure(noisy, clean, settings).items()})
        row.update(measure(restored, clean, settings))
        row.update({k: v for k, v in (getattr(model, "last_report", None) or {}).items() if k not in row})
        rows.append(row)

    print(f"{'photo':<22} {'size':>9} {'noisy PSNR':>10} {'PSNR':>7} {'noisy SSIM':>10} {'SSIM':>6} {'sec':>6}")
    for row in rows:
        print(f"{row['photo'][:22]:<22} {row['size']:>9} {row['noisy_psnr']:>10.2f} {row['psnr']:>7.2f} "
              f"{row['noisy_ssim']:>10.4f} {row['ssim']:>6.4f} {row['seconds']:>6.1f}")
    untrained = [c.name for c in list_models() if not c.zero_shot and not c.has_weights]
    if untrained:
        print(f"not run (no trained weights ship yet; pass --weights to `zoo restore`/`zoo eval`): "
              f"{', '.join(untrained)}")
    result = {"model": model_name, "degradation": DEMO_DEGRADATION, "device": str(device), "photos": rows,
              "models_without_weights": untrained}
    write_json(output / "demo.json", result)
    print(f"wrote {output}/ (clean, noisy and restored PNGs, demo.json)")
    return result
