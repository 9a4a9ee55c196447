"""Parameter and multiply-accumulate (MAC) counts.

MACs are counted with ``torch.utils.flop_counter.FlopCounterMode``, which charges each
convolution / matrix product its true number of multiplications (2 FLOPs per MAC, bias
additions, normalisation and activations not counted). A transposed convolution is charged per
*input* pixel (``H_in * W_in * C_in * C_out * k * k``), which is its true cost; counters that
charge it per output pixel, like a normal convolution, overcount a 2x2 stride-2 transposed
convolution four times.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_parameters(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of parameter elements of ``model`` (shared parameters counted once; buffers excluded)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _count_flops(model: nn.Module, inputs: torch.Tensor, parameters: dict[str, torch.Tensor] | None) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        if parameters is None:
            model(inputs)
        else:
            torch.func.functional_call(model, parameters, (inputs,))
    return counter.get_total_flops()


def count_macs(model: nn.Module, input_shape: Sequence[int] = (1, 3, 256, 256)) -> int:
    """True multiply-accumulates of one forward pass of ``model`` on an input of ``input_shape``.

    Runs on the meta device (shapes only: no memory for activations, no arithmetic) through
    ``torch.func.functional_call`` with meta copies of the parameters, so ``model`` itself is
    not modified. Models whose forward cannot run on meta are run for real under
    ``torch.no_grad`` on a zero input on their own device. Returns FLOPs / 2 as an int.
    """
    shape = tuple(int(side) for side in input_shape)
    named = dict(model.named_parameters())
    named.update(dict(model.named_buffers()))
    meta_parameters = {name: torch.empty_like(tensor, device="meta") for name, tensor in named.items()}
    try:
        flops = _count_flops(model, torch.empty(shape, device="meta"), meta_parameters)
    except (NotImplementedError, RuntimeError):
        # e.g. a forward that builds tensors on the CPU explicitly, or an op without a meta kernel
        device = next(iter(named.values())).device if named else torch.device("cpu")
        flops = _count_flops(model, torch.zeros(shape, device=device), None)
    return flops // 2


@lru_cache(maxsize=None)
def model_complexity(name: str, input_shape: tuple[int, ...] = (1, 3, 256, 256)) -> tuple[int, int]:
    """``(parameters, MACs)`` of registered model ``name`` at ``input_shape`` (cached per name and shape).

    The model is built on the meta device (no weights allocated, no initialisation cost), or on the
    CPU when its builder cannot run on meta. MACs as in :func:`count_macs`.
    """
    from zoo.registry import get_card

    builder = get_card(name).builder
    try:
        with torch.device("meta"):
            model = builder()
    except (NotImplementedError, RuntimeError):
        model = builder()
    return count_parameters(model), count_macs(model, input_shape)
