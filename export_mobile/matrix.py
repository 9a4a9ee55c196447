"""``zoo export --matrix``: every model x target x precision that can be built, each artifact run
on a fixed input and compared with PyTorch, as one coverage table (printed and written as JSON).

A cell that cannot be built or run records why: the target is unavailable here (and what is
missing), an operator the backend rejects (the exception names it), operators left outside the
delegate (``op at module.path``), or the runtime missing on this OS (Core ML needs macOS). Each
cell is also judged against the issue's numeric targets (:func:`judge`).
"""

from __future__ import annotations

import json
import time
import traceback
from pathlib import Path
from typing import Iterable

from zoo.tables import format_cell
from zoo.errors import ZooError

__all__ = ["run_matrix", "format_table", "judge", "FP32_MAX_ABS_ERROR", "INT8_MIN_PSNR_DB"]

#: fp32 artifacts versus the PyTorch model: largest allowed absolute difference (images in [0, 1]).
FP32_MAX_ABS_ERROR = 1e-4
#: int8 artifacts versus the same PT2E model in PyTorch: smallest allowed PSNR of the difference.
INT8_MIN_PSNR_DB = 40.0


def judge(row: dict) -> str:
    """``ok``, ``FAIL: why`` or ``-`` (nothing to judge) for one matrix row."""
    if not row.get("built"):
        return "-"
    problems = []
    if row.get("ran"):
        if row.get("nonfinite"):
            problems.append("inf/NaN in output")
        elif row["precision"] == "fp32" and (row.get("max_abs_error") or 0.0) >= FP32_MAX_ABS_ERROR:
            problems.append(f"max abs error {row['max_abs_error']:.2e} >= {FP32_MAX_ABS_ERROR:g}")
        elif row["precision"] == "int8" and row.get("psnr_db") is not None and row["psnr_db"] <= INT8_MIN_PSNR_DB:
            problems.append(f"PSNR {row['psnr_db']:.1f} dB <= {INT8_MIN_PSNR_DB:g}")
    if row["precision"] == "fp16" and row.get("fp16_overflow"):
        problems.append("fp16 overflow in " + ", ".join(row["fp16_overflow"][:3]))
    # Cards with single_int8_partition (the lite models) must lower to ONE int8 XNNPACK
    # partition with nothing left outside.
    if (row.get("single_int8_partition") and row["target"] == "executorch-xnnpack" and row["precision"] == "int8"
            and (row.get("partitions") != 1 or row.get("ops_outside"))):
        problems.append(f"{row.get('partitions')} partitions, {len(row.get('ops_outside') or [])} ops outside")
    if row["precision"] == "fp16" and row.get("fp16_pytorch_finite") is False:
        problems.append("inf/NaN when the model runs in fp16 in PyTorch")
    if problems:
        return "FAIL: " + "; ".join(problems)
    return "ok" if row.get("ran") else "built"


def _failure_reason(err: BaseException) -> str:
    """One line: the error, and for a crash inside a toolchain the frame that raised it."""
    if isinstance(err, ZooError):
        return str(err)
    message = " ".join(str(err).split())[:400] or type(err).__name__
    frames = traceback.extract_tb(err.__traceback__)
    where = f" [{Path(frames[-1].filename).name}:{frames[-1].lineno} in {frames[-1].name}]" if frames else ""
    return f"{type(err).__name__}: {message}{where}"


def _cells(models, targets, precisions):
    from export_mobile.targets import get_target

    for model in models:
        for target_name in targets:
            target = get_target(target_name)
            offered = tuple(getattr(target, "precisions", ())) or tuple(precisions or ("fp32",))
            for precision in offered:
                if precisions and precision not in precisions:
                    continue
                yield model, target_name, target, precision


