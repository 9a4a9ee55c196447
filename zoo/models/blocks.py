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
