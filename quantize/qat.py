"""Quantization-aware training (PT2E): the pieces, and a minimal in-memory QAT loop.

``torch.export`` in train mode -> ``prepare_qat_pt2e`` (fake-quantize nodes on weights and
activations, with the recipe's QAT specs) -> training -> ``move_exported_model_to_eval`` ->
``convert_pt2e``. The pieces (:func:`prepare_qat_graph`, :func:`set_activation_ranges_from_ptq`,
:func:`use_learnable_scales`, :func:`convert_qat_graph`) serve both QAT paths:

* the training engine's QAT phase (:mod:`quantize.qat_phase`: ``zoo train`` / ``zoo distill``
  with a ``quantization`` config section, and ``zoo quantize --method qat``), with the run's
  schedule, EMA, validation, checkpoints, resume and DDP;
* :func:`quantize_qat`, a short in-memory fine-tune (no schedule, EMA or checkpoints) for
  experiments on a model object.

The zoo's models have no BatchNorm, so no BN freezing is needed.

Models that clamp their output in eval mode only (``model.clamp_output``, e.g. HINet-Lite) are
traced in train mode without the clamp; the converted graph gets the clamp back (in float) so it
computes what the float model computes in eval mode.
"""

from __future__ import annotations

import copy
import functools
import itertools
import math
from typing import Callable, Iterable

import torch

from quantize.provenance import make_provenance
from quantize.ptq import (META_KEY, _as_batch, _resolved_mixed, calibrated_observers, calibration_provenance,
                          export_for_quantization, layer_precision)
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


#: Key of a prepared graph's ``meta`` holding its resolved mixed precision.
MIXED_KEY = "zoo_mixed_precision"


