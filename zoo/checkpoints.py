"""Safe checkpoint reading, strict loading and safetensors writing.

* :func:`read_state_dict` reads ``.safetensors`` files, or PyTorch pickles (``.pth``, ``.pt``,
  ``.ckpt``, ``.bin``) with ``torch.load(weights_only=True)`` only: a checkpoint that would need
  arbitrary code to unpickle is refused, never executed. It unwraps the containers official
  training code saves (BasicSR ``{'params': sd}`` / ``{'params_ema': sd}``, MHNet
  ``{'state_dict': sd, 'epoch', 'optimizer'}``, ``{'model': sd}``) and strips the ``module.``
  prefix DataParallel adds.
* :func:`load_weights` matches keys and shapes strictly and explains a mismatch in one line,
  naming the registered model the checkpoint is really for when its layout matches one. Keys an
  official checkpoint holds for layers the forward never uses can be skipped by pattern
  (``ignore=``, the card's ``checkpoint_ignore``), with a one-line warning.
* :func:`save_weights` writes safetensors atomically.
"""

from __future__ import annotations

import pickle
import re
import struct
from fnmatch import fnmatchcase
import warnings
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn

from zoo.atomic import atomic_path
from zoo.errors import ZooError

#: Suffixes read with ``torch.load(weights_only=True)``.
PICKLE_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")
#: Container keys that hold the state dict, in order of preference.
CONTAINER_KEYS = ("params", "params_ema", "state_dict", "model", "model_state_dict")
_DATA_PARALLEL_PREFIX = "module."
_LISTED_KEYS = 3  # how many offending keys of each kind an error message names

_CONVERT_FIX = ("if you trust its source, load it once with torch.load(path, weights_only=False) and save the "
                "tensors with zoo.checkpoints.save_weights(state_dict, 'model.safetensors')")


def _first_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0].split(". ")[0][:200]


def _looks_like_safetensors(path: Path) -> bool:
    """True when the file starts like safetensors: 8-byte little-endian header size, then '{'."""
    with path.open("rb") as handle:
        head = handle.read(9)
    if len(head) < 9 or head[8:9] != b"{":
        return False
    (header_size,) = struct.unpack("<Q", head[:8])
    return 8 + header_size <= path.stat().st_size


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except Exception as err:  # SafetensorError and friends: the file is damaged
        raise ZooError(
            f"checkpoint {path} is not a readable safetensors file ({_first_line(err)})",
            "download or export it again; a truncated or corrupt file cannot be loaded",
        ) from err


def _read_pickle(path: Path) -> object:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        message = str(err)
        if "Weights only load failed" not in message:
            raise ZooError(f"checkpoint {path} is corrupt or truncated ({_first_line(err)})",
                           "download it again") from err
        unsafe_global = re.search(r"GLOBAL (\S+)", message)
        if unsafe_global:
            problem = (f"checkpoint {path} holds pickled Python objects besides tensors "
                       f"({unsafe_global.group(1)}); the zoo refuses to unpickle arbitrary code")
        else:
            detail = re.search(r"WeightsUnpickler error:\s*(.+)", message)
            problem = (f"checkpoint {path} is corrupt, or needs pickle features the safe loader "
                       f"(weights_only=True) refuses ({detail.group(1).strip()[:120] if detail else 'unreadable'})")
        raise ZooError(problem, _CONVERT_FIX) from err
    except Exception as err:  # RuntimeError (bad zip), EOFError, KeyError (garbage magic) ...
        raise ZooError(f"checkpoint {path} is corrupt or truncated ({_first_line(err)})",
                       "download it again") from err


def _is_state_dict(obj: object) -> bool:
    return (isinstance(obj, Mapping) and len(obj) > 0
            and all(isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in obj.items()))


