"""Quantization provenance: how an int8 model was made, as one record that travels with it.

Every quantized model carries the same record, made here by :func:`make_provenance`:

* PTQ: :func:`quantize.ptq.quantize_ptq` (``zoo quantize --method ptq`` and the calibration of
  ``zoo export --precision int8``) and QAT: :class:`quantize.qat_phase.QATPhase` (``zoo train`` /
  ``zoo distill`` with a ``quantization:`` section, ``zoo quantize --method qat``) and
  :func:`quantize.qat.quantize_qat` put it in the graph's settings, hence in the sidecar
  (``"provenance"``);
* ``zoo export`` copies it to ``manifest.json`` (``quantization.provenance``);
* ``zoo check`` / ``zoo bench`` copy it into the results records (``artifact.quantization``), and so do
  the demo apps' benchmarks (android_demo/core Benchmark.kt, ios_demo/ZooCore Benchmark.swift);
* ``zoo report --update-cards`` writes it into the cards' measured rows (``quantization:``), and
  ``zoo info`` / ``zoo report`` show :func:`provenance_label`.

The record (JSON Schema ``$defs/provenance`` of ``export_mobile/schemas/manifest.schema.json`` and
``results.schema.json``, kept identical by ``tests/test_provenance.py``)::

    {"method": "ptq" | "qat" | "target",          # "target": the export target's own quantizer
     "recipe": "xnnpack" | "coreml" | "tflite",   # quantize/recipes (the target's name for "target")
     "mixed": "first-last" | "none" | "first,last,NAME",   # layers kept in float (--mixed)
     "calibration": {"data": "urban100", "images": 32, "degradation": "gaussian:15-50"}
                    or {"data": "urban100+bundled", "batches": 8, ...} or None,   # what set the ranges
     "steps": 2000 | None,                        # QAT iterations (None for PTQ)
     "options": {...},                            # QAT: ranges, learnable_scales, distill_from_float, lr, ...
     "source": "config qat_..., run runs/..." | None,
     "note": "..."}                               # optional: how the record was established

Standard library only (``zoo report`` and ``zoo info`` read it without torch).
"""

from __future__ import annotations

from zoo.errors import ZooError

__all__ = ["UNKNOWN", "METHODS", "make_provenance", "calibration_record", "provenance_label", "recorded_provenance"]

#: What an int8 row whose artifact carries no provenance says.
UNKNOWN = "unknown (measured before provenance was recorded)"
#: Quantization methods: post-training quantization, quantization-aware training, the target's own quantizer.
METHODS = ("ptq", "qat", "target")
#: Note of a record rebuilt from the fields a sidecar or manifest of an older zoo holds.
DERIVED_NOTE = "derived from the settings an older zoo recorded"


def calibration_record(data: str, count: int | None, *, unit: str = "images",
                       degradation: str | None = None) -> dict:
    """The ``calibration`` entry: ``data`` (``"urban100"``, ``"urban100+bundled"``, a folder),
    ``count`` of ``unit`` (``images``: crops, one per image; ``batches``: training batches) and the
    ``degradation`` spec of the inputs. Raises :class:`ZooError` for another unit or a count below 1."""
    if unit not in ("images", "batches"):
        raise ZooError(f"calibration unit must be images or batches, got {unit!r}", "pass unit='images' or 'batches'")
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
        raise ZooError(f"calibration count must be a positive integer, got {count!r}", "count the crops or batches seen")
    return {"data": str(data), unit: count, "degradation": degradation}


def make_provenance(method: str, recipe: str | None, *, mixed: str | None, calibration: dict | None = None,
                    steps: int | None = None, options: dict | None = None, source: str | None = None,
                    note: str | None = None) -> dict:
    """The provenance record of one quantized model (see the module docstring for the fields).

    ``mixed``: the ``--mixed`` text (``first-last``, ``none``, names; None = not recorded);
    ``calibration``: :func:`calibration_record` or None; ``steps``: QAT iterations (None for PTQ);
    ``options``: JSON-ready recipe options that change the result. Raises :class:`ZooError` for an
    unknown method or a negative step count.
    """
    if method not in METHODS:
        raise ZooError(f"unknown quantization method {method!r} in a provenance record", f"use one of {', '.join(METHODS)}")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 0):
        raise ZooError(f"QAT steps must be a non-negative integer, got {steps!r}", "record the iterations QAT ran")
    record = {"method": method, "recipe": recipe, "mixed": mixed, "calibration": calibration, "steps": steps,
              "options": dict(options or {}), "source": source}
    if note:
        record["note"] = note
    return record


def _mixed_text(mixed: str | None) -> str | None:
    if mixed is None:
        return None
    if mixed == "none":
        return "all int8"
    return f"{mixed} float"


