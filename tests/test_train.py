"""The training engine: configs, losses, schedule, patch stream, checkpoints, resume, NaN, DDP.

Everything runs tiny HINets (wf 4, depth 2) on 16-pixel patches of synthetic images made in
tmp_path, so each training run takes a second or two on one CPU core.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from zoo.errors import ZooError
from zoo.train.config import config_from_dict, load_config
from zoo.train.data import PatchBatches, TrainingImage, dihedral, split_pool, training_pool
from zoo.train.engine import TrainingDiverged, TaskObjective, build_model, latest_checkpoint, learning_rate, train
from zoo.train.losses import StageLoss, charbonnier_loss, l1_loss, mse_loss, psnr_loss

REPO = Path(__file__).resolve().parents[1]


def _smooth_image(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A photo-like uint8 RGB image: low-frequency colour fields plus a little texture."""
    coarse = rng.random((height // 8 + 2, width // 8 + 2, 3))
    image = np.asarray(Image.fromarray((coarse * 255).astype(np.uint8)).resize((width, height), Image.BICUBIC))
    texture = rng.integers(-12, 13, size=(height, width, 3))
    return np.clip(image.astype(int) + texture, 0, 255).astype(np.uint8)


#: Tiny models run fastest on one thread (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("one_thread")


def make_pool(parent: Path) -> Path:
    """The synthetic training pool (4 photo-like images, 48-72 x 64 pixels) in ``parent/pool``."""
    folder = parent / "pool"
    folder.mkdir()
    rng = np.random.default_rng(7)
    for index in range(4):
        Image.fromarray(_smooth_image(rng, 48 + 8 * index, 64)).save(folder / f"img_{index}.png")
    return folder


@pytest.fixture
def pool_dir(tmp_path) -> Path:
    return make_pool(tmp_path)


def tiny_config(pool: Path, **sections) -> dict:
    """A raw config dict for a tiny run on ``pool``; ``sections`` update the sections key by key."""
    raw = {
        "name": "tiny",
        "model": {"family": "hinet", "kwargs": {"wf": 4, "depth": 2}},
        "data": {"sources": [str(pool)], "degradation": "gaussian:25", "val_images": 1, "val_crop": 32,
                 "patch_size": 16, "batch_size": 2},
        "loss": {"type": "psnr", "stage_weights": [0.5, 0.5]},
        "optimizer": {"type": "adam", "lr": 2e-3, "betas": [0.9, 0.99]},
        "schedule": {"type": "cosine", "eta_min": 1e-6},
        "train": {"iterations": 4, "grad_clip": 1.0, "ema_decay": 0.5, "val_interval": 0,
                  "checkpoint_interval": 2, "log_interval": 1, "seed": 3, "device": "cpu"},
    }
    for section, values in sections.items():
        if isinstance(values, dict) and isinstance(raw.get(section), dict):
            raw[section].update(values)
        else:
            raw[section] = values
    return raw


def _weights(path: Path) -> dict[str, torch.Tensor]:
    from zoo.checkpoints import read_state_dict

    return read_state_dict(path)


# ------------------------------------------------------------------------------------ config


def test_config_errors_name_the_key_path(pool_dir):
    with pytest.raises(ZooError, match=r"optimizer\.lr must be a finite number, got 'fast'"):
        config_from_dict(tiny_config(pool_dir, optimizer={"lr": "fast"}))
    with pytest.raises(ZooError, match=r"unknown config key train\.iteratons.*did you mean 'iterations'"):
        config_from_dict(tiny_config(pool_dir, train={"iteratons": 5}))
    with pytest.raises(ZooError, match=r"data\.batch_size must be an integer, got 2\.5"):
        config_from_dict(tiny_config(pool_dir, data={"batch_size": 2.5}))
    with pytest.raises(ZooError, match=r"data\.flips must be true or false, got 'yes'"):
        config_from_dict(tiny_config(pool_dir, data={"flips": "yes"}))
    with pytest.raises(ZooError, match=r"loss\.type must be one of 'psnr', 'l1', 'mse', 'charbonnier', got 'l2'"):
        config_from_dict(tiny_config(pool_dir, loss={"type": "l2"}))
    with pytest.raises(ZooError, match=r"unknown config key optimiser"):
        config_from_dict({**tiny_config(pool_dir), "optimiser": {}})
    with pytest.raises(ZooError, match=r"optimizer\.betas\[1\] must be a finite number"):
        config_from_dict(tiny_config(pool_dir, optimizer={"betas": [0.9, None]}))
    with pytest.raises(ZooError, match=r"train\.grad_clip must be a finite number or null, got 'nan'"):
        config_from_dict(tiny_config(pool_dir, train={"grad_clip": "nan"}))
    with pytest.raises(ZooError, match=r"optimizer\.lr must be > 0, got -0\.1"):
        config_from_dict(tiny_config(pool_dir, optimizer={"lr": -0.1}))


def test_config_refuses_evaluation_sets_for_training_and_validation(pool_dir, tmp_path):
    for name in ("set5", "Set14", "bsd68", "CBSD68"):
        with pytest.raises(ZooError, match=r"data\.sources\[0\].*evaluation-only"):
            config_from_dict(tiny_config(pool_dir, data={"sources": [name]}))
    with pytest.raises(ZooError, match=r"data\.sources\[1\].*evaluation-only"):
        config_from_dict(tiny_config(pool_dir, data={"sources": ["urban100", "/data/somewhere/bsd68/"]}))
    with pytest.raises(ZooError, match=r"data\.val_paired\.target.*evaluation-only"):
        config_from_dict(tiny_config(pool_dir, data={"val_paired": {"input": "x/noisy", "target": "x/Set5"}}))
    # A link under another name passes the config check but not the data check (resolved path).
    root = tmp_path / "root"
    (root / "set14").mkdir(parents=True)
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(root / "set14" / "a.png")
    (tmp_path / "my_photos").symlink_to(root / "set14")
    config = config_from_dict(tiny_config(pool_dir, data={"sources": [str(tmp_path / "my_photos")],
                                                          "data_root": str(root)}))
    with pytest.raises(ZooError, match="evaluation-only"):
        training_pool(config.data)


def test_overrides_are_parsed_as_yaml_and_checked(pool_dir, tmp_path):
    path = tmp_path / "exp.yaml"
    raw = tiny_config(pool_dir)
    del raw["name"]
    path.write_text(yaml.safe_dump(raw))
    config = load_config(path, ["optimizer.lr=1e-4", "train.iterations=7", "optimizer.betas=[0.8, 0.9]",
                                "train.grad_clip=null"])
    assert config.name == "exp"  # from the file name
    assert config.optimizer.lr == pytest.approx(1e-4) and isinstance(config.optimizer.lr, float)
    assert config.train.iterations == 7 and config.optimizer.betas == [0.8, 0.9] and config.train.grad_clip is None
    with pytest.raises(ZooError, match=r"train\.iterations must be an integer, got 'many'"):
        load_config(path, ["train.iterations=many"])
    with pytest.raises(ZooError, match=r"unknown config key train\.speed"):
        load_config(path, ["train.speed=3"])
    with pytest.raises(ZooError, match="is not key.path=value"):
        load_config(path, ["train.iterations"])
    # PyYAML reads 2e-4 (no dot) as a string: numeric strings are accepted for numbers.
    path.write_text(path.read_text().replace("lr: 0.002", "lr: 2e-4"))
    assert load_config(path).optimizer.lr == pytest.approx(2e-4)
    assert config_from_dict(config.to_dict()) == config


def test_a_config_extends_another_and_holds_only_what_differs(pool_dir, tmp_path):
    base = tiny_config(pool_dir)
    base["description"] = "the base run"
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "stage1.yaml").write_text(yaml.safe_dump(base))
    child = tmp_path / "stage2.yaml"
    child.write_text(yaml.safe_dump({"extends": "base/stage1.yaml", "optimizer": {"lr": 5e-5},
                                     "train": {"iterations": 3}}))
    config = load_config(child, ["train.seed=4"])
    parent = load_config(tmp_path / "base" / "stage1.yaml")
    assert config.name == "stage2" and config.description != "the base run"  # never inherited
    assert config.optimizer.lr == pytest.approx(5e-5) and config.train.iterations == 3 and config.train.seed == 4
    # Sections merge key by key: everything the child does not name is the base's.
    assert config.optimizer.type == parent.optimizer.type and config.optimizer.betas == parent.optimizer.betas
    assert config.train.log_interval == parent.train.log_interval and config.data == parent.data
    # Chains resolve relative to each file; cycles and missing bases are named.
    grandchild = tmp_path / "stage3.yaml"
    grandchild.write_text("extends: stage2.yaml\ntrain: {iterations: 9}\n")
    third = load_config(grandchild)
    assert third.train.iterations == 9 and third.optimizer.lr == pytest.approx(5e-5)
    (tmp_path / "base" / "stage1.yaml").write_text(yaml.safe_dump({**base, "extends": "../stage3.yaml"}))
    with pytest.raises(ZooError, match=r"chain is a cycle \(stage2.yaml -> stage1.yaml -> stage3.yaml -> stage2.yaml\)"):
        load_config(child)
    child.write_text("extends: nowhere.yaml\n")
    with pytest.raises(ZooError, match="extends .*nowhere.yaml, which is not found"):
        load_config(child)
    child.write_text("extends: [a, b]\n")
    with pytest.raises(ZooError, match="extends must be the path"):
        load_config(child)


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_are_valid(path):
    from zoo.registry import get_card

    config = load_config(path)
    assert config.train.iterations > 0
    for spec in (config.model, config.distill.teacher if config.distill else None):
        if spec is not None and spec.name:
            assert get_card(spec.name).name == spec.name  # a registered model
    if config.distill is not None:
        assert config.distill.teacher.weights


def test_start_from_another_models_shipped_weights():
    """``shipped:OTHER`` loads another card's shipped file; misuse names the fix."""
    from safetensors.torch import load_file

    from zoo.registry import get_card
    from zoo.train.config import ModelSpec

    model, _ = build_model(ModelSpec(name="mhnet-lite-deblur", weights="shipped:mhnet-lite-derain"))
    shipped = load_file(get_card("mhnet-lite-derain").weights_path)
    state = model.state_dict()
    assert set(shipped) == set(state)
    assert all(torch.equal(state[key], shipped[key].to(state[key].dtype)) for key in shipped)
    for name, weights, message in [("mhnet-lite-deblur", "shipped:", "names no model"),
                                   ("mhnet-lite-deblur", "shipped:hinet-sidd-0.5x", "ships no weights for hinet-sidd-0.5x"),
                                   ("mhnet-lite-deblur", "shipped:hinet-lite", "does not fit"),
                                   ("mhnet-v1-deblur", "shipped", "ships no weights for mhnet-v1-deblur")]:
        with pytest.raises(ZooError, match=message):
            build_model(ModelSpec(name=name, weights=weights))
    with pytest.raises(ZooError, match="needs model.name"):
        build_model(ModelSpec(family="hinet-lite", weights="shipped:hinet-lite"))


def test_reinit_fine_tunes_an_sr_body_at_another_scale(tmp_path):
    """``model.reinit: [tail.*]`` loads an x4 body into x2 and keeps x2's fresh (zero) tail."""
    from zoo.checkpoints import load_weights, save_weights
    from zoo.models.idsanet import IDSANet, IDSANetLite
    from zoo.train.config import ModelSpec

    torch.manual_seed(3)
    x4 = IDSANet(scale=4)
    source = save_weights(x4, tmp_path / "x4.safetensors")
    with pytest.warns(UserWarning, match="kept the fresh initialisation of 2 keys"):
        x2, _ = build_model(ModelSpec(name="idsanet-x2", weights=str(source), reinit=["tail.*"]))
    assert x2.scale == 2 and x2.tail.weight.shape == (12, 64, 3, 3) and not x2.tail.weight.any()
    body = {key: value for key, value in x4.state_dict().items() if not key.startswith("tail.")}
    assert all(torch.equal(x2.state_dict()[key], value) for key, value in body.items())
    with pytest.raises(ZooError, match="does not fit"):  # without reinit the load stays strict
        build_model(ModelSpec(name="idsanet-x2", weights=str(source)))
    bare = IDSANet(scale=2)  # one pattern given as a bare string, not a sequence of its characters
    with pytest.warns(UserWarning, match="kept the fresh initialisation of 2 keys"):
        load_weights(bare, source, reinit="tail.*")
    assert torch.equal(bare.head.weight, x4.head.weight) and not bare.tail.weight.any()
    with pytest.raises(ZooError, match=r"'upsampler\.\*' match no key of IDSANet"):
        build_model(ModelSpec(name="idsanet-x2", weights=str(source), reinit=["upsampler.*"]))
    lite = save_weights(IDSANetLite(4), tmp_path / "lite.safetensors")
    with pytest.raises(ZooError, match="missing"):  # another architecture still fails, tail or not
        build_model(ModelSpec(name="idsanet-x2", weights=str(lite), reinit=["tail.*"]))
    with pytest.raises(ZooError, match="model.reinit keeps some keys fresh"):
        config_from_dict({"name": "x", "model": {"name": "idsanet-x2", "reinit": ["tail.*"]},
                          "data": {"sources": ["bundled"], "degradation": "bicubic:x2"}})


# ------------------------------------------------------------------------------ losses, lr


def test_losses_match_independent_formulas():
    generator = torch.Generator().manual_seed(0)
    pred = torch.rand(3, 3, 8, 8, generator=generator)
    target = torch.rand(3, 3, 8, 8, generator=generator)
    p, t = pred.double().numpy(), target.double().numpy()
    mse = ((p - t) ** 2).reshape(3, -1).mean(axis=1)
    assert float(psnr_loss(pred, target)) == pytest.approx(np.mean(10 * np.log10(mse + 1e-8)), rel=1e-5)
    assert float(l1_loss(pred, target)) == pytest.approx(np.abs(p - t).mean(), rel=1e-5)
    assert float(mse_loss(pred, target)) == pytest.approx(mse.mean(), rel=1e-5)
    assert float(charbonnier_loss(pred, target, 0.1)) == pytest.approx(np.sqrt((p - t) ** 2 + 0.01).mean(), rel=1e-5)
    stage1 = pred * 0.5
    total, terms = StageLoss("l1", [0.25, 2.0])([stage1, pred], target)
    expected = 0.25 * np.abs(p * 0.5 - t).mean() + 2.0 * np.abs(p - t).mean()
    assert float(total) == pytest.approx(expected, rel=1e-5)
    assert set(terms) == {"loss_stage1", "loss_stage2"}
    total, _ = StageLoss("l1")([stage1, pred], target)  # no weights: the final output only
    assert float(total) == pytest.approx(np.abs(p - t).mean(), rel=1e-5)
    with pytest.raises(ZooError, match="3 weights but the model returns 2 stages"):
        StageLoss("l1", [1, 1, 1])([stage1, pred], target)


def test_cosine_schedule_equals_torch_cosine_annealing_and_basicsr_warmup():
    from zoo.train.config import ScheduleConfig

    total, base, eta_min = 50, 2e-4, 1e-7
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=base)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total, eta_min=eta_min)
    schedule = ScheduleConfig(type="cosine", eta_min=eta_min)
    for iteration in range(total):
        expected = optimizer.param_groups[0]["lr"]
        assert learning_rate(schedule, base, total, iteration) == pytest.approx(expected, rel=1e-9)
        optimizer.step()
        scheduler.step()
    warm = ScheduleConfig(type="cosine", eta_min=eta_min, warmup_iterations=10)
    assert learning_rate(warm, base, total, 0) == pytest.approx(base / 10)
    assert learning_rate(warm, base, total, 9) == pytest.approx(base)
    assert learning_rate(warm, base, total, 10) == pytest.approx(learning_rate(schedule, base, total, 10))
    assert learning_rate(ScheduleConfig(type="constant"), base, total, 33) == base


