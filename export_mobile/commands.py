"""``zoo export`` and ``zoo run``: argument parsing and printing only (the work is in
:mod:`export_mobile.api`, :mod:`export_mobile.matrix` and :mod:`export_mobile.runners`).

``COMMANDS`` declares both to the ``zoo`` command (:mod:`zoo_cli.main`), which hands the arguments
after the subcommand name to :func:`export_main` / :func:`run_main`; both return the exit status
(2 for a :class:`ZooError`, printed as one line).
"""

from __future__ import annotations

import argparse
import sys
import time

from zoo.commands import Command
from zoo.errors import ZooError

__all__ = ["COMMANDS", "export_main", "run_main", "build_export_parser", "build_run_parser"]


def _key_value(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    key, value = text.split("=", 1)
    return key.strip(), value.strip()


def build_export_parser() -> argparse.ArgumentParser:
    from export_mobile.targets import PRECISIONS, target_names

    parser = argparse.ArgumentParser(
        prog="zoo export",
        description="Export a model to a mobile format (artifact + manifest.json in -o DIR), or with --matrix "
                    "build every model x target x precision and print the coverage table.")
    parser.add_argument("model", nargs="?", help="zoo model name (see `zoo list`)")
    parser.add_argument("--target", help=f"one of {', '.join(target_names())}")
    parser.add_argument("--precision", help=f"one of {', '.join(PRECISIONS)} (each target offers some)")
    parser.add_argument("--tile", help="fixed input size HxW in pixels, e.g. 256x256 (a multiple of the model's "
                                       "size multiple); photos are restored tiled")
    parser.add_argument("--overlap", type=int, help="tile overlap recorded for apps (default: the model's, capped "
                                                    "below tile/2)")
    parser.add_argument("--weights", help="checkpoint (.safetensors or official .pth) instead of the shipped weights")
    parser.add_argument("--untrained", action="store_true",
                        help="export random weights (pipeline/numeric checks only; the manifest says so)")
    parser.add_argument("--calibration", help="int8: calibrate here (PTQ) on training images: auto, urban100, bundled "
                                              "or a folder (never an evaluation set); without it, a model that ships "
                                              "QAT int8 state for the target's recipe (zoo info) uses that")
    parser.add_argument("--calib-images", type=int, help="int8: number of calibration crops (default 32; 8 per "
                                                             "model for --matrix)")
    parser.add_argument("--quantized", help="int8: a .pt2 written by `zoo quantize` (instead of --calibration)")
    parser.add_argument("--mixed", help="int8 with --calibration: layers kept in float, e.g. first-last (default: "
                                        "none, every layer int8)")
    parser.add_argument("--data-root", help="folder holding the datasets (default: $ZOO_DATA_ROOT, ../shared/datasets)")
    parser.add_argument("--dynamic", action="store_true", help="dynamic height/width (only where the target supports it)")
    parser.add_argument("--no-rewrite", dest="rewrite", action="store_false",
                        help="export the model as written, without the exact export-friendly rewrites")
    parser.add_argument("--no-verify", dest="verify", action="store_false",
                        help="do not run the artifact against PyTorch after building it")
    parser.add_argument("--option", action="append", type=_key_value, default=[], metavar="KEY=VALUE",
                        help="target option, e.g. compute_units=cpu_and_ne (coreml, executorch-coreml), "
                             "layout=NHWC (tflite), soc=SM8650 (executorch-qnn); a name the target does not "
                             "read is refused with the ones it does (docs/export.md)")
    parser.add_argument("-o", "--output", help="export folder (one artifact + manifest.json); with --matrix the "
                                               "root folder of all cells")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    matrix = parser.add_argument_group("matrix")
    matrix.add_argument("--matrix", action="store_true", help="build every model x target x precision it can")
    matrix.add_argument("--models", help="comma-separated models (default: all exportable models)")
    matrix.add_argument("--targets", help="comma-separated targets (default: all)")
    matrix.add_argument("--precisions", help="comma-separated precisions (default: each target's)")
    matrix.add_argument("--json", help="matrix rows as JSON (default: OUTPUT/matrix.json)")
    matrix.add_argument("--resume", action="store_true",
                        help="keep the cells an earlier (interrupted) matrix in the same folder built")
    return parser


def _split(text: str | None) -> list[str] | None:
    return [part.strip() for part in text.split(",") if part.strip()] if text else None


def _progress_printer():
    """``say(step, detail)`` printing ``[  12.3 s] step: detail`` on stderr (seconds since the start)."""
    started = time.perf_counter()

    def say(step: str, detail: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f} s] {step}: {detail}", file=sys.stderr, flush=True)

    return say


