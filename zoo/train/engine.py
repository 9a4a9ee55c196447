"""The training loop behind ``zoo train`` and ``zoo distill``.

One call to :func:`train` runs an :class:`~zoo.train.config.ExperimentConfig` into an output
folder::

    OUT/config.json              the resolved config
    OUT/log.csv                  iteration, lr, loss terms, grad norm, it/s, patches/s, val PSNR
    OUT/checkpoints/iter_NNNNNNNN/{weights,ema}.safetensors + state.pt
    OUT/checkpoints/latest.json  which checkpoint --resume continues from
    OUT/best.safetensors         weights with the best validation PSNR (+ best.json)
    OUT/final.safetensors        final weights (+ final_ema.safetensors with EMA)

Reproducibility: the patch stream and the learning rate are pure functions of the iteration
(see :mod:`zoo.train.data`), and a checkpoint holds the weights, EMA weights, optimizer and
loss-scaler state and the RNG states, so ``--resume`` continues bit for bit the run that was
interrupted. A checkpoint is written into a temporary folder, renamed into place, and only then
named in ``latest.json`` (atomically): a failed save (disk full) leaves the previous checkpoint
valid. ``state.pt`` holds only tensors, dicts, lists and numbers and is read with
``torch.load(weights_only=True)``.

Data-parallel training: launched by ``torchrun`` (RANK / WORLD_SIZE / LOCAL_RANK in the
environment) the loop joins a process group (gloo on CPU, nccl on CUDA), wraps the model in
DistributedDataParallel and gives each process its share of every global batch; only rank 0
writes files.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import inspect
import json
import math
import os
import random
import shutil
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from zoo.errors import ZooError
from zoo.train.config import ExperimentConfig, ModelSpec, ScheduleConfig
from zoo.train.losses import StageLoss

CHECKPOINTS = "checkpoints"
LATEST = "latest.json"
STATE_FILE = "state.pt"
WEIGHTS_FILE = "weights.safetensors"
EMA_FILE = "ema.safetensors"
#: Version of the checkpoint layout written here (checked on resume).
CHECKPOINT_FORMAT = 1


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
    #: (iteration, loss) of every step this call ran; loss averaged over processes.
    losses: list[tuple[int, float]] = field(default_factory=list)
    #: (iteration, mean validation PSNR in dB) of every validation this call ran.
    validations: list[tuple[int, float]] = field(default_factory=list)
    #: Training speed over this call's steps after the first (data + forward + backward + update).
    iterations_per_second: float = 0.0
    patches_per_second: float = 0.0


# --------------------------------------------------------------------------------------------
# Models


#: Families whose class is known without loading the registry (the others are found through it).
_FAMILY_CLASSES = {"hinet": "zoo.models.hinet:HINet", "hinet-lite": "zoo.models.hinet_lite:HINetLite"}


def _family_class(family: str):
    """The nn.Module class of a model family: ``package.module:Class`` or a registered family name."""
    import importlib

    if ":" in family:
        module_name, _, class_name = family.partition(":")
        if not module_name.startswith("zoo."):
            raise ZooError(f"model.family {family!r} is outside the zoo package", "use zoo.models.MODULE:CLASS")
        try:
            return getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError) as err:
            raise ZooError(f"model.family {family!r} cannot be imported ({err})",
                           "check the module and class name") from err
    if family in _FAMILY_CLASSES:
        return _family_class(_FAMILY_CLASSES[family])
    from zoo.registry import list_models

    cards = [card for card in list_models() if card.family == family and not card.zero_shot]
    if not cards:
        families = sorted({card.family for card in list_models() if not card.zero_shot})
        raise ZooError(f"unknown model family {family!r}",
                       f"use one of {', '.join(families)} or zoo.models.MODULE:CLASS")
    with torch.device("meta"):  # only the class is wanted: build without allocating memory
        return type(cards[0].builder())


def build_model(spec: ModelSpec, what: str = "model") -> tuple[nn.Module, int]:
    """A freshly initialised network from ``spec`` (plus ``spec.weights`` if set) and its size multiple.

    ``spec.weights`` may be a checkpoint path, or ``shipped`` for the weights the zoo ships.
    Initialisation draws from torch's global RNG (seed it first for a reproducible start).
    """
    from zoo.checkpoints import load_weights

    if spec.name:
        from zoo.registry import get_card

        card = get_card(spec.name)
        if card.zero_shot:
            raise ZooError(f"{spec.name} fits each image from scratch and cannot be trained", "pick a trainable model")
        model = card.builder()
        size_multiple = card.size_multiple
        weights = spec.weights
        if weights == "shipped":
            if not card.has_weights:
                raise ZooError(f"{what}.weights is 'shipped' but the zoo ships no weights for {spec.name}",
                               "pass a checkpoint path")
            weights = card.weights_path
    else:
        cls = _family_class(spec.family)
        try:
            model = cls(**spec.kwargs)
        except TypeError as err:
            raise ZooError(f"{what}.kwargs do not fit {cls.__name__}: {err}",
                           f"use the arguments of {cls.__name__}{inspect.signature(cls)}") from err
        size_multiple = int(getattr(model, "size_multiple", 1))
        weights = None if spec.weights == "shipped" else spec.weights
        if spec.weights == "shipped":
            raise ZooError(f"{what}.weights 'shipped' needs {what}.name", "pass a checkpoint path")
    if weights:
        load_weights(model, weights)
    return model, size_multiple


def _supports_stages(model: nn.Module) -> bool:
    return "return_stages" in inspect.signature(model.forward).parameters


def _layout_digest(module: nn.Module) -> str:
    text = ";".join(f"{key}:{tuple(value.shape)}" for key, value in module.state_dict().items())
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# --------------------------------------------------------------------------------------------
# Objectives: what the loop minimises. Distillation (zoo.train.distill) extends TaskObjective.


class TaskObjective:
    """Pixel loss of the model's (stage) outputs against the ground truth."""

    def __init__(self, config: ExperimentConfig):
        loss = config.loss
        self.loss = StageLoss(loss.type, loss.stage_weights, loss.charbonnier_eps)

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

    def __call__(self, model: nn.Module, degraded: torch.Tensor, target: torch.Tensor):
        """(scalar loss, {term name: detached tensor}) for one batch."""
        return self.loss(self.forward_model(model, degraded), target)


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


