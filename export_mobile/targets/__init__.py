"""Export targets by name: ``get_target("executorch-xnnpack")`` -> an object following
:class:`export_mobile.targets.base.ExportTarget`.

Each target lives in one module of this package, imported only when the target is asked for, so
``import export_mobile`` needs torch only and a missing toolchain breaks only its own targets.

How a module provides a target (the registry accepts any of these, looked up in this order):

* a module-level ``TARGETS`` mapping (name -> target) or sequence of targets;
* a module-level ``get_target(name)`` function returning the target;
* any module-level object (or class, instantiated without arguments) whose ``name`` attribute is
  the target name and which has an ``export`` method.

A target whose module is missing or fails to import, or which the module does not define, is
still listed: :func:`get_target` returns an :class:`UnavailableTarget` whose ``available()``
says why, so ``zoo export`` and the matrix report the reason instead of crashing.

Optional attributes a target may define (read with ``getattr`` and these defaults):

* ``int8_recipe``: the ``quantize/`` recipe (``xnnpack``, ``coreml``, ``tflite``) whose PT2E
  model the target lowers for int8 (default: :data:`DEFAULT_INT8_RECIPES`), or ``None`` when
  the target quantizes by itself without calibration (e.g. Core ML weight-only int8);
* ``supports_dynamic``: True when ``--dynamic`` is shown to work (default False);
* ``accepted_options``: the ``--option`` names it reads, name ->
  :class:`~export_mobile.targets.base.TargetOption` (default: none, so every option is refused;
  :func:`~export_mobile.targets.base.check_options`).
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from pathlib import Path

from zoo.errors import ZooError

#: Target name -> module implementing it, in the order tables and ``--help`` list them.
TARGET_MODULES: dict[str, str] = {
    "executorch-xnnpack": "export_mobile.targets.executorch",
    "executorch-coreml": "export_mobile.targets.executorch",
    "executorch-vulkan": "export_mobile.targets.executorch",
    "executorch-qnn": "export_mobile.targets.executorch",
    "coreml": "export_mobile.targets.coreml",
    "tflite": "export_mobile.targets.tflite",
    "onnx": "export_mobile.targets.onnx",
}

#: Precisions any target may offer.
PRECISIONS = ("fp32", "fp16", "int8")

#: Recipe of ``quantize/`` whose PT2E int8 model a target lowers, unless it sets ``int8_recipe``.
DEFAULT_INT8_RECIPES: dict[str, str | None] = {
    "executorch-xnnpack": "xnnpack",
    "executorch-coreml": "coreml",
    "executorch-vulkan": None,
    "executorch-qnn": None,
    "coreml": "coreml",
    "tflite": "tflite",
    "onnx": "xnnpack",
}

#: Artifact suffix of each target, used when the module cannot be imported.
_SUFFIXES = {"coreml": ".mlpackage", "tflite": ".tflite", "onnx": ".onnx"}

__all__ = ["TARGET_MODULES", "PRECISIONS", "UnavailableTarget", "get_target", "list_targets",
           "target_names", "int8_recipe_of", "supports_dynamic", "artifact_suffix"]


@dataclass
class UnavailableTarget:
    """Stand-in for a target whose module is missing or broken: ``available()`` returns ``reason``."""

    name: str
    reason: str
    suffix: str = ".pte"
    precisions: tuple[str, ...] = ()

    def available(self) -> str | None:
        return self.reason

    def export(self, request):
        raise ZooError(f"target {self.name} is unavailable: {self.reason}", "install the missing toolchain")

    def load_runner(self, path: Path, manifest: dict):
        raise ZooError(f"cannot run {Path(path).name}: target {self.name} is unavailable: {self.reason}",
                       "install the missing toolchain")


_CACHE: dict[str, object] = {}


def artifact_suffix(name: str) -> str | None:
    """The suffix of the artifacts target ``name`` writes (``.pte`` for the ExecuTorch targets),
    without importing its toolchain; None for a name that is no target."""
    return _SUFFIXES.get(name, ".pte") if name in TARGET_MODULES else None


def target_names() -> list[str]:
    """All target names, available here or not."""
    return list(TARGET_MODULES)


def _find_in_module(module, name: str):
    table = getattr(module, "TARGETS", None)
    if isinstance(table, dict) and name in table:
        return table[name]
    if isinstance(table, (list, tuple)):
        for target in table:
            if getattr(target, "name", None) == name:
                return target
    finder = getattr(module, "get_target", None)
    if callable(finder):
        try:
            found = finder(name)
        except (KeyError, ValueError, ZooError):
            found = None
        if found is not None:
            return found
    for value in vars(module).values():
        if getattr(value, "name", None) != name or not callable(getattr(value, "export", None)):
            continue
        if inspect.isclass(value):
            try:
                return value()
            except TypeError:
                continue
        return value
    return None


def get_target(name: str):
    """The target called ``name``; :class:`ZooError` listing the valid names when it is unknown.

    A known target whose module cannot be imported comes back as an :class:`UnavailableTarget`
    (check ``target.available()`` before exporting).
    """
    if name not in TARGET_MODULES:
        raise ZooError(f"unknown export target {name!r}", f"use one of {', '.join(TARGET_MODULES)}")
    if name in _CACHE:
        return _CACHE[name]
    module_name = TARGET_MODULES[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        missing = err.name or str(err)
        if missing == module_name:
            reason = f"{module_name} is not part of this installation"
        else:
            reason = f"importing {module_name} needs {missing}, which is not installed"
        target = UnavailableTarget(name, reason, suffix=artifact_suffix(name))
    except Exception as err:  # a broken toolchain must not take the other targets down
        target = UnavailableTarget(name, f"importing {module_name} failed: {type(err).__name__}: {err}",
                                   suffix=artifact_suffix(name))
    else:
        target = _find_in_module(module, name)
        if target is None:
            target = UnavailableTarget(name, f"{module_name} does not define target {name}",
                                       suffix=artifact_suffix(name))
    _CACHE[name] = target
    return target


def list_targets() -> list[dict]:
    """One row per target: ``name``, ``precisions``, ``suffix``, ``available`` (None or the reason)."""
    rows = []
    for name in TARGET_MODULES:
        target = get_target(name)
        try:
            reason = target.available()
        except Exception as err:  # availability checks import toolchains; report, do not crash
            reason = f"{type(err).__name__}: {err}"
        rows.append({"name": name, "precisions": list(getattr(target, "precisions", ())),
                     "suffix": getattr(target, "suffix", ""), "available": reason})
    return rows


def int8_recipe_of(target) -> str | None:
    """The ``quantize/`` recipe a target's int8 export needs, or None when it quantizes by itself."""
    if hasattr(target, "int8_recipe"):
        return target.int8_recipe
    return DEFAULT_INT8_RECIPES.get(getattr(target, "name", ""), None)


def supports_dynamic(target) -> bool:
    """Whether the target accepts ``--dynamic`` (dynamic height and width)."""
    return bool(getattr(target, "supports_dynamic", False))
