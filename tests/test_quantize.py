"""quantize/: PT2E recipes per backend, mixed precision, calibration from the training pool only,
PTQ/QAT, save/load, per-layer sensitivity, the accuracy-drop report and `zoo quantize`.

Models are tiny (a 3-conv net, HINet-Lite-S) at 32x32 so the file runs in about a minute and a
half on two CPU cores; the Core ML recipe (its quantizer traces ~400 pattern graphs on first use,
minutes on this CPU) and the LiteRT .tflite conversion are marked slow.
"""

from __future__ import annotations

import copy
import functools
import importlib.metadata
import importlib.util
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from quantize.calibration import build_calibration_set, training_pair_sampler
from quantize.ptq import (
    export_for_quantization,
    layer_precision,
    load_quantized,
    quantization_op_counts,
    quantize_ptq,
    save_quantized,
    sidecar_path,
)
from quantize.recipes import FIRST, LAST, MixedPrecision, get_recipe, list_recipes
from quantize.recipes.mixed import first_layers, last_layers, module_path
from zoo.errors import ZooError

TILE = 32
HAVE_EXECUTORCH = importlib.util.find_spec("executorch") is not None
HAVE_LITERT = importlib.util.find_spec("litert_torch") is not None
HAVE_COREML = HAVE_EXECUTORCH and importlib.util.find_spec("coremltools") is not None
needs_executorch = pytest.mark.skipif(not HAVE_EXECUTORCH, reason="executorch (mobile extra) is not installed")


class TinyRestorer(nn.Module):
    """head -> body -> tail convs with LeakyReLU, global residual and output clamp."""

    def __init__(self, clamp_output: bool = True, eval_only_clamp: bool = False):
        super().__init__()
        self.head = nn.Conv2d(3, 8, 3, padding=1)
        self.body = nn.Conv2d(8, 8, 3, padding=1)
        self.tail = nn.Conv2d(8, 3, 3, padding=1)
        self.act = nn.LeakyReLU(0.2)
        self.clamp_always = clamp_output and not eval_only_clamp
        # Duck-typed like HINetLite: clamps in eval mode only.
        self.clamp_output = eval_only_clamp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.tail(self.act(self.body(self.act(self.head(x))))) + x
        if self.clamp_always or (self.clamp_output and not self.training):
            out = out.clamp(0.0, 1.0)
        return out


def tiny_model(seed: int = 0, **kwargs) -> TinyRestorer:
    torch.manual_seed(seed)
    return TinyRestorer(**kwargs).eval()


def smooth_image(size: int = TILE) -> torch.Tensor:
    """A smooth colour image (1, 3, size, size) in [0.1, 0.9]: gradients and a slow sinusoid."""
    ramp = torch.linspace(0, 1, size)
    yy, xx = torch.meshgrid(ramp, ramp, indexing="ij")
    channels = [0.5 + 0.4 * torch.sin(2.0 * xx + 1.0 * yy), 0.1 + 0.8 * xx * yy, 0.5 + 0.4 * torch.cos(3.0 * yy)]
    return torch.stack(channels)[None].float()


