"""Core ML target (``.mlpackage``, ML Program, iOS 17 / macOS 14 deployment target).

Conversion: ``torch.export.export(model, (example,)).run_decompositions({})`` then
``coremltools.convert`` with a fixed input ``input`` (float32, NCHW) and output ``output``
(float32, NCHW).

* ``fp32``: float32 compute precision (runs on CPU and GPU; the Neural Engine needs fp16).
* ``fp16``: float16 compute precision: every op computes in fp16, with one ``cast`` after the
  float32 input and one before the float32 output (``options["io_dtype"] = "float16"`` makes the
  I/O fp16 too and drops the casts).
* ``int8`` (two kinds, ``options["int8_mode"]``):

  - ``"weights"`` (default when no quantized model is given): fp16 conversion, then
    ``coremltools.optimize.coreml.linear_quantize_weights`` (int8, symmetric, per output
    channel; weights with fewer than ``options["weight_threshold"]`` elements, default 0, stay
    fp16). Activations stay fp16. Needs no calibration data.
  - ``"w8a8"`` (default when ``request.quantized`` is given): the PT2E graph that ``quantize/``
    made with the ``coreml`` recipe (int8 weights, uint8 activations) converted as is;
    coremltools maps its quantize/dequantize pairs onto Core ML ``quantize``/``dequantize`` ops
    (activation quantization needs iOS 17, which is the deployment target here). Operators the
    quantizer left in float compute in fp16.

``options["compute_units"]``: ``all`` (default), ``cpu_only``, ``cpu_and_gpu``, ``cpu_and_ne``.
Core ML chooses the device when the app loads the model, so this is a recommendation recorded
in the package metadata and the manifest (apps pass it as ``MLModelConfiguration.computeUnits``).

Running needs macOS (Core ML's predict). On Linux :func:`structural_check` reads the saved
program instead: operators, dtypes, I/O shapes, and the ops that still compute in fp32 when fp16
was asked.
"""

from __future__ import annotations

import contextlib
import io
import platform
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from export_mobile.targets.base import (ExportRequest, ExportResult, TargetOption, check_request, first_line,
                                        fixed_shape_batch, missing_packages_reason, option_count, require_runnable)
from zoo.errors import ZooError

INPUT_NAME = "input"
OUTPUT_NAME = "output"
COMPUTE_UNITS = {"all": "ALL", "cpu_only": "CPU_ONLY", "cpu_and_gpu": "CPU_AND_GPU", "cpu_and_ne": "CPU_AND_NE"}
INT8_MODES = ("weights", "w8a8")
#: MIL ops that hold or decompress weights rather than compute on activations.
_WEIGHT_OP_PREFIXES = ("const", "constexpr_")
MACOS_MESSAGE = "Core ML prediction needs macOS (coremltools can convert on Linux but not run models)"


def _compute_units(request: ExportRequest) -> str:
    units = str(request.options.get("compute_units", "all")).lower()
    if units not in COMPUTE_UNITS:
        raise ZooError(f"unknown Core ML compute units {units!r}", f"use one of {', '.join(COMPUTE_UNITS)}")
    return units


def _int8_mode(request: ExportRequest) -> str:
    mode = request.options.get("int8_mode") or ("w8a8" if request.quantized is not None else "weights")
    if mode not in INT8_MODES:
        raise ZooError(f"unknown Core ML int8 mode {mode!r}", f"use one of {', '.join(INT8_MODES)}")
    if mode == "w8a8" and request.quantized is None:
        raise ZooError("Core ML W8A8 needs the PT2E-quantized model (coreml recipe)",
                       "run zoo quantize --recipe coreml with calibration data, or use int8_mode=weights")
    if mode == "w8a8" and "weight_threshold" in request.options:
        raise _threshold_with_w8a8()
    return mode


def _threshold_with_w8a8() -> ZooError:
    # W8A8 quantizes the weights the PT2E recipe chose; the threshold would be ignored.
    return ZooError("weight_threshold applies to int8_mode=weights, and this export is W8A8",
                    "drop --option weight_threshold, or pass --option int8_mode=weights")


@contextlib.contextmanager
def _quiet():
    """Silence coremltools' progress bars (written to stderr) during a conversion."""
    with contextlib.redirect_stderr(io.StringIO()):
        yield


