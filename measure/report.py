"""``zoo report RESULTS... -o DIR``: one Markdown and one self-contained HTML report from results
files (baselines, desktop checks and benches, device runs).

The report (``DIR/report.md``, ``DIR/report.html``) has, in order:

- **Best artifact per host**: for each model, host and input size, the fastest artifact whose
  PSNR drop versus the float model is at most ``--max-drop`` dB (0.3 by default);
- **Accuracy**: PSNR/SSIM per artifact and evaluation set, drop versus the float baseline and PSNR
  of the artifact's output versus the float output (dB), best first;
- **Latency**: median and p90 wall time (ms, per forward pass, tile or image as measured),
  megapixels/s, GMAC/s and speedup versus the float baseline on the same host and input, fastest first;
- **Device runs**: the demo apps' runs, with how many output hashes equal the desktop's;
- **Operator profiles**: the slowest operators of records that carry an ExecuTorch profile;
- plots (HTML only, inline SVG): drop per artifact, latency per host and runtime, drop versus latency.

The best-artifact, accuracy, latency and device tables end with a ``quantization`` column: how each
int8 artifact was made (:func:`quantize.provenance.provenance_label`; "unknown (measured before
provenance was recorded)" when no record of it carries ``artifact.quantization``). Phone rows take it
like desktop rows: from any record of the same artifact, the phone's own included (the demo apps copy
the manifest's ``quantization.provenance`` into their results).

The HTML file has inline CSS and SVG and no external reference: it opens offline and can be mailed.
Numbers are shown rounded (dB 2 decimals, SSIM 4, ms 2, MP/s 2, GMAC/s 1, share in % with 1).
``--update-cards`` also writes the measured rows into ``zoo/cards/<model>.yaml``
(:func:`measure.measured.update_cards`). See docs/report.md.
"""

from __future__ import annotations

import argparse
import html
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from measure.measured import (DIGITS, Loaded, artifact_key, artifact_label, artifact_quantization, baseline_latency,
                              best_accuracy, drop_db, drop_tiling, fmt, input_text, is_simulation, latency_key,
                              load_results, quantization_label, runtime_label, update_cards)
from measure.results import finite_or_none
from zoo.errors import ZooError

__all__ = ["Table", "Section", "Report", "build_report", "render_markdown", "render_html", "write_report", "main"]

#: Default tolerance for "best artifact": PSNR drop versus the float model, dB.
DEFAULT_MAX_DROP = 0.3
#: Operators listed per profile.
DEFAULT_TOP_OPS = 10
_PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")


@dataclass
class Table:
    """A table as displayed: ``rows`` hold the display strings (already rounded)."""

    id: str
    columns: list[str]
    rows: list[list[str]]
    caption: str = ""


@dataclass
class Section:
    """A report section: a heading, paragraphs, tables and (HTML only) SVG plots."""

    id: str
    title: str
    text: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    plots: list[tuple[str, str]] = field(default_factory=list)  # (caption, svg markup)


@dataclass
class Report:
    title: str
    sections: list[Section]
    sources: list[Path]


# --------------------------------------------------------------------------------------------
# Numbers
# --------------------------------------------------------------------------------------------


def _megapixels_per_s(record: dict) -> float | None:
    """The record's megapixels/s, else batch x height x width / median for a forward or tile latency."""
    given = (record.get("throughput") or {}).get("megapixels_per_s")
    if given is not None:
        return given
    size, latency = record.get("input"), record["latency_ms"]
    if not size or (latency.get("per") or "forward") == "image" or latency["median"] <= 0:
        return None
    return (size.get("batch") or 1) * size["height"] * size["width"] / 1e6 / (latency["median"] / 1e3)


def _speedup(record: dict, loaded: Sequence[Loaded]) -> float | None:
    base = baseline_latency(record, loaded)
    median = finite_or_none(record["latency_ms"]["median"])
    return base / median if base is not None and median and median > 0 else None


def _precision(record: dict) -> str:
    return record["runtime"].get("precision") or artifact_key(record)[1]


