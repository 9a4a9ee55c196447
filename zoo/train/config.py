"""Experiment configs for ``zoo train`` and ``zoo distill``: YAML files read into dataclasses, strictly.

A config is a YAML mapping with the sections of :class:`ExperimentConfig` (``model``, ``data``,
``loss``, ``optimizer``, ``schedule``, ``train``, for distillation ``distill`` and, for
quantization-aware training, ``quantization``). Every key is
checked: an unknown key or a value of the wrong type raises :class:`~zoo.errors.ZooError` naming
the key path, e.g. ``optimizer.lr must be a number, got 'fast'``. Command-line overrides
(``--set optimizer.lr=1e-4``) are applied to the YAML mapping before the check, so they are
checked the same way. docs/training.md is the reference of every key.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from zoo.errors import ZooError

#: Benchmark sets that are for evaluation only: never training data, never validation data.
EVALUATION_SET_NAMES = frozenset({"set5", "set14", "bsd68", "cbsd68"})

_FIX = "edit the config file (or the --set option)"


@dataclass
class ModelSpec:
    """Which network to build: a registry name, or a family with constructor arguments."""

    #: Registered model name (``zoo list``), built untrained.
    name: str | None = None
    #: Model family for custom sizes: ``hinet``, ``hinet-lite`` or ``package.module:Class`` inside ``zoo``.
    family: str | None = None
    #: Keyword arguments of the family's constructor (e.g. ``{wf: 16}``); only with ``family``.
    kwargs: dict = field(default_factory=dict)
    #: Optional starting weights (.safetensors or official .pth), loaded strictly (fine-tuning);
    #: ``shipped`` = the weights the zoo ships for ``name``, ``shipped:OTHER`` = those of another
    #: model of the same architecture.
    weights: str | None = None
    #: fnmatch patterns of the model's keys that keep their fresh initialisation instead of loading
    #: from ``weights`` (e.g. ``[tail.*]``: an x4 super-resolution body fine-tuned at x2 with a new
    #: tail); every other key still loads strictly. Needs ``weights``.
    reinit: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """A short human-readable identity, e.g. ``hinet-sidd-0.5x`` or ``hinet(wf=8)``."""
        if self.name:
            return self.name
        args = ", ".join(f"{key}={value}" for key, value in sorted(self.kwargs.items()))
        return f"{self.family}({args})"


@dataclass
class PairedFolders:
    """Two folders of equally named images: degraded inputs and their clean targets (SIDD, GoPro, ...)."""

    input: str
    target: str


@dataclass
class DataConfig:
    """Training patches and the held-out validation split."""

    #: Clean image sources, degraded on the fly: ``urban100`` (under the data root), ``bundled``
    #: (the photos shipped with the zoo) or a folder path. Evaluation sets are refused.
    sources: list[str] = field(default_factory=lambda: ["urban100", "bundled"])
    #: Pre-degraded pairs (used as they are, no synthetic degradation), alone or besides ``sources``.
    paired: PairedFolders | None = None
    #: Synthetic degradation spec applied to clean sources, e.g. ``gaussian:15-50`` (sigma on 0-255).
    degradation: str | None = "gaussian:25"
    #: Folder holding urban100 (default: $ZOO_DATA_ROOT, else ../shared/datasets beside the repo).
    data_root: str | None = None
    #: Images of the training pool held out for validation (never trained on); 0 = no validation.
    val_images: int = 4
    #: Seed of the held-out choice and of the validation inputs' degradations. Independent of
    #: ``train.seed`` so that the stages of a chain (each with a new data stream) hold out the same
    #: images: a stage must not train on what an earlier stage was selected on.
    val_seed: int = 0
    #: A separate validation split of the training data (replaces the held-out images).
    val_paired: PairedFolders | None = None
    #: Validation runs on centre crops of this many pixels (rounded down to the model's size
    #: multiple); 0 = whole images.
    val_crop: int = 256
    #: Use only the first N training images (after the validation split); None = all.
    limit: int | None = None
    #: Side of the square training patches in target pixels.
    patch_size: int = 64
    #: Patches per iteration summed over all processes (each of N processes gets batch_size / N).
    batch_size: int = 8
    #: Progressive patch sizes: ``[[iteration, patch_size, batch_size], ...]`` with increasing
    #: iterations; from each iteration (0-based) on, patches of that size in batches of that size.
    #: Before the first entry: ``patch_size`` and ``batch_size``. None = those throughout.
    patch_schedule: list[list[int]] | None = None
    #: Random horizontal flips / 90-degree rotations of the patches (the 8 dihedral transforms).
    flips: bool = True
    rotations: bool = True
    #: DataLoader worker processes preparing batches (0 = in the training process).
    workers: int = 0
    #: Keep decoded training images in memory (uint8/uint16) instead of re-reading files.
    cache_images: bool = True


@dataclass
class LossConfig:
    """Pixel loss against the ground truth, summed over the model's stage outputs."""

    #: ``psnr`` (10/ln10 * mean log MSE, the HINet loss), ``l1``, ``mse`` (L2) or ``charbonnier``.
    type: Literal["psnr", "l1", "mse", "charbonnier"] = "l1"
    #: Weight of each stage output, first stage first (HINet: two stages). None = the final output
    #: only, weight 1. More than one weight asks the model for ``forward(x, return_stages=True)``.
    stage_weights: list[float] | None = None
    #: Charbonnier epsilon (image units, 0-1 scale): sqrt(d^2 + eps^2).
    charbonnier_eps: float = 1e-3


