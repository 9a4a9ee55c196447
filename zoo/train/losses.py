"""Pixel losses for restoration training, and their sum over multi-stage outputs.

All losses take float NCHW batches of the same shape (images on the 0-1 scale) and return a
scalar tensor; lower is better. They average over the batch so that data-parallel processes,
each with an equal share of the batch, average their gradients to the single-process value.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from zoo.errors import ZooError

#: 10 / ln(10): turns a natural log of the MSE into decibels.
_DB_PER_NEPER = 10.0 / math.log(10.0)
#: Keeps log(MSE) finite for a perfect prediction (the official HINet PSNRLoss uses the same 1e-8).
_PSNR_LOSS_EPS = 1e-8


def psnr_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Negative PSNR in dB up to a constant: ``10/ln10 * mean_n log(MSE_n + 1e-8)``.

    MSE_n is the mean squared error of image n on the 0-1 scale; PSNR_n = -10 log10(MSE_n), so
    the loss equals ``-mean_n PSNR_n`` (dB). This is the HINet PSNRLoss with weight 1.
    """
    mse = (pred - target).pow(2).flatten(1).mean(dim=1)
    return _DB_PER_NEPER * torch.log(mse + _PSNR_LOSS_EPS).mean()


def l1_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute error over all elements (0-1 scale)."""
    return (pred - target).abs().mean()


def mse_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error over all elements (0-1 scale)."""
    return (pred - target).pow(2).mean()


def charbonnier_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Mean of ``sqrt((pred - target)^2 + eps^2)``: a smooth L1 (eps on the 0-1 scale)."""
    return torch.sqrt((pred - target).pow(2) + eps * eps).mean()


def pixel_loss(kind: str, charbonnier_eps: float = 1e-3):
    """The loss function called ``kind`` (psnr, l1, mse, charbonnier) as ``f(pred, target)``."""
    if kind == "psnr":
        return psnr_loss
    if kind == "l1":
        return l1_loss
    if kind == "mse":
        return mse_loss
    if kind == "charbonnier":
        return lambda pred, target: charbonnier_loss(pred, target, charbonnier_eps)
    raise ZooError(f"unknown loss {kind!r}", "use psnr, l1, mse or charbonnier")


class StageLoss:
    """``sum_i stage_weights[i] * loss(stage_i, target)`` over a model's stage outputs.

    ``stage_weights=None`` scores the final output alone (weight 1). A model returning fewer or
    more stages than there are weights raises :class:`ZooError`.
    """

    def __init__(self, kind: str, stage_weights: Sequence[float] | None = None, charbonnier_eps: float = 1e-3):
        self.kind = kind
        self.loss = pixel_loss(kind, charbonnier_eps)
        self.stage_weights = list(stage_weights) if stage_weights is not None else None

    @property
    def needs_stages(self) -> bool:
        """Whether the model must return every stage (``forward(x, return_stages=True)``)."""
        return self.stage_weights is not None and len(self.stage_weights) > 1

    def __call__(self, outputs, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """Total loss and the per-stage terms (detached tensors, for logging) for ``outputs`` (tensor or list)."""
        stages = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
        weights = self.stage_weights if self.stage_weights is not None else [1.0]
        if len(weights) == 1:
            stages = stages[-1:]
        if len(stages) != len(weights):
            raise ZooError(f"loss.stage_weights has {len(weights)} weights but the model returns {len(stages)} stages",
                           f"give {len(stages)} weights (first stage first) or null for the final output only")
        total = None
        terms = {}
        for index, (weight, stage) in enumerate(zip(weights, stages)):
            value = self.loss(stage.float(), target.float())
            terms[f"loss_stage{index + 1}" if len(stages) > 1 else "loss_pixel"] = value.detach()
            weighted = weight * value
            total = weighted if total is None else total + weighted
        return total, terms
