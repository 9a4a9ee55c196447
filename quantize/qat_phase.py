"""Quantization-aware training as a phase of the training engine (the ``quantization`` config section).

``zoo train`` / ``zoo distill`` with a ``quantization:`` section train in float until
``quantization.start``, then hand the model to :class:`QATPhase`: it exports the float model in
train mode with a dynamic batch, height and width, inserts the recipe's fake quantizers
(``prepare_qat_pt2e``), optionally sets the activation ranges from a PTQ calibration on training
batches (``ranges: ptq``) and turns the scales into learnable parameters (``learnable_scales``,
LSQ), and the engine trains that graph with the phase's own learning rate (warm-up + cosine from
``start`` to ``train.iterations``). The graph shares its float parameters with the configured
model, so checkpoints, ``best.safetensors`` and ``final*.safetensors`` stay float state dicts of
it (the latent weights QAT trains); the quantizers' state (observer ranges, learnable scales,
enabled flags) and the frozen float teacher of ``distill_from_float`` live in the checkpoint's
``state.pt``, so ``--resume`` continues bit for bit, inside the phase and across the switch.

EMA (``train.ema_decay``): the EMA averages the latent float weights, before and after the
switch alike; its graph (validated, converted) uses the live model's quantizer state (ranges and
learnable scales are copied after every step, not averaged: a scale belongs to the weights it
was trained with, and averaging min/max estimates would blur the clipping they learned).

Validation runs the fake-quantized graph (EMA when enabled) with every observer paused, so it
never moves a range. At the end (rank 0) the validated graph, after an optional re-estimation of
the activation ranges with the final weights (``reestimate_ranges``), is converted to the int8
PT2E model and written as ``OUT/quantized.pt2`` + ``OUT/quantized.json`` (the format of ``zoo
quantize``, which ``zoo export --quantized`` takes), at ``quantization.tile``, and
``OUT/quantized_state.safetensors``: the latent weights and the quantizer state it was converted
from, which rebuild the same int8 model at any tile and are what a model ships
(:mod:`quantize.qat_state`).

:func:`train_with_qat` runs a config through the engine with this phase (library callers);
the ``zoo`` command gets it from :data:`quantize.commands.TRAINING_PHASES`.
"""

from __future__ import annotations

import contextlib
import copy
from pathlib import Path

import torch
from torch import nn

from quantize.provenance import calibration_record, make_provenance
from quantize.qat import (fake_quantizers, is_per_channel, prepare_qat_graph, set_activation_ranges_from_ptq,
                          use_learnable_scales)
from quantize.qat_state import (QUANTIZED_STATE, QATStateInfo, convert_qat_state, load_quantizer_state,
                                quantizer_state, write_qat_state)
from quantize.recipes import MixedPrecision, require_recipe
from zoo.errors import ZooError
from zoo.train.config import ExperimentConfig, ScheduleConfig
from zoo.train.engine import PhaseContext, TrainingPhase, TrainResult, learning_rate

#: Files of a finished QAT run, in the run folder.
QUANTIZED_MODEL = "quantized.pt2"
#: Name of the loss term towards the float model's output (log.csv column).
FLOAT_DISTILL_TERM = "qat_float_distill"


