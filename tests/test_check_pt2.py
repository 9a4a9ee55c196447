"""zoo check FILE.pt2 (measure/pt2e.py): a quantized PT2E model checked like an artifact.

One PTQ of the shipped hinet-lite-s (XNNPACK recipe, tile 32, two calibration crops of the bundled
photos) is checked on 32x32 images, where one tile is the whole image: the record's PSNR equals the
loaded graph run directly, the reference PSNR the float model's; the record says it is a PyTorch
simulation of the recipe's numerics and carries the sidecar's provenance and the file's sha256.
Then the refusals (no sidecar, unknown model, not a quantized zoo model, weights that cannot be
rebuilt) and where the float weights of older sidecars and QAT runs are read from.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import torch

from measure import check, pt2e
from measure import results as rs
from zoo.data.datasets import open_dataset
from zoo.data.io import quantize
from zoo.errors import ZooError
from zoo.metrics import psnr
from zoo.registry import create_model, get_card

SPEC = "gaussian:25"
TILE = 32
needs_executorch = pytest.mark.skipif(importlib.util.find_spec("executorch") is None,
                                      reason="executorch (mobile extra: the XNNPACK quantizer) is not installed")
pytestmark = [needs_executorch, pytest.mark.usefixtures("one_thread")]


@pytest.fixture(scope="module")
def quantized(tmp_path_factory) -> Path:
    """``zoo quantize hinet-lite-s --backend xnnpack --tile 32`` (shipped weights, 2 crops): the .pt2."""
    from quantize.api import run_quantize

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        summary = run_quantize("hinet-lite-s", backend="xnnpack", method="ptq",
                               output_dir=tmp_path_factory.mktemp("quantized"), tile=TILE, calib_images=2,
                               calib_source="bundled", eval_dataset="none", progress=False, log=lambda *_: None)
    finally:
        torch.set_num_threads(threads)
    return Path(summary["model_path"])


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """A 32x32 image (one tile: the graph runs it whole) and a 48x64 one (several tiles)."""
    from zoo.data.io import write_image

    folder = tmp_path_factory.mktemp("pt2-images")
    generator = torch.Generator().manual_seed(3)
    for index, (height, width) in enumerate(((TILE, TILE), (48, 64))):
        ramp = torch.linspace(0, 1, width).expand(3, height, width) * torch.tensor([0.8, 0.5, 0.3])[:, None, None]
        image = (0.1 + 0.7 * ramp + 0.2 * torch.rand(3, height, width, generator=generator)).clamp(0, 1)
        write_image(folder / f"img{index}.png", image)
    return folder


def _copy(quantized: Path, folder: Path, sidecar: dict | None = None, name: str | None = None) -> Path:
    """A copy of the .pt2 in ``folder`` (as ``name``), with ``sidecar`` as its .json (None: no sidecar)."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / (name or quantized.name)
    shutil.copyfile(quantized, target)
    if sidecar is not None:
        target.with_suffix(".json").write_text(json.dumps(sidecar), encoding="utf-8")
    return target


def _sidecar(quantized: Path) -> dict:
    return json.loads(quantized.with_suffix(".json").read_text(encoding="utf-8"))


def _refused(pt2: Path, images: Path, tmp_path: Path, match: str, **kwargs) -> ZooError:
    """run_check refuses ``pt2`` with a one-line error matching ``match`` and writes nothing."""
    results = tmp_path / "refused.json"
    with pytest.raises(ZooError, match=match) as caught:
        check.run_check(pt2, str(images), SPEC, limit=1, json_path=results, progress=False, **kwargs)
    assert "\n" not in str(caught.value) and caught.value.fix
    assert not results.exists()
    return caught.value