def psnr_db(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR on the 0-1 scale, computed here independently of zoo.metrics."""
    mse = torch.mean((a.double() - b.double()) ** 2).item()
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def write_photos(folder, count: int, size=(48, 40), seed: int = 0):
    """Smooth synthetic 8-bit RGB photos in ``folder`` (a stand-in training pool)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    height, width = size
    yy, xx = np.mgrid[0:height, 0:width] / max(size)
    for index in range(count):
        phase = rng.uniform(0, 3, size=3)
        pixels = np.stack([0.5 + 0.4 * np.sin(4 * xx + 3 * yy + p) for p in phase], axis=-1)
        Image.fromarray((pixels * 255).round().astype(np.uint8)).save(folder / f"photo{index:02d}.png")
    return folder


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    """A training-pool folder of 6 synthetic photos."""
    return write_photos(tmp_path_factory.mktemp("pool") / "train_photos", 6)


@pytest.fixture(scope="module")
def calibration(pool):
    return build_calibration_set("gaussian:25", tile=TILE, count=4, source=pool, seed=0)


@pytest.fixture(scope="module")
def int8_tiny(calibration):
    """(float model, all-int8 XNNPACK PTQ model)."""
    if not HAVE_EXECUTORCH:
        pytest.skip("executorch (mobile extra) is not installed")
    model = tiny_model()
    return model, quantize_ptq(model, calibration.inputs[0], "xnnpack", calibration)


@pytest.fixture(scope="module")
def mixed_tiny(calibration):
    """(float model, XNNPACK PTQ model with the default first+last mixed precision)."""
    if not HAVE_EXECUTORCH:
        pytest.skip("executorch (mobile extra) is not installed")
    model = tiny_model()
    return model, quantize_ptq(model, calibration.inputs[0], "xnnpack", calibration, mixed=MixedPrecision())


# ----------------------------------------------------------------------------- package


def test_import_needs_torch_only():
    code = ("import sys, quantize.commands\n"
            "assert 'torch' not in sys.modules, 'argument parsing should not import torch'\n"
            "import quantize, quantize.calibration, quantize.sensitivity, quantize.report, quantize.api, "
            "quantize.commands, quantize.recipes.xnnpack, quantize.recipes.coreml, quantize.recipes.tflite\n"
            "from quantize import quantize_ptq, quantize_qat, load_quantized, MixedPrecision\n"
            "heavy = {'torchao', 'executorch', 'coremltools', 'litert_torch', 'scipy', 'skimage'}\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_recipe_registry():
    from quantize.api import BACKENDS

    assert list_recipes() == ["xnnpack", "coreml", "tflite"] == list(BACKENDS)
    for name in list_recipes():
        recipe = get_recipe(name)
        assert recipe.NAME == name and callable(recipe.quantizer)
        assert {"weights", "activations"} <= set(recipe.NUMERICS)
    with pytest.raises(ZooError, match="unknown quantization backend 'qnn'; use one of xnnpack"):
        get_recipe("qnn")


def test_mixed_precision_parse():
    assert MixedPrecision.parse("first-last") == MixedPrecision((FIRST, LAST), True)
    assert MixedPrecision.parse("none") is None and MixedPrecision.parse(None) is None
    assert MixedPrecision.parse("first, body") == MixedPrecision((FIRST, "body"), False)
    assert MixedPrecision.parse("last,enc.0") == MixedPrecision((LAST, "enc.0"), True)


# ----------------------------------------------------------------------------- first/last on graphs


def test_first_and_last_layers_are_found_on_real_graphs():
    from zoo.models.hinet import HINet
    from zoo.registry import get_card

    x = torch.rand(1, 3, 32, 32)
    tiny = export_for_quantization(tiny_model(), x).graph
    assert [module_path(n) for n in first_layers(tiny)] == ["head"]
    layers, tail = last_layers(tiny)
    assert [module_path(n) for n in layers] == ["tail"]
    assert sorted(str(n.target) for n in tail) == ["aten.add.Tensor", "aten.clamp.default"]

    # HINet-Lite: pixel_unshuffle before the head, pixel_shuffle + residual + clamp after the tail.
    lite = export_for_quantization(get_card("hinet-lite-s").builder(), x).graph
    assert [module_path(n) for n in first_layers(lite)] == ["head"]
    layers, tail = last_layers(lite)
    assert [module_path(n) for n in layers] == ["tail"]
    assert {str(n.target).split(".")[1] for n in tail} == {"pixel_shuffle", "add", "clamp"}

    # HINet: both stages read the image (conv_01, conv_02); SAM's conv3 reads stage 1's output, not x.
    hinet = export_for_quantization(HINet(wf=4), x).graph
    assert sorted(module_path(n) for n in first_layers(hinet)) == ["conv_01", "conv_02"]
    assert [module_path(n) for n in last_layers(hinet)[0]] == ["last"]


# ----------------------------------------------------------------------------- PTQ


def test_ptq_inserts_quantize_nodes_and_stays_close_to_float(int8_tiny):
    model, quantized = int8_tiny
    float_graph = export_for_quantization(model, smooth_image())
    assert sum(quantization_op_counts(float_graph).values()) == 0
    counts = quantization_op_counts(quantized)
    # Three int8 convs: per-channel weights, per-tensor activations in and out.
    assert counts["dequantize_per_channel"] == 3
    assert counts["quantize_per_tensor"] >= 3 and counts["dequantize_per_tensor"] >= 3
    assert layer_precision(quantized) == {"head": "int8", "body": "int8", "tail": "int8"}
    image = smooth_image()
    with torch.no_grad():
        reference, output = model(image), quantized(image)
    assert not torch.equal(reference, output)  # it really is a different (quantized) computation
    assert psnr_db(output, reference) > 30.0
    info = quantized.meta["zoo_quantization"]
    assert info["recipe"] == "xnnpack" and info["method"] == "ptq"
    assert info["calibration_batches"] == 4 and info["input_shape"] == [3, TILE, TILE]


def test_mixed_precision_keeps_first_and_last_conv_and_output_ops_in_float(mixed_tiny):
    model, quantized = mixed_tiny
    assert layer_precision(quantized) == {"head": "float", "body": "int8", "tail": "float"}
    resolved = quantized.meta["zoo_quantization"]["mixed_precision"]["resolved"]
    assert resolved["float_modules"] == ["head", "tail"]
    nodes = {n.name: n for n in quantized.graph.nodes}
    # The float convs read the model's own float weights; add and clamp see no dequantize.
    head = next(n for n in quantized.graph.nodes if module_path(n) == "head" and "conv" in str(n.target))
    weight = functools.reduce(getattr, head.args[1].target.split("."), quantized)
    assert torch.equal(weight, model.head.weight)
    for name in resolved["float_output_ops"]:
        assert all("dequantize" not in str(arg.target) for arg in nodes[name].all_input_nodes)
    image = smooth_image()
    with torch.no_grad():
        assert psnr_db(quantized(image), model(image)) > 30.0


@pytest.mark.skipif(not HAVE_LITERT, reason="litert-torch is not installed")
def test_tflite_recipe_honours_first_last_like_xnnpack(mixed_tiny, calibration):
    # keep_float wraps LiteRT's quantizer as it wraps XNNPACK's: the same convs and output ops
    # resolve to float, and the global residual add and clamp read no dequantized tensor.
    model = tiny_model()
    quantized = quantize_ptq(model, calibration.inputs[0], "tflite", calibration, mixed=MixedPrecision())
    assert layer_precision(quantized) == {"head": "float", "body": "int8", "tail": "float"}
    resolved = quantized.meta["zoo_quantization"]["mixed_precision"]["resolved"]
    assert resolved == mixed_tiny[1].meta["zoo_quantization"]["mixed_precision"]["resolved"]
    nodes = {n.name: n for n in quantized.graph.nodes}
    for name in resolved["float_output_ops"]:
        assert all("dequantize" not in str(arg.target) for arg in nodes[name].all_input_nodes)
        assert all("quantize" not in str(user.target) for user in nodes[name].users)


@needs_executorch
def test_mixed_precision_by_module_name_and_unknown_name(calibration):
    model = tiny_model()
    only_body = quantize_ptq(model, calibration.inputs[0], "xnnpack", calibration,
                             mixed=MixedPrecision(("body",), float_output_ops=False))
    assert layer_precision(only_body) == {"head": "int8", "body": "float", "tail": "int8"}
    with pytest.raises(ZooError, match="module 'nope' is not in the model's exported graph; use qualified"):
        quantize_ptq(model, calibration.inputs[0], "xnnpack", calibration, mixed=MixedPrecision(("nope",)))


@needs_executorch
def test_ptq_refuses_missing_or_wrongly_sized_calibration():
    model = tiny_model()
    with pytest.raises(ZooError, match="no calibration batches"):
        quantize_ptq(model, smooth_image(), "xnnpack", [])
    with pytest.raises(ZooError, match="does not match the export shape"):
        quantize_ptq(model, smooth_image(), "xnnpack", [smooth_image(48)])


@pytest.mark.parametrize("backend", ["xnnpack", "tflite"])
def test_recipe_produces_runnable_converted_model(backend, calibration):
    recipe = get_recipe(backend)
    if recipe.unavailable_reason():
        pytest.skip(f"{backend} quantizer unavailable: {recipe.unavailable_reason()}")
    model = tiny_model()
    quantized = quantize_ptq(model, calibration.inputs[0], backend, calibration, mixed=None)
    # TFLite keeps quantize ops on the weights (its converter reads them), XNNPACK folds them.
    assert (quantization_op_counts(quantized)["quantize_per_channel"] > 0) == (not recipe.FOLD_QUANTIZE)
    image = smooth_image()
    with torch.no_grad():
        assert psnr_db(quantized(image.expand(2, -1, -1, -1))[1:], model(image)) > 30.0


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_COREML, reason="executorch or coremltools is not installed")
def test_coreml_recipe_produces_runnable_converted_model(calibration):
    model = tiny_model()
    quantized = quantize_ptq(model, calibration.inputs[0], "coreml", calibration, mixed=MixedPrecision())
    assert layer_precision(quantized) == {"head": "float", "body": "int8", "tail": "float"}
    # Core ML activations are uint8 with the symmetric zero point 128.
    activation_q = [n for n in quantized.graph.nodes
                    if str(n.target) == "quantized_decomposed.quantize_per_tensor.default"]
    assert activation_q and all(n.args[-1] == torch.uint8 and n.args[2] == 128 for n in activation_q)
    with torch.no_grad():
        assert psnr_db(quantized(smooth_image()), model(smooth_image())) > 30.0


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_LITERT, reason="litert-torch is not installed")
def test_tflite_int8_file_matches_the_pytorch_quantized_model(calibration, tmp_path):
    import litert_torch
    from ai_edge_litert.interpreter import Interpreter

    from quantize.recipes.tflite import litert_quant_config

    model = tiny_model()
    quantized = quantize_ptq(model, calibration.inputs[0], "tflite", calibration, mixed=None)
    image = smooth_image()
    path = tmp_path / "tiny_int8.tflite"
    litert_torch.convert(quantized, (image,), quant_config=litert_quant_config()).export(str(path))
    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    ops = {op["op_name"] for op in interpreter._get_ops_details()}
    assert "QUANTIZE" in ops and ("CONV_2D" in ops or "DELEGATE" in ops)
    runner = interpreter.get_signature_runner()
    (output,) = runner(**{runner.get_input_details().popitem()[0]: image.numpy()}).values()
    with torch.no_grad():
        expected = quantized(image)
    assert psnr_db(torch.from_numpy(np.asarray(output)), expected) > 40.0


