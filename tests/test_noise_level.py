"""The blind noise-level estimator (Chen, Zhu and Heng, ICCV 2015) in zoo.noise_level."""

import numpy as np
import pytest
import torch

from tests.helpers import add_gaussian_noise, skimage_photo
from zoo.errors import ZooError
from zoo.noise_level import (
    _patch_origins,
    estimate_noise_sigma,
    noise_variance_from_eigenvalues,
    patch_covariance,
)


@pytest.mark.parametrize("name", ["astronaut", "coffee", "chelsea"])
@pytest.mark.parametrize("sigma", [5, 15, 25, 50])
def test_estimates_gaussian_sigma_within_ten_percent_on_photos(name, sigma):
    estimate = estimate_noise_sigma(add_gaussian_noise(skimage_photo(name, 256), sigma)) * 255
    assert estimate == pytest.approx(sigma, rel=0.10)


@pytest.mark.parametrize("name", ["astronaut", "coffee", "chelsea"])
def test_clean_photo_gives_a_small_sigma(name):
    clean = skimage_photo(name, 256)
    estimate = estimate_noise_sigma(clean) * 255
    assert estimate < 3.0
    assert estimate < estimate_noise_sigma(add_gaussian_noise(clean, 5)) * 255


def test_benchmark_photos_within_ten_percent(data_root):
    from zoo.data.io import read_image

    files = sorted((data_root / "bsd68").glob("*.png"))[:3]
    for index, path in enumerate(files):
        clean = read_image(path).image
        for sigma in (15, 25):
            estimate = estimate_noise_sigma(add_gaussian_noise(clean, sigma, seed=index)) * 255
            assert estimate == pytest.approx(sigma, rel=0.10), path.name


def test_pure_noise_is_measured_closely():
    noise_only = add_gaussian_noise(torch.full((3, 128, 128), 0.5), 20, seed=3)
    assert estimate_noise_sigma(noise_only) * 255 == pytest.approx(20, rel=0.03)


def test_stopping_rule_on_a_known_spectrum():
    # r=6: mean 50.67, 2 above / 4 below; r=5: mean 20.8, 1 above / 4 below;
    # r=4: mean 1.0, none above or below -> variance 1.0
    assert noise_variance_from_eigenvalues(torch.tensor([200.0, 1, 1, 100, 1, 1])) == pytest.approx(1.0)
    # r=4 on [1, 2, 3, 10]: mean 4 -> 1 above, 3 below; r=3 on [1, 2, 3]: mean 2 -> 1 above, 1 below
    assert noise_variance_from_eigenvalues(torch.tensor([10.0, 3, 2, 1])) == pytest.approx(2.0)


def test_patch_origins_cover_the_last_row():
    assert _patch_origins(20, 8, 3).tolist() == [0, 3, 6, 9, 12]
    assert _patch_origins(21, 8, 3).tolist() == [0, 3, 6, 9, 12, 13]
    assert _patch_origins(8, 8, 3).tolist() == [0]


def test_patch_covariance_matches_a_direct_computation():
    generator = torch.Generator().manual_seed(1)
    image = torch.rand(3, 13, 17, generator=generator)
    patch, stride = 4, 3
    columns = []
    for top in [0, 3, 6, 9]:  # 9 = 13 - 4, the added last row
        for left in [0, 3, 6, 9, 12, 13]:  # 13 = 17 - 4, the added last column
            columns.append(image[:, top:top + patch, left:left + patch].reshape(-1).double().numpy())
    expected = np.cov(np.stack(columns, axis=1), bias=True)
    got = patch_covariance(image, patch, stride).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)


def test_greyscale_inputs_hw_and_1hw_agree():
    grey = add_gaussian_noise(skimage_photo("coffee", 256).mean(dim=0, keepdim=True), 25)
    from_1hw = estimate_noise_sigma(grey)
    assert estimate_noise_sigma(grey[0]) == pytest.approx(from_1hw)
    assert from_1hw * 255 == pytest.approx(25, rel=0.10)


def test_constant_image_gives_zero():
    assert estimate_noise_sigma(torch.full((3, 32, 32), 0.3)) == pytest.approx(0.0, abs=1e-6)


def test_alpha_channel_is_refused():
    with pytest.raises(ZooError, match="alpha"):
        estimate_noise_sigma(torch.rand(4, 32, 32))


def test_tiny_image_is_refused():
    with pytest.raises(ZooError, match="smaller than the 8x8"):
        estimate_noise_sigma(torch.rand(3, 7, 40))


def test_nan_image_is_refused():
    image = torch.rand(3, 32, 32)
    image[1, 5, 5] = float("nan")
    with pytest.raises(ZooError, match="NaN"):
        estimate_noise_sigma(image)


def test_grey_photo_stored_as_rgb_is_measured_on_one_channel():
    grey = add_gaussian_noise(skimage_photo("coffee", 256).mean(dim=0, keepdim=True), 15)
    assert estimate_noise_sigma(grey.expand(3, -1, -1)) == pytest.approx(estimate_noise_sigma(grey))
