"""zoo report (export_mobile/report.py), measured rows (export_mobile/measured.py), zoo info's
measured rows and the ETDump operator profile (export_mobile/profile.py).

The report is rendered from the hand-made files in tests/data/report and its HTML tables are
parsed back (html.parser) and compared with the JSON numbers rounded as displayed."""

import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

from measure import measured as ms
from measure import report as rp
from zoo.errors import ZooError

DATA = Path(__file__).parent / "data" / "report"
GOLDEN = Path(__file__).parent / "data" / "results"


class _Tables(HTMLParser):
    """Every <table id=...> of a page as {id: [header, row, ...]} (cell text, unescaped)."""

    def __init__(self):
        super().__init__()
        self.tables, self._current, self._cell = {}, None, None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self._current = self.tables.setdefault(dict(attrs)["id"], [])
        elif tag == "tr" and self._current is not None:
            self._current.append([])
        elif tag in ("td", "th") and self._current is not None:
            self._cell = ""

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._current[-1].append(self._cell)
            self._cell = None
        elif tag == "table":
            self._current = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data


def _tables(page: str) -> dict[str, list[dict]]:
    parser = _Tables()
    parser.feed(page)
    return {name: [dict(zip(rows[0], row)) for row in rows[1:]] for name, rows in parser.tables.items()}


def _records(*names):
    return [record for name in names for record in json.loads((DATA / name).read_text())["records"]]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    assert rp.main([str(DATA), "-o", str(out)]) == 0
    page = (out / "report.html").read_text(encoding="utf-8")
    return page, (out / "report.md").read_text(encoding="utf-8"), _tables(page)


def test_accuracy_table_numbers_equal_the_json(rendered):
    _page, _md, tables = rendered
    rows = tables["accuracy-table"]
    records = [r for r in _records("baseline.json", "checks.json") if r.get("accuracy")]
    assert len(rows) == len(records)
    by_sha = {(r["artifact"] or {}).get("sha256", "—")[:12]: r for r in records}
    by_sha["—"] = next(r for r in records if r["kind"] == "baseline")
    base_psnr = by_sha["—"]["accuracy"]["psnr"]
    for row in rows:
        accuracy = by_sha[row["sha256"]]["accuracy"]
        assert row["PSNR dB"] == f"{accuracy['psnr']:.2f}"
        assert row["SSIM"] == f"{accuracy['ssim']:.4f}"
        assert row["images"] == str(accuracy["images"])
        expected_drop = accuracy.get("drop_db", base_psnr - accuracy["psnr"]) if row["kind"] != "baseline" else 0.0
        assert row["drop dB"] == f"{expected_drop:.2f}"
        vs = accuracy.get("psnr_vs_reference")
        assert row["PSNR vs float dB"] == (f"{vs:.2f}" if vs is not None else "—")
    psnrs = [float(row["PSNR dB"]) for row in rows]
    assert psnrs == sorted(psnrs, reverse=True)  # best first


def test_latency_table_numbers_equal_the_json(rendered):
    _page, _md, tables = rendered
    rows = tables["latency-table"]
    records = {((r["artifact"] or {}).get("sha256", "—")[:12], r["host"]["name"]): r
               for r in _records("baseline.json", "checks.json", "device-phone.json")}
    assert len(rows) == len(records)
    base = records[("—", "desktop (Test CPU)")]["latency_ms"]["median"]
    for row in rows:
        record = records[(row["sha256"], row["host"])]
        latency = record["latency_ms"]
        assert row["median ms"] == f"{latency['median']:.2f}"
        assert row["p90 ms"] == f"{latency['p90']:.2f}"
        assert row["per"] == latency["per"]
        assert row["threads"] == str(record["runtime"]["threads"])
        gmacs = (record.get("throughput") or {}).get("gmacs_per_s")
        assert row["GMAC/s"] == (f"{gmacs:.1f}" if gmacs is not None else "—")
        if record.get("throughput", {}).get("megapixels_per_s") is not None:
            assert row["MP/s"] == f"{record['throughput']['megapixels_per_s']:.2f}"
        else:  # derived: 256x256 pixels per forward pass
            assert row["MP/s"] == f"{256 * 256 / 1e6 / (latency['median'] / 1e3):.2f}"
        if row["host"] == "desktop (Test CPU)":
            assert row["speedup"] == f"{base / latency['median']:.2f}x"
        else:
            assert row["speedup"] == "—"  # no baseline on the phone
    desktop = [float(row["median ms"]) for row in rows if row["host"] == "desktop (Test CPU)"]
    assert desktop == sorted(desktop)  # fastest first


