"""Seeded synthetic degradations with the conventions of the restoration literature.

Every degradation is a small object with

* ``spec``: its canonical spec string (``parse_degradation(d.spec)`` rebuilds it; parameters
  left at their defaults are omitted, so ``parse_degradation("motion-blur").spec == "motion-blur"``);
* ``scale``: how many times smaller the degraded image is (1, except ``bicubic:xN``);
* ``__call__(clean, seed)``: the degraded image of a clean float32 CHW RGB image in [0, 1];
  the same (clean, seed) always gives the same result, since all randomness comes from local
  ``torch.Generator`` / ``numpy.random.Generator`` objects seeded with ``seed`` (the global RNGs
  are never touched);
* ``target(clean)``: the reference a restored output is scored against (the clean image, or
  its mod-crop for super-resolution).

Spec grammar (``parse_degradation``); numbers marked RANGE accept ``LO-HI`` and are then drawn
uniformly per image from the seed::

    none
    gaussian:SIGMA | gaussian:LO-HI           AWGN, sigma on the 0-255 scale, not clipped
    poisson-gaussian[:a=A,b=B]                y = a*Poisson(x/a) + N(0, b) on [0, 1]
    motion-blur[:size=N,length=RANGE,exposure=RANGE,noise=RANGE,jpeg=RANGE]
    rain[:density=RANGE,length=RANGE,angle=RANGE,intensity=RANGE,width=RANGE,blend=add|screen]
    bicubic:x2 | bicubic:x3 | bicubic:x4      MATLAB bicubic downscale, then 8-bit quantization
    SPEC || SPEC [|| SPEC ...]                one of the alternatives per image: number seed mod n

See docs/conventions.md for the sources of each convention.
"""

from __future__ import annotations

import cmath
import math
import re
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from zoo.data.resize import check_downscalable, imresize, mod_crop
from zoo.errors import ZooError

__all__ = [
    "Degradation",
    "NoDegradation",
    "GaussianNoise",
    "PoissonGaussianNoise",
    "MotionBlur",
    "jpeg_compress",
    "JPEG_MCU",
    "RainStreaks",
    "BicubicDownscale",
    "OneOf",
    "resolve",
    "parse_degradation",
    "camera_shake_kernel",
    "camera_shake_trajectory",
    "rain_streak_kernel",
    "convolve_symmetric",
    "VALID_FORMS",
]

#: The accepted spec forms, listed in error messages.
VALID_FORMS = (
    "none",
    "gaussian:SIGMA or gaussian:LO-HI (sigma on 0-255, e.g. gaussian:25, gaussian:15-50)",
    "poisson-gaussian[:a=A,b=B]",
    "motion-blur[:size=N,length=L,exposure=E,noise=S,jpeg=Q] (jpeg: quality 1-100 or LO-HI, e.g. jpeg=60-90)",
    "rain[:density=D,length=L,angle=A,intensity=I,width=W,blend=add|screen]",
    "bicubic:x2|x3|x4",
    "A || B (one of the specs per image, equally likely, e.g. motion-blur:noise=2.55 || motion-blur:jpeg=60-90)",
)

#: Separates the alternatives of a :class:`OneOf` spec.
ONE_OF_SEPARATOR = "||"

_NUMBER = r"\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?"
_RANGE_RE = re.compile(rf"^({_NUMBER})(?:-({_NUMBER}))?$")
#: A number or range with a minus sign (-5, -5-10, 5--1): reported as negative, not as "not a number".
_NEGATIVE_RE = re.compile(rf"^-?(?:{_NUMBER})(?:--?(?:{_NUMBER}))?$")

Range = tuple[float, float]


# --------------------------------------------------------------------------------------------
# Shared helpers


def _check_clean(clean: torch.Tensor) -> None:
    if not torch.is_tensor(clean) or clean.dim() != 3 or not clean.is_floating_point():
        shape = tuple(clean.shape) if torch.is_tensor(clean) else type(clean).__name__
        raise ValueError(f"degradations take one float CHW image, got {shape}")


def _draw(value: Range, rng: np.random.Generator) -> float:
    """A fixed value, or one drawn uniformly from [lo, hi] (consumes one draw either way)."""
    low, high = value
    u = rng.random()
    return low if low == high else low + (high - low) * u


def _format_number(value: float) -> str:
    return f"{value:g}"


def _format_range(value: Range) -> str:
    low, high = value
    return _format_number(low) if low == high else f"{_format_number(low)}-{_format_number(high)}"


def _gaussian_noise(shape, sigma_255: float, generator: torch.Generator) -> torch.Tensor:
    """Float32 N(0, (sigma/255)^2) noise drawn from ``generator`` on the CPU."""
    return torch.randn(shape, generator=generator, dtype=torch.float32) * (sigma_255 / 255.0)


def _symmetric_index(length: int, pad: int) -> torch.Tensor:
    """Indices ``-pad .. length+pad-1`` mirrored with the edge repeated (works for any pad)."""
    index = torch.arange(-pad, length + pad)
    period = 2 * length
    index = torch.remainder(index, period)
    return torch.where(index < length, index, period - 1 - index)


