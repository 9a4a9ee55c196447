"""zoo check and zoo baseline (export_mobile/check.py, export_mobile/baseline.py): metrics equal to
computing them directly, drop = reference - artifact, resume after an interruption, baseline
references, CPU fallback notes and the refusals. A tiny artifact (tile 64) on three small images."""

import pytest
import torch

from measure import baseline, check
from measure import results as rs
from export_mobile.runners import LoadedArtifact, load_artifact
from tests.tiny_artifact import tiny_artifact, tiny_images
from zoo.data.datasets import open_dataset
from zoo.data.io import quantize
from zoo.errors import ZooError
from zoo.metrics import psnr, ssim
from zoo.registry import create_model

SPEC = "gaussian:25"


@pytest.fixture(scope="module")
def artifact(request):
    return tiny_artifact(request)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return tiny_images(tmp_path_factory.mktemp("check-images"))


@pytest.fixture(scope="module")
def checked(artifact, images, tmp_path_factory):
    """One complete check (float reference run here) shared by the tests that only read it."""
    path = tmp_path_factory.mktemp("check") / "check.json"
    return check.run_check(artifact, str(images), SPEC, json_path=path, progress=False)


def test_metrics_equal_a_direct_computation(checked, artifact, images):
    record = rs.read_results(checked["path"])["records"][0]
    assert record["kind"] == "check" and record["complete"] is True and record["accuracy"]["images"] == 3
    loaded = load_artifact(artifact)
    model, _card = create_model("hinet-lite-s")
    float_loaded = LoadedArtifact(loaded.artifact, loaded.manifest,
                                  lambda batch: model(torch.from_numpy(batch)).numpy())
    data = open_dataset(str(images), degradation=SPEC)
    for sample, entry in zip(data, record["images"]):
        restored = loaded.restore(sample.degraded)
        output = quantize(restored)
        reference = quantize(float_loaded.restore(sample.degraded))
        assert entry["name"] == sample.name
        assert entry["psnr"] == pytest.approx(psnr(output, sample.target), abs=1e-9)
        assert entry["ssim"] == pytest.approx(ssim(output, sample.target), abs=1e-9)
        assert entry["reference_psnr"] == pytest.approx(psnr(reference, sample.target), abs=1e-6)
        assert entry["output_sha256"] == rs.output_sha256(restored)
        assert entry["latency_ms"] > 0 and entry["tiles"] >= 1
    assert record["images"][0]["tiles"] == 4  # 72x88 at tile 64, overlap 16: 2 x 2 tiles
    accuracy = record["accuracy"]
    assert accuracy["psnr"] == pytest.approx(sum(i["psnr"] for i in record["images"]) / 3)
    assert accuracy["drop_db"] == pytest.approx(accuracy["reference_psnr"] - accuracy["psnr"])
    assert abs(accuracy["drop_db"]) < 0.01  # fp32 artifact: numerics agree with PyTorch
    assert accuracy["input_psnr"] < accuracy["psnr"] and len(accuracy["worst"]) == 3
    assert record["reference"]["model"] == "hinet-lite-s" and record["latency_ms"]["per"] == "image"


def test_interrupted_check_resumes_and_skips_finished_images(artifact, images, tmp_path):
    path = tmp_path / "partial.json"

    def interrupt(index, _entry):
        if index == 0:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        check.run_check(artifact, str(images), SPEC, json_path=path, progress=False, on_image=interrupt)
    partial = rs.read_results(path)["records"][0]
    assert partial["complete"] is False and [i["name"] for i in partial["images"]] == ["img0"]
    assert partial["accuracy"]["images"] == 1

    measured = []
    done = check.run_check(artifact, str(images), SPEC, json_path=path, progress=False,
                           on_image=lambda index, entry: measured.append(index))
    assert measured == [1, 2]  # image 0 was not run again
    record = done["records"][0]
    assert record["complete"] is True and [i["name"] for i in record["images"]] == ["img0", "img1", "img2"]
    assert record["images"][0] == partial["images"][0]
    assert any("resumed: 1 image" in note for note in record["notes"])

    with pytest.raises(ZooError, match="holds other results"):
        check.run_check(artifact, str(images), "gaussian:15", json_path=path, progress=False)


def test_task_and_input_errors(artifact, images, tmp_path):
    with pytest.raises(ZooError, match="scale x4 but hinet-lite-s upscales x1"):
        check.run_check(artifact, str(images), "bicubic:x4", json_path=tmp_path / "x.json", progress=False)
    with pytest.raises(ZooError, match="unknown dataset"):
        check.run_check(artifact, "no-such-set", SPEC, json_path=tmp_path / "x.json", progress=False)
    with pytest.raises(ZooError):
        check.run_check(artifact, str(images), "gaussian:lots", json_path=tmp_path / "x.json", progress=False)
    assert not (tmp_path / "x.json").exists()


