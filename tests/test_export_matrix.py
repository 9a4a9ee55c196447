"""The export coverage matrix: every cell built, run and compared with PyTorch, judged against the
issue's targets; failing cells say why. The lite models run at a small tile in the default
suite (XNNPACK fp32 and int8); all targets and the full HINet models are in slow tests."""

import json

import pytest

from export_mobile.matrix import FP32_MAX_ABS_ERROR, INT8_MIN_PSNR_DB, format_table, judge, run_matrix
from zoo.errors import ZooError


def _row(**changes):
    row = {"model": "m", "variant": "lite", "single_int8_partition": True, "target": "executorch-xnnpack",
           "precision": "fp32", "tile": "32",
           "built": True, "ran": True, "max_abs_error": 1e-6, "psnr_db": 120.0, "nonfinite": False, "partitions": 1,
           "ops_outside": [], "size_bytes": 1000, "export_seconds": 1.0, "run_reason": None, "error": None,
           "fp16_overflow": []}
    row.update(changes)
    return row


def test_judge_applies_the_issue_thresholds():
    assert judge(_row()) == "ok"
    assert judge(_row(max_abs_error=FP32_MAX_ABS_ERROR * 2)).startswith("FAIL: max abs error 2.00e-04")
    assert judge(_row(precision="int8", psnr_db=INT8_MIN_PSNR_DB + 1)) == "ok"
    assert judge(_row(precision="int8", psnr_db=INT8_MIN_PSNR_DB - 1)) == "FAIL: PSNR 39.0 dB <= 40"
    assert judge(_row(precision="int8", partitions=3, ops_outside=["aten.foo at a.b"])) == \
        "FAIL: 3 partitions, 1 ops outside"
    # the rule is for cards with single_int8_partition (the lite models)
    assert judge(_row(precision="int8", variant="sidd-0.5x", single_int8_partition=False, partitions=3)) == "ok"
    assert judge(_row(precision="fp16", ran=True, nonfinite=True, max_abs_error=None)) == "FAIL: inf/NaN in output"
    assert judge(_row(precision="fp16", ran=False, fp16_overflow=["down.conv"])).startswith("FAIL: fp16 overflow")
    assert judge(_row(precision="fp16", ran=False, fp16_pytorch_finite=False)) == \
        "FAIL: inf/NaN when the model runs in fp16 in PyTorch"
    assert judge(_row(precision="fp16", ran=False, fp16_pytorch_finite=True)) == "built"
    assert judge(_row(ran=False)) == "built"
    assert judge(_row(built=False, ran=False, error="x")) == "-"


def test_table_shows_each_cell():
    table = format_table([_row(), _row(precision="int8", max_abs_error=0.0, psnr_db=None)])
    lines = table.splitlines()
    assert len(lines) == 4 and "max|err|" in lines[0]
    assert "1.00e-06" in lines[2] and "120.0" in lines[2] and lines[2].endswith("ok")
    assert "exact" in lines[3]


def test_unavailable_and_failing_cells_say_why(tmp_path, monkeypatch, capsys):
    """A cell whose lowering crashes records the error and where; an unavailable target its reason."""
    from export_mobile import targets

    class Crashing:
        name = "fake-crash"
        suffix = ".pte"
        precisions = ("fp32",)

        def available(self):
            return None

        def export(self, request):
            raise RuntimeError("unsupported operator aten.instance_norm at down_path_1.0.norm")

        def load_runner(self, path, manifest):
            raise AssertionError("never built")

    monkeypatch.setitem(targets.TARGET_MODULES, "fake-crash", "export_mobile.targets.fake")
    monkeypatch.setitem(targets.TARGET_MODULES, "fake-missing", "export_mobile.targets.no_such_module")
    monkeypatch.setattr(targets, "_CACHE", {"fake-crash": Crashing()})
    rows = run_matrix(["hinet-lite-s"], ["fake-crash", "fake-missing"], ["fp32"], 32, tmp_path)
    crash, missing = rows
    assert not crash["built"] and "unsupported operator aten.instance_norm at down_path_1.0.norm" in crash["error"]
    assert "RuntimeError" in crash["error"] and "[test_export_matrix.py:" in crash["error"]
    assert not missing["built"] and "target unavailable" in missing["error"] and "not part of" in missing["error"]
    assert crash["check"] == missing["check"] == "-"
    assert json.loads((tmp_path / "matrix.json").read_text())["rows"] == rows
    printed = capsys.readouterr().out
    assert "fake-crash" in printed and "not built: RuntimeError: unsupported operator" in printed
    assert not (tmp_path / "hinet-lite-s" / "fake-crash-fp32").exists()  # nothing half-written