def run_matrix(models: Iterable[str] | None = None, targets: Iterable[str] | None = None,
               precisions: Iterable[str] | None = None, tile=64, out_dir: str | Path = "exports/matrix", *,
               calibration: str | Path = "auto", calibration_images: int = 8, data_root: str | Path | None = None,
               rewrite: bool = True, json_path: str | Path | None = None, resume: bool = False,
               echo=print) -> list[dict]:
    """Build, run and compare every (model, target, precision) cell; returns one dict per cell.

    ``models``: zoo model names (default: every model that is not a per-image optimisation);
    ``targets`` / ``precisions``: restrict the cells (default: all targets, each with the
    precisions it offers). Artifacts go to ``out_dir/MODEL/TARGET-PRECISION/``; the rows are
    written to ``json_path`` (default ``out_dir/matrix.json``) and the table is printed with
    ``echo`` (None for silence). Models without shipped weights are exported untrained (the
    numeric checks compare the artifact with the same untrained model, which is what they test).

    The JSON is rewritten (atomically) after every cell, with ``"complete": false`` until the last
    one, so an interrupted matrix keeps what it measured; ``resume=True`` reuses the rows of an
    earlier run at the same tile whose cells built (failed cells are tried again) and builds the rest.

    Row keys: model, variant, single_int8_partition, target, precision, tile, built, ran, max_abs_error, psnr_db,
    nonfinite, partitions, ops_outside, size_bytes, export_seconds, run_reason, error,
    fp16_overflow, fp16_max_activation, fp16_layer, fp16_pytorch_finite, weights, folder, check.
    """
    from export_mobile.api import export_model
    from export_mobile.targets import target_names
    from zoo.registry import get_card, list_models

    models = list(models) if models else [card.name for card in list_models() if not card.zero_shot]
    targets = list(targets) if targets else target_names()
    precisions = list(precisions) if precisions else None
    out_dir = Path(out_dir)
    json_path = Path(json_path) if json_path else out_dir / "matrix.json"
    earlier = _reusable_rows(json_path, tile) if resume else {}
    cache: dict = {}
    rows: list[dict] = []
    for model, target_name, target, precision in _cells(models, targets, precisions):
        card = get_card(model)
        if (model, target_name, precision) in earlier:
            # rows of matrices written before the card field existed lack it
            earlier[(model, target_name, precision)].setdefault("single_int8_partition", card.single_int8_partition)
            rows.append(earlier[(model, target_name, precision)])
            if echo is not None:
                echo(format_table([rows[-1]], header=len(rows) == 1) + "  (resumed)")
            continue
        row = {"model": model, "variant": card.variant, "single_int8_partition": card.single_int8_partition,
               "target": target_name, "precision": precision, "tile": str(tile), "built": False, "ran": False, "max_abs_error": None, "psnr_db": None,
               "nonfinite": None, "partitions": None, "ops_outside": [], "size_bytes": None,
               "export_seconds": None, "run_reason": None, "error": None, "fp16_overflow": [],
               "fp16_max_activation": None, "fp16_layer": None, "fp16_pytorch_finite": None, "weights": None,
               "folder": None}
        reason = target.available()
        if reason:
            row["error"] = f"target unavailable: {reason}"
        else:
            started = time.perf_counter()
            try:
                outcome = export_model(model, target_name, precision, tile, out_dir / model / f"{target_name}-{precision}",
                                       untrained=not card.has_weights, calibration=calibration,
                                       calibration_images=calibration_images,
                                       data_root=data_root, rewrite=rewrite, verify=True, cache=cache)
            except Exception as err:  # a failing cell is a result, not the end of the matrix
                row["error"] = _failure_reason(err)
                row["export_seconds"] = round(time.perf_counter() - started, 2)
            else:
                manifest = outcome.manifest
                verification = manifest.get("verification") or {}
                row.update({
                    "built": True, "ran": bool(verification.get("ran")),
                    "max_abs_error": verification.get("max_abs_error"), "psnr_db": verification.get("psnr_db"),
                    "nonfinite": verification.get("nonfinite"), "run_reason": verification.get("reason"),
                    "partitions": manifest["backend"]["partitions"],
                    "ops_outside": manifest["backend"]["ops_outside_delegate"],
                    "size_bytes": manifest["artifact"]["bytes"],
                    "export_seconds": round(outcome.timings.get("export_s", outcome.export_seconds), 2),
                    "fp16_overflow": (manifest.get("fp16_range") or {}).get("overflowing_layers", []),
                    "fp16_max_activation": (manifest.get("fp16_range") or {}).get("max_abs_activation"),
                    "fp16_layer": (manifest.get("fp16_range") or {}).get("layer"),
                    "fp16_pytorch_finite": (manifest.get("fp16_range") or {}).get("pytorch_half_finite"),
                    "weights": manifest["model"]["weights"]["source"], "folder": str(outcome.folder)})
        row["check"] = judge(row)
        rows.append(row)
        _write_rows(json_path, tile, rows, complete=False)
        if echo is not None:
            echo(format_table([row], header=len(rows) == 1))
    _write_rows(json_path, tile, rows, complete=True)
    if echo is not None:
        failures = [row for row in rows if row["error"] or row["check"].startswith("FAIL")]
        echo(f"\n{len(rows)} cells, {sum(r['built'] for r in rows)} built, {sum(r['ran'] for r in rows)} ran, "
             f"{len(failures)} failed or off target; rows in {json_path}")
        for row in rows:
            if row["error"] or row["run_reason"] or row["ops_outside"] or row["fp16_max_activation"] is not None:
                echo(format_reasons(row))
    return rows