# ----------------------------------------------------------------------------- QAT


@needs_executorch
def test_qat_fine_tunes_weights_and_observers_then_converts(calibration):
    from quantize.qat import quantize_qat

    model = tiny_model()
    original = {k: v.clone() for k, v in model.state_dict().items()}
    pair = calibration.batch([0, 1])
    seen = {}

    def record(step, prepared, loss):
        fake_quants = {name: module.scale.clone() for name, module in prepared.named_modules()
                       if hasattr(module, "scale") and isinstance(module.scale, torch.Tensor)}
        weights = {name: p.detach().clone() for name, p in prepared.named_parameters()}
        seen.setdefault("first", (fake_quants, weights))
        seen["last"] = (fake_quants, weights)

    quantized = quantize_qat(model, pair[0], "xnnpack", [pair], steps=6, lr=1e-3, callback=record,
                             mixed=MixedPrecision())
    losses = quantized.meta["zoo_quantization"]["qat_losses"]
    assert len(losses) == 6 and losses[-1] < losses[0]
    first_scales, first_weights = seen["first"]
    last_scales, last_weights = seen["last"]
    assert first_scales and any(not torch.equal(first_scales[k], last_scales[k]) for k in first_scales)
    assert any(not torch.equal(first_weights[k], last_weights[k]) for k in first_weights)
    assert set(original) <= set(last_weights)
    assert any(not torch.allclose(last_weights[k], original[k]) for k in original)
    # The caller's model is untouched (QAT trains a copy).
    assert all(torch.equal(v, original[k]) for k, v in model.state_dict().items())
    assert layer_precision(quantized) == {"head": "float", "body": "int8", "tail": "float"}
    assert quantization_op_counts(quantized)["dequantize_per_channel"] == 1
    with torch.no_grad():
        assert psnr_db(quantized(smooth_image()), model(smooth_image())) > 25.0