def test_ema_follows_the_warmed_up_average():
    from zoo.train.engine import EMA

    model = torch.nn.Linear(2, 1)
    torch.nn.init.zeros_(model.weight)
    ema = EMA(model, decay=0.9)
    expected = np.zeros(2)
    for update, value in enumerate([1.0, 3.0, -2.0, 5.0], start=1):
        torch.nn.init.constant_(model.weight, value)
        ema.update(model, update)
        decay = min(0.9, (1 + update) / (10 + update))  # 2/11, 3/12, 4/13, 5/14
        expected = decay * expected + (1 - decay) * value
        np.testing.assert_allclose(ema.module.weight.detach().numpy()[0], expected, rtol=1e-6)
    assert not ema.module.weight.requires_grad


# ------------------------------------------------------------------------------ patch stream


def test_patches_are_crops_of_the_training_images_with_the_configured_noise(tmp_path):
    folder = tmp_path / "one"
    folder.mkdir()
    pixels = _smooth_image(np.random.default_rng(1), 40, 40)
    Image.fromarray(pixels).save(folder / "a.png")
    image = torch.from_numpy(pixels).permute(2, 0, 1).float() / 255
    stream = PatchBatches([TrainingImage("a", folder / "a.png")], degradation="gaussian:25", patch_size=16,
                          batch_size=4, iterations=3, seed=0, flips=False, rotations=False)
    degraded, target = stream[1]
    assert degraded.shape == target.shape == (4, 3, 16, 16)
    windows = image.unfold(1, 16, 1).unfold(2, 16, 1)  # (3, 25, 25, 16, 16): every 16x16 crop
    for patch in target:
        distance = (windows - patch[:, None, None]).abs().amax(dim=(0, 3, 4))
        assert float(distance.min()) == 0.0  # an exact crop, not resampled
    noise = (degraded - target).flatten()
    assert float(noise.std()) == pytest.approx(25 / 255, rel=0.1)
    assert float(noise.mean()) == pytest.approx(0.0, abs=0.01)
    # Deterministic in (seed, iteration); another iteration or seed gives other patches.
    again = PatchBatches([TrainingImage("a", folder / "a.png")], degradation="gaussian:25", patch_size=16,
                         batch_size=4, iterations=3, seed=0, flips=False, rotations=False)
    assert torch.equal(again[1][0], degraded) and not torch.equal(stream[2][1], target)


