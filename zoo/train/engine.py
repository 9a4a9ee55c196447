"""The training loop behind ``zoo train`` and ``zoo distill``.

One call to :func:`train` runs an :class:`~zoo.train.config.ExperimentConfig` into an output
folder::

    OUT/config.json              the resolved config
    OUT/start.json               the weights it started from: file, SHA-256, their metadata (zoo pack
                                 reads it to write the whole training chain into a shipped file)
    OUT/log.csv                  iteration, lr, loss terms, grad norm, it/s, patches/s, val PSNR
    OUT/checkpoints/iter_NNNNNNNN/{weights,ema}.safetensors + state.pt
    OUT/checkpoints/latest.json  which checkpoint --resume continues from
    OUT/best.safetensors         weights with the best validation PSNR (+ best.json)
    OUT/final.safetensors        final weights (+ final_ema.safetensors with EMA)

Reproducibility: the patch stream and the learning rate are pure functions of the iteration
(see :mod:`zoo.train.data`), and a checkpoint holds the weights, EMA weights, optimizer and
loss-scaler state and the RNG states, so ``--resume`` continues bit for bit the run that was
interrupted.

Training phases: an extension (:class:`TrainingPhase`) can take over the model from an
iteration on, e.g. quantization-aware training (the ``quantization`` config section, implemented
by :mod:`quantize.qat_phase`, since zoo/ never imports quantize/). The caller passes the phases it
offers (``train(..., phases=...)``; ``zoo train`` gets them from :mod:`zoo_cli.main`); a config
section no given phase implements is refused.

Data-parallel training: launched by ``torchrun`` the loop wraps the model in
DistributedDataParallel and gives each process its share of every global batch; only rank 0
writes files.

The pieces live beside this module, one concern each: :mod:`zoo.train.models` (building the
network), :mod:`zoo.train.checkpointing` (checkpoint state, atomic saves, resume),
:mod:`zoo.train.runlog` (log.csv, TensorBoard), :mod:`zoo.train.ema` and
:mod:`zoo.train.distributed`. This module is the loop that joins them.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import random
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from zoo.errors import ZooError
from zoo.train.checkpointing import (CHECKPOINT_FORMAT, CHECKPOINTS, EMA_FILE, INTACT_CHECKPOINT_FIX, STATE_FILE,
                                     WEIGHTS_FILE, format_config_change, latest_checkpoint, layout_digest, read_state,
                                     resume_source, rng_state, save_checkpoint, set_rng_state)
from zoo.train.config import ExperimentConfig, ScheduleConfig
from zoo.train.distributed import DistributedState, close_distributed, init_distributed, pick_device
from zoo.train.ema import EMA
from zoo.train.losses import StageLoss
from zoo.train.models import START_RECORD, build_model, start_record
from zoo.train.runlog import CsvLog, LogWindow, open_tensorboard

#: Names other modules import from here (the loop's public face, including re-exports).
__all__ = ["EMA", "PhaseContext", "TaskObjective", "TrainResult", "TrainingDiverged", "TrainingPhase", "build_model",
           "latest_checkpoint", "learning_rate", "train"]


def _with_current_defaults(saved_config: dict) -> dict:
    """A checkpoint's config with the keys added to the zoo since it was written at their defaults,
    so a resume does not report them as changed settings (as is, if it no longer validates)."""
    from zoo.train.config import config_from_dict

    try:
        return config_from_dict(saved_config).to_dict()
    except ZooError:
        return saved_config


class TrainingDiverged(ZooError):
    """The loss became NaN or infinite; training stopped and the last good checkpoint was kept."""


@dataclass
class TrainResult:
    """What a call to :func:`train` did."""

    out_dir: Path
    #: Iterations completed in total (including those before a resume).
    iteration: int
    #: Whether the run reached ``train.iterations`` (False when stopped by ``stop_at``).
    finished: bool
    final_weights: Path | None
    final_ema_weights: Path | None
    best_weights: Path | None
    best_val_psnr: float | None
    #: Validation PSNR (dB) of the weights the run started from (``model.weights`` set), else None.
    start_val_psnr: float | None = None
    #: (iteration, loss) of every step this call ran; loss averaged over processes.
    losses: list[tuple[int, float]] = field(default_factory=list)
    #: (iteration, mean validation PSNR in dB) of every validation this call ran.
    validations: list[tuple[int, float]] = field(default_factory=list)
    #: Training speed over this call's steps after the first (data + forward + backward + update).
    iterations_per_second: float = 0.0
    patches_per_second: float = 0.0
    #: Files the training phases wrote when the run finished, by name (QAT: ``quantized_model``).
    phase_outputs: dict[str, Path] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# Objectives: what the loop minimises. Distillation (zoo.train.distill) extends TaskObjective.


def _supports_stages(model: nn.Module) -> bool:
    return "return_stages" in inspect.signature(model.forward).parameters


class TaskObjective:
    """Pixel loss of the model's (stage) outputs against the ground truth."""

    def __init__(self, config: ExperimentConfig):
        loss = config.loss
        self.loss = StageLoss(loss.type, loss.stage_weights, loss.charbonnier_eps)
        #: (name, weight, term(final output, degraded input) -> scalar) added to the loss; a
        #: training phase adds its own (QAT: distillation from the float model).
        self.output_terms: list[tuple[str, float, object]] = []

    def prepare(self, model: nn.Module, device: torch.device, sample: torch.Tensor) -> None:
        """Called once with the bare model (before DDP) and an input batch of the training size."""
        if self.loss.needs_stages and not _supports_stages(model):
            raise ZooError(f"loss.stage_weights has {len(self.loss.stage_weights)} weights but "
                           f"{type(model).__name__} has a single output", "set loss.stage_weights: null")

    def modules(self) -> dict[str, nn.Module]:
        """Extra trainable modules (optimised with the model, saved in checkpoints, not exported)."""
        return {}

    def forward_model(self, model: nn.Module, degraded: torch.Tensor):
        return model(degraded, return_stages=True) if self.loss.needs_stages else model(degraded)

    def add_output_terms(self, outputs, degraded: torch.Tensor, total: torch.Tensor, terms: dict):
        """``total`` plus the weighted :attr:`output_terms` of the final output; records each in ``terms``."""
        final = outputs[-1] if isinstance(outputs, (list, tuple)) else outputs
        for name, weight, term in self.output_terms:
            value = term(final, degraded)
            terms[name] = value.detach()
            total = total + weight * value
        return total

    def __call__(self, model: nn.Module, degraded: torch.Tensor, target: torch.Tensor):
        """(scalar loss, {term name: detached tensor}) for one batch."""
        outputs = self.forward_model(model, degraded)
        total, terms = self.loss(outputs, target)
        return self.add_output_terms(outputs, degraded, total, terms), terms


