"""Training checkpoints: what one holds, how it is written atomically, and which one a resume reads.

Layout inside a run folder::

    OUT/checkpoints/iter_NNNNNNNN/{weights,ema}.safetensors + state.pt
    OUT/checkpoints/latest.json  which checkpoint --resume continues from

A checkpoint is written into a temporary folder, renamed into place, and only then named in
``latest.json`` (atomically): a failed save (disk full) leaves the previous checkpoint valid.
``state.pt`` holds only tensors, dicts, lists and numbers (RNG states included, see
:func:`rng_state`) and is read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from torch import nn

from zoo.errors import ZooError
from zoo.train.ema import EMA

CHECKPOINTS = "checkpoints"
LATEST = "latest.json"
STATE_FILE = "state.pt"
WEIGHTS_FILE = "weights.safetensors"
EMA_FILE = "ema.safetensors"
#: Version of the checkpoint layout written here (checked on resume).
CHECKPOINT_FORMAT = 1


def layout_digest(module: nn.Module) -> str:
    """A short hash of the parameter names and shapes: two models with the same digest share a layout."""
    text = ";".join(f"{key}:{tuple(value.shape)}" for key, value in module.state_dict().items())
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def rng_state() -> dict:
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


def set_rng_state(state: dict) -> None:
    """Restore the global RNG states saved by :func:`rng_state` (CUDA only with the same GPU count)."""
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


#: Entries of ``state.pt`` that a resume reads, and their types (see ``_Run.training_state``).
STATE_FIELDS = {"iteration": int, "model": str, "layout": str, "optimizer": dict, "objective": dict, "rng": dict,
                "sampler": dict, "config": dict}
#: The fix of every damaged-checkpoint error (state, pointer or weights file).
INTACT_CHECKPOINT_FIX = ("resume from an intact checkpoint (point latest.json at an older one, or pass --resume "
                         "OUT/checkpoints/iter_N)")


def read_state(path: Path) -> dict:
    """The training state in ``path``, loaded safely (tensors, dicts, lists and numbers only).

    :class:`ZooError` when the file cannot be read (empty, truncated, corrupt, holding objects
    other than tensors and numbers), was written by another checkpoint format, or lacks an entry
    of :data:`STATE_FIELDS` (a ``state.pt`` that is not a zoo training checkpoint)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        reason = "it is empty" if path.is_file() and path.stat().st_size == 0 else \
            (str(err).strip() or type(err).__name__).splitlines()[0][:200]
        raise ZooError(f"training state {path} cannot be read safely: it is truncated, corrupt or holds more than "
                       f"tensors and numbers ({reason})", INTACT_CHECKPOINT_FIX) from err
    if not isinstance(state, dict):
        raise ZooError(f"training state {path} holds a {type(state).__name__}, not a zoo training checkpoint",
                       INTACT_CHECKPOINT_FIX)
    if state.get("format") != CHECKPOINT_FORMAT:
        raise ZooError(f"{path.parent} was written by another version of the trainer "
                       f"(checkpoint format {state.get('format')!r}, this one reads {CHECKPOINT_FORMAT})",
                       "start a new run (--out NEW_FOLDER)")
    damaged = [key for key, kind in STATE_FIELDS.items()
               if not isinstance(state.get(key), kind) or isinstance(state.get(key), bool)]
    if damaged:
        raise ZooError(f"training state {path} lacks {', '.join(damaged)} (or holds something else there): it is "
                       "not a complete zoo training checkpoint", INTACT_CHECKPOINT_FIX)
    return state


def format_config_change(old: dict, new: dict, prefix: str = "") -> list[str]:
    """``key.path: old -> new`` for each setting that differs between two config dicts."""
    changes = []
    for key in sorted(set(old) | set(new)):
        path = f"{prefix}{key}"
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changes += format_config_change(a, b, path + ".")
        elif a != b:
            changes.append(f"{path}: {a!r} -> {b!r}")
    return changes


def checkpoint_dir_name(iteration: int) -> str:
    """Folder name of the checkpoint after ``iteration`` steps (zero-padded so names sort by iteration)."""
    return f"iter_{iteration:08d}"


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    """The checkpoint folder ``OUT/checkpoints/latest.json`` names, or None when there is none."""
    pointer = Path(out_dir) / CHECKPOINTS / LATEST
    if not pointer.is_file():
        return None
    fix = 'point it at an intact checkpoint folder ({"path": "iter_NNNNNNNN"}) or delete it'
    try:
        name = json.loads(pointer.read_text(encoding="utf-8"))["path"]
    except (ValueError, KeyError, TypeError, IndexError) as err:  # not JSON, not an object, no path
        raise ZooError(f"{pointer} is damaged", fix) from err
    # A folder name beside latest.json, as save_checkpoint writes it; never a path out of checkpoints/.
    if not isinstance(name, str) or not name or Path(name).name != name or name in (".", ".."):
        raise ZooError(f"{pointer} is damaged: its path {name!r} is not a checkpoint folder name", fix)
    folder = pointer.parent / name
    if not (folder / STATE_FILE).is_file():
        raise ZooError(f"{pointer} names {folder}, which holds no {STATE_FILE}",
                       "restore the folder or delete latest.json")
    return folder


def save_checkpoint(out_dir: Path, iteration: int, model: nn.Module, ema: EMA | None, state: dict,
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


def resume_source(out_dir: Path, resume: bool | str | Path) -> Path | None:
    """The checkpoint folder to resume from (None for a fresh run, which needs an unused folder)."""
    if not resume:
        if latest_checkpoint(out_dir) is not None:
            raise ZooError(f"{out_dir} already holds a training run",
                           "pass --resume to continue it, or --out NEW_FOLDER")
        return None
    source = out_dir if resume is True else Path(resume)
    if source.is_file():  # --resume OUT/checkpoints/iter_N/state.pt: its checkpoint folder
        if source.name != STATE_FILE:
            raise ZooError(f"--resume {source}: a file, not a run or checkpoint folder",
                           f"pass the run folder (--resume with --out OUT) or a checkpoint folder "
                           f"OUT/{CHECKPOINTS}/iter_N")
        source = source.parent
    folder = source if (source / STATE_FILE).is_file() else latest_checkpoint(source)
    if folder is None:
        raise ZooError(f"--resume: no checkpoint in {source / CHECKPOINTS}", "run without --resume to start afresh")
    return folder
