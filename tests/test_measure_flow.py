"""The README's measuring flow end to end, as a new user runs it through the `zoo` command:
baseline -> check (against the baseline) -> bench -> report, then the HTML report's numbers
against the JSON files the commands wrote. Tiny artifact (hinet-lite-s, tile 64), three small
images, CPU only."""

import json

import pytest

from tests.test_report import _tables
from tests.tiny_artifact import tiny_artifact, tiny_images
from zoo_cli.main import main as zoo

SPEC = "gaussian:25"


@pytest.fixture(scope="module")
def flow(request, tmp_path_factory):
    artifact = tiny_artifact(request)
    root = tmp_path_factory.mktemp("flow")
    images = tiny_images(root / "images")
    results = root / "results"
    common = ["--dataset", str(images), "--degradation", SPEC, "--quiet"]
    assert zoo(["baseline", "hinet-lite-s", *common, "--tile", "64", "--overlap", "16", "--size", "64x64",
                "--runs", "3", "--warmup", "1", "--device", "cpu", "--json", str(results / "baseline.json")]) == 0
    assert zoo(["check", str(artifact), *common, "--reference", str(results / "baseline.json"),
                "--json", str(results / "check.json")]) == 0
    assert zoo(["bench", "hinet-lite-s", str(artifact), "--size", "64x64", "--runs", "3", "--warmup", "1",
                "--quiet", "--json", str(results / "bench.json")]) == 0
    assert zoo(["report", str(results), "-o", str(root / "report")]) == 0
    page = (root / "report" / "report.html").read_text(encoding="utf-8")
    loaded = {name: json.loads((results / f"{name}.json").read_text())["records"]
              for name in ("baseline", "check", "bench")}
    return loaded, _tables(page), page


def test_every_command_wrote_its_kind_of_record(flow):
    records, _tables_, _page = flow
    assert [r["kind"] for r in records["baseline"]] == ["baseline"]
    assert [r["kind"] for r in records["check"]] == ["check"]
    assert {r["kind"] for r in records["bench"]} == {"bench"} and len(records["bench"]) == 2
    check = records["check"][0]
    assert check["complete"] and check["reference"]["kind"] == "baseline"
    assert check["accuracy"]["drop_db"] == pytest.approx(
        records["baseline"][0]["accuracy"]["psnr"] - check["accuracy"]["psnr"], abs=1e-6)


def test_report_accuracy_rows_equal_the_check_and_baseline(flow):
    records, tables, _page = flow
    rows = tables["accuracy-table"]
    by_kind = {row["kind"]: row for row in rows}
    check = records["check"][0]["accuracy"]
    baseline = records["baseline"][0]["accuracy"]
    assert by_kind["check"]["PSNR dB"] == f"{check['psnr']:.2f}"
    assert float(by_kind["check"]["drop dB"]) == pytest.approx(check["drop_db"], abs=0.005)
    assert by_kind["baseline"]["PSNR dB"] == f"{baseline['psnr']:.2f}"
    # fp32 XNNPACK computes what PyTorch computes: no measurable drop
    assert abs(check["drop_db"]) < 0.01


def test_report_latency_rows_equal_the_bench(flow):
    records, tables, page = flow
    rows = tables["latency-table"]
    for record in records["bench"]:
        sha = (record["artifact"] or {}).get("sha256", "—")[:12]
        (row,) = [r for r in rows if r["sha256"] == sha and r["kind"] == "bench"]
        assert row["median ms"] == f"{record['latency_ms']['median']:.2f}"
    assert "<svg" in page and "http://" not in page.replace("http://www.w3.org/2000/svg", "")
