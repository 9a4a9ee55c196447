"""Measured rows: what the results files say about each artifact, for ``zoo report``, ``zoo info``
and the model cards.

A results file (``export_mobile/schemas/results.schema.json``) holds records of one run each
(baseline, check, bench, device). This module groups them per *artifact* (the exact file, known by
its sha256; the float PyTorch model counts as the artifact ``pytorch``) and joins what was
measured about it anywhere: accuracy on an evaluation set (PSNR/SSIM in dB / 0-1, drop versus the
float baseline in dB) and latency on each host (median and p90 wall time in milliseconds, per
forward pass, tile or image as the record says, at its input size in pixels).

``measured_rows(records)`` gives one row per (model, artifact), the form kept under ``measured:``
in ``zoo/cards/<model>.yaml`` (written by :func:`update_cards`, i.e. ``zoo report
--update-cards``) and shown by ``zoo info MODEL`` together with the rows of the results store
(``results/``, ``--results DIR`` or ``$ZOO_RESULTS``).

Only the standard library and PyYAML are needed (no torch), so reports build anywhere.
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from measure.results import finite_or_none
from quantize.provenance import UNKNOWN, provenance_label
from zoo.errors import ZooError

__all__ = ["Loaded", "SHA_PREFIX", "results_root", "load_results", "artifact_key", "artifact_label", "input_text",
           "tiling_text", "accuracy_tiling", "runtime_label", "latency_key", "best_accuracy", "drop_db", "drop_tiling",
           "baseline_latency", "is_quantized", "is_simulation", "artifact_quantization", "quantization_label",
           "measured_rows", "merge_rows", "card_rows", "update_cards", "model_measured", "format_measured", "fmt"]

#: Characters of the artifact sha256 kept in labels, card rows and file names.
SHA_PREFIX = 12
#: Marker line above the generated ``measured:`` section of a card (everything after it is rewritten).
CARD_MARKER = "# --- measured: written by `zoo report --update-cards` from results files; edit the rows above ---"
#: Decimals kept in card rows and shown in reports: PSNR/drop dB, SSIM, milliseconds.
DIGITS = {"db": 2, "ssim": 4, "ms": 2}
#: Precisions of float artifacts: no quantization provenance to show.
FLOAT_PRECISIONS = ("fp32", "fp16", "bf16")
#: Order of the keys of a measured row (others follow).
ROW_KEYS = ("model", "artifact", "target", "precision", "sha256", "quantization", "accuracy", "latency")


@dataclass(frozen=True)
class Loaded:
    """One record of a results file and the file it came from."""

    record: dict
    source: Path


def fmt(value, digits: int, suffix: str = "") -> str:
    """``value`` rounded to ``digits`` decimals (``"—"`` when unknown or not finite); what reports display."""
    if finite_or_none(value) is None:
        return "—"
    text = f"{float(value):.{digits}f}"
    return (text[1:] if text.startswith("-") and float(text) == 0 else text) + suffix  # no "-0.00"


def results_root(explicit: str | os.PathLike | None = None) -> Path:
    """The results store: ``explicit``, else ``$ZOO_RESULTS``, else ``results`` (in the working folder)."""
    return Path(explicit or os.environ.get("ZOO_RESULTS") or "results")


def _is_results_json(path: Path) -> bool:
    """Whether a JSON file claims to be a results file (other JSON, e.g. ``zoo eval`` output, is not)."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(doc, dict) and doc.get("format") == "zoo-results"


def load_results(paths: Iterable[str | os.PathLike], *, strict: bool = True) -> tuple[list[Loaded], list[Path]]:
    """Every record of the results files ``paths`` (files, or folders searched recursively for
    ``*.json``), with the files passed over.

    A file named explicitly must be a valid results file (:class:`ZooError` naming the file and the
    first bad field). In folders, JSON files that are not results files (no ``"format":
    "zoo-results"``, e.g. ``zoo eval`` output) are passed over; an invalid results file raises when
    ``strict``, else it is passed over with a warning on stderr (``zoo info`` does that).
    """
    from measure.results import read_results

    loaded: list[Loaded] = []
    skipped: list[Path] = []
    for path in map(Path, paths):
        if not path.exists():
            raise ZooError(f"results path {path} does not exist", "pass results files or folders holding them")
        for file in sorted(path.rglob("*.json")) if path.is_dir() else [path]:
            if path.is_dir() and not _is_results_json(file):
                skipped.append(file)
                continue
            try:
                doc = read_results(file)
            except ZooError as err:
                if strict:
                    raise
                print(f"warning: skipped {err}", file=sys.stderr)
                skipped.append(file)
                continue
            loaded.extend(Loaded(record, file) for record in doc["records"])
    return loaded, skipped