@pytest.mark.skipif(not HAVE_LITERT, reason="litert-torch is not installed")
def test_tflite_qat_runs_with_litert_numerics_and_refuses_batch_norm(calibration):
    from quantize.qat import quantize_qat

    model = tiny_model()
    pair = calibration.batch([0, 1])
    quantized = quantize_qat(model, pair[0], "tflite", [pair], steps=2, lr=1e-4)
    assert layer_precision(quantized) == {"head": "int8", "body": "int8", "tail": "int8"}
    # LiteRT's weights stay as quantize -> dequantize pairs (no folding) with its int8 range.
    weight_q = [n for n in quantized.graph.nodes if str(n.target) == "quantized_decomposed.quantize_per_channel.default"]
    assert len(weight_q) == 3 and all(n.args[4:7] == (-127, 127, torch.int8) for n in weight_q)
    with_bn = nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3))
    with pytest.raises(ZooError, match="does not fold BatchNorm"):
        quantize_qat(with_bn, pair[0], "tflite", [pair], steps=1)


@needs_executorch
def test_qat_restores_the_eval_only_output_clamp(calibration):
    from quantize.qat import quantize_qat

    model = tiny_model(eval_only_clamp=True)
    bright = torch.full((2, 3, TILE, TILE), 3.0)  # far outside [0, 1]: the residual output is too
    quantized = quantize_qat(model, bright, "xnnpack", [(bright, bright.clamp(0, 1))], steps=1, lr=1e-6)
    assert quantized.meta["zoo_quantization"]["output_clamp_added"] is True
    with torch.no_grad():
        out = quantized(bright)
    assert out.max().item() == 1.0 and out.min().item() >= 0.0


def test_learnable_scales_keep_the_uint8_symmetric_zero_point():
    """LSQ on Core ML's activations (uint8, symmetric: zero point 128) keeps 128; torchao's
    LearnableFakeQuantize zeroes a symmetric zero point, which clips every negative value."""
    pytest.importorskip("torchao")
    from torchao.quantization.pt2e.fake_quantize import FakeQuantize
    from torchao.quantization.pt2e.observer import MovingAverageMinMaxObserver

    from quantize.qat import use_learnable_scales

    holder = nn.Module()  # stands in for a prepared graph: fake quantizers are its children
    holder.activation_post_process_0 = FakeQuantize(MovingAverageMinMaxObserver, dtype=torch.uint8,
                                                    qscheme=torch.per_tensor_symmetric)
    signed = torch.linspace(-1.0, 1.0, 101)
    holder.activation_post_process_0(signed)
    assert int(holder.activation_post_process_0.zero_point) == 128
    assert use_learnable_scales(holder) == 1
    learnable = holder.activation_post_process_0
    out = learnable(signed)
    assert int(learnable.calculate_qparams()[1]) == 128
    assert out.min().item() < -0.9 and (out - signed).abs().max().item() < 1.0 / 127


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_COREML, reason="executorch or coremltools is not installed")
def test_coreml_qat_graph_takes_ptq_ranges_and_learnable_scales(calibration):
    """Core ML's quantizer inserts FakeQuantize modules for PTQ too: the range copy must read
    the observer inside them (it once skipped all, so QAT started from moving-average ranges of
    one batch, ~19 dB on HINet-Lite-S against 26.5 in float), and LSQ must keep zero point 128."""
    from quantize.qat import fake_quantizers, is_per_channel, prepare_qat_graph, set_activation_ranges_from_ptq
    from quantize.qat import use_learnable_scales
    from quantize.recipes import require_recipe

    recipe = require_recipe("coreml")
    model = tiny_model()
    batch = torch.cat(calibration.inputs[:2])
    ptq = quantize_ptq(model, calibration.inputs[0], "coreml", calibration, mixed=None)
    prepared = prepare_qat_graph(copy.deepcopy(model), batch, recipe, None)
    activations = {name: q for name, q in fake_quantizers(prepared).items() if not is_per_channel(q)}
    assert set_activation_ranges_from_ptq(prepared, model, calibration.inputs[0], recipe, None,
                                          calibration) == len(activations) > 0
    # The PTQ model's activation (scale, zero point) pairs, each quantizer's once.
    expected = sorted(set(_activation_qparams(ptq)))
    taken = sorted({(round(float(q.scale), 9), int(q.zero_point)) for q in activations.values()})
    assert len(taken) == len(expected)
    for (scale, zero_point), (want_scale, want_zero_point) in zip(taken, expected):
        assert scale == pytest.approx(want_scale, rel=1e-5) and zero_point == want_zero_point
    image = smooth_image().expand(2, -1, -1, -1)
    for quantizer in fake_quantizers(prepared).values():
        quantizer.observer_enabled.fill_(0)
    with torch.no_grad():
        reference = model(image)
        assert psnr_db(prepared(image), reference) > 30.0
        use_learnable_scales(prepared)
        assert {int(q.calculate_qparams()[1]) for name, q in fake_quantizers(prepared).items()
                if name in activations} == {zero_point for _, zero_point in expected}
        assert psnr_db(prepared(image), reference) > 30.0