class QATPhase(TrainingPhase):
    """The ``quantization`` section of a run (see the module docstring)."""

    section = "quantization"

    def __init__(self, config: ExperimentConfig):
        if config.quantization is None:
            raise ZooError("the config has no quantization section", "add quantization: {backend: xnnpack}")
        self.config = config
        self.settings = config.quantization
        self.start = self.settings.start
        self.graph: nn.Module | None = None
        self.ema_graph: nn.Module | None = None
        self.teacher: nn.Module | None = None
        self.recipe = None
        self.mixed: MixedPrecision | None = None

    # ---- setup

    def check(self, context: PhaseContext) -> None:
        try:
            self.recipe = require_recipe(self.settings.backend)
        except ZooError as err:
            raise ZooError(f"quantization.backend: {err}", err.fix) from err
        try:
            self.mixed = MixedPrecision.parse(self.settings.mixed)
        except ZooError as err:
            raise ZooError(f"quantization.mixed: {err}", err.fix) from err
        multiple = context.size_multiple
        if min(context.example.shape[-2:]) < 2 * multiple:
            # torch.export specialises a dynamic size of one unit (here: one size multiple).
            raise ZooError(f"QAT needs training inputs of at least {2 * multiple} pixels (twice the model's size "
                           f"multiple), the patches give {context.example.shape[-1]}",
                           f"raise data.patch_size to {2 * multiple * (self.config.data.patch_size // context.example.shape[-1])} or more")
        tile = self.tile()
        if tile < 2 * multiple or tile % context.size_multiple:
            raise ZooError(f"quantization.tile {tile} is not a multiple of the model's size multiple "
                           f"{multiple} of at least twice it", f"set quantization.tile to e.g. {4 * multiple}")

    def tile(self) -> int:
        """Height and width (input pixels) of the saved int8 model."""
        if self.settings.tile is not None:
            return self.settings.tile
        if self.config.model.name:
            from zoo.registry import get_card

            return get_card(self.config.model.name).tile or 256
        return 256

    def _prepare(self, model: nn.Module, context: PhaseContext, float_model: nn.Module, calibrate: bool) -> nn.Module:
        graph = prepare_qat_graph(model, context.example, self.recipe, self.mixed,
                                  size_multiple=context.size_multiple)
        if calibrate and self.settings.ranges == "ptq":
            set_activation_ranges_from_ptq(graph, float_model, context.example[:1], self.recipe, self.mixed,
                                           [batch.to(context.device) for batch in
                                            context.training_batches(self.settings.calibration_batches)])
        if self.settings.learnable_scales:
            use_learnable_scales(graph)
        # The engine switches modules between train() and eval() (validation); for an exported
        # graph that is torchao's move_exported_model_to_train/eval.
        from torchao.quantization.pt2e import allow_exported_model_train_eval

        allow_exported_model_train_eval(graph)
        return graph.to(context.device)

    def enter(self, context: PhaseContext, *, restoring: bool) -> tuple[nn.Module, nn.Module | None]:
        self.check(context)
        float_copy = copy.deepcopy(context.model).eval()
        self.graph = self._prepare(context.model, context, float_copy, calibrate=not restoring)
        self.ema_graph = None
        if context.ema_model is not None:
            self.ema_graph = self._prepare(context.ema_model, context, float_copy, calibrate=False)
            self._sync_ema()
        if self.settings.distill_from_float > 0:
            self.teacher = float_copy  # the weights at the switch (restored from the checkpoint on resume)
            for parameter in self.teacher.parameters():
                parameter.requires_grad_(False)
        return self.graph, self.ema_graph

    def output_terms(self) -> list:
        if self.teacher is None:
            return []
        from zoo.train.losses import pixel_loss

        loss = pixel_loss(self.config.loss.type, self.config.loss.charbonnier_eps)

        def towards_float(output: torch.Tensor, degraded: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                reference = self.teacher(degraded)
            return loss(output.float(), reference.float())

        return [(FLOAT_DISTILL_TERM, self.settings.distill_from_float, towards_float)]

    # ---- every step

    def learning_rate(self, iteration: int) -> float:
        schedule = ScheduleConfig(type=self.config.schedule.type, eta_min=self.settings.eta_min,
                                  warmup_iterations=self.settings.warmup_iterations)
        return learning_rate(schedule, self.settings.lr, self.config.train.iterations - self.start,
                             iteration - self.start)

    def before_step(self, iteration: int) -> None:
        freeze = self.settings.freeze_observers
        if freeze is not None and iteration >= freeze:
            for module in fake_quantizers(self.graph).values():
                module.observer_enabled.fill_(0)

    def after_step(self, iteration: int) -> None:
        self._sync_ema()

    def _sync_ema(self) -> None:
        if self.ema_graph is None:
            return
        live = fake_quantizers(self.graph)
        with torch.no_grad():
            for name, module in fake_quantizers(self.ema_graph).items():
                module.load_state_dict(live[name].state_dict())

    @contextlib.contextmanager
    def evaluating(self, module: nn.Module):
        quantizers = list(fake_quantizers(module).values())
        flags = [q.observer_enabled.clone() for q in quantizers]
        for quantizer in quantizers:
            quantizer.observer_enabled.fill_(0)
        try:
            yield
        finally:
            for quantizer, flag in zip(quantizers, flags):
                quantizer.observer_enabled.copy_(flag)

    # ---- checkpoints

    def state_dict(self) -> dict:
        state = {"quantizers": quantizer_state(self.graph)}
        if self.teacher is not None:
            state["teacher"] = {key: value.detach().cpu().clone() for key, value in self.teacher.state_dict().items()}
        return state

    def load_state_dict(self, state: dict) -> None:
        load_quantizer_state(self.graph, state["quantizers"])
        if self.teacher is not None:
            if "teacher" not in state:
                raise ZooError("the checkpoint holds no float teacher but quantization.distill_from_float is set",
                               "resume with quantization.distill_from_float: 0, as that run had")
            self.teacher.load_state_dict(state["teacher"])
        self._sync_ema()

    # ---- the end

    def provenance(self, iteration: int, ema: bool, out_dir: Path) -> dict:
        """The provenance record (:mod:`quantize.provenance`) of the int8 model converted at
        ``iteration`` (``ema``: from the EMA weights) in the run folder ``out_dir``."""
        settings, data = self.settings, self.config.data
        sources = [str(source) for source in data.sources] + (["paired folders"] if data.paired else [])
        ranged = settings.ranges == "ptq" or settings.reestimate_ranges  # PTQ ranges on training batches
        return make_provenance(
            "qat", self.recipe.NAME, mixed=settings.mixed, steps=max(0, iteration - settings.start),
            calibration=calibration_record("+".join(sources), settings.calibration_batches, unit="batches",
                                           degradation=data.degradation) if ranged else None,
            options={"ranges": settings.ranges, "learnable_scales": settings.learnable_scales,
                     "distill_from_float": settings.distill_from_float, "reestimate_ranges": settings.reestimate_ranges,
                     "freeze_observers": settings.freeze_observers, "lr": settings.lr, "batch": data.batch_size,
                     "patch_size": data.patch_size, "ema": ema, "teacher": self.config.distill is not None},
            source=f"config {self.config.name}, run {out_dir}")

    def finish(self, context: PhaseContext, evaluated: nn.Module, iteration: int) -> dict[str, Path]:
        """Convert the validated graph (after the optional range re-estimation) to int8 and write
        ``quantized.pt2`` + ``quantized.json`` and ``quantized_state.safetensors`` (the weights and
        quantizer state that rebuild the same int8 model: :mod:`quantize.qat_state`)."""
        from quantize.ptq import save_quantized

        tile = self.tile()
        graph = copy.deepcopy(evaluated).cpu()
        ema = evaluated is self.ema_graph
        float_model = copy.deepcopy(context.ema_model if ema else context.model).cpu().eval()
        reestimated = 0
        if self.settings.reestimate_ranges:
            batches = [batch.cpu() for batch in context.training_batches(self.settings.calibration_batches)]
            reestimated = set_activation_ranges_from_ptq(graph, float_model, batches[0][:1], self.recipe, self.mixed,
                                                         batches)
        provenance = self.provenance(iteration, ema, context.out_dir)
        converted, precision = convert_qat_state(graph, float_model, self.recipe, tile, provenance)
        settings = self.settings
        metadata = {
            "model": self.config.model.name or self.config.model.describe(),
            "weights": f"QAT run {context.out_dir} at iteration {iteration} "
                       f"({'EMA' if ema else 'trained'} weights)",
            "backend": self.recipe.NAME,
            "mixed_flag": settings.mixed,
            "calibration": {"source": "training batches of the run", "count": settings.calibration_batches,
                            "degradation": self.config.data.degradation},
            "qat": {"config": self.config.name, "iterations": iteration, "start": settings.start,
                    "lr": settings.lr, "ranges": settings.ranges, "freeze_observers": settings.freeze_observers,
                    "learnable_scales": settings.learnable_scales,
                    "distill_from_float": settings.distill_from_float,
                    "reestimated_ranges": reestimated, "ema": ema},
            "layer_precision": precision,
            "tile": tile,
        }
        if self.config.model.name:
            from zoo.registry import get_card

            card = get_card(self.config.model.name)
            metadata.update(task=card.task, size_multiple=card.size_multiple, scale=card.scale)
        path = save_quantized(converted, context.out_dir / QUANTIZED_MODEL, torch.zeros(2, 3, tile, tile), metadata)
        info = QATStateInfo(model=metadata["model"], recipe=self.recipe.NAME, mixed=settings.mixed,
                            learnable_scales=bool(settings.learnable_scales), tile=tile,
                            size_multiple=context.size_multiple, trace_shape=tuple(context.example.shape[-2:]),
                            provenance=provenance, sidecar=metadata)
        state = write_qat_state(context.out_dir / QUANTIZED_STATE, float_model, graph, info)
        return {"quantized_model": path, "quantized_state": state}


def fake_quant_nodes(graph: nn.Module) -> int:
    """How many fake-quantize modules a graph calls (0 for a float model), for checks and tests."""
    names = set(fake_quantizers(graph))
    return sum(1 for node in getattr(graph, "graph", torch.fx.Graph()).nodes
               if node.op == "call_module" and node.target in names)


def train_with_qat(config: ExperimentConfig, out_dir: str | Path | None = None, **kwargs) -> TrainResult:
    """:func:`zoo.train.engine.train` (``zoo distill``'s objective when the config has a ``distill``
    section) with the QAT phase offered; same arguments. ``result.phase_outputs["quantized_model"]``
    is the int8 ``.pt2`` once the run finishes."""
    phases = {**kwargs.pop("phases", {}), QATPhase.section: QATPhase}
    if config.distill is not None:
        from zoo.train.distill import distill

        return distill(config, out_dir, phases=phases, **kwargs)
    from zoo.train.engine import train

    return train(config, out_dir, phases=phases, **kwargs)


__all__ = ["FLOAT_DISTILL_TERM", "QATPhase", "QUANTIZED_MODEL", "QUANTIZED_STATE", "fake_quant_nodes", "is_per_channel",
           "train_with_qat"]
