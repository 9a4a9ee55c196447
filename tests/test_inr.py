"""The zero-shot INR denoiser (zoo.models.inr) and its ablation benchmark (zoo.benchmarks.inr_ablation)."""

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from tests.helpers import add_gaussian_noise, skimage_photo
from zoo.errors import ZooError
from zoo.models import inr
from zoo.models.inr import (
    OPPONENT_FROM_RGB,
    FourierFeatureMLP,
    INRConfig,
    ZeroShotINRDenoiser,
    ablation_config,
    fit_tiles,
    selective_decay_groups,
    tile_starts,
)

# A small network so mechanism tests take a fraction of a second. It takes whole-tile steps and
# returns the last iterate (no pixel subsets, no weight averaging), so the stopping rule is exact;
# the tests of those two options switch them on.
SMALL = INRConfig(fourier_features=16, hidden_width=32, hidden_layers=2, max_steps=300, learning_rate=1e-2,
                  selective_decay=0.0, pixels_per_step=None, weight_average=0.0)


#: Tiny models run fastest on one thread (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("one_thread")


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return 10 * math.log10(1 / float(((a.clamp(0, 1) - b) ** 2).mean()))


def _smooth_target(size: int = 32) -> torch.Tensor:
    """(1, 3, size, size): smooth colour gradients, easy for an INR to fit."""
    ramp = torch.linspace(0, 1, size)
    return torch.stack([ramp[None, :].expand(size, size), ramp[:, None].expand(size, size),
                        0.5 + 0.3 * torch.outer(torch.sin(3 * ramp), torch.cos(2 * ramp))])[None]


# ------------------------------------------------------------------ selective weight decay


def test_selective_decay_groups_hold_exactly_the_last_two_weights():
    model = FourierFeatureMLP(1, 3, SMALL, torch.Generator().manual_seed(0))
    groups = selective_decay_groups(model, 0.5)
    decayed = groups[1]["params"]
    assert groups[1]["weight_decay"] == 0.5 and groups[0]["weight_decay"] == 0.0
    assert [p is w for p, w in zip(decayed, list(model.weights)[-2:])] == [True, True]
    all_ids = {id(p) for p in model.parameters()}
    assert {id(p) for g in groups for p in g["params"]} == all_ids  # nothing left out
    assert len(groups[0]["params"]) + len(decayed) == len(all_ids)


def test_selective_decay_shrinks_only_the_last_two_layers():
    model = FourierFeatureMLP(1, 3, SMALL, torch.Generator().manual_seed(0))
    before = [p.detach().clone() for p in model.parameters()]
    lr, decay = 0.1, 0.5
    optimizer = torch.optim.AdamW(selective_decay_groups(model, decay), lr=lr)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)  # with zero gradients, Adam moves nothing; only decay acts
    optimizer.step()
    last_two = {id(w) for w in list(model.weights)[-2:]}
    for p, old in zip(model.parameters(), before):
        expected = old * (1 - lr * decay) if id(p) in last_two else old
        torch.testing.assert_close(p.detach(), expected)
    assert sum(id(p) in last_two for p in model.parameters()) == 2


# ------------------------------------------------------------------ early stopping


def test_joint_early_stop_fires_at_the_first_step_below_the_noise_variance():
    target = _smooth_target()
    noisy = add_gaussian_noise(target, 20)
    sigma = 20 / 255
    config = replace(SMALL, per_channel_stopping=False)
    fit = fit_tiles(noisy, sigma, config)
    step = int(fit.stop_steps[0, 0])
    assert bool(fit.stopped.all()) and 1 < step < config.max_steps
    assert (fit.stop_steps == step).all()  # joint stop: every channel at once
    residual = float(((fit.fitted - noisy) ** 2).mean())
    assert residual <= sigma ** 2
    assert residual == pytest.approx(sigma ** 2, rel=0.05)
    # the same fit without stopping, ending at the state that step `step - 1` measured (that is,
    # after step - 2 updates), had not reached the noise level yet
    before = fit_tiles(noisy, sigma, replace(config, early_stopping=False, max_steps=step - 2))
    assert float(((before.fitted - noisy) ** 2).mean()) > sigma ** 2


def test_per_channel_stop_freezes_each_channel_at_its_own_residual():
    target = _smooth_target()
    noisy = add_gaussian_noise(target, 20, seed=1)
    sigma = 20 / 255
    fit = fit_tiles(noisy, sigma, SMALL)
    assert bool(fit.stopped.all())
    per_channel = ((fit.fitted - noisy) ** 2).mean(dim=(2, 3))[0]
    assert bool((per_channel <= sigma ** 2).all())
    torch.testing.assert_close(per_channel, fit.residual[0])
    torch.testing.assert_close(per_channel, torch.full((3,), sigma ** 2), rtol=0.05, atol=0)


