"""ONNX target: fp32 and QDQ int8 exports run in ONNX Runtime and match PyTorch.

Tiny random-init nets at 32x32 (a conv-only net and one with half instance normalisation, as in
HINet) plus HINet-Lite-S at 64x64; each export takes a few seconds on two CPU cores.
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
    any(importlib.util.find_spec(p) is None for p in ("onnx", "onnxscript", "onnxruntime")),
    reason="onnx / onnxscript / onnxruntime (mobile extra) not installed")


@pytest.fixture(scope="module")
def target():
    from export_mobile.targets.onnx import TARGET

    assert TARGET.available() is None
    return TARGET


@pytest.mark.parametrize("net", [ConvNet, HalfInstanceNormNet])
def test_fp32_matches_pytorch(target, tmp_path, net):
    model = seeded(net)
    result = target.export(ExportRequest(model=model, example=random_images(1), precision="fp32",
                                         out_path=tmp_path / "model.onnx"))
    assert result.path.is_file() and result.input_layout == "NCHW"
    runner = target.load_runner(result.path, {})
    images = random_images(2, seed=7)
    output = runner(images.numpy())
    with torch.no_grad():
        expected = model(images).numpy()
    assert output.shape == expected.shape and output.dtype == np.float32
    assert np.abs(output - expected).max() < 1e-4
    # The batch of two ran image by image: the second image alone gives the same rows.
    assert np.array_equal(runner(images[1:].numpy()), output[1:])


def test_instance_norm_kept_as_one_onnx_op(target, tmp_path):
    from export_mobile.targets.onnx import op_counts

    target.export(ExportRequest(model=seeded(HalfInstanceNormNet), example=random_images(1), precision="fp32",
                                out_path=tmp_path / "model.onnx"))
    import onnx

    model = onnx.load(str(tmp_path / "model.onnx"))
    assert max(opset.version for opset in model.opset_import if opset.domain in ("", "ai.onnx")) >= 18
    assert [i.name for i in model.graph.input] == ["input"] and [o.name for o in model.graph.output] == ["output"]
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, TILE, TILE]  # fixed shape: no symbolic dimension
    assert op_counts(tmp_path / "model.onnx")["InstanceNormalization"] == 1


@pytest.fixture(scope="module")
def pt2e_quantized():
    from quantize.ptq import quantize_ptq

    model = seeded(HalfInstanceNormNet)
    quantized = quantize_ptq(model, random_images(1), "xnnpack", [random_images(2, seed=s) for s in range(3)])
    return model, quantized


def test_int8_from_pt2e_matches_quantized_pytorch(target, tmp_path, pt2e_quantized):
    model, quantized = pt2e_quantized
    result = target.export(ExportRequest(model=model, example=random_images(1), precision="int8",
                                         out_path=tmp_path / "model_int8.onnx", quantized=quantized))
    from export_mobile.targets.onnx import float_compute_ops, op_counts

    counts = op_counts(result.path)
    assert counts["QuantizeLinear"] >= 1 and counts["DequantizeLinear"] >= 2  # QDQ form
    # XNNPACK's quantizer leaves instance normalisation in float; the export says so.
    assert float_compute_ops(result.path)["InstanceNormalization"] == 1
    assert any("InstanceNormalization x1" in note for note in result.notes if note.startswith("ops left in float"))
    images = random_images(2, seed=11)
    output = target.load_runner(result.path, {})(images.numpy())
    with torch.no_grad():
        expected = quantized(images).numpy()
    assert psnr_db(output, expected) > 40
    # int8 storage: the weights are int8 initializers, so the file is smaller than the fp32 export.
    import onnx

    initializer_types = {init.data_type for init in onnx.load(str(result.path)).graph.initializer}
    assert onnx.TensorProto.INT8 in initializer_types


def test_int8_with_onnxruntime_quantizer(target, tmp_path):
    model = seeded(HalfInstanceNormNet)
    calibration = [random_images(2, seed=s).numpy() for s in range(4)]
    result = target.export(ExportRequest(model=model, example=random_images(1), precision="int8",
                                         out_path=tmp_path / "ort_int8.onnx",
                                         options={"calibration": calibration}))
    from export_mobile.targets.onnx import float_compute_ops, op_counts

    assert op_counts(result.path)["QuantizeLinear"] >= 2
    # ORT's quantizer wraps every compute op, instance normalisation included, in DQ/Q pairs.
    assert not float_compute_ops(result.path)
    images = random_images(2, seed=5)
    output = target.load_runner(result.path, {})(images.numpy())
    with torch.no_grad():
        expected = model(images).numpy()
    # No PyTorch twin of ORT's quantizer exists; 8-bit rounding alone keeps this near 40 dB.
    assert 30 < psnr_db(output, expected) < 80


def test_bad_requests_raise_clear_errors(target, tmp_path):
    model = seeded(ConvNet)
    with pytest.raises(ZooError, match="no precision 'fp16'"):
        target.export(ExportRequest(model=model, example=random_images(1), precision="fp16", out_path=tmp_path / "a.onnx"))
    with pytest.raises(ZooError, match="calibration data or a quantized model"):
        target.export(ExportRequest(model=model, example=random_images(1), precision="int8", out_path=tmp_path / "b.onnx"))
    with pytest.raises(ZooError, match="does not match the export shape"):
        target.export(ExportRequest(model=model, example=random_images(1), precision="int8", out_path=tmp_path / "c.onnx",
                                    options={"calibration": [random_images(1, size=16).numpy()]}))
    assert not (tmp_path / "b.onnx").exists() and not (tmp_path / "c.onnx").exists()


def test_runner_refuses_wrong_shape_and_corrupt_file(target, tmp_path):
    result = target.export(ExportRequest(model=seeded(ConvNet), example=random_images(1), precision="fp32",
                                         out_path=tmp_path / "model.onnx"))
    runner = target.load_runner(result.path, {})
    with pytest.raises(ZooError, match="fixed shape"):
        runner(random_images(1, size=48).numpy())
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(result.path.read_bytes()[: result.path.stat().st_size // 2])
    with pytest.raises(ZooError, match="not a loadable ONNX model"):
        target.load_runner(corrupt, {})


def test_hinet_lite_s_fp32(target, tmp_path):
    from zoo.registry import create_model

    torch.manual_seed(0)
    model, card = create_model("hinet-lite-s", untrained=True)
    # Untrained, the tail conv is zero and the model is the identity; random tail weights make
    # the output depend on every layer.
    model.tail.reset_parameters()
    example = random_images(1, size=64)
    result = target.export(ExportRequest(model=model, example=example, precision="fp32",
                                         out_path=tmp_path / "hinet-lite-s.onnx"))
    images = random_images(1, size=64, seed=3)
    output = target.load_runner(result.path, {})(images.numpy())
    with torch.no_grad():
        expected = model(images).numpy()
    assert np.abs(expected - images.numpy()).mean() > 0.01  # not the identity
    assert np.abs(output - expected).max() < 1e-4
