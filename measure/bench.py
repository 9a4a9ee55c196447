"""``zoo bench``: latency of PyTorch models and exported artifacts, measured properly.

Protocol (docs/measuring.md): a fixed random input in [0, 1] (seed 0); ``--warmup`` untimed runs
(default 3; the first torch.compile call compiles there); then ``--runs`` timed runs (default 20),
stopped early after ``--max-seconds`` of timed runs (at least 3 runs). CPU runs are timed with
``time.perf_counter`` around each forward; CUDA runs with a pair of CUDA events around each forward,
after ``torch.cuda.synchronize()``, read after a final synchronize. Reported per configuration:
median, p90, min and mean in milliseconds, throughput in output megapixels/s and achieved GMAC/s
(MACs of one forward from :func:`zoo.macs.model_complexity` / median), the fraction of the host's
peak (:func:`cpu_peak_gmacs`), thread count, CPU model and peak memory (:class:`PeakMemory`).

A TARGET is a model name (PyTorch eager; ``MODEL@opt,opt`` picks per-target options: ``cpu``,
``cuda``, ``fp32``, ``fp16``, ``bf16``, ``cl`` (channels-last), ``compile``) or an exported
artifact / export folder (run by its desktop runner, ``export_mobile.runners.load_artifact``, on
one tile of the manifest's size). Mobile runtimes are imported only for artifacts.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import torch

from measure import results as rs
from measure.measured import input_text
from zoo.tables import format_cell
from zoo.errors import ZooError

__all__ = ["BenchConfig", "parse_target", "parse_size", "check_model_input", "cpu_peak_gmacs", "PeakMemory",
           "time_forward", "bench_model", "bench_artifact", "format_table", "main"]

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


# --------------------------------------------------------------------------------------------
# Targets and options
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchConfig:
    """One row of the table: a model (PyTorch eager) or an artifact path, and how to run it."""

    target: str
    artifact: bool = False
    device: str = "auto"
    dtype: str = "fp32"
    channels_last: bool = False
    compile: bool = False

    @property
    def label(self) -> str:
        if self.artifact:
            return self.target
        flags = [self.dtype] + (["cl"] if self.channels_last else []) + (["compile"] if self.compile else [])
        return f"{self.target}@{self.device},{','.join(flags)}"


def parse_target(text: str, defaults: BenchConfig) -> BenchConfig:
    """``MODEL``, ``MODEL@opt,opt`` or an artifact path (file or export folder) -> :class:`BenchConfig`.

    Options after ``@`` override the command-line defaults for that target: ``cpu``, ``cuda``,
    ``cuda:N``, ``fp32``, ``fp16``, ``bf16``, ``cl``/``channels-last``, ``compile``, ``eager``.
    """
    if Path(text).exists():
        return replace(defaults, target=text, artifact=True)
    name, _, options = text.partition("@")
    config = replace(defaults, target=name, artifact=False)
    for option in filter(None, options.split(",")):
        if option in DTYPES:
            config = replace(config, dtype=option)
        elif option == "cpu" or option.startswith("cuda"):
            config = replace(config, device=option)
        elif option in ("cl", "channels-last", "channels_last"):
            config = replace(config, channels_last=True)
        elif option in ("compile", "eager"):
            config = replace(config, compile=option == "compile")
        else:
            raise ZooError(f"unknown option {option!r} in target {text!r}",
                           "use MODEL@OPT,OPT with cpu, cuda, fp32, fp16, bf16, cl, compile, eager")
    from zoo.registry import get_card

    try:
        get_card(name)
    except ZooError as err:
        raise ZooError(f"target {text!r} is neither a file/folder nor a model ({err.problem})",
                       f"pass an export folder, an artifact, or a model ({err.fix})") from None
    return config


def parse_size(text: str) -> tuple[int, int]:
    """``"256"`` or ``"256x192"`` (height x width, pixels) -> (height, width)."""
    parts = str(text).lower().split("x")
    try:
        values = [int(part) for part in parts]
    except ValueError:
        values = []
    if len(values) == 1:
        values *= 2
    if len(values) != 2 or min(values) < 1:
        raise ZooError(f"bad size {text!r}", "use HxW in pixels, e.g. --size 256x256")
    return values[0], values[1]


def check_model_input(name: str, size: tuple[int, int], batch: int) -> None:
    """Raise :class:`ZooError` unless zoo model ``name`` can run a (``batch``, 3, H, W) input of
    ``size``: a batch of at least 1 and sides that are multiples of the card's size multiple."""
    from zoo.registry import get_card

    if batch < 1:
        raise ZooError(f"--batch {batch} is not a batch size", "pass --batch 1 or more")
    multiple = get_card(name).size_multiple
    height, width = size
    if height % multiple or width % multiple:
        up = [-(-side // multiple) * multiple for side in size]
        raise ZooError(f"--size {height}x{width} is not a multiple of {name}'s size multiple {multiple}",
                       f"use --size {up[0]}x{up[1]}")


# --------------------------------------------------------------------------------------------
# The host's peak
# --------------------------------------------------------------------------------------------


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError:
        return None


def _physical_cores(cpuinfo: str, allowed: set[int] | None) -> int | None:
    """Distinct (physical id, core id) pairs among the CPUs this process may use (SMT siblings
    share one core's vector units); None when /proc/cpuinfo does not say."""
    pairs, cpu, package = set(), None, "0"
    for line in cpuinfo.splitlines() + [""]:
        key, _, value = (part.strip() for part in line.partition(":"))
        if key == "processor":
            cpu = int(value) if value.isdigit() else None
        elif key == "physical id":
            package = value
        elif key == "core id" and (allowed is None or cpu in allowed):
            pairs.add((package, value))
    return len(pairs) or None


def cpu_peak_gmacs(precision: str = "fp32", *, cpuinfo: str | None = None, clock_ghz: float | None = None,
                   cores: int | None = None) -> tuple[float | None, str]:
    """Peak multiply-accumulates per second of this CPU, in GMAC/s, and the formula with its inputs.

    ``peak = cores x clock (GHz) x MACs per cycle per core``, where, from the ISA flags of
    ``/proc/cpuinfo`` (``cpuinfo`` text for tests):

    * vector width W = 512 bits with ``avx512f``, 256 with ``avx2``/``avx``, 128 with ``sse2`` or
      ``asimd`` (Arm NEON), assuming two vector multiply-add pipes per core;
    * fp32: 2 x W/32 (FMA: AVX-512 = 32 MAC/cycle);
    * fp16/bf16: 2 x W/16 with ``avx512_fp16`` or ``avx512_bf16``/``amx_bf16`` (dot-product
      instructions), else as fp32 (converted to fp32 for the arithmetic);
    * int8: 2 x W/8 with ``avx512_vnni``/``avx_vnni`` or Arm ``asimddp`` (4 int8 MACs per 32-bit
      lane per instruction: AVX-512 VNNI = 128 MAC/cycle), else W/8 (pmaddubsw + pmaddwd, half rate).

    cores: physical cores this process may use (SMT siblings counted once); clock: the largest
    ``cpuinfo_max_freq`` in sysfs, else ``cpu MHz`` of /proc/cpuinfo. ``clock_ghz``/``cores``
    override them. Returns ``(None, reason)`` when the clock or the ISA is unknown
    (non-Linux hosts): pass ``--peak-gmacs``. Example: 2 cores x 2.5 GHz x 128 (AVX-512 VNNI int8)
    = 640 GMAC/s.
    """
    text = cpuinfo if cpuinfo is not None else (_read("/proc/cpuinfo") or "")
    flags: set[str] = set()
    mhz = None
    for line in text.splitlines():
        key, _, value = (part.strip() for part in line.partition(":"))
        if key in ("flags", "Features") and not flags:
            flags = set(value.split())
        elif key == "cpu MHz" and mhz is None:
            try:
                mhz = float(value)
            except ValueError:
                pass
    if cores is None:
        try:
            allowed = os.sched_getaffinity(0) if cpuinfo is None else None
        except AttributeError:
            allowed = None
        cores = _physical_cores(text, allowed) or (len(allowed) if allowed else None)
    if clock_ghz is None:
        if cpuinfo is None:
            frequencies = [_read(f"/sys/devices/system/cpu/cpu{index}/cpufreq/cpuinfo_max_freq")
                           for index in range(os.cpu_count() or 1)]
            khz = [int(v) for v in frequencies if v and v.strip().isdigit()]
            if khz:
                clock_ghz = max(khz) / 1e6
        if clock_ghz is None and mhz:
            clock_ghz = mhz / 1000.0
    if "avx512f" in flags:
        width = 512
    elif flags & {"avx2", "avx"}:
        width = 256
    elif flags & {"sse2", "asimd"}:
        width = 128
    else:
        return None, "unknown CPU vector ISA (no /proc/cpuinfo flags): pass --peak-gmacs"
    if not clock_ghz or not cores:
        return None, "unknown CPU clock or core count: pass --peak-gmacs (or --clock-ghz)"
    if precision == "int8":
        fast = flags & {"avx512_vnni", "avx_vnni", "asimddp", "amx_int8"}
        per_cycle = 2 * width // 8 if fast else width // 8
        isa = f"{width}-bit {'dot-product (VNNI)' if fast else 'no VNNI'} int8"
    elif precision in ("fp16", "bf16") and flags & {"avx512_fp16", "avx512_bf16", "amx_bf16"}:
        per_cycle, isa = 2 * width // 16, f"{width}-bit {precision} dot-product"
    else:
        per_cycle, isa = 2 * width // 32, f"{width}-bit fp32 FMA"
    peak = cores * clock_ghz * per_cycle
    return peak, f"{cores} cores x {clock_ghz:.4g} GHz x {per_cycle} MAC/cycle ({isa}) = {peak:.0f} GMAC/s"


# --------------------------------------------------------------------------------------------
# Timing and memory
# --------------------------------------------------------------------------------------------


class PeakMemory:
    """Peak memory while the timed runs execute, in MiB.

    CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` (tensors allocated by
    PyTorch on that device). CPU: the process's resident set size (``/proc/self/statm``) sampled
    every ``interval`` seconds by a background thread: the peak RSS of the whole process while
    the runs execute (weights, runtime, activations and everything already loaded: a footprint,
    not a delta; tracemalloc would miss tensor memory). Without /proc (macOS) it falls back to
    ``resource.getrusage`` ``ru_maxrss``, the process's lifetime peak (a note says so).
    """

    def __init__(self, device: torch.device, interval: float = 0.002):
        self.device, self.interval = device, interval
        self.peak_mb: float | None = None
        self.note: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

    def _rss_mb(self) -> float | None:
        text = _read("/proc/self/statm")
        return int(text.split()[1]) * self._page / 2**20 if text else None

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            value = self._rss_mb()
            if value is not None and (self.peak_mb is None or value > self.peak_mb):
                self.peak_mb = value

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        elif self._rss_mb() is not None:
            self.peak_mb = self._rss_mb()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_mb = torch.cuda.max_memory_allocated(self.device) / 2**20
        elif self._thread is not None:
            self._stop.set()
            self._thread.join()
            last = self._rss_mb()
            self.peak_mb = max(self.peak_mb or 0.0, last or 0.0)
        else:
            import resource

            scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB elsewhere
            self.peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20
            self.note = "peak memory: process lifetime peak RSS (ru_maxrss), not only the timed runs"


def time_forward(fn: Callable[[], object], device: torch.device, *, warmup: int = 3, runs: int = 20,
                 max_seconds: float | None = None) -> tuple[dict, float | None, list[str]]:
    """Time ``fn()`` (one forward pass): ``warmup`` untimed calls, then up to ``runs`` timed ones
    (stopped after ``max_seconds`` of timed runs, at least 3). Returns ``(latency_ms summary,
    peak memory MiB, notes)``; see :func:`measure.results.latency_summary`.

    CUDA: each run between two CUDA events, after ``torch.cuda.synchronize()``; the elapsed times
    are read after a final synchronize, so queueing is not measured. CPU: ``time.perf_counter``.
    """
    if runs < 1 or warmup < 0:
        raise ZooError(f"runs must be >= 1 and warmup >= 0, got {runs} and {warmup}", "pass --runs 20 --warmup 3")
    cuda = device.type == "cuda"
    for _ in range(warmup):
        fn()
    if cuda:
        torch.cuda.synchronize(device)
    times: list[float] = []
    with PeakMemory(device) as memory:
        if cuda:
            events = []
            started = time.perf_counter()
            for index in range(runs):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                events.append((start, end))
                if max_seconds is not None and index >= 2 and time.perf_counter() - started > max_seconds:
                    torch.cuda.synchronize(device)
                    if sum(s.elapsed_time(e) for s, e in events) / 1000 > max_seconds:
                        break
            torch.cuda.synchronize(device)
            times = [start.elapsed_time(end) for start, end in events]
        else:
            for index in range(runs):
                start = time.perf_counter()
                fn()
                times.append((time.perf_counter() - start) * 1000.0)
                if max_seconds is not None and index >= 2 and sum(times) / 1000 > max_seconds:
                    break
    notes = [memory.note] if memory.note else []
    if len(times) < runs:
        notes.append(f"stopped after {len(times)} of {runs} runs (--max-seconds {max_seconds})")
    summary = rs.latency_summary(times, warmup=warmup, timer="cuda_events" if cuda else "perf_counter")
    return summary, memory.peak_mb, notes


def _throughput(latency: dict, output_pixels: int, macs: int | None, peak: float | None) -> dict:
    """Output megapixels/s, achieved GMAC/s and fraction of ``peak`` (GMAC/s) at the median."""
    seconds = latency["median"] / 1000.0
    if seconds <= 0:
        return {"megapixels_per_s": None, "gmacs_per_s": None, "peak_fraction": None}
    gmacs = macs / 1e9 / seconds if macs else None
    return {"megapixels_per_s": output_pixels / 1e6 / seconds, "gmacs_per_s": gmacs,
            "peak_fraction": gmacs / peak if gmacs and peak else None}


def _peak_for(device: torch.device, precision: str, peak_gmacs: float | None, clock_ghz: float | None):
    """(peak GMAC/s or None, note) for a run on ``device`` at ``precision``."""
    if peak_gmacs is not None:
        return peak_gmacs, f"peak {peak_gmacs:g} GMAC/s given by --peak-gmacs"
    if device.type != "cpu":
        return None, "GPU peak unknown: pass --peak-gmacs for the peak fraction"
    value, formula = cpu_peak_gmacs(precision, clock_ghz=clock_ghz)
    return value, f"peak: {formula}"


# --------------------------------------------------------------------------------------------
# The two kinds of target
# --------------------------------------------------------------------------------------------


def bench_model(config: BenchConfig, size: tuple[int, int], *, weights: str | None = None, untrained: bool = False,
                warmup: int = 3, runs: int = 20, max_seconds: float | None = None, batch: int = 1,
                peak_gmacs: float | None = None, clock_ghz: float | None = None) -> dict:
    """Latency of zoo model ``config.target`` in PyTorch eager (or torch.compile) on a
    (batch, 3, H, W) input in [0, 1]; returns a ``bench`` record (export_mobile/results.py).

    ``config.device``: auto (CUDA when available), cpu, cuda; ``config.dtype``: fp32, fp16, bf16
    (weights and input cast); ``channels_last``: NHWC memory format; ``compile``: torch.compile, or
    eager with a note when compilation fails.
    """
    from zoo.inference import pick_device
    from zoo.macs import model_complexity
    from zoo.registry import create_model

    check_model_input(config.target, size, batch)
    device = pick_device(config.device)
    model, card = create_model(config.target, weights, untrained=untrained)
    dtype = DTYPES[config.dtype]
    model = model.to(device=device, dtype=dtype).eval()
    if hasattr(model, "progress"):
        model.progress = False
    notes = []
    if getattr(model, "zoo_untrained", False):
        notes.append("untrained (random) weights: timing only")
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    height, width = size
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 3, height, width, generator=generator).to(device=device, dtype=dtype)
    x = x.contiguous(memory_format=memory_format)
    forward = model
    compiled = False
    if config.compile:
        try:
            forward = torch.compile(model)
            with torch.inference_mode():
                forward(x)  # compile now, so a failure falls back here and not in the timing
            compiled = True
        except Exception as err:  # noqa: BLE001 - inductor/toolchain errors vary by platform
            forward = model
            notes.append(f"torch.compile failed ({str(err).splitlines()[0][:160]}): timed in eager mode")

    def run():
        with torch.inference_mode():
            return forward(x)

    latency, peak_memory, timing_notes = time_forward(run, device, warmup=warmup, runs=runs, max_seconds=max_seconds)
    macs = model_complexity(config.target, (1, 3, height, width))[1] * batch
    peak, peak_note = _peak_for(device, config.dtype, peak_gmacs, clock_ghz)
    runtime = {"name": "pytorch", "version": torch.__version__, "delegate": None, "device": device.type,
               "precision": config.dtype, "threads": torch.get_num_threads() if device.type == "cpu" else None,
               "options": {"channels_last": config.channels_last, "compile": compiled,
                           "weights": _weights_text(model, card, weights)}}
    return rs.new_record(
        "bench", config.target, runtime, task=rs.schema_task(card.task), scale=card.scale, artifact=None,
        input={"height": height, "width": width, "batch": batch, "tile": None, "overlap": None},
        latency_ms=latency, throughput=_throughput(latency, batch * height * width * card.scale ** 2, macs, peak),
        peak_memory_mb=peak_memory, notes=notes + timing_notes + [peak_note], complete=True)


def _weights_text(model, card, weights) -> str:
    """Where the weights came from, for runtime.options (untrained, the file, or shipped)."""
    if getattr(model, "zoo_untrained", False):
        return "untrained"
    if weights:
        return str(weights)
    return "zero-shot" if card.zero_shot else f"shipped ({card.weights})"


def bench_artifact(location: str | Path, *, warmup: int = 3, runs: int = 20, max_seconds: float | None = None,
                   peak_gmacs: float | None = None, clock_ghz: float | None = None, loaded=None) -> dict:
    """Latency of an exported artifact through its desktop runner on one input of the manifest's
    shape (one tile; float32 NCHW in [0, 1]); returns a ``bench`` record. ``loaded``: an already
    loaded :class:`export_mobile.runners.LoadedArtifact` (else it is loaded and verified here)."""
    from export_mobile.runners import load_artifact
    from zoo.macs import model_complexity
    from zoo.registry import get_card

    loaded = loaded or load_artifact(location)
    manifest = loaded.manifest
    height, width = (int(v) for v in manifest["tiling"]["tile"])
    batch = int(manifest["inputs"][0]["shape"][0])
    scale = int(manifest["tiling"]["scale"])
    x = torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(0))
    latency, peak_memory, notes = time_forward(lambda: loaded.forward_tiles(x), torch.device("cpu"), warmup=warmup,
                                               runs=runs, max_seconds=max_seconds)
    name = manifest["model"]["name"]
    try:
        get_card(name)
        macs = model_complexity(name, (1, 3, height, width))[1] * batch
    except ZooError:
        macs = None
        notes.append(f"model {name} is not in this zoo: MACs unknown")
    precision = manifest["precision"]
    peak, peak_note = _peak_for(torch.device("cpu"), precision, peak_gmacs, clock_ghz)
    notes.append("runner overhead included: numpy conversion and the runtime's Python binding")
    return rs.new_record(
        "bench", name, rs.artifact_runtime(manifest), task=rs.schema_task(manifest["model"].get("task")),
        scale=scale, artifact=rs.artifact_info(manifest),
        input={"height": height, "width": width, "batch": batch, "tile": height,
               "overlap": int(manifest["tiling"]["overlap"])},
        latency_ms=latency, throughput=_throughput(latency, batch * height * width * scale ** 2, macs, peak),
        peak_memory_mb=peak_memory, notes=notes + [peak_note], complete=True)


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------


