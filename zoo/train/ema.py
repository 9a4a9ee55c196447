"""Exponential moving average of a model's weights, kept beside the trained model (``train.ema_decay``)."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """Exponential moving average of a model's parameters (buffers are copied).

    After update ``n`` (1-based) the decay is ``min(decay, (1 + n) / (10 + n))``, the warm-up of
    TensorFlow's ExponentialMovingAverage, so that early EMA weights are not stuck at the random
    initialisation (with decay 0.999 the plain average needs thousands of steps to forget it).
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.module = copy.deepcopy(model).eval()
        for parameter in self.module.parameters():
            parameter.requires_grad_(False)

    def decay_at(self, update: int) -> float:
        return min(self.decay, (1.0 + update) / (10.0 + update))

    @torch.no_grad()
    def update(self, model: nn.Module, update: int) -> None:
        """Blend ``model``'s weights in; ``update`` counts the updates so far including this one."""
        ema_params = list(self.module.parameters())
        params = [p.detach() for p in model.parameters()]
        torch._foreach_lerp_(ema_params, params, 1.0 - self.decay_at(update))
        for ema_buffer, buffer in zip(self.module.buffers(), model.buffers()):
            ema_buffer.copy_(buffer)
