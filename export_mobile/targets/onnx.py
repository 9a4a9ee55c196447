"""ONNX target (``.onnx``, opset 18): for ONNX Runtime Mobile and as a desktop peer of the others.

* ``fp32``: ``torch.onnx.export(..., dynamo=True)`` (``torch.export`` + onnxscript), one file with
  the weights inside, input ``input`` and output ``output``, NCHW float32, fixed shape.
* ``int8``: a QDQ model (QuantizeLinear/DequantizeLinear around the int8 operators), made one of
  two ways:

  - ``pt2e`` (default when ``request.quantized`` is given): the PT2E-converted model from
    ``quantize/`` is exported as is; its ``quantize/dequantize`` nodes become QDQ pairs with the
    same scales and zero points, so ONNX Runtime computes what the quantized PyTorch model computes;
  - ``ort``: ONNX Runtime's own post-training quantization (``quantize_static``, QDQ format,
    per-channel symmetric int8 weights, per-tensor uint8 activations, min/max calibration) of the
    fp32 export, calibrated on ``request.options["calibration"]`` (a list of float32 NCHW arrays
    of the export shape). Chosen with ``options["int8_method"] = "ort"``, or when no quantized
    model is given.

The runner is an ``onnxruntime.InferenceSession`` on the CPU execution provider.
"""

from __future__ import annotations

import tempfile
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from export_mobile.targets.base import (ExportRequest, ExportResult, TargetOption, check_request,
                                        fixed_shape_batch, missing_packages_reason, require_runnable)
from zoo.errors import ZooError

INPUT_NAME = "input"
OUTPUT_NAME = "output"
#: Lowest opset the issue allows; QDQ per-channel needs >= 13, so 18 suits both precisions.
OPSET = 18
#: Ops that only move quantized data around; everything else is a compute op.
_QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


def _export_program(model: torch.nn.Module, example: torch.Tensor, path: Path) -> None:
    """``torch.onnx.export`` (dynamo) of ``model`` at ``example``'s fixed shape into one file."""
    try:
        with warnings.catch_warnings():
            # PT2E graphs report training mode but carry no train-only ops (torchao's convert).
            warnings.filterwarnings("ignore", message="Exporting a model while it is in training mode")
            program = torch.onnx.export(model, (example,), dynamo=True, opset_version=OPSET,
                                        input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                        verbose=False, optimize=True)
    except Exception as err:
        raise ZooError(f"torch.onnx.export failed: {type(err).__name__}: {str(err).splitlines()[0][:300]}",
                       "rewrite the unsupported operator (see docs/export_targets.md) or use another target") from err
    # Weights inside the .onnx (no external data file), so the artifact is one file to ship.
    program.save(str(path), external_data=False)


def op_counts(path: str | Path) -> Counter:
    """Operator type -> number of nodes in the main graph of the ONNX file at ``path``."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return Counter(node.op_type for node in model.graph.node)


def float_compute_ops(path: str | Path) -> Counter:
    """Compute nodes of a QDQ model that run in float: some float input is not a DequantizeLinear output.

    Returns operator type -> count. Weights and biases stored as float initializers count as
    float inputs only for ops that have no dequantized input at all (e.g. an ``Add`` of two
    float activations, an ``InstanceNormalization``); shape/index inputs are ignored.
    """
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    produced_by = {output: node.op_type for node in model.graph.node for output in node.output}
    float_ops: Counter = Counter()
    for node in model.graph.node:
        if node.op_type in _QDQ_OPS or node.op_type in ("Constant", "Shape", "Reshape", "Transpose", "Split",
                                                        "Concat", "Slice", "Squeeze", "Unsqueeze", "Identity"):
            continue
        activation_inputs = [name for name in node.input if name and name in produced_by or name == INPUT_NAME]
        if activation_inputs and not all(produced_by.get(name) == "DequantizeLinear" for name in activation_inputs):
            float_ops[node.op_type] += 1
    return float_ops


def _calibration_batches(value):
    """``options["calibration"]`` as given from Python; text (``--option calibration=...``) is refused."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise ValueError("takes a list of float32 NCHW arrays from Python (zoo export --calibration calibrates "
                         "the PT2E model instead)")
    return value