def test_processes_share_out_the_single_process_batch(pool_dir):
    images = [TrainingImage(p.name, p) for p in sorted(pool_dir.iterdir())]
    kwargs = dict(degradation="gaussian:15-50", patch_size=16, batch_size=4, iterations=5, seed=9)
    whole = PatchBatches(images, **kwargs)[3]
    shards = [PatchBatches(images, rank=rank, world_size=2, **kwargs)[3] for rank in (0, 1)]
    assert torch.equal(torch.cat([shards[0][0], shards[1][0]]), whole[0])
    assert torch.equal(torch.cat([shards[0][1], shards[1][1]]), whole[1])
    with pytest.raises(ZooError, match="does not split evenly over 3 processes"):
        PatchBatches(images, rank=0, world_size=3, **kwargs)


def test_dihedral_transforms_are_the_eight_distinct_symmetries():
    square = torch.arange(9.0).reshape(1, 3, 3)
    results = {tuple(dihedral(square, t).flatten().tolist()) for t in range(8)}
    assert len(results) == 8
    assert torch.equal(dihedral(square, 4), square.flip(-1))
    assert torch.equal(dihedral(square, 1), square.rot90(1, (-2, -1)))


def test_validation_split_is_held_out(pool_dir):
    images = [TrainingImage(p.name, p) for p in sorted(pool_dir.iterdir())]
    train_part, val_part = split_pool(images, 2, seed=0)
    assert len(val_part) == 2 and len(train_part) == 2
    assert not {i.name for i in train_part} & {i.name for i in val_part}
    with pytest.raises(ZooError, match="val_images is 4 but the training pool has only 4"):
        split_pool(images, 4, seed=0)


