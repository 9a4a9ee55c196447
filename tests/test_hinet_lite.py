"""HINet-Lite: MAC budget (<= 1/20 of hinet-sidd-1x), parameter count against a closed form, no
normalisation layers, a mobile-only operator set in the exported graph, the stated receptive
radius against gradient support, exact tiling at that radius, distillation taps against a real
HINet, and the proof of mobile readiness: the PT2E int8 model lowers to ONE XNNPACK delegate."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from zoo.errors import ZooError
from zoo.macs import count_macs, count_parameters
from zoo.models.hinet import HINet
from zoo.models.hinet_lite import HINetLite, distillation_taps, receptive_radius
from zoo.registry import create_model, get_card
from zoo.tiling import tiled_forward

TIERS = ("hinet-lite", "hinet-lite-s")
TEACHER = "hinet-sidd-1x"
#: Every op the mobile backends delegate in int8 that the lite models may use (exported ATen names).
ALLOWED_OPS = {"conv2d", "relu", "add", "pixel_shuffle", "pixel_unshuffle", "clamp"}


def build(name: str) -> HINetLite:
    return get_card(name).builder()


def narrow_copy(model: HINetLite, widths=(4, 8, 8, 8)) -> HINetLite:
    """Same block structure (hence same receptive field), few channels: cheap to run at large sizes.

    Its ``tail`` gets torch's default random init: the zero init would make it the identity."""
    encoder = tuple(len(stage) for stage in model.encoders)
    decoder = tuple(len(stage) for stage in model.decoders)
    copy = HINetLite(3, widths[: len(encoder)], encoder, decoder)
    copy.tail.reset_parameters()
    return copy


def conv_macs_by_hooks(model: nn.Module, shape) -> int:
    """MACs of all convolutions from their actual output shapes: C_in/groups * k_h * k_w per output element."""
    total = 0

    def hook(module, _inputs, output):
        nonlocal total
        kernel = module.kernel_size[0] * module.kernel_size[1]
        total += output.numel() * module.in_channels // module.groups * kernel

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        model(torch.zeros(shape))
    for handle in handles:
        handle.remove()
    return total


def closed_form_parameters(widths, encoder_blocks, decoder_blocks, channels=3) -> int:
    """Parameter count from the architecture description (conv weights + biases)."""
    def conv(c_in, c_out, k):
        return c_in * c_out * k * k + c_out

    packed = 4 * channels
    total = conv(packed, widths[0], 3) + conv(widths[0], packed, 3)
    total += sum(blocks * 2 * conv(w, w, 3) for w, blocks in zip(widths, encoder_blocks))
    for level in range(len(widths) - 1):
        total += conv(widths[level], widths[level + 1], 2)  # down
        total += conv(widths[level + 1], 4 * widths[level], 1)  # up (before pixel_shuffle)
        total += decoder_blocks[len(widths) - 2 - level] * 2 * conv(widths[level], widths[level], 3)
    return total


@pytest.fixture(scope="module")
def teacher_macs() -> int:
    with torch.device("meta"):
        teacher = get_card(TEACHER).builder()
    return count_macs(teacher, (1, 3, 256, 256))


@pytest.mark.parametrize("name", TIERS)
def test_card_describes_an_int8_gaussian_denoiser(name):
    card = get_card(name)
    assert (card.task, card.family, card.scale) == ("denoise", "hinet", 1)
    assert card.size_multiple == 16 == build(name).size_multiple
    assert (card.tile, card.overlap) == (256, 32)
    assert card.weights.endswith("_gaussian.safetensors") and card.weights.startswith("hinet_lite")
    assert not card.zero_shot and card.official_weights is None
    if not card.weights_path.is_file():
        with pytest.raises(ZooError, match="no trained weights"):
            create_model(name)
    model, _ = create_model(name, untrained=True)
    assert model.zoo_untrained  # --untrained always keeps the random init, shipped weights or not
    if card.has_weights:
        assert not getattr(create_model(name)[0], "zoo_untrained", False)


