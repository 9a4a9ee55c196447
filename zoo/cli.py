"""The ``zoo`` command. It only parses arguments and prints; the work lives in library functions."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from zoo.errors import ZooError


def _model_size(card) -> tuple[str, str]:
    """Parameters (millions) and GMACs at 1x3x256x256, or n/a for per-image (zero-shot) models."""
    if card.zero_shot:
        return "n/a", "n/a"
    from zoo.macs import model_complexity

    params, macs = model_complexity(card.name)
    return f"{params / 1e6:.2f}", f"{macs / 1e9:.2f}"


def cmd_list(args) -> int:
    from zoo.registry import list_models

    cards = list_models()
    header = f"{'model':<18} {'task':<14} {'variant':<26} {'params(M)':>9} {'GMACs@256':>9}  weights"
    print(header)
    print("-" * len(header))
    for card in cards:
        params, macs = _model_size(card)
        weights = "zero-shot" if card.zero_shot else ("shipped" if card.has_weights else "none (--weights)")
        print(f"{card.name:<18} {card.task:<14} {card.variant[:26]:<26} {params:>9} {macs:>9}  {weights}")
    return 0


def cmd_info(args) -> int:
    from zoo.registry import get_card

    card = get_card(args.model)
    params, macs = _model_size(card)
    info = {
        "name": card.name, "family": card.family, "task": card.task, "variant": card.variant,
        "summary": card.summary, "paper": card.paper, "scale": card.scale,
        "parameters_millions": params, "gmacs_at_256x256": macs,
        "size_multiple": card.size_multiple, "default_tile": card.tile, "default_overlap": card.overlap,
        "default_degradation": card.default_degradation,
        "weights": "zero-shot (fits each image)" if card.zero_shot
        else (str(card.weights_path) if card.has_weights else "none shipped"),
        "official_weights": card.official_weights, "notes": list(card.notes), "results": list(card.results),
    }
    from measure.measured import format_measured, model_measured

    info["measured"] = model_measured(card, args.results)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    for key, value in info.items():
        if key in ("notes", "results", "measured"):
            continue
        if value is not None:
            print(f"{key:<22} {value}")
    for note in card.notes:
        print(f"note: {note}")
    for row in card.results:
        print("measured: " + ", ".join(f"{k}={v}" for k, v in row.items()))
    print("\n".join(format_measured(info["measured"])) if info["measured"] else "measured: no artifact results yet")
    return 0


def cmd_restore(args) -> int:
    from zoo.inference import restore_files

    records = restore_files(args.model, args.inputs, args.output, weights=args.weights, tile=args.tile,
                            overlap=args.overlap, device=args.device, overwrite=args.overwrite,
                            progress=not args.quiet)
    for record in records:
        extra = ""
        if "stop_iteration" in record:
            extra = f", stopped at iteration {record['stop_iteration']}"
        print(f"{record['input']} -> {record['output']} ({record['width']}x{record['height']}, "
              f"{record['seconds']:.2f} s{extra})")
    return 0


def cmd_eval(args) -> int:
    from zoo.evaluate import evaluate, format_table

    json_path = args.json or Path("results") / (
        f"eval_{args.model}_{Path(str(args.dataset)).name}_{(args.degradation or 'default').replace(':', '')}.json")
    result = evaluate(args.model, args.dataset, degradation=args.degradation, weights=args.weights,
                      untrained=args.untrained, data_root=args.data_root, limit=args.limit, seed=args.seed,
                      tile=args.tile, overlap=args.overlap, y_channel=args.y_channel,
                      crop_border=args.crop_border, device=args.device, json_path=json_path,
                      progress=not args.quiet)
    print(format_table(result))
    print(f"wrote {json_path}")
    return 0


def cmd_demo(args) -> int:
    from zoo.demo import run_demo

    run_demo(args.output, limit=args.limit, crop=args.crop, overwrite=True)
    return 0


#: Subcommands that own their argument parsers (their --help included):
#: name -> (module, function taking argv and returning the exit status, one-line help).
PASSTHROUGH = {
    "export": ("export_mobile.cli", "export_main",
               "export to ExecuTorch, Core ML, TFLite or ONNX with a manifest (zoo export --help)"),
    "run": ("export_mobile.cli", "run_main", "restore photos with an exported artifact (zoo run --help)"),
    "bench": ("measure.bench", "main", "latency of PyTorch and exported artifacts: table + JSON"),
    "check": ("measure.check", "main", "accuracy of an artifact on an evaluation set vs the float model"),
    "baseline": ("measure.baseline", "main", "float PyTorch reference: accuracy and CUDA (or CPU) latency"),
    "report": ("measure.report", "main", "merge results files into a Markdown + HTML report"),
    "device": ("measure.device", "main", "run the demo app's benchmark on a phone (adb) or import results"),
    "bench-inr": ("zoo.benchmarks.inr_ablation", "main", "zero-shot INR ablation and baselines on CBSD68 crops"),
}


def _run_passthrough(args) -> int:
    import importlib

    module_name, function_name, _help = PASSTHROUGH[args.command]
    return getattr(importlib.import_module(module_name), function_name)(args.rest)


def _add_tiling(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tile", type=int, default=None,
                        help="tile size in input pixels (default: the model's; 0 = whole image at once)")
    parser.add_argument("--overlap", type=int, default=None, help="tile overlap in pixels (default: the model's)")
    parser.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda or cuda:N")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zoo", description="Mobile image-restoration model zoo")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="list the models: task, size, MACs, weights")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("info", help="show a model card")
    p.add_argument("model")
    p.add_argument("--json", action="store_true", help="print the card as JSON")
    p.add_argument("--results", help="results store read for measured rows (default: $ZOO_RESULTS, else results/)")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("restore", help="restore image files with a model (tiled, any size)")
    p.add_argument("model")
    p.add_argument("inputs", nargs="+", metavar="INPUT")
    p.add_argument("-o", "--output", required=True, help="output file (one input) or folder")
    p.add_argument("--weights", help="checkpoint: .safetensors or an official .pth (loaded strictly)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_tiling(p)
    p.set_defaults(func=cmd_restore)

    p = sub.add_parser("eval", help="PSNR/SSIM on a benchmark set with a synthetic degradation")
    p.add_argument("model")
    p.add_argument("--dataset", required=True, help="set5, set14, bsd68, urban100, bundled, or a folder")
    p.add_argument("--degradation", help="e.g. gaussian:25, bicubic:x4 (default: the model's task default)")
    p.add_argument("--weights", help="checkpoint: .safetensors or an official .pth (loaded strictly)")
    p.add_argument("--untrained", action="store_true",
                   help="run without weights (random init) to check the pipeline and speed; not a restoration")
    p.add_argument("--data-root", help="folder holding the benchmark sets (default: $ZOO_DATA_ROOT, ../shared/datasets)")
    p.add_argument("--limit", type=int, help="evaluate only the first N images")
    p.add_argument("--seed", type=int, default=0, help="degradation seed (image i uses seed + i)")
    p.add_argument("--y-channel", dest="y_channel", action="store_true", default=None, help="measure on BT.601 Y")
    p.add_argument("--rgb", dest="y_channel", action="store_false", help="measure on RGB")
    p.add_argument("--crop-border", type=int, default=None, help="pixels cropped at each border before measuring")
    p.add_argument("--json", type=Path, help="results JSON path (default: results/eval_<model>_<set>_<deg>.json)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_tiling(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("demo", help="the main job on the bundled photos (no downloads needed)")
    p.add_argument("-o", "--output", type=Path, default=Path("demo_out"), help="folder for the results")
    p.add_argument("--limit", type=int, default=6, help="number of bundled photos")
    p.add_argument("--crop", type=int, default=0, help="centre crop size in pixels (0 = whole photo)")
    p.set_defaults(func=cmd_demo)

    from zoo.train import add_arguments as add_train_arguments, run as run_training

    p = sub.add_parser("train", help="train a model from a YAML experiment config (DDP with torchrun)")
    add_train_arguments(p)
    p.set_defaults(func=run_training)
    p = sub.add_parser("distill", help="distill a lite student from a teacher (YAML config)")
    add_train_arguments(p)
    p.set_defaults(func=lambda a: run_training(a, distill=True))

    from quantize.cli import add_arguments as add_quantize_arguments, cmd_quantize

    p = sub.add_parser("quantize", help="int8 PTQ/QAT for a mobile backend, with the accuracy drop report")
    add_quantize_arguments(p)
    p.set_defaults(func=cmd_quantize)

    for name, (_module, _function, help_text) in PASSTHROUGH.items():
        p = sub.add_parser(name, help=help_text, add_help=False)
        p.add_argument("rest", nargs=argparse.REMAINDER)
        p.set_defaults(func=_run_passthrough)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``zoo`` console script; returns the exit status (2 for user errors)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in PASSTHROUGH:
        args = argparse.Namespace(command=argv[0], rest=argv[1:], func=_run_passthrough)
    else:
        args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ZooError as err:
        print(f"zoo: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("zoo: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
