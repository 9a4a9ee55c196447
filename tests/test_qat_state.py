"""The QAT int8 state file (quantize/qat_state.py): written by a QAT run, rebuilt, packed, shipped.

A 6-iteration QAT run of a tiny HINet-Lite (tests/test_qat_engine.py's config, with LSQ scales,
range re-estimation and EMA) writes ``quantized_state.safetensors``; rebuilt on a freshly
initialised model of the same architecture it gives outputs equal to the run's ``quantized.pt2``;
packed (float16 weights) it stays close; a file of another model, recipe or architecture, a
corrupt file or one missing a quantizer is refused with a ZooError. Then a 3-iteration QAT of
hinet-lite-s packed with ``zoo quantize --pack`` and listed on a temporary card: ``zoo info`` /
``zoo list`` show it, an int8 export with other float weights or ``--mixed`` is refused, and
(slow: two ExecuTorch lowerings) ``zoo export --precision int8`` uses it without calibration (the
manifest's provenance is the run's QAT record) while ``--calibration`` still calibrates (PTQ).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import re

import pytest
import torch

from tests.test_qat_engine import TINY_LITE, qat_config, run_qat
from tests.test_train import make_pool
from zoo.errors import ZooError
from zoo.train.config import config_from_dict

needs_executorch = pytest.mark.skipif(importlib.util.find_spec("executorch") is None,
                                      reason="executorch (mobile extra) is not installed")
pytestmark = [pytest.mark.usefixtures("one_thread"), needs_executorch]


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1 / torch.mean((a - b) ** 2).clamp_min(1e-12)))


@contextlib.contextmanager
def _one_thread():
    """One torch thread (the ``one_thread`` fixture, for module-scoped fixtures)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _fresh_model(raw: dict, seed: int = 99):
    """A newly initialised model of the run's architecture (other weights than the run's)."""
    from zoo.train.models import build_model

    torch.manual_seed(seed)
    return build_model(config_from_dict(raw).model)[0]


@pytest.fixture(scope="module")
def qat_run(tmp_path_factory):
    """A finished tiny QAT run (LSQ scales, re-estimated ranges, EMA), shared by the module's
    first tests (they only read it): (raw config, run folder)."""
    folder = tmp_path_factory.mktemp("qat_state")
    raw = qat_config(make_pool(folder), {"learnable_scales": True, "reestimate_ranges": True})
    with _one_thread():
        result = run_qat(raw, folder / "run")
    assert result.phase_outputs["quantized_state"] == folder / "run" / "quantized_state.safetensors"
    return raw, folder / "run"


def test_qat_run_state_rebuilds_the_run_int8_model_exactly(qat_run, tmp_path):
    from quantize.ptq import META_KEY, load_quantized
    from quantize.qat_state import read_qat_state, rebuild_qat_model

    raw, run = qat_run
    state = read_qat_state(run / "quantized_state.safetensors")
    info = state.info
    sidecar = json.loads((run / "quantized.json").read_text())
    assert (info.recipe, info.mixed, info.learnable_scales, info.tile, info.size_multiple) == \
        ("xnnpack", "first-last", True, 16, 4)
    assert info.model == sidecar["model"] and info.provenance == sidecar["provenance"]
    assert info.provenance["method"] == "qat" and info.sidecar["qat"]["ema"] is True
    assert info.sidecar["qat"]["reestimated_ranges"] > 0
    # The weights are the EMA's (final_ema.safetensors), the quantizer state float32 as converted.
    from zoo.checkpoints import read_state_dict

    ema = read_state_dict(run / "final_ema.safetensors")
    assert state.weights.keys() == ema.keys() and all(torch.equal(state.weights[k], ema[k]) for k in ema)
    assert any(key.endswith(".scale") for key in state.quantizers)
    assert all(value.dtype == torch.float32 for value in state.quantizers.values() if value.is_floating_point())

    graph, _ = load_quantized(run / "quantized.pt2")
    model = _fresh_model(raw)
    before = {key: value.clone() for key, value in model.state_dict().items()}
    rebuilt, rebuilt_sidecar = rebuild_qat_model(model, run / "quantized_state.safetensors")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the caller's model untouched
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(rebuilt(x), graph(x))
    assert rebuilt.meta[META_KEY] == {key: graph.meta[META_KEY][key] for key in rebuilt.meta[META_KEY]}
    assert rebuilt_sidecar["layer_precision"] == sidecar["layer_precision"]
    assert rebuilt_sidecar["qat"] == sidecar["qat"] and rebuilt_sidecar["model"] == sidecar["model"]
    # The state is not tied to the run's tile: it converts at another multiple of the size multiple.
    wide, wide_sidecar = rebuild_qat_model(model, state, tile=32)
    assert wide_sidecar["input_shape"] == [3, 32, 32]
    with torch.no_grad():
        assert wide(torch.rand(1, 3, 32, 32)).shape == (1, 3, 32, 32)