class CoreMLTarget:
    """Core ML ML Program (.mlpackage) for iOS 17+: fp32, fp16, int8 weights or W8A8."""

    name = "coreml"
    suffix = ".mlpackage"
    precisions = ("fp32", "fp16", "int8")
    #: Weight-only int8 needs no PT2E model; W8A8 is used when one is passed anyway.
    int8_recipe = None
    supports_dynamic = False
    #: Distributions whose versions the manifest records.
    tool_packages = ("torch", "coremltools")
    #: The ``--option``s this target reads (see the module docstring); others are refused.
    accepted_options = {
        "compute_units": TargetOption("the devices Core ML may use, recorded for apps", tuple(COMPUTE_UNITS)),
        "int8_mode": TargetOption("int8 weights only, or W8A8 from a --quantized coreml model", INT8_MODES,
                                  precisions=("int8",)),
        "io_dtype": TargetOption("the input and output dtype; float16 needs fp16 or int8", ("float32", "float16")),
        "weight_threshold": TargetOption("weights with fewer elements stay fp16 with int8_mode=weights",
                                         parse=option_count, precisions=("int8",)),
    }

    def available(self) -> str | None:
        return missing_packages_reason(("coremltools",))

    @staticmethod
    def check_option_values(precision: str, options: dict) -> None:
        """Refuse ``weight_threshold`` with ``int8_mode=w8a8``, which would ignore it (the PT2E recipe chose the
        int8 weights); a W8A8 chosen by a given quantized model is refused in :func:`_int8_mode`."""
        if options.get("int8_mode") == "w8a8" and "weight_threshold" in options:
            raise _threshold_with_w8a8()

    def export(self, request: ExportRequest) -> ExportResult:
        """Write the ``.mlpackage`` folder at ``request.out_path``; see the module docstring."""
        shape = check_request(self, request)
        units = _compute_units(request)
        mode = _int8_mode(request) if request.precision == "int8" else None
        io_dtype = str(request.options.get("io_dtype", "float32"))
        if io_dtype not in ("float32", "float16") or (io_dtype == "float16" and request.precision == "fp32"):
            raise ZooError(f"io_dtype {io_dtype!r} does not fit precision {request.precision}",
                           "use float32 (any precision) or float16 (fp16/int8)")
        import coremltools as ct

        compute_precision = ct.precision.FLOAT32 if request.precision == "fp32" else ct.precision.FLOAT16
        source = request.quantized if mode == "w8a8" else request.model.eval()
        example = request.example.detach().float().contiguous()
        notes = [f"ML Program, deployment target iOS 17, compute precision "
                 f"{'fp32' if request.precision == 'fp32' else 'fp16'}, compute units {units} (set at load time)"]
        try:
            program = torch.export.export(source, (example,)).run_decompositions({})
        except Exception as err:
            raise ZooError(f"torch.export failed before Core ML conversion: {first_line(err)}",
                           "rewrite the unsupported operator (see docs/export_targets.md)") from err
        ml_dtype = np.float16 if io_dtype == "float16" else np.float32
        try:
            with _quiet():
                mlmodel = ct.convert(
                    program,
                    inputs=[ct.TensorType(name=INPUT_NAME, shape=shape, dtype=ml_dtype)],
                    outputs=[ct.TensorType(name=OUTPUT_NAME, dtype=ml_dtype)],
                    minimum_deployment_target=ct.target.iOS17,
                    convert_to="mlprogram",
                    compute_precision=compute_precision,
                    compute_units=getattr(ct.ComputeUnit, COMPUTE_UNITS[units]),
                    skip_model_load=True,
                )
        except Exception as err:
            raise ZooError(f"Core ML conversion failed: {first_line(err)}",
                           "rewrite the unsupported operator (see docs/export_targets.md) or use another target") from err
        if mode == "weights":
            mlmodel = self._quantize_weights(mlmodel, request.options.get("weight_threshold", 0))  # parsed by check_request
            notes.append("int8 weights (linear symmetric, per output channel), fp16 activations")
        elif mode == "w8a8":
            notes.append("W8A8 from the PT2E model (coreml recipe): int8 weights, uint8 activations; "
                         "float ops compute in fp16")
        if request.precision != "fp32":
            notes.append(_fp16_note(program, example))
        mlmodel.short_description = "Image restoration: float NCHW RGB in [0, 1] -> restored image"
        mlmodel.user_defined_metadata.update({
            "zoo.precision": request.precision if mode is None else f"int8-{mode}",
            "zoo.compute_units": units,
            "zoo.layout": "NCHW",
        })
        mlmodel.save(str(request.out_path))
        check = structural_check(request.out_path, request.precision)
        notes.append("ops: " + ", ".join(f"{op} x{n}" for op, n in sorted(check["ops"].items())))
        if check["fp32_compute_ops"] and request.precision != "fp32":
            notes.append("fp32 ops left: " + ", ".join(check["fp32_compute_ops"]))
        notes.append(MACOS_MESSAGE + "; the other targets' numbers are the proxy on Linux")
        dtype_name = "float16" if io_dtype == "float16" else "float32"
        options = {"compute_units": units, "deployment_target": "iOS17", "format": "mlprogram",
                   "compute_precision": "fp32" if request.precision == "fp32" else "fp16", "io_dtype": dtype_name}
        if mode:
            options["int8_mode"] = mode
        return ExportResult(path=Path(request.out_path), delegate=f"Core ML ({units})", partitions=None,
                            ops_outside_delegate=[], input_layout="NCHW", output_layout="NCHW",
                            input_dtype=dtype_name, output_dtype=dtype_name, notes=notes, input_name=INPUT_NAME,
                            output_name=OUTPUT_NAME, runtime="coreml", backend_options=options)

    @staticmethod
    def _quantize_weights(mlmodel, weight_threshold: int):
        import coremltools.optimize.coreml as cto

        config = cto.OptimizationConfig(global_config=cto.OpLinearQuantizerConfig(
            mode="linear_symmetric", dtype="int8", granularity="per_channel", weight_threshold=weight_threshold))
        with _quiet():
            return cto.linear_quantize_weights(mlmodel, config=config)

    def load_runner(self, path: Path, manifest: dict):
        """Core ML predict (macOS only); on other systems a ZooError naming the structural check."""
        require_runnable(path, self.available())
        if platform.system() != "Darwin":
            raise ZooError(f"{MACOS_MESSAGE}; this is {platform.system()}",
                           "run it on a Mac, or check it here with export_mobile.targets.coreml.structural_check")
        manifest = manifest or {}
        # The manifest keeps backend options under backend.options (export_mobile/manifest.py).
        units = str(((manifest.get("backend") or {}).get("options") or {}).get("compute_units")
                    or manifest.get("compute_units") or "all").lower()
        return CoreMLRunner(path, compute_units=units if units in COMPUTE_UNITS else "all")