@dataclass
class _Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed(device_request: str) -> _Dist:
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return _Dist()
    import torch.distributed as dist

    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    owns = False
    if not dist.is_initialized():
        use_cuda = device_request != "cpu" and torch.cuda.is_available()
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", init_method="env://")
        owns = True
    return _Dist(dist.get_rank(), dist.get_world_size(), local_rank, owns)


def _pick_device(request: str, dist_state: _Dist, say) -> torch.device:
    if request == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        if request != "auto":
            say(f"train.device is {request} but CUDA is not available: training on the CPU instead")
        return torch.device("cpu")
    if dist_state.active:
        return torch.device("cuda", dist_state.local_rank)
    return torch.device(request if request != "auto" else "cuda")


def _rng_state() -> dict:
    """Global RNG states as tensors, lists and numbers only (readable with weights_only=True)."""
    name, keys, position, has_gauss, cached = np.random.get_state()
    version, mt_state, gauss_next = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(position),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": int(version), "state": torch.tensor(mt_state, dtype=torch.int64),
                   "gauss_next": gauss_next},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    numpy_state = state["numpy"]
    np.random.set_state(("MT19937", numpy_state["keys"].numpy().astype(np.uint32), numpy_state["pos"],
                         numpy_state["has_gauss"], numpy_state["cached_gaussian"]))
    python_state = state["python"]
    random.setstate((python_state["version"], tuple(int(v) for v in python_state["state"].tolist()),
                     python_state["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _write_state(state: dict, path: Path) -> None:
    """torch.save of the training state (separate so tests can simulate a full disk)."""
    torch.save(state, path)


def _read_state(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ZooError(f"training state {path} cannot be read safely ({str(err).splitlines()[0][:200]})",
                       "resume from an intact checkpoint (point latest.json at an older one)") from err


class _CsvLog:
    """Append-only CSV of the logged rows; on resume keeps only the rows up to the resumed iteration."""

    def __init__(self, path: Path, resume_at: int | None):
        self.path = path
        self.fields: list[str] | None = None
        if resume_at is not None and path.is_file():
            with path.open(newline="") as handle:
                reader = csv.DictReader(handle)
                rows = [row for row in reader if int(row["iteration"]) <= resume_at]
                self.fields = reader.fieldnames
            self._rewrite(rows)
        elif path.exists():
            path.unlink()

    def _rewrite(self, rows) -> None:
        from zoo.atomic import atomic_path

        with atomic_path(self.path) as tmp, tmp.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.fields or ["iteration"])
            writer.writeheader()
            writer.writerows(rows)

    def write(self, row: dict) -> None:
        if self.fields is None:
            self.fields = list(row)
        if any(key not in self.fields for key in row):  # a new column (e.g. val_psnr): rewrite with it
            rows = []
            if self.path.exists():
                with self.path.open(newline="") as handle:
                    rows = list(csv.DictReader(handle))
            self.fields += [key for key in row if key not in self.fields]
            self._rewrite(rows)
        new_file = not self.path.exists()
        with self.path.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.fields)
            if new_file:
                writer.writeheader()
            writer.writerow({key: row.get(key, "") for key in self.fields})


def _tensorboard(out_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    return SummaryWriter(str(out_dir / "tensorboard"))


def _format_config_change(old: dict, new: dict, prefix: str = "") -> list[str]:
    changes = []
    for key in sorted(set(old) | set(new)):
        path = f"{prefix}{key}"
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changes += _format_config_change(a, b, path + ".")
        elif a != b:
            changes.append(f"{path}: {a!r} -> {b!r}")
    return changes


# --------------------------------------------------------------------------------------------
# Checkpoints


def checkpoint_dir_name(iteration: int) -> str:
    return f"iter_{iteration:08d}"


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    """The checkpoint folder ``OUT/checkpoints/latest.json`` names, or None when there is none."""
    pointer = Path(out_dir) / CHECKPOINTS / LATEST
    if not pointer.is_file():
        return None
    try:
        name = json.loads(pointer.read_text())["path"]
    except (ValueError, KeyError) as err:
        raise ZooError(f"{pointer} is damaged", "point it at an intact checkpoint folder or delete it") from err
    folder = pointer.parent / name
    if not (folder / STATE_FILE).is_file():
        raise ZooError(f"{pointer} names {folder}, which holds no {STATE_FILE}",
                       "restore the folder or delete latest.json")
    return folder


def _save_checkpoint(out_dir: Path, iteration: int, model: nn.Module, ema: EMA | None, state: dict,
                     metadata: dict[str, str], keep: int) -> Path:
    """Write checkpoint ``iteration`` so that a failure leaves the previous one intact; returns its folder."""
    from zoo.atomic import write_json
    from zoo.checkpoints import save_weights

    root = out_dir / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    final = root / checkpoint_dir_name(iteration)
    partial = root / f".{final.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    try:
        partial.mkdir()
        save_weights(model, partial / WEIGHTS_FILE, metadata=metadata)
        if ema is not None:
            save_weights(ema.module, partial / EMA_FILE, metadata=metadata)
        _write_state(state, partial / STATE_FILE)
        if final.exists():  # the same iteration saved again (e.g. a stop_at that is also periodic)
            stale = root / f".{final.name}.stale-{os.getpid()}"
            os.replace(final, stale)
            os.replace(partial, final)
            shutil.rmtree(stale, ignore_errors=True)
        else:
            os.replace(partial, final)
        write_json(root / LATEST, {"iteration": iteration, "path": final.name})
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    # Prune the oldest periodic checkpoints (never the one latest.json names).
    existing = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("iter_"))
    for old in existing[:-keep]:
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    return final


# --------------------------------------------------------------------------------------------
# The loop


def train(config: ExperimentConfig, out_dir: str | Path | None = None, *, resume: bool | str | Path = False,
          stop_at: int | None = None, progress: bool = True, objective=None) -> TrainResult:
    """Train ``config`` into ``out_dir`` (default ``runs/<config.name>``); returns a :class:`TrainResult`.

    ``resume``: True continues from ``OUT/checkpoints/latest.json``; a path continues from that
    checkpoint folder (or run folder). Without it, a folder that already holds checkpoints is
    refused. ``stop_at``: stop (with a checkpoint) once this many iterations are done, keeping
    the schedule of ``train.iterations`` (for pre-emptible jobs; resume later).
    ``objective``: the loss (default :class:`TaskObjective`; distillation passes its own).

    Raises :class:`ZooError` for user errors, :class:`TrainingDiverged` when the loss becomes
    NaN/inf (nothing is saved from that point on; the last checkpoint stays the latest).
    """
    out_dir = Path(out_dir) if out_dir is not None else Path("runs") / config.name
    dist_state = _init_distributed(config.train.device)
    try:
        resume_dir = _resume_source(out_dir, resume)
        run = _Run(config, out_dir, dist_state, objective)
        start = run.restore(resume_dir) if resume_dir is not None else 0
        stop = config.train.iterations if stop_at is None else min(stop_at, config.train.iterations)
        if stop <= start:
            raise ZooError(f"stop_at {stop_at} is not after the start iteration {start}", "pass a larger --stop-at")
        return run.loop(start, stop, progress, resumed=resume_dir is not None)
    finally:
        if dist_state.owns_group:
            import torch.distributed as dist

            dist.destroy_process_group()


def _resume_source(out_dir: Path, resume: bool | str | Path) -> Path | None:
    """The checkpoint folder to resume from (None for a fresh run, which needs an unused folder)."""
    if not resume:
        if latest_checkpoint(out_dir) is not None:
            raise ZooError(f"{out_dir} already holds a training run",
                           "pass --resume to continue it, or --out NEW_FOLDER")
        return None
    source = out_dir if resume is True else Path(resume)
    folder = source if (source / STATE_FILE).is_file() else latest_checkpoint(source)
    if folder is None:
        raise ZooError(f"--resume: no checkpoint in {source / CHECKPOINTS}", "run without --resume to start afresh")
    return folder


class _Window:
    """Sums of the logged values since the last log row, and the time the steps took."""

    def __init__(self):
        self.steps, self.seconds, self.sums = 0, 0.0, {}

    def add(self, seconds: float, values: dict[str, float]) -> None:
        self.steps += 1
        self.seconds += seconds
        for key, value in values.items():
            self.sums[key] = self.sums.get(key, 0.0) + value

    def means(self) -> dict[str, float]:
        return {key: value / self.steps for key, value in self.sums.items()}

    @property
    def iterations_per_second(self) -> float:
        return self.steps / self.seconds if self.seconds > 0 else 0.0


class _Run:
    """One training run: the model, its optimizer and data, and what the loop does with them."""

    def __init__(self, config: ExperimentConfig, out_dir: Path, dist_state: _Dist, objective):
        self.config, self.out_dir, self.dist = config, out_dir, dist_state
        self.tcfg, self.dcfg = config.train, config.data
        self.main = dist_state.main
        self.bar = None
        self._setup_hardware()
        self._setup_model(objective)
        self._setup_data()
        self.best_psnr: float | None = None
        self.last_checkpoint: int | None = None
        self.config_dict = config.to_dict()
        self.metadata = {"zoo_model": self.identity, "zoo_config": config.name}

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
        self.device = _pick_device(tcfg.device, self.dist, self.say)
        self.on_cuda = self.device.type == "cuda"
        if not self.on_cuda and (tcfg.amp != "none" or tcfg.channels_last):
            self.say("train.amp and train.channels_last apply on CUDA only: training on the CPU in float32")
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(tcfg.amp) if self.on_cuda else None
        self.channels_last = tcfg.channels_last and self.on_cuda

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp_dtype) if self.amp_dtype else nullcontext()

    def _setup_model(self, objective) -> None:
        config, tcfg, dcfg = self.config, self.tcfg, self.dcfg
        random.seed(tcfg.seed)
        np.random.seed(tcfg.seed % 2**32)
        torch.manual_seed(tcfg.seed)
        self.model, self.size_multiple = build_model(config.model)
        self.identity = config.model.describe()
        self.uses_degradation = bool(dcfg.sources and dcfg.degradation)
        scale = 1
        if self.uses_degradation:
            from zoo.data.degradations import parse_degradation

            scale = parse_degradation(dcfg.degradation).scale
        input_patch = dcfg.patch_size // scale
        if input_patch % self.size_multiple:
            raise ZooError(f"data.patch_size {dcfg.patch_size} gives {input_patch}-pixel inputs, not a multiple of "
                           f"{self.size_multiple} as {self.identity} needs",
                           f"use a patch size that is a multiple of {self.size_multiple * scale}")
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
        self.params = list(model.parameters()) + self.extra_params
        opt = config.optimizer
        optimizer_class = torch.optim.Adam if opt.type == "adam" else torch.optim.AdamW
        self.optimizer = optimizer_class(self.params, lr=opt.lr, betas=tuple(opt.betas), weight_decay=opt.weight_decay)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        self.train_model: nn.Module = model
        if self.dist.active:
            from torch.nn.parallel import DistributedDataParallel

            self.train_model = DistributedDataParallel(model, device_ids=[self.device.index] if self.on_cuda else None)

    def _setup_data(self) -> None:
        from zoo.train.data import (PatchBatches, _paired_source, _try_data_root, split_pool, training_pool,
                                    validation_set)

        dcfg, tcfg = self.dcfg, self.tcfg
        pool = training_pool(dcfg)
        train_images, val_images = split_pool(pool, 0 if dcfg.val_paired else dcfg.val_images, tcfg.seed)
        if dcfg.val_paired is not None:
            val_images = _paired_source(dcfg.val_paired, _try_data_root(dcfg.data_root), "data.val_paired")
        if dcfg.limit is not None:
            train_images = train_images[:dcfg.limit]
        self.pool_digest = hashlib.sha256("\n".join(i.name for i in train_images).encode()).hexdigest()[:16]
        degradation = dcfg.degradation if dcfg.sources else None
        self.batches = PatchBatches(train_images, degradation=degradation, patch_size=dcfg.patch_size,
                                    batch_size=dcfg.batch_size, iterations=tcfg.iterations, seed=tcfg.seed,
                                    flips=dcfg.flips, rotations=dcfg.rotations, rank=self.dist.rank,
                                    world_size=self.dist.world_size, cache_images=dcfg.cache_images)
        if self.batches.skipped:
            self.say(f"left out {self.batches.skipped} training images smaller than {dcfg.patch_size} pixels")
        self.validation = []
        if self.main and val_images:  # only rank 0 validates
            self.validation = validation_set(val_images, degradation=degradation, crop=dcfg.val_crop,
                                             size_multiple=self.size_multiple, seed=tcfg.seed)

    # ---- checkpoints

    def training_state(self, iteration: int) -> dict:
        """Everything but the weights needed to continue at ``iteration`` (tensors, dicts, lists, numbers)."""
        return {
            "format": CHECKPOINT_FORMAT,
            "iteration": iteration,
            "model": self.identity,
            "layout": _layout_digest(self.model),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else {},
            "objective": {name: module.state_dict() for name, module in self.extra_modules.items()},
            "rng": _rng_state(),
            "sampler": {"seed": self.tcfg.seed, "next_iteration": iteration, "global_batch": self.dcfg.batch_size,
                        "world_size": self.dist.world_size, "pool_digest": self.pool_digest},
            "best_val_psnr": self.best_psnr,
            "config": self.config_dict,
        }

    def restore(self, folder: Path) -> int:
        """Load checkpoint ``folder`` into this run; returns the iteration to continue from."""
        from zoo.checkpoints import load_weights, read_state_dict

        saved = _read_state(folder / STATE_FILE)
        if saved.get("format") != CHECKPOINT_FORMAT:
            raise ZooError(f"{folder} was written by another version of the trainer", "start a new run")
        if saved["model"] != self.identity or saved["layout"] != _layout_digest(self.model):
            raise ZooError(f"checkpoint {folder} was trained for model {saved['model']} but this config "
                           f"builds {self.identity}", "resume with the config of that run, or train into another --out")
        load_weights(self.model, read_state_dict(folder / WEIGHTS_FILE))
        if self.ema is not None:
            if not (folder / EMA_FILE).is_file():
                raise ZooError(f"checkpoint {folder} has no EMA weights but train.ema_decay is set",
                               "resume with train.ema_decay: null, or start a new run")
            load_weights(self.ema.module, read_state_dict(folder / EMA_FILE))
        for name, module in self.extra_modules.items():
            if name not in saved["objective"]:
                raise ZooError(f"checkpoint {folder} has no state for {name}", "resume with the config of that run")
            module.load_state_dict(saved["objective"][name])
        self.optimizer.load_state_dict(saved["optimizer"])
        if self.scaler is not None and saved.get("scaler"):
            self.scaler.load_state_dict(saved["scaler"])
        _set_rng_state(saved["rng"])
        start = int(saved["iteration"])
        self.best_psnr = saved.get("best_val_psnr")
        self.last_checkpoint = start
        sampler = saved["sampler"]
        if sampler["pool_digest"] != self.pool_digest or sampler["global_batch"] != self.dcfg.batch_size:
            self.say("the training images or batch size differ from the checkpoint's: the run continues, "
                     "but not bit for bit as the original would have")
        changes = _format_config_change(saved["config"], self.config_dict)
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
                _save_checkpoint(self.out_dir, iteration, self.model, self.ema, self.training_state(iteration),
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
        lr = learning_rate(self.config.schedule, self.config.optimizer.lr, self.tcfg.iterations, iteration)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        with self.autocast():
            loss, terms = self.objective(self.train_model, degraded, target)
        reduced = loss.detach().float().clone()
        if self.dist.active:
            import torch.distributed as dist

            dist.all_reduce(reduced)
            reduced /= self.dist.world_size
        loss_value = float(reduced)
        if not math.isfinite(loss_value):
            return loss_value, terms, lr  # the caller stops before anything is applied
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
        else:
            loss.backward()
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
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        if self.ema is not None:
            self.ema.update(self.model, iteration + 1)
        return loss_value, {key: float(value) for key, value in terms.items()}, lr

    def evaluated_model(self) -> nn.Module:
        """The weights that are validated and kept as best: the EMA weights when enabled."""
        return self.ema.module if self.ema is not None else self.model

    def validate(self, iteration: int) -> float:
        """Mean PSNR (dB, RGB, outputs clamped to [0, 1]) on the validation images; saves a new best."""
        from zoo.atomic import write_json
        from zoo.checkpoints import save_weights
        from zoo.metrics import psnr

        net = self.evaluated_model()
        was_training = net.training
        net.eval()
        scores = []
        with torch.no_grad():
            for item in self.validation:
                with self.autocast():
                    restored = net(item.degraded.unsqueeze(0).to(self.device))
                scores.append(psnr(restored.float().clamp(0, 1).cpu(), item.target.unsqueeze(0)))
        net.train(was_training)
        value = float(np.mean(scores))
        if self.best_psnr is None or value > self.best_psnr:
            self.best_psnr = value
            save_weights(net, self.out_dir / "best.safetensors",
                         metadata={**self.metadata, "iteration": str(iteration), "val_psnr": f"{value:.4f}"})
            write_json(self.out_dir / "best.json", {"iteration": iteration, "val_psnr": value,
                                                    "weights": "ema" if self.ema is not None else "model"})
        self.say(f"iteration {iteration}: validation PSNR {value:.2f} dB (best {self.best_psnr:.2f} dB)")
        return value

    def _diverged(self, iteration: int, loss_value: float) -> TrainingDiverged:
        kept = (f"the last good checkpoint is iteration {self.last_checkpoint} in {self.out_dir / CHECKPOINTS}"
                if self.last_checkpoint is not None else "no checkpoint was written before it")
        return TrainingDiverged(f"the loss became {loss_value} at iteration {iteration}; training stopped without "
                                f"saving this state; {kept}", "lower optimizer.lr or set train.grad_clip, then rerun"
                                + (" with --resume" if self.last_checkpoint is not None else ""))

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
            csv_log = _CsvLog(out_dir / "log.csv", start if resumed else None)
            tensorboard = _tensorboard(out_dir)
            self.say(f"training {self.identity} for {tcfg.iterations} iterations on {self.device} "
                     f"({self.dist.world_size} process{'es' if self.dist.active else ''}, batch {dcfg.batch_size}, "
                     f"patch {dcfg.patch_size}, {len(self.batches.images)} training / {len(self.validation)} "
                     f"validation images) -> {out_dir}")
            if progress:
                self.bar = tqdm(total=tcfg.iterations, initial=start, desc=f"train {self.config.name}", unit="it",
                                dynamic_ncols=True)
        losses: list[tuple[int, float]] = []
        validations: list[tuple[int, float]] = []
        window, speed = _Window(), _Window()
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
                window.add(seconds, {"loss": loss_value, **terms})
                if iteration > start or stop - start == 1:  # the first step has one-off costs (allocations)
                    speed.add(seconds, {})
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
                           "it_per_s": round(its, 4), "patches_per_s": round(its * dcfg.batch_size, 3),
                           "elapsed_s": round(time.perf_counter() - started, 2)}
                    if val_psnr is not None:
                        row["val_psnr"] = round(val_psnr, 4)
                    csv_log.write(row)
                    if tensorboard is not None:
                        for key, value in row.items():
                            if key != "iteration" and value != "":
                                tensorboard.add_scalar(key, float(value), done)
                    window = _Window()
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
        if self.main and finished:
            final = save_weights(self.model, out_dir / "final.safetensors",
                                 metadata={**self.metadata, "iteration": str(stop)})
            if self.ema is not None:
                final_ema = save_weights(self.ema.module, out_dir / "final_ema.safetensors",
                                         metadata={**self.metadata, "iteration": str(stop), "weights": "ema"})
        its = speed.iterations_per_second
        best = f"; best validation PSNR {self.best_psnr:.2f} dB" if self.best_psnr is not None else ""
        where = f"; weights {final}" if final else f"; resume with --resume ({out_dir / CHECKPOINTS})"
        self.say(f"{'finished' if finished else 'stopped'} at iteration {stop}: {its:.3f} it/s, "
                 f"{its * dcfg.batch_size:.2f} patches/s{best}{where}")
        best_path = out_dir / "best.safetensors"
        return TrainResult(out_dir=out_dir, iteration=stop, finished=finished, final_weights=final,
                           final_ema_weights=final_ema, best_weights=best_path if best_path.is_file() else None,
                           best_val_psnr=self.best_psnr, losses=losses, validations=validations,
                           iterations_per_second=its, patches_per_second=its * dcfg.batch_size)
