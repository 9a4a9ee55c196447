"""``zoo benchmark TASK``: every shipped model of a task against the classical references.

One run evaluates, on the same seeded degradations of the task's evaluation sets (image ``i``
gets seed ``seed + i``, as ``zoo eval`` and ``zoo check``):

* every model of the task that ships weights, as the float PyTorch model (``zoo eval``'s
  protocol: tiled as an app would, outputs quantized to 8 bits) and, with ``--int8``, as its int8
  ExecuTorch XNNPACK artifact (exported as ``zoo export`` makes it: from the QAT int8 state the
  card ships, else with PTQ calibration on training images; the cell says which), then run tile
  by tile by ``zoo check``: PSNR, drop against the float model, latency);
* the classical references of :mod:`zoo.benchmarks.classical` (CBM3D told sigma, NL-means and
  wavelet for denoising; Richardson-Lucy and Wiener told the true kernel for deblurring; the
  degraded input itself; bicubic upscaling for super-resolution).

Metrics follow the task (RGB PSNR/SSIM; BT.601 Y with a border crop of ``scale`` for SR). The
results JSON is rewritten after every image, and a rerun with the same settings resumes where it
stopped (``--restart`` starts over).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from zoo.errors import ZooError
from zoo.tables import format_cell
from zoo.tasks import MILD_CAMERA_SHAKE_JPEG_SCORED, MILD_CAMERA_SHAKE_SCORED

#: Quantization recipe of the benchmark's int8 rows (ExecuTorch XNNPACK, the Android/iOS CPU path).
INT8_RECIPE = "xnnpack"

__all__ = ["TaskSuite", "SUITES", "run_benchmark", "format_benchmark", "main"]

#: Version of the JSON written by :func:`run_benchmark`.
BENCHMARK_FORMAT = 1
#: The ``format`` field that marks a zoo benchmark file.
BENCHMARK_FORMAT_NAME = "zoo-benchmark"


@dataclass(frozen=True)
class TaskSuite:
    """What ``zoo benchmark TASK`` measures for one task."""

    task: str
    #: Evaluation sets (never training data).
    datasets: tuple[str, ...]
    #: Degradation specs; each model and reference runs on each (SR models only on their scale).
    degradations: tuple[str, ...]
    #: Classical references (names in zoo.benchmarks.classical.CLASSICAL_METHODS).
    references: tuple[str, ...]
    #: Card tasks whose shipped models take part.
    model_tasks: tuple[str, ...]


#: The suite of every task. Deblurring is measured noise-free (the zoo's default), with 1 %
#: noise (sigma 2.55), the setting of the non-blind deconvolution literature (Schuler et al.
#: 2013, Zhang et al. 2017 IRCNN), where deconvolution told the kernel can no longer invert it,
#: saved as a JPEG of quality 60-90 (NTIRE 2021 deblurring, JPEG track; HINet won it), and mild
#: camera shake (trajectories of 10-30 px instead of 60) with 1 % noise and saved as a JPEG: what
#: the shipped lite deblurring models are trained for (zoo.tasks.MILD_CAMERA_SHAKE_SCORED and
#: MILD_CAMERA_SHAKE_JPEG_SCORED; docs/benchmark.md).
SUITES: dict[str, TaskSuite] = {suite.task: suite for suite in (
    TaskSuite("denoise", ("bsd68",), ("gaussian:15", "gaussian:25", "gaussian:50"),
              ("input", "cbm3d", "nl-means", "wavelet"), ("denoise", "blind-denoise")),
    TaskSuite("deblur", ("bsd68",), ("motion-blur", "motion-blur:noise=2.55", "motion-blur:jpeg=60-90",
                                     MILD_CAMERA_SHAKE_SCORED, MILD_CAMERA_SHAKE_JPEG_SCORED),
              ("input", "richardson-lucy", "wiener"), ("deblur",)),
    TaskSuite("derain", ("bsd68",), ("rain",), ("input",), ("derain",)),
    TaskSuite("super-resolution", ("set5", "set14"), ("bicubic:x2", "bicubic:x3", "bicubic:x4"), ("input",),
              ("super-resolution",)),
)}


def _suite(task: str) -> TaskSuite:
    """The suite of ``task`` (any spelling the task table accepts, e.g. ``sr``)."""
    from zoo.tasks import canonical_task

    try:
        name = canonical_task(task)
    except ZooError:
        name = None
    if name not in SUITES:
        raise ZooError(f"unknown task {task!r} for the benchmark", f"use one of {', '.join(sorted(SUITES))}")
    return SUITES[name]


def _models_of(suite: TaskSuite, names: list[str] | None) -> list:
    """Cards taking part: the given names (``[]``: none, a run of the references alone), else
    (None) every non-zero-shot card of the task with weights."""
    from zoo.registry import get_card, list_models

    if names is not None:
        cards = [get_card(name) for name in names]
        for card in cards:
            if card.task not in suite.model_tasks:
                raise ZooError(f"{card.name} is a {card.task} model, not {suite.task}",
                               f"pick models of task {suite.task} (zoo list)")
            if not card.has_weights:
                raise ZooError(f"the zoo ships no weights for {card.name}", "benchmark shipped models only")
        return cards
    return [card for card in list_models()
            if card.task in suite.model_tasks and card.ships_trained_weights]


def _check_scales(suite: TaskSuite, cards: list, specs: list[str]) -> None:
    """:class:`ZooError` for a spec of a scale the task's models never have (``bicubic:x2`` for
    denoising, ``gaussian:25`` for SR), or one of ``cards`` whose scale no spec has (it would never run)."""
    from zoo.data.degradations import parse_degradation

    scales = {spec: parse_degradation(spec).scale for spec in specs}
    task_scales = {parse_degradation(spec).scale for spec in suite.degradations}
    for spec, scale in scales.items():
        if scale not in task_scales:
            raise ZooError(f"degradation {spec!r} has scale x{scale} but {suite.task} models work at "
                           f"{', '.join(f'x{s}' for s in sorted(task_scales))}",
                           f"use some of {'; '.join(suite.degradations)}")
    for card in cards:
        if card.scale not in scales.values():
            raise ZooError(f"{card.name} upscales x{card.scale} but no degradation given has that scale "
                           f"({'; '.join(f'{spec} is x{scale}' for spec, scale in scales.items())})",
                           f"add {card.default_degradation} to --degradations")


def _cell_key(cell: dict) -> tuple:
    return (cell["dataset"], cell["degradation"], cell["method"], cell["precision"])


def _summary(images: list[dict]) -> dict:
    def mean(key):
        values = [row[key] for row in images if row.get(key) is not None]
        return round(statistics.fmean(values), 4) if values else None

    return {"images": len(images), "psnr": mean("psnr"), "ssim": mean("ssim"), "seconds": mean("seconds")}


#: Settings that define the protocol of a benchmark file: a run with others needs its own file.
_PROTOCOL_KEYS = ("task", "limit", "seed")
#: Settings that select cells: a run with another selection adds its cells to the file.
_SELECTION_KEYS = ("datasets", "degradations", "references", "models")


def _weights_digest(card) -> str | None:
    """First 12 hex digits of the sha256 of a card's weights file (None without weights)."""
    from zoo.hashing import file_sha256

    path = card.weights_path
    if path is None or not path.is_file():
        return None
    return file_sha256(path)[:12]


