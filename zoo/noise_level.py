"""Blind estimation of the level of additive white Gaussian noise in one image.

Implements the statistical method of Chen, Zhu and Heng, "An Efficient Statistical Method for
Image Noise Level Estimation" (ICCV 2015). Overlapping patches of a natural image lie close to a
low-dimensional subspace, so most eigenvalues of the patch covariance matrix carry noise only.
Sorted ascending, the eigenvalues that belong to noise alone form a group whose mean equals its
median; the largest such group is found by dropping the biggest eigenvalue one at a time until
as many of the remaining eigenvalues lie above their mean as below it. That mean is the noise
variance.
"""

from __future__ import annotations

import math

import torch

from zoo.errors import ZooError

#: Side of the square patches, in pixels (the paper's choice; 8x8x3 = 192 dimensions for RGB).
PATCH_SIZE = 8
#: Step between patch origins, in pixels (the paper's choice; the last row/column is always added).
PATCH_STRIDE = 3
#: Fewer patches than this many per covariance dimension switch the automatic stride to 1: with
#: few samples the sample eigenvalues spread out (Marchenko-Pastur) and the median/mean split
#: underestimates sigma (pure noise, 64x64 RGB: -45% at stride 3, -5% at stride 1).
MIN_PATCHES_PER_DIMENSION = 20
# Patch rows gathered at once when accumulating the covariance; bounds memory for huge photos.
_ROWS_PER_CHUNK = 32


def _patch_origins(length: int, patch_size: int, stride: int) -> torch.Tensor:
    """Start offsets along one axis: every ``stride`` pixels, plus the last one so the edge is covered."""
    starts = list(range(0, length - patch_size + 1, stride))
    if starts[-1] != length - patch_size:
        starts.append(length - patch_size)
    return torch.tensor(starts, dtype=torch.long)


def patch_covariance(image: torch.Tensor, patch_size: int = PATCH_SIZE,
                     stride: int = PATCH_STRIDE) -> torch.Tensor:
    """Covariance matrix (float64, d x d with d = C*patch_size**2) of the image's patches.

    ``image`` is CHW (or HW); patches span all channels. Accumulated over chunks of patch rows
    so a 12-megapixel photo needs only a few hundred MB.
    """
    image = _as_chw(image)
    channels, height, width = image.shape
    row_origins = _patch_origins(height, patch_size, stride)
    col_origins = _patch_origins(width, patch_size, stride)
    offsets = torch.arange(patch_size)
    col_index = (col_origins[None, :] + offsets[:, None]).to(image.device)  # (p, n_cols)
    dims = channels * patch_size * patch_size
    total = torch.zeros(dims, dtype=torch.float64, device=image.device)
    outer = torch.zeros(dims, dims, dtype=torch.float64, device=image.device)
    count = 0
    for start in range(0, len(row_origins), _ROWS_PER_CHUNK):
        rows = row_origins[start:start + _ROWS_PER_CHUNK]
        row_index = (rows[None, :] + offsets[:, None]).to(image.device)  # (p, n_rows)
        # (C, p, n_rows, W) -> (C, p, n_rows, p, n_cols) -> patches as columns (d, n)
        block = image[:, row_index][..., col_index]
        patches = block.permute(0, 1, 3, 2, 4).reshape(dims, -1).to(torch.float64)
        total += patches.sum(dim=1)
        outer += patches @ patches.T
        count += patches.shape[1]
    mean = total / count
    return outer / count - torch.outer(mean, mean)


def noise_variance_from_eigenvalues(eigenvalues: torch.Tensor) -> float:
    """The noise variance from the patch covariance's eigenvalues (any order, any scale).

    For r = d, d-1, ..., 1: tau = mean of the r smallest eigenvalues; the first r for which as
    many of those r eigenvalues lie above tau as below it gives the variance tau. r = 1 always
    qualifies, so there is always an answer.
    """
    ascending = torch.sort(eigenvalues.to(torch.float64).clamp_min(0)).values
    running_sum = torch.cumsum(ascending, dim=0)
    for r in range(len(ascending), 0, -1):
        smallest = ascending[:r]
        tau = running_sum[r - 1] / r
        if int((smallest > tau).sum()) == int((smallest < tau).sum()):
            return float(tau)
    raise AssertionError("unreachable: r = 1 always satisfies the stopping rule")


def automatic_stride(height: int, width: int, channels: int, patch_size: int = PATCH_SIZE) -> int:
    """The paper's stride of 3 pixels, or 1 when that would give too few patches (small images)."""
    dims = channels * patch_size * patch_size
    count = len(_patch_origins(height, patch_size, PATCH_STRIDE)) * len(_patch_origins(width, patch_size, PATCH_STRIDE))
    return PATCH_STRIDE if count >= MIN_PATCHES_PER_DIMENSION * dims else 1


def estimate_noise_sigma(image: torch.Tensor, patch_size: int = PATCH_SIZE,
                         stride: int | None = None) -> float:
    """Standard deviation of additive white Gaussian noise in ``image``, in the image's own units.

    ``image``: float CHW (1 or 3 channels) or HW tensor, normally in [0, 1]; noisy values
    outside the range are fine. Multiply the result by 255 for the usual 8-bit sigma. Accurate to
    about 10% for sigma 5-50 (8-bit scale) on natural photos; a clean photo gives a small value
    (about 0.3-2 on the 8-bit scale, from sensor noise and compression), a constant image 0.

    A grey image stored as three identical channels is measured on one channel. ``stride`` None
    picks :func:`automatic_stride` (3 pixels from about 190x190 RGB up). Images under about
    64x64 pixels give too few patches for a reliable estimate (low by 10-30%).

    Raises :class:`ZooError` for an image smaller than one patch, one holding NaN/inf, or one with
    an alpha channel (its noise-free dimensions would bias the eigenvalue split).
    """
    image = _as_chw(image)
    _check_image(image, patch_size)
    if image.shape[0] == 3 and bool((image[0] == image[1]).all()) and bool((image[0] == image[2]).all()):
        # A grey photo stored as RGB: the copies add zero eigenvalues that would bias the split.
        image = image[:1]
    if stride is None:
        stride = automatic_stride(image.shape[1], image.shape[2], image.shape[0], patch_size)
    covariance = patch_covariance(image, patch_size, stride)
    eigenvalues = torch.linalg.eigvalsh(covariance)
    return math.sqrt(noise_variance_from_eigenvalues(eigenvalues))


def _as_chw(image: torch.Tensor) -> torch.Tensor:
    if not isinstance(image, torch.Tensor):
        raise ZooError(f"expected a torch tensor image, got {type(image).__name__}",
                       "convert it with torch.as_tensor")
    if image.ndim == 2:
        return image[None]
    if image.ndim != 3:
        raise ZooError(f"expected a CHW or HW image, got shape {tuple(image.shape)}",
                       "pass one image, not a batch")
    return image


def _check_image(image: torch.Tensor, patch_size: int) -> None:
    channels, height, width = image.shape
    if channels == 4:
        raise ZooError("image has 4 channels; an alpha channel would bias the noise estimate",
                       "pass the colour channels only, e.g. image[:3]")
    if channels not in (1, 3):
        raise ZooError(f"image has {channels} channels", "pass a greyscale (1) or RGB (3) image")
    if height < patch_size or width < patch_size:
        raise ZooError(f"image is {width}x{height} pixels, smaller than the {patch_size}x{patch_size} "
                       "noise-estimation patch", f"use an image at least {patch_size}x{patch_size}")
    if not bool(torch.isfinite(image).all()):
        raise ZooError("image contains NaN or infinite values", "fix or re-read the input image")