def _sha(record: dict) -> str:
    return artifact_key(record)[2] or "—"


def _artifact_drop(record: dict, accuracy: dict, loaded: Sequence[Loaded]) -> float | None:
    """PSNR drop (dB) of the artifact ``record`` ran, from its best accuracy record (matched by sha256)."""
    measured = accuracy.get((record["model"], artifact_key(record)))
    return drop_db(measured, loaded) if measured else None


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------

#: What the tables' ``quantization`` column says.
_QUANTIZATION_TEXT = ("Quantization = how an int8 artifact was made (PTQ or QAT, recipe, layers kept in float, "
                      "steps, what set its ranges), from any record of that artifact; `unknown` for files measured "
                      "before the zoo recorded it, `—` for float artifacts.")


def _table_section(section: Section, table: Table, text: str, empty: str) -> Section:
    """``section`` with ``text`` and ``table``, or only ``empty`` when the table has no row."""
    section.text.append(text if table.rows else empty)
    if table.rows:
        section.tables.append(table)
    return section


def _evaluation_text(record: dict | None, loaded: Sequence[Loaded]) -> str:
    """``"bsd68, 68 images, tile 256, overlap 32"``: what an accuracy record's drop was measured on."""
    if not record:
        return "—"
    accuracy = record["accuracy"]
    return ", ".join(filter(None, [accuracy["dataset"], f"{accuracy['images']} images", drop_tiling(record, loaded)]))


def _summary(loaded: Sequence[Loaded], timed: list[dict], accuracy: dict, provenances: dict,
             max_drop: float) -> Section:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for record in timed:
        # A .pt2 run in PyTorch simulates a recipe's numerics: its latency is no app's, so it is no candidate.
        if record["kind"] != "baseline" and not is_simulation(record):
            groups[latency_key(record)].append(record)
    rows = []
    for key in sorted(groups):
        candidates = sorted(groups[key], key=lambda r: r["latency_ms"]["median"])
        drops = {id(r): _artifact_drop(r, accuracy, loaded) for r in candidates}
        within = [r for r in candidates if drops[id(r)] is not None and drops[id(r)] <= max_drop]
        if within:
            best, why = within[0], f"fastest within {max_drop:g} dB"
        elif any(drops[id(r)] is not None for r in candidates):
            best, why = candidates[0], f"no artifact within {max_drop:g} dB; fastest shown"
        else:
            best, why = candidates[0], "fastest; accuracy not measured"
        speedup = _speedup(best, loaded)
        model, host, size, per = key
        measured = accuracy.get((best["model"], artifact_key(best)))
        rows.append([model, host, size, per, artifact_label(best, sha=False), _sha(best), runtime_label(best),
                     fmt(best["latency_ms"]["median"], DIGITS["ms"]), fmt(drops[id(best)], DIGITS["db"]),
                     _evaluation_text(measured, loaded), fmt(speedup, 2, "x"), why,
                     quantization_label(best, provenances)])
    text = (f"For each model, host and input size: the fastest artifact whose PSNR drop versus the float model "
            f"is at most {max_drop:g} dB (its accuracy measured anywhere, matched by sha256; of several "
            "evaluations the one with the most images counts, `drop measured on` says which). Quantized PT2E "
            "models (.pt2, target `pt2e-<recipe>`) checked in PyTorch are not candidates: they simulate a recipe's "
            "int8 numerics, and their latency is not an app's. " + _QUANTIZATION_TEXT)
    return _table_section(
        Section("best", "Best artifact per host"),
        Table("summary", ["model", "host", "input", "per", "best artifact", "sha256", "runtime", "median ms",
                          "drop dB", "drop measured on", "speedup", "why", "quantization"], rows),
        text, text + " No latency measured yet (run `zoo bench`, `zoo check` or a device benchmark).")


def _worst_last(psnr) -> float:
    """Sort key of a PSNR, best first; a non-finite PSNR is never ranked above a real one."""
    value = finite_or_none(psnr)
    return math.inf if value is None else -value


