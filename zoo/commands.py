"""The subcommands zoo/ offers to the ``zoo`` command, and the :class:`Command` record every package uses.

Each package of the flow (zoo, quantize, export_mobile, measure) declares its subcommands in its own
``commands.py`` as a ``COMMANDS`` tuple; :mod:`zoo_cli.main` assembles them into one parser. This
module only parses arguments and prints: the work lives in library functions that tests also call,
imported when the command runs, so ``zoo --help`` and ``zoo list`` import torch only.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence


@dataclass(frozen=True)
class Command:
    """One ``zoo`` subcommand.

    Either ``run`` (parsed arguments -> exit status) with ``add_arguments`` (adds the options to
    the subparser; None for a command without options), or ``main``: ``"module:function"`` of a
    passthrough that parses its own ``argv`` (its ``--help`` included) and returns the exit status;
    the module is imported only when the command runs. A :class:`~zoo.errors.ZooError` escaping
    either becomes one line, exit status 2.
    """

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], object] | None = None
    run: Callable[[argparse.Namespace], int] | None = None
    main: str | None = None

    def __post_init__(self):
        if (self.main is None) == (self.run is None):
            raise ValueError(f"command {self.name!r} needs exactly one of run= and main=")

    def main_function(self) -> Callable[[list[str]], int]:
        """The passthrough ``main(argv)`` (imports its module)."""
        module, _, function = self.main.partition(":")
        return getattr(importlib.import_module(module), function)


@dataclass(frozen=True)
class CardSection:
    """Rows a later package adds to ``zoo info`` (measure adds the measured results of artifacts).

    zoo/ knows no section by name: :mod:`zoo_cli.main` hands them to :func:`zoo_commands`.
    ``add_arguments`` adds the section's options to ``zoo info``; ``rows(card, args)`` returns the
    JSON-ready rows (the ``key`` entry of ``zoo info --json``); ``lines(rows)`` the printed lines.
    """

    key: str
    add_arguments: Callable[[argparse.ArgumentParser], object]
    rows: Callable[[object, argparse.Namespace], list]
    lines: Callable[[list], list[str]]


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
    header = f"{'model':<18} {'task':<16} {'variant':<16} {'params(M)':>9} {'GMACs@256':>9}  weights"
    print(header)
    print("-" * len(header))
    for card in cards:
        params, macs = _model_size(card)
        weights = "zero-shot" if card.zero_shot else ("shipped" if card.has_weights else "none (--weights)")
        if card.shipped_qat_recipes:
            weights += f" + QAT int8 ({', '.join(card.shipped_qat_recipes)})"
        print(f"{card.name:<18} {card.task:<16} {card.variant[:16]:<16} {params:>9} {macs:>9}  {weights}")
    return 0


def _weights_training(card) -> str | None:
    """The ``training`` text in the header of the card's shipped weights file, if any."""
    if card.zero_shot or not card.has_weights or card.weights_path.suffix != ".safetensors":
        return None
    from zoo.checkpoints import read_metadata
    from zoo.errors import ZooError

    try:
        return read_metadata(card.weights_path).get("training")
    except ZooError:
        return None


def cmd_info(args, sections: Sequence[CardSection] = ()) -> int:
    """``zoo info MODEL [--json]``: the card, then each section's rows."""
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
        # The shipped file's own header says how it was trained (zoo pack writes the whole chain).
        "weights_training": _weights_training(card),
        # zoo export --precision int8 to a target of these recipes uses them (no calibration)
        "qat_int8_weights": {recipe: str(card.qat_weights_path(recipe)) for recipe in card.shipped_qat_recipes}
        or None,
        "official_weights": card.official_weights, "notes": list(card.notes), "results": list(card.results),
    }
    for section in sections:
        info[section.key] = section.rows(card, args)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    listed = {"notes", "results", *(section.key for section in sections)}
    for key, value in info.items():
        if isinstance(value, dict):
            value = ", ".join(f"{name}: {entry}" for name, entry in value.items())
        if key not in listed and value is not None:
            print(f"{key:<22} {value}")
    for note in card.notes:
        print(f"note: {note}")
    for row in card.results:
        print("measured: " + ", ".join(f"{k}={v}" for k, v in row.items()))
    for section in sections:
        for line in section.lines(info[section.key]):
            print(line)
    return 0


def cmd_restore(args) -> int:
    from zoo.inference import restore_files

    records = restore_files(args.model, args.inputs, args.output, weights=args.weights, tile=args.tile,
                            overlap=args.overlap, device=args.device, overwrite=args.overwrite,
                            progress=not args.quiet)
    for record in records:
        for note in record.get("notes", ()):
            print(f"zoo: warning: {note}", file=sys.stderr)
        extra = ""
        if "stop_iteration" in record:
            extra = f", stopped at iteration {record['stop_iteration']}"
        print(f"{record['input']} -> {record['output']} ({record['width']}x{record['height']}, "
              f"{record['seconds']:.2f} s{extra})")
    return 0


def cmd_eval(args) -> int:
    from zoo.atomic import ensure_writable
    from zoo.evaluate import evaluate, format_table

    json_path = args.json or Path("results") / (
        f"eval_{args.model}_{Path(str(args.dataset)).name}_{(args.degradation or 'default').replace(':', '')}.json")
    ensure_writable(json_path, "results file", fix="pass another --json path")  # before the evaluation, not after
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


