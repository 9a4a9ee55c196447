"""Known-harmless library noise, silenced in one place (``zoo --verbose`` shows it all).

A first int8 export printed about 25 lines around its three real ones: torchao failing to load
kernels built for another Python or GPU, torch's ``LeafSpec`` FutureWarning once per traced
module, a pytree registration notice, and the C++ cpuinfo probe of ExecuTorch's runtime reading
ARM-only files. None of them is something a zoo user can act on. Each filter below matches one
message exactly, so a new or real warning from the same library still shows.

:func:`quiet_library_noise` is called once by the ``zoo`` command (:mod:`zoo_cli.main`), never
at import: library callers and tests keep every warning. Lines that C++ code writes straight to
file descriptor 2 cannot be filtered from Python's side; :func:`c_stderr_filtered` filters them
only around the calls that print them (exporting and running artifacts).
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import warnings
from contextlib import contextmanager
from typing import Iterator

#: Set by ``zoo --verbose`` (or ZOO_VERBOSE=1): every library message is shown.
VERBOSE_ENV = "ZOO_VERBOSE"

#: Python warnings: (category, regex the message starts with, why it is harmless).
WARNINGS = (
    (FutureWarning, r"`isinstance\(treespec, LeafSpec\)` is deprecated",
     "torch deprecates a pytree class that torchao/executorch still use internally; nothing to change here"),
)

#: Log records: logger name ("" = the root logger) -> (regex searched in the message, why it is harmless).
LOG_MESSAGES = {
    "torchao": (r"Failed to load .*_C.*\.so",
                "optional CUDA/cutlass kernels built for another Python or GPU; the CPU paths the zoo uses need none"),
    "torch.utils._pytree": (r"is an Enum subclass and is now natively supported",
                            "a deprecation notice about torchao's own enum registration"),
    "torch.onnx._internal.exporter._registration": (r"torchvision is not installed",
                                                    "torchvision operators, which no zoo model uses"),
    "": (r"is converted in training mode",
         "litert_torch checks the traced PT2E graph's training flag; the zoo's models are in eval mode"),
}

#: Lines C++ writes to stderr (regexes matched at the line start).
C_STDERR_LINES = (
    r"\[cpuinfo_utils\.cpp:\d+\]",  # ExecuTorch's runtime probing ARM-only /sys files on any CPU
)

_quiet = False


class _MessageFilter(logging.Filter):
    def __init__(self, pattern: str):
        super().__init__()
        self.pattern = re.compile(pattern)

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.pattern.search(record.getMessage())


def verbose_requested() -> bool:
    """True when ZOO_VERBOSE is set to anything but empty or 0."""
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def quiet_library_noise(verbose: bool = False) -> bool:
    """Install the filters of :data:`WARNINGS` and :data:`LOG_MESSAGES` for this process (once).

    With ``verbose`` (or ZOO_VERBOSE set) nothing is filtered. Returns whether filtering is on;
    :func:`c_stderr_filtered` filters only after this returned True.
    """
    global _quiet
    if verbose or verbose_requested():
        return False
    if not _quiet:
        for category, message, _why in WARNINGS:
            warnings.filterwarnings("ignore", message=message, category=category)
        for name, (pattern, _why) in LOG_MESSAGES.items():
            logging.getLogger(name or None).addFilter(_MessageFilter(pattern))
        _quiet = True
    return True


@contextmanager
def c_stderr_filtered() -> Iterator[None]:
    """Within the block, drop the :data:`C_STDERR_LINES` that C++ code writes to file descriptor 2.

    Only after :func:`quiet_library_noise` (else, or where fd 2 cannot be redirected, it does
    nothing). fd 2 is pointed at a pipe whose lines a thread copies to the real stderr, minus the
    noise; progress bars (lines ending in ``\\r``) pass through as they come.
    """
    if not _quiet:
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    read_end, write_end = os.pipe()
    noise = re.compile("|".join(C_STDERR_LINES))
    thread = threading.Thread(target=_copy_lines, args=(read_end, saved, noise), daemon=True)
    thread.start()
    os.dup2(write_end, 2)
    os.close(write_end)
    try:
        yield
    finally:
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(saved, 2)  # closes the pipe's last writer: the thread sees the end and stops
        thread.join(timeout=5)
        os.close(saved)


def _copy_lines(read_end: int, destination: int, noise: re.Pattern) -> None:
    pending = b""
    with os.fdopen(read_end, "rb", buffering=0) as pipe:
        while True:
            chunk = pipe.read(65536)
            if not chunk:
                break
            pending += chunk
            lines = re.split(rb"(?<=[\r\n])", pending)
            pending = lines.pop()  # the unfinished last line ("" when the chunk ended a line)
            for line in lines:
                if not noise.match(line.decode("utf-8", "replace")):
                    os.write(destination, line)
    if pending and not noise.match(pending.decode("utf-8", "replace")):
        os.write(destination, pending)