def test_without_early_stopping_the_fit_goes_below_the_noise_level():
    noisy = add_gaussian_noise(_smooth_target(), 20, seed=2)
    fit = fit_tiles(noisy, 20 / 255, replace(SMALL, early_stopping=False, max_steps=200))
    assert not bool(fit.stopped.any())
    assert (fit.stop_steps == 200).all()
    assert float(((fit.fitted - noisy) ** 2).mean()) < (20 / 255) ** 2  # it has started fitting noise


def test_dropping_finished_tiles_leaves_the_others_fits_unchanged():
    import copy

    torch.manual_seed(0)
    model = FourierFeatureMLP(3, 3, SMALL, torch.Generator().manual_seed(0))
    optimizer = inr._adam(model, SMALL)
    features = model.encode(8, 8)
    target = torch.rand(3, 64, 3)

    def step(net, opt, rows, weights):
        loss = (((net(features) - target[rows]) ** 2).mean(dim=(1, 2)) * weights).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(3):
        step(model, optimizer, [0, 1, 2], torch.ones(3))
    twin = copy.deepcopy(model)
    twin_optimizer = inr._adam(twin, SMALL)
    twin_optimizer.load_state_dict(copy.deepcopy(optimizer.state_dict()))  # own step counters
    # one path keeps tile 1 in the batch with its loss masked, the other drops it
    step(model, optimizer, [0, 1, 2], torch.tensor([1.0, 0.0, 1.0]))
    keep = torch.tensor([True, False, True])
    twin_optimizer = inr._keep_rows(twin, twin_optimizer, keep, SMALL)
    step(twin, twin_optimizer, [0, 2], torch.ones(2))
    for full, kept in zip(model.parameters(), twin.parameters()):
        assert kept.shape[0] == 2
        torch.testing.assert_close(kept.detach(), full.detach()[keep])


def test_fit_is_invariant_to_the_tiles_mean_colour():
    noisy = add_gaussian_noise(_smooth_target(), 20, seed=4)
    shift = torch.tensor([0.3, -0.2, 0.1])[None, :, None, None]
    exact = replace(SMALL, compute_dtype="float32")  # bfloat16 rounding would amplify float32 rounding
    plain = fit_tiles(noisy, 20 / 255, exact)
    shifted = fit_tiles(noisy + shift, 20 / 255, exact)
    assert torch.equal(plain.stop_steps, shifted.stop_steps)
    torch.testing.assert_close(shifted.fitted, plain.fitted + shift, atol=1e-4, rtol=0)


def test_weight_average_changes_the_output_not_the_fit():
    noisy = add_gaussian_noise(_smooth_target(), 20, seed=5)
    sigma = 20 / 255
    last = fit_tiles(noisy, sigma, SMALL)
    averaged = fit_tiles(noisy, sigma, replace(SMALL, weight_average=0.9))
    tiny = fit_tiles(noisy, sigma, replace(SMALL, weight_average=1e-9))
    assert bool(last.stopped.all())
    # the running average only watches the training: same stop, and a vanishing decay is the last iterate
    assert torch.equal(averaged.stop_steps, last.stop_steps) and torch.equal(tiny.stop_steps, last.stop_steps)
    torch.testing.assert_close(tiny.fitted, last.fitted)
    assert not torch.allclose(averaged.fitted, last.fitted, atol=1e-3)
    # the reported residual is the returned output's; the average lags the trained network a few
    # steps, so it sits at or a little above sigma^2 (most above for the channel stopped earliest)
    per_channel = ((averaged.fitted - noisy) ** 2).mean(dim=(2, 3))[0]
    torch.testing.assert_close(per_channel, averaged.residual[0])
    assert bool((per_channel >= 0.98 * sigma ** 2).all() and (per_channel <= 1.25 * sigma ** 2).all())


def test_bfloat16_products_fit_like_float32():
    from zoo.models.inr import compute_dtype

    assert compute_dtype(replace(SMALL, compute_dtype="float32"), torch.device("cpu")) == torch.float32
    assert compute_dtype(replace(SMALL, compute_dtype="bfloat16"), torch.device("cpu")) == torch.bfloat16
    assert compute_dtype(replace(SMALL, compute_dtype="auto"), torch.device("cuda")) == torch.float32
    with pytest.raises(ZooError, match="compute_dtype"):
        INRConfig(compute_dtype="float16")
    noisy = add_gaussian_noise(_smooth_target(), 20, seed=6)
    single = fit_tiles(noisy, 20 / 255, replace(SMALL, compute_dtype="float32"))
    half = fit_tiles(noisy, 20 / 255, replace(SMALL, compute_dtype="bfloat16"))
    assert bool(half.stopped.all()) and half.fitted.dtype == torch.float32
    assert (half.stop_steps - single.stop_steps).abs().max() <= 0.2 * single.stop_steps.max()
    assert _psnr(half.fitted, single.fitted) > 40


