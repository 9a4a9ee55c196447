"""The `zoo` command end to end: listing, restoring, evaluating, and every bad input the
foundation issue names (one-line error, exit status 2, no partial output)."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from zoo.checkpoints import save_weights
from zoo_cli.main import main
from zoo.data.io import read_image
from zoo.registry import get_card

SMALL_MODEL = "hinet-lite-s"


@pytest.fixture(scope="module")
def small_weights(tmp_path_factory):
    """Weights for the small lite model (seeded random init: a pipeline check, not a restoration)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "lite_s.safetensors"
    save_weights(get_card(SMALL_MODEL).builder(), path)
    return path


@pytest.fixture()
def photo(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "photo.png"
    Image.fromarray(rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)).save(path)
    return path


def run_cli(*args):
    return main([str(a) for a in args])


def test_list_shows_every_registered_model(capsys):
    assert run_cli("list") == 0
    out = capsys.readouterr().out
    assert "hinet-sidd-1x" in out and "157.60" in out and "88.67" in out
    assert "hinet-lite" in out


def test_info_json_matches_the_card(capsys):
    assert run_cli("info", "hinet-sidd-0.5x", "--json") == 0
    info = json.loads(capsys.readouterr().out)
    assert info["task"] == "denoise" and info["size_multiple"] == 16
    assert info["gmacs_at_256x256"] == "39.54"
    assert info["weights_training"] is None  # no weights shipped (official checkpoint only)


def test_info_shows_how_the_shipped_weights_were_trained(capsys):
    from zoo.checkpoints import read_metadata
    from zoo.registry import get_card

    assert run_cli("info", "idsanet-x4", "--json") == 0
    info = json.loads(capsys.readouterr().out)
    assert info["weights_training"] == read_metadata(get_card("idsanet-x4").weights_path)["training"]
    assert "zoo train configs/idsanet_x4_cpu.yaml" in info["weights_training"]


@pytest.mark.parametrize("module", ["zoo_cli", "zoo"])
def test_python_dash_m_entry_point(module):
    """``python -m zoo_cli`` (torchrun's DDP launch) and its older alias ``python -m zoo``."""
    done = subprocess.run([sys.executable, "-m", module, "info", "nope-model"], capture_output=True, text=True)
    assert done.returncode == 2
    assert "unknown model 'nope-model'" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("argv", [["--help"], ["list"], ["quantize", "--help"], ["export", "--help"]])
def test_help_and_list_import_no_mobile_stack(argv):
    """The command lines that only parse or list must not pay for (or need) the mobile toolchains."""
    heavy = ["executorch", "coremltools", "litert_torch", "ai_edge_litert", "torchao", "onnx", "onnxruntime"]
    script = (f"import sys\nfrom zoo_cli.main import main\n"
              f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
              f"print(sorted({{m.split('.')[0] for m in sys.modules}} & {set(heavy)!r}))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_every_package_declares_its_commands(capsys):
    """zoo --help lists each package's commands in flow order, each declared once."""
    from zoo_cli.main import commands

    names = [command.name for command in commands()]
    assert names == ["list", "info", "restore", "eval", "demo", "train", "distill", "pack", "bench-inr", "quantize",
                     "export", "run", "bench", "check", "baseline", "report", "device", "profile", "benchmark"]
    with pytest.raises(SystemExit) as exit_:
        run_cli("--help")
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "quantize" in out and "slowest operators" in out


def test_passthrough_keeps_its_own_help(capsys):
    """A passthrough command parses its own argv: `zoo profile --help` is measure.profile's parser."""
    with pytest.raises(SystemExit) as exit_:
        run_cli("profile", "--help")
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: zoo profile") and "--runs" in out


def test_info_without_results_says_so(tmp_path, capsys):
    """measure adds the measured rows to `zoo info` (zoo/ does not know measure)."""
    assert run_cli("info", "hinet-sidd-0.5x", "--results", tmp_path) == 0  # a card without measured rows
    assert capsys.readouterr().out.splitlines()[-1] == "measured: no artifact results yet"
    assert run_cli("info", "hinet-sidd-0.5x", "--results", tmp_path, "--json") == 0
    info = json.loads(capsys.readouterr().out)
    assert info["measured"] == [] and list(info)[-1] == "measured"


def test_restore_writes_output_of_the_input_size(tmp_path, photo, small_weights, capsys):
    out = tmp_path / "out" / "restored.png"
    assert run_cli("restore", SMALL_MODEL, photo, "-o", out, "--weights", small_weights, "--quiet") == 0
    restored = read_image(out)
    assert restored.image.shape == (3, 37, 53) and restored.bit_depth == 8
    assert "photo.png ->" in capsys.readouterr().out


def test_restore_keeps_16_bit_and_alpha(tmp_path, small_weights):
    from zoo.data.io import write_image

    source = tmp_path / "rgba16.png"
    image = torch.rand(3, 40, 30)
    alpha = torch.linspace(0, 1, 40 * 30).reshape(1, 40, 30)
    write_image(source, image, bit_depth=16, alpha=alpha)
    out_dir = tmp_path / "out"
    assert run_cli("restore", SMALL_MODEL, source, "-o", f"{out_dir}/", "--weights", small_weights, "--quiet") == 0
    restored = read_image(out_dir / "rgba16.png")
    assert restored.bit_depth == 16
    assert torch.allclose(restored.alpha, alpha, atol=1 / 65535)


def test_restore_refuses_existing_output_and_keeps_it(tmp_path, photo, small_weights, capsys):
    out = tmp_path / "restored.png"
    out.write_bytes(b"precious")
    assert run_cli("restore", SMALL_MODEL, photo, "-o", out, "--weights", small_weights, "--quiet") == 2
    assert "--overwrite" in capsys.readouterr().err
    assert out.read_bytes() == b"precious"
    assert run_cli("restore", SMALL_MODEL, photo, "-o", out, "--weights", small_weights, "--quiet",
                   "--overwrite") == 0
    assert read_image(out).image.shape == (3, 37, 53)


def test_restore_without_weights_is_refused(tmp_path, photo, capsys):
    assert run_cli("restore", "hinet-sidd-1x", photo, "-o", tmp_path / "o.png") == 2
    err = capsys.readouterr().err
    assert "no trained weights" in err and "--weights" in err
    assert not (tmp_path / "o.png").exists()


@pytest.mark.parametrize("make_input, message", [
    (lambda p: p / "missing.png", "does not exist"),
    (lambda p: (p / "notes.png").write_text("not an image") and p / "notes.png", "not"),
])
def test_bad_inputs_fail_with_one_line_and_no_output(tmp_path, small_weights, capsys, make_input, message):
    source = make_input(tmp_path)
    out = tmp_path / "out"
    assert run_cli("restore", SMALL_MODEL, source, "-o", f"{out}/", "--weights", small_weights) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("zoo: error:") and message in err and len(err.splitlines()) == 1
    assert not out.exists() or not any(out.iterdir())


def test_truncated_image_fails_before_anything_is_written(tmp_path, photo, small_weights, capsys):
    data = photo.read_bytes()
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    assert run_cli("restore", SMALL_MODEL, photo, truncated, "-o", f"{out}/", "--weights", small_weights) == 2
    assert "truncated.png" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())  # the good photo was not written either