def test_check_of_a_pt2_equals_the_graph_and_says_what_ran(quantized, images, tmp_path, capsys):
    from quantize.ptq import load_quantized

    path = tmp_path / "check.json"
    document = check.run_check(quantized, str(images), SPEC, limit=1, json_path=path, progress=False)
    record = rs.read_results(document["path"])["records"][0]  # validated against results.schema.json

    # The first image is one tile: the graph (and the float model) run on it directly.
    graph, sidecar = load_quantized(quantized)
    sample = open_dataset(str(images), degradation=SPEC, limit=1)[0]
    assert tuple(sample.degraded.shape) == (3, TILE, TILE)
    with torch.no_grad():
        int8_output = quantize(graph(sample.degraded[None])[0].clamp(0, 1))
        float_model, _card = create_model("hinet-lite-s")
        float_output = quantize(float_model(sample.degraded[None])[0].clamp(0, 1))
    (entry,) = record["images"]
    assert entry["name"] == sample.name and entry["tiles"] == 1
    assert entry["psnr"] == pytest.approx(psnr(int8_output, sample.target), abs=1e-9)
    assert entry["reference_psnr"] == pytest.approx(psnr(float_output, sample.target), abs=1e-6)
    assert entry["psnr_vs_reference"] == pytest.approx(psnr(int8_output, float_output), abs=1e-6)
    assert record["accuracy"]["drop_db"] == pytest.approx(entry["reference_psnr"] - entry["psnr"])

    assert record["runtime"]["name"] == "pytorch pt2e int8 simulation (xnnpack quantizer numerics)"
    assert (record["runtime"]["device"], record["runtime"]["precision"]) == ("cpu", "int8")
    artifact = record["artifact"]
    assert artifact["file"] == quantized.name and artifact["target"] == "pt2e-xnnpack" and artifact["precision"] == "int8"
    assert artifact["sha256"] == hashlib.sha256(quantized.read_bytes()).hexdigest()
    assert artifact["quantization"] == sidecar["provenance"] and artifact["quantization"]["method"] == "ptq"
    assert record["input"]["tile"] == TILE and record["reference"]["tile"] == TILE
    assert any(note.startswith("ran: pytorch pt2e int8 simulation") for note in record["notes"])
    assert record["complete"] is True

    # Resume: without --limit only the second image (two tiles across) runs.
    measured = []
    record = check.run_check(quantized, str(images), SPEC, json_path=path, progress=False,
                             on_image=lambda index, _entry: measured.append(index))["records"][0]
    assert measured == [1] and record["complete"] is True and record["images"][0] == entry
    assert record["images"][1]["tiles"] > 1 and len(record["accuracy"]["worst"]) == 2

    # The CLI prints the table; the report and the measured rows read the record.
    assert check.main([str(quantized), "--dataset", str(images), "--degradation", SPEC, "--json", str(path),
                       "--quiet"]) == 0
    assert "(pt2e-xnnpack int8)" in capsys.readouterr().out
    from measure import measured as ms
    from measure import report as rp

    loaded, _skipped = ms.load_results([path])
    (row,) = ms.measured_rows(loaded)
    assert row["target"] == "pt2e-xnnpack" and row["quantization"] == sidecar["provenance"]
    tables = {t.id: t for s in rp.build_report(loaded).sections for t in s.tables}
    assert tables["accuracy-table"].rows[0][1] == "pt2e-xnnpack int8"
    assert "summary" not in tables  # a simulation is no candidate for the best artifact an app runs


