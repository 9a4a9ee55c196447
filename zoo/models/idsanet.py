"""IDSA-Net: information distillation + shared attention network for lightweight super-resolution.

The paper (Information Distillation and Shared Attention Network, Chinese Journal of Engineering
2025, doi 10.13374/j.issn2095-9389.2025.10.24.003) has no public code; this is a concrete design
built from its abstract, each part following a published design (docs/idsanet.md has the table):

* **ASDB, attention-sharing distillation block** (one per group): ``stages`` distillation
  stages, each a residual *local* unit (blueprint-separable conv, BSConv/LKDN), a residual
  *window self-attention* unit and a residual *sequence-modelling* unit, then a 1x1 conv that
  distils half the channels out (IMDN's progressive distillation). The attention matrix
  ``softmax(cos(q, k) * tau + relative position bias)`` over 8x8 windows is computed ONCE per
  group from the group's input (:class:`WindowAttentionMatrix`); every stage only projects its
  own values and reuses that matrix (ASID, Park et al. 2024: shared attention matrices).
  Cosine attention with a learned temperature (Swin V2) keeps logits bounded without a norm.
* **sequence-modelling unit** (:class:`SequenceUnit`): a gated unit whose value path scans the
  window along rows and then columns with long 1-D depthwise convolutions (a convolutional,
  export-friendly stand-in for a state-space/sequence mixer; gating as in Restormer's GDFN).
* **LKCIP, large-kernel channel information purification** (:class:`LargeKernelPurification`):
  the distilled features of all stages are concatenated, channel-shuffled (ShuffleNet) so each
  depthwise kernel sees every stage, and reweighted by large-kernel attention (VAN/LKDN: 5x5
  depthwise, 7x7 depthwise dilated by 3, 1x1), then fused back to the stream width by a 1x1 conv.
* **INHA, instance-normalisation hybrid attention** (:class:`InstanceNormHybridAttention`):
  channel attention from average pooling along H and along W separately (coordinate attention)
  followed by 1-D depthwise convolutions, no channel reduction (ECA's lesson); then spatial
  attention (CBAM's mean/max + 7x7 conv) computed on instance-normalised features.
* **upsampling**: a 3x3 conv to ``3 * scale**2`` channels + ``pixel_shuffle(scale)`` (ESPCN,
  the one-step "pixelshuffledirect" of lightweight SwinIR/ASID), plus the input repeated
  ``scale**2`` times per colour before the shuffle, i.e. a nearest-neighbour global skip: a fixed
  1x1 convolution (no parameters), and with the zero-initialised tail an untrained net is exactly
  nearest upsampling (bicubic would be a better start but is an op mobile delegates rarely run).

Export: every module uses plain tensor ops with static shapes for a fixed input size (window
partition by reshape/permute, instance norm as mean/var reductions, no data-dependent shapes),
so ``torch.export.export`` works at a fixed tile, and only operators the mobile delegates run
(slices, 3-D bmm, means over the last two dims, pooling, a 1x1 conv for the nearest skip): the
ExecuTorch XNNPACK program, float or int8, and the float LiteRT one are each ONE partition.
Any input size works: the input is padded at the bottom/right to a multiple of the window inside
``forward`` and the output cropped to ``scale`` times the input size, so the card's
``size_multiple`` is 1. Instance norm and the H/W pooling see the whole tile, so tiled results
differ slightly from whole-image ones.

``idsanet-lite`` (:class:`IDSANetLite`) is the phone student: 3x3 convs, ReLU, residual adds,
a learned 1x1 input skip initialised to the nearest-neighbour repeat and pixel shuffle; its int8
model lowers to ONE XNNPACK partition.
"""

from __future__ import annotations

import math
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from zoo.models.hinet_lite import ResidualBlock
from zoo.registry import ModelCard, register

PAPER = ("Information Distillation and Shared Attention Network (IDSA-Net) for lightweight image "
         "super-resolution, Chinese Journal of Engineering 2025, doi 10.13374/j.issn2095-9389.2025.10.24.003 "
         "(no public code: architecture designed for this zoo from the abstract, see docs/idsanet.md)")

