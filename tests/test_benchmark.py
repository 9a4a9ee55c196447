"""``zoo benchmark``: models and classical references on the same seeded degradations, resumable."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from measure import benchmark as bm
from zoo.benchmarks import classical
from zoo.data.degradations import parse_degradation
import zoo.evaluate
from zoo.errors import ZooError
from zoo.metrics import psnr
from zoo.registry import get_card


@pytest.fixture
def photos(tmp_path):
    """Three 96x96 crops of the bundled CC0 photos in a folder (a stand-in evaluation set)."""
    from zoo.data.bundled import bundled_photos

    folder = tmp_path / "photos"
    folder.mkdir()
    for index, photo in enumerate(bundled_photos()[:3]):
        image = Image.open(photo.path).convert("RGB")
        left, top = (image.width - 96) // 2, (image.height - 96) // 2
        image.crop((left, top, left + 96, top + 96)).save(folder / f"p{index}.png")
    return folder


def _clean(photos, name="p0.png") -> torch.Tensor:
    return torch.from_numpy(np.asarray(Image.open(photos / name)).copy()).permute(2, 0, 1).float() / 255


def test_deconvolution_told_the_kernel_undoes_the_blur(photos):
    clean = _clean(photos)
    blur = parse_degradation("motion-blur:size=15,length=20")
    blurred = blur(clean, 3)
    before = psnr(blurred.clamp(0, 1), clean)
    for method in ("richardson-lucy", "wiener"):
        restored = classical.classical_method(method).run(blurred, blur, 3)
        assert restored.shape == clean.shape
        assert psnr(restored.clamp(0, 1), clean) > before + 2.0, method
    with pytest.raises(ZooError, match="not a blur"):
        classical.richardson_lucy(blurred, parse_degradation("gaussian:25"), 0)


def test_deconvolution_of_a_one_of_blur_is_told_the_kernel_and_settings_of_the_blur_each_image_got(photos):
    clean = _clean(photos)
    plain, jpeg = "motion-blur:size=15,length=20,noise=2.55", "motion-blur:size=15,length=20,jpeg=60-90"
    either = parse_degradation(f"{plain} || {jpeg}")
    for seed, alternative in ((4, plain), (5, jpeg)):
        blurred = either(clean, seed)
        alone = parse_degradation(alternative)
        assert torch.equal(blurred, alone(clean, seed))
        for method in (classical.richardson_lucy, classical.wiener):
            assert torch.equal(method(blurred, either, seed), method(blurred, alone, seed)), (method, seed)
    noise = parse_degradation("gaussian:10 || gaussian:40")
    assert classical._true_sigma(noise, 3) == 40.0 and classical._true_sigma(noise, 8) == 10.0


def test_cbm3d_is_told_the_true_sigma(monkeypatch, photos):
    seen = []
    fake = type("bm3d", (), {"bm3d_rgb": staticmethod(lambda image, sigma: seen.append(sigma) or image)})
    monkeypatch.setitem(__import__("sys").modules, "bm3d", fake)
    noise = parse_degradation("gaussian:10-30")
    classical.cbm3d(noise(_clean(photos), 7), noise, 7)
    assert seen == [pytest.approx(noise.sigma_for(7) / 255.0)]


def test_benchmark_table_json_and_resume(photos, tmp_path, monkeypatch):
    out = tmp_path / "bench.json"
    kwargs = dict(models=["hinet-lite-s"], references=["input", "wavelet"], degradations=["gaussian:25"],
                  datasets=[str(photos)], json_path=out, progress=False)
    doc = bm.run_benchmark("denoise", **kwargs)
    assert doc["complete"] and json.loads(out.read_text())["complete"]
    rows = {(row["method"], row["precision"]): row for row in doc["summary"]}
    assert set(rows) == {("input", "float"), ("wavelet", "float"), ("hinet-lite-s", "float")}
    assert all(row["images"] == 3 for row in rows.values())
    # The shipped denoiser beats the noisy input and the blind wavelet baseline by a wide margin.
    assert rows[("hinet-lite-s", "float")]["psnr"] > rows[("wavelet", "float")]["psnr"] > rows[("input", "float")]["psnr"]
    # The input row is the degraded image with seed i for image i, scored as is (unclipped noise,
    # as zoo eval's input row and docs/conventions.md); clipping it to 8 bits would score higher.
    from zoo.data.io import quantize

    noise = parse_degradation("gaussian:25")
    noisy = [(noise(_clean(photos, f"p{i}.png"), i), _clean(photos, f"p{i}.png")) for i in range(3)]
    expected = np.mean([psnr(degraded, clean) for degraded, clean in noisy])
    clipped = np.mean([psnr(quantize(degraded.clamp(0, 1), 8), clean) for degraded, clean in noisy])
    assert rows[("input", "float")]["psnr"] == pytest.approx(expected, abs=1e-3)
    assert clipped > expected + 0.1
    table = bm.format_benchmark(doc)
    assert "hinet-lite-s" in table and "told" in table

    # A rerun with the same settings resumes: nothing is computed again.
    calls = []
    original = classical.CLASSICAL_METHODS["wavelet"]
    monkeypatch.setitem(classical.CLASSICAL_METHODS, "wavelet",
                        classical.ClassicalMethod("wavelet", original.tasks, original.told, original.package,
                                                  lambda *a: calls.append(1) or original.run(*a)))
    again = bm.run_benchmark("denoise", **kwargs)
    assert calls == [] and again["summary"] == doc["summary"]

    # An interrupted cell (one image short) continues with the missing image only.
    saved = json.loads(out.read_text())
    wavelet_cell = next(c for c in saved["cells"] if c["method"] == "wavelet")
    wavelet_cell["images"].pop()
    wavelet_cell["complete"] = False
    out.write_text(json.dumps(saved))
    bm.run_benchmark("denoise", **kwargs)
    assert len(calls) == 1

    # An input cell scored the old way (as an 8-bit image; no scored_as_8bit key) is measured again.
    saved = json.loads(out.read_text())
    input_cell = next(c for c in saved["cells"] if c["method"] == "input")
    assert input_cell["scored_as_8bit"] is False
    del input_cell["scored_as_8bit"]
    for row in input_cell["images"]:
        row["psnr"] = 99.0
    out.write_text(json.dumps(saved))
    remeasured = bm.run_benchmark("denoise", **kwargs)
    assert {(r["method"], r["precision"]): r for r in remeasured["summary"]}[("input", "float")]["psnr"] == \
        pytest.approx(expected, abs=1e-3)

    # Another protocol (limit, seed) needs its own file; the message names what differs.
    with pytest.raises(ZooError, match="other settings .*limit"):
        bm.run_benchmark("denoise", **dict(kwargs, limit=2))


def test_benchmark_selections_join_one_file_and_retrained_weights_are_measured_again(photos, tmp_path, monkeypatch):
    out = tmp_path / "bench.json"
    kwargs = dict(models=["hinet-lite-s"], references=["input"], degradations=["gaussian:25"],
                  datasets=[str(photos)], json_path=out, progress=False)
    first = bm.run_benchmark("denoise", **kwargs)
    model_cell = next(c for c in first["cells"] if c["method"] == "hinet-lite-s")
    assert model_cell["weights_sha256"] == bm._weights_digest(get_card("hinet-lite-s"))

    # A second model and a second noise level join the file; the measured cells are kept as they are.
    evaluated = []
    original_evaluate = zoo.evaluate.evaluate
    monkeypatch.setattr(zoo.evaluate, "evaluate", lambda name, *a, **k: evaluated.append((name, k["degradation"]))
                        or original_evaluate(name, *a, **k))
    merged = bm.run_benchmark("denoise", **dict(kwargs, models=["hinet-lite"], degradations=["gaussian:15"]))
    assert merged["settings"]["models"] == ["hinet-lite-s", "hinet-lite"]
    assert merged["settings"]["degradations"] == ["gaussian:25", "gaussian:15"]
    assert evaluated == [("hinet-lite", "gaussian:15")]
    keys = {(row["method"], row["degradation"]) for row in merged["summary"]}
    assert keys == {("input", "gaussian:25"), ("hinet-lite-s", "gaussian:25"), ("input", "gaussian:15"),
                    ("hinet-lite", "gaussian:15")}
    kept = next(r for r in merged["summary"] if r["method"] == "hinet-lite-s")
    assert kept["psnr"] == next(r for r in first["summary"] if r["method"] == "hinet-lite-s")["psnr"]

    # New weights under the same name: that model's cell is measured again, nothing else.
    evaluated.clear()
    real_digest = bm._weights_digest
    monkeypatch.setattr(bm, "_weights_digest",
                        lambda card: "retrained000" if card.name == "hinet-lite-s" else real_digest(card))
    again = bm.run_benchmark("denoise", **kwargs)
    assert evaluated == [("hinet-lite-s", "gaussian:25")]
    assert next(c for c in again["cells"] if c["method"] == "hinet-lite-s")["weights_sha256"] == "retrained000"


def test_benchmark_refuses_bad_requests(tmp_path):
    with pytest.raises(ZooError, match="unknown task"):
        bm.run_benchmark("colourise", json_path=tmp_path / "x.json", progress=False)
    with pytest.raises(ZooError, match="not a deblur reference"):
        bm.run_benchmark("deblur", references=["cbm3d"], models=[], json_path=tmp_path / "x.json", progress=False)
    with pytest.raises(ZooError, match="not deblur"):
        bm.run_benchmark("deblur", models=["hinet-lite"], json_path=tmp_path / "x.json", progress=False)
    with pytest.raises(ZooError, match="unknown classical method"):
        bm.run_benchmark("denoise", references=["magic"], json_path=tmp_path / "x.json", progress=False)
    assert bm.main(["denoise", "--limit", "0", "--json", str(tmp_path / "y.json")]) == 2


_BENCHMARK_KWARGS = dict(models=["hinet-lite-s"], references=["input"], degradations=["gaussian:25"], progress=False)


def _bench_doc(**change) -> dict:
    """A valid (empty) benchmark document of the _BENCHMARK_KWARGS protocol, ``change``d."""
    doc = {"format": "zoo-benchmark", "format_version": bm.BENCHMARK_FORMAT,
           "settings": {"task": "denoise", "datasets": ["x"], "degradations": ["gaussian:25"], "references": ["input"],
                        "models": ["hinet-lite-s"], "int8": False, "limit": None, "seed": 0},
           "cells": [{"dataset": "x", "degradation": "gaussian:25", "method": "input", "precision": "float",
                      "kind": "reference", "images": [{"image": "p0", "psnr": 20.1, "ssim": 0.4, "seconds": 0.0}],
                      "complete": False}], "complete": False}
    doc.update(change)
    return doc


@pytest.mark.parametrize("content, words", [
    ('{"format": "zoo-benchmark", "settings": {"task": "den', "is not a readable benchmark file (Unterminated string"),
    ("", "is not a readable benchmark file (Expecting value"),
    ("[1, 2, 3]", "is not a zoo benchmark file (a list, not an object)"),
    ('{"model": "hinet-lite-s", "mean": {"psnr": 30.1}}', "is not a zoo benchmark file (no format field)"),
    (json.dumps({"format": "zoo-results", "format_version": 1, "records": []}),
     "is not a zoo benchmark file (format 'zoo-results')"),
    (json.dumps(_bench_doc(format_version=99)), "was written by a newer zoo (benchmark format 99, this zoo reads 1)"),
    (json.dumps(_bench_doc(settings=None)), "is a damaged benchmark file: settings is not an object"),
    (json.dumps(_bench_doc(cells="x")), "is a damaged benchmark file: cells is not a list"),
    (json.dumps(_bench_doc(cells=[{"dataset": "x"}])), "is a damaged benchmark file: cells[0].degradation is missing"),
    (json.dumps(_bench_doc(settings=dict(_bench_doc()["settings"], datasets="bsd68"))),
     "is a damaged benchmark file: settings.datasets is not a list of names"),
    (json.dumps(_bench_doc(cells=[dict(_bench_doc()["cells"][0], images=[{"image": "p0", "psnr": "high"}])])),
     "is a damaged benchmark file: cells[0].images[0].psnr is not a number"),
], ids=["truncated", "empty", "list", "eval-output", "results-file", "newer", "no-settings", "cells-not-a-list",
        "cell-without-fields", "settings-datasets-a-string", "psnr-a-string"])
def test_a_file_at_the_json_path_that_cannot_be_resumed_is_refused_and_kept(tmp_path, monkeypatch, content, words):
    """Before: a list or string raised AttributeError, a damaged cell KeyError/TypeError (tracebacks),
    an eval file was called "a benchmark with other settings (task, limit, seed: None ...)", a
    settings list given as a string was merged letter by letter into the file, a newer format
    was resumed. Now one line, before any cell is measured, and the file is left as it was."""
    def must_not_measure(*args, **kwargs):
        raise AssertionError("a cell was measured before the file was refused")

    monkeypatch.setattr(zoo.evaluate, "evaluate", must_not_measure)
    monkeypatch.setattr(bm, "_reference_cell", must_not_measure)
    path = tmp_path / "bench.json"
    path.write_text(content)
    with pytest.raises(ZooError) as caught:
        bm.run_benchmark("denoise", datasets=["x"], json_path=path, **_BENCHMARK_KWARGS)
    assert words in str(caught.value) and "\n" not in str(caught.value)
    assert path.read_text() == content


def test_restart_replaces_only_benchmark_files(photos, tmp_path):
    """--restart starts over from a broken or newer benchmark file, never from someone's other JSON."""
    foreign = tmp_path / "eval.json"
    foreign.write_text('{"model": "hinet-lite-s", "mean": {"psnr": 30.1}}')
    with pytest.raises(ZooError, match=r"is not a zoo benchmark file \(no format field\), and the benchmark would "
                                       r"replace it; pass another --json path"):
        bm.run_benchmark("denoise", datasets=[str(photos)], json_path=foreign, restart=True, **_BENCHMARK_KWARGS)
    assert foreign.read_text() == '{"model": "hinet-lite-s", "mean": {"psnr": 30.1}}'
    broken = tmp_path / "broken.json"
    broken.write_text('{"format": "zoo-benchmark", "cel')
    doc = bm.run_benchmark("denoise", datasets=[str(photos)], json_path=broken, restart=True,
                           **dict(_BENCHMARK_KWARGS, models=[]))  # references only: no model runs
    assert doc["complete"] and json.loads(broken.read_text())["complete"]
    assert [cell["method"] for cell in doc["cells"]] == ["input"] and len(doc["cells"][0]["images"]) == 3


