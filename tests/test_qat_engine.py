"""Quantization-aware training inside the training engine (the ``quantization`` config section).

Tiny HINet-Lites (widths 4 and 8) on 16-pixel patches of the synthetic pool of tests/test_train.py:
a QAT run takes a few seconds on one core. Checked: the run writes an int8 PT2E model, fake
quantization is in the trained graph from ``start`` on (outputs on the int8 grid), resume is bit for
bit across the float -> QAT switch and inside the phase, a config with the section but without the
extension fails clearly, the config keys are validated, the CLI path, and (slow) the ExecuTorch
artifact exported from the QAT model computes what the converted graph computes.
"""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch
import yaml

from tests.test_train import _weights, pool_dir, tiny_config  # noqa: F401  (pool_dir is a fixture)
from zoo.errors import ZooError
from zoo.train.config import config_from_dict
from zoo.train.engine import train

needs_executorch = pytest.mark.skipif(importlib.util.find_spec("executorch") is None,
                                      reason="executorch (mobile extra) is not installed")
pytestmark = [pytest.mark.usefixtures("one_thread"), needs_executorch]

TINY_LITE = {"family": "hinet-lite", "kwargs": {"widths": [4, 8], "encoder_blocks": [1, 1], "decoder_blocks": [1]}}


def qat_config(pool, quantization: dict | None = None, **sections) -> dict:
    """A tiny float-then-QAT run: 6 iterations, QAT from iteration 2, EMA, checkpoints every step."""
    raw = tiny_config(pool, **sections)
    raw["model"] = dict(TINY_LITE)
    raw["loss"] = {"type": "l1", "stage_weights": None}
    raw["train"].update({"iterations": 6, "checkpoint_interval": 1, "keep_checkpoints": 10})
    raw["data"].update({"val_crop": 16})
    raw["quantization"] = {"start": 2, "lr": 1e-3, "tile": 16, "calibration_batches": 2,
                           **(quantization or {})}
    for section, values in sections.items():
        if section in ("train", "data") and isinstance(values, dict):
            raw[section].update(values)
    return raw


def run_qat(raw: dict, out, **kwargs):
    from quantize.qat_phase import train_with_qat

    return train_with_qat(config_from_dict(raw), out, progress=False, **kwargs)


def _state(run, iteration: int) -> dict:
    return torch.load(run / "checkpoints" / f"iter_{iteration:08d}" / "state.pt", weights_only=True)


def test_qat_run_writes_an_int8_model_that_follows_the_trained_weights(pool_dir, tmp_path):
    from quantize.ptq import load_quantized, quantization_op_counts

    result = run_qat(qat_config(pool_dir), tmp_path / "run")
    assert result.finished and [it for it, _ in result.losses] == [1, 2, 3, 4, 5, 6]
    path = result.phase_outputs["quantized_model"]
    assert path == tmp_path / "run" / "quantized.pt2"
    graph, sidecar = load_quantized(path)
    assert sidecar["method"] == "qat" and sidecar["recipe"] == "xnnpack" and sidecar["input_shape"] == [3, 16, 16]
    assert sidecar["qat"]["start"] == 2 and sidecar["qat"]["ema"] is True
    counts = quantization_op_counts(graph)
    assert counts["quantize_per_tensor"] > 0 and counts["dequantize_per_channel"] > 0
    precision = sidecar["layer_precision"]
    assert precision["head"] == precision["tail"] == "float" and "int8" in precision.values()  # first-last
    assert sidecar["mixed_precision"]["resolved"]["float_modules"] == ["head", "tail"]
    # Float checkpoints and weights: the latent weights of the configured model.
    float_weights = _weights(tmp_path / "run" / "final_ema.safetensors")
    assert not any("activation_post_process" in key for key in float_weights)
    from zoo.train.models import build_model

    model, _ = build_model(config_from_dict(qat_config(pool_dir)).model)
    model.load_state_dict(float_weights)
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        int8, float_out = graph(x), model.eval()(x)
    assert 25.0 < 10 * torch.log10(1 / torch.mean((int8 - float_out) ** 2)) < 120  # close, not identical
    # The phase's checkpoints carry the quantizer state; before the start there is none.
    assert _state(tmp_path / "run", 2)["phase"] == {"section": "quantization", "active": False, "state": {}}
    quantizers = _state(tmp_path / "run", 3)["phase"]["state"]["quantizers"]
    assert any(key.endswith(".scale") for key in quantizers)
    best = json.loads((tmp_path / "run" / "best.json").read_text())
    assert best["validated"] == "quantization (fake-quantized)"


