"""Image files <-> tensors.

Reading (:func:`read_image`) turns any common image file into a float32 RGB tensor in [0, 1]
plus what is needed to write the result back faithfully (bit depth, alpha, ICC profile).
Writing (:func:`write_image`) is atomic and never replaces a file unless asked to.

Conversion rules on reading (the same text is in docs/data.md):

* 8-bit sources are divided by 255, 16-bit sources by 65535 (``bit_depth`` records which).
  16-bit-per-channel PNGs and TIFFs keep all 16 bits, although Pillow itself holds them as 8.
* Greyscale (1-bit, L, I;16) is replicated to the three RGB channels.
* Alpha (LA, RGBA, PA, palette or RGB/L with a transparent colour) is split off and returned
  separately in ``LoadedImage.alpha`` -- never composited -- so it can be re-attached on output.
* Palette images (P) become RGB, or RGB + alpha when the palette has transparency.
* CMYK is converted to RGB (through its ICC profile to sRGB when it has one, else naively).
* The EXIF orientation tag is applied, so the tensor is upright as a viewer shows it.
* Multi-frame files (GIF, APNG, animated WebP, TIFF pages) give their first frame;
  ``LoadedImage.frames`` counts them and ``LoadedImage.notes`` says so, for the caller to show.

A file that cannot be decoded (truncated, corrupt, malformed, a header claiming more pixels than
the limit) raises :class:`ZooError` naming the file, never another exception; see
docs/bad_inputs.md for every bad input tried.
"""

from __future__ import annotations

import io
import os
import re
import struct
import sys
import tempfile
import threading
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from zoo.atomic import FILE_MODE as _FILE_MODE  # mkstemp files are 0600; outputs get the usual mode
from zoo.errors import ZooError

#: Default largest image (width x height) that :func:`read_image` decodes: 100 megapixels,
#: about 1.2 GB as float32 RGB. Guards against decompression bombs (tiny files that expand to
#: huge images). Override per call with ``max_pixels=`` or for the process with ZOO_MAX_PIXELS.
MAX_PIXELS = 100_000_000
MAX_PIXELS_ENV = "ZOO_MAX_PIXELS"

#: Extensions read by :func:`read_image` when scanning folders (compared lower-cased).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")

#: Extensions :func:`write_image` can write, and the Pillow format for each.
WRITE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF"}

JPEG_QUALITY = 95

_MAX_LEVEL = {8: 255, 16: 65535}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# Pillow's truncation and bomb settings are process globals: change them under one lock.
_PILLOW_LOCK = threading.RLock()




@dataclass
class LoadedImage:
    """An image file decoded by :func:`read_image`.

    ``image``: (3, H, W) float32 RGB in [0, 1]. ``bit_depth``: 8 or 16, the bits per channel of
    the source. ``mode``: the Pillow mode of the file as opened (e.g. "RGB", "P", "I;16", "CMYK";
    16-bit colour PNGs report "RGB"/"RGBA" like Pillow does). ``alpha``: (1, H, W) float32 in
    [0, 1] or None. ``icc_profile``: the embedded colour profile when it describes RGB data
    (dropped for grey and CMYK sources, whose profiles do not fit the RGB tensor), else None.
    ``frames``: frames or pages in the file (animated GIF/PNG/WebP, multi-page TIFF); only the
    first is in ``image``. ``notes``: what the caller should tell the user about this read, one
    line each (only the first frame used; Pillow's warnings, e.g. corrupt EXIF data), else empty.
    """

    image: torch.Tensor
    bit_depth: int
    mode: str
    alpha: torch.Tensor | None
    path: Path
    icc_profile: bytes | None = None
    frames: int = 1
    notes: list[str] = field(default_factory=list)

    @property
    def height(self) -> int:
        return int(self.image.shape[-2])

    @property
    def width(self) -> int:
        return int(self.image.shape[-1])