def unwrap_state_dict(obj: object, *, prefer_ema: bool = False, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Return the ``name -> tensor`` state dict inside a checkpoint container.

    Accepts a bare state dict or containers nested up to three deep under the keys
    :data:`CONTAINER_KEYS`; ``params`` wins over ``params_ema`` unless ``prefer_ema`` (falling back
    to the other when only one exists). A ``module.`` prefix carried by every key is stripped.
    Raises :class:`ZooError` when no state dict is found. ``source`` names the file in messages.
    """
    preference = ("params_ema", "params") if prefer_ema else ("params", "params_ema")
    order = preference + tuple(key for key in CONTAINER_KEYS if key not in preference)
    for _ in range(4):
        if _is_state_dict(obj):
            break
        if not isinstance(obj, Mapping):
            raise ZooError(f"{source} holds a {type(obj).__name__}, not a state dict of tensors",
                           "pass the file torch.save(model.state_dict()) or save_weights() wrote")
        inner = next((obj[key] for key in order if key in obj and isinstance(obj[key], Mapping)), None)
        if inner is None:
            keys = ", ".join(map(str, list(obj)[:8]))
            raise ZooError(f"{source} has no state dict (top-level keys: {keys or 'none'})",
                           f"expected tensors, or one of the containers {', '.join(CONTAINER_KEYS)}")
        obj = inner
    else:
        raise ZooError(f"{source} nests containers too deeply to find its state dict",
                       "save the model's state_dict() directly")
    state_dict = dict(obj)
    if all(key.startswith(_DATA_PARALLEL_PREFIX) for key in state_dict):
        state_dict = {key[len(_DATA_PARALLEL_PREFIX):]: value for key, value in state_dict.items()}
    return state_dict


def read_state_dict(path: str | Path, *, prefer_ema: bool = False) -> dict[str, torch.Tensor]:
    """Read the state dict (CPU tensors) of a checkpoint file, safely.

    ``.safetensors`` is read with safetensors; ``.pth``/``.pt``/``.ckpt``/``.bin`` with
    ``torch.load(map_location="cpu", weights_only=True)``; other suffixes by sniffing the format.
    Containers are unwrapped as in :func:`unwrap_state_dict`. Raises :class:`ZooError` for a
    missing, truncated or corrupt file, or a pickle that would run arbitrary code.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "not found"
        raise ZooError(f"checkpoint {path} {what}",
                       "check the path (official weights must be downloaded first; `zoo info MODEL` says where)")
    suffix = path.suffix.lower()
    if suffix == ".safetensors" or (suffix not in PICKLE_SUFFIXES and _looks_like_safetensors(path)):
        obj: object = _read_safetensors(path)
    else:
        obj = _read_pickle(path)
    return unwrap_state_dict(obj, prefer_ema=prefer_ema, source=f"checkpoint {path}")


def _layout(state_dict: Mapping[str, torch.Tensor]) -> frozenset[tuple[str, tuple[int, ...]]]:
    return frozenset((key, tuple(value.shape)) for key, value in state_dict.items())


@lru_cache(maxsize=None)
def _registered_layout(name: str) -> frozenset[tuple[str, tuple[int, ...]]] | None:
    """Keys and shapes of registered model ``name``, built on the meta device (no memory, no init cost)."""
    from zoo.registry import get_card

    try:
        with torch.device("meta"):
            model = get_card(name).builder()
        return _layout(model.state_dict())
    except Exception:  # a builder that cannot run on meta is simply not a candidate
        return None


def _ignored_keys(state_dict: Mapping[str, torch.Tensor], ignore: tuple[str, ...], model_keys) -> list[str]:
    """Keys of ``state_dict`` matching an fnmatch pattern of ``ignore`` that the model does not have."""
    return [key for key in state_dict
            if key not in model_keys and any(fnmatchcase(key, pattern) for pattern in ignore)]


def models_matching(state_dict: Mapping[str, torch.Tensor]) -> list[str]:
    """Names of the registered (trainable) models whose keys and shapes equal ``state_dict``'s,
    after dropping the keys each card's ``checkpoint_ignore`` patterns skip on load."""
    from zoo.registry import list_models

    try:
        cards = list_models()
    except Exception:  # a broken family module must not hide the original loading error
        return []
    matches = []
    for card in cards:
        registered = None if card.zero_shot else _registered_layout(card.name)
        if registered is None:
            continue
        ignore = tuple(getattr(card, "checkpoint_ignore", ()) or ())
        model_keys = {key for key, _ in registered}
        skipped = set(_ignored_keys(state_dict, ignore, model_keys))
        if _layout({k: v for k, v in state_dict.items() if k not in skipped}) == registered:
            matches.append(card.name)
    return matches


def _mismatch_report(model: nn.Module, state_dict: Mapping[str, torch.Tensor]):
    expected = model.state_dict()
    missing = [key for key in expected if key not in state_dict]
    unexpected = [key for key in state_dict if key not in expected]
    mismatched = [(key, tuple(state_dict[key].shape), tuple(expected[key].shape))
                  for key in expected if key in state_dict and state_dict[key].shape != expected[key].shape]
    return missing, unexpected, mismatched


def _reinit_keys(model: nn.Module, patterns: tuple[str, ...], model_name: str) -> set[str]:
    """The model keys matching an fnmatch pattern of ``patterns``; a pattern matching none is an error."""
    keys = list(model.state_dict())
    matches = {pattern: {key for key in keys if fnmatchcase(key, pattern)} for pattern in patterns}
    unmatched = [pattern for pattern, matched in matches.items() if not matched]
    if unmatched:
        raise ZooError(f"reinit pattern(s) {', '.join(map(repr, unmatched))} match no key of {model_name} "
                       f"(its keys start like: {_listing(keys)})",
                       "write patterns of the model's own key names, e.g. 'tail.*'")
    return set().union(*matches.values())


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:_LISTED_KEYS])
    return shown + (", ..." if len(items) > _LISTED_KEYS else "")