def test_packed_state_is_float16_and_stays_close(qat_run, tmp_path):
    from quantize.ptq import load_quantized
    from quantize.qat_state import pack_qat_state, read_qat_state, rebuild_qat_model

    raw, run = qat_run
    packed = pack_qat_state(run, tmp_path / "ship" / "tiny_xnnpack_qat.safetensors", recipe="xnnpack")
    path = packed["path"]
    assert packed["bytes"] < (run / "quantized_state.safetensors").stat().st_size
    state = read_qat_state(path)
    assert {value.dtype for value in state.weights.values()} == {torch.float16}
    assert all(value.dtype == torch.float32 for value in state.quantizers.values() if value.is_floating_point())
    assert state.info.sidecar["packed"] == {"from": str(run / "quantized_state.safetensors"),
                                            "weights_dtype": "float16"}
    graph, _ = load_quantized(run / "quantized.pt2")
    rebuilt, _ = rebuild_qat_model(_fresh_model(raw), path)
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert _psnr(rebuilt(x), graph(x)) > 40.0
    with pytest.raises(ZooError, match=r"already exists; pass --overwrite"):
        pack_qat_state(run, path)
    with pytest.raises(ZooError, match=r"holds QAT state for the xnnpack recipe, not tflite; pack it with --backend xnnpack"):
        pack_qat_state(run, tmp_path / "other.safetensors", recipe="tflite")
    with pytest.raises(ZooError, match=r"holds no quantized_state\.safetensors"):
        pack_qat_state(tmp_path / "ship", tmp_path / "x.safetensors")


def test_packing_over_its_own_source_is_refused(tmp_path):
    """`zoo quantize M --pack RUN -o RUN/quantized_state.safetensors --overwrite` replaced the run's
    float32 state by the float16 packing of it (the run's own file, lost). Refused before reading."""
    from quantize.qat_state import QUANTIZED_STATE, pack_qat_state

    run = tmp_path / "run"
    run.mkdir()
    state = run / QUANTIZED_STATE
    state.write_bytes(b"the run's float32 state")
    for source in (run, state, tmp_path / "." / "run" / QUANTIZED_STATE):
        with pytest.raises(ZooError, match=r"is the QAT state being packed: packing would replace its float32 weights"):
            pack_qat_state(source, state, overwrite=True)
    assert state.read_bytes() == b"the run's float32 state"


