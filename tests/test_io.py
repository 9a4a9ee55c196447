"""Image reading and writing: exact values, bit depths, alpha, conversions, errors, atomic writes."""

import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from zoo.data import io as zio
from zoo.data.io import LoadedImage, quantize, read_image, write_image
from zoo.errors import ZooError

# ----------------------------------------------------------------------------- a reference PNG codec
# Written here from the PNG specification, independently of zoo.data.io, to build 16-bit files with
# every filter type (and interlacing) and to decode what write_image produces.

ADAM7_PASSES = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
COLOR_TYPE = {1: 0, 2: 4, 3: 2, 4: 6}  # channels -> PNG colour type


def _paeth(left, up, up_left):
    estimate = left + up - up_left
    distances = (abs(estimate - left), abs(estimate - up), abs(estimate - up_left))
    return (left, up, up_left)[distances.index(min(distances))]


def _filter_rows(rows, bpp, first_filter):
    out = []
    prior = [0] * len(rows[0]) if rows else []
    for index, row in enumerate(rows):
        kind = (first_filter + index) % 5
        encoded = []
        for i, value in enumerate(row):
            left = row[i - bpp] if i >= bpp else 0
            up = prior[i]
            up_left = prior[i - bpp] if i >= bpp else 0
            predictor = [0, left, up, (left + up) // 2, _paeth(left, up, up_left)][kind]
            encoded.append((value - predictor) % 256)
        out.append(bytes([kind]) + bytes(encoded))
        prior = row
    return b"".join(out)


def _row_bytes(pixels):
    dtype = ">u2" if pixels.dtype == np.uint16 else "u1"
    return [list(pixels[y].astype(dtype).tobytes()) for y in range(pixels.shape[0])]


def make_png(pixels: np.ndarray, interlaced=False, exif: bytes = b"") -> bytes:
    """PNG bytes of (H, W, C) uint8/uint16 pixels, rows cycling through all five filter types;
    ``exif``: TIFF-structured EXIF data for an eXIf chunk."""
    height, width, channels = pixels.shape
    depth = 16 if pixels.dtype == np.uint16 else 8
    bpp = channels * depth // 8
    if interlaced:
        data = b""
        for number, (x0, y0, dx, dy) in enumerate(ADAM7_PASSES):
            sub = pixels[y0::dy, x0::dx]
            if sub.size:
                data += _filter_rows(_row_bytes(sub), bpp, number)
    else:
        data = _filter_rows(_row_bytes(pixels), bpp, 0)

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, depth, COLOR_TYPE[channels], 0, 0, int(interlaced))
    exif_chunk = chunk(b"eXIf", exif) if exif else b""
    body = chunk(b"IHDR", header) + exif_chunk + chunk(b"IDAT", zlib.compress(data)) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


