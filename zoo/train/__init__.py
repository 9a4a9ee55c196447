"""Training and distillation from YAML experiment configs (``zoo train``, ``zoo distill``).

* :mod:`zoo.train.config`: the config dataclasses, strict YAML loading, ``--set`` overrides;
* :mod:`zoo.train.data`: the seeded, seekable stream of training patches and the validation split;
* :mod:`zoo.train.losses`: PSNR / L1 / Charbonnier losses over multi-stage outputs;
* :mod:`zoo.train.engine`: the loop (AMP, validation, the best/final weights) that joins
  :mod:`~zoo.train.models` (building the network), :mod:`~zoo.train.checkpointing` (atomic
  checkpoints, resume), :mod:`~zoo.train.runlog` (log.csv, TensorBoard), :mod:`~zoo.train.ema`
  and :mod:`~zoo.train.distributed` (DDP setup);
* :mod:`zoo.train.distill`: teacher-student distillation with feature adapters.

Training phases (:class:`zoo.train.engine.TrainingPhase`) extend a run from an iteration on;
quantize/ provides quantization-aware training for the ``quantization`` config section, and the
``zoo`` command (:mod:`zoo_cli.main`) hands it to :func:`run` (zoo/ never imports quantize/).

This module only defines the command-line glue and imports torch lazily.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the arguments of ``zoo train`` / ``zoo distill`` to ``parser``; returns it."""
    parser.add_argument("config", help="YAML experiment config (see configs/ and docs/training.md)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                        help="override a config value, e.g. --set optimizer.lr=1e-4 (repeatable; value read as YAML)")
    parser.add_argument("--resume", nargs="?", const=True, default=False, metavar="CHECKPOINT",
                        help="continue the run in --out from its latest checkpoint (or from the given "
                             "checkpoint folder)")
    parser.add_argument("--out", default=None, help="run folder (default: runs/<config name>)")
    parser.add_argument("--stop-at", type=int, default=None, metavar="ITERATION",
                        help="stop with a checkpoint after this many iterations, keeping the full schedule "
                             "(resume later)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def run(args: argparse.Namespace, *, distill: bool = False, phases: dict | None = None) -> int:
    """Run ``zoo train`` (or ``zoo distill``) from parsed arguments; returns the exit status.

    ``phases``: config section -> training-phase factory offered to the run (see
    :func:`zoo.train.engine.train`); the ``zoo`` command passes quantize/'s QAT phase.

    User errors (bad config, missing data, NaN loss, failed checkpoint) raise
    :class:`~zoo.errors.ZooError`, which the CLI prints on one line (exit status 2).
    """
    from zoo.errors import ZooError
    from zoo.train.config import load_config

    if args.stop_at is not None and args.stop_at < 1:  # before the config, data and model are read
        raise ZooError(f"--stop-at {args.stop_at} is not an iteration",
                       "pass a positive iteration, e.g. --stop-at 1000")
    config = load_config(args.config, args.overrides)
    if distill:
        from zoo.train.distill import distill as run_distill

        result = run_distill(config, args.out, resume=args.resume, stop_at=args.stop_at, progress=not args.quiet,
                             phases=phases)
    else:
        if config.distill is not None:
            raise ZooError(f"config {args.config} has a distill section", "run it with `zoo distill`")
        from zoo.train.engine import train

        result = train(config, args.out, resume=args.resume, stop_at=args.stop_at, progress=not args.quiet,
                       phases=phases)
    if result.final_weights is not None:
        print(f"final weights: {result.final_weights}")
        if result.final_ema_weights is not None:
            print(f"final EMA weights: {result.final_ema_weights}")
    for name, path in result.phase_outputs.items():
        print(f"{name.replace('_', ' ')}: {path}")
    if result.best_weights is not None:
        print(f"best validation PSNR {result.best_val_psnr:.2f} dB: {result.best_weights}")
    print(f"throughput: {result.iterations_per_second:.3f} it/s, {result.patches_per_second:.2f} patches/s")
    return 0


def main(argv: list[str] | None = None, *, distill: bool = False) -> int:
    """Stand-alone entry point (``zoo train`` semantics) for callers outside the ``zoo`` CLI."""
    import sys

    from zoo.errors import ZooError

    parser = add_arguments(argparse.ArgumentParser(prog="zoo distill" if distill else "zoo train"))
    args = parser.parse_args(argv)
    try:
        return run(args, distill=distill)
    except ZooError as err:
        print(f"zoo: error: {err}", file=sys.stderr)
        return 2