def test_benchmark_refuses_an_unwritable_json_an_empty_list_and_int8_seeds_before_measuring(tmp_path, monkeypatch,
                                                                                           capsys):
    """Before: --json FOLDER measured the first image, then failed renaming the temporary file onto
    the folder; --models , ran every model of the task; --int8 --seed 1 ran every reference and
    float cell, then refused at the first int8 cell."""
    def must_not_measure(*args, **kwargs):
        raise AssertionError("a cell was measured before the request was refused")

    monkeypatch.setattr(zoo.evaluate, "evaluate", must_not_measure)
    monkeypatch.setattr(bm, "_reference_cell", must_not_measure)
    folder = tmp_path / "bench.json"
    folder.mkdir()
    for argv, words in (
        (["--json", str(folder)], f"cannot write benchmark file {folder}: it is a folder, not a file; pass another "
                                  "--json path"),
        (["--models", ",", "--json", str(tmp_path / "b.json")],
         "--models ',' names nothing; list names separated by ',' (e.g. --models 'hinet-lite-s,hinet-lite'), or "
         "leave --models out for the default"),
        (["--degradations", " ; ", "--json", str(tmp_path / "b.json")], "--degradations ' ; ' names nothing"),
        (["--int8", "--seed", "1", "--json", str(tmp_path / "b.json")],
         "int8 rows are checked with seed 0 (zoo check's protocol); drop --seed or --int8"),
    ):
        assert bm.main(["denoise", "--references", "input", "--quiet", *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert err == f"zoo: error: {words}" or (err.startswith(f"zoo: error: {words}") and "\n" not in err), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench.json"]


def test_deconvolution_settings_follow_the_blur_noise_and_jpeg():
    settings = classical.DECONVOLUTION_SETTINGS
    assert classical.deconvolution_settings(parse_degradation("motion-blur")) is settings[(0.0, None)]
    noisy = classical.deconvolution_settings(parse_degradation("motion-blur:noise=2.55"))
    assert noisy is settings[(2.55, None)]
    assert noisy["rl_iterations"] < settings[(0.0, None)]["rl_iterations"]
    assert classical.deconvolution_settings(parse_degradation("motion-blur:noise=0-3")) is noisy
    # A JPEG'd blur takes the JPEG row, whatever its quality; the JPEG row is not picked without JPEG.
    for spec in ("motion-blur:jpeg=60-90", "motion-blur:jpeg=30", "motion-blur:noise=1,jpeg=95"):
        assert classical.deconvolution_settings(parse_degradation(spec)) is settings[(0.0, (60, 90))], spec
    assert settings[(0.0, (60, 90))]["rl_iterations"] < settings[(0.0, None)]["rl_iterations"]


def test_the_deblur_suite_scores_the_mild_shake_the_lite_deblurrers_train_on():
    """The shipped deblurring models train on trajectories of 10-30 px with noise sigma 0-3: the
    suite scores that shake at 1 % noise (inside the training range), with the deconvolution
    settings tuned for 1 % noise (re-tuned on mild shake: the same optimum)."""
    from zoo.tasks import MILD_CAMERA_SHAKE

    trained = parse_degradation(MILD_CAMERA_SHAKE)
    mild = [parse_degradation(spec) for spec in bm.SUITES["deblur"].degradations
            if parse_degradation(spec).params["length"] == trained.params["length"]]
    # 1 % noise, and saved as a JPEG (hinet-lite-deblur trains on both, zoo.tasks.MILD_CAMERA_SHAKE_OR_JPEG).
    assert [d.params["jpeg"] for d in mild] == [None, (60, 90)]
    assert all(d.params["length"] == (10.0, 30.0) for d in mild)
    low, high = trained.params["noise"]
    assert mild[0].params["noise"] == (2.55, 2.55) and low <= 2.55 <= high
    assert classical.deconvolution_settings(mild[0]) is classical.DECONVOLUTION_SETTINGS[(2.55, None)]
    assert classical.deconvolution_settings(mild[1]) is classical.DECONVOLUTION_SETTINGS[(0.0, (60, 90))]


def test_the_deblur_suite_measures_the_jpeg_blur_with_the_kernel_told_references(photos, monkeypatch):
    suite = bm.SUITES["deblur"]
    assert "motion-blur:jpeg=60-90" in suite.degradations
    assert {"input", "richardson-lucy", "wiener"} <= set(suite.references)
    # RL and Wiener see the JPEG'd image and are told the kernel of the same seed.
    clean = _clean(photos)
    blur = parse_degradation("motion-blur:size=15,length=20,jpeg=60-90")
    degraded = blur(clean, 3)
    seen = []
    original = classical._true_kernel
    monkeypatch.setattr(classical, "_true_kernel",
                        lambda degradation, seed: seen.append(seed) or original(degradation, seed))
    restored = classical.classical_method("richardson-lucy").run(degraded, blur, 3)
    assert seen == [3] and restored.shape == clean.shape
    assert psnr(restored.clamp(0, 1), clean) > psnr(degraded, clean)


def test_int8_rows_use_the_shipped_qat_state_when_the_card_has_one(photos, tmp_path, monkeypatch):
    """The int8 row measures what `zoo export` gives a user: PTQ calibrated on training crops, or
    the card's shipped QAT state (no calibration); a new QAT file measures the row again."""
    import dataclasses

    import export_mobile.api
    import measure.check
    from zoo import registry

    exported, checked = [], []

    def fake_export(name, target, precision, tile, folder, calibration=None, **kwargs):
        exported.append(calibration)
        folder.mkdir(parents=True)
        method = "ptq" if calibration else "qat"
        (folder / "manifest.json").write_text(json.dumps({"quantization": {"method": method}}))

    def fake_check(folder, dataset, spec, **kwargs):
        checked.append(folder)
        images = [{"name": f"p{i}", "psnr": 30.0 - i, "ssim": 0.9, "latency_ms": 5.0, "reference_psnr": 30.1 - i}
                  for i in range(3)]
        return {"records": [{"kind": "check", "images": images, "accuracy": {"drop_db": 0.1},
                             "latency_ms": {"median": 5.0}}]}

    monkeypatch.setattr(export_mobile.api, "export_model", fake_export)
    monkeypatch.setattr(measure.check, "run_check", fake_check)
    card = registry.get_card("hinet-lite-s")
    monkeypatch.setitem(registry._REGISTRY, card.name, dataclasses.replace(card, qat_weights={}))  # PTQ first
    kwargs = dict(models=["hinet-lite-s"], references=["input"], degradations=["gaussian:25"],
                  datasets=[str(photos)], json_path=tmp_path / "bench.json", progress=False, int8=True)
    doc = bm.run_benchmark("denoise", **kwargs)
    int8 = next(c for c in doc["cells"] if c["precision"] == "int8")
    assert exported == ["auto"] and int8["quantization"] == "ptq"
    assert "int8-ptq" in bm.format_benchmark(doc)

    qat_file = tmp_path / "qat.safetensors"
    qat_file.write_bytes(b"not read by the fake export")
    monkeypatch.setitem(registry._REGISTRY, card.name, dataclasses.replace(card, qat_weights={"xnnpack": str(qat_file)}))
    doc = bm.run_benchmark("denoise", **kwargs)
    int8 = next(c for c in doc["cells"] if c["precision"] == "int8")
    assert exported == ["auto", None] and int8["quantization"] == "qat"
    assert int8["weights_sha256"].endswith(bm._int8_digest(registry.get_card("hinet-lite-s"), "x")[1:])
    assert len(checked) == 2 and checked[0] != checked[1]  # its own artifact folder, measured again
    assert "int8-qat" in bm.format_benchmark(doc)

    # A cell written before the route was recorded (no quantization, no digest) was calibrated
    # here: with QAT state shipping it is measured again.
    saved = json.loads((tmp_path / "bench.json").read_text())
    for cell in saved["cells"]:
        if cell["precision"] == "int8":
            cell.pop("quantization"), cell.pop("weights_sha256")
    (tmp_path / "bench.json").write_text(json.dumps(saved))
    doc = bm.run_benchmark("denoise", **kwargs)
    assert exported[-1] is None and len(checked) == 3
    assert next(c for c in doc["cells"] if c["precision"] == "int8")["quantization"] == "qat"