# --------------------------------------------------------------------------------------------
# Training phases: extensions that take over the model from an iteration on (QAT).


@dataclass
class PhaseContext:
    """What a :class:`TrainingPhase` may use of the run (rank 0 and every other process alike)."""

    config: ExperimentConfig
    #: The float model the run was built with; its parameters stay the trained weights.
    model: nn.Module
    #: The EMA copy of ``model`` (None without ``train.ema_decay``).
    ema_model: nn.Module | None
    device: torch.device
    #: NCHW input batch of the training size (zeros), for tracing.
    example: torch.Tensor
    #: Input height and width must be multiples of this.
    size_multiple: int
    #: ``count -> [NCHW degraded batch, ...]``: the global training batches at the phase start,
    #: identical on every process (calibration data).
    training_batches: object
    out_dir: Path
    #: Whether this process writes files (rank 0).
    main: bool
    say: object


class TrainingPhase:
    """An extension of the loop that trains another module from iteration :attr:`start` on.

    The engine calls, in this order: :meth:`check` once at setup (fail before any training);
    :meth:`enter` at ``start`` (or when resuming a checkpoint written after it, with
    ``restoring=True``, followed by :meth:`load_state_dict`); :meth:`learning_rate` and
    :meth:`before_step` / :meth:`after_step` around every step from then on; :meth:`evaluating`
    around validation; :meth:`state_dict` at each checkpoint; :meth:`finish` when the run ends
    (rank 0). The module :meth:`enter` returns shares its float parameters with ``context.model``,
    so the weights files stay float state dicts of the configured model.
    """

    #: The config section the phase implements; also its key in the checkpoint state.
    section = ""
    #: First iteration (0-based) trained by the phase.
    start = 0

    def check(self, context: PhaseContext) -> None:
        """Raise :class:`ZooError` when the phase cannot run (missing backend, bad settings)."""

    def enter(self, context: PhaseContext, *, restoring: bool) -> tuple[nn.Module, nn.Module | None]:
        """(module trained from now on, its EMA counterpart or None); ``restoring``: the state follows."""
        raise NotImplementedError

    def output_terms(self) -> list[tuple[str, float, object]]:
        """Extra loss terms while the phase runs (see :attr:`TaskObjective.output_terms`)."""
        return []

    def learning_rate(self, iteration: int) -> float:
        raise NotImplementedError

    def before_step(self, iteration: int) -> None:
        """Called before the step that starts at ``iteration``."""

    def after_step(self, iteration: int) -> None:
        """Called after the step (and the EMA update) that started at ``iteration``."""

    def evaluating(self, module: nn.Module):
        """Context manager around validation forward passes of ``module`` (e.g. observers off)."""
        return nullcontext()

    def state_dict(self) -> dict:
        """The phase's state for the checkpoint (tensors, dicts, lists and numbers)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def finish(self, context: PhaseContext, evaluated: nn.Module, iteration: int) -> dict[str, Path]:
        """Write the phase's results (rank 0, run finished); returns {name: path}."""
        return {}


# --------------------------------------------------------------------------------------------
# Pieces of the loop


def learning_rate(schedule: ScheduleConfig, base_lr: float, total: int, iteration: int) -> float:
    """Learning rate of the step that starts at ``iteration`` (0-based) of ``total``.

    Cosine: ``eta_min + (lr - eta_min) * (1 + cos(pi * iteration / total)) / 2`` (torch's
    CosineAnnealingLR with T_max = total); during warm-up ``lr * (iteration + 1) / warmup``
    instead (BasicSR's linear warm-up, which overrides the cosine value).
    """
    if schedule.type == "constant":
        rate = base_lr
    else:
        rate = schedule.eta_min + (base_lr - schedule.eta_min) * (1.0 + math.cos(math.pi * iteration / total)) / 2.0
    if iteration < schedule.warmup_iterations:
        rate = base_lr * (iteration + 1) / schedule.warmup_iterations
    return rate