def test_checkpoint_of_another_config_names_the_keys(tmp_path, photo, capsys):
    wrong = tmp_path / "wrong.safetensors"
    save_weights(get_card("hinet-lite").builder(), wrong)
    assert run_cli("restore", SMALL_MODEL, photo, "-o", tmp_path / "o.png", "--weights", wrong) == 2
    err = capsys.readouterr().err
    assert "shape" in err and "hinet-lite" in err


def test_unknown_model_suggests_close_names(capsys):
    assert run_cli("info", "hinet-sid-1x") == 2
    assert "hinet-sidd-1x" in capsys.readouterr().err


def test_bad_degradation_spec(tmp_path, small_weights, capsys):
    assert run_cli("eval", SMALL_MODEL, "--dataset", "bundled", "--degradation", "gaussian:loud",
                   "--weights", small_weights, "--json", tmp_path / "r.json") == 2
    assert "gaussian" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


def test_eval_on_bsd68_reports_noisy_input_psnr(tmp_path, data_root, small_weights, capsys):
    result_path = tmp_path / "eval.json"
    assert run_cli("eval", SMALL_MODEL, "--dataset", "bsd68", "--degradation", "gaussian:25", "--limit", "2",
                   "--weights", small_weights, "--json", result_path, "--quiet",
                   "--data-root", data_root) == 0
    result = json.loads(result_path.read_text())
    assert [row["image"] for row in result["images"]] == ["101085", "101087"]
    assert abs(result["mean"]["input_psnr"] - 20.17) < 0.05  # unclipped sigma-25 noise
    assert 0 < result["mean"]["psnr"] < 60 and 0 < result["mean"]["ssim"] <= 1
    assert result["metrics"] == {"y_channel": False, "crop_border": 0, "output_quantized_to_8_bit": True}
    assert "mean" in capsys.readouterr().out


def test_eval_untrained_is_labelled(tmp_path, data_root, capsys):
    result_path = tmp_path / "eval.json"
    assert run_cli("eval", SMALL_MODEL, "--dataset", "bsd68", "--limit", "1", "--untrained", "--json",
                   result_path, "--quiet", "--data-root", data_root) == 0
    assert json.loads(result_path.read_text())["untrained"] is True
    assert "NOT a restoration" in capsys.readouterr().out


def test_output_piped_into_a_reader_that_stops_is_not_an_error():
    """`zoo list | head -1`: the closed pipe is not reported as an error."""
    import subprocess
    import sys

    proc = subprocess.run(f"{sys.executable} -m zoo_cli list | head -1", shell=True, capture_output=True, text=True,
                          timeout=120)
    assert proc.stdout.startswith("model") and "error" not in proc.stderr
