"""The task table (zoo/tasks.py) is the one spelling of every task: both JSON schemas, the Kotlin
and Swift apps (their source text), the registry, evaluation, manifests and results files follow
it, and the older spelling "sr" is still read everywhere a file or a card may hold it."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from zoo import registry
from zoo.errors import ZooError
from zoo.tasks import TASK_ALIASES, TASKS, canonical_task, get_task, task_names

ROOT = Path(__file__).resolve().parents[1]
SCHEMAS = ROOT / "export_mobile" / "schemas"
KOTLIN_CORE = ROOT / "android_demo" / "core" / "src" / "main" / "kotlin" / "org" / "restorationzoo" / "core"
SWIFT_CORE = ROOT / "ios_demo" / "ZooCore" / "Sources" / "ZooCore"
GOLDEN_SR = ROOT / "tests" / "data" / "manifests" / "onnx-fp32-sr-x4.json"


def _schema_task_node(file_name: str, *path: str) -> dict:
    node = json.loads((SCHEMAS / file_name).read_text(encoding="utf-8"))
    for key in path:
        node = node[key]
    return node


# --- the apps and schemas list exactly the table ----------------------------------------------


def test_manifest_schema_lists_the_table_and_its_aliases():
    node = _schema_task_node("manifest.schema.json", "properties", "model", "properties", "task")
    aliases = node.get("x-aliases", {})
    assert [value for value in node["enum"] if value not in aliases] == list(task_names())
    assert aliases == TASK_ALIASES == {"sr": "super-resolution"}
    assert set(node["enum"]) == set(task_names()) | set(TASK_ALIASES)


def test_results_schema_lists_the_table():
    node = _schema_task_node("results.schema.json", "$defs", "record", "properties", "task")
    assert node["enum"] == [*task_names(), None]
    assert "x-aliases" not in node  # results files always had the table's spelling


def test_kotlin_lists_the_table_and_reads_the_aliases():
    source = (KOTLIN_CORE / "Manifest.kt").read_text(encoding="utf-8")
    listed = re.search(r"val TASKS = listOf\(([^)]*)\)", source)
    assert listed, "Manifest.kt: no `val TASKS = listOf(...)`"
    assert re.findall(r'"([^"]+)"', listed.group(1)) == list(task_names())
    aliases = re.search(r"val TASK_ALIASES = mapOf\(([^)]*)\)", source)
    assert aliases, "Manifest.kt: no `val TASK_ALIASES = mapOf(...)`"
    assert dict(re.findall(r'"([^"]+)"\s+to\s+"([^"]+)"', aliases.group(1))) == TASK_ALIASES
    assert "TASK_ALIASES[it] ?: it" in source  # the parsed task is the table's name
    # The results writer copies the manifest's task: no second spelling table.
    benchmark = (KOTLIN_CORE / "Benchmark.kt").read_text(encoding="utf-8")
    assert '"task" to manifest.model.task,' in benchmark and "super-resolution" not in benchmark


def _swift_enum(source: str, name: str) -> str:
    start = source.index(f"public enum {name}:")
    depth, index = 0, source.index("{", start)
    for index in range(index, len(source)):
        depth += {"{": 1, "}": -1}.get(source[index], 0)
        if depth == 0:
            return source[start:index + 1]
    raise AssertionError(f"unbalanced braces in enum {name}")


def test_swift_lists_the_table_and_reads_the_aliases():
    manifest = (SWIFT_CORE / "Manifest.swift").read_text(encoding="utf-8")
    body = _swift_enum(manifest, "ModelTask")
    cases = dict(re.findall(r'^\s*case\s+(\w+)\s*=\s*"([^"]*)"\s*$', body, flags=re.M))
    assert list(cases.values()) == list(task_names())
    swift_aliases = dict(re.findall(r'"([^"]+)":\s*\.(\w+)', body))
    assert {alias: cases[case] for alias, case in swift_aliases.items()} == TASK_ALIASES
    # Results files use the same enum, so the two schemas cannot drift apart in the app.
    results = (SWIFT_CORE / "Results.swift").read_text(encoding="utf-8")
    assert "public typealias ResultTask = ModelTask" in results
    assert "enum ResultTask" not in results


# --- the table ---------------------------------------------------------------------------------


def test_aliases_and_unknown_names():
    assert get_task("sr") is get_task("super-resolution")
    assert canonical_task("sr") == "super-resolution" and canonical_task("denoise") == "denoise"
    assert canonical_task(None) is None
    with pytest.raises(ZooError, match=r"unknown task 'upscale'; use one of denoise, blind-denoise, .*super-resolution"):
        get_task("upscale")
    assert len({task.name for task in TASKS}) == len(TASKS)
    assert not set(TASK_ALIASES) & set(task_names())


def test_default_degradations_and_metric_settings():
    from zoo.evaluate import MetricSettings

    assert [get_task(name).degradation() for name in task_names()[:4]] == \
        ["gaussian:25", "gaussian:25", "motion-blur", "rain"]
    assert get_task("sr").degradation(3) == "bicubic:x3"
    assert MetricSettings.for_task("denoise", 1) == MetricSettings(y_channel=False, crop_border=0)
    assert MetricSettings.for_task("super-resolution", 4) == MetricSettings(y_channel=True, crop_border=4)
    assert MetricSettings.for_task("sr", 2) == MetricSettings(y_channel=True, crop_border=2)
    assert MetricSettings.for_task("sr", 2, y_channel=False, crop_border=0) == MetricSettings(False, 0)


def _card(**changes) -> registry.ModelCard:
    fields = {"name": "toy-sr", "family": "toy", "task": "sr", "variant": "x3", "summary": "toy",
              "builder": lambda: None, "scale": 3}
    fields.update(changes)
    return registry.ModelCard(**fields)


def test_register_stores_the_table_spelling(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", {})
    card = registry.register(_card())
    assert card.task == "super-resolution" and registry._REGISTRY["toy-sr"] is card
    assert card.default_degradation == card.calibration_degradation == "bicubic:x3"
    with pytest.raises(ValueError, match="model 'toy-x' has unknown task 'upscale'"):
        registry.register(_card(name="toy-x", task="upscale"))


# --- files written before the table still read -------------------------------------------------


def test_older_manifest_reads_with_the_table_spelling(tmp_path):
    from export_mobile.manifest import manifest_errors, read_manifest

    shutil.copy(GOLDEN_SR, tmp_path / "manifest.json")
    raw = json.loads(GOLDEN_SR.read_text(encoding="utf-8"))
    assert raw["model"]["task"] == "sr" and manifest_errors(raw) == []
    assert read_manifest(tmp_path)["model"]["task"] == "super-resolution"
    raw["model"]["task"] = "super-resolution"  # what the zoo writes now
    assert manifest_errors(raw) == [] and manifest_errors(raw, use_jsonschema=False) == []
    raw["model"]["task"] = "upscale"
    assert any("model.task" in error for error in manifest_errors(raw, use_jsonschema=False))


def test_results_records_get_the_table_spelling():
    from measure.results import schema_task

    assert schema_task("sr") == schema_task("super-resolution") == "super-resolution"
    assert schema_task("derain") == "derain"
    assert schema_task(None) is None and schema_task("") is None
