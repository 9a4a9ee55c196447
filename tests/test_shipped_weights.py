"""The weights that ship in the package load strictly and restore: on bundled photos (never
evaluation images) they beat the noisy input by a wide margin; the demo runs them end to end."""

import json

import pytest

from zoo.benchmarks.classical import CLASSICAL_METHODS
from zoo.data.bundled import bundled_photos
from zoo.data.degradations import parse_degradation
from zoo.data.io import quantize, read_image
from zoo.demo import centre_crop, pick_demo_model, run_demo
from zoo.evaluate import MetricSettings, measure
from zoo.inference import TileSettings, restore_tensor
from zoo.registry import create_model, list_models

SHIPPED = [card.name for card in list_models() if card.has_weights and not card.zero_shot]


def test_at_least_one_trained_denoiser_ships():
    assert "hinet-lite" in SHIPPED


#: Least PSNR gain (dB) over the degraded input on each bundled crop, per task, with the task's
#: default degradation (denoise: sigma 25, input ~20.2 dB; derain: the zoo's rain; SR: over bicubic,
#: small on smooth crops - idsanet-lite-x2 gains 0.7 and 4.0 dB on the first two).
MINIMUM_GAIN_DB = {"denoise": 6.0, "blind-denoise": 6.0, "derain": 6.0, "super-resolution": 0.5}


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_beats_its_degraded_input_by_a_wide_margin(name):
    model, card = create_model(name)
    settings = MetricSettings.for_task(card.task, card.scale)
    gains = []
    for index, photo in enumerate(bundled_photos()[:2]):
        clean = centre_crop(read_image(photo.path).image, 128)
        degradation = parse_degradation(card.default_degradation)
        degraded = degradation(clean, index)
        clean = degradation.target(clean)
        # The input at the output's size: itself, or its bicubic upscaling for super-resolution.
        baseline = CLASSICAL_METHODS["input"].run(degraded, degradation, index)
        restored = quantize(restore_tensor(model, card, degraded, TileSettings.for_card(card)))
        gains.append(measure(restored, clean, settings)["psnr"] - measure(baseline, clean, settings)["psnr"])
    assert min(gains) > MINIMUM_GAIN_DB[card.task], gains


def test_demo_uses_shipped_weights_and_writes_results(tmp_path):
    assert pick_demo_model() in SHIPPED
    result = run_demo(tmp_path, limit=1, crop=96)
    row = result["photos"][0]
    assert row["psnr"] > row["noisy_psnr"] + 5
    for suffix in ("clean", "noisy", "restored"):
        assert read_image(tmp_path / f"{row['photo']}_{suffix}.png").image.shape == (3, 96, 96)
    assert json.loads((tmp_path / "demo.json").read_text())["model"] == result["model"]
