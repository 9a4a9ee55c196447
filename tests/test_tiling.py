"""Tiled inference: tile plan, weights, exactness against untiled runs, errors, memory.

References are computed independently of zoo.tiling: models run on the whole image, padding
with numpy.pad, PSNR with numpy, expected positions and weights worked out by hand from the
rules in docs/tiling.md.
"""

import math
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from zoo.errors import ZooError
from zoo.tiling import (
    crop_to_size,
    pad_to_multiple,
    plan_tiles,
    tiled_forward,
    tiling_psnr,
)

REPO = Path(__file__).resolve().parents[1]


def random_image(height, width, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(3, height, width, generator=generator)


def three_conv_net(seed=0):
    """Three zero-padded 3x3 convolutions: receptive-field radius 3."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
        nn.Conv2d(8, 3, 3, padding=1),
    ).eval()


def untiled(model, chw):
    with torch.no_grad():
        return model(chw[None])[0]


def numpy_pad(chw, height, width, row_mode, col_mode):
    """Bottom/right padding done with numpy ('reflect' = mirror without the edge, 'edge')."""
    array = chw.numpy()
    array = np.pad(array, ((0, 0), (0, height - array.shape[1]), (0, 0)), mode=row_mode)
    array = np.pad(array, ((0, 0), (0, 0), (0, width - array.shape[2])), mode=col_mode)
    return torch.from_numpy(np.ascontiguousarray(array))


# ---------------------------------------------------------------- padding


def test_pad_to_multiple_matches_numpy_reflect_and_crops_back():
    image = random_image(13, 22)[None]
    padded, size = pad_to_multiple(image, 8)
    assert size == (13, 22) and padded.shape == (1, 3, 16, 24)
    expected = numpy_pad(image[0], 16, 24, "reflect", "reflect")
    assert torch.equal(padded[0], expected)
    assert torch.equal(crop_to_size(padded, size), image)


def test_pad_falls_back_to_replicate_per_axis_for_tiny_images():
    image = random_image(3, 9)[None]
    padded, _ = pad_to_multiple(image, 8)  # rows: pad 5 >= 3 -> replicate; cols: pad 7 < 9 -> reflect
    assert torch.equal(padded[0], numpy_pad(image[0], 8, 16, "edge", "reflect"))


def test_pad_to_multiple_is_a_no_op_on_multiples():
    image = random_image(16, 24)[None]
    padded, size = pad_to_multiple(image, 8)
    assert padded is image and size == (16, 24)


# ---------------------------------------------------------------- plan


def test_plan_worked_example_from_the_docs():
    plan = plan_tiles(203, 157, tile=64, overlap=8)
    # By hand: stride 56; rows 0, 56, 112, then 168 -> moved back to 203 - 64 = 139.
    assert plan.row_starts == (0, 56, 112, 139)
    assert plan.col_starts == (0, 56, 93)
    assert (plan.padded_height, plan.padded_width, plan.margin, plan.ramp) == (203, 157, 4, 0)
    assert plan.num_tiles == 12


@pytest.mark.parametrize("height,width,tile,overlap,multiple", [
    (203, 157, 64, 8, 1), (1000, 999, 256, 32, 16), (64, 65, 64, 0, 1),
    (130, 77, 32, 10, 4), (5, 300, 48, 16, 8), (300, 5, 48, 9, 8), (481, 321, 96, 47, 1),
])
def test_plan_geometry_rules(height, width, tile, overlap, multiple):
    plan = plan_tiles(height, width, tile=tile, overlap=overlap, size_multiple=multiple)
    assert plan.overlap == -(-overlap // multiple) * multiple  # rounded up to the multiple
    for length, padded, starts in ((height, plan.padded_height, plan.row_starts),
                                   (width, plan.padded_width, plan.col_starts)):
        assert padded == max(-(-length // multiple) * multiple, tile)
        assert starts[0] == 0 and starts[-1] + tile == padded  # last tile ends at the border
        assert all(start % multiple == 0 for start in starts)
        gaps = np.diff(starts)
        assert (gaps[:-1] == tile - plan.overlap).all() if len(gaps) > 1 else True
        assert (gaps > 0).all() and (gaps <= tile - plan.overlap).all()  # overlap >= plan.overlap


def test_weights_of_a_regular_overlap_follow_the_ramp_rule():
    # Length 56, tile 32, overlap 8, margin 2 -> ramp 4; tiles at 0 and 24 share pixels 24..31.
    plan = plan_tiles(56, 56, tile=32, overlap=8, margin=2)
    weights = plan.axis_weights("rows")
    assert plan.row_starts == (0, 24)
    second_tile_first_eight = [0, 0, 0.2, 0.4, 0.6, 0.8, 1, 1]
    assert torch.allclose(weights[1, :8], torch.tensor(second_tile_first_eight), atol=1e-7)
    assert torch.allclose(weights[0, 24:], 1 - torch.tensor(second_tile_first_eight), atol=1e-7)
    assert (weights[0, :24] == 1).all() and (weights[1, 8:] == 1).all()  # weight 1 up to the image border


@pytest.mark.parametrize("scale", [1, 3])
@pytest.mark.parametrize("overlap,margin", [(8, None), (7, None), (12, 2), (0, None)])
def test_weights_sum_to_one_and_vanish_near_inner_borders(overlap, margin, scale):
    plan = plan_tiles(203, 157, tile=48, overlap=overlap, margin=margin)
    total = torch.zeros(203 * scale, 157 * scale, dtype=torch.float64)
    zero_band = plan.margin * scale
    for row_index, col_index, top, left in plan.tiles():
        weight = plan.tile_weight(row_index, col_index, scale).double()
        t, l, size = top * scale, left * scale, 48 * scale
        total[t:t + size, l:l + size] += weight
        if top > 0:
            assert (weight[:zero_band] == 0).all()
        if left + 48 < 157:
            assert (weight[:, size - zero_band:] == 0).all()
    assert torch.allclose(total, torch.ones_like(total), atol=1e-6)


# ---------------------------------------------------------------- exactness


@pytest.mark.parametrize("tile,overlap,batch_size,margin", [
    (64, 8, 1, None), (64, 8, 3, None), (48, 7, 3, None), (100, 6, 1, None), (40, 16, 3, 3),
])
def test_local_model_tiled_equals_untiled(tile, overlap, batch_size, margin):
    net, image = three_conv_net(), random_image(203, 157)
    out = tiled_forward(net, image, tile=tile, overlap=overlap, batch_size=batch_size, margin=margin)
    assert out.shape == image.shape and out.dtype == torch.float32
    assert (out - untiled(net, image)).abs().max().item() < 1e-4


def test_too_small_overlap_is_not_exact():
    # Negative control: margin 2 < receptive radius 3, so tiled output must differ.
    net, image = three_conv_net(), random_image(203, 157)
    out = tiled_forward(net, image, tile=64, overlap=4)
    assert (out - untiled(net, image)).abs().max().item() > 1e-3


class DownUpNet(nn.Module):
    """Conv, 4x average pooling, conv, 4x nearest upsampling, conv: needs inputs multiple of 4.

    Receptive-field radius 9 input pixels on the 4-pixel grid (exact only on aligned tiles).
    """

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.first = nn.Conv2d(3, 6, 3, padding=1)
        self.low = nn.Conv2d(6, 6, 3, padding=1)
        self.last = nn.Conv2d(6, 3, 3, padding=1)
        self.input_sizes = []

    def forward(self, x):
        assert x.shape[-2] % 4 == 0 and x.shape[-1] % 4 == 0, x.shape
        self.input_sizes.append(tuple(x.shape))
        features = nn.functional.avg_pool2d(torch.relu(self.first(x)), 4)
        features = nn.functional.interpolate(torch.relu(self.low(features)), scale_factor=4, mode="nearest")
        return self.last(features)


def test_size_multiple_model_gets_aligned_tiles_and_exact_output():
    net, image = DownUpNet().eval(), random_image(203, 157)
    reference = untiled(net, numpy_pad(image, 204, 160, "reflect", "reflect"))[:, :203, :157]
    net.input_sizes.clear()
    plan = plan_tiles(203, 157, tile=64, overlap=18, size_multiple=4)
    # By hand (docs): overlap 18 -> 20, stride 44, padded 204 x 160, last row start 204 - 64.
    assert (plan.overlap, plan.padded_height, plan.padded_width) == (20, 204, 160)
    assert plan.row_starts == (0, 44, 88, 132, 140) and plan.col_starts == (0, 44, 88, 96)
    out = tiled_forward(net, image, tile=64, overlap=18, size_multiple=4, batch_size=2)
    assert set(size[1:] for size in net.input_sizes) == {(3, 64, 64)}
    assert (out - reference).abs().max().item() < 1e-4
    whole = tiled_forward(net, image, tile=None, overlap=0, size_multiple=4)
    assert net.input_sizes[-1] == (1, 3, 204, 160)
    assert (whole - reference).abs().max().item() < 1e-6


def pixel_shuffle_net():
    """2x super-resolution: two 3x3 convolutions and a pixel shuffle (radius 2 input pixels)."""
    torch.manual_seed(2)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 12, 3, padding=1), nn.PixelShuffle(2)
    ).eval()


@pytest.mark.parametrize("overlap,margin", [(8, None), (8, 2)])
def test_super_resolution_scale_2_tiled_equals_untiled(overlap, margin):
    net, image = pixel_shuffle_net(), random_image(101, 77)
    out = tiled_forward(net, image, tile=32, overlap=overlap, scale=2, batch_size=2, margin=margin)
    assert out.shape == (3, 202, 154)
    assert (out - untiled(net, image)).abs().max().item() < 1e-4


@pytest.mark.parametrize("height,width,tile,overlap", [(203, 157, 64, 8), (130, 97, 32, 15), (70, 70, 32, 0)])
def test_identity_returns_the_image(height, width, tile, overlap):
    image = random_image(height, width)
    out = tiled_forward(lambda tiles: tiles, image[None], tile=tile, overlap=overlap, batch_size=4)
    assert out.shape == (1, 3, height, width)  # NCHW in, NCHW out
    assert (out[0] - image).abs().max().item() < 1e-6


@pytest.mark.parametrize("height,width,row_mode,col_mode", [
    (37, 23, "reflect", "edge"),  # rows: pad 27 < 37 reflect; cols: pad 41 >= 23 replicate
    (37, 150, "reflect", None),   # only the rows are shorter than the tile
])
def test_image_smaller_than_tile_is_padded_up_to_the_tile(height, width, row_mode, col_mode):
    net, image = three_conv_net(), random_image(height, width)
    padded_width = 64 if col_mode else width
    padded = numpy_pad(image, 64, padded_width, row_mode, col_mode or "reflect")
    reference = untiled(net, padded)[:, :height, :width]
    out = tiled_forward(net, image, tile=64, overlap=8)
    assert out.shape == image.shape
    assert (out - reference).abs().max().item() < 1e-4


class InstanceNormNet(nn.Module):
    """A residual net with instance normalisation: a global operation, so tiling is not exact."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.InstanceNorm2d(8, affine=True), nn.ReLU(),
            nn.Conv2d(8, 3, 3, padding=1),
        )

    def forward(self, x):
        return x + 0.05 * torch.tanh(self.body(x))