@dataclass
class OptimizerConfig:
    type: Literal["adam", "adamw"] = "adam"
    lr: float = 2e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 0.0


@dataclass
class ScheduleConfig:
    """Learning-rate schedule, a pure function of the iteration (so resuming needs no scheduler state)."""

    #: ``cosine``: lr from optimizer.lr down to eta_min over train.iterations (torch's
    #: CosineAnnealingLR with T_max = iterations); ``constant``: optimizer.lr throughout.
    type: Literal["cosine", "constant"] = "cosine"
    eta_min: float = 1e-7
    #: Linear warm-up from 0 over this many iterations (BasicSR's warmup_iter); 0 = none.
    warmup_iterations: int = 0


@dataclass
class TrainingConfig:
    """The loop: length, stabilisers, intervals, reproducibility and hardware."""

    iterations: int = 1000
    #: Clip the global gradient L2 norm to this value (HINet: 0.01); None = no clipping.
    grad_clip: float | None = None
    #: Exponential moving average of the weights with this decay per iteration; None = no EMA.
    ema_decay: float | None = None
    #: Validate every N iterations and at the end (0 = only at the end).
    val_interval: int = 0
    #: Write a checkpoint every N iterations and at the end (0 = only at the end).
    checkpoint_interval: int = 500
    #: Log a CSV row (and TensorBoard scalars) every N iterations.
    log_interval: int = 10
    #: Periodic checkpoints kept on disk (oldest deleted first); the best one is kept separately.
    keep_checkpoints: int = 2
    seed: int = 0
    #: ``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N``.
    device: str = "auto"
    #: CPU threads for torch's operators (None = torch's default, one per core). On a shared or
    #: small machine 1 is often faster for small models.
    threads: int | None = None
    #: Mixed precision of the training forward: ``none``, ``bf16`` (autocast on CUDA and on the
    #: CPU) or ``fp16`` (CUDA only, with loss scaling; float32 on the CPU). Validation runs in float32.
    amp: Literal["none", "bf16", "fp16"] = "none"
    #: channels_last memory format of the model and its inputs (CUDA and CPU).
    channels_last: bool = False
    #: ``torch.compile`` the training forward (the float model; a training phase's module runs
    #: eagerly). If compiling fails the run says so once and continues eagerly.
    compile: bool = False


@dataclass
class FeatureTap:
    """One intermediate-feature distillation point: a student module matched to a teacher module."""

    #: Dotted module names (``model.named_modules()``), e.g. ``down_path_1.2``.
    student: str
    teacher: str
    weight: float = 1.0
    #: For modules returning a tuple, which element is the feature map (None: the output itself).
    student_index: int | None = None
    teacher_index: int | None = None


