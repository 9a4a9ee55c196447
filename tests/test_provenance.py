"""How an int8 model was made (quantize/provenance.py), from the quantizer to the card.

A PTQ (calibrated at export) and a QAT (2 iterations of the training engine on a tiny pool) of
hinet-lite-s at tile 32 each give an ExecuTorch XNNPACK int8 artifact; its manifest, the results
file ``zoo check`` writes for it, the card row ``zoo report --update-cards`` writes and the report
all carry the same record (method, recipe, mixed precision, steps, calibration). A results file
without the field (written before it existed, or by an app) still validates and reads "unknown";
older sidecars and manifests give a record rebuilt from what they recorded. The schemas' two copies
of the record's definition are the same.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import yaml

from measure import measured as ms
from measure import report as rp
from measure import results as rs
from quantize.provenance import (DERIVED_NOTE, UNKNOWN, calibration_record, make_provenance, provenance_label,
                                 recorded_provenance)
from tests.test_train import pool_dir  # noqa: F401  (a fixture)
from zoo.errors import ZooError

ROOT = Path(__file__).resolve().parents[1]
SCHEMAS = ROOT / "export_mobile" / "schemas"
needs_executorch = pytest.mark.skipif(importlib.util.find_spec("executorch") is None,
                                      reason="executorch (mobile extra) is not installed")
HOST = {"name": "desktop (Test CPU)", "kind": "desktop"}


def _record(sha: str, precision: str = "int8", quantization: dict | None = None, kind: str = "check",
            psnr: float = 30.0) -> dict:
    artifact = {"file": f"{sha}.pte", "sha256": sha * 64, "target": "executorch-xnnpack", "precision": precision,
                "bytes": 10}
    if quantization is not None:
        artifact["quantization"] = quantization
    return rs.new_record(kind, "hinet-lite-s", {"name": "executorch", "device": "cpu", "precision": precision},
                         dict(HOST), artifact=artifact, input={"height": 64, "width": 64, "batch": 1},
                         latency_ms=rs.latency_summary([5.0]),
                         accuracy={"dataset": "bsd68", "degradation": "gaussian:25", "images": 2, "psnr": psnr,
                                   "drop_db": 0.1}, created="2026-12-01T00:00:00Z")


QAT = make_provenance("qat", "xnnpack", mixed="first-last", steps=2000,
                      calibration=calibration_record("urban100+bundled", 8, unit="batches", degradation="gaussian:15-50"),
                      options={"ranges": "ptq", "learnable_scales": True, "distill_from_float": 1.0}, source="config x")


# ----------------------------------------------------------------------------- the record and its label


def test_labels_tell_the_methods_apart():
    ptq = make_provenance("ptq", "xnnpack", mixed="first-last",
                          calibration=calibration_record("urban100", 32, degradation="gaussian:15-50"))
    assert provenance_label(ptq) == "PTQ xnnpack, first-last float; ranges from 32 crops of urban100 (gaussian:15-50)"
    assert provenance_label(QAT) == ("QAT xnnpack, first-last float, LSQ scales, 2000 steps, distilled from float; "
                                     "ranges from 8 batches of urban100+bundled (gaussian:15-50)")
    minmax = make_provenance("qat", "tflite", mixed="none", steps=3, options={"ranges": "minmax"})
    assert provenance_label(minmax) == "QAT tflite, all int8, min/max ranges, 3 steps"
    fixed = dict(QAT, options={**QAT["options"], "learnable_scales": False})
    assert provenance_label(fixed).startswith("QAT xnnpack, first-last float, fixed scales, 2000 steps")
    assert provenance_label(make_provenance("target", "coreml", mixed=None)) == "quantized by the coreml target itself"
    assert provenance_label(None) == UNKNOWN == "unknown (measured before provenance was recorded)"
    assert provenance_label("hand-written label") == "hand-written label"
    with pytest.raises(ZooError, match="unknown quantization method 'gptq'"):
        make_provenance("gptq", "xnnpack", mixed=None)
    with pytest.raises(ZooError, match="non-negative integer"):
        make_provenance("qat", "xnnpack", mixed=None, steps=-1)
    with pytest.raises(ZooError, match="images or batches"):
        calibration_record("urban100", 3, unit="tiles")


def test_the_schemas_define_the_record_once_and_accept_it():
    manifest_schema = json.loads((SCHEMAS / "manifest.schema.json").read_text())
    results_schema = json.loads((SCHEMAS / "results.schema.json").read_text())
    assert manifest_schema["$defs"]["provenance"] == results_schema["$defs"]["provenance"]
    assert manifest_schema["properties"]["quantization"]["properties"]["provenance"] == {"$ref": "#/$defs/provenance"}
    assert results_schema["$defs"]["artifact"]["properties"]["quantization"] == {"$ref": "#/$defs/provenance"}
    for use_jsonschema in (False, None):
        doc = rs.results_document([_record("a", quantization=QAT)], "test")
        assert rs.results_errors(doc, use_jsonschema=use_jsonschema) == []
        bad = rs.results_document([_record("a", quantization={**QAT, "method": "magic"})], "test")
        errors = rs.results_errors(bad, use_jsonschema=use_jsonschema)
        assert any("records[0].artifact.quantization.method" in error for error in errors)
    from export_mobile.manifest import manifest_errors

    golden = json.loads((ROOT / "tests" / "data" / "manifests" / "executorch-xnnpack-int8.json").read_text())
    assert golden["quantization"]["provenance"]["method"] == "ptq" and manifest_errors(golden) == []
    golden["quantization"]["provenance"]["steps"] = "many"
    assert [e.split(":")[0] for e in manifest_errors(golden, use_jsonschema=False)] == ["quantization.provenance.steps"]


def test_older_sidecars_and_manifests_give_what_they_recorded():
    engine_sidecar = {"method": "qat", "recipe": "xnnpack", "mixed_flag": "first-last",
                      "calibration": {"source": "training batches of the run", "count": 8, "degradation": "gaussian:15-50"},
                      "qat": {"config": "qat_cfg", "iterations": 2000, "start": 500, "lr": 2e-5, "ranges": "ptq",
                              "learnable_scales": True, "distill_from_float": 1.0, "reestimated_ranges": 0, "ema": True}}
    record = recorded_provenance(engine_sidecar)
    assert (record["method"], record["recipe"], record["mixed"], record["steps"]) == ("qat", "xnnpack", "first-last", 1500)
    assert record["options"]["learnable_scales"] is True and record["calibration"]["batches"] == 8
    assert record["source"] == "config qat_cfg" and record["note"] == DERIVED_NOTE
    export_ptq = {"method": "ptq", "recipe": "xnnpack", "source": None,
                  "calibration": {"source": "urban100", "count": 32, "degradation": "gaussian:25", "mixed_precision": "none"}}
    record = recorded_provenance(export_ptq)
    assert provenance_label(record).startswith("PTQ xnnpack, all int8; ranges from 32 crops of urban100")
    legacy_qat_manifest = {"method": "qat", "recipe": "xnnpack", "calibration": None, "source": "quantized.pt2"}
    assert recorded_provenance(legacy_qat_manifest)["steps"] is None
    assert "steps not recorded" in provenance_label(recorded_provenance(legacy_qat_manifest))
    assert recorded_provenance({"provenance": QAT, "method": "ptq"}) == QAT  # a written record wins
    assert recorded_provenance(None) is None and recorded_provenance({"method": "weights-only"}) is None


# ----------------------------------------------------------------------------- results, cards, report


def test_a_results_file_without_the_field_validates_and_reads_unknown(tmp_path):
    old = tmp_path / "old.json"
    rs.write_results(old, rs.results_document([_record("a"), _record("f", precision="fp32", psnr=31.0)], "zoo 0.0 check"))
    loaded, _ = ms.load_results([old])
    rows = {row["sha256"]: row for row in ms.measured_rows(loaded)}
    assert rows["a" * 12]["quantization"] == UNKNOWN and "quantization" not in rows["f" * 12]
    assert f"  quantized: {UNKNOWN}" in ms.format_measured([rows["a" * 12]])
    tables = {t.id: t for s in rp.build_report(loaded).sections for t in s.tables}
    accuracy = {row[2]: row[-1] for row in tables["accuracy-table"].rows}
    assert accuracy == {"a" * 12: UNKNOWN, "f" * 12: "—"}
    # A later record of the same artifact that carries the record labels it everywhere.
    new = tmp_path / "new.json"
    rs.write_results(new, rs.results_document([_record("a", quantization=QAT, kind="bench")], "zoo check"))
    loaded, _ = ms.load_results([old, new])
    tables = {t.id: t for s in rp.build_report(loaded).sections for t in s.tables}
    assert {row[2]: row[-1] for row in tables["accuracy-table"].rows}["a" * 12] == provenance_label(QAT)
    assert {row[5]: row[-1] for row in tables["latency-table"].rows}["a" * 12] == provenance_label(QAT)
    assert tables["summary"].columns[-1] == "quantization"


def test_cards_keep_a_known_provenance_over_an_unknown_one(tmp_path):
    cards = tmp_path / "cards"
    unknown, _ = ms.load_results([rs.write_results(tmp_path / "u.json", rs.results_document([_record("a")], "t"))])
    (path,) = ms.update_cards(unknown, cards)
    (row,) = yaml.safe_load(path.read_text())["measured"]
    assert row["quantization"] == UNKNOWN and list(row)[:6] == ["artifact", "target", "precision", "sha256",
                                                                "quantization", "accuracy"]
    document = rs.results_document([_record("a", quantization=QAT)], "t")
    known, _ = ms.load_results([rs.write_results(tmp_path / "k.json", document)])
    ms.update_cards(known, cards)
    ms.update_cards(unknown, cards)  # an older file read again does not erase it
    (row,) = yaml.safe_load(path.read_text())["measured"]
    assert row["quantization"] == QAT


# ----------------------------------------------------------------------------- PTQ and QAT, end to end


def _check_card_report(folder: Path, tmp_path: Path) -> tuple[dict, dict, str]:
    """zoo check of the artifact in ``folder`` on one small image, the card row and the report's
    label: ``(results artifact field, card row, accuracy-table label)``."""
    from measure.check import run_check
    from tests.tiny_artifact import tiny_images

    images = tiny_images(tmp_path / "images")
    document = run_check(folder, str(images), "gaussian:25", limit=1, json_path=tmp_path / "check.json",
                         progress=False)
    loaded, _ = ms.load_results([document["path"]])
    (path,) = ms.update_cards(loaded, tmp_path / "cards")
    (row,) = [row for row in yaml.safe_load(path.read_text())["measured"] if row["precision"] == "int8"]
    tables = {t.id: t for s in rp.build_report(loaded).sections for t in s.tables}
    (label,) = [row[-1] for row in tables["accuracy-table"].rows]
    return rs.read_results(document["path"])["records"][0]["artifact"], row, label


@needs_executorch
@pytest.mark.usefixtures("one_thread")
def test_ptq_artifact_carries_its_provenance_to_the_card(tmp_path):
    from export_mobile.api import export_model
    from export_mobile.manifest import read_manifest
    from zoo.registry import get_card

    export_model("hinet-lite-s", "executorch-xnnpack", "int8", 32, tmp_path / "app", calibration="bundled",
                 calibration_images=2, mixed="first-last", verify=False)
    provenance = read_manifest(tmp_path / "app")["quantization"]["provenance"]
    assert provenance == {"method": "ptq", "recipe": "xnnpack", "mixed": "first-last",
                          "calibration": {"data": "bundled", "images": 2,
                                          "degradation": get_card("hinet-lite-s").calibration_degradation},
                          "steps": None, "options": {}, "source": None}
    artifact, row, label = _check_card_report(tmp_path / "app", tmp_path)
    assert artifact["quantization"] == provenance and row["quantization"] == provenance
    assert label == provenance_label(provenance) and label.startswith("PTQ xnnpack, first-last float; ranges from 2 crops")


@needs_executorch
@pytest.mark.usefixtures("one_thread")
def test_qat_artifact_carries_its_provenance_to_the_card(pool_dir, tmp_path):  # noqa: F811
    from export_mobile.api import export_model
    from export_mobile.manifest import read_manifest
    from quantize.ptq import load_quantized
    from tests.test_qat_engine import qat_config, run_qat

    raw = qat_config(pool_dir, {"start": 1, "tile": 32, "learnable_scales": True, "distill_from_float": 0.5},
                     train={"iterations": 3, "ema_decay": None}, data={"patch_size": 32, "val_crop": 32})
    raw["model"] = {"name": "hinet-lite-s"}
    quantized = run_qat(raw, tmp_path / "run").phase_outputs["quantized_model"]
    _graph, sidecar = load_quantized(quantized)
    provenance = sidecar["provenance"]
    assert (provenance["method"], provenance["recipe"], provenance["mixed"], provenance["steps"]) == \
        ("qat", "xnnpack", "first-last", 2)  # iterations 1..3 from start 1: two QAT steps
    assert provenance["options"]["learnable_scales"] is True and provenance["options"]["distill_from_float"] == 0.5
    assert provenance["calibration"] == {"data": str(pool_dir), "batches": 2, "degradation": "gaussian:25"}
    assert provenance["source"] == f"config tiny, run {tmp_path / 'run'}"
    export_model("hinet-lite-s", "executorch-xnnpack", "int8", 32, tmp_path / "app", quantized=quantized, verify=False)
    assert read_manifest(tmp_path / "app")["quantization"]["provenance"] == provenance
    artifact, row, label = _check_card_report(tmp_path / "app", tmp_path)
    assert artifact["quantization"] == provenance and row["quantization"] == provenance
    assert label == provenance_label(provenance)
    assert label.startswith("QAT xnnpack, first-last float, LSQ scales, 2 steps, distilled from float; "
                            "ranges from 2 batches")