def cmd_pack(args) -> int:
    """``zoo pack RUN -o FILE``: a run's weights as a shippable float16 file (:func:`zoo.pack.pack_run`)."""
    from zoo.atomic import ensure_writable
    from zoo.pack import pack_run
    from zoo.registry import get_card

    ensure_writable(args.output, "packed weights", fix="choose another -o")
    packed = pack_run(args.source, args.output, weights=args.weights, model_name=args.model,
                      training=args.training, hardware=args.hardware, dtype=args.dtype, overwrite=args.overwrite)
    meta = packed["metadata"]
    print(f"wrote {packed['path']} ({packed['bytes'] / 1e6:.2f} MB, {meta['storage']}) from {meta['source']}")
    print(f"training: {meta['training']}")
    shipped = get_card(packed["model"]).weights_path
    if shipped is not None and shipped.resolve() == Path(packed["path"]).resolve():
        print(f"these are now {packed['model']}'s shipped weights: rerun zoo benchmark for the card's numbers, "
              "and the QAT recipe if the card ships an int8 state")
    else:
        print(f"to ship it: put it in zoo/weights/ and name it in {packed['model']}'s registration (zoo/models/)")
    return 0


def _train(args, *, distill: bool = False, phases: Mapping[str, Callable] | None = None) -> int:
    from zoo.train import run

    if args.out is not None:  # before the data and model are built; the default runs/<name> is the engine's
        from zoo.atomic import ensure_writable

        ensure_writable(args.out, "run folder", kind="folder", fix="pass another --out folder")
    return run(args, distill=distill, phases=dict(phases or {}))


def _add_tiling(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tile", type=int, default=None,
                        help="tile size in input pixels (default: the model's; 0 = whole image at once)")
    parser.add_argument("--overlap", type=int, default=None, help="tile overlap in pixels (default: the model's)")
    parser.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda or cuda:N")


def _info_arguments(parser: argparse.ArgumentParser, sections: Sequence[CardSection]) -> None:
    parser.add_argument("model")
    parser.add_argument("--json", action="store_true", help="print the card as JSON")
    for section in sections:
        section.add_arguments(parser)


def _restore_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, or folders (each of their images)")
    p.add_argument("-o", "--output", required=True,
                   help="output file (.png, .jpg, .tif; one input image) or folder (existing, or ending in /)")
    p.add_argument("--weights", help="checkpoint: .safetensors or an official .pth (loaded strictly)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_tiling(p)


def _eval_arguments(p: argparse.ArgumentParser) -> None:
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


def _demo_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", type=Path, default=Path("demo_out"), help="folder for the results")
    p.add_argument("--limit", type=int, default=6, help="number of bundled photos")
    p.add_argument("--crop", type=int, default=0,
                   help="centre crop size in pixels (0 = whole photos for denoising, 256-pixel crops for "
                        "super-resolution)")


def _pack_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", type=Path, help="a run folder (runs/NAME) or a weights file inside one")
    p.add_argument("-o", "--output", type=Path, required=True,
                   help="the .safetensors file to write, e.g. zoo/weights/<model>.safetensors")
    p.add_argument("--weights", default="best", choices=("best", "final", "final_ema"),
                   help="which of the run's files (default best: the best validation, EMA where kept)")
    p.add_argument("--model", help="refuse unless the run trained this model")
    p.add_argument("--dtype", default="float16", choices=("float16", "float32"),
                   help="storage (default float16: half the size, cast to float32 on load)")
    p.add_argument("--hardware", help="appended to the training text, e.g. '1 thread of a shared 2-core x86-64 CPU'")
    p.add_argument("--training", help="store this training text instead of the one generated from the run chain")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")


def _train_arguments(parser: argparse.ArgumentParser) -> None:
    from zoo.train import add_arguments

    add_arguments(parser)


def zoo_commands(card_sections: Sequence[CardSection] = (),
                 training_phases: Mapping[str, Callable] | None = None) -> tuple[Command, ...]:
    """zoo/'s subcommands; ``card_sections`` are the rows later packages add to ``zoo info``;
    ``training_phases`` (config section -> ``factory(config) -> TrainingPhase``) the training
    extensions they offer to ``zoo train`` / ``zoo distill`` (quantize/: QAT)."""
    sections = tuple(card_sections)
    phases = dict(training_phases or {})
    return (
        Command("list", "list the models: task, size, MACs, weights", run=cmd_list),
        Command("info", "show a model card", add_arguments=lambda p: _info_arguments(p, sections),
                run=lambda args: cmd_info(args, sections)),
        Command("restore", "restore image files with a model (tiled, any size)",
                add_arguments=_restore_arguments, run=cmd_restore),
        Command("eval", "PSNR/SSIM on a benchmark set with a synthetic degradation",
                add_arguments=_eval_arguments, run=cmd_eval),
        Command("demo", "the main job on the bundled photos: denoising, then super-resolution (no downloads needed)",
                add_arguments=_demo_arguments, run=cmd_demo),
        Command("train", "train a model from a YAML experiment config (DDP with torchrun)",
                add_arguments=_train_arguments, run=lambda args: _train(args, phases=phases)),
        Command("distill", "distill a lite student from a teacher (YAML config)",
                add_arguments=_train_arguments, run=lambda args: _train(args, distill=True, phases=phases)),
        Command("pack", "pack a training run's weights (float16, with their training chain) to ship",
                add_arguments=_pack_arguments, run=cmd_pack),
        Command("bench-inr", "zero-shot INR ablation and baselines on CBSD68 crops",
                main="zoo.benchmarks.inr_ablation:main"),
    )


#: zoo/'s subcommands as zoo/ alone offers them (``zoo info`` without later packages' sections).
COMMANDS = zoo_commands()
