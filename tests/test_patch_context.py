"""Training patches of blur, rain, bicubic SR and JPEG see the real image around them (degradation context)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from zoo.data.degradations import parse_degradation
from zoo.train.data import PatchBatches, TrainingImage


def _photo_like(height: int, width: int) -> np.ndarray:
    rng = np.random.default_rng(3)
    small = rng.integers(0, 256, (height // 8, width // 8, 3)).astype(np.uint8)
    return np.asarray(Image.fromarray(small).resize((width, height), Image.BICUBIC))


@pytest.mark.parametrize("spec", ["motion-blur:size=15,length=30", "rain", "bicubic:x2"])
def test_interior_patch_equals_the_crop_of_the_degraded_image(tmp_path, spec):
    pixels = _photo_like(96, 96)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    image = torch.from_numpy(pixels.copy()).permute(2, 0, 1).float() / 255
    degradation = parse_degradation(spec)
    stream = PatchBatches([TrainingImage("a", tmp_path / "a.png")], degradation=spec, patch_size=16, batch_size=8,
                          iterations=2, seed=0, flips=False, rotations=False)
    scale = degradation.scale
    checked = 0
    for index in range(8):
        rng = np.random.default_rng([0, 1, index])
        rng.integers(1)  # the image draw
        top, left = int(rng.integers(96 - 16 + 1)), int(rng.integers(96 - 16 + 1))
        rng.integers(8)
        seed = int(rng.integers(2**62))
        if min(top, left, 96 - 16 - top, 96 - 16 - left) < degradation.context:
            continue  # near the border the margin shrinks, like the whole image's own border
        degraded, target = stream.sample(1, index)
        assert torch.equal(target, image[:, top:top + 16, left:left + 16])
        margin = degradation.context - degradation.context % degradation.grid
        window = image[:, top - margin:top + 16 + margin, left - margin:left + 16 + margin].contiguous()
        expected = degradation(window, seed)[:, margin // scale:(margin + 16) // scale,
                                             margin // scale:(margin + 16) // scale]
        assert torch.allclose(degraded, expected, atol=1e-6)
        if spec.startswith("motion"):
            # ...and differs from degrading the bare patch (mirrored borders) near its edges.
            assert not torch.allclose(degraded, degradation(target.contiguous(), seed), atol=1e-4)
        checked += 1
    assert checked >= 1


def test_noise_has_no_context_and_keeps_the_old_patch_stream():
    assert parse_degradation("gaussian:25").context == 0
    assert parse_degradation("motion-blur").context == 32
    assert parse_degradation("bicubic:x4").context == 8


JPEG_BLUR = "motion-blur:size=15,length=30,jpeg=60-90"


@pytest.mark.parametrize("patch", [32, 24])
def test_a_jpeg_patch_on_the_block_grid_equals_the_crop_of_the_whole_image(patch):
    # JPEG works on 16-pixel blocks from the image's corner: a window whose corner is on that
    # grid and whose margin is the context gives the patch exactly the whole image's pixels.
    image = torch.from_numpy(_photo_like(192, 224).copy()).permute(2, 0, 1).float() / 255
    degradation = parse_degradation(JPEG_BLUR)
    margin = degradation.context
    assert margin % degradation.grid == 0 and degradation.grid == 16
    top, left = 80, 96  # window corners (top - margin, left - margin) on the 16-pixel grid
    for seed in range(3):
        whole = degradation(image, seed)[:, top:top + patch, left:left + patch]
        window = image[:, top - margin:top + patch + margin, left - margin:left + patch + margin].contiguous()
        assert torch.equal(degradation(window, seed)[:, margin:margin + patch, margin:margin + patch], whole)
        # Off the grid (corner 8 pixels over) the blocks differ, and so do the pixels.
        shifted = image[:, top - margin + 8:top + patch + margin, left - margin + 8:left + patch + margin]
        off_grid = degradation(shifted.contiguous(), seed)[:, margin - 8:margin - 8 + patch, margin - 8:margin - 8 + patch]
        assert (off_grid - whole).abs().max().item() > 2 / 255


def test_jpeg_training_patches_start_on_the_block_grid_of_their_window(tmp_path):
    pixels = _photo_like(160, 160)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    image = torch.from_numpy(pixels.copy()).permute(2, 0, 1).float() / 255
    degradation = parse_degradation(JPEG_BLUR)
    size = 32
    stream = PatchBatches([TrainingImage("a", tmp_path / "a.png")], degradation=JPEG_BLUR, patch_size=size,
                          batch_size=8, iterations=2, seed=0, flips=False, rotations=False)
    margins = []
    for index in range(8):
        rng = np.random.default_rng([0, 1, index])
        rng.integers(1)  # the image draw
        top, left = int(rng.integers(160 - size + 1)), int(rng.integers(160 - size + 1))
        rng.integers(8)
        seed = int(rng.integers(2**62))
        margin = min(degradation.context, top, left, 160 - size - top, 160 - size - left)
        margin -= margin % 16  # down to the block grid: 0, 16, 32 or the full context
        window = image[:, top - margin:top + size + margin, left - margin:left + size + margin].contiguous()
        expected = degradation(window, seed)[:, margin:margin + size, margin:margin + size]
        degraded, target = stream.sample(1, index)
        assert torch.equal(target, image[:, top:top + size, left:left + size])
        assert torch.equal(degraded, expected)
        margins.append(margin)
    assert any(m > 0 for m in margins)


def test_jpeg_widens_the_context_to_whole_blocks():
    assert parse_degradation("motion-blur:jpeg=60-90").context == 64  # radius 32 -> 32 + 2 blocks
    assert parse_degradation("motion-blur:size=15,jpeg=75").context == 48  # radius 7 -> 16 + 2 blocks
    assert parse_degradation("motion-blur:size=15").grid == 1
