"""The contract every export target keeps, checked over ``export_mobile.targets.target_names()``
(the export-side twin of tests/test_model_contract.py; the per-target details stay in
tests/test_export_*.py).

Each target reports its name, suffix, precisions and availability; an unavailable one (a missing
toolchain or SDK, or a module that does not import) refuses to export with a ZooError naming
why; an available one builds a tiny conv model (tests.helpers.ConvNet) and its artifact
reproduces PyTorch within the precision's tolerance: fp32 to :data:`FP32_MAX_ABS_ERROR` (the
matrix's), fp16 to :data:`FP16_MAX_ABS_ERROR`, int8 to :data:`INT8_MIN_PSNR_DB` against the PT2E
model the target lowers (or, for a target that quantizes by itself, the float model). An artifact
that cannot run on this OS (Core ML on Linux) must say so with a ZooError. The first precision of
each target runs by default, the others in a slow test.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

from export_mobile.matrix import FP32_MAX_ABS_ERROR, INT8_MIN_PSNR_DB
from export_mobile.targets import (PRECISIONS, TARGET_MODULES, UnavailableTarget, get_target, int8_recipe_of,
                                   target_names)
from export_mobile.targets.base import ExportRequest
from tests.helpers import TILE, ConvNet, psnr_db, random_images, seeded
from zoo.errors import ZooError

#: fp16 artifacts versus the float PyTorch model on images in [0, 1] (half precision rounding).
FP16_MAX_ABS_ERROR = 1e-2
#: A target that quantizes by itself (no PT2E twin in PyTorch) versus the float model.
SELF_QUANTIZED_MIN_PSNR_DB = 30.0


def _available(name: str):
    target = get_target(name)
    reason = target.available()
    if reason:
        pytest.skip(f"{name} is unavailable here: {reason}")
    return target


@pytest.mark.parametrize("name", target_names())
def test_target_reports_precisions_and_availability(name):
    target = get_target(name)
    assert target.name == name and str(target.suffix).startswith(".")
    reason = target.available()
    assert reason is None or (isinstance(reason, str) and reason.strip()), reason
    if reason is None:
        assert target.precisions and set(target.precisions) <= set(PRECISIONS)
    assert int8_recipe_of(target) in (None, "xnnpack", "coreml", "tflite")


@pytest.mark.parametrize("module", sorted(set(TARGET_MODULES.values())))
def test_targets_declare_exactly_the_options_their_module_reads(module):
    """``check_options`` refuses every name not in ``accepted_options``: a name the code reads but does
    not declare could never be passed, and a declared one it never reads would be ignored."""
    targets = [get_target(name) for name, where in TARGET_MODULES.items() if where == module]
    if any(isinstance(target, UnavailableTarget) for target in targets):
        pytest.skip(f"{module} does not import here")
    source = Path(importlib.import_module(module).__file__).read_text(encoding="utf-8")
    read = set(re.findall(r"options(?:\.get\(|\[)\s*[\"'](\w+)[\"']", source))
    declared = {key for target in targets for key in target.accepted_options}
    assert read == declared, module


@pytest.mark.parametrize("name", target_names())
def test_unavailable_target_refuses_naming_why(name, tmp_path):
    target = get_target(name)
    reason = target.available()
    if reason is None:
        pytest.skip(f"{name} is available here (the missing-module case below covers every target)")
    precision = (target.precisions or ("fp32",))[0]
    with pytest.raises(ZooError) as raised:
        target.export(ExportRequest(model=seeded(ConvNet), example=random_images(1), precision=precision,
                                    out_path=tmp_path / f"model{target.suffix}"))
    assert reason.split(";")[0][:40] in str(raised.value) and "unavailable" in str(raised.value)


@pytest.mark.parametrize("name", target_names())
def test_a_target_whose_module_is_missing_says_so(name, monkeypatch, tmp_path):
    from export_mobile import targets

    monkeypatch.setattr(targets, "TARGET_MODULES", {**targets.TARGET_MODULES, name: "export_mobile.targets.gone"})
    monkeypatch.setattr(targets, "_CACHE", {})
    target = get_target(name)
    assert "export_mobile.targets.gone is not part of this installation" in target.available()
    with pytest.raises(ZooError, match=f"target {name} is unavailable: export_mobile.targets.gone"):
        target.export(ExportRequest(model=seeded(ConvNet), example=random_images(1), precision="fp32",
                                    out_path=tmp_path / "model.bin"))


def _reproduces_pytorch(target, precision: str, tmp_path) -> None:
    model, example = seeded(ConvNet), random_images(1)
    quantized, reference_model = None, model
    if precision == "int8" and int8_recipe_of(target) is not None:
        from quantize.ptq import quantize_ptq

        quantized = quantize_ptq(model, example, int8_recipe_of(target), [random_images(2, seed=s) for s in range(3)])
        reference_model = quantized
    result = target.export(ExportRequest(model=model, example=example, precision=precision, quantized=quantized,
                                         out_path=tmp_path / f"{precision}{target.suffix}"))
    assert result.path.exists()
    try:
        runner = target.load_runner(result.path, {"inputs": [{"shape": list(example.shape)}]})  # what ONNX/TFLite runners read (.pte: its program)
    except ZooError as err:  # built, but this OS cannot run it (e.g. Core ML off macOS): said, not faked
        pytest.skip(f"{target.name} {precision} built; cannot run here: {err}")
    images = random_images(1, seed=7)
    output = runner(images.numpy())
    import torch

    with torch.no_grad():
        expected = reference_model(images).numpy()
    assert output.shape == expected.shape == (1, 3, TILE, TILE)
    if precision == "fp32":
        assert abs(output - expected).max() < FP32_MAX_ABS_ERROR
    elif precision == "fp16":
        assert abs(output - expected).max() < FP16_MAX_ABS_ERROR
    else:
        floor = INT8_MIN_PSNR_DB if quantized is not None else SELF_QUANTIZED_MIN_PSNR_DB
        assert psnr_db(output, expected) > floor


@pytest.mark.parametrize("name", target_names())
def test_available_target_reproduces_pytorch(name, tmp_path):
    target = _available(name)
    _reproduces_pytorch(target, target.precisions[0], tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name", target_names())
def test_available_target_reproduces_pytorch_at_every_precision(name, tmp_path):
    target = _available(name)
    skipped = []
    for precision in target.precisions[1:]:
        try:
            _reproduces_pytorch(target, precision, tmp_path)
        except pytest.skip.Exception as reason:
            skipped.append(str(reason))
    if skipped:
        pytest.skip("; ".join(skipped))