def _accuracy_section(loaded: Sequence[Loaded], provenances: dict, max_drop: float) -> Section:
    records = [item for item in loaded if item.record.get("accuracy")]
    rows = []
    bars = []
    for item in sorted(records, key=lambda i: (i.record["model"], i.record["accuracy"]["dataset"],
                                                i.record["accuracy"]["degradation"], _worst_last(i.record["accuracy"]["psnr"]))):
        record, measured = item.record, item.record["accuracy"]
        drop = drop_db(record, loaded)
        rows.append([record["model"], artifact_label(record, sha=False), _sha(record), measured["dataset"],
                     measured["degradation"], str(measured["images"]), drop_tiling(record, loaded) or "—",
                     fmt(finite_or_none(measured["psnr"]), DIGITS["db"]),
                     fmt(measured.get("ssim"), DIGITS["ssim"]), fmt(drop, DIGITS["db"]),
                     fmt(measured.get("psnr_vs_reference"), DIGITS["db"]), record["host"]["name"], record["kind"],
                     quantization_label(record, provenances)])
        if drop is not None and record["kind"] != "baseline":
            bars.append((f"{record['model']} {artifact_label(record)} ({measured['dataset']})", drop,
                         record["model"]))
    section = _table_section(
        Section("accuracy", "Accuracy"),
        Table("accuracy-table", ["model", "artifact", "sha256", "dataset", "degradation", "images", "tiling",
                                 "PSNR dB", "SSIM", "drop dB", "PSNR vs float dB", "host", "kind", "quantization"],
              rows),
        "PSNR/SSIM of the restored images (dB; RGB unless the record says Y), drop = float baseline PSNR minus this "
        "PSNR (dB, lower is better), PSNR vs float = agreement of this output with the float PyTorch output (dB, "
        "higher is closer). Tiling = how the images were restored; `(float: ...)` when the float reference was "
        "restored otherwise, so that the drop includes the tiling and not only the artifact's numerics. Best first "
        "per evaluation set. " + _QUANTIZATION_TEXT,
        "No accuracy measured yet (run `zoo baseline` and `zoo check`).")
    if bars:
        bars.sort(key=lambda bar: bar[1])
        section.plots.append((f"PSNR drop versus the float model (dB, lower is better; line: {max_drop:g} dB)",
                              svg_bars(bars, unit="dB", reference=max_drop)))
    return section


def _latency_section(loaded: Sequence[Loaded], timed: list[dict], accuracy: dict, provenances: dict) -> Section:
    rows, bars = [], []
    for record in sorted(timed, key=lambda r: (latency_key(r), r["latency_ms"]["median"])):
        latency = record["latency_ms"]
        threads = record["runtime"].get("threads")
        rows.append([record["model"], record["host"]["name"], input_text(record), latency.get("per") or "forward",
                     artifact_label(record, sha=False), _sha(record), runtime_label(record), _precision(record),
                     str(threads) if threads else "—", fmt(latency["median"], DIGITS["ms"]),
                     fmt(latency.get("p90"), DIGITS["ms"]), fmt(_megapixels_per_s(record), 2),
                     fmt((record.get("throughput") or {}).get("gmacs_per_s"), 1), fmt(_speedup(record, loaded), 2, "x"),
                     fmt(_artifact_drop(record, accuracy, loaded), DIGITS["db"]), record["kind"],
                     quantization_label(record, provenances)])
        bars.append((f"{record['host']['name']} | {runtime_label(record)} | {artifact_label(record)} | "
                     f"{input_text(record)}/{latency.get('per') or 'forward'}", latency["median"], record["host"]["name"]))
    section = _table_section(
        Section("latency", "Latency"),
        Table("latency-table", ["model", "host", "input", "per", "artifact", "sha256", "runtime", "precision",
                                "threads", "median ms", "p90 ms", "MP/s", "GMAC/s", "speedup", "drop dB", "kind",
                                "quantization"], rows),
        "Wall time of one forward pass, tile or image (column `per`) at the input size shown (for `per image`: "
        "the evaluation set's whole images, cut into the tile shown), milliseconds; "
        "speedup = the float baseline's median on the same host and input divided by this median; drop dB = the "
        "artifact's accuracy drop measured anywhere (matched by sha256). Fastest first per host and input.",
        "No latency measured yet (run `zoo bench`).")
    if rows:
        section.plots.append(("Median latency per host and runtime (ms, shorter is faster; colour = host)",
                              svg_bars(bars, unit="ms")))
    return section