def _fp16_note(program, example: torch.Tensor) -> str:
    try:
        report = fp16_range_report(program, example)
    except Exception as err:  # a report, not a requirement of the artifact
        return f"fp16 range not measured: {first_line(err)}"
    if report["overflowing"]:
        worst = report["overflowing"][0]
        return (f"WARNING: fp16 overflow: {len(report['overflowing'])} ops exceed 65504 on the example, worst "
                f"{worst['op']} in {worst['layer']} ({worst['max_abs']:.3g}); use fp32 compute or rescale that layer")
    return f"fp16 range ok on the example: largest activation {report['max_abs']:.3g} ({report['op']} in {report['layer']})"


class CoreMLRunner:
    """Core ML predict on macOS: float32 NCHW in [0, 1] of the package's shape in, float32 NCHW out."""

    def __init__(self, path: str | Path, compute_units: str = "all"):
        import coremltools as ct

        path = Path(path)
        try:
            self.model = ct.models.MLModel(str(path), compute_units=getattr(ct.ComputeUnit, COMPUTE_UNITS[compute_units]))
        except Exception as err:
            raise ZooError(f"{path.name} is not a loadable Core ML package ({first_line(err)})",
                           "re-export it with zoo export --target coreml") from err
        description = self.model.get_spec().description
        self.input_name = description.input[0].name
        self.output_name = description.output[0].name
        self.input_shape = tuple(description.input[0].type.multiArrayType.shape)
        self.name = path.name
        from coremltools.proto import FeatureTypes_pb2

        self.input_fp16 = description.input[0].type.multiArrayType.dataType == FeatureTypes_pb2.ArrayFeatureType.FLOAT16

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        batch = fixed_shape_batch(batch, self.input_shape[1:], self.name)
        outputs = []
        for i in range(batch.shape[0]):
            image = batch[i:i + 1].astype(np.float16 if self.input_fp16 else np.float32)
            outputs.append(np.asarray(self.model.predict({self.input_name: image})[self.output_name], np.float32))
        return np.concatenate(outputs, axis=0)


