"""Core ML target: .mlpackage conversion on Linux, the structural check of the saved program, and
the clear "needs macOS" error of the runner (numeric checks run on macOS only, see the last test).

Tiny random-init nets at 32x32 and HINet-Lite-S at 64x64; a conversion takes 1-3 s. The W8A8
test is slow: ExecuTorch's CoreMLQuantizer traces ~400 pattern graphs on first use (minutes).
"""

from __future__ import annotations

import importlib.util
import json
import platform

import numpy as np
import pytest
import torch
from torch import nn

from export_mobile.targets.base import ExportRequest
from tests.helpers import TILE, ConvNet, HalfInstanceNormNet, random_images, seeded
from zoo.errors import ZooError

pytestmark = pytest.mark.skipif(importlib.util.find_spec("coremltools") is None,
                                reason="coremltools (mobile extra) not installed")
on_macos = platform.system() == "Darwin"


@pytest.fixture(scope="module")
def target():
    from export_mobile.targets.coreml import TARGET

    assert TARGET.available() is None
    return TARGET


def _export(target, tmp_path, net, precision, name=None, **options):
    path = tmp_path / f"{name or precision}.mlpackage"
    return target.export(ExportRequest(model=seeded(net), example=random_images(1), precision=precision,
                                       out_path=path, options=options))


@pytest.mark.parametrize("net", [ConvNet, HalfInstanceNormNet])
def test_fp16_program_is_fp16(target, tmp_path, net):
    from export_mobile.targets.coreml import structural_check

    result = _export(target, tmp_path, net, "fp16")
    assert (result.path / "Manifest.json").is_file()  # an .mlpackage folder
    check = structural_check(result.path, "fp16")
    assert check["ok"] and check["problems"] == [] and check["fp32_compute_ops"] == []
    assert check["input"] == {"name": "input", "shape": [1, 3, TILE, TILE], "dtype": "FLOAT32"}
    assert check["output"] == {"name": "output", "shape": [1, 3, TILE, TILE], "dtype": "FLOAT32"}
    # Only the two casts at the float32 I/O produce float32; every weight is stored in fp16.
    assert check["ops"]["cast"] == 2 and check["compute_dtypes"]["FLOAT32"] == 1
    assert set(check["weight_dtypes"]) == {"FLOAT16"} and check["weight_dtypes"]["FLOAT16"] >= 4
    assert check["ops"]["conv"] == 2
    if net is HalfInstanceNormNet:
        assert check["ops"]["instance_norm"] == 1 and check["ops"]["concat"] == 1
    json.dumps(check)  # the matrix stores it as is


def test_fp16_io_drops_the_casts(target, tmp_path):
    from export_mobile.targets.coreml import structural_check

    result = _export(target, tmp_path, ConvNet, "fp16", io_dtype="float16")
    check = structural_check(result.path, "fp16")
    assert result.input_dtype == "float16" and check["input"]["dtype"] == "FLOAT16"
    assert "cast" not in check["ops"] and set(check["compute_dtypes"]) == {"FLOAT16"}


def test_fp32_program_and_the_check_failing(target, tmp_path):
    from export_mobile.targets.coreml import structural_check

    result = _export(target, tmp_path, HalfInstanceNormNet, "fp32")
    check = structural_check(result.path, "fp32")
    assert check["ok"] and set(check["compute_dtypes"]) == {"FLOAT32"}
    # Asked whether this fp32 program is fp16, the check lists every float32 compute op.
    as_fp16 = structural_check(result.path, "fp16")
    assert not as_fp16["ok"] and len(as_fp16["fp32_compute_ops"]) == sum(check["ops"].values())
    assert "conv conv2d" in as_fp16["fp32_compute_ops"]


def test_int8_weights(target, tmp_path):
    from export_mobile.targets.coreml import structural_check

    result = _export(target, tmp_path, HalfInstanceNormNet, "int8")
    check = structural_check(result.path, "int8")
    assert check["ok"] and check["fp32_compute_ops"] == []
    # The two conv weights are stored as int8; biases and the norm's affine stay fp16.
    assert check["weight_dtypes"]["INT8"] == 2
    fp16 = _export(target, tmp_path, HalfInstanceNormNet, "fp16", name="reference")
    # Bigger weights would show the 2x saving; here at least the package must not grow.
    size = lambda p: sum(f.stat().st_size for f in p.rglob("*") if f.is_file())  # noqa: E731
    assert size(result.path) <= size(fp16.path)


def test_compute_units_and_metadata(target, tmp_path):
    import coremltools as ct

    result = _export(target, tmp_path, ConvNet, "fp16", compute_units="cpu_and_ne")
    assert result.delegate == "Core ML (cpu_and_ne)"
    metadata = ct.models.MLModel(str(result.path), skip_model_load=True).user_defined_metadata
    assert metadata["zoo.compute_units"] == "cpu_and_ne" and metadata["zoo.precision"] == "fp16"
    spec = ct.utils.load_spec(str(result.path))
    assert spec.specificationVersion >= 8  # iOS 17 deployment target