def _fast_fft_length(minimum: int) -> int:
    """The smallest length >= minimum whose only prime factors are 2, 3 and 5 (fast FFTs)."""
    length = minimum
    while True:
        rest = length
        for factor in (2, 3, 5):
            while rest % factor == 0:
                rest //= factor
        if rest == 1:
            return length
        length += 1


def convolve_symmetric(image: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """2-D convolution of every channel with ``kernel``, output the size of the input.

    True convolution (the kernel is flipped, as in ``scipy.ndimage.convolve``), with the image
    extended by symmetric reflection with the edge pixel repeated (``scipy.ndimage`` mode
    'reflect', MATLAB ``padarray(..., 'symmetric')``), so borders get no dark frame.

    Args:
        image: float CHW tensor.
        kernel: 2-D float tensor (kh, kw), odd sizes.
    """
    kh, kw = kernel.shape
    if kh % 2 == 0 or kw % 2 == 0:
        raise ValueError(f"kernel sizes must be odd, got {tuple(kernel.shape)}")
    height, width = image.shape[-2:]
    rows = _symmetric_index(height, kh // 2).to(image.device)
    cols = _symmetric_index(width, kw // 2).to(image.device)
    padded = image[:, rows][:, :, cols].to(torch.float64)
    # FFT convolution: blur and rain kernels reach 31x31 and more, where direct conv2d is slow
    # on a CPU. With FFT lengths >= the padded size, wrap-around only reaches the first kh-1
    # rows and kw-1 columns, which are padding we drop (the 'valid' part is exact).
    fft_shape = tuple(_fast_fft_length(n) for n in padded.shape[-2:])
    spectrum = torch.fft.rfft2(padded, s=fft_shape) * torch.fft.rfft2(
        kernel.to(device=image.device, dtype=torch.float64), s=fft_shape
    )
    full = torch.fft.irfft2(spectrum, s=fft_shape)
    return full[:, kh - 1 : kh - 1 + height, kw - 1 : kw - 1 + width].to(image.dtype)


#: The JPEG block grid with 4:2:0 chroma subsampling, in pixels: one minimum coded unit (MCU)
#: holds 2 x 2 luma blocks of 8 x 8 and one 8 x 8 block of each half-resolution chroma plane.
JPEG_MCU = 16


def jpeg_compress(image: torch.Tensor, quality: int) -> torch.Tensor:
    """The image after a save as a baseline JPEG and a read back: CHW in [0, 1] on 8-bit levels.

    ``image`` (float CHW, 3 channels RGB or 1 grey) is clamped to [0, 1] and rounded to 8 bits as
    :func:`zoo.data.io.quantize` does (what a saved file holds), encoded by Pillow's libjpeg at
    ``quality`` (1-100, the IJG quality scaling of the standard tables) with 4:2:0 chroma
    subsampling (Pillow's default), no optimised Huffman tables, not progressive, and decoded by
    Pillow (libjpeg's default decoder: fancy chroma upsampling). The 8 x 8 blocks and 16 x 16 MCUs
    (:data:`JPEG_MCU`) start at the image's top-left pixel. The result has the input's dtype and
    device and equals :func:`zoo.data.io.read_image` of the JPEG file.
    """
    import io

    from PIL import Image

    from zoo.data.io import _levels_to_unit, _unit_to_levels

    if not torch.is_tensor(image) or image.dim() != 3 or image.shape[0] not in (1, 3):
        shape = tuple(image.shape) if torch.is_tensor(image) else type(image).__name__
        raise ValueError(f"JPEG compresses one RGB or grey CHW image, got {shape}")
    if isinstance(quality, bool) or not isinstance(quality, (int, np.integer)) or not 1 <= quality <= 100:
        raise ValueError(f"JPEG quality must be an integer in [1, 100], got {quality!r}")
    levels = _unit_to_levels(image.cpu(), 8).to(torch.uint8)
    pixels = levels[0].numpy() if image.shape[0] == 1 else levels.permute(1, 2, 0).contiguous().numpy()
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=int(quality), subsampling="4:2:0",
                                 optimize=False, progressive=False)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        array = np.asarray(decoded.convert("L" if image.shape[0] == 1 else "RGB"))
    decoded_levels = torch.from_numpy(array.copy())
    decoded_levels = decoded_levels[None] if image.shape[0] == 1 else decoded_levels.permute(2, 0, 1)
    return _levels_to_unit(decoded_levels, 8).to(device=image.device, dtype=image.dtype).contiguous()


# --------------------------------------------------------------------------------------------
# Degradations


class Degradation:
    """Base class: ``spec``, ``scale`` and ``target``; subclasses implement ``__call__``."""

    spec: str = ""
    scale: int = 1

    def __call__(self, clean: torch.Tensor, seed: int) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    @property
    def context(self) -> int:
        """Pixels of real image around a patch that this degradation reads (its kernel radius).

        Training crops a patch with this margin, degrades it and cuts the margin off again, so a
        patch's blur or streaks come from the image around it, as they do when a whole
        evaluation image is degraded, instead of from a mirrored copy of the patch. 0 for
        per-pixel degradations (noise).
        """
        return 0

    @property
    def grid(self) -> int:
        """The pixel grid a training patch must stay on within its window (see :attr:`context`).

        Training rounds the margin down to a multiple of this: the scale of a downscale (so the
        low-resolution crop is exact), the 16-pixel JPEG block grid (:data:`JPEG_MCU`) of a
        JPEG-compressed degradation (so the patch's blocks are the blocks of the window). 1 when
        any margin works.
        """
        return self.scale

    def target(self, clean: torch.Tensor) -> torch.Tensor:
        """The reference a restored output is compared with (here: the clean image itself)."""
        return clean

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec!r})"

    def __eq__(self, other) -> bool:
        return type(other) is type(self) and other.spec == self.spec

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.spec))


