"""``zoo bench-inr``: the zero-shot INR denoiser, its ablations and classical baselines.

Protocol: centre crops (``crop`` x ``crop``) of the first ``n_images`` images of a benchmark set
sorted by file name (default bsd68 = CBSD68), additive white Gaussian noise of each sigma (0-255
scale, unclipped, seeded per image), RGB PSNR of the 8-bit-quantized outputs. The blind methods
are never told sigma; CBM3D is, as the upper reference.

Methods (``METHODS``):

* ``inr``: the full method (early stop at the estimated noise level + selective weight decay);
* ``inr-no-decay``: early stopping without the selective weight decay;
* ``inr-no-early-stop``: no early stopping: the fit runs its whole step budget (``max_steps``),
  i.e. towards convergence, where it reproduces much of the noise;
* ``nl-means``, ``wavelet``, ``cbm3d`` (told the true sigma): the classical references of
  :mod:`zoo.benchmarks.classical` (scikit-image's own example settings; CBM3D as the upper reference);
* ``noisy``: the input itself.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
from dataclasses import replace
from typing import Callable, Sequence

import torch

from zoo.errors import ZooError

METHODS = ("noisy", "inr", "inr-no-decay", "inr-no-early-stop", "nl-means", "wavelet", "cbm3d")
INR_METHODS = ("inr", "inr-no-decay", "inr-no-early-stop")


def centre_crop(image: torch.Tensor, size: int) -> torch.Tensor:
    """The central ``size`` x ``size`` window of a CHW image (the whole side when it is smaller)."""
    height, width = image.shape[-2:]
    top, left = max((height - size) // 2, 0), max((width - size) // 2, 0)
    return image[..., top:top + size, left:left + size].contiguous()


def _inr_method(name: str, config) -> Callable:
    from zoo.models.inr import ZeroShotINRDenoiser, ablation_config

    model = ZeroShotINRDenoiser(ablation_config(name, config))

    def run(noisy: torch.Tensor, sigma_255: float) -> tuple[torch.Tensor, dict]:
        restored, report = model.denoise(noisy)
        keep = ("noise_sigma", "stop_iteration", "max_stop_iteration", "stopped_early", "residual", "pixel_steps")
        return restored, {key: report[key] for key in keep}

    return run


def _method_runner(name: str, config) -> Callable:
    if name in INR_METHODS:
        return _inr_method(name, config)
    if name == "noisy":
        return lambda noisy, sigma: (noisy, {})
    from zoo.benchmarks import classical

    if name == "cbm3d":  # told the true sigma
        return lambda noisy, sigma: (classical.cbm3d(noisy, _KnownSigma(sigma), 0), {})
    method = {"nl-means": classical.nl_means, "wavelet": classical.wavelet}[name]
    return lambda noisy, sigma: (method(noisy), {})


class _KnownSigma:
    """Stands for the Gaussian degradation whose sigma (0-255) CBM3D is told."""

    def __init__(self, sigma_255: float):
        self.sigma_255 = sigma_255

    def sigma_for(self, seed: int) -> float:
        return self.sigma_255


def _check_methods(methods: Sequence[str]) -> list[str]:
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ZooError(f"unknown method(s) {', '.join(unknown)}", f"choose from {', '.join(METHODS)}")
    needs = {"nl-means": "skimage", "wavelet": "skimage", "cbm3d": "bm3d"}
    for method in methods:
        if method in needs:
            try:
                __import__(needs[method])
            except ImportError as err:
                raise ZooError(f"method {method} needs the {needs[method]} package",
                               "pip install -e '.[test]' (scikit-image, bm3d)") from err
    return list(methods)


def run_inr_ablation(data_root: str | os.PathLike | None = None, n_images: int = 12, crop: int = 256,
                     sigmas: Sequence[float] = (15, 25), methods: Sequence[str] = METHODS,
                     json_path: str | os.PathLike | None = None, progress: bool = True, *,
                     dataset: str = "bsd68", config=None, seed: int = 0,
                     log: Callable[[str], None] | None = None) -> dict:
    """Run the INR ablation/baseline benchmark; print a table, optionally write JSON; return the result.

    ``data_root``: folder holding ``dataset`` (default: :func:`zoo.data.datasets.resolve_data_root`).
    ``sigmas``: Gaussian noise levels on the 0-255 scale; image ``i`` at each sigma gets noise seed
    ``seed + i``. ``config``: the :class:`zoo.models.inr.INRConfig` the INR variants start from.
    ``progress``: one line per finished (image, sigma, method) on stderr (or ``log``).
    Returns ``{"settings", "rows", "summary", "table"}``; ``summary[sigma][method]`` holds the
    mean ``psnr`` (dB), ``seconds`` (wall) and ``cpu_seconds`` per crop, and for INR variants the
    mean ``stop_iteration`` and ``pixel_steps`` (the fit's work, independent of the machine's load).
    """
    from zoo.data.datasets import resolve_data_root
    from zoo.data.degradations import parse_degradation
    from zoo.data.io import quantize, read_image
    from zoo.metrics import psnr
    from zoo.models.inr import INRConfig, config_as_dict

    methods = _check_methods(methods)
    sigmas = [int(s) if float(s).is_integer() else float(s) for s in sigmas]
    config = config or INRConfig()
    root = resolve_data_root(data_root)
    folder = root / dataset
    files = sorted(p for p in folder.glob("*.png")) if folder.is_dir() else []
    if not files:
        raise ZooError(f"no PNG images in {folder}", "check --data-root and --dataset")
    files = files[:n_images]
    say = log or (lambda line: print(line, file=sys.stderr, flush=True))
    runners = {name: _method_runner(name, config) for name in methods}
    rows = []
    for index, path in enumerate(files):
        clean = centre_crop(read_image(path).image, crop)
        for sigma in sigmas:
            noisy = parse_degradation(f"gaussian:{sigma:g}")(clean, seed + index)
            for name in methods:
                wall, cpu = time.perf_counter(), time.process_time()
                restored, extra = runners[name](noisy, float(sigma))
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                value = psnr(quantize(restored.clamp(0, 1), 8), clean)
                row = {"image": path.stem, "sigma": sigma, "method": name, "psnr": round(value, 4),
                       "seconds": round(wall, 3), "cpu_seconds": round(cpu, 3), **extra}
                rows.append(row)
                if progress:
                    details = " ".join(f"{k}={v}" for k, v in extra.items())
                    say(f"[{index + 1}/{len(files)}] {path.stem} sigma={sigma:g} {name}: {value:.2f} dB "
                        f"{wall:.1f}s (cpu {cpu:.1f}s) {details}".rstrip())
    summary = _summarise(rows, sigmas, methods)
    result = {
        "settings": {
            "dataset": dataset, "data_root": str(root), "images": [p.name for p in files], "crop": crop,
            "sigmas": list(sigmas), "methods": methods, "seed": seed, "noise": "gaussian, unclipped, 0-255 sigma",
            "metric": "RGB PSNR of 8-bit-quantized outputs", "inr_config": config_as_dict(config),
            "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
            "platform": platform.platform(), "torch": torch.__version__,
        },
        "rows": rows,
        "summary": summary,
    }
    result["table"] = format_table(result)
    print(result["table"])
    if json_path is not None:
        from zoo.atomic import write_json

        write_json(json_path, result)
    return result


def _summarise(rows: list[dict], sigmas: Sequence[float], methods: Sequence[str]) -> dict:
    summary = {}
    for sigma in sigmas:
        per_method = {}
        for name in methods:
            chosen = [r for r in rows if r["sigma"] == sigma and r["method"] == name]
            entry = {key: round(sum(r[key] for r in chosen) / len(chosen), 4)
                     for key in ("psnr", "seconds", "cpu_seconds")}
            if name in INR_METHODS:
                entry["stop_iteration"] = round(sum(r["stop_iteration"] for r in chosen) / len(chosen), 1)
                entry["pixel_steps"] = round(sum(r["pixel_steps"] for r in chosen) / len(chosen))
                entry["stopped_early"] = sum(bool(r["stopped_early"]) for r in chosen)
            entry["images"] = len(chosen)
            per_method[name] = entry
        summary[str(sigma)] = per_method
    return summary


def format_table(result: dict) -> str:
    """A plain-text table: one row per method, PSNR and seconds per crop for each sigma."""
    sigmas = result["settings"]["sigmas"]
    methods = result["settings"]["methods"]
    header = f"{'method':<20}" + "".join(f"{'PSNR s=' + format(s, 'g'):>12}{'s/crop':>9}{'stop':>7}" for s in sigmas)
    lines = [f"{result['settings']['dataset']}: {len(result['settings']['images'])} centre crops of "
             f"{result['settings']['crop']}x{result['settings']['crop']}, Gaussian noise (RGB PSNR, dB)", header]
    for name in methods:
        line = f"{name:<20}"
        for sigma in sigmas:
            entry = result["summary"][str(sigma)][name]
            stop = f"{entry['stop_iteration']:.0f}" if "stop_iteration" in entry else "-"
            line += f"{entry['psnr']:>12.2f}{entry['seconds']:>9.1f}{stop:>7}"
        lines.append(line)
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zoo bench-inr",
        description="Zero-shot INR denoiser vs its ablations and classical blind baselines on noisy crops.")
    parser.add_argument("--data-root", default=None, help="folder holding the benchmark sets (default: auto)")
    parser.add_argument("--dataset", default="bsd68", help="benchmark set folder (default: bsd68)")
    parser.add_argument("--images", type=int, default=12, help="first N images by file name (default: 12)")
    parser.add_argument("--crop", type=int, default=256, help="centre crop side in pixels (default: 256)")
    parser.add_argument("--sigmas", default="15,25", help="comma-separated noise sigmas, 0-255 (default: 15,25)")
    parser.add_argument("--methods", default=",".join(METHODS),
                        help=f"comma-separated subset of {','.join(METHODS)} (default: all)")
    parser.add_argument("--max-steps", type=int, default=None, help="INR step budget (default: the model's)")
    parser.add_argument("--seed", type=int, default=0, help="noise seed of the first image (default: 0)")
    parser.add_argument("--json", default=None, help="write the full result as JSON to this path")
    parser.add_argument("--quiet", action="store_true", help="no per-image progress lines")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (``zoo bench-inr``); returns the exit status."""
    from zoo.models.inr import INRConfig

    args = build_parser().parse_args(argv)
    try:
        sigmas = [float(s) for s in args.sigmas.split(",") if s.strip()]
    except ValueError as err:
        raise ZooError(f"--sigmas {args.sigmas!r} is not a list of numbers", "use e.g. --sigmas 15,25") from err
    if not sigmas or any(not math.isfinite(s) or s <= 0 for s in sigmas):
        raise ZooError(f"--sigmas {args.sigmas!r} needs positive numbers", "use e.g. --sigmas 15,25")
    config = INRConfig() if args.max_steps is None else replace(INRConfig(), max_steps=args.max_steps)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    run_inr_ablation(args.data_root, n_images=args.images, crop=args.crop, sigmas=sigmas, methods=methods,
                     json_path=args.json, progress=not args.quiet, dataset=args.dataset, config=config,
                     seed=args.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
