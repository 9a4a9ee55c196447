"""TFLite / LiteRT target (``.tflite``): litert-torch conversion, run by the LiteRT Interpreter.

* ``fp32``: ``litert_torch.convert(model, (example,))``; input/output float32.
* ``fp16``: fp16 *weights* (half the size), float32 compute and I/O: the fp32 model passed through
  ai-edge-quantizer's ``float_casting`` recipe (weights of CONV_2D / FULLY_CONNECTED /
  DEPTHWISE_CONV_2D / TRANSPOSE_CONV stored as float16 and dequantized once at load). GPU and NPU
  delegates may then run in fp16; the XNNPACK CPU delegate computes in float32.
* ``int8``: full-integer model from the PT2E graph that ``quantize/`` made with the ``tflite``
  recipe (``request.quantized``), converted with litert-torch's ``QuantConfig``. Its I/O is
  chosen by ``request.options["io"]``:

  - ``"int8"`` (default): input and output tensors are int8 with a scale and zero point (in the
    manifest and in ``ExportResult.input_quantization`` / ``output_quantization``). litert-torch
    gives int8 I/O only when the graph is quantized end to end and float I/O when the first or
    last operator stays float (e.g. a float residual add); :func:`set_io_dtype` then adds a
    DEQUANTIZE after an int8 input and a QUANTIZE before an int8 output. The input's scale and
    zero point are those of the model's first QUANTIZE (so this adds no error); the output's
    are those of the last DEQUANTIZE when only layout ops follow it, else 1/255 and -128, i.e.
    [0, 1] in 255 steps (the output of a model clamped to [0, 1]);
  - ``"float"``: float32 input and output, quantized inside the graph (a QUANTIZE / DEQUANTIZE
    is added at the boundary when litert-torch made int8 I/O).

Every float32 ``RELU_0_TO_1`` (litert-torch's form of a clamp to [0, 1], which the XNNPACK
delegate does not run) is rewritten as MAXIMUM + MINIMUM with scalar constants, bit-exact, so
the zoo's clamped models stay in one delegate partition (``options["split_clamps"] = False``
keeps the original op).

``request.options["layout"] = "NHWC"`` wraps the model with ``litert_torch.to_channel_last_io``
so the artifact takes and returns (1, H, W, 3), as Android bitmaps are laid out (the manifest
says NHWC; the runner transposes). The default is NCHW, the PyTorch layout.

The desktop runner is ``ai_edge_litert.interpreter.Interpreter`` with its default XNNPACK
delegate; it quantizes/dequantizes int8 I/O and transposes NHWC as the artifact says.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from export_mobile.targets.base import ExportRequest, ExportResult
from zoo.errors import ZooError

#: Scale and zero point that map int8 -128..127 onto [0, 1] in 255 equal steps.
UNIT_RANGE_INT8 = {"scale": 1.0 / 255.0, "zero_point": -128}
#: Operators that only move data; a QUANTIZE/DEQUANTIZE found through them sets I/O parameters.
_LAYOUT_OPS = ("TRANSPOSE", "RESHAPE")
_FP16_WEIGHTS_RECIPE = [{
    "regex": ".*",
    "operation": "*",
    "algorithm_key": "float_casting",
    "op_config": {
        "weight_tensor_config": {"num_bits": 16, "dtype": "FLOAT"},
        "compute_precision": "FLOAT",
        "explicit_dequantize": True,
    },
}]
DELEGATE_NAME = "XNNPACK (LiteRT CPU delegate)"
#: An int8 artifact closer than this to its PT2E model (PSNR of the difference, dB) passes.
INT8_SELF_CHECK_DB = 40.0


def _missing_packages(packages: tuple[str, ...]) -> list[str]:
    return [package for package in packages if importlib.util.find_spec(package) is None]


@contextlib.contextmanager
def _quiet_litert():
    """Turn off litert-torch's progress printing for the duration (it writes to the terminal)."""
    previous = os.environ.get("LITERT_TORCH_SHOW_PROGRESS")
    os.environ["LITERT_TORCH_SHOW_PROGRESS"] = "n"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("LITERT_TORCH_SHOW_PROGRESS", None)
        else:
            os.environ["LITERT_TORCH_SHOW_PROGRESS"] = previous