class NoDegradation(Degradation):
    """``none``: returns the clean image unchanged (for checking models on clean inputs)."""

    spec = "none"

    def __call__(self, clean: torch.Tensor, seed: int) -> torch.Tensor:
        _check_clean(clean)
        return clean.clone()


class GaussianNoise(Degradation):
    """Additive white Gaussian noise, ``y = x + (sigma/255) * N(0, 1)``, NOT clipped.

    Convention of DnCNN (Zhang et al. 2017) and FFDNet (Zhang et al. 2018): sigma is given on
    the 0-255 scale, noise is i.i.d. per pixel and channel, and the noisy image is fed to the
    model unclipped (so the noisy-input PSNR is ``20 log10(255 / sigma)``: 20.17 dB at 25).
    ``gaussian:LO-HI`` draws sigma uniformly in [LO, HI] per image (blind training); the drawn
    value is :meth:`sigma_for` (seed), e.g. for FFDNet's noise-level map.
    """

    def __init__(self, sigma: float | Range):
        low, high = (sigma, sigma) if isinstance(sigma, (int, float)) else sigma
        if not 0 <= low <= high:
            raise ValueError(f"sigma range must satisfy 0 <= lo <= hi, got {sigma!r}")
        self.sigma_range: Range = (float(low), float(high))
        self.spec = f"gaussian:{_format_range(self.sigma_range)}"

    def sigma_for(self, seed: int) -> float:
        """The sigma (0-255 scale) that ``self(clean, seed)`` uses."""
        return _draw(self.sigma_range, np.random.default_rng(seed))

    def __call__(self, clean: torch.Tensor, seed: int) -> torch.Tensor:
        _check_clean(clean)
        sigma = self.sigma_for(seed)
        generator = torch.Generator().manual_seed(seed)
        noise = _gaussian_noise(clean.shape, sigma, generator)
        return clean + noise.to(device=clean.device, dtype=clean.dtype)


class PoissonGaussianNoise(Degradation):
    """Heteroscedastic Poissonian-Gaussian noise (Foi et al. 2008), NOT clipped.

    On the [0, 1] scale: ``y = a * P(x / a) + sqrt(b) * N(0, 1)`` with P a Poisson draw, so
    ``E[y] = x`` and ``Var[y] = a * x + b``. ``a`` is the Poisson gain (photon noise; larger = fewer
    photons) and ``b`` the variance of the signal-independent Gaussian part (``b = 0.0004`` is
    sigma 0.02 = 5.1/255). The clipped variant of the paper is not applied: like AWGN, the
    noisy image stays unclipped. ``a = 0`` gives pure Gaussian noise.
    """

    DEFAULTS = {"a": 0.01, "b": 0.0004}

    def __init__(self, a: float = 0.01, b: float = 0.0004):
        if a < 0 or b < 0:
            raise ValueError(f"a and b must be >= 0, got a={a}, b={b}")
        self.a, self.b = float(a), float(b)
        params = [
            f"{name}={_format_number(value)}"
            for name, value in (("a", self.a), ("b", self.b))
            if value != self.DEFAULTS[name]
        ]
        self.spec = "poisson-gaussian" + (":" + ",".join(params) if params else "")

    def __call__(self, clean: torch.Tensor, seed: int) -> torch.Tensor:
        _check_clean(clean)
        generator = torch.Generator().manual_seed(seed)
        signal = clean.detach().to(device="cpu", dtype=torch.float64).clamp(min=0.0)
        if self.a > 0:
            shot = self.a * torch.poisson(signal / self.a, generator=generator)
        else:
            shot = signal
        read = torch.randn(signal.shape, generator=generator, dtype=torch.float64) * math.sqrt(self.b)
        return (shot + read).to(device=clean.device, dtype=clean.dtype)