def test_interrupted_matrix_resumes_from_its_json(tmp_path, monkeypatch):
    """Rows are written after every cell; --resume keeps built cells whose folder is still there and
    tries the failed ones again; a JSON of another tile is refused."""
    from export_mobile import targets

    class Crashing:
        name = "fake-crash"
        suffix = ".pte"
        precisions = ("fp32", "int8")
        calls = []

        def available(self):
            return None

        def export(self, request):
            self.calls.append(request.precision)
            raise RuntimeError("still broken")

    monkeypatch.setitem(targets.TARGET_MODULES, "fake-crash", "export_mobile.targets.fake")
    monkeypatch.setattr(targets, "_CACHE", {"fake-crash": Crashing()})
    built_folder = tmp_path / "hinet-lite-s" / "fake-crash-fp32"
    built_folder.mkdir(parents=True)
    earlier = [_row(model="hinet-lite-s", variant="lite-s", target="fake-crash", precision="fp32",
                    folder=str(built_folder), check="ok"),
               _row(model="hinet-lite-s", variant="lite-s", target="fake-crash", precision="int8", built=False,
                    ran=False, error="RuntimeError: killed", check="-")]
    (tmp_path / "matrix.json").write_text(json.dumps({"tile": "32", "complete": False, "rows": earlier}))

    rows = run_matrix(["hinet-lite-s"], ["fake-crash"], None, 32, tmp_path, resume=True, echo=None)
    assert Crashing.calls == ["int8"]  # the built fp32 cell was reused, the failed int8 cell retried
    assert rows[0] == earlier[0] and "still broken" in rows[1]["error"]
    written = json.loads((tmp_path / "matrix.json").read_text())
    assert written["complete"] is True and written["rows"] == rows

    built_folder.rmdir()  # an artifact folder that is gone is built again
    run_matrix(["hinet-lite-s"], ["fake-crash"], ["fp32"], 32, tmp_path, resume=True, echo=None)
    assert Crashing.calls == ["int8", "fp32"]
    with pytest.raises(ZooError, match="tile 32, not 64"):
        run_matrix(["hinet-lite-s"], ["fake-crash"], None, 64, tmp_path, resume=True, echo=None)


def test_matrix_cli_reports_the_missing_qnn_sdk(tmp_path, monkeypatch, capsys):
    pytest.importorskip("executorch")
    from export_mobile.commands import export_main

    monkeypatch.delenv("QNN_SDK_ROOT", raising=False)
    status = export_main(["--matrix", "--models", "hinet-lite-s", "--targets", "executorch-qnn", "--tile", "32",
                          "-o", str(tmp_path)])
    assert status == 0
    out = capsys.readouterr().out
    assert "executorch-qnn" in out and "QNN_SDK_ROOT" in out
    rows = json.loads((tmp_path / "matrix.json").read_text())["rows"]
    assert [(r["target"], r["precision"], r["built"]) for r in rows] == [("executorch-qnn", "fp16", False)]


def test_matrix_cli_refuses_a_model_argument(capsys):
    from export_mobile.commands import export_main

    assert export_main(["hinet-lite", "--matrix", "--tile", "32"]) == 2
    assert "--matrix takes --models" in capsys.readouterr().err


def _check_rows(rows):
    for row in rows:
        assert row["built"], row
        assert row["check"] in ("ok", "built"), row
        if row["precision"] == "fp32" and row["ran"]:
            assert row["max_abs_error"] < FP32_MAX_ABS_ERROR, row
        if row["precision"] == "int8" and row["ran"]:
            assert row["psnr_db"] is None or row["psnr_db"] > INT8_MIN_PSNR_DB, row


def test_matrix_of_the_lite_models_at_a_small_tile(tmp_path):
    """The CI matrix: both lite models, XNNPACK fp32 and int8 at 32x32: built, run, on target,
    int8 in ONE XNNPACK partition with no operator outside."""
    pytest.importorskip("executorch")
    rows = run_matrix(["hinet-lite", "hinet-lite-s"], ["executorch-xnnpack"], None, 32, tmp_path,
                      calibration_images=2, echo=None)
    assert [(r["model"], r["precision"]) for r in rows] == [
        ("hinet-lite", "fp32"), ("hinet-lite", "int8"), ("hinet-lite-s", "fp32"), ("hinet-lite-s", "int8")]
    _check_rows(rows)
    assert all(row["ran"] for row in rows)
    for row in rows:
        assert row["partitions"] == 1 and row["ops_outside"] == [], row
    int8 = [row for row in rows if row["precision"] == "int8"]
    fp32 = [row for row in rows if row["precision"] == "fp32"]
    assert all(i["size_bytes"] < f["size_bytes"] / 2.5 for i, f in zip(int8, fp32))  # int8 weights ~1/4
    # The shipped weights, not the untrained network (which is the identity: its tail starts at zero,
    # so every artifact would match PyTorch trivially).
    assert all(row["weights"] == "shipped" for row in rows)
    assert all(row["max_abs_error"] > 0 for row in int8)


@pytest.mark.slow
def test_matrix_of_the_lite_models_for_all_executorch_targets(tmp_path):
    pytest.importorskip("executorch")
    rows = run_matrix(["hinet-lite", "hinet-lite-s"],
                      ["executorch-xnnpack", "executorch-coreml", "executorch-vulkan", "executorch-qnn"],
                      None, 64, tmp_path, calibration_images=4, echo=None)
    built = [row for row in rows if row["target"] != "executorch-qnn"]
    _check_rows(built)
    for row in built:
        assert row["partitions"] == 1 and row["ops_outside"] == [], row
    for row in rows:
        if row["target"] in ("executorch-coreml", "executorch-vulkan"):
            assert not row["ran"] and row["run_reason"], row


@pytest.mark.slow
def test_matrix_of_a_full_hinet_model(tmp_path):
    """hinet-sidd-0.5x at 64x64: exact fp32 XNNPACK in one partition thanks to the instance-norm
    rewrite; int8 against the PT2E model."""
    pytest.importorskip("executorch")
    rows = run_matrix(["hinet-sidd-0.5x"], ["executorch-xnnpack"], None, 64, tmp_path, calibration_images=4,
                      echo=None)
    _check_rows(rows)
    fp32 = rows[0]
    assert fp32["precision"] == "fp32" and fp32["partitions"] == 1 and fp32["ops_outside"] == []


def test_matrix_refuses_an_unknown_target(tmp_path):
    with pytest.raises(ZooError, match="unknown export target"):
        run_matrix(["hinet-lite-s"], ["nope"], None, 32, tmp_path, echo=None)
