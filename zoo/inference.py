"""Restoring photos with a zoo model: device choice, tiling and file handling.

Used by ``zoo restore``, ``zoo eval`` and ``zoo demo``; the same functions are what tests call.
The file side (:func:`plan_outputs`, :func:`restore_image_files`: reading, alpha, bit depth,
scale, atomic writing) is shared with ``zoo run`` (:func:`export_mobile.runners.run_artifact`),
which restores with an exported artifact instead of a PyTorch model.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from zoo.errors import ZooError
from zoo.registry import ModelCard

#: Image extensions ``zoo restore`` writes; the input's own format is kept where it is listed.
OUTPUT_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
#: Output extensions that hold 16 bits per channel (zoo.data.io.write_image); others get 8 bits.
SIXTEEN_BIT_EXTENSIONS = (".png",)


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


def input_images(inputs: Sequence[str | Path]) -> list[Path]:
    """The image files ``inputs`` names: files as given, a folder as its image files (sorted by
    name, hidden files skipped; extensions of :data:`zoo.data.io.IMAGE_EXTENSIONS`)."""
    from zoo.data.datasets import image_files
    from zoo.data.io import IMAGE_EXTENSIONS

    files: list[Path] = []
    for path in (Path(p) for p in inputs):
        if path.is_dir():
            found = image_files(path)
            if not found:
                raise ZooError(f"input folder {path} holds no image files",
                               f"put images ({', '.join(IMAGE_EXTENSIONS)}) there or name the files")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise ZooError(f"input {path} does not exist", "check the path")
    if not files:
        raise ZooError("no input images were given", "name one or more image files or folders")
    return files


def plan_outputs(inputs: Sequence[str | Path], output: str | Path, *, overwrite: bool) -> list[Path]:
    """Map the input images to output files, refusing before any work would clobber something or
    could not be written; one target per file of :func:`input_images` (folders expanded).

    ``output`` is a file when one image is restored and it ends in a writable image extension
    (:data:`OUTPUT_EXTENSIONS`); it is a folder when it exists as one or ends with ``/`` (pass a
    string: a :class:`Path` drops the slash), and each result keeps its input's name (PNG when
    the input's format is not writable). Anything else is refused: another image extension
    (``.gif``, ``.webp``, ``.bmp``), an unknown one or none, rather than guessing a folder.
    """
    from zoo.atomic import ensure_writable
    from zoo.data.io import IMAGE_EXTENSIONS

    files = input_images(inputs)
    text = str(output)
    output = Path(output)
    if text.endswith(("/", os.sep)) or output.is_dir():
        ensure_writable(output, "output folder", kind="folder", fix="choose another folder with -o")
        targets = [output / (p.name if p.suffix.lower() in OUTPUT_EXTENSIONS else p.stem + ".png") for p in files]
    else:
        suffix, writable = output.suffix.lower(), ", ".join(OUTPUT_EXTENSIONS)
        if suffix in (*IMAGE_EXTENSIONS, ".gif") and suffix not in OUTPUT_EXTENSIONS:
            raise ZooError(f"the zoo cannot write {suffix} images ({output})",
                           f"name a {writable} file, or a folder ending in /")
        if suffix not in OUTPUT_EXTENSIONS:
            if output.exists():
                raise ZooError(f"output {output} exists and is not a folder", "give a folder with -o")
            what = f"extension {suffix!r} is not an image format the zoo writes" if suffix else "has no extension"
            raise ZooError(f"output {output} {what}, and no folder of that name exists",
                           f"end it with / to create a folder (-o {text}/) or name a {writable} file")
        folders = [str(p) for p in inputs if Path(p).is_dir()]
        if len(files) > 1 or folders:
            where = f"input folder {folders[0]}" if folders else f"{len(files)} input images"
            raise ZooError(f"{where} cannot be written to the one file {output}",
                           f"give a folder with -o, e.g. -o {output.with_suffix('')}/")
        ensure_writable(output, "output file", fix="choose another -o")
        targets = [output]
    first_input: dict[Path, Path] = {}
    for source, target in zip(files, targets):
        if target in first_input:
            raise ZooError(f"{first_input[target]} and {source} would both be written to {target}",
                           "restore them in separate runs or rename one")
        first_input[target] = source
    existing = [str(t) for t in targets if t.exists()]
    if existing and not overwrite:
        raise ZooError(f"output exists: {', '.join(existing[:3])}" + (" ..." if len(existing) > 3 else ""),
                       "pass --overwrite to replace it or choose another -o")
    return targets


def _read_all(files: Sequence[Path]) -> list:
    """:func:`zoo.data.io.read_image` of every file; one :class:`ZooError` naming every file that
    cannot be read (the first one's message, then the others), so one run shows them all."""
    from zoo.data.io import read_image

    loaded, failed = [], []
    for path in files:
        try:
            loaded.append(read_image(path))
        except ZooError as err:
            failed.append((path, err))
    if len(failed) == 1:
        raise failed[0][1]
    if failed:
        first = failed[0][1]
        others = ", ".join(str(path) for path, _ in failed[1:4]) + (f" and {len(failed) - 4} more"
                                                                   if len(failed) > 4 else "")
        raise ZooError(f"{first.problem} (and {len(failed) - 1} more of the {len(files)} inputs cannot be read: "
                       f"{others})", f"{first.fix}; nothing was written")
    return loaded


def restore_image_files(inputs: Sequence[str | Path], targets: Sequence[Path],
                        restore: Callable[[torch.Tensor], torch.Tensor], *, scale: int = 1, overwrite: bool = False,
                        details: Callable[[], dict] | None = None) -> list[dict]:
    """Restore image files with ``restore`` and write each result to its target; one record per image.

    ``inputs``: files or folders (:func:`input_images`); ``targets``: the output paths from
    :func:`plan_outputs`, one per image file. ``restore`` maps one
    (3, H, W) float32 RGB image in [0, 1] to its (3, H * scale, W * scale) restoration in [0, 1];
    ``scale`` (1 for same-size tasks, 2-4 for super-resolution) also sizes the alpha channel, which
    is upscaled bilinearly and re-attached. Every input is read and checked before the first file
    is written; each output is written atomically (:func:`zoo.data.io.write_image`) in its
    input's bit depth where the format holds it (16-bit PNG), else 8 bits, with the input's ICC
    profile. Records hold ``input``, ``output``, ``height`` and ``width`` (input pixels) and the
    restore's ``seconds``, ``notes`` (what reading the file found worth telling, e.g. "only the
    first of 3 frames is used") when there are any, plus what ``details()`` returns after each image.
    """
    from zoo.data.io import write_image

    loaded = _read_all(input_images(inputs))  # fail on a bad input before anything is written
    for image, target in zip(loaded, targets):
        if image.alpha is not None and target.suffix.lower() in (".jpg", ".jpeg"):
            raise ZooError(f"{image.path} has an alpha channel that JPEG output {target} cannot keep",
                           "write PNG (-o with .png or a folder)")
    records = []
    for image, target in zip(loaded, targets):
        start = time.perf_counter()
        restored = restore(image.image)
        seconds = time.perf_counter() - start
        alpha = image.alpha
        if alpha is not None and scale != 1:
            alpha = torch.nn.functional.interpolate(alpha[None], scale_factor=scale, mode="bilinear")[0]
        bit_depth = image.bit_depth if target.suffix.lower() in SIXTEEN_BIT_EXTENSIONS else 8
        write_image(target, restored, bit_depth=bit_depth, alpha=alpha, overwrite=overwrite,
                    icc_profile=image.icc_profile)
        record = {"input": str(image.path), "output": str(target), "height": int(image.image.shape[1]),
                  "width": int(image.image.shape[2]), "seconds": round(seconds, 4)}
        if image.notes:  # e.g. an animated GIF restored from its first frame
            record["notes"] = list(image.notes)
        record.update(details() if details is not None else {})
        records.append(record)
    return records


def restore_files(model_name: str, inputs: Sequence[str | Path], output: str | Path, *,
                  weights: str | Path | None = None, tile: int | None = None, overlap: int | None = None,
                  device: str = "auto", overwrite: bool = False, progress: bool = True) -> list[dict]:
    """Restore image files (or every image of a folder) with a zoo model; returns one record per
    image (paths, sizes, seconds). ``output``: see :func:`plan_outputs`.

    Every input is read and every output path checked before the first result is written, and
    each file is written atomically in its input's bit depth with its alpha channel re-attached
    (see :func:`restore_image_files`).
    """
    from zoo.registry import create_model

    targets = plan_outputs(inputs, output, overwrite=overwrite)
    model, card = create_model(model_name, weights, offers_untrained=False)  # restore has no --untrained
    torch_device = pick_device(device)
    model.to(torch_device)
    if hasattr(model, "progress"):
        model.progress = progress
    tiles = TileSettings.for_card(card, tile, overlap)

    def restore(image: torch.Tensor) -> torch.Tensor:
        return restore_tensor(model, card, image, tiles, device=torch_device, progress=progress)

    # Zero-shot models report per-image facts (iterations, fitting loss) in last_report.
    return restore_image_files(inputs, targets, restore, scale=card.scale, overwrite=overwrite,
                               details=lambda: dict(getattr(model, "last_report", None) or {}))