def _int8_route(card) -> str:
    """How ``zoo export`` makes the card's int8 XNNPACK model: ``qat`` from the QAT state the card
    ships, else ``ptq`` (calibrated on training crops)."""
    return "qat" if card.qat_weights_path(INT8_RECIPE) is not None else "ptq"


def _int8_digest(card, float_digest: str | None) -> str | None:
    """The digest an int8 cell is measured with: the float weights' and, when the card ships QAT
    int8 state for XNNPACK (the artifact then comes from it), that file's too."""
    from zoo.hashing import file_sha256

    qat = card.qat_weights_path(INT8_RECIPE)
    if qat is None or float_digest is None:
        return float_digest
    return f"{float_digest}-qat{file_sha256(qat)[:8]}"


#: Fields every cell of a benchmark file has (what resuming and the table read).
_CELL_FIELDS = {"dataset": str, "degradation": str, "method": str, "precision": str, "kind": str, "images": list,
                "complete": bool}


def _json_kind(kind: type) -> str:
    """A Python type as JSON names its values (``a string``, ``a list``, ...)."""
    return {dict: "an object", list: "a list", str: "a string", bool: "true or false", int: "a number",
            float: "a number", type(None): "null"}.get(kind, kind.__name__)


def _benchmark_file_problem(doc) -> str | None:
    """What makes ``doc`` (a parsed benchmark JSON) unusable to resume from, or None when it is fine.

    A file of another kind (an eval or results file) or of a newer zoo is refused by the caller
    before this; here the structure the resume reads: ``settings`` (protocol values, selection
    lists of names) and ``cells`` (objects with :data:`_CELL_FIELDS`, image rows as objects with
    numbers or null for ``psnr``, ``ssim`` and ``seconds``).
    """
    settings = doc.get("settings")
    if not isinstance(settings, dict):
        return "settings is not an object"
    for key in _SELECTION_KEYS:
        values = settings.get(key, [])
        if not isinstance(values, list) or not all(isinstance(value, str) for value in values):
            return f"settings.{key} is not a list of names"
    cells = doc.get("cells")
    if not isinstance(cells, list):
        return "cells is not a list"
    for index, cell in enumerate(cells):
        if not isinstance(cell, dict):
            return f"cells[{index}] is not an object"
        for field, kind in _CELL_FIELDS.items():
            if not isinstance(cell.get(field), kind):
                return f"cells[{index}].{field} is {'missing' if field not in cell else 'not ' + _json_kind(kind)}"
        for number, row in enumerate(cell["images"]):
            if not isinstance(row, dict) or not isinstance(row.get("image"), str):
                return f"cells[{index}].images[{number}] is not an object with an image name"
            for key in ("psnr", "ssim", "seconds"):
                value = row.get(key)
                if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                    return f"cells[{index}].images[{number}].{key} is not a number"
    return None