def test_global_operation_gives_finite_tiling_psnr():
    net, image = InstanceNormNet().eval(), random_image(150, 130)
    psnr = tiling_psnr(net, image, tile=64, overlap=16)
    tiled = tiled_forward(net, image, tile=64, overlap=16).clamp(0, 1).double().numpy()
    whole = untiled(net, image).clamp(0, 1).double().numpy()
    expected = 10 * np.log10(1 / np.mean((tiled - whole) ** 2))
    assert math.isfinite(psnr) and psnr > 30
    assert psnr == pytest.approx(expected, abs=1e-6)


def test_local_model_tiling_psnr_is_very_high():
    psnr = tiling_psnr(three_conv_net(), random_image(100, 90), tile=48, overlap=8)
    assert psnr > 100  # exact up to float rounding (inf when bit-identical)


# ---------------------------------------------------------------- contract of fn and errors


def test_fn_sees_fixed_tiles_in_batches_under_inference_mode():
    calls = []

    def record(tiles):
        calls.append((tuple(tiles.shape), torch.is_inference_mode_enabled()))
        return tiles

    plan = plan_tiles(203, 157, tile=64, overlap=8)
    tiled_forward(record, random_image(203, 157), tile=64, overlap=8, batch_size=5)
    assert [shape[0] for shape, _ in calls] == [5, 5, 2] and plan.num_tiles == 12
    assert all(shape[1:] == (3, 64, 64) and inference for shape, inference in calls)


