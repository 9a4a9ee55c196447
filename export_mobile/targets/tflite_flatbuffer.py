"""Reading and patching ``.tflite`` flatbuffers (LiteRT's schema), for the TFLite target.

litert-torch writes a model whose boundary and clamp operators do not always suit an app or the
XNNPACK delegate; the functions here edit the flatbuffer directly, without changing the numbers
it computes:

* :func:`set_io_dtype`: int8 or float32 input/output, adding the missing QUANTIZE/DEQUANTIZE;
* :func:`split_unit_clamps`: ``RELU_0_TO_1`` rewritten as MAXIMUM + MINIMUM (delegated, bit-exact);

and read it: :func:`read_model`, :func:`io_names`, :func:`operator_names`, :func:`tensor_dtypes`.
Everything imports ``ai_edge_litert`` / ``flatbuffers`` only when called.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from zoo.errors import ZooError

#: Scale and zero point that map int8 -128..127 onto [0, 1] in 255 equal steps.
UNIT_RANGE_INT8 = {"scale": 1.0 / 255.0, "zero_point": -128}
#: Operators that only move data; a QUANTIZE/DEQUANTIZE found through them sets I/O parameters.
_LAYOUT_OPS = ("TRANSPOSE", "RESHAPE")


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


def _io_twin(subgraph, index: int, params: dict | None, old_suffix: bytes) -> int:
    """Append a twin of I/O tensor ``index`` (int8 with ``params``, or float32 when None) that takes over
    its name, the old tensor's name getting ``old_suffix``; returns the twin's index."""
    tensor = subgraph.tensors[index]
    twin = _int8_tensor(tensor, tensor.name, params) if params is not None else _float_tensor(tensor, tensor.name)
    subgraph.tensors.append(twin)
    tensor.name = bytes(tensor.name) + old_suffix
    return len(subgraph.tensors) - 1


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
    quantize, dequantize = schema.BuiltinOperator.QUANTIZE, schema.BuiltinOperator.DEQUANTIZE
    # The I/O types are float32 or int8 (checked above): a boundary op is needed where they differ from `kind`.
    if (subgraph.tensors[old_input].type == float32) == want_int8:
        params = (_input_params(model, subgraph, old_input) or dict(UNIT_RANGE_INT8)) if want_int8 else None
        new_input = _io_twin(subgraph, old_input, params, b"_dequantized" if want_int8 else b"_quantized")
        first_ops.append(_boundary_op(model, dequantize if want_int8 else quantize, [new_input], [old_input]))
    if (subgraph.tensors[old_output].type == float32) == want_int8:
        params = (_output_params(model, subgraph, old_output) or dict(UNIT_RANGE_INT8)) if want_int8 else None
        new_output = _io_twin(subgraph, old_output, params, b"_float" if want_int8 else b"_quantized")
        last_ops.append(_boundary_op(model, quantize if want_int8 else dequantize, [old_output], [new_output]))

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