class _CalibrationReader:
    """``onnxruntime.quantization.CalibrationDataReader`` over NCHW float32 arrays, one image a step."""

    def __init__(self, batches, shape: tuple[int, ...]):
        self._images = []
        for batch in batches:
            array = np.asarray(batch.detach().cpu().numpy() if isinstance(batch, torch.Tensor) else batch,
                               dtype=np.float32)
            if array.ndim == 3:
                array = array[None]
            if array.ndim != 4 or array.shape[1:] != shape[1:]:
                raise ZooError(f"calibration batch of shape {array.shape} does not match the export shape {shape}",
                               "draw calibration crops at the export tile size")
            self._images.extend(array[i:i + 1] for i in range(array.shape[0]))
        self._position = 0

    def __len__(self) -> int:
        return len(self._images)

    def get_next(self):
        if self._position >= len(self._images):
            return None
        self._position += 1
        return {INPUT_NAME: self._images[self._position - 1]}

    def rewind(self) -> None:
        self._position = 0


class OnnxTarget:
    """ONNX opset 18 for ONNX Runtime (Mobile): fp32, and QDQ int8 (from PT2E, or ORT's own PTQ)."""

    name = "onnx"
    suffix = ".onnx"
    precisions = ("fp32", "int8")
    #: PT2E recipe whose int8 model ``zoo export`` passes as ``request.quantized``.
    int8_recipe = "xnnpack"
    supports_dynamic = False
    #: Distributions whose versions the manifest records.
    tool_packages = ("torch", "onnx", "onnxscript", "onnxruntime")
    #: The ``--option``s this target reads (see the module docstring); others are refused.
    accepted_options = {
        "int8_method": TargetOption("QDQ from the PT2E model, or onnxruntime's own calibration", ("pt2e", "ort"),
                                    precisions=("int8",)),
        # Set by Python callers for int8_method=ort; no command line can give arrays.
        "calibration": TargetOption("float32 NCHW calibration arrays for int8_method=ort",
                                    parse=_calibration_batches, precisions=("int8",), internal=True),
    }

    def check_option_values(self, precision: str, options: dict) -> None:
        """Refuse ``int8_method=ort`` without calibration arrays: zoo export never passes them, so the
        export would fail only after the PT2E calibration."""
        if options.get("int8_method") == "ort" and not options.get("calibration"):
            raise ZooError("int8_method=ort calibrates with onnxruntime on options['calibration'] arrays, and none "
                           "were given (zoo export passes none)",
                           "drop --option int8_method (the default pt2e exports the model --calibration or "
                           "--quantized makes), or call OnnxTarget.export with calibration arrays from Python")

    def available(self) -> str | None:
        return missing_packages_reason(("onnx", "onnxscript", "onnxruntime"))

    def export(self, request: ExportRequest) -> ExportResult:
        """Write the ``.onnx`` file at ``request.out_path``; see the module docstring for the precisions."""
        shape = check_request(self, request)
        out_path = Path(request.out_path)
        example = request.example.detach().float().contiguous()
        notes = [f"opset {OPSET}; torch.onnx.export(dynamo=True); fixed input shape {list(shape)}"]

        if request.precision == "fp32":
            _export_program(request.model.eval(), example, out_path)
        else:
            method = request.options.get("int8_method") or ("pt2e" if request.quantized is not None else "ort")
            if method == "pt2e":
                if request.quantized is None:
                    raise ZooError("int8 ONNX from PT2E needs the quantized model",
                                   "run with calibration data (zoo quantize) or set int8_method=ort with calibration")
                _export_program(request.quantized, example, out_path)
                notes.append("int8 QDQ exported from the PT2E-quantized PyTorch model (same scales and zero points)")
            elif method == "ort":
                notes.append(self._quantize_with_onnxruntime(request, example, shape, out_path))
            else:
                raise ZooError(f"unknown int8_method {method!r} for onnx", "use pt2e or ort")
            float_ops = float_compute_ops(out_path)
            if float_ops:
                notes.append("ops left in float: " + ", ".join(f"{op} x{n}" for op, n in sorted(float_ops.items())))
        counts = op_counts(out_path)
        notes.append("ops: " + ", ".join(f"{op} x{n}" for op, n in sorted(counts.items())))
        options = {"opset": OPSET, "execution_provider": "CPUExecutionProvider"}
        if request.precision == "int8":
            options["int8_method"] = method
        return ExportResult(path=out_path, delegate=None, partitions=None, ops_outside_delegate=[],
                            input_layout="NCHW", output_layout="NCHW", notes=notes, input_name=INPUT_NAME,
                            output_name=OUTPUT_NAME, runtime="onnxruntime", backend_options=options)

    @staticmethod
    def _quantize_with_onnxruntime(request: ExportRequest, example: torch.Tensor, shape, out_path: Path) -> str:
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
        from onnxruntime.quantization.shape_inference import quant_pre_process

        batches = request.options.get("calibration")
        if not batches:
            raise ZooError("int8 ONNX needs calibration data or a quantized model",
                           "pass calibration batches (options['calibration']) or the PT2E model from zoo quantize")
        reader = _CalibrationReader(batches, shape)
        with tempfile.TemporaryDirectory(prefix="zoo-onnx-") as folder:
            float_path = Path(folder) / "float.onnx"
            prepared_path = Path(folder) / "prepared.onnx"
            _export_program(request.model.eval(), example, float_path)
            # Shape inference and graph optimisation first, as onnxruntime recommends for QDQ.
            quant_pre_process(str(float_path), str(prepared_path))
            quantize_static(str(prepared_path), str(out_path), reader, quant_format=QuantFormat.QDQ,
                            per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax)
        return (f"int8 QDQ by onnxruntime quantize_static: per-channel int8 weights, uint8 activations, "
                f"min/max calibration on {len(reader)} images")

    def load_runner(self, path: Path, manifest: dict):
        """An ONNX Runtime (CPU) runner: float32 NCHW in [0, 1] in, float32 NCHW out."""
        require_runnable(path, self.available())
        return OnnxRunner(path)