def _read_benchmark_file(path: Path, restart: bool) -> dict | None:
    """The benchmark document at ``path`` to resume from (None: start a new one).

    :class:`ZooError` for a file that is not valid JSON or is damaged, or was written by a newer
    zoo (``--restart`` replaces those), and for any other JSON file, which even ``--restart`` does
    not replace: an eval or results file at the path is someone's data, not a run to start over.
    """
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        if restart:
            return None
        raise ZooError(f"{path} is not a readable benchmark file ({' '.join(str(err).split())})",
                       "pass --restart to start over, or another --json path") from None
    if not isinstance(doc, dict) or doc.get("format") != BENCHMARK_FORMAT_NAME:
        kind = (f"format {doc['format']!r}" if isinstance(doc, dict) and isinstance(doc.get("format"), str)
                else f"{_json_kind(type(doc))}, not an object" if not isinstance(doc, dict) else "no format field")
        raise ZooError(f"{path} is not a zoo benchmark file ({kind}), and the benchmark would replace it",
                       "pass another --json path (or move that file away)")
    if restart:
        return None
    version = doc.get("format_version")
    if not isinstance(version, int) or version > BENCHMARK_FORMAT:
        raise ZooError(f"{path} was written by a newer zoo (benchmark format {version!r}, this zoo reads "
                       f"{BENCHMARK_FORMAT})",
                       "upgrade mobile-restoration-zoo, or pass --restart or another --json path")
    problem = _benchmark_file_problem(doc)
    if problem:
        raise ZooError(f"{path} is a damaged benchmark file: {problem}",
                       "pass --restart to start over, or another --json path")
    return doc


