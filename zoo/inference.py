"""Restoring photos with a zoo model: device choice, tiling and file handling.

Used by ``zoo restore``, ``zoo eval`` and ``zoo demo``; the same functions are what tests call.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from zoo.errors import ZooError
from zoo.registry import ModelCard

#: Image extensions ``zoo restore`` writes; the input's own format is kept where it is listed.
OUTPUT_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff")


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cpu``/``cuda``/``cuda:N`` as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ZooError(f"device {name!r} was asked for but CUDA is not available", "use --device cpu")
    try:
        return torch.device(name)
    except RuntimeError as err:
        raise ZooError(f"unknown device {name!r}", "use auto, cpu, cuda or cuda:N") from err


@dataclass
class TileSettings:
    """Tile size and overlap in input pixels; ``tile=None`` runs the whole image at once."""

    tile: int | None
    overlap: int

    @classmethod
    def for_card(cls, card: ModelCard, tile: int | None = None, overlap: int | None = None) -> "TileSettings":
        """The card's defaults, overridden by the user's values (``tile=0`` disables tiling)."""
        chosen_tile = card.tile if tile is None else (None if tile == 0 else tile)
        chosen_overlap = card.overlap if overlap is None else overlap
        return cls(chosen_tile, chosen_overlap if chosen_tile else 0)


def restore_tensor(model: torch.nn.Module, card: ModelCard, image: torch.Tensor, tiles: TileSettings,
                   *, device: torch.device | None = None, progress: bool = False) -> torch.Tensor:
    """Restore one image (3,H,W float32 in [0,1]; noisy inputs may exceed the range).

    Returns (3, H*scale, W*scale) float32 on the CPU, clamped to [0, 1]. Tiles and pads as the card
    requires so any image size works.
    """
    from zoo.tiling import tiled_forward

    if image.ndim != 3 or image.shape[0] != 3:
        raise ZooError(f"expected a 3xHxW RGB image tensor, got shape {tuple(image.shape)}",
                       "read images with zoo.data.io.read_image")
    device = device or next(iter(model.parameters()), torch.empty(0)).device
    with torch.inference_mode():
        out = tiled_forward(model, image.to(device), tile=tiles.tile, overlap=tiles.overlap,
                            size_multiple=card.size_multiple, scale=card.scale, progress=progress)
    return out.clamp_(0, 1).cpu()


def plan_outputs(inputs: Sequence[str | Path], output: str | Path, *, overwrite: bool) -> list[Path]:
    """Map input files to output files, refusing before any work would clobber something.

    One input and an ``output`` with an image extension -> that file; otherwise ``output`` is a
    folder and each result keeps its input's name (PNG when the input's format is not writable).
    """
    inputs = [Path(p) for p in inputs]
    output = Path(output)
    if not inputs:
        raise ZooError("no input images were given", "name one or more image files")
    for path in inputs:
        if not path.is_file():
            raise ZooError(f"input {path} does not exist or is not a file", "check the path")
    if len(inputs) == 1 and output.suffix.lower() in OUTPUT_EXTENSIONS:
        targets = [output]
    else:
        if output.suffix.lower() in OUTPUT_EXTENSIONS:
            raise ZooError(f"{len(inputs)} inputs cannot all be written to one file {output}",
                           "give a folder with -o")
        if output.exists() and not output.is_dir():
            raise ZooError(f"output {output} exists and is not a folder", "give a folder with -o")
        targets = [output / (p.name if p.suffix.lower() in OUTPUT_EXTENSIONS else p.stem + ".png") for p in inputs]
    if len(set(targets)) != len(targets):
        raise ZooError("two inputs have the same file name and would overwrite each other's output",
                       "restore them in separate runs or rename one")
    existing = [str(t) for t in targets if t.exists()]
    if existing and not overwrite:
        raise ZooError(f"output exists: {', '.join(existing[:3])}" + (" ..." if len(existing) > 3 else ""),
                       "pass --overwrite to replace it or choose another -o")
    return targets


def restore_files(model_name: str, inputs: Sequence[str | Path], output: str | Path, *,
                  weights: str | Path | None = None, tile: int | None = None, overlap: int | None = None,
                  device: str = "auto", overwrite: bool = False, progress: bool = True) -> list[dict]:
    """Restore image files with a zoo model; returns one record per image (paths, sizes, seconds).

    Every input is read and every output path checked before the first result is written, and
    each file is written atomically in its input's bit depth with its alpha channel re-attached.
    """
    from zoo.data.io import read_image, write_image
    from zoo.registry import create_model

    targets = plan_outputs(inputs, output, overwrite=overwrite)
    model, card = create_model(model_name, weights)
    torch_device = pick_device(device)
    model.to(torch_device)
    if hasattr(model, "progress"):
        model.progress = progress
    tiles = TileSettings.for_card(card, tile, overlap)
    loaded = [read_image(p) for p in inputs]  # fail on a bad input before anything is written
    for image, target in zip(loaded, targets):
        if image.alpha is not None and target.suffix.lower() in (".jpg", ".jpeg"):
            raise ZooError(f"{image.path} has an alpha channel that JPEG output {target} cannot keep",
                           "write PNG (-o with .png or a folder)")
    records = []
    for image, target in zip(loaded, targets):
        start = time.perf_counter()
        restored = restore_tensor(model, card, image.image, tiles, device=torch_device, progress=progress)
        seconds = time.perf_counter() - start
        alpha = image.alpha
        if alpha is not None and card.scale != 1:
            alpha = torch.nn.functional.interpolate(alpha[None], scale_factor=card.scale, mode="bilinear")[0]
        bit_depth = image.bit_depth if target.suffix.lower() in (".png", ".tif", ".tiff") else 8
        write_image(target, restored, bit_depth=bit_depth, alpha=alpha, overwrite=overwrite,
                    icc_profile=image.icc_profile)
        record = {"input": str(image.path), "output": str(target), "height": int(image.image.shape[1]),
                  "width": int(image.image.shape[2]), "seconds": round(seconds, 4)}
        record.update(getattr(model, "last_report", None) or {})
        records.append(record)
    return records
