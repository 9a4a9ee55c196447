"""Export-friendly rewrites of zoo models: exactly the same function, operators that delegate.

Some layers are fine in PyTorch but split a mobile delegate: ExecuTorch's XNNPACK backend has no
instance normalisation, so every ``nn.InstanceNorm2d`` of HINet (half instance normalisation in
each encoder block) leaves the delegate, and the lowered graph is cut into one partition per
block with layout changes at each cut. :func:`rewrite_for_export` replaces such layers by the
same arithmetic written with operators the delegates run (mean over H and W, subtract,
multiply, reciprocal square root, add); the model files themselves stay as they are, so
checkpoints load unchanged.

The rewrites are a table (module type -> factory of its exact replacement): a model family whose
layers need one adds an entry with :func:`register_export_rewrite` (e.g. at the bottom of its
module in ``zoo/models``, or here) instead of editing :func:`rewrite_for_export`.

The rewrite is opt-in (``export_model(..., rewrite=True)`` is the default of ``zoo export``;
``--no-rewrite`` exports the original graph) and is checked by ``tests/test_export_executorch.py``
to agree with the original model to float rounding (< 1e-5 on images in [0, 1]).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

__all__ = ["DecomposedInstanceNorm2d", "RewriteReport", "rewrite_for_export", "register_export_rewrite",
           "export_rewrites"]


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


#: Exact module type -> factory building its export-friendly replacement from the original module.
_EXPORT_REWRITES: dict[type, Callable[[nn.Module], nn.Module]] = {}


def register_export_rewrite(module_type: type, factory: Callable[[nn.Module], nn.Module]) -> None:
    """Make :func:`rewrite_for_export` replace every module whose type is exactly ``module_type``
    (subclasses are not matched: they may compute something else) by ``factory(module)``.

    ``factory`` must return a module computing the same function to float rounding (< 1e-5 on
    images in [0, 1]; the contract tests check every registered model) with operators the mobile
    delegates run, copying the original's parameters and train/eval mode. Registering a type again
    replaces its factory.
    """
    if not (isinstance(module_type, type) and issubclass(module_type, nn.Module)):
        raise TypeError(f"module_type must be an nn.Module subclass, got {module_type!r}")
    _EXPORT_REWRITES[module_type] = factory


def export_rewrites() -> dict[type, Callable[[nn.Module], nn.Module]]:
    """A copy of the rewrite table: module type -> factory of its replacement."""
    return dict(_EXPORT_REWRITES)


register_export_rewrite(nn.InstanceNorm2d, DecomposedInstanceNorm2d)


def _replace_child(root: nn.Module, path: str, replacement: nn.Module) -> None:
    parent_path, _, child = path.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    setattr(parent, child, replacement)


def rewrite_for_export(model: nn.Module) -> tuple[nn.Module, RewriteReport]:
    """A copy of ``model`` with export-breaking layers replaced by exact equivalents.

    Every module whose type is in the rewrite table (:func:`register_export_rewrite`; today
    ``nn.InstanceNorm2d`` -> :class:`DecomposedInstanceNorm2d`) is replaced; modules inside a
    replaced one are left to its factory. ``model`` is not modified; the copy keeps its
    train/eval mode and attributes. Returns ``(copy, report)``; a model without such layers comes
    back as an unchanged copy with an empty report.
    """
    rewritten = copy.deepcopy(model)
    report = RewriteReport()
    targets = [(name, module) for name, module in rewritten.named_modules() if type(module) in _EXPORT_REWRITES]
    replaced: list[str] = []
    for name, module in targets:
        if any(name.startswith(f"{outer}.") for outer in replaced) or (replaced and replaced[0] == ""):
            continue  # inside a module that was already replaced
        replacement = _EXPORT_REWRITES[type(module)](module)
        if name:
            _replace_child(rewritten, name, replacement)
        else:  # the model itself is a table entry
            rewritten = replacement
        replaced.append(name)
        report.replaced.append(f"{name}: {type(module).__name__} -> {type(replacement).__name__}")
    return rewritten, report
