"""MHNet: Mixed Hierarchy Network for image restoration (Gao and Dang, arXiv:2302.09554).

Faithful re-implementations of both architectures in the official repository Tombs98/MHNet, with
the official module and parameter names and registration order, so released checkpoints
(``{'epoch', 'state_dict', 'optimizer'}``, keys possibly prefixed ``module.``) load with
``strict=True`` once :mod:`zoo.checkpoints` has unwrapped the container (the optimizer state is
never read):

* :class:`MHNetV2` (top-level ``MHNet.py``, the paper's final version): stage 1 is a NAFNet-style
  encoder-decoder (NAFBlocks ``[1, 1, 1, 28]`` at ``width * 2**i`` channels, 2x2 stride-2 conv
  down, 1x1 conv + pixel shuffle up, additive skips, one NAFBlock per decoder level) whose middle
  block is SMAM, a channel (transposed) self-attention with four top-k sparse masks; stage 2 keeps
  full resolution: four LayerNorm2d + NAFBlock groups, each fused by AFFM with the stage-1 encoder
  and decoder features of one level brought to full resolution by 1x1 conv + pixel-shuffle chains.
* :class:`MHNetV1` (``Derain/MHNet.py`` and ``Deblur/MHNet.py``, the 2023 code): the same stage 1
  with plain channel attention in the middle and a stage-1 output image; a dual-attention shallow
  feature extractor; stage 2 of SCAB groups (depthwise-separable convs, SimpleGate, channel
  attention) at ``n_feat`` channels, fused by addition with bilinearly upsampled stage-1 features.

What differs from the official code (outputs are identical wherever the official code runs):

* any input size: the official stage 1 pads to a multiple of 16 but its stage 2 does not, so a
  side that is not a multiple of 16 crashes; here the whole input is padded once (reflection,
  :func:`zoo.tiling.pad_to_multiple`, the padding the zoo's tiling uses) and the output cropped;
* the official ``MHNet.py`` (v2) cannot be instantiated: two ``super()`` calls name classes that
  do not exist (``SKFF`` in AFFM, ``CASNet`` in FRSNet); fixed;
* layers the official forward never uses are not built (:data:`V2_UNUSED_OFFICIAL_KEYS`,
  :data:`V1_UNUSED_OFFICIAL_KEYS`): loading skips those checkpoint keys and says so. Among them
  are v2's ``conv_dnc2..4``: the official stage 2 applies ``conv_dnc1`` to all four decoder
  inputs, and the released weights were trained that way, so this forward does the same;
* LayerNorm2d is plain tensor ops instead of NAFNet's custom autograd Function (same forward,
  same gradient), and SMAM's masks are built out of place: both export with ``torch.export``.

:class:`MHNetLite` is a phone-sized student built for int8 mobile backends (see its docstring).
"""

from __future__ import annotations

from functools import partial
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from zoo.models.blocks import LayerNorm2d, NAFBlock, SimpleGate, check_input_size
from zoo.models.hinet_lite import RESIDUAL_INIT_SCALE, Upsample
from zoo.registry import ModelCard, register
from zoo.tasks import MILD_CAMERA_SHAKE
from zoo.tiling import crop_to_size, pad_to_multiple

PAPER = "Gao and Dang, Mixed Hierarchy Network for Image Restoration, arXiv:2302.09554"

#: fnmatch patterns of official v2 checkpoint keys whose layers the official forward never uses:
#: ``intro`` and ``stage1.ending`` are computed and discarded, ``conv_dnc2..4`` never called
#: (15,747 parameters at width 64).
V2_UNUSED_OFFICIAL_KEYS = ("intro.weight", "stage1.ending.*", "stage2.conv_dnc[234].weight")
#: The v1 ``info`` conv is built but never called (stage 2 has its own ``stage2.info``).
V1_UNUSED_OFFICIAL_KEYS = ("info.weight", "info.bias")

#: SMAM's top-k fractions of the key count, as the official code writes them: int(C*n/d).
SMAM_TOPK_FRACTIONS = ((1, 2), (2, 3), (3, 4), (4, 5))

#: Inputs are padded to multiples of this (four stride-2 levels in stage 1).
SIZE_MULTIPLE = 16