def _first_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:300] if text else ''}"


# ----------------------------------------------------------------------------- flatbuffer helpers


def _schema():
    from ai_edge_litert import schema_py_generated as schema

    return schema


def _builtin_names() -> dict[int, str]:
    schema = _schema()
    return {value: key for key, value in vars(schema.BuiltinOperator).items() if not key.startswith("_")}


def _op_name(model, operator) -> str:
    code = model.operatorCodes[operator.opcodeIndex]
    # Codes above 127 live in builtinCode only; deprecatedBuiltinCode caps at 127.
    return _builtin_names().get(max(code.builtinCode, code.deprecatedBuiltinCode), "CUSTOM")


def read_model(data: bytes):
    """The flatbuffer of a .tflite file as LiteRT's schema object tree (``ModelT``)."""
    schema = _schema()
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ZooError("not a TFLite flatbuffer (no TFL3 identifier)", "re-export it with zoo export --target tflite")
    return schema.ModelT.InitFromPackedBuf(bytearray(data), 0)


def _pack(model) -> bytes:
    import flatbuffers

    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _opcode_index(model, builtin: int, version: int) -> int:
    schema = _schema()
    for index, code in enumerate(model.operatorCodes):
        if max(code.builtinCode, code.deprecatedBuiltinCode) == builtin:
            return index
    code = schema.OperatorCodeT()
    code.builtinCode = builtin
    code.deprecatedBuiltinCode = min(builtin, 127)
    code.version = version
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1


def _quant_params(tensor) -> dict | None:
    q = tensor.quantization
    if q is None or q.scale is None or len(q.scale) != 1:
        return None
    return {"scale": float(q.scale[0]), "zero_point": int(q.zeroPoint[0])}


def _consumers(subgraph, tensor_index: int):
    return [op for op in subgraph.operators if op.inputs is not None and tensor_index in list(op.inputs)]


def _producer(subgraph, tensor_index: int):
    for op in subgraph.operators:
        if op.outputs is not None and tensor_index in list(op.outputs):
            return op
    return None


def _input_params(model, subgraph, tensor_index: int) -> dict | None:
    """Scale/zero point of the first QUANTIZE reached from ``tensor_index`` through layout ops."""
    frontier = [tensor_index]
    while frontier:
        current = frontier.pop(0)
        for op in _consumers(subgraph, current):
            name = _op_name(model, op)
            if name == "QUANTIZE":
                return _quant_params(subgraph.tensors[op.outputs[0]])
            if name in _LAYOUT_OPS:
                frontier.append(int(op.outputs[0]))
    return None


def _output_params(model, subgraph, tensor_index: int) -> dict | None:
    """Scale/zero point of the DEQUANTIZE that makes ``tensor_index`` through layout ops only."""
    current = tensor_index
    while True:
        op = _producer(subgraph, current)
        if op is None:
            return None
        name = _op_name(model, op)
        if name == "DEQUANTIZE":
            return _quant_params(subgraph.tensors[op.inputs[0]])
        if name not in _LAYOUT_OPS:
            return None
        current = int(op.inputs[0])


def _int8_tensor(template, name: bytes, params: dict):
    schema = _schema()
    tensor = schema.TensorT()
    tensor.shape = list(template.shape)
    tensor.shapeSignature = list(template.shapeSignature) if template.shapeSignature is not None else None
    tensor.type = schema.TensorType.INT8
    tensor.buffer = 0  # buffer 0 is the empty buffer every TFLite model starts with
    tensor.name = name
    quantization = schema.QuantizationParametersT()
    quantization.scale = [params["scale"]]
    quantization.zeroPoint = [params["zero_point"]]
    tensor.quantization = quantization
    return tensor


def _boundary_op(model, builtin: int, inputs: list[int], outputs: list[int]):
    schema = _schema()
    op = schema.OperatorT()
    # Version 2 of QUANTIZE / DEQUANTIZE is the int8 kernel.
    op.opcodeIndex = _opcode_index(model, builtin, 2)
    op.inputs, op.outputs = inputs, outputs
    if builtin == schema.BuiltinOperator.QUANTIZE:
        op.builtinOptionsType, op.builtinOptions = schema.BuiltinOptions.QuantizeOptions, schema.QuantizeOptionsT()
    else:
        op.builtinOptionsType, op.builtinOptions = schema.BuiltinOptions.DequantizeOptions, schema.DequantizeOptionsT()
    return op


