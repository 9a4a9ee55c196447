"""Int8 quantization of the zoo's models for mobile backends, through PyTorch 2 export (PT2E).

* :mod:`quantize.recipes` -- one recipe per backend (``xnnpack``, ``coreml``, ``tflite``), each
  a ``quantizer(is_qat, mixed)``; :class:`MixedPrecision` keeps the first/last layers in float.
* :mod:`quantize.calibration` -- degraded crops from the training pool (never Set5/Set14/CBSD68).
* :mod:`quantize.ptq` -- :func:`quantize_ptq`, :func:`save_quantized`, :func:`load_quantized`.
* :mod:`quantize.qat` -- :func:`quantize_qat` (fake-quantized fine-tuning, then int8).
* :mod:`quantize.qat_phase` -- QAT as a phase of ``zoo train`` / ``zoo distill``.
* :mod:`quantize.qat_state` -- the QAT int8 state file a run writes and a model ships:
  :func:`rebuild_qat_model`, :func:`pack_qat_state`.
* :mod:`quantize.sensitivity` -- per-layer sweep (one float layer at a time).
* :mod:`quantize.report` -- accuracy drop versus float on an evaluation set.
* :mod:`quantize.provenance` -- the record of how an int8 model was made (PTQ/QAT, recipe, steps, ...),
  carried to the manifest, the results files and the cards.
* :mod:`quantize.api` -- :func:`run_quantize`: quantize a zoo model and write the model and reports.
* :mod:`quantize.commands` -- ``zoo quantize`` (argument parsing and printing).

The names below are loaded on first access, so ``import quantize.commands`` (argument parsing)
stays light; the backends (torchao, executorch, coremltools, litert-torch) are imported only inside
the functions that use them, so everything here imports with torch alone. See
docs/quantization.md.
"""

import importlib

_EXPORTS = {
    "MixedPrecision": "quantize.recipes",
    "get_recipe": "quantize.recipes",
    "list_recipes": "quantize.recipes",
    "quantize_ptq": "quantize.ptq",
    "save_quantized": "quantize.ptq",
    "load_quantized": "quantize.ptq",
    "layer_precision": "quantize.ptq",
    "quantization_op_counts": "quantize.ptq",
    "quantize_qat": "quantize.qat",
    "rebuild_qat_model": "quantize.qat_state",
    "pack_qat_state": "quantize.qat_state",
    "run_quantize": "quantize.api",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'quantize' has no attribute {name!r}")