class OnnxRunner:
    """Runs an ``.onnx`` artifact with ONNX Runtime's CPU execution provider, one image at a time.

    Call with a float32 NCHW batch in [0, 1] of the artifact's height and width (any batch size);
    returns the float32 NCHW output batch. ``native_shapes``: the (input, output) tensor shapes the
    model declares.
    """

    def __init__(self, path: str | Path, threads: int | None = None):
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise ZooError(f"ONNX artifact {path} does not exist", "check the path")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as err:
            raise ZooError(f"{path.name} is not a loadable ONNX model ({str(err).splitlines()[0][:200]})",
                           "re-export it with zoo export --target onnx") from err
        self.name = path.name
        model_input = self.session.get_inputs()[0]
        self.input_name = model_input.name
        self.input_shape = tuple(model_input.shape)
        # A dynamic dimension is a name or None in ONNX; -1 as in a manifest.
        self.native_shapes = tuple(tuple(v if isinstance(v, int) else -1 for v in tensor.shape)
                                   for tensor in (model_input, self.session.get_outputs()[0]))

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(fixed_shape_batch(batch, self.input_shape[1:], self.name))
        outputs = [self.session.run(None, {self.input_name: batch[i:i + 1]})[0] for i in range(batch.shape[0])]
        return np.concatenate(outputs, axis=0).astype(np.float32, copy=False)


TARGET = OnnxTarget()
TARGETS = {TARGET.name: TARGET}
