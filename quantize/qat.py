"""Quantization-aware training (PT2E): fine-tune with fake quantization, then convert to int8.

``torch.export`` in train mode -> ``prepare_qat_pt2e`` (fake-quantize nodes on weights and
activations, with the recipe's QAT specs) -> a short Adam fine-tune on (degraded, clean) pairs
-> ``move_exported_model_to_eval`` -> ``convert_pt2e``. The loop is deliberately minimal (no
schedule, no EMA, no checkpoints); the full training engine lives in ``zoo.train``. The zoo's
models have no BatchNorm, so no observer/BN freezing is needed.

Models that clamp their output in eval mode only (``model.clamp_output``, e.g. HINet-Lite) are
traced in train mode without the clamp; the converted graph gets the clamp back (in float) so it
computes what the float model computes in eval mode.
"""

from __future__ import annotations

import copy
import itertools
import math
from typing import Callable, Iterable

import torch

from quantize.ptq import META_KEY, _as_batch, _resolved_mixed, calibrated_observers, export_for_quantization
from quantize.recipes import MixedPrecision, require_recipe
from zoo.errors import ZooError

#: ``train_batches(step) -> (inputs, targets)`` or an iterable of such pairs.
TrainBatches = Callable[[int], tuple[torch.Tensor, torch.Tensor]] | Iterable[tuple[torch.Tensor, torch.Tensor]]


def _batch_source(train_batches: TrainBatches) -> Callable[[int], tuple[torch.Tensor, torch.Tensor]]:
    """A ``step -> (inputs, targets)`` function; an iterable is cycled when it runs out."""
    if callable(train_batches) and not hasattr(train_batches, "__iter__"):
        return train_batches
    cached: list = []
    iterator = iter(train_batches)
    replay = None

    def next_pair(step: int):
        nonlocal replay
        if replay is None:
            try:
                pair = next(iterator)
                cached.append(pair)
                return pair
            except StopIteration:
                if not cached:
                    raise ZooError("train_batches yielded nothing", "pass (degraded, clean) batches") from None
                replay = itertools.cycle(cached)
        return next(replay)

    return next_pair


class _ClampOutput(torch.nn.Module):
    """``graph(x).clamp(0, 1)``: restores the eval-mode clamp a train-mode trace leaves out."""

    def __init__(self, graph_module: torch.nn.Module):
        super().__init__()
        self.graph_module = graph_module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.graph_module(x).clamp(0.0, 1.0)


def _freeze_activation_ranges(prepared: torch.fx.GraphModule, model: torch.nn.Module, example: torch.Tensor,
                              recipe, mixed, calibration: Iterable) -> int:
    """Set every per-tensor (activation) fake quantizer of ``prepared`` to the range PTQ's observer
    picks on ``calibration`` and stop it observing; returns how many were set.

    The PTQ graph is prepared from the same exported model with the same annotations, so its
    observers carry the same ``activation_post_process_N`` names as the QAT fake quantizers."""
    observed, _, _ = calibrated_observers(copy.deepcopy(model), example, recipe.quantizer(is_qat=False, mixed=mixed),
                                          calibration)
    observers = dict(observed.named_modules())
    count = 0
    for name, fake_quant in prepared.named_modules():
        observer = observers.get(name)
        if observer is None or "." in name or not hasattr(fake_quant, "disable_observer"):
            continue
        if getattr(fake_quant, "ch_axis", -1) != -1 or getattr(observer, "ch_axis", None) is not None:
            continue  # per-channel (weights): keeps following the trained weights
        scale, zero_point = observer.calculate_qparams()
        inner = fake_quant.activation_post_process
        low = (inner.quant_min - zero_point.float()) * scale
        high = (inner.quant_max - zero_point.float()) * scale
        inner.min_val.resize_(low.shape).copy_(low)
        inner.max_val.resize_(high.shape).copy_(high)
        fake_quant.scale.resize_(scale.shape).copy_(scale)
        fake_quant.zero_point.resize_(zero_point.shape).copy_(zero_point)
        fake_quant.disable_observer()
        count += 1
    return count