def format_table(records: list[dict], labels: list[str] | None = None) -> str:
    """A plain-text table of bench records in the given order; ``speedup`` is throughput (MP/s)
    relative to the first row of the same input size (height x width x batch): a 64x64 tile and a
    256x256 image do not compare (per-call overheads weigh differently), so each input size has its
    own reference row, named below the table when there are several."""
    labels = labels or [r["artifact"]["file"] if r.get("artifact") else r["model"] for r in records]
    header = (f"{'target':<44} {'device':>6} {'prec':>5} {'thr':>3} {'input':>9} {'median ms':>10} {'p90 ms':>9} "
              f"{'min ms':>9} {'MP/s':>8} {'GMAC/s':>8} {'%peak':>6} {'MiB':>7} {'speedup':>7}")
    lines = [header, "-" * len(header)]
    references: dict[str, tuple[str, float | None]] = {}  # input size -> (label, MP/s) of its first row
    for label, record in zip(labels, records):
        references.setdefault(input_text(record), (label, record["throughput"]["megapixels_per_s"]))
    for label, record in zip(labels, records):
        latency, throughput, runtime = record["latency_ms"], record["throughput"], record["runtime"]
        mps = throughput["megapixels_per_s"]
        size = input_text(record)
        first = references[size][1]
        speedup = mps / first if mps and first else None
        fraction = throughput["peak_fraction"]
        lines.append(
            f"{label[-44:]:<44} {runtime.get('device') or '-':>6} {runtime.get('precision') or '-':>5} "
            f"{format_cell(runtime.get('threads'), 'd'):>3} {size:>9} {latency['median']:>10.2f} "
            f"{format_cell(latency['p90'], '.2f'):>9} {format_cell(latency['min'], '.2f'):>9} {format_cell(mps, '.3f'):>8} "
            f"{format_cell(throughput['gmacs_per_s'], '.1f'):>8} {format_cell(fraction and fraction * 100, '.1f'):>6} "
            f"{format_cell(record.get('peak_memory_mb'), '.0f'):>7} {format_cell(speedup, '.2f'):>7}")
    if records:
        host = records[0]["host"]
        lines.append(f"host: {host['name']}, {host.get('cores')} CPUs"
                     + (f", GPU {host['gpu']}" if host.get("gpu") else "")
                     + f"; {records[0]['latency_ms']['runs']} timed runs after {records[0]['latency_ms']['warmup']}"
                       " warm-up; MiB = peak RSS of the process (CPU) / peak allocated (CUDA)")
    if len(references) > 1:
        lines.append("speedup = MP/s relative to the first row of the same input size, never across sizes: "
                     + "; ".join(f"{size} vs {label}" for size, (label, _mps) in references.items()))
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zoo bench", description="Latency of PyTorch models and exported artifacts (table + results JSON). "
        "TARGET: a model name (PyTorch; MODEL@cpu|cuda,fp32|fp16|bf16,cl,compile for per-target options) or an "
        "artifact / export folder (its desktop runner, one tile of the manifest's size).")
    parser.add_argument("targets", nargs="+", metavar="TARGET")
    parser.add_argument("--size", default="256x256", help="input HxW in pixels for models (default 256x256; "
                        "artifacts use their manifest's tile)")
    parser.add_argument("--batch", type=int, default=1, help="batch size for models (default 1)")
    parser.add_argument("--device", default="auto", help="models: auto (CUDA when available), cpu, cuda")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32", help="models: fp32, fp16, bf16")
    parser.add_argument("--channels-last", action="store_true", help="models: channels-last memory format")
    parser.add_argument("--compile", action="store_true", help="models: torch.compile (eager when it fails)")
    parser.add_argument("--weights", help="models: checkpoint instead of the shipped weights")
    parser.add_argument("--untrained", action="store_true", help="models: random weights (timing only)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs first (default 3)")
    parser.add_argument("--runs", type=int, default=20, help="timed runs (default 20)")
    parser.add_argument("--max-seconds", type=float, default=None,
                        help="stop timing a target after this many seconds of timed runs (at least 3 runs)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--peak-gmacs", type=float, default=None,
                        help="the machine's peak GMAC/s for the %%peak column (default: computed from /proc/cpuinfo)")
    parser.add_argument("--clock-ghz", type=float, default=None, help="CPU clock for the computed peak")
    parser.add_argument("--json", help="results file to write (default results/bench_<time>.json)")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    return parser


