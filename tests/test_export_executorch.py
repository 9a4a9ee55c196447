"""ExecuTorch export: the exact rewrites, lowering to each delegate, the .pte against PyTorch,
the export orchestration (atomic folder, manifest, refusals) and `zoo run` with an artifact.

Lowering uses tiny models (two-level HINet-Lite and HINet) at 32x32 so each
lowering takes seconds; the full-size models are in the slow matrix tests.
"""

import hashlib
import os
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from export_mobile.rewrites import DecomposedInstanceNorm2d, rewrite_for_export
from zoo.errors import ZooError

TINY = "tiny-lite-export-test"


def _tiny_lite():
    from zoo.models.hinet_lite import HINetLite

    torch.manual_seed(0)
    return HINetLite(3, (8, 16), (1, 1), (1,)).eval()


def _tiny_hinet():
    from zoo.models.hinet import HINet

    torch.manual_seed(0)
    return HINet(in_chn=3, wf=4, depth=2, hin_position_left=0, hin_position_right=1).eval()


def _image_batch(size=32, seed=0):
    generator = torch.Generator().manual_seed(seed)
    smooth = torch.nn.functional.interpolate(torch.rand(1, 3, size // 4, size // 4, generator=generator),
                                             size=(size, size), mode="bilinear")
    return (smooth + 0.1 * torch.randn(1, 3, size, size, generator=generator)).contiguous()


# --------------------------------------------------------------------------------------------
# Rewrites (pure PyTorch)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("affine", [True, False])
def test_decomposed_instance_norm_equals_instance_norm(affine):
    torch.manual_seed(1)
    original = nn.InstanceNorm2d(6, affine=affine)
    if affine:
        with torch.no_grad():
            original.weight.uniform_(0.5, 2.0)
            original.bias.uniform_(-1.0, 1.0)
    x = torch.randn(2, 6, 9, 13) * 3.0 + 5.0  # large mean and spread
    expected = original(x)
    actual = DecomposedInstanceNorm2d(original)(x)
    assert (actual - expected).abs().max().item() < 1e-5


def test_decomposed_instance_norm_with_running_stats_uses_them_in_eval():
    torch.manual_seed(2)
    original = nn.InstanceNorm2d(4, affine=True, track_running_stats=True)
    original.train()
    for _ in range(3):
        original(torch.randn(2, 4, 8, 8) * 2 + 1)
    original.eval()
    x = torch.randn(1, 4, 8, 8)
    assert (DecomposedInstanceNorm2d(original).eval()(x) - original(x)).abs().max().item() < 1e-5


def test_rewrite_of_hinet_is_numerically_identical_and_keeps_checkpoint_keys():
    from zoo.registry import create_model

    model, _card = create_model("hinet-sidd-0.5x", untrained=True)
    rewritten, report = rewrite_for_export(model)
    norms = [name for name, module in model.named_modules() if isinstance(module, nn.InstanceNorm2d)]
    assert len(norms) == 10 and len(report.replaced) == len(norms)
    assert not any(isinstance(m, nn.InstanceNorm2d) for m in rewritten.modules())
    assert any(isinstance(m, nn.InstanceNorm2d) for m in model.modules())  # the original is untouched
    assert list(rewritten.state_dict()) == list(model.state_dict())  # same checkpoint keys
    x = _image_batch(32)  # the smallest input whose 1/16 level has 4 pixels for the statistics
    with torch.no_grad():
        difference = (rewritten(x) - model(x)).abs().max().item()
    assert difference < 1e-5


def test_rewrite_leaves_models_without_instance_norm_alone():
    model = _tiny_lite()
    rewritten, report = rewrite_for_export(model)
    assert not report.changed and rewritten is not model
    x = _image_batch()
    with torch.no_grad():
        assert torch.equal(rewritten(x), model(x))


def test_activation_range_flags_the_layer_that_leaves_fp16():
    from export_mobile.api import activation_range

    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU(), nn.Conv2d(4, 3, 1))
    with torch.no_grad():
        model[0].weight.fill_(1.0)
        model[0].bias.zero_()
        model[2].weight.fill_(3.0e4)
        model[2].bias.zero_()
    report = activation_range(model, [torch.ones(1, 3, 4, 4)])
    # conv 0 gives 3, ReLU 3, conv 2 gives 4 * 3 * 3e4 = 3.6e5 > 65504.
    assert report["per_layer"]["0"] == pytest.approx(3.0)
    assert report["layer"] == "2" and report["max_abs_activation"] == pytest.approx(3.6e5)
    assert report["overflowing_layers"] == ["2"]


