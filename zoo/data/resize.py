"""MATLAB-compatible image resizing (``imresize``) and the SR mod-crop.

Super-resolution benchmarks (Set5, Set14, Urban100, ...) make their low-resolution inputs with
MATLAB ``imresize(hr, 1/scale, 'bicubic')``. Every other resampler (PIL, OpenCV, torch
``interpolate``) differs from it: a different cubic (OpenCV a=-0.75), no antialiasing when
downscaling, or another pixel-centre mapping. A model trained or scored on other LR images loses
tenths of a dB, so this module re-implements MATLAB's algorithm:

* kernel: Keys cubic convolution with a = -0.5 (or the triangle for ``method="bilinear"``);
* antialiasing when downscaling: the kernel is stretched by 1/scale and scaled by ``scale``
  (``h(x) = scale * cubic(scale * x)``), so it is a low-pass filter of the output's bandwidth;
* output size: ``ceil(scale * input_size)``;
* coordinates: output pixel x (1-based) samples the input at ``u = x / scale + 0.5 * (1 - 1 / scale)``;
* taps ``floor(u - width / 2) + (0 .. ceil(width) + 1)``, weights normalised to sum to 1 per
  output pixel;
* boundary: taps outside the image are mirrored with the edge pixel repeated
  (``[1..n, n..1]`` repeated periodically: MATLAB's ``symmetric`` index mirroring);
* separable, one dimension after the other, the dimension with the smaller scale first
  (rows first on ties);
* no clamping or rounding of float data; ``uint8=True`` reproduces MATLAB on uint8 images,
  which rounds after each one-dimensional pass (so the dimension order matters there).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from zoo.errors import ZooError

__all__ = ["imresize", "mod_crop", "check_downscalable", "resize_weights"]

# Kernel support widths (in input pixels at scale 1).
_KERNEL_WIDTH = {"bicubic": 4.0, "bilinear": 2.0}


def _cubic(x: np.ndarray) -> np.ndarray:
    """Keys (1981) cubic convolution kernel with a = -0.5, MATLAB's ``cubic``."""
    absx = np.abs(x)
    absx2 = absx * absx
    absx3 = absx2 * absx
    near = (1.5 * absx3 - 2.5 * absx2 + 1.0) * (absx <= 1)
    far = (-0.5 * absx3 + 2.5 * absx2 - 4.0 * absx + 2.0) * ((absx > 1) & (absx <= 2))
    return near + far


def _triangle(x: np.ndarray) -> np.ndarray:
    """Linear interpolation kernel (MATLAB's ``triangle``)."""
    return np.clip(1.0 - np.abs(x), 0.0, None)


_KERNELS = {"bicubic": _cubic, "bilinear": _triangle}


def _mirror(index: np.ndarray, length: int) -> np.ndarray:
    """0-based indices mirrored into ``[0, length)`` with the edge pixel repeated."""
    period = np.concatenate([np.arange(length), np.arange(length - 1, -1, -1)])
    return period[np.mod(index, 2 * length)]


def resize_weights(
    in_length: int,
    out_length: int,
    scale: float,
    *,
    method: str = "bicubic",
    antialiasing: bool = True,
) -> np.ndarray:
    """Dense ``(out_length, in_length)`` float64 matrix W with ``out = W @ in`` along one axis.

    ``scale`` is the resize factor (output / input, > 0) used for the kernel stretch and the
    coordinate mapping; MATLAB uses the requested scale here, not ``out_length / in_length``.
    Each row sums to 1. Taps that fall outside the image are folded back onto the mirrored
    pixels, so a row can hold the sum of several tap weights in one column.
    """
    if method not in _KERNELS:
        raise ValueError(f"unknown resize method {method!r}; use one of {sorted(_KERNELS)}")
    kernel = _KERNELS[method]
    width = _KERNEL_WIDTH[method]
    if scale < 1 and antialiasing:
        base_kernel = kernel

        def kernel(x: np.ndarray) -> np.ndarray:
            return scale * base_kernel(scale * x)

        width = width / scale

    out_pos = np.arange(1, out_length + 1, dtype=np.float64)  # MATLAB's 1-based x
    u = out_pos / scale + 0.5 * (1.0 - 1.0 / scale)
    left = np.floor(u - width / 2.0)
    taps = int(math.ceil(width)) + 2
    tap_index = left[:, None] + np.arange(taps)[None, :]  # 1-based input indices
    weights = kernel(u[:, None] - tap_index)
    weights = weights / weights.sum(axis=1, keepdims=True)

    matrix = np.zeros((out_length, in_length), dtype=np.float64)
    rows = np.repeat(np.arange(out_length), taps)
    cols = _mirror(tap_index.astype(np.int64).ravel() - 1, in_length)
    np.add.at(matrix, (rows, cols), weights.ravel())
    return matrix


def _as_pair(value, name: str) -> tuple:
    if isinstance(value, (int, float)):
        return (value, value)
    if isinstance(value, Sequence) and len(value) == 2:
        return tuple(value)
    raise ValueError(f"{name} must be a number or a (height, width) pair, got {value!r}")