@pytest.mark.parametrize("name", TIERS)
def test_macs_at_most_a_twentieth_of_the_teacher(name, teacher_macs):
    model = build(name)
    macs = count_macs(model, (1, 3, 256, 256))
    assert 157.5e9 < teacher_macs < 157.7e9  # the teacher is the 157.60 GMACs hinet-sidd-1x
    assert macs * 20 <= teacher_macs
    # Everything that costs MACs is a convolution: pixel (un)shuffle, ReLU, add and clamp do not.
    assert macs == conv_macs_by_hooks(model, (1, 3, 256, 256))
    # The summary's numbers are the measured ones.
    summary = get_card(name).summary
    stated_gmacs = float(re.search(r"([\d.]+) GMACs", summary).group(1))
    stated_ratio = int(re.search(r"1/(\d+) of", summary).group(1))
    assert stated_gmacs == round(macs / 1e9, 2)
    assert stated_ratio == round(teacher_macs / macs)


@pytest.mark.parametrize("name", TIERS)
def test_parameter_count_matches_the_architecture(name):
    model = build(name)
    encoder = [len(stage) for stage in model.encoders]
    decoder = [len(stage) for stage in model.decoders]
    count = count_parameters(model)
    assert count == closed_form_parameters(model.widths, encoder, decoder)
    stated = float(re.search(r"([\d.]+) M parameters", get_card(name).summary).group(1))
    assert stated == round(count / 1e6, 2)


@pytest.mark.parametrize("name", TIERS)
def test_no_normalisation_and_only_mobile_operators_after_export(name):
    model = build(name)
    norm_types = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm)
    assert not [n for n, m in model.named_modules() if isinstance(m, norm_types)]

    x = torch.rand(1, 3, 64, 64)
    program = torch.export.export(model, (x,))
    ops = {getattr(node.target, "_overloadpacket", node.target).__name__
           for node in program.graph.nodes if node.op == "call_function"}
    assert ops <= ALLOWED_OPS, f"non-mobile operators: {ops - ALLOWED_OPS}"
    assert {"conv2d", "pixel_unshuffle", "pixel_shuffle"} <= ops
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x), model(x), rtol=0, atol=1e-6)


def test_forward_is_a_global_residual_clamped_only_at_inference():
    model = build("hinet-lite-s")  # untrained: the zero-initialised tail makes it the identity
    x = torch.rand(2, 3, 32, 48) * 1.4 - 0.2  # noisy inputs leave [0, 1]
    with torch.no_grad():
        assert torch.equal(model.eval()(x), x.clamp(0, 1))
        assert torch.equal(model.train()(x), x)
        model.tail.bias.fill_(0.5)
        assert torch.allclose(model.train()(x), x + 0.5)


def test_wrong_input_sizes_are_refused_with_the_fix():
    model = build("hinet-lite-s")
    with pytest.raises(ValueError, match="multiples of 16.*48x48"):
        model(torch.rand(1, 3, 40, 40))
    with pytest.raises(ValueError, match="3 channels"):
        model(torch.rand(1, 1, 32, 32))
    with pytest.raises(ValueError, match="encoder_blocks"):
        HINetLite(widths=(8, 16), encoder_blocks=(1,), decoder_blocks=(1,))