# --------------------------------------------------------------------------------------------
# Labels and keys
# --------------------------------------------------------------------------------------------


def artifact_key(record: dict) -> tuple[str, str, str | None]:
    """``(target, precision, sha256 prefix)`` of a record's artifact; ``("pytorch", precision, None)``
    for PyTorch records (baselines), precision from the runtime (default fp32)."""
    artifact = record.get("artifact")
    runtime = record["runtime"]
    if not artifact:
        return (runtime["name"], runtime.get("precision") or "fp32", None)
    return (artifact.get("target") or runtime["name"], artifact.get("precision") or runtime.get("precision") or "?",
            artifact["sha256"][:SHA_PREFIX])


def artifact_label(record_or_key, *, sha: bool = True) -> str:
    """``"executorch-xnnpack int8 9b2e5d0c7a14"`` (target, precision, sha256 prefix) or ``"pytorch fp32"``."""
    target, precision, digest = record_or_key if isinstance(record_or_key, tuple) else artifact_key(record_or_key)
    return f"{target} {precision}" + (f" {digest}" if sha and digest else "")


def tiling_text(tile, overlap=None) -> str:
    """``"tile 256, overlap 32"``, ``"whole image"`` (tile 0 or None: one pass over the image)."""
    if not tile:
        return "whole image"
    return f"tile {tile}" + (f", overlap {overlap}" if overlap is not None else "")


def input_text(record: dict) -> str:
    """What one timed pass ran on: ``"256x256"`` (height x width; ``"2x256x256"`` for a batch) for a
    forward pass or a tile; for a per-image latency the whole images of its evaluation set and the
    tile they were cut into, ``"whole bsd68 images (tile 256x256)"`` (the record's ``input`` is then
    the tile, not the image: calling it the input size would compare a 481x321 photo with a tile)."""
    size = record.get("input")
    if not size:
        return "?"
    batch = size.get("batch") or 1
    pixels = (f"{batch}x" if batch > 1 else "") + f"{size['height']}x{size['width']}"
    if (record.get("latency_ms") or {}).get("per") != "image":
        return pixels
    dataset = (record.get("accuracy") or {}).get("dataset")
    images = f"whole {dataset} images" if dataset else "whole images"
    return f"{images} (tile {pixels})" if size.get("tile") else f"{images} (untiled)"


def _reference_tiling(reference: dict | None) -> str | None:
    """Tiling of the float reference a check compared with (its ``reference`` field), when it says."""
    if not isinstance(reference, dict):
        return None
    if "tile" in reference:  # the float model run by zoo check itself
        return tiling_text(reference["tile"], reference.get("overlap"))
    runtime = reference.get("runtime")  # a free-form field: written by older zoos and by hand too
    options = (runtime.get("options") if isinstance(runtime, dict) else None) or {}
    if isinstance(options, dict) and "accuracy_tile" in options:  # a zoo baseline record
        return tiling_text(options["accuracy_tile"], options.get("accuracy_overlap"))
    return None


def accuracy_tiling(record: dict) -> str | None:
    """How the images of an accuracy record were restored: ``"tile 256, overlap 32"`` or ``"whole
    image"`` (None when the record does not say). Baselines keep it in
    ``runtime.options.accuracy_tile/accuracy_overlap``, checks in ``input.tile/overlap``."""
    if record["kind"] == "baseline":
        return _reference_tiling({"runtime": record["runtime"]})
    size = record.get("input") or {}
    if "tile" in size:
        return tiling_text(size["tile"], size.get("overlap"))
    return None


