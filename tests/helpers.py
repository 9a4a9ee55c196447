"""Test helpers shared by several test modules (fixtures themselves live in tests/conftest.py).

* :class:`ConvNet`, :class:`HalfInstanceNormNet`: tiny random-init restoration nets (3 -> 3
  channels, any size) that the export-target tests convert; :func:`seeded` builds one reproducibly;
* :func:`random_images`: a seeded (N, 3, size, size) float32 batch in [0, 1];
* :func:`psnr_db`: PSNR in dB of two arrays on the [0, 1] scale (inf when equal);
* :func:`skimage_photo` / :func:`add_gaussian_noise`: a centre crop of a scikit-image photo, noised.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

#: Height and width of the images the target tests export at.
TILE = 32


class ConvNet(nn.Module):
    """conv -> ReLU -> conv with a global residual: only delegate-friendly operators.

    ``clamp`` adds the [0, 1] clamp of the zoo's models (on by default).
    """

    def __init__(self, clamp: bool = True):
        super().__init__()
        self.head = nn.Conv2d(3, 8, 3, padding=1)
        self.tail = nn.Conv2d(8, 3, 3, padding=1)
        self.clamp = clamp

    def forward(self, x):
        out = x + self.tail(torch.relu(self.head(x)))
        return out.clamp(0, 1) if self.clamp else out


class HalfInstanceNormNet(nn.Module):
    """HINet's half instance normalisation: InstanceNorm2d on half the channels, then concat."""

    def __init__(self):
        super().__init__()
        self.head = nn.Conv2d(3, 8, 3, padding=1)
        self.norm = nn.InstanceNorm2d(4, affine=True)
        self.tail = nn.Conv2d(8, 3, 3, padding=1)
        with torch.no_grad():  # non-trivial affine parameters, so a dropped affine would show
            self.norm.weight.uniform_(0.5, 1.5)
            self.norm.bias.uniform_(-0.2, 0.2)

    def forward(self, x):
        features = self.head(x)
        first, second = torch.chunk(features, 2, dim=1)
        features = torch.cat([self.norm(first), second], dim=1)
        return x + self.tail(nn.functional.leaky_relu(features, 0.2))


def seeded(cls, **kwargs) -> nn.Module:
    """``cls(**kwargs)`` in eval mode, initialised from torch seed 0 (the same weights every time)."""
    torch.manual_seed(0)
    return cls(**kwargs).eval()


def random_images(count: int, size: int = TILE, seed: int = 1) -> torch.Tensor:
    """(count, 3, size, size) float32 uniform in [0, 1] from its own generator (global RNG untouched)."""
    return torch.rand(count, 3, size, size, generator=torch.Generator().manual_seed(seed))


def psnr_db(a, b) -> float:
    """PSNR in dB between two arrays (or tensors) on the [0, 1] scale, in float64; inf when equal."""
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def skimage_photo(name: str, size: int) -> torch.Tensor:
    """A centre crop (3, size, size) in [0, 1] of one of scikit-image's bundled natural photos
    (``chelsea``, ``astronaut``, ``coffee``...); skips the test when scikit-image is missing."""
    data = pytest.importorskip("skimage.data")
    array = getattr(data, name)()
    top, left = (array.shape[0] - size) // 2, (array.shape[1] - size) // 2
    crop = np.ascontiguousarray(array[top:top + size, left:left + size, :3])
    return torch.from_numpy(crop).permute(2, 0, 1).float() / 255


def add_gaussian_noise(image: torch.Tensor, sigma_255: float, seed: int = 0) -> torch.Tensor:
    """``image`` plus Gaussian noise of standard deviation ``sigma_255`` / 255 (not clipped), seeded."""
    generator = torch.Generator().manual_seed(seed)
    return image + sigma_255 / 255 * torch.randn(image.shape, generator=generator)
