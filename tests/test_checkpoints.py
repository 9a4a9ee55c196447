"""Checkpoint reading, strict loading and safetensors writing.

Every official HINet configuration is checked end to end: a checkpoint with exactly the
official keys and shapes (``{'params': sd}`` as the official training code saves it, with and
without DataParallel's ``module.`` prefix) loads strictly into the registered model, tensor for
tensor.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest
import torch

from tests.test_hinet import OFFICIAL_LAYOUT_FILES, official_layout
from zoo.checkpoints import load_weights, read_metadata, read_state_dict, save_weights, unwrap_state_dict
from zoo.errors import ZooError
from zoo.models.hinet import HINet
from zoo.registry import get_card


def layout_state_dict(file_name: str, device: str = "cpu") -> dict[str, torch.Tensor]:
    """A state dict with the official keys (in file order) and shapes; tensor i holds the value i + 1
    everywhere, so a tensor loaded under the wrong key would be noticed. The tensors are stride-0
    expansions of one number: torch.save stores one element each, keeping the 1x files tiny."""
    return {key: torch.tensor(float(index + 1), device=device).expand(shape)
            for index, (key, shape) in enumerate(official_layout(file_name))}


def build(name: str, device: str = "cpu"):
    """The registered model, built on meta (shapes only) and, for a real device, given
    uninitialised storage: initialising 88 M parameters would only slow the tests down."""
    with torch.device("meta"):
        model = get_card(name).builder()
    return model if device == "meta" else model.to_empty(device=device)


def small_state_dict(seed: int = 0, **hinet_kwargs) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return dict(HINet(wf=8, **hinet_kwargs).state_dict())


# --- official layouts load strictly ----------------------------------------------------------


#: One registered model per official layout file (hinet-reds shares hinet-gopro's, see test_hinet).
ONE_MODEL_PER_LAYOUT = ["hinet-sidd-1x", "hinet-sidd-0.5x", "hinet-gopro", "hinet-rain13k"]


@pytest.mark.parametrize("name", ONE_MODEL_PER_LAYOUT)
def test_official_checkpoint_layout_loads_strictly(name, tmp_path):
    state_dict = layout_state_dict(OFFICIAL_LAYOUT_FILES[name])
    plain, prefixed = tmp_path / "plain.pth", tmp_path / "prefixed.pth"
    torch.save({"params": state_dict}, plain)
    # Negated values in the second file, so its load visibly overwrites the first.
    torch.save({"params": {f"module.{key}": -value for key, value in state_dict.items()}}, prefixed)
    model = build(name)
    for path, sign in ((plain, 1.0), (prefixed, -1.0)):
        load_weights(model, path, strict=True)
        loaded = model.state_dict()
        assert list(loaded) == list(state_dict)
        for index, (key, tensor) in enumerate(loaded.items()):
            # Broadcast copies fill every element; first and last prove tensor and key agree.
            flat = tensor.reshape(-1)
            assert flat[0].item() == flat[-1].item() == sign * (index + 1), key


def _expected_counts(checkpoint_file: str, model_file: str) -> tuple[int, int, int, list]:
    checkpoint = dict(official_layout(checkpoint_file))
    model = dict(official_layout(model_file))
    missing = [key for key in model if key not in checkpoint]
    unexpected = [key for key in checkpoint if key not in model]
    mismatched = [(key, checkpoint[key], model[key]) for key in model
                  if key in checkpoint and checkpoint[key] != model[key]]
    return len(missing), len(unexpected), len(mismatched), mismatched


def test_half_width_checkpoint_into_1x_model_names_the_right_model(tmp_path):
    path = tmp_path / "HINet-SIDD-0.5x.pth"
    torch.save({"params": layout_state_dict("HINet-SIDD-0.5x.txt")}, path)
    n_missing, n_unexpected, n_mismatched, mismatched = _expected_counts("HINet-SIDD-0.5x.txt", "HINet-SIDD-1x.txt")
    with pytest.raises(ZooError) as caught:
        load_weights(build("hinet-sidd-1x", "meta"), path)
    message = str(caught.value)
    assert f"{n_missing} missing, {n_unexpected} unexpected, {n_mismatched} shape-mismatched" in message
    key, got, want = mismatched[0]
    assert f"{key} checkpoint {list(got)} vs model {list(want)}" in message
    assert message.endswith("this checkpoint is for hinet-sidd-0.5x; use that model")
    assert "\n" not in message


@pytest.mark.parametrize("checkpoint_file, model_name, expected_fix", [
    ("HINet-GoPro_REDS.txt", "hinet-sidd-1x", "this checkpoint is for hinet-gopro or hinet-reds"),
    ("HINet-SIDD-1x.txt", "hinet-gopro", "this checkpoint is for hinet-rain13k or hinet-sidd-1x"),
    ("HINet-SIDD-1x.txt", "hinet-sidd-0.5x", "this checkpoint is for hinet-rain13k or hinet-sidd-1x"),
])
def test_checkpoint_of_another_config_names_it(checkpoint_file, model_name, expected_fix):
    checkpoint = {"params": layout_state_dict(checkpoint_file, device="meta")}
    n_missing, n_unexpected, n_mismatched, _ = _expected_counts(checkpoint_file, OFFICIAL_LAYOUT_FILES[model_name])
    with pytest.raises(ZooError) as caught:
        load_weights(build(model_name, "meta"), checkpoint)
    assert f"{n_missing} missing, {n_unexpected} unexpected, {n_mismatched} shape-mismatched" in str(caught.value)
    assert expected_fix in caught.value.fix


def test_unrelated_checkpoint_asks_for_the_right_one():
    model = HINet(wf=8)
    checkpoint = {"encoder.weight": torch.zeros(4, 3, 3, 3), "conv_01.weight": torch.zeros(8, 3, 3, 3)}
    with pytest.raises(ZooError) as caught:
        load_weights(model, checkpoint)
    n_expected = len(model.state_dict())
    assert f"{n_expected - 1} missing, 1 unexpected, 0 shape-mismatched" in str(caught.value)
    assert "pass a checkpoint of this model's configuration" in caught.value.fix


def test_non_strict_loads_only_matching_tensors():
    source = small_state_dict(seed=1, hin_position_left=0)  # has norms at levels 0-2 as well
    target = HINet(wf=8, hin_position_left=3)
    with pytest.raises(ZooError, match="0 missing, 12 unexpected, 0 shape-mismatched"):
        load_weights(target, source)
    n_target = len(target.state_dict())
    with pytest.warns(UserWarning, match=f"loaded {n_target} of {n_target} tensors"):
        load_weights(target, source, strict=False)
    assert all(torch.equal(value, source[key]) for key, value in target.state_dict().items())
    with pytest.raises(ZooError, match="no tensor of the checkpoint fits"):
        load_weights(target, {"unrelated.weight": torch.zeros(1)}, strict=False)


def test_ignore_patterns_skip_only_keys_the_model_lacks_and_say_so():
    source = small_state_dict(seed=1)
    extra = {"unused_head.weight": torch.ones(4, 3), "unused_head.bias": torch.ones(4), "aux.scale": torch.ones(1)}
    target = HINet(wf=8)
    with pytest.raises(ZooError, match="3 unexpected"):
        load_weights(target, {**source, **extra})
    with pytest.warns(UserWarning, match=r"skipped 2 keys \(16 parameters\) of state dict that HINet does not use: "
                                         r"unused_head\.weight, unused_head\.bias"):
        with pytest.raises(ZooError, match="0 missing, 1 unexpected.*aux.scale"):
            load_weights(target, {**source, **extra}, ignore=("unused_head.*",))
    with pytest.warns(UserWarning, match="skipped 3 keys"):
        load_weights(target, {"epoch": 1, "state_dict": {**source, **extra}, "optimizer": {}},
                     ignore=("unused_head.*", "aux.*"))
    assert all(torch.equal(value, source[key]) for key, value in target.state_dict().items())
    # A pattern matching a key the model has never drops it: a wrong shape is still an error.
    with pytest.raises(ZooError, match="shape mismatch: last.weight checkpoint \\[1\\]"):
        load_weights(HINet(wf=8), {**source, "last.weight": torch.zeros(1)}, ignore=("last.*",))
    # Nothing to skip: no warning.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_weights(HINet(wf=8), source, ignore=("unused_head.*",))


# --- containers --------------------------------------------------------------------------------


def test_containers_are_unwrapped(tmp_path):
    params, params_ema = small_state_dict(seed=1), small_state_dict(seed=2)
    assert not torch.equal(params["last.weight"], params_ema["last.weight"])
    both = {"params": params, "params_ema": params_ema}
    assert unwrap_state_dict(both)["last.weight"] is params["last.weight"]
    assert unwrap_state_dict(both, prefer_ema=True)["last.weight"] is params_ema["last.weight"]
    assert unwrap_state_dict({"params_ema": params_ema})["last.weight"] is params_ema["last.weight"]

    # MHNet-style training checkpoint with optimizer state, DataParallel prefix, saved to disk.
    optimizer_state = {"state": {0: {"step": torch.tensor(7.0), "exp_avg": torch.zeros(3)}},
                       "param_groups": [{"lr": 2e-4, "betas": (0.9, 0.999), "params": [0]}]}
    mhnet_style = {"epoch": 7, "state_dict": {f"module.{k}": v for k, v in params.items()},
                   "optimizer": optimizer_state}
    torch.save(mhnet_style, tmp_path / "model_best.pth")
    read = read_state_dict(tmp_path / "model_best.pth")
    assert list(read) == list(params) and all(torch.equal(read[k], params[k]) for k in params)

    torch.save({"model": params}, tmp_path / "model.ckpt")
    model = HINet(wf=8)
    load_weights(model, tmp_path / "model.ckpt")
    assert torch.equal(model.state_dict()["conv_01.weight"], params["conv_01.weight"])

    with pytest.raises(ZooError, match="has no state dict .top-level keys: epoch, optimizer"):
        unwrap_state_dict({"epoch": 1, "optimizer": {}})


# --- damaged and unsafe files ------------------------------------------------------------------


def test_missing_truncated_and_garbage_files_raise_zoo_errors(tmp_path):
    with pytest.raises(ZooError, match="not found"):
        read_state_dict(tmp_path / "nope.pth")
    whole = tmp_path / "whole.pth"
    torch.save({"params": small_state_dict()}, whole)
    data = whole.read_bytes()
    (tmp_path / "truncated.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(ZooError, match="corrupt or truncated"):
        read_state_dict(tmp_path / "truncated.pth")
    (tmp_path / "garbage.pth").write_bytes(b"definitely not a checkpoint")
    with pytest.raises(ZooError, match="is corrupt"):
        read_state_dict(tmp_path / "garbage.pth")

    safetensors_file = save_weights(small_state_dict(), tmp_path / "whole.safetensors")
    data = safetensors_file.read_bytes()
    (tmp_path / "truncated.safetensors").write_bytes(data[: len(data) - 100])
    with pytest.raises(ZooError, match="not a readable safetensors file"):
        read_state_dict(tmp_path / "truncated.safetensors")


class _MakesDirectoryWhenUnpickled:
    """Stands in for a malicious payload: unpickling it calls os.mkdir(path)."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (str(self.path),))