def _calibration_text(calibration: dict | None) -> str | None:
    """``"ranges from 32 crops of urban100 (gaussian:15-50)"`` / ``"... 8 batches of urban100+bundled"``."""
    if not calibration:
        return None
    unit = "batches" if "batches" in calibration else "crops"
    count = calibration.get("batches" if unit == "batches" else "images")
    text = f"ranges from {f'{count} ' if count else ''}{unit} of {calibration['data']}"
    return text + (f" ({calibration['degradation']})" if calibration.get("degradation") else "")


def provenance_label(record) -> str:
    """One line saying how an int8 model was made, e.g. ``"QAT xnnpack, first-last float, LSQ scales,
    2000 steps, distilled from float; ranges from 8 batches of urban100+bundled (gaussian:15-50)"``.

    ``record``: a provenance record, a label already written as text (a card row), or None
    (:data:`UNKNOWN`).
    """
    if not record:
        return UNKNOWN
    if isinstance(record, str):
        return record
    method = record.get("method")
    if method == "target":
        head = f"quantized by the {record.get('recipe') or 'export'} target itself"
    else:
        head = f"{str(method).upper()} {record.get('recipe') or 'recipe not recorded'}"
    parts = [head]
    mixed = _mixed_text(record.get("mixed"))
    if mixed:
        parts.append(mixed)
    options = record.get("options") or {}
    if method == "qat":
        if "learnable_scales" in options:  # trained (LSQ) or fixed by the observers / PTQ ranges
            parts.append("LSQ scales" if options["learnable_scales"] else "fixed scales")
        if options.get("ranges") == "minmax":
            parts.append("min/max ranges")
        parts.append(f"{record['steps']} steps" if record.get("steps") is not None else "steps not recorded")
        if options.get("distill_from_float"):
            parts.append("distilled from float")
        if options.get("teacher"):
            parts.append("teacher distillation")
        if options.get("reestimate_ranges"):
            parts.append("ranges re-estimated")
    label = ", ".join(parts)
    calibration = _calibration_text(record.get("calibration"))
    if calibration:
        label += f"; {calibration}"
    if record.get("note"):
        label += f" [{record['note']}]"
    return label


def _legacy_mixed(entry: dict) -> str | None:
    """The ``--mixed`` text an older sidecar or manifest recorded (None when it did not)."""
    for value in (entry.get("mixed_flag"), (entry.get("calibration") or {}).get("mixed_precision")):
        if isinstance(value, str):
            return value
    requested = (entry.get("mixed_precision") or {}).get("requested")
    if isinstance(requested, dict):
        names = [{"@first": "first", "@last": "last"}.get(name, name) for name in requested.get("float_modules") or []]
        return "first-last" if names == ["first", "last"] else (",".join(names) or "none")
    return None


def recorded_provenance(entry: dict | None) -> dict | None:
    """The provenance record of a quantized model's sidecar or of a manifest's ``quantization`` entry.

    Files written since the record exists hold it (``"provenance"``); for an older file the record
    is rebuilt from the settings it recorded (method, recipe, mixed precision, calibration, QAT
    settings), with the note :data:`DERIVED_NOTE`; what it did not record stays None. None when
    ``entry`` is None or records no PTQ/QAT/target method.
    """
    if not isinstance(entry, dict):
        return None
    if entry.get("provenance"):
        return dict(entry["provenance"])
    method = entry.get("method")
    if method not in METHODS:
        return None
    calibration = entry.get("calibration") if isinstance(entry.get("calibration"), dict) else None
    if calibration and calibration.get("source"):
        count = calibration.get("count") if isinstance(calibration.get("count"), int) and calibration["count"] > 0 else None
        by_batches = "batches" in str(calibration["source"])  # the engine's "training batches of the run"
        calibration = calibration_record("the run's training data" if by_batches else calibration["source"], count,
                                         unit="batches" if by_batches else "images",
                                         degradation=calibration.get("degradation"))
    else:
        calibration = None
    qat = entry.get("qat") if isinstance(entry.get("qat"), dict) else {}
    steps, options = None, {}
    if qat:  # the training engine's QAT phase
        if isinstance(qat.get("iterations"), int):
            steps = max(0, qat["iterations"] - int(qat.get("start") or 0))
        options = {key: qat[key] for key in ("ranges", "learnable_scales", "distill_from_float", "freeze_observers",
                                             "lr", "ema") if key in qat}
        options["reestimate_ranges"] = bool(qat.get("reestimated_ranges"))
    elif isinstance(entry.get("qat_steps"), int):  # quantize.qat.quantize_qat
        steps = entry["qat_steps"]
        options = {"lr": entry.get("qat_lr"), "batch": entry.get("qat_batch"), "loss": entry.get("qat_loss"),
                   "ranges": "ptq" if str(entry.get("qat_activation_ranges", "")).startswith("PTQ") else "minmax"}
    return make_provenance(method, entry.get("recipe") or entry.get("backend"), mixed=_legacy_mixed(entry),
                           calibration=calibration, steps=steps, options=options,
                           source=f"config {qat['config']}" if qat.get("config") else None, note=DERIVED_NOTE)