def _float_tensor(template, name: bytes):
    schema = _schema()
    tensor = schema.TensorT()
    tensor.shape = list(template.shape)
    tensor.shapeSignature = list(template.shapeSignature) if template.shapeSignature is not None else None
    tensor.type = schema.TensorType.FLOAT32
    tensor.buffer = 0
    tensor.name = name
    return tensor


def set_io_dtype(data: bytes, kind: str) -> tuple[bytes, dict | None, dict | None]:
    """Make the (single) input and output of a quantized .tflite int8 (``kind="int8"``) or float32.

    litert-torch makes float I/O when the first/last operators stay float and int8 I/O when the
    graph is quantized end to end; this adds the missing boundary op without changing the
    numbers inside: ``DEQUANTIZE(int8 input) -> old float input`` or ``QUANTIZE(float input) ->
    old int8 input`` at the start, the mirror image at the end. Tensor names and signature keys
    stay those of the I/O. Returns ``(flatbuffer, input quantization, output quantization)``,
    each ``{"scale", "zero_point"}`` for int8 I/O, None for float I/O.
    """
    schema = _schema()
    model = read_model(data)
    subgraph = model.subgraphs[0]
    if len(subgraph.inputs) != 1 or len(subgraph.outputs) != 1:
        raise ZooError("choosing the I/O dtype is supported for one input and one output only", "use the default io")
    old_input, old_output = int(subgraph.inputs[0]), int(subgraph.outputs[0])
    want_int8 = kind == "int8"
    float32, int8 = schema.TensorType.FLOAT32, schema.TensorType.INT8
    for index in (old_input, old_output):
        if subgraph.tensors[index].type not in (float32, int8):
            raise ZooError("the converted model's I/O is neither float32 nor int8", "use the default io")

    first_ops, last_ops = [], []
    new_input, new_output = old_input, old_output
    input_tensor, output_tensor = subgraph.tensors[old_input], subgraph.tensors[old_output]
    if want_int8 and input_tensor.type == float32:
        params = _input_params(model, subgraph, old_input) or dict(UNIT_RANGE_INT8)
        subgraph.tensors.append(_int8_tensor(input_tensor, input_tensor.name, params))
        input_tensor.name = bytes(input_tensor.name) + b"_dequantized"
        new_input = len(subgraph.tensors) - 1
        first_ops.append(_boundary_op(model, schema.BuiltinOperator.DEQUANTIZE, [new_input], [old_input]))
    elif not want_int8 and input_tensor.type == int8:
        subgraph.tensors.append(_float_tensor(input_tensor, input_tensor.name))
        input_tensor.name = bytes(input_tensor.name) + b"_quantized"
        new_input = len(subgraph.tensors) - 1
        first_ops.append(_boundary_op(model, schema.BuiltinOperator.QUANTIZE, [new_input], [old_input]))
    if want_int8 and output_tensor.type == float32:
        params = _output_params(model, subgraph, old_output) or dict(UNIT_RANGE_INT8)
        subgraph.tensors.append(_int8_tensor(output_tensor, output_tensor.name, params))
        output_tensor.name = bytes(output_tensor.name) + b"_float"
        new_output = len(subgraph.tensors) - 1
        last_ops.append(_boundary_op(model, schema.BuiltinOperator.QUANTIZE, [old_output], [new_output]))
    elif not want_int8 and output_tensor.type == int8:
        subgraph.tensors.append(_float_tensor(output_tensor, output_tensor.name))
        output_tensor.name = bytes(output_tensor.name) + b"_quantized"
        new_output = len(subgraph.tensors) - 1
        last_ops.append(_boundary_op(model, schema.BuiltinOperator.DEQUANTIZE, [old_output], [new_output]))

    subgraph.operators = [*first_ops, *subgraph.operators, *last_ops]
    subgraph.inputs, subgraph.outputs = [new_input], [new_output]
    for signature in model.signatureDefs or []:
        if signature.subgraphIndex != 0:
            continue
        for entry in signature.inputs or []:
            if entry.tensorIndex == old_input:
                entry.tensorIndex = new_input
        for entry in signature.outputs or []:
            if entry.tensorIndex == old_output:
                entry.tensorIndex = new_output
    input_quantization = _quant_params(subgraph.tensors[new_input]) if want_int8 else None
    output_quantization = _quant_params(subgraph.tensors[new_output]) if want_int8 else None
    return _pack(model), input_quantization, output_quantization


