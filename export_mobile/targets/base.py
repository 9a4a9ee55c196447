"""The interface every export target implements (one module per target in this package).

A target turns a float or PT2E-quantized PyTorch model with a FIXED input shape into one artifact
file/folder and can run that artifact on the desktop. It knows nothing about particular models.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch


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