# ----------------------------------------------------------------------------- save / load


def test_save_load_round_trip_gives_identical_outputs(mixed_tiny, tmp_path):
    _, quantized = mixed_tiny
    path = save_quantized(quantized, tmp_path / "tiny.pt2", smooth_image(), {"model": "tiny", "weights": "w.st"})
    sidecar = json.loads(sidecar_path(path).read_text())
    assert sidecar["model"] == "tiny" and sidecar["recipe"] == "xnnpack" and sidecar["method"] == "ptq"
    assert sidecar["mixed_precision"]["resolved"]["float_modules"] == ["head", "tail"]
    assert sidecar["versions"]["torch"] == importlib.metadata.version("torch")
    assert sidecar["input_shape"] == [3, TILE, TILE]
    assert not list(tmp_path.glob(".*tmp*"))  # atomic writes leave no temporaries
    loaded, loaded_sidecar = load_quantized(path)
    assert loaded_sidecar == sidecar
    batch = torch.cat([smooth_image(), torch.rand(2, 3, TILE, TILE)])
    with torch.no_grad():
        for images in (batch[:1], batch):  # the saved program keeps the dynamic batch dimension
            assert torch.equal(loaded(images), quantized(images))
    assert layer_precision(loaded) == layer_precision(quantized)


def test_save_and_load_refuse_bad_paths(mixed_tiny, tmp_path):
    _, quantized = mixed_tiny
    with pytest.raises(ZooError, match="saved as .pt2"):
        save_quantized(quantized, tmp_path / "tiny.pte", smooth_image())
    with pytest.raises(ZooError, match="does not exist"):
        load_quantized(tmp_path / "missing.pt2")
    path = save_quantized(quantized, tmp_path / "tiny.pt2", smooth_image())
    sidecar_path(path).unlink()
    with pytest.raises(ZooError, match="has no sidecar tiny.json"):
        load_quantized(path)


# ----------------------------------------------------------------------------- calibration


@pytest.mark.parametrize("name", ["set5", "set14", "bsd68", "CBSD68"])
def test_calibration_refuses_evaluation_sets_by_name(name):
    with pytest.raises(ZooError, match="evaluation set"):
        build_calibration_set("gaussian:25", tile=TILE, count=2, source=name)


def test_calibration_refuses_a_copy_of_an_evaluation_set(tmp_path):
    copy = write_photos(tmp_path / "Set14", 2)
    with pytest.raises(ZooError, match="evaluation set"):
        build_calibration_set("gaussian:25", tile=TILE, count=2, source=copy)


def test_calibration_crops_are_degraded_training_crops(pool):
    crops = build_calibration_set("gaussian:25", tile=16, count=8, source=pool, seed=3)
    assert len(crops) == 8 and crops.source == str(pool)
    assert all(x.shape == (1, 3, 16, 16) and y.shape == (1, 3, 16, 16) for x, y in crops.pairs())
    noise = torch.cat([x - y for x, y in crops.pairs()])
    assert abs(noise.std().item() * 255 - 25) < 1.5  # AWGN sigma 25 on the 0-255 scale, unclipped
    assert noise.min().item() < -0.05 and (torch.cat(crops.targets).max() <= 1)
    # 6 photos, 8 crops: every photo once, then cycling; seeded, hence reproducible.
    assert len(set(crops.describe()["images"])) == 6
    again = build_calibration_set("gaussian:25", tile=16, count=8, source=pool, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(crops.inputs, again.inputs))
    held_out = build_calibration_set("gaussian:25", tile=16, count=2, source=pool, seed=3, skip_images=4)
    first_four = {c.split("@")[0] for c in crops.crops[:4]}
    assert not first_four & set(held_out.describe()["images"])


def test_calibration_for_super_resolution_uses_low_resolution_inputs(pool):
    crops = build_calibration_set("bicubic:x2", tile=16, count=2, source=pool)
    assert crops.inputs[0].shape == (1, 3, 16, 16) and crops.targets[0].shape == (1, 3, 32, 32)


def test_calibration_auto_uses_the_training_pool(data_root):
    crops = build_calibration_set("gaussian:25", tile=TILE, count=2, source="auto", data_root=data_root)
    assert crops.source == "urban100"
    assert all(name.startswith("img") for name in crops.describe()["images"])


