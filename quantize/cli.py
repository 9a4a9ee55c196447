"""``zoo quantize``: int8 post-training quantization or QAT of a zoo model for one mobile backend.

    zoo quantize MODEL --backend xnnpack|coreml|tflite --method ptq|qat -o DIR
        [--weights PATH | --untrained] [--tile 256] [--calib-images 32] [--calib-source auto]
        [--degradation SPEC] [--qat-steps 200] [--qat-lr 1e-5] [--qat-batch 4]
        [--mixed first-last|none|NAMES] [--eval-dataset bsd68|none] [--eval-limit N]
        [--sensitivity] [--sensitivity-images 4] [--data-root DIR] [--seed 0] [--overwrite]

Writes ``DIR/<model>_<backend>_<method>.pt2`` (the converted graph, ``torch.export.save``) with
its ``.json`` sidecar, ``report.json`` (accuracy drop on the evaluation set) unless
``--eval-dataset none``, and ``sensitivity.json`` with ``--sensitivity``. The work is in
:func:`run_quantize`; :func:`add_arguments` / :func:`cmd_quantize` plug into the ``zoo`` parser,
:func:`main` runs standalone (``python -m quantize.cli``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from zoo.errors import ZooError

#: The recipe names (quantize.recipes.RECIPES), repeated here so argument parsing imports no torch.
BACKENDS = ("xnnpack", "coreml", "tflite")
DEFAULT_CALIB_IMAGES = 32
DEFAULT_QAT_STEPS = 200
DEFAULT_QAT_LR = 1e-5
#: QAT loss targets: the clean crops, or the float model's own outputs.
QAT_TARGETS = ("clean", "float")
#: QAT activation ranges: PTQ's histogram ranges (frozen), or moving-average min/max.
QAT_RANGES = ("ptq", "minmax")


def _float_model_targets(sampler, model):
    """Wrap a ``step -> (inputs, targets)`` sampler so the targets are ``model``'s outputs (eval, no grad)."""
    import torch

    model.eval()

    def sample(step: int):
        inputs, _ = sampler(step)
        with torch.no_grad():
            return inputs, model(inputs).clamp(0.0, 1.0)

    return sample


