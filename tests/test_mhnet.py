"""MHNet v1/v2: layouts equal to the official checkpoints (minus the unused layers, skipped on load),
official parameter and MAC counts, official-style checkpoint round trip, v1/v2 mismatch messages,
any input size forward and backward, export-friendly blocks equal to the official formulations;
MHNet-Lite: MAC budget, mobile-only operators (its one int8 XNNPACK partition: test_model_contract)."""

from __future__ import annotations

import math
import re
import warnings
from fnmatch import fnmatchcase

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.official_layouts import official_layout
from zoo.checkpoints import load_weights
from zoo.errors import ZooError
from zoo.macs import count_macs, count_parameters
from zoo.models.blocks import LayerNorm2d
from zoo.models.mhnet import (
    AFFM,
    SMAM_TOPK_FRACTIONS,
    MHNetV1,
    MHNetV2,
    SparseMixedAttention,
)
from zoo.registry import create_model, get_card
from zoo.tiling import crop_to_size, pad_to_multiple

#: card -> (official parameter count, GMACs at 256x256), both measured on the official definitions.
OFFICIAL = {
    "mhnet-v2-deblur": (67_543_311, 125.9),
    "mhnet-v1-derain": (16_696_605, 30.83),
    "mhnet-v1-deblur": (17_028_093, 47.03),
}
V2_UNUSED_PARAMETERS = 15_747
LITE = ("mhnet-lite-deblur", "mhnet-lite-derain")
LITE_OPS = {"conv2d", "add", "mul", "pixel_shuffle", "pixel_unshuffle", "clamp"}


def card_layout(card_name: str) -> list[tuple[str, tuple[int, ...]]]:
    return official_layout(get_card(card_name).official_layout)


def meta_checkpoint(card_name: str) -> dict[str, torch.Tensor]:
    """The official state dict's keys and shapes, as meta tensors (no memory)."""
    return {key: torch.empty(shape, device="meta") for key, shape in card_layout(card_name)}


def build_on_meta(name: str) -> nn.Module:
    with torch.device("meta"):
        return get_card(name).builder()


@pytest.fixture(scope="module")
def v2_macs() -> int:
    return count_macs(build_on_meta("mhnet-v2-deblur"), (1, 3, 256, 256))


def small_v2() -> MHNetV2:
    return MHNetV2(width=8, num_cab=1, encoder_blocks=(1, 1, 1, 1)).eval()


def small_v1() -> MHNetV1:
    return MHNetV1(width=8, n_feat=12, num_cab=1, encoder_blocks=(1, 1, 1, 1)).eval()


