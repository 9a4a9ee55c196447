"""Classical restoration methods: the references a shipped network must beat.

Each method restores one degraded image (float32 RGB, 3 x H x W, values around [0, 1]) and may be
*told* what the degradation was, as the literature does for its references: CBM3D gets the true
noise sigma, Richardson-Lucy and Wiener the true blur kernel. The networks are told nothing.

=================  ========  =================================================================
method             told      what it runs
=================  ========  =================================================================
input              nothing   the degraded image itself (bicubic upscaling of the LR image for SR)
cbm3d              sigma     ``bm3d.bm3d_rgb`` with the true sigma (Dabov et al. 2007)
nl-means           nothing   scikit-image ``denoise_nl_means``, sigma from ``estimate_sigma``,
                             h = 0.8 sigma, 5x5 patches, 13x13 search window, fast mode
wavelet            nothing   scikit-image ``denoise_wavelet``, BayesShrink soft thresholds in YCbCr
richardson-lucy    kernel    Richardson-Lucy (as scikit-image's), iterations from
                             :data:`DECONVOLUTION_SETTINGS`
wiener             kernel    Wiener with a Laplacian regulariser (as scikit-image's), balance
                             from :data:`DECONVOLUTION_SETTINGS`
=================  ========  =================================================================

The two deconvolutions run with FFTs on the image extended symmetrically by the kernel radius (the
way the zoo's blur treats borders) and are cropped back, so they invert exactly the operator that
made the image and their borders do not ring. Their one free
parameter each was chosen on training images (urban100), never on an evaluation set:
``python -m zoo.benchmarks.classical --tune`` reruns that choice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from zoo.data.degradations import resolve
from zoo.errors import ZooError

__all__ = ["ClassicalMethod", "CLASSICAL_METHODS", "classical_method", "DECONVOLUTION_SETTINGS",
           "deconvolution_settings"]

#: Richardson-Lucy iterations and Wiener balance per blur setting, keyed by (noise sigma on 0-255, JPEG
#: quality range or None), each the best of a grid on 8 urban100 crops of 192x192
#: (``python -m zoo.benchmarks.classical --tune SPEC``, RGB PSNR, dB): noise-free ``motion-blur``: RL 150
#: iterations 31.67 (still rising slowly: 300+ cost minutes per image), Wiener 1e-4 31.30;
#: ``motion-blur:noise=2.55``: RL 20 iterations 26.06 (40: 26.01), Wiener 3e-3 25.37;
#: ``motion-blur:jpeg=60-90``: RL 20 iterations 24.91 (40: 24.89, 150: 23.64), Wiener 3e-3 24.24 (1e-4:
#: 21.67): the JPEG round trip acts like noise (blurred input 20.83 dB; 20.90 without JPEG);
#: ``motion-blur:length=10-30,noise=2.55`` (mild shake, what the lite deblurring models train on) has the
#: same optimum as the 60-px row: RL 20 iterations 29.75 (10: 29.42, 40: 29.39), Wiener 3e-3 29.61
#: (1e-3: 29.46, 1e-2: 28.79), so the key stays (noise, JPEG) and not the path length; so does
#: ``motion-blur:length=10-30,jpeg=60-90`` (mild shake saved as a JPEG): RL 20 iterations 27.22 (10: 27.17,
#: 40: 27.01), Wiener 3e-3 27.31 (1e-3: 26.99, 1e-2: 27.09).
DECONVOLUTION_SETTINGS = {(0.0, None): {"rl_iterations": 150, "wiener_balance": 1e-4},
                          (2.55, None): {"rl_iterations": 20, "wiener_balance": 3e-3},
                          (0.0, (60, 90)): {"rl_iterations": 20, "wiener_balance": 3e-3}}


def deconvolution_settings(degradation) -> dict:
    """The tuned RL iterations and Wiener balance for a blur.

    A JPEG-compressed blur takes the rows with JPEG, any other the rows without; among those, the
    row nearest in noise sigma (the top of the blur's range), then in JPEG quality (the middle of
    the ranges).
    """
    params = getattr(degradation, "params", {})
    noise = params.get("noise", (0.0, 0.0))
    sigma = float(noise[1] if isinstance(noise, tuple) else noise)
    jpeg = params.get("jpeg")
    rows = [key for key in DECONVOLUTION_SETTINGS if (key[1] is None) == (jpeg is None)]

    def distance(key):
        quality_gap = 0.0 if jpeg is None else abs(sum(key[1]) / 2 - sum(jpeg) / 2)
        return (abs(key[0] - sigma), quality_gap)

    return DECONVOLUTION_SETTINGS[min(rows, key=distance)]


def _to_numpy(image: torch.Tensor):
    """3 x H x W tensor -> H x W x 3 float64 array."""
    return image.detach().cpu().permute(1, 2, 0).double().numpy()


def _from_numpy(array) -> torch.Tensor:
    """H x W x 3 array -> 3 x H x W float32 tensor."""
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float()


@dataclass(frozen=True)
class ClassicalMethod:
    """A classical reference: ``run(degraded, degradation, seed)`` returns the restored image.

    ``degradation`` is the :class:`zoo.data.degradations.Degradation` that made ``degraded`` from
    the clean image with ``seed``; a method told the sigma or the kernel reads it from there.
    """

    name: str
    #: Tasks it is a reference for (names of zoo.tasks: "denoise", "deblur", "derain", "super-resolution").
    tasks: tuple[str, ...]
    #: What it is told about the degradation: "nothing", "sigma" or "kernel".
    told: str
    #: Python package it needs (None: torch only).
    package: str | None
    run: Callable[[torch.Tensor, object, int], torch.Tensor]
    #: Whether its output is scored as an 8-bit image (clamped to [0, 1] and rounded, as a
    #: restoration is); False for "input", which is scored as is, exactly as ``zoo eval``'s input
    #: row (unclipped Gaussian noise: 20.17 dB at sigma 25, docs/conventions.md).
    scored_as_8bit: bool = True

    def check_available(self) -> None:
        """Raise :class:`ZooError` when the package this method needs is not installed."""
        if self.package is None:
            return
        try:
            __import__(self.package)
        except ImportError as err:
            raise ZooError(f"classical method {self.name} needs the {self.package} package",
                           "pip install -e '.[test]' (scikit-image, bm3d)") from err


def _input(degraded: torch.Tensor, degradation, seed: int) -> torch.Tensor:
    """The degraded image at the target's size, exactly as ``zoo eval``'s input row measures it."""
    from zoo.evaluate import input_reference

    return input_reference(degraded, int(getattr(degradation, "scale", 1) or 1))


def _true_sigma(degradation, seed: int) -> float:
    sigma_for = getattr(resolve(degradation, seed), "sigma_for", None)
    if sigma_for is None:
        raise ZooError(f"cbm3d is told the noise sigma, but {degradation.spec!r} is not Gaussian noise",
                       "use it with gaussian:SIGMA")
    return float(sigma_for(seed))


def _true_kernel(degradation, seed: int):
    kernel = getattr(degradation, "kernel", None)
    if kernel is None:
        raise ZooError(f"deconvolution is told the blur kernel, but {degradation.spec!r} is not a blur",
                       "use it with motion-blur")
    return kernel(seed)


def cbm3d(degraded: torch.Tensor, degradation, seed: int) -> torch.Tensor:
    """CBM3D told the true sigma (0-255 scale, converted to [0, 1])."""
    import bm3d

    return _from_numpy(bm3d.bm3d_rgb(_to_numpy(degraded), _true_sigma(degradation, seed) / 255.0))


def nl_means(degraded: torch.Tensor, degradation=None, seed: int = 0) -> torch.Tensor:
    """Blind non-local means (sigma estimated from the image)."""
    from skimage.restoration import denoise_nl_means, estimate_sigma

    array = _to_numpy(degraded)
    sigma = float(sum(estimate_sigma(array, channel_axis=-1)) / array.shape[-1])
    return _from_numpy(denoise_nl_means(array, h=0.8 * sigma, sigma=sigma, fast_mode=True, patch_size=5,
                                        patch_distance=6, channel_axis=-1))


def wavelet(degraded: torch.Tensor, degradation=None, seed: int = 0) -> torch.Tensor:
    """Blind BayesShrink wavelet denoising in YCbCr."""
    from skimage.restoration import denoise_wavelet

    return _from_numpy(denoise_wavelet(_to_numpy(degraded), channel_axis=-1, convert2ycbcr=True,
                                       method="BayesShrink", mode="soft", rescale_sigma=True))


def _deconvolution_problem(degraded: torch.Tensor, kernel: torch.Tensor):
    """The blurred image extended symmetrically by the kernel radius (float64, 3 x H' x W'), the
    kernel's transfer function on that grid, and the radius.

    Circular FFT convolution on the extended grid equals the zoo's blur (true convolution with
    symmetric extension) on the original pixels, so both deconvolutions below invert exactly the
    operator that made the image.
    """
    from zoo.data.degradations import _symmetric_index

    radius = max(kernel.shape) // 2
    image = degraded.detach().cpu().double().clamp(0.0, 1.0)
    rows = _symmetric_index(image.shape[-2], radius)
    cols = _symmetric_index(image.shape[-1], radius)
    extended = image[:, rows][:, :, cols]
    psf = torch.zeros(extended.shape[-2:], dtype=torch.float64)
    kh, kw = kernel.shape
    psf[:kh, :kw] = kernel.double()
    psf = torch.roll(psf, shifts=(-(kh // 2), -(kw // 2)), dims=(0, 1))  # kernel centre at (0, 0)
    return extended, torch.fft.rfft2(psf), radius


def _crop(extended: torch.Tensor, radius: int) -> torch.Tensor:
    return extended[:, radius:extended.shape[-2] - radius, radius:extended.shape[-1] - radius].float()


def richardson_lucy(degraded: torch.Tensor, degradation, seed: int, iterations: int | None = None) -> torch.Tensor:
    """Richardson-Lucy deconvolution told the true kernel (multiplicative updates from a flat 0.5
    start, as scikit-image's ``richardson_lucy``; FFT convolutions, float64)."""
    degradation = resolve(degradation, seed)  # of an ``A || B`` spec, the blur this image got
    blurred, transfer, radius = _deconvolution_problem(degraded, _true_kernel(degradation, seed))
    size = blurred.shape[-2:]

    def blur(x, otf):
        return torch.fft.irfft2(torch.fft.rfft2(x) * otf, s=size)

    estimate = torch.full_like(blurred, 0.5)
    steps = deconvolution_settings(degradation)["rl_iterations"] if iterations is None else iterations
    for _ in range(steps):
        ratio = blurred / (blur(estimate, transfer) + 1e-12)
        estimate = estimate * blur(ratio, transfer.conj())
    return _crop(estimate.clamp(0.0, 1.0), radius)


def wiener(degraded: torch.Tensor, degradation, seed: int, balance: float | None = None) -> torch.Tensor:
    """Wiener deconvolution told the true kernel, with scikit-image's Laplacian regulariser:
    ``X = conj(H) Y / (|H|^2 + balance |L|^2)``."""
    degradation = resolve(degradation, seed)
    blurred, transfer, radius = _deconvolution_problem(degraded, _true_kernel(degradation, seed))
    laplacian = torch.zeros(blurred.shape[-2:], dtype=torch.float64)
    laplacian[0, 0] = 4.0
    laplacian[0, 1] = laplacian[1, 0] = laplacian[0, -1] = laplacian[-1, 0] = -1.0
    regulariser = torch.fft.rfft2(laplacian).abs() ** 2
    weight = deconvolution_settings(degradation)["wiener_balance"] if balance is None else balance
    restored = torch.fft.irfft2(torch.fft.rfft2(blurred) * transfer.conj() / (transfer.abs() ** 2 + weight * regulariser),
                                s=blurred.shape[-2:])
    return _crop(restored.clamp(0.0, 1.0), radius)


#: Every classical reference, by name.
CLASSICAL_METHODS: dict[str, ClassicalMethod] = {method.name: method for method in (
    ClassicalMethod("input", ("denoise", "deblur", "derain", "super-resolution"), "nothing", None, _input,
                    scored_as_8bit=False),
    ClassicalMethod("cbm3d", ("denoise",), "sigma", "bm3d", cbm3d),
    ClassicalMethod("nl-means", ("denoise",), "nothing", "skimage", nl_means),
    ClassicalMethod("wavelet", ("denoise",), "nothing", "skimage", wavelet),
    ClassicalMethod("richardson-lucy", ("deblur",), "kernel", None, richardson_lucy),
    ClassicalMethod("wiener", ("deblur",), "kernel", None, wiener),
)}


def classical_method(name: str) -> ClassicalMethod:
    """The method called ``name``; :class:`ZooError` listing the known ones otherwise."""
    if name not in CLASSICAL_METHODS:
        raise ZooError(f"unknown classical method {name!r}", f"use one of {', '.join(CLASSICAL_METHODS)}")
    return CLASSICAL_METHODS[name]


def tune_deconvolution(spec: str = "motion-blur:noise=2.55", images: int = 8, crop: int = 192, seed: int = 0,
                       data_root=None) -> dict:
    """Score RL iterations and Wiener balances on urban100 crops (training pool, never evaluation).

    Returns ``{"richardson-lucy": {iterations: mean PSNR}, "wiener": {balance: mean PSNR}}`` (RGB
    PSNR in dB of 8-bit outputs) for the blur ``spec``.
    """
    from zoo.benchmarks.inr_ablation import centre_crop
    from zoo.data.datasets import open_dataset
    from zoo.data.degradations import parse_degradation
    from zoo.data.io import quantize
    from zoo.metrics import psnr

    degradation = parse_degradation(spec)
    data = open_dataset("urban100", data_root=data_root, limit=images)
    scores: dict[str, dict] = {"richardson-lucy": {}, "wiener": {}}
    grid = {"richardson-lucy": (5, 10, 20, 40, 80, 150), "wiener": (1e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0)}
    for index in range(len(data)):
        clean = centre_crop(data[index].target, crop)
        blurred = degradation(clean, seed + index)
        for steps in grid["richardson-lucy"]:
            out = richardson_lucy(blurred, degradation, seed + index, iterations=steps)
            scores["richardson-lucy"].setdefault(steps, []).append(psnr(quantize(out.clamp(0, 1), 8), clean))
        for balance in grid["wiener"]:
            out = wiener(blurred, degradation, seed + index, balance=balance)
            scores["wiener"].setdefault(balance, []).append(psnr(quantize(out.clamp(0, 1), 8), clean))
    return {name: {key: sum(values) / len(values) for key, values in table.items()} for name, table in scores.items()}


if __name__ == "__main__":  # pragma: no cover - a tuning aid, documented above
    import json
    import sys

    if "--tune" not in sys.argv:
        raise SystemExit("usage: python -m zoo.benchmarks.classical --tune [BLUR SPEC]")
    specs = [arg for arg in sys.argv[1:] if arg != "--tune"] or ["motion-blur:noise=2.55"]
    print(json.dumps({spec: tune_deconvolution(spec) for spec in specs}, indent=2))