# ----------------------------------------------------------------------------- fp16 range

#: Largest finite float16 value; activations beyond it become inf in fp16 compute.
FP16_MAX = 65504.0


def fp16_range_report(program_or_model, example: torch.Tensor, limit: float = FP16_MAX) -> dict:
    """Largest |activation| of every operator in float32, to find layers that overflow fp16.

    Core ML's fp16 compute (GPU, Neural Engine) turns any activation above 65504 into inf; on
    Linux the package cannot run, so the float32 graph is run here with every intermediate
    recorded. ``program_or_model``: an ``nn.Module`` (exported first) or an ``ExportedProgram``;
    ``example``: the (1, 3, H, W) input in [0, 1].

    Returns ``{"max_abs": float, "layer": str, "op": str, "overflowing": [{"layer", "op",
    "max_abs"}, ...]}`` where ``layer`` is the module path (``encoder.0.conv_1``) the op belongs
    to and ``overflowing`` lists every op whose output exceeds ``limit``, largest first.
    """
    program = program_or_model
    if isinstance(program_or_model, torch.nn.Module):
        program = torch.export.export(program_or_model.eval(), (example,))
    graph_module = program.module()
    peaks: list[tuple[float, str, str]] = []

    class _Recorder(torch.fx.Interpreter):
        def run_node(self, node):
            value = super().run_node(node)
            if node.op == "call_function" and isinstance(value, torch.Tensor) and value.is_floating_point():
                stack = node.meta.get("nn_module_stack") or {}
                layer = next(reversed(stack.values()))[0] if stack else ""
                peaks.append((float(value.detach().abs().max()) if value.numel() else 0.0, layer or "(top level)",
                              str(node.target).split(".")[-2] if "." in str(node.target) else str(node.target)))
            return value

    with torch.no_grad():
        _Recorder(graph_module).run(example.detach().float())
    if not peaks:
        return {"max_abs": 0.0, "layer": "", "op": "", "overflowing": []}
    top = max(peaks)
    overflowing = sorted((p for p in peaks if not p[0] <= limit), reverse=True)
    return {"max_abs": top[0], "layer": top[1], "op": top[2],
            "overflowing": [{"layer": layer, "op": op, "max_abs": peak} for peak, layer, op in overflowing]}


# ----------------------------------------------------------------------------- structural check


def _dtype_name(value: int) -> str:
    from coremltools.proto import MIL_pb2

    try:
        return MIL_pb2.DataType.Name(value)
    except ValueError:
        return str(value)


def _feature(description) -> dict:
    from coremltools.proto import FeatureTypes_pb2

    array = description.type.multiArrayType
    return {"name": description.name, "shape": [int(d) for d in array.shape],
            "dtype": FeatureTypes_pb2.ArrayFeatureType.ArrayDataType.Name(array.dataType)}


