"""Bad image files in, one-line ZooErrors out: a fuzz test of :func:`zoo.data.io.read_image` (what
``zoo restore``, ``zoo run``, ``zoo eval`` and calibration read inputs with) over truncated,
corrupted and malformed PNG/JPEG/TIFF/WebP/GIF/BMP files, plus headers that claim huge sizes.

The contract (docs/bad_inputs.md): either a decoded image or a :class:`ZooError` whose message is
one line naming the file and whose fix is not empty; never another exception, never a hang (the
pixel limit refuses huge headers before decoding; the fuzz examples use a small one, so a
mutated size field cannot make an example decode hundreds of megapixels), never a file written.
"""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from zoo.data import io as zio  # noqa: E402
from zoo.errors import ZooError  # noqa: E402

#: Pixel limit of the fuzz examples (1 MP): a mutated size field can claim at most this much.
FUZZ_MAX_PIXELS = 1 << 20
FUZZ = settings(max_examples=150, deadline=2000, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _pillow_bytes(image: Image.Image, file_format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=file_format, **options)
    return buffer.getvalue()


def _seed_files() -> dict[str, bytes]:
    """Small valid files of every format read_image supports (name -> bytes; the suffix is the format)."""
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, size=(12, 16, 3), dtype=np.uint8), "RGB")
    rgba = Image.fromarray(rng.integers(0, 256, size=(12, 16, 4), dtype=np.uint8), "RGBA")
    frames = [Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8), "RGB") for i in range(3)]
    return {
        "rgb.png": _pillow_bytes(rgb, "PNG"),
        "palette.png": _pillow_bytes(rgb.convert("P"), "PNG", transparency=0),
        "deep.png": zio.encode_png16(rng.integers(0, 65536, size=(6, 5, 4), dtype=np.uint16)),
        "baseline.jpg": _pillow_bytes(rgb, "JPEG", quality=90),
        "progressive.jpg": _pillow_bytes(rgb, "JPEG", quality=90, progressive=True),
        "lzw.tif": _pillow_bytes(rgba, "TIFF", compression="tiff_lzw"),
        "grey16.tif": _pillow_bytes(Image.fromarray(rng.integers(0, 65536, size=(6, 5), dtype=np.uint16)), "TIFF"),
        "lossy.webp": _pillow_bytes(rgb, "WEBP", quality=80),
        "lossless.webp": _pillow_bytes(rgba, "WEBP", lossless=True),
        "animated.gif": _pillow_bytes(frames[0], "GIF", save_all=True, append_images=frames[1:]),
        "plain.bmp": _pillow_bytes(rgb, "BMP"),
    }


SEEDS = _seed_files()


def _check_contract(path: Path, **kwargs):
    """read_image(path) either decodes or raises a one-line ZooError naming the file; returns the result."""
    try:
        loaded = zio.read_image(path, **kwargs)
    except ZooError as err:
        message = str(err)
        assert "\n" not in message and str(path) in err.problem, message
        assert err.fix, message
        return err
    assert loaded.image.dtype == torch.float32 and loaded.image.shape[0] == 3
    assert bool(torch.isfinite(loaded.image).all()) and 0.0 <= float(loaded.image.min()) <= float(loaded.image.max()) <= 1.0
    return loaded


def test_seed_files_decode(tmp_path):
    """The fuzz starts from valid files: each one decodes (so a mutation, not the seed, is what breaks)."""
    for name, data in SEEDS.items():
        (tmp_path / name).write_bytes(data)
        loaded = zio.read_image(tmp_path / name)
        assert loaded.height >= 5 and loaded.width >= 5, name


@FUZZ
@given(name=st.sampled_from(sorted(SEEDS)), cut=st.floats(0.0, 1.0, exclude_max=True))
def test_truncated_files_raise_zoo_errors(tmp_path, name, cut):
    data = SEEDS[name]
    path = tmp_path / f"cut-{name}"
    path.write_bytes(data[: int(len(data) * cut)])
    _check_contract(path, max_pixels=FUZZ_MAX_PIXELS)
    assert all(p.name.startswith("cut-") for p in tmp_path.iterdir())  # nothing else written


