"""HINet: layout identical to the official checkpoints, official parameter and MAC counts, a
forward pass equal to an independent functional re-statement of the official forward, and the
registered model cards."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from zoo.macs import count_macs, count_parameters, model_complexity
from zoo.models.hinet import HINet
from zoo.registry import get_card, list_models

from tests.official_layouts import official_layout  # also imported by test_checkpoints

#: The released HINet configurations and the official layout file each card names (hinet-reds shares
#: hinet-gopro's: same architecture, other training data).
EXPECTED_LAYOUT_FILES = {
    "hinet-sidd-1x": "HINet-SIDD-1x.txt",
    "hinet-sidd-0.5x": "HINet-SIDD-0.5x.txt",
    "hinet-gopro": "HINet-GoPro_REDS.txt",
    "hinet-reds": "HINet-GoPro_REDS.txt",
    "hinet-rain13k": "HINet-Rain13k.txt",
}
#: Registered HINet model -> file listing the official checkpoint's keys and shapes, from the cards.
OFFICIAL_LAYOUT_FILES = {name: get_card(name).official_layout for name in EXPECTED_LAYOUT_FILES}


def build_on_meta(name: str) -> nn.Module:
    with torch.device("meta"):
        return get_card(name).builder()


@pytest.fixture(scope="module")
def hinet_1x_meta():
    return build_on_meta("hinet-sidd-1x")


@pytest.mark.parametrize("name", sorted(OFFICIAL_LAYOUT_FILES))
def test_state_dict_keys_order_and_shapes_equal_official(name):
    expected = official_layout(OFFICIAL_LAYOUT_FILES[name])
    model = build_on_meta(name)
    assert [(key, tuple(t.shape)) for key, t in model.state_dict().items()] == expected


@pytest.mark.parametrize("name", sorted(OFFICIAL_LAYOUT_FILES))
def test_parameter_count_equals_official_layout(name):
    expected = sum(math.prod(shape) for _, shape in official_layout(OFFICIAL_LAYOUT_FILES[name]))
    assert count_parameters(build_on_meta(name)) == expected


def test_parameter_counts_equal_measured_official_ones(hinet_1x_meta):
    assert count_parameters(hinet_1x_meta) == 88_669_702
    assert count_parameters(build_on_meta("hinet-sidd-0.5x")) == 22_176_518
    # HIN at levels 3-4 only drops the affine norms of levels 0-2 (2 stages x (32+64+128) x 2).
    assert count_parameters(build_on_meta("hinet-gopro")) == 88_669_702 - 2 * 2 * (32 + 64 + 128)


def test_macs_match_official_measurements(hinet_1x_meta):
    assert count_macs(hinet_1x_meta, (1, 3, 256, 256)) == pytest.approx(157.60e9, rel=0.005)
    half_width_macs = count_macs(build_on_meta("hinet-sidd-0.5x"), (1, 3, 256, 256))
    assert half_width_macs == pytest.approx(39.54e9, rel=0.005)
    assert model_complexity("hinet-sidd-0.5x") == (22_176_518, half_width_macs)
    # MACs of a fully convolutional model scale with the pixel count.
    assert count_macs(build_on_meta("hinet-sidd-0.5x"), (1, 3, 512, 256)) == 2 * half_width_macs


def test_flop_counter_charges_convolutions_their_true_multiplications():
    conv = nn.Conv2d(3, 5, 3, padding=1)
    assert count_macs(conv, (2, 3, 10, 12)) == 2 * 10 * 12 * 5 * 3 * 3 * 3
    # A 2x2 stride-2 transposed conv does C_in*C_out*4 MACs per *input* pixel (one tap per output pixel).
    up = nn.ConvTranspose2d(8, 4, kernel_size=2, stride=2)
    assert count_macs(up, (1, 8, 5, 7)) == 5 * 7 * 8 * 4 * 2 * 2
    assert count_parameters(up) == 8 * 4 * 2 * 2 + 4
    assert up.weight.device.type == "cpu"  # counted on meta copies; the module itself is untouched


def _per_output_pixel_count(model: nn.Module, input_shape) -> dict[str, int]:
    """The operation counts of a hook-based counter that charges every convolution, transposed ones
    included, k*k*C_in*C_out per output pixel, plus bias additions and activation elements."""
    totals = {"conv": 0, "transposed_true": 0, "transposed_per_output": 0, "bias": 0, "leaky_relu": 0}

    def hook(module, inputs, output):
        if isinstance(module, nn.ConvTranspose2d):
            c_in, c_out, kh, kw = module.weight.shape
            n, _, h, w = inputs[0].shape
            totals["transposed_true"] += n * h * w * c_in * c_out * kh * kw
            totals["transposed_per_output"] += output.numel() * c_in * kh * kw
            totals["bias"] += output.numel()
        elif isinstance(module, nn.Conv2d):
            _, c_in, kh, kw = module.weight.shape
            totals["conv"] += output.numel() * c_in * kh * kw
            totals["bias"] += output.numel() if module.bias is not None else 0
        elif isinstance(module, nn.LeakyReLU):
            totals["leaky_relu"] += output.numel()

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    try:
        with torch.no_grad():
            model(torch.empty(input_shape, device="meta"))
    finally:
        for handle in handles:
            handle.remove()
    return totals


def test_paper_170_71_gmacs_is_a_per_output_pixel_count(hinet_1x_meta):
    totals = _per_output_pixel_count(hinet_1x_meta, (1, 3, 256, 256))
    true_macs = totals["conv"] + totals["transposed_true"]
    assert count_macs(hinet_1x_meta) == true_macs
    assert totals["transposed_per_output"] == 4 * totals["transposed_true"]
    paper_style = totals["conv"] + totals["transposed_per_output"] + totals["bias"] + totals["leaky_relu"]
    assert round(paper_style / 1e9, 2) == 170.71
    assert round(true_macs / 1e9, 2) == 157.60


# --- forward pass -----------------------------------------------------------------------------


def _reference_forward(params: dict[str, torch.Tensor], x: torch.Tensor, depth: int, hin_levels: range,
                       slope: float = 0.2) -> list[torch.Tensor]:
    """The official HINet forward, restated with torch.nn.functional on the state dict."""

    def conv(prefix, t, stride=1, padding=None):
        weight = params[prefix + ".weight"]
        pad = weight.shape[-1] // 2 if padding is None else padding
        return F.conv2d(t, weight, params.get(prefix + ".bias"), stride=stride, padding=pad)

    def block(prefix, t, hin, downsample, enc=None, dec=None):
        out = conv(prefix + ".conv_1", t)
        if hin:
            half = out.shape[1] // 2
            normed = F.instance_norm(out[:, :half], weight=params[prefix + ".norm.weight"],
                                     bias=params[prefix + ".norm.bias"], eps=1e-5)
            out = torch.cat([normed, out[:, half:]], 1)
        out = F.leaky_relu(conv(prefix + ".conv_2", F.leaky_relu(out, slope)), slope)
        out = out + conv(prefix + ".identity", t)
        if enc is not None:
            out = out + conv(prefix + ".csff_enc", enc) + conv(prefix + ".csff_dec", dec)
        if downsample:
            return conv(prefix + ".downsample", out, stride=2, padding=1), out
        return out

    def up(prefix, t, bridge):
        upsampled = F.conv_transpose2d(t, params[prefix + ".up.weight"], params[prefix + ".up.bias"], stride=2)
        return block(prefix + ".conv_block", torch.cat([upsampled, bridge], 1), False, False)

    x1 = conv("conv_01", x)
    encs, decs = [], []
    for i in range(depth - 1):
        x1, skip = block(f"down_path_1.{i}", x1, i in hin_levels, True)
        encs.append(skip)
    x1 = block(f"down_path_1.{depth - 1}", x1, depth - 1 in hin_levels, False)
    for i in range(depth - 1):
        x1 = up(f"up_path_1.{i}", x1, conv(f"skip_conv_1.{i}", encs[-i - 1]))
        decs.append(x1)
    stage1 = conv("sam12.conv2", x1) + x
    attended = conv("sam12.conv1", x1) * torch.sigmoid(conv("sam12.conv3", stage1)) + x1
    x2 = conv("cat12", torch.cat([conv("conv_02", x), attended], 1))
    blocks = []
    for i in range(depth - 1):
        x2, skip = block(f"down_path_2.{i}", x2, i in hin_levels, True, encs[i], decs[-i - 1])
        blocks.append(skip)
    x2 = block(f"down_path_2.{depth - 1}", x2, depth - 1 in hin_levels, False)
    for i in range(depth - 1):
        x2 = up(f"up_path_2.{i}", x2, conv(f"skip_conv_2.{i}", blocks[-i - 1]))
    return [stage1, conv("last", x2) + x]


@pytest.mark.parametrize("hin_left", [0, 3])
def test_forward_equals_functional_restatement_of_official_forward(hin_left):
    torch.manual_seed(0)
    model = HINet(wf=8, hin_position_left=hin_left, hin_position_right=4).eval()
    # Non-trivial affine norm parameters, so a swapped half or a skipped norm would show.
    with torch.no_grad():
        for name, tensor in model.named_parameters():
            if ".norm." in name:
                tensor.uniform_(0.5, 1.5)
    x = torch.rand(2, 3, 32, 48)
    with torch.no_grad():
        stages = model(x, return_stages=True)
        final = model(x)
        reference = _reference_forward(dict(model.state_dict()), x, depth=5, hin_levels=range(hin_left, 5))
    assert isinstance(stages, list) and len(stages) == 2
    for got, want in zip(stages, reference):
        assert got.shape == x.shape
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(final, stages[1], rtol=0, atol=0)
    assert not torch.allclose(stages[0], stages[1])


def test_wrong_input_sizes_raise_value_error_naming_size_and_fix():
    model = HINet(wf=8).eval()
    with pytest.raises(ValueError, match=r"multiples of 16, got 30x48.*pad the input to 32x48.*til"):
        model(torch.rand(1, 3, 30, 48))
    with pytest.raises(ValueError, match=r"3 channels, got shape \(3, 32, 32\)"):
        model(torch.rand(3, 32, 32))
    # HIN at the 1/16 level: a 16x16 input leaves one pixel there, where instance norm is undefined.
    with pytest.raises(ValueError, match=r"more than one pixel at its 1/16-scale level.*got 16x16"):
        model(torch.rand(1, 3, 16, 16))
    with torch.no_grad():
        assert model(torch.rand(1, 3, 16, 32)).shape == (1, 3, 16, 32)


def test_torch_export_with_dynamic_sides_matches_eager():
    model = HINet(wf=8).eval()
    x = torch.rand(2, 3, 32, 48)  # the forward test's shape: CPU conv kernels are already prepared
    height, width = torch.export.Dim("height", min=2, max=256), torch.export.Dim("width", min=2, max=256)
    exported = torch.export.export(model, (x,), dynamic_shapes={"x": {2: 16 * height, 3: 16 * width}})
    with torch.no_grad():
        for batch in (x, torch.rand(2, 3, 48, 32)):
            torch.testing.assert_close(exported.module()(batch), model(batch), rtol=1e-5, atol=1e-6)


# --- registry --------------------------------------------------------------------------------


def test_released_configurations_are_registered():
    registered = {card.name for card in list_models()}
    assert set(OFFICIAL_LAYOUT_FILES) <= registered
    assert OFFICIAL_LAYOUT_FILES == EXPECTED_LAYOUT_FILES  # the cards name the official layouts
    assert {card.name for card in list_models() if card.family == "hinet" and card.official_layout} == \
        set(EXPECTED_LAYOUT_FILES)
    cards = {name: get_card(name) for name in OFFICIAL_LAYOUT_FILES}
    expected_tasks = {"hinet-sidd-1x": "denoise", "hinet-sidd-0.5x": "denoise", "hinet-gopro": "deblur",
                      "hinet-reds": "deblur", "hinet-rain13k": "derain"}
    for name, card in cards.items():
        assert card.family == "hinet" and card.task == expected_tasks[name]
        assert card.size_multiple == 16 and card.scale == 1 and card.weights is None
        assert "{'params': state_dict}" in card.official_weights and "megvii-model/HINet" in card.official_weights
        assert card.paper.startswith("Chen et al., HINet")
        assert card.tile % card.size_multiple == 0
    one_x_notes = " ".join(cards["hinet-sidd-1x"].notes)
    assert "170.71" in one_x_notes and "157.60" in one_x_notes
