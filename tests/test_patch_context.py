"""Training patches of blur, rain and bicubic SR see the real image around them (degradation context)."""

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
        margin = degradation.context - degradation.context % scale
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