def _scatter_section(loaded: Sequence[Loaded], timed: list[dict], accuracy: dict) -> Section | None:
    points = []
    for record in timed:
        drop = _artifact_drop(record, accuracy, loaded)
        if drop is not None:
            points.append((record["latency_ms"]["median"], drop,
                           f"{artifact_label(record)} {input_text(record)}", record["host"]["name"]))
    if not points:
        return None
    section = Section("tradeoff", "Accuracy versus latency")
    section.text.append("Each point is one latency measurement of an artifact whose accuracy is known; lower left "
                        "is better (faster, closer to the float model). Colour = host.")
    section.plots.append(("PSNR drop (dB) versus median latency (ms)",
                          svg_scatter(points, x_label="median latency, ms", y_label="PSNR drop, dB")))
    return section


def _device_section(loaded: Sequence[Loaded], provenances: dict) -> Section:
    desktop_hashes: dict[tuple[str, str], set[str]] = defaultdict(set)
    for item in loaded:
        if item.record["kind"] != "device":
            for image in item.record.get("images") or []:
                if image.get("output_sha256"):
                    desktop_hashes[(_sha(item.record), image["name"])].add(image["output_sha256"])
    rows = []
    for item in sorted((i for i in loaded if i.record["kind"] == "device"),
                       key=lambda i: (i.record["model"], i.record["host"]["name"],
                                      i.record.get("latency_ms", {}).get("median", math.inf))):
        record, host = item.record, item.record["host"]
        images = record.get("images") or []
        timed = [image["latency_ms"] for image in images if image.get("latency_ms") is not None]
        compared = [image for image in images if image.get("output_sha256")
                    and desktop_hashes.get((_sha(record), image["name"]))]
        same = sum(image["output_sha256"] in desktop_hashes[(_sha(record), image["name"])] for image in compared)
        latency = record.get("latency_ms") or {}
        rows.append([host["name"], " ".join(filter(None, [host.get("os"), host.get("os_version")])) or "—",
                     host.get("soc") or "—", record["model"], artifact_label(record, sha=False), _sha(record),
                     runtime_label(record), input_text(record), latency.get("per") or "—",
                     fmt(latency.get("median"), DIGITS["ms"]), fmt(latency.get("p90"), DIGITS["ms"]), str(len(images)),
                     fmt(sum(timed) / len(timed) if timed else None, DIGITS["ms"]),
                     f"{same}/{len(compared)}" if compared else "—", (record.get("created") or "")[:10] or "—",
                     item.source.name, quantization_label(record, provenances)])
    return _table_section(
        Section("devices", "Device runs"),
        Table("device-table", ["device", "OS", "SoC", "model", "artifact", "sha256", "runtime", "input", "per",
                               "median ms", "p90 ms", "images", "mean image ms", "identical outputs", "date", "file",
                               "quantization"],
              rows),
        "Runs of the demo apps' benchmark mode. `identical outputs` = images whose 8-bit output hash equals a "
        "desktop run of the same artifact (a different CPU or delegate may round differently, so fewer is not by "
        "itself an error). " + _QUANTIZATION_TEXT,
        "No device run yet (`zoo device android ARTIFACT`, or `zoo device import FILE` for a file from an iPhone "
        "or another device).")