def _scalar_constant(model, subgraph, value: float, name: bytes) -> int:
    schema = _schema()
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(np.float32(value).tobytes(), dtype=np.uint8).tolist()
    model.buffers.append(buffer)
    tensor = schema.TensorT()
    tensor.shape, tensor.type, tensor.buffer, tensor.name = [], schema.TensorType.FLOAT32, len(model.buffers) - 1, name
    subgraph.tensors.append(tensor)
    return len(subgraph.tensors) - 1


def split_unit_clamps(data: bytes) -> tuple[bytes, int]:
    """Replace every float32 ``RELU_0_TO_1`` by ``MINIMUM(MAXIMUM(x, 0), 1)``; returns (flatbuffer, count).

    litert-torch turns any clamp to [0, 1] (``clamp``, ``hardtanh``, min/max pairs) into
    ``RELU_0_TO_1``, which the XNNPACK delegate of ai-edge-litert 2.3 does not run: the op stays
    outside the delegate and, in the middle of a graph, splits it. MAXIMUM and MINIMUM with
    scalar constants are delegated, and compute the same numbers bit for bit.
    """
    schema = _schema()
    model = read_model(data)
    subgraph = model.subgraphs[0]
    operators, count = [], 0
    for op in subgraph.operators:
        source = subgraph.tensors[op.inputs[0]] if op.inputs is not None and len(op.inputs) else None
        if _op_name(model, op) != "RELU_0_TO_1" or source is None or source.type != schema.TensorType.FLOAT32:
            operators.append(op)
            continue
        count += 1
        zero = _scalar_constant(model, subgraph, 0.0, bytes(source.name) + b"_zero")
        one = _scalar_constant(model, subgraph, 1.0, bytes(source.name) + b"_one")
        subgraph.tensors.append(_float_tensor(source, bytes(source.name) + b"_nonnegative"))
        middle = len(subgraph.tensors) - 1
        for builtin, inputs, outputs in ((schema.BuiltinOperator.MAXIMUM, [int(op.inputs[0]), zero], [middle]),
                                         (schema.BuiltinOperator.MINIMUM, [middle, one], [int(op.outputs[0])])):
            replacement = schema.OperatorT()
            replacement.opcodeIndex = _opcode_index(model, builtin, 1)
            replacement.inputs, replacement.outputs = inputs, outputs
            replacement.builtinOptionsType = schema.BuiltinOptions.MaximumMinimumOptions
            replacement.builtinOptions = schema.MaximumMinimumOptionsT()
            operators.append(replacement)
    if not count:
        return data, 0
    subgraph.operators = operators
    return _pack(model), count


def io_names(data: bytes) -> tuple[str, str, dict]:
    """``(input tensor name, output tensor name, signature info)`` of a .tflite flatbuffer.

    Apps address tensors either by index (0), by tensor name (Interpreter) or through the
    signature runner (``signature`` key plus ``signature_input`` / ``signature_output`` keys).
    """
    model = read_model(data)
    subgraph = model.subgraphs[0]
    input_name = bytes(subgraph.tensors[subgraph.inputs[0]].name).decode()
    output_name = bytes(subgraph.tensors[subgraph.outputs[0]].name).decode()
    signature: dict = {}
    for definition in model.signatureDefs or []:
        if definition.subgraphIndex == 0 and definition.inputs and definition.outputs:
            signature = {"signature": bytes(definition.signatureKey).decode(),
                         "signature_input": bytes(definition.inputs[0].name).decode(),
                         "signature_output": bytes(definition.outputs[0].name).decode()}
            break
    return input_name, output_name, signature


