"""Distillation: teacher frozen, output and feature terms computed as documented, adapters trained
and dropped, resume exact. Teacher HINet wf 8 / student HINet wf 4 (depth 2) on 16-pixel patches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from zoo.checkpoints import read_state_dict, save_weights
from zoo.errors import ZooError
from zoo.train.config import ModelSpec, config_from_dict
from zoo.train.distill import DistillationObjective, distill
from zoo.train.engine import build_model, latest_checkpoint


#: Tiny models run fastest on one thread (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def setup(tmp_path):
    """(raw config, teacher weights path, teacher state dict) with a pool of synthetic images."""
    pool = tmp_path / "pool"
    pool.mkdir()
    rng = np.random.default_rng(3)
    for index in range(3):
        coarse = (rng.random((8, 8, 3)) * 255).astype(np.uint8)
        image = np.asarray(Image.fromarray(coarse).resize((48, 48), Image.BICUBIC))
        Image.fromarray(image).save(pool / f"p{index}.png")
    torch.manual_seed(11)
    teacher = build_model(ModelSpec(family="hinet", kwargs={"wf": 8, "depth": 2}))[0]
    weights = save_weights(teacher, tmp_path / "teacher.safetensors")
    return _raw(pool, str(weights)), weights, {k: v.clone() for k, v in teacher.state_dict().items()}


def _raw(pool: Path, teacher_weights: str, **distill) -> dict:
    return {
        "name": "distill_tiny",
        "model": {"family": "hinet", "kwargs": {"wf": 4, "depth": 2}},
        "data": {"sources": [str(pool)], "degradation": "gaussian:25", "val_images": 1, "val_crop": 32,
                 "patch_size": 16, "batch_size": 2},
        "loss": {"type": "l1", "stage_weights": [0.5, 1.0]},
        "optimizer": {"lr": 1e-3},
        "schedule": {"type": "constant"},
        "train": {"iterations": 4, "checkpoint_interval": 2, "log_interval": 1, "seed": 5, "device": "cpu",
                  "ema_decay": 0.9},
        "distill": {
            "teacher": {"family": "hinet", "kwargs": {"wf": 8, "depth": 2}, "weights": teacher_weights},
            "alpha": 0.7, "beta": 0.3, "output_loss": "l1", "feature_loss": "mse",
            "features": [
                {"student": "down_path_1.0", "teacher": "down_path_1.0", "student_index": 1, "teacher_index": 1},
                {"student": "up_path_2.0", "teacher": "up_path_2.0", "weight": 2.0},
            ],
            **distill,
        },
    }


def _prepared(raw):
    config = config_from_dict(raw)
    torch.manual_seed(0)
    student = build_model(config.model)[0].train()
    objective = DistillationObjective(config)
    objective.prepare(student, torch.device("cpu"), torch.zeros(1, 3, 16, 16))
    return config, student, objective


def test_distillation_loss_terms_equal_their_definitions_and_adapters_get_gradients(setup):
    raw, _, teacher_state = setup
    config, student, objective = _prepared(raw)
    assert isinstance(objective.adapters[0], torch.nn.Conv2d)  # 4 -> 8 channels at level 0
    assert (objective.adapters[0].in_channels, objective.adapters[0].out_channels) == (4, 8)
    assert isinstance(objective.adapters[1], torch.nn.Conv2d)  # 4 -> 8 at the last decoder level

    # Capture the same features with hooks of our own to recompute every term independently.
    captured = {}

    def grab(key, index=None):
        def hook(module, inputs, output):
            captured[key] = output[index] if index is not None else output
        return hook

    student.down_path_1[0].register_forward_hook(grab("s0", 1))
    student.up_path_2[0].register_forward_hook(grab("s1"))
    teacher = objective.teacher
    teacher.down_path_1[0].register_forward_hook(grab("t0", 1))
    teacher.up_path_2[0].register_forward_hook(grab("t1"))

    generator = torch.Generator().manual_seed(1)
    target = torch.rand(2, 3, 16, 16, generator=generator)
    degraded = target + 0.1 * torch.randn(2, 3, 16, 16, generator=generator)
    total, terms = objective(student, degraded, target)

    with torch.no_grad():
        stage1, stage2 = student(degraded, return_stages=True)
        teacher_out = teacher(degraded)
        task = 0.5 * (stage1 - target).abs().mean() + 1.0 * (stage2 - target).abs().mean()
        output_term = (stage2 - teacher_out).abs().mean()
        feature_term = (((objective.adapters[0](captured["s0"]) - captured["t0"]) ** 2).mean()
                        + 2.0 * ((objective.adapters[1](captured["s1"]) - captured["t1"]) ** 2).mean())
    assert float(terms["distill_output"]) == pytest.approx(float(output_term), rel=1e-5)
    assert float(terms["distill_features"]) == pytest.approx(float(feature_term), rel=1e-5)
    assert float(total.detach()) == pytest.approx(float(task + 0.7 * output_term + 0.3 * feature_term), rel=1e-5)

    total.backward()
    for adapter in objective.adapters:
        assert adapter.weight.grad is not None and float(adapter.weight.grad.abs().sum()) > 0
    assert all(p.grad is None for p in teacher.parameters())  # frozen
    assert not teacher.training
    assert all(torch.equal(v, teacher_state[k]) for k, v in teacher.state_dict().items())


def test_psnr_output_loss_is_minus_the_psnr_between_student_and_teacher(setup):
    raw, _, _ = setup
    raw["distill"].update(output_loss="psnr", beta=0.0)
    _config, student, objective = _prepared(raw)
    generator = torch.Generator().manual_seed(2)
    target = torch.rand(2, 3, 16, 16, generator=generator)
    degraded = target + 0.1 * torch.randn(2, 3, 16, 16, generator=generator)
    _total, terms = objective(student, degraded, target)
    with torch.no_grad():
        final = student(degraded, return_stages=True)[-1]
        mse = ((final - objective.teacher(degraded)) ** 2).flatten(1).mean(dim=1)
        expected = float((10 * torch.log10(mse + 1e-8)).mean())  # per image, then the batch mean
    assert float(terms["distill_output"]) == pytest.approx(expected, abs=1e-3)


def test_feature_term_changes_the_student_gradient(setup):
    raw, _, _ = setup
    grads = []
    for beta in (0.0, 1.0):
        _, student, objective = _prepared(_raw(Path(raw["data"]["sources"][0]), raw["distill"]["teacher"]["weights"],
                                               beta=beta))
        target = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))
        objective(student, target + 0.05, target)[0].backward()
        grads.append(student.down_path_1[0].conv_1.weight.grad.clone())
    assert not torch.allclose(grads[0], grads[1])


def test_distill_run_trains_the_student_only_and_resumes_exactly(setup, tmp_path):
    raw, _, teacher_state = setup
    config = config_from_dict(raw)
    straight = distill(config, tmp_path / "straight", progress=False)
    assert straight.finished
    final = read_state_dict(straight.final_weights)
    torch.manual_seed(config.train.seed)
    student_keys = set(build_model(config.model)[0].state_dict())
    assert set(final) == student_keys  # adapters dropped from the deliverable
    state = torch.load(latest_checkpoint(tmp_path / "straight") / "state.pt", weights_only=True)
    adapters = state["objective"]["distill_adapters"]
    assert set(adapters) == {"0.weight", "0.bias", "1.weight", "1.bias"}
    header = (tmp_path / "straight" / "log.csv").read_text().splitlines()[0].split(",")
    assert {"distill_output", "distill_features"} <= set(header)

    first = distill(config, tmp_path / "resumed", stop_at=2, progress=False)
    second = distill(config, tmp_path / "resumed", resume=True, progress=False)
    assert first.losses + second.losses == straight.losses
    resumed = read_state_dict(second.final_weights)
    assert all(torch.equal(final[k], resumed[k]) for k in final)
    state_b = torch.load(latest_checkpoint(tmp_path / "resumed") / "state.pt", weights_only=True)
    assert all(torch.equal(adapters[k], state_b["objective"]["distill_adapters"][k]) for k in adapters)


def test_bad_distillation_settings_are_explained(setup, tmp_path):
    raw, weights, _ = setup
    pool = Path(raw["data"]["sources"][0])
    bad_name = _raw(pool, str(weights), features=[{"student": "down_path_1.9", "teacher": "down_path_1.0",
                                                   "teacher_index": 1}])
    with pytest.raises(ZooError, match=r"student has no module named 'down_path_1.9'"):
        _prepared(bad_name)
    no_index = _raw(pool, str(weights), features=[{"student": "down_path_1.0", "teacher": "down_path_1.0"}])
    with pytest.raises(ZooError, match=r"student module down_path_1.0 returns 2 tensors.*student_index"):
        _prepared(no_index)
    other_level = _raw(pool, str(weights), features=[{"student": "down_path_1.0", "teacher": "down_path_1.1",
                                                      "student_index": 1}])  # 16x16 vs 8x8 features
    with pytest.raises(ZooError, match="same height and width"):
        _prepared(other_level)
    untrained = _raw(pool, str(weights))
    del untrained["distill"]["teacher"]["weights"]
    with pytest.raises(ZooError, match="teacher must be a trained network"):
        config_from_dict(untrained)
    wrong_teacher = _raw(pool, str(weights))
    wrong_teacher["distill"]["teacher"]["kwargs"]["wf"] = 6
    with pytest.raises(ZooError, match="does not fit HINet"):
        _prepared(wrong_teacher)


def test_distill_command_line(setup, tmp_path):
    from zoo.train import main

    raw, _, _ = setup
    raw["train"]["iterations"] = 2
    path = tmp_path / "d.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main([str(path), "--out", str(tmp_path / "run"), "--quiet"], distill=True) == 0
    assert (tmp_path / "run" / "final.safetensors").is_file()
    del raw["distill"]
    path.write_text(yaml.safe_dump(raw))
    assert main([str(path), "--out", str(tmp_path / "run2"), "--quiet"], distill=True) == 2


# --------------------------------------------------------------------------------------------
# distill.init: teacher (prune, then distil)

def _lite(widths, encoder_blocks, decoder_blocks, seed):
    from zoo.models.hinet_lite import HINetLite

    torch.manual_seed(seed)
    model = HINetLite(3, widths, encoder_blocks, decoder_blocks).eval()
    with torch.no_grad():  # the tail starts at zero; give the net a function worth inheriting
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return model


def test_inherit_from_keeps_the_strongest_channels_and_is_exact_at_equal_shape():
    teacher = _lite((8, 16), (1, 2), (1,), seed=1)
    clone = _lite((8, 16), (1, 2), (1,), seed=2)
    clone.inherit_from(teacher)
    x = torch.rand(1, 3, 16, 16)
    assert torch.equal(clone(x), teacher(x))  # same shape: the very same network

    with torch.no_grad():  # make level-0 channels 5 and 2 the heaviest, level-1 channel 9
        teacher.head.weight[5] *= 20
        teacher.encoders[0][0].conv_1.weight[:, 2] *= 20
        teacher.downs[0].weight[9] *= 20
    student = _lite((2, 4), (1, 1), (1,), seed=3)
    kept = student.inherit_from(teacher)
    assert kept["head"].tolist() == [2, 5] and kept["encoders.0"].tolist() == [2, 5]
    assert kept["decoders.0"].tolist() == [2, 5] and 9 in kept["encoders.1"].tolist()
    assert torch.equal(student.head.weight, teacher.head.weight[[2, 5]])
    assert torch.equal(student.tail.weight, teacher.tail.weight[:, [2, 5]])
    assert torch.equal(student.downs[0].weight, teacher.downs[0].weight[kept["encoders.1"]][:, [2, 5]])
    # pixel_shuffle groups: output channel c of the up-sampler comes from conv outputs 4c..4c+3
    assert torch.equal(student.ups[0].conv.weight, teacher.ups[0].conv.weight[[8, 9, 10, 11, 20, 21, 22, 23]]
                       [:, kept["encoders.1"]])
    assert student(x).shape == x.shape and torch.isfinite(student(x)).all()

    with pytest.raises(ValueError, match="exceed the teacher"):
        _lite((16, 16), (1, 1), (1,), seed=0).inherit_from(teacher)
    with pytest.raises(ValueError, match="3 blocks, the teacher only 2"):
        _lite((2, 4), (1, 3), (1,), seed=0).inherit_from(teacher)
    with pytest.raises(ValueError, match="HINetLite teacher"):
        student.inherit_from(torch.nn.Conv2d(3, 3, 1))


def test_distill_init_teacher_starts_from_the_pruned_teacher(tmp_path):
    from zoo.models.hinet_lite import HINetLite

    teacher = _lite((8, 16), (1, 1), (1,), seed=1)
    weights = save_weights(teacher, tmp_path / "teacher.safetensors")
    pool = tmp_path / "pool"
    pool.mkdir()
    for index in range(2):
        Image.fromarray((np.random.default_rng(index).random((32, 32, 3)) * 255).astype(np.uint8)).save(
            pool / f"p{index}.png")
    raw = _raw(pool, str(weights), init="teacher", alpha=1.0, beta=1.0,
               features=[{"student": "encoders.0", "teacher": "encoders.0"},
                         {"student": "decoders.0", "teacher": "decoders.0"}])
    raw["model"] = {"family": "hinet-lite", "kwargs": {"widths": [4, 8], "encoder_blocks": [1, 1],
                                                       "decoder_blocks": [1]}}
    raw["distill"]["teacher"] = {"family": "hinet-lite", "kwargs": {"widths": [8, 16], "encoder_blocks": [1, 1],
                                                                    "decoder_blocks": [1]}, "weights": str(weights)}
    raw["loss"] = {"type": "l1"}
    config, student, objective = _prepared(raw)
    expected = HINetLite(3, (4, 8), (1, 1), (1,))
    kept = expected.inherit_from(teacher)
    assert all(torch.equal(v, student.state_dict()[k]) for k, v in expected.state_dict().items())
    adapter = objective.adapters[0]  # student channel i -> teacher channel kept[i]
    assert torch.equal(adapter.weight[:, :, 0, 0].argmax(dim=0), kept["encoders.0"])
    assert float(adapter.weight.detach().abs().sum()) == 4.0 and float(adapter.bias.detach().abs().sum()) == 0.0

    run = distill(config, tmp_path / "run", progress=False)  # EMA starts from the inherited weights too
    assert run.finished and np.isfinite(np.asarray(run.losses, dtype=float)).all()

    raw["model"] = {"family": "hinet", "kwargs": {"wf": 4, "depth": 2}}
    raw["distill"]["features"] = []
    raw["distill"]["beta"] = 0.0
    raw["loss"] = {"type": "l1", "stage_weights": [0.5, 1.0]}
    with pytest.raises(ZooError, match="cannot inherit weights.*distill.init: random"):
        _prepared(raw)


def test_shipped_distillation_config_runs_from_the_shipped_teacher(tmp_path):
    """configs/distill_hinet_lite_s_gaussian_cpu.yaml as shipped (prune-then-distil from the shipped
    hinet-lite), two iterations on the bundled photos."""
    from zoo.train import main

    config = Path(__file__).resolve().parents[1] / "configs" / "distill_hinet_lite_s_gaussian_cpu.yaml"
    out = tmp_path / "run"
    assert main([str(config), "--out", str(out), "--quiet", "--set", "train.iterations=2",
                 "--set", "data.sources=[bundled]", "--set", "data.val_images=1", "--set", "train.val_interval=2",
                 "--set", "data.batch_size=2"], distill=True) == 0
    student = read_state_dict(out / "final.safetensors")
    assert student["head.weight"].shape == (16, 12, 3, 3)
    header, *rows = (out / "log.csv").read_text().splitlines()
    assert "distill_output" in header and "distill_features" in header and rows