def _fp16_check_on_evaluation_crops(model_name, data_root):
    """fp16: no inf/NaN and no activation beyond 65504 on CBSD68 crops (evaluation use only)."""
    from export_mobile.api import _half_precision_finite, activation_range
    from zoo.data.io import read_image
    from zoo.registry import create_model

    model, _ = create_model(model_name, untrained=True)
    files = sorted((data_root / "bsd68").glob("*.png"))[:2]
    crops = [read_image(path).image[:, :64, :64][None] for path in files]
    noisy = [crop + 25 / 255 * torch.randn(crop.shape, generator=torch.Generator().manual_seed(i))
             for i, crop in enumerate(crops)]
    report = activation_range(model, noisy)
    assert report["overflowing_layers"] == [] and report["max_abs_activation"] < 65504
    finite = [_half_precision_finite(model, batch) for batch in noisy]
    assert all(value in (True, None) for value in finite)


def test_lite_model_stays_in_fp16_range_on_evaluation_images(data_root):
    _fp16_check_on_evaluation_crops("hinet-lite-s", data_root)


@pytest.mark.slow
def test_full_hinet_stays_in_fp16_range_on_evaluation_images(data_root):
    _fp16_check_on_evaluation_crops("hinet-sidd-0.5x", data_root)


# --------------------------------------------------------------------------------------------
# Lowering (needs the mobile stack)
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def executorch_targets():
    pytest.importorskip("executorch")
    from export_mobile.targets import get_target

    return {name: get_target(name) for name in
            ("executorch-xnnpack", "executorch-coreml", "executorch-vulkan", "executorch-qnn")}


def _export(target, model, precision, path, quantized=None, example=None):
    from export_mobile.targets.base import ExportRequest

    example = _image_batch() if example is None else example
    return target.export(ExportRequest(model=model, example=example, precision=precision, out_path=path,
                                       quantized=quantized))


def _run_pte(target, path, example):
    runner = target.load_runner(path, {"inputs": [{"shape": list(example.shape)}]})
    return runner(example.numpy())


def test_int8_without_a_quantized_model_is_refused(executorch_targets, tmp_path):
    with pytest.raises(ZooError, match="quantized model"):
        _export(executorch_targets["executorch-xnnpack"], _tiny_lite(), "int8", tmp_path / "x.pte")
    assert not (tmp_path / "x.pte").exists()


def test_rewrite_turns_hinet_into_one_xnnpack_partition(executorch_targets, tmp_path):
    """HINet's instance norms split XNNPACK; the rewritten model lowers as one partition."""
    target = executorch_targets["executorch-xnnpack"]
    model = _tiny_hinet()
    before = _export(target, model, "fp32", tmp_path / "before.pte")
    assert before.partitions > 1
    assert any("_native_batch_norm_legit" in op and "down_path_1.0.norm" in op for op in before.ops_outside_delegate)
    rewritten, _ = rewrite_for_export(model)
    after = _export(target, rewritten, "fp32", tmp_path / "after.pte")
    assert after.partitions == 1 and after.ops_outside_delegate == []
    example = _image_batch(seed=5)
    with torch.no_grad():
        expected = model(example).numpy()
    assert np.abs(_run_pte(target, after.path, example) - expected).max() < 1e-4


