"""HINet-Lite: mobile students of HINet for colour Gaussian denoising (sigma 15-50 on 0-255).

A one-stage U-Net with HINet's downsampling factor (16) and encoder/decoder levels at the same
resolutions as the teacher's levels 1-4, so intermediate features can be distilled level by
level, but built only from operators that ExecuTorch's XNNPACK backend runs in int8:

* ``pixel_unshuffle(2)`` folds each 2x2 patch of the image into 12 channels, so no layer runs at
  full resolution (full-resolution layers dominate memory traffic and latency on phones);
* per level, residual blocks ``x + conv3x3(relu(conv3x3(x)))`` with the same width in and out
  (no 1x1 identity conv needed), widths doubling as the resolution halves, so every level costs
  the same MACs;
* 2x2 stride-2 convolutions down (non-overlapping windows: a space-to-depth + 1x1 conv), and
  1x1 convolutions + ``pixel_shuffle(2)`` up (sub-pixel convolution, the same function as
  HINet's 2x2 stride-2 transposed convolution);
* skips are *added* to the upsampled features (HINet concatenates, then convolves): an add costs
  no MACs, and int8 concatenation forces its inputs onto one shared scale;
* ReLU everywhere (XNNPACK fuses conv + ReLU in int8; HINet's LeakyReLU is left unfused);
* ``tail`` (3x3 conv to 12 channels) + ``pixel_shuffle(2)`` back to RGB, then the global
  residual ``x + f(x)`` and, in eval mode only, a clamp to [0, 1].

HINet's half instance normalisation is dropped, not folded: an instance norm divides by
statistics of the very image (or tile) being processed, which no static weight can reproduce;
XNNPACK does not delegate it and int8 PT2E leaves it in float; it makes tiled and whole-image
results differ. Replacing it by a learnable per-channel affine would fold into the preceding
conv exactly, i.e. it would only re-parametrise that conv, so it is not kept either. What HIN
gave the teacher, stable activations through a deep network, comes here from the residual
blocks, whose second convolution starts at 0.1x its default scale (each block starts near the
identity), and the zero-initialised ``tail`` makes the untrained network the identity.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from zoo.models.blocks import check_input_size
from zoo.registry import ModelCard, register
from zoo.tasks import MILD_CAMERA_SHAKE, MILD_CAMERA_SHAKE_OR_JPEG

PAPER = ("Student of Chen et al., HINet: Half Instance Normalization Network for Image Restoration, "
         "CVPRW 2021 (architecture designed for this zoo)")

#: Scale of the residual branches' second convolution at initialisation (near-identity blocks).
RESIDUAL_INIT_SCALE = 0.1


def _output_energy(conv: nn.Conv2d) -> torch.Tensor:
    """Sum of squared weights per output channel of ``conv`` (shape: out_channels)."""
    return conv.weight.pow(2).sum(dim=(1, 2, 3))


def _input_energy(conv: nn.Conv2d) -> torch.Tensor:
    """Sum of squared weights per input channel of ``conv`` (shape: in_channels)."""
    return conv.weight.pow(2).sum(dim=(0, 2, 3))


def _strongest(score: torch.Tensor, count: int) -> torch.Tensor:
    """Indices of the ``count`` largest entries of ``score``, ascending (the kept channels)."""
    return torch.sort(torch.topk(score, count).indices).values


class ResidualBlock(nn.Module):
    """``x + conv_2(relu(conv_1(x)))`` with 3x3 convolutions; (N, C, H, W) -> (N, C, H, W)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv_1 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
        self.conv_2 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
        with torch.no_grad():
            self.conv_2.weight.mul_(RESIDUAL_INIT_SCALE)
            self.conv_2.bias.mul_(RESIDUAL_INIT_SCALE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_2(F.relu(self.conv_1(x)))


class Upsample(nn.Module):
    """Sub-pixel upsampling: 1x1 conv to ``4 * out_channels``, then ``pixel_shuffle(2)``.

    (N, in_channels, H, W) -> (N, out_channels, 2H, 2W); each output pixel depends on one input
    pixel only, like HINet's 2x2 stride-2 transposed convolution.
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 4 * out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(self.conv(x), 2)


class HINetLite(nn.Module):
    """One-stage U-Net denoiser: RGB batch (N, in_chn, H, W) in [0, 1] -> restored batch, same shape.

    Args:
        in_chn: image channels (3 for RGB).
        widths: channels of the levels at 1/2, 1/4, 1/8 and 1/16 of the input resolution (one
            entry per level; the number of entries sets the depth). H and W must be multiples of
            ``2 ** len(widths)`` (16 for four levels, like HINet).
        encoder_blocks: residual blocks per encoder level (same length as ``widths``; the last
            level is the bottleneck).
        decoder_blocks: residual blocks per decoder level, deepest first (``len(widths) - 1``
            entries, for the levels at 1/8, 1/4, 1/2 with four levels).
        clamp_output: clamp the output to [0, 1] in eval mode (inference and export). Training
            mode never clamps, so the loss keeps its gradient where the raw output leaves [0, 1].

    A freshly built model returns its input (the ``tail`` conv starts at zero), clamped in eval mode.

    Modules (names are the distillation taps, see :func:`distillation_taps`): ``head``,
    ``encoders.{i}`` (output at 1/2**(i+1) resolution, ``widths[i]`` channels), ``downs.{i}``,
    ``ups.{j}``, ``decoders.{j}`` (output at the resolution of ``encoders.{depth-2-j}``), ``tail``.
    """

    def __init__(self, in_chn: int = 3, widths: Sequence[int] = (32, 64, 128, 256),
                 encoder_blocks: Sequence[int] = (1, 1, 1, 2), decoder_blocks: Sequence[int] = (1, 1, 1),
                 clamp_output: bool = True):
        super().__init__()
        widths, encoder_blocks, decoder_blocks = tuple(widths), tuple(encoder_blocks), tuple(decoder_blocks)
        if len(widths) < 1 or any(int(w) < 1 for w in widths):
            raise ValueError(f"widths must be one or more positive channel counts, got {widths}")
        if len(encoder_blocks) != len(widths) or len(decoder_blocks) != len(widths) - 1:
            raise ValueError(
                f"{len(widths)} levels need {len(widths)} encoder_blocks and {len(widths) - 1} decoder_blocks, "
                f"got {encoder_blocks} and {decoder_blocks}")
        self.in_chn = in_chn
        self.widths = widths
        self.clamp_output = clamp_output
        self.size_multiple = 2 ** len(widths)
        packed = in_chn * 4  # channels after pixel_unshuffle(2)

        self.head = nn.Conv2d(packed, widths[0], kernel_size=3, padding=1)
        self.encoders = nn.ModuleList(
            nn.Sequential(*(ResidualBlock(width) for _ in range(count)))
            for width, count in zip(widths, encoder_blocks))
        self.downs = nn.ModuleList(
            nn.Conv2d(widths[level], widths[level + 1], kernel_size=2, stride=2, padding=0)
            for level in range(len(widths) - 1))
        decoder_levels = list(reversed(range(len(widths) - 1)))  # deepest first
        self.ups = nn.ModuleList(Upsample(widths[level + 1], widths[level]) for level in decoder_levels)
        self.decoders = nn.ModuleList(
            nn.Sequential(*(ResidualBlock(widths[level]) for _ in range(count)))
            for level, count in zip(decoder_levels, decoder_blocks))
        self.tail = nn.Conv2d(widths[0], packed, kernel_size=3, padding=1)
        # Start as the identity (output = input): training then only has to learn the noise
        # residual; in a 200-step CPU trial this gained 2.5 dB over torch's default init.
        nn.init.zeros_(self.tail.weight)
        nn.init.zeros_(self.tail.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Restore ``x`` (N, in_chn, H, W), H and W multiples of :attr:`size_multiple` (16).

        Returns (N, in_chn, H, W) float32; in eval mode clamped to [0, 1] when ``clamp_output``.
        Raises ``ValueError`` for a wrongly shaped input.
        """
        check_input_size(x, self.size_multiple, "HINetLite", channels=self.in_chn)
        features = F.relu(self.head(F.pixel_unshuffle(x, 2)))
        skips = []
        for level, encoder in enumerate(self.encoders):
            features = encoder(features)
            if level < len(self.downs):
                skips.append(features)
                features = F.relu(self.downs[level](features))
        for up, decoder, skip in zip(self.ups, self.decoders, reversed(skips)):
            features = decoder(up(features) + skip)
        restored = x + F.pixel_shuffle(self.tail(features), 2)
        if self.clamp_output and not self.training:
            restored = restored.clamp(0.0, 1.0)
        return restored

    @torch.no_grad()
    def inherit_from(self, teacher: "HINetLite") -> dict[str, torch.Tensor]:
        """Initialise this (narrower, shallower) network with a channel-pruned copy of ``teacher``.

        Structured pruning as in weight inheritance / Minitron-style prune-then-distill: per level,
        the residual stream keeps the teacher's channels with the largest weight norm (summed over
        every convolution that writes or reads that channel), each block's inner channels likewise,
        and per level the first ``len(self.encoders[i])`` / ``len(self.decoders[j])`` blocks. The
        input/output channels (12 after ``pixel_unshuffle``) are kept whole. The result is not the
        teacher's function, but a start that already denoises, which distillation then refines.

        Returns, for each module whose output is a channel subset of the teacher's module of the
        same name (``head``, ``encoders.i``, ``decoders.j``), the kept teacher channel indices
        (int64, ascending), so that feature adapters can start as the matching selection.
        Raises ``ValueError`` when the teacher is not a wider/deeper HINetLite of the same depth.
        """
        if not isinstance(teacher, HINetLite):
            raise ValueError(f"can only inherit from a HINetLite teacher, got {type(teacher).__name__}")
        if len(teacher.widths) != len(self.widths) or teacher.in_chn != self.in_chn:
            raise ValueError(f"teacher has {len(teacher.widths)} levels and {teacher.in_chn} channels, "
                             f"this student {len(self.widths)} and {self.in_chn}: they must match")
        for name in ("encoders", "decoders"):
            mine, theirs = getattr(self, name), getattr(teacher, name)
            for level, (own, other) in enumerate(zip(mine, theirs)):
                if len(own) > len(other):
                    raise ValueError(f"{name}.{level} has {len(own)} blocks, the teacher only {len(other)}")
        if any(w > t for w, t in zip(self.widths, teacher.widths)):
            raise ValueError(f"widths {self.widths} exceed the teacher's {teacher.widths}")

        levels = len(self.widths)
        decoder_levels = list(reversed(range(levels - 1)))  # deepest first, as in __init__
        # Importance of each residual-stream channel per level: squared norms of all weights that
        # write it (dim 0) or read it (dim 1).
        score = [torch.zeros(w) for w in teacher.widths]
        writers, readers = [(teacher.head, 0)], [(teacher.tail, 0)]
        for level in range(levels):
            blocks = list(teacher.encoders[level])
            if level < levels - 1:
                blocks += list(teacher.decoders[decoder_levels.index(level)])
                readers.append((teacher.downs[level], level))
                writers.append((teacher.downs[level], level + 1))
            for block in blocks:
                readers.append((block.conv_1, level))
                writers.append((block.conv_2, level))
        for j, level in enumerate(decoder_levels):
            readers.append((teacher.ups[j].conv, level + 1))
            score[level] += _output_energy(teacher.ups[j].conv).view(-1, 4).sum(dim=1)  # pixel_shuffle: channel c <- conv outputs 4c..4c+3
        for conv, level in writers:
            score[level] += _output_energy(conv)
        for conv, level in readers:
            score[level] += _input_energy(conv)
        keep = [_strongest(s, w) for s, w in zip(score, self.widths)]
        full = torch.arange(self.in_chn * 4)

        def copy(mine: nn.Conv2d, theirs: nn.Conv2d, out_index: torch.Tensor, in_index: torch.Tensor) -> None:
            mine.weight.copy_(theirs.weight[out_index][:, in_index])
            mine.bias.copy_(theirs.bias[out_index])

        def copy_blocks(mine: nn.Sequential, theirs: nn.Sequential, stream: torch.Tensor) -> None:
            for own, other in zip(mine, theirs):
                inner = _strongest(_output_energy(other.conv_1) + _input_energy(other.conv_2), own.conv_1.out_channels)
                copy(own.conv_1, other.conv_1, inner, stream)
                copy(own.conv_2, other.conv_2, stream, inner)

        copy(self.head, teacher.head, keep[0], full)
        copy(self.tail, teacher.tail, full, keep[0])
        for level in range(levels):
            copy_blocks(self.encoders[level], teacher.encoders[level], keep[level])
            if level < levels - 1:
                copy(self.downs[level], teacher.downs[level], keep[level + 1], keep[level])
        for j, level in enumerate(decoder_levels):
            shuffled = (keep[level].view(-1, 1) * 4 + torch.arange(4)).reshape(-1)
            copy(self.ups[j].conv, teacher.ups[j].conv, shuffled, keep[level + 1])
            copy_blocks(self.decoders[j], teacher.decoders[j], keep[level])
        kept = {"head": keep[0]}
        kept.update({f"encoders.{level}": keep[level] for level in range(levels)})
        kept.update({f"decoders.{j}": keep[level] for j, level in enumerate(decoder_levels)})
        return kept


@dataclass(frozen=True)
class DistillationTap:
    """A student module whose output is matched to a HINet teacher module's output.

    ``teacher_index`` is the element of a tuple output to use (HINet's downsampling encoder
    blocks return ``(downsampled, features)``; index 1 is the full-resolution feature map).
    ``stride`` is the feature resolution as a fraction of the input: 1/stride.
    """

    student: str
    teacher: str
    student_channels: int
    teacher_channels: int
    stride: int
    teacher_index: int | None = None


def distillation_taps(student: HINetLite, teacher_wf: int = 64, teacher_depth: int = 5,
                      teacher_stage: int = 2) -> list[DistillationTap]:
    """Feature pairs at equal resolution between ``student`` and a HINet teacher.

    ``teacher_wf``: the teacher's first width (64 for hinet-sidd-1x, 32 for hinet-sidd-0.5x);
    ``teacher_stage``: 1 or 2, which of the teacher's U-Nets to read (2 is the final one).
    Student ``encoders.i`` (1/2**(i+1) resolution) pairs with teacher ``down_path_S.(i+1)``
    (the pre-downsampling features, tuple element 1, except at the bottleneck), and student
    ``decoders.j`` with teacher ``up_path_S.j``. Channel counts differ (the student is narrower):
    the distillation loss needs a learned 1x1 adapter per tap.
    """
    if teacher_stage not in (1, 2):
        raise ValueError(f"teacher_stage must be 1 or 2, got {teacher_stage}")
    levels = len(student.widths)
    if levels != teacher_depth - 1:
        raise ValueError(f"a student with {levels} levels pairs with a depth-{levels + 1} teacher, "
                         f"not depth {teacher_depth}")
    taps = []
    for index, width in enumerate(student.widths):
        level = index + 1
        bottleneck = level == teacher_depth - 1
        taps.append(DistillationTap(
            student=f"encoders.{index}", teacher=f"down_path_{teacher_stage}.{level}",
            student_channels=width, teacher_channels=teacher_wf * 2**level, stride=2**level,
            teacher_index=None if bottleneck else 1))
    for index in range(levels - 1):
        level = levels - 1 - index
        taps.append(DistillationTap(
            student=f"decoders.{index}", teacher=f"up_path_{teacher_stage}.{index}",
            student_channels=student.widths[level - 1], teacher_channels=teacher_wf * 2**level,
            stride=2**level))
    return taps


def receptive_radius(encoder_blocks: Sequence[int], decoder_blocks: Sequence[int]) -> int:
    """Receptive-field radius in input pixels of a :class:`HINetLite` with these block counts.

    An output pixel depends on input pixels at most this far away (rows or columns), wherever it
    lies on the 2**levels grid; widths do not matter. Tiling with margin >= radius (overlap >= 2
    * radius, tiles starting on multiples of the size multiple) reproduces whole-image inference
    exactly. Derivation: track the span [lo, hi] of input offsets a feature depends on, relative
    to its top-left input pixel, through each layer at its stride s (input pixels per feature).
    """
    levels = len(encoder_blocks)
    lo, hi, stride = 0, 1, 2  # pixel_unshuffle(2): a feature covers a 2x2 patch
    lo, hi = lo - stride, hi + stride  # head 3x3 conv
    skip_spans = []
    for level, blocks in enumerate(encoder_blocks):
        lo, hi = lo - 2 * blocks * stride, hi + 2 * blocks * stride  # two 3x3 convs per block
        if level < levels - 1:
            skip_spans.append((lo, hi))
            hi += stride  # 2x2 stride-2 conv: the second pixel of the window lies one stride on
            stride *= 2
    for blocks, (skip_lo, skip_hi) in zip(decoder_blocks, reversed(skip_spans)):
        stride //= 2
        lo -= stride  # pixel_shuffle: a fine pixel reads the coarse pixel up to one stride back
        lo, hi = min(lo, skip_lo), max(hi, skip_hi)
        lo, hi = lo - 2 * blocks * stride, hi + 2 * blocks * stride
    lo, hi = lo - stride, hi + stride  # tail 3x3 conv
    lo -= 1  # final pixel_shuffle back to full resolution
    return max(-lo, hi)


# --------------------------------------------------------------------------------------------
# Registered tiers (the numbers in the summaries are checked by tests/test_hinet_lite.py)

TEACHER = "hinet-sidd-1x"

_LITE = ((32, 64, 128, 256), (1, 1, 1, 2), (1, 1, 1))
_LITE_S = ((16, 32, 64, 128), (1, 1, 1, 1), (1, 1, 1))
_TIERS = (
    # name, variant, task, training degradation, (widths, encoder blocks, decoder blocks), weights file, summary
    ("hinet-lite", "lite", "denoise", "gaussian:15-50", _LITE, "hinet_lite_gaussian.safetensors",
     "HINet-Lite: one-stage int8-friendly U-Net student of HINet for colour Gaussian denoising (sigma 15-50); "
     "3.49 M parameters, 2.73 GMACs at 256x256 (1/58 of hinet-sidd-1x)"),
    ("hinet-lite-s", "lite-s", "denoise", "gaussian:15-50", _LITE_S, "hinet_lite_s_gaussian.safetensors",
     "HINet-Lite-S: half-width HINet-Lite for colour Gaussian denoising (sigma 15-50); "
     "0.58 M parameters, 0.64 GMACs at 256x256 (1/248 of hinet-sidd-1x)"),
    ("hinet-lite-derain", "lite", "derain", "rain", _LITE, "hinet_lite_derain.safetensors",
     "HINet-Lite for rain-streak removal (the zoo's Rain100L-style synthetic rain), fine-tuned from the "
     "hinet-lite denoiser; 3.49 M parameters, 2.73 GMACs at 256x256"),
    ("hinet-lite-deblur", "lite", "deblur", MILD_CAMERA_SHAKE_OR_JPEG, _LITE, "hinet_lite_deblur.safetensors",
     "HINet-Lite for mild camera-shake motion deblurring (trajectory length 10-30 px), also of photos saved as "
     "JPEGs; fine-tuned from the hinet-lite denoiser; 3.49 M parameters, 2.73 GMACs at 256x256"),
)


def _build(widths: tuple[int, ...], encoder_blocks: tuple[int, ...], decoder_blocks: tuple[int, ...]) -> HINetLite:
    return HINetLite(3, widths, encoder_blocks, decoder_blocks).eval()


_TASK_NOTES = {
    "denoise": "task: colour Gaussian denoising, one model for sigma 15-50 (0-255 scale), noise level not given "
               "(train with degradation gaussian:15-50); output clamped to [0, 1] in eval mode only",
    "deblur": f"task: blind deblurring of mild camera shake (degradation {MILD_CAMERA_SHAKE}: "
              "DeblurGAN random trajectories of 10-30 px on a 65-pixel canvas, Gaussian noise sigma 0-3; from "
              "its second stage on, half of the training patches are then saved as a JPEG of quality 60-90, "
              f"{MILD_CAMERA_SHAKE_OR_JPEG!r}); the task's default benchmark (path length 60) is far harder and "
              "scored in the card too; output clamped to [0, 1] in eval mode only",
    "derain": "task: rain-streak removal (degradation `rain`: additive Rain100L-style streaks, density 0.004, "
              "length 15-25 px, 80-100 degrees); output clamped to [0, 1] in eval mode only",
}


def _notes(task: str, widths: tuple[int, ...], encoder_blocks: tuple[int, ...],
           decoder_blocks: tuple[int, ...]) -> tuple[str, ...]:
    radius = receptive_radius(encoder_blocks, decoder_blocks)
    encoder_taps = ", ".join(
        f"encoders.{i} ({w} ch, 1/{2 ** (i + 1)}) ~ down_path_2.{i + 1}" + ("[1]" if i < len(widths) - 1 else "")
        + f" ({64 * 2 ** (i + 1)} ch)" for i, w in enumerate(widths))
    decoder_taps = ", ".join(
        f"decoders.{j} ({widths[len(widths) - 2 - j]} ch, 1/{2 ** (len(widths) - 1 - j)}) ~ up_path_2.{j} "
        f"({64 * 2 ** (len(widths) - 1 - j)} ch)" for j in range(len(widths) - 1))
    return (
        _TASK_NOTES[task],
        "shape: pixel_unshuffle(2) then a 4-level U-Net at 1/2..1/16 resolution (the resolutions of HINet's "
        f"levels 1-4, widths {'/'.join(map(str, widths))}), residual blocks conv3x3-ReLU-conv3x3 "
        f"(encoder {'/'.join(map(str, encoder_blocks))}, decoder {'/'.join(map(str, decoder_blocks))} blocks), "
        "2x2 stride-2 conv down, 1x1 conv + pixel_shuffle up, skips added, 3x3 conv + pixel_shuffle to RGB, "
        "global residual x + f(x); no layer runs at full resolution, doubling widths make every level cost the "
        "same; one stage, not HINet's two: two stages at the same MACs would leave 0.7x the widths",
        "operators: conv2d (explicit padding), ReLU, add, pixel_(un)shuffle, clamp only: ExecuTorch XNNPACK "
        "lowers the PT2E int8 model (symmetric, per-channel) as ONE delegate with no operator left outside",
        "half instance normalisation dropped (not folded): its per-image statistics cannot become static weights, "
        "XNNPACK does not delegate it, int8 leaves it in float and it breaks exact tiling; an affine stand-in "
        "would only re-parametrise the preceding conv. Residual branches start at 0.1x scale instead",
        f"distillation taps (student ~ teacher {TEACHER}, stage 2; stage 1 works alike): {encoder_taps}; "
        f"{decoder_taps}; [1] = second element of the block's (downsampled, features) tuple; widths differ, "
        "so each tap needs a 1x1 adapter (zoo.models.hinet_lite.distillation_taps lists them)",
        f"receptive-field radius {radius} px: tiling is exact when the margin (overlap // 2) is >= {radius}, i.e. "
        f"overlap >= {2 * radius}; the default tile 256 / overlap 32 is approximate (blending hides the seams, "
        "check with zoo.tiling.tiling_psnr)",
    )


#: QAT int8 state that ships, per tier and recipe (packed by `zoo quantize NAME --backend B --pack RUN`
#: from the configs/qat_*_cpu.yaml runs; docs/quantization.md).
_QAT_WEIGHTS = {
    "hinet-lite": {"xnnpack": "hinet_lite_gaussian_qat_xnnpack.safetensors"},
    "hinet-lite-s": {"xnnpack": "hinet_lite_s_gaussian_qat_xnnpack.safetensors"},
    "hinet-lite-derain": {"xnnpack": "hinet_lite_derain_qat_xnnpack.safetensors"},
    "hinet-lite-deblur": {"xnnpack": "hinet_lite_deblur_qat_xnnpack.safetensors"},
}

for _name, _variant, _task, _degradation, (_widths, _encoder, _decoder), _weights, _summary in _TIERS:
    register(ModelCard(
        name=_name,
        family="hinet",
        task=_task,
        variant=_variant,
        summary=_summary,
        builder=partial(_build, _widths, _encoder, _decoder),
        architecture=HINetLite,
        size_multiple=2 ** len(_widths),
        weights=_weights,
        qat_weights=_QAT_WEIGHTS.get(_name, {}),
        tile=256,
        overlap=32,
        training_degradation=_degradation,
        # conv / ReLU / add / pixel (un)shuffle only: int8 XNNPACK runs the whole model as one delegate
        single_int8_partition=True,
        paper=PAPER,
        notes=_notes(_task, _widths, _encoder, _decoder),
    ))