def decode_png(data: bytes) -> tuple[np.ndarray, dict]:
    """(H, W, C) integer pixels and the chunks of a non-interlaced PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    position, chunks, idat = 8, {}, b""
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind = data[position + 4 : position + 8]
        body = data[position + 8 : position + 8 + length]
        (crc,) = struct.unpack(">I", data[position + 8 + length : position + 12 + length])
        assert crc == zlib.crc32(kind + body), kind
        if kind == b"IDAT":
            idat += body
        chunks[kind] = body
        position += 12 + length
    width, height, depth, color_type, _, _, interlace = struct.unpack(">IIBBBBB", chunks[b"IHDR"])
    assert interlace == 0
    channels = {0: 1, 4: 2, 2: 3, 6: 4}[color_type]
    bpp = channels * depth // 8
    stride = width * bpp
    raw = zlib.decompress(idat)
    prior = [0] * stride
    rows = []
    for y in range(height):
        kind = raw[y * (stride + 1)]
        line = list(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            left = line[i - bpp] if i >= bpp else 0
            up = prior[i]
            up_left = prior[i - bpp] if i >= bpp else 0
            predictor = [0, left, up, (left + up) // 2, _paeth(left, up, up_left)][kind]
            line[i] = (line[i] + predictor) % 256
        rows.append(bytes(line))
        prior = line
    dtype = ">u2" if depth == 16 else "u1"
    pixels = np.frombuffer(b"".join(rows), dtype=dtype).reshape(height, width, channels)
    return pixels.astype(np.int64), chunks


def expected_levels(image: torch.Tensor, levels: int) -> np.ndarray:
    """round(clip(x) * levels) in float32 arithmetic, computed with numpy."""
    array = np.clip(image.numpy().astype(np.float32), np.float32(0), np.float32(1))
    return np.round(array * np.float32(levels)).astype(np.int64)


# ----------------------------------------------------------------------------- 16-bit PNG reading


def test_reference_png_builder_matches_pillow_on_8bit(tmp_path):
    # Validates the test's own encoder on data Pillow decodes natively (8 bits).
    pixels = np.random.default_rng(0).integers(0, 256, (9, 13, 3), dtype=np.uint8)
    for interlaced in (False, True):
        file = tmp_path / f"eight_{interlaced}.png"
        file.write_bytes(make_png(pixels, interlaced))
        assert np.array_equal(np.asarray(Image.open(file)), pixels)


@pytest.mark.parametrize("channels", [3, 4, 2])
@pytest.mark.parametrize("interlaced", [False, True])
def test_16bit_png_keeps_all_16_bits(tmp_path, channels, interlaced):
    rng = np.random.default_rng(channels)
    pixels = rng.integers(0, 65536, (11, 17, channels), dtype=np.uint16)
    pixels[0, 0, 0] = 1000  # not a multiple of 257: unrepresentable in 8 bits
    file = tmp_path / "deep.png"
    file.write_bytes(make_png(pixels, interlaced))

    loaded = read_image(file)

    assert loaded.bit_depth == 16
    colour = pixels[..., :3] if channels >= 3 else np.repeat(pixels[..., :1], 3, axis=2)
    expected = torch.from_numpy(colour.astype(np.float32).transpose(2, 0, 1)) / 65535
    assert torch.equal(loaded.image, expected)
    assert loaded.image[0, 0, 0].item() == pytest.approx(1000 / 65535, abs=1e-9)
    if channels in (2, 4):
        alpha = torch.from_numpy(pixels[..., -1].astype(np.float32))[None] / 65535
        assert torch.equal(loaded.alpha, alpha)
    else:
        assert loaded.alpha is None


def test_16bit_png_exif_orientation(tmp_path):
    stored = np.random.default_rng(3).integers(0, 65536, (4, 6, 3), dtype=np.uint16)
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise
    file = tmp_path / "rotated16.png"
    file.write_bytes(make_png(stored, exif=exif.tobytes()[6:]))  # eXIf holds the data after "Exif\0\0"

    loaded = read_image(file)

    clockwise = np.rot90(stored, k=-1)
    assert loaded.bit_depth == 16
    assert torch.equal(loaded.image, torch.from_numpy(clockwise.astype(np.float32).transpose(2, 0, 1)) / 65535)


@pytest.mark.parametrize("compression", [None, "zlib"])  # zlib goes through Pillow's libtiff decoder
@pytest.mark.parametrize("byteorder", ["<", ">"])
@pytest.mark.parametrize("channels", [3, 4])
def test_16bit_tiff_keeps_all_16_bits(tmp_path, compression, byteorder, channels):
    tifffile = pytest.importorskip("tifffile")  # comes with scikit-image
    pixels = np.random.default_rng(channels).integers(0, 65536, (5, 7, channels), dtype=np.uint16)
    extra = {"extrasamples": ["unassalpha"]} if channels == 4 else {}
    tifffile.imwrite(tmp_path / "deep.tif", pixels, photometric="rgb", compression=compression, byteorder=byteorder, **extra)

    loaded = read_image(tmp_path / "deep.tif")

    assert loaded.bit_depth == 16
    assert torch.equal(loaded.image, torch.from_numpy(pixels[..., :3].astype(np.float32).transpose(2, 0, 1)) / 65535)
    if channels == 4:
        assert torch.equal(loaded.alpha[0], torch.from_numpy(pixels[..., 3].astype(np.float32)) / 65535)


def test_16bit_grey_png(tmp_path):
    grey = np.random.default_rng(1).integers(0, 65536, (6, 8), dtype=np.uint16)
    file = tmp_path / "grey16.png"
    Image.fromarray(grey).save(file)  # Pillow writes I;16 as a 16-bit grey PNG

    loaded = read_image(file)

    assert (loaded.bit_depth, loaded.mode, loaded.alpha) == (16, "I;16", None)
    assert torch.equal(loaded.image, torch.from_numpy(grey.astype(np.float32)).expand(3, -1, -1) / 65535)


# ----------------------------------------------------------------------------- round trips


def test_8bit_png_round_trip_exact(tmp_path):
    image = torch.rand(3, 10, 14) * 1.2 - 0.1  # out-of-range values are clamped
    file = write_image(tmp_path / "out.png", image)

    stored = np.asarray(Image.open(file)).astype(np.int64)
    assert np.array_equal(stored, expected_levels(image, 255).transpose(1, 2, 0))
    loaded = read_image(file)
    assert (loaded.bit_depth, loaded.mode, loaded.alpha) == (8, "RGB", None)
    assert torch.equal(loaded.image, quantize(image, 8))


def test_16bit_png_round_trip_keeps_more_than_8_bits(tmp_path):
    image = torch.rand(3, 7, 9)
    alpha = torch.rand(1, 7, 9)
    profile = b"not a real profile, only bytes to carry"
    file = write_image(tmp_path / "out.png", image, bit_depth=16, alpha=alpha, icc_profile=profile)

    pixels, chunks = decode_png(file.read_bytes())
    assert pixels.shape == (7, 9, 4)
    assert np.array_equal(pixels[..., :3], expected_levels(image, 65535).transpose(1, 2, 0))
    assert np.array_equal(pixels[..., 3], expected_levels(alpha, 65535)[0])
    assert zlib.decompress(chunks[b"iCCP"].split(b"\x00", 1)[1][1:]) == profile

    loaded = read_image(file)
    assert loaded.bit_depth == 16
    assert loaded.icc_profile == profile
    assert torch.equal(loaded.image, quantize(image, 16))
    assert torch.equal(loaded.alpha, quantize(alpha, 16))
    error_16 = (loaded.image - image).abs().max().item()
    error_8 = (quantize(image, 8) - image).abs().max().item()
    assert error_16 <= 0.5 / 65535 + 1e-7
    assert error_8 > 50 * error_16  # i.e. the file really holds more than 8 bits


def test_rgba_png_keeps_alpha(tmp_path):
    image, alpha = torch.rand(3, 5, 6), torch.rand(1, 5, 6)
    file = write_image(tmp_path / "rgba.png", image, alpha=alpha)

    assert Image.open(file).mode == "RGBA"
    assert np.array_equal(np.asarray(Image.open(file))[..., 3].astype(np.int64), expected_levels(alpha, 255)[0])
    loaded = read_image(file)
    assert loaded.mode == "RGBA"
    assert torch.equal(loaded.image, quantize(image))
    assert torch.equal(loaded.alpha, quantize(alpha))


def test_tiff_round_trip_with_alpha(tmp_path):
    image, alpha = torch.rand(3, 4, 5), torch.rand(4, 5)
    loaded = read_image(write_image(tmp_path / "x.tif", image, alpha=alpha))
    assert torch.equal(loaded.image, quantize(image))
    assert torch.equal(loaded.alpha, quantize(alpha)[None])


def test_jpeg_written_at_high_quality(tmp_path):
    ramp = torch.linspace(0, 1, 32)
    image = torch.stack([ramp.expand(24, 32), ramp.flip(0).expand(24, 32), torch.full((24, 32), 0.5)])
    file = write_image(tmp_path / "x.jpeg", image)
    assert Image.open(file).format == "JPEG"
    assert (read_image(file).image - image).abs().mean() < 2 / 255


def test_icc_profile_survives_8bit_png(tmp_path):
    from PIL import ImageCms

    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    file = write_image(tmp_path / "icc.png", torch.rand(3, 4, 4), icc_profile=profile)
    assert read_image(file).icc_profile == profile


# ----------------------------------------------------------------------------- conversions


def test_grey_is_replicated_to_rgb(tmp_path):
    grey = np.arange(24, dtype=np.uint8).reshape(4, 6) * 10
    Image.fromarray(grey, mode="L").save(tmp_path / "grey.png")
    loaded = read_image(tmp_path / "grey.png")
    assert (loaded.mode, loaded.bit_depth, loaded.alpha, loaded.icc_profile) == ("L", 8, None, None)
    assert loaded.image.shape == (3, 4, 6)
    for channel in loaded.image:
        assert torch.equal(channel, torch.from_numpy(grey.astype(np.float32)) / 255)


def test_grey_with_alpha(tmp_path):
    pixels = np.random.default_rng(2).integers(0, 256, (3, 5, 2), dtype=np.uint8)
    Image.fromarray(pixels, mode="LA").save(tmp_path / "la.png")
    loaded = read_image(tmp_path / "la.png")
    assert torch.equal(loaded.image, torch.from_numpy(pixels[..., 0].astype(np.float32)).expand(3, -1, -1) / 255)
    assert torch.equal(loaded.alpha[0], torch.from_numpy(pixels[..., 1].astype(np.float32)) / 255)


def test_palette_becomes_rgb_or_rgba(tmp_path):
    colours = [(255, 0, 0), (0, 128, 0), (10, 20, 30), (200, 200, 0)]
    indices = np.array([[0, 1, 2, 3], [3, 2, 1, 0]], dtype=np.uint8)
    palette_image = Image.fromarray(indices, mode="P")
    palette_image.putpalette([value for colour in colours for value in colour])
    palette_image.save(tmp_path / "p.png")
    palette_image.save(tmp_path / "p_transparent.png", transparency=2)

    expected = np.array(colours, dtype=np.float32)[indices].transpose(2, 0, 1) / 255
    plain = read_image(tmp_path / "p.png")
    assert plain.mode == "P" and plain.alpha is None
    assert torch.equal(plain.image, torch.from_numpy(expected))

    transparent = read_image(tmp_path / "p_transparent.png")
    assert torch.equal(transparent.image, torch.from_numpy(expected))
    assert torch.equal(transparent.alpha[0], torch.from_numpy((indices != 2).astype(np.float32)))


def test_cmyk_converted_to_rgb(tmp_path):
    cmyk = np.array([[[255, 0, 0, 0], [0, 255, 0, 0]], [[0, 0, 0, 255], [40, 80, 120, 100]]], dtype=np.uint8)
    Image.fromarray(cmyk, mode="CMYK").save(tmp_path / "cmyk.tif")
    loaded = read_image(tmp_path / "cmyk.tif")
    # Without a profile: R = (255 - C)(255 - K) / 255 rounded, likewise G from M, B from Y.
    ink = cmyk.astype(np.float64)
    naive = np.floor((255 - ink[..., :3]) * (255 - ink[..., 3:]) / 255 + 0.5)
    assert loaded.mode == "CMYK"
    assert torch.equal(loaded.image, torch.from_numpy(naive.astype(np.float32).transpose(2, 0, 1)) / 255)


def test_exif_orientation_applied(tmp_path):
    # Stored 16 wide x 8 high, red on the left half; orientation 6 = display rotated 90 degrees
    # clockwise, so the displayed image is 8 wide x 16 high with red on the top half.
    stored = np.zeros((8, 16, 3), dtype=np.uint8)
    stored[:, :8] = (255, 0, 0)
    stored[:, 8:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(tmp_path / "rotated.jpg", exif=exif.tobytes(), quality=95)

    loaded = read_image(tmp_path / "rotated.jpg")

    assert loaded.image.shape == (3, 16, 8)
    top, bottom = loaded.image[:, 2:6].mean(dim=(1, 2)), loaded.image[:, 10:14].mean(dim=(1, 2))
    assert top[0] > 0.9 and top[2] < 0.1
    assert bottom[2] > 0.9 and bottom[0] < 0.1


# ----------------------------------------------------------------------------- read errors


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(ZooError, match="does not exist"):
        read_image(tmp_path / "nope.png")
    with pytest.raises(ZooError, match="folder"):
        read_image(tmp_path)


def test_non_image(tmp_path):
    file = tmp_path / "notes.png"
    file.write_text("this is not a picture")
    with pytest.raises(ZooError, match="notes.png is not an image"):
        read_image(file)


@pytest.mark.parametrize("extension", [".png", ".jpg"])
def test_truncated_image(tmp_path, extension, monkeypatch):
    file = tmp_path / f"cut{extension}"
    write_image(file, torch.rand(3, 64, 64))
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])
    # Even if someone switched Pillow's lenient mode on, truncation is reported...
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(ZooError, match=f"cut{extension}.*truncated") as caught:
        read_image(file)
    assert "\n" not in str(caught.value)
    # ...and their setting is given back.
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True


def test_pixel_limit(tmp_path, monkeypatch):
    file = write_image(tmp_path / "big.png", torch.rand(3, 10, 20))
    with pytest.raises(ZooError, match=r"20x10 = 200 pixels, over the limit of 199"):
        read_image(file, max_pixels=199)
    assert read_image(file, max_pixels=200).image.shape == (3, 10, 20)
    monkeypatch.setenv("ZOO_MAX_PIXELS", "150")
    with pytest.raises(ZooError, match="ZOO_MAX_PIXELS"):
        read_image(file)
    monkeypatch.setenv("ZOO_MAX_PIXELS", "lots")
    with pytest.raises(ZooError, match="ZOO_MAX_PIXELS"):
        read_image(file)


def test_pillow_bomb_limit_follows_ours(tmp_path):
    # A limit above Pillow's own bomb threshold must not be blocked by Pillow.
    file = write_image(tmp_path / "img.png", torch.rand(3, 30, 30))
    saved = Image.MAX_IMAGE_PIXELS
    try:
        Image.MAX_IMAGE_PIXELS = 100  # Pillow would refuse > 200 pixels
        assert read_image(file, max_pixels=1000).image.shape == (3, 30, 30)
        assert Image.MAX_IMAGE_PIXELS == 100
    finally:
        Image.MAX_IMAGE_PIXELS = saved


# ----------------------------------------------------------------------------- writing rules


def test_never_clobbers_without_overwrite(tmp_path):
    file = tmp_path / "out.png"
    write_image(file, torch.zeros(3, 4, 4))
    before = file.read_bytes()
    with pytest.raises(ZooError, match="already exists; pass --overwrite"):
        write_image(file, torch.ones(3, 4, 4))
    assert file.read_bytes() == before
    # The no-clobber publish step itself refuses a file that appeared after the first check.
    with pytest.raises(ZooError, match="--overwrite"):
        zio._write_atomically(file, b"other bytes", overwrite=False)
    assert file.read_bytes() == before

    write_image(file, torch.ones(3, 4, 4), overwrite=True)
    assert torch.equal(read_image(file).image, torch.ones(3, 4, 4))
    assert sorted(os.listdir(tmp_path)) == ["out.png"]  # no temporary files left


def test_written_file_has_normal_permissions(tmp_path):
    file = write_image(tmp_path / "perm.png", torch.rand(3, 2, 2))
    assert file.stat().st_mode & 0o777 == zio._FILE_MODE
    assert file.stat().st_mode & 0o044  # readable by others under any usual umask


def test_failing_write_keeps_previous_file(tmp_path, monkeypatch):
    file = write_image(tmp_path / "keep.png", torch.rand(3, 8, 8))
    before = file.read_bytes()

    def disk_full(descriptor):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(ZooError, match="cannot write .*keep.png: No space left"):
        write_image(file, torch.rand(3, 8, 8), overwrite=True)
    monkeypatch.undo()

    def broken_encoder(*args, **kwargs):
        raise RuntimeError("encoder crashed")

    monkeypatch.setattr(Image.Image, "save", broken_encoder)
    with pytest.raises(RuntimeError):
        write_image(file, torch.rand(3, 8, 8), overwrite=True)

    assert file.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["keep.png"]


def test_write_creates_parent_folders(tmp_path):
    file = write_image(tmp_path / "a" / "b" / "c.png", torch.rand(3, 2, 3))
    assert file.is_file()


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("x.gif", {}, "unknown image extension '.gif'"),
        ("noext", {}, "unknown image extension"),
        ("x.jpg", {"bit_depth": 16}, "write a .png for 16-bit"),
        ("x.tif", {"bit_depth": 16}, "write a .png for 16-bit"),
        ("x.png", {"bit_depth": 12}, "bit depth 12"),
        ("x.jpg", {"alpha": torch.ones(1, 2, 2)}, "JPEG has none"),
    ],
)
def test_write_refusals(tmp_path, name, options, message):
    with pytest.raises(ZooError, match=message):
        write_image(tmp_path / name, torch.rand(3, 2, 2), **options)
    assert os.listdir(tmp_path) == []


def test_write_rejects_wrong_shapes_and_nan(tmp_path):
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        write_image(tmp_path / "x.png", torch.rand(1, 3, 2, 2))
    with pytest.raises(ValueError, match="alpha"):
        write_image(tmp_path / "x.png", torch.rand(3, 2, 2), alpha=torch.rand(1, 3, 3))
    image = torch.rand(3, 2, 2)
    image[0, 0, 0] = float("nan")
    with pytest.raises(ZooError, match="1 NaN or infinite"):
        write_image(tmp_path / "x.png", image)
    assert os.listdir(tmp_path) == []


def test_quantize_matches_numpy_rounding():
    image = torch.tensor([-0.5, 0.0, 0.5 / 255, 1.5 / 255, 0.3, 0.999, 1.0, 7.0])
    assert torch.equal(quantize(image) * 255, torch.from_numpy(expected_levels(image, 255).astype(np.float32)))
    assert torch.equal(quantize(image, 16) * 65535, torch.from_numpy(expected_levels(image, 65535).astype(np.float32)))
    random = torch.rand(2, 3, 5, 5)
    assert quantize(random).shape == random.shape
    assert (quantize(random) - random).abs().max() <= 0.5 / 255 + 1e-7


def test_loaded_image_fields(tmp_path):
    file = write_image(tmp_path / "f.png", torch.rand(3, 3, 5))
    loaded = read_image(str(file))
    assert isinstance(loaded, LoadedImage)
    assert loaded.path == Path(file)
    assert (loaded.height, loaded.width) == (3, 5)
    assert loaded.image.dtype == torch.float32


# ----------------------------------------------------------------------------- restoring files (zoo restore / zoo run)


def _upscale_twice(image: torch.Tensor) -> torch.Tensor:
    """A stand-in x2 super-resolution: nearest-neighbour upscaling (exact, so outputs are predictable)."""
    return image.repeat_interleave(2, dim=1).repeat_interleave(2, dim=2)


def test_restore_image_files_scales_alpha_and_keeps_bit_depth(tmp_path):
    from zoo.inference import plan_outputs, restore_image_files

    deep = np.random.default_rng(0).integers(0, 65536, size=(4, 6, 4), dtype=np.uint16)
    (tmp_path / "deep.png").write_bytes(zio.encode_png16(deep))  # 16-bit RGBA (Pillow cannot write it)
    write_image(tmp_path / "flat.jpg", torch.rand(3, 4, 6))
    inputs = [tmp_path / "deep.png", tmp_path / "flat.jpg"]
    targets = plan_outputs(inputs, f"{tmp_path / 'out'}/", overwrite=False)  # a new folder ends in /
    restored_so_far = []

    def restore(image):
        restored_so_far.append(image.shape)
        return _upscale_twice(image)

    records = restore_image_files(inputs, targets, restore, scale=2, details=lambda: {"after": len(restored_so_far)})
    assert [Path(r["output"]).name for r in records] == ["deep.png", "flat.jpg"]
    assert [(r["height"], r["width"]) for r in records] == [(4, 6), (4, 6)]
    restored = read_image(tmp_path / "out" / "deep.png")
    assert restored.bit_depth == 16 and (restored.height, restored.width) == (8, 12)
    source = read_image(tmp_path / "deep.png")
    assert torch.equal(restored.image, _upscale_twice(source.image))  # 16-bit levels survive exactly
    assert restored.alpha is not None and restored.alpha.shape == (1, 8, 12)
    upscaled_alpha = torch.nn.functional.interpolate(source.alpha[None], scale_factor=2, mode="bilinear")[0]
    assert (restored.alpha - upscaled_alpha).abs().max() <= 0.5 / 65535 + 1e-7
    assert read_image(tmp_path / "out" / "flat.jpg").bit_depth == 8
    assert [r["after"] for r in records] == [1, 2]  # details() is asked after each image
    assert records[0]["seconds"] >= 0


def test_restore_image_files_checks_every_input_before_writing(tmp_path):
    from zoo.inference import restore_image_files

    write_image(tmp_path / "a.png", torch.rand(3, 4, 4))
    write_image(tmp_path / "b.png", torch.rand(3, 4, 4), alpha=torch.rand(1, 4, 4))
    out = tmp_path / "out"
    with pytest.raises(ZooError, match="alpha channel that JPEG output"):
        restore_image_files([tmp_path / "a.png", tmp_path / "b.png"], [out / "a.png", out / "b.jpg"],
                            lambda image: image)
    assert not out.exists()  # the first (valid) image was not written either


def test_restore_image_files_writes_8_bits_where_the_format_cannot_hold_16(tmp_path):
    from zoo.inference import restore_image_files

    tifffile = pytest.importorskip("tifffile")
    tifffile.imwrite(tmp_path / "deep.tif", np.full((3, 5, 3), 40000, dtype=np.uint16), photometric="rgb")
    records = restore_image_files([tmp_path / "deep.tif"], [tmp_path / "out.tif"], lambda image: image)
    written = read_image(records[0]["output"])
    assert written.bit_depth == 8
    assert torch.allclose(written.image, torch.full((3, 3, 5), round(40000 / 65535 * 255) / 255))
