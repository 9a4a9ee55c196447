"""TFLite / LiteRT: the numerics of litert-torch's ``PT2EQuantizer`` with its symmetric
per-channel config: int8 weights per output channel, symmetric (-127..127); int8 activations per
tensor, affine (-128..127); histogram observers for PTQ, moving-average min/max fake quantization
for QAT. ``litert_torch.convert(converted, ..., quant_config=litert_quant_config())`` turns the
converted graph into an int8 ``.tflite``.

QAT: litert-torch 0.10's quantizer crashes in ``prepare_qat_pt2e`` because its conv + batch-norm
QAT annotators (``STATIC_QAT_ONLY_OPS``: conv_bn, conv_bn_relu) hand a plain function to
``torch.export``, which torchao 0.18 no longer accepts. Those annotators only matter for
BatchNorm layers, which the zoo's models do not have, so the QAT quantizer here is litert-torch's
own ``PT2EQuantizer`` with its own ``is_qat=True`` config and an empty ``STATIC_QAT_ONLY_OPS``:
the same quantization specs (dtype, range, scheme, observers) and the same annotators for every
other operator, hence the same numerics as litert-torch's intended QAT path. A model with
BatchNorm is refused for QAT (its BN would stay unfused and float).

Concatenations: litert-torch's quantizer leaves ``aten.cat`` unannotated (float in the PT2E
graph), but its converter makes every CONCATENATION int8 anyway and, when an input is a slice
of a quantized tensor (HINet's half instance normalisation: chunk -> InstanceNorm on one half ->
cat with the other half), mislabels the tensors around the slice: a tiny half-instance-norm net
agreed with its PT2E model to only 15 dB. Both quantizers here therefore annotate each
unannotated cat themselves: an input that is a view (getitem / slice / split / chunk) of a
quantized tensor shares that tensor's quantization (no requantize before the slice), any other
input and the output get the recipe's activation spec. The same net then agrees to 48 dB
(tests/test_export_tflite.py). The PT2E model itself changes only in that the cat output is
int8, which the converted file did anyway.
"""

from __future__ import annotations

import importlib.util
import operator

import torch

from quantize.recipes.mixed import MixedPrecision, keep_float

NAME = "tflite"
DESCRIPTION = "TFLite / LiteRT: int8 per-channel symmetric weights, int8 per-tensor affine activations"
NUMERICS = {
    "weights": "int8 per output channel, symmetric (-127..127, zero point 0)",
    "activations": "int8 per tensor, affine (-128..127)",
    "ptq_observers": "PerChannelMinMax (weights), Histogram (activations)",
    "qat_fake_quant": "FusedMovingAvgObsFakeQuantize, moving-average (per-channel) min/max",
    "quantizer": "litert_torch.quantize.pt2e_quantizer.PT2EQuantizer (QAT: same, without the "
                 "conv+BN QAT-only annotators that crash in litert-torch 0.10)",
}
#: litert-torch's converter reads the quantize/dequantize pairs of the weights (no folding).
FOLD_QUANTIZE = False


def unavailable_reason() -> str | None:
    """None when litert-torch is installed, else why the recipe cannot run."""
    if importlib.util.find_spec("litert_torch") is None:
        return "litert-torch is not installed"
    return None


def _qat_quantizer_class():
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer

    class LiteRTQATQuantizer(PT2EQuantizer):
        """litert-torch's PT2EQuantizer minus its conv+BN QAT annotators (see the module docstring)."""

        STATIC_QAT_ONLY_OPS: list[str] = []

        def annotate(self, model):
            from zoo.errors import ZooError

            if any("batch_norm" in str(node.target) for node in model.graph.nodes):
                raise ZooError("TFLite QAT here does not fold BatchNorm into convolutions",
                               "fold BatchNorm into the convolutions first, or use --method ptq")
            return super().annotate(model)

    return LiteRTQATQuantizer


#: Operators whose output holds values of their first input unchanged (same quantization grid).
_VIEW_OPS = frozenset({"slice", "split", "split_with_sizes", "chunk", "narrow", "select"})


def _is_view(node) -> bool:
    if node.op != "call_function":
        return False
    if node.target is operator.getitem:
        return True
    packet = getattr(node.target, "overloadpacket", None)
    return packet is not None and packet.__name__ in _VIEW_OPS


def _view_source(node):
    """The tensor ``node`` is a slice/chunk/getitem view of (following views back), or None."""
    source = node
    while _is_view(source):
        source = source.args[0]
    return None if source is node else source


def annotate_concatenations(graph, activation_spec) -> int:
    """Annotate every ``aten.cat`` the base quantizer left unannotated (see the module docstring);
    returns how many were annotated."""
    from torch.fx import Node
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation, SharedQuantizationSpec

    count = 0
    for node in graph.nodes:
        if node.op != "call_function" or node.target != torch.ops.aten.cat.default:
            continue
        annotation = node.meta.get("quantization_annotation")
        if annotation is not None and annotation._annotated:
            continue
        inputs = {}
        for tensor in node.args[0]:
            if not isinstance(tensor, Node):
                continue
            source = _view_source(tensor)
            source_annotation = source.meta.get("quantization_annotation") if source is not None else None
            if source_annotation is not None and source_annotation.output_qspec is not None:
                inputs[tensor] = SharedQuantizationSpec(source)
            else:
                inputs[tensor] = activation_spec
        node.meta["quantization_annotation"] = QuantizationAnnotation(
            input_qspec_map=inputs, output_qspec=activation_spec, _annotated=True)
        count += 1
    return count


def quantizer(is_qat: bool, mixed: MixedPrecision | None = None):
    """A fresh LiteRT PT2E quantizer (wrapped to keep ``mixed`` in float) for PTQ or QAT."""
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config

    config = get_symmetric_quantization_config(is_per_channel=True, is_qat=is_qat)
    base_class = _qat_quantizer_class() if is_qat else PT2EQuantizer

    class ConcatAwareQuantizer(base_class):
        """litert-torch's quantizer plus int8 concatenations (see the module docstring)."""

        def annotate(self, model):
            model = super().annotate(model)
            annotate_concatenations(model.graph, config.input_activation)
            return model

    return keep_float(ConcatAwareQuantizer().set_global(config), mixed)


def litert_quant_config():
    """The ``QuantConfig`` to pass to ``litert_torch.convert`` for a graph converted with this
    recipe (PTQ or QAT: the converter only needs to know it is static int8 PT2E)."""
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
    from litert_torch.quantize.quant_config import QuantConfig

    converter_quantizer = PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    return QuantConfig(pt2e_quantizer=converter_quantizer)