def test_fake_quantization_is_on_in_the_trained_graph(pool_dir, tmp_path):
    """From ``start`` on the loop trains the PT2E graph: its activations are on the int8 grid."""
    from quantize.qat_phase import QATPhase, fake_quant_nodes
    from zoo.train.engine import PhaseContext
    from zoo.train.models import build_model

    for learnable in (False, True):
        config = config_from_dict(qat_config(pool_dir, {"learnable_scales": learnable}))
        model, multiple = build_model(config.model)
        batches = [torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(i)) for i in range(2)]
        context = PhaseContext(config=config, model=model, ema_model=None, device=torch.device("cpu"),
                               example=torch.zeros(2, 3, 16, 16), size_multiple=multiple,
                               training_batches=lambda count: batches[:count], out_dir=tmp_path, main=True,
                               say=print)
        phase = QATPhase(config)
        phase.check(context)
        graph, ema_graph = phase.enter(context, restoring=False)
        assert ema_graph is None and fake_quant_nodes(graph) > 4 and fake_quant_nodes(model) == 0
        # The graph shares the float parameters (training one trains the other).
        assert {id(p) for p in model.parameters()} <= {id(p) for p in graph.parameters()}
        assert any(p.requires_grad and id(p) not in {id(q) for q in model.parameters()}
                   for p in graph.parameters()) == learnable  # LSQ: the scales are parameters
        seen = {}
        from quantize.qat import fake_quantizers, is_per_channel

        def keep(module, inputs, output):
            seen[module] = output.detach()

        for quantizer in fake_quantizers(graph).values():
            if not is_per_channel(quantizer):
                quantizer.register_forward_hook(keep)
        graph(batches[0])
        assert len(seen) > 2
        for quantizer, output in seen.items():
            scale, zero_point = quantizer.calculate_qparams()
            levels = output / scale + zero_point
            assert torch.allclose(levels, levels.round(), atol=1e-3)
            assert -128 - 1e-3 <= levels.min() and levels.max() <= 127 + 1e-3  # int8
            assert len(levels.round().unique()) > 2


