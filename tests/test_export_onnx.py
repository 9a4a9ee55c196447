"""ONNX target: fp32 and QDQ int8 exports run in ONNX Runtime and match PyTorch.

Tiny random-init nets at 32x32 (a conv-only net and one with half instance normalisation, as in
HINet) plus HINet-Lite-S at 64x64; each export takes a few seconds on two CPU cores.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from torch import nn

from export_mobile.targets.base import ExportRequest
from zoo.errors import ZooError

pytestmark = pytest.mark.skipif(
    any(importlib.util.find_spec(p) is None for p in ("onnx", "onnxscript", "onnxruntime")),
    reason="onnx / onnxscript / onnxruntime (mobile extra) not installed")

TILE = 32


class ConvNet(nn.Module):
    """conv -> ReLU -> conv with a global residual and clamp: only delegate-friendly operators."""

    def __init__(self):
        super().__init__()
        self.head = nn.Conv2d(3, 8, 3, padding=1)
        self.tail = nn.Conv2d(8, 3, 3, padding=1)

    def forward(self, x):
        return (x + self.tail(torch.relu(self.head(x)))).clamp(0, 1)


class HalfInstanceNormNet(nn.Module):
    """HINet's half instance normalisation: InstanceNorm2d on half the channels, then concat."""

    def __init__(self):
        super().__init__()
        self.head = nn.Conv2d(3, 8, 3, padding=1)
        self.norm = nn.InstanceNorm2d(4, affine=True)
        self.tail = nn.Conv2d(8, 3, 3, padding=1)
        with torch.no_grad():  # non-trivial affine parameters, so a dropped affine would show
            self.norm.weight.uniform_(0.5, 1.5)
            self.norm.bias.uniform_(-0.2, 0.2)

    def forward(self, x):
        features = self.head(x)
        first, second = torch.chunk(features, 2, dim=1)
        features = torch.cat([self.norm(first), second], dim=1)
        return x + self.tail(nn.functional.leaky_relu(features, 0.2))


def _seeded(cls):
    torch.manual_seed(0)
    return cls().eval()


def _images(count, size=TILE, seed=1):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(count, 3, size, size, generator=generator)


def _psnr(a, b):
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


@pytest.fixture(scope="module")
def target():
    from export_mobile.targets.onnx import TARGET

    assert TARGET.available() is None
    return TARGET


@pytest.mark.parametrize("net", [ConvNet, HalfInstanceNormNet])
def test_fp32_matches_pytorch(target, tmp_path, net):
    model = _seeded(net)
    result = target.export(ExportRequest(model=model, example=_images(1), precision="fp32",
                                         out_path=tmp_path / "model.onnx"))
    assert result.path.is_file() and result.input_layout == "NCHW"
    runner = target.load_runner(result.path, {})
    images = _images(2, seed=7)
    output = runner(images.numpy())
    with torch.no_grad():
        expected = model(images).numpy()
    assert output.shape == expected.shape and output.dtype == np.float32
    assert np.abs(output - expected).max() < 1e-4
    # The batch of two ran image by image: the second image alone gives the same rows.
    assert np.array_equal(runner(images[1:].numpy()), output[1:])


def test_instance_norm_kept_as_one_onnx_op(target, tmp_path):
    from export_mobile.targets.onnx import op_counts

    target.export(ExportRequest(model=_seeded(HalfInstanceNormNet), example=_images(1), precision="fp32",
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

    model = _seeded(HalfInstanceNormNet)
    quantized = quantize_ptq(model, _images(1), "xnnpack", [_images(2, seed=s) for s in range(3)])
    return model, quantized


def test_int8_from_pt2e_matches_quantized_pytorch(target, tmp_path, pt2e_quantized):
    model, quantized = pt2e_quantized
    result = target.export(ExportRequest(model=model, example=_images(1), precision="int8",
                                         out_path=tmp_path / "model_int8.onnx", quantized=quantized))
    from export_mobile.targets.onnx import float_compute_ops, op_counts

    counts = op_counts(result.path)
    assert counts["QuantizeLinear"] >= 1 and counts["DequantizeLinear"] >= 2  # QDQ form
    # XNNPACK's quantizer leaves instance normalisation in float; the export says so.
    assert float_compute_ops(result.path)["InstanceNormalization"] == 1
    assert any("InstanceNormalization x1" in note for note in result.notes if note.startswith("ops left in float"))
    images = _images(2, seed=11)
    output = target.load_runner(result.path, {})(images.numpy())
    with torch.no_grad():
        expected = quantized(images).numpy()
    assert _psnr(output, expected) > 40
    # int8 storage: the weights are int8 initializers, so the file is smaller than the fp32 export.
    import onnx

    initializer_types = {init.data_type for init in onnx.load(str(result.path)).graph.initializer}
    assert onnx.TensorProto.INT8 in initializer_types


def test_int8_with_onnxruntime_quantizer(target, tmp_path):
    model = _seeded(HalfInstanceNormNet)
    calibration = [_images(2, seed=s).numpy() for s in range(4)]
    result = target.export(ExportRequest(model=model, example=_images(1), precision="int8",
                                         out_path=tmp_path / "ort_int8.onnx",
                                         options={"calibration": calibration}))
    from export_mobile.targets.onnx import float_compute_ops, op_counts

    assert op_counts(result.path)["QuantizeLinear"] >= 2
    # ORT's quantizer wraps every compute op, instance normalisation included, in DQ/Q pairs.
    assert not float_compute_ops(result.path)
    images = _images(2, seed=5)
    output = target.load_runner(result.path, {})(images.numpy())
    with torch.no_grad():
        expected = model(images).numpy()
    # No PyTorch twin of ORT's quantizer exists; 8-bit rounding alone keeps this near 40 dB.
    assert 30 < _psnr(output, expected) < 80


def test_bad_requests_raise_clear_errors(target, tmp_path):
    model = _seeded(ConvNet)
    with pytest.raises(ZooError, match="no precision 'fp16'"):
        target.export(ExportRequest(model=model, example=_images(1), precision="fp16", out_path=tmp_path / "a.onnx"))
    with pytest.raises(ZooError, match="calibration data or a quantized model"):
        target.export(ExportRequest(model=model, example=_images(1), precision="int8", out_path=tmp_path / "b.onnx"))
    with pytest.raises(ZooError, match="does not match the export shape"):
        target.export(ExportRequest(model=model, example=_images(1), precision="int8", out_path=tmp_path / "c.onnx",
                                    options={"calibration": [_images(1, size=16).numpy()]}))
    assert not (tmp_path / "b.onnx").exists() and not (tmp_path / "c.onnx").exists()


def test_runner_refuses_wrong_shape_and_corrupt_file(target, tmp_path):
    result = target.export(ExportRequest(model=_seeded(ConvNet), example=_images(1), precision="fp32",
                                         out_path=tmp_path / "model.onnx"))
    runner = target.load_runner(result.path, {})
    with pytest.raises(ZooError, match="fixed shape"):
        runner(_images(1, size=48).numpy())
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
    example = _images(1, size=64)
    result = target.export(ExportRequest(model=model, example=example, precision="fp32",
                                         out_path=tmp_path / "hinet-lite-s.onnx"))
    images = _images(1, size=64, seed=3)
    output = target.load_runner(result.path, {})(images.numpy())
    with torch.no_grad():
        expected = model(images).numpy()
    assert np.abs(expected - images.numpy()).mean() > 0.01  # not the identity
    assert np.abs(output - expected).max() < 1e-4