def test_mismatching_or_damaged_state_is_refused(qat_run, tmp_path):
    from quantize.qat_state import read_qat_state, rebuild_qat_model
    from zoo.checkpoints import save_weights

    raw, run = qat_run
    path = run / "quantized_state.safetensors"
    model = _fresh_model(raw)
    name = read_qat_state(path).info.model
    with pytest.raises(ZooError, match=rf"holds the QAT state of {re.escape(name)}, not hinet-lite-s; pass a QAT "
                                       r"state file of hinet-lite-s"):
        rebuild_qat_model(model, path, model_name="hinet-lite-s")
    with pytest.raises(ZooError, match=r"holds QAT state for the xnnpack recipe, this target needs tflite"):
        rebuild_qat_model(model, path, recipe="tflite")
    wider = dict(raw, model={**TINY_LITE, "kwargs": {**TINY_LITE["kwargs"], "widths": [8, 16]}})
    with pytest.raises(ZooError, match=r"the model weights do not fit HINetLite: .*shape-mismatched.*pass a model of "
                                       r"the architecture the QAT run trained"):
        rebuild_qat_model(_fresh_model(wider), path)
    with pytest.raises(ZooError, match=r"tile 18 is not a multiple of the size multiple 4"):
        rebuild_qat_model(model, path, tile=18)
    # A quantizer's state missing, and state for a quantizer the model does not have.
    state = read_qat_state(path)
    tensors = {**{f"model.{k}": v for k, v in state.weights.items()},
               **{f"quantizer.{k}": v for k, v in state.quantizers.items()}}
    metadata = state.info.to_metadata()
    first = sorted(state.quantizers)[0].split(".")[0]
    save_weights({k: v for k, v in tensors.items() if not k.startswith(f"quantizer.{first}.")},
                 tmp_path / "short.safetensors", metadata=metadata)
    with pytest.raises(ZooError, match=rf"short\.safetensors holds no state for the fake quantizer {first}"):
        rebuild_qat_model(model, tmp_path / "short.safetensors")
    save_weights({**tensors, "quantizer.activation_post_process_999.scale": torch.ones(1)},
                 tmp_path / "extra.safetensors", metadata=metadata)
    with pytest.raises(ZooError, match=r"holds state for fake quantizers this model does not have "
                                       r"\(activation_post_process_999\)"):
        rebuild_qat_model(model, tmp_path / "extra.safetensors")
    # Damaged files and files of another kind.
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ZooError, match=r"is not a readable safetensors file"):
        rebuild_qat_model(model, truncated)
    with pytest.raises(ZooError, match=r"final_ema\.safetensors is not a zoo QAT state file"):
        rebuild_qat_model(model, run / "final_ema.safetensors")
    newer = dict(metadata, format_version="2")
    save_weights(tensors, tmp_path / "newer.safetensors", metadata=newer)
    with pytest.raises(ZooError, match=r"written by a newer zoo.*upgrade"):
        read_qat_state(tmp_path / "newer.safetensors")
    with pytest.raises(ZooError, match=r"QAT state file .*missing\.safetensors does not exist"):
        read_qat_state(tmp_path / "missing.safetensors")


# ----------------------------------------------------------------------------- shipping with a card


@pytest.fixture(scope="module")
def shipped_card(tmp_path_factory):
    """hinet-lite-s with QAT int8 state for xnnpack packed by ``zoo quantize --pack`` from a
    3-iteration QAT run (tile 32) and listed on its card (for this module only): the packed file."""
    from zoo import registry
    from zoo_cli.main import main

    folder = tmp_path_factory.mktemp("shipped")
    pool = make_pool(folder)
    raw = qat_config(pool, {"start": 1, "tile": 32, "learnable_scales": True},
                     train={"iterations": 3, "ema_decay": None}, data={"patch_size": 32, "val_crop": 32})
    raw["model"] = {"name": "hinet-lite-s"}
    with _one_thread():
        run_qat(raw, folder / "run")
        packed = folder / "weights" / "hinet_lite_s_xnnpack_qat.safetensors"
        assert main(["quantize", "hinet-lite-s", "--backend", "xnnpack", "--pack", str(folder / "run"),
                     "-o", str(packed)]) == 0
        assert main(["quantize", "hinet-lite-s", "--backend", "tflite", "--pack", str(folder / "run"),
                     "-o", str(folder / "x.safetensors")]) == 2  # the run's recipe is xnnpack
    assert not (folder / "x.safetensors").exists()
    card = registry.get_card("hinet-lite-s")
    with pytest.MonkeyPatch.context() as patch:
        # An absolute name: WEIGHTS_DIR / name is the file itself.
        patch.setitem(registry._REGISTRY, card.name, dataclasses.replace(card, qat_weights={"xnnpack": str(packed)}))
        yield packed