def resolve_max_pixels(max_pixels: int | None = None) -> int:
    """The pixel limit in force: ``max_pixels`` if given, else env ZOO_MAX_PIXELS, else MAX_PIXELS."""
    if max_pixels is not None:
        if int(max_pixels) <= 0:
            raise ValueError(f"max_pixels must be positive, got {max_pixels}")
        return int(max_pixels)
    raw = os.environ.get(MAX_PIXELS_ENV)
    if raw is None or not raw.strip():
        return MAX_PIXELS
    try:
        value = int(float(raw))
    except ValueError:
        value = 0
    if value <= 0:
        raise ZooError(
            f"{MAX_PIXELS_ENV}={raw!r} is not a positive number of pixels",
            f"set {MAX_PIXELS_ENV} to e.g. 200000000 or unset it",
        )
    return value


# ----------------------------------------------------------------------------- reading


def read_image(path: str | os.PathLike, *, max_pixels: int | None = None) -> LoadedImage:
    """Read an image file into a (3, H, W) float32 RGB tensor in [0, 1].

    Handles PNG (8- and 16-bit per channel), JPEG, TIFF, BMP, WebP, GIF; greyscale, palette,
    alpha and CMYK sources, following the conversion rules in this module's docstring. Images
    larger than ``max_pixels`` (default :data:`MAX_PIXELS` or env ZOO_MAX_PIXELS) are refused
    before decoding. A missing file, a folder, a non-image, or a truncated or corrupt image
    raises :class:`ZooError` naming the file.
    """
    path = Path(path)
    limit = resolve_max_pixels(max_pixels)
    if not path.exists():
        raise ZooError(f"image {path} does not exist", "check the path")
    if path.is_dir():
        raise ZooError(f"{path} is a folder, not an image file", "pass one image file")
    with _pillow_settings(limit) as pillow:
        try:
            with Image.open(path) as opened:  # reads the header only
                _check_pixel_count(path, opened.size, limit)
                pillow.guard_decoding()
                loaded = _decode(path, opened)
            loaded.notes += [f"{path}: {message}" for message in pillow.caught_messages()]
            return loaded
        except ZooError:
            raise
        except PermissionError as err:
            raise ZooError(f"cannot read {path}: permission denied", "check the file's permissions") from err
        except UnidentifiedImageError as err:
            kind = _claimed_format(path)
            if kind:
                raise ZooError(f"cannot decode {path}: it starts like a {kind} file but is truncated or corrupt",
                               "re-download or re-export the image") from err
            raise ZooError(
                f"{path} is not an image file Pillow can read",
                "pass a PNG, JPEG, TIFF, BMP or WebP image",
            ) from err
        except Image.DecompressionBombError as err:  # a frame larger than the header said (the zoo's limit)
            found = re.search(r"\((\d+) pixels\)", str(err))
            raise _over_limit(path, f"holds a frame of {int(found.group(1)):,} pixels" if found else
                              "holds a frame", int(found.group(1)) if found else None, limit) from err
        except _BROKEN_FILE_ERRORS as err:
            reason = " ".join(str(err).split()) or type(err).__name__
            raise ZooError(
                f"cannot decode {path}: the file is truncated or corrupt ({reason})",
                "re-download or re-export the image",
            ) from err


#: What Pillow's decoders raise for a broken file; here none of them means anything else. (TypeError:
#: "Missing dimensions", a TIFF page without its ImageWidth tag, found by tests/test_io_fuzz.py.)
_BROKEN_FILE_ERRORS = (OSError, SyntaxError, ValueError, TypeError, EOFError, IndexError, struct.error, zlib.error)

#: First bytes of the formats read_image reads, to tell a broken image from a file of another kind.
_SIGNATURES = {b"\x89PNG\r\n\x1a\n": "PNG", b"\xff\xd8\xff": "JPEG", b"II*\x00": "TIFF", b"MM\x00*": "TIFF",
               b"GIF87a": "GIF", b"GIF89a": "GIF", b"BM": "BMP"}