def test_training_pair_sampler_is_seeded(calibration):
    sample = training_pair_sampler(calibration, batch_size=3, seed=1)
    inputs, targets = sample(5)
    assert inputs.shape == (3, 3, TILE, TILE) and targets.shape == (3, 3, TILE, TILE)
    assert torch.equal(sample(5)[0], inputs)

    fresh = training_pair_sampler(calibration, batch_size=3, seed=1, fresh_degradation=True)
    first, clean = fresh(5)
    assert torch.equal(fresh(5)[0], first) and first.shape == inputs.shape  # reproducible per step
    known = [t for t in calibration.targets]
    for noisy, target in zip(first, clean):  # a flipped/rotated clean crop of the set, noise drawn anew
        variants = [torch.rot90(k[0], r, dims=(1, 2)) for k in known for r in range(4)]
        variants += [torch.flip(v, dims=(2,)) for v in variants]
        assert any(torch.equal(target, v) for v in variants)
        assert not any(torch.equal(noisy, i[0]) for i in calibration.inputs)
        assert 15 / 255 < float((noisy - target).std()) < 35 / 255  # gaussian:25 noise on the new crop


# ----------------------------------------------------------------------------- sensitivity


@needs_executorch
def test_sensitivity_has_one_sorted_row_per_layer(calibration, pool, int8_tiny, tmp_path):
    from quantize.sensitivity import format_sensitivity_table, layer_sensitivity, write_sensitivity

    model, int8 = int8_tiny
    held_out = build_calibration_set("gaussian:25", tile=TILE, count=2, source=pool, seed=0, skip_images=4)
    result = layer_sensitivity(model, calibration.inputs[0], "xnnpack", calibration, held_out.inputs)
    rows = result["rows"]
    assert sorted(row["layer"] for row in rows) == ["body", "head", "tail"]
    assert [row["gain_db"] for row in rows] == sorted((row["gain_db"] for row in rows), reverse=True)
    for row in rows:
        assert row["gain_db"] == pytest.approx(row["psnr_db"] - result["all_int8_psnr_db"])
        assert row["int8_in_all_int8_model"]
    # Independent check of the all-int8 number: PSNR of the all-int8 model against float here.
    with torch.no_grad():
        expected = np.mean([psnr_db(int8(x).clamp(0, 1), model(x).clamp(0, 1)) for x in held_out.inputs])
    assert result["all_int8_psnr_db"] == pytest.approx(expected, abs=1e-3)
    table = format_sensitivity_table(result)
    assert len(table.splitlines()) == 3 + 3 and rows[0]["layer"] in table.splitlines()[3]
    path = write_sensitivity(result, tmp_path / "sens.json")
    assert json.loads(path.read_text())["rows"] == rows


# ----------------------------------------------------------------------------- report


class IdentityNet(nn.Module):
    """Three convs that copy the image (identity kernels): the float output equals the input."""

    def __init__(self):
        super().__init__()
        self.head, self.body, self.tail = (nn.Conv2d(3, 3, 3, padding=1) for _ in range(3))
        with torch.no_grad():
            for conv in (self.head, self.body, self.tail):
                conv.weight.zero_()
                conv.bias.zero_()
                for channel in range(3):
                    conv.weight[channel, channel, 1, 1] = 1.0

    def forward(self, x):
        return self.tail(self.body(self.head(x)))


@needs_executorch
def test_accuracy_drop_report_against_independent_numbers(pool, tmp_path):
    from quantize.report import accuracy_drop_report, format_report_table
    from zoo.data.degradations import parse_degradation
    from zoo.data.io import read_image
    from zoo.registry import ModelCard

    model = IdentityNet().eval()
    card = ModelCard(name="identity", family="test", task="denoise", variant="test", summary="identity",
                     builder=IdentityNet, size_multiple=1, tile=TILE, overlap=8)
    crops = build_calibration_set("gaussian:15", tile=TILE, count=4, source=pool)
    quantized = quantize_ptq(model, crops.inputs[0], "xnnpack", crops)
    evaluation = write_photos(tmp_path / "final_eval", 2, size=(40, 56), seed=9)
    result = accuracy_drop_report(model, quantized, card, dataset=str(evaluation), degradation="gaussian:15",
                                  json_path=tmp_path / "report.json")
    assert result["images"] == 2 and result["tile"] == TILE and result["overlap"] == 8
    degrade = parse_degradation("gaussian:15")
    for index, row in enumerate(result["rows"]):
        clean = read_image(evaluation / f"photo{index:02d}.png").image
        noisy = degrade(clean, index)  # open_dataset: image i uses seed 0 + i
        # The float model is the identity: its score is the noisy input's, clamped and rounded to 8 bits.
        expected = psnr_db(torch.round(noisy.clamp(0, 1) * 255) / 255, clean)
        assert row["float_psnr"] == pytest.approx(expected, abs=0.01)
        assert row["drop_psnr"] == pytest.approx(row["float_psnr"] - row["quant_psnr"])
        assert row["drop_ssim"] == pytest.approx(row["float_ssim"] - row["quant_ssim"])
        assert 30.0 < row["psnr_quant_vs_float"] < math.inf
    assert result["mean"]["float_psnr"] == pytest.approx(np.mean([r["float_psnr"] for r in result["rows"]]))
    assert json.loads((tmp_path / "report.json").read_text())["mean"] == result["mean"]
    assert "mean" in format_report_table(result).splitlines()[-1]
    with pytest.raises(ZooError, match="takes 32x32 tiles, not 64"):
        accuracy_drop_report(model, quantized, card, dataset=str(evaluation), tile=64)