def test_a_card_shipping_qat_state_says_so_and_export_picks_it(shipped_card, tmp_path, capsys, monkeypatch):
    from export_mobile.api import export_model
    from zoo import commands
    from zoo.registry import get_card
    from zoo_cli.main import main

    assert get_card("hinet-lite-s").shipped_qat_recipes == ("xnnpack",)
    capsys.readouterr()
    assert main(["info", "hinet-lite-s"]) == 0
    assert f"qat_int8_weights       xnnpack: {shipped_card}" in capsys.readouterr().out.splitlines()
    assert main(["info", "hinet-lite-s", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["qat_int8_weights"] == {"xnnpack": str(shipped_card)}
    monkeypatch.setattr(commands, "_model_size", lambda card: ("-", "-"))  # MACs of every model: slow
    assert main(["list"]) == 0
    (line,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith("hinet-lite-s ")]
    assert line.endswith("shipped + QAT int8 (xnnpack)")
    # Packing again over the file the card lists says it is in use, not how to ship it.
    assert main(["quantize", "hinet-lite-s", "--backend", "xnnpack", "--pack", str(shipped_card.parent.parent / "run"),
                 "-o", str(shipped_card), "--overwrite"]) == 0
    said = capsys.readouterr().out
    assert "this is the state hinet-lite-s's card ships" in said and "to ship it" not in said
    assert "zoo benchmark denoise --models hinet-lite-s --int8" in said
    # The state goes with the shipped float weights and its own mixed precision: refused before any work.
    with pytest.raises(ZooError, match=r"needs calibration data or a quantized model.*goes with the shipped weights"):
        export_model("hinet-lite-s", "executorch-xnnpack", "int8", 32, tmp_path / "w",
                     weights=get_card("hinet-lite-s").weights_path)
    with pytest.raises(ZooError, match=r"--mixed applies to calibration.*drop --mixed"):
        export_model("hinet-lite-s", "executorch-xnnpack", "int8", 32, tmp_path / "m", mixed="first-last")
    assert not any(tmp_path.iterdir())
    # A card listing a file that is not installed.
    missing = dataclasses.replace(get_card("hinet-lite-s"), qat_weights={"xnnpack": "nope.safetensors"})
    with pytest.raises(ZooError, match=r"lists the QAT int8 state nope\.safetensors for xnnpack, but .* is missing"):
        missing.qat_weights_path("xnnpack")
    assert missing.shipped_qat_recipes == () and missing.qat_weights_path("tflite") is None


@pytest.mark.slow
def test_export_uses_the_shipped_qat_state_without_calibration(shipped_card, tmp_path):
    """Two ExecuTorch int8 exports at tile 32 (about a minute of CPU)."""
    from export_mobile.api import export_model
    from export_mobile.manifest import read_manifest
    from quantize.qat_state import read_qat_state

    steps = []
    with _one_thread():
        outcome = export_model("hinet-lite-s", "executorch-xnnpack", "int8", 32, tmp_path / "app",
                               progress=lambda step, detail: steps.append((step, detail)))
    assert ("quantize", f"int8 (xnnpack) from the shipped QAT state {shipped_card.name}, no calibration") in steps
    manifest = read_manifest(tmp_path / "app")
    quantization = manifest["quantization"]
    assert quantization["method"] == "qat" and quantization["source"] == shipped_card.name
    assert quantization["provenance"] == read_qat_state(shipped_card).info.provenance
    assert quantization["provenance"]["method"] == "qat" and quantization["provenance"]["steps"] == 2
    assert manifest["model"]["weights"]["source"] == "shipped"  # the float reference
    assert any("shipped QAT state" in note for note in manifest["notes"])
    assert manifest["verification"]["ran"] and manifest["verification"]["psnr_db"] > 40.0
    assert outcome.manifest["quantization"] == quantization

    # --calibration given explicitly still calibrates here (PTQ).
    with _one_thread():
        export_model("hinet-lite-s", "executorch-xnnpack", "int8", 32, tmp_path / "ptq", calibration="bundled",
                     calibration_images=2, verify=False)
    assert read_manifest(tmp_path / "ptq")["quantization"]["provenance"]["method"] == "ptq"