def test_cli_exit_status_and_table(artifact, images, checked, capsys):
    from zoo_cli.main import main as zoo_main

    assert zoo_main(["check", str(artifact), "--dataset", str(images), "--degradation", "bicubic:x2"]) == 2
    assert "scale x2" in capsys.readouterr().err
    # the complete file is resumed: nothing is run again, the table is printed
    assert check.main([str(artifact), "--dataset", str(images), "--degradation", SPEC, "--json", checked["path"],
                       "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "img0" in out and "mean" in out and "worst:" in out


def test_baseline_falls_back_to_cpu_and_serves_as_reference(artifact, images, checked, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    path = tmp_path / "baseline.json"
    assert baseline.main(["hinet-lite-s", "--dataset", str(images), "--degradation", SPEC, "--tile", "64",
                          "--overlap", "16", "--size", "32", "--runs", "2", "--warmup", "0", "--json", str(path),
                          "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "CUDA not available" in captured.out and "no CUDA" in captured.err
    record = rs.read_results(path)["records"][0]
    assert record["kind"] == "baseline" and record["artifact"] is None and record["runtime"]["device"] == "cpu"
    assert any(note.startswith("CUDA not available") for note in record["notes"])
    assert record["accuracy"]["images"] == 3 and record["latency_ms"]["runs"] == 2

    own = {i["name"]: i["reference_psnr"] for i in rs.read_results(checked["path"])["records"][0]["images"]}
    result = check.run_check(artifact, str(images), SPEC, reference=path, json_path=tmp_path / "c.json",
                             progress=False)["records"][0]
    for entry in result["images"]:  # same tiling, same float model: the same reference PSNR
        assert entry["reference_psnr"] == pytest.approx(own[entry["name"]], abs=1e-3)
        assert entry["psnr_vs_reference"] is None
    assert result["reference"]["kind"] == "baseline"
    assert result["accuracy"]["drop_db"] == pytest.approx(result["accuracy"]["reference_psnr"]
                                                          - result["accuracy"]["psnr"])
    assert not any("includes the tiling" in note for note in result["notes"])

    partial = tmp_path / "partial-baseline.json"
    short = baseline.run_baseline("hinet-lite-s", dataset=str(images), degradation=SPEC, limit=1, size=(16, 16),
                                  runs=1, warmup=0, progress=False)
    rs.write_results(partial, rs.results_document([short], "test"))
    with pytest.raises(ZooError, match="does not cover 2 image"):
        check.run_check(artifact, str(images), SPEC, reference=partial, json_path=tmp_path / "d.json", progress=False)


def test_baseline_runs_with_torch_alone(tmp_path):
    """The GPU machine has torch and no mobile stack: zoo baseline must not import one."""
    import json
    import subprocess
    import sys

    blocked = ["executorch", "coremltools", "litert_torch", "ai_edge_litert", "onnxruntime", "onnx", "torchao"]
    script = (f"import sys\nfor name in {blocked!r}: sys.modules[name] = None\n"
              "from zoo_cli.main import main\n"
              f"raise SystemExit(main(['baseline', 'hinet-lite-s', '--size', '16', '--runs', '1', '--warmup', '0', "
              f"'--device', 'cpu', '--json', {json.dumps(str(tmp_path / 'b.json'))}]))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "measured on the CPU (--device cpu)" in done.stdout
    assert rs.read_results(tmp_path / "b.json")["records"][0]["kind"] == "baseline"


def test_integer_input_range_and_its_saturation_note(checked):
    # The int8 input a float-first tflite gets: [0, 1] in 255 steps (scale 1/255, zero point -128).
    unit = {"inputs": [{"dtype": "int8", "quantization": {"scale": 1 / 255, "zero_point": -128}}]}
    lowest, highest = check.quantized_input_range(unit)
    assert lowest == pytest.approx(0.0) and highest == pytest.approx(1.0)
    wide = {"inputs": [{"dtype": "uint8", "quantization": {"scale": 0.01, "zero_point": 50}}]}
    assert check.quantized_input_range(wide) == pytest.approx((-0.5, 2.05))
    assert check.quantized_input_range({"inputs": [{"dtype": "float32", "quantization": None}]}) is None
    assert check.quantized_input_range({}) is None  # a .pt2's description has no inputs

    note = check.saturation_note(6, 100, (0.0, 1.0))
    assert note.startswith("6.00% of the degraded input values") and "io=float" in note
    assert check.saturation_note(0, 100, (0.0, 1.0)) is None
    # The float-I/O artifact of the shared check gets no such note, although its noise is unclipped.
    record = rs.read_results(checked["path"])["records"][0]
    assert not any("saturate" in note for note in record["notes"])
