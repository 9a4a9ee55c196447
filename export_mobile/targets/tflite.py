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

The flatbuffer edits (I/O dtype, clamp rewrite) and readers live in
:mod:`export_mobile.targets.tflite_flatbuffer`.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from export_mobile.targets.base import (ExportRequest, ExportResult, TargetOption, check_request, first_line,
                                        fixed_shape_batch, missing_packages_reason, option_bool, require_runnable)
from export_mobile.targets.tflite_flatbuffer import io_names, read_model, set_io_dtype, split_unit_clamps
from zoo.errors import ZooError

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


# ----------------------------------------------------------------------------- delegation report


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
    #: The ``--option``s this target reads (see the module docstring); others are refused.
    accepted_options = {
        "layout": TargetOption("the input and output layout; NHWC as Android bitmaps", ("NCHW", "NHWC")),
        "io": TargetOption("int8 input and output with a scale, or float32 ones", ("int8", "float"),
                           precisions=("int8",)),
        "split_clamps": TargetOption("write clamps to [0, 1] as MAXIMUM + MINIMUM so XNNPACK delegates them",
                                     parse=option_bool),
    }

    def available(self) -> str | None:
        return missing_packages_reason(("litert_torch", "ai_edge_litert", "ai_edge_quantizer", "flatbuffers"))

    def export(self, request: ExportRequest) -> ExportResult:
        """Write the ``.tflite`` at ``request.out_path``; see the module docstring for options."""
        check_request(self, request)
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
        split_clamps = request.options.get("split_clamps", True)  # a bool: check_request parsed it
        if split_clamps:
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
                                  "split_clamps": split_clamps, **signature}
        if request.precision == "int8":
            result.backend_options["io"] = io_kind
        try:
            result.partitions, result.ops_outside_delegate = delegation(out_path)
        except Exception as err:  # the artifact is fine; only the delegate report is missing
            result.notes.append(f"delegate partitions not measured: {first_line(err)}")
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
            raise ZooError(f"litert-torch conversion failed: {first_line(err)}",
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
        require_runnable(path, self.available())
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
    ``native_shapes``: the (input, output) tensor shapes the model declares, in its own layout.
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
            raise ZooError(f"{path.name} is not a loadable TFLite model ({first_line(err)})",
                           "re-export it with zoo export --target tflite") from err
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        shape = tuple(int(d) for d in self.input["shape"])
        self.native_shapes = (shape, tuple(int(d) for d in self.output["shape"]))
        inferred = "NHWC" if shape[-1] in (1, 3) and shape[1] not in (1, 3) else "NCHW"
        if layout is not None and layout != inferred:
            raise ZooError(f"manifest says layout {layout} but {path.name} has input shape {shape}",
                           "the manifest belongs to another artifact: re-export")
        self.layout = inferred
        self.name = path.name
        self.image_shape = shape[1:] if inferred == "NCHW" else (shape[3], shape[1], shape[2])

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        batch = fixed_shape_batch(batch, self.image_shape, self.name)
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
