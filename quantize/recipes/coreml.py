"""Core ML (Apple Neural Engine / GPU / CPU through ExecuTorch's Core ML delegate or
coremltools): W8A8, i.e. int8 weights per output channel, symmetric (qint8, zero point 0, range
-128..127); uint8 activations per tensor, symmetric (zero point 128).

This is ExecuTorch's ``CoreMLQuantizer`` (``executorch.backends.apple.coreml.quantizer``) with a
coremltools ``LinearQuantizerConfig``: min/max observers for PTQ calibration, moving-average
min/max fake quantization for QAT. It imports and runs on Linux with coremltools 9.0; running a
converted ``.mlpackage`` needs macOS (the int8 results of the other backends are the proxy there).

Speed: ``CoreMLQuantizer.annotate`` traces about 400 small pattern graphs with
``torch.export`` on every call (about 0.5 s each on a laptop-class CPU, minutes in all). The
patterns do not depend on the model, so :func:`quantizer` installs a process-wide cache on the
pattern builders of ``_coreml_quantizer_utils``: the first call pays the tracing, later calls
(QAT after PTQ, every layer of a sensitivity sweep) reuse the traced patterns. The matcher
edits the pattern graph it is given, so the cache hands out a deep copy each time.
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import warnings

import torch

from quantize.recipes.mixed import MixedPrecision, keep_float

NAME = "coreml"
DESCRIPTION = "Core ML (ANE/GPU/CPU): int8 per-channel symmetric weights, uint8 per-tensor symmetric activations"
NUMERICS = {
    "weights": "int8 (qint8) per output channel, symmetric (zero point 0, range -128..127)",
    "activations": "uint8 (quint8) per tensor, symmetric (zero point 128)",
    "ptq_observers": "PerChannelMinMax (weights), MinMax (activations)",
    "qat_fake_quant": "FakeQuantize with moving-average (per-channel) min/max",
    "quantizer": "executorch.backends.apple.coreml.quantizer.CoreMLQuantizer",
}
FOLD_QUANTIZE = True

_PATTERN_CACHE_INSTALLED = False


def unavailable_reason() -> str | None:
    """None when ExecuTorch and coremltools are installed, else why the recipe cannot run."""
    for package in ("executorch", "coremltools"):
        if importlib.util.find_spec(package) is None:
            return f"{package} is not installed"
    return None


def _install_pattern_cache() -> None:
    """Memoise the model-independent pattern graphs CoreMLQuantizer traces (see module doc)."""
    global _PATTERN_CACHE_INSTALLED
    if _PATTERN_CACHE_INSTALLED:
        return
    import executorch.backends.apple.coreml.quantizer._coreml_quantizer_utils as utils

    for name in dir(utils):
        builder = getattr(utils, name)
        if not (name.startswith("get_") and name.endswith("_pattern") and callable(builder)):
            continue

        def cached(builder):
            traced: dict = {}

            @functools.wraps(builder)
            def build(*args, **kwargs):
                key = (args, tuple(sorted(kwargs.items())))
                try:
                    hash(key)
                except TypeError:  # unhashable arguments: no caching
                    return builder(*args, **kwargs)
                if key not in traced:
                    traced[key] = builder(*args, **kwargs)
                with warnings.catch_warnings():
                    # Copying a traced graph trips a pytree deprecation warning per pattern.
                    warnings.simplefilter("ignore", FutureWarning)
                    return copy.deepcopy(traced[key])

            return build

        setattr(utils, name, cached(builder))
    _PATTERN_CACHE_INSTALLED = True


def quantizer(is_qat: bool, mixed: MixedPrecision | None = None):
    """A fresh ``CoreMLQuantizer`` (wrapped to keep ``mixed`` in float) for PTQ or QAT."""
    from coremltools.optimize.torch.quantization.quantization_config import (
        LinearQuantizerConfig,
        ModuleLinearQuantizerConfig,
    )
    from executorch.backends.apple.coreml.quantizer import CoreMLQuantizer

    _install_pattern_cache()
    observer = "moving_average_min_max" if is_qat else "min_max"
    config = LinearQuantizerConfig(global_config=ModuleLinearQuantizerConfig(
        quantization_scheme="symmetric",
        weight_dtype=torch.qint8,
        weight_per_channel=True,
        weight_observer=observer,
        activation_dtype=torch.quint8,
        activation_observer=observer,
    ))
    return keep_float(CoreMLQuantizer(config), mixed)