@FUZZ
@given(name=st.sampled_from(sorted(SEEDS)),
       edits=st.lists(st.tuples(st.floats(0.0, 1.0, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=8),
       keep_signature=st.booleans())
def test_corrupted_files_raise_zoo_errors(tmp_path, name, edits, keep_signature):
    """Random bytes overwritten anywhere (headers, chunk lengths, compressed data), the format's
    first bytes kept or not: the decoders' own exceptions must all become ZooError."""
    data = bytearray(SEEDS[name])
    first = 12 if keep_signature else 0
    for where, value in edits:
        data[first + int((len(data) - first) * where)] = value
    path = tmp_path / f"bad-{name}"
    path.write_bytes(bytes(data))
    _check_contract(path, max_pixels=FUZZ_MAX_PIXELS)


@FUZZ
@given(suffix=st.sampled_from([".png", ".jpg", ".tif", ".webp", ".gif", ".bmp"]), junk=st.binary(max_size=256),
       prefix=st.sampled_from([b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"II*\x00", b"MM\x00*", b"RIFF\x00\x00\x00\x00WEBP",
                               b"GIF89a", b"BM"]))
def test_malformed_files_raise_zoo_errors(tmp_path, suffix, junk, prefix):
    """A format's magic bytes followed by anything (or nothing)."""
    path = tmp_path / f"junk{suffix}"
    path.write_bytes(prefix + junk)
    _check_contract(path, max_pixels=FUZZ_MAX_PIXELS)


def _ifd_entries(tiff: bytes, ifd: int) -> list[tuple[int, int]]:
    """(tag, byte offset of its 12-byte entry) of a little-endian TIFF's image file directory at ``ifd``."""
    count = struct.unpack("<H", tiff[ifd:ifd + 2])[0]
    return [(struct.unpack("<H", tiff[ifd + 2 + 12 * i:ifd + 4 + 12 * i])[0], ifd + 2 + 12 * i) for i in range(count)]


def _oversized_files() -> dict[str, bytes]:
    """Tiny files whose headers claim 100000x100000 pixels (10 gigapixels) or thereabouts."""
    side = 100_000
    png = (b"\x89PNG\r\n\x1a\n" + zio._png_chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0))
           + zio._png_chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + zio._png_chunk(b"IEND", b""))
    jpeg = bytearray(SEEDS["baseline.jpg"])
    sof = jpeg.index(b"\xff\xc0")  # start of frame: precision, height, width
    jpeg[sof + 5:sof + 9] = struct.pack(">HH", 65_000, 65_000)
    tiff = bytearray(SEEDS["lzw.tif"])
    for tag, entry in _ifd_entries(tiff, struct.unpack("<I", tiff[4:8])[0]):
        if tag in (256, 257):  # ImageWidth, ImageLength
            tiff[entry + 2:entry + 12] = struct.pack("<HII", 4, 1, side)  # LONG, count 1, value
    gif = bytearray(SEEDS["animated.gif"])
    gif[6:10] = struct.pack("<HH", 65_535, 65_535)  # logical screen
    webp = (b"RIFF" + struct.pack("<I", 4 + 18) + b"WEBP" + b"VP8X" + struct.pack("<I", 10)
            + b"\x00\x00\x00\x00" + (side - 1).to_bytes(3, "little") + (side - 1).to_bytes(3, "little"))
    return {"huge.png": png, "huge.jpg": bytes(jpeg), "huge.tif": bytes(tiff), "huge.gif": bytes(gif),
            "huge.webp": webp}


