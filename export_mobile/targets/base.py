"""The interface every export target implements (one module per target in this package).

A target turns a float or PT2E-quantized PyTorch model with a FIXED input shape into one artifact
file/folder and can run that artifact on the desktop. It knows nothing about particular models.

The checks every target makes the same way live here once: which toolchain packages are missing
(:func:`missing_packages_reason`), whether a request fits the target (:func:`check_request`:
precision, availability, a (1, C, H, W) example, the options), whether a runner can be made
(:func:`require_runnable`) and whether a batch fits the artifact's fixed shape
(:func:`fixed_shape_batch`).

Each target declares the ``ExportRequest.options`` it reads (``zoo export --option KEY=VALUE``)
in one place, its ``accepted_options`` attribute (name -> :class:`TargetOption`);
:func:`check_options` refuses any other name, and a value the declaration rules out, before
anything is built.
"""

from __future__ import annotations

import difflib
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np
import torch

from zoo.errors import ZooError

#: How to get the optional export toolchains (executorch, coremltools, litert, onnx).
MOBILE_EXTRAS = "pip install 'mobile-restoration-zoo[mobile]'"
#: What to do with a batch that does not fit an artifact's fixed input shape.
TILE_HINT = "run it tiled at the exported tile size (zoo run tiles automatically)"


@dataclass
class ExportRequest:
    """What to export: ``model`` maps (1,3,H,W) float32 in [0,1] to the restored batch.

    ``quantized`` is the PT2E-converted model (``torch.fx.GraphModule`` from quantize/) when
    ``precision == "int8"``; targets that quantize on their own (e.g. Core ML weight-only int8)
    may ignore it. ``example`` is the fixed-shape example input (1,3,tile,tile).
    """

    model: torch.nn.Module
    example: torch.Tensor
    precision: str  # "fp32" | "fp16" | "int8"
    out_path: Path
    quantized: torch.nn.Module | None = None
    options: dict = field(default_factory=dict)


@dataclass
class ExportResult:
    """Facts about a built artifact, copied into its manifest and the matrix."""

    path: Path
    delegate: str | None = None          # e.g. "XnnpackBackend", "CoreMLBackend", None for plain
    partitions: int | None = None        # delegate partitions in the lowered graph
    ops_outside_delegate: list[str] = field(default_factory=list)  # operator names not delegated
    input_layout: str = "NCHW"
    output_layout: str = "NCHW"
    input_dtype: str = "float32"
    output_dtype: str = "float32"
    input_quantization: dict | None = None   # {"scale": float, "zero_point": int} for int8 I/O
    output_quantization: dict | None = None
    notes: list[str] = field(default_factory=list)
    # Optional, added for the manifest (defaults fit positional runtimes such as ExecuTorch):
    input_name: str = "input"            # tensor name an app feeds (TFLite/ONNX/Core ML names)
    output_name: str = "output"
    runtime: str | None = None           # "executorch" | "coreml" | "litert" | "onnxruntime"; None = from target name
    backend_options: dict = field(default_factory=dict)  # compute units, deployment target, opset, ...


