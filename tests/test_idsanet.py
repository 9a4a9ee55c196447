"""IDSA-Net and its phone student: parameter budget against the paper, output sizes on odd inputs,
the attention matrix really computed once per group and used by every stage, export at a fixed
tile with the plain-op modules equal to the straightforward versions, the student's operator set
and exact tiling, x4 -> x2 checkpoint transplant, and the SR evaluation path (bicubic degradation,
Y-channel PSNR with border crop, tiling at scale > 1) on a bicubic "identity" model.

Every idsanet card's int8 model lowering to ONE XNNPACK partition is checked (cards flagged
``single_int8_partition``) by tests/test_model_contract.py::test_int8_lowers_to_one_xnnpack_partition
(idsanet-lite-x2, the smallest flagged card, by default; the others with the slow tests); the
float full model's single partition here."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from zoo.checkpoints import load_weights, save_weights
from zoo.errors import ZooError
from zoo.macs import count_macs, count_parameters
from zoo.models.idsanet import (
    PAPER_X4_PARAMETERS,
    IDSANet,
    IDSANetLite,
    SharedAttention,
    WindowAttentionMatrix,
    _l2_normalise,
    channel_mean_and_max,
    channel_shuffle,
    instance_norm,
    mean_of_last_axis,
    mean_over_height,
    mean_over_width,
    nearest_repeat_weight,
    repeat_for_pixel_shuffle,
    window_merge,
    window_partition,
)
from zoo.registry import create_model, get_card

CARDS = ("idsanet-x2", "idsanet-x3", "idsanet-x4", "idsanet-lite-x2", "idsanet-lite-x4")
#: Operators the student may use after export (ATen names); all run in int8 inside XNNPACK.
LITE_OPS = {"conv2d", "relu", "add", "pixel_shuffle", "clamp"}


def small_idsanet(scale: int = 2) -> IDSANet:
    """Every module of IDSA-Net at a few channels: cheap forward, backward and export."""
    model = IDSANet(scale=scale, channels=16, groups=2, stages=2, heads=2, window=4, qk_channels=8)
    model.tail.reset_parameters()  # not the zero start, so outputs depend on the body
    return model


@pytest.mark.parametrize("name", CARDS)
def test_cards_state_measured_size_and_ship_no_weights_yet(name):
    card = get_card(name)
    lite = "lite" in name
    assert (card.task, card.family, card.size_multiple) == ("super-resolution", "idsanet", 1)
    assert card.scale == int(name[-1])
    assert card.architecture is (IDSANetLite if lite else IDSANet)
    assert card.single_int8_partition  # every idsanet int8 model is one XNNPACK partition
    assert card.weights == name.replace("-", "_") + ".safetensors"
    with torch.device("meta"):
        model = card.builder()
    assert isinstance(model, card.architecture) and model.scale == card.scale
    parameters = count_parameters(model)
    stated = float(re.search(r"([\d.]+) M parameters", card.summary).group(1))
    assert stated == round(parameters / 1e6, 2)
    stated_gmacs = float(re.search(r"([\d.]+) GMACs", card.summary).group(1))
    assert stated_gmacs == round(count_macs(model, (1, 3, 256, 256)) / 1e9, 2)
    if lite:
        assert 30_000 <= parameters <= 150_000
    if not card.weights_path.is_file():  # no weights ship: refused like any card without its file
        with pytest.raises(ZooError, match="no trained weights"):
            create_model(name)


def test_x4_parameters_within_ten_percent_of_the_paper():
    with torch.device("meta"):
        parameters = count_parameters(IDSANet(scale=4))
    assert abs(parameters - PAPER_X4_PARAMETERS) <= 0.10 * PAPER_X4_PARAMETERS
    with torch.device("meta"):  # only the tail depends on the scale
        other = {scale: count_parameters(IDSANet(scale=scale)) for scale in (2, 3)}
    assert parameters - other[2] == 64 * 9 * 3 * (16 - 4) + 3 * (16 - 4)
    assert parameters - other[3] == 64 * 9 * 3 * (16 - 9) + 3 * (16 - 9)


@pytest.mark.parametrize("name", CARDS)
def test_odd_input_gives_scale_times_larger_output(name):
    model, card = create_model(name, untrained=True)
    x = torch.rand(1, 3, 17, 23)
    with torch.no_grad():
        y = model(x)
    assert y.shape == (1, 3, 17 * card.scale, 23 * card.scale)
    # Untrained: the zero tail leaves the skip, nearest-neighbour upsampling, exactly.
    torch.testing.assert_close(y, F.interpolate(x, scale_factor=card.scale, mode="nearest"), rtol=0, atol=1e-6)


@pytest.mark.parametrize("build", [small_idsanet, lambda: IDSANetLite(scale=3, channels=8, blocks=2)])
def test_forward_and_backward_reach_every_parameter(build):
    torch.manual_seed(0)
    model = build().train()
    if isinstance(model, IDSANetLite):
        model.tail.reset_parameters()
    x = torch.rand(2, 3, 13, 18)
    y = model(x)
    assert y.shape == (2, 3, 13 * model.scale, 18 * model.scale)
    (y - torch.rand_like(y)).abs().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert missing == []
    assert all(p.grad.abs().sum() > 0 for n, p in model.named_parameters() if n.startswith(("head", "tail")))
    assert model.train()(torch.full((1, 3, 8, 8), 2.0)).max() > 1.0  # training never clamps
    assert model.eval()(torch.full((1, 3, 8, 8), 2.0)).max() == 1.0


def test_attention_matrix_is_computed_once_per_group_and_used_by_every_stage():
    torch.manual_seed(0)
    model = small_idsanet().eval()
    calls = {}
    stage_io = []

    def count(name):
        def hook(_module, _inputs, _output):
            calls[name] = calls.get(name, 0) + 1
        return hook

    def identity_attention(_module, _inputs, output):
        # Replace the shared matrix by the identity: each stage's attention then returns
        # project(value(x)), which can only happen if the stages consume this very tensor.
        return torch.eye(output.shape[-1]).expand_as(output).clone()

    def keep(module, inputs, output):
        stage_io.append((module, inputs[0], inputs[1], output))

    handles = []
    for index, group in enumerate(model.groups):
        handles.append(group.attention_matrix.register_forward_hook(count(index)))
        handles.append(group.attention_matrix.register_forward_hook(identity_attention))
        assert not any(isinstance(m, WindowAttentionMatrix) for m in group.stages.modules())
        handles.extend(stage.attention.register_forward_hook(keep) for stage in group.stages)
    with torch.no_grad():
        model(torch.rand(1, 3, 12, 20))
    for handle in handles:
        handle.remove()
    assert calls == {0: 1, 1: 1}
    assert len(stage_io) == 4  # 2 groups x 2 stages, each handed the group's matrix
    with torch.no_grad():
        for module, x, attn, output in stage_io:
            assert torch.equal(attn, torch.eye(16).expand_as(attn))
            torch.testing.assert_close(output, module.project(module.value(x)), rtol=0, atol=1e-5)


def test_window_attention_equals_a_per_window_loop():
    torch.manual_seed(0)
    window, heads, channels = 4, 2, 8
    matrix = WindowAttentionMatrix(channels, qk_channels=8, heads=heads, window=window).eval()
    apply = SharedAttention(channels, heads, window).eval()
    x = torch.randn(2, channels, 8, 12)
    with torch.no_grad():
        fast = apply(x, matrix(x))
        q_all, k_all = matrix.qk(x).chunk(2, dim=1)
        v_all = apply.value(x)
        slow = torch.zeros_like(v_all)
        tau = matrix.log_temperature.exp().view(heads)
        for n in range(2):
            for top in range(0, 8, window):
                for left in range(0, 12, window):
                    def tokens(t):  # (heads, w*w, d), tokens row-major inside the window
                        patch = t[n, :, top:top + window, left:left + window].reshape(t.shape[1], -1)
                        return patch.reshape(heads, -1, window * window).transpose(1, 2)
                    q, k, v = tokens(q_all), tokens(k_all), tokens(v_all)
                    logits = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(1, 2) * tau[:, None, None]
                    for h in range(heads):
                        for i in range(window * window):
                            for j in range(window * window):
                                (yi, xi), (yj, xj) = divmod(i, window), divmod(j, window)
                                offset = (yi - yj + window - 1) * (2 * window - 1) + (xi - xj + window - 1)
                                logits[h, i, j] += matrix.position_bias[offset, h]
                    out = logits.softmax(-1) @ v  # (heads, T, d)
                    out = out.transpose(1, 2).reshape(channels, window, window)
                    slow[n, :, top:top + window, left:left + window] = out
        torch.testing.assert_close(fast, apply.project(slow), rtol=1e-4, atol=5e-5)


def test_plain_op_helpers_equal_the_straightforward_versions():
    torch.manual_seed(0)
    x = torch.randn(2, 6, 8, 12) * 3 + 1
    torch.testing.assert_close(instance_norm(x), F.instance_norm(x, eps=1e-5), rtol=1e-5, atol=1e-5)

    windows = window_partition(x, 4)  # (N * nW, w*w, C); F.unfold gives (N, C*w*w, nW)
    unfolded = F.unfold(x, kernel_size=4, stride=4).reshape(2, 6, 16, -1).permute(0, 3, 2, 1).reshape(-1, 16, 6)
    assert torch.equal(windows, unfolded)
    assert torch.equal(window_merge(windows, 4, 2, 8, 12), x)

    torch.testing.assert_close(mean_of_last_axis(x, (2, 6, 8)), x.mean(dim=3), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(mean_of_last_axis(x[0], (6, 8, 1)), x[0].mean(dim=2, keepdim=True), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(mean_over_width(x), x.mean(dim=3, keepdim=True), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(mean_over_height(x), x.mean(dim=2, keepdim=True), rtol=1e-6, atol=1e-6)
    pooled = channel_mean_and_max(x)
    torch.testing.assert_close(pooled[:, :1], x.mean(dim=1, keepdim=True), rtol=1e-6, atol=1e-6)
    assert torch.equal(pooled[:, 1:], x.amax(dim=1, keepdim=True))
    tokens = torch.randn(5, 16, 8)
    torch.testing.assert_close(_l2_normalise(tokens), F.normalize(tokens, dim=-1), rtol=1e-5, atol=1e-6)

    shuffled = channel_shuffle(x, 3)  # channels g*2+i -> i*3+g
    assert torch.equal(shuffled, x[:, [0, 2, 4, 1, 3, 5]])

    for scale in (2, 3, 4):
        nearest = F.interpolate(x[:, :3], scale_factor=scale, mode="nearest")
        weight = nearest_repeat_weight(scale)  # also the student's skip initialisation
        assert torch.equal(F.pixel_shuffle(repeat_for_pixel_shuffle(x[:, :3], weight), scale), nearest)
        with torch.autocast("cpu", dtype=torch.bfloat16):  # the skip stays float32 in mixed precision
            repeated = repeat_for_pixel_shuffle(x[:, :3], weight)
        assert repeated.dtype == torch.float32 and torch.equal(F.pixel_shuffle(repeated, scale), nearest)


def _ops(program) -> set[str]:
    return {getattr(node.target, "_overloadpacket", node.target).__name__
            for node in program.graph.nodes if node.op == "call_function"}


@pytest.mark.parametrize("size", [(16, 16), (13, 18)])
def test_idsanet_exports_at_a_fixed_tile(size):
    torch.manual_seed(0)
    model = small_idsanet().eval()
    x = torch.rand(1, 3, *size)
    program = torch.export.export(model, (x,))
    ops = _ops(program)
    assert not {op for op in ops if "norm" in op or "nonzero" in op}, ops  # norms are plain reductions
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x), model(x), rtol=0, atol=1e-5)


def test_idsanet_lowers_to_one_xnnpack_partition_in_float(tmp_path):
    """Window attention, shared matrices, sequence units, INHA and the nearest skip all run inside
    XNNPACK: one partition, nothing outside (the position-bias gather is folded at export); the
    .pte computes what the model computes."""
    pytest.importorskip("executorch")
    from export_mobile.targets import get_target
    from export_mobile.targets.base import ExportRequest

    torch.manual_seed(0)
    model = small_idsanet(scale=3).eval()
    x = torch.rand(1, 3, 16, 24)
    target = get_target("executorch-xnnpack")
    result = target.export(ExportRequest(model=model, example=x, precision="fp32", out_path=tmp_path / "m.pte"))
    assert (result.partitions, result.ops_outside_delegate) == (1, [])
    runner = target.load_runner(result.path, {})
    with torch.no_grad():
        expected = model(x).numpy()
    assert abs(runner(x.numpy()) - expected).max() < 1e-5


def test_lite_exports_to_mobile_operators_only():
    model = IDSANetLite(scale=4).eval()
    norm_or_attention = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.MultiheadAttention)
    assert not [n for n, m in model.named_modules() if isinstance(m, norm_or_attention)]
    x = torch.rand(1, 3, 32, 32)
    program = torch.export.export(model, (x,))
    assert _ops(program) <= LITE_OPS, _ops(program) - LITE_OPS
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x), model(x), rtol=0, atol=1e-6)


def test_lite_tiling_is_exact_at_its_receptive_radius():
    from zoo.tiling import tiled_forward

    torch.manual_seed(2)
    model = IDSANetLite(scale=2).eval()
    model.tail.reset_parameters()
    image = torch.rand(3, 40, 70) * 0.8 + 0.1
    with torch.no_grad():
        whole = tiled_forward(model, image, tile=None, overlap=0, scale=2)
        tiled = tiled_forward(model, image, tile=32, overlap=14, scale=2, margin=7)  # radius 7 (notes)
        blind = tiled_forward(model, image, tile=32, overlap=14, scale=2, margin=0)
    assert "receptive-field radius 7 LR pixels" in " ".join(get_card("idsanet-lite-x2").notes)
    assert tiled.shape == (3, 80, 140)
    assert (tiled - whole).abs().max() < 1e-5
    assert (blind - whole).abs().max() > 1e-4


class BicubicUpscaler(nn.Module):
    """The "identity" SR model: MATLAB bicubic upscaling (zoo.data.resize.imresize)."""

    def __init__(self, scale: int):
        super().__init__()
        self.scale = scale
        self.anchor = nn.Parameter(torch.zeros(()))  # restore_tensor reads the device from a parameter

    def forward(self, x):
        from zoo.data.resize import imresize

        return imresize(x, self.scale)


@pytest.mark.parametrize("name", ["idsanet-x4", "idsanet-x3"])
def test_sr_evaluation_path_gives_bicubic_psnr_for_a_bicubic_model(name):
    from zoo.data.datasets import open_dataset
    from zoo.data.io import quantize
    from zoo.evaluate import MetricSettings, degradation_for, input_reference, measure
    from zoo.inference import TileSettings, restore_tensor

    card = get_card(name)
    degrade = degradation_for(card)
    assert degrade.spec == f"bicubic:x{card.scale}"
    settings = MetricSettings.for_task(card.task, card.scale)
    assert (settings.y_channel, settings.crop_border) == (True, card.scale)
    clean = open_dataset("bundled", limit=1)[0].target[:, 100:292, 60:252]  # 192 px: 48-64 LR, 1-2 tiles
    degraded, target = degrade(clean, seed=0), degrade.target(clean)
    model = BicubicUpscaler(card.scale)
    whole = restore_tensor(model, card, degraded, TileSettings(None, 0))
    tiled = restore_tensor(model, card, degraded, TileSettings(32, 8))  # several tiles at scale > 1
    assert whole.shape == tiled.shape == target.shape == clean.shape
    bicubic = measure(input_reference(degraded, card.scale), target, settings)["psnr"]
    assert 20 < bicubic < 40
    for output in (whole, tiled):
        assert abs(measure(quantize(output, 8), target, settings)["psnr"] - bicubic) < 0.05
    # The untrained IDSA-Net is nearest upsampling: clearly below bicubic on the same path.
    untrained, _ = create_model(name, untrained=True)
    nearest = restore_tensor(untrained, card, degraded, TileSettings.for_card(card))
    assert measure(quantize(nearest, 8), target, settings)["psnr"] < bicubic - 0.5
