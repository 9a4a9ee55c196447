"""Per-operator profile of an ExecuTorch ``.pte`` on this machine (ETDump + Inspector).

:func:`profile_operators` loads the program with the ExecuTorch Python runtime with ETDump on
(``_load_for_executorch(path, enable_etdump=True)``), runs it, writes the ETDump
(``write_etdump_result_to_file``) and reads it back with ``executorch.devtools.Inspector``. The
pip wheel (executorch 1.5.1) records every portable kernel (``native_call_<op>``) and, inside the
XNNPACK delegate, every XNNPACK operator (e.g. ``Convolution (NHWC, QD8, F32, QC8W) IGEMM #3``);
instances of one operator type (``#N``) are summed. Delegate-call and method overhead not spent in
any operator are listed as their own rows, so the shares add up to about 1. No ETRecord is needed.

Run it by hand::

    python -m measure.profile exports/lite-int8 --runs 10 [--json results/profile.json]

``--json`` writes a ``bench`` results record holding ``operators`` (and no latency: profiling adds a
little time per operator, so ``zoo bench`` measures the latency to report) that ``zoo report``
shows. Timings are milliseconds.
"""

from __future__ import annotations

import argparse
import re
import tempfile
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Sequence

from zoo.errors import ZooError

__all__ = ["profile_operators", "operators_from_events", "profile_record", "main"]

_EXECUTE = "Method::execute"
_DELEGATE_CALL = "DELEGATE_CALL"


def _load_input(artifact: Path, input, manifest: dict | None):
    """A float32 NCHW tensor: ``input`` itself, a shape (random in [0, 1], seed 0) or the manifest's input shape."""
    import torch

    if isinstance(input, torch.Tensor):
        return input.to(torch.float32).contiguous()
    if input is None:
        if manifest is None:
            raise ZooError(f"{artifact.name} has no manifest.json beside it to give its input shape",
                           "pass input= (a tensor or a shape such as (1, 3, 64, 64))")
        input = manifest["inputs"][0]["shape"]
    generator = torch.Generator().manual_seed(0)
    return torch.rand(tuple(int(n) for n in input), generator=generator)


def _resolve(artifact_path: str | Path) -> tuple[Path, dict | None]:
    """The .pte file and its manifest (checked against its sha256) when one is beside it."""
    from export_mobile.manifest import manifest_path_for
    from export_mobile.runners import verify_artifact

    path = Path(artifact_path)
    if manifest_path_for(path).is_file():
        manifest, path = verify_artifact(path)
        if manifest["artifact"]["format"] != "pte":
            raise ZooError(f"{path.name} is a {manifest['target']} artifact; operator profiles need an ExecuTorch "
                           ".pte", "export with an executorch-* target")
        return path, manifest
    if path.suffix != ".pte" or not path.is_file():
        raise ZooError(f"{path} is not an ExecuTorch .pte file or export folder", "pass a folder written by zoo export")
    return path, None


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def _event_times(event_blocks, warmup: int):
    """From the Inspector's events, warm-up runs dropped: per-run times (ms) summed per operator
    name, instances per forward pass, whether each is delegated, and the per-run
    ``Method::execute`` and delegate-call times."""
    times: dict[str, list[float]] = {}
    calls: dict[str, int] = defaultdict(int)
    delegated: dict[str, bool] = {}
    totals: dict[str, list[float]] = {_EXECUTE: [], _DELEGATE_CALL: []}

    def add(into: list[float], values: list[float]) -> list[float]:
        values = values[warmup:]
        return [a + b for a, b in zip(into, values)] if into else list(values)

    for block in event_blocks:
        for event in block.events:
            if event.perf_data is None:
                continue
            raw = list(event.perf_data.raw)
            if event.name in totals:
                totals[event.name] = add(totals[event.name], raw)
            elif event.is_delegated_op or event.name.startswith("native_call_"):
                name = re.sub(r" #\d+$", "", event.name.removeprefix("native_call_"))
                times[name] = add(times.get(name, []), raw)
                calls[name] += 1
                delegated[name] = bool(event.is_delegated_op)
    return times, calls, delegated, totals[_EXECUTE], totals[_DELEGATE_CALL]


def operators_from_events(event_blocks, warmup: int = 0) -> tuple[list[dict], list[float]]:
    """The operator rows (see :func:`profile_operators`) and per-run ``Method::execute`` times (ms)
    from an Inspector's ``event_blocks``; ``warmup`` first runs dropped. Empty when nothing ran."""
    times, calls, flags, execute, delegate_calls = _event_times(event_blocks, warmup)
    if not execute:
        return [], []
    per_forward = _mean(execute)
    rows = {name: _mean(values) for name, values in times.items()}
    delegated_ms = sum(ms for name, ms in rows.items() if flags[name])
    overheads = {"delegate call overhead": (_mean(delegate_calls) - delegated_ms if delegate_calls else 0.0, True)}
    overheads["runtime overhead (outside operators)"] = (
        per_forward - sum(rows.values()) - max(0.0, overheads["delegate call overhead"][0]), False)
    for name, (ms, is_delegated) in overheads.items():
        if ms > 0:
            rows[name], flags[name], calls[name] = ms, is_delegated, 0
    operators = [{"name": name, "calls": calls[name], "total_ms": ms,
                  "share": min(1.0, ms / per_forward) if per_forward > 0 else 0.0, "delegated": flags[name]}
                 for name, ms in sorted(rows.items(), key=lambda item: -item[1])]
    return operators, execute