class _Store:
    """The results JSON, rewritten atomically after every image so that a rerun resumes."""

    def __init__(self, path: Path, settings: dict, restart: bool):
        self.path = path
        previous = _read_benchmark_file(path, restart)
        if previous is not None:
            old = previous.get("settings") or {}
            differing = [key for key in _PROTOCOL_KEYS if old.get(key) != settings.get(key)]
            if differing:
                raise ZooError(f"{path} holds a benchmark with other settings ({', '.join(differing)}: "
                               f"{', '.join(repr(old.get(key)) for key in differing)})",
                               "pass --restart to start over, or another --json path")
            # Another selection of the same protocol (a new model, one more set or reference)
            # joins the file: its cells are added, the ones already measured are kept.
            for key in _SELECTION_KEYS:
                settings[key] = list(dict.fromkeys([*old.get(key, []), *settings[key]]))
            settings["int8"] = bool(old.get("int8")) or settings["int8"]
            previous["settings"] = settings
        self.doc = previous or {"format": BENCHMARK_FORMAT_NAME, "format_version": BENCHMARK_FORMAT,
                                "settings": settings, "cells": [], "complete": False}

    def model_cell(self, dataset: str, degradation: str, card, precision: str, digest: str | None) -> dict:
        """The cell of a model whose weights file has ``digest`` (:func:`_weights_digest`); measured
        again from scratch when the digest differs from the one the cell was measured with."""
        cell = self.cell(dataset, degradation, card.name, precision, "model")
        # Files written before the digest was recorded are taken to hold the current weights.
        cell.setdefault("weights_sha256", digest)
        if cell["weights_sha256"] != digest:
            if cell["images"]:
                cell.update(images=[], complete=False)
                for stale in ("artifact", "drop_db", "worst_drop_db", "latency_ms_median"):
                    cell.pop(stale, None)
            cell["weights_sha256"] = digest
        return cell

    def cell(self, dataset: str, degradation: str, method: str, precision: str, kind: str) -> dict:
        key = (dataset, degradation, method, precision)
        for cell in self.doc["cells"]:
            if _cell_key(cell) == key:
                return cell
        cell = {"dataset": dataset, "degradation": degradation, "method": method, "precision": precision,
                "kind": kind, "images": [], "complete": False}
        self.doc["cells"].append(cell)
        return cell

    def save(self) -> None:
        from zoo.atomic import write_json

        write_json(self.path, self.doc)


def _reference_cell(store: _Store, cell: dict, method, dataset: str, spec: str, settings, data_root, limit,
                    seed, say: Callable[[str], None]) -> None:
    from zoo.data.datasets import open_dataset
    from zoo.data.degradations import parse_degradation
    from zoo.data.io import quantize
    from zoo.evaluate import measure

    degradation = parse_degradation(spec)
    data = open_dataset(dataset, degradation=degradation, data_root=data_root, limit=limit, seed=seed)
    done = {row["image"] for row in cell["images"]}
    for index in range(len(data)):
        sample = data[index]
        if sample.name in done:
            continue
        start = time.perf_counter()
        restored = method.run(sample.degraded, degradation, seed + index)
        seconds = time.perf_counter() - start
        scored = quantize(restored.clamp(0, 1), 8) if method.scored_as_8bit else restored
        row = {"image": sample.name, **measure(scored, sample.target, settings),
               "seconds": round(seconds, 4)}
        cell["images"].append(row)
        store.save()
        say(f"[{index + 1}/{len(data)}] {dataset} {spec} {method.name}: {row['psnr']:.2f} dB {seconds:.1f} s")


def _float_cell(store: _Store, cell: dict, card, dataset: str, spec: str, data_root, limit, seed,
                progress: bool) -> None:
    from zoo.evaluate import evaluate

    result = evaluate(card.name, dataset, degradation=spec, data_root=data_root, limit=limit, seed=seed,
                      progress=progress)
    cell["images"] = [{"image": row["image"], "psnr": row["psnr"], "ssim": row["ssim"],
                       "seconds": round(row["seconds"], 4)} for row in result["images"]]
    cell["tile"], cell["overlap"], cell["device"] = result["tile"], result["overlap"], result["device"]
    store.save()