def _pad_input(model_name: str, x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Check ``x`` is an NCHW RGB batch, pad it (reflect, bottom/right) to ``multiple``; returns (padded, (H, W))."""
    check_input_size(x, 1, model_name, channels=3)
    return pad_to_multiple(x, multiple)


def _crop(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Undo :func:`_pad_input`; no operator at all when nothing was padded (an exported graph stays clean)."""
    return x if tuple(x.shape[-2:]) == tuple(size) else crop_to_size(x, size)


# --------------------------------------------------------------------------------------------
# Stage 1: the encoder-decoder shared by both versions (official class name: Bottneck)


class TransposedAttention(nn.Module):
    """Multi-head channel ("transposed") self-attention, the v1 middle block (Restormer's MDTA).

    Per head, queries and keys are the L2-normalised rows (one per channel, over all pixels) of a
    1x1 + depthwise 3x3 projection; the C x C attention ``q k^T * temperature`` is softmaxed over
    keys and applied to the values. Global over the image, so tiled results differ from whole-image
    ones. (N, dim, H, W) -> (N, dim, H, W); ``dim`` must be divisible by ``heads``.
    """

    def __init__(self, dim: int, heads: int = 8):
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.qkv = nn.Conv2d(dim, dim * 3, kernel_size=1, bias=False)
        self.qkv_dwconv = nn.Conv2d(dim * 3, dim * 3, kernel_size=3, padding=1, groups=dim * 3, bias=False)
        self.project_out = nn.Conv2d(dim, dim, kernel_size=1, bias=False)

    def mix(self, attention: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """Weights (N, heads, C, C) of raw scores times values (N, heads, C, HW)."""
        return attention.softmax(dim=-1) @ values

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, channels, height, width = x.shape
        per_head = (n, self.heads, channels // self.heads, height * width)
        q, k, v = (t.reshape(per_head) for t in self.qkv_dwconv(self.qkv(x)).chunk(3, dim=1))
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        attention = (q @ k.transpose(-2, -1)) * self.temperature
        return self.project_out(self.mix(attention, v).reshape(n, channels, height, width))


class SparseMixedAttention(TransposedAttention):
    """SMAM, the v2 middle block: transposed attention with four top-k masks mixed by learned weights.

    For each fraction f in 1/2, 2/3, 3/4, 4/5, only the ``int(C * f)`` largest scores of each row
    (C = channels per head = number of keys) survive (the others become -inf), a softmax runs
    over them, and the four attended outputs are summed with weights ``attn1..attn4`` (initialised
    at 0.2, as officially). The masks are built out of place (``scatter`` into ``zeros_like``), so
    the block exports with ``torch.export``; top-k keeps exactly k entries per row even under ties,
    as the official in-place ``scatter_`` does.
    """

    def __init__(self, dim: int, heads: int = 8):
        super().__init__(dim, heads)
        for index in range(1, len(SMAM_TOPK_FRACTIONS) + 1):
            self.register_parameter(f"attn{index}", nn.Parameter(torch.tensor([0.2])))

    def mix(self, attention: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        keys = attention.shape[-1]
        out = None
        for index, (num, den) in enumerate(SMAM_TOPK_FRACTIONS, start=1):
            kept = torch.topk(attention, k=int(keys * num / den), dim=-1).indices
            mask = torch.zeros_like(attention).scatter(-1, kept, 1.0)
            scores = torch.where(mask > 0, attention, torch.full_like(attention, float("-inf")))
            term = (scores.softmax(dim=-1) @ values) * getattr(self, f"attn{index}")
            out = term if out is None else out + term
        return out


class EncoderDecoder(nn.Module):
    """MHNet stage 1 (official name ``Bottneck``): a NAFNet U-Net with an attention middle block.

    ``len(encoder_blocks)`` levels of NAFBlocks at ``width * 2**i`` channels, each followed by a 2x2
    stride-2 conv; the ``middle`` block at ``width * 2**levels`` channels; per decoder level a 1x1
    conv to twice the channels + ``pixel_shuffle(2)``, the encoder skip added, then NAFBlocks.
    ``with_ending`` adds v1's stage-1 output image ``ending(features) + image`` (v2's is never used).

    ``forward(image, with_image)`` needs sides that are multiples of ``2**levels`` and returns
    ``(stage-1 image, or None unless with_image, encoder features (finest first), decoder features
    (coarsest first))``.
    """

    def __init__(self, width: int, encoder_blocks: Sequence[int], decoder_blocks: Sequence[int],
                 middle: nn.Module, with_ending: bool, image_channels: int = 3):
        super().__init__()
        self.intro = nn.Conv2d(image_channels, width, kernel_size=3, padding=1, bias=True)
        if with_ending:
            self.ending = nn.Conv2d(width, image_channels, kernel_size=3, padding=1, bias=True)
        self.with_ending = with_ending
        # Registration order (encoders, decoders, middle_blks, ups, downs) is the official key order.
        self.encoders = nn.ModuleList()
        self.decoders = nn.ModuleList()
        self.middle_blks = nn.Sequential(middle)
        self.ups = nn.ModuleList()
        self.downs = nn.ModuleList()
        channels = width
        for count in encoder_blocks:
            self.encoders.append(nn.Sequential(*(NAFBlock(channels) for _ in range(count))))
            self.downs.append(nn.Conv2d(channels, 2 * channels, kernel_size=2, stride=2))
            channels *= 2
        for count in decoder_blocks:
            self.ups.append(nn.Sequential(nn.Conv2d(channels, channels * 2, kernel_size=1, bias=False),
                                          nn.PixelShuffle(2)))
            channels //= 2
            self.decoders.append(nn.Sequential(*(NAFBlock(channels) for _ in range(count))))

    def forward(self, image: torch.Tensor, with_image: bool = False):
        x = self.intro(image)
        encoder_features = []
        for encoder, down in zip(self.encoders, self.downs):
            x = encoder(x)
            encoder_features.append(x)
            x = down(x)
        x = self.middle_blks(x)
        decoder_features = []
        for decoder, up, skip in zip(self.decoders, self.ups, reversed(encoder_features)):
            x = decoder(up(x) + skip)
            decoder_features.append(x)
        if with_image and not self.with_ending:
            raise ValueError("this stage 1 has no ending conv, hence no stage-1 image")
        stage_image = self.ending(x) + image if with_image else None
        return stage_image, encoder_features, decoder_features


# --------------------------------------------------------------------------------------------
# MHNet v2 (NAFBlock / SMAM / AFFM)


class PixelShuffleUp(nn.Module):
    """v2 ``UpDSample``: 1x1 conv to twice the channels, then ``pixel_shuffle(2)``: (N, C, H, W) -> (N, C/2, 2H, 2W)."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.up = nn.Sequential(nn.Conv2d(in_channels, in_channels * 2, kernel_size=1, bias=False), nn.PixelShuffle(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(x)


class AFFM(nn.Module):
    """Adaptive feature fusion: ``a * f + a_e * f_e + a_d * f_d`` with per-channel weights.

    The weights come from the global average of ``f + f_e + f_d``: a 1x1 conv to ``d`` channels,
    SimpleGate, then one 1x1 conv per branch, each followed by a softmax over the channels (as
    officially: every branch's weights sum to 1 over channels, they do not compete across branches).
    All inputs (N, C, H, W); returns (N, C, H, W).
    """

    def __init__(self, channels: int, branches: int = 3, reduction: int = 8, bias: bool = False):
        super().__init__()
        hidden = max(channels // reduction, 4)
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv_du = nn.Sequential(nn.Conv2d(channels, hidden, kernel_size=1, bias=bias), SimpleGate())
        self.fcs = nn.ModuleList(nn.Conv2d(hidden // 2, channels, kernel_size=1, bias=bias) for _ in range(branches))

    def forward(self, *features: torch.Tensor) -> torch.Tensor:
        total = features[0]
        for feature in features[1:]:
            total = total + feature
        summary = self.conv_du(self.avg_pool(total))
        fused = None
        for fc, feature in zip(self.fcs, features):
            term = fc(summary).softmax(dim=1) * feature
            fused = term if fused is None else fused + term
        return fused


def _stage1_at_full_resolution(stage: nn.Module, encoder_features, decoder_features):
    """Stage-1 features of levels 0..3 brought to full resolution by ``stage``'s ``up_enc1..3`` /
    ``up_dec1..3`` chains, both versions' stage 2: ``(encoder list, decoder list)``, level 0 first
    (decoder features arrive coarsest first)."""
    encoders = [encoder_features[0], stage.up_enc1(encoder_features[1]),
                stage.up_enc2(encoder_features[2]), stage.up_enc3(encoder_features[3])]
    decoders = [decoder_features[3], stage.up_dec1(decoder_features[2]),
                stage.up_dec2(decoder_features[1]), stage.up_dec3(decoder_features[0])]
    return encoders, decoders


class FullResolutionStage(nn.Module):
    """v2 stage 2 (official ``FRSNet``): four groups of ``num`` NAFBlocks at full resolution.

    Group g: ``x = norm_g(x); x = CABG_g(x) + x; x = AFFM_g(x, conv_enc_g(enc_g), conv_dnc1(dec_g))``
    where ``enc_g``/``dec_g`` are the stage-1 features of level g brought to full resolution by g
    :class:`PixelShuffleUp` steps. The official forward uses ``conv_dnc1`` for all four decoder
    inputs (``conv_dnc2..4`` exist in its checkpoints but are never called); the released weights
    were trained that way, so it is kept and the unused convs are not built.
    """

    def __init__(self, width: int, num: int, bias: bool = False):
        super().__init__()
        self.CABG1, self.CABG2, self.CABG3, self.CABG4 = (
            nn.Sequential(*(NAFBlock(width) for _ in range(num))) for _ in range(4))
        self.up_enc1 = PixelShuffleUp(width * 2)
        self.up_dec1 = PixelShuffleUp(width * 2)
        self.up_enc2 = nn.Sequential(PixelShuffleUp(width * 4), PixelShuffleUp(width * 2))
        self.up_dec2 = nn.Sequential(PixelShuffleUp(width * 4), PixelShuffleUp(width * 2))
        self.up_enc3 = nn.Sequential(PixelShuffleUp(width * 8), PixelShuffleUp(width * 4), PixelShuffleUp(width * 2))
        self.up_dec3 = nn.Sequential(PixelShuffleUp(width * 8), PixelShuffleUp(width * 4), PixelShuffleUp(width * 2))
        self.norm1, self.norm2, self.norm3, self.norm4 = (LayerNorm2d(width) for _ in range(4))
        self.conv_enc1, self.conv_enc2, self.conv_enc3, self.conv_enc4 = (
            nn.Conv2d(width, width, kernel_size=1, bias=bias) for _ in range(4))
        self.conv_dnc1 = nn.Conv2d(width, width, kernel_size=1, bias=bias)
        self.skff1, self.skff2, self.skff3, self.skff4 = (AFFM(width) for _ in range(4))

    def forward(self, x: torch.Tensor, encoder_features, decoder_features) -> torch.Tensor:
        encoders, decoders = _stage1_at_full_resolution(self, encoder_features, decoder_features)
        groups = zip((self.norm1, self.norm2, self.norm3, self.norm4), (self.CABG1, self.CABG2, self.CABG3, self.CABG4),
                     (self.conv_enc1, self.conv_enc2, self.conv_enc3, self.conv_enc4),
                     (self.skff1, self.skff2, self.skff3, self.skff4), encoders, decoders)
        for norm, blocks, conv_enc, fuse, enc, dec in groups:
            x = norm(x)
            x = blocks(x) + x
            x = fuse(x, conv_enc(enc), self.conv_dnc1(dec))
        return x


class MHNetV2(nn.Module):
    """MHNet, final (NAFBlock / SMAM / AFFM) version: RGB batch (N, 3, H, W) in [0, 1] -> restored, same shape.

    Args:
        width: stage-1 width (level i has ``width * 2**i`` channels, SMAM ``16 * width``) and the
            stage-2 width; the official model uses 64. ``16 * width`` must be divisible by ``heads``.
        num_cab: NAFBlocks per stage-2 group (official 8).
        encoder_blocks: NAFBlocks per stage-1 encoder level (official 1, 1, 1, 28; four levels).
        heads: SMAM heads (official 8).

    Any H, W >= 1: the input is padded to multiples of 16 (reflection) and the output cropped. The
    output is not clamped (the official model returns raw values; clamp for display). Global
    operators (SMAM, channel attention, AFFM) make tiled results differ slightly from whole-image ones.
    """

    size_multiple = SIZE_MULTIPLE

    def __init__(self, width: int = 64, num_cab: int = 8, encoder_blocks: Sequence[int] = (1, 1, 1, 28),
                 heads: int = 8, bias: bool = False):
        super().__init__()
        if len(encoder_blocks) != 4:
            raise ValueError(f"MHNet's stage 2 fuses four stage-1 levels; got {len(encoder_blocks)} encoder levels")
        self.intro2 = nn.Conv2d(3, width, kernel_size=3, padding=1, bias=bias)
        self.stage1 = EncoderDecoder(width, encoder_blocks, (1, 1, 1, 1),
                                     SparseMixedAttention(width * 16, heads), with_ending=False)
        self.stage2 = FullResolutionStage(width, num_cab, bias=bias)
        self.concat12 = nn.Conv2d(width * 2, width, kernel_size=1, bias=bias)
        self.ending = nn.Conv2d(width, 3, kernel_size=3, padding=1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Restore ``x`` (N, 3, H, W); returns (N, 3, H, W). Raises ``ValueError`` for a non-RGB/non-4D input."""
        image, size = _pad_input("MHNetV2", x, self.size_multiple)
        _, encoder_features, decoder_features = self.stage1(image)
        features = self.concat12(torch.cat([self.intro2(image), decoder_features[3]], dim=1))
        features = self.stage2(features, encoder_features, decoder_features)
        return _crop(self.ending(features) + image, size)


# --------------------------------------------------------------------------------------------
# MHNet v1 (2023 deraining / deblurring code)


class BasicConv(nn.Module):
    """A bias-free convolution named ``conv`` (the official BasicConv without BN or ReLU)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=(kernel_size - 1) // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class SpatialAttention(nn.Module):
    """``x * sigmoid(conv5x5([max_c(x), mean_c(x)]))`` (official ``spatial_attn_layer``)."""

    def __init__(self, kernel_size: int = 5):
        super().__init__()
        self.spatial = BasicConv(2, 1, kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.spatial(pooled))


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation ``x * sigmoid(W2 relu(W1 avgpool(x)))`` (official ``ca_layer``)."""

    def __init__(self, channels: int, reduction: int, bias: bool):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv_du = nn.Sequential(
            nn.Conv2d(channels, channels // reduction, kernel_size=1, bias=bias), nn.ReLU(),
            nn.Conv2d(channels // reduction, channels, kernel_size=1, bias=bias), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.conv_du(self.avg_pool(x))


class DualAttentionUnit(nn.Module):
    """Official ``DAU``: conv-SimpleGate-conv body, spatial and channel attention branches
    concatenated and fused by a 1x1 conv, plus the input. (N, C, H, W) -> (N, C, H, W)."""

    def __init__(self, channels: int, kernel_size: int, reduction: int, bias: bool):
        super().__init__()
        padding = kernel_size // 2
        self.body = nn.Sequential(nn.Conv2d(channels, channels, kernel_size, padding=padding, bias=bias), SimpleGate(),
                                  nn.Conv2d(channels // 2, channels, kernel_size, padding=padding, bias=bias))
        self.SA = SpatialAttention()
        self.CA = ChannelAttention(channels, reduction, bias=bias)
        self.conv1x1 = nn.Conv2d(channels * 2, channels, kernel_size=1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        res = self.body(x)
        return self.conv1x1(torch.cat([self.SA(res), self.CA(res)], dim=1)) + x


class DepthwiseSeparable(nn.Module):
    """Official ``Depth_wise``: depthwise k x k conv then 1x1 conv, both with bias."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int):
        super().__init__()
        self.depth_conv = nn.Conv2d(in_channels, in_channels, kernel_size, padding=kernel_size // 2, groups=in_channels)
        self.point_conv = nn.Conv2d(in_channels, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.point_conv(self.depth_conv(x))


class SimplifiedChannelAttention(nn.Module):
    """Official ``Sca_layer``: ``x * conv1x1(avgpool(x))`` (NAFNet's SCA)."""

    def __init__(self, channels: int):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv_du = nn.Sequential(nn.Conv2d(channels, channels, kernel_size=1, bias=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.conv_du(self.avg_pool(x))


class SCAB(nn.Module):
    """Official ``SCAB``: depthwise-separable conv, SimpleGate, depthwise-separable conv, SCA, plus input."""

    def __init__(self, channels: int, kernel_size: int):
        super().__init__()
        self.SCA = SimplifiedChannelAttention(channels)
        self.body = nn.Sequential(DepthwiseSeparable(channels, channels, kernel_size), SimpleGate(),
                                  DepthwiseSeparable(channels // 2, channels, kernel_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.SCA(self.body(x)) + x


class SCABGroup(nn.Module):
    """Official v1 ``CABG``: ``num_cab`` SCABs and a bias-free 3x3 conv, plus the input."""

    def __init__(self, channels: int, kernel_size: int, num_cab: int):
        super().__init__()
        self.body = nn.Sequential(*(SCAB(channels, kernel_size) for _ in range(num_cab)),
                                  nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + x


class BilinearUp(nn.Module):
    """v1 ``UpDSample``: bilinear 2x upsampling (align_corners=False), then a bias-free 1x1 conv."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.up = nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                                nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(x)


class AdditiveFusionStage(nn.Module):
    """v1 stage 2 (official ``CASNet``): four SCAB groups at ``n_feat`` channels, full resolution.

    ``x = info(x)``, then per group g: ``x = CABG_g(norm_g(x)) + conv_enc_g(enc_g) + conv_dec_g(dec_g)``
    with the stage-1 features of level g brought to full resolution by g :class:`BilinearUp` steps.
    """

    def __init__(self, n_feat: int, width: int, kernel_size: int, num_cab: int, bias: bool = False):
        super().__init__()
        self.info = nn.Conv2d(width, n_feat, kernel_size=1, bias=bias)
        self.CABG1, self.CABG2, self.CABG3, self.CABG4 = (
            SCABGroup(n_feat, kernel_size, num_cab) for _ in range(4))
        self.up_enc1 = BilinearUp(width * 2, n_feat)
        self.up_dec1 = BilinearUp(width * 2, n_feat)
        self.up_enc2 = nn.Sequential(BilinearUp(width * 4, width * 2), BilinearUp(width * 2, n_feat))
        self.up_dec2 = nn.Sequential(BilinearUp(width * 4, width * 2), BilinearUp(width * 2, n_feat))
        self.up_enc3 = nn.Sequential(BilinearUp(width * 8, width * 4), BilinearUp(width * 4, width * 2),
                                     BilinearUp(width * 2, n_feat))
        self.up_dec3 = nn.Sequential(BilinearUp(width * 8, width * 4), BilinearUp(width * 4, width * 2),
                                     BilinearUp(width * 2, n_feat))
        self.conv_enc1 = nn.Conv2d(width, n_feat, kernel_size=1, bias=bias)
        self.conv_enc2, self.conv_enc3, self.conv_enc4 = (
            nn.Conv2d(n_feat, n_feat, kernel_size=1, bias=bias) for _ in range(3))
        self.conv_dec1 = nn.Conv2d(width, n_feat, kernel_size=1, bias=bias)
        self.conv_dec2, self.conv_dec3, self.conv_dec4 = (
            nn.Conv2d(n_feat, n_feat, kernel_size=1, bias=bias) for _ in range(3))
        self.norm1, self.norm2, self.norm3, self.norm4 = (LayerNorm2d(n_feat) for _ in range(4))

    def forward(self, x: torch.Tensor, encoder_features, decoder_features) -> torch.Tensor:
        encoders, decoders = _stage1_at_full_resolution(self, encoder_features, decoder_features)
        groups = zip((self.norm1, self.norm2, self.norm3, self.norm4), (self.CABG1, self.CABG2, self.CABG3, self.CABG4),
                     (self.conv_enc1, self.conv_enc2, self.conv_enc3, self.conv_enc4),
                     (self.conv_dec1, self.conv_dec2, self.conv_dec3, self.conv_dec4), encoders, decoders)
        x = self.info(x)
        for norm, group, conv_enc, conv_dec, enc, dec in groups:
            x = group(norm(x)) + conv_enc(enc) + conv_dec(dec)
        return x


class MHNetV1(nn.Module):
    """MHNet, 2023 version: RGB batch (N, 3, H, W) in [0, 1] -> restored, same shape.

    Args:
        width: stage-1 width (official 32); levels have ``width * 2**i`` channels.
        n_feat: stage-2 width (official 40 for deraining, 64 for deblurring).
        num_cab: SCABs per stage-2 group (official 8).
        encoder_blocks: NAFBlocks per stage-1 encoder level (official 1, 1, 1, 28).
        kernel_size, reduction: of the shallow dual-attention unit (official 3 and 4).

    ``forward(x, return_stages=True)`` returns ``[stage-1 image, final image]`` (the official
    model returns them in the other order; the zoo's multi-stage losses expect the final last).
    Any H, W >= 1 (padded to multiples of 16 by reflection, output cropped); output not clamped.
    """

    size_multiple = SIZE_MULTIPLE

    def __init__(self, width: int = 32, n_feat: int = 40, num_cab: int = 8,
                 encoder_blocks: Sequence[int] = (1, 1, 1, 28), kernel_size: int = 3, reduction: int = 4,
                 heads: int = 8, bias: bool = False):
        super().__init__()
        if len(encoder_blocks) != 4:
            raise ValueError(f"MHNet's stage 2 fuses four stage-1 levels; got {len(encoder_blocks)} encoder levels")
        padding = kernel_size // 2
        self.shallow_feat1 = nn.Sequential(nn.Conv2d(3, width, kernel_size, padding=padding, bias=bias),
                                           DualAttentionUnit(width, kernel_size, reduction, bias=bias))
        self.stage1 = EncoderDecoder(width, encoder_blocks, (1, 1, 1, 1),
                                     TransposedAttention(width * 16, heads), with_ending=True)
        self.stage2 = AdditiveFusionStage(n_feat, width, kernel_size, num_cab, bias=bias)
        self.concat12 = nn.Conv2d(width * 2, width, kernel_size, padding=padding, bias=bias)
        self.tail = nn.Conv2d(n_feat, 3, kernel_size, padding=padding, bias=bias)

    def forward(self, x: torch.Tensor, return_stages: bool = False):
        """Restore ``x`` (N, 3, H, W); returns (N, 3, H, W), or ``[stage1, final]`` with ``return_stages``."""
        image, size = _pad_input("MHNetV1", x, self.size_multiple)
        stage1, encoder_features, decoder_features = self.stage1(image, with_image=return_stages)
        features = self.concat12(torch.cat([self.shallow_feat1(image), decoder_features[3]], dim=1))
        features = self.stage2(features, encoder_features, decoder_features)
        final = _crop(self.tail(features) + image, size)
        if return_stages:
            return [_crop(stage1, size), final]
        return final


# --------------------------------------------------------------------------------------------
# MHNet-Lite: the int8 phone variant


#: Bound of the gating factor of :class:`GatedBlock` (a hard tanh).
GATE_LIMIT = 1.0


class GatedBlock(nn.Module):
    """NAFBlock reduced to int8-delegable operators; (N, C, H, W) -> (N, C, H, W).

    ``y = x + conv3(dw_a(conv1_a(x)) * gate(dw_b(conv1_b(x))))`` then
    ``y + conv5(conv4_a(y) * gate(conv4_b(y)))`` with ``gate = clamp(-1, 1)``: NAFNet's SimpleGate
    written as two convolutions whose outputs multiply (the two halves of one conv, without a
    channel split that int8 backends may not delegate), one factor bounded. NAFNet can multiply two
    unbounded linear maps because LayerNorm resets the scale before every block; without it the
    product squares the activation scale block after block (measured: a training run reached
    1e21 and then inf within 8 blocks on one rain patch at iteration 1075), whereas a bounded gate
    grows it at most linearly, as a plain residual block does, and gives the int8 gate a fixed
    range. No LayerNorm (per-pixel statistics cannot be folded into weights), no channel attention
    (a global mean) and no beta / gamma scales (they would fold into conv3 / conv5). Instead conv3
    and conv5 start at ``RESIDUAL_INIT_SCALE`` of their default scale, so each block starts near
    the identity.
    """

    def __init__(self, channels: int):
        super().__init__()
        def pointwise() -> nn.Conv2d:
            return nn.Conv2d(channels, channels, kernel_size=1)

        def depthwise() -> nn.Conv2d:
            return nn.Conv2d(channels, channels, kernel_size=3, padding=1, groups=channels)

        self.conv1_a, self.conv1_b = pointwise(), pointwise()
        self.dw_a, self.dw_b = depthwise(), depthwise()
        self.conv3 = pointwise()
        self.conv4_a, self.conv4_b = pointwise(), pointwise()
        self.conv5 = pointwise()
        with torch.no_grad():
            for conv in (self.conv3, self.conv5):
                conv.weight.mul_(RESIDUAL_INIT_SCALE)
                conv.bias.mul_(RESIDUAL_INIT_SCALE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x + self.conv3(self.dw_a(self.conv1_a(x)) * self.dw_b(self.conv1_b(x)).clamp(-GATE_LIMIT, GATE_LIMIT))
        return y + self.conv5(self.conv4_a(y) * self.conv4_b(y).clamp(-GATE_LIMIT, GATE_LIMIT))


def _blocks(channels: int, count: int) -> nn.Sequential:
    return nn.Sequential(*(GatedBlock(channels) for _ in range(count)))


class MHNetLite(nn.Module):
    """Two-stage mixed-hierarchy restorer for phones: RGB (N, 3, H, W) in [0, 1] -> restored, same shape.

    MHNet's shape at a fraction of its cost, from operators XNNPACK runs in int8 as one partition
    (convolutions, depthwise convolutions, add, mul, pixel (un)shuffle, clamp):

    * ``pixel_unshuffle(2)`` first, so nothing runs at full resolution;
    * stage 1 (context): an encoder-decoder at 1/2 .. 1/2**len(widths) with :class:`GatedBlock`
      levels (``widths``), 2x2 stride-2 convs down, 1x1 conv + pixel shuffle up, skips added, and
      ``middle_blocks`` gated blocks at the coarsest level in place of SMAM (top-k and softmax do not
      run in int8 on any mobile delegate);
    * stage 2 (detail): at 1/2 resolution and ``widths[0]`` channels, starting from a fresh 3x3 conv
      of the image plus the stage-1 output features (added, where MHNet concatenates), one group of
      ``detail_blocks`` gated blocks per stage-1 level, each followed by the addition of that level's
      encoder and decoder features brought to 1/2 resolution by 1x1 conv + pixel-shuffle chains (AFFM's
      softmax-weighted sum becomes a plain sum; the chains' convs learn the weighting);
    * a 3x3 conv to 12 channels + ``pixel_shuffle(2)`` + the input (global residual), clamped to
      [0, 1] in eval mode. The zero-initialised tail makes a fresh model the identity.

    Any H, W >= 1 (padded to multiples of ``2**len(widths)`` by reflection, output cropped).
    """

    def __init__(self, widths: Sequence[int] = (32, 64, 128, 256), encoder_blocks: Sequence[int] = (1, 1, 1),
                 middle_blocks: int = 2, decoder_blocks: Sequence[int] = (1, 1, 1), detail_blocks: int = 2,
                 clamp_output: bool = True):
        super().__init__()
        widths, encoder_blocks, decoder_blocks = tuple(widths), tuple(encoder_blocks), tuple(decoder_blocks)
        levels = len(widths) - 1
        if levels < 1 or len(encoder_blocks) != levels or len(decoder_blocks) != levels:
            raise ValueError(f"{len(widths)} widths need {levels} encoder_blocks and decoder_blocks (finest first), "
                             f"got {encoder_blocks} and {decoder_blocks}")
        self.widths = widths
        self.clamp_output = clamp_output
        self.size_multiple = 2 ** len(widths)
        packed = 3 * 4  # channels after pixel_unshuffle(2)
        self.head = nn.Conv2d(packed, widths[0], kernel_size=3, padding=1)
        self.encoders = nn.ModuleList(_blocks(widths[i], encoder_blocks[i]) for i in range(levels))
        self.downs = nn.ModuleList(nn.Conv2d(widths[i], widths[i + 1], kernel_size=2, stride=2) for i in range(levels))
        self.middle = _blocks(widths[-1], middle_blocks)
        self.ups = nn.ModuleList(Upsample(widths[i + 1], widths[i]) for i in reversed(range(levels)))
        self.decoders = nn.ModuleList(_blocks(widths[i], decoder_blocks[i]) for i in reversed(range(levels)))
        self.head2 = nn.Conv2d(packed, widths[0], kernel_size=3, padding=1)
        self.detail = nn.ModuleList(_blocks(widths[0], detail_blocks) for _ in range(levels))
        self.fuse_enc = nn.ModuleList(self._to_finest(level) for level in range(levels))
        self.fuse_dec = nn.ModuleList(self._to_finest(level) for level in range(levels))
        self.tail = nn.Conv2d(widths[0], packed, kernel_size=3, padding=1)
        nn.init.zeros_(self.tail.weight)
        nn.init.zeros_(self.tail.bias)

    def _to_finest(self, level: int) -> nn.Module:
        """Level ``level`` features (``widths[level]`` ch, 1/2**(level+1)) -> ``widths[0]`` ch at 1/2."""
        if level == 0:
            return nn.Conv2d(self.widths[0], self.widths[0], kernel_size=1)
        return nn.Sequential(*(Upsample(self.widths[j], self.widths[j - 1]) for j in range(level, 0, -1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Restore ``x`` (N, 3, H, W); returns (N, 3, H, W), clamped to [0, 1] in eval mode when ``clamp_output``."""
        image, size = _pad_input("MHNetLite", x, self.size_multiple)
        packed = F.pixel_unshuffle(image, 2)
        features = self.head(packed)
        encoder_features = []
        for encoder, down in zip(self.encoders, self.downs):
            features = encoder(features)
            encoder_features.append(features)
            features = down(features)
        features = self.middle(features)
        decoder_features = []  # finest first, like encoder_features
        for up, decoder, skip in zip(self.ups, self.decoders, reversed(encoder_features)):
            features = decoder(up(features) + skip)
            decoder_features.insert(0, features)

        detail = self.head2(packed) + decoder_features[0]
        for blocks, fuse_enc, fuse_dec, enc, dec in zip(self.detail, self.fuse_enc, self.fuse_dec,
                                                        encoder_features, decoder_features):
            detail = blocks(detail) + fuse_enc(enc) + fuse_dec(dec)
        restored = _crop(image + F.pixel_shuffle(self.tail(detail), 2), size)
        if self.clamp_output and not self.training:
            restored = restored.clamp(0.0, 1.0)
        return restored


# --------------------------------------------------------------------------------------------
# Registered configurations

_DRIVE = "https://drive.google.com/file/d/{}/view"
_RELEASED = {
    "deblur": ("Deblurring", "1JJUwbH5cYEaTvtQ8jGF406ZKfDqXyNFD"),
    "derain": ("Deraining", "1nGwHL2wBnYbE_yxH6WxvpTM_pm0ggyvW"),
}
_CONTAINER = ("torch.save container {'epoch', 'state_dict', 'optimizer'} (keys may carry a 'module.' prefix; "
              "only the state dict is read, with weights_only=True); load with --weights FILE.pth")
_PAPER_RESULTS = {
    "derain": "paper figures, quoted from the paper and not measured here: deraining PSNR/SSIM averaged over "
              "Test100, Test1200, Rain100H and Rain100L 33.67 dB / 0.925 (trained on Rain13k)",
    "deblur": "paper figures, quoted from the paper and not measured here: GoPro 33.19 dB, HIDE 30.71 dB "
              "(trained on GoPro)",
}
_PADDING_NOTE = ("any input size: padded to multiples of 16 by reflection and cropped (the official code crashes "
                 "on sides that are not multiples of 16); global attention and pooling make tiled results differ "
                 "slightly from whole-image ones")


def _official(task: str, version: str) -> str:
    label, file_id = _RELEASED[task]
    return (f"the {label} checkpoint linked in the Tombs98/MHNet README ({_DRIVE.format(file_id)}); the README does "
            f"not say which code version saved it: if it does not fit this {version} model, the error names the "
            f"MHNet card it fits; {_CONTAINER}")


def _build_v2() -> MHNetV2:
    return MHNetV2().eval()


def _build_v1(n_feat: int) -> MHNetV1:
    return MHNetV1(n_feat=n_feat).eval()


def _build_lite() -> MHNetLite:
    return MHNetLite().eval()


for _task in ("deblur", "derain"):
    register(ModelCard(
        name=f"mhnet-v2-{_task}",
        family="mhnet",
        task=_task,
        variant="v2",
        summary=("MHNet (NAFBlock / SMAM / AFFM, the paper's final version), width 64; 67.53 M parameters "
                 "(official checkpoints: 67.54 M, 15,747 of them unused), 125.88 GMACs at 256x256"),
        builder=_build_v2,
        architecture=MHNetV2,
        official_layout="MHNet_v2_2024.txt",
        checkpoint_ignore=V2_UNUSED_OFFICIAL_KEYS,
        size_multiple=SIZE_MULTIPLE,
        weights=None,
        official_weights=_official(_task, "v2"),
        tile=256,
        overlap=32,
        paper=PAPER,
        notes=(
            _PAPER_RESULTS[_task],
            "the official MHNet.py is task-generic (one architecture for deblurring and deraining); this card and "
            f"mhnet-v2-{'derain' if _task == 'deblur' else 'deblur'} share the architecture and checkpoint layout",
            "official checkpoints hold 15,747 parameters the forward never uses (intro, stage1.ending, "
            "stage2.conv_dnc2..4): they are skipped on load with a warning; the official stage 2 applies conv_dnc1 "
            "to all four decoder inputs, and so does this one",
            "the official MHNet.py cannot be instantiated as released (super() calls name SKFF and CASNet); fixed",
            _PADDING_NOTE,
        ),
    ))

for _task, _n_feat, _gmacs, _params in (("derain", 40, "30.85", "16.70"), ("deblur", 64, "47.05", "17.03")):
    register(ModelCard(
        name=f"mhnet-v1-{_task}",
        family="mhnet",
        task=_task,
        variant=f"v1-{_task}",
        summary=(f"MHNet 2023 version for {'deraining' if _task == 'derain' else 'deblurring'} (stage-1 width 32, "
                 f"stage-2 n_feat {_n_feat}); {_params} M parameters in official checkpoints, {_gmacs} GMACs at 256x256"),
        builder=partial(_build_v1, _n_feat),
        architecture=MHNetV1,
        official_layout=f"MHNet_v1_{_task.capitalize()}_2023.txt",
        checkpoint_ignore=V1_UNUSED_OFFICIAL_KEYS,
        size_multiple=SIZE_MULTIPLE,
        weights=None,
        official_weights=_official(_task, "v1"),
        tile=256,
        overlap=32,
        paper=PAPER,
        notes=(
            _PAPER_RESULTS[_task],
            f"Tombs98/MHNet {'Derain' if _task == 'derain' else 'Deblur'}/MHNet.py (n_feat {_n_feat}); "
            "forward(x, return_stages=True) gives [stage-1 image, final image] for two-stage losses",
            "the official top-level 'info' conv is never used: its two tensors are skipped on load with a warning",
            _PADDING_NOTE,
        ),
    ))

_LITE_NOTES = (
    "designed for this zoo (not in the paper): MHNet's two-stage mixed hierarchy (context encoder-decoder, then "
    "a high-resolution detail branch fused with every encoder and decoder level) at 1/60 of mhnet-v2's MACs",
    "operators: conv2d (incl. depthwise), add, mul, pixel_(un)shuffle, clamp only: the PT2E int8 model lowers to "
    "ONE ExecuTorch XNNPACK partition; NAFNet's SimpleGate kept as a product of two convolutions, one clamped to [-1, 1] (without LayerNorm an unbounded product diverged in training)",
    "LayerNorm dropped, not folded: per-pixel statistics cannot become static weights and int8 delegates do not "
    "run it; SMAM (top-k + softmax) and AFFM (softmax) replaced by gated blocks and plain sums; residual branches "
    "start at 0.1x scale and the tail at zero (a fresh model is the identity)",
    "weights: zoo train configs/mhnet_lite_derain_cpu.yaml / mhnet_lite_deblur_mild_cpu.yaml (deblur: mild camera shake, "
    "trajectories of 10-30 px; 60-px shake did not train on a CPU budget, docs/mhnet.md)",
)

for _task in ("deblur", "derain"):
    register(ModelCard(
        name=f"mhnet-lite-{_task}",
        family="mhnet",
        task=_task,
        variant=f"lite-{_task}",
        summary=(f"MHNet-Lite: two-stage int8-friendly mixed-hierarchy student for "
                 f"{'motion deblurring' if _task == 'deblur' else 'rain-streak removal'}; "
                 "1.57 M parameters, 2.11 GMACs at 256x256 (1/60 of mhnet-v2)"),
        builder=_build_lite,
        architecture=MHNetLite,
        single_int8_partition=True,
        size_multiple=2 ** 4,
        weights=f"mhnet_lite_{_task}.safetensors",
        training_degradation=MILD_CAMERA_SHAKE if _task == "deblur" else None,
        # QAT int8 state (XNNPACK, head/tail float): configs/qat_mhnet_lite_{task}_cpu.yaml
        qat_weights={"xnnpack": f"mhnet_lite_{_task}_qat_xnnpack.safetensors"},
        tile=256,
        overlap=32,
        paper=f"Student of {PAPER} (architecture designed for this zoo)",
        notes=tuple(note.format(task=_task) for note in _LITE_NOTES),
    ))