# ------------------------------------------------------------------------------ training runs


def test_training_lowers_the_loss_on_a_fixed_batch_and_writes_loadable_weights(pool_dir, tmp_path):
    raw = tiny_config(pool_dir, schedule={"type": "constant"}, train={"iterations": 8, "ema_decay": None})
    config = config_from_dict(raw)
    result = train(config, tmp_path / "run", progress=False)
    assert result.finished and result.iteration == 8 and len(result.losses) == 8

    # An independent look: the same initial network (same seed) and a fixed batch.
    torch.manual_seed(config.train.seed)
    initial, _ = build_model(config.model)
    trained, _ = build_model(config.model)
    from zoo.checkpoints import load_weights

    load_weights(trained, result.final_weights)
    changed = [k for k, v in trained.state_dict().items() if not torch.equal(v, initial.state_dict()[k])]
    assert len(changed) > 0.9 * len(initial.state_dict())
    images = [TrainingImage(p.name, p) for p in sorted(pool_dir.iterdir())]
    degraded, target = PatchBatches(images, degradation="gaussian:25", patch_size=32, batch_size=4,
                                    iterations=1, seed=123)[0]
    objective = TaskObjective(config)
    with torch.no_grad():
        before = float(objective(initial, degraded, target)[0])
        after = float(objective(trained, degraded, target)[0])
    assert after < before - 0.5  # dB of (weighted) PSNR loss

    # The CSV log has one row per iteration with the throughput and the validation PSNR.
    import csv

    rows = list(csv.DictReader((result.out_dir / "log.csv").open()))
    assert [int(r["iteration"]) for r in rows] == list(range(1, 9))
    assert [float(r["loss"]) for r in rows] == pytest.approx([loss for _, loss in result.losses], rel=1e-6)
    last = rows[-1]
    assert float(last["it_per_s"]) > 0
    assert float(last["patches_per_s"]) == pytest.approx(2 * float(last["it_per_s"]), rel=1e-2)
    assert result.validations == [(8, result.best_val_psnr)]  # val_interval 0: at the end only
    assert float(last["val_psnr"]) == pytest.approx(result.best_val_psnr, abs=1e-3)
    assert float(last["lr"]) == pytest.approx(2e-3)
    best = json.loads((result.out_dir / "best.json").read_text())
    assert best["iteration"] == 8 and best["val_psnr"] == pytest.approx(result.best_val_psnr)


def test_a_run_states_the_validation_inputs_own_psnr(pool_dir, tmp_path, capsys):
    """The level a model must beat: the degraded validation images scored as they are (not on resume)."""
    import re

    from zoo.metrics import psnr
    from zoo.train.data import split_pool, training_pool, validation_set

    config = config_from_dict(tiny_config(pool_dir, train={"iterations": 2, "ema_decay": None}))
    train(config, tmp_path / "run", progress=False, stop_at=1)
    said = re.search(r"validation input \(the degraded images as they are\): ([0-9.]+) dB", capsys.readouterr().err)
    _, held_out = split_pool(training_pool(config.data), config.data.val_images, config.data.val_seed)
    items = validation_set(held_out, degradation="gaussian:25", crop=32, size_multiple=1, seed=config.data.val_seed)
    expected = np.mean([psnr(i.degraded.clamp(0, 1).unsqueeze(0), i.target.unsqueeze(0)) for i in items])
    assert said and float(said.group(1)) == pytest.approx(expected, abs=0.006)
    assert 14 < expected < 24  # sigma 25 on a clean image: about 20 dB
    train(config, tmp_path / "run", progress=False, resume=True)
    assert "validation input" not in capsys.readouterr().err


def test_a_fine_tune_validates_its_starting_weights(pool_dir, tmp_path, capsys):
    """A run from model.weights states (and keeps in start.json, across a resume) the validation of
    the weights it starts from: the level the fine-tune must beat. Here the first run's final weights,
    whose end-of-run validation on the same held-out images is that very number."""
    import re

    first = train(config_from_dict(tiny_config(pool_dir, train={"iterations": 3, "ema_decay": None})),
                  tmp_path / "first", progress=False)
    assert first.start_val_psnr is None  # from scratch: nothing to compare with
    capsys.readouterr()
    raw = tiny_config(pool_dir, train={"iterations": 2, "ema_decay": None})
    raw["model"]["weights"] = str(first.final_weights)
    config = config_from_dict(raw)
    train(config, tmp_path / "second", progress=False, stop_at=1)
    said = re.search(r"validation of the starting weights: ([0-9.]+) dB", capsys.readouterr().err)
    assert said and float(said.group(1)) == pytest.approx(first.best_val_psnr, abs=0.006)
    record = json.loads((tmp_path / "second" / "start.json").read_text())
    assert record["val_psnr"] == pytest.approx(first.validations[-1][1], abs=1e-5)
    resumed = train(config, tmp_path / "second", progress=False, resume=True)
    err = capsys.readouterr().err
    assert "validation of the starting weights" not in err  # stated once, at the start
    assert resumed.start_val_psnr == record["val_psnr"]
    assert f"{record['val_psnr']:.2f} dB" in err.splitlines()[-1]  # the last line compares best and start


def test_final_weights_load_through_the_registry(pool_dir, tmp_path):
    from zoo.registry import create_model

    raw = tiny_config(pool_dir, model={"name": "hinet-lite-s", "family": None, "kwargs": {}},
                      loss={"stage_weights": None}, train={"iterations": 1, "ema_decay": None})
    raw["data"].update(patch_size=32, batch_size=1)
    result = train(config_from_dict(raw), tmp_path / "run", progress=False)
    model, card = create_model("hinet-lite-s", weights=result.final_weights)
    trained = _weights(result.final_weights)
    assert all(torch.equal(value, trained[key]) for key, value in model.state_dict().items())
    from zoo.checkpoints import read_metadata

    assert read_metadata(result.final_weights)["zoo_model"] == "hinet-lite-s"