def test_summary_picks_the_fastest_artifact_within_the_drop_tolerance(rendered):
    _page, _md, tables = rendered
    best = {row["host"]: row for row in tables["summary"]}
    desktop = best["desktop (Test CPU)"]
    # the all-int8 artifact (ccc..., 30 ms) is faster but drops 0.55 dB > 0.3 dB
    assert (desktop["sha256"], desktop["median ms"], desktop["drop dB"], desktop["speedup"]) == \
        ("a" * 12, "40.00", "0.10", "2.50x")
    assert best['Phone <b>&</b> "X"']["sha256"] == "a" * 12


def test_summary_tolerance_is_an_option(tmp_path):
    rp.main([str(DATA), "-o", str(tmp_path), "--max-drop", "0.6"])
    best = {row["host"]: row for row in _tables((tmp_path / "report.html").read_text())["summary"]}
    assert best["desktop (Test CPU)"]["sha256"] == "c" * 12


def test_device_and_operator_tables(rendered):
    _page, _md, tables = rendered
    (device,) = tables["device-table"]
    record = _records("device-phone.json")[0]
    assert device["device"] == record["host"]["name"]  # unescaped back to the original text
    assert device["identical outputs"] == "1/2"  # astronaut hash equals the desktop check's, coffee's does not
    assert device["mean image ms"] == f"{(360.0 + 240.0) / 2:.2f}"
    ops = tables["operators-0"]
    expected = sorted(record["operators"], key=lambda op: -op["total_ms"])
    assert [row["operator"] for row in ops] == [op["name"] for op in expected]
    for row, op in zip(ops, expected):
        assert row["total ms"] == f"{op['total_ms']:.3f}"
        assert row["share"] == f"{op['share'] * 100:.1f} %"
        assert row["calls"] == str(op["calls"])


def test_html_is_self_contained_and_escaped(rendered):
    page, markdown, _tables = rendered
    for external in ("http://", "https://", "<script", "<link", "src=", "@import"):
        assert external not in page
    assert page.count("<svg") == 3  # drop per artifact, latency per host/runtime, drop vs latency
    assert "<b>&</b>" not in page and "Phone &lt;b&gt;&amp;&lt;/b&gt;" in page
    assert "<b>" not in markdown
    assert "| hinet-lite | desktop (Test CPU) | 256x256 | forward | executorch-xnnpack int8 | aaaaaaaaaaaa |" in markdown
    assert "## Operator profiles" in markdown and "Convolution (NHWC, QD8, F32, QC8W) IGEMM" in markdown


def test_golden_device_files_render(tmp_path):
    rp.main([*map(str, sorted(GOLDEN.glob("*.json"))), "-o", str(tmp_path)])
    tables = _tables((tmp_path / "report.html").read_text())
    assert {row["device"] for row in tables["device-table"]} == {"Pixel 8", "iPhone15,2"}