def _int8_cell(store: _Store, cell: dict, card, route: str, dataset: str, spec: str, work: Path, data_root, limit,
               seed, progress: bool) -> None:
    """Export the int8 XNNPACK artifact (once; ``route`` from :func:`_int8_route`) and check it on
    the set (``zoo check``, resumable)."""
    from export_mobile.api import export_model
    from measure.check import run_check
    from zoo.quiet import c_stderr_filtered

    tile = card.tile or 256
    tile -= tile % card.size_multiple
    # The weights digest in the names: retrained weights get a new artifact and a new check.
    tag = f"{card.name}-{cell['weights_sha256']}" if cell.get("weights_sha256") else card.name
    folder = work / f"{tag}-executorch-xnnpack-int8-{tile}"
    # The int8 model a user gets from `zoo export`: the shipped QAT state when the card has one,
    # else PTQ calibrated on training crops.
    if not (folder / "manifest.json").is_file():
        export_model(card.name, "executorch-xnnpack", "int8", tile, folder,
                     calibration=None if route == "qat" else "auto", data_root=data_root)
    safe_spec = spec.replace(":", "").replace(",", "_").replace("=", "")
    with c_stderr_filtered():  # ExecuTorch's runtime prints ARM cpuinfo probes from C++
        doc = run_check(folder, dataset, spec, data_root=data_root, limit=limit,
                        json_path=work / f"check_{tag}_{dataset}_{safe_spec}.json", progress=progress)
    record = [r for r in doc["records"] if r["kind"] == "check"][-1]
    cell["images"] = [{"image": image["name"], "psnr": image["psnr"], "ssim": image.get("ssim"),
                       "seconds": round(image["latency_ms"] / 1000.0, 4),
                       "float_psnr": image.get("reference_psnr")} for image in record["images"]]
    drops = [row["float_psnr"] - row["psnr"] for row in cell["images"] if row.get("float_psnr") is not None]
    quantization = json.loads((folder / "manifest.json").read_text(encoding="utf-8")).get("quantization") or {}
    cell.update(artifact=str(folder), tile=tile, drop_db=record["accuracy"].get("drop_db"),
                quantization=quantization.get("method"),
                worst_drop_db=max(drops) if drops else None, latency_ms_median=record["latency_ms"]["median"])
    store.save()


