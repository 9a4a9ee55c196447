"""Results files: accuracy and latency records written by ``zoo baseline``, ``zoo check``,
``zoo bench`` and the demo apps, read by ``zoo report``.

The format is the JSON Schema ``export_mobile/schemas/results.schema.json`` (draft 2020-12),
explained field by field in ``docs/measuring.md``. A file is
``{"format": "zoo-results", "format_version": 1, "producer": ..., "created": ..., "records": [...]}``;
every record says what ran (``model``, ``artifact``, ``runtime``), where (``host``), on what
(``input``, ``accuracy.dataset``) and what was measured (``latency_ms``, ``throughput``,
``accuracy``, ``images``). Files are validated when written and when read; an invalid one raises
:class:`ZooError` naming the first bad field, e.g.
``results.json is invalid: field records[0].latency_ms.median: -1 is less than the minimum of 0``.

This module needs only the standard library (torch is used by :func:`host_info` and
:func:`output_sha256` when it is importable), so the demo-app tooling and ``zoo report`` can use it
anywhere.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import sys
from pathlib import Path
from typing import Iterable, Sequence

from export_mobile.manifest import utc_now
from quantize.provenance import recorded_provenance
from zoo.tables import format_cell  # noqa: F401  (re-exported for older imports)
from zoo.tasks import canonical_task
from export_mobile.schema import load_schema_file, read_json_file, schema_errors, validate_document

FORMAT = "zoo-results"
FORMAT_VERSION = 1
RESULTS_SCHEMA_PATH = Path(__file__).resolve().parent.parent / "export_mobile" / "schemas" / "results.schema.json"
#: Record kinds (``record.kind``).
KINDS = ("baseline", "check", "bench", "device")

__all__ = ["FORMAT", "FORMAT_VERSION", "RESULTS_SCHEMA_PATH", "KINDS", "load_results_schema", "results_errors",
           "validate_results", "read_results", "write_results", "new_record", "results_document", "host_info",
           "cpu_model", "iter_records", "latency_summary", "finite_or_none", "format_cell", "output_sha256", "utc_now",
           "schema_task", "artifact_info", "artifact_runtime"]

_FIX = "write it with measure.results.write_results (or the demo app's exporter); do not edit it by hand"


def load_results_schema() -> dict:
    """The results JSON Schema as a dict (cached; do not mutate)."""
    return load_schema_file(RESULTS_SCHEMA_PATH)


def results_errors(doc, *, use_jsonschema: bool | None = None) -> list[str]:
    """Every schema violation of a results document as ``"field.path: message"`` (empty when valid).

    ``use_jsonschema``: True forces jsonschema, False the built-in validator, None (default)
    jsonschema when importable.
    """
    return schema_errors(doc, load_results_schema(), use_jsonschema=use_jsonschema)


def validate_results(doc, *, source: str = "results", use_jsonschema: bool | None = None) -> dict:
    """Return ``doc`` when it follows the results schema, else raise :class:`ZooError`
    ``"{source} is invalid: field records[0].latency_ms.median: ..."`` (the first bad field).

    A document of a newer ``format_version`` gets its own message (upgrade the zoo).
    """
    return validate_document(doc, load_results_schema(), source=source, fix=_FIX, format_name=FORMAT,
                             format_version=FORMAT_VERSION, use_jsonschema=use_jsonschema)


def read_results(path: str | Path) -> dict:
    """Read and validate one results file; :class:`ZooError` when missing, not JSON, or invalid."""
    path = Path(path)
    doc = read_json_file(path, fix="re-run the command that wrote it", missing=(
        f"results file {path} does not exist", "pass a file written by zoo baseline/check/bench or a demo app"))
    return validate_results(doc, source=str(path))


def write_results(path: str | Path, doc: dict) -> Path:
    """Validate ``doc`` and write it to ``path`` atomically (a reader never sees a partial file).

    Non-finite floats are refused by the validation only when a field forbids them; write
    :func:`finite_or_none` values (null plus a note) instead of NaN/inf, which JSON does not have.
    Returns the path.
    """
    from zoo.atomic import atomic_path

    validate_results(doc, source=str(path))
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return path


#: Record fields :func:`new_record` keeps when they are None (the schema gives null a meaning).
_NULLABLE_FIELDS = ("artifact", "task", "reference")


def new_record(kind: str, model: str, runtime: str | dict, host: dict | None = None, **fields) -> dict:
    """One record: ``kind`` (baseline, check, bench, device), zoo ``model`` name, ``runtime``
    (a name such as ``"pytorch"`` or the full runtime dict), ``host`` (default :func:`host_info`)
    and any other record fields by keyword (``task``, ``artifact``, ``input``, ``latency_ms``,
    ``throughput``, ``peak_memory_mb``, ``accuracy``, ``images``, ``notes``, ``complete``, ...).

    Keyword fields that are None are left out (absent means unknown), except ``artifact``,
    ``task`` and ``reference``, which the schema allows as null (``artifact=None``: a PyTorch
    record). ``created`` defaults to now.
    The record is not validated here: :func:`write_results` / :func:`validate_results` do it.
    """
    if kind not in KINDS:
        raise ValueError(f"record kind must be one of {KINDS}, got {kind!r}")
    record = {"kind": kind, "model": model,
              "runtime": {"name": runtime} if isinstance(runtime, str) else dict(runtime),
              "host": dict(host) if host is not None else host_info()}
    record.update({key: value for key, value in fields.items() if value is not None or key in _NULLABLE_FIELDS})
    record.setdefault("created", utc_now())
    return record


def results_document(records: Sequence[dict], producer: str) -> dict:
    """A results document around ``records`` (at least one), e.g. ``producer="zoo 0.1.0 check"``."""
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "producer": producer, "created": utc_now(),
            "records": list(records)}


def iter_records(paths: Iterable[str | Path]) -> list[dict]:
    """Every record of many results files, in order; a folder stands for its ``*.json`` files
    (recursively, sorted). Each file is validated (:class:`ZooError` naming file and field)."""
    records: list[dict] = []
    for path in paths:
        path = Path(path)
        files = sorted(path.rglob("*.json")) if path.is_dir() else [path]
        for file in files:
            records.extend(read_results(file)["records"])
    return records


# --------------------------------------------------------------------------------------------
# Pieces of records
# --------------------------------------------------------------------------------------------


def cpu_model() -> str | None:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, ``platform.processor()`` elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip() or None
    except OSError:
        pass
    if sys.platform == "darwin":
        try:
            import subprocess

            return subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True,
                                  timeout=5).stdout.strip() or None
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or None


def host_info() -> dict:
    """The ``host`` of a desktop record: name ``"desktop (CPU model)"``, kind ``desktop``, os,
    os_version, cpu, cores (CPUs this process may use) and the CUDA GPU's name when torch sees one
    (torch is only consulted when it is already imported, so this stays cheap)."""
    cpu = cpu_model()
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cores = os.cpu_count()
    gpu = None
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            if torch.cuda.is_available():
                gpu = torch.cuda.get_device_name(torch.cuda.current_device())
        except Exception:  # noqa: BLE001 - a broken driver must not stop a measurement
            gpu = None
    return {"name": f"desktop ({cpu})" if cpu else f"desktop ({platform.machine() or 'unknown CPU'})",
            "kind": "desktop", "os": platform.system() or None, "os_version": platform.release() or None,
            "cpu": cpu, "cores": cores or None, "gpu": gpu}


#: Python package of each artifact runtime (manifest ``backend.runtime``), for its installed version.
_RUNTIME_PACKAGES = {"executorch": "executorch", "litert": "ai-edge-litert", "onnxruntime": "onnxruntime",
                     "coreml": "coremltools"}
#: Threads each desktop runner uses (export_mobile/targets): XNNPACK's and ONNX Runtime's default
#: thread pools have one thread per core, the LiteRT runner asks for 1 thread.
_RUNTIME_THREADS = {"executorch": "cores", "onnxruntime": "cores", "litert": 1}


def schema_task(task: str | None) -> str | None:
    """A task name or alias (``denoise``, ``sr``, ...) as ``zoo.tasks`` and the schema spell it
    (``super-resolution``); None or empty stays None."""
    return canonical_task(task) if task else None


def artifact_info(manifest: dict) -> dict:
    """The ``artifact`` field of a record from an export manifest: file, sha256, target, precision, bytes,
    and for a quantized artifact ``quantization``, the provenance record of how it was quantized
    (:func:`quantize.provenance.recorded_provenance` of the manifest's ``quantization``)."""
    info = {"file": manifest["artifact"]["file"], "sha256": manifest["artifact"]["sha256"],
            "target": manifest["target"], "precision": manifest["precision"],
            "bytes": int(manifest["artifact"]["bytes"])}
    provenance = recorded_provenance(manifest.get("quantization"))
    if provenance is not None:
        info["quantization"] = provenance
    return info


def artifact_runtime(manifest: dict, *, threads: int | None = None) -> dict:
    """The ``runtime`` field for an artifact run on this desktop by its runner
    (``export_mobile.runners.load_artifact``): the manifest's runtime and delegate, the installed
    runtime version, device cpu, the manifest's precision and the runner's thread count."""
    from export_mobile.manifest import tool_versions

    name = manifest["backend"]["runtime"]
    package = _RUNTIME_PACKAGES.get(name)
    if threads is None:
        threads = _RUNTIME_THREADS.get(name)
        if threads == "cores":
            threads = host_info()["cores"]
    return {"name": name, "version": tool_versions([package])[package] if package else None,
            "delegate": manifest["backend"].get("delegate"), "device": "cpu", "precision": manifest["precision"],
            "threads": threads, "options": dict(manifest["backend"].get("options") or {})}


def _quantile(values: Sequence[float], q: float) -> float:
    """Linear-interpolation quantile (numpy's default) of sorted ``values``, q in [0, 1]."""
    position = (len(values) - 1) * q
    low = math.floor(position)
    high = min(low + 1, len(values) - 1)
    return values[low] + (values[high] - values[low]) * (position - low)


def latency_summary(times_ms: Sequence[float], *, warmup: int = 0, timer: str = "perf_counter",
                    per: str = "forward") -> dict:
    """A ``latency_ms`` object from the timed runs (milliseconds, warm-up runs excluded):
    median, p90 (linear interpolation), min, mean, runs, warmup, timer, per (forward/tile/image)."""
    if not times_ms:
        raise ValueError("latency_summary needs at least one timed run")
    ordered = sorted(float(t) for t in times_ms)
    return {"per": per, "median": _quantile(ordered, 0.5), "p90": _quantile(ordered, 0.9), "min": ordered[0],
            "mean": sum(ordered) / len(ordered), "runs": len(ordered), "warmup": int(warmup), "timer": timer}


def finite_or_none(value) -> float | None:
    """``float(value)`` when finite, else None (JSON has no inf/NaN; e.g. PSNR of identical images)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def output_sha256(image) -> str:
    """sha256 of an output image as the apps hash it: 8-bit RGB bytes, row-major HWC.

    ``image``: float RGB tensor in [0, 1], (3, H, W) or (1, 3, H, W); quantized exactly like a saved
    8-bit PNG (``zoo.data.io.quantize``: clamp, x255, round half to even).
    """
    import torch

    from zoo.data.io import quantize

    if image.dim() == 4:
        if image.shape[0] != 1:
            raise ValueError(f"output_sha256 hashes one image, got a batch of {image.shape[0]}")
        image = image[0]
    levels = (quantize(image.detach().cpu(), 8) * 255.0).round().to(torch.uint8)
    return hashlib.sha256(levels.permute(1, 2, 0).contiguous().numpy().tobytes()).hexdigest()
