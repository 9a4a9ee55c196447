"""Bad output paths, odd output names, misleading messages, library noise and super-resolution
scales, tile outputs and tiny images (docs/bad_inputs.md).

Every command that writes refuses an output it cannot write before it does its work, in one line
with exit status 2; output names are files or folders only when that is unambiguous; the
messages name what the user can change; the libraries' known-harmless noise stays out of sight
unless ``--verbose``; a degradation, manifest or image that does not fit a model's scale is
refused before the model runs.
"""

import errno
import json
import logging
import os
import re
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from zoo import quiet
from zoo.atomic import ensure_writable
from zoo.data.io import read_image
from zoo.errors import ZooError
from zoo.inference import plan_outputs
from zoo.registry import create_model, list_models
from zoo_cli.main import main, take_verbose

#: Ships weights, 0.58 M parameters: cheap enough to run in a test.
SMALL_MODEL = "hinet-lite-s"
REPO = Path(__file__).resolve().parents[1]


def run_cli(*args) -> int:
    return main([str(a) for a in args])


def one_line_error(capsys, *needles: str) -> str:
    """The single stderr line of a refused command; asserts it names every needle and nothing ran."""
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.startswith("zoo: error: ") and len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, err
    assert captured.out == "", "the command did its work before refusing"
    return err


@pytest.fixture
def photo(tmp_path) -> Path:
    path = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture
def blocker(tmp_path) -> Path:
    """A file where an output needs a folder (fails for root too, unlike a read-only folder)."""
    path = tmp_path / "blocker"
    path.write_text("a file, not a folder")
    return path


# --- 1. outputs that cannot be written: refused before the work -----------------------------


