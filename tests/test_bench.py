"""zoo bench (export_mobile/bench.py): timing statistics, throughput and peak arithmetic, PyTorch
and artifact targets, the table and the results JSON. CPU only, tiny inputs, few runs."""

import json

import pytest
import torch

from measure import bench
from measure import results as rs
from tests.tiny_artifact import tiny_artifact
from zoo.errors import ZooError
from zoo.macs import model_complexity

CPUINFO = """processor\t: {cpu}
model name\t: Test CPU
physical id\t: 0
core id\t\t: {cpu}
cpu MHz\t\t: 2500.000
flags\t\t: fpu sse2 avx avx2 fma {extra}
"""


def _cpuinfo(extra: str, cpus: int = 2) -> str:
    return "\n".join(CPUINFO.format(cpu=cpu, extra=extra) for cpu in range(cpus))


def test_peak_formula_matches_the_documented_example():
    text = _cpuinfo("avx512f avx512bw avx512_vnni avx512_bf16")
    assert bench.cpu_peak_gmacs("int8", cpuinfo=text)[0] == pytest.approx(640.0)  # 2 x 2.5 x 128
    assert bench.cpu_peak_gmacs("fp32", cpuinfo=text)[0] == pytest.approx(160.0)  # 2 x 2.5 x 32
    assert bench.cpu_peak_gmacs("bf16", cpuinfo=text)[0] == pytest.approx(320.0)
    value, formula = bench.cpu_peak_gmacs("int8", cpuinfo=text)
    assert "2 cores x 2.5 GHz x 128 MAC/cycle" in formula


def test_peak_without_vnni_smt_siblings_and_overrides():
    avx2 = _cpuinfo("", cpus=2).replace("core id\t\t: 1", "core id\t\t: 0")  # two SMT siblings, one core
    assert bench.cpu_peak_gmacs("int8", cpuinfo=avx2)[0] == pytest.approx(1 * 2.5 * 32)
    assert bench.cpu_peak_gmacs("fp32", cpuinfo=avx2, clock_ghz=3.0, cores=4)[0] == pytest.approx(4 * 3.0 * 16)
    assert bench.cpu_peak_gmacs("fp32", cpuinfo="processor : 0\n")[0] is None


def test_parse_size_and_targets():
    assert bench.parse_size("64") == (64, 64) and bench.parse_size("32x48") == (32, 48)
    with pytest.raises(ZooError, match="bad size"):
        bench.parse_size("0x3")
    defaults = bench.BenchConfig(target="", device="cpu")
    config = bench.parse_target("hinet-lite-s@bf16,cl", defaults)
    assert (config.target, config.dtype, config.channels_last, config.device) == ("hinet-lite-s", "bf16", True, "cpu")
    with pytest.raises(ZooError, match="unknown option 'fast'"):
        bench.parse_target("hinet-lite-s@fast", defaults)
    with pytest.raises(ZooError, match="neither a file/folder nor a model"):
        bench.parse_target("no-such-model-or-path", defaults)


def test_time_forward_statistics():
    calls = []
    latency, memory, notes = bench.time_forward(lambda: calls.append(1), torch.device("cpu"), warmup=2, runs=5)
    assert len(calls) == 7 and latency["runs"] == 5 and latency["warmup"] == 2
    assert latency["min"] <= latency["median"] <= latency["p90"] and latency["timer"] == "perf_counter"
    assert memory is not None and memory > 0 and notes == []


def test_bench_model_record(monkeypatch):
    config = bench.BenchConfig(target="hinet-lite-s", device="cpu")
    record = bench.bench_model(config, (32, 48), warmup=1, runs=4, peak_gmacs=100.0)
    rs.validate_results(rs.results_document([record], "test"))
    latency, throughput = record["latency_ms"], record["throughput"]
    assert latency["runs"] == 4 and latency["median"] <= latency["p90"]
    assert throughput["megapixels_per_s"] == pytest.approx(32 * 48 / 1e6 / (latency["median"] / 1000))
    macs = model_complexity("hinet-lite-s", (1, 3, 32, 48))[1]
    assert throughput["gmacs_per_s"] == pytest.approx(macs / 1e9 / (latency["median"] / 1000))
    assert throughput["peak_fraction"] == pytest.approx(throughput["gmacs_per_s"] / 100.0)
    assert record["runtime"]["threads"] == torch.get_num_threads() and record["runtime"]["device"] == "cpu"
    assert record["input"] == {"height": 32, "width": 48, "batch": 1, "tile": None, "overlap": None}