def randomise(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial values everywhere (NAFBlock beta/gamma start at zero, which would hide their branches)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            centre = 1.0 if ".norm" in name and name.endswith("weight") else 0.0
            parameter.copy_(centre + 0.2 * torch.randn_like(parameter))
    return model


# --- official layouts, counts, loading -------------------------------------------------------


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_state_dict_is_the_official_layout_without_the_unused_layers(name):
    card = get_card(name)
    layout = card_layout(name)
    used = [(key, shape) for key, shape in layout
            if not any(fnmatchcase(key, pattern) for pattern in card.checkpoint_ignore)]
    model = build_on_meta(name)
    assert [(key, tuple(t.shape)) for key, t in model.state_dict().items()] == used
    assert isinstance(model, card.architecture)
    official_count, _ = OFFICIAL[name]
    assert sum(math.prod(shape) for _, shape in layout) == official_count
    unused = official_count - count_parameters(model)
    if name.startswith("mhnet-v2"):
        assert unused == V2_UNUSED_PARAMETERS
    else:  # the top-level 'info' conv: width 32 -> n_feat, with bias
        assert unused == 33 * model.stage2.info.out_channels


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_official_layout_loads_strictly_and_the_skipped_keys_are_reported(name):
    model = build_on_meta(name)
    with pytest.warns(UserWarning, match=r"skipped \d+ keys \(([\d,]+) parameters\)") as caught:
        load_weights(model, meta_checkpoint(name), ignore=get_card(name).checkpoint_ignore)
    skipped = int(re.search(r"\(([\d,]+) parameters\)", str(caught[0].message)).group(1).replace(",", ""))
    assert skipped == OFFICIAL[name][0] - count_parameters(model)
    # Without the patterns the same checkpoint is refused (strict), naming the card it fits.
    with pytest.raises(ZooError, match="unexpected") as error:
        load_weights(model, meta_checkpoint(name))
    assert name in error.value.fix


def test_macs_match_the_official_measurements(v2_macs):
    assert v2_macs == pytest.approx(OFFICIAL["mhnet-v2-deblur"][1] * 1e9, rel=0.01)
    for name in ("mhnet-v1-derain", "mhnet-v1-deblur"):
        assert count_macs(build_on_meta(name), (1, 3, 256, 256)) == pytest.approx(OFFICIAL[name][1] * 1e9, rel=0.01)
    summary = get_card("mhnet-v2-derain").summary
    assert f"{v2_macs / 1e9:.2f} GMACs" in summary and "15,747" in summary


def test_official_style_checkpoint_round_trip_through_create_model(tmp_path):
    torch.manual_seed(0)
    source = MHNetV1(n_feat=40)
    state = {f"module.{key}": torch.randn_like(value) for key, value in source.state_dict().items()}
    state["module.info.weight"] = torch.randn(40, 32, 1, 1)  # the unused official layer
    state["module.info.bias"] = torch.randn(40)
    optimizer = {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.ones(4)}},
                 "param_groups": [{"lr": 2e-4, "betas": (0.9, 0.999), "params": [0]}]}
    path = tmp_path / "model_best.pth"
    torch.save({"epoch": 3000, "state_dict": state, "optimizer": optimizer}, path)

    with pytest.warns(UserWarning, match=r"skipped 2 keys \(1,320 parameters\).*info\.weight"):
        model, card = create_model("mhnet-v1-derain", weights=path)
    assert card.name == "mhnet-v1-derain" and not model.training
    loaded = model.state_dict()
    assert set(loaded) == {key[len("module."):] for key in state} - {"info.weight", "info.bias"}
    for key, value in loaded.items():
        assert torch.equal(value, state[f"module.{key}"]), key


def test_v2_patterns_skip_exactly_the_unused_layers_of_a_real_checkpoint():
    model = randomise(small_v2())
    state = dict(model.state_dict())
    extras = {"intro.weight": torch.randn(8, 3, 3, 3), "stage1.ending.weight": torch.randn(3, 8, 3, 3),
              "stage1.ending.bias": torch.randn(3), **{f"stage2.conv_dnc{i}.weight": torch.randn(8, 8, 1, 1)
                                                        for i in (2, 3, 4)}}
    fresh = small_v2()
    with pytest.warns(UserWarning, match="skipped 6 keys"):
        load_weights(fresh, {"epoch": 1, "state_dict": {**state, **extras}, "optimizer": {}},
                     ignore=get_card("mhnet-v2-deblur").checkpoint_ignore)
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(fresh(x), model(x))
    # A pattern never drops a key the model has: a wrong-shaped used tensor is still refused.
    with pytest.raises(ZooError, match="shape mismatch.*concat12"):
        load_weights(small_v2(), {**state, "concat12.weight": torch.randn(8, 8, 1, 1)}, ignore=("concat12.*",))


def test_v1_and_v2_checkpoints_given_to_the_other_model_name_the_right_card():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # v2's patterns also skip v1's stage1.ending: that warning is beside the point
        with pytest.raises(ZooError, match="does not fit MHNetV2") as error:
            load_weights(build_on_meta("mhnet-v2-deblur"), meta_checkpoint("mhnet-v1-derain"),
                         ignore=get_card("mhnet-v2-deblur").checkpoint_ignore)
    assert error.value.fix == "this checkpoint is for mhnet-v1-derain; use that model"

    with pytest.raises(ZooError, match="does not fit MHNetV1") as error:
        load_weights(build_on_meta("mhnet-v1-derain"), meta_checkpoint("mhnet-v2-deblur"),
                     ignore=get_card("mhnet-v1-derain").checkpoint_ignore)
    assert error.value.fix == "this checkpoint is for mhnet-v2-deblur or mhnet-v2-derain; use one of those models"

    with pytest.raises(ZooError, match="shape-mismatched") as error:
        load_weights(build_on_meta("mhnet-v1-derain"), meta_checkpoint("mhnet-v1-deblur"),
                     ignore=get_card("mhnet-v1-derain").checkpoint_ignore)
    assert error.value.fix == "this checkpoint is for mhnet-v1-deblur; use that model"


