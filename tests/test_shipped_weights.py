"""The weights that ship in the package load strictly and restore: on bundled photos (never
evaluation images) they beat the noisy input by a wide margin; the demo runs them end to end
(denoising, and super-resolution against bicubic upscaling)."""

import json

import pytest

from zoo.benchmarks.classical import CLASSICAL_METHODS
from zoo.data.bundled import bundled_photos
from zoo.data.degradations import parse_degradation
from zoo.data.io import quantize, read_image
from zoo.demo import centre_crop, pick_demo_model, pick_demo_sr_model, run_demo
from zoo.evaluate import MetricSettings, measure
from zoo.inference import TileSettings, restore_tensor
from zoo.registry import create_model, get_card, list_models
from zoo.tasks import MILD_CAMERA_SHAKE_SCORED

SHIPPED = [card.name for card in list_models() if card.ships_trained_weights]


def test_at_least_one_trained_denoiser_ships():
    assert "hinet-lite" in SHIPPED


#: Least PSNR gain (dB) over the degraded input on each bundled crop, per task, with the task's
#: default degradation (denoise: sigma 25, input ~20.2 dB; derain: the zoo's rain; SR: over bicubic,
#: small on smooth crops - idsanet-lite-x2 gains 0.7 and 4.0 dB on the first two).
MINIMUM_GAIN_DB = {"denoise": 6.0, "blind-denoise": 6.0, "derain": 6.0}
#: SR gains shrink with the scale on the same 128-pixel crop (a 32-pixel LR input at x4): on the
#: second, smooth crop idsanet-lite-x4 gains 0.50 dB and idsanet-x4 0.42 dB (1.9 / 1.6 dB on the
#: first). An untrained SR network (zero tail: nearest-neighbour upsampling) loses to bicubic.
MINIMUM_SR_GAIN_DB = {2: 0.5, 3: 0.4, 4: 0.3}
#: Deblurring is scored on the mild shake the lite models train on, with 1 % noise (the benchmark's
#: row, docs/benchmark.md). Gains vary a lot per crop (a 19-px blur gains nothing, a near-sharp noisy
#: crop 2-3 dB), so the mean over every bundled crop is compared: hinet-lite-deblur gains 1.24 dB,
#: mhnet-lite-deblur 0.56; an untrained network (the identity) gains 0.
SCORED_DEGRADATION = {"deblur": MILD_CAMERA_SHAKE_SCORED}
MINIMUM_MEAN_GAIN_DB = {"deblur": 0.3}


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_beats_its_degraded_input_by_a_wide_margin(name):
    model, card = create_model(name)
    settings = MetricSettings.for_task(card.task, card.scale)
    gains = []
    photos = bundled_photos() if card.task in MINIMUM_MEAN_GAIN_DB else bundled_photos()[:2]
    for index, photo in enumerate(photos):
        clean = centre_crop(read_image(photo.path).image, 128)
        degradation = parse_degradation(SCORED_DEGRADATION.get(card.task, card.default_degradation))
        degraded = degradation(clean, index)
        clean = degradation.target(clean)
        # The input at the output's size: itself, or its bicubic upscaling for super-resolution.
        baseline = CLASSICAL_METHODS["input"].run(degraded, degradation, index)
        restored = quantize(restore_tensor(model, card, degraded, TileSettings.for_card(card)))
        gains.append(measure(restored, clean, settings)["psnr"] - measure(baseline, clean, settings)["psnr"])
    if card.task in MINIMUM_MEAN_GAIN_DB:
        assert sum(gains) / len(gains) > MINIMUM_MEAN_GAIN_DB[card.task], gains
        return
    least = MINIMUM_SR_GAIN_DB[card.scale] if card.task == "super-resolution" else MINIMUM_GAIN_DB[card.task]
    assert min(gains) > least, gains


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """One demo run on 3 photos cropped to 96 pixels (about 5 s): its folder and result."""
    folder = tmp_path_factory.mktemp("demo")
    return folder, run_demo(folder, limit=3, crop=96)


def test_demo_uses_shipped_weights_and_writes_results(demo):
    folder, result = demo
    assert pick_demo_model() in SHIPPED
    for row in result["photos"]:
        assert row["psnr"] > row["noisy_psnr"] + 5
        for suffix in ("clean", "noisy", "restored"):
            assert read_image(folder / f"{row['photo']}_{suffix}.png").image.shape == (3, 96, 96)
    written = json.loads((folder / "demo.json").read_text())
    assert written["model"] == result["model"]
    assert written["mean"]["psnr"] == pytest.approx(sum(r["psnr"] for r in result["photos"]) / 3)


def test_demo_super_resolves_with_the_shipped_sr_model_and_beats_bicubic(demo):
    folder, result = demo
    sr = result["super_resolution"]
    name = pick_demo_sr_model()
    assert sr["model"] == name and name in SHIPPED
    card = get_card(name)
    assert card.task == "super-resolution"
    assert sr["degradation"] == card.default_degradation and sr["scale"] == card.scale
    # zoo eval's protocol: Y channel, border of `scale` pixels.
    assert sr["metrics"] == {"y_channel": True, "crop_border": card.scale, "output_quantized_to_8_bit": True}
    rows = sr["photos"]
    assert [row["photo"] for row in rows] == [row["photo"] for row in result["photos"]]
    low = 96 // card.scale
    for row in rows:
        shapes = {suffix: read_image(folder / f"{row['photo']}_{suffix}.png").image.shape
                  for suffix in ("hr", "lr", "bicubic", "sr")}
        assert shapes == {"hr": (3, 96, 96), "lr": (3, low, low), "bicubic": (3, 96, 96), "sr": (3, 96, 96)}
        assert row["size"] == "96x96" and row["input_size"] == f"{low}x{low}"
    assert sum(row["psnr"] > row["bicubic_psnr"] for row in rows) > len(rows) / 2
    assert sr["mean"]["psnr"] > sr["mean"]["bicubic_psnr"]
    # The rows are the metrics zoo.evaluate computes on the files' images.
    hr, sr_image = (read_image(folder / f"{rows[0]['photo']}_{s}.png").image for s in ("hr", "sr"))
    assert measure(sr_image, hr, MetricSettings.for_task(card.task, card.scale))["psnr"] == \
        pytest.approx(rows[0]["psnr"], abs=1e-9)
    written = json.loads((folder / "demo.json").read_text())
    assert written["super_resolution"]["photos"] == rows
    assert set(written) >= {"model", "photos", "mean", "super_resolution", "models_without_weights"}