def test_pt2_refusals_name_the_problem_and_the_fix(quantized, images, tmp_path):
    from quantize.ptq import export_for_quantization, save_quantized

    sidecar = _sidecar(quantized)
    _refused(_copy(quantized, tmp_path / "alone"), images, tmp_path, "has no sidecar")
    _refused(_copy(quantized, tmp_path / "unknown", dict(sidecar, model="no-such-model")), images, tmp_path,
             "names the model 'no-such-model', which this zoo does not know")
    _refused(_copy(quantized, tmp_path / "other", {"format": "something-else"}), images, tmp_path,
             "is not a zoo quantized-model sidecar, so .* is not a quantized zoo model")
    garbage = tmp_path / "garbage" / quantized.name
    _copy(quantized, garbage.parent, sidecar)
    garbage.write_bytes(b"not a zip archive")
    _refused(garbage, images, tmp_path, "is not a torch.export program")

    # A float graph saved with a zoo sidecar: no quantize/dequantize operators.
    model, _card = create_model("hinet-lite-s")
    example = torch.zeros(1, 3, TILE, TILE)
    float_pt2 = save_quantized(export_for_quantization(model, example), tmp_path / "float" / "float.pt2", example,
                               {"model": "hinet-lite-s", "method": "ptq", "recipe": "xnnpack",
                                "float_weights": sidecar["float_weights"]})
    _refused(float_pt2, images, tmp_path, "holds no quantize/dequantize operators")

    # Float weights that cannot be rebuilt without --weights; weights other than the recorded ones.
    untrained = dict(sidecar, weights="untrained (random init): NOT a restoration",
                     float_weights={"source": "untrained", "file": None, "sha256": None})
    _refused(_copy(quantized, tmp_path / "untrained", untrained), images, tmp_path,
             "was quantized with untrained \\(random\\) weights")
    from_file = dict(sidecar, weights="/elsewhere/mine.safetensors",
                     float_weights={"source": "file", "file": "mine.safetensors", "sha256": "0" * 64})
    pt2 = _copy(quantized, tmp_path / "file", from_file)
    _refused(pt2, images, tmp_path, "was quantized from the weights file /elsewhere/mine.safetensors; pass --weights")
    _refused(pt2, images, tmp_path, "the weights hinet_lite_s_gaussian.safetensors differ from those",
             weights=str(get_card("hinet-lite-s").weights_path))


def test_cli_refusal_is_one_line_with_exit_status_2(quantized, images, tmp_path, capsys):
    from zoo_cli.main import main as zoo_main

    alone = _copy(quantized, tmp_path / "alone")
    assert zoo_main(["check", str(alone), "--dataset", str(images), "--json", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "has no sidecar" in err and "keep the .json" in err


def test_float_weights_of_older_sidecars_and_qat_runs(tmp_path):
    card = get_card("hinet-lite-s")
    shipped = card.weights_path
    recorded = pt2e.recorded_float_weights
    written = {"source": "shipped", "file": shipped.name, "sha256": "a" * 64}
    assert recorded({"float_weights": written, "weights": str(shipped)}, tmp_path / "m.pt2", card)["sha256"] == "a" * 64
    assert recorded({"weights": "untrained (random init)"}, tmp_path / "m.pt2", card)["source"] == "untrained"
    elsewhere = f"/another/checkout/zoo/weights/{shipped.name}"  # zoo quantize on another machine
    assert recorded({"weights": elsewhere}, tmp_path / "m.pt2", card)["source"] == "shipped"
    assert recorded({"weights": "/data/mine.safetensors"}, tmp_path / "m.pt2", card) == {
        "source": "file", "file": "mine.safetensors", "path": "/data/mine.safetensors", "sha256": None,
        "how": "the sidecar's weights"}
    assert recorded({}, tmp_path / "m.pt2", card)["source"] == "unknown"

    # A QAT run's quantized.pt2: the weights the run started from, in its config.json.
    run = tmp_path / "run"
    run.mkdir()
    qat = {"weights": f"QAT run {run} at iteration 3 (EMA weights)"}
    assert recorded(qat, run / "quantized.pt2", card)["source"] == "unknown"  # no config.json beside it
    for start, source in (("shipped", "shipped"), (None, "untrained"), ("/data/start.safetensors", "file")):
        (run / "config.json").write_text(json.dumps({"model": {"name": "hinet-lite-s", "weights": start}}))
        entry = recorded(qat, run / "quantized.pt2", card)
        assert entry["source"] == source and entry["how"].startswith("the weights the QAT run started from")
    assert pt2e.results_name(run / "quantized.pt2") == "run_quantized.pt2"
    assert pt2e.results_name(tmp_path / "hinet-lite-s_coreml_ptq.pt2") == "hinet-lite-s_coreml_ptq.pt2"