def runtime_label(record: dict) -> str:
    """``"executorch XnnpackBackend cpu"``: runtime name, delegate and compute device where known."""
    runtime = record["runtime"]
    parts = [runtime["name"], runtime.get("delegate"), runtime.get("device")]
    return " ".join(str(part) for part in parts if part)


def latency_key(record: dict) -> tuple[str, str, str, str]:
    """Records whose latencies compare: same model, host, input size and unit (forward/tile/image)."""
    return (record["model"], record["host"]["name"], input_text(record), record["latency_ms"].get("per") or "forward")


def _accuracy_key(record: dict) -> tuple[str, str, str]:
    accuracy = record["accuracy"]
    return (record["model"], accuracy["dataset"], accuracy["degradation"])


def _newest_first(loaded: Iterable[Loaded]) -> list[Loaded]:
    return sorted(loaded, key=lambda item: item.record.get("created") or "", reverse=True)


def _baselines(loaded: Sequence[Loaded]) -> list[Loaded]:
    return [item for item in loaded if item.record["kind"] == "baseline"]


def _matching_baseline(record: dict, loaded: Sequence[Loaded]) -> dict | None:
    """The newest baseline of the same model, dataset, degradation and image count as ``record``."""
    for item in _newest_first(_baselines(loaded)):
        base = item.record
        if base.get("accuracy") and _accuracy_key(base) == _accuracy_key(record) \
                and base["accuracy"]["images"] == record["accuracy"]["images"]:
            return base
    return None


def drop_db(record: dict, loaded: Sequence[Loaded]) -> float | None:
    """PSNR drop of an accuracy record versus the float model, dB (positive = worse): the record's
    ``drop_db``, else ``reference_psnr - psnr``, else versus a baseline record of the same model,
    dataset, degradation and image count. 0 for a baseline itself; None when unknown or not finite."""
    accuracy = record.get("accuracy")
    if not accuracy:
        return None
    if record["kind"] == "baseline":
        return 0.0
    if accuracy.get("drop_db") is not None:
        return finite_or_none(accuracy["drop_db"])
    if accuracy.get("reference_psnr") is not None:
        return finite_or_none(accuracy["reference_psnr"] - accuracy["psnr"])
    base = _matching_baseline(record, loaded)
    return finite_or_none(base["accuracy"]["psnr"] - accuracy["psnr"]) if base else None


def drop_tiling(record: dict, loaded: Sequence[Loaded]) -> str | None:
    """The tiling of an accuracy record, and of its float reference when that differs, e.g.
    ``"tile 64, overlap 16 (float: whole image)"``: such a drop includes the tiling, not only the
    artifact's numerics. None when the record does not say how it tiled."""
    own = accuracy_tiling(record)
    if own is None or record["kind"] == "baseline" or not record.get("accuracy"):
        return own
    accuracy = record["accuracy"]
    if accuracy.get("drop_db") is not None or accuracy.get("reference_psnr") is not None:
        reference = _reference_tiling(record.get("reference"))
    else:
        base = _matching_baseline(record, loaded)
        reference = accuracy_tiling(base) if base else None
    return own if reference in (None, own) else f"{own} (float: {reference})"


def best_accuracy(loaded: Sequence[Loaded]) -> dict[tuple[str, tuple], dict]:
    """``(model, artifact key) -> accuracy record``: the evaluation with the most images (newest on a
    tie); records with a non-finite PSNR are never chosen."""
    chosen: dict[tuple[str, tuple], dict] = {}
    for item in _newest_first(loaded):
        record = item.record
        if not record.get("accuracy") or finite_or_none(record["accuracy"].get("psnr")) is None:
            continue
        key = (record["model"], artifact_key(record))
        if key not in chosen or record["accuracy"]["images"] > chosen[key]["accuracy"]["images"]:
            chosen[key] = record
    return chosen


def baseline_latency(record: dict, loaded: Sequence[Loaded]) -> float | None:
    """Median latency (ms) of the newest baseline comparable with ``record`` (:func:`latency_key`);
    None when there is none or its median is not finite."""
    for item in _newest_first(_baselines(loaded)):
        if item.record.get("latency_ms") and latency_key(item.record) == latency_key(record):
            return finite_or_none(item.record["latency_ms"]["median"])
    return None


