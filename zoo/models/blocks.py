"""Building blocks shared by several model families.

Module and parameter names here follow the official code they come from, because checkpoint
keys are built from them: renaming an attribute breaks strict loading of official weights.
"""

from __future__ import annotations

import torch
from torch import nn


def check_input_size(x: torch.Tensor, multiple: int, model_name: str, channels: int = 3) -> None:
    """Raise ``ValueError`` unless ``x`` is an NCHW batch with ``channels`` channels and sides
    that are multiples of ``multiple`` pixels.

    U-Nets that downsample ``k`` times by 2 need sides divisible by ``2**k``: otherwise the
    upsampled features no longer line up with the skip connections. The message names the size
    found, the next valid size and the two fixes (pad, or run tiled inference).
    """
    if x.dim() != 4 or x.shape[1] != channels:
        raise ValueError(
            f"{model_name} expects an NCHW batch with {channels} channels, got shape {tuple(x.shape)}; "
            f"add a batch dimension (x[None]) or convert the image to RGB"
        )
    height, width = x.shape[-2], x.shape[-1]
    if height % multiple or width % multiple:
        padded_height = -(-height // multiple) * multiple
        padded_width = -(-width // multiple) * multiple
        raise ValueError(
            f"{model_name} needs height and width that are multiples of {multiple}, got {height}x{width}; "
            f"pad the input to {padded_height}x{padded_width} (e.g. reflect padding, then crop the output) "
            f"or use tiled inference with a tile size that is a multiple of {multiple}"
        )


class SupervisedAttention(nn.Module):
    """Supervised attention module (SAM) between two stages (MPRNet, HINet, MHNet).

    From the stage-1 features ``x`` (N, n_feat, H, W) and the degraded input image ``image``
    (N, 3, H, W) it predicts the stage-1 restored image ``conv2(x) + image`` and gates the
    features with ``sigmoid(conv3(restored))``, so stage 2 attends where stage 1 is confident.
    Parameter names ``conv1``, ``conv2``, ``conv3`` match the official checkpoints.
    """

    def __init__(self, n_feat: int, kernel_size: int = 3, bias: bool = True, image_channels: int = 3):
        super().__init__()
        padding = kernel_size // 2
        self.conv1 = nn.Conv2d(n_feat, n_feat, kernel_size, padding=padding, bias=bias)
        self.conv2 = nn.Conv2d(n_feat, image_channels, kernel_size, padding=padding, bias=bias)
        self.conv3 = nn.Conv2d(image_channels, n_feat, kernel_size, padding=padding, bias=bias)

    def forward(self, x: torch.Tensor, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(gated features, stage restored image)``, shapes of ``x`` and ``image``."""
        restored = self.conv2(x) + image
        gate = torch.sigmoid(self.conv3(restored))
        features = self.conv1(x) * gate + x
        return features, restored


class LayerNorm2d(nn.Module):
    """Layer normalisation over the channels of each pixel of an NCHW tensor (NAFNet's LayerNorm2d).

    ``weight * (x - mean_c(x)) / sqrt(var_c(x) + eps) + bias`` with the biased variance over the
    channel axis. NAFNet implements it as a custom ``autograd.Function`` with a hand-written
    backward, which ``torch.export`` cannot trace; this is the same forward in plain tensor ops
    (autograd derives the same gradient), so it exports as is. Parameter names ``weight`` and
    ``bias`` (shape (channels,)) match the official checkpoints. (N, C, H, W) -> (N, C, H, W).
    """

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        centred = x - x.mean(dim=1, keepdim=True)
        variance = centred.pow(2).mean(dim=1, keepdim=True)
        normalised = centred / (variance + self.eps).sqrt()
        return self.weight.view(1, -1, 1, 1) * normalised + self.bias.view(1, -1, 1, 1)


def simple_gate(x: torch.Tensor) -> torch.Tensor:
    """NAFNet's SimpleGate: the product of the two channel halves, (N, 2C, H, W) -> (N, C, H, W)."""
    first, second = x.chunk(2, dim=1)
    return first * second


class NAFBlock(nn.Module):
    """NAFNet's nonlinear-activation-free block (Chen et al., ECCV 2022); (N, C, H, W) -> same shape.

    ``y = x + beta * conv3(SCA(SG(dwconv2(conv1(norm1(x))))))`` then
    ``y + gamma * conv5(SG(conv4(norm2(y))))``, where SG is :func:`simple_gate` and SCA the
    simplified channel attention ``t * sca(t)`` (global average pool + 1x1 conv). ``beta`` and
    ``gamma`` start at zero, so a fresh block is the identity. Names (``conv1``..``conv5``,
    ``sca.1``, ``norm1``, ``norm2``, ``beta``, ``gamma``) match NAFNet and MHNet checkpoints.
    """

    def __init__(self, channels: int, dw_expand: int = 2, ffn_expand: int = 2):
        super().__init__()
        dw_channels = channels * dw_expand
        self.conv1 = nn.Conv2d(channels, dw_channels, kernel_size=1, bias=True)
        self.conv2 = nn.Conv2d(dw_channels, dw_channels, kernel_size=3, padding=1, groups=dw_channels, bias=True)
        self.conv3 = nn.Conv2d(dw_channels // 2, channels, kernel_size=1, bias=True)
        self.sca = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(dw_channels // 2, dw_channels // 2, kernel_size=1, bias=True),
        )
        ffn_channels = channels * ffn_expand
        self.conv4 = nn.Conv2d(channels, ffn_channels, kernel_size=1, bias=True)
        self.conv5 = nn.Conv2d(ffn_channels // 2, channels, kernel_size=1, bias=True)
        self.norm1 = LayerNorm2d(channels)
        self.norm2 = LayerNorm2d(channels)
        self.beta = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = simple_gate(self.conv2(self.conv1(self.norm1(x))))
        t = self.conv3(t * self.sca(t))
        y = x + t * self.beta
        t = self.conv5(simple_gate(self.conv4(self.norm2(y))))
        return y + t * self.gamma


class SimpleGate(nn.Module):
    """:func:`simple_gate` as a module, for ``nn.Sequential`` bodies whose indices checkpoints name."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return simple_gate(x)
