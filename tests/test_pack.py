"""zoo pack: a run's weights become a shippable float16 file whose header names the whole training chain.

Two real two-iteration runs of idsanet-lite-x2 (the shipped weights, then a second stage from the
first run's EMA file) on synthetic images; the packed file must load, equal the run's EMA weights in
float16, and say in its ``training`` text every stage, oldest first.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.test_train import make_pool, tiny_config
from zoo.checkpoints import read_metadata, read_state_dict, save_weights
from zoo.errors import ZooError
from zoo.pack import pack_run, training_chain
from zoo.registry import get_card
from zoo.train.config import config_from_dict
from zoo.train.engine import train

pytestmark = pytest.mark.usefixtures("one_thread")
MODEL = "idsanet-lite-x2"


def _run(pool: Path, out: Path, weights: str, lr: float) -> Path:
    raw = tiny_config(pool, model={"name": MODEL, "family": None, "kwargs": {}, "weights": weights}, data={"degradation": "bicubic:x2"},
                      loss={"type": "l1", "stage_weights": None}, optimizer={"type": "adamw", "lr": lr},
                      train={"iterations": 2, "ema_decay": 0.5, "checkpoint_interval": 0})
    raw["name"] = out.name
    train(config_from_dict(raw), out, progress=False)
    return out


@pytest.fixture(scope="module")
def two_stages(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("pack")
    pool = make_pool(root)
    first = _run(pool, root / "stage_a", "shipped", 1e-4)
    second = _run(pool, root / "stage_b", str(first / "final_ema.safetensors"), 5e-5)
    return first, second


def test_a_run_records_the_weights_it_started_from(two_stages):
    first, second = two_stages
    start = json.loads((first / "start.json").read_text())
    shipped = get_card(MODEL).weights_path
    assert Path(start["weights"]).resolve() == shipped.resolve()
    assert start["metadata"]["training"] == read_metadata(shipped)["training"]
    assert len(start["sha256"]) == 64
    assert json.loads((second / "start.json").read_text())["weights"] == str(first / "final_ema.safetensors")


def test_pack_writes_the_ema_weights_in_float16_with_the_whole_chain(two_stages, tmp_path):
    first, second = two_stages
    out = tmp_path / "weights" / "lite.safetensors"
    packed = pack_run(second, out, weights="final_ema", hardware="1 thread of a test CPU")
    state, ema = read_state_dict(out), read_state_dict(second / "final_ema.safetensors")
    assert state.keys() == ema.keys() and all(value.dtype == torch.float16 for value in state.values())
    for key in ema:
        torch.testing.assert_close(state[key].float(), ema[key].half().float(), rtol=0, atol=0)
    meta = read_metadata(out)
    assert meta == packed["metadata"]
    assert meta["model"] == MODEL and meta["task"] == "super-resolution" and meta["degradation"] == "bicubic:x2"
    assert meta["storage"].startswith("float16") and meta["source"].startswith("stage_b/final_ema.safetensors")
    # Oldest first: the shipped file's own history, then stage a, then stage b, then the hardware.
    shipped_history = read_metadata(get_card(MODEL).weights_path)["training"]
    text = meta["training"]
    assert text.startswith(shipped_history + " then zoo train config stage_a (2 iterations of batch 2 of 16 px HR")
    assert text.index("stage_a") < text.index("then zoo train config stage_b") and text.endswith("; 1 thread of a test CPU")
    assert "adamw 1e-4" in text and "adamw 5e-5" in text
    assert "autocast" not in text  # the tiny runs train in float32 (train.amp: none)
    assert training_chain(second) in text
    # The packed file is a model's weights the zoo loads strictly.
    from zoo.registry import create_model

    model, _ = create_model(MODEL, out)
    assert next(model.parameters()).dtype == torch.float32


def test_pack_refuses_what_it_cannot_ship(two_stages, tmp_path):
    first, second = two_stages
    out = tmp_path / "x.safetensors"
    pack_run(first, out, weights="final")
    with pytest.raises(ZooError, match="already exists; pass --overwrite"):
        pack_run(first, out, weights="final")
    before = out.read_bytes()
    with pytest.raises(ZooError, match="trained idsanet-lite-x2, not idsanet-x2"):
        pack_run(first, out, model_name="idsanet-x2", overwrite=True)
    assert out.read_bytes() == before  # a refused pack leaves the file alone
    with pytest.raises(ZooError, match="is the file being packed"):
        pack_run(first / "final.safetensors", first / "final.safetensors", overwrite=True)
    with pytest.raises(ZooError, match="not a training run folder"):
        pack_run(tmp_path, tmp_path / "z.safetensors")
    with pytest.raises(ZooError, match=r"\.safetensors file, got z\.pth"):
        pack_run(first, tmp_path / "z.pth", weights="final")
    # Weights of another model in the run's file: the strict load names the mismatch.
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "config.json").write_text((first / "config.json").read_text())
    with pytest.raises(ZooError, match="holds no best.safetensors; finish the run first"):
        pack_run(foreign, tmp_path / "y.safetensors")
    save_weights(read_state_dict(get_card("idsanet-lite-x4").weights_path), foreign / "final.safetensors")
    with pytest.raises(ZooError):
        pack_run(foreign, tmp_path / "f.safetensors", weights="final")
    # A weight float16 cannot hold: float32 storage is the way.
    state = read_state_dict(first / "final.safetensors")
    key = next(key for key, value in state.items() if value.is_floating_point() and value.numel())
    state[key] = state[key] * 0 + 1e6
    save_weights(state, foreign / "final.safetensors")
    with pytest.raises(ZooError, match="exceeds the float16 range"):
        pack_run(foreign, tmp_path / "f.safetensors", weights="final")
    kept = pack_run(foreign, tmp_path / "f.safetensors", weights="final", dtype="float32")
    assert read_metadata(kept["path"])["storage"] == "float32"
    # A QAT run ships its int8 state through zoo quantize --pack.
    config = json.loads((first / "config.json").read_text())
    (foreign / "config.json").write_text(json.dumps({**config, "quantization": {"backend": "xnnpack"}}))
    with pytest.raises(ZooError, match="zoo quantize MODEL --backend B --pack"):
        pack_run(foreign, tmp_path / "q.safetensors", weights="final")


def test_zoo_pack_command(two_stages, tmp_path, capsys):
    from zoo_cli.main import main

    first, second = two_stages
    out = tmp_path / "cli.safetensors"
    assert main(["pack", str(second), "-o", str(out), "--weights", "final_ema", "--model", MODEL]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed and "training: " in printed and "to ship it: put it in zoo/weights/" in printed
    assert read_metadata(out)["training"] == training_chain(second)
    assert main(["pack", str(second), "-o", str(out), "--weights", "final_ema"]) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err


def test_training_time_adds_the_segments_of_a_resumed_run(tmp_path):
    from zoo.pack import _minutes_and_rate

    rows = [(50, 0.5, 100.0), (100, 0.5, 200.0), (150, 0.4, 300.0),  # first session, then a resume:
            (200, 1.0, 50.0), (250, 1.0, 150.0), (250, "", "")]  # elapsed_s restarts; a validation row
    lines = ["iteration,it_per_s,elapsed_s"] + [",".join(map(str, row)) for row in rows]
    (tmp_path / "log.csv").write_text("\n".join(lines) + "\n")
    minutes, rate = _minutes_and_rate(tmp_path)
    assert minutes == pytest.approx((300 + 150) / 60) and rate == pytest.approx(0.68)
    assert _minutes_and_rate(tmp_path / "nowhere") == (None, None)