def _write_rows(json_path: Path, tile, rows: list[dict], complete: bool) -> None:
    from zoo.atomic import write_json

    write_json(json_path, {"tile": str(tile), "complete": complete, "rows": rows,
                           "thresholds": {"fp32_max_abs_error": FP32_MAX_ABS_ERROR,
                                          "int8_min_psnr_db": INT8_MIN_PSNR_DB}})


def _reusable_rows(json_path: Path, tile) -> dict:
    """Rows of an earlier (possibly interrupted) matrix at the same tile whose cell was built and
    whose artifact folder is still there, keyed by (model, target, precision)."""
    if not json_path.is_file():
        return {}
    try:
        data = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ZooError(f"cannot resume from {json_path}: {err}",
                       "delete the file or choose another --json / -o to start afresh") from err
    if str(data.get("tile")) != str(tile):
        raise ZooError(f"{json_path} holds a matrix at tile {data.get('tile')}, not {tile}",
                       "resume with the same --tile or write to another -o")
    return {(row["model"], row["target"], row["precision"]): row for row in data.get("rows", [])
            if row.get("built") and row.get("folder") and Path(row["folder"]).is_dir()}


def format_table(rows: list[dict], header: bool = True) -> str:
    """The coverage table: one line per cell (reasons follow in :func:`format_reasons`)."""
    columns = f"{'model':<16} {'target':<19} {'prec':<5} {'tile':>5} {'built':<5} {'ran':<4} {'max|err|':>9} " \
              f"{'PSNR dB':>8} {'parts':>5} {'outside':>7} {'size MB':>8} {'export s':>8}  check"
    lines = [columns, "-" * len(columns)] if header else []
    for row in rows:
        psnr = "exact" if row.get("ran") and row.get("psnr_db") is None and row.get("max_abs_error") == 0 else \
            format_cell(row.get("psnr_db"), ".1f")
        size = format_cell(row["size_bytes"] / 1e6 if row.get("size_bytes") else None, ".2f")
        lines.append(
            f"{row['model'][:16]:<16} {row['target'][:19]:<19} {row['precision']:<5} {row['tile']:>5} "
            f"{'yes' if row['built'] else 'no':<5} {'yes' if row['ran'] else 'no':<4} "
            f"{format_cell(row.get('max_abs_error'), '.2e'):>9} {psnr:>8} {format_cell(row.get('partitions'), 'd'):>5} "
            f"{len(row.get('ops_outside') or []):>7} {size:>8} {format_cell(row.get('export_seconds'), '.1f'):>8}  "
            f"{row.get('check', judge(row))}")
    return "\n".join(lines)


def format_reasons(row: dict) -> str:
    """Why a cell did not build or run, and which operators stayed outside the delegate."""
    prefix = f"  {row['model']} {row['target']} {row['precision']}:"
    parts = []
    if row.get("error"):
        parts.append(f"not built: {row['error']}")
    if row.get("run_reason"):
        parts.append(f"not run: {row['run_reason']}")
    if row.get("precision") == "fp16" and row.get("fp16_max_activation") is not None:
        finite = {True: "finite", False: "INF/NAN", None: "not run"}[row.get("fp16_pytorch_finite")]
        parts.append(f"fp16 range: max |activation| {row['fp16_max_activation']:.3g} in {row.get('fp16_layer')}, "
                     f"PyTorch fp16 output {finite}")
    outside = row.get("ops_outside") or []
    if outside:
        shown = "; ".join(outside[:4]) + (f"; ... ({len(outside)} in all)" if len(outside) > 4 else "")
        parts.append(f"outside the delegate: {shown}")
    return f"{prefix} " + " | ".join(parts)


def rows_from_json(path: str | Path) -> list[dict]:
    """Rows of a matrix JSON written by :func:`run_matrix`."""
    return json.loads(Path(path).read_text(encoding="utf-8"))["rows"]