def is_quantized(key: tuple) -> bool:
    """Whether an artifact key (:func:`artifact_key`) names a quantized artifact (int8, w8a16, ...):
    an exported file (sha256 known) whose precision is not a float one."""
    _target, precision, digest = key
    return digest is not None and precision not in FLOAT_PRECISIONS


def is_simulation(record: dict) -> bool:
    """Whether a record measured a quantized PT2E model (.pt2) run in PyTorch by ``zoo check``
    (``artifact.target`` ``pt2e-<recipe>``): the recipe's int8 numerics, not a file an app runs."""
    from measure.pt2e import TARGET_PREFIX

    return str((record.get("artifact") or {}).get("target") or "").startswith(TARGET_PREFIX)


def artifact_quantization(loaded: Sequence[Loaded]) -> dict[tuple[str, tuple], dict]:
    """``(model, artifact key) -> provenance record`` (:mod:`quantize.provenance`) of every artifact
    some record carries one for (``artifact.quantization``; the newest wins). An artifact missing
    here was measured before provenance was recorded (or by an app build that did not copy it)."""
    found: dict[tuple[str, tuple], dict] = {}
    for item in _newest_first(loaded):
        provenance = (item.record.get("artifact") or {}).get("quantization")
        if provenance:
            found.setdefault((item.record["model"], artifact_key(item.record)), provenance)
    return found


def quantization_label(record: dict, provenances: dict[tuple[str, tuple], dict]) -> str:
    """How the artifact of ``record`` was quantized (:func:`quantize.provenance.provenance_label`),
    :data:`quantize.provenance.UNKNOWN` when no record says, ``"—"`` for a float artifact or PyTorch."""
    key = artifact_key(record)
    if not is_quantized(key):
        return "—"
    return provenance_label(provenances.get((record["model"], key)))


# --------------------------------------------------------------------------------------------
# Measured rows (model cards, zoo info)
# --------------------------------------------------------------------------------------------


def _round(value, digits: int):
    return None if value is None else round(float(value), digits) + 0.0  # + 0.0: no -0.0


def _latency_entry(record: dict) -> dict:
    latency = record["latency_ms"]
    return {"host": record["host"]["name"], "runtime": runtime_label(record), "input": input_text(record),
            "per": latency.get("per") or "forward", "median_ms": _round(latency["median"], DIGITS["ms"]),
            "p90_ms": _round(latency.get("p90"), DIGITS["ms"]), "date": (record.get("created") or "")[:10] or None}


def _latency_entry_key(entry: dict) -> tuple:
    return (entry["host"], entry["runtime"], entry["input"], entry["per"])


def measured_rows(loaded: Sequence[Loaded]) -> list[dict]:
    """One row per (model, artifact) of ``loaded`` records, sorted by model then PSNR (best first).

    Row: ``model``, ``artifact`` (label), ``target``, ``precision``, ``sha256`` (prefix, None for
    PyTorch), for a quantized artifact ``quantization`` (the provenance record of
    :func:`artifact_quantization`, or the text :data:`quantize.provenance.UNKNOWN`),
    ``accuracy`` (``dataset``, ``degradation``, ``images``, ``psnr_db``, ``ssim``,
    ``drop_db``, ``tiling`` when the record says; None when not measured; the evaluation with the
    most images, :func:`best_accuracy`) and ``latency``: one entry per (host, runtime, input, per)
    with ``median_ms``, ``p90_ms`` and the ``date`` measured (the newest record wins).
    """
    accuracy = best_accuracy(loaded)
    provenances = artifact_quantization(loaded)
    rows: dict[tuple[str, tuple], dict] = {}
    for item in _newest_first(loaded):
        record = item.record
        key = (record["model"], artifact_key(record))
        target, precision, digest = key[1]
        quantization = {"quantization": provenances.get(key) or UNKNOWN} if is_quantized(key[1]) else {}
        row = rows.setdefault(key, {"model": record["model"], "artifact": artifact_label(key[1], sha=False),
                                    "target": target, "precision": precision, "sha256": digest, **quantization,
                                    "accuracy": None, "latency": []})
        if record.get("latency_ms") and finite_or_none(record["latency_ms"]["median"]) is not None:
            entry = _latency_entry(record)
            if all(_latency_entry_key(old) != _latency_entry_key(entry) for old in row["latency"]):
                row["latency"].append(entry)
    for key, record in accuracy.items():
        measured = record["accuracy"]
        rows[key]["accuracy"] = {
            "dataset": measured["dataset"], "degradation": measured["degradation"], "images": measured["images"],
            "psnr_db": _round(measured["psnr"], DIGITS["db"]), "ssim": _round(measured.get("ssim"), DIGITS["ssim"]),
            "drop_db": _round(drop_db(record, loaded), DIGITS["db"])}
        tiling = drop_tiling(record, loaded)
        if tiling:
            rows[key]["accuracy"]["tiling"] = tiling
    for row in rows.values():
        row["latency"].sort(key=lambda entry: (entry["host"], entry["input"], entry["median_ms"]))
    return sorted(rows.values(), key=_row_order)