def _two_page_tiff(break_second: bool) -> bytes:
    """A two-page TIFF (page 1 black, page 2 grey); ``break_second`` renames the second page's
    ImageWidth tag, which makes Pillow raise TypeError("Missing dimensions") when it seeks there."""
    pages = [Image.fromarray(np.full((6, 5, 3), 120 * index, np.uint8)) for index in range(2)]
    tiff = bytearray(_pillow_bytes(pages[0], "TIFF", save_all=True, append_images=pages[1:]))
    first = struct.unpack("<I", tiff[4:8])[0]
    after_entries = first + 2 + 12 * len(_ifd_entries(tiff, first))
    second = struct.unpack("<I", tiff[after_entries:after_entries + 4])[0]  # offset of the next IFD
    for tag, entry in _ifd_entries(tiff, second) if break_second else []:
        if tag == 256:  # ImageWidth -> an unknown tag
            tiff[entry:entry + 2] = struct.pack("<H", 65000)
    return bytes(tiff)


def test_multi_page_tiff_with_a_broken_second_page_gives_its_first_page(tmp_path):
    """Found by the fuzz: counting the frames seeks to page 2, where Pillow raised TypeError."""
    (tmp_path / "pages.tif").write_bytes(_two_page_tiff(break_second=False))
    pages = zio.read_image(tmp_path / "pages.tif")
    assert pages.frames == 2 and pages.notes == [f"{tmp_path / 'pages.tif'} has 2 frames; only the first is used "
                                                 "(extract the frame you want as a PNG to restore another)"]
    path = tmp_path / "broken-page.tif"
    path.write_bytes(_two_page_tiff(break_second=True))
    loaded = zio.read_image(path)
    assert float(loaded.image.max()) == 0.0 and loaded.frames == 2  # page 1, black
    assert loaded.notes == [f"{path} has more than one frame and the later ones are unreadable; only the first is used"]


@pytest.mark.parametrize("name", sorted(_oversized_files()))
def test_oversized_headers_are_refused_before_decoding(tmp_path, name):
    """With the default limit (100 MP): refused at once from the header, nothing allocated or decoded."""
    path = tmp_path / name
    path.write_bytes(_oversized_files()[name])
    start = time.perf_counter()
    result = _check_contract(path)
    assert time.perf_counter() - start < 2.0
    assert isinstance(result, ZooError), f"{name} decoded to {tuple(result.image.shape)}"
    if name != "huge.webp":  # libwebp gives up on that VP8X header before a size is known
        assert "pixels, over the limit of 100,000,000" in result.problem  # the zoo's limit, not Pillow's 2x


@pytest.mark.parametrize("content, problem", [
    (b"", "not an image file"),
    (b"hello, I am text\n", "not an image file"),
    (b"\x89PNG\r\n\x1a\n", "starts like a PNG file but is truncated or corrupt"),
    (b"RIFF\x10\x00\x00\x00WEBPVP8 ", "truncated or corrupt"),
])
def test_empty_and_non_image_files(tmp_path, content, problem):
    path = tmp_path / "input.png"
    path.write_bytes(content)
    with pytest.raises(ZooError, match=problem) as caught:
        zio.read_image(path)
    assert str(path) in caught.value.problem


