"""``zoo baseline``: the float PyTorch reference of a model, accuracy and latency, as one results
record of kind ``baseline`` (the reference ``zoo check --reference`` compares artifacts with).

Accuracy is ``zoo.evaluate.evaluate`` (the literature's protocol: seed 0, outputs quantized to 8
bits, the task's metric settings, the model's tiling unless ``--tile``/``--overlap``); latency is
``zoo bench``'s protocol (``measure.bench.bench_model``) on CUDA. Without CUDA both run on the
CPU, and the output and the record's notes say so. Needs torch only: no mobile runtime is imported.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


from measure import results as rs
from measure.bench import BenchConfig, bench_model, parse_size

__all__ = ["run_baseline", "main"]


def run_baseline(model_name: str, *, dataset: str | None = None, degradation: str | None = None,
                 data_root: str | Path | None = None, limit: int | None = None, weights: str | None = None,
                 untrained: bool = False, device: str = "auto", size: tuple[int, int] = (256, 256),
                 warmup: int = 3, runs: int = 20, tile: int | None = None, overlap: int | None = None,
                 progress: bool = True) -> dict:
    """A ``baseline`` record of ``model_name`` in float32 PyTorch: latency (ms) of one forward on a
    (1, 3, H, W) input (``size``) and, with ``dataset``, per-image and mean PSNR (dB)/SSIM of the
    restored outputs and of the degraded inputs on ``dataset`` with ``degradation``.

    ``device="auto"`` uses CUDA when available, else the CPU with a note in ``record["notes"]``.
    """
    from zoo.data.datasets import open_dataset
    from zoo.evaluate import MetricSettings, degradation_for, evaluate
    from zoo.inference import pick_device
    from zoo.registry import get_card

    card = get_card(model_name)
    chosen = pick_device(device)
    notes = []
    if chosen.type != "cuda":
        notes.append("CUDA not available: latency and accuracy measured on the CPU"
                     if device == "auto" else f"measured on the CPU (--device {device})")
    accuracy, images, tiling_options = None, None, {}
    if dataset is not None:
        spec = degradation_for(card, degradation).spec
        name = open_dataset(dataset, data_root=data_root, limit=limit).name
        result = evaluate(model_name, dataset, degradation=spec, weights=weights, untrained=untrained,
                          data_root=data_root, limit=limit, tile=tile, overlap=overlap, device=str(chosen),
                          progress=progress)
        settings = MetricSettings.for_task(card.task, card.scale)
        images = [{"name": row["image"], "height": row["height"], "width": row["width"],
                   "latency_ms": row["seconds"] * 1000.0, "psnr": row["psnr"], "ssim": row["ssim"]}
                  for row in result["images"]]
        accuracy = {"dataset": name, "degradation": spec, "images": len(images),
                    "color": "y" if settings.y_channel else "rgb", "crop_border": settings.crop_border,
                    "psnr": result["mean"]["psnr"], "ssim": result["mean"]["ssim"],
                    "input_psnr": result["mean"]["input_psnr"]}
        tiling_options = {"accuracy_tile": result["tile"], "accuracy_overlap": result["overlap"]}
        tiling = f"tile {result['tile']}, overlap {result['overlap']}" if result["tile"] else "whole image (no tiling)"
        notes.append(f"accuracy: zoo eval protocol on {chosen.type}, {tiling}; images[].latency_ms is the "
                     "whole tiled restore of each image")
    config = BenchConfig(target=model_name, device=str(chosen), dtype="fp32")
    record = bench_model(config, size, weights=weights, untrained=untrained, warmup=warmup, runs=runs)
    record.update(kind="baseline", notes=notes + record.get("notes", []))
    record["runtime"]["options"].update(tiling_options)
    if accuracy is not None:
        record.update(accuracy=accuracy, images=images)
    return record


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zoo baseline", description="Float PyTorch reference of a model: accuracy on an evaluation set "
        "(with --dataset) and CUDA latency (CPU when there is no CUDA, and it says so). The results file is what "
        "zoo check --reference compares artifacts with. Needs torch only.")
    parser.add_argument("model", metavar="MODEL")
    parser.add_argument("--dataset", default=None, help="set5, set14, bsd68, urban100, bundled or a folder "
                        "(default: latency only)")
    parser.add_argument("--degradation", default=None, help="e.g. gaussian:25 (default: the model's task default)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N images")
    parser.add_argument("--data-root", default=None, help="folder holding the benchmark sets")
    parser.add_argument("--weights", default=None, help="checkpoint instead of the shipped weights")
    parser.add_argument("--untrained", action="store_true", help="random weights (pipeline and timing only)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available, else CPU), cpu, cuda")
    parser.add_argument("--size", default="256x256", help="latency input HxW in pixels (default 256x256)")
    parser.add_argument("--tile", type=int, default=None, help="accuracy: tile size (default the model's; 0 = none)")
    parser.add_argument("--overlap", type=int, default=None, help="accuracy: tile overlap (default the model's)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs first (default 3)")
    parser.add_argument("--runs", type=int, default=20, help="timed runs (default 20)")
    parser.add_argument("--json", default=None, help="results file (default results/baseline_<model>[_<set>_<deg>].json)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str]) -> int:
    """``zoo baseline``: measure, print a summary, write the results file; exit status."""
    from zoo import __version__

    from zoo.atomic import ensure_writable

    args = build_parser().parse_args(argv)
    # Checked before measuring; the default file name needs the dataset's name, its folder does not.
    if args.json:
        ensure_writable(args.json, "results file", fix="pass another --json path")
    else:
        ensure_writable(Path("results"), "results folder", kind="folder", fix="pass --json PATH elsewhere")
    record = run_baseline(args.model, dataset=args.dataset, degradation=args.degradation, data_root=args.data_root,
                          limit=args.limit, weights=args.weights, untrained=args.untrained, device=args.device,
                          size=parse_size(args.size), warmup=args.warmup, runs=args.runs, tile=args.tile,
                          overlap=args.overlap, progress=not args.quiet)
    accuracy = record.get("accuracy")
    if args.json:
        path = Path(args.json)
    else:
        suffix = f"_{accuracy['dataset']}_{accuracy['degradation'].replace(':', '')}" if accuracy else ""
        path = Path("results") / f"baseline_{args.model}{suffix}.json"
    rs.write_results(path, rs.results_document([record], f"zoo {__version__} baseline"))
    latency, runtime = record["latency_ms"], record["runtime"]
    if runtime["device"] != "cuda":
        print("NOTE: no CUDA: the baseline latency below is the CPU's", file=sys.stderr)
    print(f"{args.model} float32 PyTorch on {runtime['device']}"
          + (f" ({record['host']['gpu']})" if runtime["device"] == "cuda" and record["host"].get("gpu") else "")
          + f": {latency['median']:.2f} ms median (p90 {latency['p90']:.2f}, min {latency['min']:.2f}) at "
          f"{record['input']['height']}x{record['input']['width']}, {latency['runs']} runs")
    if accuracy:
        print(f"{accuracy['dataset']} {accuracy['degradation']}: PSNR {accuracy['psnr']:.2f} dB, SSIM "
              f"{accuracy['ssim']:.4f} (input {accuracy['input_psnr']:.2f} dB) over {accuracy['images']} images")
    for note in record.get("notes", []):
        print(f"note: {note}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":  # pragma: no cover - `python -m measure.baseline` on a torch-only machine
    raise SystemExit(main(sys.argv[1:]))