def _row_order(row: dict):
    psnr = (row.get("accuracy") or {}).get("psnr_db")
    return (row["model"], psnr is None, -(psnr or 0.0), row.get("sha256") is not None, row["artifact"],
            row.get("sha256") or "")


def _row_key(row: dict) -> tuple:
    return (row.get("model"), row.get("target"), row.get("precision"), row.get("sha256"))


def _images(accuracy: dict | None) -> int:
    """Images an accuracy entry was measured on (0 when unknown or not measured)."""
    return int((accuracy or {}).get("images") or 0)


def _known(quantization) -> bool:
    """Whether a row's ``quantization`` says how (a provenance record or a label other than UNKNOWN)."""
    return bool(quantization) and quantization != UNKNOWN


def _ordered(row: dict) -> dict:
    """``row`` with its keys in :data:`ROW_KEYS` order and, for a quantized artifact, a
    ``quantization`` (:data:`quantize.provenance.UNKNOWN` when no record gave one)."""
    if is_quantized((row.get("target"), row.get("precision"), row.get("sha256"))) and not row.get("quantization"):
        row = {**row, "quantization": UNKNOWN}
    return {**{key: row[key] for key in ROW_KEYS if key in row}, **row}


def merge_rows(old: Sequence[dict], new: Sequence[dict]) -> list[dict]:
    """Rows of ``old`` updated with ``new`` (same model and artifact): the accuracy measured on more
    images wins (a 2-image smoke test never replaces a 68-image evaluation; ``new`` wins a tie),
    latency entries are joined (a new entry replaces one of the same host, runtime, input and unit),
    a known ``quantization`` provenance wins over an unknown one (``new`` wins between two known).
    Rows only in ``old`` are kept."""
    merged = {_row_key(row): {**row, "latency": list(row.get("latency") or [])} for row in old}
    for row in new:
        key = _row_key(row)
        if key not in merged:
            merged[key] = {**row, "latency": list(row.get("latency") or [])}
            continue
        target = merged[key]
        if row.get("accuracy") and _images(row["accuracy"]) >= _images(target.get("accuracy")):
            target["accuracy"] = row["accuracy"]
        if _known(row.get("quantization")) or (row.get("quantization") and not target.get("quantization")):
            target["quantization"] = row["quantization"]
        entries = {_latency_entry_key(entry): entry for entry in target["latency"]}
        entries.update({_latency_entry_key(entry): entry for entry in row.get("latency") or []})
        target["latency"] = sorted(entries.values(), key=lambda e: (e["host"], e["input"], e["median_ms"]))
    return sorted((_ordered(row) for row in merged.values()), key=_row_order)


def _card_path(model: str, cards_dir: str | os.PathLike | None) -> Path:
    from zoo.registry import RESULTS_DIR

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", model):
        raise ZooError(f"model name {model!r} cannot name a card file", "fix the model field of the results file")
    return Path(cards_dir or RESULTS_DIR) / f"{model}.yaml"