def test_coreml_delegate_lowers_on_linux_and_its_runner_says_where_it_runs(executorch_targets, tmp_path):
    target = executorch_targets["executorch-coreml"]
    if target.available():
        pytest.skip(target.available())
    result = _export(target, _tiny_lite(), "fp16", tmp_path / "tiny_coreml.pte")
    assert result.delegate == "CoreMLBackend" and result.partitions == 1 and result.ops_outside_delegate == []
    if os.uname().sysname != "Darwin":
        with pytest.raises(ZooError, match="Apple OS"):
            target.load_runner(result.path, {"inputs": [{"shape": [1, 3, 32, 32]}]})


@pytest.mark.slow
def test_vulkan_lowers_fp16_and_its_runner_names_the_missing_backend(executorch_targets, tmp_path):
    from export_mobile.targets.executorch import registered_backends

    target = executorch_targets["executorch-vulkan"]
    result = _export(target, _tiny_lite(), "fp16", tmp_path / "tiny_vulkan.pte")
    assert result.delegate == "VulkanBackend" and result.partitions == 1
    if "VulkanBackend" not in registered_backends():
        with pytest.raises(ZooError, match="no VulkanBackend"):
            target.load_runner(result.path, {"inputs": [{"shape": [1, 3, 32, 32]}]})


def test_qnn_without_the_sdk_names_what_is_missing(executorch_targets, tmp_path, monkeypatch):
    monkeypatch.delenv("QNN_SDK_ROOT", raising=False)
    target = executorch_targets["executorch-qnn"]
    assert "QNN_SDK_ROOT" in target.available() and "Qualcomm" in target.available()
    with pytest.raises(ZooError, match="QNN_SDK_ROOT"):
        _export(target, _tiny_lite(), "fp16", tmp_path / "q.pte")
    monkeypatch.setenv("QNN_SDK_ROOT", str(tmp_path))  # set, but no SDK there
    assert "does not hold a QNN SDK" in target.available()


def test_a_truncated_pte_is_refused_by_the_runner(executorch_targets, tmp_path):
    target = executorch_targets["executorch-xnnpack"]
    path = tmp_path / "broken.pte"
    path.write_bytes(b"not a program at all" * 10)
    with pytest.raises(ZooError, match="cannot load"):
        target.load_runner(path, {"inputs": [{"shape": [1, 3, 32, 32]}]})


# --------------------------------------------------------------------------------------------
# export_model and zoo run (a tiny registered model)
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_card():
    from zoo import registry

    registry.list_models()  # load the real families first
    card = registry.ModelCard(name=TINY, family="hinet", task="denoise", variant="lite",
                              summary="two-level HINet-Lite for export tests", builder=_tiny_lite,
                              size_multiple=4, tile=32, overlap=8)
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(registry._REGISTRY, TINY, card)
        yield card


@pytest.fixture(scope="module")
def tiny_export(tiny_card, tmp_path_factory):
    pytest.importorskip("executorch")
    from export_mobile.api import export_model

    out = tmp_path_factory.mktemp("exports") / "tiny-fp32"
    return export_model(TINY, "executorch-xnnpack", "fp32", "32x32", out, untrained=True)


def test_export_model_writes_the_artifact_and_a_valid_manifest(tiny_export):
    from export_mobile.manifest import read_manifest

    folder = tiny_export.folder
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json", f"{TINY}_executorch-xnnpack_fp32_32x32.pte"]
    manifest = read_manifest(folder)  # validated against the schema
    assert manifest == tiny_export.manifest
    artifact = folder / manifest["artifact"]["file"]
    assert manifest["artifact"]["sha256"] == hashlib.sha256(artifact.read_bytes()).hexdigest()
    assert manifest["artifact"]["bytes"] == artifact.stat().st_size
    assert manifest["model"]["name"] == TINY and manifest["model"]["weights"]["source"] == "untrained"
    assert manifest["inputs"][0]["shape"] == [1, 3, 32, 32] and manifest["outputs"][0]["shape"] == [1, 3, 32, 32]
    assert manifest["tiling"] == {**manifest["tiling"], "tile": [32, 32], "overlap": 8, "margin": 4, "size_multiple": 4}
    assert manifest["backend"]["delegate"] == "XnnpackBackend" and manifest["backend"]["partitions"] == 1
    verification = manifest["verification"]
    assert verification["ran"] and verification["max_abs_error"] < 1e-4 and not verification["nonfinite"]
    assert manifest["tools"]["executorch"] and manifest["tools"]["torch"].startswith(torch.__version__.split("+")[0])
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no temporary folders left


