"""Calibration and fine-tuning crops for quantization, drawn from the training pool only.

The observers of post-training quantization learn activation ranges from what they are shown,
so the calibration inputs must look like what the model sees in use: *degraded* crops (noisy,
blurred, low-resolution) made with the model's training degradation, at the export tile size.
They come from Urban100 under the data root (the project's training pool) or from the bundled
CC0/public-domain photos not flagged as evaluation images. Set5, Set14 and CBSD68 are refused:
calibrating on evaluation images would leak them into the quantized model.

The same machinery draws held-out crops (other images of the pool, ``skip_images``) for the
sensitivity sweep and (degraded, clean) pairs for quantization-aware training.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import torch

from zoo.errors import ZooError

#: Accepted calibration sources besides a folder path.
SOURCES = ("auto", "urban100", "bundled")


def _training_pool_images(source: str | os.PathLike, data_root: str | os.PathLike | None) -> tuple[str, list[Path]]:
    """``(source name, image paths)`` for a calibration source; refuses evaluation sets."""
    from zoo.data.datasets import (
        DATASET_ALIASES,
        EVALUATION_SETS,
        TRAINING_POOL,
        check_not_evaluation,
        image_files,
        resolve_data_root,
    )

    key = str(source).lower()
    key = DATASET_ALIASES.get(key, key)
    if key in EVALUATION_SETS:
        raise ZooError(f"{source} is an evaluation set and cannot be used for calibration",
                       f"calibrate on {TRAINING_POOL} (the training pool) or the bundled photos")
    if key == "auto":
        try:
            folder = resolve_data_root(data_root) / TRAINING_POOL
        except ZooError:
            folder = None
        if folder is not None and folder.is_dir() and image_files(folder):
            return TRAINING_POOL, image_files(folder)
        return _training_pool_images("bundled", data_root)
    if key == TRAINING_POOL:
        folder = resolve_data_root(data_root) / TRAINING_POOL
        if not folder.is_dir():
            raise ZooError(f"training pool {folder} is missing", "pass --data-root, or --calib-source bundled")
        return TRAINING_POOL, image_files(folder)
    if key == "bundled":
        from zoo.data.bundled import bundled_photos

        photos = [photo for photo in bundled_photos() if not photo.in_evaluation_sets]
        if not photos:
            raise ZooError("no bundled photos outside the evaluation sets are installed",
                           "pip install scikit-image sporco, or pass --data-root for urban100")
        return "bundled", [photo.path for photo in photos]
    location = Path(source).expanduser()
    check_not_evaluation(location, "calibration", data_root=data_root)
    if location.is_dir():
        paths = image_files(location)
    elif location.is_file():
        paths = [location]
    else:
        raise ZooError(f"unknown calibration source {str(source)!r}",
                       f"use {', '.join(SOURCES)} or a folder of training images")
    if not paths:
        raise ZooError(f"no images in {location}", "use a folder of training images")
    return str(location), paths


@dataclass
class CalibrationSet:
    """Degraded crops (model inputs) and their clean counterparts (targets).

    ``inputs[i]``: (1, 3, tile, tile) float32, degraded (noise is not clipped, so values may
    leave [0, 1] as in training); ``targets[i]``: (1, 3, tile*scale, tile*scale) clean crop in
    [0, 1]; ``crops[i]``: "image name@top,left" of the clean crop. Iterating yields the inputs,
    so a CalibrationSet can be passed as ``calibration_batches``.
    """

    source: str
    degradation: str
    tile: int
    seed: int
    inputs: list[torch.Tensor] = field(default_factory=list)
    targets: list[torch.Tensor] = field(default_factory=list)
    crops: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.inputs)

    def __iter__(self) -> Iterator[torch.Tensor]:
        return iter(self.inputs)

    def pairs(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(degraded input, clean target) pairs, each (1, 3, H, W)."""
        return zip(self.inputs, self.targets)

    def batch(self, indices) -> tuple[torch.Tensor, torch.Tensor]:
        """The inputs and targets at ``indices`` stacked into two NCHW batches."""
        indices = list(indices)
        return (torch.cat([self.inputs[i] for i in indices]), torch.cat([self.targets[i] for i in indices]))

    def describe(self) -> dict:
        """JSON-ready summary for sidecars and reports."""
        return {"source": self.source, "count": len(self), "tile": self.tile,
                "degradation": self.degradation, "seed": self.seed,
                "images": sorted({crop.split("@")[0] for crop in self.crops})}


def _degradation(spec):
    if isinstance(spec, str):
        from zoo.data.degradations import parse_degradation

        return parse_degradation(spec)
    if not callable(spec):
        raise TypeError(f"degradation must be a spec string or callable(clean, seed), got {spec!r}")
    return spec