def test_pickle_with_arbitrary_code_is_refused(tmp_path):
    marker = tmp_path / "code-ran"
    checkpoint = tmp_path / "evil.pth"
    torch.save({"params": small_state_dict(), "payload": _MakesDirectoryWhenUnpickled(marker)}, checkpoint)
    with pytest.raises(ZooError) as caught:
        read_state_dict(checkpoint)
    assert "refuses to unpickle arbitrary code" in str(caught.value) and "mkdir" in str(caught.value)
    assert "save_weights" in caught.value.fix and "\n" not in str(caught.value)
    assert not marker.exists()
    with pytest.raises(ZooError, match="refuses to unpickle"):
        load_weights(HINet(wf=8), checkpoint)
    assert not marker.exists()
    # The file really is dangerous: an unsafe load runs the payload.
    torch.load(checkpoint, weights_only=False)
    assert marker.is_dir()


# --- safetensors writing -----------------------------------------------------------------------


def test_safetensors_round_trip_restores_the_model(tmp_path):
    torch.manual_seed(3)
    model = HINet(wf=8).eval()
    path = save_weights(model, tmp_path / "hinet-w8.safetensors", metadata={"model": "hinet", "wf": "8"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hinet-w8.safetensors"]  # no temp files left
    assert read_metadata(path) == {"model": "hinet", "wf": "8"}
    read = read_state_dict(path)
    assert set(read) == set(model.state_dict())
    assert all(torch.equal(read[k], v) for k, v in model.state_dict().items())

    restored = HINet(wf=8).eval()
    load_weights(restored, path)
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(restored(x), model(x))


def test_save_handles_views_and_shared_storage_and_is_atomic(tmp_path):
    base = torch.arange(12.0).reshape(3, 4)
    state = {"transposed": base.t(), "tied_a": base, "tied_b": base, "row": base[1]}
    path = save_weights({"params": state}, tmp_path / "odd.safetensors")
    read = read_state_dict(path)
    assert all(torch.equal(read[k], v) for k, v in state.items())
    assert read["transposed"].is_contiguous()

    before = path.read_bytes()
    with pytest.raises(ZooError, match="meta device"):
        save_weights({"a": torch.zeros(2), "b": torch.empty(2, device="meta")}, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["odd.safetensors"]

    with pytest.raises(ZooError, match=r"\.safetensors"):
        save_weights(state, tmp_path / "weights.pth")