def test_one_pixel_image_reads_without_warnings(tmp_path):
    """A 1x1 image once leaked torch's 'non-writable NumPy array' UserWarning to the user. torch shows
    that warning once per process, so the check runs in a fresh interpreter with warnings as errors."""
    path = tmp_path / "one.png"
    Image.new("RGB", (1, 1), (200, 100, 50)).save(path)
    Image.new("LA", (1, 1), (7, 9)).save(tmp_path / "one-alpha.png")
    code = ("import sys; from zoo.data.io import read_image\n"
            "for name in sys.argv[1:]:\n"
            "    image = read_image(name)\n"
            "    assert image.image.shape == (3, 1, 1), image.image.shape\n"
            "    image.image += 0  # the tensor is the caller's to change\n")
    done = subprocess.run([sys.executable, "-W", "error", "-c", code, str(path), str(tmp_path / "one-alpha.png")],
                          capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr
    assert zio.read_image(path).image.flatten().tolist() == pytest.approx([200 / 255, 100 / 255, 50 / 255])


def test_animated_gif_says_only_the_first_frame_is_used(tmp_path):
    path = tmp_path / "animated.gif"
    path.write_bytes(SEEDS["animated.gif"])
    loaded = zio.read_image(path)
    assert loaded.frames == 3 and float(loaded.image.max()) == 0.0  # the first (black) frame
    assert loaded.notes == [f"{path} has 3 frames; only the first is used "
                            "(extract the frame you want as a PNG to restore another)"]
    (tmp_path / "still.png").write_bytes(SEEDS["rgb.png"])
    still = zio.read_image(tmp_path / "still.png")
    assert still.frames == 1 and still.notes == []


def test_every_bad_input_is_named_and_nothing_is_written(tmp_path, capsys):
    """A folder with good and bad files: the whole command is refused before it writes anything (as
    docs/bad_inputs.md says), and the one line names every bad file, not only the first (a user
    fixing them one run at a time found the next only after rerunning)."""
    from zoo_cli.main import main

    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a.png").write_bytes(SEEDS["rgb.png"])
    (folder / "b.png").write_bytes(b"")
    (folder / "c.jpg").write_bytes(SEEDS["baseline.jpg"][:200])
    (folder / "d.png").write_bytes(SEEDS["rgb.png"])
    Image.fromarray(np.zeros((4, 4), np.float32)).save(folder / "e.tif")
    out = tmp_path / "out"
    assert main(["restore", "hinet-lite-s", str(folder), "-o", f"{out}/", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"zoo: error: {folder / 'b.png'} is not an image file Pillow can read (and 2 more of the 5 inputs "
                   f"cannot be read: {folder / 'c.jpg'}, {folder / 'e.tif'}); pass a PNG, JPEG, TIFF, BMP or WebP "
                   "image; nothing was written")
    assert not out.exists()


def test_two_inputs_for_one_output_are_named(tmp_path):
    """``y.png`` and ``y.bmp`` both become ``y.png`` (a .bmp is written as PNG): the refusal names them."""
    from zoo.inference import plan_outputs

    (tmp_path / "y.png").write_bytes(SEEDS["rgb.png"])
    (tmp_path / "y.bmp").write_bytes(SEEDS["plain.bmp"])
    with pytest.raises(ZooError, match=rf"^{tmp_path / 'y.bmp'} and {tmp_path / 'y.png'} would both be written to "
                                       rf"{tmp_path / 'out' / 'y.png'}; restore them in separate runs or rename one$"):
        plan_outputs([tmp_path], f"{tmp_path / 'out'}/", overwrite=False)


def test_a_bad_input_among_good_ones_writes_nothing(tmp_path):
    """zoo restore / zoo run read every input before writing the first output."""
    from zoo.inference import restore_image_files

    (tmp_path / "good.png").write_bytes(SEEDS["rgb.png"])
    (tmp_path / "bad.jpg").write_bytes(SEEDS["baseline.jpg"][:200])
    out = tmp_path / "out"
    with pytest.raises(ZooError, match="bad.jpg.*truncated or corrupt"):
        restore_image_files([tmp_path / "good.png", tmp_path / "bad.jpg"], [out / "good.png", out / "bad.png"],
                            lambda image: image)
    assert not out.exists()


def test_pixel_kinds_the_zoo_does_not_read_name_the_file(tmp_path):
    """A 32-bit float TIFF said "32-bit floating-point images are not supported" without naming the
    file (in a folder of inputs, which one?); a 32-bit integer one outside 0..65535 the same."""
    Image.fromarray(np.random.default_rng(0).random((6, 5), dtype=np.float32)).save(tmp_path / "float.tif")
    Image.fromarray(np.full((6, 5), 70_000, dtype=np.int32)).save(tmp_path / "wide.tif")
    for name, words in (("float.tif", "holds 32-bit floating-point pixels, which the zoo does not read"),
                        ("wide.tif", "holds 32-bit integer pixels outside 0..65535, which the zoo does not read")):
        error = _check_contract(tmp_path / name)
        assert isinstance(error, ZooError) and error.problem == f"{tmp_path / name} {words}", error
        assert error.fix == "save the image as an 8- or 16-bit PNG"