@pytest.mark.parametrize("speed", [{}, {"train": {"amp": "bf16", "channels_last": True}},
                                   {"data": {"patch_schedule": [[3, 24, 4]]}}],
                         ids=["fp32", "bf16-channels-last", "patch-schedule"])
def test_resume_continues_bit_for_bit(pool_dir, tmp_path, speed):
    raw = tiny_config(pool_dir, data={"flips": True, "rotations": True})
    for section, values in speed.items():
        raw[section].update(values)
    config = config_from_dict(raw)
    straight = train(config, tmp_path / "straight", progress=False)

    first = train(config, tmp_path / "resumed", stop_at=2, progress=False)
    assert not first.finished and first.final_weights is None
    assert latest_checkpoint(tmp_path / "resumed").name == "iter_00000002"
    # Scramble the global RNGs, as a fresh process would have them: the checkpoint restores them.
    torch.manual_seed(999)
    second = train(config, tmp_path / "resumed", resume=True, progress=False)
    assert second.finished

    assert first.losses + second.losses == straight.losses  # exact float equality
    for name in ("final.safetensors", "final_ema.safetensors"):
        a, b = _weights(tmp_path / "straight" / name), _weights(tmp_path / "resumed" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    state_a = torch.load(tmp_path / "straight/checkpoints/iter_00000004/state.pt", weights_only=True)
    state_b = torch.load(tmp_path / "resumed/checkpoints/iter_00000004/state.pt", weights_only=True)
    for key, value in state_a["optimizer"]["state"].items():
        assert torch.equal(value["exp_avg_sq"], state_b["optimizer"]["state"][key]["exp_avg_sq"])
    # The resumed log continues the first one without duplicate rows.
    import csv

    rows = list(csv.DictReader((tmp_path / "resumed" / "log.csv").open()))
    assert [int(r["iteration"]) for r in rows] == [1, 2, 3, 4]


def test_dataloader_workers_give_the_same_run(pool_dir, tmp_path):
    in_process = train(config_from_dict(tiny_config(pool_dir, train={"iterations": 3})), tmp_path / "a",
                       progress=False)
    with_workers = train(config_from_dict(tiny_config(pool_dir, data={"workers": 2}, train={"iterations": 3})),
                         tmp_path / "b", progress=False)
    assert with_workers.losses == in_process.losses


def test_resume_refuses_another_model_and_a_used_folder(pool_dir, tmp_path):
    config = config_from_dict(tiny_config(pool_dir))
    train(config, tmp_path / "run", stop_at=2, progress=False)
    with pytest.raises(ZooError, match=r"already holds a training run.*--resume"):
        train(config, tmp_path / "run", progress=False)
    wider = config_from_dict(tiny_config(pool_dir, model={"kwargs": {"wf": 6, "depth": 2}}))
    with pytest.raises(ZooError, match=r"trained for model hinet\(depth=2, wf=4\) but this config builds "
                                       r"hinet\(depth=2, wf=6\)"):
        train(wider, tmp_path / "run", resume=True, progress=False)
    with pytest.raises(ZooError, match="no checkpoint"):
        train(config, tmp_path / "empty", resume=True, progress=False)


def _damaged_checkpoints(run: Path) -> dict:
    """name -> (damage(run folder), words of the refusal) for the checkpoint a tiny run stopped at 2."""
    folder = run / "checkpoints" / "iter_00000002"
    state = folder / "state.pt"
    latest = run / "checkpoints" / "latest.json"

    def saved(change):
        def damage():
            data = torch.load(state, weights_only=True)
            torch.save(change(data), state)
        return damage

    return {
        "empty-state": (lambda: state.write_bytes(b""), "state.pt cannot be read safely: it is truncated, corrupt or "
                                                       "holds more than tensors and numbers (it is empty)"),
        "truncated-state": (lambda: state.write_bytes(state.read_bytes()[:3000]), "state.pt cannot be read safely"),
        "state-a-list": (saved(lambda data: [1, 2]), "state.pt holds a list, not a zoo training checkpoint"),
        "state-incomplete": (saved(lambda data: {"format": 1, "iteration": 2}),
                             "state.pt lacks model, layout, optimizer, objective, rng, sampler, config"),
        "state-another-format": (saved(lambda data: dict(data, format=7)),
                                 "iter_00000002 was written by another version of the trainer (checkpoint format 7"),
        "distill-state": (saved(lambda data: dict(data, objective={"distill_adapters": {}})),
                          "holds state for distill_adapters, which this run does not train"),
        "truncated-weights": (lambda: (folder / "weights.safetensors").write_bytes(b"\x10\x00"),
                              "weights.safetensors is not a readable safetensors file"),
        "latest-a-list": (lambda: latest.write_text("[1]"), "latest.json is damaged; point it at an intact checkpoint"),
        "latest-path-a-number": (lambda: latest.write_text('{"path": 5}'),
                                 "latest.json is damaged: its path 5 is not a checkpoint folder name"),
        "latest-path-outside": (lambda: latest.write_text('{"path": "../../elsewhere"}'),
                                "its path '../../elsewhere' is not a checkpoint folder name"),
    }


@pytest.mark.parametrize("damage", ["empty-state", "truncated-state", "state-a-list", "state-incomplete",
                                    "state-another-format", "distill-state", "truncated-weights", "latest-a-list",
                                    "latest-path-a-number", "latest-path-outside"])
def test_resume_from_a_damaged_checkpoint_is_one_line(pool_dir, tmp_path, damage):
    """Before: an empty state.pt raised IndexError while the message was built, a state.pt without
    the trainer's entries KeyError/AttributeError, a latest.json that is a list or names a number
    TypeError, and a zoo distill checkpoint resumed by zoo train failed in the optimizer with
    ValueError (tracebacks). The run folder is left as it was."""
    config = config_from_dict(tiny_config(pool_dir))
    run = tmp_path / "run"
    train(config, run, stop_at=2, progress=False)
    change, words = _damaged_checkpoints(run)[damage]
    change()
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    with pytest.raises(ZooError) as caught:
        train(config, run, resume=True, progress=False)
    assert words in str(caught.value) and "\n" not in str(caught.value), str(caught.value)
    assert caught.value.fix
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before


def test_resume_takes_a_state_file_and_names_a_bad_stop_at(pool_dir, tmp_path, capsys):
    from zoo.train import main

    config = config_from_dict(tiny_config(pool_dir))
    run = tmp_path / "run"
    train(config, run, stop_at=2, progress=False)
    state = run / "checkpoints" / "iter_00000002" / "state.pt"
    with pytest.raises(ZooError, match=r"--stop-at 2 is not after the checkpoint iteration 2; pass a --stop-at from "
                                       r"3 to train\.iterations \(4\), or leave it out"):
        # before: "no checkpoint in .../state.pt/checkpoints"
        train(config, run, resume=state, stop_at=2, progress=False)
    with pytest.raises(ZooError, match=r"weights\.safetensors: a file, not a run or checkpoint folder; pass the run "
                                       r"folder"):
        train(config, run, resume=state.parent / "weights.safetensors", progress=False)
    assert train(config, run, resume=state, stop_at=3, progress=False).losses  # iteration 3 only
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_config(pool_dir)))
    capsys.readouterr()
    assert main([str(path), "--out", str(tmp_path / "fresh"), "--stop-at", "0", "--quiet"]) == 2
    assert capsys.readouterr().err.strip() == ("zoo: error: --stop-at 0 is not an iteration; pass a positive "
                                               "iteration, e.g. --stop-at 1000")
    assert not (tmp_path / "fresh").exists()