def load_weights(model: nn.Module, path_or_state_dict, *, strict: bool = True, prefer_ema: bool = False,
                 ignore: tuple[str, ...] = (), reinit: tuple[str, ...] = ()) -> None:
    """Load a checkpoint into ``model`` in place (tensors are copied into its parameters).

    ``path_or_state_dict`` is a file path (read with :func:`read_state_dict`) or an in-memory
    state dict / container. ``ignore``: fnmatch patterns (e.g. ``"stage1.ending.*"``) of
    checkpoint keys to skip, for layers an official checkpoint holds but the forward never uses;
    a key is skipped only when the model has no tensor of that name, and a warning names how many
    keys (and parameters) were skipped. With ``strict`` every other key and shape must match;
    otherwise a :class:`ZooError` says how many keys are missing, unexpected and shape-mismatched,
    names the first few of each (checkpoint vs model shape), and names the registered model the
    checkpoint fits exactly, if any. With ``strict=False`` only the matching tensors are loaded (a
    warning counts the rest); a checkpoint sharing no tensor with the model still raises.
    ``reinit``: fnmatch patterns of the *model's* keys (e.g. ``"tail.*"``) that keep their current
    (fresh) values whatever the checkpoint holds for them, for fine-tuning a body with a new head
    (another SR scale); each pattern must match a model key, and every other key loads as above.
    """
    if isinstance(path_or_state_dict, (str, Path)):
        source = f"checkpoint {path_or_state_dict}"
        state_dict = read_state_dict(path_or_state_dict, prefer_ema=prefer_ema)
    else:
        source = "state dict"
        state_dict = unwrap_state_dict(path_or_state_dict, prefer_ema=prefer_ema, source=source)

    if isinstance(ignore, str):
        ignore = (ignore,)  # one pattern given bare: not a sequence of its characters
    if isinstance(reinit, str):
        reinit = (reinit,)
    skipped = _ignored_keys(state_dict, tuple(ignore), model.state_dict().keys()) if ignore else []
    checkpoint = state_dict  # as read: models_matching applies each card's own ignore patterns
    if skipped:
        dropped = set(skipped)
        state_dict = {key: value for key, value in state_dict.items() if key not in dropped}
        count = sum(checkpoint[key].numel() for key in skipped)
        warnings.warn(f"skipped {len(skipped)} keys ({count:,} parameters) of {source} that "
                      f"{type(model).__name__} does not use: {_listing(skipped)}", stacklevel=2)

    model_name = type(model).__name__
    fresh = _reinit_keys(model, tuple(reinit), model_name) if reinit else set()
    if fresh:
        state_dict = {key: value for key, value in state_dict.items() if key not in fresh}
        warnings.warn(f"kept the fresh initialisation of {len(fresh)} keys of {model_name} "
                      f"(reinit): {_listing(sorted(fresh))}", stacklevel=2)

    missing, unexpected, mismatched = _mismatch_report(model, state_dict)
    missing = [key for key in missing if key not in fresh]
    if not (missing or unexpected or mismatched):
        model.load_state_dict(state_dict, strict=not fresh)
        return

    details = []
    if missing:
        details.append(f"missing: {_listing(missing)}")
    if unexpected:
        details.append(f"unexpected: {_listing(unexpected)}")
    if mismatched:
        shapes = [f"{key} checkpoint {list(got)} vs model {list(want)}" for key, got, want in mismatched]
        details.append(f"shape mismatch: {_listing(shapes)}")
    problem = (f"{source} does not fit {model_name}: {len(missing)} missing, {len(unexpected)} unexpected, "
               f"{len(mismatched)} shape-mismatched keys ({'; '.join(details)})")

    if strict:
        matches = models_matching(checkpoint)
        if len(matches) == 1:
            fix = f"this checkpoint is for {matches[0]}; use that model"
        elif matches:
            fix = f"this checkpoint is for {' or '.join(matches)}; use one of those models"
        else:
            fix = "pass a checkpoint of this model's configuration (or strict=False to load only the matching tensors)"
        raise ZooError(problem, fix)

    bad = set(unexpected) | {key for key, _, _ in mismatched}
    usable = {key: value for key, value in state_dict.items() if key not in bad}
    if not usable:
        raise ZooError(problem, "no tensor of the checkpoint fits this model; pass a checkpoint made for it")
    warnings.warn(f"loaded {len(usable)} of {len(model.state_dict())} tensors; {problem}", stacklevel=2)
    model.load_state_dict(usable, strict=False)