def _claimed_format(path: Path) -> str | None:
    """The format a file's first bytes announce (None for none of ours, or when unreadable)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(16)
    except OSError:
        return None
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    return next((kind for magic, kind in _SIGNATURES.items() if head.startswith(magic)), None)


class _pillow_settings:
    """Within the block: truncated images raise, warnings raised while decoding (Pillow's "Corrupt
    EXIF data", ...) are kept for :meth:`caught_messages` instead of being printed, and Pillow's
    own decompression-bomb check is off until :meth:`guard_decoding`: opening reads only the
    header, and :func:`_check_pixel_count` then names the size and the zoo's limit (Pillow's
    message would name twice its own limit)."""

    def __init__(self, limit: int):
        self.limit = limit

    def __enter__(self):
        _PILLOW_LOCK.acquire()
        self._saved_truncated = ImageFile.LOAD_TRUNCATED_IMAGES
        self._saved_max = Image.MAX_IMAGE_PIXELS
        self._warnings = warnings.catch_warnings(record=True)
        self._caught = self._warnings.__enter__()
        warnings.simplefilter("always")
        # Our own limit is checked first; Pillow's warning would only repeat it.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        Image.MAX_IMAGE_PIXELS = None
        return self

    def guard_decoding(self) -> None:
        """Pillow's bomb check on again for what decoding finds later (a GIF frame larger than its
        screen): it raises above twice MAX_IMAGE_PIXELS, i.e. above the zoo's limit."""
        Image.MAX_IMAGE_PIXELS = (self.limit + 1) // 2

    def caught_messages(self) -> list[str]:
        """The distinct warning messages so far, one line each."""
        return list(dict.fromkeys(" ".join(str(caught.message).split()) for caught in self._caught))

    def __exit__(self, *exc_info):
        ImageFile.LOAD_TRUNCATED_IMAGES = self._saved_truncated
        Image.MAX_IMAGE_PIXELS = self._saved_max
        self._warnings.__exit__(*exc_info)
        _PILLOW_LOCK.release()
        return False


def _check_pixel_count(path: Path, size: tuple[int, int], limit: int) -> None:
    width, height = size
    if width * height > limit:
        raise _over_limit(path, f"is {width}x{height} = {width * height:,} pixels", width * height, limit)


def _over_limit(path: Path, what: str, pixels: int | None, limit: int) -> ZooError:
    """The one message for an image over the pixel limit: the zoo's limit and the setting that raises it."""
    setting = f"{MAX_PIXELS_ENV}={pixels}" if pixels else f"{MAX_PIXELS_ENV} higher"
    return ZooError(f"{path} {what}, over the limit of {limit:,} pixels",
                    f"set {setting} if you trust the file")


def _tile_rawmode(image: Image.Image) -> str | None:
    if not image.tile:
        return None
    args = image.tile[0][3]
    if isinstance(args, tuple):
        args = args[0] if args else None
    return args if isinstance(args, str) else None


def _with_rawmode(image: Image.Image, rawmode: str) -> None:
    """Make Pillow's decoder unpack the (still unloaded) image data with another raw mode."""
    new_tiles = []
    for tile in image.tile:
        args = tile[3]
        args = (rawmode, *args[1:]) if isinstance(args, tuple) else rawmode
        new_tiles.append(tile._replace(args=args) if hasattr(tile, "_replace") else (*tile[:3], args))
    image.tile = new_tiles