def test_qat_resume_is_bit_for_bit_across_the_switch_and_inside_the_phase(pool_dir, tmp_path):
    from quantize.ptq import load_quantized

    raw = qat_config(pool_dir, {"learnable_scales": True, "distill_from_float": 0.5, "freeze_observers": 4})
    straight = run_qat(raw, tmp_path / "straight")
    first = run_qat(raw, tmp_path / "resumed", stop_at=1)  # float phase
    torch.manual_seed(123)
    second = run_qat(raw, tmp_path / "resumed", resume=True, stop_at=3)  # crosses the switch at 2
    torch.manual_seed(456)
    third = run_qat(raw, tmp_path / "resumed", resume=True)  # resumes inside the QAT phase
    assert first.losses + second.losses + third.losses == straight.losses  # exact float equality
    assert "qat_float_distill" in (tmp_path / "straight" / "log.csv").read_text().splitlines()[0]
    for name in ("final.safetensors", "final_ema.safetensors", "best.safetensors"):
        a, b = _weights(tmp_path / "straight" / name), _weights(tmp_path / "resumed" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    state_a, state_b = _state(tmp_path / "straight", 6), _state(tmp_path / "resumed", 6)
    for kind in ("quantizers", "teacher"):
        qa, qb = state_a["phase"]["state"][kind], state_b["phase"]["state"][kind]
        assert qa.keys() == qb.keys() and all(torch.equal(qa[k], qb[k]) for k in qa)
    for key, value in state_a["optimizer"]["state"].items():
        assert torch.equal(value["exp_avg_sq"], state_b["optimizer"]["state"][key]["exp_avg_sq"])
    assert torch.equal(state_a["rng"]["torch"], state_b["rng"]["torch"])
    # Observers stop at freeze_observers.
    flags = [v for k, v in state_a["phase"]["state"]["quantizers"].items() if k.endswith("observer_enabled")]
    assert flags and all(int(flag.sum()) == 0 for flag in flags)
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    a, _ = load_quantized(tmp_path / "straight" / "quantized.pt2")
    b, _ = load_quantized(tmp_path / "resumed" / "quantized.pt2")
    assert torch.equal(a(x), b(x))


def test_quantization_section_without_the_extension_is_refused(pool_dir, tmp_path):
    config = config_from_dict(qat_config(pool_dir))
    with pytest.raises(ZooError, match=r"quantization section.*without the quantization extension.*zoo train"):
        train(config, tmp_path / "run", progress=False)
    from zoo.train import main

    path = tmp_path / "qat.yaml"
    path.write_text(yaml.safe_dump(qat_config(pool_dir)))
    assert main([str(path), "--out", str(tmp_path / "cli"), "--quiet"]) == 2


def test_quantization_config_is_validated(pool_dir, tmp_path):
    cases = [
        ({"start": 6}, r"quantization\.start \(6\) is not before train\.iterations \(6\)"),
        ({"freeze_observers": 1}, r"quantization\.freeze_observers \(1\) is before quantization\.start \(2\)"),
        ({"ranges": "histogram"}, r"quantization\.ranges must be one of 'ptq', 'minmax'"),
        ({"lr": 0}, r"quantization\.lr must be > 0"),
        ({"learnable_scale": True}, r"unknown config key quantization\.learnable_scale.*learnable_scales"),
        ({"eta_min": 1.0}, r"quantization\.eta_min \(1\.0\) is above quantization\.lr"),
    ]
    for settings, message in cases:
        with pytest.raises(ZooError, match=message):
            config_from_dict(qat_config(pool_dir, settings))
    raw = qat_config(pool_dir)
    raw["loss"]["stage_weights"] = [0.5, 0.5]
    with pytest.raises(ZooError, match=r"loss\.stage_weights.*set loss\.stage_weights: null"):
        config_from_dict(raw)
    with pytest.raises(ZooError, match=r"quantization\.backend: unknown quantization backend 'tpu'"):
        run_qat(qat_config(pool_dir, {"backend": "tpu"}), tmp_path / "a")
    with pytest.raises(ZooError, match=r"quantization\.tile 18 is not a multiple"):
        run_qat(qat_config(pool_dir, {"tile": 18}), tmp_path / "b")


def test_zoo_train_cli_runs_qat(pool_dir, tmp_path, capsys):
    from zoo_cli.main import main

    path = tmp_path / "qat.yaml"
    path.write_text(yaml.safe_dump(qat_config(pool_dir, {"start": 0}, train={"iterations": 2})))
    assert main(["train", str(path), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    assert f"quantized model: {tmp_path / 'run' / 'quantized.pt2'}" in capsys.readouterr().out
    assert (tmp_path / "run" / "quantized.json").is_file()


@pytest.mark.slow
def test_executorch_artifact_of_the_qat_model_matches_the_converted_graph(pool_dir, tmp_path):
    """zoo export --quantized takes the run's quantized.pt2; the .pte computes what the PT2E graph does."""
    from export_mobile.api import export_model
    from quantize.ptq import load_quantized

    raw = qat_config(pool_dir, {"start": 0, "tile": 32}, train={"iterations": 2, "ema_decay": None},
                     data={"patch_size": 32, "val_crop": 32})
    raw["model"] = {"name": "hinet-lite-s"}
    result = run_qat(raw, tmp_path / "run")
    quantized = result.phase_outputs["quantized_model"]
    outcome = export_model("hinet-lite-s", "executorch-xnnpack", "int8", 32, tmp_path / "app",
                           weights=tmp_path / "run" / "final.safetensors", quantized=quantized)
    from export_mobile.runners import load_artifact

    artifact = load_artifact(tmp_path / "app")
    graph, _ = load_quantized(quantized)
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = graph(x)
    got = artifact.forward_tiles(x)
    psnr = 10 * torch.log10(1 / torch.mean((got - expected) ** 2).clamp_min(1e-12))
    assert outcome is not None and psnr > 40.0


TINY_IDSANET = {"family": "zoo.models.idsanet:IDSANet", "kwargs": {"scale": 2, "channels": 8, "groups": 1, "stages": 1, "heads": 2,
                                                "window": 8, "qk_channels": 4}}


def test_idsanet_trains_with_qat_on_window_multiples_with_finite_gradients(pool_dir, tmp_path):
    """IDSANet pads to its 8-pixel window in eager mode (any size works), but its dynamic-size QAT
    graph needs window multiples; and its instance norm / cosine attention divide by a quantized
    variance / norm, which must not round to a zero that makes the gradients NaN."""
    raw = qat_config(pool_dir, data={"degradation": "bicubic:x2", "patch_size": 32, "val_crop": 32})
    raw["model"] = dict(TINY_IDSANET)
    raw["quantization"].update({"mixed": "none", "tile": 16})
    result = run_qat(raw, tmp_path / "run")
    assert result.finished and all(torch.isfinite(torch.tensor(loss)) for _, loss in result.losses)
    from quantize.ptq import load_quantized

    graph, sidecar = load_quantized(result.phase_outputs["quantized_model"])
    assert sidecar["input_shape"] == [3, 16, 16]
    with torch.no_grad():
        out = graph(torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0)))
    assert out.shape == (1, 3, 32, 32) and torch.isfinite(out).all()
    # 24-pixel HR patches give 12-pixel LR inputs: not a multiple of the window, refused up front.
    raw["data"]["patch_size"] = 24
    with pytest.raises(ZooError, match="multiple of 8"):
        run_qat(raw, tmp_path / "refused")


def test_a_qat_fine_tune_states_its_float_start_as_the_reference_not_a_rival(pool_dir, tmp_path, capsys):
    """The starting weights are validated in float, the QAT run fake-quantized: the run says which is
    which, and never calls the float start "the better choice" (it is not an int8 candidate)."""
    import re

    from zoo.checkpoints import save_weights
    from zoo.train.models import build_model

    raw = qat_config(pool_dir, {"start": 0}, train={"iterations": 3})
    model, _ = build_model(config_from_dict(raw).model)
    raw["model"]["weights"] = str(save_weights(model, tmp_path / "start.safetensors"))
    result = run_qat(raw, tmp_path / "run")
    err = capsys.readouterr().err
    said = re.search(r"validation of the starting weights \(before the quantization phase\): ([0-9.]+) dB", err)
    assert said and float(said.group(1)) == pytest.approx(result.start_val_psnr, abs=0.006)
    last = [line for line in err.splitlines() if line.startswith("finished at iteration 3")]
    assert last and f"(quantization; the starting weights before it: {result.start_val_psnr:.2f} dB)" in last[0]
    assert "better choice" not in err
