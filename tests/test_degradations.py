"""Synthetic degradations: reproducibility, noise statistics, kernels, shapes and spec parsing."""

import math

import numpy as np
import pytest
import torch

from zoo.data.degradations import (
    VALID_FORMS,
    BicubicDownscale,
    GaussianNoise,
    MotionBlur,
    RainStreaks,
    camera_shake_kernel,
    camera_shake_trajectory,
    convolve_symmetric,
    jpeg_compress,
    parse_degradation,
    rain_streak_kernel,
)
from zoo.data.resize import imresize, mod_crop
from zoo.errors import ZooError
from zoo.metrics import psnr

RANDOM_SPECS = [
    "gaussian:25",
    "gaussian:15-50",
    "poisson-gaussian",
    "motion-blur",
    "motion-blur:size=15,length=5-10,noise=5",
    "motion-blur:size=15,length=5-10,jpeg=60-90",
    "rain",
    "rain:blend=screen",
]
ALL_SPECS = RANDOM_SPECS + ["none", "bicubic:x2", "bicubic:x3", "bicubic:x4"]


def _image(height=48, width=40, seed=0):
    return torch.rand(3, height, width, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("spec", RANDOM_SPECS)
def test_same_seed_same_output_other_seed_other_output(spec):
    degrade = parse_degradation(spec)
    clean = _image()
    first = degrade(clean, 11)
    assert torch.equal(first, degrade(clean, 11))
    assert not torch.equal(first, degrade(clean, 12))
    assert torch.equal(clean, _image())  # the input is not modified


@pytest.mark.parametrize("spec", ALL_SPECS)
def test_shapes_dtype_and_scale(spec):
    degrade = parse_degradation(spec)
    clean = _image(50, 37)
    out = degrade(clean, 0)
    scale = degrade.scale
    assert scale == (int(spec[-1]) if spec.startswith("bicubic") else 1)
    assert out.dtype == torch.float32
    assert out.shape == (3, 50 // scale, 37 // scale)
    assert degrade.target(clean).shape == (3, 50 // scale * scale, 37 // scale * scale)


def test_global_random_state_is_neither_used_nor_advanced():
    clean = _image()
    torch_state, numpy_state = torch.get_rng_state(), np.random.get_state()
    outputs = [parse_degradation(spec)(clean, 5) for spec in RANDOM_SPECS]
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert np.random.get_state()[1].tolist() == numpy_state[1].tolist()
    torch.manual_seed(123)
    np.random.seed(123)
    again = [parse_degradation(spec)(clean, 5) for spec in RANDOM_SPECS]
    assert all(torch.equal(a, b) for a, b in zip(outputs, again))


def test_gaussian_noise_statistics_and_no_clipping():
    clean = torch.full((3, 128, 128), 0.5)
    clean[:, :8] = 0.0  # dark and bright bands: unclipped noise leaves [0, 1] there
    clean[:, -8:] = 1.0
    noisy = parse_degradation("gaussian:25")(clean, 0)
    residual = noisy - clean
    assert residual.std().item() == pytest.approx(25 / 255, rel=0.02)
    assert abs(residual.mean().item()) < 0.002
    assert noisy.min().item() < -0.1 and noisy.max().item() > 1.1


def test_blind_gaussian_draws_sigma_per_image_in_range():
    degrade = parse_degradation("gaussian:15-50")
    assert isinstance(degrade, GaussianNoise)
    sigmas = [degrade.sigma_for(seed) for seed in range(40)]
    assert all(15 <= s <= 50 for s in sigmas)
    assert max(sigmas) - min(sigmas) > 20  # really drawn, not fixed
    clean = torch.full((3, 96, 96), 0.5)
    for seed in (0, 1, 2):
        residual = degrade(clean, seed) - clean
        assert residual.std().item() == pytest.approx(degrade.sigma_for(seed) / 255, rel=0.03)


def test_noisy_input_psnr_on_cbsd68_is_the_protocol_value(data_root):
    # Unclipped AWGN at sigma 25 has MSE 625 on the 0-255 scale: 20*log10(255/25) = 20.17 dB,
    # the noisy-input PSNR that CBSD68 tables list.
    from PIL import Image

    paths = sorted((data_root / "bsd68").glob("*.png"))[:3]
    assert len(paths) == 3
    degrade = parse_degradation("gaussian:25")
    for index, path in enumerate(paths):
        with Image.open(path) as opened:
            pixels = np.asarray(opened.convert("RGB"), dtype=np.float32) / 255
        clean = torch.from_numpy(pixels).permute(2, 0, 1).contiguous()
        assert psnr(degrade(clean, index), clean) == pytest.approx(20 * math.log10(255 / 25), abs=0.05)


@pytest.mark.parametrize("level", [0.2, 0.7])
def test_poisson_gaussian_mean_and_variance(level):
    a, b = 0.01, 0.0004
    clean = torch.full((3, 64, 64), level)
    noisy = parse_degradation(f"poisson-gaussian:a={a},b={b}")(clean, 3)
    assert noisy.mean().item() == pytest.approx(level, abs=0.003)
    assert noisy.var().item() == pytest.approx(a * level + b, rel=0.05)  # Var[y] = a x + b


def test_poisson_gaussian_without_poisson_part_is_gaussian():
    clean = torch.full((3, 64, 64), 0.4)
    noisy = parse_degradation("poisson-gaussian:a=0,b=0.0025")(clean, 1)
    assert noisy.std().item() == pytest.approx(0.05, rel=0.03)


def test_camera_shake_path_has_the_requested_length():
    for seed in range(3):
        path = camera_shake_trajectory(20.0, np.random.default_rng(seed))
        assert path.shape == (2000,) and path[0] == 0
        assert np.abs(np.diff(path)).sum() == pytest.approx(20.0, rel=1e-9)


def test_motion_kernels_are_normalised_psfs_that_spread():
    extents = []
    for seed in range(12):
        kernel = MotionBlur().kernel(seed)
        assert kernel.shape == (65, 65)
        assert kernel.min().item() >= 0
        assert kernel.sum().item() == pytest.approx(1.0, abs=1e-6)
        rows, cols = torch.nonzero(kernel > 1e-4, as_tuple=True)
        extents.append(max(rows.max() - rows.min(), cols.max() - cols.min()).item())
    # No wider than the 60-pixel path; most paths blur over several pixels (strong jitter
    # knots a path into a few pixels, as in the reference generator).
    assert max(extents) <= 60 + 2
    assert sorted(extents)[len(extents) // 2] >= 4


def test_motion_kernels_differ_per_seed_and_exposure_is_a_prefix():
    assert not torch.equal(MotionBlur().kernel(0), MotionBlur().kernel(1))
    full = torch.from_numpy(camera_shake_kernel(31, 20, np.random.default_rng(4)))
    short = torch.from_numpy(camera_shake_kernel(31, 20, np.random.default_rng(4), exposure=0.1))
    assert short.sum().item() == pytest.approx(1.0, abs=1e-9)
    # The shutter sees the first tenth of the same path: a subset of the full PSF's support.
    assert bool(((short > 0) <= (full > 0)).all())
    assert int((short > 0).sum()) < int((full > 0).sum())


def test_motion_blur_is_symmetric_boundary_convolution():
    ndimage = pytest.importorskip("scipy.ndimage")
    clean = _image(30, 26, seed=3)
    degrade = parse_degradation("motion-blur:size=15,length=8")
    kernel = degrade.kernel(7).double().numpy()
    expected = np.stack([ndimage.convolve(c, kernel, mode="reflect") for c in clean.double().numpy()])
    np.testing.assert_allclose(degrade(clean, 7).double().numpy(), expected, atol=1e-5)
    constant = torch.full((3, 20, 20), 0.3)
    torch.testing.assert_close(degrade(constant, 7), constant, atol=1e-6, rtol=0)


def test_convolve_symmetric_matches_scipy_even_for_kernels_larger_than_the_image():
    ndimage = pytest.importorskip("scipy.ndimage")
    image = torch.rand(2, 9, 11, dtype=torch.float64)
    for shape in [(3, 3), (7, 5), (31, 31)]:
        kernel = torch.rand(shape, dtype=torch.float64)
        expected = np.stack([ndimage.convolve(c, kernel.numpy(), mode="reflect") for c in image.numpy()])
        np.testing.assert_allclose(convolve_symmetric(image, kernel).numpy(), expected, atol=1e-10)


def test_motion_blur_noise_has_the_requested_sigma():
    clean = torch.full((3, 96, 96), 0.5)  # blur leaves a constant image unchanged
    noisy = parse_degradation("motion-blur:noise=10")(clean, 2)
    assert (noisy - clean).std().item() == pytest.approx(10 / 255, rel=0.03)


def _bundled_crop(size=128) -> torch.Tensor:
    from zoo.data.bundled import bundled_photos
    from zoo.data.io import read_image

    photo = read_image(bundled_photos()[0].path).image
    top, left = (photo.shape[-2] - size) // 2, (photo.shape[-1] - size) // 2
    return photo[:, top:top + size, left:left + size].contiguous()


def test_jpeg_quality_is_an_integer_drawn_uniformly_per_image():
    degrade = parse_degradation("motion-blur:jpeg=60-90")
    qualities = [degrade.quality_for(seed) for seed in range(300)]
    assert all(isinstance(q, int) and 60 <= q <= 90 for q in qualities)
    assert min(qualities) == 60 and max(qualities) == 90  # both ends are drawn
    assert len(set(qualities)) == 31
    assert parse_degradation("motion-blur:jpeg=75").quality_for(4) == 75
    assert parse_degradation("motion-blur").quality_for(4) is None
    # The quality has its own stream: the kernel of a seed is the kernel without JPEG.
    assert torch.equal(degrade.kernel(7), parse_degradation("motion-blur").kernel(7))


def test_motion_blur_jpeg_is_the_8_bit_blur_saved_and_read_as_a_4_2_0_jpeg(tmp_path):
    from PIL import Image

    from zoo.data.io import quantize, read_image, write_image

    clean = _bundled_crop(96)
    degrade = parse_degradation("motion-blur:size=15,noise=5,jpeg=60-90")
    out = degrade(clean, 3)
    assert out.dtype == torch.float32 and out.shape == clean.shape
    assert out.min().item() >= 0.0 and out.max().item() <= 1.0  # the noise is clipped by the 8-bit file
    assert torch.equal(out, quantize(out))  # exactly 8-bit levels, as read from a file
    # The same image through files: the noisy blur saved as PNG, re-saved by Pillow as a JPEG
    # at the drawn quality with 4:2:0 chroma subsampling, read back by the zoo's reader.
    noisy_blur = parse_degradation("motion-blur:size=15,noise=5")(clean, 3)
    write_image(tmp_path / "blur.png", noisy_blur)
    quality = degrade.quality_for(3)
    Image.open(tmp_path / "blur.png").save(tmp_path / "blur.jpg", quality=quality, subsampling="4:2:0")
    assert torch.equal(out, read_image(tmp_path / "blur.jpg").image)
    Image.open(tmp_path / "blur.png").save(tmp_path / "blur444.jpg", quality=quality, subsampling="4:4:4")
    assert not torch.equal(out, read_image(tmp_path / "blur444.jpg").image)
    assert not torch.equal(out, quantize(noisy_blur.clamp(0, 1)))


def test_jpeg_psnr_falls_as_the_quality_falls_on_a_bundled_photo():
    clean = _bundled_crop(128)
    blur_only = parse_degradation("motion-blur:size=15,length=10")(clean, 5)
    scores = [psnr(parse_degradation(f"motion-blur:size=15,length=10,jpeg={quality}")(clean, 5), clean)
              for quality in (95, 90, 75, 60, 30, 10)]
    assert all(high > low for high, low in zip(scores, scores[1:])), scores
    assert psnr(blur_only.clamp(0, 1), clean) > scores[0]
    assert scores[0] - scores[-1] > 2.0  # quality 10 costs dB, not hundredths


def test_jpeg_compress_refuses_bad_qualities_and_shapes():
    image = _image()
    for quality in (0, 101, 50.5, True):
        with pytest.raises(ValueError, match=r"integer in \[1, 100\]"):
            jpeg_compress(image, quality)
    with pytest.raises(ValueError, match="RGB or grey CHW"):
        jpeg_compress(torch.rand(2, 8, 8), 75)
    grey = jpeg_compress(image[:1], 50)
    assert grey.shape == (1, 48, 40) and torch.equal(grey, jpeg_compress(image[:1], 50))
    # Direct construction checks the quality range too.
    with pytest.raises(ValueError, match="jpeg"):
        MotionBlur(jpeg=(0, 90))


def test_rain_streak_kernel_geometry():
    vertical = rain_streak_kernel(length=20, angle_degrees=90, width=1)
    assert vertical.max() == pytest.approx(1.0)
    # One column holds the whole streak: 20 pixels of weight (soft ends included).
    centre = vertical.shape[1] // 2
    assert vertical[:, centre].sum() == pytest.approx(20.0)
    assert vertical.sum() == pytest.approx(20.0)
    horizontal = rain_streak_kernel(length=20, angle_degrees=0, width=1)
    np.testing.assert_allclose(horizontal, vertical.T, atol=1e-12)


def test_rain_adds_bright_oriented_streaks():
    clean = torch.full((3, 96, 96), 0.3)
    degrade = parse_degradation("rain:angle=90,density=0.01,intensity=0.8")
    rainy = degrade(clean, 4)
    rain = rainy - clean
    assert rainy.min().item() >= 0.3 - 1e-6 and rainy.max().item() <= 1.0
    assert torch.equal(rain[0], rain[1]) and torch.equal(rain[1], rain[2])  # grey streaks
    covered = (rain[0] > 0.05).float().mean().item()
    assert 0.02 < covered < 0.6
    # Vertical streaks: brightness changes across columns, hardly along rows.
    across = (rain[0, :, 1:] - rain[0, :, :-1]).abs().mean()
    along = (rain[0, 1:, :] - rain[0, :-1, :]).abs().mean()
    assert across > 3 * along


def test_rain_blend_modes_follow_their_formulas():
    clean = _image(40, 40, seed=9)
    layer = RainStreaks().rain_layer(40, 40, 6)
    torch.testing.assert_close(parse_degradation("rain")(clean, 6), (clean + layer).clamp(0, 1))
    screen = parse_degradation("rain:blend=screen")(clean, 6)
    torch.testing.assert_close(screen, 1 - (1 - clean) * (1 - layer))


def test_bicubic_is_matlab_imresize_of_the_mod_crop_on_8_bits():
    levels = torch.randint(0, 256, (3, 35, 30), generator=torch.Generator().manual_seed(2))
    clean = levels.float() / 255
    degrade = parse_degradation("bicubic:x4")
    assert isinstance(degrade, BicubicDownscale) and degrade.scale == 4
    low = degrade(clean, 0)
    assert low.shape == (3, 8, 7)
    assert torch.equal(low, degrade(clean, 99))  # deterministic: no randomness
    as_levels = low.double() * 255
    assert (as_levels - torch.round(as_levels)).abs().max().item() < 1e-4  # 8-bit values
    exact = imresize(mod_crop(clean, 4).double(), 0.25) * 255
    assert (as_levels - exact).abs().max().item() <= 1.0  # at most one level from the float path
    assert torch.equal(degrade.target(clean), clean[:, :32, :28])


def test_none_returns_a_copy():
    clean = _image()
    out = parse_degradation("none")(clean, 0)
    assert torch.equal(out, clean) and out is not clean


@pytest.mark.parametrize(
    ("spec", "canonical"),
    [
        ("gaussian:25", "gaussian:25"),
        ("gaussian:25.0", "gaussian:25"),
        (" gaussian:15-50 ", "gaussian:15-50"),
        ("poisson-gaussian:a=0.01,b=0.0004", "poisson-gaussian"),
        ("poisson-gaussian:b=0.001", "poisson-gaussian:b=0.001"),
        ("motion-blur:size=65,length=60", "motion-blur"),
        ("motion-blur:noise=2,size=21", "motion-blur:size=21,noise=2"),
        ("motion-blur:jpeg=60-90", "motion-blur:jpeg=60-90"),
        ("motion-blur:jpeg=90.0,noise=0-3", "motion-blur:noise=0-3,jpeg=90"),
        ("motion-blur:jpeg=75-75", "motion-blur:jpeg=75"),
        ("rain:angle=60-70,blend=screen", "rain:angle=60-70,blend=screen"),
        ("bicubic:x3", "bicubic:x3"),
        ("none", "none"),
    ],
)
def test_specs_are_canonical_and_round_trip(spec, canonical):
    degrade = parse_degradation(spec)
    assert degrade.spec == canonical
    assert parse_degradation(degrade.spec) == degrade


@pytest.mark.parametrize(
    ("spec", "named_part"),
    [
        ("gauss:25", "unknown degradation 'gauss'"),
        ("gaussian", "needs a sigma"),
        ("gaussian:abc", "sigma 'abc' is not a number or LOW-HIGH range"),
        ("gaussian:50-15", "sigma '50-15' is reversed: range LOW-HIGH needs LOW <= HIGH (write 15-50)"),
        ("gaussian:-5", "sigma '-5' must be >= 0"),
        ("gaussian:-5-10", "sigma '-5-10' must be >= 0"),
        ("rain:length=25-15", "length='25-15' is reversed: range LOW-HIGH needs LOW <= HIGH (write 15-25)"),
        ("rain:density=-0.1", "density='-0.1' must be >= 0"),
        ("poisson-gaussian:b=-0.01", "b='-0.01' must be >= 0"),
        ("gaussian:300", "beyond 255"),
        ("bicubic:x5", "'x5'"),
        ("bicubic", "is not x2, x3 or x4"),
        ("rain:foo=1", "unknown parameter 'foo'"),
        ("rain:density", "'density' is not key=value"),
        ("rain:blend=multiply", "blend='multiply'"),
        ("motion-blur:size=4", "size='4'"),
        ("motion-blur:exposure=1.5", "exposure='1.5'"),
        ("motion-blur:size=21,size=31", "given twice"),
        ("motion-blur:jpeg=0", "jpeg='0' is not valid (JPEG quality: an integer or LO-HI range of integers in [1, 100])"),
        ("motion-blur:jpeg=101", "jpeg='101' is not valid"),
        ("motion-blur:jpeg=60-120", "jpeg='60-120' is not valid"),
        ("motion-blur:jpeg=62.5", "jpeg='62.5' is not an integer quality"),
        ("motion-blur:jpeg=90-60", "jpeg='90-60' is reversed"),
        ("motion-blur:jpeg=high", "jpeg='high' is not a number"),
        ("poisson-gaussian:c=1", "'c=1'"),
        ("poisson-gaussian:a=-1", "a='-1' must be >= 0"),
        ("none:3", "takes no parameters"),
        ("", "empty spec"),
    ],
)
def test_bad_specs_name_the_problem_and_list_the_forms(spec, named_part):
    with pytest.raises(ZooError) as caught:
        parse_degradation(spec)
    message = str(caught.value)
    assert named_part in message
    assert "\n" not in message
    assert all(form in message for form in VALID_FORMS)


def test_batched_input_is_refused():
    with pytest.raises(ValueError, match="CHW"):
        parse_degradation("gaussian:25")(torch.rand(1, 3, 8, 8), 0)


# --------------------------------------------------------------------------------------------
# One of several degradations: ``A || B``

MILD = "motion-blur:size=15,length=5-10,noise=0-3"
MILD_JPEG = "motion-blur:size=15,length=5-10,noise=0-3,jpeg=60-90"


def test_one_of_degrades_each_seed_exactly_as_its_alternative_would():
    mixed = parse_degradation(f"{MILD} || {MILD_JPEG}")
    image = _image(48, 48)
    alternatives = [parse_degradation(MILD), parse_degradation(MILD_JPEG)]
    for seed in (0, 1, 2, 7, 2**61 + 3):
        chosen = alternatives[seed % 2]
        assert mixed.choose(seed) == chosen
        assert torch.equal(mixed(image, seed), chosen(image, seed))
    # JPEG output is 8-bit, the noisy blur is not: both kinds really occur.
    assert torch.equal(mixed(image, 1), (mixed(image, 1) * 255).round() / 255)
    assert not torch.equal(mixed(image, 0), (mixed(image, 0) * 255).round() / 255)


def test_one_of_draws_its_alternatives_equally_often_from_random_seeds():
    mixed = parse_degradation("gaussian:15 || gaussian:50 || gaussian:25")
    rng = np.random.default_rng(0)
    counts = {}
    for seed in rng.integers(2**62, size=3000):
        spec = mixed.choose(int(seed)).spec
        counts[spec] = counts.get(spec, 0) + 1
    assert sorted(counts) == ["gaussian:15", "gaussian:25", "gaussian:50"]
    assert all(abs(count - 1000) < 100 for count in counts.values())


def test_one_of_keeps_the_widest_context_a_common_grid_and_the_shared_scale():
    mixed = parse_degradation(f"gaussian:5 || {MILD_JPEG}")
    jpeg = parse_degradation(MILD_JPEG)
    assert (mixed.context, mixed.grid, mixed.scale) == (jpeg.context, jpeg.grid, 1)


def test_one_of_spec_is_canonical_and_round_trips():
    mixed = parse_degradation("gaussian:25||motion-blur:noise=2.55")
    assert mixed.spec == "gaussian:25 || motion-blur:noise=2.55"
    assert parse_degradation(mixed.spec) == mixed


@pytest.mark.parametrize(
    "spec, named_part",
    [
        ("gaussian:25 || bicubic:x2", "scales [1, 2]"),
        ("gaussian:25 ||", "empty alternative"),
        ("|| gaussian:25", "empty alternative"),
        ("gaussian:25 || gaussian:25", "given twice"),
        ("gaussian:25 || blur:3", "alternative 'blur:3': unknown degradation 'blur'"),
        ("gaussian:25 || motion-blur:jpeg=0", "alternative 'motion-blur:jpeg=0'"),
    ],
)
def test_bad_one_of_specs_name_the_alternative(spec, named_part):
    with pytest.raises(ZooError) as caught:
        parse_degradation(spec)
    assert named_part in str(caught.value)
    assert f"bad degradation spec {spec!r}" in str(caught.value)