def _frame_count(path: Path, opened: Image.Image) -> tuple[int, list[str]]:
    """(frames or pages of an opened file, notes for the user). Called after the first frame is
    decoded, since it seeks: a broken later frame then costs a note, not the image. A JPEG's MPO
    extras (depth maps, previews of phone photos) are not frames of the picture: 1."""
    if opened.format == "MPO":
        return 1, []
    try:
        frames = int(opened.n_frames) if getattr(opened, "is_animated", False) else 1
    except _BROKEN_FILE_ERRORS:
        return 2, [f"{path} has more than one frame and the later ones are unreadable; only the first is used"]
    if frames == 1:
        return 1, []
    return frames, [f"{path} has {frames} frames; only the first is used (extract the frame you want as a PNG "
                    "to restore another)"]


def _to_tensor(levels: np.ndarray) -> torch.Tensor:
    """A tensor of its own: a copy, since a Pillow array is read-only (torch warns about those, and
    ``ascontiguousarray`` hands a 1x1 image's array over uncopied)."""
    return torch.from_numpy(np.array(levels, order="C", copy=True))


def _decode(path: Path, opened: Image.Image) -> LoadedImage:
    mode = opened.mode
    icc_profile = opened.info.get("icc_profile") or None
    rawmode = _tile_rawmode(opened)
    grey_alpha_png16 = opened.format == "PNG" and rawmode == "LA;16B"
    if rawmode in _OTHER_BYTE or grey_alpha_png16:
        pixels, alpha = _decode_16bit_colour(path, opened, rawmode)
        bit_depth = 16
        grey = grey_alpha_png16
        mode = "LA" if grey else mode
    else:
        upright = ImageOps.exif_transpose(opened)
        pixels, alpha, bit_depth, grey, cmyk = _pixels_of(upright, icc_profile, path)
        if cmyk:
            icc_profile = None
    if grey:
        icc_profile = None
    frames, notes = _frame_count(path, opened)
    return LoadedImage(
        image=_levels_to_unit(_to_tensor(pixels.transpose(2, 0, 1)), bit_depth),
        bit_depth=bit_depth,
        mode=mode,
        alpha=None if alpha is None else _levels_to_unit(_to_tensor(alpha)[None], bit_depth),
        path=path,
        icc_profile=icc_profile,
        frames=frames,
        notes=notes,
    )


# Raw modes of 16-bit colour samples that Pillow unpacks to their high byte, and the raw mode
# that unpacks the other (low) byte of the same samples instead.
_OTHER_BYTE = {"RGB;16B": "RGB;16L", "RGB;16L": "RGB;16B", "RGBA;16B": "RGBA;16L", "RGBA;16L": "RGBA;16B"}
# "N" = this machine's byte order (libtiff hands decompressed TIFF samples over in it).
_NATIVE = "L" if sys.byteorder == "little" else "B"
_OTHER_BYTE.update({f"{mode};16N": _OTHER_BYTE[f"{mode};16{_NATIVE}"] for mode in ("RGB", "RGBA")})


