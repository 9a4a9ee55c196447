"""ExecuTorch XNNPACK (Android and iOS CPU): int8 weights per output channel, symmetric
(range -127..127, zero point 0); int8 activations per tensor, affine (-128..127), calibrated with
histogram observers (PTQ) or fake-quantized with moving-average min/max (QAT).

This is ExecuTorch's own ``XNNPACKQuantizer`` with ``get_symmetric_quantization_config
(is_per_channel=True)``: the int8 scheme XNNPACK's kernels implement, so the lowered ``.pte``
computes what the converted PyTorch graph computes (up to rounding inside the kernels).

Speed: for its conv + BatchNorm patterns the quantizer traces 12 small pattern graphs with
``torch.export`` on every ``annotate`` (about 1 s each on a 2-core CPU). When the graph holds no
batch-norm operator those patterns cannot match, so they are skipped; every other pattern is
annotated exactly as by the stock quantizer, hence the same result.
"""

from __future__ import annotations

import importlib.util

from quantize.recipes.mixed import MixedPrecision, keep_float

NAME = "xnnpack"
DESCRIPTION = "ExecuTorch XNNPACK (CPU): int8 per-channel symmetric weights, int8 per-tensor affine activations"
NUMERICS = {
    "weights": "int8 per output channel, symmetric (-127..127, zero point 0)",
    "activations": "int8 per tensor, affine (-128..127)",
    "ptq_observers": "PerChannelMinMax (weights), Histogram (activations)",
    "qat_fake_quant": "FusedMovingAvgObsFakeQuantize, moving-average (per-channel) min/max",
    "quantizer": "executorch.backends.xnnpack.quantizer.xnnpack_quantizer.XNNPACKQuantizer",
}
#: Weights are stored as int8 constants (folded quantize), as XNNPACK lowering expects.
FOLD_QUANTIZE = True


def unavailable_reason() -> str | None:
    """None when ExecuTorch is installed, else why the recipe cannot run."""
    if importlib.util.find_spec("executorch") is None:
        return "executorch is not installed"
    return None


_QUANTIZER_CLASS = None


def _quantizer_class():
    """``XNNPACKQuantizer`` that skips its conv+BN patterns on graphs without batch norm."""
    global _QUANTIZER_CLASS
    if _QUANTIZER_CLASS is None:
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import XNNPACKQuantizer

        class BatchNormAwareXNNPACKQuantizer(XNNPACKQuantizer):
            def annotate(self, model):
                if not any("batch_norm" in str(node.target) for node in model.graph.nodes):
                    self.SUPPORTED_PATTERNS = [pattern for pattern in XNNPACKQuantizer.SUPPORTED_PATTERNS
                                               if "_bn" not in pattern.name]
                return super().annotate(model)

        _QUANTIZER_CLASS = BatchNormAwareXNNPACKQuantizer
    return _QUANTIZER_CLASS


def quantizer(is_qat: bool, mixed: MixedPrecision | None = None):
    """A fresh ``XNNPACKQuantizer`` (wrapped to keep ``mixed`` in float) for PTQ or QAT."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import get_symmetric_quantization_config

    config = get_symmetric_quantization_config(is_per_channel=True, is_qat=is_qat)
    return keep_float(_quantizer_class()().set_global(config), mixed)
