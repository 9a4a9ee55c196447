"""The ``zoo`` console script: one parser built from the ``COMMANDS`` of each package's ``commands.py``.

The packages are read in flow order, so ``zoo --help`` lists zoo/'s commands first and measure/'s
last. Parsing and printing only; each command imports its library code when it runs.

Errors: a :class:`ZooError` (a user error) and an ``OSError`` (the environment: permissions, a
full disk) are one line on stderr and exit status 2; ``--verbose`` (anywhere on the command line,
or ZOO_VERBOSE=1) shows the libraries' known-harmless noise (:mod:`zoo.quiet`) and tracebacks.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from zoo.commands import Command, zoo_commands
from zoo.errors import ZooError
from zoo.quiet import quiet_library_noise, verbose_requested

#: The packages that declare subcommands, in the order the data flows through them.
PACKAGES = ("zoo", "quantize", "export_mobile", "measure")


def commands() -> list[Command]:
    """Every subcommand, in flow order; names are unique (a clash is a programming error)."""
    modules = [importlib.import_module(f"{package}.commands") for package in PACKAGES]
    # zoo info shows the rows later packages add to a card (measure's measured results).
    sections = [section for module in modules for section in getattr(module, "CARD_SECTIONS", ())]
    # zoo train / zoo distill run the training phases later packages offer (quantize/: QAT).
    phases = {section: factory for module in modules for section, factory in getattr(module, "TRAINING_PHASES", {}).items()}
    found = [*zoo_commands(sections, phases), *(command for module in modules[1:] for command in module.COMMANDS)]
    names = [command.name for command in found]
    clashes = sorted({name for name in names if names.count(name) > 1})
    if clashes:
        raise RuntimeError(f"subcommands declared twice: {', '.join(clashes)}")
    return found


def build_parser(available: list[Command] | None = None) -> argparse.ArgumentParser:
    """The ``zoo`` parser: one subparser per command; a passthrough's arguments stay unparsed in ``rest``."""
    parser = argparse.ArgumentParser(prog="zoo", description="Mobile image-restoration model zoo")
    # Taken out of argv by main() wherever it stands; declared here for --help.
    parser.add_argument("--verbose", action="store_true",
                        help="show the libraries' warnings and notices (and tracebacks); also ZOO_VERBOSE=1")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in commands() if available is None else available:
        if command.main:
            p = sub.add_parser(command.name, help=command.help, add_help=False)
            p.add_argument("rest", nargs=argparse.REMAINDER)
            p.set_defaults(func=lambda args, command=command: command.main_function()(args.rest))
        else:
            p = sub.add_parser(command.name, help=command.help)
            if command.add_arguments:
                command.add_arguments(p)
            p.set_defaults(func=command.run)
    return parser


def take_verbose(argv: list[str]) -> tuple[list[str], bool]:
    """``argv`` without the ``--verbose`` flags that stand before a ``--``, and whether there was one."""
    end = argv.index("--") if "--" in argv else len(argv)
    kept = [arg for index, arg in enumerate(argv) if index >= end or arg != "--verbose"]
    return kept, len(kept) != len(argv)


def describe_os_error(err: OSError) -> str:
    """One line for an ``OSError`` that reached the CLI: what failed, on which path, and the fix."""
    paths = " -> ".join(str(name) for name in (err.filename, err.filename2) if name is not None)
    reason = err.strerror or str(err) or type(err).__name__
    return (f"cannot {'access ' + paths + ': ' if paths else 'complete the command: '}{reason}; check the path, "
            "its permissions and the free disk space (zoo --verbose shows the traceback)")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``zoo`` console script; returns the exit status (2 for user errors)."""
    argv, verbose = take_verbose(sys.argv[1:] if argv is None else list(argv))
    verbose = verbose or verbose_requested()
    quiet_library_noise(verbose)
    available = commands()
    passthrough = {command.name: command for command in available if command.main}
    try:
        if argv and argv[0] in passthrough:
            # Handed over before argparse sees it, so the command's own --help and options apply.
            return passthrough[argv[0]].main_function()(argv[1:])
        args = build_parser(available).parse_args(argv)
        return args.func(args)
    except ZooError as err:
        print(f"zoo: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `zoo list | head`: the reader stopped reading; nothing to report
        try:
            sys.stdout = open(os.devnull, "w")  # so the interpreter's final flush cannot fail again
        except OSError:
            pass
        return 0
    except OSError as err:  # the environment, not the zoo: one line instead of a traceback
        if verbose:
            raise
        print(f"zoo: error: {describe_os_error(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("zoo: interrupted", file=sys.stderr)
        return 130