def run_benchmark(task: str, *, models: list[str] | None = None, references: list[str] | None = None,
                  degradations: list[str] | None = None, datasets: list[str] | None = None,
                  data_root: str | Path | None = None, limit: int | None = None, seed: int = 0,
                  int8: bool = False, json_path: str | Path | None = None, work_dir: str | Path | None = None,
                  restart: bool = False, progress: bool = True,
                  log: Callable[[str], None] | None = None) -> dict:
    """Run the quality benchmark of ``task``; returns the results document (also written to JSON).

    ``models``: card names (default None: every shipped model of the task; ``[]``: none); ``references``,
    ``degradations``, ``datasets``: subsets of the task's suite (default: all of it); ``limit``: the
    first N images of each set; ``int8``: also export and check each model's int8 XNNPACK
    artifact (in ``work_dir``). PSNR in dB, SSIM in [0, 1], seconds per image.
    """
    from zoo.benchmarks.classical import classical_method
    from zoo.data.degradations import parse_degradation
    from zoo.evaluate import MetricSettings

    suite = _suite(task)
    cards = _models_of(suite, models)
    reference_names = list(references) if references is not None else list(suite.references)
    methods = [classical_method(name) for name in reference_names]
    for method in methods:
        if suite.task not in method.tasks:
            raise ZooError(f"{method.name} is not a {suite.task} reference",
                           f"use some of {', '.join(suite.references)}")
        method.check_available()
    specs = list(degradations or suite.degradations)
    sets = list(datasets or suite.datasets)
    # A bad spec, or a model named with --models that no spec would run, fails before any work
    # (the default models simply skip the specs of other scales).
    _check_scales(suite, cards if models else [], specs)
    if int8 and seed != 0:  # before any cell is measured, not at the first int8 cell
        raise ZooError("int8 rows are checked with seed 0 (zoo check's protocol)", "drop --seed or --int8")
    from zoo.atomic import ensure_writable

    json_path = ensure_writable(json_path or Path("results") / f"benchmark_{suite.task}.json", "benchmark file",
                                fix="pass another --json path")
    work = Path(work_dir or json_path.parent / f"benchmark_{suite.task}_artifacts")
    if int8:
        ensure_writable(work, "int8 artifact folder", kind="folder", fix="pass another --work-dir")
    settings = {"task": suite.task, "datasets": sets, "degradations": specs, "references": reference_names,
                "models": [card.name for card in cards], "int8": int8, "limit": limit, "seed": seed}
    store = _Store(json_path, settings, restart)
    digests = {card.name: _weights_digest(card) for card in cards}  # hashed once, not per cell
    int8_routes = {card.name: _int8_route(card) for card in cards} if int8 else {}
    int8_digests = {card.name: _int8_digest(card, digests[card.name]) for card in cards} if int8 else {}
    say = log or ((lambda line: print(line, file=sys.stderr, flush=True)) if progress else (lambda line: None))

    for dataset in sets:
        for spec in specs:
            scale = parse_degradation(spec).scale
            metric = MetricSettings.for_task(suite.task, scale)
            store.doc.setdefault("metrics", {})[spec] = asdict(metric)
            for method in methods:
                cell = store.cell(dataset, spec, method.name, "float", "reference")
                # Cells written before the input row was scored as is (8-bit, 20.53 dB at sigma 25
                # instead of zoo eval's 20.17) are measured again.
                if cell.setdefault("scored_as_8bit", True) != method.scored_as_8bit:
                    cell.update(images=[], complete=False, scored_as_8bit=method.scored_as_8bit)
                if not cell["complete"]:
                    cell["told"] = method.told
                    _reference_cell(store, cell, method, dataset, spec, metric, data_root, limit, seed, say)
                    cell["complete"] = True
                    store.save()
            for card in cards:
                if card.scale != scale:
                    continue
                cell = store.model_cell(dataset, spec, card, "float", digests[card.name])
                if not cell["complete"]:
                    _float_cell(store, cell, card, dataset, spec, data_root, limit, seed, progress)
                    cell["complete"] = True
                    store.save()
                    say(f"{dataset} {spec} {card.name} float: {_summary(cell['images'])['psnr']:.2f} dB")
                if int8:
                    cell = store.model_cell(dataset, spec, card, "int8", int8_digests[card.name])
                    # A cell measured by another route than the one zoo export now takes (cells
                    # without the record were calibrated here: PTQ) is measured again.
                    route = int8_routes[card.name]
                    if cell["images"] and cell.get("quantization", "ptq") != route:
                        cell.update(images=[], complete=False)
                    if not cell["complete"]:
                        _int8_cell(store, cell, card, route, dataset, spec, work, data_root, limit, seed, progress)
                        cell["complete"] = True
                        store.save()
    store.doc["complete"] = True
    store.doc["summary"] = [dict(_cell_summary(cell), dataset=cell["dataset"], degradation=cell["degradation"],
                                 method=cell["method"], precision=cell["precision"], kind=cell["kind"])
                            for cell in store.doc["cells"]]
    store.save()
    return store.doc


def _cell_summary(cell: dict) -> dict:
    summary = _summary(cell["images"])
    for key in ("drop_db", "worst_drop_db", "latency_ms_median", "told", "quantization"):
        if cell.get(key) is not None:
            summary[key] = cell[key]
    return summary