def fake_quantizers(graph: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """The fake-quantize modules PT2E inserted into a prepared graph, by attribute name."""
    return {name: module for name, module in graph.named_children()
            if hasattr(module, "observer_enabled") and hasattr(module, "calculate_qparams")}


def is_per_channel(fake_quant: torch.nn.Module) -> bool:
    """Whether a fake quantizer works per channel (the weights' quantizers)."""
    return getattr(fake_quant, "ch_axis", -1) != -1 and fake_quant.qscheme in (
        torch.per_channel_symmetric, torch.per_channel_affine)


def _range_observer(module: torch.nn.Module) -> torch.nn.Module:
    """The observer holding a PTQ graph's range: the module itself (XNNPACK, TFLite: plain
    observers) or the observer a fake quantizer wraps (Core ML's quantizer inserts
    ``FakeQuantize`` modules for PTQ calibration too)."""
    return getattr(module, "activation_post_process", module)


def _observes_per_channel(observer: torch.nn.Module) -> bool:
    """Whether an observer records ranges per channel (a weight's), by its quantization scheme."""
    return getattr(observer, "qscheme", None) in (torch.per_channel_symmetric, torch.per_channel_affine,
                                                  torch.per_channel_affine_float_qparams)


def _is_unsigned(dtype: torch.dtype) -> bool:
    return dtype in (torch.uint8, torch.quint8)


def prepare_qat_graph(model: torch.nn.Module, example: torch.Tensor, recipe, mixed: MixedPrecision | None = None,
                      *, size_multiple: int | None = None) -> torch.fx.GraphModule:
    """``torch.export`` ``model`` in train mode and ``prepare_qat_pt2e`` it with ``recipe``'s QAT quantizer.

    The graph shares its parameters with ``model`` (training one trains the other). The batch
    dimension is dynamic (1..64); with ``size_multiple`` height and width are dynamic too (any
    multiple of it), so one graph trains on patches, validates on crops and converts at the
    export tile. ``example``: NCHW batch in [0, 1]. Every fake quantizer has observed ``example``
    once (so per-channel quantizers have their final shapes); ``meta[MIXED_KEY]`` records the
    layers the recipe left in float. Raises :class:`ZooError` when the
    model cannot be exported with dynamic height and width.
    """
    from torch.export import Dim
    from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e

    from quantize.ptq import MAX_BATCH

    if size_multiple is None:
        exported = export_for_quantization(model, example, train=True)
    else:
        example = _as_batch(example)
        side = max(2, example.shape[-2] // size_multiple), max(2, example.shape[-1] // size_multiple)
        traced = torch.zeros(2, example.shape[1], side[0] * size_multiple, side[1] * size_multiple,
                             device=example.device)
        shapes = ({0: Dim("batch", min=1, max=MAX_BATCH), 2: size_multiple * Dim("rows", min=2, max=8192 // size_multiple),
                   3: size_multiple * Dim("columns", min=2, max=8192 // size_multiple)},)
        was_training = model.training
        model.train()
        try:
            exported = torch.export.export(model, (traced,), dynamic_shapes=shapes).module()
        except Exception as err:  # torch.export raises many types; the message says what failed
            raise ZooError(f"{type(model).__name__} cannot be exported with a dynamic image size for QAT "
                           f"({str(err).splitlines()[0][:200]})",
                           "QAT needs a model whose forward works for any multiple of its size multiple") from err
        finally:
            model.train(was_training)
        example = traced
    quantizer = recipe.quantizer(is_qat=True, mixed=mixed)
    prepared = prepare_qat_pt2e(exported, quantizer)
    prepared.meta[MIXED_KEY] = _resolved_mixed(quantizer, mixed)
    # The observation pass gives every quantizer its shapes and a finite range. A constant image
    # (the engine's all-zero example) can make a model's normalisation divide ~0 by ~0 once its
    # activations are fake-quantized (IDSANet's instance norm: NaN ranges), so it sees noise.
    batch = _as_batch(example)
    observed = torch.rand(batch.shape, generator=torch.Generator().manual_seed(0)).to(batch)
    with torch.no_grad():
        prepared(observed)
    return prepared


def set_activation_ranges_from_ptq(prepared: torch.fx.GraphModule, model: torch.nn.Module, example: torch.Tensor,
                                   recipe, mixed, calibration: Iterable) -> int:
    """Set every per-tensor (activation) fake quantizer of ``prepared`` to the range PTQ's observer
    picks on ``calibration`` and stop it observing; returns how many were set.

    The PTQ graph is prepared from the same exported model with the same annotations, so its
    observers carry the same ``activation_post_process_N`` names as the QAT fake quantizers.
    ``model`` holds the weights to calibrate with (left untouched)."""
    observed, _, _ = calibrated_observers(copy.deepcopy(model), example, recipe.quantizer(is_qat=False, mixed=mixed),
                                          calibration)
    observers = dict(observed.named_children())
    count = 0
    with torch.no_grad():
        for name, fake_quant in fake_quantizers(prepared).items():
            observer = observers.get(name)
            if observer is None:
                continue
            observer = _range_observer(observer)
            # Per-channel (weights): keeps following the trained weights. Judged by the scheme, not
            # by a ch_axis attribute: Core ML's per-tensor FakeQuantize has ch_axis -1.
            if is_per_channel(fake_quant) or _observes_per_channel(observer):
                continue
            scale, zero_point = observer.calculate_qparams()
            inner = fake_quant.activation_post_process
            low = (inner.quant_min - zero_point.float()) * scale
            high = (inner.quant_max - zero_point.float()) * scale
            for bound, value in ((inner.min_val, low), (inner.max_val, high)):
                # Keep the observer's own shape (a checkpoint's state loads into it unchanged).
                bound.resize_(bound.shape if bound.numel() == value.numel() else value.shape)
                bound.copy_(value.reshape(bound.shape))
            fake_quant.scale.data = scale.to(fake_quant.scale.device, fake_quant.scale.dtype).reshape(
                fake_quant.scale.shape if fake_quant.scale.numel() == scale.numel() else scale.shape).clone()
            fake_quant.zero_point.data = zero_point.to(fake_quant.zero_point.device, fake_quant.zero_point.dtype)\
                .reshape(fake_quant.zero_point.shape if fake_quant.zero_point.numel() == zero_point.numel()
                         else zero_point.shape).clone()
            fake_quant.disable_observer()
            count += 1
    return count


#: Smallest scale an LSQ quantizer keeps (the PTQ observers' floor, ``torch.finfo(float32).eps``).
MIN_LEARNED_SCALE = float(torch.finfo(torch.float32).eps)


@functools.cache
def _positive_scale_fake_quantize():
    """torchao's ``LearnableFakeQuantize`` whose scale stays >= :data:`MIN_LEARNED_SCALE` in
    training too (one class, built on first use so that torchao is imported lazily).

    Gradient steps can push the learned scale of a nearly constant activation through zero
    (seen in idsanet-x4's QAT: 30 of 802 scales ended negative). torchao floors the scale at
    float32's eps only in ``calculate_qparams`` (at conversion), so training ran on negative
    scales; this floors it before every forward as well. It does not stop a scale collapsing to
    the floor, which XNNPACK then refuses (docs/idsanet.md)."""
    from torchao.quantization.pt2e.learnable_fake_quantize import LearnableFakeQuantize

    class PositiveScaleLearnableFakeQuantize(LearnableFakeQuantize):
        def forward(self, X):
            with torch.no_grad():
                self.scale.clamp_(min=MIN_LEARNED_SCALE)
            return super().forward(X)

    return PositiveScaleLearnableFakeQuantize


def use_learnable_scales(prepared: torch.fx.GraphModule) -> int:
    """LSQ: replace every fake quantizer of ``prepared`` by torchao's ``LearnableFakeQuantize``
    (with its scale kept positive, :func:`_positive_scale_fake_quantize`) starting at its current
    scale and zero point; returns how many were replaced.

    The scales become parameters trained through the straight-through estimator (with LSQ's
    gradient scaling ``1 / sqrt(numel * quant_max)``); the observers stop (a learned scale is
    no longer a min/max estimate). Zero points stay fixed (0 for the symmetric weights, 128 for
    uint8 symmetric activations).
    """
    from torchao.quantization.pt2e.learnable_fake_quantize import LearnableFakeQuantize

    count = 0
    for name, old in fake_quantizers(prepared).items():
        if isinstance(old, LearnableFakeQuantize):
            continue
        inner = old.activation_post_process
        qscheme = inner.qscheme
        if qscheme == torch.per_tensor_symmetric and _is_unsigned(inner.dtype):
            # LearnableFakeQuantize zeroes the zero point of a symmetric scheme on every forward,
            # right for int8 (0) but not for uint8 symmetric (Core ML's activations: 128), where
            # it would clip every negative value and halve the range. Declared affine, the zero
            # point stays at 128 (fixed below); the int8 graph's quantize ops are the same.
            qscheme = torch.per_tensor_affine
        observer_kwargs = {"dtype": inner.dtype, "qscheme": qscheme}
        if is_per_channel(old):
            observer_kwargs["ch_axis"] = old.ch_axis
        learnable = _positive_scale_fake_quantize()(type(inner), quant_min=inner.quant_min,
                                                    quant_max=inner.quant_max, use_grad_scaling=True,
                                                    **observer_kwargs)
        learnable.activation_post_process = copy.deepcopy(inner)
        scale, zero_point = old.calculate_qparams()
        learnable._initialize_or_update_qparams(scale.detach().clone().float(), zero_point.detach().clone())
        learnable.enable_range_learning()
        learnable.zero_point.requires_grad_(False)
        learnable.fake_quant_enabled.copy_(old.fake_quant_enabled.to(learnable.fake_quant_enabled.dtype))
        learnable.to(scale.device)
        setattr(prepared, name, learnable)
        count += 1
    return count


def convert_qat_graph(prepared: torch.fx.GraphModule, model: torch.nn.Module, recipe,
                      example: torch.Tensor) -> tuple[torch.fx.GraphModule, bool, dict[str, str]]:
    """Convert a trained QAT graph (a copy of it; the graph is left as it is) to the int8 graph;
    returns (converted graph, whether the eval-mode output clamp was added back, the layers'
    precision as :func:`quantize.ptq.layer_precision` gives it before the clamp hides the names).

    Models that clamp in eval mode only (``model.clamp_output``) were traced without the clamp;
    it is added back in float. ``example``: NCHW batch at the export size (fixes the clamped
    graph's height and width; its batch stays dynamic)."""
    from torchao.quantization.pt2e import move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    graph = copy.deepcopy(prepared)
    move_exported_model_to_eval(graph)
    converted = convert_pt2e(graph, fold_quantize=recipe.FOLD_QUANTIZE)
    precision = layer_precision(converted)
    clamped = bool(getattr(model, "clamp_output", False))
    if clamped:
        program = torch.export.export(_ClampOutput(converted), (_dynamic_example(example),),
                                      dynamic_shapes=_dynamic_shapes())
        converted = program.module()
    return converted, clamped, precision


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
    from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e

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
    frozen = set_activation_ranges_from_ptq(prepared, model, example, recipe, mixed, activation_ranges) \
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

    converted, clamped, _ = convert_qat_graph(prepared, model, recipe, example)
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
        "provenance": make_provenance(
            "qat", recipe.NAME, mixed=MixedPrecision.flag(mixed), steps=steps,
            calibration=calibration_provenance(activation_ranges) if frozen else None,
            options={"ranges": "ptq" if frozen else "minmax", "lr": lr,
                     "loss": getattr(loss_fn, "__name__", type(loss_fn).__name__)}),
    }
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
