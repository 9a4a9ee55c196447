"""TFLite target: fp32 / fp16-weight / int8 .tflite files run in the LiteRT Interpreter (XNNPACK)
and match PyTorch; int8 I/O, NHWC I/O and the delegate report are checked against the file.

Tiny random-init nets at 32x32 and HINet-Lite-S at 64x64; a conversion takes 3-8 s on two cores.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from export_mobile.targets.base import ExportRequest
from tests.helpers import TILE, ConvNet, HalfInstanceNormNet, psnr_db, random_images, seeded
from zoo.errors import ZooError

pytestmark = pytest.mark.skipif(
    any(importlib.util.find_spec(p) is None for p in ("litert_torch", "ai_edge_litert", "ai_edge_quantizer")),
    reason="litert-torch / ai-edge-litert (mobile extra) not installed")


def _interpreter_io(path):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    return interpreter.get_input_details()[0], interpreter.get_output_details()[0]


@pytest.fixture(scope="module")
def target():
    from export_mobile.targets.tflite import TARGET

    assert TARGET.available() is None
    return TARGET


@pytest.mark.parametrize("net", [ConvNet, HalfInstanceNormNet])
def test_fp32_matches_pytorch(target, tmp_path, net):
    model = seeded(net)
    result = target.export(ExportRequest(model=model, example=random_images(1), precision="fp32",
                                         out_path=tmp_path / "model.tflite"))
    images = random_images(2, seed=7)
    output = target.load_runner(result.path, {})(images.numpy())
    with torch.no_grad():
        expected = model(images).numpy()
    assert output.shape == expected.shape and output.dtype == np.float32
    assert np.abs(output - expected).max() < 1e-4
    model_input, _ = _interpreter_io(result.path)
    assert list(model_input["shape"]) == [1, 3, TILE, TILE] and model_input["dtype"] == np.float32


def test_nhwc_io(target, tmp_path):
    model = seeded(HalfInstanceNormNet)
    result = target.export(ExportRequest(model=model, example=random_images(1), precision="fp32",
                                         out_path=tmp_path / "nhwc.tflite", options={"layout": "NHWC"}))
    assert result.input_layout == result.output_layout == "NHWC"
    model_input, model_output = _interpreter_io(result.path)
    assert list(model_input["shape"]) == [1, TILE, TILE, 3] and list(model_output["shape"]) == [1, TILE, TILE, 3]
    images = random_images(1, seed=3)
    # Feed the interpreter by hand in NHWC: the file itself must take channels-last data.
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(result.path))
    interpreter.allocate_tensors()
    interpreter.set_tensor(model_input["index"], images.permute(0, 2, 3, 1).contiguous().numpy())
    interpreter.invoke()
    by_hand = interpreter.get_tensor(model_output["index"]).transpose(0, 3, 1, 2)
    with torch.no_grad():
        expected = model(images).numpy()
    assert np.abs(by_hand - expected).max() < 1e-4
    # The runner transposes on its own, and refuses a manifest that names the other layout.
    assert np.abs(target.load_runner(result.path, {"input_layout": "NHWC"})(images.numpy()) - expected).max() < 1e-4
    with pytest.raises(ZooError, match="manifest says layout NCHW"):
        target.load_runner(result.path, {"input_layout": "NCHW"})


def test_delegate_report_and_clamp_split(target, tmp_path):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from export_mobile.targets.tflite_flatbuffer import operator_names

    plain = target.export(ExportRequest(model=seeded(ConvNet, clamp=False), example=random_images(1), precision="fp32",
                                        out_path=tmp_path / "plain.tflite"))
    assert plain.partitions == 1 and plain.ops_outside_delegate == []
    # litert-torch turns clamp(0, 1) into RELU_0_TO_1, which XNNPACK (ai-edge-litert 2.3) does not run.
    model = seeded(ConvNet)
    unsplit = target.export(ExportRequest(model=model, example=random_images(1), precision="fp32",
                                          out_path=tmp_path / "unsplit.tflite", options={"split_clamps": False}))
    assert "RELU_0_TO_1" in operator_names(unsplit.path)
    assert unsplit.partitions == 1 and unsplit.ops_outside_delegate == ["RELU_0_TO_1"]
    # By default it becomes MAXIMUM + MINIMUM: all delegated, same numbers bit for bit.
    split = target.export(ExportRequest(model=model, example=random_images(1), precision="fp32",
                                        out_path=tmp_path / "split.tflite"))
    names = operator_names(split.path)
    assert "RELU_0_TO_1" not in names and names[-2:] == ["MAXIMUM", "MINIMUM"]
    assert split.partitions == 1 and split.ops_outside_delegate == []
    images = random_images(2, seed=21) * 1.6 - 0.3  # values outside [0, 1], so the clamp acts on both sides
    first = target.load_runner(unsplit.path, {})(images.numpy())
    second = target.load_runner(split.path, {})(images.numpy())
    assert np.array_equal(first, second) and first.min() == 0 and first.max() == 1
    with torch.no_grad():
        assert np.abs(second - model(images).numpy()).max() < 1e-4
    # Without the default delegate the interpreter lists no DELEGATE node at all.
    bare = Interpreter(model_path=str(split.path),
                       experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    bare.allocate_tensors()
    assert all(op["op_name"] != "DELEGATE" for op in bare._get_ops_details())


def test_fp16_weights(target, tmp_path):
    from export_mobile.targets.tflite_flatbuffer import tensor_dtypes

    model = seeded(HalfInstanceNormNet)
    fp32 = target.export(ExportRequest(model=model, example=random_images(1), precision="fp32",
                                       out_path=tmp_path / "fp32.tflite"))
    fp16 = target.export(ExportRequest(model=model, example=random_images(1), precision="fp16",
                                       out_path=tmp_path / "fp16.tflite"))
    dtypes = tensor_dtypes(fp16.path)
    assert dtypes.get("FLOAT16") == 2 and "FLOAT16" not in tensor_dtypes(fp32.path)  # the two conv weights
    assert fp16.path.stat().st_size < fp32.path.stat().st_size
    images = random_images(2, seed=9)
    output = target.load_runner(fp16.path, {})(images.numpy())
    with torch.no_grad():
        expected = model(images).numpy()
    assert np.isfinite(output).all()
    # fp16 weights: relative rounding 2^-11 per weight, far below 8-bit image steps.
    assert 1e-6 < np.abs(output - expected).max() < 1e-2


@pytest.fixture(scope="module")
def quantized_convnet():
    from quantize.ptq import quantize_ptq

    model = seeded(ConvNet)
    return model, quantize_ptq(model, random_images(1), "tflite", [random_images(2, seed=s) for s in range(3)])


def _first_activation_quantization(graph_module):
    for node in graph_module.graph.nodes:
        if node.op == "call_function" and "quantize_per_tensor" in str(node.target) and "dequantize" not in str(node.target):
            return float(node.args[1]), int(node.args[2])
    raise AssertionError("no activation quantize node")


@pytest.mark.parametrize("io", ["int8", "float"])
def test_int8_matches_quantized_pytorch(target, tmp_path, quantized_convnet, io):
    model, quantized = quantized_convnet
    result = target.export(ExportRequest(model=model, example=random_images(1), precision="int8", quantized=quantized,
                                         out_path=tmp_path / f"int8_{io}.tflite", options={"io": io}))
    model_input, model_output = _interpreter_io(result.path)
    # The manifest's tensor names are those the interpreter reports.
    assert (result.input_name, result.output_name) == (model_input["name"], model_output["name"])
    assert result.runtime == "litert" and result.backend_options["io"] == io
    if io == "int8":
        assert model_input["dtype"] == np.int8 and model_output["dtype"] == np.int8
        assert result.input_dtype == result.output_dtype == "int8"
        scale, zero_point = model_input["quantization"]
        assert result.input_quantization == {"scale": pytest.approx(scale), "zero_point": zero_point}
        # The input uses the scale PT2E calibrated for the first activation, so no extra rounding.
        assert (scale, zero_point) == pytest.approx(_first_activation_quantization(quantized))
        scale, zero_point = model_output["quantization"]
        assert result.output_quantization == {"scale": pytest.approx(scale), "zero_point": zero_point}
    else:
        assert model_input["dtype"] == np.float32 and result.input_quantization is None
    images = random_images(2, seed=13)
    output = target.load_runner(result.path, {})(images.numpy())
    with torch.no_grad():
        expected = quantized(images).numpy()
    assert psnr_db(output, expected) > 40


def _self_check_db(result):
    (note,) = [note for note in result.notes if note.startswith("int8 self-check")]
    return float(note.split("PSNR ")[1].split(" dB")[0]), "WARNING" in note


def test_int8_half_instance_norm_matches_pt2e_and_self_check_flags_clipping(target, tmp_path, quantized_convnet):
    """HINet's half instance norm (chunk -> InstanceNorm on one half -> cat) converts correctly
    in int8 thanks to the recipe's concat annotation (litert-torch alone: about 15 dB), and the
    export's self-check reports what an independent comparison measures.

    With int8 output the file's output range is [0, 1] (255 steps), the range of the zoo's
    clamped models; this random net is not clamped and overshoots to about [-0.8, 1.4], so
    its int8-output file clips and the self-check must say so.
    """
    from quantize.ptq import quantize_ptq

    model = seeded(HalfInstanceNormNet)
    quantized = quantize_ptq(model, random_images(1), "tflite", [random_images(2, seed=s) for s in range(3)])
    example = random_images(1)
    cases = {"hin-float-io": (model, quantized, "float"), "hin-int8-io": (model, quantized, "int8"),
             "conv": (*quantized_convnet, "int8")}
    measured = {}
    for name, (net, graph, io_kind) in cases.items():
        result = target.export(ExportRequest(model=net, example=example, precision="int8", quantized=graph,
                                             out_path=tmp_path / f"{name}.tflite", options={"io": io_kind}))
        reported, warned = _self_check_db(result)
        with torch.no_grad():
            measured[name] = psnr_db(target.load_runner(result.path, {})(example.numpy()), graph(example).numpy())
        assert reported == pytest.approx(measured[name], abs=0.1)
        assert warned == (measured[name] <= 40)
    assert measured["hin-float-io"] > 40 and measured["conv"] > 40
    assert measured["hin-int8-io"] < 30


def test_bad_requests_raise_clear_errors(target, tmp_path, quantized_convnet):
    model, quantized = quantized_convnet
    example = random_images(1)
    with pytest.raises(ZooError, match="no precision 'int4'"):
        target.export(ExportRequest(model=model, example=example, precision="int4", out_path=tmp_path / "a.tflite"))
    with pytest.raises(ZooError, match="calibration data or a quantized model"):
        target.export(ExportRequest(model=model, example=example, precision="int8", out_path=tmp_path / "b.tflite"))
    with pytest.raises(ZooError, match="unknown io"):
        target.export(ExportRequest(model=model, example=example, precision="int8", quantized=quantized,
                                    out_path=tmp_path / "c.tflite", options={"io": "uint8"}))
    with pytest.raises(ZooError, match="unknown layout"):
        target.export(ExportRequest(model=model, example=example, precision="fp32", out_path=tmp_path / "d.tflite",
                                    options={"layout": "CHWN"}))
    assert not list(tmp_path.iterdir())


def test_runner_refuses_wrong_shape_and_corrupt_file(target, tmp_path):
    result = target.export(ExportRequest(model=seeded(ConvNet), example=random_images(1), precision="fp32",
                                         out_path=tmp_path / "model.tflite"))
    runner = target.load_runner(result.path, {})
    with pytest.raises(ZooError, match="fixed shape"):
        runner(random_images(1, size=48).numpy())
    data = result.path.read_bytes()
    truncated = tmp_path / "truncated.tflite"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ZooError, match="not a loadable TFLite model"):
        target.load_runner(truncated, {})
    not_tflite = tmp_path / "text.tflite"
    not_tflite.write_bytes(b"hello, this is not a model at all")
    with pytest.raises(ZooError, match="not a TFLite flatbuffer"):
        target.load_runner(not_tflite, {})


def test_hinet_lite_s(target, tmp_path):
    from quantize.ptq import quantize_ptq
    from zoo.registry import create_model

    torch.manual_seed(0)
    model, card = create_model("hinet-lite-s", untrained=True)
    # Untrained, the tail conv is zero and the model is the identity; random tail weights make
    # the output depend on every layer.
    model.tail.reset_parameters()
    size = 64
    assert size % card.size_multiple == 0
    result = target.export(ExportRequest(model=model, example=random_images(1, size=size), precision="fp32",
                                         out_path=tmp_path / "fp32.tflite"))
    images = random_images(1, size=size, seed=3)
    with torch.no_grad():
        expected = model(images).numpy()
    assert np.abs(expected - images.numpy()).mean() > 0.01  # not the identity
    assert np.abs(target.load_runner(result.path, {})(images.numpy()) - expected).max() < 1e-4
    assert result.partitions == 1 and result.ops_outside_delegate == []  # all of it in XNNPACK

    quantized = quantize_ptq(model, random_images(1, size=size), "tflite", [random_images(2, size=size, seed=s) for s in range(2)])
    result = target.export(ExportRequest(model=model, example=random_images(1, size=size), precision="int8",
                                         quantized=quantized, out_path=tmp_path / "int8.tflite"))
    with torch.no_grad():
        expected = quantized(images).numpy()
    assert psnr_db(target.load_runner(result.path, {})(images.numpy()), expected) > 40
    assert result.input_dtype == "int8" and result.partitions == 1 and result.ops_outside_delegate == []
