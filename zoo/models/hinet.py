"""HINet: Half Instance Normalization Network (Chen et al., CVPRW 2021).

A faithful re-implementation of the official ``basicsr/models/archs/hinet_arch.py`` of
megvii-model/HINet: same layers, same module and parameter names, same registration order, so
the released checkpoints (``{'params': state_dict}``) load with ``strict=True`` once the
container is unwrapped (see :mod:`zoo.checkpoints`).

Architecture (depth 5, width ``wf``):

* two U-Nets (``*_1`` = stage 1, ``*_2`` = stage 2), each with 5 encoder levels of
  ``wf * 2**i`` channels (4x4 stride-2 convolutions between levels) and 4 decoder levels
  (2x2 stride-2 transposed convolutions, then concatenation with a 3x3-convolved skip);
* every encoder block at levels ``hin_position_left..hin_position_right`` is a HIN block:
  instance normalisation (affine) on the first half of the channels of its first conv output;
* a supervised attention module (SAM) turns the stage-1 features into the stage-1 image
  (``conv2(features) + input``) and gates the features handed to stage 2;
* cross-stage feature fusion (CSFF): each stage-2 encoder block adds 3x3 convolutions of the
  stage-1 encoder and decoder features of its level;
* the stage-2 output is ``last(features) + input`` (a global residual).
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from zoo.models.blocks import SupervisedAttention, check_input_size
from zoo.registry import ModelCard, register

PAPER = "Chen et al., HINet: Half Instance Normalization Network for Image Restoration, CVPRW 2021"


class UNetConvBlock(nn.Module):
    """Two 3x3 conv + LeakyReLU layers with a 1x1 residual, optional HIN, CSFF and downsampling.

    Maps (N, in_size, H, W) to (N, out_size, H, W); with ``downsample`` it returns
    ``(downsampled (N, out_size, H/2, W/2), full-resolution features)`` so the caller can keep
    the latter for the skip connection.
    """

    def __init__(self, in_size: int, out_size: int, downsample: bool, relu_slope: float,
                 use_csff: bool = False, use_hin: bool = False):
        super().__init__()
        # Registration order mirrors the official block so state_dict() lists keys in its order.
        self.identity = nn.Conv2d(in_size, out_size, 1, 1, 0)
        self.conv_1 = nn.Conv2d(in_size, out_size, kernel_size=3, padding=1, bias=True)
        self.relu_1 = nn.LeakyReLU(relu_slope, inplace=False)
        self.conv_2 = nn.Conv2d(out_size, out_size, kernel_size=3, padding=1, bias=True)
        self.relu_2 = nn.LeakyReLU(relu_slope, inplace=False)
        # The official code creates CSFF convs only on downsampling levels of stage 2.
        self.use_csff = use_csff and downsample
        if self.use_csff:
            self.csff_enc = nn.Conv2d(out_size, out_size, 3, 1, 1)
            self.csff_dec = nn.Conv2d(out_size, out_size, 3, 1, 1)
        self.use_hin = use_hin
        self.normalized_channels = out_size // 2
        if use_hin:
            self.norm = nn.InstanceNorm2d(self.normalized_channels, affine=True)
        self.does_downsample = downsample
        if downsample:
            self.downsample = nn.Conv2d(out_size, out_size, kernel_size=4, stride=2, padding=1, bias=False)

    def forward(self, x: torch.Tensor, enc: torch.Tensor | None = None, dec: torch.Tensor | None = None):
        out = self.conv_1(x)
        if self.use_hin:
            half = self.normalized_channels
            out = torch.cat([self.norm(out[:, :half]), out[:, half:]], dim=1)
        out = self.relu_1(out)
        out = self.relu_2(self.conv_2(out))
        out = out + self.identity(x)
        if enc is not None and dec is not None:
            if not self.use_csff:
                raise ValueError("this block has no cross-stage fusion convs; call it without enc/dec")
            out = out + self.csff_enc(enc) + self.csff_dec(dec)
        if self.does_downsample:
            return self.downsample(out), out
        return out


class UNetUpBlock(nn.Module):
    """2x2 stride-2 transposed conv, concatenation with the skip features, then a conv block.

    Maps (N, in_size, H, W) and a bridge (N, out_size, 2H, 2W) to (N, out_size, 2H, 2W).
    """

    def __init__(self, in_size: int, out_size: int, relu_slope: float):
        super().__init__()
        self.up = nn.ConvTranspose2d(in_size, out_size, kernel_size=2, stride=2, bias=True)
        self.conv_block = UNetConvBlock(in_size, out_size, False, relu_slope)

    def forward(self, x: torch.Tensor, bridge: torch.Tensor) -> torch.Tensor:
        return self.conv_block(torch.cat([self.up(x), bridge], dim=1))


class HINet(nn.Module):
    """Two-stage HINet restoring an RGB batch (N, in_chn, H, W) in [0, 1] to the same shape.

    Args:
        in_chn: image channels (3 for RGB).
        wf: width of the first level; level ``i`` has ``wf * 2**i`` channels (64 = "1x", 32 = "0.5x").
        depth: number of encoder levels; H and W must be multiples of ``2**(depth-1)``.
        relu_slope: negative slope of the LeakyReLUs.
        hin_position_left, hin_position_right: encoder levels (inclusive) that use half
            instance normalisation; 0-4 for denoising/deraining, 3-4 for deblurring.

    The output is not clamped (the official model returns raw values; clamp for display).
    Instance normalisation makes the result depend on the image extent, so tiled inference is
    not bit-identical to whole-image inference; the official deblur/derain evaluation ran on
    256x256 tiles.
    """

    def __init__(self, in_chn: int = 3, wf: int = 64, depth: int = 5, relu_slope: float = 0.2,
                 hin_position_left: int = 0, hin_position_right: int = 4):
        super().__init__()
        self.in_chn = in_chn
        self.depth = depth
        self.size_multiple = 2 ** (depth - 1)
        # Instance norm needs more than one pixel per channel: the deepest HIN level sets a minimum size.
        hin_levels = [level for level in range(depth) if hin_position_left <= level <= hin_position_right]
        self.deepest_hin_scale = 2 ** max(hin_levels) if hin_levels else None
        self.down_path_1 = nn.ModuleList()
        self.down_path_2 = nn.ModuleList()
        self.conv_01 = nn.Conv2d(in_chn, wf, 3, 1, 1)
        self.conv_02 = nn.Conv2d(in_chn, wf, 3, 1, 1)

        channels = wf
        for level in range(depth):
            use_hin = hin_position_left <= level <= hin_position_right
            downsample = level + 1 < depth
            out_channels = wf * 2**level
            self.down_path_1.append(UNetConvBlock(channels, out_channels, downsample, relu_slope, use_hin=use_hin))
            self.down_path_2.append(
                UNetConvBlock(channels, out_channels, downsample, relu_slope, use_csff=downsample, use_hin=use_hin)
            )
            channels = out_channels

        self.up_path_1 = nn.ModuleList()
        self.up_path_2 = nn.ModuleList()
        self.skip_conv_1 = nn.ModuleList()
        self.skip_conv_2 = nn.ModuleList()
        for level in reversed(range(depth - 1)):
            out_channels = wf * 2**level
            self.up_path_1.append(UNetUpBlock(channels, out_channels, relu_slope))
            self.up_path_2.append(UNetUpBlock(channels, out_channels, relu_slope))
            self.skip_conv_1.append(nn.Conv2d(out_channels, out_channels, 3, 1, 1))
            self.skip_conv_2.append(nn.Conv2d(out_channels, out_channels, 3, 1, 1))
            channels = out_channels
        self.sam12 = SupervisedAttention(channels, kernel_size=3, bias=True, image_channels=in_chn)
        self.cat12 = nn.Conv2d(channels * 2, channels, 1, 1, 0)
        self.last = nn.Conv2d(channels, in_chn, 3, 1, 1, bias=True)

    def forward(self, x: torch.Tensor, return_stages: bool = False):
        """Restore ``x`` (N, in_chn, H, W), H and W multiples of ``2**(depth-1)`` (16) and, with
        HIN at the deepest level, H*W >= 2 * 16**2 (32x16 at least).

        Returns the stage-2 output (N, in_chn, H, W), or ``[stage1, stage2]`` when
        ``return_stages`` is True (the official training loss sums over both).
        Raises ``ValueError`` for a wrongly shaped input.
        """
        check_input_size(x, self.size_multiple, "HINet", channels=self.in_chn)
        if self.deepest_hin_scale is not None:
            scale = self.deepest_hin_scale
            if (x.shape[-2] // scale) * (x.shape[-1] // scale) < 2:
                raise ValueError(
                    f"HINet needs more than one pixel at its 1/{scale}-scale level for instance normalisation, "
                    f"got {x.shape[-2]}x{x.shape[-1]}; pad the input to at least {2 * scale}x{scale} "
                    f"or use a larger tile"
                )
        image = x

        # Stage 1: U-Net; keep encoder features (pre-downsampling) and decoder features for CSFF.
        features = self.conv_01(image)
        encoder_features = []
        for block in self.down_path_1[:-1]:
            features, skip = block(features)
            encoder_features.append(skip)
        features = self.down_path_1[-1](features)
        decoder_features = []
        for up, skip_conv, skip in zip(self.up_path_1, self.skip_conv_1, reversed(encoder_features)):
            features = up(features, skip_conv(skip))
            decoder_features.append(features)
        attended, stage1 = self.sam12(features, image)

        # Stage 2: fresh shallow features fused with the SAM output, CSFF from stage 1.
        features = self.cat12(torch.cat([self.conv_02(image), attended], dim=1))
        skips_2 = []
        for block, enc, dec in zip(self.down_path_2[:-1], encoder_features, reversed(decoder_features)):
            features, skip = block(features, enc, dec)
            skips_2.append(skip)
        features = self.down_path_2[-1](features)
        for up, skip_conv, skip in zip(self.up_path_2, self.skip_conv_2, reversed(skips_2)):
            features = up(features, skip_conv(skip))
        stage2 = self.last(features) + image

        if return_stages:
            return [stage1, stage2]
        return stage2


def _build(wf: int, hin_position_left: int, hin_position_right: int) -> HINet:
    return HINet(in_chn=3, wf=wf, depth=5, relu_slope=0.2,
                 hin_position_left=hin_position_left, hin_position_right=hin_position_right).eval()


_DRIVE = "https://drive.google.com/file/d/{}/view"
_CONTAINER = ("torch.save container {'params': state_dict} (keys may carry a 'module.' prefix); "
              "load with --weights FILE.pth, read safely with weights_only=True")
_MAC_NOTE = ("MACs count true multiply-accumulates of the convolutions (torch FlopCounterMode / 2) at "
             "1x3x256x256; the paper's 170.71 G for the 1x model is what a per-output-pixel counter gives: it "
             "charges the 2x2 stride-2 transposed convolutions four times over (+12.88 G) and adds bias additions "
             "(+0.16 G) and LeakyReLU elements (+0.06 G)")
_TILING_NOTE = ("instance normalisation makes results depend on the tile extent; the official "
                "deblur/derain evaluation used 256x256 tiles (averaged where they overlap)")

_CONFIGS = (
    # name, task, variant, wf, HIN levels, summary, official weights, official layout, notes
    ("hinet-sidd-1x", "denoise", "sidd-1x", 64, (0, 4),
     "HINet 1x (wf=64) trained on SIDD real-noise denoising; 88.7 M parameters, 157.6 GMACs at 256x256",
     f"HINet-SIDD-1x.pth, second Google Drive link in the SIDD section of the megvii-model/HINet README "
     f"({_DRIVE.format('1CU5z-M90Jc-TAcVpEaFjDCYA09fkubGi')}); {_CONTAINER}",
     "HINet-SIDD-1x.txt",
     (_MAC_NOTE + "; true 157.60 G vs paper 170.71 G",
      "trained on SIDD smartphone noise (real sRGB noise), not on synthetic Gaussian noise",
      "official SIDD evaluation ran on 256x256 crops, without tiling")),
    ("hinet-sidd-0.5x", "denoise", "sidd-0.5x", 32, (0, 4),
     "HINet 0.5x (wf=32) trained on SIDD real-noise denoising; 22.2 M parameters, 39.5 GMACs at 256x256",
     f"HINet-SIDD-0.5x.pth, first Google Drive link in the SIDD section of the megvii-model/HINet README "
     f"({_DRIVE.format('1Y5YJQVNL0weifE--5us344bLwzBNS_sU')}); {_CONTAINER}",
     "HINet-SIDD-0.5x.txt",
     (_MAC_NOTE + "; true 39.54 G",
      "trained on SIDD smartphone noise (real sRGB noise), not on synthetic Gaussian noise")),
    ("hinet-gopro", "deblur", "gopro", 64, (3, 4),
     "HINet (wf=64, HIN at the two deepest levels) trained on GoPro motion deblurring",
     f"HINet-GoPro.pth from the megvii-model/HINet README, GoPro section "
     f"({_DRIVE.format('1dw8PKVkLfISzNtUu3gqGh83NBO83ZQ5n')}); {_CONTAINER}",
     "HINet-GoPro_REDS.txt",
     (_MAC_NOTE,
      "same architecture and checkpoint layout as hinet-reds (official options: wf 64, HIN levels 3-4); "
      "only the training data differs",
      _TILING_NOTE)),
    ("hinet-reds", "deblur", "reds", 64, (3, 4),
     "HINet (wf=64, HIN at the two deepest levels) trained on REDS deblurring (blur + JPEG)",
     f"HINet-REDS.pth from the megvii-model/HINet README, REDS section "
     f"({_DRIVE.format('1uYH8XvLgrn-Vg6L0NjUcO2Fblhqrc8TU')}); {_CONTAINER}",
     "HINet-GoPro_REDS.txt",
     (_MAC_NOTE,
      "same architecture and checkpoint layout as hinet-gopro; trained on REDS blurred frames with JPEG "
      "artefacts (NTIRE 2021 deblurring track 2)",
      _TILING_NOTE)),
    ("hinet-rain13k", "derain", "rain13k", 64, (0, 4),
     "HINet 1x (wf=64, HIN at all levels) trained on Rain13k synthetic deraining",
     f"HINet-Rain13k.pth from the megvii-model/HINet README, Rain13k section "
     f"({_DRIVE.format('1AVedAkb1B2F2b3XGWlMFFVSsNfQlCwxa')}); {_CONTAINER}",
     "HINet-Rain13k.txt",
     (_MAC_NOTE + "; same layout as hinet-sidd-1x (157.60 G)",
      _TILING_NOTE)),
)

for _name, _task, _variant, _wf, (_left, _right), _summary, _official, _layout, _notes in _CONFIGS:
    register(ModelCard(
        name=_name,
        family="hinet",
        task=_task,
        variant=_variant,
        summary=_summary,
        builder=partial(_build, _wf, _left, _right),
        architecture=HINet,
        size_multiple=16,
        weights=None,
        official_weights=_official,
        official_layout=_layout,
        tile=256,
        overlap=32,
        paper=PAPER,
        notes=_notes,
    ))