def build_calibration_set(degradation, *, tile: int, count: int, source: str | os.PathLike = "auto",
                          data_root: str | os.PathLike | None = None, seed: int = 0,
                          skip_images: int = 0) -> CalibrationSet:
    """Draw ``count`` random degraded crops from the training pool.

    Args:
        degradation: spec (e.g. ``"gaussian:15-50"``, ``"bicubic:x4"``) or a degradation object
            (``zoo.data.degradations``): the model's training degradation.
        tile: crop size in model-input pixels (the export tile; the clean crop is ``tile *
            scale`` for super-resolution).
        count: number of crops; images are visited in a seeded random order, one crop each,
            cycling when ``count`` exceeds the images available.
        source: ``auto`` (Urban100 under the data root, else the bundled photos), ``urban100``,
            ``bundled`` or a folder of training images. Set5/Set14/CBSD68 (by name or path)
            raise :class:`ZooError`.
        seed: fixes the image order, crop positions and degradation noise.
        skip_images: leave out the first ``skip_images`` images of the seeded order (held-out
            crops disjoint from a calibration set drawn with the same seed and ``count``).
    """
    from zoo.data.io import read_image
    from zoo.tiling import pad_to_size

    if count < 1:
        raise ZooError(f"calibration needs at least one crop, got {count}", "pass --calib-images 1 or more")
    if tile < 1:
        raise ZooError(f"tile must be positive, got {tile}", "pass --tile, e.g. 256")
    degrade = _degradation(degradation)
    scale = int(getattr(degrade, "scale", 1) or 1)
    name, paths = _training_pool_images(source, data_root)
    generator = torch.Generator().manual_seed(int(seed))
    order = [paths[i] for i in torch.randperm(len(paths), generator=generator).tolist()]
    available = order[skip_images:]
    if not available:
        raise ZooError(f"{name} has {len(paths)} images, none left after skipping {skip_images}",
                       "use a larger pool or fewer held-out images")

    crop = tile * scale
    result = CalibrationSet(source=name, degradation=getattr(degrade, "spec", repr(degrade)), tile=tile, seed=seed)
    for index in range(count):
        path = available[index % len(available)]
        image = read_image(path).image
        height, width = image.shape[-2:]
        if height < crop or width < crop:
            image = pad_to_size(image, max(height, crop), max(width, crop), mode="reflect")
            height, width = image.shape[-2:]
        top = int(torch.randint(0, height - crop + 1, (1,), generator=generator))
        left = int(torch.randint(0, width - crop + 1, (1,), generator=generator))
        clean = image[:, top:top + crop, left:left + crop].contiguous()
        target_of = getattr(degrade, "target", None)
        target = target_of(clean) if callable(target_of) else clean
        degraded = degrade(target, int(seed) * 1_000_003 + skip_images * 1009 + index)
        result.inputs.append(degraded.unsqueeze(0).float())
        result.targets.append(target.unsqueeze(0).float())
        result.crops.append(f"{path.stem}@{top},{left}")
    return result


def training_pair_sampler(calibration: CalibrationSet, batch_size: int = 4, seed: int = 0, *,
                          fresh_degradation: bool = False):
    """``step -> (inputs, targets)``: random NCHW batches of ``batch_size`` pairs from
    ``calibration`` (for :func:`quantize.qat.quantize_qat`); seeded, reproducible per step.

    ``fresh_degradation``: instead of the set's fixed degraded crops, each pair is the clean crop
    under a random flip / 90-degree rotation, degraded anew (``calibration.degradation``, a new
    noise seed per step and sample). With a few dozen crops and hundreds of QAT steps, fixed noise
    is seen dozens of times and the network starts to fit that very noise.
    """
    if batch_size < 1:
        raise ZooError(f"batch size must be positive, got {batch_size}", "use 1 or more")
    degrade = _degradation(calibration.degradation) if fresh_degradation else None

    def sample(step: int) -> tuple[torch.Tensor, torch.Tensor]:
        step_seed = int(seed) * 7919 + int(step)
        generator = torch.Generator().manual_seed(step_seed)
        indices = torch.randint(0, len(calibration), (batch_size,), generator=generator).tolist()
        if degrade is None:
            return calibration.batch(indices)
        inputs, targets = [], []
        for slot, index in enumerate(indices):
            target = calibration.targets[index][0]
            turns, flip = (int(v) for v in torch.randint(0, 4, (2,), generator=generator))
            target = torch.rot90(target, turns, dims=(1, 2))
            target = torch.flip(target, dims=(2,)) if flip % 2 else target
            noise_seed = 2_000_003 + step_seed * 64 + slot
            inputs.append(degrade(target.contiguous(), noise_seed).unsqueeze(0).float())
            targets.append(target.unsqueeze(0).contiguous())
        return torch.cat(inputs), torch.cat(targets)

    return sample