def check_fits_float16(state_dict: Mapping[str, torch.Tensor], source: str, fix: str) -> None:
    """Raise :class:`ZooError` naming the first floating-point tensor of ``state_dict`` that float16
    cannot hold (|w| above 65504, or NaN); ``source`` names the file in the message, ``fix`` the way out."""
    half_max = torch.finfo(torch.float16).max
    for key, value in state_dict.items():
        if value.is_floating_point() and value.numel() and not bool(value.float().abs().max() <= half_max):
            raise ZooError(f"weight {key} of {source} exceeds the float16 range (|w| > {half_max:g})", fix)


def save_weights(state_dict_or_model, path: str | Path, *, metadata: dict[str, str] | None = None) -> Path:
    """Write a model's weights (or a state dict / container) as safetensors, atomically.

    Tensors are detached, moved to the CPU and made contiguous; tensors sharing storage (tied
    weights) are cloned because safetensors refuses shared memory. ``metadata`` (str -> str) is
    stored in the file header (read it back with :func:`read_metadata`). ``path`` must end in
    ``.safetensors``. Returns the path written. A reader never sees a partial file.
    """
    path = Path(path).expanduser()
    if path.suffix.lower() != ".safetensors":
        raise ZooError(f"save_weights writes safetensors, but {path} does not end in .safetensors",
                       "name the file *.safetensors")
    if metadata is not None and not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise TypeError("metadata must map str to str (json.dumps other values first)")
    if isinstance(state_dict_or_model, nn.Module):
        state_dict = state_dict_or_model.state_dict()
    else:
        state_dict = unwrap_state_dict(state_dict_or_model, source="state dict to save")

    tensors: dict[str, torch.Tensor] = {}
    seen_storages: set[int] = set()
    for key, value in state_dict.items():
        if value.device.type == "meta":
            raise ZooError(f"tensor {key} is on the meta device and holds no values",
                           "build the model on a real device before saving it")
        tensor = value.detach().to("cpu").contiguous()
        storage = tensor.untyped_storage().data_ptr()
        if storage in seen_storages and tensor.numel() > 0:
            tensor = tensor.clone()
        seen_storages.add(tensor.untyped_storage().data_ptr())
        tensors[key] = tensor

    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return path


def read_metadata(path: str | Path) -> dict[str, str]:
    """The str -> str metadata of a safetensors file header ({} when it has none)."""
    from safetensors import safe_open

    path = Path(path).expanduser()
    if not path.is_file():
        raise ZooError(f"checkpoint {path} not found", "check the path")
    try:
        with safe_open(str(path), framework="pt") as handle:
            return dict(handle.metadata() or {})
    except Exception as err:
        raise ZooError(f"checkpoint {path} is not a readable safetensors file ({_first_line(err)})",
                       "download or export it again") from err