def profile_operators(artifact_path: str | Path, input=None, runs: int = 10, *, warmup: int = 1,
                      with_latency: bool = False):
    """Profile an ExecuTorch artifact operator by operator on this machine's CPU.

    ``artifact_path``: an export folder, its ``.pte`` (sha256 checked against manifest.json) or a
    bare ``.pte``. ``input``: a float32 NCHW tensor, a shape, or None for the manifest's input
    shape (uniform random in [0, 1], seed 0). ``runs`` timed forward passes after ``warmup``.

    Returns a list of ``{name, calls, total_ms, share, delegated}`` dicts, slowest first:
    ``total_ms`` = mean milliseconds per forward pass summed over the operator's ``calls``
    instances, ``share`` = fraction of the whole forward pass (``Method::execute``). With
    ``with_latency=True`` returns ``(operators, per-run execute times in ms)``.

    Raises :class:`ZooError` when the runtime cannot load the program or ETDump has no events.
    """
    if runs < 1 or warmup < 0:
        raise ZooError("profile needs runs >= 1 and warmup >= 0", "pass e.g. runs=10, warmup=1")
    path, manifest = _resolve(artifact_path)
    tensor = _load_input(path, input, manifest)
    try:
        from executorch.devtools import Inspector
        from executorch.extension.pybindings.portable_lib import _load_for_executorch
    except ImportError as err:
        raise ZooError(f"the ExecuTorch Python runtime is not installed ({err})",
                       "pip install executorch (the zoo pins the version in pyproject.toml)") from None
    try:
        module = _load_for_executorch(str(path), enable_etdump=True, debug_buffer_size=0)
        for _ in range(warmup + runs):
            module.forward((tensor,))
    except RuntimeError as err:
        raise ZooError(f"ExecuTorch could not run {path.name} ({err})",
                       "check the input shape against the manifest; re-export the artifact") from None
    with tempfile.TemporaryDirectory(prefix="zoo-etdump-") as tmp:
        etdump = Path(tmp) / "profile.etdp"
        module.write_etdump_result_to_file(str(etdump), None)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Output Buffer not found": no debug buffer was asked for
            inspector = Inspector(etdump_path=str(etdump))
        operators, execute = operators_from_events(inspector.event_blocks, warmup)
    if not execute:
        raise ZooError(f"the ETDump of {path.name} has no Method::execute events",
                       "this ExecuTorch build has no event tracer; profile on a build with ETDump enabled")
    return (operators, execute) if with_latency else operators


def profile_record(artifact_path: str | Path, input=None, runs: int = 10, *, warmup: int = 1) -> dict:
    """A ``bench`` results record holding ``operators`` = :func:`profile_operators` and no
    ``latency_ms`` (profiling slows every operator a little: ``zoo bench`` measures the latency to
    report); the median ``Method::execute`` time (ms, ETDump's clock) is in ``notes``."""
    from importlib.metadata import version

    from measure.results import artifact_info, host_info, latency_summary, new_record

    path, manifest = _resolve(artifact_path)
    tensor = _load_input(path, input, manifest)
    operators, execute = profile_operators(path, tensor, runs, warmup=warmup, with_latency=True)
    artifact = artifact_info(manifest) if manifest else None  # with its quantization provenance
    batch, _channels, height, width = tensor.shape
    return new_record(
        "bench", manifest["model"]["name"] if manifest else path.stem,
        {"name": "executorch", "version": version("executorch"), "device": "cpu",
         "delegate": manifest["backend"].get("delegate") if manifest else None,
         "precision": manifest["precision"] if manifest else None},
        host_info(), artifact=artifact, input={"height": int(height), "width": int(width), "batch": int(batch)},
        operators=operators,
        notes=["operator profile: ExecuTorch Python runtime with ETDump on, median Method::execute "
               f"{latency_summary(execute)['median']:.3f} ms over {len(execute)} runs (after {warmup} warm-up)"])


def main(argv: Sequence[str] | None = None) -> int:
    """``zoo profile ARTIFACT`` (also ``python -m measure.profile``): print the slowest operators (and write
    a record); returns the exit status."""
    from measure.results import results_document, write_results

    parser = argparse.ArgumentParser(prog="zoo profile",
                                     description="Per-operator profile of an ExecuTorch artifact (ETDump + Inspector)")
    parser.add_argument("artifact", help="export folder or .pte")
    parser.add_argument("--runs", type=int, default=10, help="timed forward passes (default 10)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed passes first (default 1)")
    parser.add_argument("--top", type=int, default=15, help="operators printed (default 15)")
    parser.add_argument("--json", type=Path, help="write a results file with a bench record holding the profile")
    args = parser.parse_args(argv)
    from zoo.quiet import c_stderr_filtered

    with c_stderr_filtered():  # ExecuTorch's runtime prints ARM cpuinfo probes from C++
        record = profile_record(args.artifact, runs=args.runs, warmup=args.warmup)
    print(f"{record['model']}: {record['notes'][0]}")
    for op in record["operators"][:args.top]:
        print(f"{op['total_ms']:9.3f} ms {op['share'] * 100:5.1f} %  x{op['calls']:<3} "
              f"{'delegated ' if op['delegated'] else 'portable  '}{op['name']}")
    if args.json:
        write_results(args.json, results_document([record], "zoo profile"))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    from zoo.errors import ZooError as _ZooError
    import sys

    try:
        sys.exit(main())
    except _ZooError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