def test_invalid_results_file_names_the_field(tmp_path):
    bad = json.loads((DATA / "checks.json").read_text())
    bad["records"][1]["latency_ms"]["median"] = -1
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(ZooError, match=r"records\[1\]\.latency_ms\.median"):
        rp.main([str(path), "-o", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()
    with pytest.raises(ZooError, match="does not exist"):
        rp.main([str(tmp_path / "missing.json")])


def test_folders_pass_over_json_that_is_not_results(capsys, tmp_path):
    loaded, skipped = ms.load_results([DATA])
    assert [path.name for path in skipped] == ["eval-output.json"]
    assert len(loaded) == 5
    with pytest.raises(ZooError):  # named explicitly, it must be a results file
        ms.load_results([DATA / "eval-output.json"])


def test_update_cards_keeps_hand_written_rows(tmp_path):
    cards = tmp_path / "cards"
    cards.mkdir()
    original = Path(ms.__file__).resolve().parents[1] / "zoo" / "cards" / "hinet-lite.yaml"
    shutil.copy(original, cards / "hinet-lite.yaml")
    loaded, _ = ms.load_results([DATA / "baseline.json", DATA / "checks.json"])
    (path,) = ms.update_cards(loaded, cards)
    text = path.read_text()
    hand_written = original.read_text().split(ms.CARD_MARKER, 1)[0].rstrip("\n")
    assert text.startswith(hand_written)  # hand-written part kept byte for byte
    card = yaml.safe_load(text)
    assert card["results"] == yaml.safe_load(original.read_text())["results"]
    rows = {row["sha256"]: row for row in card["measured"]}
    assert rows["a" * 12]["accuracy"]["drop_db"] == 0.1 and rows["a" * 12]["latency"][0]["median_ms"] == 40.0
    assert rows[None]["target"] == "pytorch"
    # a device run later adds the phone's latency to the same artifact row; running twice changes nothing
    loaded, _ = ms.load_results([DATA / "device-phone.json"])
    ms.update_cards(loaded, cards)
    once = path.read_text()
    ms.update_cards(loaded, cards)
    assert path.read_text() == once
    row = next(r for r in yaml.safe_load(once)["measured"] if r["sha256"] == "a" * 12)
    assert {entry["host"] for entry in row["latency"]} == {"desktop (Test CPU)", 'Phone <b>&</b> "X"'}
    assert row["accuracy"]["psnr_db"] == 30.02  # kept from the check


def test_update_cards_refuses_a_hand_written_measured_key(tmp_path):
    (tmp_path / "hinet-lite.yaml").write_text("results: []\nmeasured: []\n")
    loaded, _ = ms.load_results([DATA / "checks.json"])
    with pytest.raises(ZooError, match="hand-written `measured:`"):
        ms.update_cards(loaded, tmp_path)


def test_zoo_info_shows_measured_rows(capsys, monkeypatch):
    from zoo_cli.main import main

    monkeypatch.delenv("ZOO_RESULTS", raising=False)
    assert main(["info", "hinet-lite", "--results", str(DATA)]) == 0
    out = capsys.readouterr().out
    assert ("measured: executorch-xnnpack int8 aaaaaaaaaaaa: bundled gaussian:25 (2 images, tile 256, overlap 32) "
            "PSNR 30.02 dB") in out
    assert "drop 0.10 dB" in out
    assert "  latency: Phone <b>&</b> \"X\", executorch XnnpackBackend cpu, 256x256 per tile: median 21.50 ms" in out
    monkeypatch.setenv("ZOO_RESULTS", str(DATA))
    assert main(["info", "hinet-lite", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert {row["sha256"] for row in info["measured"]} >= {"a" * 12, "b" * 12, "c" * 12, None}


def _event(name, raw, delegated=False):
    from types import SimpleNamespace

    return SimpleNamespace(name=name, is_delegated_op=delegated, perf_data=SimpleNamespace(raw=raw))


def test_operator_rows_from_etdump_events():
    """The aggregation of Inspector events (names and times as executorch 1.5.1's Inspector gives them)."""
    from types import SimpleNamespace

    from measure.profile import operators_from_events

    execute = SimpleNamespace(name="Execute", events=[
        _event("Transpose (ND, X32) #1", [9.0, 0.5, 0.5], True),
        _event("Convolution (NHWC, F32) IGEMM #1", [9.0, 2.0, 4.0], True),
        _event("Convolution (NHWC, F32) IGEMM #2", [9.0, 3.0, 3.0], True),
        _event("DELEGATE_CALL", [30.0, 6.5, 8.5]),
        _event("native_call_relu.out", [1.0, 1.0, 1.0]),
        _event("OPERATOR_CALL", [1.1, 1.1, 1.1]),
        _event("Method::execute", [40.0, 8.0, 10.0]),
    ])
    init = SimpleNamespace(name="Default", events=[_event("Method::init", [5.0]), _event("Program::load_method", [5.1])])
    operators, execute_ms = operators_from_events([init, execute], warmup=1)
    assert execute_ms == [8.0, 10.0]
    rows = {op["name"]: op for op in operators}
    # conv: (2 + 3 + 4 + 3) / 2 runs = 6 ms over 2 calls; delegate overhead (6.5 + 8.5) / 2 - 6.5 = 1 ms
    assert rows["Convolution (NHWC, F32) IGEMM"] == {"name": "Convolution (NHWC, F32) IGEMM", "calls": 2,
                                                     "total_ms": 6.0, "share": 6.0 / 9.0, "delegated": True}
    assert rows["relu.out"]["delegated"] is False and rows["relu.out"]["total_ms"] == 1.0
    assert rows["delegate call overhead"]["total_ms"] == pytest.approx(1.0)
    assert rows["runtime overhead (outside operators)"]["total_ms"] == pytest.approx(9.0 - 6.0 - 0.5 - 1.0 - 1.0)
    assert [op["name"] for op in operators][0] == "Convolution (NHWC, F32) IGEMM"
    assert sum(op["share"] for op in operators) == pytest.approx(1.0)
    assert operators_from_events([init]) == ([], [])


@pytest.mark.slow
def test_profile_operators_on_a_tiny_xnnpack_program(tmp_path):
    """ETDump + Inspector on this machine: XNNPACK operators by name, slowest first, shares <= 1."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("executorch")
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    from measure.profile import profile_operators

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.Conv2d(8, 3, 3, padding=1)).eval()
    example = torch.rand(1, 3, 16, 16)
    program = to_edge_transform_and_lower(torch.export.export(model, (example,)),
                                          partitioner=[XnnpackPartitioner()]).to_executorch()
    path = tmp_path / "tiny.pte"
    path.write_bytes(program.buffer)
    operators = profile_operators(path, example, runs=3)
    names = [op["name"] for op in operators]
    assert any(name.startswith("Convolution") for name in names)
    conv = next(op for op in operators if op["name"].startswith("Convolution"))
    assert conv["calls"] == 2 and conv["delegated"] is True
    assert [op["total_ms"] for op in operators] == sorted((op["total_ms"] for op in operators), reverse=True)
    assert all(0 <= op["share"] <= 1 for op in operators)
    assert 0.9 <= sum(op["share"] for op in operators) <= 1.01
    with pytest.raises(ZooError, match="not an ExecuTorch .pte"):
        profile_operators(tmp_path / "missing.pte")


# ----------------------------------------------------------------------------- bad inputs (docs/bad_inputs.md)

HOST = {"name": "desktop (Test CPU)", "kind": "desktop"}


def _record(kind="baseline", images=2, psnr=31.0, median=10.0, sha=None, tile=None, **fields):
    from measure import results as rs

    artifact = {"sha256": sha * 64, "target": "executorch-xnnpack", "precision": "int8"} if sha else None
    runtime = {"name": "executorch" if sha else "pytorch", "device": "cpu", "precision": "int8" if sha else "fp32"}
    record = rs.new_record(kind, "hinet-lite-s", runtime, dict(HOST), artifact=artifact,
                           input={"height": tile or 256, "width": tile or 256, "batch": 1, "tile": tile,
                                  "overlap": 32 if tile else None},
                           latency_ms=rs.latency_summary([median], per="image" if tile else "forward"),
                           accuracy={"dataset": "bsd68", "degradation": "gaussian:25", "images": images, "psnr": psnr,
                                     "ssim": 0.85}, created="2026-12-01T00:00:00Z", **fields)
    return record


def _write(folder, *records):
    from measure import results as rs

    folder.mkdir(parents=True, exist_ok=True)
    return rs.write_results(folder / "r.json", rs.results_document(list(records), "zoo test"))


def test_info_keeps_the_evaluation_with_the_most_images(tmp_path):
    """A 2-image smoke test in the results store must not replace the card's 68-image accuracy."""
    from types import SimpleNamespace

    card_row = {"model": "hinet-lite-s", "artifact": "pytorch fp32", "target": "pytorch", "precision": "fp32", "sha256": None,
                "accuracy": {"dataset": "bsd68", "degradation": "gaussian:25", "images": 68, "psnr_db": 29.98,
                             "ssim": 0.8534, "drop_db": 0.0}, "latency": []}
    _write(tmp_path / "store", _record(images=2, psnr=31.5))
    rows = ms.model_measured(SimpleNamespace(name="hinet-lite-s", measured=(card_row,)), tmp_path / "store")
    (row,) = rows
    assert row["accuracy"]["images"] == 68 and row["accuracy"]["psnr_db"] == 29.98
    assert row["latency"][0]["host"] == HOST["name"]  # the store's latency still joins the row
    assert "(68 images) PSNR 29.98 dB" in ms.format_measured(rows)[0]
    # a larger evaluation does replace it, and a tie goes to the newer one
    bigger = dict(card_row, accuracy=dict(card_row["accuracy"], images=100, psnr_db=30.5))
    assert ms.merge_rows([card_row], [bigger])[0]["accuracy"]["images"] == 100
    tie = dict(card_row, accuracy=dict(card_row["accuracy"], psnr_db=30.0))
    assert ms.merge_rows([card_row], [tie])[0]["accuracy"]["psnr_db"] == 30.0


def test_update_cards_never_writes_a_smaller_evaluation_over_a_larger_one(tmp_path):
    cards = tmp_path / "cards"
    big, _ = ms.load_results([_write(tmp_path / "big", _record(images=68, psnr=29.98))])
    ms.update_cards(big, cards)
    small, _ = ms.load_results([_write(tmp_path / "small", _record(images=2, psnr=31.5, median=5.0))])
    (path,) = ms.update_cards(small, cards)
    (row,) = yaml.safe_load(path.read_text())["measured"]
    assert (row["accuracy"]["images"], row["accuracy"]["psnr_db"]) == (68, 29.98)
    assert row["latency"][0]["median_ms"] == 5.0  # the newer latency of the same host and input is taken


def test_non_finite_numbers_are_refused_naming_the_field(tmp_path):
    """Python's json writes NaN/Infinity; reading them back must fail naming the field."""
    record = _record()
    record["latency_ms"]["median"] = float("nan")
    record["accuracy"]["psnr"] = float("inf")
    path = tmp_path / "nan.json"
    path.write_text(json.dumps({"format": "zoo-results", "format_version": 1, "records": [record]}))
    assert "NaN" in path.read_text()
    with pytest.raises(ZooError, match=r"field records\[0\]\.accuracy\.psnr: Infinity is not a finite number"):
        rp.main([str(path), "-o", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()
    from measure import results as rs

    for use_jsonschema in (False, True):
        if use_jsonschema:
            pytest.importorskip("jsonschema")
        errors = rs.results_errors(json.loads(path.read_text()), use_jsonschema=use_jsonschema)
        assert errors == ["records[0].accuracy.psnr: Infinity is not a finite number (JSON has no NaN or Infinity; "
                          "write null for unknown)",
                          "records[0].latency_ms.median: NaN is not a finite number (JSON has no NaN or Infinity; "
                          "write null for unknown)"]
    record["latency_ms"]["min"] = float("-inf")  # also below the minimum of 0: one error, the real one
    errors = rs.results_errors(rs.results_document([record], "t"), use_jsonschema=False)
    assert [e for e in errors if e.startswith("records[0].latency_ms.min")] == [
        "records[0].latency_ms.min: -Infinity is not a finite number (JSON has no NaN or Infinity; write null for unknown)"]
    with pytest.raises(ZooError, match="not a finite number"):
        rs.write_results(tmp_path / "never.json", rs.results_document([record], "t"))
    assert not (tmp_path / "never.json").exists()


def test_report_never_ranks_a_non_finite_value():
    """Records built in memory skip the reader's validation: a NaN median or PSNR must not win."""
    fast_nan = _record(kind="check", sha="d", median=float("nan"), psnr=30.0, images=68)
    slow = _record(kind="check", sha="e", median=50.0, psnr=29.9, images=68)
    nan_psnr = _record(kind="check", sha="f", median=40.0, psnr=float("nan"), images=68)
    base = _record(kind="baseline", median=100.0, psnr=30.0, images=68)
    loaded = [ms.Loaded(r, Path("mem.json")) for r in (fast_nan, slow, nan_psnr, base)]
    report = rp.build_report(loaded)
    tables = {table.id: table for section in report.sections for table in section.tables}
    (best,) = tables["summary"].rows
    assert best[5] == "e" * 12 and best[7] == "50.00"  # not the NaN median, not the NaN-PSNR artifact
    accuracy = [(row[2], row[7]) for row in tables["accuracy-table"].rows]
    assert accuracy[-1] == ("f" * 12, "—")  # a NaN PSNR is shown as unknown, last
    assert not any(re.search(r"\bnan\b", cell.lower())  # a word: "provenance" holds the letters
                   for table in tables.values() for row in table.rows for cell in row)
    assert "1 record(s) with a non-finite median latency left out." in next(
        s for s in report.sections if s.id == "latency").text


def test_per_image_latency_is_labelled_with_images_and_tile_and_drops_with_their_tiling():
    check = _record(kind="check", sha="a", tile=256, median=600.0, psnr=29.8, images=68,
                    reference={"source": "float PyTorch", "tile": 256, "overlap": 32})
    check["accuracy"]["drop_db"] = 0.1
    other = _record(kind="check", sha="b", tile=64, median=900.0, psnr=29.7, images=68,
                    reference={"kind": "baseline", "runtime": {"name": "pytorch",
                                                               "options": {"accuracy_tile": 0, "accuracy_overlap": 0}}})
    other["accuracy"]["drop_db"] = 0.3
    base = _record(kind="baseline", median=100.0, psnr=29.9, images=68)
    base["runtime"]["options"] = {"accuracy_tile": 0, "accuracy_overlap": 0}
    assert ms.input_text(check) == "whole bsd68 images (tile 256x256)"
    assert ms.input_text(base) == "256x256"  # a forward pass: the input size
    loaded = [ms.Loaded(r, Path("mem.json")) for r in (check, other, base)]
    tables = {t.id: t for s in rp.build_report(loaded).sections for t in s.tables}
    latency = {row[5]: row for row in tables["latency-table"].rows}
    assert latency["a" * 12][2] == "whole bsd68 images (tile 256x256)" and latency["a" * 12][3] == "image"
    assert latency["b" * 12][2] == "whole bsd68 images (tile 64x64)"
    # per-image latencies of different tilings are not ranked against each other
    assert sorted(row[2] for row in tables["summary"].rows) == ["whole bsd68 images (tile 256x256)",
                                                              "whole bsd68 images (tile 64x64)"]
    tiling = {row[2]: row[6] for row in tables["accuracy-table"].rows}
    assert tiling == {"a" * 12: "tile 256, overlap 32", "b" * 12: "tile 64, overlap 32 (float: whole image)",
                      "—": "whole image"}
    summary = {row[5]: row[9] for row in tables["summary"].rows}
    assert summary["b" * 12] == "bsd68, 68 images, tile 64, overlap 32 (float: whole image)"