def tensor_dtypes(path: str | Path) -> dict[str, int]:
    """Tensor type name (``FLOAT32``, ``FLOAT16``, ``INT8`` ...) -> number of tensors in the main graph."""
    schema = _schema()
    names = {value: key for key, value in vars(schema.TensorType).items() if not key.startswith("_")}
    model = read_model(Path(path).read_bytes())
    counts: dict[str, int] = {}
    for tensor in model.subgraphs[0].tensors:
        counts[names[tensor.type]] = counts.get(names[tensor.type], 0) + 1
    return counts


def operator_names(path: str | Path) -> list[str]:
    """Builtin operator names of the main graph, in execution order (before delegation)."""
    model = read_model(Path(path).read_bytes())
    return [_op_name(model, op) for op in model.subgraphs[0].operators]


def delegation(path: str | Path) -> tuple[int, list[str]]:
    """``(partitions, operators outside them)`` when the LiteRT Interpreter applies XNNPACK.

    The interpreter lists the graph's own nodes and then one ``DELEGATE`` node per partition; a
    node belongs to a partition when it is reached walking back from the partition's outputs
    without crossing its inputs.
    """
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=1)
    interpreter.allocate_tensors()
    details = interpreter._get_ops_details()  # no public API lists the delegated graph
    delegates = [d for d in details if d["op_name"] == "DELEGATE"]
    originals = [d for d in details if d["op_name"] != "DELEGATE"]
    producer = {int(t): d["index"] for d in originals for t in d["outputs"]}
    by_index = {d["index"]: d for d in originals}
    covered: set[int] = set()
    for delegate in delegates:
        boundary = {int(t) for t in delegate["inputs"]}
        stack = [int(t) for t in delegate["outputs"]]
        while stack:
            tensor = stack.pop()
            if tensor in boundary or tensor not in producer or producer[tensor] in covered:
                continue
            covered.add(producer[tensor])
            stack.extend(int(t) for t in by_index[producer[tensor]]["inputs"])
    outside = [d["op_name"] for d in originals if d["index"] not in covered]
    return len(delegates), outside


# ----------------------------------------------------------------------------- target


def _layout(request: ExportRequest) -> str:
    layout = str(request.options.get("layout", "NCHW")).upper()
    if layout not in ("NCHW", "NHWC"):
        raise ZooError(f"unknown layout {layout!r} for tflite", "use NCHW or NHWC")
    return layout