def test_the_exported_pte_matches_pytorch_on_other_inputs(tiny_export):
    """fp32 XNNPACK within 1e-4 of PyTorch, also on inputs other than the export example."""
    from export_mobile.runners import load_artifact

    loaded = load_artifact(tiny_export.artifact)
    model = _tiny_lite()
    for seed in (3, 4):
        example = _image_batch(seed=seed)
        with torch.no_grad():
            expected = model(example)
        assert (loaded.forward_tiles(example) - expected).abs().max().item() < 1e-4


def test_run_artifact_restores_files_like_the_pytorch_model_tiled(tiny_export, tmp_path):
    from export_mobile.runners import run_artifact
    from zoo.data.io import read_image, write_image
    from zoo.tiling import tiled_forward

    photo = _image_batch(64, seed=7)[0, :, :45, :61].clamp(0, 1)  # not a multiple of the tile
    source = write_image(tmp_path / "photo.png", photo)
    records = run_artifact(tiny_export.folder, [source], f"{tmp_path / 'out'}/")
    restored = read_image(records[0]["output"]).image
    model = _tiny_lite()
    image = read_image(source).image
    with torch.no_grad():
        expected = tiled_forward(model, image, tile=32, overlap=8, size_multiple=4).clamp(0, 1)
    assert restored.shape == (3, 45, 61)
    assert (restored - expected).abs().max().item() <= 1 / 255 + 1e-6  # both rounded to 8 bits
    with pytest.raises(ZooError, match="exists"):
        run_artifact(tiny_export.folder, [source], tmp_path / "out")


def test_zoo_run_cli_refuses_a_corrupted_artifact(tiny_export, tmp_path, capsys):
    import shutil

    from export_mobile.commands import run_main
    from zoo.data.io import write_image

    copy = tmp_path / "copy"
    shutil.copytree(tiny_export.folder, copy)
    source = write_image(tmp_path / "p.png", _image_batch(32, seed=8)[0].clamp(0, 1))
    assert run_main([str(copy), str(source), "-o", str(tmp_path / "ok.png"), "--quiet"]) == 0
    assert (tmp_path / "ok.png").is_file()
    artifact = copy / tiny_export.manifest["artifact"]["file"]
    data = bytearray(artifact.read_bytes())
    data[100] ^= 0xFF
    artifact.write_bytes(bytes(data))
    assert run_main([str(copy), str(source), "-o", str(tmp_path / "bad.png"), "--quiet"]) == 2
    assert "does not match its manifest" in capsys.readouterr().err
    assert not (tmp_path / "bad.png").exists()


def test_export_refuses_a_folder_with_another_models_artifacts(tiny_export):
    from export_mobile.api import export_model

    before = {p.name: p.read_bytes() for p in tiny_export.folder.iterdir()}
    with pytest.raises(ZooError, match=f"another model \\({TINY}\\)"):
        export_model("hinet-lite-s", "executorch-xnnpack", "fp32", 32, tiny_export.folder, untrained=True)
    assert {p.name: p.read_bytes() for p in tiny_export.folder.iterdir()} == before


def test_export_refuses_a_folder_holding_other_files(tiny_card, tmp_path):
    from export_mobile.api import export_model

    (tmp_path / "holiday.jpg").write_bytes(b"jpeg")
    with pytest.raises(ZooError, match="not empty and holds no zoo export"):
        export_model(TINY, "executorch-xnnpack", "fp32", 32, tmp_path, untrained=True)
    assert [p.name for p in tmp_path.iterdir()] == ["holiday.jpg"]