def test_result_is_a_normal_tensor_under_inference_mode():
    image = random_image(50, 40)
    with torch.inference_mode():
        tiled = tiled_forward(lambda t: t, image, tile=32, overlap=4)
        whole = tiled_forward(lambda t: t, image, tile=None, overlap=0)
    tiled.clamp_(0, 1), whole.clamp_(0, 1)  # in-place updates fail on inference tensors
    assert torch.equal(whole, image)


def test_progress_bar_counts_tiles(capsys):
    tiled_forward(lambda t: t, random_image(70, 70), tile=32, overlap=4, progress=True)
    assert "9/9" in capsys.readouterr().err


@pytest.mark.parametrize("kwargs,message", [
    (dict(tile=50, overlap=8, size_multiple=4), "multiple of 4, e.g. 52"),
    (dict(tile=64, overlap=32), "use overlap 0 .. 31"),
    (dict(tile=64, overlap=17, size_multiple=16), "rounded up to 32"),
    (dict(tile=64, overlap=-1), "use 0 .. 31"),
    (dict(tile=0, overlap=0), "tile 0 is not a positive integer"),
    (dict(tile=64, overlap=8, margin=5), "margin 5 is outside 0 .. overlap // 2 = 4"),
])
def test_bad_tile_settings_raise_zoo_error(kwargs, message):
    with pytest.raises(ZooError) as err:
        plan_tiles(100, 100, **kwargs)
    assert message in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ZooError):
        tiled_forward(lambda t: t, random_image(100, 100), **kwargs)