class TFLiteTarget:
    """TFLite flatbuffer for LiteRT: fp32, fp16 weights, int8 full-integer (int8 or float I/O)."""

    name = "tflite"
    suffix = ".tflite"
    precisions = ("fp32", "fp16", "int8")
    #: PT2E recipe whose int8 model ``zoo export`` passes as ``request.quantized``.
    int8_recipe = "tflite"
    supports_dynamic = False
    #: Distributions whose versions the manifest records.
    tool_packages = ("torch", "litert-torch", "ai-edge-litert", "ai-edge-quantizer")

    def available(self) -> str | None:
        missing = _missing_packages(("litert_torch", "ai_edge_litert", "ai_edge_quantizer", "flatbuffers"))
        if missing:
            return f"{', '.join(missing)} not installed; pip install 'mobile-restoration-zoo[mobile]'"
        return None

    def export(self, request: ExportRequest) -> ExportResult:
        """Write the ``.tflite`` at ``request.out_path``; see the module docstring for options."""
        if request.precision not in self.precisions:
            raise ZooError(f"target tflite has no precision {request.precision!r}",
                           f"use one of {', '.join(self.precisions)}")
        reason = self.available()
        if reason:
            raise ZooError(f"target tflite is unavailable: {reason}", "install the mobile extras")
        shape = tuple(request.example.shape)
        if len(shape) != 4 or shape[0] != 1:
            raise ZooError(f"export example must be one NCHW image (1, C, H, W), got shape {shape}",
                           "pass a (1, 3, tile, tile) example")
        layout = _layout(request)
        io_kind = str(request.options.get("io", "int8")).lower()
        if request.precision == "int8" and io_kind not in ("int8", "float"):
            raise ZooError(f"unknown io {io_kind!r} for int8 tflite", "use int8 or float")
        if request.precision == "int8" and request.quantized is None:
            raise ZooError("int8 TFLite needs the PT2E-quantized model (calibration data or a quantized model)",
                           "run zoo quantize --recipe tflite, or pass calibration data to zoo export")
        out_path = Path(request.out_path)
        result = ExportResult(path=out_path, delegate=DELEGATE_NAME, input_layout=layout, output_layout=layout)

        source = request.quantized if request.precision == "int8" else request.model.eval()
        data = self._convert(source, request.example.detach().float().contiguous(), layout,
                             quantized=request.precision == "int8")
        if request.options.get("split_clamps", True):
            data, clamps = split_unit_clamps(data)
            if clamps:
                result.notes.append(f"{clamps} x RELU_0_TO_1 (clamp to [0, 1]) written as MAXIMUM + MINIMUM, "
                                    "bit-exact, so that XNNPACK delegates it")
        if request.precision == "fp16":
            data = self._fp16_weights(data)
            result.notes.append("fp16 weights (ai-edge-quantizer float_casting), float32 compute and I/O")
        elif request.precision == "int8":
            result.notes.append("int8 full-integer from the PT2E model (tflite recipe), litert-torch QuantConfig")
            data, result.input_quantization, result.output_quantization = set_io_dtype(data, io_kind)
            if io_kind == "int8":
                result.input_dtype = result.output_dtype = "int8"
                result.notes.append("int8 I/O: real = scale * (q - zero_point)")
            else:
                result.notes.append("float32 I/O, quantized inside the graph")
        out_path.write_bytes(data)
        result.runtime = "litert"
        result.input_name, result.output_name, signature = io_names(data)
        result.backend_options = {"delegate": "XNNPACK (interpreter default)", "layout": layout,
                                  "split_clamps": bool(request.options.get("split_clamps", True)), **signature}
        if request.precision == "int8":
            result.backend_options["io"] = io_kind
        try:
            result.partitions, result.ops_outside_delegate = delegation(out_path)
        except Exception as err:  # the artifact is fine; only the delegate report is missing
            result.notes.append(f"delegate partitions not measured: {_first_line(err)}")
        if request.precision == "int8":
            result.notes.append(self._int8_self_check(out_path, request, layout))
        return result

    @staticmethod
    def _int8_self_check(path: Path, request: ExportRequest, layout: str) -> str:
        """One run of the artifact on the example against the PT2E model it came from.

        litert-torch 0.10 can mis-quantize graphs where a dequantized tensor feeds float-only
        branches (HINet's half instance normalisation: slice + instance norm + concat comes out
        at ~15 dB); saying so at export time beats a silently wrong app.
        """
        example = request.example.detach().float()
        with torch.no_grad():
            expected = request.quantized(example).numpy()
        actual = TFLiteRunner(path, layout=layout)(example.numpy())
        mse = float(np.mean((actual.astype(np.float64) - expected) ** 2))
        psnr = float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)
        verdict = "ok" if psnr > INT8_SELF_CHECK_DB else "WARNING: the artifact does not compute what the PT2E model computes"
        return f"int8 self-check on the example: PSNR {psnr:.1f} dB vs the PT2E model ({verdict})"

    @staticmethod
    def _convert(module: torch.nn.Module, example: torch.Tensor, layout: str, quantized: bool) -> bytes:
        import litert_torch

        kwargs = {}
        if quantized:
            from quantize.recipes.tflite import litert_quant_config

            kwargs["quant_config"] = litert_quant_config()
        if layout == "NHWC":
            module = litert_torch.to_channel_last_io(module, args=[0], outputs=[0])
            example = example.permute(0, 2, 3, 1).contiguous()
        try:
            with _quiet_litert():
                converted = litert_torch.convert(module, (example,), **kwargs)
        except Exception as err:
            raise ZooError(f"litert-torch conversion failed: {_first_line(err)}",
                           "rewrite the unsupported operator (see docs/export_targets.md) or use another target") from err
        with tempfile.TemporaryDirectory(prefix="zoo-tflite-") as folder:
            path = Path(folder) / "model.tflite"
            with _quiet_litert():
                converted.export(str(path))
            return path.read_bytes()

    @staticmethod
    def _fp16_weights(data: bytes) -> bytes:
        from ai_edge_quantizer import quantizer

        with tempfile.TemporaryDirectory(prefix="zoo-tflite-") as folder:
            float_path, half_path = Path(folder) / "fp32.tflite", Path(folder) / "fp16.tflite"
            float_path.write_bytes(data)
            weight_caster = quantizer.Quantizer(str(float_path))
            weight_caster.load_quantization_recipe(_FP16_WEIGHTS_RECIPE)
            # It prints a size summary and a progress bar.
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                weight_caster.quantize().export_model(str(half_path), overwrite=True)
            return half_path.read_bytes()

    def load_runner(self, path: Path, manifest: dict):
        """A LiteRT Interpreter runner (XNNPACK delegate): float32 NCHW in [0, 1] in and out."""
        reason = self.available()
        if reason:
            raise ZooError(f"cannot run {Path(path).name}: {reason}", "install the mobile extras")
        return TFLiteRunner(path, layout=_manifest_layout(manifest))


