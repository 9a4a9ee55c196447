"""``zoo check``: accuracy of an exported artifact over an evaluation set, run as an app runs it.

A quantized PT2E model (``FILE.pt2`` of ``zoo quantize`` or a QAT run, with its sidecar) is checked
the same way (:mod:`measure.pt2e`): its graph runs in PyTorch with the tiling an app would use
(tile = the graph's input size, the card's overlap), which simulates the recipe's int8 numerics
(the only Core ML measurement on Linux); the record says so in ``runtime`` and ``artifact.target``
(``pt2e-<recipe>``).

For each image of the set (degraded by ``--degradation``, seed 0 as ``zoo eval``): the artifact
restores it tile by tile with the manifest's plan (``export_mobile.runners.LoadedArtifact.restore``),
the output is quantized to 8 bits and measured against the ground truth with the task's metric
settings (``zoo.evaluate.MetricSettings``: RGB for denoising, Y with a border crop for SR). The
reference is the float PyTorch model (the manifest's model and weights) run here on the same
degraded images through the same tiling, or the per-image PSNRs of a ``zoo baseline`` file
(``--reference``). Reported: PSNR/SSIM, input PSNR, reference PSNR, the drop (reference - artifact,
dB), the PSNR between artifact and float outputs, the worst images and latency per image.

Resuming: after every image the results file is rewritten atomically with ``complete: false``; a
rerun with the same artifact, dataset, degradation and reference skips the images already in it
(``--restart`` starts over). Interrupting with Ctrl-C keeps what was measured.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch

from measure import results as rs
from zoo.tables import format_cell
from zoo.errors import ZooError

__all__ = ["run_check", "format_check", "default_json_path", "quantized_input_range", "saturation_note", "main"]


def default_json_path(artifact_file: str, dataset_name: str, spec: str) -> Path:
    """``results/check_<artifact stem>_<dataset>_<degradation>.json`` (``:`` and ``,`` removed)."""
    clean = spec.replace(":", "").replace(",", "_").replace("=", "")
    return Path("results") / f"check_{Path(artifact_file).stem}_{dataset_name}_{clean}.json"


def _made(manifest: dict) -> str:
    """How the checked file was made, for messages: ``quantized`` (a .pt2) or ``exported``."""
    return "quantized" if manifest["artifact"].get("format") == "pt2" else "exported"


def _require_float_weights(manifest: dict, weights: str | None) -> dict:
    """The recorded float weights (``model.weights``) of an artifact or .pt2 description; a
    :class:`ZooError` when the float model cannot be rebuilt from them and ``weights`` is not given
    (untrained, another file, not recorded). Cheap: called before anything is loaded."""
    recorded = manifest["model"].get("weights") or {}
    source = recorded.get("source")
    name, made = manifest["artifact"]["file"], _made(manifest)
    if weights:
        return recorded
    if source == "untrained":
        raise ZooError(f"{name} was {made} with untrained (random) weights: the float model "
                       "cannot be rebuilt", "pass --reference BASELINE.json, or --weights with the same weights")
    if source == "file":
        raise ZooError(f"{name} was {made} from the weights file {recorded.get('path') or recorded.get('file')}",
                       "pass --weights PATH to that file (or --reference BASELINE.json)")
    if source == "unknown":
        raise ZooError(f"{name} does not record which float weights it was {made} from ({recorded.get('how')})",
                       "pass --weights PATH to them (or --reference BASELINE.json)")
    return recorded


def _float_reference(loaded, card, weights: str | None):
    """(LoadedArtifact-like float model with the artifact's tiling, reference description).

    The weights are those the artifact was made from (the manifest's ``model.weights``; for a .pt2
    :func:`measure.pt2e.recorded_float_weights`): the shipped file (its sha256 must match when
    recorded), ``weights`` for an artifact made from a file, and no float reference for untrained
    or unrecorded weights unless ``weights`` is given."""
    from export_mobile.manifest import sha256_of
    from export_mobile.runners import LoadedArtifact, torch_runner
    from zoo.registry import create_model

    recorded = _require_float_weights(loaded.manifest, weights)
    name = loaded.artifact.name
    made = _made(loaded.manifest)
    remake = "quantize it again" if made == "quantized" else "re-export the artifact"
    model, _card = create_model(card.name, weights, offers_untrained=False)  # zoo check has no --untrained
    used = Path(weights) if weights else card.weights_path
    if recorded.get("sha256") and used is not None and used.is_file() and sha256_of(used)[0] != recorded["sha256"]:
        raise ZooError(f"the weights {used.name} differ from those {name} was {made} with "
                       f"(sha256 {recorded['sha256'][:12]}...)",
                       f"pass --weights with the weights it was {made} from, or {remake}")
    if hasattr(model, "progress"):
        model.progress = False
    float_loaded = LoadedArtifact(artifact=loaded.artifact, manifest=loaded.manifest,
                                  runner=torch_runner(model.to(torch.float32).eval()))
    tiling = loaded.manifest["tiling"]
    description = {"source": "float PyTorch model run by zoo check with the artifact's tiling", "model": card.name,
                   "runtime": {"name": "pytorch", "version": torch.__version__, "device": "cpu", "precision": "fp32"},
                   "weights": str(weights) if weights else f"shipped ({card.weights})",
                   "tile": int(tiling["tile"][0]), "overlap": int(tiling["overlap"])}
    return float_loaded, description


def _baseline_reference(path: str | Path, model: str, dataset: str, spec: str, settings, names: list[str]):
    """(per-image reference PSNR by name, reference description) from a ``zoo baseline`` file that
    must cover ``model`` on ``dataset`` with ``spec`` for every image of ``names``."""
    doc = rs.read_results(path)
    candidates = [r for r in doc["records"] if r["kind"] == "baseline" and r["model"] == model
                  and (r.get("accuracy") or {}).get("dataset") == dataset
                  and r["accuracy"].get("degradation") == spec]
    if not candidates:
        found = sorted({(r["model"], (r.get("accuracy") or {}).get("dataset"), (r.get("accuracy") or {}).get(
            "degradation")) for r in doc["records"] if r["kind"] == "baseline"}, key=str)
        raise ZooError(f"{path} has no baseline of {model} on {dataset} with {spec} (it has {found or 'none'})",
                       f"run zoo baseline {model} --dataset {dataset} --degradation {spec} --json {path}")
    record = candidates[-1]
    color = "y" if settings.y_channel else "rgb"
    accuracy = record["accuracy"]
    if accuracy.get("color", color) != color or accuracy.get("crop_border", settings.crop_border) != settings.crop_border:
        raise ZooError(f"baseline {path} measured {accuracy.get('color')} with border {accuracy.get('crop_border')}, "
                       f"this check {color} with border {settings.crop_border}", "re-run zoo baseline with this zoo")
    per_image = {image["name"]: image.get("psnr") for image in record.get("images", [])}
    missing = [name for name in names if per_image.get(name) is None]
    if missing:
        raise ZooError(f"baseline {path} does not cover {len(missing)} image(s) of this check ({', '.join(missing[:3])}"
                       f"{', ...' if len(missing) > 3 else ''})",
                       "re-run zoo baseline without --limit (or with at least this check's --limit)")
    description = {"kind": "baseline", "model": record["model"], "runtime": record["runtime"], "host": record["host"],
                   "created": record.get("created"), "file": str(path)}
    return per_image, description


#: Integer ranges of the quantized input dtypes a manifest can name.
_INTEGER_INPUT_RANGES = {"int8": (-128, 127), "uint8": (0, 255)}


def quantized_input_range(manifest: dict) -> tuple[float, float] | None:
    """``(lowest, highest)`` real value the artifact's integer input can hold, ``scale * (q -
    zero_point)`` over the dtype's range, or None for a float input (or a .pt2, which has none).

    An int8 input of a model whose first layer stays float is [0, 1] in 255 steps: exact for an
    app's 8-bit bitmap, but the benchmark's unclipped noise (``gaussian:25``: about 6 % of CBSD68's
    values) saturates there, while the float reference sees it unclipped.
    """
    inputs = manifest.get("inputs") or []
    if not inputs:
        return None
    dtype = str(inputs[0].get("dtype", "")).lower()
    quantization = inputs[0].get("quantization") or {}
    if dtype not in _INTEGER_INPUT_RANGES or "scale" not in quantization:
        return None
    scale, zero_point = float(quantization["scale"]), int(quantization.get("zero_point", 0))
    lowest, highest = _INTEGER_INPUT_RANGES[dtype]
    return scale * (lowest - zero_point), scale * (highest - zero_point)


def saturation_note(outside: int, total: int, value_range: tuple[float, float]) -> str | None:
    """The note for ``outside`` of ``total`` degraded input values lying beyond the artifact's
    integer input range (None when none do)."""
    if not outside or not total:
        return None
    lowest, highest = value_range
    return (f"{100.0 * outside / total:.2f}% of the degraded input values lie outside the artifact's integer input "
            f"range [{lowest:.4g}, {highest:.4g}] and saturate there, while the float reference reads them "
            "unclipped: the drop includes that clipping (an 8-bit app input never leaves the range); re-export "
            "with --option io=float to measure the numerics alone")


def _identity(record: dict) -> tuple:
    """What must match for a rerun to resume a partial results record."""
    reference = {k: v for k, v in (record.get("reference") or {}).items() if k != "file"}
    return (record["artifact"]["sha256"], record["accuracy"]["dataset"], record["accuracy"]["degradation"],
            json.dumps(reference, sort_keys=True))


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def _summarise(base: dict, images: list[dict], input_psnr: dict, *, dataset: str, spec: str, settings,
               total: int, worst: int) -> dict:
    """The check record for the images done so far (complete when all ``total`` are done)."""
    psnr = _mean(image["psnr"] for image in images)
    reference_psnr = _mean(image.get("reference_psnr") for image in images)
    vs_reference = [image.get("psnr_vs_reference") for image in images]
    drops = [image["reference_psnr"] - image["psnr"] if image.get("reference_psnr") is not None else None
             for image in images]
    order = range(len(images))
    if any(drop is not None for drop in drops):  # largest drop first, else lowest PSNR first
        ranked = sorted(order, key=lambda i: -(drops[i] or 0.0))
    else:
        ranked = sorted(order, key=lambda i: images[i]["psnr"])
    accuracy = {"dataset": dataset, "degradation": spec, "images": len(images),
                "color": "y" if settings.y_channel else "rgb", "crop_border": settings.crop_border,
                "psnr": psnr, "ssim": _mean(image.get("ssim") for image in images),
                "input_psnr": _mean(input_psnr.get(image["name"]) for image in images),
                "reference_psnr": reference_psnr,
                "drop_db": reference_psnr - psnr if reference_psnr is not None else None,
                "psnr_vs_reference": _mean(vs_reference),
                "worst": [{"name": images[i]["name"], "psnr": images[i]["psnr"], "drop_db": drops[i]}
                          for i in ranked[:worst]]}
    latencies = [image["latency_ms"] for image in images]
    pixels = sum(image["height"] * image["width"] for image in images)
    record = dict(base, accuracy=accuracy, images=images, complete=len(images) == total,
                  latency_ms=rs.latency_summary(latencies, warmup=1, per="image"),
                  throughput={"megapixels_per_s": pixels / 1e6 / (sum(latencies) / 1000) if sum(latencies) else None,
                              "gmacs_per_s": None, "peak_fraction": None},
                  created=rs.utc_now())
    notes = list(base.get("notes", []))
    if any(value is None for value in vs_reference) and base.get("reference", {}).get("kind") != "baseline":
        notes.append("psnr_vs_reference null: artifact output identical to the float output (infinite PSNR)")
    record["notes"] = notes
    return record


def run_check(artifact: str | Path, dataset: str, degradation: str | None = None, *,
              data_root: str | Path | None = None, limit: int | None = None, reference: str | Path | None = None,
              weights: str | None = None, json_path: str | Path | None = None, restart: bool = False,
              worst: int = 5, progress: bool = True, on_image: Callable[[int, dict], None] | None = None) -> dict:
    """Check ``artifact`` (export folder, artifact or manifest.json, or a quantized model ``.pt2``
    with its sidecar, run in PyTorch: :mod:`measure.pt2e`) on ``dataset`` (a set name, ``bundled``
    or a folder) with ``degradation`` (default: the model's task default); returns the results
    document it wrote to ``json_path`` (default :func:`default_json_path`).

    PSNR in dB, SSIM in [0, 1], latency in ms per image (the artifact's tiled restore, after one
    warm-up tile). ``reference``: a ``zoo baseline`` results file instead of running the float
    model here; ``weights``: the float model's weights when the manifest (sidecar) names a file or
    none.
    ``on_image(index, image_entry)`` is called after each image's results are saved (tests use it
    to interrupt). Errors (:class:`ZooError`): an artifact that cannot run here, a .pt2 that is
    not a quantized zoo model (no sidecar, an unknown model, no quantize operators), a degradation of
    another task or scale than the artifact's model, an unknown dataset, a baseline that does not
    cover the images, an existing results file of another check (use ``restart``).
    """
    from tqdm import tqdm

    from export_mobile.runners import load_artifact, verify_artifact
    from measure import pt2e
    from zoo import __version__
    from zoo.data.datasets import open_dataset
    from zoo.data.io import quantize
    from zoo.evaluate import MetricSettings, degradation_for, input_reference, measure
    from zoo.metrics import psnr as psnr_of
    from zoo.atomic import ensure_writable
    from zoo.registry import get_card
    from zoo.tiling import plan_tiles

    quantized_graph = pt2e.is_quantized_model_file(artifact)
    # Cheap checks first: the manifest and sha256, or the .pt2's sidecar (the graph is loaded later).
    manifest = pt2e.describe_quantized_model(artifact) if quantized_graph else verify_artifact(artifact)[0]
    card = get_card(manifest["model"]["name"])
    degrade = degradation_for(card, degradation)
    if int(manifest["tiling"]["scale"]) != card.scale:
        raise ZooError(f"{manifest['artifact']['file']} upscales x{manifest['tiling']['scale']} but {card.name} is x"
                       f"{card.scale}", "re-export the artifact with this zoo")
    data = open_dataset(dataset, degradation=degrade, data_root=data_root, limit=limit)
    settings = MetricSettings.for_task(card.task, card.scale)
    spec = degrade.spec
    name = pt2e.results_name(artifact) if quantized_graph else manifest["artifact"]["file"]
    path = Path(json_path) if json_path else default_json_path(name, data.name, spec)
    ensure_writable(path, "results file", fix="pass another --json path")  # before loading and measuring
    if reference is None:
        _require_float_weights(manifest, weights)
    loaded = pt2e.load_quantized_model(artifact, manifest) if quantized_graph else load_artifact(artifact)
    tiling = manifest["tiling"]
    tile, overlap = int(tiling["tile"][0]), int(tiling["overlap"])
    notes = []
    if quantized_graph:
        runtime = pt2e.simulation_runtime(manifest)
        notes.append(f"ran: {runtime['name']} on this CPU (the converted graph's quantize/dequantize operators in "
                     "PyTorch, not a device runtime, whose kernels may round differently); latency is the simulation's")
    else:
        runtime = rs.artifact_runtime(manifest)
    if reference is not None:
        baseline_psnr, reference_info = _baseline_reference(reference, card.name, data.name, spec, settings, data.names)
        float_loaded = None
        notes.append(f"reference: baseline {reference} (float PyTorch on {reference_info['runtime'].get('device')}); "
                     "psnr_vs_reference needs the float outputs and is not measured")
        options = reference_info["runtime"].get("options") or {}
        if (options.get("accuracy_tile"), options.get("accuracy_overlap")) != (tile, overlap):
            notes.append(f"the baseline restored with tile {options.get('accuracy_tile')}, overlap "
                         f"{options.get('accuracy_overlap')}, the artifact with tile {tile}, overlap {overlap}: the drop "
                         f"includes the tiling; zoo baseline --tile {tile} --overlap {overlap} gives a numerics-only drop")
    else:
        float_loaded, reference_info = _float_reference(loaded, card, weights)
        baseline_psnr = {}
        notes.append(f"reference: float {card.name} run here with the artifact's tiling (tile {tile}, overlap {overlap})")
        if quantized_graph and not weights:
            notes.append(f"float weights: {reference_info['weights']}, from {manifest['model']['weights'].get('how')}")
    base = rs.new_record("check", card.name, runtime, task=rs.schema_task(card.task),
                         scale=card.scale, artifact=rs.artifact_info(manifest), reference=reference_info,
                         input={"height": tile, "width": tile, "batch": 1, "tile": tile, "overlap": overlap},
                         notes=notes)

    done: dict[str, dict] = {}
    if path.exists() and not restart:
        previous = rs.read_results(path)["records"]
        matching = [r for r in previous if r["kind"] == "check" and r.get("accuracy") and r.get("artifact")]
        probe = dict(base, accuracy={"dataset": data.name, "degradation": spec})
        if len(matching) != 1 or _identity(matching[0]) != _identity(probe):
            raise ZooError(f"{path} holds other results (another artifact, dataset, degradation or reference)",
                           "pass another --json path, or --restart to overwrite it")
        done = {image["name"]: image for image in matching[0].get("images", []) if image["name"] in data.names}

    input_psnr: dict[str, float] = {}
    images: list[dict] = []
    input_range = quantized_input_range(manifest)
    values_outside = values_total = 0
    warmed = False
    producer = f"zoo {__version__} check"
    bar = tqdm(range(len(data)), desc=f"check {loaded.artifact.name}", disable=not progress, unit="img",
               file=sys.stderr)
    for index in bar:
        sample = data[index]
        degraded_reference = input_reference(sample.degraded, card.scale)
        # Before the artifact runs: an image too small to measure is refused first.
        input_psnr[sample.name] = measure(degraded_reference, sample.target, settings,
                                          name=f"image {sample.name}")["psnr"]
        if input_range is not None:
            values_outside += int(((sample.degraded < input_range[0]) | (sample.degraded > input_range[1])).sum())
            values_total += sample.degraded.numel()
        if sample.name in done:
            images.append(done[sample.name])
            continue
        if not warmed:  # the runtime's first call (allocation, packing weights) is not an image's latency
            loaded.forward_tiles(torch.zeros(1, 3, tile, tile))
            warmed = True
        start = time.perf_counter()
        restored = loaded.restore(sample.degraded)
        latency_ms = (time.perf_counter() - start) * 1000.0
        output = quantize(restored, 8)
        metrics = measure(output, sample.target, settings)
        height, width = (int(v) for v in sample.degraded.shape[1:])
        entry = {"name": sample.name, "height": int(sample.target.shape[1]), "width": int(sample.target.shape[2]),
                 "tiles": plan_tiles(height, width, tile=tile, overlap=overlap, size_multiple=int(tiling["size_multiple"]),
                                     margin=int(tiling["margin"])).num_tiles,
                 "latency_ms": latency_ms, "psnr": metrics["psnr"], "ssim": metrics["ssim"]}
        if float_loaded is not None:
            float_output = quantize(float_loaded.restore(sample.degraded), 8)
            entry["reference_psnr"] = measure(float_output, sample.target, settings)["psnr"]
            entry["psnr_vs_reference"] = rs.finite_or_none(psnr_of(output, float_output, crop_border=settings.crop_border,
                                                                   y_channel=settings.y_channel))
        else:
            entry["reference_psnr"] = baseline_psnr[sample.name]
            entry["psnr_vs_reference"] = None
        entry["output_sha256"] = rs.output_sha256(restored)
        images.append(entry)
        record = _summarise(base, list(images), input_psnr, dataset=data.name, spec=spec, settings=settings,
                            total=len(data), worst=worst)
        rs.write_results(path, rs.results_document([record], producer))
        if on_image is not None:
            on_image(index, entry)
    bar.close()
    record = _summarise(base, list(images), input_psnr, dataset=data.name, spec=spec, settings=settings,
                        total=len(data), worst=worst)
    if done:
        record["notes"].append(f"resumed: {len(done)} image(s) measured by an earlier run")
    clipping = saturation_note(values_outside, values_total, input_range) if input_range is not None else None
    if clipping:
        record["notes"].append(clipping)
    document = rs.results_document([record], producer)
    rs.write_results(path, document)
    document["path"] = str(path)  # for the caller only: not written
    return document


def format_check(record: dict) -> str:
    """A plain-text table of a check record: per image, the mean and the worst images."""
    header = f"{'image':<24} {'PSNR':>7} {'SSIM':>7} {'float':>7} {'drop':>6} {'vs float':>8} {'ms':>9}"
    lines = [header, "-" * len(header)]
    for image in record["images"]:
        reference = image.get("reference_psnr")
        lines.append(f"{image['name'][:24]:<24} {image['psnr']:>7.2f} {format_cell(image.get('ssim'), '.4f'):>7} "
                     f"{format_cell(reference, '.2f'):>7} {format_cell(reference and reference - image['psnr'], '+.3f'):>6} "
                     f"{format_cell(image.get('psnr_vs_reference'), '.1f'):>8} {image['latency_ms']:>9.1f}")
    accuracy = record["accuracy"]
    lines.append(f"{'mean':<24} {accuracy['psnr']:>7.2f} {format_cell(accuracy.get('ssim'), '.4f'):>7} "
                 f"{format_cell(accuracy.get('reference_psnr'), '.2f'):>7} {format_cell(accuracy.get('drop_db'), '+.3f'):>6} "
                 f"{format_cell(accuracy.get('psnr_vs_reference'), '.1f'):>8} {record['latency_ms']['median']:>9.1f}")
    artifact = record["artifact"]
    lines.append(f"{artifact['file']} ({artifact['target']} {artifact['precision']}) on {accuracy['dataset']} with "
                 f"{accuracy['degradation']}: {accuracy['images']} images, {accuracy['color'].upper()}, border "
                 f"{accuracy['crop_border']}; input PSNR {format_cell(accuracy.get('input_psnr'), '.2f')} dB; drop = float - "
                 "artifact (dB); ms = median per image")
    if accuracy.get("worst"):
        lines.append("worst: " + ", ".join(f"{w['name']} ({w['psnr']:.2f} dB"
                                            + (f", drop {w['drop_db']:+.3f})" if w.get("drop_db") is not None else ")")
                                            for w in accuracy["worst"]))
    lines += [f"note: {note}" for note in record.get("notes", [])]
    if not record.get("complete", True):
        lines.append("INCOMPLETE: rerun the same command to finish")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zoo check", description="Accuracy of an exported artifact (tiled, as an app runs it) or of a "
        "quantized PT2E model (.pt2, its int8 numerics simulated in PyTorch) over an evaluation set, against "
        "the ground truth and the float PyTorch model; resumable.")
    parser.add_argument("artifact", metavar="ARTIFACT", help="export folder, artifact file or manifest.json, or a "
                        "quantized model .pt2 (zoo quantize, a QAT run) with its .json sidecar, run in PyTorch")
    parser.add_argument("--dataset", required=True, help="set5, set14, bsd68, urban100, bundled or a folder of images")
    parser.add_argument("--degradation", default=None, help="e.g. gaussian:25 (default: the model's task default)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N images")
    parser.add_argument("--data-root", default=None,
                        help="folder holding the benchmark sets (default: $ZOO_DATA_ROOT, ../shared/datasets)")
    parser.add_argument("--reference", default=None, help="a zoo baseline results file instead of running the float "
                        "model here (must cover the same dataset, degradation and images)")
    parser.add_argument("--weights", default=None, help="float model weights when the artifact (.pt2) was made "
                        "from a file")
    parser.add_argument("--worst", type=int, default=5, help="how many worst images to list (default 5)")
    parser.add_argument("--json", default=None, help="results file (default results/check_<artifact>_<set>_<deg>.json)")
    parser.add_argument("--restart", action="store_true", help="discard the partial results in --json and start over")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str]) -> int:
    """``zoo check``: run the check, print the table, write (and resume) the results file; exit status."""
    from zoo.quiet import c_stderr_filtered

    args = build_parser().parse_args(argv)
    try:
        with c_stderr_filtered():  # ExecuTorch's runtime prints ARM cpuinfo probes from C++
            document = run_check(args.artifact, args.dataset, args.degradation, data_root=args.data_root,
                                 limit=args.limit,
                                 reference=args.reference, weights=args.weights, json_path=args.json,
                                 restart=args.restart, worst=args.worst, progress=not args.quiet)
    except KeyboardInterrupt:
        print("zoo check: interrupted; the images measured so far are kept in the results file (complete: false): "
              "rerun the same command to resume", file=sys.stderr)
        return 130
    print(format_check(document["records"][0]))
    print(f"wrote {document['path']}")
    return 0