@dataclass
class DistillConfig:
    """Knowledge distillation from a frozen teacher (``zoo distill``)."""

    #: The teacher network; ``weights`` is required (a teacher must be trained).
    teacher: ModelSpec
    #: Weight of the output distillation term (student output vs teacher output).
    alpha: float = 1.0
    #: Weight of the intermediate-feature terms.
    beta: float = 0.0
    #: Loss between student and teacher outputs. With the PSNR task loss use "psnr": its gradient
    #: is 10/(ln 10 * MSE) times the MSE gradient, about 200x an L1 term's at 27 dB, so an L1 term
    #: at alpha 1 barely moves the student (measured: +0.01 dB over scratch).
    output_loss: Literal["psnr", "l1", "mse", "charbonnier"] = "l1"
    feature_loss: Literal["l1", "mse"] = "mse"
    features: list[FeatureTap] = field(default_factory=list)
    #: How the student starts: "random" (its own initialisation) or "teacher" (a channel-pruned
    #: copy of the teacher, for students that implement ``inherit_from(teacher)``, e.g. HINetLite
    #: from a wider HINetLite); feature adapters of matching taps then start as that selection.
    init: Literal["random", "teacher"] = "random"


@dataclass
class QuantizationConfig:
    """Quantization-aware training (QAT) inside the run (the ``quantization`` section).

    The run trains in float until ``start``, then continues with fake quantization (PT2E) and
    writes the converted int8 model beside the weights (``OUT/quantized.pt2``). zoo/ only checks
    these keys; the QAT itself is the training phase quantize/ provides (:mod:`quantize.qat_phase`).
    """

    #: Quantization recipe (``quantize/recipes``): ``xnnpack``, ``coreml`` or ``tflite``.
    backend: str = "xnnpack"
    #: Iteration at which fake quantization starts (0: QAT from the given weights).
    start: int = 0
    #: Iteration after which no observer updates its range (None: they observe to the end).
    freeze_observers: int | None = None
    #: Initial activation ranges: ``ptq`` (PTQ histogram ranges on training patches, then kept
    #: fixed) or ``minmax`` (moving-average min/max of the training batches).
    ranges: Literal["ptq", "minmax"] = "ptq"
    #: Global training batches (at ``start``, ``start + 1``, ...) that calibrate ``ranges: ptq``
    #: and the final range re-estimation.
    calibration_batches: int = 4
    #: Peak learning rate of the QAT phase (its own warm-up + ``schedule.type`` from ``start`` to
    #: ``train.iterations``, down to ``eta_min``).
    lr: float = 1e-5
    warmup_iterations: int = 0
    eta_min: float = 0.0
    #: LSQ: the fake-quant scales (activations and weights) become parameters trained with the
    #: straight-through estimator (torchao's LearnableFakeQuantize), starting from the observers'.
    learnable_scales: bool = False
    #: Weight of an extra loss (``loss.type``) between the output and the float model's output
    #: (the weights at ``start``, frozen); 0 = off.
    distill_from_float: float = 0.0
    #: Recompute the activation ranges (PTQ histogram) with the final weights before converting.
    reestimate_ranges: bool = False
    #: Layers kept in float: ``first-last``, ``none`` or comma-separated module names.
    mixed: str = "first-last"
    #: Height and width (input pixels) of the saved int8 model; None = the model card's tile
    #: (256 for models without a card).
    tile: int | None = None


@dataclass
class ExperimentConfig:
    """A whole experiment; see docs/training.md for every key."""

    name: str
    model: ModelSpec
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainingConfig = field(default_factory=TrainingConfig)
    distill: DistillConfig | None = None
    quantization: QuantizationConfig | None = None
    #: Free text: where the recipe comes from, what it is for.
    description: str = ""

    def to_dict(self) -> dict:
        """The config as plain YAML/JSON-serialisable data (round-trips through :func:`config_from_dict`)."""
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------------------------
# Strict conversion of YAML data into the dataclasses above.


def _describe_type(annotation) -> str:
    origin = typing.get_origin(annotation)
    if annotation is bool:
        return "true or false"
    if annotation is int:
        return "an integer"
    if annotation is float:
        return "a finite number"
    if annotation is str:
        return "a string"
    if annotation is dict or origin is dict:
        return "a mapping"
    if origin is list:
        return f"a list of {_describe_type(typing.get_args(annotation)[0]).removeprefix('a ').removeprefix('an ')}s"
    if origin is Literal:
        return "one of " + ", ".join(repr(choice) for choice in typing.get_args(annotation))
    if dataclasses.is_dataclass(annotation):
        return "a mapping"
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if arg is type(None) else _describe_type(arg) for arg in typing.get_args(annotation))
    return str(annotation)