def format_benchmark(doc: dict) -> str:
    """The benchmark as a plain-text table: one block per (dataset, degradation), best PSNR first."""
    lines = []
    cells = doc["cells"]
    blocks = []
    for cell in cells:
        block = (cell["dataset"], cell["degradation"])
        if block not in blocks:
            blocks.append(block)
    for dataset, spec in blocks:
        metric = doc.get("metrics", {}).get(spec, {})
        channel = "Y (BT.601)" if metric.get("y_channel") else "RGB"
        lines.append(f"{dataset}, {spec}: {channel} PSNR/SSIM, border crop {metric.get('crop_border', 0)}, "
                     f"8-bit outputs, seed {doc['settings']['seed']}")
        header = f"{'method':<22} {'prec':<8} {'told':<7} {'images':>6} {'PSNR':>7} {'SSIM':>7} {'drop':>7} {'s/img':>7}"
        lines += [header, "-" * len(header)]
        rows = [(cell, _cell_summary(cell)) for cell in cells if (cell["dataset"], cell["degradation"]) == (dataset, spec)]
        rows.sort(key=lambda item: -(item[1]["psnr"] if item[1]["psnr"] is not None else float("-inf")))
        for cell, summary in rows:
            told = summary.get("told", "-") if cell["kind"] == "reference" else "nothing"
            precision = cell["precision"] + ("-" + summary["quantization"][:3] if summary.get("quantization") else "")
            lines.append(f"{cell['method'][:22]:<22} {precision:<8} {told:<7} {summary['images']:>6} "
                         f"{format_cell(summary['psnr'], '.2f'):>7} {format_cell(summary['ssim'], '.4f'):>7} "
                         f"{format_cell(summary.get('drop_db'), '+.3f'):>7} {format_cell(summary['seconds'], '.2f'):>7}")
        lines.append("")
    lines.append("told: what a reference knows about the degradation (networks are told nothing); drop: float - "
                 "int8 PSNR of the same model (int8-qat: from the shipped QAT state, int8-ptq: calibrated here); "
                 "s/img: float rows PyTorch on this host, int8 rows the artifact's median latency per image")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zoo benchmark",
        description="Every shipped model of a task against classical references on the same seeded degradations: "
                    "table + JSON, resumable.")
    parser.add_argument("task", help=f"one of {', '.join(sorted(SUITES))}")
    parser.add_argument("--models", help="comma-separated model names (default: every shipped model of the task)")
    parser.add_argument("--references", help="comma-separated classical references (default: the task's)")
    parser.add_argument("--degradations", help="semicolon-separated degradation specs (default: the task's)")
    parser.add_argument("--datasets", help="comma-separated evaluation sets (default: the task's)")
    parser.add_argument("--data-root", help="folder holding the datasets (default: $ZOO_DATA_ROOT, ../shared/datasets)")
    parser.add_argument("--limit", type=int, help="only the first N images of each set (quick runs)")
    parser.add_argument("--seed", type=int, default=0, help="degradation seed of the first image (default 0)")
    parser.add_argument("--int8", action="store_true", help="also export and check each model's int8 XNNPACK artifact")
    parser.add_argument("--json", type=Path, help="results JSON (default: results/benchmark_<task>.json)")
    parser.add_argument("--work-dir", type=Path, help="folder for int8 artifacts (default: beside the JSON)")
    parser.add_argument("--restart", action="store_true", help="start over instead of resuming the JSON's run")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    return parser


#: What each list option of ``zoo benchmark`` looks like (for the message of an empty one).
_LIST_EXAMPLES = {"--models": "hinet-lite-s,hinet-lite", "--references": "input,wavelet",
                  "--degradations": "gaussian:15;gaussian:25", "--datasets": "bsd68,set5"}


def _split(text: str | None, option: str, sep: str = ",") -> list[str] | None:
    """The names of a list option (None when it is not given); :class:`ZooError` when it is given
    but names nothing (``--models ,``), which must not fall back to the default selection."""
    if text is None:
        return None
    parts = [part.strip() for part in text.split(sep) if part.strip()]
    if not parts:
        example = _LIST_EXAMPLES.get(option, "a,b")
        raise ZooError(f"{option} {text!r} names nothing", f"list {'specs' if sep == ';' else 'names'} "
                       f"separated by {sep!r} (e.g. {option} '{example}'), or leave {option} out for the default")
    return parts


def main(argv: list[str] | None = None) -> int:
    """``zoo benchmark``: returns the exit status (2 for a ZooError, printed as one line)."""
    args = build_parser().parse_args(argv)
    try:
        if args.limit is not None and args.limit < 1:
            raise ZooError(f"--limit {args.limit} must be at least 1", "pass a positive number of images")
        doc = run_benchmark(args.task, models=_split(args.models, "--models"),
                            references=_split(args.references, "--references"),
                            degradations=_split(args.degradations, "--degradations", ";"),
                            datasets=_split(args.datasets, "--datasets"),
                            data_root=args.data_root, limit=args.limit, seed=args.seed, int8=args.int8,
                            json_path=args.json, work_dir=args.work_dir, restart=args.restart,
                            progress=not args.quiet)
    except ZooError as err:
        print(f"zoo: error: {err}", file=sys.stderr)
        return 2
    print(format_benchmark(doc))
    print(f"wrote {args.json or Path('results') / f'benchmark_{_suite(args.task).task}.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