# --- forward: sizes, gradients, equivalence to the official formulations ----------------------


@pytest.mark.parametrize("build", [small_v2, small_v1], ids=["v2", "v1"])
@pytest.mark.parametrize("size", [(37, 45), (1, 1)])
def test_any_size_forward_and_backward(build, size):
    model = randomise(build())
    x = torch.rand(1, 3, *size, requires_grad=True)
    # v1's stage-1 image (stage1.ending) only exists for multi-stage losses: ask for it so every layer gets a gradient.
    outputs = model(x, return_stages=True) if isinstance(model, MHNetV1) else [model(x)]
    for y in outputs:
        assert y.shape == x.shape and torch.isfinite(y).all()
    sum(y.square().mean() for y in outputs).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    # Padding inside the model is the zoo's padding: the same result as padding outside.
    with torch.no_grad():
        padded, original = pad_to_multiple(x.detach(), 16)
        torch.testing.assert_close(model(x.detach()), crop_to_size(model(padded), original), rtol=0, atol=0)


def test_v1_returns_both_stages_on_request():
    model = randomise(small_v1())
    x = torch.rand(2, 3, 20, 36)
    with torch.no_grad():
        stage1, final = model(x, return_stages=True)
        assert stage1.shape == final.shape == x.shape
        assert torch.equal(final, model(x))
        assert not torch.allclose(stage1, final)
    with pytest.raises(ValueError, match="3 channels"):
        model(torch.rand(1, 1, 16, 16))


def test_layernorm2d_equals_nafnet_forward_and_its_hand_written_backward():
    torch.manual_seed(0)
    norm = LayerNorm2d(6)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.5, 0.5)
    x = torch.randn(2, 6, 5, 7, dtype=torch.float64, requires_grad=True)
    norm = norm.double()
    y = norm(x)
    reference = F.layer_norm(x.permute(0, 2, 3, 1), (6,), norm.weight, norm.bias, eps=1e-6).permute(0, 3, 1, 2)
    torch.testing.assert_close(y, reference, rtol=1e-12, atol=1e-12)
    # NAFNet's LayerNormFunction.backward, restated.
    grad_out = torch.randn_like(y)
    (grad_x,) = torch.autograd.grad(y, x, grad_out)
    with torch.no_grad():
        mu = x.mean(1, keepdim=True)
        var = (x - mu).pow(2).mean(1, keepdim=True)
        normalised = (x - mu) / (var + 1e-6).sqrt()
        g = grad_out * norm.weight.view(1, -1, 1, 1)
        expected = (g - normalised * (g * normalised).mean(1, keepdim=True) - g.mean(1, keepdim=True)) / (var + 1e-6).sqrt()
    torch.testing.assert_close(grad_x, expected, rtol=1e-10, atol=1e-12)


def test_smam_equals_the_official_in_place_masking():
    torch.manual_seed(0)
    block = SparseMixedAttention(64, heads=8)
    with torch.no_grad():
        for index in range(1, 5):
            getattr(block, f"attn{index}").fill_(0.1 * index)
    attention = torch.randn(2, 8, 8, 8)
    values = torch.randn(2, 8, 8, 20)
    b, heads, channels, _ = attention.shape
    expected = 0
    for index, (num, den) in enumerate(SMAM_TOPK_FRACTIONS, start=1):
        mask = torch.zeros(b, heads, channels, channels)
        mask.scatter_(-1, torch.topk(attention, k=int(channels * num / den), dim=-1, largest=True)[1], 1.0)
        masked = torch.where(mask > 0, attention, torch.full_like(attention, float("-inf")))
        expected = expected + (masked.softmax(dim=-1) @ values) * (0.1 * index)
    torch.testing.assert_close(block.mix(attention, values), expected, rtol=0, atol=0)
    assert [int(128 * n / d) for n, d in SMAM_TOPK_FRACTIONS] == [64, 85, 96, 102]  # the official v2 (1024 ch, 8 heads)