def _wrong(path: str, annotation, value) -> ZooError:
    shown = repr(value) if not isinstance(value, (dict, list)) else type(value).__name__
    return ZooError(f"{path} must be {_describe_type(annotation)}, got {shown}", _FIX)


def _as_number(value) -> float | None:
    """A float from an int, a float or a numeric string (PyYAML reads ``2e-4`` as a string); else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def _convert(value: Any, annotation, path: str):
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None:
            if type(None) in options:
                return None
            raise _wrong(path, annotation, value)
        non_null = [option for option in options if option is not type(None)]
        if len(non_null) == 1:
            (inner,) = non_null
            scalar = inner in (bool, int, float, str) or typing.get_origin(inner) is Literal
            try:
                return _convert(value, inner, path)
            except ZooError as err:
                if scalar:  # say that null is allowed too; nested errors keep their own message
                    raise _wrong(path, annotation, value) from err
                raise
        for option in non_null:
            try:
                return _convert(value, option, path)
            except ZooError:
                continue
        raise _wrong(path, annotation, value)
    if annotation is Any:
        return value
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise _wrong(path, annotation, value)
    if annotation is int:
        number = _as_number(value)
        if number is None or not math.isfinite(number) or number != int(number):
            raise _wrong(path, annotation, value)
        return int(number)
    if annotation is float:
        number = _as_number(value)
        if number is None or not math.isfinite(number):
            raise _wrong(path, annotation, value)
        return number
    if annotation is str:
        if isinstance(value, str):
            return value
        raise _wrong(path, annotation, value)
    if origin is Literal:
        if value in typing.get_args(annotation) and isinstance(value, str):
            return value
        raise _wrong(path, annotation, value)
    if annotation is dict or origin is dict:
        if not isinstance(value, dict) or not all(isinstance(key, str) for key in value):
            raise _wrong(path, annotation, value)
        return dict(value)
    if origin is list:
        if not isinstance(value, list):
            raise _wrong(path, annotation, value)
        (item_type,) = typing.get_args(annotation)
        return [_convert(item, item_type, f"{path}[{index}]") for index, item in enumerate(value)]
    if dataclasses.is_dataclass(annotation):
        return _build_dataclass(annotation, value, path)
    raise TypeError(f"config field {path} has an unsupported annotation {annotation!r}")


def _build_dataclass(cls, value, path: str):
    where = path or "the config"
    if not isinstance(value, dict):
        raise ZooError(f"{where} must be a mapping of keys to values, got {type(value).__name__}", _FIX)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in value:
        if key not in fields:
            key_path = f"{path}.{key}" if path else str(key)
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ZooError(f"unknown config key {key_path}",
                           f"{hint}valid keys of {where}: {', '.join(fields)}")
    kwargs = {}
    for name, spec in fields.items():
        key_path = f"{path}.{name}" if path else name
        if name in value:
            kwargs[name] = _convert(value[name], hints[name], key_path)
        elif spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
            raise ZooError(f"config key {key_path} is missing", f"add it to the config ({_describe_type(hints[name])})")
    return cls(**kwargs)


# --------------------------------------------------------------------------------------------
# Checks between keys (types are already right here).


def is_evaluation_set(source: str) -> bool:
    """Whether a data source names an evaluation-only benchmark set (by name or folder name)."""
    text = str(source).strip().rstrip("/\\")
    return text.lower() in EVALUATION_SET_NAMES or Path(text).name.lower() in EVALUATION_SET_NAMES


def _refuse_evaluation_set(source: str, key_path: str) -> None:
    if is_evaluation_set(source):
        raise ZooError(
            f"{key_path} is {source!r}, an evaluation-only benchmark set (set5, set14, bsd68 are never "
            f"trained or validated on)",
            "train on urban100, bundled or your own folder; validation is held out of the training pool")


def _check_model(spec: ModelSpec, path: str) -> None:
    if bool(spec.name) == bool(spec.family):
        raise ZooError(f"{path} needs exactly one of name (a registered model) or family (with kwargs)",
                       f"set {path}.name: hinet-sidd-0.5x, or {path}.family: hinet with {path}.kwargs")
    if spec.name and spec.kwargs:
        raise ZooError(f"{path}.kwargs is only used with {path}.family", f"drop {path}.kwargs or use {path}.family")
    if spec.reinit and not spec.weights:
        raise ZooError(f"{path}.reinit keeps some keys fresh while loading {path}.weights, but no weights are set",
                       f"set {path}.weights to the checkpoint to fine-tune from, or drop {path}.reinit")


def _positive(value, path: str, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        raise ZooError(f"{path} must be {'>= 0' if allow_zero else '> 0'}, got {value}", _FIX)


def validate(config: ExperimentConfig) -> ExperimentConfig:
    """Check the relations between keys; raises :class:`ZooError` naming the key. Returns ``config``."""
    _check_model(config.model, "model")
    data = config.data
    for index, source in enumerate(data.sources):
        _refuse_evaluation_set(source, f"data.sources[{index}]")
    for key, pair in (("data.paired", data.paired), ("data.val_paired", data.val_paired)):
        if pair is not None:
            _refuse_evaluation_set(pair.input, f"{key}.input")
            _refuse_evaluation_set(pair.target, f"{key}.target")
    if not data.sources and data.paired is None:
        raise ZooError("data has no training images", "list data.sources (e.g. [urban100, bundled]) or set data.paired")
    if data.sources and not data.degradation:
        raise ZooError("data.sources are clean images and need data.degradation",
                       "set e.g. data.degradation: gaussian:25")
    _positive(data.patch_size, "data.patch_size")
    _positive(data.batch_size, "data.batch_size")
    _positive(data.val_images, "data.val_images", allow_zero=True)
    _positive(data.val_crop, "data.val_crop", allow_zero=True)
    _positive(data.val_seed, "data.val_seed", allow_zero=True)
    _positive(data.workers, "data.workers", allow_zero=True)
    if data.limit is not None:
        _positive(data.limit, "data.limit")
    _check_patch_schedule(data.patch_schedule, config.train.iterations)

    loss = config.loss
    if loss.stage_weights is not None:
        if not loss.stage_weights:
            raise ZooError("loss.stage_weights is an empty list", "give one weight per stage output, or null")
        for index, weight in enumerate(loss.stage_weights):
            _positive(weight, f"loss.stage_weights[{index}]", allow_zero=True)
    _positive(loss.charbonnier_eps, "loss.charbonnier_eps")

    opt = config.optimizer
    _positive(opt.lr, "optimizer.lr")
    if len(opt.betas) != 2 or not all(0.0 <= beta < 1.0 for beta in opt.betas):
        raise ZooError(f"optimizer.betas must be two numbers in [0, 1), got {opt.betas}", _FIX)
    _positive(opt.weight_decay, "optimizer.weight_decay", allow_zero=True)
    _positive(config.schedule.eta_min, "schedule.eta_min", allow_zero=True)
    if config.schedule.eta_min > opt.lr:
        raise ZooError(f"schedule.eta_min ({config.schedule.eta_min}) is above optimizer.lr ({opt.lr})", _FIX)
    _positive(config.schedule.warmup_iterations, "schedule.warmup_iterations", allow_zero=True)

    train = config.train
    _positive(train.iterations, "train.iterations")
    for key in ("val_interval", "checkpoint_interval"):
        _positive(getattr(train, key), f"train.{key}", allow_zero=True)
    _positive(train.log_interval, "train.log_interval")
    _positive(train.keep_checkpoints, "train.keep_checkpoints")
    if train.threads is not None:
        _positive(train.threads, "train.threads")
    if train.grad_clip is not None:
        _positive(train.grad_clip, "train.grad_clip")
    if train.ema_decay is not None and not 0.0 <= train.ema_decay < 1.0:
        raise ZooError(f"train.ema_decay must be in [0, 1), got {train.ema_decay}", "typical values: 0.999 or null")
    device = train.device
    if device not in ("auto", "cpu", "cuda") and not (device.startswith("cuda:") and device[5:].isdigit()):
        raise ZooError(f"train.device must be auto, cpu, cuda or cuda:N, got {device!r}", _FIX)

    if config.distill is not None:
        distill = config.distill
        _check_model(distill.teacher, "distill.teacher")
        if not distill.teacher.weights:
            raise ZooError("distill.teacher.weights is missing: a teacher must be a trained network",
                           "set distill.teacher.weights to its .safetensors or .pth checkpoint")
        if distill.teacher.reinit:
            raise ZooError("distill.teacher.reinit would leave part of the teacher untrained",
                           "drop distill.teacher.reinit: a teacher loads all of its weights")
        _positive(distill.alpha, "distill.alpha", allow_zero=True)
        _positive(distill.beta, "distill.beta", allow_zero=True)
        if distill.beta > 0 and not distill.features:
            raise ZooError("distill.beta > 0 but distill.features lists no feature taps",
                           "add {student: MODULE, teacher: MODULE} entries or set distill.beta: 0")
        for index, tap in enumerate(distill.features):
            _positive(tap.weight, f"distill.features[{index}].weight", allow_zero=True)
    if config.quantization is not None:
        _check_quantization(config)
    return config


def _check_patch_schedule(schedule: list[list[int]] | None, iterations: int) -> None:
    """``data.patch_schedule``: entries [iteration, patch_size, batch_size], iterations increasing."""
    if schedule is None:
        return
    if not schedule:
        raise ZooError("data.patch_schedule is an empty list",
                       "give [iteration, patch_size, batch_size] entries, or null for no schedule")
    previous = 0
    for index, entry in enumerate(schedule):
        key = f"data.patch_schedule[{index}]"
        if len(entry) != 3:
            raise ZooError(f"{key} must be [iteration, patch_size, batch_size], got {entry}",
                           "e.g. data.patch_schedule: [[3000, 96, 4]]")
        iteration, patch_size, batch_size = entry
        if not previous < iteration < iterations:  # an entry at 0 would just replace data.patch_size
            raise ZooError(f"{key} starts at iteration {iteration}: each entry needs an iteration above "
                           f"{previous} (the previous entry's; data.patch_size holds before the first) and "
                           f"below train.iterations ({iterations})", _FIX)
        _positive(patch_size, f"{key} patch_size")
        _positive(batch_size, f"{key} batch_size")
        previous = iteration


def _check_quantization(config: ExperimentConfig) -> None:
    """The ``quantization`` section against itself and the rest of the run."""
    quant, train = config.quantization, config.train
    if not quant.backend:
        raise ZooError("quantization.backend is empty", "set quantization.backend: xnnpack (or coreml, tflite)")
    _positive(quant.start, "quantization.start", allow_zero=True)
    if quant.start >= train.iterations:
        raise ZooError(f"quantization.start ({quant.start}) is not before train.iterations ({train.iterations})",
                       "start QAT earlier or train longer")
    if quant.freeze_observers is not None and quant.freeze_observers < quant.start:
        raise ZooError(f"quantization.freeze_observers ({quant.freeze_observers}) is before quantization.start "
                       f"({quant.start})", "freeze at or after the start, or null")
    _positive(quant.calibration_batches, "quantization.calibration_batches")
    _positive(quant.lr, "quantization.lr")
    _positive(quant.warmup_iterations, "quantization.warmup_iterations", allow_zero=True)
    _positive(quant.eta_min, "quantization.eta_min", allow_zero=True)
    if quant.eta_min > quant.lr:
        raise ZooError(f"quantization.eta_min ({quant.eta_min}) is above quantization.lr ({quant.lr})", _FIX)
    _positive(quant.distill_from_float, "quantization.distill_from_float", allow_zero=True)
    if quant.tile is not None:
        _positive(quant.tile, "quantization.tile")
    if config.loss.stage_weights is not None and len(config.loss.stage_weights) > 1:
        raise ZooError("loss.stage_weights asks for every stage output, but the quantized graph returns the final one",
                       "set loss.stage_weights: null for a run with a quantization section")
    if train.amp != "none":
        raise ZooError(f"train.amp is {train.amp!r}: fake quantization runs in float32",
                       "set train.amp: none for a run with a quantization section")
    if config.distill is not None and config.distill.beta > 0 and config.distill.features:
        raise ZooError("distill.features tap modules of the float model, which the quantized graph no longer has",
                       "set distill.beta: 0 (output distillation works with QAT)")


# --------------------------------------------------------------------------------------------
# Public entry points.


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``key.path=value`` into its key path and the value read as YAML (``1e-4`` -> float)."""
    import yaml

    if "=" not in text:
        raise ZooError(f"--set {text!r} is not key.path=value", "write e.g. --set optimizer.lr=1e-4")
    key, raw = text.split("=", 1)
    keys = key.strip().split(".")
    if not all(keys):
        raise ZooError(f"--set {text!r} has an empty key", "write e.g. --set train.iterations=100")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as err:
        raise ZooError(f"--set {text!r}: the value is not valid YAML ({str(err).splitlines()[0]})",
                       "quote strings, write lists as [a, b]") from err
    return keys, value