def test_resume_reports_changed_settings_not_keys_added_since(pool_dir, tmp_path, capsys):
    """A run written before a config key existed resumes without reporting that key as changed."""
    from zoo.train.checkpointing import STATE_FILE

    config = config_from_dict(tiny_config(pool_dir, train={"iterations": 4}))
    train(config, tmp_path / "run", stop_at=2, progress=False)
    state_path = latest_checkpoint(tmp_path / "run") / STATE_FILE
    state = torch.load(state_path, weights_only=True)
    del state["config"]["model"]["reinit"]  # as a checkpoint of an older zoo holds it
    torch.save(state, state_path)
    capsys.readouterr()
    longer = config_from_dict(tiny_config(pool_dir, train={"iterations": 5}))
    assert train(longer, tmp_path / "run", resume=True, progress=False).finished
    err = capsys.readouterr().err
    assert "resuming with changed settings: train.iterations: 4 -> 5" in err
    assert "reinit" not in err


def test_held_out_images_follow_val_seed_not_the_data_stream(pool_dir, tmp_path, capsys):
    """A later stage with a new train.seed validates on the same held-out images (data.val_seed)."""
    def held_out(run, **sections):
        raw = tiny_config(pool_dir, train={"iterations": 1})
        for section, values in sections.items():
            raw[section].update(values)
        capsys.readouterr()
        train(config_from_dict(raw), tmp_path / run, progress=False)
        line = next(line for line in capsys.readouterr().err.splitlines() if line.startswith("held out"))
        return line.split(": ", 1)[1].split(", ")

    first = held_out("a")
    assert len(first) == 1 and first[0].startswith("pool/img_")
    assert held_out("b", train={"seed": 5}) == first
    others = {tuple(held_out(f"v{seed}", data={"val_seed": seed})) for seed in range(1, 6)}
    assert others - {tuple(first)}  # the split does follow val_seed
    with pytest.raises(ZooError, match="data.val_seed must be >= 0"):
        config_from_dict(tiny_config(pool_dir, data={"val_seed": -1}))


class _NaNAt(TaskObjective):
    """The task loss, but from call ``at`` on a NaN loss (``"loss"``, a diverging run) or a finite
    loss whose backward gives NaN gradients (``"gradients"``)."""

    def __init__(self, config, at, what="loss"):
        super().__init__(config)
        self.calls, self.at, self.what = 0, at, what

    def __call__(self, model, degraded, target):
        self.calls += 1
        loss, terms = super().__call__(model, degraded, target)
        if self.calls < self.at:
            return loss, terms
        if self.what == "loss":
            return loss * float("nan"), terms
        return loss + _NaNBackward.apply(loss) * 0.0, terms


class _NaNBackward(torch.autograd.Function):
    """Identity forward, NaN gradients backward."""

    @staticmethod
    def forward(ctx, value):
        return value.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("nan")


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(pool_dir, tmp_path):
    config = config_from_dict(tiny_config(pool_dir, train={"iterations": 6}))
    with pytest.raises(TrainingDiverged, match=r"loss became nan at iteration 3.*last good checkpoint is iteration 2"):
        train(config, tmp_path / "run", objective=_NaNAt(config, 3), progress=False)
    assert latest_checkpoint(tmp_path / "run").name == "iter_00000002"
    assert not (tmp_path / "run" / "final.safetensors").exists()
    weights = _weights(tmp_path / "run/checkpoints/iter_00000002/weights.safetensors")
    assert all(torch.isfinite(value).all() for value in weights.values())
    # The run can be resumed from the good checkpoint.
    assert train(config, tmp_path / "run", resume=True, progress=False).finished


@pytest.mark.parametrize("clip", [0.5, None])
def test_nan_gradients_stop_before_they_reach_the_weights(pool_dir, tmp_path, clip):
    config = config_from_dict(tiny_config(pool_dir, train={"iterations": 6, "grad_clip": clip}))
    with pytest.raises(TrainingDiverged, match=r"gradients became nan at iteration 3 although the loss was finite"
                                               r".*last good checkpoint is iteration 2") as info:
        train(config, tmp_path / "run", objective=_NaNAt(config, 3, "gradients"), progress=False)
    assert "lower optimizer.lr" in info.value.fix and "--resume" in info.value.fix
    weights = _weights(tmp_path / "run/checkpoints/iter_00000002/weights.safetensors")
    assert all(torch.isfinite(value).all() for value in weights.values())


def test_cli_exits_non_zero_on_divergence(pool_dir, tmp_path, capsys):
    from zoo.train import main

    path = tmp_path / "diverge.yaml"
    path.write_text(yaml.safe_dump(tiny_config(pool_dir, schedule={"type": "constant"},
                                               train={"grad_clip": None, "iterations": 6})))
    status = main([str(path), "--out", str(tmp_path / "run"), "--quiet", "--set", "optimizer.lr=1e30"])
    assert status == 2
    assert "loss became" in capsys.readouterr().err


def test_failed_checkpoint_save_keeps_the_previous_checkpoint(pool_dir, tmp_path, monkeypatch):
    from zoo.train import checkpointing

    real_write = checkpointing._write_state

    def disk_full(state, path):
        if state["iteration"] == 4:
            Path(path).write_bytes(b"partial")  # as a full disk leaves a truncated file
            raise OSError(28, "No space left on device")
        real_write(state, path)

    monkeypatch.setattr(checkpointing, "_write_state", disk_full)
    config = config_from_dict(tiny_config(pool_dir, train={"iterations": 6}))
    with pytest.raises(ZooError, match=r"checkpoint of iteration 4 .*No space left.*iteration 2\) is intact"):
        train(config, tmp_path / "run", progress=False)
    checkpoints = tmp_path / "run" / "checkpoints"
    assert latest_checkpoint(tmp_path / "run").name == "iter_00000002"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["iter_00000002", "latest.json"]  # no partial folder
    monkeypatch.setattr(checkpointing, "_write_state", real_write)
    resumed = train(config, tmp_path / "run", resume=True, progress=False)
    assert resumed.finished and [it for it, _ in resumed.losses] == [3, 4, 5, 6]