def main(argv: list[str]) -> int:
    """``zoo bench``: time each TARGET, print the table, write the results JSON; exit status."""
    from zoo.atomic import ensure_writable
    from zoo.quiet import c_stderr_filtered

    args = build_parser().parse_args(argv)
    path = Path(args.json) if args.json else Path("results") / f"bench_{rs.utc_now().replace(':', '')}.json"
    ensure_writable(path, "results file", fix="pass another --json path")  # before timing, not after
    if args.threads is not None and args.threads < 1:
        raise ZooError(f"--threads {args.threads} is not a thread count",
                       "pass --threads 1 or more, or leave it out for torch's default")
    if args.threads:
        torch.set_num_threads(args.threads)
    size = parse_size(args.size)
    defaults = BenchConfig(target="", device=args.device, dtype=args.dtype, channels_last=args.channels_last,
                           compile=args.compile)
    configs = [parse_target(text, defaults) for text in args.targets]
    for config in configs:  # every model's input before the first target is timed
        if not config.artifact:
            check_model_input(config.target, size, args.batch)
    common = {"warmup": args.warmup, "runs": args.runs, "max_seconds": args.max_seconds,
              "peak_gmacs": args.peak_gmacs, "clock_ghz": args.clock_ghz}
    records = []
    for config in configs:
        if not args.quiet:
            print(f"bench {config.label} ...", file=sys.stderr, flush=True)
        if config.artifact:
            with c_stderr_filtered():  # ExecuTorch's runtime prints ARM cpuinfo probes from C++
                records.append(bench_artifact(config.target, **common))
        else:
            records.append(bench_model(config, size, weights=args.weights, untrained=args.untrained,
                                       batch=args.batch, **common))
    print(format_table(records, [config.label for config in configs]))
    for config, record in zip(configs, records):
        for note in record.get("notes", []):
            if not note.startswith("peak"):
                print(f"  {config.label}: {note}")
    peaks = sorted({note for record in records for note in record.get("notes", []) if note.startswith("peak")})
    for note in peaks:
        print(f"  {note}")
    from zoo import __version__

    rs.write_results(path, rs.results_document(records, f"zoo {__version__} bench"))
    print(f"wrote {path}")
    return 0
