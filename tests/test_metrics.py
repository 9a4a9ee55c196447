"""PSNR/SSIM/Y against independent references: scikit-image, brute-force windows, and
hand-computed values."""

import math

import numpy as np
import pytest
import torch

from zoo.metrics import psnr, rgb_to_y, ssim

skimage_metrics = pytest.importorskip("skimage.metrics")


def _pair(shape=(3, 40, 36), noise=0.08, seed=0):
    generator = torch.Generator().manual_seed(seed)
    target = torch.rand(shape, generator=generator)
    pred = (target + noise * torch.randn(shape, generator=generator)).clamp(0, 1)
    return pred, target


def _to_255(image: torch.Tensor) -> np.ndarray:
    return image.double().numpy() * 255.0


def _skimage_ssim(x: np.ndarray, y: np.ndarray, **kwargs) -> float:
    return skimage_metrics.structural_similarity(
        x, y, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255, **kwargs
    )


def test_psnr_matches_skimage_rgb():
    pred, target = _pair()
    expected = skimage_metrics.peak_signal_noise_ratio(_to_255(target), _to_255(pred), data_range=255)
    assert psnr(pred, target) == pytest.approx(expected, abs=1e-10)


def test_psnr_of_a_constant_offset():
    target = torch.rand(3, 20, 20, generator=torch.Generator().manual_seed(1)) * 0.9
    pred = target + 10 / 255  # every error is 10 grey levels: MSE = 100
    assert psnr(pred, target) == pytest.approx(20 * math.log10(255 / 10), abs=1e-5)  # 28.1308 dB


def test_psnr_identical_images_is_infinite_and_ssim_is_one():
    image = torch.rand(3, 16, 16)
    assert psnr(image, image.clone()) == math.inf
    assert ssim(image, image.clone()) == pytest.approx(1.0, abs=1e-12)


def test_ssim_matches_skimage_rgb_mean_of_channels():
    pred, target = _pair(seed=2)
    expected = _skimage_ssim(_to_255(target), _to_255(pred), channel_axis=0)
    assert ssim(pred, target) == pytest.approx(expected, abs=1e-10)


def test_skimage_reference_averages_only_valid_windows():
    # skimage filters the whole image (reflect padding) but averages only after cropping
    # (win_size - 1) / 2 = 5 pixels per side: the 'valid' windows of the MATLAB reference.
    pred, target = _pair(shape=(1, 30, 28), seed=3)
    mean, full_map = _skimage_ssim(_to_255(target[0]), _to_255(pred[0]), full=True)
    assert mean == pytest.approx(full_map[5:-5, 5:-5].mean(), abs=1e-12)
    assert abs(full_map.mean() - mean) > 1e-4  # the padded border would change the result


def test_ssim_matches_brute_force_windows():
    # Each valid 11x11 window written out: Gaussian weights (sigma 1.5), population moments.
    pred, target = _pair(shape=(1, 13, 12), seed=4)
    x, y = _to_255(pred[0]), _to_255(target[0])
    offsets = np.arange(11) - 5
    weights = np.exp(-(offsets[:, None] ** 2 + offsets[None, :] ** 2) / (2 * 1.5**2))
    weights /= weights.sum()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    values = []
    for top in range(13 - 10):
        for left in range(12 - 10):
            wx, wy = x[top : top + 11, left : left + 11], y[top : top + 11, left : left + 11]
            mx, my = (weights * wx).sum(), (weights * wy).sum()
            vx = (weights * (wx - mx) ** 2).sum()
            vy = (weights * (wy - my) ** 2).sum()
            cxy = (weights * (wx - mx) * (wy - my)).sum()
            values.append(((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2)))
    assert len(values) == 6
    assert ssim(pred, target) == pytest.approx(float(np.mean(values)), abs=1e-10)


def test_rgb_to_y_known_values():
    colours = torch.tensor([[1.0, 0.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 1.0]])
    y = rgb_to_y(colours[:, None, :])[0, 0] * 255
    # white, black, pure red, pure blue (BT.601, MATLAB rgb2ycbcr)
    np.testing.assert_allclose(y.numpy(), [235.0, 16.0, 16 + 65.481, 16 + 24.966], atol=1e-4)
    assert rgb_to_y(torch.rand(2, 3, 5, 4)).shape == (2, 1, 5, 4)


def test_y_channel_metrics_match_skimage_on_hand_made_luma():
    pred, target = _pair(seed=5)

    def luma(image):
        r, g, b = image.double().numpy()
        return 16 + 65.481 * r + 128.553 * g + 24.966 * b

    expected_psnr = skimage_metrics.peak_signal_noise_ratio(luma(target), luma(pred), data_range=255)
    expected_ssim = _skimage_ssim(luma(target), luma(pred))
    assert psnr(pred, target, y_channel=True) == pytest.approx(expected_psnr, abs=1e-9)
    assert ssim(pred, target, y_channel=True) == pytest.approx(expected_ssim, abs=1e-9)


def test_crop_border_ignores_the_frame():
    target = torch.rand(3, 30, 30, generator=torch.Generator().manual_seed(6))
    pred = target.clone()
    pred[:, :4, :] = 0.0  # damage only a 4-pixel top band
    assert psnr(pred, target) < 30
    assert psnr(pred, target, crop_border=4) == math.inf
    assert ssim(pred, target, crop_border=4) == pytest.approx(1.0, abs=1e-12)
    expected = skimage_metrics.peak_signal_noise_ratio(
        _to_255(target[:, 3:-3, 3:-3]), _to_255(pred[:, 3:-3, 3:-3]), data_range=255
    )
    assert psnr(pred, target, crop_border=3) == pytest.approx(expected, abs=1e-10)


def test_batch_of_one_and_float32_are_accepted():
    pred, target = _pair(seed=7)
    assert psnr(pred[None], target[None]) == psnr(pred, target)
    assert ssim(pred[None], target[None]) == ssim(pred, target)
    assert psnr(pred.double(), target.double()) == pytest.approx(psnr(pred, target), abs=1e-9)


def test_bad_shapes_raise_with_both_shapes():
    with pytest.raises(ValueError, match=r"\(3, 8, 8\).*\(3, 8, 9\)"):
        psnr(torch.rand(3, 8, 8), torch.rand(3, 8, 9))
    with pytest.raises(ValueError, match=r"\(3, 16, 16\).*\(3, 16, 12\)"):
        ssim(torch.rand(3, 16, 16), torch.rand(3, 16, 12))
    with pytest.raises(ValueError, match="one image"):
        psnr(torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8))
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(torch.rand(3, 10, 10), torch.rand(3, 10, 10))