def camera_shake_trajectory(length: float, rng: np.random.Generator, *, steps: int = 2000) -> np.ndarray:
    """A random camera-shake path (Boracchi & Foi 2012), as ``steps`` complex positions (px).

    The trajectory model of "Modeling the performance of image restoration from motion blur"
    (IEEE TIP 2012), also the generator of DeblurGAN: starting at 0 in a random direction, the
    velocity keeps a constant magnitude (so the path is exactly ``length`` pixels long) and
    is perturbed at each step by Gaussian jitter, a centripetal pull towards the start and
    rare abrupt, roughly reversing "big shakes". The model's hidden parameters are drawn per
    path as in the reference generator: anxiety ~ 0.1 U, centripetal ~ 0.7 U, big-shake
    probability ~ 0.2 U, jitter ~ 10 U (U uniform in [0, 1)). Strong jitter curls the path
    into a small knot, so some kernels blur only a few pixels, as in the reference.
    """
    anxiety = 0.1 * rng.random()
    centripetal = 0.7 * rng.random()
    big_shake_probability = 0.2 * rng.random()
    jitter = 10.0 * rng.random()
    start_angle = 2.0 * math.pi * rng.random()
    shake_draws = rng.random(steps)
    shake_angles = rng.random(steps)
    normal_draws = rng.standard_normal((steps, 2))

    step_length = length / (steps - 1)
    direction = cmath.exp(1j * start_angle)
    velocity = direction * (anxiety if anxiety > 0 else step_length)
    points = [0j] * steps
    for t in range(steps - 1):
        if shake_draws[t] < big_shake_probability * anxiety:
            # An abrupt shake roughly reverses the direction (pi +- 0.5 rad) at twice the speed.
            kick = 2.0 * velocity * cmath.exp(1j * (math.pi + (shake_angles[t] - 0.5)))
        else:
            kick = 0j
        random_walk = jitter * complex(normal_draws[t, 0], normal_draws[t, 1])
        velocity += kick + anxiety * (random_walk - centripetal * points[t]) * step_length
        magnitude = abs(velocity)
        velocity = velocity / magnitude * step_length if magnitude > 0 else direction * step_length
        points[t + 1] = points[t] + velocity
    return np.array(points)


def camera_shake_kernel(
    size: int,
    length: float,
    rng: np.random.Generator,
    *,
    exposure: float = 1.0,
    steps: int = 2000,
) -> np.ndarray:
    """A motion-blur PSF: a :func:`camera_shake_trajectory` rasterised on a square canvas.

    The first ``exposure`` fraction of the path (the shutter time) is splatted bilinearly on a
    ``size`` x ``size`` canvas, the path centred on its bounding box (points beyond the canvas
    are clamped to its edge), and normalised.

    Returns:
        float64 array (size, size), non-negative, summing to 1.
    """
    if size < 3 or size % 2 == 0:
        raise ValueError(f"kernel size must be odd and >= 3, got {size}")
    if not 0 < exposure <= 1:
        raise ValueError(f"exposure must be in (0, 1], got {exposure}")
    path = camera_shake_trajectory(length, rng, steps=steps)
    xs, ys = path.real, path.imag
    centre = (size - 1) / 2.0
    xs = xs - (xs.min() + xs.max()) / 2.0 + centre
    ys = ys - (ys.min() + ys.max()) / 2.0 + centre
    xs = np.clip(xs, 0.0, size - 1.0)
    ys = np.clip(ys, 0.0, size - 1.0)

    # Time weights: the first exposure*steps points fully, the next one fractionally.
    shutter = exposure * steps
    time_weight = np.clip(shutter - np.arange(steps), 0.0, 1.0)

    kernel = np.zeros((size, size), dtype=np.float64)
    x0 = np.minimum(np.floor(xs).astype(np.int64), size - 2)
    y0 = np.minimum(np.floor(ys).astype(np.int64), size - 2)
    fx, fy = xs - x0, ys - y0
    for dy, dx, w in (
        (0, 0, (1 - fy) * (1 - fx)),
        (0, 1, (1 - fy) * fx),
        (1, 0, fy * (1 - fx)),
        (1, 1, fy * fx),
    ):
        np.add.at(kernel, (y0 + dy, x0 + dx), w * time_weight)
    return kernel / kernel.sum()


@dataclass(frozen=True)
class _Param:
    """One key=value parameter of a spec: its default and how to parse and check it."""

    default: object
    parse: Callable[[str], object]
    check: Callable[[object], bool]
    help: str


def _parse_range(text: str) -> Range:
    """``"25"`` -> (25, 25), ``"15-50"`` -> (15, 50). A ValueError's message says what is wrong,
    to follow the parameter's name and value: negative, a reversed range, or not a number."""
    match = _RANGE_RE.match(text)
    if not match:
        if _NEGATIVE_RE.match(text):
            raise ValueError("must be >= 0")
        raise ValueError("is not a number or LOW-HIGH range")
    low = float(match.group(1))
    high = float(match.group(2)) if match.group(2) is not None else low
    if high < low:
        raise ValueError(f"is reversed: range LOW-HIGH needs LOW <= HIGH (write {match.group(2)}-{match.group(1)})")
    return (low, high)