def run_quantize(model_name: str, *, backend: str, method: str = "ptq", output_dir: str | Path,
                 weights: str | Path | None = None, untrained: bool = False, tile: int | None = None,
                 calib_images: int = DEFAULT_CALIB_IMAGES, calib_source: str = "auto",
                 degradation: str | None = None, qat_steps: int = DEFAULT_QAT_STEPS,
                 qat_lr: float = DEFAULT_QAT_LR, qat_batch: int = 4, qat_target: str = "clean",
                 qat_ranges: str = "ptq", mixed: str | None = "first-last",
                 eval_dataset: str | None = "bsd68", eval_limit: int | None = None,
                 eval_degradation: str | None = None, sensitivity: bool = False, sensitivity_images: int = 4,
                 data_root: str | Path | None = None, seed: int = 0, overwrite: bool = False,
                 progress: bool = True, log=print) -> dict:
    """Quantize ``model_name`` for ``backend`` and write the model, sidecar and reports.

    ``method``: ``ptq`` (calibrate on ``calib_images`` degraded training-pool crops) or ``qat``
    (fine-tune ``qat_steps`` Adam steps on batches of ``qat_batch`` such crops, lr ``qat_lr``,
    towards ``qat_target``: ``clean`` crops or the ``float`` model's own outputs, i.e. the
    quantized network learns to reproduce its float original). ``qat_ranges``: ``ptq`` starts the
    activation quantizers at PTQ's histogram ranges on the calibration crops and freezes them;
    ``minmax`` lets them track moving-average min/max.
    ``tile``: export size in input pixels (default: the card's tile). ``mixed``: ``first-last``
    (default), ``none`` or comma-separated module names (see :class:`MixedPrecision`).
    ``degradation``: the crops' degradation (default: the model's training degradation).
    Returns a summary dict with the paths written and the mean accuracy drop.
    """
    import torch

    from quantize.calibration import build_calibration_set, training_pair_sampler
    from quantize.ptq import layer_precision, quantize_ptq, save_quantized
    from quantize.qat import quantize_qat
    from quantize.recipes import MixedPrecision, require_recipe
    from zoo.registry import create_model

    if method not in ("ptq", "qat"):
        raise ZooError(f"unknown quantization method {method!r}", "use --method ptq or --method qat")
    recipe = require_recipe(backend)
    evaluate = bool(eval_dataset) and eval_dataset.lower() != "none"
    if evaluate:
        from zoo.data.datasets import BENCHMARK_SETS, DATASET_ALIASES, resolve_data_root

        if DATASET_ALIASES.get(eval_dataset.lower(), eval_dataset.lower()) in BENCHMARK_SETS:
            resolve_data_root(data_root)  # fail before the work when the benchmark images are missing
    model, card = create_model(model_name, weights, untrained=untrained)
    if card.zero_shot:
        raise ZooError(f"{model_name} fits each image from scratch and has no weights to quantize",
                       "quantize a trained model (zoo list shows them)")
    tile = tile or card.tile or 256
    if tile % card.size_multiple:
        raise ZooError(f"tile {tile} is not a multiple of {model_name}'s size multiple {card.size_multiple}",
                       f"use --tile {max(card.size_multiple, tile // card.size_multiple * card.size_multiple)}")
    mixed_precision = MixedPrecision.parse(mixed)
    spec = degradation or card.calibration_degradation

    output_dir = Path(output_dir)
    model_path = output_dir / f"{model_name}_{recipe.NAME}_{method}.pt2"
    report_path = output_dir / "report.json"
    sensitivity_path = output_dir / "sensitivity.json"
    planned = [model_path, model_path.with_suffix(".json")]
    planned += [report_path] if evaluate else []
    planned += [sensitivity_path] if sensitivity else []
    existing = [path for path in planned if path.exists()]
    if existing and not overwrite:
        raise ZooError(f"{existing[0]} already exists", "pass --overwrite or choose another -o folder")

    calibration = build_calibration_set(spec, tile=tile, count=calib_images, source=calib_source,
                                        data_root=data_root, seed=seed)
    log(f"calibration: {len(calibration)} crops of {tile}x{tile} from {calibration.source}, degradation {spec}")
    example = calibration.inputs[0]
    torch.manual_seed(seed)
    if method == "ptq":
        quantized = quantize_ptq(model, example, recipe, calibration, mixed=mixed_precision, progress=progress)
    else:
        if qat_target not in QAT_TARGETS:
            raise ZooError(f"unknown QAT target {qat_target!r}", f"use --qat-target {' or '.join(QAT_TARGETS)}")
        if qat_ranges not in QAT_RANGES:
            raise ZooError(f"unknown QAT activation ranges {qat_ranges!r}", f"use --qat-ranges {' or '.join(QAT_RANGES)}")
        sampler = training_pair_sampler(calibration, batch_size=qat_batch, seed=seed, fresh_degradation=True)
        if qat_target == "float":
            sampler = _float_model_targets(sampler, model)
        quantized = quantize_qat(model, sampler(0)[0], recipe, sampler, steps=qat_steps, lr=qat_lr,
                                 mixed=mixed_precision, progress=progress,
                                 activation_ranges=calibration if qat_ranges == "ptq" else None)
    precision = layer_precision(quantized)
    float_layers = [name for name, kind in precision.items() if kind == "float"]
    log(f"{sum(kind == 'int8' for kind in precision.values())} of {len(precision)} conv layers in int8; "
        f"float: {', '.join(float_layers) or 'none'}")

    metadata = {
        "model": model_name,
        "task": card.task,
        "weights": ("untrained (random init): NOT a restoration" if getattr(model, "zoo_untrained", False)
                    else str(weights) if weights else str(card.weights_path)),
        "backend": recipe.NAME,
        "mixed_flag": mixed or "none",
        "calibration": calibration.describe(),
        **({"qat_target": qat_target, "qat_data": "fresh degradation and a random flip/rotation of the crops at every step"}
           if method == "qat" else {}),
        "layer_precision": precision,
        "tile": tile,
        "size_multiple": card.size_multiple,
        "scale": card.scale,
    }
    save_quantized(quantized, model_path, example, metadata)
    log(f"wrote {model_path} and {model_path.with_suffix('.json').name}")
    summary = {"model_path": str(model_path), "sidecar_path": str(model_path.with_suffix(".json")),
               "layer_precision": precision}

    if sensitivity:
        from quantize.sensitivity import format_sensitivity_table, layer_sensitivity, write_sensitivity

        held_out = build_calibration_set(spec, tile=tile, count=sensitivity_images, source=calib_source,
                                         data_root=data_root, seed=seed, skip_images=calib_images)
        result = layer_sensitivity(model, example, recipe, calibration, held_out.inputs, progress=progress)
        result["held_out"] = held_out.describe()
        write_sensitivity(result, sensitivity_path)
        log(format_sensitivity_table(result, limit=20))
        log(f"wrote {sensitivity_path}")
        summary["sensitivity_path"] = str(sensitivity_path)

    if evaluate:
        from quantize.report import accuracy_drop_report, format_report_table

        report = accuracy_drop_report(model, quantized, card, dataset=eval_dataset,
                                      degradation=eval_degradation, data_root=data_root, limit=eval_limit,
                                      tile=tile, json_path=report_path, progress=progress)
        log(format_report_table(report))
        log(f"wrote {report_path}")
        summary.update(report_path=str(report_path), mean=report["mean"])
    return summary


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``zoo quantize`` arguments to ``parser`` (a subparser of ``zoo``)."""
    parser.add_argument("model", help="model name (zoo list)")
    parser.add_argument("--backend", required=True, choices=BACKENDS, help="mobile backend recipe")
    parser.add_argument("--method", default="ptq", choices=("ptq", "qat"),
                        help="post-training quantization or quantization-aware training (default ptq)")
    parser.add_argument("-o", "--output", required=True, type=Path, help="folder for the .pt2, sidecar and reports")
    parser.add_argument("--weights", help="checkpoint: .safetensors or an official .pth (default: the shipped one)")
    parser.add_argument("--untrained", action="store_true",
                        help="quantize random weights (pipeline/timing check only, not a restoration)")
    parser.add_argument("--tile", type=int, default=None, help="export size in input pixels (default: the model's tile)")
    parser.add_argument("--calib-images", type=int, default=DEFAULT_CALIB_IMAGES,
                        help=f"calibration / QAT crops (default {DEFAULT_CALIB_IMAGES})")
    parser.add_argument("--calib-source", default="auto",
                        help="auto (urban100, else bundled photos), urban100, bundled or a training folder; "
                             "evaluation sets are refused")
    parser.add_argument("--degradation", help="degradation of the crops (default: the model's training degradation)")
    parser.add_argument("--qat-steps", type=int, default=DEFAULT_QAT_STEPS, help=f"QAT steps (default {DEFAULT_QAT_STEPS})")
    parser.add_argument("--qat-lr", type=float, default=DEFAULT_QAT_LR, help=f"QAT Adam learning rate (default {DEFAULT_QAT_LR})")
    parser.add_argument("--qat-batch", type=int, default=4, help="QAT batch size (default 4)")
    parser.add_argument("--qat-target", default="clean", choices=QAT_TARGETS,
                        help="QAT loss against the clean crops or the float model's outputs (default clean)")
    parser.add_argument("--qat-ranges", default="ptq", choices=QAT_RANGES,
                        help="QAT activation ranges: PTQ's histogram ranges, frozen (default), or moving min/max")
    parser.add_argument("--mixed", default="first-last",
                        help="layers kept in float: first-last (default), none, or comma-separated module names")
    parser.add_argument("--eval-dataset", default="bsd68", help="accuracy-drop report set (default bsd68; none to skip)")
    parser.add_argument("--eval-limit", type=int, help="evaluate only the first N images")
    parser.add_argument("--eval-degradation", help="degradation for the report (default: the model's task default)")
    parser.add_argument("--sensitivity", action="store_true",
                        help="also sweep the layers one float layer at a time (slow: one PTQ per layer)")
    parser.add_argument("--sensitivity-images", type=int, default=4, help="held-out crops for the sweep (default 4)")
    parser.add_argument("--data-root", help="folder holding the benchmark sets (default: $ZOO_DATA_ROOT, ../shared/datasets)")
    parser.add_argument("--seed", type=int, default=0, help="crop, noise and QAT batch seed (default 0)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs in the folder")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def cmd_quantize(args: argparse.Namespace) -> int:
    """Run ``zoo quantize`` from parsed arguments; returns the exit status."""
    run_quantize(args.model, backend=args.backend, method=args.method, output_dir=args.output,
                 weights=args.weights, untrained=args.untrained, tile=args.tile, calib_images=args.calib_images,
                 calib_source=args.calib_source, degradation=args.degradation, qat_steps=args.qat_steps,
                 qat_lr=args.qat_lr, qat_batch=args.qat_batch, qat_target=args.qat_target, qat_ranges=args.qat_ranges,
                 mixed=args.mixed, eval_dataset=args.eval_dataset,
                 eval_limit=args.eval_limit, eval_degradation=args.eval_degradation, sensitivity=args.sensitivity,
                 sensitivity_images=args.sensitivity_images, data_root=args.data_root, seed=args.seed,
                 overwrite=args.overwrite, progress=not args.quiet)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Standalone entry point (``python -m quantize.cli MODEL ...``); 2 on user errors."""
    parser = add_arguments(argparse.ArgumentParser(prog="zoo quantize", description=__doc__.split("\n")[0]))
    args = parser.parse_args(argv)
    try:
        return cmd_quantize(args)
    except ZooError as err:
        print(f"zoo quantize: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
