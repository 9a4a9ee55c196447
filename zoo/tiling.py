"""Tiled inference for images of any size, seam-free and exact for local models.

Mobile models are exported with a FIXED input shape, so a large photo is cut into square tiles
of exactly ``tile`` x ``tile`` pixels, each tile is restored on its own, and the restored tiles
are blended back with per-tile weight maps. The plan (padding, tile positions, weights) is
specified exactly in ``docs/tiling.md`` so the Android and iOS demo apps compute the very same
result; keep the two in sync.

Guarantees (checked by ``tests/test_tiling.py``):

* every tile handed to the model is exactly ``tile`` x ``tile`` input pixels, starts at a
  multiple of ``size_multiple`` and lies inside the padded image;
* a model whose receptive-field radius is at most ``margin`` (default ``overlap // 2``) input
  pixels gives the same output as the untiled model (to float rounding, about 1e-6);
* the normalised weights sum to 1 at every pixel, so an identity model returns its input.

Only torch is needed here (tqdm is imported when ``progress=True``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from zoo.errors import ZooError

__all__ = [
    "TilePlan",
    "crop_to_size",
    "pad_to_multiple",
    "pad_to_size",
    "plan_tiles",
    "tiled_forward",
    "tiling_psnr",
]

PAD_MODES = ("reflect", "replicate")


# --------------------------------------------------------------------------------------------
# Padding (bottom and right only, so pixel (0, 0) keeps its place and cropping is a slice)
# --------------------------------------------------------------------------------------------


def _axis_pad_mode(length: int, padded_length: int, mode: str) -> str:
    """``reflect`` needs the pad to be shorter than the axis; otherwise fall back to replicate."""
    if mode == "reflect" and padded_length - length >= length:
        return "replicate"
    return mode


def _source_indices(length: int, padded_length: int, mode: str, device=None) -> torch.Tensor:
    """For each index 0..padded_length-1 of a padded axis, the index it is read from (int64).

    reflect: ``q -> 2 * (length - 1) - q`` past the end (edge pixel not repeated, like numpy
    ``reflect`` and torch ``F.pad(mode="reflect")``); replicate: ``q -> length - 1``.
    """
    index = torch.arange(padded_length, device=device)
    if _axis_pad_mode(length, padded_length, mode) == "reflect":
        return torch.where(index < length, index, 2 * (length - 1) - index)
    return index.clamp(max=length - 1)


def _check_pad_mode(mode: str) -> None:
    if mode not in PAD_MODES:
        raise ZooError(f"unknown padding mode {mode!r}", f"use one of {', '.join(PAD_MODES)}")


def pad_to_size(image: torch.Tensor, height: int, width: int, mode: str = "reflect") -> torch.Tensor:
    """Pad ``image`` (..., H, W) at the bottom and right to ``height`` x ``width`` pixels.

    ``mode="reflect"`` mirrors without repeating the edge pixel; an axis whose pad is not
    shorter than the axis itself (a tiny image) is padded with ``replicate`` instead (per
    axis). Values and dtype are kept; returns ``image`` itself when no padding is needed.
    """
    _check_pad_mode(mode)
    in_height, in_width = image.shape[-2:]
    if height < in_height or width < in_width:
        raise ValueError(f"cannot pad {in_height}x{in_width} down to {height}x{width}")
    if (height, width) == (in_height, in_width):
        return image
    rows = _source_indices(in_height, height, mode, image.device)
    cols = _source_indices(in_width, width, mode, image.device)
    return image.index_select(-2, rows).index_select(-1, cols)


def pad_to_multiple(
    image: torch.Tensor, multiple: int, mode: str = "reflect"
) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad ``image`` (..., H, W; normally NCHW) at the bottom/right up to multiples of ``multiple``.

    Returns ``(padded, (H, W))``; undo with ``crop_to_size(output, (H * scale, W * scale))``.
    See :func:`pad_to_size` for the modes.
    """
    if not isinstance(multiple, int) or multiple < 1:
        raise ZooError(f"size multiple {multiple!r} is not a positive integer", "use 1, 2, 4, 8, ...")
    height, width = image.shape[-2:]
    padded = pad_to_size(image, _round_up(height, multiple), _round_up(width, multiple), mode)
    return padded, (height, width)