def _operator_section(loaded: Sequence[Loaded], top: int) -> Section:
    section = Section("operators", "Operator profiles")
    profiled = [item.record for item in loaded if item.record.get("operators")]
    if not profiled:
        section.text.append("No record carries an operator profile (ExecuTorch ETDump: "
                            "`python -m measure.profile EXPORT_DIR --json FILE`, or a demo app built with ETDump).")
        return section
    section.text.append("Slowest operators first; total ms = time per forward pass summed over the operator's "
                        "calls; share = of the whole forward pass.")
    for index, record in enumerate(sorted(profiled, key=lambda r: (r["model"], r["host"]["name"]))):
        operators = sorted(record["operators"], key=lambda op: -op["total_ms"])[:top]
        rows = [[str(rank), op["name"], str(op["calls"]) if op.get("calls") is not None else "—",
                 fmt(op["total_ms"], 3), fmt(op["share"] * 100 if op.get("share") is not None else None, 1, " %"),
                 {True: "yes", False: "no"}.get(op.get("delegated"), "—")] for rank, op in enumerate(operators, 1)]
        caption = f"{record['model']} {artifact_label(record)} on {record['host']['name']} ({runtime_label(record)})"
        slowest = ", ".join(f"{op['name']} ({fmt(op['total_ms'], 3)} ms)" for op in operators[:3])
        section.tables.append(Table(f"operators-{index}", ["rank", "operator", "calls", "total ms", "share",
                                                           "delegated"], rows, caption=f"{caption}; slowest: {slowest}"))
    return section


def build_report(loaded: Sequence[Loaded], *, max_drop: float = DEFAULT_MAX_DROP, top_ops: int = DEFAULT_TOP_OPS,
                 title: str = "zoo report") -> Report:
    """The report's sections from ``loaded`` records (see the module docstring)."""
    if not loaded:
        raise ZooError("no results records to report", "pass files written by zoo baseline/check/bench or a demo app")
    timed = [item.record for item in loaded if item.record.get("latency_ms")
             and finite_or_none(item.record["latency_ms"]["median"]) is not None]  # a NaN is never ranked
    accuracy = best_accuracy(loaded)
    provenances = artifact_quantization(loaded)  # how each int8 artifact was made
    latency = _latency_section(loaded, timed, accuracy, provenances)
    unranked = sum(1 for item in loaded if item.record.get("latency_ms")) - len(timed)
    if unranked:
        latency.text.append(f"{unranked} record(s) with a non-finite median latency left out.")
    sections = [_summary(loaded, timed, accuracy, provenances, max_drop),
                _accuracy_section(loaded, provenances, max_drop), latency]
    scatter = _scatter_section(loaded, timed, accuracy)
    if scatter:
        sections.append(scatter)
    sections += [_device_section(loaded, provenances), _operator_section(loaded, top_ops)]
    sources = sorted({item.source for item in loaded})
    return Report(title, sections, sources)


# --------------------------------------------------------------------------------------------
# SVG plots (drawn here: no plotting dependency, no external reference)
# --------------------------------------------------------------------------------------------


def _colours(groups: Sequence[str]) -> dict[str, str]:
    """One colour per group, assigned in sorted order so that a host has the same colour in every plot."""
    return {name: _PALETTE[i % len(_PALETTE)] for i, name in enumerate(sorted(set(groups)))}


def _nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values covering [low, high]."""
    if high <= low:
        high = low + 1.0
    step = 10 ** math.floor(math.log10((high - low) / count))
    for factor in (1, 2, 5, 10):
        if (high - low) / (step * factor) <= count:
            step *= factor
            break
    first = math.floor(low / step) * step
    return [first + i * step for i in range(int(math.ceil((high - first) / step)) + 1)]


def _legend(colours: dict[str, str], x: float, y: float) -> list[str]:
    parts = []
    for i, (name, colour) in enumerate(colours.items()):
        parts.append(f'<rect x="{x:.1f}" y="{y + i * 16 - 9:.1f}" width="10" height="10" fill="{colour}"/>'
                     f'<text x="{x + 14:.1f}" y="{y + i * 16:.1f}">{html.escape(name)}</text>')
    return parts


def _text_width(text: str) -> float:
    """Rough width of ``text`` at the plots' 11 px sans-serif font, pixels."""
    return 6.3 * len(text)