def _cpu_has_bf16() -> bool:
    """Whether oneDNN runs bf16 natively on this CPU (avx512_bf16 or AMX), not emulated."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN
        return False


# --------------------------------------------------------------------------------------------
# The loop


def train(config: ExperimentConfig, out_dir: str | Path | None = None, *, resume: bool | str | Path = False,
          stop_at: int | None = None, progress: bool = True, objective=None,
          phases: dict | None = None) -> TrainResult:
    """Train ``config`` into ``out_dir`` (default ``runs/<config.name>``); returns a :class:`TrainResult`.

    ``resume``: True continues from ``OUT/checkpoints/latest.json``; a path continues from that
    checkpoint folder (or run folder). Without it, a folder that already holds checkpoints is
    refused. ``stop_at``: stop (with a checkpoint) once this many iterations are done, keeping
    the schedule of ``train.iterations`` (for pre-emptible jobs; resume later).
    ``objective``: the loss (default :class:`TaskObjective`; distillation passes its own).
    ``phases``: config section name -> ``factory(config) -> TrainingPhase`` of the extensions the
    caller offers (``{"quantization": quantize.qat_phase.QATPhase}``); a config section that needs
    one not given is refused with a :class:`ZooError`.

    Raises :class:`ZooError` for user errors, :class:`TrainingDiverged` when the loss becomes
    NaN/inf (nothing is saved from that point on; the last checkpoint stays the latest).
    """
    out_dir = Path(out_dir) if out_dir is not None else Path("runs") / config.name
    phase = _configured_phase(config, phases or {})
    dist_state = init_distributed(config.train.device)
    try:
        resume_dir = resume_source(out_dir, resume)
        run = _Run(config, out_dir, dist_state, objective, phase)
        start = run.restore(resume_dir) if resume_dir is not None else 0
        stop = config.train.iterations if stop_at is None else min(stop_at, config.train.iterations)
        if stop <= start:
            raise ZooError(f"--stop-at {stop_at} is not after the {'checkpoint' if start else 'start'} iteration "
                           f"{start}", f"pass a --stop-at from {start + 1} to train.iterations "
                           f"({config.train.iterations}), or leave it out to finish the run")
        return run.loop(start, stop, progress, resumed=resume_dir is not None)
    finally:
        close_distributed(dist_state)


#: Config sections implemented by training phases outside zoo/, and who provides them.
PHASE_SECTIONS = {"quantization": "quantize (quantize.qat_phase.QATPhase)"}


def _configured_phase(config: ExperimentConfig, phases: dict) -> TrainingPhase | None:
    """The phase the config asks for (None when it asks for none); refuses a section no phase implements."""
    wanted = [section for section in PHASE_SECTIONS if getattr(config, section, None) is not None]
    if not wanted:
        return None
    if len(wanted) > 1:
        raise ZooError(f"the config has {' and '.join(wanted)} sections; a run takes one training phase",
                       "keep one of them")
    (section,) = wanted
    if section not in phases:
        raise ZooError(f"the config has a {section} section, but this training run was started without the "
                       f"{section} extension (provided by {PHASE_SECTIONS[section]})",
                       "run it with the zoo command (zoo train / zoo distill), or pass "
                       f"phases={{'{section}': ...}} to zoo.train.engine.train")
    return phases[section](config)


class _Run:
    """One training run: the model, its optimizer and data, and what the loop does with them."""

    def __init__(self, config: ExperimentConfig, out_dir: Path, dist_state: DistributedState, objective,
                 phase: TrainingPhase | None = None):
        self.config, self.out_dir, self.dist = config, out_dir, dist_state
        self.phase = phase
        #: Whether the phase has taken over (from phase.start on); train_model/ema_graph are its modules.
        self.phase_active = False
        self.ema_graph: nn.Module | None = None
        self.tcfg, self.dcfg = config.train, config.data
        self.main = dist_state.main
        self.bar = None
        self._setup_hardware()
        self._setup_model(objective)
        self._setup_data()
        self.best_psnr: float | None = None
        #: Validation PSNR of the starting weights (fine-tunes; kept in start.json across resumes).
        self.start_psnr: float | None = None
        self.last_checkpoint: int | None = None
        self.config_dict = config.to_dict()
        self.metadata = {"zoo_model": self.identity, "zoo_config": config.name}
        if self.phase is not None:
            self.phase.check(self.phase_context())

    # ---- setup

    def say(self, message: str) -> None:
        """Print a message (rank 0 only), above the progress bar when there is one."""
        if not self.main:
            return
        if self.bar is not None:
            self.bar.write(message, file=sys.stderr)
        else:
            print(message, file=sys.stderr, flush=True)

    def _setup_hardware(self) -> None:
        tcfg = self.tcfg
        if tcfg.threads is not None:
            torch.set_num_threads(tcfg.threads)
        self.device = pick_device(tcfg.device, self.dist, self.say)
        self.on_cuda = self.device.type == "cuda"
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(tcfg.amp)
        if self.amp_dtype is torch.float16 and not self.on_cuda:
            self.say("train.amp: fp16 applies on CUDA only (it needs loss scaling; the CPU autocasts bf16): "
                     "training on the CPU in float32; set train.amp: bf16 for mixed precision here")
            self.amp_dtype = None
        if self.amp_dtype is torch.bfloat16 and not self.on_cuda and not _cpu_has_bf16():
            self.say("train.amp: bf16 on a CPU without native bf16 instructions (avx512_bf16 / AMX) is emulated "
                     "and likely slower than float32")
        self.channels_last = tcfg.channels_last
        #: Set once torch.compile failed: the run stays eager from then on.
        self.compile_failed = False

    def autocast(self):
        """The mixed-precision context of the training forward (``train.amp``); validation runs without it."""
        return torch.autocast(self.device.type, dtype=self.amp_dtype) if self.amp_dtype else nullcontext()

    def compiled(self, module: nn.Module) -> nn.Module:
        """``torch.compile(module)`` with ``train.compile`` (``module`` itself without it or after a failure)."""
        if not self.tcfg.compile or self.compile_failed:
            return module
        try:
            return torch.compile(module)
        except Exception as err:  # torch.compile raises many types (no compiler, unsupported Python, ...)
            self.compile_fallback(err)
            return module

    def compile_fallback(self, err: Exception) -> None:
        """Say that torch.compile failed (once) and train eagerly from now on."""
        first_line = (str(err).strip().splitlines() or [""])[0][:300]
        self.say(f"train.compile: torch.compile failed ({type(err).__name__}: {first_line}); "
                 "training continues in eager mode")
        self.compile_failed = True
        self.forward_model = self.train_model

    def phase_context(self) -> PhaseContext:
        def training_batches(count: int) -> list[torch.Tensor]:
            # Every sample of the global batch, so that all processes see the same data.
            first = self.phase.start
            return [torch.stack([self.batches.sample(iteration, k)[0] for k in range(self.batches.stage(iteration)[1])])
                    for iteration in range(first, first + count)]

        # Inputs of the patch size the phase starts with (data.patch_schedule may change it).
        example_side = self.batches.stage(self.phase.start if self.phase is not None else 0)[0] // self.scale
        return PhaseContext(config=self.config, model=self.model,
                            ema_model=self.ema.module if self.ema is not None else None, device=self.device,
                            example=torch.zeros(2, 3, example_side, example_side, device=self.device),
                            size_multiple=self.size_multiple,
                            training_batches=training_batches, out_dir=self.out_dir, main=self.main, say=self.say)

    def _build_optimizer(self, parameters: list) -> None:
        self.params = parameters + self.extra_params
        opt = self.config.optimizer
        optimizer_class = torch.optim.Adam if opt.type == "adam" else torch.optim.AdamW
        self.optimizer = optimizer_class(self.params, lr=opt.lr, betas=tuple(opt.betas), weight_decay=opt.weight_decay)

    def _wrap(self, module: nn.Module) -> nn.Module:
        if not self.dist.active:
            return module
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(module, device_ids=[self.device.index] if self.on_cuda else None)

    def enter_phase(self, iteration: int, restoring: bool) -> None:
        """Hand the model over to the training phase: its module, a fresh optimizer, its loss terms."""
        graph, self.ema_graph = self.phase.enter(self.phase_context(), restoring=restoring)
        self.phase_active = True
        self._build_optimizer([p for p in graph.parameters() if p.requires_grad])
        self.train_model = self.forward_model = self._wrap(graph)
        self.objective.output_terms.extend(self.phase.output_terms())
        if not restoring:
            self.say(f"iteration {iteration}: {self.phase.section} phase starts"
                     + (" (train.compile: the phase's module runs eagerly)" if self.tcfg.compile else ""))

    def _setup_model(self, objective) -> None:
        config, tcfg, dcfg = self.config, self.tcfg, self.dcfg
        random.seed(tcfg.seed)
        np.random.seed(tcfg.seed % 2**32)
        torch.manual_seed(tcfg.seed)
        self.model, self.size_multiple = build_model(config.model)
        if getattr(config, "quantization", None) is not None:
            # A QAT graph is exported with a dynamic height and width, which some models take only
            # in multiples of a larger unit than eager mode needs (IDSANet: its attention window,
            # which eager mode pads to): patches and validation crops keep to that unit.
            self.size_multiple = math.lcm(self.size_multiple,
                                          int(getattr(self.model, "graph_size_multiple", self.size_multiple)))
        self.identity = config.model.describe()
        self.uses_degradation = bool(dcfg.sources and dcfg.degradation)
        scale = 1
        if self.uses_degradation:
            from zoo.data.degradations import parse_degradation

            scale = parse_degradation(dcfg.degradation).scale
        self.scale = scale
        for patch_size in [dcfg.patch_size] + [entry[1] for entry in dcfg.patch_schedule or ()]:
            if (patch_size // scale) % self.size_multiple:
                raise ZooError(f"patch size {patch_size} (data.patch_size or data.patch_schedule) gives "
                               f"{patch_size // scale}-pixel inputs, not a multiple of {self.size_multiple} as "
                               f"{self.identity} needs",
                               f"use a patch size that is a multiple of {self.size_multiple * scale}")
        input_patch = dcfg.patch_size // scale
        model = self.model.to(self.device).train()
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        # The EMA copy is made before the objective may hook into the model (hooks would be copied).
        self.ema = EMA(model, tcfg.ema_decay) if tcfg.ema_decay is not None else None
        self.objective = objective if objective is not None else TaskObjective(config)
        self.objective.prepare(model, self.device, torch.zeros(1, 3, input_patch, input_patch, device=self.device))
        if self.ema is not None:  # prepare may have initialised the weights (distill.init: teacher)
            self.ema.module.load_state_dict(model.state_dict())
        self.extra_modules = self.objective.modules()
        for module in self.extra_modules.values():
            module.to(self.device).train()
        self.extra_params = [p for module in self.extra_modules.values() for p in module.parameters()]
        self._build_optimizer(list(model.parameters()))
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        self.train_model: nn.Module = self._wrap(model)
        #: What the training forward calls: train_model, compiled with train.compile.
        self.forward_model: nn.Module = self.compiled(self.train_model)

    def _setup_data(self) -> None:
        from zoo.train.data import (PatchBatches, _paired_source, _try_data_root, split_pool, training_pool,
                                    validation_set)

        dcfg, tcfg = self.dcfg, self.tcfg
        pool = training_pool(dcfg)
        train_images, val_images = split_pool(pool, 0 if dcfg.val_paired else dcfg.val_images, dcfg.val_seed)
        if dcfg.val_paired is not None:
            val_images = _paired_source(dcfg.val_paired, _try_data_root(dcfg.data_root), "data.val_paired")
        if dcfg.limit is not None:
            train_images = train_images[:dcfg.limit]
        self.pool_digest = hashlib.sha256("\n".join(i.name for i in train_images).encode()).hexdigest()[:16]
        degradation = dcfg.degradation if dcfg.sources else None
        self.batches = PatchBatches(train_images, degradation=degradation, patch_size=dcfg.patch_size,
                                    batch_size=dcfg.batch_size, iterations=tcfg.iterations, seed=tcfg.seed,
                                    flips=dcfg.flips, rotations=dcfg.rotations, rank=self.dist.rank,
                                    world_size=self.dist.world_size, cache_images=dcfg.cache_images,
                                    schedule=dcfg.patch_schedule)
        if self.batches.skipped:
            largest = max(size for _, size, _ in self.batches.stages)
            self.say(f"left out {self.batches.skipped} training images smaller than {largest} pixels")
        self.validation = []
        if self.main and val_images:  # only rank 0 validates
            self.validation = validation_set(val_images, degradation=degradation, crop=dcfg.val_crop,
                                             size_multiple=self.size_multiple, seed=dcfg.val_seed)

    # ---- checkpoints

    def training_state(self, iteration: int) -> dict:
        """Everything but the weights needed to continue at ``iteration`` (tensors, dicts, lists, numbers)."""
        return {
            "format": CHECKPOINT_FORMAT,
            "iteration": iteration,
            "model": self.identity,
            "layout": layout_digest(self.model),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else {},
            "objective": {name: module.state_dict() for name, module in self.extra_modules.items()},
            "rng": rng_state(),
            "sampler": {"seed": self.tcfg.seed, "next_iteration": iteration, "global_batch": self.dcfg.batch_size,
                        "world_size": self.dist.world_size, "pool_digest": self.pool_digest},
            "best_val_psnr": self.best_psnr,
            "config": self.config_dict,
            "phase": ({"section": self.phase.section, "active": self.phase_active,
                       "state": self.phase.state_dict() if self.phase_active else {}}
                      if self.phase is not None else {}),
        }

    def restore(self, folder: Path) -> int:
        """Load checkpoint ``folder`` into this run; returns the iteration to continue from."""
        from zoo.checkpoints import load_weights, read_state_dict

        saved = read_state(folder / STATE_FILE)  # a complete checkpoint of this format, or a ZooError
        if saved["model"] != self.identity or saved["layout"] != layout_digest(self.model):
            raise ZooError(f"checkpoint {folder} was trained for model {saved['model']} but this config "
                           f"builds {self.identity}", "resume with the config of that run, or train into another --out")
        strangers = sorted(set(saved["objective"]) - set(self.extra_modules))
        if strangers:  # e.g. a zoo distill run's adapters, resumed by zoo train: its optimizer differs too
            raise ZooError(f"checkpoint {folder} holds state for {', '.join(strangers)}, which this run does not "
                           "train (a zoo distill checkpoint resumed by zoo train?)",
                           "resume it with the command and config of that run")

        def weights_of(name: str) -> dict:
            try:
                return read_state_dict(folder / name)
            except ZooError as err:  # truncated or corrupt: an older checkpoint may be intact
                raise ZooError(err.problem, INTACT_CHECKPOINT_FIX) from None

        load_weights(self.model, weights_of(WEIGHTS_FILE))
        if self.ema is not None:
            if not (folder / EMA_FILE).is_file():
                raise ZooError(f"checkpoint {folder} has no EMA weights but train.ema_decay is set",
                               "resume with train.ema_decay: null, or start a new run")
            load_weights(self.ema.module, weights_of(EMA_FILE))
        for name, module in self.extra_modules.items():
            if name not in saved["objective"]:
                raise ZooError(f"checkpoint {folder} has no state for {name}", "resume with the config of that run")
            module.load_state_dict(saved["objective"][name])
        phase_state = saved.get("phase") or {}
        if phase_state.get("active"):
            if self.phase is None or phase_state.get("section") != self.phase.section:
                raise ZooError(f"checkpoint {folder} was written during the {phase_state.get('section')} phase, "
                               "but this config has no such section", "resume with the config of that run")
            self.enter_phase(int(saved["iteration"]), restoring=True)
            self.phase.load_state_dict(phase_state["state"])
        try:
            self.optimizer.load_state_dict(saved["optimizer"])
        except (ValueError, KeyError, TypeError) as err:  # other parameter groups or sizes
            raise ZooError(f"checkpoint {folder}: its optimizer state does not fit this run "
                           f"({' '.join(str(err).split())[:200]})", "resume with the config of that run") from None
        if self.scaler is not None and saved.get("scaler"):
            self.scaler.load_state_dict(saved["scaler"])
        set_rng_state(saved["rng"])
        start = int(saved["iteration"])
        self.best_psnr = saved.get("best_val_psnr")
        self.last_checkpoint = start
        sampler = saved["sampler"]
        if sampler.get("pool_digest") != self.pool_digest or sampler.get("global_batch") != self.dcfg.batch_size:
            self.say("the training images or batch size differ from the checkpoint's: the run continues, "
                     "but not bit for bit as the original would have")
        changes = format_config_change(_with_current_defaults(saved["config"]), self.config_dict)
        if changes:
            self.say("resuming with changed settings: " + "; ".join(changes))
        if start >= self.tcfg.iterations:
            raise ZooError(f"checkpoint {folder} is at iteration {start}, already at train.iterations "
                           f"({self.tcfg.iterations})",
                           "raise train.iterations (--set train.iterations=N) to train longer")
        self.say(f"resuming from {folder} at iteration {start}")
        return start

    def checkpoint(self, iteration: int) -> None:
        """Save (rank 0) and agree on success across processes; a failure stops every process."""
        error = None
        if self.main:
            try:
                save_checkpoint(self.out_dir, iteration, self.model, self.ema, self.training_state(iteration),
                                 {**self.metadata, "iteration": str(iteration)}, self.tcfg.keep_checkpoints)
            except OSError as err:
                error = err
        failed = error is not None
        if self.dist.active:
            import torch.distributed as dist

            flag = torch.tensor([int(failed)], device=self.device)
            dist.broadcast(flag, src=0)
            failed = bool(flag.item())
        if failed:
            kept = (f"the previous checkpoint (iteration {self.last_checkpoint}) is intact"
                    if self.last_checkpoint is not None else "no earlier checkpoint exists")
            raise ZooError(f"could not write the checkpoint of iteration {iteration} "
                           f"({error if error is not None else 'failed on rank 0'}); {kept}",
                           "free disk space (or fix the folder's permissions), then rerun with --resume")
        self.last_checkpoint = iteration

    # ---- one step, validation

    def step(self, iteration: int, degraded: torch.Tensor, target: torch.Tensor) -> tuple[float, dict, float]:
        """One optimizer step; returns (loss averaged over processes, loss terms, learning rate)."""
        degraded = degraded.to(self.device, non_blocking=True)
        target = target.to(self.device, non_blocking=True)
        if self.channels_last:
            degraded = degraded.contiguous(memory_format=torch.channels_last)
        if self.phase is not None and not self.phase_active and iteration >= self.phase.start:
            self.enter_phase(iteration, restoring=False)
        if self.phase_active:
            self.phase.before_step(iteration)
            lr = self.phase.learning_rate(iteration)
        else:
            lr = learning_rate(self.config.schedule, self.config.optimizer.lr, self.tcfg.iterations, iteration)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        try:
            loss_value, terms = self.forward_backward(self.forward_model, degraded, target)
        except Exception as err:
            if self.forward_model is self.train_model:
                raise
            # A compiled forward or backward failed (compilation is lazy): redo the step eagerly,
            # which also raises any error that is not the compiler's.
            self.compile_fallback(err)
            self.optimizer.zero_grad(set_to_none=True)
            loss_value, terms = self.forward_backward(self.train_model, degraded, target)
        if not math.isfinite(loss_value):
            return loss_value, terms, lr  # the caller stops before anything is applied
        if self.dist.active and self.extra_params:  # DDP only averages the wrapped model's gradients
            import torch.distributed as dist

            for parameter in self.extra_params:
                if parameter.grad is not None:
                    dist.all_reduce(parameter.grad)
                    parameter.grad /= self.dist.world_size
        self.grad_norm = None
        if self.tcfg.grad_clip is not None:
            if self.scaler is not None:
                self.scaler.unscale_(self.optimizer)
            self.grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, self.tcfg.grad_clip))
        if self.scaler is not None:  # a GradScaler skips steps with inf gradients by design
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            norm = self.grad_norm if self.grad_norm is not None else float(
                torch.nn.utils.get_total_norm([p.grad for p in self.params if p.grad is not None]))
            if not math.isfinite(norm):  # stop before the step writes NaN into the weights and the EMA
                raise self._bad_gradients(iteration + 1, loss_value, norm)
            self.optimizer.step()
        if self.ema is not None:
            self.ema.update(self.model, iteration + 1)
        if self.phase_active:
            self.phase.after_step(iteration)
        return loss_value, {key: float(value) for key, value in terms.items()}, lr

    def forward_backward(self, model: nn.Module, degraded: torch.Tensor, target: torch.Tensor) -> tuple[float, dict]:
        """Loss of ``model`` under :meth:`autocast` and, when finite, its backward pass.

        Returns (loss averaged over processes, loss terms); a NaN/inf loss is returned without backward.
        """
        with self.autocast():
            loss, terms = self.objective(model, degraded, target)
        reduced = loss.detach().float().clone()
        if self.dist.active:
            import torch.distributed as dist

            dist.all_reduce(reduced)
            reduced /= self.dist.world_size
        loss_value = float(reduced)
        if math.isfinite(loss_value):
            (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
        return loss_value, terms

    def evaluated_model(self) -> nn.Module:
        """The module that is validated: the EMA weights when enabled; the phase's module once it runs."""
        if self.phase_active:
            return self.ema_graph if self.ema_graph is not None else self.train_model_module()
        return self.ema.module if self.ema is not None else self.model

    def evaluated_weights(self) -> nn.Module:
        """The float module whose weights are saved as best: the EMA weights when enabled."""
        return self.ema.module if self.ema is not None else self.model

    def train_model_module(self) -> nn.Module:
        """The trained module without its DDP wrapper."""
        return getattr(self.train_model, "module", self.train_model) if self.dist.active else self.train_model

    def validation_input_psnr(self) -> float | None:
        """Mean PSNR (dB) of the degraded validation inputs themselves (clamped to [0, 1]), as
        :meth:`validate` scores a model; None when input and target differ in size (super-resolution)."""
        from zoo.metrics import psnr

        if any(item.degraded.shape != item.target.shape for item in self.validation):
            return None
        scores = [psnr(item.degraded.float().clamp(0, 1).unsqueeze(0), item.target.unsqueeze(0))
                  for item in self.validation]
        return float(sum(scores) / len(scores))

    def validation_psnr(self) -> float:
        """Mean PSNR (dB, outputs clamped to [0, 1]) of the evaluated model on the validation images.

        RGB for restoration; for super-resolution (a degradation with scale > 1) the literature's
        BT.601 Y channel with a border crop of the scale, as ``zoo eval`` measures it. Always in
        float32, whatever ``train.amp`` (comparable across runs, as ``zoo eval`` measures).
        """
        from zoo.metrics import psnr

        from zoo.data.degradations import parse_degradation

        spec = self.config.data.degradation
        scale = parse_degradation(spec).scale if spec else 1
        metric = {"y_channel": scale > 1, "crop_border": scale if scale > 1 else 0}

        net = self.evaluated_model()
        was_training = net.training
        net.eval()
        scores = []
        evaluating = self.phase.evaluating(net) if self.phase_active else nullcontext()
        with torch.no_grad(), evaluating:
            for item in self.validation:
                restored = net(item.degraded.unsqueeze(0).to(self.device))
                scores.append(psnr(restored.float().clamp(0, 1).cpu(), item.target.unsqueeze(0), **metric))
        net.train(was_training)
        return float(np.mean(scores))

    def validate(self, iteration: int) -> float:
        """:meth:`validation_psnr` at ``iteration``; saves the weights as ``best`` when it is a new best."""
        from zoo.atomic import write_json
        from zoo.checkpoints import save_weights

        value = self.validation_psnr()
        if self.best_psnr is None or value > self.best_psnr:
            self.best_psnr = value
            save_weights(self.evaluated_weights(), self.out_dir / "best.safetensors",
                         metadata={**self.metadata, "iteration": str(iteration), "val_psnr": f"{value:.4f}"})
            write_json(self.out_dir / "best.json", {"iteration": iteration, "val_psnr": value,
                                                    "weights": "ema" if self.ema is not None else "model",
                                                    **({"validated": f"{self.phase.section} (fake-quantized)"}
                                                       if self.phase_active else {})})
        self.say(f"iteration {iteration}: validation PSNR {value:.2f} dB (best {self.best_psnr:.2f} dB)")
        return value

    def _kept_and_resume(self) -> tuple[str, str]:
        """What a stopped run kept (for the message) and how to rerun from it (for the fix)."""
        if self.last_checkpoint is None:
            return "no checkpoint was written before it", ""
        return (f"the last good checkpoint is iteration {self.last_checkpoint} in {self.out_dir / CHECKPOINTS}",
                " with --resume")

    def _diverged(self, iteration: int, loss_value: float) -> TrainingDiverged:
        kept, resume = self._kept_and_resume()
        return TrainingDiverged(f"the loss became {loss_value} at iteration {iteration}; training stopped without "
                                f"saving this state; {kept}",
                                f"lower optimizer.lr or set train.grad_clip, then rerun{resume}")

    def _bad_gradients(self, iteration: int, loss_value: float, norm: float) -> TrainingDiverged:
        kept, resume = self._kept_and_resume()
        if self.tcfg.amp != "none" and self.channels_last:
            # Seen with idsanet on CPU (torch 2.13): bf16 + channels-last gave NaN gradients at
            # 128-pixel patches from a finite loss, and ran 4-5x slower than contiguous tensors.
            fix = "set train.channels_last: false (or train.amp: none)"
        elif self.tcfg.amp != "none":
            fix = "set train.amp: none, or lower optimizer.lr"
        else:
            fix = "lower optimizer.lr or set train.grad_clip"
        return TrainingDiverged(f"the gradients became {norm} at iteration {iteration} although the loss was finite "
                                f"({loss_value:.6g}); training stopped before applying them; {kept}",
                                f"{fix}, then rerun{resume}")

    # ---- the loop

    def loop(self, start: int, stop: int, progress: bool, resumed: bool) -> TrainResult:
        from tqdm import tqdm

        from zoo.atomic import write_json
        from zoo.checkpoints import save_weights
        from zoo.train.data import batch_loader

        tcfg, dcfg, out_dir = self.tcfg, self.dcfg, self.out_dir
        csv_log = tensorboard = None
        if self.main:
            out_dir.mkdir(parents=True, exist_ok=True)
            write_json(out_dir / "config.json", self.config_dict)
            record = None
            if not (resumed and (out_dir / START_RECORD).is_file()):
                record = start_record(self.config.model)
                write_json(out_dir / START_RECORD, record)
            csv_log = CsvLog(out_dir / "log.csv", start if resumed else None)
            tensorboard = open_tensorboard(out_dir)
            later = "".join(f"; from iteration {first}: batch {batch}, patch {size}"
                            for first, size, batch in self.batches.stages[1:])
            precision = "".join([f", {tcfg.amp} autocast" if self.amp_dtype else "",
                                 ", channels_last" if self.channels_last else "",
                                 ", torch.compile" if self.forward_model is not self.train_model else ""])
            self.say(f"training {self.identity} for {tcfg.iterations} iterations on {self.device} "
                     f"({self.dist.world_size} process{'es' if self.dist.active else ''}, batch {dcfg.batch_size}, "
                     f"patch {dcfg.patch_size}{later}, {len(self.batches.images)} training / {len(self.validation)} "
                     f"validation images{precision}) -> {out_dir}")
            if self.validation:
                self.say(f"held out for validation (data.val_seed {dcfg.val_seed}): "
                         + ", ".join(image.name for image in self.validation))
            if self.validation and not resumed:
                baseline = self.validation_input_psnr()
                if baseline is not None:
                    self.say(f"validation input (the degraded images as they are): {baseline:.2f} dB, "
                             "the level a model must beat")
                if self.config.model.weights:  # a fine-tune: the level it must beat is where it starts
                    self.start_psnr = self.validation_psnr()
                    write_json(out_dir / START_RECORD, {**record, "val_psnr": self.start_psnr})
                    before = f" (before the {self.phase.section} phase)" if self.phase is not None else ""
                    self.say(f"validation of the starting weights{before}: {self.start_psnr:.2f} dB")
            elif self.validation and (out_dir / START_RECORD).is_file():
                self.start_psnr = json.loads((out_dir / START_RECORD).read_text()).get("val_psnr")
            if progress:
                self.bar = tqdm(total=tcfg.iterations, initial=start, desc=f"train {self.config.name}", unit="it",
                                dynamic_ncols=True)
        losses: list[tuple[int, float]] = []
        validations: list[tuple[int, float]] = []
        window, speed = LogWindow(), LogWindow()
        self.grad_norm = None
        started = time.perf_counter()
        loader = batch_loader(self.batches, start, dcfg.workers, pin_memory=self.on_cuda)
        try:
            for iteration in range(start, stop):
                step_started = time.perf_counter()
                degraded, target = next(loader)
                loss_value, terms, lr = self.step(iteration, degraded, target)
                done = iteration + 1
                if not math.isfinite(loss_value):
                    if csv_log is not None:
                        csv_log.write({"iteration": done, "lr": lr, "loss": loss_value})
                    raise self._diverged(done, loss_value)
                seconds = time.perf_counter() - step_started
                losses.append((done, loss_value))
                patches = self.batches.stage(iteration)[1]
                window.add(seconds, {"loss": loss_value, **terms}, patches)
                if iteration > start or stop - start == 1:  # the first step has one-off costs (allocations)
                    speed.add(seconds, {}, patches)
                if self.bar is not None:
                    self.bar.update(1)
                    self.bar.set_postfix(loss=f"{loss_value:.4g}", lr=f"{lr:.3g}", refresh=False)

                val_psnr = None
                # Other processes wait for rank 0's validation in the next collective (gradient all-reduce).
                if self.validation and ((tcfg.val_interval and done % tcfg.val_interval == 0)
                                        or done == tcfg.iterations):
                    val_psnr = self.validate(done)
                    validations.append((done, val_psnr))
                if csv_log is not None and (done % tcfg.log_interval == 0 or done == stop or val_psnr is not None):
                    its = window.iterations_per_second
                    row = {"iteration": done, "lr": lr, **window.means(),
                           "grad_norm": self.grad_norm if self.grad_norm is not None else "",
                           "it_per_s": round(its, 4), "patches_per_s": round(window.patches_per_second, 3),
                           "elapsed_s": round(time.perf_counter() - started, 2)}
                    if val_psnr is not None:
                        row["val_psnr"] = round(val_psnr, 4)
                    csv_log.write(row)
                    if tensorboard is not None:
                        for key, value in row.items():
                            if key != "iteration" and value != "":
                                tensorboard.add_scalar(key, float(value), done)
                    window = LogWindow()
                if (tcfg.checkpoint_interval and done % tcfg.checkpoint_interval == 0) or done == stop:
                    self.checkpoint(done)
        finally:
            if self.bar is not None:
                self.bar.close()
                self.bar = None
            if tensorboard is not None:
                tensorboard.close()

        finished = stop == tcfg.iterations
        final = final_ema = None
        phase_outputs: dict[str, Path] = {}
        if self.main and finished and self.phase_active:
            phase_outputs = self.phase.finish(self.phase_context(), self.evaluated_model(), stop)
            for name, path in phase_outputs.items():
                self.say(f"{self.phase.section}: {name} {path}")
        if self.main and finished:
            final = save_weights(self.model, out_dir / "final.safetensors",
                                 metadata={**self.metadata, "iteration": str(stop)})
            if self.ema is not None:
                final_ema = save_weights(self.ema.module, out_dir / "final_ema.safetensors",
                                         metadata={**self.metadata, "iteration": str(stop), "weights": "ema"})
        its, patches_per_second = speed.iterations_per_second, speed.patches_per_second
        best = f"; best validation PSNR {self.best_psnr:.2f} dB" if self.best_psnr is not None else ""
        if self.best_psnr is not None and self.start_psnr is not None:
            if self.phase is not None:
                # The phase changes what is validated (QAT: fake-quantized): the start is its reference, not a rival.
                best += f" ({self.phase.section}; the starting weights before it: {self.start_psnr:.2f} dB)"
            elif self.best_psnr > self.start_psnr:
                best += f" (from {self.start_psnr:.2f} dB at the start)"
            else:
                best += f", not above the starting weights' {self.start_psnr:.2f} dB: they remain the better choice"
        where = f"; weights {final}" if final else f"; resume with --resume ({out_dir / CHECKPOINTS})"
        self.say(f"{'finished' if finished else 'stopped'} at iteration {stop}: {its:.3f} it/s, "
                 f"{patches_per_second:.2f} patches/s{best}{where}")
        best_path = out_dir / "best.safetensors"
        return TrainResult(out_dir=out_dir, iteration=stop, finished=finished, final_weights=final,
                           final_ema_weights=final_ema, best_weights=best_path if best_path.is_file() else None,
                           best_val_psnr=self.best_psnr, start_val_psnr=self.start_psnr, losses=losses,
                           validations=validations, iterations_per_second=its, patches_per_second=patches_per_second,
                           phase_outputs=phase_outputs)