def test_affm_weights_each_branch_by_its_own_channel_softmax():
    torch.manual_seed(0)
    fuse = randomise(AFFM(16))
    f, f_e, f_d = (torch.randn(2, 16, 5, 6) for _ in range(3))
    with torch.no_grad():
        summary = fuse.conv_du(F.adaptive_avg_pool2d(f + f_e + f_d, 1))
        weights = [fc(summary).softmax(dim=1) for fc in fuse.fcs]
        assert all(torch.allclose(w.sum(dim=1), torch.ones(2, 1, 1)) for w in weights)
        expected = weights[0] * f + f_e * weights[1] + weights[2] * f_d
        torch.testing.assert_close(fuse(f, f_e, f_d), expected, rtol=0, atol=0)


@pytest.mark.parametrize("build", [small_v2, small_v1], ids=["v2", "v1"])
def test_torch_export_matches_eager(build):
    model = randomise(build())
    x = torch.rand(1, 3, 37, 45)
    program = torch.export.export(model, (x,))
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x), model(x), rtol=1e-5, atol=1e-5)


# --- cards -----------------------------------------------------------------------------------


def test_cards_describe_the_released_tasks_and_quote_the_paper():
    for name in ("mhnet-v2-deblur", "mhnet-v2-derain", "mhnet-v1-derain", "mhnet-v1-deblur"):
        card = get_card(name)
        assert card.family == "mhnet" and card.task == name.rsplit("-", 1)[1] and card.weights is None
        assert card.size_multiple == 16 and card.tile % 16 == 0
        assert "'epoch', 'state_dict', 'optimizer'" in card.official_weights and "Tombs98/MHNet" in card.official_weights
        notes = " ".join(card.notes)
        assert "quoted from the paper and not measured here" in notes
        assert ("33.67 dB / 0.925" in notes) if card.task == "derain" else ("GoPro 33.19 dB, HIDE 30.71 dB" in notes)
        with pytest.raises(ZooError, match="no trained weights.*Tombs98/MHNet"):
            create_model(name)


# --- MHNet-Lite ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", LITE)
def test_lite_cards_name_their_weights_and_build_untrained_on_request(name):
    card = get_card(name)
    assert card.task == name.rsplit("-", 1)[1] and card.single_int8_partition and card.official_weights is None
    assert card.weights == f"mhnet_lite_{card.task}.safetensors"
    assert card.qat_weights == {"xnnpack": f"mhnet_lite_{card.task}_qat_xnnpack.safetensors"}
    if not card.weights_path.is_file():
        assert not card.has_weights
        with pytest.raises(ZooError, match="no trained weights"):
            create_model(name)
    assert create_model(name, untrained=True)[0].zoo_untrained


def test_lite_costs_at_most_a_twentieth_of_v2(v2_macs):
    model = get_card("mhnet-lite-deblur").builder()
    macs = count_macs(model, (1, 3, 256, 256))
    assert macs * 20 <= v2_macs
    summary = get_card("mhnet-lite-deblur").summary
    assert f"{macs / 1e9:.2f} GMACs" in summary
    assert f"{count_parameters(model) / 1e6:.2f} M parameters" in summary
    assert f"1/{round(v2_macs / macs)} of mhnet-v2" in summary


def test_lite_uses_only_mobile_operators_and_starts_as_the_identity():
    model = get_card("mhnet-lite-derain").builder()
    norm_types = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, LayerNorm2d)
    assert not [name for name, module in model.named_modules() if isinstance(module, norm_types)]
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), x)  # zero-initialised tail
    model.tail.reset_parameters()
    program = torch.export.export(model, (x,))
    ops = {getattr(node.target, "_overloadpacket", node.target).__name__
           for node in program.graph.nodes if node.op == "call_function"}
    assert ops <= LITE_OPS, f"non-mobile operators: {ops - LITE_OPS}"
    assert {"conv2d", "mul", "pixel_unshuffle", "pixel_shuffle"} <= ops
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x), model(x), rtol=0, atol=1e-6)
        odd = torch.rand(1, 3, 37, 45)
        assert model(odd).shape == odd.shape


# One int8 XNNPACK partition: the cards set single_int8_partition, so tests/test_model_contract.py
# (test_int8_lowers_to_one_xnnpack_partition[mhnet-lite-*], slow) lowers them through `zoo export`.