def _decode_16bit_colour(path: Path, opened: Image.Image, rawmode: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Decode a 16-bit-per-channel colour image (PNG, TIFF) or grey+alpha PNG keeping all 16 bits.

    Pillow holds such images as 8 bits (the high byte of each sample). Its C decoders still do
    the decompressing and un-filtering; we only change how the decoded bytes are unpacked: a
    second decode with the opposite byte order reads the low byte of every sample, and a 16-bit
    grey+alpha pixel is copied whole as four "RGBA" bytes. Returns (H, W, 3) uint16 and
    (H, W) uint16 or None.
    """
    if rawmode == "LA;16B":
        _with_rawmode(opened, "RGBA")
        raw = np.asarray(ImageOps.exif_transpose(opened)).astype(np.uint16)
        grey = (raw[..., 0] << 8) | raw[..., 1]
        alpha = (raw[..., 2] << 8) | raw[..., 3]
        return np.repeat(grey[..., None], 3, axis=2), alpha
    high = np.asarray(ImageOps.exif_transpose(opened)).astype(np.uint16)
    with Image.open(path) as again:
        _with_rawmode(again, _OTHER_BYTE[rawmode])
        low = np.asarray(ImageOps.exif_transpose(again)).astype(np.uint16)
    if low.shape != high.shape:
        raise ValueError("the two decodes of the 16-bit image disagree in size")
    full = (high << 8) | low
    if rawmode.startswith("RGBA"):
        return full[..., :3], full[..., 3]
    return full, None


def _pixels_of(
    image: Image.Image, icc_profile: bytes | None, path: Path
) -> tuple[np.ndarray, np.ndarray | None, int, bool, bool]:
    """(H, W, 3) integer pixels, (H, W) alpha or None, bit depth, is_grey, was_cmyk; ``path``
    names the file in the :class:`ZooError` of a kind of pixels the zoo does not read."""
    mode = image.mode
    grey = mode in ("1", "L", "LA", "La", "I", "F") or mode.startswith("I;16")
    cmyk = mode == "CMYK"
    if "transparency" in image.info and mode in ("L", "RGB", "P"):
        image = image.convert("RGBA")
    elif mode in ("P", "PA"):
        image = image.convert("RGBA" if mode == "PA" or image.palette.mode == "RGBA" else "RGB")
    elif mode == "1":
        image = image.convert("L")
    elif mode == "La":
        image = image.convert("LA")
    elif mode == "RGBa":
        image = image.convert("RGBA")
    elif cmyk:
        image = _cmyk_to_rgb(image, icc_profile)
    elif mode == "F":
        raise ZooError(
            f"{path} holds 32-bit floating-point pixels, which the zoo does not read",
            "save the image as an 8- or 16-bit PNG",
        )
    elif mode not in ("L", "LA", "RGB", "RGBA", "I") and not mode.startswith("I;16"):
        image = image.convert("RGB")

    if image.mode.startswith("I"):
        # 16-bit grey (I;16*) or 32-bit integer grey ("I", e.g. some TIFFs): 16-bit range.
        values = np.asarray(image).astype(np.int64)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise ZooError(
                f"{path} holds 32-bit integer pixels outside 0..65535, which the zoo does not read",
                "save the image as an 8- or 16-bit PNG",
            )
        grey16 = values.astype(np.uint16)
        return np.repeat(grey16[..., None], 3, axis=2), None, 16, True, False
    array = np.asarray(image)
    if image.mode == "L":
        return np.repeat(array[..., None], 3, axis=2), None, 8, grey, cmyk
    if image.mode == "LA":
        return np.repeat(array[..., :1], 3, axis=2), array[..., 1], 8, grey, cmyk
    if image.mode == "RGBA":
        return array[..., :3], array[..., 3], 8, grey, cmyk
    return array, None, 8, grey, cmyk


def _cmyk_to_rgb(image: Image.Image, icc_profile: bytes | None) -> Image.Image:
    if icc_profile:
        try:
            from PIL import ImageCms

            source = ImageCms.ImageCmsProfile(io.BytesIO(icc_profile))
            return ImageCms.profileToProfile(image, source, ImageCms.createProfile("sRGB"), outputMode="RGB")
        except Exception:  # noqa: BLE001 - a broken profile or no littlecms: fall back below
            pass
    return image.convert("RGB")


# ----------------------------------------------------------------------------- quantizing


def _max_level(bit_depth: int) -> int:
    if bit_depth not in _MAX_LEVEL:
        raise ZooError(f"bit depth {bit_depth} is not supported", "use 8 or 16")
    return _MAX_LEVEL[bit_depth]


def _levels_to_unit(levels: torch.Tensor, bit_depth: int) -> torch.Tensor:
    # The one place integer levels become floats: read_image and quantize must agree bit for bit.
    return levels.to(torch.float32) / float(_max_level(bit_depth))


def _unit_to_levels(image: torch.Tensor, bit_depth: int) -> torch.Tensor:
    """Clamp to [0, 1], scale to 0..255 or 0..65535 and round half to even; float32 result."""
    image = image.detach().to(torch.float32)
    if not bool(torch.isfinite(image).all()):
        bad = int((~torch.isfinite(image)).sum())
        raise ZooError(
            f"the image holds {bad} NaN or infinite values and cannot be saved",
            "the model output is broken: check the weights and the input",
        )
    return (image.clamp(0.0, 1.0) * float(_max_level(bit_depth))).round()


def quantize(image: torch.Tensor, bit_depth: int = 8) -> torch.Tensor:
    """The values a file written by :func:`write_image` holds, as float32 in [0, 1].

    ``image`` is any float tensor (e.g. (3, H, W) or (N, 3, H, W)) in [0, 1]; values are clamped
    to [0, 1], scaled by 255 (8-bit) or 65535 (16-bit), rounded half to even and scaled back.
    Evaluation uses it because published metrics are measured on saved 8-bit outputs.
    NaN or infinite values raise :class:`ZooError`.
    """
    return _levels_to_unit(_unit_to_levels(image, bit_depth), bit_depth).to(image.device)


# ----------------------------------------------------------------------------- writing


def write_image(
    path: str | os.PathLike,
    image: torch.Tensor,
    *,
    bit_depth: int = 8,
    alpha: torch.Tensor | None = None,
    overwrite: bool = False,
    icc_profile: bytes | None = None,
) -> Path:
    """Write a (3, H, W) RGB tensor in [0, 1] to ``path`` and return the path.

    The format follows the extension: .png (8- or 16-bit), .jpg/.jpeg (8-bit, quality 95,
    no chroma subsampling), .tif/.tiff (8-bit). Values are clamped to [0, 1] and rounded like
    :func:`quantize`. ``alpha`` ((1, H, W) or (H, W) in [0, 1]) is stored as the alpha channel
    (PNG, TIFF; JPEG has none and refuses it). ``icc_profile`` is embedded when given.

    The file appears atomically: it is written to a temporary file in the same folder, flushed
    and renamed over ``path``; on any failure the temporary file is removed and an existing file
    is left as it was. An existing ``path`` is refused unless ``overwrite=True``. Missing parent
    folders are created.
    """
    path = Path(path)
    extension = path.suffix.lower()
    if extension not in WRITE_FORMATS:
        raise ZooError(
            f"cannot write {path}: unknown image extension {extension or '(none)'!r}",
            "use .png, .jpg, .jpeg, .tif or .tiff",
        )
    file_format = WRITE_FORMATS[extension]
    _max_level(bit_depth)
    if bit_depth == 16 and file_format != "PNG":
        raise ZooError(f"{extension} files cannot hold 16 bits per channel", "write a .png for 16-bit output")
    if alpha is not None and file_format == "JPEG":
        raise ZooError(
            f"cannot keep the alpha channel in {path}: JPEG has none",
            "write a .png or .tif, or drop the alpha channel",
        )
    if path.is_dir():
        raise ZooError(f"cannot write {path}: it is a folder", "give a file name with an image extension")
    if path.exists() and not overwrite:
        raise ZooError(f"{path} already exists", "pass --overwrite to replace it")

    pixels = _hwc_levels(image, bit_depth)
    if alpha is not None:
        alpha_levels = _alpha_levels(alpha, pixels.shape[:2], bit_depth)
        pixels = np.concatenate([pixels, alpha_levels[..., None]], axis=2)
    data = _encode(pixels, file_format, bit_depth, icc_profile)

    path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomically(path, data, overwrite)
    return path


def _hwc_levels(image: torch.Tensor, bit_depth: int) -> np.ndarray:
    if not isinstance(image, torch.Tensor) or image.ndim != 3 or image.shape[0] != 3:
        shape = tuple(image.shape) if hasattr(image, "shape") else type(image).__name__
        raise ValueError(f"write_image expects a (3, H, W) RGB tensor, got {shape}")
    levels = _unit_to_levels(image, bit_depth).to(torch.int32).cpu().numpy()
    dtype = np.uint8 if bit_depth == 8 else np.uint16
    return np.ascontiguousarray(levels.transpose(1, 2, 0).astype(dtype))


def _alpha_levels(alpha: torch.Tensor, size: tuple[int, int], bit_depth: int) -> np.ndarray:
    if alpha.ndim == 3 and alpha.shape[0] == 1:
        alpha = alpha[0]
    if alpha.ndim != 2 or tuple(alpha.shape) != tuple(size):
        raise ValueError(f"alpha must be (1, H, W) or (H, W) with H, W = {size}, got {tuple(alpha.shape)}")
    levels = _unit_to_levels(alpha, bit_depth).to(torch.int32).cpu().numpy()
    return levels.astype(np.uint8 if bit_depth == 8 else np.uint16)


def _encode(pixels: np.ndarray, file_format: str, bit_depth: int, icc_profile: bytes | None) -> bytes:
    if bit_depth == 16:
        return encode_png16(pixels, icc_profile)
    picture = Image.fromarray(pixels, mode="RGBA" if pixels.shape[2] == 4 else "RGB")
    options: dict = {}
    if icc_profile:
        options["icc_profile"] = icc_profile
    if file_format == "JPEG":
        options.update(quality=JPEG_QUALITY, subsampling=0)
    buffer = io.BytesIO()
    picture.save(buffer, format=file_format, **options)
    return buffer.getvalue()


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def encode_png16(pixels: np.ndarray, icc_profile: bytes | None = None) -> bytes:
    """PNG bytes of (H, W, 3) or (H, W, 4) uint16 pixels, 16 bits per channel (RGB or RGBA).

    Pillow cannot write 16-bit colour PNGs, so the file is assembled here: every row uses
    the "Sub" filter (difference to the previous pixel), which compresses photos well.
    """
    height, width, channels = pixels.shape
    if channels not in (3, 4):
        raise ValueError(f"encode_png16 expects 3 or 4 channels, got {channels}")
    rows = np.ascontiguousarray(pixels.astype(">u2")).view(np.uint8).reshape(height, width * channels * 2)
    bytes_per_pixel = channels * 2
    filtered = rows.copy()
    filtered[:, bytes_per_pixel:] = rows[:, bytes_per_pixel:] - rows[:, :-bytes_per_pixel]  # wraps mod 256
    scanlines = np.concatenate([np.ones((height, 1), np.uint8), filtered], axis=1)
    color_type = 2 if channels == 3 else 6
    header = struct.pack(">IIBBBBB", width, height, 16, color_type, 0, 0, 0)
    parts = [_PNG_SIGNATURE, _png_chunk(b"IHDR", header)]
    if icc_profile:
        parts.append(_png_chunk(b"iCCP", b"ICC Profile\x00\x00" + zlib.compress(icc_profile)))
    parts += [_png_chunk(b"IDAT", zlib.compress(scanlines.tobytes(), 6)), _png_chunk(b"IEND", b"")]
    return b"".join(parts)


def _write_atomically(path: Path, data: bytes, overwrite: bool) -> None:
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, _FILE_MODE)
        if overwrite:
            os.replace(temporary, path)
        else:
            _publish_without_clobbering(temporary, path)
    except ZooError:
        raise
    except OSError as err:
        raise ZooError(f"cannot write {path}: {err.strerror or err}", "check free disk space and permissions") from err
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def _publish_without_clobbering(temporary: str, path: Path) -> None:
    # A hard link fails if the name exists, so a file created meanwhile is never replaced.
    try:
        os.link(temporary, path)
    except FileExistsError as err:
        raise ZooError(f"{path} already exists", "pass --overwrite to replace it") from err
    except OSError:
        # Filesystems without hard links: check, then rename (a small race remains).
        if path.exists():
            raise ZooError(f"{path} already exists", "pass --overwrite to replace it") from None
        os.replace(temporary, path)