def _parse_quality(text: str) -> Range:
    """``"75"`` -> (75, 75), ``"60-90"`` -> (60, 90): JPEG qualities, integers (range checked by the param)."""
    low, high = _parse_range(text)
    if low != int(low) or high != int(high):
        raise ValueError("is not an integer quality")
    return (int(low), int(high))


def _quality_in_range(value) -> bool:
    return value is None or (isinstance(value, tuple) and len(value) == 2 and 1 <= value[0] <= value[1] <= 100
                             and all(float(q).is_integer() for q in value))


def _parse_odd_int(text: str) -> int:
    if not text.isdigit():
        raise ValueError("is not valid")
    return int(text)


def _parse_blend(text: str) -> str:
    if text not in ("add", "screen"):
        raise ValueError("is not valid")
    return text


def _in(low: float, high: float, *, low_open: bool = False):
    def check(value: Range) -> bool:
        lo, hi = value
        return (lo > low if low_open else lo >= low) and hi <= high

    return check


class _KeyValueDegradation(Degradation):
    """A degradation configured by ``name[:key=value,...]``; builds its canonical spec."""

    name: str = ""
    PARAMS: dict[str, _Param] = {}

    def __init__(self, **values):
        unknown = set(values) - set(self.PARAMS)
        if unknown:
            raise ValueError(f"unknown parameter(s) {sorted(unknown)} for {self.name}")
        self.params = {key: values.get(key, param.default) for key, param in self.PARAMS.items()}
        for key, value in self.params.items():
            if not self.PARAMS[key].check(value):
                raise ValueError(f"{self.name}: {key}={value!r} is out of range ({self.PARAMS[key].help})")
        parts = []
        for key, value in self.params.items():
            if value == self.PARAMS[key].default:
                continue
            text = _format_range(value) if isinstance(value, tuple) else str(value)
            parts.append(f"{key}={text}")
        self.spec = self.name + (":" + ",".join(parts) if parts else "")


class MotionBlur(_KeyValueDegradation):
    """Camera-shake motion blur (Boracchi & Foi 2012 trajectories, as used by DeblurGAN).

    ``motion-blur[:size=N,length=L,exposure=E,noise=S,jpeg=Q]``:

    * ``size`` (odd int, default 65): kernel canvas in pixels;
    * ``length`` (RANGE, default 60): total trajectory length in pixels (the path wanders, so
      the blur extent is usually far shorter: median about 5 px, 90th percentile about 14 px
      at 60);
    * ``exposure`` (RANGE in (0, 1], default 1): fraction of the trajectory the shutter sees
      (DeblurGAN draws from 1/100, 1/10, 1/2, 1);
    * ``noise`` (RANGE, default 0): AWGN sigma on the 0-255 scale added after blurring, unclipped;
    * ``jpeg`` (integer RANGE in [1, 100], default none): JPEG quality; the blurred (and noisy)
      image is then rounded to 8 bits and saved and read back as a JPEG (:func:`jpeg_compress`),
      the setting of the NTIRE 2021 deblurring challenge's JPEG track (``jpeg=60-90`` draws an
      integer quality uniformly per image).

    Defaults are DeblurGAN's generator settings (canvas 64, made odd here; path length 60).
    The image is convolved with the kernel (:func:`convolve_symmetric`: true convolution,
    symmetric edge-repeating extension, same-size output); without noise it stays in [0, 1],
    and with ``jpeg`` it is 8-bit in [0, 1] (the noise clipped). The kernel of a seed is
    :meth:`kernel` (seed), its JPEG quality :meth:`quality_for` (seed).
    """

    name = "motion-blur"
    PARAMS = {
        "size": _Param(65, _parse_odd_int, lambda v: 3 <= v <= 255 and v % 2 == 1, "odd integer in [3, 255]"),
        "length": _Param((60.0, 60.0), _parse_range, _in(0, 1e4, low_open=True), "> 0 pixels"),
        "exposure": _Param((1.0, 1.0), _parse_range, _in(0, 1, low_open=True), "in (0, 1]"),
        "noise": _Param((0.0, 0.0), _parse_range, _in(0, 255), "sigma in [0, 255]"),
        "jpeg": _Param(None, _parse_quality, _quality_in_range,
                       "JPEG quality: an integer or LO-HI range of integers in [1, 100]"),
    }

    @property
    def context(self) -> int:
        """The kernel radius; with JPEG, rounded up to the 16-pixel MCU plus two MCUs.

        A patch on the block grid of its window then gets exactly the blocks it gets in the whole
        image degraded with the grid at the window's corner: its blocks and the neighbouring MCU
        that chroma upsampling reads hold only exactly blurred pixels (one MCU for that
        neighbour, one more for a patch whose size is not a multiple of 16).
        """
        radius = self.params["size"] // 2
        if self.params["jpeg"] is None:
            return radius
        return JPEG_MCU * math.ceil(radius / JPEG_MCU) + 2 * JPEG_MCU

    @property
    def grid(self) -> int:
        return JPEG_MCU if self.params["jpeg"] is not None else self.scale

    def kernel(self, seed: int) -> torch.Tensor:
        """The blur kernel that ``self(clean, seed)`` uses: float32 (size, size), sums to 1."""
        rng = np.random.default_rng(seed)
        length = _draw(self.params["length"], rng)
        exposure = _draw(self.params["exposure"], rng)
        psf = camera_shake_kernel(self.params["size"], length, rng, exposure=exposure)
        return torch.from_numpy(psf).to(torch.float32)

    def quality_for(self, seed: int) -> int | None:
        """The JPEG quality that ``self(clean, seed)`` uses (uniform integer in the range), or None."""
        if self.params["jpeg"] is None:
            return None
        low, high = self.params["jpeg"]
        return int(np.random.default_rng([seed, 2]).integers(int(low), int(high) + 1))

    def __call__(self, clean: torch.Tensor, seed: int) -> torch.Tensor:
        _check_clean(clean)
        blurred = convolve_symmetric(clean, self.kernel(seed).to(clean.device))
        sigma = _draw(self.params["noise"], np.random.default_rng([seed, 1]))
        if sigma > 0:
            generator = torch.Generator().manual_seed(seed)
            noise = _gaussian_noise(clean.shape, sigma, generator)
            blurred = blurred + noise.to(device=clean.device, dtype=clean.dtype)
        quality = self.quality_for(seed)
        if quality is not None:
            blurred = jpeg_compress(blurred, quality)
        return blurred