def test_bad_inputs_and_outputs_raise_zoo_error():
    with pytest.raises(ZooError, match="takes one image"):
        tiled_forward(lambda t: t, torch.rand(2, 3, 40, 40), tile=32, overlap=4)
    with pytest.raises(ZooError, match="check scale="):
        tiled_forward(lambda t: t, random_image(40, 40), tile=32, overlap=4, scale=2)
    with pytest.raises(ZooError, match="check scale="):
        tiled_forward(lambda t: t[..., :-1], random_image(40, 40), tile=None, overlap=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_image_gives_cuda_result_equal_to_cpu():
    net, image = three_conv_net(), random_image(203, 157)
    cpu = tiled_forward(net, image, tile=64, overlap=8)
    gpu = tiled_forward(net.cuda(), image.cuda(), tile=64, overlap=8, batch_size=3)
    assert gpu.device.type == "cuda"
    assert (gpu.cpu() - cpu).abs().max().item() < 1e-4


# ---------------------------------------------------------------- memory


def test_12_megapixel_image_runs_in_bounded_memory():
    """A 4000x3000 photo with an identity model: peak memory grows by about one output image.

    Keeping all tiles (or a padded copy plus a weight-sum image) would add at least another
    image-sized buffer (144 MB) and fail the bound below.
    """
    script = textwrap.dedent("""
        import resource, time, torch
        from zoo.tiling import tiled_forward
        torch.set_num_threads(1)
        image = torch.rand(3, 3000, 4000)
        tiled_forward(lambda t: t, image[:, :100, :100], tile=64, overlap=8)  # warm-up
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        start = time.perf_counter()
        out = tiled_forward(lambda t: t, image, tile=512, overlap=32, batch_size=4)
        seconds = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print((after - before) * 1024, seconds, (out - image).abs().max().item())
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    grown_bytes, seconds, error = map(float, result.stdout.split())
    image_bytes = 3 * 3000 * 4000 * 4
    assert error == 0.0
    assert grown_bytes < 1.4 * image_bytes, f"peak memory grew {grown_bytes / 1e6:.0f} MB in {seconds:.1f} s"
