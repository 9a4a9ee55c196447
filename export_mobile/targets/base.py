"""The interface every export target implements (one module per target in this package).

A target turns a float or PT2E-quantized PyTorch model with a FIXED input shape into one artifact
file/folder and can run that artifact on the desktop. It knows nothing about particular models.

The checks every target makes the same way live here once: which toolchain packages are missing
(:func:`missing_packages_reason`), whether a request fits the target (:func:`check_request`:
precision, availability, a (1, C, H, W) example), whether a runner can be made
(:func:`require_runnable`) and whether a batch fits the artifact's fixed shape
(:func:`fixed_shape_batch`).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

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


class ExportTarget(Protocol):
    name: str                # e.g. "executorch-xnnpack"
    suffix: str              # ".pte", ".mlpackage", ".tflite", ".onnx"
    precisions: tuple[str, ...]

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


def check_request(target, request: ExportRequest, hint: str = "install the mobile extras") -> tuple[int, ...]:
    """Check that ``target`` offers ``request.precision``, that its toolchain is here, and that the example
    is one NCHW image; returns the example's shape ``(1, C, H, W)``. Raises :class:`ZooError` otherwise.

    ``hint``: the fix for an unavailable toolchain.
    """
    if request.precision not in target.precisions:
        raise ZooError(f"target {target.name} has no precision {request.precision!r}",
                       f"use one of {', '.join(target.precisions)}")
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