def rain_streak_kernel(length: float, angle_degrees: float, width: float) -> np.ndarray:
    """An anti-aliased line segment: the streak one rain drop leaves (peak value 1).

    ``length`` pixels long, ``width`` pixels thick (triangular cross-profile, soft ends), at
    ``angle_degrees`` counter-clockwise from the image's horizontal axis (90 = vertical).
    Returns a float64 odd-sized square array with values in [0, 1] (not normalised: a drop
    of brightness v becomes a streak of brightness about v, as after Photoshop's "levels").
    """
    half_extent = length / 2.0 + width + 1.0
    radius = int(math.ceil(half_extent))
    coords = np.arange(-radius, radius + 1, dtype=np.float64)
    rows, cols = np.meshgrid(coords, coords, indexing="ij")
    theta = math.radians(angle_degrees)
    # Image rows grow downwards, so "up" on screen is -row.
    along = cols * math.cos(theta) - rows * math.sin(theta)
    across = cols * math.sin(theta) + rows * math.cos(theta)
    along_weight = np.clip(length / 2.0 + 0.5 - np.abs(along), 0.0, 1.0)
    across_weight = np.clip(1.0 - np.abs(across) / (width / 2.0 + 0.5), 0.0, 1.0)
    return along_weight * across_weight


class RainStreaks(_KeyValueDegradation):
    """Synthetic rain streaks in the Rain100L/Rain12 style (the "Photoshop rain" recipe).

    ``rain[:density=D,length=L,angle=A,intensity=I,width=W,blend=add|screen]``, following the
    synthesis of Yang et al. (CVPR 2017, Rain100L/H) and Fu et al. (2017), which render rain
    with Photoshop's recipe: per-pixel noise -> threshold (levels) -> motion blur along the
    rain direction -> blend onto the background. Here, for each image:

    1. drops: uniform noise n per pixel; pixels with ``n > 1 - density`` become drops with
       brightness ``(n - (1 - density)) / density`` in (0, 1] (the thresholded noise);
    2. streaks: the drop map is convolved with :func:`rain_streak_kernel` (``length`` px,
       ``width`` px, at ``angle`` degrees from horizontal, 90 = vertical), times ``intensity``,
       clipped to [0, 1]: the grey rain layer R, the same for R, G and B;
    3. blend: ``add`` gives ``clip(B + R, 0, 1)`` (the additive model O = B + R of Rain100L),
       ``screen`` gives ``1 - (1 - B)(1 - R)``.

    RANGE parameters are drawn per image from the seed (one angle per image). Defaults
    (density 0.004, length 15-25, angle 80-100, intensity 0.6-0.9, width 1, add) give light,
    near-vertical rain like Rain100L; they are this project's choice, not a published setting.
    """

    name = "rain"
    PARAMS = {
        "density": _Param((0.004, 0.004), _parse_range, _in(0, 1, low_open=True), "in (0, 1]"),
        "length": _Param((15.0, 25.0), _parse_range, _in(1, 500), "in [1, 500] pixels"),
        "angle": _Param((80.0, 100.0), _parse_range, _in(0, 180), "degrees in [0, 180]"),
        "intensity": _Param((0.6, 0.9), _parse_range, _in(0, 1, low_open=True), "in (0, 1]"),
        "width": _Param((1.0, 1.0), _parse_range, _in(0.1, 20), "in [0.1, 20] pixels"),
        "blend": _Param("add", _parse_blend, lambda v: v in ("add", "screen"), "add or screen"),
    }

    @property
    def context(self) -> int:
        return int(math.ceil(self.params["length"][1] / 2.0 + self.params["width"][1] + 1.0))

    def rain_layer(self, height: int, width: int, seed: int) -> torch.Tensor:
        """The grey rain layer R (1 x height x width, float32 in [0, 1]) of a seed."""
        rng = np.random.default_rng(seed)
        density = _draw(self.params["density"], rng)
        length = _draw(self.params["length"], rng)
        angle = _draw(self.params["angle"], rng)
        intensity = _draw(self.params["intensity"], rng)
        streak_width = _draw(self.params["width"], rng)
        noise = rng.random((height, width))
        drops = np.clip((noise - (1.0 - density)) / density, 0.0, 1.0)
        kernel = rain_streak_kernel(length, angle, streak_width)
        streaks = convolve_symmetric(torch.from_numpy(drops)[None], torch.from_numpy(kernel))
        return (streaks * intensity).clamp(0.0, 1.0).to(torch.float32)

    def __call__(self, clean: torch.Tensor, seed: int) -> torch.Tensor:
        _check_clean(clean)
        rain = self.rain_layer(clean.shape[-2], clean.shape[-1], seed)
        rain = rain.to(device=clean.device, dtype=clean.dtype)
        if self.params["blend"] == "screen":
            return 1.0 - (1.0 - clean) * (1.0 - rain)
        return (clean + rain).clamp(0.0, 1.0)


