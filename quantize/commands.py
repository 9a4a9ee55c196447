"""``zoo quantize``: int8 post-training quantization or QAT of a zoo model for one mobile backend.

    zoo quantize MODEL --backend xnnpack|coreml|tflite --method ptq|qat -o DIR
        [--weights PATH | --untrained] [--tile 256] [--calib-images 32] [--calib-source auto]
        [--degradation SPEC] [--qat-steps 200] [--qat-lr 1e-5] [--qat-batch 4]
        [--mixed first-last|none|NAMES] [--eval-dataset bsd68|none] [--eval-limit N]
        [--sensitivity] [--sensitivity-images 4] [--data-root DIR] [--seed 0] [--overwrite]
    zoo quantize MODEL --backend B [--method qat] --pack RUN_DIR -o zoo/weights/FILE.safetensors [--overwrite]

Argument parsing and printing only: the work is :func:`quantize.api.run_quantize` and, for
``--pack`` (a QAT run's int8 state, float16 weights, to ship with the model),
:func:`quantize.qat_state.pack_qat_state`. ``COMMANDS``
plugs it into the ``zoo`` command (:mod:`zoo_cli.main`); :func:`main` runs it standalone
(``python -m quantize.commands``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from quantize.api import (BACKENDS, DEFAULT_CALIB_IMAGES, DEFAULT_QAT_LR, DEFAULT_QAT_STEPS, QAT_RANGES,
                          QAT_TARGETS)
from zoo.commands import Command
from zoo.errors import ZooError


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``zoo quantize`` arguments to ``parser`` (a subparser of ``zoo``)."""
    parser.add_argument("model", help="model name (zoo list)")
    parser.add_argument("--backend", required=True, choices=BACKENDS, help="mobile backend recipe")
    parser.add_argument("--method", choices=("ptq", "qat"),
                        help="post-training quantization or quantization-aware training (default ptq; qat with --pack)")
    parser.add_argument("-o", "--output", required=True, type=Path,
                        help="folder for the .pt2, sidecar and reports (--pack: the .safetensors file to write)")
    parser.add_argument("--pack", type=Path, metavar="RUN_DIR",
                        help="write the QAT int8 state of a finished QAT run (its quantized_state.safetensors) for "
                             "shipping, weights in float16, to -o (e.g. "
                             "zoo/weights/hinet_lite_s_gaussian_qat_xnnpack.safetensors); MODEL and --backend must be "
                             "the run's")
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


def cmd_pack(args: argparse.Namespace) -> int:
    """``zoo quantize MODEL --backend B --pack RUN_DIR -o FILE``: pack a QAT run's int8 state to ship."""
    from quantize.provenance import provenance_label
    from quantize.qat_state import pack_qat_state
    from zoo.atomic import ensure_writable

    if args.method == "ptq":
        raise ZooError("--pack packs the int8 state of a QAT run, not a PTQ", "drop --method ptq (or pass --method qat)")
    output = ensure_writable(args.output, "packed QAT state", fix="choose another -o")
    packed = pack_qat_state(args.pack, output, model_name=args.model, recipe=args.backend, overwrite=args.overwrite)
    print(f"wrote {packed['path']} ({packed['bytes'] / 1e6:.2f} MB; weights float16, quantizer state float32)")
    print(f"quantization: {provenance_label(packed['provenance'])}")
    from zoo.registry import WEIGHTS_DIR, get_card

    card = get_card(args.model)
    listed = card.qat_weights.get(args.backend)
    if listed and (WEIGHTS_DIR / listed).resolve() == packed["path"].resolve():
        print(f"this is the state {args.model}'s card ships: zoo export {args.model} --precision int8 uses it now "
              f"(measure it again: zoo benchmark {card.task} --models {args.model} --int8)")
    else:
        print(f"to ship it: put it in zoo/weights/ and add qat_weights={{{args.backend!r}: {packed['path'].name!r}}} "
              f"to {args.model}'s ModelCard; zoo export {args.model} --precision int8 then uses it")
    return 0


def cmd_quantize(args: argparse.Namespace) -> int:
    """Run ``zoo quantize`` from parsed arguments; returns the exit status."""
    from quantize.api import run_quantize

    if args.pack is not None:
        return cmd_pack(args)
    run_quantize(args.model, backend=args.backend, method=args.method or "ptq", output_dir=args.output,
                 weights=args.weights, untrained=args.untrained, tile=args.tile, calib_images=args.calib_images,
                 calib_source=args.calib_source, degradation=args.degradation, qat_steps=args.qat_steps,
                 qat_lr=args.qat_lr, qat_batch=args.qat_batch, qat_target=args.qat_target, qat_ranges=args.qat_ranges,
                 mixed=args.mixed, eval_dataset=args.eval_dataset,
                 eval_limit=args.eval_limit, eval_degradation=args.eval_degradation, sensitivity=args.sensitivity,
                 sensitivity_images=args.sensitivity_images, data_root=args.data_root, seed=args.seed,
                 overwrite=args.overwrite, progress=not args.quiet)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Standalone entry point (``python -m quantize.commands MODEL ...``); 2 on user errors."""
    parser = add_arguments(argparse.ArgumentParser(prog="zoo quantize", description=__doc__.split("\n")[0]))
    args = parser.parse_args(argv)
    try:
        return cmd_quantize(args)
    except ZooError as err:
        print(f"zoo quantize: error: {err}", file=sys.stderr)
        return 2


def _qat_phase(config):
    """The QAT training phase for a config's ``quantization`` section (imported when a run needs it)."""
    from quantize.qat_phase import QATPhase

    return QATPhase(config)


#: Training extensions quantize/ offers to ``zoo train`` / ``zoo distill``: config section ->
#: ``factory(config) -> zoo.train.engine.TrainingPhase`` (:mod:`zoo_cli.main` hands them over).
TRAINING_PHASES = {"quantization": _qat_phase}

COMMANDS = (
    Command("quantize", "int8 PTQ/QAT for a mobile backend, with the accuracy drop report",
            add_arguments=add_arguments, run=cmd_quantize),
)


if __name__ == "__main__":
    raise SystemExit(main())