def test_distill_section_is_refused_by_train_command(pool_dir, tmp_path):
    from zoo.train import main

    raw = tiny_config(pool_dir)
    raw["distill"] = {"teacher": {"family": "hinet", "kwargs": {"wf": 4, "depth": 2}, "weights": "t.safetensors"}}
    path = tmp_path / "d.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main([str(path), "--out", str(tmp_path / "run"), "--quiet"]) == 2


# ------------------------------------------------------------------------------ DDP


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _initial_weights(config):
    torch.manual_seed(config.train.seed)
    return build_model(config.model)[0].state_dict()


def _ddp_worker(rank: int, world_size: int, port: int, raw: dict, out_dir: str) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "WORLD_SIZE": str(world_size), "LOCAL_RANK": str(rank)})
    torch.set_num_threads(1)
    train(config_from_dict(raw), out_dir, progress=False)


def test_ddp_on_two_cpu_processes_matches_one_process(pool_dir, tmp_path):
    import torch.multiprocessing as mp

    # Without half instance normalisation: the conv biases feeding it get exactly-zero gradients, whose
    # float round-off Adam would blow up to +-lr, differently in each process layout.
    raw = tiny_config(pool_dir, model={"kwargs": {"wf": 4, "depth": 2, "hin_position_left": 9}},
                      train={"iterations": 3, "checkpoint_interval": 0})
    single = train(config_from_dict(raw), tmp_path / "single", progress=False)
    mp.spawn(_ddp_worker, args=(2, _free_port(), raw, str(tmp_path / "ddp")), nprocs=2, join=True)
    a, b = _weights(single.final_weights), _weights(tmp_path / "ddp" / "final.safetensors")
    initial = {k: v.clone() for k, v in _initial_weights(config_from_dict(raw)).items()}
    assert all(not torch.equal(a[k], initial[k]) for k in a if k.endswith("weight"))
    assert a.keys() == b.keys()
    for key in a:  # the same global batches; only the order of float additions differs
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)
    # Only rank 0 wrote: one log with one row per iteration.
    lines = (tmp_path / "ddp" / "log.csv").read_text().strip().splitlines()
    assert len(lines) == 1 + 3


def test_smoke_config_trains_on_the_bundled_photos(tmp_path, capsys):
    pytest.importorskip("skimage")
    from zoo.train import main

    out = tmp_path / "smoke"
    fallback = [] if torch.cuda.is_available() else ["--set", "train.device=cuda", "--set", "train.amp=fp16"]
    status = main([str(REPO / "configs" / "train_smoke.yaml"), "--out", str(out), "--quiet",
                   "--set", "train.iterations=2", "--set", "train.val_interval=0", *fallback])
    assert status == 0
    config = json.loads((out / "config.json").read_text())
    assert config["data"]["sources"] == ["bundled"] and config["train"]["iterations"] == 2
    weights = _weights(out / "final.safetensors")
    torch.manual_seed(0)
    expected = build_model(load_config(REPO / "configs" / "train_smoke.yaml").model)[0].state_dict()
    assert {k: tuple(v.shape) for k, v in weights.items()} == {k: tuple(v.shape) for k, v in expected.items()}
    captured = capsys.readouterr()
    assert "throughput:" in captured.out
    if fallback:  # no CUDA here: the run says it falls back to the CPU in float32
        assert "CUDA is not available: training on the CPU" in captured.err
        assert "fp16 applies on CUDA only" in captured.err


def test_super_resolution_validation_is_measured_on_y_with_a_border_crop(pool_dir, tmp_path, monkeypatch):
    """SR runs validate as `zoo eval` measures SR (BT.601 Y, border crop = scale), not RGB."""
    import zoo.metrics

    seen = []
    original = zoo.metrics.psnr
    monkeypatch.setattr(zoo.metrics, "psnr", lambda *a, **k: seen.append(k) or original(*a, **k))
    raw = tiny_config(pool_dir, model={"family": "zoo.models.idsanet:IDSANetLite", "kwargs": {"scale": 2, "channels": 4,
                                                                                          "blocks": 1}},
                      data={"degradation": "bicubic:x2"}, loss={"type": "psnr", "stage_weights": None},
                      train={"val_interval": 2})
    train(config_from_dict(raw), tmp_path / "run", progress=False)
    assert seen and all(k == {"y_channel": True, "crop_border": 2} for k in seen)


# ------------------------------------------------------------------------------ speed options


class _ConvProbe(TaskObjective):
    """The task loss, recording (grad enabled, output dtype, output and weight channels_last) of the first conv."""

    def prepare(self, model, device, sample):
        super().prepare(model, device, sample)
        self.seen = []
        # A 3x3 convolution of several channels (for 1x1 kernels or one channel both layouts coincide).
        conv = next(module for module in model.modules()
                    if isinstance(module, torch.nn.Conv2d) and module.kernel_size == (3, 3) and module.in_channels > 1)
        last = torch.channels_last
        conv.register_forward_hook(lambda module, inputs, output: self.seen.append(
            (torch.is_grad_enabled(), output.dtype, output.is_contiguous(memory_format=last),
             module.weight.is_contiguous(memory_format=last))))


@pytest.mark.parametrize("amp, channels_last", [("none", False), ("bf16", True)])
def test_bf16_autocast_and_channels_last_apply_on_the_cpu(pool_dir, tmp_path, amp, channels_last):
    # Without EMA validation runs the trained model, so the probe sees it too.
    config = config_from_dict(tiny_config(pool_dir, train={"iterations": 2, "amp": amp, "ema_decay": None,
                                                           "channels_last": channels_last}))
    probe = _ConvProbe(config)
    result = train(config, tmp_path / "run", objective=probe, progress=False)
    training = [entry for entry in probe.seen if entry[0]]
    validation = [entry for entry in probe.seen if not entry[0]]
    assert len(training) == 2 and validation  # one training forward per step; validation at the end
    expected = torch.bfloat16 if amp == "bf16" else torch.float32
    assert all(dtype == expected for _, dtype, _, _ in training)
    assert all(out_last == channels_last and weight_last == channels_last for _, _, out_last, weight_last in training)
    assert all(dtype == torch.float32 for _, dtype, _, _ in validation)  # validation runs in float32
    assert all(np.isfinite(loss) for _, loss in result.losses)
    assert result.final_weights is not None  # the channels_last weights are saved (contiguous) and load back
    assert all(value.is_contiguous() for value in _weights(result.final_weights).values())