def crop_to_size(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Inverse of the padding: the top-left ``size = (height, width)`` pixels of (..., H, W)."""
    height, width = size
    return image[..., :height, :width]


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


# --------------------------------------------------------------------------------------------
# Tile plan
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TilePlan:
    """Where the tiles of one image go and how they are blended (all lengths in input pixels).

    The image (``height`` x ``width``) is first padded at the bottom/right to
    ``padded_height`` x ``padded_width`` (multiples of ``size_multiple``, at least ``tile``).
    Tile ``(i, j)`` covers rows ``row_starts[i] .. row_starts[i] + tile - 1`` and columns
    ``col_starts[j] .. col_starts[j] + tile - 1`` of the padded image; tiles are processed in
    row-major order. ``overlap`` is the overlap actually used (the requested one rounded up to
    a multiple of ``size_multiple``); ``margin`` pixels next to a tile border that is inside
    the image get weight 0, and the next ``ramp = overlap - 2 * margin`` pixels ramp linearly.
    """

    height: int
    width: int
    padded_height: int
    padded_width: int
    tile: int
    overlap: int
    margin: int
    size_multiple: int
    row_starts: tuple[int, ...]
    col_starts: tuple[int, ...]

    @property
    def stride(self) -> int:
        """Distance between the starts of neighbouring tiles (the last tile may be closer)."""
        return self.tile - self.overlap

    @property
    def ramp(self) -> int:
        """Width in pixels of the linear weight ramp after the zero-weight margin."""
        return self.overlap - 2 * self.margin

    @property
    def num_tiles(self) -> int:
        return len(self.row_starts) * len(self.col_starts)

    @property
    def pad_modes(self) -> tuple[str, str]:
        """Padding mode actually used for rows and columns (``reflect`` or ``replicate``)."""
        return (
            _axis_pad_mode(self.height, self.padded_height, "reflect"),
            _axis_pad_mode(self.width, self.padded_width, "reflect"),
        )

    def tiles(self) -> Iterator[tuple[int, int, int, int]]:
        """``(row_index, col_index, top, left)`` of every tile in row-major order."""
        for row_index, top in enumerate(self.row_starts):
            for col_index, left in enumerate(self.col_starts):
                yield row_index, col_index, top, left

    def axis_weights(self, axis: str, scale: int = 1) -> torch.Tensor:
        """Normalised 1-D weights of the tiles along ``axis`` ("rows" or "cols").

        Returns float32 (number of tiles along the axis, ``tile * scale``): entry ``[i, k]`` is
        the weight of output pixel ``start_i * scale + k``. Along each axis the weights of all
        tiles sum to 1 at every pixel. The 2-D weight of tile ``(i, j)`` is the outer product
        ``rows[i][:, None] * cols[j][None, :]``, which therefore also sums to 1 everywhere.
        """
        if axis == "rows":
            starts, length = self.row_starts, self.padded_height
        elif axis == "cols":
            starts, length = self.col_starts, self.padded_width
        else:
            raise ValueError(f"axis must be 'rows' or 'cols', not {axis!r}")
        return _normalised_axis_weights(starts, length, self.tile, self.margin, self.ramp, scale)

    def tile_weight(self, row_index: int, col_index: int, scale: int = 1) -> torch.Tensor:
        """Normalised 2-D weight map (``tile * scale`` square, float32) of tile ``(row, col)``."""
        rows = self.axis_weights("rows", scale)[row_index]
        cols = self.axis_weights("cols", scale)[col_index]
        return rows[:, None] * cols[None, :]


def _axis_starts(padded_length: int, tile: int, stride: int) -> tuple[int, ...]:
    """Starts 0, stride, 2*stride, ...; the last one moved back to ``padded_length - tile``."""
    if padded_length <= tile:
        return (0,)
    count = math.ceil((padded_length - tile) / stride) + 1
    return tuple(min(index * stride, padded_length - tile) for index in range(count))


def _normalised_axis_weights(
    starts: tuple[int, ...], padded_length: int, tile: int, margin: int, ramp: int, scale: int
) -> torch.Tensor:
    # Work at output resolution: all lengths times scale keeps the exactness argument intact
    # (an output pixel at distance D from a border comes from input distance floor(D / scale)).
    tile_out, margin_out, ramp_out = tile * scale, margin * scale, ramp * scale
    length_out = padded_length * scale
    distance_from_top = torch.arange(tile_out, dtype=torch.float64)
    distance_from_bottom = tile_out - 1 - distance_from_top

    def border_ramp(distance: torch.Tensor) -> torch.Tensor:
        # 0 within the margin, then (1, 2, ..., ramp + 1) / (ramp + 1): the two ramps of a
        # regular overlap add up to exactly 1, so they need no normalisation.
        return ((distance - margin_out + 1) / (ramp_out + 1)).clamp(0.0, 1.0)

    raw = torch.ones(len(starts), tile_out, dtype=torch.float64)
    for index, start in enumerate(starts):
        start_out = start * scale
        if start_out > 0:  # a tile border inside the image: ramp; at the image border: weight 1
            raw[index] *= border_ramp(distance_from_top)
        if start_out + tile_out < length_out:
            raw[index] *= border_ramp(distance_from_bottom)
    total = torch.zeros(length_out, dtype=torch.float64)
    for index, start in enumerate(starts):
        total[start * scale : start * scale + tile_out] += raw[index]
    # Every pixel lies at least margin from an inner border of some tile because
    # overlap >= 2 * margin, so total > 0 everywhere.
    assert bool((total > 0).all()), "tile plan leaves pixels without weight"
    normalised = torch.stack(
        [raw[index] / total[start * scale : start * scale + tile_out] for index, start in enumerate(starts)]
    )
    return normalised.to(torch.float32)


def _max_overlap(tile: int, size_multiple: int) -> int:
    """Largest overlap whose multiple-of-size_multiple rounding stays below tile / 2."""
    return size_multiple * ((tile - 1) // (2 * size_multiple))


def _check_positive_int(value, name: str, fix: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ZooError(f"{name} {value!r} is not a positive integer", fix)


def plan_tiles(
    height: int,
    width: int,
    *,
    tile: int,
    overlap: int,
    size_multiple: int = 1,
    margin: int | None = None,
) -> TilePlan:
    """Plan tiles of exactly ``tile`` x ``tile`` input pixels over a ``height`` x ``width`` image.

    ``tile`` must be a multiple of ``size_multiple``; ``overlap`` (pixels shared by neighbouring
    tiles, >= 0) is rounded up to a multiple of ``size_multiple`` (so tiles start on the model's
    downsampling grid) and must then be less than ``tile / 2``. ``margin`` (default
    ``overlap // 2``, at most that) is the receptive-field radius for which tiling is exact; a
    smaller margin leaves a wider linear ramp (smoother blending for models with global
    operations, exact only for smaller receptive fields). Raises :class:`ZooError` naming the
    valid values.
    """
    _check_positive_int(height, "image height", "pass an image of at least 1x1 pixel")
    _check_positive_int(width, "image width", "pass an image of at least 1x1 pixel")
    _check_positive_int(size_multiple, "size_multiple", "use 1, 2, 4, 8, ...")
    _check_positive_int(tile, "tile", f"use a positive multiple of size_multiple {size_multiple}, e.g. 256")
    if tile % size_multiple:
        suggestion = max(size_multiple, _round_up(tile, size_multiple))
        raise ZooError(
            f"tile {tile} is not a multiple of the model's size_multiple {size_multiple}",
            f"use a multiple of {size_multiple}, e.g. {suggestion}",
        )
    max_overlap = _max_overlap(tile, size_multiple)
    if isinstance(overlap, bool) or not isinstance(overlap, int) or overlap < 0:
        raise ZooError(f"overlap {overlap!r} is not an integer >= 0", f"use 0 .. {max_overlap}")
    used_overlap = _round_up(overlap, size_multiple)
    if 2 * used_overlap >= tile:
        rounding = ""
        if used_overlap != overlap:
            rounding = f" (rounded up to {used_overlap}, a multiple of {size_multiple})"
        raise ZooError(
            f"overlap {overlap}{rounding} is not less than half the tile {tile}",
            f"use overlap 0 .. {max_overlap} or a larger tile",
        )
    if margin is None:
        margin = used_overlap // 2
    if isinstance(margin, bool) or not isinstance(margin, int) or not 0 <= margin <= used_overlap // 2:
        raise ZooError(
            f"margin {margin!r} is outside 0 .. overlap // 2 = {used_overlap // 2}",
            f"use a margin of 0 .. {used_overlap // 2} or leave it at the default",
        )
    padded_height = max(_round_up(height, size_multiple), tile)
    padded_width = max(_round_up(width, size_multiple), tile)
    stride = tile - used_overlap
    return TilePlan(
        height=height,
        width=width,
        padded_height=padded_height,
        padded_width=padded_width,
        tile=tile,
        overlap=used_overlap,
        margin=margin,
        size_multiple=size_multiple,
        row_starts=_axis_starts(padded_height, tile, stride),
        col_starts=_axis_starts(padded_width, tile, stride),
    )


# --------------------------------------------------------------------------------------------
# Running a model tile by tile
# --------------------------------------------------------------------------------------------


def _as_single_batch(image: torch.Tensor) -> torch.Tensor:
    if not isinstance(image, torch.Tensor):
        raise ZooError(
            f"image is a {type(image).__name__}, not a torch tensor", "pass a CHW float tensor in [0, 1]"
        )
    if image.dim() == 3:
        return image.unsqueeze(0)
    if image.dim() == 4 and image.shape[0] == 1:
        return image
    raise ZooError(
        f"image has shape {tuple(image.shape)}; tiled inference takes one image",
        "pass CHW or 1xCxHxW (loop over a batch yourself)",
    )


def _check_output(output, expected: tuple[int, ...], what: str) -> torch.Tensor:
    if not isinstance(output, torch.Tensor):
        raise ZooError(
            f"the model returned a {type(output).__name__}, not a tensor", "make fn return an NCHW tensor"
        )
    if output.dim() != 4 or output.shape[0] != expected[0] or tuple(output.shape[2:]) != expected[2:]:
        raise ZooError(
            f"the model returned {what} of shape {tuple(output.shape)}, "
            f"expected {expected[0]}xCx{expected[2]}x{expected[3]}",
            "check scale= and size_multiple= against the model card",
        )
    return output


def tiled_forward(
    fn: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    *,
    tile: int | None,
    overlap: int,
    size_multiple: int = 1,
    scale: int = 1,
    batch_size: int = 1,
    progress: bool = False,
    margin: int | None = None,
) -> torch.Tensor:
    """Restore ``image`` with ``fn`` tile by tile, following :func:`plan_tiles`.

    ``image``: float RGB in [0, 1], CHW or 1xCxHxW (the result has the same rank).
    ``fn``: maps an NxCx``tile``x``tile`` batch to the restored batch, ``scale`` times larger
    (super-resolution); it runs under ``torch.inference_mode()``. ``tile=None`` runs ``fn``
    once on the whole image padded to ``size_multiple``. Returns float32, height and width
    times ``scale``, on the image's device; a normal tensor (not an inference tensor) even when
    called under ``torch.inference_mode()``.

    Memory: one float32 output accumulator the size of the result (weights are normalised in
    advance, so no weight-sum image is needed), plus ``batch_size`` input tiles and their
    outputs. The accumulator lives on the image's device; to keep GPU memory at the tiles'
    size, pass a CPU image and let ``fn`` move each batch to the GPU and its result back.
    """
    _check_positive_int(scale, "scale", "use the model card's scale (1 for restoration, 2/3/4 for SR)")
    _check_positive_int(batch_size, "batch_size", "use 1 or more tiles per model call")
    batch = _as_single_batch(image)
    _, channels, height, width = batch.shape
    # Both branches: an empty image is refused here, not by the model's first convolution.
    _check_positive_int(height, "image height", "pass an image of at least 1x1 pixel")
    _check_positive_int(width, "image width", "pass an image of at least 1x1 pixel")

    if tile is None:
        _check_positive_int(size_multiple, "size_multiple", "use 1, 2, 4, 8, ...")
        padded, size = pad_to_multiple(batch, size_multiple)
        with torch.inference_mode():
            restored = fn(padded)
        expected = (1, -1, padded.shape[2] * scale, padded.shape[3] * scale)
        restored = _check_output(restored, expected, "an image")
        # A normal (not inference) tensor, so callers may update it in place; no view of the padding.
        with torch.inference_mode(False):
            result = crop_to_size(restored, (height * scale, width * scale)).to(torch.float32).clone()
        return result if image.dim() == 4 else result[0]

    plan = plan_tiles(height, width, tile=tile, overlap=overlap, size_multiple=size_multiple, margin=margin)
    device = batch.device
    row_weights = plan.axis_weights("rows", scale).to(device)
    col_weights = plan.axis_weights("cols", scale).to(device)
    source_rows = _source_indices(height, plan.padded_height, "reflect", device)
    source_cols = _source_indices(width, plan.padded_width, "reflect", device)
    tile_out = tile * scale
    out_height, out_width = height * scale, width * scale

    tiles_in = torch.empty(batch_size, channels, tile, tile, dtype=batch.dtype, device=device)
    result: torch.Tensor | None = None
    pending: list[tuple[int, int, int, int]] = []

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=plan.num_tiles, desc="tiles", unit="tile")

    def flush() -> None:
        nonlocal result
        count = len(pending)
        with torch.inference_mode():
            restored = fn(tiles_in[:count])
        restored = _check_output(restored, (count, -1, tile_out, tile_out), "tiles")
        if result is None:
            # Allocated outside inference mode even when the caller is inside it, so the result
            # is a normal tensor that callers may update in place (e.g. clamp_).
            with torch.inference_mode(False):
                result = torch.zeros(
                    1, restored.shape[1], out_height, out_width, dtype=torch.float32, device=device
                )
        restored = restored.to(device=device, dtype=torch.float32)
        for slot, (row_index, col_index, top, left) in enumerate(pending):
            # Clip to the unpadded result: pixels of the padding are never stored.
            top_out, left_out = top * scale, left * scale
            rows = min(tile_out, out_height - top_out)
            cols = min(tile_out, out_width - left_out)
            weight = row_weights[row_index, :rows, None] * col_weights[col_index, None, :cols]
            result[0, :, top_out : top_out + rows, left_out : left_out + cols].addcmul_(
                restored[slot, :, :rows, :cols], weight
            )
        pending.clear()
        if bar is not None:
            bar.update(count)

    try:
        for row_index, col_index, top, left in plan.tiles():
            slot = len(pending)
            if top + tile <= height and left + tile <= width:
                tiles_in[slot].copy_(batch[0, :, top : top + tile, left : left + tile])
            else:  # the tile reaches into the padding: read through the padding index map
                rows = source_rows[top : top + tile]
                cols = source_cols[left : left + tile]
                tiles_in[slot].copy_(batch[0].index_select(1, rows).index_select(2, cols))
            pending.append((row_index, col_index, top, left))
            if len(pending) == batch_size:
                flush()
        if pending:
            flush()
    finally:
        if bar is not None:
            bar.close()
    assert result is not None
    return result if image.dim() == 4 else result[0]


def tiling_psnr(
    fn: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    *,
    tile: int,
    overlap: int,
    size_multiple: int = 1,
    scale: int = 1,
    margin: int | None = None,
) -> float:
    """PSNR in dB (peak 1) between the tiled and the untiled output of ``fn`` on ``image``.

    Both outputs are clipped to [0, 1] first, as saved images are. ``inf`` means tiling is
    exact; models with global operations (instance normalisation, attention over the whole
    image) give a finite value that says how much tiling changes their output.
    """
    untiled = tiled_forward(fn, image, tile=None, overlap=0, size_multiple=size_multiple, scale=scale)
    tiled = tiled_forward(
        fn, image, tile=tile, overlap=overlap, size_multiple=size_multiple, scale=scale, margin=margin
    )
    error = (tiled.clamp(0, 1).double() - untiled.clamp(0, 1).double()).pow(2).mean().item()
    return math.inf if error == 0 else -10.0 * math.log10(error)