def test_pixel_subsets_stop_on_an_exact_whole_tile_check():
    noisy = add_gaussian_noise(_smooth_target(), 20, seed=3)
    fit = fit_tiles(noisy, 20 / 255, replace(SMALL, max_steps=600, pixels_per_step=512))
    assert bool(fit.stopped.all())
    per_channel = ((fit.fitted - noisy) ** 2).mean(dim=(2, 3))[0]
    assert bool((per_channel <= (20 / 255) ** 2).all())


# ------------------------------------------------------------------ end to end


def test_small_end_to_end_denoise_beats_the_noisy_input():
    clean = skimage_photo("chelsea", 64)
    noisy = add_gaussian_noise(clean, 25)
    model = ZeroShotINRDenoiser(replace(INRConfig(), hidden_width=64))
    with torch.inference_mode():  # as the CLI runs models
        restored = model(noisy[None])[0]
    report = model.last_report
    assert restored.shape == clean.shape
    assert _psnr(restored, clean) > _psnr(noisy, clean) + 4.0
    assert report["status"] == "denoised" and report["stopped_fraction"] >= 0.75
    assert report["noise_sigma"] == pytest.approx(25, rel=0.10)
    assert report["residual"] == pytest.approx(report["noise_sigma"], rel=0.10)
    assert 0 < report["stop_iteration"] <= report["max_stop_iteration"] <= model.config.max_steps
    assert set(report) >= {"noise_sigma", "stop_iteration", "residual", "fit_seconds", "stopped_early"}


def test_clean_photo_is_returned_unchanged():
    clean = skimage_photo("coffee", 64)
    model = ZeroShotINRDenoiser(SMALL)
    restored = model(clean[None])[0]
    assert torch.equal(restored, clean)
    assert model.last_report["status"] == "clean"
    assert model.last_report["noise_sigma"] < SMALL.clean_sigma


def test_constant_image_is_returned_unchanged():
    flat = torch.full((1, 3, 40, 40), 0.25)
    model = ZeroShotINRDenoiser(SMALL)
    assert torch.equal(model(flat), flat)
    assert model.last_report["noise_sigma"] == 0.0


def test_greyscale_rgba_and_grey_as_rgb_inputs():
    clean_grey = skimage_photo("chelsea", 48).mean(dim=0, keepdim=True)
    noisy_grey = add_gaussian_noise(clean_grey, 25)
    model = ZeroShotINRDenoiser(SMALL)
    out_grey = model(noisy_grey[None])[0]
    assert out_grey.shape == (1, 48, 48)
    assert _psnr(out_grey, clean_grey) > _psnr(noisy_grey, clean_grey)

    as_rgb = noisy_grey.expand(3, -1, -1)
    out_rgb = model(as_rgb[None])[0]
    assert torch.equal(out_rgb[0], out_rgb[1]) and torch.equal(out_rgb[0], out_rgb[2])
    torch.testing.assert_close(out_rgb[0], out_grey[0])  # fitted once, as one channel

    alpha = torch.rand(1, 48, 48)
    rgba = torch.cat([add_gaussian_noise(skimage_photo("chelsea", 48), 25), alpha])
    out_rgba = model(rgba[None])[0]
    assert out_rgba.shape == (4, 48, 48)
    assert torch.equal(out_rgba[3:], alpha)


@pytest.mark.parametrize("bad, message", [
    (torch.rand(1, 3, 6, 30), "smaller than the 8x8"),
    (torch.full((1, 3, 16, 16), float("nan")), "NaN"),
    (torch.rand(1, 2, 16, 16), "1, 3 or 4 channels"),
    (torch.rand(3, 16, 16), "NCHW"),
])
def test_bad_inputs_raise_clear_errors(bad, message):
    with pytest.raises(ZooError, match=message):
        ZeroShotINRDenoiser(SMALL)(bad)


def test_progress_bar_reports_the_fit(capsys):
    model = ZeroShotINRDenoiser(replace(SMALL, max_steps=20))
    model.progress = True
    model(add_gaussian_noise(skimage_photo("chelsea", 32), 25)[None])
    assert "inr fit" in capsys.readouterr().err


# ------------------------------------------------------------------ tiles and colour


def test_opponent_transform_is_orthonormal():
    torch.testing.assert_close(OPPONENT_FROM_RGB @ OPPONENT_FROM_RGB.T, torch.eye(3))


@pytest.mark.parametrize("length, tile, overlap", [(100, 100, 8), (1000, 256, 32), (300, 256, 32), (257, 64, 16)])
def test_tiles_cover_the_image_with_the_requested_overlap(length, tile, overlap):
    starts, size = tile_starts(length, tile, overlap)
    assert size <= tile and starts[0] == 0 and starts[-1] + size == length
    covered = torch.zeros(length, dtype=torch.int32)
    for start in starts:
        covered[start:start + size] += 1
    assert bool((covered >= 1).all())
    for a, b in zip(starts, starts[1:]):
        assert a + size - b >= overlap