# ----------------------------------------------------------------------------- CLI


@needs_executorch
def test_zoo_quantize_cli_end_to_end(pool, tmp_path, capsys):
    from quantize.commands import main

    out = tmp_path / "q"
    evaluation = write_photos(tmp_path / "final_eval", 1, size=(48, 48), seed=5)
    argv = ["hinet-lite-s", "--backend", "xnnpack", "--method", "ptq", "--untrained", "--tile", "32",
            "--calib-images", "2", "--calib-source", str(pool), "--eval-dataset", str(evaluation), "--quiet",
            "-o", str(out)]
    assert main(argv) == 0
    sidecar = json.loads((out / "hinet-lite-s_xnnpack_ptq.json").read_text())
    assert sidecar["model"] == "hinet-lite-s" and sidecar["backend"] == "xnnpack"
    assert sidecar["calibration"]["count"] == 2 and sidecar["calibration"]["source"] == str(pool)
    assert sidecar["layer_precision"]["head"] == "float" and sidecar["layer_precision"]["tail"] == "float"
    assert sum(kind == "int8" for kind in sidecar["layer_precision"].values()) > 10
    assert sidecar["provenance"] == {"method": "ptq", "recipe": "xnnpack", "mixed": "first-last", "steps": None,
                                     "calibration": {"data": str(pool), "images": 2,
                                                     "degradation": sidecar["calibration"]["degradation"]},
                                     "options": {}, "source": None}
    report = json.loads((out / "report.json").read_text())
    assert report["images"] == 1 and report["tile"] == 32
    loaded, _ = load_quantized(out / "hinet-lite-s_xnnpack_ptq.pt2")
    assert loaded(torch.rand(1, 3, 32, 32)).shape == (1, 3, 32, 32)
    # A second run into the same folder is refused; evaluation sets are refused for calibration.
    assert main(argv) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert main([*argv[:-1], str(tmp_path / "other"), "--calib-source", "bsd68"]) == 2
    assert "cannot be used for calibration" in capsys.readouterr().err


@pytest.mark.parametrize("args, words", [
    (["--tile", "0"], "--tile 0 is not a tile size; pass a positive multiple of the model's size multiple, or leave "
                      "--tile out for the model's tile"),
    (["--tile", "-64"], "--tile -64 is not a tile size"),
    (["-o", "{blocker}"], "cannot write quantize output folder {blocker}: it exists and is not a folder; choose "
                          "another -o folder"),
], ids=["tile-0", "tile-negative", "output-is-a-file"])
def test_zoo_quantize_refuses_a_bad_tile_or_output_before_building_the_model(tmp_path, capsys, monkeypatch, args,
                                                                             words):
    """Before: --tile 0 quantized at the card's tile (256) without a word; -o FILE was `cannot access
    FILE: File exists` after the calibration, when the .pt2 was saved."""
    from zoo import registry
    from zoo_cli.main import main

    monkeypatch.setattr(registry, "create_model", lambda *a, **k: pytest.fail("the model was built"))
    blocker = tmp_path / "blocker"
    blocker.write_text("a file")
    argv = ["quantize", "hinet-lite-s", "--backend", "xnnpack", "-o", str(tmp_path / "q"), "--quiet"]
    argv += [arg.format(blocker=blocker) for arg in args]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("zoo: error: " + words.format(blocker=blocker)) and len(err.strip().splitlines()) == 1
    assert sorted(path.name for path in tmp_path.iterdir()) == ["blocker"]


@needs_executorch
def test_zoo_quantize_qat_runs_the_training_engine(pool, tmp_path):
    """--method qat is a front to the engine's QAT phase: a run folder with its log and float
    weights, and the int8 model the engine converted, with the command's sidecar fields."""
    from quantize.commands import main

    out = tmp_path / "q"
    argv = ["hinet-lite-s", "--backend", "xnnpack", "--method", "qat", "--untrained", "--tile", "32",
            "--calib-images", "2", "--calib-source", str(pool), "--qat-steps", "2", "--qat-batch", "2",
            "--qat-target", "float", "--eval-dataset", "none", "--quiet", "-o", str(out)]
    assert main(argv) == 0
    run = out / "hinet-lite-s_xnnpack_qat_run"
    assert (run / "log.csv").is_file() and (run / "final.safetensors").is_file()
    assert (run / "quantized_state.safetensors").is_file()  # what zoo quantize --pack ships
    sidecar = json.loads((out / "hinet-lite-s_xnnpack_qat.json").read_text())
    assert sidecar["method"] == "qat" and sidecar["model"] == "hinet-lite-s" and sidecar["qat_target"] == "float"
    assert sidecar["qat"]["distill_from_float"] == 1.0 and sidecar["qat"]["iterations"] == 2
    assert sidecar["file"] == "hinet-lite-s_xnnpack_qat.pt2" and sidecar["input_shape"] == [3, 32, 32]
    assert sidecar["layer_precision"]["head"] == "float"
    provenance = sidecar["provenance"]  # the engine's record: QAT steps, the float target, the crops' source
    assert (provenance["method"], provenance["mixed"], provenance["steps"]) == ("qat", "first-last", 2)
    assert provenance["options"]["distill_from_float"] == 1.0 and provenance["calibration"]["data"] == str(pool)
    loaded, _ = load_quantized(out / "hinet-lite-s_xnnpack_qat.pt2")
    engine_model, _ = load_quantized(run / "quantized.pt2")
    x = torch.rand(1, 3, 32, 32)
    assert torch.equal(loaded(x), engine_model(x))
    assert main(argv) == 2  # the folder holds a run: --overwrite replaces it
    assert main([*argv, "--overwrite"]) == 0