class BicubicDownscale(Degradation):
    """``bicubic:xN``: the SR benchmark low-resolution image.

    The clean HR image is mod-cropped to a multiple of N (bottom/right) and downscaled with
    MATLAB ``imresize(hr, 1/N, 'bicubic')`` (antialiased; :func:`zoo.data.resize.imresize`) as
    MATLAB runs it on a uint8 image, the way the benchmark LR files were made: rows first,
    and after each pass saturated to [0, 1] and rounded half away from zero to 8 bits. The result is (C, H // N, W // N); :meth:`target` is the mod-cropped HR.
    An image smaller than N x N pixels raises :class:`ZooError`. Deterministic: the seed is ignored.
    """

    FACTORS = (2, 3, 4)

    def __init__(self, factor: int):
        if factor not in self.FACTORS:
            raise ValueError(f"bicubic factor must be one of {self.FACTORS}, got {factor}")
        self.scale = int(factor)
        self.spec = f"bicubic:x{self.scale}"

    def target(self, clean: torch.Tensor) -> torch.Tensor:
        check_downscalable(clean, self.scale)
        return mod_crop(clean, self.scale)

    @property
    def context(self) -> int:
        # MATLAB's antialiased bicubic reads 2 * scale HR pixels on each side of an LR pixel.
        return 2 * self.scale

    def __call__(self, clean: torch.Tensor, seed: int) -> torch.Tensor:
        _check_clean(clean)
        check_downscalable(clean, self.scale)  # ZooError rather than an empty low-resolution image
        # Float64 in and out of imresize so that rounding ties fall as MATLAB's do.
        high_res = mod_crop(clean, self.scale).to(torch.float64)
        low_res = imresize(high_res, 1.0 / self.scale, uint8=True)
        return low_res.to(clean.dtype)


class OneOf(Degradation):
    """``A || B [|| ...]``: each image gets one of the alternatives, equally likely.

    The alternative follows from the seed (:meth:`choose`), and the chosen degradation is then
    called with that same seed, so an image is degraded exactly as the alternative's own spec
    would degrade it with that seed. Used to train one model for several conditions (blur with
    and without JPEG compression, as in NTIRE 2021's two deblurring tracks). The alternatives must
    share a scale; a training patch keeps the largest context and a grid every alternative accepts.
    """

    def __init__(self, alternatives: list[Degradation]):
        if len(alternatives) < 2:
            raise ValueError("OneOf needs at least two alternatives")
        scales = sorted({alternative.scale for alternative in alternatives})
        if len(scales) > 1:
            raise ValueError(f"the alternatives change the size differently (scales {scales}); "
                             "one model restores one scale")
        self.alternatives = list(alternatives)
        self.scale = alternatives[0].scale
        self.spec = f" {ONE_OF_SEPARATOR} ".join(alternative.spec for alternative in alternatives)

    def choose(self, seed: int) -> Degradation:
        """The alternative that degrades the image of ``seed``: number ``seed mod n``.

        Training draws its seeds at random (so each alternative is equally likely); validation
        and benchmarks number their images with consecutive seeds, so they cycle through the
        alternatives in turn, each scored on an equal share."""
        return self.alternatives[int(seed) % len(self.alternatives)]

    @property
    def context(self) -> int:
        return max(alternative.context for alternative in self.alternatives)

    @property
    def grid(self) -> int:
        return math.lcm(*(alternative.grid for alternative in self.alternatives))

    def target(self, clean: torch.Tensor) -> torch.Tensor:
        return self.alternatives[0].target(clean)

    def __call__(self, clean: torch.Tensor, seed: int) -> torch.Tensor:
        return self.choose(seed)(clean, seed)