def test_compile_failure_falls_back_to_eager(monkeypatch):
    def broken(*_args, **_kwargs):
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(torch, "compile", broken)
    config = bench.BenchConfig(target="hinet-lite-s", device="cpu", compile=True)
    record = bench.bench_model(config, (16, 16), warmup=0, runs=1)
    assert record["runtime"]["options"]["compile"] is False
    assert any("torch.compile failed (no C++ compiler)" in note for note in record["notes"])


def test_cli_table_and_json_with_an_artifact(request, tmp_path, capsys):
    folder = tiny_artifact(request)
    out = tmp_path / "bench.json"
    status = bench.main([str(folder), "hinet-lite-s@cpu", "--size", "64", "--runs", "3", "--warmup", "1",
                         "--peak-gmacs", "640", "--json", str(out), "--quiet"])
    assert status == 0
    printed = capsys.readouterr().out
    lines = printed.splitlines()
    assert lines[2].startswith(str(folder)[-44:]) and lines[2].rstrip().endswith("1.00")  # speedup vs itself
    assert "hinet-lite-s@cpu,fp32" in lines[3]
    doc = rs.read_results(out)
    artifact, model = doc["records"]
    assert artifact["artifact"]["target"] == "executorch-xnnpack" and artifact["runtime"]["name"] == "executorch"
    assert artifact["input"]["tile"] == 64 and artifact["latency_ms"]["runs"] == 3
    manifest = json.loads((folder / "manifest.json").read_text())
    assert artifact["artifact"]["sha256"] == manifest["artifact"]["sha256"]
    assert model["artifact"] is None and model["runtime"]["name"] == "pytorch"
    for record in doc["records"]:
        assert record["latency_ms"]["median"] <= record["latency_ms"]["p90"]
        assert record["throughput"]["megapixels_per_s"] == pytest.approx(
            64 * 64 / 1e6 / (record["latency_ms"]["median"] / 1000))


@pytest.mark.parametrize("args, words", [
    (["hinet-lite-s", "--size", "60x60"], "--size 60x60 is not a multiple of hinet-lite-s's size multiple 16; "
                                          "use --size 64x64"),
    (["hinet-lite-s", "--batch", "0"], "--batch 0 is not a batch size; pass --batch 1 or more"),
    (["hinet-lite-s", "--threads", "-1"], "--threads -1 is not a thread count; pass --threads 1 or more"),
    (["idsanet-lite-x2", "hinet-lite-s", "--size", "60"], "--size 60x60 is not a multiple of hinet-lite-s's"),
], ids=["size", "batch", "threads", "second-of-two"])
def test_cli_refuses_inputs_a_model_cannot_take_before_timing(tmp_path, capsys, monkeypatch, args, words):
    """Before: a ValueError / RuntimeError traceback from the model or torch.set_num_threads,
    after the targets before it were timed."""
    from zoo_cli.main import main

    timed = []
    monkeypatch.setattr(bench, "time_forward", lambda *a, **k: timed.append(a) or pytest.fail("timed"))
    assert main(["bench", *args, "--runs", "3", "--quiet", "--json", str(tmp_path / "b.json")]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith(f"zoo: error: {words}") and len(captured.err.strip().splitlines()) == 1
    assert captured.out == "" and timed == []
    assert not (tmp_path / "b.json").exists()


def test_speedup_compares_only_rows_of_the_same_input_size():
    """A 64x64 tile and a 256x256 image never share a speedup reference (docs/bad_inputs.md)."""
    def record(size, mps, batch=1):
        return rs.new_record("bench", "hinet-lite-s", {"name": "pytorch", "device": "cpu", "precision": "fp32"},
                             {"name": "desktop (Test CPU)", "kind": "desktop"},
                             input={"height": size, "width": size, "batch": batch},
                             latency_ms=rs.latency_summary([size * size * batch / 1e6 / mps * 1000.0]),
                             throughput={"megapixels_per_s": mps, "gmacs_per_s": None, "peak_fraction": None})

    records = [record(64, 2.0), record(256, 8.0), record(64, 3.0), record(256, 4.0), record(64, 4.0, batch=2)]
    table = bench.format_table(records, ["tile", "image", "tile-fast", "image-slow", "tile-batch"])
    speedups = {line.split()[0]: line.split()[-1] for line in table.splitlines()[2:7]}
    # against the first row of the same size: 3/2 and 4/8, never 8/2 (image vs tile)
    assert speedups == {"tile": "1.00", "image": "1.00", "tile-fast": "1.50", "image-slow": "0.50", "tile-batch": "1.00"}
    assert "2x64x64" in table.splitlines()[6]
    assert table.splitlines()[-1] == ("speedup = MP/s relative to the first row of the same input size, never across "
                                      "sizes: 64x64 vs tile; 256x256 vs image; 2x64x64 vs tile-batch")
    assert "never across" not in bench.format_table(records[:1], ["tile"])