def card_rows(model: str, cards_dir: str | os.PathLike | None = None) -> list[dict]:
    """The ``measured`` rows of ``zoo/cards/<model>.yaml`` (``cards_dir`` to read another folder)."""
    import yaml

    path = _card_path(model, cards_dir)
    if not path.is_file():
        return []
    rows = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("measured") or []
    return [{"model": model, **row} for row in rows]


def update_cards(loaded: Sequence[Loaded], cards_dir: str | os.PathLike | None = None) -> list[Path]:
    """Write the measured rows of ``loaded`` into ``<cards_dir>/<model>.yaml`` (default
    ``zoo/cards``) for every model seen, atomically; returns the files written.

    Hand-written content (comments, the ``results:`` rows) is kept as it is: the rows go below
    :data:`CARD_MARKER` and only that part of the file is rewritten, merged with the rows already
    there (:func:`merge_rows`). A card with a hand-written ``measured:`` key is refused.
    """
    import yaml

    from zoo.atomic import atomic_path

    written = []
    rows = measured_rows(loaded)
    for model in sorted({row["model"] for row in rows}):
        path = _card_path(model, cards_dir)
        text = path.read_text(encoding="utf-8") if path.is_file() else (
            f"# Measured results of {model} (read by zoo.registry; shown by `zoo info {model}`).\n")
        head = text.split(CARD_MARKER, 1)[0].rstrip("\n") + "\n"
        if "measured" in (yaml.safe_load(head) or {}):
            raise ZooError(f"{path} has a hand-written `measured:` section", f"move it below the line {CARD_MARKER!r}"
                           " or rename the key; zoo report --update-cards owns that section")
        merged = merge_rows(card_rows(model, cards_dir), [row for row in rows if row["model"] == model])
        body = yaml.safe_dump({"measured": [{k: v for k, v in row.items() if k != "model"} for row in merged]},
                              sort_keys=False, allow_unicode=True, width=110)
        with atomic_path(path) as tmp:
            tmp.write_text(f"{head}\n{CARD_MARKER}\n{body}", encoding="utf-8")
        written.append(path)
    return written


def model_measured(card, results_dir: str | os.PathLike | None = None) -> list[dict]:
    """Measured rows for ``zoo info``: the card's ``measured`` rows merged with the rows of the
    results store (:func:`results_root`); invalid results files there are passed over with a warning."""
    rows = [{"model": card.name, **row} for row in getattr(card, "measured", ())]
    root = results_root(results_dir)
    if root.is_dir():
        loaded, _skipped = load_results([root], strict=False)
        rows = merge_rows(rows, [row for row in measured_rows(loaded) if row["model"] == card.name])
    return rows


def format_measured(rows: Sequence[dict]) -> list[str]:
    """``zoo info`` lines: per artifact, accuracy then one line per host/runtime latency."""
    lines = []
    for row in rows:
        label = row["artifact"] + (f" {row['sha256']}" if row.get("sha256") else "")
        accuracy = row.get("accuracy")
        if accuracy:
            tiling = f", {accuracy['tiling']}" if accuracy.get("tiling") else ""
            label += (f": {accuracy['dataset']} {accuracy['degradation']} ({accuracy['images']} images{tiling}) "
                      f"PSNR {fmt(accuracy['psnr_db'], DIGITS['db'])} dB, SSIM {fmt(accuracy.get('ssim'), DIGITS['ssim'])}, "
                      f"drop {fmt(accuracy.get('drop_db'), DIGITS['db'])} dB")
        else:
            label += ": accuracy not measured"
        lines.append(f"measured: {label}")
        if "quantization" in row:
            lines.append(f"  quantized: {provenance_label(row['quantization'])}")
        for entry in row.get("latency") or []:
            lines.append(f"  latency: {entry['host']}, {entry['runtime']}, {entry['input']} per {entry['per']}: "
                         f"median {fmt(entry['median_ms'], DIGITS['ms'])} ms, p90 {fmt(entry.get('p90_ms'), DIGITS['ms'])} ms"
                         + (f" ({entry['date']})" if entry.get("date") else ""))
    return lines