def apply_overrides(raw: dict, overrides: typing.Iterable[str]) -> dict:
    """Apply ``key.path=value`` overrides to a YAML mapping in place (creating sections); returns it."""
    for text in overrides:
        keys, value = parse_override(text)
        node = raw
        for depth, key in enumerate(keys[:-1]):
            child = node.get(key)
            if child is None:
                child = node[key] = {}
            elif not isinstance(child, dict):
                raise ZooError(f"--set {text!r}: {'.'.join(keys[:depth + 1])} is not a section", _FIX)
            node = child
        node[keys[-1]] = value
    return raw


def config_from_dict(raw: dict, overrides: typing.Iterable[str] = ()) -> ExperimentConfig:
    """Build and check an :class:`ExperimentConfig` from YAML data (deep-copied) plus overrides."""
    import copy

    raw = apply_overrides(copy.deepcopy(raw) if raw is not None else {}, overrides)
    return validate(_build_dataclass(ExperimentConfig, raw, ""))


def _merge_sections(base: dict, child: dict) -> dict:
    """Deep-merge ``child`` over ``base``: mappings merge key by key, anything else replaces."""
    merged = dict(base)
    for key, value in child.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge_sections(merged[key], value)
        else:
            merged[key] = value
    return merged


def _read_yaml_mapping(path: Path, chain: tuple[Path, ...] = ()) -> dict:
    """Read one config file and, through ``extends: other.yaml``, the files it builds on.

    ``extends`` is resolved relative to the file that names it; the child's sections are deep-merged
    over its base's. ``name`` and ``description`` are never inherited (a run is named after the
    file that describes it).
    """
    import yaml

    if not path.is_file():
        if chain:
            raise ZooError(f"config {chain[-1]} extends {path}, which is not found",
                           "write extends: as a path relative to the config that names it")
        raise ZooError(f"config {path} not found", "pass the path of a YAML file (see configs/)")
    resolved = path.resolve()
    if resolved in chain:
        cycle = " -> ".join(str(p.name) for p in (*chain, resolved))
        raise ZooError(f"config {chain[0]}: its extends: chain is a cycle ({cycle})", "break the cycle")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ZooError(f"config {path} is not valid YAML ({' '.join(str(err).split())[:200]})",
                       "fix the syntax at the line it names") from err
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ZooError(f"config {path} must be a YAML mapping, got a {type(raw).__name__}", _FIX)
    raw.setdefault("name", path.stem)
    base_name = raw.pop("extends", None)
    if base_name is None:
        return raw
    if not isinstance(base_name, str) or not base_name.strip():
        raise ZooError(f"config {path}: extends must be the path of another YAML config, "
                       f"got {base_name!r}", "write e.g. extends: idsanet_x2_long_cpu.yaml")
    base = _read_yaml_mapping((path.parent / base_name).expanduser(), (*chain, resolved))
    base.pop("name", None)
    base.pop("description", None)
    return _merge_sections(base, raw)


def load_config(path: str | Path, overrides: typing.Iterable[str] = ()) -> ExperimentConfig:
    """Read a YAML experiment config, apply ``--set`` overrides, check it strictly.

    A config may start with ``extends: base.yaml`` (relative to its own folder) and then hold only
    what differs: sections are deep-merged over the base's, lists and values replace.

    Raises :class:`ZooError` for a missing or unreadable file, invalid YAML, an unknown key, a
    wrong type, an ``extends`` cycle or inconsistent values (the message names the key path).
    """
    raw = _read_yaml_mapping(Path(path).expanduser())
    return config_from_dict(raw, overrides)