def quantize_qat(model: torch.nn.Module, example_input: torch.Tensor, recipe, train_batches: TrainBatches, *,
                 steps: int = 200, lr: float = 1e-5, loss_fn: Callable | None = None,
                 mixed: MixedPrecision | None = None, grad_clip: float | None = 0.01,
                 callback: Callable[[int, torch.fx.GraphModule, float], None] | None = None,
                 activation_ranges: Iterable | None = None,
                 progress: bool = False) -> torch.fx.GraphModule:
    """Quantization-aware fine-tuning of a copy of ``model``, converted to int8.

    Args:
        model: float model (left untouched: a deep copy is trained).
        example_input: CHW/NCHW tensor at the training crop size (fixes height and width).
        recipe: backend name or recipe module (its QAT quantizer is used).
        train_batches: ``step -> (inputs, targets)`` or an iterable of pairs, NCHW in [0, 1]
            (inputs degraded as in training), drawn from the training pool.
        steps: optimiser steps (at least 1). lr: Adam learning rate (fine-tuning: small).
        loss_fn: ``loss(output, target) -> scalar``; default L1 (``zoo.train.losses.l1_loss``).
        mixed: layers kept in float (:class:`MixedPrecision`), None = all int8.
        grad_clip: gradient-norm clip (None to disable); 0.01 as in the HINet recipes.
        callback: called after every step with ``(step, prepared_graph, loss)`` (logging, tests).
        activation_ranges: calibration inputs (as for :func:`quantize.ptq.quantize_ptq`): the
            activation quantizers start from the ranges PTQ's histogram observers choose on them
            and stay there (frozen); only the weights (and their per-channel ranges) train. Without
            it the activation ranges are moving-average min/max of the QAT batches, which clip
            nothing and so leave a coarser int8 step than PTQ (measured: QAT then loses to PTQ).
    Returns:
        The converted ``GraphModule``; ``meta["zoo_quantization"]`` holds the settings and the
        per-step losses.
    Raises:
        ZooError: bad ``steps``, an unavailable backend or a non-finite loss.
    """
    from torchao.quantization.pt2e import move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_qat_pt2e

    if steps < 1:
        raise ZooError(f"QAT needs at least one step, got {steps}", "pass --qat-steps 1 or more")
    if loss_fn is None:
        from zoo.train.losses import l1_loss

        loss_fn = l1_loss
    recipe = require_recipe(recipe)
    example = _as_batch(example_input)
    student = copy.deepcopy(model)  # export shares parameter storage with the model it traces
    for parameter in student.parameters():
        parameter.requires_grad_(True)
    quantizer = recipe.quantizer(is_qat=True, mixed=mixed)
    prepared = prepare_qat_pt2e(export_for_quantization(student, example, train=True), quantizer)
    frozen = _freeze_activation_ranges(prepared, model, example, recipe, mixed, activation_ranges) \
        if activation_ranges is not None else 0

    optimizer = torch.optim.Adam([p for p in prepared.parameters() if p.requires_grad], lr=lr)
    next_pair = _batch_source(train_batches)
    losses: list[float] = []
    steps_iter = range(steps)
    if progress:
        from tqdm.auto import tqdm

        steps_iter = tqdm(steps_iter, desc=f"QAT {recipe.NAME}", unit="step")
    for step in steps_iter:
        inputs, targets = next_pair(step)
        inputs, targets = _as_batch(inputs), _as_batch(targets)
        output = prepared(inputs)
        loss = loss_fn(output, targets)
        if not torch.isfinite(loss):
            raise ZooError(f"QAT loss became {loss.item()} at step {step}", "lower the learning rate (--qat-lr)")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(prepared.parameters(), grad_clip)
        optimizer.step()
        losses.append(float(loss.item()))
        if callback is not None:
            callback(step, prepared, losses[-1])

    move_exported_model_to_eval(prepared)
    converted = convert_pt2e(prepared, fold_quantize=recipe.FOLD_QUANTIZE)
    clamped = bool(getattr(model, "clamp_output", False))
    info = {
        "recipe": recipe.NAME,
        "method": "qat",
        "numerics": dict(recipe.NUMERICS),
        "fold_quantize": recipe.FOLD_QUANTIZE,
        "mixed_precision": _resolved_mixed(quantizer, mixed),
        "qat_steps": steps,
        "qat_activation_ranges": f"PTQ histogram ranges, frozen ({frozen} quantizers)" if frozen
        else "moving-average min/max",
        "qat_lr": lr,
        "qat_batch": int(example.shape[0]),
        "qat_loss": getattr(loss_fn, "__name__", type(loss_fn).__name__),
        "qat_losses": losses,
        "output_clamp_added": clamped,
        "input_shape": list(example.shape[1:]),
    }
    if clamped:
        program = torch.export.export(_ClampOutput(converted), (_dynamic_example(example),),
                                      dynamic_shapes=_dynamic_shapes())
        converted = program.module()
    converted.meta[META_KEY] = info
    if not all(math.isfinite(value) for value in losses):
        raise ZooError("QAT produced a non-finite loss", "lower the learning rate (--qat-lr)")
    return converted


def _dynamic_example(example: torch.Tensor) -> torch.Tensor:
    from quantize.ptq import _dynamic_batch_example

    return _dynamic_batch_example(example)


def _dynamic_shapes():
    from torch.export import Dim

    from quantize.ptq import MAX_BATCH

    return ({0: Dim("batch", min=1, max=MAX_BATCH)},)