def _refuse_unused_int8_options(args) -> None:
    """Refuse int8 options an export would ignore: any of them on a float export, and the
    calibration ones next to --quantized (whose int8 model is used as it is)."""
    given = [flag for flag, value in (("--calibration", args.calibration), ("--calib-images", args.calib_images),
                                      ("--quantized", args.quantized), ("--mixed", args.mixed)) if value is not None]
    if given and args.precision in ("fp32", "fp16"):
        raise ZooError(f"{', '.join(given)} appl{'ies' if len(given) == 1 else 'y'} only to int8 exports, and this "
                       f"one is {args.precision}",
                       f"drop {' '.join(given)}, or pass --precision int8")
    ignored = [flag for flag in given if flag != "--quantized"]
    if args.quantized is not None and ignored:
        raise ZooError(f"--quantized takes its int8 model as it is, so {', '.join(ignored)} would be ignored",
                       f"drop {' '.join(ignored)} (or drop --quantized to calibrate here)")


#: Flags only a single export reads: (flag, attribute, its default, what every --matrix cell does instead).
#: The matrix spans several models and targets, and --resume reuses its rows, so none is passed on.
_SINGLE_EXPORT_FLAGS = (
    ("--weights", "weights", None, "exports each model's shipped weights, random where it ships none"),
    ("--untrained", "untrained", False, "exports each model's shipped weights, random where it ships none"),
    ("--overlap", "overlap", None, "records each model's own tile overlap"),
    ("--quantized", "quantized", None, "calibrates its int8 cells here, with --calibration and --calib-images"),
    ("--mixed", "mixed", None, "quantizes every layer of its int8 cells"),
    ("--dynamic", "dynamic", False, "builds every cell at the fixed --tile"),
    ("--no-verify", "verify", True, "runs every cell against PyTorch: that comparison is its check"),
)

#: Flags only --matrix reads.
_MATRIX_FLAGS = (("--models", "models", None), ("--targets", "targets", None), ("--precisions", "precisions", None),
                 ("--json", "json", None), ("--resume", "resume", False))


def _refuse_single_export_flags(args) -> None:
    """Refuse, before anything is built, the flags of a single export that --matrix would ignore."""
    given = [(flag, does) for flag, name, default, does in _SINGLE_EXPORT_FLAGS if getattr(args, name) != default]
    if given:
        flags = [flag for flag, _ in given]
        raise ZooError(f"--matrix would ignore {', '.join(f'{flag} (it {does})' for flag, does in given)}",
                       f"drop {' '.join(flags)}, or export one model alone with "
                       f"{'it' if len(flags) == 1 else 'them'}: zoo export MODEL --target T --precision P "
                       f"{' '.join(flags)} ...")


def _refuse_matrix_flags(args) -> None:
    """Refuse, before anything is built, the --matrix flags a single export would ignore."""
    given = [flag for flag, name, default in _MATRIX_FLAGS if getattr(args, name) != default]
    if given:
        raise ZooError(f"{', '.join(given)} {'is' if len(given) == 1 else 'are'} read only by --matrix, so a single "
                       "export would ignore " + ("it" if len(given) == 1 else "them"),
                       f"add --matrix to build the coverage table, or drop {' '.join(given)} "
                       "(a single export takes MODEL --target T --precision P)")


def _options(pairs: list[tuple[str, str]]) -> dict[str, str]:
    """``--option`` pairs as a dict; a name given twice is refused (the first value would be lost)."""
    options: dict[str, str] = {}
    for key, value in pairs:
        if key in options and options[key] != value:
            raise ZooError(f"--option {key} is given twice ({options[key]}, {value})", f"pass --option {key} once")
        options[key] = value
    return options


def _export(args) -> int:
    from export_mobile.api import export_model
    from zoo.atomic import ensure_writable
    from zoo.quiet import c_stderr_filtered

    missing = [flag for flag, value in (("MODEL", args.model), ("--target", args.target),
                                        ("--precision", args.precision), ("--tile", args.tile),
                                        ("-o", args.output)) if not value]
    if missing:
        raise ZooError(f"zoo export needs {', '.join(missing)}",
                       "e.g. zoo export hinet-lite --target executorch-xnnpack --precision fp32 --tile 256x256 -o out/")
    _refuse_unused_int8_options(args)
    options = _options(args.option)
    output = ensure_writable(args.output, "export folder", kind="renamed folder", fix="choose another -o")
    say = None if args.quiet else _progress_printer()
    with c_stderr_filtered():  # ExecuTorch's runtime prints ARM cpuinfo probes from C++
        outcome = export_model(args.model, args.target, args.precision, args.tile, output, weights=args.weights,
                               untrained=args.untrained, overlap=args.overlap, calibration=args.calibration,
                               calibration_images=32 if args.calib_images is None else args.calib_images,
                               quantized=args.quantized,
                               data_root=args.data_root, mixed=args.mixed, dynamic=args.dynamic, rewrite=args.rewrite,
                               verify=args.verify, options=options, progress=say)
    if say is not None:
        say("done", f"{outcome.folder}")
    manifest = outcome.manifest
    backend = manifest["backend"]
    print(f"wrote {outcome.artifact} ({manifest['artifact']['bytes'] / 1e6:.2f} MB, sha256 "
          f"{manifest['artifact']['sha256'][:16]}...) and {outcome.folder / 'manifest.json'}")
    if outcome.replaced:
        print(f"replaced the earlier export {outcome.replaced}")
    if backend["delegate"]:
        print(f"delegate {backend['delegate']}: {backend['partitions']} partition(s), "
              f"{len(backend['ops_outside_delegate'])} operator(s) outside")
        for entry in backend["ops_outside_delegate"][:10]:
            print(f"  outside: {entry}")
    verification = manifest.get("verification")
    if verification:
        if verification["ran"]:
            psnr = verification["psnr_db"]
            print(f"vs {verification['reference']}: max abs error {verification['max_abs_error']}, "
                  f"PSNR {'identical' if psnr is None else f'{psnr:.1f} dB'}"
                  + (" (inf/NaN in output!)" if verification["nonfinite"] else ""))
        else:
            print(f"not run here: {verification['reason']}")
    if manifest.get("fp16_range"):
        fp16 = manifest["fp16_range"]
        print(f"fp16 range: max |activation| {fp16['max_abs_activation']:.3g} in {fp16['layer']}"
              + (f"; OVERFLOW in {', '.join(fp16['overflowing_layers'])}" if fp16["overflowing_layers"] else ""))
    return 0