def structural_check(path: str | Path, precision: str) -> dict:
    """What the saved Core ML program computes, read from the package (works on Linux).

    Args:
        path: the ``.mlpackage`` folder.
        precision: the precision the artifact was asked for: ``fp32``, ``fp16`` or ``int8``.
    Returns a JSON-ready dict:
        ``input`` / ``output``: name, shape, dtype (``FLOAT32``/``FLOAT16``);
        ``ops``: compute op type -> count (weights and constants excluded);
        ``compute_dtypes``: dtype of compute op outputs -> count;
        ``weight_dtypes``: dtype of stored weights -> count (``constexpr_*`` ops report their
        stored dtype, e.g. ``INT8`` for quantized weights);
        ``fp32_compute_ops``: ``"type name"`` of compute ops with a float32 output, except the
        casts at the float32 input and output (empty for a clean fp16/int8 program);
        ``ok``: True when nothing contradicts ``precision`` (no fp32 compute op for fp16/int8;
        int8 weights or int8/uint8 quantize ops for int8); ``problems``: why not;
        ``numeric_check``: where the numbers can be checked (macOS only).
    Raises:
        ZooError: when the package is missing or unreadable.
    """
    import coremltools as ct

    path = Path(path)
    if not path.exists():
        raise ZooError(f"Core ML package {path} does not exist", "check the path")
    try:
        spec = ct.utils.load_spec(str(path))
    except Exception as err:
        raise ZooError(f"{path.name} is not a readable Core ML package ({first_line(err)})",
                       "re-export it with zoo export --target coreml") from err
    if spec.WhichOneof("Type") != "mlProgram":
        raise ZooError(f"{path.name} is not an ML Program", "re-export it with zoo export --target coreml")
    function = spec.mlProgram.functions["main"]
    block = function.block_specializations[function.opset]
    input_names = {value.name for value in function.inputs}
    output_names = set(block.outputs)

    ops: Counter = Counter()
    compute_dtypes: Counter = Counter()
    weight_dtypes: Counter = Counter()
    fp32_compute: list[str] = []
    quantized_activations = 0
    for op in block.operations:
        dtypes = [_dtype_name(out.type.tensorType.dataType) for out in op.outputs]
        if op.type.startswith(_WEIGHT_OP_PREFIXES):
            if op.type.startswith("constexpr_"):
                stored = [_dtype_name(arg.arguments[0].value.type.tensorType.dataType)
                          for name, arg in op.inputs.items() if name in ("data", "quantized_data")
                          and arg.arguments and arg.arguments[0].HasField("value")]
                # The stored dtype sits in the op's attributes for older constexpr ops.
                for name in ("quantized_data", "data"):
                    if name in op.attributes:
                        stored.append(_dtype_name(op.attributes[name].type.tensorType.dataType))
                weight_dtypes[stored[0] if stored else dtypes[0]] += 1
            elif dtypes and dtypes[0].startswith(("FLOAT", "INT8", "UINT8")) and _is_tensor_const(op):
                weight_dtypes[dtypes[0]] += 1
            continue
        ops[op.type] += 1
        for dtype in dtypes:
            compute_dtypes[dtype] += 1
        if op.type == "quantize":
            quantized_activations += 1
        if "FLOAT32" in dtypes:
            operand_names = {arg.name for arg_list in op.inputs.values() for arg in arg_list.arguments if arg.name}
            io_cast = op.type == "cast" and (operand_names & input_names or
                                             {out.name for out in op.outputs} & output_names)
            if not io_cast:
                fp32_compute.append(f"{op.type} {op.outputs[0].name}")

    problems = []
    if precision in ("fp16", "int8") and fp32_compute:
        problems.append(f"{len(fp32_compute)} ops still compute in float32")
    if precision == "int8" and not (weight_dtypes.get("INT8") or quantized_activations):
        problems.append("no int8 weights or quantized activations found")
    if precision == "fp32" and compute_dtypes.get("FLOAT16"):
        problems.append("float16 ops found in an fp32 program")
    return {
        "input": _feature(spec.description.input[0]),
        "output": _feature(spec.description.output[0]),
        "deployment_target_spec_version": int(spec.specificationVersion),
        "opset": function.opset,
        "ops": dict(ops),
        "compute_dtypes": dict(compute_dtypes),
        "weight_dtypes": dict(weight_dtypes),
        "quantize_ops": quantized_activations,
        "fp32_compute_ops": fp32_compute,
        "ok": not problems,
        "problems": problems,
        "numeric_check": MACOS_MESSAGE if platform.system() != "Darwin" else "run CoreMLRunner",
    }


def _is_tensor_const(op) -> bool:
    """A ``const`` op holding a tensor with at least one dimension (a weight, not a scalar option)."""
    return any(len(out.type.tensorType.dimensions) > 0 for out in op.outputs)


TARGET = CoreMLTarget()
TARGETS = {TARGET.name: TARGET}