class Runner(Protocol):
    """Runs an artifact on the desktop: float32 NCHW in [0,1] in, float32 NCHW out."""

    def __call__(self, batch: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class TargetOption:
    """One setting a target reads from ``ExportRequest.options`` (``zoo export --option KEY=VALUE``).

    ``values``: the allowed values (compared case-insensitively, passed on in the spelling given
    here); empty for any value ``parse`` takes. ``parse``: turns the command line's text into
    the value the target reads (e.g. :func:`option_bool`); raises ``ValueError`` saying what it
    takes. ``precisions``: the precisions whose export reads it (empty: all); elsewhere it would
    be ignored, so it is refused. ``internal``: passed by the zoo's Python callers, not typed on
    the command line (not listed in the accepted names).
    """

    meaning: str
    values: tuple[str, ...] = ()
    parse: Callable[[Any], Any] | None = None
    precisions: tuple[str, ...] = ()
    internal: bool = False


def option_bool(value) -> bool:
    """``true/false``, ``yes/no``, ``on/off``, ``1/0`` (any case) or a bool, as a bool."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "on", "1"):
        return True
    if text in ("false", "no", "off", "0"):
        return False
    raise ValueError("takes true or false")


def option_count(value) -> int:
    """A whole number >= 0 (text or int)."""
    try:
        number = int(str(value).strip()) if not isinstance(value, bool) else None
    except ValueError:
        number = None
    if number is None or number < 0:
        raise ValueError("takes a whole number >= 0")
    return number


class ExportTarget(Protocol):
    name: str                # e.g. "executorch-xnnpack"
    suffix: str              # ".pte", ".mlpackage", ".tflite", ".onnx"
    precisions: tuple[str, ...]
    #: The ``ExportRequest.options`` the target reads; any other name is refused (:func:`check_options`).
    accepted_options: dict[str, TargetOption]

    def available(self) -> str | None:
        """None when the toolchain is importable/usable here, else the reason and the fix."""

    def export(self, request: ExportRequest) -> ExportResult:
        """Build the artifact at ``request.out_path`` (the caller makes the write atomic)."""

    def load_runner(self, path: Path, manifest: dict) -> Runner:
        """A desktop runner for the artifact, or ZooError saying why it cannot run here."""


# --------------------------------------------------------------------------------------------
# Checks shared by the targets


def first_line(err: Exception) -> str:
    """``ExceptionType: first line of the message`` (at most 300 characters), for one-line errors and notes."""
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:300] if text else ''}"


def missing_packages_reason(modules: tuple[str, ...]) -> str | None:
    """None when every importable module name in ``modules`` is installed, else which are missing and the fix."""
    missing = [module for module in modules if importlib.util.find_spec(module) is None]
    return f"{', '.join(missing)} not installed; {MOBILE_EXTRAS}" if missing else None


def require_available(target, hint: str = "install the mobile extras") -> None:
    """Raise :class:`ZooError` when ``target.available()`` gives a reason (the toolchain is missing)."""
    reason = target.available()
    if reason:
        raise ZooError(f"target {target.name} is unavailable: {reason}", hint)


def _targets_reading(key: str) -> list[str]:
    """The targets that declare option ``key`` (for the error naming an option of another target)."""
    from export_mobile.targets import get_target, target_names

    return [name for name in target_names() if key in (getattr(get_target(name), "accepted_options", None) or {})]


def check_options(target, precision: str, options: dict | None) -> dict:
    """``options`` checked against ``target.accepted_options``, with each value as the target reads
    it (a choice in its declared spelling, ``parse``'s result); raises :class:`ZooError` for a name
    the target does not read (naming the ones it does, with a did-you-mean), a name of an option
    another precision reads, and a value the declaration refuses. A target may add a
    ``check_option_values(precision, options)`` method for rules between options.
    """
    declared: dict[str, TargetOption] = getattr(target, "accepted_options", None) or {}
    public = [key for key, spec in declared.items() if not spec.internal]
    checked = {}
    for key, value in (options or {}).items():
        if key not in declared:
            close = difflib.get_close_matches(str(key), public, n=1)
            elsewhere = [name for name in _targets_reading(str(key)) if name != target.name]
            problem = f"target {target.name} has no option {key!r}" + (
                f" ({key} is an option of {', '.join(elsewhere)})" if elsewhere else "")
            accepted = (f"{target.name} accepts {', '.join(public)}" if public
                        else f"{target.name} takes no --option")
            hint = f"did you mean {close[0]}? " if close else ""
            raise ZooError(problem, f"{hint}{accepted}; drop --option {key} or fix its name")
        spec = declared[key]
        if spec.precisions and precision not in spec.precisions:
            raise ZooError(f"option {key} of {target.name} applies only to {', '.join(spec.precisions)} exports, "
                           f"and this one is {precision}, so it would be ignored",
                           f"drop --option {key}, or pass --precision {spec.precisions[0]}")
        if spec.values:
            by_case = {allowed.lower(): allowed for allowed in spec.values}
            if str(value).lower() not in by_case:
                raise ZooError(f"unknown {key} {value!r} for {target.name}", f"use one of {', '.join(spec.values)}")
            value = by_case[str(value).lower()]
        elif spec.parse is not None:
            try:
                value = spec.parse(value)
            except ValueError as err:
                raise ZooError(f"option {key} of {target.name} {err}, got {value!r}",
                               f"drop --option {key}" if spec.internal
                               else f"fix the value of --option {key} ({spec.meaning})") from None
        checked[key] = value
    extra = getattr(target, "check_option_values", None)
    if callable(extra):
        extra(precision, checked)
    return checked


def check_request(target, request: ExportRequest, hint: str = "install the mobile extras") -> tuple[int, ...]:
    """Check that ``target`` offers ``request.precision``, that its toolchain is here, that the example
    is one NCHW image and that the target reads every option (:func:`check_options`, whose checked
    values replace ``request.options``); returns the example's shape ``(1, C, H, W)``. Raises
    :class:`ZooError` otherwise.

    ``hint``: the fix for an unavailable toolchain.
    """
    if request.precision not in target.precisions:
        raise ZooError(f"target {target.name} has no precision {request.precision!r}",
                       f"use one of {', '.join(target.precisions)}")
    request.options = check_options(target, request.precision, request.options)
    require_available(target, hint)
    shape = tuple(request.example.shape)
    if len(shape) != 4 or shape[0] != 1:
        raise ZooError(f"export example must be one NCHW image (1, C, H, W), got shape {shape}",
                       "pass a (1, 3, tile, tile) example")
    return shape


def require_runnable(path: str | Path, reason: str | None, hint: str = "install the mobile extras") -> None:
    """Raise :class:`ZooError` saying why the artifact at ``path`` cannot run here, when ``reason`` is set."""
    if reason:
        raise ZooError(f"cannot run {Path(path).name} here: {reason}", hint)


def fixed_shape_batch(batch, image_shape: tuple[int, ...], artifact: str) -> np.ndarray:
    """``batch`` as float32 (N, C, H, W) after checking that (C, H, W) is the artifact's fixed ``image_shape``.

    ``artifact``: how the error names it (file name or kind). Raises :class:`ZooError` on a mismatch.
    """
    batch = np.asarray(batch, dtype=np.float32)
    expected = tuple(image_shape)
    if batch.ndim != 4 or tuple(batch.shape[1:]) != expected:
        raise ZooError(f"input of shape {tuple(batch.shape)} does not fit the fixed shape "
                       f"(N, {', '.join(map(str, expected))}) of {artifact}", TILE_HINT)
    return batch