def svg_bars(items: Sequence[tuple[str, float, str]], *, unit: str, reference: float | None = None) -> str:
    """A horizontal bar chart: ``items`` = (label, value, colour group), drawn in the given order;
    ``reference`` draws a dashed vertical line (e.g. the drop tolerance). Negative values go left of 0.
    A legend of the colour groups is added when there are several."""
    plot_width, bar, gap, top = 360, 16, 6, 24
    label_width = min(700, max(120, max(_text_width(label) for label, _v, _g in items) + 12))
    values = [value for _label, value, _group in items] + ([reference] if reference is not None else [])
    ticks = _nice_ticks(min(0.0, *values), max(0.0, *values))
    low, high = ticks[0], ticks[-1]
    scale = plot_width / (high - low)
    colours = _colours([group for _label, _value, group in items])
    legend_width = max(_text_width(name) for name in colours) + 40 if len(colours) > 1 else 0
    width = label_width + plot_width + 60 + legend_width
    height = max(top + len(items) * (bar + gap) + 30, top + 16 * len(colours) + 10 if legend_width else 0)
    bottom = top + len(items) * (bar + gap)

    def x_of(value):
        return label_width + (value - low) * scale

    parts = [f'<svg class="plot" role="img" width="{width:.0f}" height="{height}" viewBox="0 0 {width:.0f} {height}">']
    for tick in ticks:
        parts.append(f'<line x1="{x_of(tick):.1f}" y1="{top - 4}" x2="{x_of(tick):.1f}" y2="{bottom}" '
                     f'class="grid"/><text x="{x_of(tick):.1f}" y="{bottom + 16}" text-anchor="middle">{tick:g}</text>')
    for i, (label, value, group) in enumerate(items):
        y = top + i * (bar + gap)
        x0, x1 = sorted((x_of(0.0), x_of(value)))
        parts.append(f'<text x="{label_width - 6:.1f}" y="{y + bar - 4}" text-anchor="end">{html.escape(label)}</text>'
                     f'<rect x="{x0:.1f}" y="{y}" width="{max(x1 - x0, 1):.1f}" height="{bar}" fill="{colours[group]}">'
                     f'<title>{html.escape(label)}: {fmt(value, 2)} {unit}</title></rect>'
                     f'<text x="{x1 + 4:.1f}" y="{y + bar - 4}">{fmt(value, 2)}</text>')
    if reference is not None:
        parts.append(f'<line x1="{x_of(reference):.1f}" y1="{top - 8}" x2="{x_of(reference):.1f}" '
                     f'y2="{bottom}" class="reference"/>')
    parts.append(f'<text x="{label_width + plot_width + 30:.1f}" y="{bottom + 16}" text-anchor="end">{unit}</text>')
    if legend_width:
        parts += _legend(colours, label_width + plot_width + 50, top + 8)
    parts.append("</svg>")
    return "".join(parts)


