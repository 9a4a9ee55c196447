"""Image quality metrics with the conventions of the restoration literature.

Published PSNR/SSIM tables come from the MATLAB evaluation scripts of the SR/denoising papers
(and their Python port in BasicSR). To be comparable this module follows them exactly:

* values are measured on the 0-255 scale in float64 (inputs are float images in [0, 1]);
* nothing is rounded here: the caller quantizes a model's output to 8 bits first
  (``zoo.data.io.quantize``), as the published numbers were measured on saved 8-bit files;
* ``crop_border`` pixels are removed from every side first (SR protocol: the scale factor);
* ``y_channel=True`` measures on the luma of ITU-R BT.601 as MATLAB ``rgb2ycbcr`` computes it,
  ``Y = 16 + 65.481 R + 128.553 G + 24.966 B`` (R, G, B in [0, 1]; Y in [16, 235]), not rounded;
* RGB PSNR uses the joint MSE over all channels; RGB SSIM is the mean of per-channel SSIMs;
* SSIM is Wang et al. (2004) as in their MATLAB ``ssim_index``/BasicSR: 11x11 Gaussian window with
  sigma 1.5, K1 = 0.01, K2 = 0.03, L = 255, statistics over 'valid' windows only (no padding),
  population (biased) variances.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["psnr", "ssim", "rgb_to_y"]

# ITU-R BT.601 luma for R, G, B in [0, 1], giving Y on the 0-255 scale (MATLAB rgb2ycbcr).
_Y_OFFSET = 16.0
_Y_WEIGHTS = (65.481, 128.553, 24.966)

_SSIM_WINDOW = 11
_SSIM_SIGMA = 1.5
_SSIM_K1 = 0.01
_SSIM_K2 = 0.03
_PEAK = 255.0


def rgb_to_y(image: torch.Tensor) -> torch.Tensor:
    """BT.601 luma of an RGB image, as MATLAB ``rgb2ycbcr`` on double data.

    Args:
        image: float RGB tensor in [0, 1], CHW (C = 3) or NCHW.
    Returns:
        Y in [16/255, 235/255] with the channel dimension kept (1HW or N1HW), same dtype;
        white maps to 235/255 and black to 16/255 (multiply by 255 for the 0-255 scale).
    """
    if image.dim() not in (3, 4) or image.shape[-3] != 3:
        raise ValueError(f"rgb_to_y needs an RGB CHW or NCHW tensor, got shape {tuple(image.shape)}")
    red, green, blue = image.unbind(dim=-3)
    luma = _Y_OFFSET + _Y_WEIGHTS[0] * red + _Y_WEIGHTS[1] * green + _Y_WEIGHTS[2] * blue
    return (luma / 255.0).unsqueeze(-3)


def _prepare(pred: torch.Tensor, target: torch.Tensor, crop_border: int, y_channel: bool):
    """Validate shapes and return both images as float64 CHW on the 0-255 scale."""
    if pred.shape != target.shape:
        raise ValueError(
            f"pred and target shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}"
        )
    if pred.dim() == 4:
        if pred.shape[0] != 1:
            raise ValueError(f"metrics take one image (CHW or 1CHW), got shape {tuple(pred.shape)}")
        pred, target = pred[0], target[0]
    if pred.dim() != 3:
        raise ValueError(f"metrics take a CHW or 1CHW tensor, got shape {tuple(pred.shape)}")
    if crop_border < 0:
        raise ValueError(f"crop_border must be >= 0, got {crop_border}")
    pred = pred.detach().to(device="cpu", dtype=torch.float64)
    target = target.detach().to(device="cpu", dtype=torch.float64)
    if crop_border:
        height, width = pred.shape[-2:]
        if 2 * crop_border >= min(height, width):
            raise ValueError(
                f"crop_border {crop_border} leaves nothing of a {height}x{width} image"
            )
        pred = pred[:, crop_border:-crop_border, crop_border:-crop_border]
        target = target[:, crop_border:-crop_border, crop_border:-crop_border]
    if y_channel:
        pred, target = rgb_to_y(pred), rgb_to_y(target)
    return pred * _PEAK, target * _PEAK


def psnr(
    pred: torch.Tensor, target: torch.Tensor, *, crop_border: int = 0, y_channel: bool = False
) -> float:
    """Peak signal-to-noise ratio in dB, ``10 log10(255^2 / MSE)`` on the 0-255 scale.

    Args:
        pred, target: float images in [0, 1], CHW or 1CHW, same shape (RGB when y_channel).
        crop_border: pixels removed from each side before measuring (SR: the scale).
        y_channel: measure on BT.601 luma (0-255, unrounded) instead of all RGB channels.
    Returns:
        PSNR in dB (float); ``inf`` when the images are identical. The MSE of RGB images is
        taken jointly over all channels and pixels.
    """
    pred, target = _prepare(pred, target, crop_border, y_channel)
    mse = torch.mean((pred - target) ** 2).item()
    if mse == 0:
        return math.inf
    return 10.0 * math.log10(_PEAK**2 / mse)


def _gaussian_profile(size: int, sigma: float) -> torch.Tensor:
    """Normalised 1-D Gaussian (``size`` taps, float64): the 2-D SSIM window is its outer product."""
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2.0
    profile = torch.exp(-(coords**2) / (2.0 * sigma**2))
    return profile / profile.sum()


def ssim(
    pred: torch.Tensor, target: torch.Tensor, *, crop_border: int = 0, y_channel: bool = False
) -> float:
    """Structural similarity (Wang et al. 2004) as the MATLAB reference computes it.

    Args:
        pred, target: float images in [0, 1], CHW or 1CHW, same shape, at least 11x11 after
            cropping (RGB when y_channel).
        crop_border: pixels removed from each side before measuring (SR: the scale).
        y_channel: measure on BT.601 luma (0-255, unrounded) instead of the RGB channels.
    Returns:
        Mean SSIM in [-1, 1] (1 for identical images) over the 'valid' 11x11 Gaussian windows
        (sigma 1.5, L = 255, K1 = 0.01, K2 = 0.03); RGB: mean of the per-channel values.
    """
    pred, target = _prepare(pred, target, crop_border, y_channel)
    if min(pred.shape[-2:]) < _SSIM_WINDOW:
        raise ValueError(
            f"ssim needs images of at least {_SSIM_WINDOW}x{_SSIM_WINDOW} pixels, "
            f"got {tuple(pred.shape[-2:])}"
        )
    c1 = (_SSIM_K1 * _PEAK) ** 2
    c2 = (_SSIM_K2 * _PEAK) ** 2
    profile = _gaussian_profile(_SSIM_WINDOW, _SSIM_SIGMA)
    column, row = profile.view(1, 1, -1, 1), profile.view(1, 1, 1, -1)
    # Channels become the batch so every channel is filtered with the same window.
    x = pred.unsqueeze(1)
    y = target.unsqueeze(1)

    def local_mean(image: torch.Tensor) -> torch.Tensor:
        # The separable 2-D Gaussian as two 1-D passes: the same 'valid' windows (no padding) at
        # a fifth of the cost of one 11x11 float64 convolution (equal to float64 rounding).
        return F.conv2d(F.conv2d(image, column), row)

    mu_x, mu_y = local_mean(x), local_mean(y)
    var_x = local_mean(x * x) - mu_x**2
    var_y = local_mean(y * y) - mu_y**2
    cov_xy = local_mean(x * y) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)) / (
        (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    )
    per_channel = ssim_map.mean(dim=(1, 2, 3))
    return per_channel.mean().item()