def test_fp16_stays_on_cuda_and_the_cpu_trains_in_float32(pool_dir, tmp_path, capsys):
    config = config_from_dict(tiny_config(pool_dir, train={"iterations": 1, "amp": "fp16"}))
    probe = _ConvProbe(config)
    train(config, tmp_path / "run", objective=probe, progress=False)
    assert "fp16 applies on CUDA only" in capsys.readouterr().err
    assert {dtype for _, dtype, _, _ in probe.seen} == {torch.float32}


def _raises_when_compiling(module, **kwargs):
    raise RuntimeError("no compiler here")


def _raises_when_called(module, **kwargs):
    def compiled(*args, **kw):
        raise RuntimeError("backend compiler failed")

    return compiled


@pytest.mark.parametrize("broken_compile", [_raises_when_compiling, _raises_when_called], ids=["wrap", "first-call"])
def test_compile_failure_falls_back_to_eager_once(pool_dir, tmp_path, monkeypatch, capsys, broken_compile):
    raw = tiny_config(pool_dir, train={"iterations": 3})
    eager = train(config_from_dict(raw), tmp_path / "eager", progress=False)
    capsys.readouterr()
    calls = []
    monkeypatch.setattr(torch, "compile", lambda module, **kwargs: calls.append(module) or broken_compile(module))
    raw["train"]["compile"] = True
    compiled = train(config_from_dict(raw), tmp_path / "compiled", progress=False)
    err = capsys.readouterr().err
    assert len(calls) == 1 and err.count("torch.compile failed") == 1
    assert "training continues in eager mode" in err
    assert compiled.finished and compiled.losses == eager.losses  # the failed step was redone eagerly


def test_patch_schedule_changes_the_patches_from_its_iterations(pool_dir, tmp_path):
    images = [TrainingImage(p.name, p) for p in sorted(pool_dir.iterdir())]
    stream = PatchBatches(images, degradation="gaussian:25", patch_size=16, batch_size=4, iterations=9, seed=1,
                          schedule=[[3, 24, 2], [6, 32, 1]])
    shapes = [tuple(stream[i][1].shape) for i in range(9)]
    assert shapes == [(4, 3, 16, 16)] * 3 + [(2, 3, 24, 24)] * 3 + [(1, 3, 32, 32)] * 3
    plain = PatchBatches(images, degradation="gaussian:25", patch_size=16, batch_size=4, iterations=9, seed=1)
    assert torch.equal(stream[2][0], plain[2][0])  # before the first entry: the plain stream
    # Processes share each stage's batch; a stage batch that does not split is refused.
    halves = [PatchBatches(images, degradation="gaussian:25", patch_size=16, batch_size=4, iterations=9, seed=1,
                           schedule=[[3, 24, 2]], rank=rank, world_size=2)[4] for rank in (0, 1)]
    assert torch.equal(torch.cat([halves[0][1], halves[1][1]]), stream[4][1])
    with pytest.raises(ZooError, match=r"batch size 1 .* does not split evenly over 2"):
        PatchBatches(images, degradation="gaussian:25", patch_size=16, batch_size=4, iterations=9, seed=1,
                     schedule=[[6, 32, 1]], world_size=2)
    # The run logs the patches it trained on.
    import csv

    run = train(config_from_dict(tiny_config(pool_dir, data={"patch_schedule": [[2, 24, 4]]})), tmp_path / "run",
                progress=False)
    rows = list(csv.DictReader((run.out_dir / "log.csv").open()))
    for row, batch in zip(rows, [2, 2, 4, 4]):
        assert float(row["patches_per_s"]) == pytest.approx(batch * float(row["it_per_s"]), rel=1e-2)


def test_patch_schedule_is_checked(pool_dir, tmp_path):
    bad = {"[[0, 24, 4]]": r"patch_schedule\[0\] starts at iteration 0",
           "[[3, 24, 4], [2, 32, 2]]": r"patch_schedule\[1\] starts at iteration 2: .*above 3",
           "[[4, 24, 4]]": r"below train\.iterations \(4\)",
           "[[2, 24]]": r"patch_schedule\[0\] must be \[iteration, patch_size, batch_size\]",
           "[[2, 0, 4]]": r"patch_schedule\[0\] patch_size must be > 0",
           "[]": "patch_schedule is an empty list"}
    for text, message in bad.items():
        with pytest.raises(ZooError, match=message):
            config_from_dict(tiny_config(pool_dir), [f"data.patch_schedule={text}"])
    with pytest.raises(ZooError, match=r"patch size 25 .* 25-pixel inputs, not a multiple of 2"):
        train(config_from_dict(tiny_config(pool_dir), ["data.patch_schedule=[[2, 25, 2]]"]), tmp_path / "run",
              progress=False)
    with pytest.raises(ZooError, match=r"no training image is at least 80x80 pixels"):
        train(config_from_dict(tiny_config(pool_dir), ["data.patch_schedule=[[2, 80, 2]]"]), tmp_path / "run",
              progress=False)


def test_family_names_resolve_or_name_the_way_to_pick_one():
    from zoo.models.idsanet import IDSANet
    from zoo.models.mhnet import MHNetLite
    from zoo.registry import family_class
    from zoo.train.models import _family_class

    assert family_class("hinet-lite").__name__ == "HINetLite" and family_class("hinet").__name__ == "HINet"
    # A name covering several architectures names them, in the module:Class form that works.
    with pytest.raises(ZooError) as caught:
        family_class("idsanet")
    message = str(caught.value)
    assert "zoo.models.idsanet:IDSANet" in message and "zoo.models.idsanet:IDSANetLite" in message
    assert _family_class("zoo.models.idsanet:IDSANet") is IDSANet
    with pytest.raises(ZooError) as caught:
        family_class("nope")
    fix = caught.value.fix
    assert "hinet-lite" in fix and "module:Class" in fix
    # The suggested names are the unambiguous ones only.
    suggested = fix.split("use one of ")[1].split(", or")[0].split(", ")
    assert "idsanet" not in suggested and "mhnet" not in suggested
    assert all(family_class(name) for name in suggested)
    assert _family_class("zoo.models.mhnet:MHNetLite") is MHNetLite