@pytest.mark.parametrize("name", TIERS)
def test_receptive_radius_equals_gradient_support(name):
    model = narrow_copy(build(name)).double()
    encoder = [len(stage) for stage in model.encoders]
    decoder = [len(stage) for stage in model.decoders]
    radius = receptive_radius(encoder, decoder)
    assert f"receptive-field radius {radius} px" in " ".join(get_card(name).notes)

    torch.manual_seed(0)
    width = 16 * 24
    x = torch.rand(1, 3, 16, width, dtype=torch.float64, requires_grad=True)
    y = model(x)
    left = right = 0
    for column in range(width // 2, width // 2 + 16):  # one column per phase of the 16-pixel grid
        weights = torch.randn(1, 3, 16, dtype=torch.float64)
        (grad,) = torch.autograd.grad((y[..., column] * weights).sum(), x, retain_graph=True)
        reached = torch.nonzero(grad.abs().sum(dim=(0, 1, 2))).flatten()
        left = max(left, column - int(reached.min()))
        right = max(right, int(reached.max()) - column)
    assert max(left, right) == radius


def test_tiling_is_exact_with_a_margin_of_one_radius():
    model = narrow_copy(build("hinet-lite-s")).eval()
    radius = receptive_radius([len(s) for s in model.encoders], [len(s) for s in model.decoders])
    overlap = -(-2 * radius // 16) * 16
    tile = 2 * overlap + 32
    torch.manual_seed(1)
    image = torch.rand(3, tile, 2 * tile - overlap + 40)
    with torch.no_grad():
        whole = tiled_forward(model, image, tile=None, overlap=0, size_multiple=16)
        exact = tiled_forward(model, image, tile=tile, overlap=overlap, size_multiple=16, margin=radius)
        no_margin = tiled_forward(model, image, tile=tile, overlap=overlap, size_multiple=16, margin=0)
    assert (exact - whole).abs().max() < 1e-5
    assert (no_margin - whole).abs().max() > 1e-3  # the comparison does see tile borders


@pytest.mark.parametrize("teacher_stage", [1, 2])
def test_distillation_taps_match_teacher_feature_shapes(teacher_stage):
    student = narrow_copy(build("hinet-lite"), widths=(4, 8, 16, 32))
    teacher = HINet(wf=4, depth=5).eval()
    taps = distillation_taps(student, teacher_wf=4, teacher_stage=teacher_stage)
    assert len(taps) == 7
    captured = {}

    def keep(key):
        def hook(_module, _inputs, output):
            captured[key] = output
        return hook

    handles = []
    for tap in taps:
        handles.append(student.get_submodule(tap.student).register_forward_hook(keep(("s", tap.student))))
        handles.append(teacher.get_submodule(tap.teacher).register_forward_hook(keep(("t", tap.teacher))))
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        student(x)
        teacher(x)
    for handle in handles:
        handle.remove()
    for tap in taps:
        s = captured[("s", tap.student)]
        t = captured[("t", tap.teacher)]
        t = t if tap.teacher_index is None else t[tap.teacher_index]
        assert tuple(s.shape) == (1, tap.student_channels, 64 // tap.stride, 96 // tap.stride), tap
        assert tuple(t.shape) == (1, tap.teacher_channels, 64 // tap.stride, 96 // tap.stride), tap


# About a minute each on 2 busy cores; the small tier uses the same operators, so it runs with the slow tests.
@pytest.mark.parametrize("name", ["hinet-lite", pytest.param("hinet-lite-s", marks=pytest.mark.slow)])
def test_int8_pt2e_model_lowers_to_one_xnnpack_delegate(name, tmp_path):
    pytest.importorskip("executorch")
    pytest.importorskip("torchao")
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from executorch.exir import to_edge_transform_and_lower
    from executorch.runtime import Runtime
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    torch.manual_seed(0)
    model = build(name)
    model.tail.reset_parameters()  # random, so the output is not just the input
    x = torch.rand(1, 3, 64, 64)
    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    prepared = prepare_pt2e(torch.export.export(model, (x,)).module(), quantizer)
    for _ in range(4):
        prepared(torch.rand(1, 3, 64, 64))
    quantized = convert_pt2e(prepared)

    # Every convolution reads int8 per-channel weights (none was left in float).
    convs = [n for n in quantized.graph.nodes if n.op == "call_function" and "conv2d" in str(n.target)]
    assert len(convs) == sum(isinstance(m, nn.Conv2d) for m in model.modules())
    assert all("dequantize_per_channel" in str(conv.args[1].target) for conv in convs)

    lowered = to_edge_transform_and_lower(torch.export.export(quantized, (x,)), partitioner=[XnnpackPartitioner()])
    calls = [n for n in lowered.exported_program().graph.nodes if n.op == "call_function"]
    delegates = [n for n in calls if "executorch_call_delegate" in str(n.target)]
    outside = [str(n.target) for n in calls if n not in delegates and "getitem" not in str(n.target)]
    assert len(delegates) == 1
    assert outside == []

    # The lowered program runs and agrees with the quantized reference to a few int8 steps.
    path = tmp_path / f"{name}_int8.pte"
    path.write_bytes(lowered.to_executorch().buffer)
    method = Runtime.get().load_program(str(path)).load_method("forward")
    with torch.no_grad():
        reference = quantized(x)
    output = method.execute([x])[0]
    assert output.shape == x.shape
    assert (output - reference).abs().max() < 4 / 255
