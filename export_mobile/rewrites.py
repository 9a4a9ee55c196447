"""Export-friendly rewrites of zoo models: exactly the same function, operators that delegate.

Some layers are fine in PyTorch but split a mobile delegate: ExecuTorch's XNNPACK backend has no
instance normalisation, so every ``nn.InstanceNorm2d`` of HINet (half instance normalisation in
each encoder block) leaves the delegate, and the lowered graph is cut into one partition per
block with layout changes at each cut. :func:`rewrite_for_export` replaces such layers by the
same arithmetic written with operators the delegates run (mean over H and W, subtract,
multiply, reciprocal square root, add); the model files themselves stay as they are, so
checkpoints load unchanged.

The rewrite is opt-in (``export_model(..., rewrite=True)`` is the default of ``zoo export``;
``--no-rewrite`` exports the original graph) and is checked by ``tests/test_export_executorch.py``
to agree with the original model to float rounding (< 1e-5 on images in [0, 1]).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn

__all__ = ["DecomposedInstanceNorm2d", "RewriteReport", "rewrite_for_export"]


class DecomposedInstanceNorm2d(nn.Module):
    """``nn.InstanceNorm2d`` as mean / variance reductions over H and W (same numbers, same parameters).

    For an (N, C, H, W) input: ``(x - mean) * rsqrt(var + eps) * weight + bias`` with the mean
    and the biased variance taken per image and channel over H and W, which is what
    ``InstanceNorm2d`` computes when it uses instance statistics (``track_running_stats=False``,
    or training mode). With tracked running statistics in eval mode the stored statistics are
    used instead, as in PyTorch. The reductions are ``mean(dim=(2, 3), keepdim=True)``, the form
    XNNPACK lowers to global average pooling.
    """

    def __init__(self, original: nn.InstanceNorm2d):
        super().__init__()
        self.num_features = original.num_features
        self.eps = float(original.eps)
        self.affine = bool(original.affine)
        self.track_running_stats = bool(original.track_running_stats)
        if self.affine:
            self.weight = nn.Parameter(original.weight.detach().clone(), requires_grad=original.weight.requires_grad)
            self.bias = nn.Parameter(original.bias.detach().clone(), requires_grad=original.bias.requires_grad)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if self.track_running_stats and original.running_mean is not None:
            self.register_buffer("running_mean", original.running_mean.detach().clone())
            self.register_buffer("running_var", original.running_var.detach().clone())
        else:
            self.running_mean = None
            self.running_var = None
        self.train(original.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise ``x`` (N, C, H, W) per image and channel; returns the same shape and dtype."""
        if self.running_mean is not None and not self.training:
            mean = self.running_mean.view(1, -1, 1, 1)
            variance = self.running_var.view(1, -1, 1, 1)
            centered = x - mean
        else:
            mean = x.mean(dim=(2, 3), keepdim=True)
            centered = x - mean
            # Biased variance (divide by H*W), as instance normalisation uses.
            variance = (centered * centered).mean(dim=(2, 3), keepdim=True)
        normalized = centered * torch.rsqrt(variance + self.eps)
        if self.affine:
            normalized = normalized * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
        return normalized

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, affine={self.affine}"


@dataclass
class RewriteReport:
    """What :func:`rewrite_for_export` changed: ``replaced`` lists ``"module.path: Old -> New"``."""

    replaced: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.replaced)

    def describe(self) -> list[str]:
        """One line per kind of rewrite with its count, for manifests and reports."""
        counts: dict[str, int] = {}
        for entry in self.replaced:
            kind = entry.split(": ", 1)[1]
            counts[kind] = counts.get(kind, 0) + 1
        return [f"{count} x {kind}" for kind, count in counts.items()]


def _replace_child(root: nn.Module, path: str, replacement: nn.Module) -> None:
    parent_path, _, child = path.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    setattr(parent, child, replacement)


def rewrite_for_export(model: nn.Module) -> tuple[nn.Module, RewriteReport]:
    """A copy of ``model`` with export-breaking layers replaced by exact equivalents.

    Today: every ``nn.InstanceNorm2d`` becomes :class:`DecomposedInstanceNorm2d`. ``model`` is
    not modified; the copy keeps its train/eval mode and attributes. Returns ``(copy, report)``;
    a model without such layers comes back as an unchanged copy with an empty report.
    """
    rewritten = copy.deepcopy(model)
    report = RewriteReport()
    targets = [(name, module) for name, module in rewritten.named_modules()
               if type(module) is nn.InstanceNorm2d]
    for name, module in targets:
        _replace_child(rewritten, name, DecomposedInstanceNorm2d(module))
        report.replaced.append(f"{name}: InstanceNorm2d -> DecomposedInstanceNorm2d")
    return rewritten, report
