"""The subcommands measure/ offers to the ``zoo`` command, and the measured rows it adds to ``zoo info``.

Each command is a passthrough: its module's ``main(argv)`` parses its own arguments (``--help``
included) and is imported only when the command runs, so ``zoo --help`` imports none of them.
"""

from __future__ import annotations

import argparse

from zoo.commands import CardSection, Command

COMMANDS = (
    Command("bench", "latency of PyTorch and exported artifacts: table + JSON", main="measure.bench:main"),
    Command("check", "accuracy of an artifact on an evaluation set vs the float model", main="measure.check:main"),
    Command("baseline", "float PyTorch reference: accuracy and CUDA (or CPU) latency", main="measure.baseline:main"),
    Command("report", "merge results files into a Markdown + HTML report", main="measure.report:main"),
    Command("device", "run the demo app's benchmark on a phone (adb) or import results", main="measure.device:main"),
    Command("profile", "slowest operators of an ExecuTorch artifact (ETDump)", main="measure.profile:main"),
    Command("benchmark", "every shipped model of a task vs classical references (CBM3D, RL, Wiener, bicubic)",
            main="measure.benchmark:main"),
)


def _measured_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--results", help="results store read for measured rows (default: $ZOO_RESULTS, else results/)")


def _measured_rows(card, args: argparse.Namespace) -> list[dict]:
    from measure.measured import model_measured

    return model_measured(card, args.results)


def _measured_lines(rows: list[dict]) -> list[str]:
    from measure.measured import format_measured

    return format_measured(rows) if rows else ["measured: no artifact results yet"]


#: ``zoo info``'s measured rows: accuracy and latency of the model's artifacts from the results store.
CARD_SECTIONS = (CardSection("measured", _measured_arguments, _measured_rows, _measured_lines),)