def svg_scatter(points: Sequence[tuple[float, float, str, str]], *, x_label: str, y_label: str) -> str:
    """A scatter plot of (x, y, label, colour group) points; x on a log scale when it spans over 20x.
    Points are numbered; the numbered labels are listed below the plot (labels beside the points overlap)."""
    width, plot_h, left, top = 720, 330, 70, 20
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    log_x = min(xs) > 0 and max(xs) / min(xs) > 20
    fx = (lambda v: math.log10(v)) if log_x else (lambda v: v)
    x_ticks = ([10 ** e for e in range(math.floor(fx(min(xs))), math.ceil(fx(max(xs))) + 1)] if log_x
               else _nice_ticks(0.0, max(xs)))
    y_ticks = _nice_ticks(min(0.0, *ys), max(*ys, 0.1))
    x_low, x_high = fx(x_ticks[0]), fx(x_ticks[-1])
    colours = _colours([p[3] for p in points])
    plot_w = width - left - max(_text_width(name) for name in colours) - 50
    key_top = top + plot_h + 56
    height = key_top + 16 * len(points) + 4

    def px(value):
        return left + (fx(value) - x_low) / ((x_high - x_low) or 1.0) * plot_w

    def py(value):
        return top + plot_h - (value - y_ticks[0]) / ((y_ticks[-1] - y_ticks[0]) or 1.0) * plot_h

    parts = [f'<svg class="plot" role="img" width="{width}" height="{height}" viewBox="0 0 {width} {height}">']
    for tick in x_ticks:
        parts.append(f'<line x1="{px(tick):.1f}" y1="{top}" x2="{px(tick):.1f}" y2="{top + plot_h}" class="grid"/>'
                     f'<text x="{px(tick):.1f}" y="{top + plot_h + 16}" text-anchor="middle">{tick:g}</text>')
    for tick in y_ticks:
        parts.append(f'<line x1="{left}" y1="{py(tick):.1f}" x2="{left + plot_w:.1f}" y2="{py(tick):.1f}" '
                     f'class="grid"/><text x="{left - 6}" y="{py(tick) + 4:.1f}" text-anchor="end">{tick:g}</text>')
    for number, (x, y, label, group) in enumerate(points, 1):
        description = f"{number}: {label} on {group}: {fmt(x, 2)} ms, {fmt(y, 2)} dB"
        parts.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="5" fill="{colours[group]}">'
                     f'<title>{html.escape(description)}</title></circle>'
                     f'<text x="{px(x) + 7:.1f}" y="{py(y) - 5:.1f}" class="small">{number}</text>'
                     f'<text x="{left}" y="{key_top + 16 * (number - 1)}" class="small">{html.escape(description)}</text>')
    parts.append(f'<text x="{left + plot_w / 2:.1f}" y="{top + plot_h + 36}" text-anchor="middle">'
                 f'{html.escape(x_label)}{" (log scale)" if log_x else ""}</text>'
                 f'<text x="14" y="{top + plot_h / 2:.1f}" text-anchor="middle" '
                 f'transform="rotate(-90 14 {top + plot_h / 2:.1f})">{html.escape(y_label)}</text>')
    parts += _legend(colours, left + plot_w + 16, top + 12)
    parts.append("</svg>")
    return "".join(parts)


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


def _md_cell(text: str) -> str:
    return html.escape(str(text), quote=False).replace("|", "\\|").replace("\n", " ")


def render_markdown(report: Report) -> str:
    """The report as Markdown (tables only; the plots are in the HTML file)."""
    lines = [f"# {_md_cell(report.title)}", "", "Plots: see report.html beside this file.", ""]
    for section in report.sections:
        lines += [f"## {section.title}", ""]
        for paragraph in section.text:
            lines += [_md_cell(paragraph), ""]
        for table in section.tables:
            if table.caption:
                lines += [f"**{_md_cell(table.caption)}**", ""]
            lines.append("| " + " | ".join(map(_md_cell, table.columns)) + " |")
            lines.append("|" + "---|" * len(table.columns))
            lines += ["| " + " | ".join(map(_md_cell, row)) + " |" for row in table.rows]
            lines.append("")
    lines += ["## Sources", ""] + [f"- {_md_cell(str(path))}" for path in report.sources] + [""]
    return "\n".join(lines)


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1400px;
       color: #222; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.8em 0 1.5em; font-size: 0.86em; }