def _matrix(args) -> int:
    from export_mobile.matrix import run_matrix

    from zoo.quiet import c_stderr_filtered

    if args.model:
        raise ZooError("--matrix takes --models, not a MODEL argument", f"use --models {args.model}")
    for flag, value in (("--target", args.target), ("--precision", args.precision)):
        if value:
            raise ZooError(f"--matrix takes {flag}s, not {flag}", f"use {flag}s {value}")
    if args.option:
        # The cells span targets that read different options (or none), so each builds with its defaults.
        raise ZooError("--matrix builds every target with its default options, so --option would be ignored",
                       "drop --option, or export that target alone: zoo export MODEL --target T --option KEY=VALUE")
    _refuse_single_export_flags(args)
    calibration_flags = [flag for flag, value in (("--calibration", args.calibration),
                                                  ("--calib-images", args.calib_images)) if value is not None]
    if calibration_flags and args.precisions and "int8" not in _split(args.precisions):
        raise ZooError(f"{', '.join(calibration_flags)} calibrate{'s' if len(calibration_flags) == 1 else ''} int8 "
                       f"cells, and --precisions {args.precisions} builds none",
                       f"drop {' '.join(calibration_flags)}, or add int8 to --precisions")
    with c_stderr_filtered():
        rows = run_matrix(_split(args.models), _split(args.targets), _split(args.precisions), args.tile or 64,
                          args.output or "exports/matrix", calibration=args.calibration or "auto",
                          calibration_images=args.calib_images or 8,
                          data_root=args.data_root, rewrite=args.rewrite, json_path=args.json, resume=args.resume)
    return 0 if rows else 1


def export_main(argv: list[str] | None = None) -> int:
    """``zoo export ...``; returns the exit status (2 on a user error)."""
    args = build_export_parser().parse_args(argv)
    try:
        if args.matrix:
            return _matrix(args)
        _refuse_matrix_flags(args)
        if args.dynamic and not args.target:
            raise ZooError("--dynamic needs --target", "name the target")
        return _export(args)
    except ZooError as err:
        print(f"zoo: error: {err}", file=sys.stderr)
        return 2


def build_run_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zoo run",
        description="Restore photos with an exported artifact (the exact file an app ships), tiled as the "
                    "manifest says; the artifact's sha256 is checked first.")
    parser.add_argument("artifact", help="export folder, artifact file, or manifest.json")
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, or folders (each of their images)")
    parser.add_argument("-o", "--output", required=True,
                        help="output file (.png, .jpg, .tif; one input image) or folder (existing, or ending in /)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def run_main(argv: list[str] | None = None) -> int:
    """``zoo run ARTIFACT INPUT... -o OUT``; returns the exit status (2 on a user error)."""
    from export_mobile.runners import run_artifact
    from zoo.quiet import c_stderr_filtered

    args = build_run_parser().parse_args(argv)
    try:
        with c_stderr_filtered():  # ExecuTorch's runtime prints ARM cpuinfo probes from C++
            records = run_artifact(args.artifact, args.inputs, args.output, overwrite=args.overwrite,
                                   progress=not args.quiet)
    except ZooError as err:
        print(f"zoo: error: {err}", file=sys.stderr)
        return 2
    for record in records:
        for note in record.get("notes", ()):
            print(f"zoo: warning: {note}", file=sys.stderr)
        print(f"{record['input']} -> {record['output']} ({record['width']}x{record['height']}, "
              f"{record['seconds']:.2f} s, {record['target']} {record['precision']})")
    return 0


COMMANDS = (
    Command("export", "export to ExecuTorch, Core ML, TFLite or ONNX with a manifest (zoo export --help)",
            main="export_mobile.commands:export_main"),
    Command("run", "restore photos with an exported artifact (zoo run --help)", main="export_mobile.commands:run_main"),
)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(export_main())