def test_bad_requests_raise_clear_errors(target, tmp_path):
    with pytest.raises(ZooError, match="unknown compute_units .npu. for coreml; use one of all, cpu_only"):
        _export(target, tmp_path, ConvNet, "fp16", compute_units="npu")
    with pytest.raises(ZooError, match="no precision 'int4'"):
        _export(target, tmp_path, ConvNet, "int4")
    with pytest.raises(ZooError, match="W8A8 needs the PT2E-quantized model"):
        _export(target, tmp_path, ConvNet, "int8", int8_mode="w8a8")
    with pytest.raises(ZooError, match="io_dtype"):
        _export(target, tmp_path, ConvNet, "fp32", io_dtype="float16")
    assert not list(tmp_path.iterdir())


def test_structural_check_refuses_broken_package(tmp_path):
    from export_mobile.targets.coreml import structural_check

    with pytest.raises(ZooError, match="does not exist"):
        structural_check(tmp_path / "missing.mlpackage", "fp16")
    broken = tmp_path / "broken.mlpackage"
    broken.mkdir()
    (broken / "Manifest.json").write_text("{not json")
    with pytest.raises(ZooError, match="not a readable Core ML package"):
        structural_check(broken, "fp16")


@pytest.mark.skipif(on_macos, reason="on macOS the runner predicts (see test_macos_predict)")
def test_runner_needs_macos(target, tmp_path):
    result = _export(target, tmp_path, ConvNet, "fp16")
    with pytest.raises(ZooError, match=r"Core ML prediction needs macOS.*structural_check"):
        target.load_runner(result.path, {})


def test_hinet_lite_s_fp16(target, tmp_path):
    from export_mobile.targets.coreml import structural_check
    from zoo.registry import create_model

    torch.manual_seed(0)
    model, _ = create_model("hinet-lite-s", untrained=True)
    model.tail.reset_parameters()  # untrained, the tail is zero (identity model)
    result = target.export(ExportRequest(model=model, example=random_images(1, size=64), precision="fp16",
                                         out_path=tmp_path / "hinet-lite-s.mlpackage"))
    check = structural_check(result.path, "fp16")
    assert check["ok"] and check["input"]["shape"] == [1, 3, 64, 64]
    convs = sum(isinstance(m, nn.Conv2d) for m in model.modules())
    assert check["ops"]["conv"] == convs and check["weight_dtypes"]["FLOAT16"] >= convs


@pytest.mark.slow
def test_w8a8_from_pt2e(target, tmp_path):
    from export_mobile.targets.coreml import structural_check
    from quantize.ptq import quantize_ptq

    model = seeded(ConvNet)
    quantized = quantize_ptq(model, random_images(1), "coreml", [random_images(2, seed=s) for s in range(2)])
    result = target.export(ExportRequest(model=model, example=random_images(1), precision="int8", quantized=quantized,
                                         out_path=tmp_path / "w8a8.mlpackage"))
    check = structural_check(result.path, "int8")
    assert check["ok"] and check["quantize_ops"] >= 2 and check["ops"]["dequantize"] >= 2
    assert any("W8A8" in note for note in result.notes)


@pytest.mark.skipif(not on_macos, reason="Core ML prediction needs macOS")
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_macos_predict(target, tmp_path, precision):
    model = seeded(HalfInstanceNormNet)
    result = target.export(ExportRequest(model=model, example=random_images(1), precision=precision,
                                         out_path=tmp_path / f"{precision}.mlpackage"))
    images = random_images(2, seed=4)
    output = target.load_runner(result.path, {})(images.numpy())
    with torch.no_grad():
        expected = model(images).numpy()
    assert np.isfinite(output).all()
    assert np.abs(output - expected).max() < (1e-4 if precision == "fp32" else 2e-2)


class LoudNet(nn.Module):
    """A middle conv whose activations reach ~1e6 (beyond fp16's 65504), then scaled back down."""

    def __init__(self):
        super().__init__()
        self.head = nn.Conv2d(3, 8, 3, padding=1)
        self.loud = nn.Conv2d(8, 8, 1)
        self.tail = nn.Conv2d(8, 3, 3, padding=1)
        with torch.no_grad():
            self.loud.weight.fill_(0.0)
            self.loud.bias.fill_(1e6)

    def forward(self, x):
        return x + self.tail(torch.relu(self.loud(self.head(x))) * 1e-6)


def test_fp16_range_report_names_the_layer(target, tmp_path):
    from export_mobile.targets.coreml import FP16_MAX, fp16_range_report

    loud = fp16_range_report(seeded(LoudNet), random_images(1))
    assert loud["overflowing"] and loud["overflowing"][0]["layer"] == "loud"
    assert loud["overflowing"][0]["op"] == "conv2d" and loud["max_abs"] == pytest.approx(1e6)
    assert {entry["layer"] for entry in loud["overflowing"]} == {"loud", "(top level)"}  # conv, relu
    quiet_model = seeded(ConvNet)
    quiet = fp16_range_report(quiet_model, random_images(1))
    assert quiet["overflowing"] == []
    with torch.no_grad():  # the recorded peak is the largest op output, independently recomputed
        head = quiet_model.head(random_images(1))
        peaks = [head.abs().max(), torch.relu(head).abs().max()]
    assert quiet["max_abs"] >= max(float(p) for p in peaks) and quiet["max_abs"] < FP16_MAX
    # The export says so in its notes.
    result = _export(target, tmp_path, LoudNet, "fp16", name="loud")
    assert any(note.startswith("WARNING: fp16 overflow") and "loud" in note for note in result.notes)