def imresize(
    image: torch.Tensor,
    scale: float | tuple[float, float] | None = None,
    *,
    output_size: tuple[int, int] | None = None,
    method: str = "bicubic",
    antialiasing: bool = True,
    uint8: bool = False,
) -> torch.Tensor:
    """Resize like MATLAB ``imresize(image, scale, method)`` on double (or uint8) data.

    Args:
        image: float tensor, CHW or NCHW, any value range (typically [0, 1]); height and width
            are resized, other dimensions are left alone.
        scale: resize factor (output / input), one number or a (height, width) pair, e.g. 0.25
            for x4 downscaling. Output size is ``ceil(scale * size)`` per dimension.
        output_size: (height, width) in pixels instead of ``scale``; the per-dimension scale is
            then ``output / input``, as in MATLAB.
        method: ``"bicubic"`` (Keys cubic, a = -0.5; the default and the SR benchmark kernel) or
            ``"bilinear"``.
        antialiasing: stretch the kernel when downscaling (MATLAB's default, True).
        uint8: reproduce MATLAB on a uint8 image (``image`` holding k/255 values): after each
            one-dimensional pass the result is saturated to [0, 1] and rounded half away from
            zero to a multiple of 1/255, as MATLAB stores each pass in uint8. This is how the
            benchmark LR images were made (``imresize(imread(hr), 1/s)``).

    Returns:
        Tensor with the same dtype, device and leading dimensions. Without ``uint8`` values are
        neither clamped nor rounded (bicubic overshoots slightly outside the input range, as
        MATLAB's does on doubles).
    """
    if not torch.is_tensor(image) or not image.is_floating_point():
        raise ValueError("imresize needs a floating-point torch tensor (CHW or NCHW)")
    if image.dim() not in (3, 4):
        raise ValueError(f"imresize needs a CHW or NCHW tensor, got shape {tuple(image.shape)}")
    if (scale is None) == (output_size is None):
        raise ValueError("give exactly one of scale and output_size")
    in_h, in_w = image.shape[-2:]
    if output_size is not None:
        out_h, out_w = (int(v) for v in _as_pair(output_size, "output_size"))
        if out_h <= 0 or out_w <= 0:
            raise ValueError(f"output_size must be positive, got {output_size!r}")
        scale_h, scale_w = out_h / in_h, out_w / in_w
    else:
        scale_h, scale_w = (float(v) for v in _as_pair(scale, "scale"))
        if scale_h <= 0 or scale_w <= 0:
            raise ValueError(f"scale must be positive, got {scale!r}")
        # MATLAB: ceil(scale * size); the rounding guards against 0.1 * 30 = 3.0000000000000004.
        out_h = int(math.ceil(round(scale_h * in_h, 9)))
        out_w = int(math.ceil(round(scale_w * in_w, 9)))

    # Float64 accumulation keeps float32 results within an ulp of MATLAB's double output.
    work = image.to(torch.float64)
    # MATLAB resizes the dimension with the smaller scale first (rows first on ties).
    dims = [(-2, in_h, out_h, scale_h), (-1, in_w, out_w, scale_w)]
    if scale_w < scale_h:
        dims.reverse()
    for dim, in_len, out_len, dim_scale in dims:
        weights = resize_weights(
            in_len, out_len, dim_scale, method=method, antialiasing=antialiasing
        )
        matrix = torch.from_numpy(weights).to(work.device)
        if dim == -2:
            work = torch.einsum("oh,...hw->...ow", matrix, work)
        else:
            work = torch.einsum("ow,...hw->...ho", matrix, work)
        if uint8:
            # MATLAB's double -> uint8 conversion: saturate, round half away from zero.
            work = torch.floor(work.clamp(0.0, 1.0) * 255.0 + 0.5) / 255.0
    return work.to(image.dtype)


def check_downscalable(image: torch.Tensor, scale: int, name: str = "the image") -> None:
    """Raise :class:`ZooError` when ``image`` (..., H, W) is smaller than ``scale`` x ``scale``
    pixels: its x``scale`` downscale (after :func:`mod_crop`) would have no pixel."""
    height, width = (int(v) for v in image.shape[-2:])
    if height < scale or width < scale:
        raise ZooError(f"{name} is {width}x{height} pixels, smaller than one low-resolution pixel at x{scale} "
                       f"({scale}x{scale} pixels)", f"use images of at least {scale}x{scale} pixels")


def mod_crop(image: torch.Tensor, scale: int) -> torch.Tensor:
    """Crop the bottom/right so height and width are multiples of ``scale`` (SR convention).

    Works on CHW or NCHW tensors (the last two dimensions); matches the MATLAB ``modcrop``
    used to make the HR references of SR benchmarks (top-left corner kept).
    """
    if int(scale) != scale or scale < 1:
        raise ValueError(f"mod_crop scale must be a positive integer, got {scale!r}")
    scale = int(scale)
    height, width = image.shape[-2:]
    return image[..., : height - height % scale, : width - width % scale]