def test_ensure_writable_names_the_file_in_the_way_and_leaves_nothing(tmp_path, blocker):
    with pytest.raises(ZooError, match=r"cannot write results file .*blocker/sub/r\.json: .*blocker is a file, "
                                       r"not a folder; pass another --json"):
        ensure_writable(blocker / "sub" / "r.json", "results file", fix="pass another --json path")
    with pytest.raises(ZooError, match="it is a folder, not a file"):
        ensure_writable(tmp_path, "results file")
    with pytest.raises(ZooError, match="it exists and is not a folder"):
        ensure_writable(blocker, "report folder", kind="folder")
    # Missing folders are creatable: checked by creating them, then removed again.
    assert ensure_writable(tmp_path / "a" / "b" / "r.json", "results file") == tmp_path / "a" / "b" / "r.json"
    assert ensure_writable(tmp_path / "c" / "d", "output folder", kind="folder") == tmp_path / "c" / "d"
    assert [p.name for p in tmp_path.iterdir()] == ["blocker"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_ensure_writable_names_a_read_only_folder(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        with pytest.raises(ZooError, match=r"permission denied in .*locked; .*make .*locked writable"):
            ensure_writable(locked / "new" / "out.png", "output file")
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o755)


def test_ensure_writable_reports_the_system_reason(tmp_path, monkeypatch):
    """What the OS says (here a read-only file system, simulated: root bypasses permissions) is the reason."""
    import zoo.atomic

    def read_only(*args, dir=None, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(Path(dir) / ".zoo-write-check-x"))

    monkeypatch.setattr(zoo.atomic.tempfile, "mkstemp", read_only)
    with pytest.raises(ZooError, match=r"cannot write output folder .*new: read-only file system in .*new; "
                                       r"choose another path, or make .*new writable"):
        ensure_writable(tmp_path / "new", "output folder", kind="folder")
    assert not (tmp_path / "new").exists()


def _commands_writing_into(blocker: Path, photo: Path, tmp_path: Path) -> dict[str, list]:
    return {
        "restore": ["restore", SMALL_MODEL, photo, "-o", blocker / "out.png"],
        "restore-folder": ["restore", SMALL_MODEL, photo, "-o", f"{blocker / 'out'}/"],
        "run": ["run", tmp_path / "no-artifact-needed-yet", photo, "-o", blocker / "out.png"],
        "eval": ["eval", SMALL_MODEL, "--dataset", "bundled", "--limit", "1", "--json", blocker / "r.json"],
        "bench": ["bench", SMALL_MODEL, "--json", blocker / "b.json"],
        "baseline": ["baseline", SMALL_MODEL, "--json", blocker / "b.json"],
        "report": ["report", tmp_path, "-o", blocker / "report"],
        "export": ["export", SMALL_MODEL, "--target", "onnx", "--precision", "fp32", "--tile", "64",
                   "-o", blocker / "export"],
        "train": ["train", REPO / "configs" / "hinet_lite_gaussian_cpu.yaml", "--out", blocker / "run"],
    }


@pytest.mark.parametrize("command", ["restore", "restore-folder", "run", "eval", "bench", "baseline", "report",
                                     "export", "train"])
def test_every_writing_command_refuses_an_unwritable_output_first(command, blocker, photo, tmp_path, capsys):
    argv = _commands_writing_into(blocker, photo, tmp_path)[command]
    assert run_cli(*argv) == 2
    one_line_error(capsys, "cannot write", f"{blocker} is a file, not a folder")
    assert blocker.read_text() == "a file, not a folder"


def test_check_refuses_an_unwritable_results_file_before_measuring(request, tmp_path, blocker, capsys):
    from tests.tiny_artifact import tiny_artifact, tiny_images

    artifact = tiny_artifact(request)
    images = tiny_images(tmp_path / "images")
    assert run_cli("check", artifact, "--dataset", images, "--degradation", "gaussian:25", "--quiet",
                   "--json", blocker / "check.json") == 2
    one_line_error(capsys, "cannot write results file", f"{blocker} is a file, not a folder", "--json")


def test_an_os_error_while_writing_is_one_line_and_verbose_shows_the_traceback(photo, tmp_path, monkeypatch, capsys):
    import zoo.data.io

    def disk_full(path, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(zoo.data.io, "write_image", disk_full)
    out = tmp_path / "out.png"
    assert run_cli("restore", SMALL_MODEL, photo, "-o", out, "--quiet") == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"zoo: error: cannot access {out}: No space left on device; check the path, its permissions and "
                   "the free disk space (zoo --verbose shows the traceback)")
    with pytest.raises(OSError, match="No space left"):
        run_cli("restore", SMALL_MODEL, photo, "-o", out, "--quiet", "--verbose")


# --- 2. output names: a file with a writable extension, or a folder that exists or ends in / --


@pytest.mark.parametrize("name, message", [
    ("out.gif", "the zoo cannot write .gif images"),
    ("out.webp", "the zoo cannot write .webp images"),
    ("out.bmp", "the zoo cannot write .bmp images"),
    ("out.xyz", "extension '.xyz' is not an image format the zoo writes, and no folder of that name exists"),
    ("out", "has no extension, and no folder of that name exists"),
])
def test_an_output_name_that_is_neither_a_writable_image_nor_a_folder_is_refused(tmp_path, photo, name, message):
    with pytest.raises(ZooError, match=re.escape(message)):
        plan_outputs([photo], tmp_path / name, overwrite=False)
    assert not (tmp_path / name).exists()


def test_folders_are_existing_ones_or_end_with_a_slash(tmp_path, photo):
    existing = tmp_path / "existing.gif"  # an odd name, but an existing folder is taken as it is
    existing.mkdir()
    assert plan_outputs([photo], existing, overwrite=False) == [existing / "photo.png"]
    assert plan_outputs([photo], f"{tmp_path / 'new.xyz'}/", overwrite=False) == [tmp_path / "new.xyz" / "photo.png"]
    assert not (tmp_path / "new.xyz").exists()  # planned, not created
    assert plan_outputs([photo], tmp_path / "one.tif", overwrite=False) == [tmp_path / "one.tif"]


def test_restore_to_a_gif_name_writes_nothing(tmp_path, photo, capsys):
    assert run_cli("restore", SMALL_MODEL, photo, "-o", tmp_path / "out.gif", "--quiet") == 2
    one_line_error(capsys, "cannot write .gif images", ".png, .jpg, .jpeg, .tif, .tiff")
    assert not (tmp_path / "out.gif").exists()


# --- 3. messages that name what the user can change ------------------------------------------


def test_restore_without_weights_suggests_only_what_restore_takes(tmp_path, photo, capsys):
    name = next(c.name for c in list_models() if not c.has_weights)
    assert run_cli("restore", name, photo, "-o", tmp_path / "o.png", "--quiet") == 2
    err = one_line_error(capsys, "no trained weights", "--weights")
    assert "--untrained" not in err
    with pytest.raises(ZooError, match="or --untrained for a pipeline"):  # eval, bench, export do take it
        create_model(name)


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` pixels (no pixel data)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


def test_the_pixel_limit_message_names_one_limit_and_the_setting_a_user_has(tmp_path, capsys):
    huge = tmp_path / "huge.png"
    huge.write_bytes(_png_header(100_000, 100_000))
    with pytest.raises(ZooError) as caught:
        read_image(huge)
    message = str(caught.value)
    assert message == (f"{huge} is 100000x100000 = 10,000,000,000 pixels, over the limit of 100,000,000 pixels; "
                       "set ZOO_MAX_PIXELS=10000000000 if you trust the file")
    assert "max_pixels=" not in message  # a Python argument, not something a command line can pass
    assert run_cli("restore", SMALL_MODEL, huge, "-o", tmp_path / "o.png", "--quiet") == 2
    one_line_error(capsys, "over the limit of 100,000,000 pixels", "ZOO_MAX_PIXELS=")


# Negative numbers and reversed ranges in degradation specs: rows of
# tests/test_degradations.py::test_bad_specs_name_the_problem_and_list_the_forms.


def test_restore_takes_a_folder_of_images(tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for name in ("b.png", "a.jpg", ".hidden.png"):
        Image.fromarray(rng.integers(0, 256, (20, 28, 3), dtype=np.uint8)).save(folder / name)
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "restored"
    assert run_cli("restore", SMALL_MODEL, folder, "-o", f"{out}/", "--quiet") == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(" -> ")[0] for line in lines] == [str(folder / "a.jpg"), str(folder / "b.png")]
    assert sorted(p.name for p in out.iterdir()) == ["a.jpg", "b.png"]
    assert read_image(out / "b.png").image.shape == (3, 20, 28)

    assert run_cli("restore", SMALL_MODEL, folder, "-o", tmp_path / "one.png", "--quiet") == 2
    one_line_error(capsys, f"input folder {folder} cannot be written to the one file", f"-o {tmp_path / 'one'}/")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run_cli("restore", SMALL_MODEL, empty, "-o", f"{out}/", "--quiet") == 2
    one_line_error(capsys, f"input folder {empty} holds no image files")


# --- 4. library noise: filtered by default, shown with --verbose -----------------------------


@pytest.fixture
def fresh_quiet(monkeypatch):
    """zoo.quiet as if the zoo command had not run yet in this process; filters removed afterwards."""
    monkeypatch.setattr(quiet, "_quiet", False)
    monkeypatch.delenv(quiet.VERBOSE_ENV, raising=False)
    for name in quiet.LOG_MESSAGES:
        logger = logging.getLogger(name or None)
        monkeypatch.setattr(logger, "filters", [f for f in logger.filters if not isinstance(f, quiet._MessageFilter)])


def test_known_noise_is_filtered_and_everything_else_still_shows(fresh_quiet, caplog):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert quiet.quiet_library_noise()
        warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated, use TreeSpec", FutureWarning)
        warnings.warn("a real deprecation", FutureWarning)
    assert [str(w.message) for w in caught] == ["a real deprecation"]
    with caplog.at_level(logging.WARNING):
        logging.getLogger("torchao").warning("Failed to load /x/torchao/_C_mxfp8.cpython-310-x86_64-linux-gnu.so: no")
        logging.getLogger("torchao").warning("a real torchao warning")
        logging.getLogger().warning("Your model is converted in training mode. Please set the module ...")
    assert caplog.messages == ["a real torchao warning"]


def test_verbose_filters_nothing(fresh_quiet, monkeypatch):
    assert not quiet.quiet_library_noise(verbose=True)
    monkeypatch.setenv(quiet.VERBOSE_ENV, "1")
    assert not quiet.quiet_library_noise()
    assert not quiet._quiet and not logging.getLogger("torchao").filters
    assert take_verbose(["export", "--verbose", "m", "--", "--verbose"]) == (["export", "m", "--", "--verbose"], True)
    assert take_verbose(["list"]) == (["list"], False)


def test_c_stderr_lines_are_filtered_only_when_quiet(fresh_quiet, capfd):
    noise = b"[cpuinfo_utils.cpp:71] Reading file /sys/devices/soc0/image_version\n"
    real = b"real C++ line\n 50%|#####     |\r"
    with quiet.c_stderr_filtered():  # not quiet yet: everything passes
        os.write(2, noise)
    assert capfd.readouterr().err == noise.decode()
    quiet.quiet_library_noise()
    with quiet.c_stderr_filtered():
        os.write(2, noise + real + noise)
    assert capfd.readouterr().err == real.decode()


def test_export_prints_its_steps_and_no_library_noise(tmp_path, capfd):
    """About 8 s: a real ONNX export through the zoo command (it logs 'torchvision is not installed'
    four times and the LeafSpec FutureWarning without the filters)."""
    out = tmp_path / "export"
    assert run_cli("export", SMALL_MODEL, "--target", "onnx", "--precision", "fp32", "--tile", "64", "-o", out) == 0
    captured = capfd.readouterr()
    lines = captured.err.splitlines()
    steps = [re.match(r"^\[\s*\d+\.\d s\] (\w+): ", line) for line in lines]
    assert all(steps), captured.err
    assert [step.group(1) for step in steps] == ["prepare", "lower", "verify", "write", "done"]
    assert "wrote" in captured.out and (out / "manifest.json").is_file()


def test_animated_gif_restores_its_first_frame_and_says_so(tmp_path, capsys):
    """An animated GIF is restored from its first frame, and `zoo restore` prints that as a warning."""
    from PIL import Image

    from zoo_cli.main import main

    frames = [Image.new("RGB", (24, 24), colour) for colour in ((200, 30, 30), (30, 200, 30), (30, 30, 200))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    assert main(["restore", "hinet-lite-s", str(tmp_path / "anim.gif"), "-o", str(tmp_path / "out.png"),
                 "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "warning" in err and "first" in err and "3" in err
    restored = Image.open(tmp_path / "out.png").convert("RGB")
    red, green, blue = restored.getpixel((12, 12))
    assert red > green and red > blue  # the first (red) frame


# --- 5. super-resolution: scales, tile outputs, images too small to downscale or measure -----

SR_MODEL = next(c.name for c in list_models() if c.task == "super-resolution" and c.ships_trained_weights)


def _tiny_folder(tmp_path: Path, height: int, width: int) -> Path:
    folder = tmp_path / f"images-{height}x{width}"
    folder.mkdir()
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (height, width, 3), dtype=np.uint8)).save(
        folder / "tiny.png")
    return folder


@pytest.mark.parametrize("model, degradation, words", [
    ("sr", "gaussian:25", ["has scale x1 but {sr} upscales x2", "use --degradation bicubic:x2"]),
    ("sr", "bicubic:x4", ["has scale x4 but {sr} upscales x2", "use --degradation bicubic:x2"]),
    (SMALL_MODEL, "bicubic:x2", [f"has scale x2 but {SMALL_MODEL} upscales x1", "use --degradation gaussian:25"]),
])
def test_eval_refuses_a_degradation_of_another_scale(tmp_path, capsys, model, degradation, words):
    model = SR_MODEL if model == "sr" else model
    assert run_cli("eval", model, "--dataset", "bundled", "--limit", "1", "--degradation", degradation,
                   "--json", tmp_path / "r.json") == 2
    one_line_error(capsys, *(w.format(sr=SR_MODEL) for w in words))
    assert not (tmp_path / "r.json").exists()


def test_check_refuses_a_degradation_of_another_scale_before_measuring(request, tmp_path, capsys):
    from tests.tiny_artifact import tiny_artifact, tiny_images

    artifact = tiny_artifact(request)  # hinet-lite-s, x1
    images = tiny_images(tmp_path / "images")
    assert run_cli("check", artifact, "--dataset", images, "--degradation", "bicubic:x2", "--quiet",
                   "--json", tmp_path / "check.json") == 2
    one_line_error(capsys, "degradation 'bicubic:x2' has scale x2 but hinet-lite-s upscales x1",
                   "use --degradation gaussian:25")
    assert not (tmp_path / "check.json").exists()


@pytest.mark.parametrize("args, words", [
    (["--models", "{sr}", "--degradations", "bicubic:x4"],
     ["{sr} upscales x2 but no degradation given has that scale (bicubic:x4 is x4)",
      "add bicubic:x2 to --degradations"]),
    (["--degradations", "gaussian:25"], ["degradation 'gaussian:25' has scale x1 but super-resolution models work at "
                                         "x2, x3, x4", "use some of bicubic:x2; bicubic:x3; bicubic:x4"]),
])
def test_benchmark_refuses_scales_that_would_never_run_a_model(tmp_path, capsys, args, words):
    argv = ["benchmark", "sr", *(a.format(sr=SR_MODEL) for a in args), "--json", tmp_path / "b.json", "--quiet"]
    assert run_cli(*argv) == 2
    one_line_error(capsys, *(w.format(sr=SR_MODEL) for w in words))
    assert not (tmp_path / "b.json").exists()


def _sr_export(tmp_path: Path, change) -> Path:
    """An export folder holding the golden x4 ONNX manifest (``change``d) and a stand-in artifact
    whose sha256 matches it: whatever is refused is refused by the manifest, before any runtime."""
    import hashlib
    import json

    folder = tmp_path / "export"
    folder.mkdir()
    manifest = json.loads((REPO / "tests" / "data" / "manifests" / "onnx-fp32-sr-x4.json").read_text())
    payload = b"not a real model: the runtime must never see it"
    (folder / manifest["artifact"]["file"]).write_bytes(payload)
    manifest["artifact"].update(bytes=len(payload), sha256=hashlib.sha256(payload).hexdigest())
    change(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def _set_output_side(manifest, side):
    manifest["outputs"][0]["shape"] = [1, 3, side, side]


@pytest.mark.parametrize("change, words", [
    (lambda m: _set_output_side(m, 128),
     "field outputs[0].shape: [1, 3, 128, 128] does not fit NCHW RGB tiles of tiling.tile 64 x scale 4 = 256: "
     "expected [1, 3, 256, 256]"),
    (lambda m: m["tiling"].update(scale=2), "field tiling.scale: 2 differs from model.scale 4"),
    (lambda m: m["tiling"].update(tile=[96, 96]), "field inputs[0].shape: [1, 3, 64, 64] does not fit NCHW RGB "
                                                 "tiles of tiling.tile 96"),
    (lambda m: m["tiling"].update(overlap=40), "field tiling: overlap 40 is not less than half the tile 64"),
], ids=["output-not-tile-x-scale", "tiling-scale", "input-not-tile", "overlap"])
def test_run_refuses_a_manifest_whose_tile_output_does_not_fit_before_running(tmp_path, photo, capsys, change, words):
    folder = _sr_export(tmp_path, change)
    assert run_cli("run", folder, photo, "-o", tmp_path / "out.png") == 2
    one_line_error(capsys, f"{folder / 'manifest.json'} is invalid: {words}", "re-export the artifact")
    assert not (tmp_path / "out.png").exists()


def test_a_consistent_sr_manifest_passes_and_dynamic_sizes_are_allowed(tmp_path):
    from export_mobile.manifest import read_manifest, tiling_errors

    folder = _sr_export(tmp_path, lambda m: None)
    manifest = read_manifest(folder)
    assert tiling_errors(manifest) == []
    manifest.update(dynamic_shapes=True)
    manifest["outputs"][0]["shape"] = [1, 3, -1, -1]
    assert tiling_errors(manifest) == []
    manifest.update(dynamic_shapes=False)
    assert tiling_errors(manifest) == ["outputs[0].shape: [1, 3, -1, -1] does not fit NCHW RGB tiles of tiling.tile "
                                       "64 x scale 4 = 256: expected [1, 3, 256, 256]"]


@pytest.mark.parametrize("args, words", [
    (["--precision", "fp32", "--quantized", "q.pt2"],
     "--quantized applies only to int8 exports, and this one is fp32; drop --quantized, or pass --precision int8"),
    (["--precision", "fp16", "--calibration", "bundled", "--mixed", "first-last"],
     "--calibration, --mixed apply only to int8 exports, and this one is fp16; drop --calibration --mixed"),
    (["--precision", "fp32", "--calib-images", "0"], "--calib-images applies only to int8 exports"),
    (["--precision", "int8", "--quantized", "q.pt2", "--calib-images", "4"],
     "--quantized takes its int8 model as it is, so --calib-images would be ignored; drop --calib-images"),
], ids=["quantized-fp32", "calibration-fp16", "calib-images-fp32", "calib-images-with-quantized"])
def test_export_refuses_int8_options_it_would_ignore(tmp_path, capsys, monkeypatch, args, words):
    """Before: each was exported without a word, the option ignored (and --calib-images 0 became 32)."""
    from export_mobile import api

    monkeypatch.setattr(api, "export_model", lambda *a, **k: pytest.fail("the export ran"))
    assert run_cli("export", SMALL_MODEL, "--target", "onnx", "--tile", "64", "-o", tmp_path / "out", *args) == 2
    one_line_error(capsys, words)
    assert list(tmp_path.iterdir()) == []


def test_export_calibrates_on_the_crops_asked_for(tmp_path, capsys, monkeypatch):
    """--calib-images 0 reaches the calibration (which refuses it) instead of becoming the default 32."""
    from export_mobile import api

    def export_model(*args, **kwargs):
        raise ZooError(f"export_model got calibration_images={kwargs['calibration_images']}")

    monkeypatch.setattr(api, "export_model", export_model)
    assert run_cli("export", SMALL_MODEL, "--target", "executorch-xnnpack", "--precision", "int8", "--tile", "64",
                   "--calibration", "bundled", "--calib-images", "0", "-o", tmp_path / "out") == 2
    one_line_error(capsys, "export_model got calibration_images=0")


@pytest.mark.parametrize("target, precision, option, words", [
    ("coreml", "fp16", "compute_unit=cpu_only",
     ["target coreml has no option 'compute_unit'; did you mean compute_units? coreml accepts compute_units, "
      "int8_mode, io_dtype, weight_threshold; drop --option compute_unit or fix its name"]),
    ("executorch-xnnpack", "fp32", "compute_units=cpu_only",
     ["target executorch-xnnpack has no option 'compute_units' (compute_units is an option of executorch-coreml, "
      "coreml); executorch-xnnpack takes no --option"]),
    ("tflite", "fp32", "int8_method=ort",
     ["target tflite has no option 'int8_method' (int8_method is an option of onnx); tflite accepts layout, io, "
      "split_clamps"]),
    ("coreml", "fp16", "compute_units=bogus",
     ["unknown compute_units 'bogus' for coreml; use one of all, cpu_only, cpu_and_gpu, cpu_and_ne"]),
    ("executorch-coreml", "fp16", "compute_units=npu", ["unknown compute_units 'npu' for executorch-coreml"]),
    ("tflite", "fp32", "layout=NWHC", ["unknown layout 'NWHC' for tflite; use one of NCHW, NHWC"]),
    ("tflite", "fp32", "split_clamps=maybe", ["option split_clamps of tflite takes true or false, got 'maybe'"]),
    ("coreml", "int8", "weight_threshold=abc",
     ["option weight_threshold of coreml takes a whole number >= 0, got 'abc'"]),
    ("tflite", "fp32", "io=float",
     ["option io of tflite applies only to int8 exports, and this one is fp32, so it would be ignored; "
      "drop --option io, or pass --precision int8"]),
    ("onnx", "int8", "int8_method=ort",
     ["int8_method=ort calibrates with onnxruntime on options['calibration'] arrays, and none were given"]),
    ("onnx", "int8", "calibration=bundled", ["option calibration of onnx takes a list of float32 NCHW arrays"]),
], ids=["typo", "other-target", "onnx-option-on-tflite", "bad-compute-units", "bad-compute-units-delegate",
        "bad-layout", "bad-bool", "bad-count", "int8-option-on-fp32", "ort-without-arrays", "internal-as-text"])
def test_export_refuses_an_option_the_target_does_not_read_before_building(tmp_path, capsys, monkeypatch, target,
                                                                           precision, option, words):
    """Before: each was ignored without a word (the artifact shipped without it), or, for weight_threshold=abc,
    a ValueError traceback after the conversion, or, for int8_method=ort, a refusal after the calibration."""
    from export_mobile.targets import get_target
    from zoo import registry

    if get_target(target).available():
        pytest.skip(f"{target} is unavailable here")
    monkeypatch.setattr(registry, "create_model", lambda *a, **k: pytest.fail("the model was built"))
    assert run_cli("export", SMALL_MODEL, "--target", target, "--precision", precision, "--tile", "64",
                   "--option", option, "-o", tmp_path / "out") == 2
    one_line_error(capsys, *words)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args, words", [
    (["--matrix", "--models", SMALL_MODEL, "--targets", "coreml", "--option", "compute_units=cpu_only"],
     "--matrix builds every target with its default options, so --option would be ignored"),
    ([SMALL_MODEL, "--target", "tflite", "--precision", "fp32", "--option", "layout=NHWC", "--option", "layout=NCHW"],
     "--option layout is given twice (NHWC, NCHW); pass --option layout once"),
], ids=["matrix", "twice"])
def test_export_refuses_options_it_would_drop(tmp_path, capsys, monkeypatch, args, words):
    """Before: --matrix ignored --option, and the first of two values was dropped."""
    from export_mobile import api, matrix

    monkeypatch.setattr(api, "export_model", lambda *a, **k: pytest.fail("the export ran"))
    monkeypatch.setattr(matrix, "run_matrix", lambda *a, **k: pytest.fail("the matrix ran"))
    assert run_cli("export", *args, "--tile", "64", "-o", tmp_path / "out") == 2
    one_line_error(capsys, words)
    assert list(tmp_path.iterdir()) == []


_MATRIX = ["--matrix", "--models", SMALL_MODEL, "--targets", "onnx"]
_SINGLE = [SMALL_MODEL, "--target", "onnx", "--precision", "fp32"]


@pytest.mark.parametrize("args, words", [
    (_MATRIX + ["--weights", "w.safetensors"],
     "--matrix would ignore --weights (it exports each model's shipped weights, random where it ships none); "
     "drop --weights, or export one model alone with it: zoo export MODEL --target T --precision P --weights"),
    (_MATRIX + ["--untrained"], "--matrix would ignore --untrained (it exports each model's shipped weights"),
    (_MATRIX + ["--overlap", "8"], "--matrix would ignore --overlap (it records each model's own tile overlap)"),
    (_MATRIX + ["--quantized", "q.pt2"], "--matrix would ignore --quantized (it calibrates its int8 cells here"),
    (_MATRIX + ["--mixed", "first-last"], "--matrix would ignore --mixed (it quantizes every layer of its int8 cells)"),
    (_MATRIX + ["--dynamic"], "--matrix would ignore --dynamic (it builds every cell at the fixed --tile)"),
    (_MATRIX + ["--no-verify"], "--matrix would ignore --no-verify (it runs every cell against PyTorch"),
    (_MATRIX + ["--no-verify", "--overlap", "0"],
     "--matrix would ignore --overlap (it records each model's own tile overlap), --no-verify (it runs every cell "
     "against PyTorch: that comparison is its check); drop --overlap --no-verify, or export one model alone with "
     "them"),
    (_MATRIX + ["--precisions", "fp32,fp16", "--calibration", "cal/", "--calib-images", "4"],
     "--calibration, --calib-images calibrate int8 cells, and --precisions fp32,fp16 builds none; drop "
     "--calibration --calib-images, or add int8 to --precisions"),
    (_MATRIX + ["--target", "tflite"], "--matrix takes --targets, not --target; use --targets tflite"),
    (_MATRIX + ["--precision", "int8"], "--matrix takes --precisions, not --precision; use --precisions int8"),
    (_SINGLE + ["--models", "hinet-lite"],
     "--models is read only by --matrix, so a single export would ignore it; add --matrix to build the coverage "
     "table, or drop --models (a single export takes MODEL --target T --precision P)"),
    (_SINGLE + ["--targets", "onnx,tflite"], "--targets is read only by --matrix"),
    (_SINGLE + ["--precisions", "fp32"], "--precisions is read only by --matrix"),
    (_SINGLE + ["--json", "rows.json"], "--json is read only by --matrix"),
    (_SINGLE + ["--resume", "--json", "rows.json"],
     "--json, --resume are read only by --matrix, so a single export would ignore them; add --matrix to build the "
     "coverage table, or drop --json --resume"),
], ids=["matrix-weights", "matrix-untrained", "matrix-overlap", "matrix-quantized", "matrix-mixed", "matrix-dynamic",
        "matrix-no-verify", "matrix-two-flags", "matrix-float-calibration", "matrix-target", "matrix-precision", "single-models",
        "single-targets", "single-precisions", "single-json", "single-resume"])
def test_export_refuses_flags_only_the_other_mode_reads(tmp_path, capsys, monkeypatch, args, words):
    """Before: --matrix built every cell without --weights, --untrained, --overlap, --quantized, --mixed,
    --dynamic, --no-verify, --target and --precision, and a single export ignored the matrix's flags."""
    from export_mobile import api, matrix
    from zoo import registry

    monkeypatch.setattr(api, "export_model", lambda *a, **k: pytest.fail("the export ran"))
    monkeypatch.setattr(matrix, "run_matrix", lambda *a, **k: pytest.fail("the matrix ran"))
    monkeypatch.setattr(registry, "create_model", lambda *a, **k: pytest.fail("the model was built"))
    assert run_cli("export", *args, "--tile", "64", "-o", tmp_path / "out") == 2
    one_line_error(capsys, words)
    assert list(tmp_path.iterdir()) == []


def test_matrix_passes_on_the_flags_it_reads(tmp_path, monkeypatch):
    """The refusals above leave alone what every cell does read."""
    from export_mobile import matrix

    seen = {}
    monkeypatch.setattr(matrix, "run_matrix", lambda *args, **kwargs: seen.update(args=args, kwargs=kwargs) or [{}])
    assert run_cli("export", *_MATRIX, "--precisions", "int8", "--tile", "32", "--calibration", "bundled",
                   "--calib-images", "2", "--data-root", tmp_path, "--no-rewrite", "--quiet", "--resume",
                   "--json", tmp_path / "rows.json", "-o", tmp_path / "out") == 0
    assert seen["args"] == ([SMALL_MODEL], ["onnx"], ["int8"], "32", str(tmp_path / "out"))
    assert seen["kwargs"] == {"calibration": "bundled", "calibration_images": 2, "data_root": str(tmp_path),
                              "rewrite": False, "json_path": str(tmp_path / "rows.json"), "resume": True}


def test_internal_and_declared_options_pass_in_the_spelling_the_target_reads():
    """The ONNX target's calibration arrays (passed from Python) stay accepted; values come back as read;
    a rule between two options (Core ML's weight_threshold is ignored by W8A8) is checked too."""
    from export_mobile.targets import get_target
    from export_mobile.targets.base import check_options

    arrays = [np.zeros((1, 3, 64, 64), np.float32)]
    checked = check_options(get_target("onnx"), "int8", {"int8_method": "ORT", "calibration": arrays})
    assert checked["int8_method"] == "ort" and checked["calibration"] is arrays
    assert check_options(get_target("coreml"), "int8", {"compute_units": "CPU_AND_NE", "weight_threshold": "2048"}) \
        == {"compute_units": "cpu_and_ne", "weight_threshold": 2048}
    assert check_options(get_target("executorch-qnn"), "fp16", {"soc": "SM8650"}) == {"soc": "SM8650"}
    assert check_options(get_target("executorch-qnn"), "fp16", {"soc": " qcs6490 "}) == {"soc": "QCS6490"}
    # A chipset typo is refused without the QNN SDK (it was found only after the SDK imported).
    for typo in ("SM865", "8650", "snapdragon", "SM8650-AB"):
        with pytest.raises(ZooError, match="takes a Qualcomm chipset name such as SM8650"):
            check_options(get_target("executorch-qnn"), "fp16", {"soc": typo})
    assert check_options(get_target("executorch-xnnpack"), "fp32", {}) == {}
    with pytest.raises(ZooError, match="weight_threshold applies to int8_mode=weights, and this export is W8A8"):
        check_options(get_target("coreml"), "int8", {"int8_mode": "W8A8", "weight_threshold": "0"})


def test_valid_tflite_options_reach_the_artifact_and_its_manifest(tmp_path, capsys):
    """About 12 s of CPU: a real TFLite export. split_clamps=false was text, so it was true: the clamps
    were split anyway and the manifest said split_clamps: true."""
    from export_mobile.targets import get_target

    if get_target("tflite").available():
        pytest.skip("tflite is unavailable here")
    out = tmp_path / "out"
    assert run_cli("export", SMALL_MODEL, "--target", "tflite", "--precision", "fp32", "--tile", "32", "--quiet",
                   "--no-verify", "--option", "split_clamps=false", "--option", "layout=nhwc", "-o", out) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["backend"]["options"]["split_clamps"] is False
    assert manifest["backend"]["options"]["layout"] == "NHWC"
    assert manifest["inputs"][0]["layout"] == "NHWC" and manifest["inputs"][0]["shape"] == [1, 32, 32, 3]
    assert manifest["backend"]["ops_outside_delegate"] == ["RELU_0_TO_1"]  # the clamp kept, as asked


def _retiled_copy(request, tmp_path, change) -> Path:
    """A copy of the tiny hinet-lite-s artifact (x1, tile 64) whose manifest ``change`` rewrites
    consistently: it passes every manifest check, only the artifact itself can contradict it."""
    import json
    import shutil

    from export_mobile.runners import load_artifact
    from tests.tiny_artifact import tiny_artifact

    folder = tmp_path / "export"
    shutil.copytree(tiny_artifact(request), folder)
    # The runtime's first load in a process writes C++ cpuinfo lines to fd 2, which pytest, unlike
    # the zoo command, does not filter: load once here (the caller then drops what was captured).
    load_artifact(folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    change(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def _tile_128(manifest):
    manifest["tiling"].update(tile=[128, 128])
    for kind in ("inputs", "outputs"):
        manifest[kind][0]["shape"] = [1, 3, 128, 128]


def _unknown_x2_model(manifest):
    manifest["model"].update(name="model-of-a-newer-zoo", scale=2)  # no card here to compare with
    manifest["tiling"].update(scale=2)
    manifest["outputs"][0]["shape"] = [1, 3, 128, 128]


@pytest.mark.parametrize("change, words", [
    (_tile_128, "has input shape [1, 3, 64, 64], but its manifest declares inputs[0].shape [1, 3, 128, 128] (NCHW)"),
    (_unknown_x2_model,
     "has output shape [1, 3, 64, 64], but its manifest declares outputs[0].shape [1, 3, 128, 128] (NCHW)"),
], ids=["tile", "scale"])
@pytest.mark.parametrize("command", ["run", "bench"])
def test_an_artifact_whose_shapes_differ_from_its_manifest_is_refused_when_loaded(request, tmp_path, photo, capsys,
                                                                                  change, words, command):
    """Before: the .pte's runtime failed at the first tile with a RuntimeError traceback (tile), or
    zoo bench timed the 64-pixel tile and recorded the throughput of a 128-pixel output (scale)."""
    folder = _retiled_copy(request, tmp_path, change)
    capsys.readouterr()
    arguments = ([folder, photo, "-o", tmp_path / "out.png", "--quiet"] if command == "run" else
                 [folder, "--runs", "3", "--warmup", "1", "--quiet", "--json", tmp_path / "bench.json"])
    assert run_cli(command, *arguments) == 2
    one_line_error(capsys, f"hinet-lite-s_executorch-xnnpack_fp32_64x64.pte {words}: the manifest does not "
                   "describe this artifact; re-export the artifact with `zoo export`")
    assert not (tmp_path / "out.png").exists() and not (tmp_path / "bench.json").exists()


def test_sr_eval_refuses_an_image_smaller_than_one_low_resolution_pixel(tmp_path, capsys):
    folder = _tiny_folder(tmp_path, 1, 5)
    assert run_cli("eval", SR_MODEL, "--dataset", folder, "--json", tmp_path / "r.json") == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after eval's progress bar
    assert err == (f"zoo: error: {folder / 'tiny.png'} is 5x1 pixels, smaller than one low-resolution pixel at x2 "
                   "(2x2 pixels); use images of at least 2x2 pixels")
    import torch

    from zoo.data.degradations import parse_degradation

    for call in (lambda d, image: d(image, 0), lambda d, image: d.target(image)):  # no empty LR image or reference
        with pytest.raises(ZooError, match="the image is 2x1 pixels, smaller than one low-resolution pixel at x3"):
            call(parse_degradation("bicubic:x3"), torch.rand(3, 1, 2))


@pytest.mark.parametrize("model, size, words", [
    ("sr", 12, "image tiny is 12x12 pixels, 8x8 after a border crop of 2: smaller than SSIM's 11x11 window; "
               "use images of at least 15x15 pixels"),
    (SMALL_MODEL, 6, "image tiny is 6x6 pixels: smaller than SSIM's 11x11 window; use images of at least 11x11"),
])
def test_eval_refuses_an_image_too_small_to_measure_before_the_model_runs(tmp_path, capsys, monkeypatch, model,
                                                                           size, words):
    import zoo.inference

    def must_not_run(*args, **kwargs):
        raise AssertionError("the model ran on an image that cannot be measured")

    monkeypatch.setattr(zoo.inference, "restore_tensor", must_not_run)
    model = SR_MODEL if model == "sr" else model
    assert run_cli("eval", model, "--dataset", _tiny_folder(tmp_path, size, size), "--json", tmp_path / "r.json") == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("zoo: error: ") and words in err, err


def test_a_one_pixel_low_resolution_input_restores_and_an_empty_one_is_refused(tmp_path, capsys):
    import torch

    from zoo.inference import TileSettings, restore_tensor

    single = _tiny_folder(tmp_path, 1, 1) / "tiny.png"
    assert run_cli("restore", SR_MODEL, single, "-o", tmp_path / "out.png", "--quiet") == 0
    assert read_image(tmp_path / "out.png").image.shape == (3, 2, 2)
    model, card = create_model(SR_MODEL)
    for tiles in (TileSettings.for_card(card), TileSettings(None, 0)):  # tiled, and the whole image at once
        with pytest.raises(ZooError, match="image height 0 is not a positive integer; pass an image of at least 1x1"):
            restore_tensor(model, card, torch.zeros(3, 0, 5), tiles)
        with pytest.raises(ZooError, match="image width 0 is not a positive integer"):
            restore_tensor(model, card, torch.zeros(3, 4, 0), tiles)