def resolve(degradation: Degradation, seed: int) -> Degradation:
    """The plain degradation that degrades the image of ``seed``: the alternative a
    :class:`OneOf` draws for it, otherwise ``degradation`` itself. Classical references told the
    true sigma or kernel ask it."""
    return degradation.choose(seed) if isinstance(degradation, OneOf) else degradation


# --------------------------------------------------------------------------------------------
# Parsing


def _bad_spec(spec: str, part: str) -> ZooError:
    return ZooError(
        f"bad degradation spec {spec!r}: {part}",
        "valid forms: " + "; ".join(VALID_FORMS),
    )


def _parse_key_values(spec: str, cls: type[_KeyValueDegradation], text: str | None):
    values = {}
    if text is None:
        return cls()
    if not text:
        raise _bad_spec(spec, f"empty parameter list after '{cls.name}:'")
    for item in text.split(","):
        key, sep, raw = item.partition("=")
        key, raw = key.strip(), raw.strip()
        if not sep or not key or not raw:
            raise _bad_spec(spec, f"parameter {item!r} is not key=value")
        if key not in cls.PARAMS:
            raise _bad_spec(
                spec, f"unknown parameter {key!r} for {cls.name} (known: {', '.join(cls.PARAMS)})"
            )
        if key in values:
            raise _bad_spec(spec, f"parameter {key!r} given twice")
        param = cls.PARAMS[key]
        try:
            value = param.parse(raw)
        except ValueError as err:
            raise _bad_spec(spec, f"{key}={raw!r} {err} ({param.help})") from None
        if not param.check(value):
            raise _bad_spec(spec, f"{key}={raw!r} is not valid ({param.help})")
        values[key] = value
    return cls(**values)


def parse_degradation(spec: str) -> Degradation:
    """Build the degradation a spec string names (grammar in the module docstring).

    Raises:
        ZooError: naming the bad part of the spec and listing the valid forms.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise _bad_spec(str(spec), "empty spec")
    text = spec.strip()
    if ONE_OF_SEPARATOR in text:
        parts = [part.strip() for part in text.split(ONE_OF_SEPARATOR)]
        if any(not part for part in parts):
            raise _bad_spec(spec, f"an empty alternative around '{ONE_OF_SEPARATOR}'")
        alternatives = []
        for part in parts:
            try:
                alternatives.append(parse_degradation(part))
            except ZooError as err:
                reason = err.problem.removeprefix(f"bad degradation spec {part!r}: ")
                raise _bad_spec(spec, f"alternative {part!r}: {reason}") from None
        if len({alternative.spec for alternative in alternatives}) < len(alternatives):
            raise _bad_spec(spec, "an alternative is given twice")
        try:
            return OneOf(alternatives)
        except ValueError as err:  # alternatives of different scales
            raise _bad_spec(spec, str(err)) from None
    name, sep, rest = text.partition(":")
    name = name.strip().lower()
    params = rest.strip() if sep else None

    if name == "none":
        if params is not None:
            raise _bad_spec(spec, "'none' takes no parameters")
        return NoDegradation()
    if name == "gaussian":
        if not params:
            raise _bad_spec(spec, "gaussian needs a sigma on the 0-255 scale, e.g. gaussian:25")
        try:
            sigma = _parse_range(params)
        except ValueError as err:
            raise _bad_spec(spec, f"sigma {params!r} {err}") from None
        if sigma[1] > 255:
            raise _bad_spec(spec, f"sigma {params!r} is beyond 255 (sigma is on the 0-255 scale)")
        return GaussianNoise(sigma)
    if name == "poisson-gaussian":
        values = {}
        if params is not None:
            if not params:
                raise _bad_spec(spec, "empty parameter list after 'poisson-gaussian:'")
            for item in params.split(","):
                key, _, raw = item.partition("=")
                key = key.strip()
                if key not in PoissonGaussianNoise.DEFAULTS:
                    raise _bad_spec(spec, f"unknown parameter {item.strip()!r} (known: a, b)")
                if key in values:
                    raise _bad_spec(spec, f"parameter {key!r} given twice")
                try:
                    low, high = _parse_range(raw.strip())
                except ValueError as err:
                    raise _bad_spec(spec, f"{key}={raw.strip()!r} {err}") from None
                if low != high:
                    raise _bad_spec(spec, f"{key}={raw.strip()!r} is not a non-negative number")
                values[key] = low
        return PoissonGaussianNoise(**values)
    if name == "motion-blur":
        return _parse_key_values(spec, MotionBlur, params)
    if name == "rain":
        return _parse_key_values(spec, RainStreaks, params)
    if name == "bicubic":
        match = re.fullmatch(r"x(\d+)", params or "")
        if not match or int(match.group(1)) not in BicubicDownscale.FACTORS:
            raise _bad_spec(spec, f"bicubic factor {params!r} is not x2, x3 or x4")
        return BicubicDownscale(int(match.group(1)))
    raise _bad_spec(spec, f"unknown degradation {name!r}")