def test_tiled_blend_of_perfect_fits_returns_the_image(monkeypatch):
    def identity_fit(targets, noise_sigma, config, progress_bar=None):
        batch, channels = targets.shape[:2]
        flags = torch.ones(batch, channels, dtype=torch.bool)
        return inr.TileFit(targets.clone(), torch.ones(batch, channels, dtype=torch.long), flags,
                           torch.zeros(batch, channels))

    monkeypatch.setattr(inr, "fit_tiles", identity_fit)
    image = torch.rand(3, 90, 70)
    model = ZeroShotINRDenoiser(replace(SMALL, tile_size=40, tile_overlap=8, tiles_per_batch=4))
    fitted, report = model._fit_tiled(image, 0.1)
    torch.testing.assert_close(fitted, image)
    rows, _ = tile_starts(90, 40, 8)
    cols, _ = tile_starts(70, 40, 8)
    assert report["tiles"] == len(rows) * len(cols) > 1


def test_large_photo_goes_through_tiles():
    clean = skimage_photo("chelsea", 96)
    noisy = add_gaussian_noise(clean, 25)
    model = ZeroShotINRDenoiser(replace(SMALL, tile_size=48, tile_overlap=8, tiles_per_batch=9))
    restored = model(noisy[None])[0]
    assert model.last_report["tiles"] == 9
    assert _psnr(restored, clean) > _psnr(noisy, clean) + 2.0


# ------------------------------------------------------------------ registry, ablations, benchmark


def test_registry_card_and_model():
    from zoo.registry import create_model, get_card

    card = get_card("inr-zeroshot")
    assert (card.task, card.family, card.zero_shot, card.tile, card.weights) == ("blind-denoise", "inr", True, None, None)
    assert any("not exportable" in note.lower() for note in card.notes)
    model, _ = create_model("inr-zeroshot")
    assert isinstance(model, ZeroShotINRDenoiser) and hasattr(model, "progress")


def test_ablation_configs_switch_one_component_each():
    base = INRConfig(selective_decay=0.3)
    assert ablation_config("inr", base) == base
    assert ablation_config("inr-no-decay", base) == replace(base, selective_decay=0.0)
    assert ablation_config("inr-no-early-stop", base) == replace(base, early_stopping=False)
    with pytest.raises(ZooError, match="unknown INR variant"):
        ablation_config("inr-nothing")


def test_ablation_benchmark_writes_a_table_and_json(data_root, tmp_path, capsys):
    from zoo.benchmarks.inr_ablation import main

    out = tmp_path / "bench.json"
    main(["--data-root", str(data_root), "--images", "1", "--crop", "40", "--sigmas", "25",
          "--methods", "noisy,inr,inr-no-early-stop,wavelet", "--max-steps", "30", "--json", str(out)])
    result = json.loads(out.read_text())
    rows = {r["method"]: r for r in result["rows"]}
    assert set(rows) == {"noisy", "inr", "inr-no-early-stop", "wavelet"}
    assert rows["inr-no-early-stop"]["stop_iteration"] == 30 and not rows["inr-no-early-stop"]["stopped_early"]
    # one 40x40 tile, 512 random pixels per step, all 30 steps (the final evaluation is not a step)
    assert rows["inr-no-early-stop"]["pixel_steps"] == 30 * 512
    assert 0 < rows["inr"]["pixel_steps"] <= 30 * 512 + 30 * 1600 // 3
    assert rows["noisy"]["psnr"] == pytest.approx(20.2, abs=0.6)  # 10 log10(255^2 / 25^2) = 20.17 dB
    assert result["summary"]["25"]["inr"]["psnr"] == rows["inr"]["psnr"]
    assert "inr-no-early-stop" in capsys.readouterr().out


def test_zoo_restore_runs_the_fit_and_reports_the_stop(tmp_path, capsys):
    from PIL import Image

    from zoo_cli.main import main

    clean = skimage_photo("chelsea", 40)
    noisy = (add_gaussian_noise(clean, 25).clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    source, target = tmp_path / "noisy.png", tmp_path / "out.png"
    Image.fromarray(noisy).save(source)
    assert main(["restore", "inr-zeroshot", str(source), "-o", str(target), "--quiet"]) == 0
    restored = torch.from_numpy(np.asarray(Image.open(target).convert("RGB"))).permute(2, 0, 1).float() / 255
    assert restored.shape == clean.shape
    assert _psnr(restored, clean) > _psnr(torch.from_numpy(noisy).permute(2, 0, 1).float() / 255, clean) + 2.0
    assert "stopped at iteration" in capsys.readouterr().out