def _manifest_layout(manifest: dict | None) -> str | None:
    """The artifact's input layout as the manifest states it (several spellings accepted), or None."""
    if not manifest:
        return None
    for candidate in (manifest.get("input_layout"), (manifest.get("input") or {}).get("layout"),
                      ((manifest.get("inputs") or [{}])[0] or {}).get("layout")):
        if candidate:
            return str(candidate).upper()
    return None


class TFLiteRunner:
    """Runs a ``.tflite`` artifact in the LiteRT Interpreter, one image at a time.

    Call with a float32 NCHW batch in [0, 1] of the artifact's height and width; returns float32
    NCHW. int8 I/O is quantized with the input tensor's scale/zero point (rounded, saturated)
    and dequantized with the output's; an NHWC artifact gets transposed data. ``layout``: the
    manifest's input layout; when None it is read from the tensor shape (channels last = 3).
    """

    def __init__(self, path: str | Path, layout: str | None = None, threads: int | None = None):
        from ai_edge_litert.interpreter import Interpreter

        path = Path(path)
        if not path.is_file():
            raise ZooError(f"TFLite artifact {path} does not exist", "check the path")
        try:
            read_model(path.read_bytes())
            self.interpreter = Interpreter(model_path=str(path), num_threads=threads or 1)
            self.interpreter.allocate_tensors()
        except ZooError:
            raise
        except Exception as err:
            raise ZooError(f"{path.name} is not a loadable TFLite model ({_first_line(err)})",
                           "re-export it with zoo export --target tflite") from err
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        shape = tuple(int(d) for d in self.input["shape"])
        inferred = "NHWC" if shape[-1] in (1, 3) and shape[1] not in (1, 3) else "NCHW"
        if layout is not None and layout != inferred:
            raise ZooError(f"manifest says layout {layout} but {path.name} has input shape {shape}",
                           "the manifest belongs to another artifact: re-export")
        self.layout = inferred
        self.image_shape = shape[1:] if inferred == "NCHW" else (shape[3], shape[1], shape[2])

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        batch = np.asarray(batch, dtype=np.float32)
        if batch.ndim != 4 or tuple(batch.shape[1:]) != tuple(self.image_shape):
            raise ZooError(f"input of shape {batch.shape} does not fit the artifact's fixed shape "
                           f"(N, {', '.join(map(str, self.image_shape))})",
                           "run it tiled at the exported tile size (zoo run tiles automatically)")
        return np.concatenate([self._run_one(batch[i:i + 1]) for i in range(batch.shape[0])], axis=0)

    def _run_one(self, image: np.ndarray) -> np.ndarray:
        if self.layout == "NHWC":
            image = image.transpose(0, 2, 3, 1)
        dtype = self.input["dtype"]
        if dtype in (np.int8, np.uint8):
            scale, zero_point = self.input["quantization"]
            limits = np.iinfo(dtype)
            image = np.clip(np.round(image / scale) + zero_point, limits.min, limits.max).astype(dtype)
        self.interpreter.set_tensor(self.input["index"], np.ascontiguousarray(image, dtype=dtype))
        self.interpreter.invoke()
        output = self.interpreter.get_tensor(self.output["index"])
        if output.dtype in (np.int8, np.uint8):
            scale, zero_point = self.output["quantization"]
            output = (output.astype(np.float32) - zero_point) * np.float32(scale)
        output = output.astype(np.float32, copy=False)
        if self.layout == "NHWC":
            output = output.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(output)


TARGET = TFLiteTarget()
TARGETS = {TARGET.name: TARGET}