#: Published x4 results (PSNR on Y, border = scale), quoted from the paper, NOT measured here.
PAPER_X4_PSNR = {"set5": 32.47, "set14": 28.84, "bsd100": 27.72, "urban100": 26.57}
PAPER_X4_PARAMETERS = 752_000

#: Scale factors of the registered IDSA-Net and IDSA-Net-Lite cards.
SCALES = (2, 3, 4)
LITE_SCALES = (2, 4)


# --------------------------------------------------------------------------------------------
# Plain-op helpers (export friendly; tests compare them with the straightforward torch versions)


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """(N, C, H, W) -> (N * H/w * W/w, w*w, C): non-overlapping ``window`` squares, row-major.

    H and W must be multiples of ``window``. Only reshape/permute: static shapes when exported.
    """
    n, c, h, w = x.shape
    x = x.reshape(n, c, h // window, window, w // window, window)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(n * (h // window) * (w // window), window * window, c)


def window_merge(windows: torch.Tensor, window: int, batch: int, height: int, width: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`: (N * nW, w*w, C) -> (N, C, height, width)."""
    c = windows.shape[-1]
    x = windows.reshape(batch, height // window, width // window, window, window, c)
    return x.permute(0, 5, 1, 3, 2, 4).reshape(batch, c, height, width)


def instance_norm(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Instance normalisation without affine parameters, as mean/variance reductions.

    (N, C, H, W) -> same shape: each channel of each image shifted to mean 0 and scaled to
    (biased) variance 1, like ``F.instance_norm(x, eps=eps)``, but written as reductions, which
    every exporter lowers (``instance_norm`` itself is rarely a delegate op).

    The floor at ``eps`` changes nothing in float (``variance + eps >= eps``); in an int8 graph,
    where ``variance + eps`` is quantized and a flat channel's rounds to 0, it keeps ``rsqrt``
    finite (QAT's gradients were NaN without it). A clamp, not ``torch.maximum`` with a filled
    tensor: the XNNPACK quantizer leaves it in float and the delegate takes it (a ``full_like``
    would add partitions).
    """
    mean = x.mean(dim=(2, 3), keepdim=True)
    centred = x - mean
    variance = centred.pow(2).mean(dim=(2, 3), keepdim=True)
    return centred * torch.rsqrt((variance + eps).clamp_min(eps))


def mean_of_last_axis(x: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """The mean over the last axis of ``x`` (N, ..., L), reshaped to ``shape`` (N * ... elements).

    Written as a mean over the last two dims of an (N, rows, L, 1) view: XNNPACK takes only that
    form (its global average pooling); a one-axis mean or a ``sum`` leaves the delegate.
    """
    rows = x.shape[1]
    for size in x.shape[2:-1]:  # the product spelled as the callers did before: the same traced graph
        rows = rows * size
    return x.reshape(x.shape[0], rows, x.shape[-1], 1).mean(dim=(2, 3), keepdim=True).reshape(shape)


def mean_over_width(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, H, 1): the mean of each row, ``x.mean(dim=3, keepdim=True)``
    (:func:`mean_of_last_axis`, which the delegates lower)."""
    n, c, h, _ = x.shape
    return mean_of_last_axis(x, (n, c, h, 1))


def mean_over_height(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, 1, W): the mean of each column, ``x.mean(dim=2, keepdim=True)``
    (:func:`mean_of_last_axis` of the transposed tile)."""
    n, c, _, w = x.shape
    return mean_of_last_axis(x.transpose(2, 3), (n, c, 1, w))


def channel_mean_and_max(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, 2, H, W): CBAM's pooled pair ``[mean over C, max over C]``.

    On one (N, H*W, C, 1) view: the mean as global average pooling (as in
    :func:`mean_of_last_axis`, written out since the max pooling shares the view), the max as a
    (C, 1) max pooling, both XNNPACK operators (``amax`` and a one-axis mean are not).
    """
    n, c, h, w = x.shape
    pixels = x.permute(0, 2, 3, 1).reshape(n, h * w, c, 1)
    mean = pixels.mean(dim=(2, 3), keepdim=True).reshape(n, 1, h, w)
    # The stride spelled out: Core ML's converter needs it in the graph.
    peak = F.max_pool2d(pixels, kernel_size=(c, 1), stride=(c, 1)).reshape(n, 1, h, w)
    return torch.cat([mean, peak], dim=1)


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """ShuffleNet channel shuffle: channel ``g * (C/groups) + i`` moves to ``i * groups + g``."""
    n, c, h, w = x.shape
    return x.reshape(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


def repeat_for_pixel_shuffle(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, C * s**2, H, W), each channel repeated ``s**2`` times in a row, as a 1x1
    convolution with ``weight = nearest_repeat_weight(s, C)``.

    ``pixel_shuffle(repeat_for_pixel_shuffle(x, w), s)`` is nearest-neighbour upsampling by ``s``,
    exact in float32 (products with 1 and 0). A convolution because every delegate runs it in
    float and int8: an ``expand`` falls outside ExecuTorch's XNNPACK, a broadcast outside LiteRT's,
    and a concatenation of the s*s slices, which LiteRT merges into one of 12-48 inputs, too.
    Under mixed precision (bf16 autocast in training) it runs in float32: the skip carries the
    image itself, which bf16 would round to 8 bits of mantissa.
    """
    device = x.device.type
    if device != "meta" and torch.is_autocast_enabled(device):  # meta: shape-only builds have no autocast
        with torch.autocast(device, enabled=False):
            return F.conv2d(x.float(), weight.float())
    return F.conv2d(x, weight)


def _l2_normalise(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """``x / ||x||`` along the last dimension of a 3-D (B, T, d) tensor (plain ops; ``F.normalize``
    up to its eps handling).

    The squared norm is ``d`` times :func:`mean_of_last_axis` of the squares (a ``sum`` leaves
    the XNNPACK delegate).
    """
    batch, tokens, depth = x.shape
    mean_square = mean_of_last_axis(x.pow(2), (batch, tokens, 1))
    squared_norm = mean_square * float(depth) + eps  # float: an int scalar adds a cast
    # Floored at eps for int8 graphs, as in instance_norm (no change in float).
    return x * torch.rsqrt(squared_norm.clamp_min(eps))


def _split_heads(tokens: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, T, heads * d) -> (B * heads, T, d): each head's channels as its own batch entry."""
    batch, count, channels = tokens.shape
    return tokens.reshape(batch, count, heads, channels // heads).transpose(1, 2).reshape(batch * heads, count, -1)


def _relative_position_index(window: int) -> torch.Tensor:
    """(w*w, w*w) int64: index into a (2w-1)**2 table of the offset between two window positions."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    offsets = coords[:, :, None] - coords[:, None, :] + (window - 1)
    return offsets[0] * (2 * window - 1) + offsets[1]


# --------------------------------------------------------------------------------------------
# IDSA-Net modules


class BSConv(nn.Module):
    """Blueprint-separable convolution (BSConv-U, as in LKDN): 1x1 pointwise, then kxk depthwise."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3):
        super().__init__()
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1)
        self.depthwise = nn.Conv2d(out_channels, out_channels, kernel_size, padding=kernel_size // 2,
                                   groups=out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.depthwise(self.pointwise(x))


class WindowAttentionMatrix(nn.Module):
    """The shared part of window self-attention: the attention matrix of each 8x8 window.

    (N, C, H, W), H and W multiples of ``window`` -> (N * nW, heads, w*w, w*w) rows summing to 1:
    ``softmax(tau_h * cos(q, k) + B)`` with q, k from one 1x1 conv (``qk_channels`` each),
    a learned per-head temperature tau (Swin V2's cosine attention, at most 100) and a relative
    position bias table B. Computed once per group; the stages only apply it to their values.
    """

    def __init__(self, channels: int, qk_channels: int, heads: int, window: int):
        super().__init__()
        if qk_channels % heads:
            raise ValueError(f"qk_channels {qk_channels} must be a multiple of heads {heads}")
        self.heads, self.window = heads, window
        self.qk = nn.Conv2d(channels, 2 * qk_channels, 1)
        self.log_temperature = nn.Parameter(torch.full((heads, 1, 1), math.log(10.0)))
        self.position_bias = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        nn.init.trunc_normal_(self.position_bias, std=0.02)
        self.register_buffer("position_index", _relative_position_index(window), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qk = window_partition(self.qk(x), self.window)  # (B, w*w, 2 * qk_channels)
        batch, tokens, channels = qk.shape
        # Slices and 3-D bmm rather than select and 4-D matmul (which exports as expand + bmm):
        # the XNNPACK delegate runs slices and bmm, not select or expand.
        q = _l2_normalise(_split_heads(qk[:, :, : channels // 2], self.heads))  # (B * heads, T, d)
        k = _l2_normalise(_split_heads(qk[:, :, channels // 2:], self.heads))
        temperature = self.log_temperature.clamp(max=math.log(100.0)).exp()
        # A gather on parameters only: ExecuTorch programs get it as a constant
        # (export_mobile.targets.executorch.fold_parameter_only_ops).
        bias = self.position_bias[self.position_index.reshape(-1)].reshape(tokens, tokens, self.heads)
        logits = torch.bmm(q, k.transpose(1, 2)).reshape(batch, self.heads, tokens, tokens)
        logits = logits * temperature + bias.permute(2, 0, 1)
        return logits.softmax(dim=-1)


class SharedAttention(nn.Module):
    """Applies a given window attention matrix to this stage's values: ``proj(attn @ v(x))``.

    ``x`` (N, C, H, W), ``attn`` from :class:`WindowAttentionMatrix` on the same windows;
    returns (N, C, H, W). Only the value and output projections are this stage's own.
    """

    def __init__(self, channels: int, heads: int, window: int):
        super().__init__()
        if channels % heads:
            raise ValueError(f"channels {channels} must be a multiple of heads {heads}")
        self.heads, self.window = heads, window
        self.value = nn.Conv2d(channels, channels, 1)
        self.project = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        v = _split_heads(window_partition(self.value(x), self.window), self.heads)  # (B * heads, T, d)
        batch, tokens = attn.shape[0], attn.shape[-1]
        out = torch.bmm(attn.reshape(batch * self.heads, tokens, tokens), v)
        out = out.reshape(batch, self.heads, tokens, c // self.heads).transpose(1, 2).reshape(batch, tokens, c)
        return self.project(window_merge(out, self.window, n, h, w))


class SequenceUnit(nn.Module):
    """Gated sequence-modelling unit: ``out(scan(a) * gelu(g))`` with ``a, g = split(in(x))``.

    ``scan`` runs a 1 x k then a k x 1 depthwise convolution (rows, then columns: a long 1-D
    mixing along each image line, the convolutional form of a linear sequence model); the gate
    is Restormer's GDFN gating. (N, C, H, W) -> (N, C, H, W), hidden width ``expansion * C``.
    """

    def __init__(self, channels: int, expansion: float = 1.0, kernel_size: int = 7):
        super().__init__()
        hidden = int(channels * expansion)
        self.expand = nn.Conv2d(channels, 2 * hidden, 1)
        self.scan_rows = nn.Conv2d(hidden, hidden, (1, kernel_size), padding=(0, kernel_size // 2), groups=hidden)
        self.scan_cols = nn.Conv2d(hidden, hidden, (kernel_size, 1), padding=(kernel_size // 2, 0), groups=hidden)
        self.reduce = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        expanded = self.expand(x)
        hidden = expanded.shape[1] // 2
        # Two slices, not chunk: XNNPACK has slice but no split.
        value, gate = expanded[:, :hidden], expanded[:, hidden:]
        return self.reduce(self.scan_cols(self.scan_rows(value)) * F.gelu(gate))


class DistillationStage(nn.Module):
    """One ASDB stage: ``x += local(x); x += attention(x, attn); x += sequence(x)``.

    Returns ``(stream, distilled)``: the refined stream (N, C, H, W) that the next stage keeps
    refining, and ``distill(stream)`` (N, C/2, H, W) that goes straight to the group's fusion.
    """

    def __init__(self, channels: int, heads: int, window: int, expansion: float):
        super().__init__()
        self.local = BSConv(channels, channels)
        self.attention = SharedAttention(channels, heads, window)
        self.sequence = SequenceUnit(channels, expansion)
        self.distill = nn.Conv2d(channels, channels // 2, 1)

    def forward(self, x: torch.Tensor, attn: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x + F.gelu(self.local(x))
        x = x + self.attention(x, attn)
        x = x + self.sequence(x)
        return x, self.distill(x)


class LargeKernelAttention(nn.Module):
    """VAN's large-kernel attention: ``x * pw(dw7_dilated3(dw5(x)))`` (21x21 receptive field)."""

    def __init__(self, channels: int):
        super().__init__()
        self.depthwise = nn.Conv2d(channels, channels, 5, padding=2, groups=channels)
        self.depthwise_dilated = nn.Conv2d(channels, channels, 7, padding=9, dilation=3, groups=channels)
        self.pointwise = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.pointwise(self.depthwise_dilated(self.depthwise(x)))


class LargeKernelPurification(nn.Module):
    """LKCIP: concatenated distilled features -> channel shuffle -> large-kernel attention -> 1x1 fuse.

    ``features``: (N, groups * part, H, W), the stages' distilled outputs in stage order;
    returns (N, out_channels, H, W).
    """

    def __init__(self, part_channels: int, groups: int, out_channels: int):
        super().__init__()
        self.groups = groups
        self.attention = LargeKernelAttention(part_channels * groups)
        self.fuse = nn.Conv2d(part_channels * groups, out_channels, 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fuse(self.attention(channel_shuffle(features, self.groups)))


class InstanceNormHybridAttention(nn.Module):
    """INHA: directional channel attention, then spatial attention on instance-normalised features.

    Channel: ``a_h = sigmoid(dw_k1(mean over W))`` (N, C, H, 1) and ``a_w = sigmoid(dw_1k(mean
    over H))`` (N, C, 1, W), per-channel 1-D depthwise convs (no channel reduction); ``y = x * a_h
    * a_w``. Spatial: ``s = sigmoid(conv7x7([mean_c, max_c](instance_norm(y))))`` (N, 1, H, W);
    returns ``y * s``. Instance norm makes the spatial map independent of each channel's
    brightness and contrast, so it responds to structure, not to intensity.
    """

    def __init__(self, channels: int, kernel_size: int = 7, spatial_kernel: int = 7):
        super().__init__()
        self.along_height = nn.Conv2d(channels, channels, (kernel_size, 1), padding=(kernel_size // 2, 0),
                                      groups=channels)
        self.along_width = nn.Conv2d(channels, channels, (1, kernel_size), padding=(0, kernel_size // 2),
                                     groups=channels)
        self.spatial = nn.Conv2d(2, 1, spatial_kernel, padding=spatial_kernel // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate_h = torch.sigmoid(self.along_height(mean_over_width(x)))
        gate_w = torch.sigmoid(self.along_width(mean_over_height(x)))
        y = x * gate_h * gate_w
        return y * torch.sigmoid(self.spatial(channel_mean_and_max(instance_norm(y))))


class AttentionSharingGroup(nn.Module):
    """One group: shared attention matrix, ``stages`` distillation stages, LKCIP, INHA, residual.

    (N, C, H, W), H and W multiples of ``window`` -> (N, C, H, W). ``attention_matrix`` runs
    once per forward; all stages use its output.
    """

    def __init__(self, channels: int, stages: int, heads: int, window: int, qk_channels: int, expansion: float):
        super().__init__()
        self.attention_matrix = WindowAttentionMatrix(channels, qk_channels, heads, window)
        self.stages = nn.ModuleList(DistillationStage(channels, heads, window, expansion) for _ in range(stages))
        self.purify = LargeKernelPurification(channels // 2, stages, channels)
        self.hybrid_attention = InstanceNormHybridAttention(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        attn = self.attention_matrix(x)
        stream, distilled = x, []
        for stage in self.stages:
            stream, part = stage(stream, attn)
            distilled.append(part)
        return x + self.hybrid_attention(self.purify(torch.cat(distilled, dim=1)))


class IDSANet(nn.Module):
    """IDSA-Net super-resolution: RGB (N, 3, H, W) in [0, 1] -> (N, 3, H * scale, W * scale).

    Args:
        scale: upscaling factor (2, 3 or 4); only the tail conv depends on it.
        channels: feature width C (even, multiple of ``heads``).
        groups: attention-sharing groups; stages: distillation stages per group.
        heads, window, qk_channels: window attention (8x8 windows, q/k width per matrix).
        expansion: hidden width of the sequence units, times C.
        clamp_output: clamp to [0, 1] in eval mode (training never clamps).

    Any H, W >= 1 works: the input is padded (reflect, replicate where too small) to multiples
    of ``window`` and the output cropped back. A freshly built model is nearest-neighbour
    upsampling (the tail starts at zero). Distillation taps: ``head``, ``groups.{i}``, ``body``.
    """

    def __init__(self, scale: int = 4, channels: int = 64, groups: int = 6, stages: int = 3, heads: int = 4,
                 window: int = 8, qk_channels: int = 32, expansion: float = 1.0, clamp_output: bool = True):
        super().__init__()
        if scale < 1 or channels % 2:
            raise ValueError(f"scale must be >= 1 and channels even, got scale {scale}, channels {channels}")
        self.scale, self.window, self.clamp_output = scale, window, clamp_output
        self.size_multiple = 1  # padding to the window happens inside forward
        # torch.export with a dynamic height and width (QAT graphs) needs inputs that take no
        # padding: multiples of the window.
        self.graph_size_multiple = window
        self.head = nn.Conv2d(3, channels, 3, padding=1)
        self.groups = nn.ModuleList(
            AttentionSharingGroup(channels, stages, heads, window, qk_channels, expansion) for _ in range(groups))
        self.body = nn.Conv2d(channels, channels, 3, padding=1)
        self.tail = nn.Conv2d(channels, 3 * scale * scale, 3, padding=1)
        nn.init.zeros_(self.tail.weight)
        nn.init.zeros_(self.tail.bias)
        # The nearest-neighbour skip's fixed 1x1 weight (not a parameter, not in checkpoints).
        self.register_buffer("nearest_weight", nearest_repeat_weight(scale), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Upscale ``x`` (N, 3, H, W) float32 in [0, 1]; returns (N, 3, H*scale, W*scale)."""
        from zoo.tiling import pad_to_size

        _check_rgb_batch(x, "IDSANet")
        height, width = x.shape[-2:]
        window = self.window
        padded = pad_to_size(x, -(-height // window) * window, -(-width // window) * window)
        shallow = self.head(padded)
        features = shallow
        for group in self.groups:
            features = group(features)
        features = self.body(features) + shallow
        nearest = repeat_for_pixel_shuffle(padded, self.nearest_weight)
        upscaled = F.pixel_shuffle(self.tail(features) + nearest, self.scale)
        if padded.shape[-2:] != x.shape[-2:]:
            # Only when padded: a full-size slice exports as an alias node, which Core ML refuses.
            upscaled = upscaled[..., : height * self.scale, : width * self.scale]
        if self.clamp_output and not self.training:
            upscaled = upscaled.clamp(0.0, 1.0)
        return upscaled


# --------------------------------------------------------------------------------------------
# IDSA-Net-Lite: the NPU student


class IDSANetLite(nn.Module):
    """Phone student: ``pixel_shuffle(tail(body(relu(head(x)))) + skip(x))``, all at LR resolution.

    ``head`` 3x3 conv 3 -> C + ReLU, ``blocks`` residual blocks ``x + conv(relu(conv(x)))`` (the
    hinet-lite block), ``tail`` 3x3 conv C -> 3 * scale**2, ``skip`` a 1x1 conv 3 -> 3 * scale**2
    initialised to the nearest-neighbour repeat (QuickSRNet's input-repeat add, as a conv so that
    int8 XNNPACK keeps it in the one partition; it may learn a better anchor). Output clamped to
    [0, 1] in eval mode. Any input size: no padding needed. Taps: ``head``, ``blocks.{i}``.
    """

    def __init__(self, scale: int = 4, channels: int = 32, blocks: int = 3, clamp_output: bool = True):
        super().__init__()
        self.scale, self.clamp_output = scale, clamp_output
        self.size_multiple = 1
        out_channels = 3 * scale * scale
        self.head = nn.Conv2d(3, channels, 3, padding=1)
        self.blocks = nn.Sequential(*(ResidualBlock(channels) for _ in range(blocks)))
        self.tail = nn.Conv2d(channels, out_channels, 3, padding=1)
        self.skip = nn.Conv2d(3, out_channels, 1)
        with torch.no_grad():
            nn.init.zeros_(self.tail.weight)
            nn.init.zeros_(self.tail.bias)
            self.skip.weight.copy_(nearest_repeat_weight(scale))
            self.skip.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Upscale ``x`` (N, 3, H, W) float32 in [0, 1]; returns (N, 3, H*scale, W*scale)."""
        _check_rgb_batch(x, "IDSANetLite")
        features = self.blocks(F.relu(self.head(x)))
        upscaled = F.pixel_shuffle(self.tail(features) + self.skip(x), self.scale)
        if self.clamp_output and not self.training:
            upscaled = upscaled.clamp(0.0, 1.0)
        return upscaled


def nearest_repeat_weight(scale: int, channels: int = 3) -> torch.Tensor:
    """1x1 conv weight (channels * scale**2, channels, 1, 1) that repeats each channel scale**2 times.

    Followed by ``pixel_shuffle(scale)`` it is nearest-neighbour upsampling.
    """
    weight = torch.zeros(channels * scale * scale, channels, 1, 1)
    for out_channel in range(channels * scale * scale):
        weight[out_channel, out_channel // (scale * scale)] = 1.0
    return weight


def _check_rgb_batch(x: torch.Tensor, model_name: str) -> None:
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"{model_name} expects an NCHW RGB batch, got shape {tuple(x.shape)}; "
                         "add a batch dimension (x[None]) or convert the image to RGB")


# --------------------------------------------------------------------------------------------
# Registered cards (numbers in the summaries are checked by tests/test_idsanet.py)

_SR_NOTES = (
    "task: bicubic super-resolution (degradation bicubic:xN, MATLAB imresize); evaluated on the BT.601 Y "
    "channel with a border crop of N pixels, as the SR literature",
    "any input size: padded to a multiple of the 8x8 attention window inside forward, output cropped to N x the "
    "input; instance norm and H/W pooling see the whole tile, so tiled output differs slightly from untiled "
    "(check with zoo.tiling.tiling_psnr); default tile 64 LR pixels with overlap 16",
)


def _register_idsanet(scale: int, summary: str) -> None:
    register(ModelCard(
        name=f"idsanet-x{scale}", family="idsanet", task="sr", variant=f"x{scale}", summary=summary,
        builder=partial(_build_idsanet, scale), scale=scale, size_multiple=1,
        weights=f"idsanet_x{scale}.safetensors", tile=64, overlap=16, paper=PAPER, architecture=IDSANet,
        # QAT int8 state: configs/qat_idsanet_xN_cpu.yaml (fixed PTQ scales), packed with `zoo quantize --pack`.
        qat_weights={"xnnpack": f"idsanet_x{scale}_qat_xnnpack.safetensors"},
        # Window attention as slices + bmm, one-axis means as pooling: docs/idsanet.md "Export".
        single_int8_partition=True,
        notes=_SR_NOTES + (
            "architecture: 6 attention-sharing groups x 3 distillation stages, 64 channels, 8x8 cosine window "
            "attention computed once per group and shared by its stages (ASID), gated row/column sequence units, "
            "large-kernel channel purification (channel shuffle + VAN LKA), instance-norm hybrid attention, 3x3 conv "
            "+ pixel shuffle with a nearest-neighbour input skip; docs/idsanet.md",
            "paper (x4, 752K parameters, not measured here): PSNR-Y Set5 32.47, Set14 28.84, BSD100 27.72, "
            "Urban100 26.57 dB; trained on DIV2K, which this zoo does not use",
        ),
    ))


def _build_idsanet(scale: int) -> IDSANet:
    return IDSANet(scale=scale).eval()


def _build_lite(scale: int) -> IDSANetLite:
    return IDSANetLite(scale=scale).eval()


def _register_lite(scale: int, summary: str) -> None:
    register(ModelCard(
        name=f"idsanet-lite-x{scale}", family="idsanet", task="sr", variant=f"lite-x{scale}", summary=summary,
        builder=partial(_build_lite, scale), scale=scale, size_multiple=1,
        weights=f"idsanet_lite_x{scale}.safetensors", tile=128, overlap=16, paper=PAPER,
        # QAT int8 state: configs/qat_idsanet_lite_xN_cpu.yaml, packed with `zoo quantize --pack`.
        qat_weights={"xnnpack": f"idsanet_lite_x{scale}_qat_xnnpack.safetensors"},
        architecture=IDSANetLite, single_int8_partition=True,
        notes=(
            _SR_NOTES[0],
            "shape: QuickSRNet/XLSR class for phone NPUs and XNNPACK int8: 3x3 conv 3->32 + ReLU, 3 residual blocks "
            "conv3x3-ReLU-conv3x3 + add at LR resolution, 3x3 conv to 3*N*N channels, a 1x1 input skip initialised "
            "to the nearest repeat, added before pixel_shuffle(N); clamp at inference. No attention, no norm, no "
            "bicubic op: the PT2E int8 model lowers to ONE XNNPACK partition",
            "why this small: on a phone the x4 output of a 1080p frame is 8K; every layer at LR resolution with 32 "
            "channels keeps it to a few GMACs per megapixel of input, the budget of Qualcomm's QuickSRNet-medium",
            "receptive-field radius 7 LR pixels (7 chained 3x3 convs): tiling with overlap >= 14 is exact; the "
            "default tile 128 / overlap 16 (margin 8) is exact",
            "student of idsanet-xN: configs/distill_idsanet_lite_xN_cpu.yaml (output + feature distillation)",
        ),
    ))


for _scale, _summary in (
    (2, "IDSA-Net x2: lightweight SR with shared window attention, distillation and large-kernel purification; "
        "0.74 M parameters, 52.25 GMACs at 256x256 input"),
    (3, "IDSA-Net x3: lightweight SR with shared window attention, distillation and large-kernel purification; "
        "0.74 M parameters, 52.82 GMACs at 256x256 input"),
    (4, "IDSA-Net x4: lightweight SR with shared window attention, distillation and large-kernel purification; "
        "0.76 M parameters, 53.61 GMACs at 256x256 input (paper: 752K parameters)"),
):
    _register_idsanet(_scale, _summary)

for _scale, _summary in (
    (2, "IDSA-Net-Lite x2: int8 one-partition phone student of idsanet-x2; 0.06 M parameters, 3.91 GMACs at 256x256 input"),
    (4, "IDSA-Net-Lite x4: int8 one-partition phone student of idsanet-x4; 0.07 M parameters, 4.60 GMACs at 256x256 input"),
):
    _register_lite(_scale, _summary)