caption { caption-side: top; text-align: left; font-weight: 600; padding-bottom: 0.3em; }
th, td { border: 1px solid #d0d0d0; padding: 3px 7px; }
th { background: #f0f0f0; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1em 0 2em; } figcaption { font-size: 0.9em; color: #444; margin-bottom: 0.3em; }
svg.plot text { font-size: 11px; fill: #222; } svg.plot text.small { font-size: 10px; }
svg.plot line.grid { stroke: #e4e4e4; } svg.plot line.reference { stroke: #b00; stroke-dasharray: 5 3; }
"""


def _is_number(text: str) -> bool:
    try:
        float(text.rstrip("x %"))
    except ValueError:
        return False
    return True


def render_html(report: Report) -> str:
    """The report as one self-contained HTML page (inline CSS and SVG, every text escaped)."""
    esc = html.escape
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', f"<title>{esc(report.title)}</title>",
           f"<style>{_CSS}</style></head><body>", f"<h1>{esc(report.title)}</h1>"]
    for section in report.sections:
        out.append(f'<section id="{esc(section.id)}"><h2>{esc(section.title)}</h2>')
        out += [f"<p>{esc(paragraph)}</p>" for paragraph in section.text]
        for table in section.tables:
            out.append(f'<table id="{esc(table.id)}">')
            if table.caption:
                out.append(f"<caption>{esc(table.caption)}</caption>")
            out.append("<thead><tr>" + "".join(f"<th>{esc(c)}</th>" for c in table.columns) + "</tr></thead><tbody>")
            for row in table.rows:
                out.append("<tr>" + "".join(f'<td class="num">{esc(cell)}</td>' if _is_number(cell)
                                            else f"<td>{esc(cell)}</td>" for cell in row) + "</tr>")
            out.append("</tbody></table>")
        for caption, svg in section.plots:
            out.append(f"<figure><figcaption>{esc(caption)}</figcaption>{svg}</figure>")
        out.append("</section>")
    out.append('<section id="sources"><h2>Sources</h2><ul>')
    out += [f"<li>{esc(str(path))}</li>" for path in report.sources]
    out.append("</ul></section></body></html>")
    return "\n".join(out) + "\n"


def write_report(report: Report, folder: str | Path) -> tuple[Path, Path]:
    """Write ``folder/report.md`` and ``folder/report.html`` atomically; returns both paths."""
    from zoo.atomic import atomic_path

    folder = Path(folder)
    paths = (folder / "report.md", folder / "report.html")
    for path, text in zip(paths, (render_markdown(report), render_html(report))):
        with atomic_path(path) as tmp:
            tmp.write_text(text, encoding="utf-8")
    return paths


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zoo report", description="Merge results files (baselines, checks, benches, device runs) into "
        "DIR/report.md and a self-contained DIR/report.html.")
    parser.add_argument("results", nargs="+", metavar="RESULTS", help="results files, or folders of *.json")
    parser.add_argument("-o", "--output", type=Path, default=Path("report"), help="output folder (default: report/)")
    parser.add_argument("--max-drop", type=float, default=DEFAULT_MAX_DROP,
                        help=f"PSNR drop (dB) an artifact may have to count as best (default {DEFAULT_MAX_DROP})")
    parser.add_argument("--top-ops", type=int, default=DEFAULT_TOP_OPS, help="operators listed per profile")
    parser.add_argument("--title", default="zoo report", help="report title")
    parser.add_argument("--update-cards", action="store_true",
                        help="also write the measured rows into zoo/cards/<model>.yaml (hand-written rows kept)")
    parser.add_argument("--cards", type=Path, default=None, help="card folder for --update-cards (default zoo/cards)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``zoo report``: returns the exit status (ZooError propagates to the zoo CLI, which prints it)."""
    from zoo.atomic import ensure_writable

    args = build_parser().parse_args(argv)
    if args.max_drop < 0 or args.top_ops < 1:
        raise ZooError("--max-drop must be >= 0 and --top-ops >= 1", "pass e.g. --max-drop 0.3 --top-ops 10")
    ensure_writable(args.output, "report folder", kind="folder", fix="pass another -o folder")
    loaded, skipped = load_results(args.results)
    report = build_report(loaded, max_drop=args.max_drop, top_ops=args.top_ops, title=args.title)
    markdown, page = write_report(report, args.output)
    for table in report.sections[0].tables:
        for row in table.rows:
            print(f"best on {row[1]} ({row[0]}, {row[2]} per {row[3]}): {row[4]} {row[5]}, {row[7]} ms, "
                  f"drop {row[8]} dB on {row[9]} ({row[11]})")
    if skipped:
        print(f"passed over {len(skipped)} JSON file(s) that are not results files")
    print(f"{len(loaded)} records from {len(report.sources)} file(s) -> {markdown} and {page}")
    if args.update_cards:
        for path in update_cards(loaded, args.cards):
            print(f"updated {path}")
    return 0
