"""Results files (export_mobile/results.py): the schema, golden files of the demo apps, both
validators, errors naming the field, atomic writes and reading many files. No toolchain needed."""

import json
from pathlib import Path

import pytest
import torch

from measure import results as rs
from export_mobile.schema import schema_errors
from zoo.errors import ZooError

GOLDEN_DIR = Path(__file__).parent / "data" / "results"
GOLDEN = sorted(GOLDEN_DIR.glob("*.json"))
VALIDATORS = pytest.mark.parametrize("use_jsonschema", [True, False], ids=["jsonschema", "builtin"])

#: invalid/NAME.json -> (the field the error must name, a word of the message)
INVALID = {
    "negative-median": ("records[0].latency_ms.median", "-3.5"),
    "bad-output-sha256": ("records[0].images[1].output_sha256", "NOT-A-HASH"),
    "unknown-kind": ("records[0].kind", "benchmark"),
    "missing-host": ("records[0]", "'host'"),
    "no-records": ("records", "[]"),
    "share-above-one": ("records[0].operators[0].share", "1.5"),
    "host-kind-watch": ("records[0].host.kind", "watch"),
    "provenance-method": ("records[0].artifact.quantization.method", "gptq"),
}


def _skip_without_jsonschema(use_jsonschema):
    if use_jsonschema:
        pytest.importorskip("jsonschema")


def test_schema_is_a_valid_draft_2020_12_schema():
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.Draft202012Validator.check_schema(rs.load_results_schema())


def test_golden_files_cover_the_demo_apps():
    kinds = {(r["kind"], r["runtime"]["name"]) for r in rs.iter_records(GOLDEN)}
    assert {("device", "executorch"), ("device", "coreml"), ("check", "executorch")} <= kinds


@VALIDATORS
@pytest.mark.parametrize("path", GOLDEN, ids=[p.name for p in GOLDEN])
def test_golden_files_are_valid(path, use_jsonschema):
    _skip_without_jsonschema(use_jsonschema)
    doc = json.loads(path.read_text(encoding="utf-8"))
    assert rs.results_errors(doc, use_jsonschema=use_jsonschema) == []
    assert rs.validate_results(doc, use_jsonschema=use_jsonschema) is doc


@VALIDATORS
@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_files_name_the_field(name, use_jsonschema):
    _skip_without_jsonschema(use_jsonschema)
    path = GOLDEN_DIR / "invalid" / f"{name}.json"
    field, word = INVALID[name]
    doc = json.loads(path.read_text(encoding="utf-8"))
    with pytest.raises(ZooError) as caught:
        rs.validate_results(doc, source=path.name, use_jsonschema=use_jsonschema)
    message = str(caught.value)
    assert message.startswith(f"{path.name} is invalid: field {field}: "), message
    assert word in message


def test_every_invalid_file_is_listed():
    assert {p.stem for p in (GOLDEN_DIR / "invalid").glob("*.json")} == set(INVALID) | {"newer-format-version"}


def test_newer_format_version_asks_for_an_upgrade():
    with pytest.raises(ZooError, match="format_version 2, newer.*upgrade"):
        rs.read_results(GOLDEN_DIR / "invalid" / "newer-format-version.json")


def test_builtin_validator_checks_maximum():
    assert schema_errors(1.5, {"type": "number", "maximum": 1}, use_jsonschema=False) == \
        ["(top level): 1.5 is greater than the maximum of 1"]


def test_new_record_round_trips_through_a_file(tmp_path):
    record = rs.new_record("bench", "hinet-lite", {"name": "pytorch", "device": "cpu", "precision": "fp32"},
                           task="denoise", input={"height": 64, "width": 64, "batch": 1},
                           latency_ms=rs.latency_summary([4.0, 1.0, 2.0, 3.0], warmup=2), peak_memory_mb=None)
    assert "peak_memory_mb" not in record  # None means unknown: left out
    assert record["host"]["kind"] == "desktop" and record["host"]["cores"] >= 1
    doc = rs.results_document([record], "zoo test")
    path = rs.write_results(tmp_path / "sub" / "r.json", doc)
    assert rs.read_results(path) == doc
    assert not [p for p in path.parent.iterdir() if p.name != "r.json"]  # no temporary left behind


def test_write_refuses_an_invalid_document_and_keeps_the_old_file(tmp_path):
    path = tmp_path / "r.json"
    good = rs.results_document([rs.new_record("baseline", "hinet-lite", "pytorch")], "zoo test")
    rs.write_results(path, good)
    bad = json.loads(json.dumps(good))
    bad["records"][0]["latency_ms"] = {"median": 1.0}
    with pytest.raises(ZooError, match=r"field records\[0\]\.latency_ms: 'runs' is a required property"):
        rs.write_results(path, bad)
    assert rs.read_results(path) == good


def test_read_errors(tmp_path):
    with pytest.raises(ZooError, match="does not exist"):
        rs.read_results(tmp_path / "missing.json")
    (tmp_path / "broken.json").write_text("{", encoding="utf-8")
    with pytest.raises(ZooError, match="not valid JSON"):
        rs.read_results(tmp_path / "broken.json")


def test_iter_records_reads_files_and_folders_in_order(tmp_path):
    for index in range(2):
        rs.write_results(tmp_path / "many" / f"{index}.json",
                         rs.results_document([rs.new_record("bench", f"m{index}", "pytorch")], "zoo test"))
    records = rs.iter_records([GOLDEN_DIR / "ios-coreml-fp16.json", tmp_path / "many"])
    assert [r["model"] for r in records] == ["hinet-lite", "m0", "m1"]


def test_latency_summary():
    summary = rs.latency_summary([5.0, 1.0, 3.0, 2.0, 4.0], warmup=3, per="tile")
    assert summary == {"per": "tile", "median": 3.0, "p90": pytest.approx(4.6), "min": 1.0, "mean": 3.0,
                       "runs": 5, "warmup": 3, "timer": "perf_counter"}
    with pytest.raises(ValueError):
        rs.latency_summary([])


def test_output_sha256_hashes_8_bit_hwc_bytes():
    import hashlib

    image = torch.rand(3, 5, 7)
    levels = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
    assert rs.output_sha256(image) == hashlib.sha256(levels.tobytes()).hexdigest()
    assert rs.output_sha256(image[None]) == rs.output_sha256(image)


def test_finite_or_none():
    assert rs.finite_or_none(float("inf")) is None and rs.finite_or_none(2) == 2.0 and rs.finite_or_none(None) is None