def test_reexport_of_the_same_model_replaces_the_folder_atomically(tiny_card, tiny_export, tmp_path, monkeypatch):
    import shutil

    from export_mobile.api import export_model
    from export_mobile.targets import get_target
    from export_mobile.targets.base import ExportResult

    def quick_export(request):  # the folder logic does not need a real lowering
        request.out_path.write_bytes(b"new program")
        return ExportResult(path=request.out_path, delegate="XnnpackBackend", partitions=1)

    monkeypatch.setattr(get_target("executorch-xnnpack"), "export", quick_export)
    folder = tmp_path / "again"
    shutil.copytree(tiny_export.folder, folder)
    outcome = export_model(TINY, "executorch-xnnpack", "fp32", 32, folder, untrained=True, verify=False)
    assert outcome.replaced and "executorch-xnnpack fp32" in outcome.replaced
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in tiny_export.folder.iterdir())
    assert outcome.artifact.read_bytes() == b"new program"
    assert outcome.manifest["artifact"]["sha256"] == hashlib.sha256(b"new program").hexdigest()
    assert outcome.manifest["verification"] is None
    assert [p.name for p in tmp_path.iterdir()] == ["again"]


def test_a_failing_target_leaves_nothing_behind(tiny_card, tmp_path, monkeypatch):
    pytest.importorskip("executorch")
    from export_mobile.api import export_model
    from export_mobile.targets import get_target

    target = get_target("executorch-xnnpack")

    def explode(request):
        request.out_path.write_bytes(b"half a file")
        raise RuntimeError("lowering crashed")

    monkeypatch.setattr(target, "export", explode)
    with pytest.raises(RuntimeError, match="lowering crashed"):
        export_model(TINY, "executorch-xnnpack", "fp32", 32, tmp_path / "out", untrained=True)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kwargs,message", [
    (dict(target="executorch-xnnpack", precision="fp64"), "unknown precision 'fp64'"),
    (dict(target="executorch-xnnpack", precision="fp16"), "does not export fp16; executorch-xnnpack exports fp32, int8"),
    (dict(target="tensorrt", precision="fp32"), "unknown export target 'tensorrt'"),
    (dict(tile="30x30"), "tile 30x30 is not divisible by .* size multiple 4; use a multiple of 4, e.g. 32x32"),
    (dict(tile="32x64"), "not square"),
    (dict(tile="big"), "is not a size"),
    (dict(precision="int8"), "needs calibration data or a quantized model"),
    (dict(dynamic=True), "--dynamic is not supported for executorch-xnnpack"),
    (dict(overlap=16), "overlap 16 is not less than half the tile 32"),
])
def test_bad_export_arguments_fail_before_anything_is_built(tiny_card, tmp_path, kwargs, message):
    pytest.importorskip("executorch")
    from export_mobile.api import export_model

    arguments = dict(model_name=TINY, target="executorch-xnnpack", precision="fp32", tile=32,
                     out_dir=tmp_path / "out", untrained=True)
    arguments.update(kwargs)
    with pytest.raises(ZooError, match=message):
        export_model(**arguments)
    assert list(tmp_path.iterdir()) == []


def test_zero_shot_models_are_refused_with_the_reason(tiny_card, tmp_path, monkeypatch):
    from export_mobile.api import export_model
    from zoo import registry

    monkeypatch.setitem(registry._REGISTRY, "zero-shot-test", replace(tiny_card, name="zero-shot-test", zero_shot=True))
    with pytest.raises(ZooError, match="per-image optimisation"):
        export_model("zero-shot-test", "executorch-xnnpack", "fp32", 32, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_zoo_export_cli_prints_one_line_errors(capsys):
    from export_mobile.commands import export_main

    assert export_main(["hinet-lite", "--target", "nope", "--precision", "fp32", "--tile", "64", "-o", "x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("zoo: error: unknown export target 'nope'") and err.count("\n") == 1
    assert export_main(["hinet-lite", "--precision", "fp32"]) == 2
    assert "needs --target, --tile, -o" in capsys.readouterr().err