def test_qat_float_target_is_the_float_models_output(calibration):
    """--qat-target float: the QAT targets are the float model's (clamped, eval-mode) outputs on
    the very inputs of the step, so the int8 network learns to reproduce its float original."""
    from quantize.api import _float_model_targets

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 3, 3, padding=1)).train()
    sampler = training_pair_sampler(calibration, batch_size=2, seed=0, fresh_degradation=True)
    inputs, targets = _float_model_targets(sampler, model)(3)
    assert torch.equal(inputs, sampler(3)[0])
    with torch.no_grad():
        assert torch.equal(targets, model(inputs).clamp(0, 1))
    assert not torch.equal(targets, sampler(3)[1])


def _activation_qparams(converted) -> list[tuple[float, int]]:
    """(scale, zero point) of every per-tensor quantize node of a converted graph, in graph order."""
    params = []
    for node in converted.graph.nodes:
        if node.op == "call_function" and str(node.target).split(".")[-2:-1] == ["quantize_per_tensor"]:
            scale, zero_point = node.args[1], node.args[2]
            if not isinstance(scale, (int, float)):
                scale = float(getattr(converted, scale.target))
                zero_point = int(getattr(converted, zero_point.target))
            params.append((round(float(scale), 9), int(zero_point)))
    return params


@needs_executorch
def test_qat_can_start_from_ptq_activation_ranges_and_keep_them(calibration):
    """activation_ranges: the activation quantizers take PTQ's histogram ranges and stay there
    while the weights train; without it they follow moving-average min/max (other ranges)."""
    from quantize.ptq import quantize_ptq
    from quantize.qat import quantize_qat

    model = tiny_model()
    pair = calibration.batch([0, 1])
    ptq = quantize_ptq(model, pair[0], "xnnpack", calibration, mixed=MixedPrecision())
    frozen = quantize_qat(model, pair[0], "xnnpack", [pair], steps=4, lr=1e-3, mixed=MixedPrecision(),
                          activation_ranges=calibration)
    free = quantize_qat(model, pair[0], "xnnpack", [pair], steps=4, lr=1e-3, mixed=MixedPrecision())
    expected = _activation_qparams(ptq)
    assert expected and len(_activation_qparams(frozen)) == len(expected)
    for (scale, zero_point), (want_scale, want_zero_point) in zip(_activation_qparams(frozen), expected):
        assert scale == pytest.approx(want_scale, rel=1e-5) and abs(zero_point - want_zero_point) <= 1
    assert _activation_qparams(free) != expected
    assert "frozen" in frozen.meta["zoo_quantization"]["qat_activation_ranges"]
    assert free.meta["zoo_quantization"]["qat_activation_ranges"] == "moving-average min/max"
    losses = frozen.meta["zoo_quantization"]["qat_losses"]
    assert losses[-1] < losses[0]  # the weights still train


def test_learnable_scales_stay_positive_through_training_steps():
    """A gradient step can push the scale of a nearly constant activation through zero (idsanet-x4's
    QAT ended with 30 negative scales); torchao clamps only when qparams are read, so training ran on
    negative scales. The zoo's LSQ quantizer floors the scale before every forward."""
    pytest.importorskip("torchao")
    from torchao.quantization.pt2e.fake_quantize import FakeQuantize
    from torchao.quantization.pt2e.observer import MovingAverageMinMaxObserver

    from quantize.qat import MIN_LEARNED_SCALE, use_learnable_scales

    holder = nn.Module()
    holder.activation_post_process_0 = FakeQuantize(MovingAverageMinMaxObserver, dtype=torch.int8,
                                                    qscheme=torch.per_tensor_affine, quant_min=-128, quant_max=127)
    tiny = torch.full((64,), 1e-4) + torch.linspace(0, 1e-5, 64)
    holder.activation_post_process_0(tiny)
    assert use_learnable_scales(holder) == 1
    learnable = holder.activation_post_process_0
    with torch.no_grad():
        learnable.scale.sub_(1.0)  # an oversized step, as a large learning rate on a tiny scale gives
    assert learnable.scale.item() < 0
    out = learnable(tiny)
    assert learnable.scale.item() == pytest.approx(MIN_LEARNED_SCALE) and torch.isfinite(out).all()
    assert float(learnable.calculate_qparams()[0]) > 0
