"""Datasets of (degraded, target) image pairs.

Two kinds:

* :class:`PairedFolderDataset` -- pairs that exist on disk (real noise, real blur, rain, DIV2K
  low-resolution images). Readers for the standard layouts build it: :func:`sidd_medium_srgb`,
  :func:`gopro`, :func:`rain_pairs`, :func:`div2k`.
* :class:`CleanFolderDataset` -- clean images; the degraded image is synthesised by a
  degradation callable, deterministically per image.

:func:`open_dataset` opens the benchmark sets by name (``set5``, ``set14``, ``bsd68``,
``urban100`` under the data root), the bundled demo photos (``bundled``) or any folder.
Set5, Set14 and CBSD68 are for evaluation only: :func:`check_not_evaluation` refuses them for
training, calibration or model selection.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch
from torch.utils.data import Dataset

from zoo.data.io import IMAGE_EXTENSIONS, read_image
from zoo.data.resize import check_downscalable, mod_crop
from zoo.errors import ZooError

#: Benchmark sets that may only be used to measure results, never to train or calibrate.
EVALUATION_SETS = frozenset({"set5", "set14", "bsd68"})
#: The benchmark set that training, calibration and model selection draw from.
TRAINING_POOL = "urban100"
#: Other names accepted for the benchmark sets.
DATASET_ALIASES = {"cbsd68": "bsd68"}
#: Benchmark folders under the data root, and the bundled demo photos.
BENCHMARK_SETS = ("set5", "set14", "bsd68", "urban100")
BUNDLED = "bundled"
DATA_ROOT_ENV = "ZOO_DATA_ROOT"

# The repository root: the parent of the ``zoo`` package folder.
_REPO_ROOT = Path(__file__).resolve().parents[2]

#: ``degradation(clean, seed) -> degraded``: clean is a (3, H, W) float32 tensor in [0, 1];
#: the result is the degraded image (H/scale x W/scale for super-resolution). Objects from
#: ``zoo.data.degradations.parse_degradation`` also carry ``.spec`` (str) and ``.scale`` (int).
Degradation = Callable[[torch.Tensor, int], torch.Tensor]


def valid_dataset_names() -> list[str]:
    """Names :func:`open_dataset` accepts besides folder paths."""
    return [*BENCHMARK_SETS, *DATASET_ALIASES, BUNDLED]


# ----------------------------------------------------------------------------- data root


def resolve_data_root(explicit: str | os.PathLike | None = None) -> Path:
    """The folder holding the benchmark sets (set5/, set14/, bsd68/, urban100/).

    Order: ``explicit`` (e.g. from --data-root), else env ZOO_DATA_ROOT, else the first
    ``shared/datasets`` folder found walking up from the repository root (so
    ``../shared/datasets`` beside a checkout). Raises :class:`ZooError` when none exists.
    """
    if explicit is not None:
        root = Path(explicit).expanduser()
        if not root.is_dir():
            raise ZooError(f"data root {root} is not a folder", "pass --data-root pointing at the benchmark folder")
        return root
    from_env = os.environ.get(DATA_ROOT_ENV)
    if from_env:
        root = Path(from_env).expanduser()
        if not root.is_dir():
            raise ZooError(f"{DATA_ROOT_ENV}={from_env} is not a folder", f"fix or unset {DATA_ROOT_ENV}")
        return root
    found = _find_shared_datasets(_REPO_ROOT)
    if found is None:
        raise ZooError(
            "cannot find the benchmark images (no shared/datasets beside the repository)",
            f"pass --data-root or set {DATA_ROOT_ENV} to the folder holding set5/, set14/, bsd68/, urban100/",
        )
    return found


def _find_shared_datasets(start: Path) -> Path | None:
    for folder in (start, *start.parents):
        candidate = folder / "shared" / "datasets"
        if candidate.is_dir():
            return candidate
    return None


# ----------------------------------------------------------------------------- samples


@dataclass
class Sample:
    """One pair: ``degraded`` and ``target`` are (3, H, W) float32 RGB in [0, 1] (for
    super-resolution the degraded image is ``scale`` times smaller); ``name`` identifies it."""

    name: str
    degraded: torch.Tensor
    target: torch.Tensor


def image_files(folder: str | os.PathLike, *, recursive: bool = False) -> list[Path]:
    """Image files (extensions in IMAGE_EXTENSIONS, any case) in ``folder``, sorted by path;
    hidden files are skipped."""
    folder = Path(folder)
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(
        path
        for path in candidates
        if path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS
    )


class PairedFolderDataset(Dataset):
    """(degraded, target) image files read on access.

    ``pairs``: list of (degraded_path, target_path). ``name``: the dataset's name.
    ``sample_names``: one name per pair (default: the degraded file's stem).
    """

    def __init__(self, pairs: Sequence[tuple[Path, Path]], name: str, sample_names: Sequence[str] | None = None):
        self.pairs = [(Path(degraded), Path(target)) for degraded, target in pairs]
        self.name = name
        if sample_names is None:
            sample_names = [degraded.stem for degraded, _ in self.pairs]
        if len(sample_names) != len(self.pairs):
            raise ValueError("sample_names must have one name per pair")
        self.names = list(sample_names)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> Sample:
        degraded_path, target_path = self.pairs[index]
        return Sample(
            name=self.names[index],
            degraded=read_image(degraded_path).image,
            target=read_image(target_path).image,
        )

    def __repr__(self) -> str:
        return f"PairedFolderDataset({self.name!r}, {len(self)} pairs)"


def _scale_of(degradation) -> int:
    return int(getattr(degradation, "scale", 1) or 1)


def _as_degradation(degradation):
    if isinstance(degradation, str):
        from zoo.data.degradations import parse_degradation  # only needed for string specs

        return parse_degradation(degradation)
    if degradation is not None and not callable(degradation):
        raise TypeError(f"degradation must be callable(clean, seed), a spec string or None, got {degradation!r}")
    return degradation


class CleanFolderDataset(Dataset):
    """Clean images whose degraded versions are synthesised on access.

    ``paths_or_folder``: a folder (its image files, sorted) or a list of image paths.
    ``degradation``: ``degradation(clean, seed)`` callable, a spec string for
    ``zoo.data.degradations.parse_degradation``, or None (degraded = a copy of the clean image).
    Sample ``i`` uses seed ``seed + i``, so every image gets the same degradation on every run.
    With ``degradation.scale > 1`` (super-resolution) the target is first mod-cropped to a
    multiple of the scale; a degradation with a ``target(clean)`` method then defines the
    reference from it. The degradation receives that target.
    """

    def __init__(
        self,
        paths_or_folder: str | os.PathLike | Iterable[str | os.PathLike],
        degradation: Degradation | str | None = None,
        seed: int = 0,
        name: str | None = None,
    ):
        if isinstance(paths_or_folder, (str, os.PathLike)):
            folder = Path(paths_or_folder)
            if not folder.is_dir():
                raise ZooError(f"image folder {folder} does not exist", "check the path")
            self.paths = image_files(folder)
            if not self.paths:
                raise ZooError(f"no images in {folder}", f"put image files ({', '.join(IMAGE_EXTENSIONS)}) there")
            default_name = folder.name
        else:
            self.paths = [Path(path) for path in paths_or_folder]
            if not self.paths:
                raise ZooError("the image list is empty", "pass at least one image")
            default_name = "images"
        self.name = name or default_name
        self.degradation = _as_degradation(degradation)
        self.seed = int(seed)
        self.scale = _scale_of(self.degradation)
        self.names = _unique_stems(self.paths)
        #: Set by :func:`open_dataset` for Set5/Set14/CBSD68 (and copies of them).
        self.is_evaluation_set = False

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Sample:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"sample {index} of a dataset of {len(self)}")
        target = read_image(self.paths[index]).image
        check_downscalable(target, self.scale, str(self.paths[index]))  # names the file, before degrading
        target = mod_crop(target, self.scale)
        reference_of = getattr(self.degradation, "target", None)
        if callable(reference_of):  # degradations may define the reference (zoo.data.degradations)
            target = reference_of(target)
        if self.degradation is None:
            degraded = target.clone()
        else:
            degraded = self.degradation(target, self.seed + index)
        return Sample(name=self.names[index], degraded=degraded, target=target)

    def __repr__(self) -> str:
        spec = getattr(self.degradation, "spec", None) if self.degradation is not None else None
        return f"CleanFolderDataset({self.name!r}, {len(self)} images, degradation={spec!r})"


def _unique_stems(paths: Sequence[Path]) -> list[str]:
    stems = [path.stem for path in paths]
    if len(set(stems)) == len(stems):
        return stems
    # Same stem in two folders or with two extensions: fall back to the file name or full path.
    names = [path.name for path in paths]
    return names if len(set(names)) == len(names) else [str(path) for path in paths]


# ----------------------------------------------------------------------------- opening by name


def open_dataset(
    name_or_path: str | os.PathLike,
    *,
    degradation: Degradation | str | None = None,
    data_root: str | os.PathLike | None = None,
    limit: int | None = None,
    seed: int = 0,
) -> CleanFolderDataset:
    """Open a set of clean images with a synthetic degradation.

    ``name_or_path``: ``set5``, ``set14``, ``bsd68`` (alias ``cbsd68``), ``urban100`` (folders
    under :func:`resolve_data_root` ``(data_root)``), ``bundled`` (the CC0/public-domain demo
    photos, see :mod:`zoo.data.bundled`), a folder of images or one image file.
    ``limit``: keep only the first ``limit`` images (sorted by file name).
    ``degradation`` and ``seed``: as in :class:`CleanFolderDataset`.
    """
    key = str(name_or_path).lower() if isinstance(name_or_path, str) else None
    key = DATASET_ALIASES.get(key, key)
    if key in BENCHMARK_SETS:
        folder = resolve_data_root(data_root) / key
        if not folder.is_dir():
            raise ZooError(f"benchmark folder {folder} is missing", "pass --data-root pointing at the benchmark folder")
        paths, name = image_files(folder), key
    elif key == BUNDLED:
        from zoo.data.bundled import bundled_photos

        paths, name = [photo.path for photo in bundled_photos()], BUNDLED
    else:
        location = Path(name_or_path).expanduser()
        if location.is_dir():
            paths, name = image_files(location), location.name
        elif location.is_file():
            paths, name = [location], location.stem
        else:
            raise ZooError(
                f"unknown dataset {str(name_or_path)!r} (not a name and no such folder)",
                f"use one of {', '.join(valid_dataset_names())} or a folder of images",
            )
        if not paths:
            raise ZooError(
                f"no images in {location}",
                f"use a folder of image files or one of {', '.join(valid_dataset_names())}",
            )
    if limit is not None:
        if limit < 1:
            raise ZooError(f"limit must be at least 1, got {limit}", "pass a positive --limit")
        paths = paths[:limit]
    if not paths:
        raise ZooError(f"dataset {name} has no images", "check the data root")
    dataset = CleanFolderDataset(paths, degradation, seed=seed, name=name)
    dataset.is_evaluation_set = is_evaluation_data(name_or_path, data_root=data_root)
    return dataset


def is_evaluation_data(name_or_path: str | os.PathLike, *, data_root: str | os.PathLike | None = None) -> bool:
    """Whether ``name_or_path`` is Set5, Set14 or CBSD68: by name, by a folder so named, or by
    a path inside those folders under the data root."""
    if isinstance(name_or_path, str):
        key = name_or_path.lower()
        if DATASET_ALIASES.get(key, key) in EVALUATION_SETS:
            return True
    location = Path(name_or_path).expanduser()
    if not location.exists():
        return False
    location = location.resolve()
    # A folder named like an evaluation set, or an image directly inside one (a copy of it).
    for part in (location, location.parent):
        if DATASET_ALIASES.get(part.name.lower(), part.name.lower()) in EVALUATION_SETS:
            return True
    try:
        root = resolve_data_root(data_root).resolve()
    except ZooError:
        return False
    return any(location == (root / name) or (root / name) in location.parents for name in EVALUATION_SETS)


def check_not_evaluation(
    name_or_path: str | os.PathLike, purpose: str = "training", *, data_root: str | os.PathLike | None = None
) -> None:
    """Raise :class:`ZooError` when ``name_or_path`` is an evaluation set (see
    :func:`is_evaluation_data`); ``purpose`` (e.g. "training", "calibration") goes in the message."""
    if is_evaluation_data(name_or_path, data_root=data_root):
        raise ZooError(
            f"{name_or_path} is an evaluation set (Set5/Set14/CBSD68) and cannot be used for {purpose}",
            f"use {TRAINING_POOL}, the bundled photos or your own folder",
        )


# ----------------------------------------------------------------------------- paired layouts


def _pair_up(
    degraded: dict[object, Path], targets: dict[object, Path], where: Path, what: str
) -> list[object]:
    """Keys present on both sides, sorted; ZooError listing unmatched files otherwise."""
    unmatched = sorted(
        [path for key, path in degraded.items() if key not in targets]
        + [path for key, path in targets.items() if key not in degraded]
    )
    if unmatched:
        shown = ", ".join(str(path.relative_to(where)) if where in path.parents else str(path) for path in unmatched[:3])
        more = f" and {len(unmatched) - 3} more" if len(unmatched) > 3 else ""
        raise ZooError(
            f"{len(unmatched)} unmatched {what} file(s) in {where}: {shown}{more}",
            "every degraded image needs its clean counterpart; add the missing files or remove the extra ones",
        )
    if not degraded:
        raise ZooError(f"no {what} image pairs found in {where}", "check the folder against the layout in docs/data.md")
    return sorted(degraded, key=str)


def _keyed(paths: Iterable[Path], key_of: Callable[[Path], object | None], where: Path) -> dict[object, Path]:
    keyed: dict[object, Path] = {}
    for path in paths:
        key = key_of(path)
        if key is None:
            continue
        if key in keyed:
            raise ZooError(
                f"{keyed[key]} and {path} in {where} claim the same image",
                "remove one of them",
            )
        keyed[key] = path
    return keyed


_SIDD_FILE = re.compile(r"^(\d+)_(NOISY|GT)_SRGB_(\d+)$", re.IGNORECASE)


def sidd_medium_srgb(root: str | os.PathLike) -> PairedFolderDataset:
    """SIDD Medium sRGB: ``<root>/Data/<scene>/<k>_NOISY_SRGB_010.PNG`` with
    ``<k>_GT_SRGB_010.PNG`` (and the ``_011`` pair). ``root`` may also be the Data folder.
    Sample names are ``<scene>/<k>_<010|011>``."""
    root = Path(root)
    data = root / "Data" if (root / "Data").is_dir() else root
    if not data.is_dir():
        raise ZooError(f"SIDD folder {root} does not exist", "pass the SIDD_Medium_Srgb folder")
    files = [path for scene in sorted(data.iterdir()) if scene.is_dir() for path in image_files(scene)]

    def key_for(kind: str):
        def key_of(path: Path):
            match = _SIDD_FILE.match(path.stem)
            if match is None or match.group(2).upper() != kind:
                return None
            return f"{path.parent.name}/{match.group(1)}_{match.group(3)}"

        return key_of

    noisy = _keyed(files, key_for("NOISY"), data)
    clean = _keyed(files, key_for("GT"), data)
    keys = _pair_up(noisy, clean, data, "SIDD")
    return PairedFolderDataset([(noisy[key], clean[key]) for key in keys], "sidd", keys)


def gopro(root: str | os.PathLike, split: str = "test", blur: str = "blur") -> PairedFolderDataset:
    """GoPro deblurring: ``<root>/{train,test}/<scene>/{blur,blur_gamma}/*.png`` with the same
    file names in ``<scene>/sharp/``. ``root`` may also be the split folder itself.
    ``blur``: "blur" (the standard benchmark) or "blur_gamma". Sample names are ``<scene>/<stem>``."""
    if blur not in ("blur", "blur_gamma"):
        raise ZooError(f"unknown GoPro blur folder {blur!r}", "use blur or blur_gamma")
    root = Path(root)
    folder = root / split if (root / split).is_dir() else root
    if not folder.is_dir():
        raise ZooError(f"GoPro folder {root} does not exist", "pass the GOPRO_Large folder")
    scenes = [scene for scene in sorted(folder.iterdir()) if (scene / "sharp").is_dir() or (scene / blur).is_dir()]
    if not scenes:
        raise ZooError(f"no GoPro scenes (<scene>/{blur}, <scene>/sharp) in {folder}", "pass the GOPRO_Large folder")
    blurred = _keyed(
        (path for scene in scenes if (scene / blur).is_dir() for path in image_files(scene / blur)),
        lambda path: f"{path.parent.parent.name}/{path.stem}",
        folder,
    )
    sharp = _keyed(
        (path for scene in scenes if (scene / "sharp").is_dir() for path in image_files(scene / "sharp")),
        lambda path: f"{path.parent.parent.name}/{path.stem}",
        folder,
    )
    keys = _pair_up(blurred, sharp, folder, "GoPro")
    return PairedFolderDataset([(blurred[key], sharp[key]) for key in keys], f"gopro-{split}", keys)


_RAIN_PREFIX = re.compile(r"^(no)?rain(y)?[-_]?", re.IGNORECASE)
_RAIN_SUFFIX = re.compile(r"x2$", re.IGNORECASE)


def _rain_key(path: Path) -> str:
    """``rain-001``, ``norain-1``, ``norain-1x2`` and ``1`` all give "1"."""
    key = _RAIN_SUFFIX.sub("", _RAIN_PREFIX.sub("", path.stem))
    return str(int(key)) if key.isdigit() else key


def rain_pairs(root: str | os.PathLike, name: str | None = None) -> PairedFolderDataset:
    """Deraining pairs in any of the common layouts of Rain13k / Rain100L / Rain100H:

    * MPRNet / Restormer: ``<root>/input/*`` with the same file names in ``<root>/target/``;
    * original folders: ``<root>/rain/`` (or ``rainy/``, searched recursively, e.g. ``rain/X2/``)
      with ``<root>/norain/``; names like ``rain-001.png``, ``norain-1x2.png`` pair with
      ``norain-001.png``, ``norain-1.png``;
    * original flat folder: ``rain-001.png`` next to ``norain-001.png``.
    """
    root = Path(root)
    if not root.is_dir():
        raise ZooError(f"rain folder {root} does not exist", "pass the folder holding input/ and target/")
    name = name or root.name
    if (root / "input").is_dir() and (root / "target").is_dir():
        rainy = _keyed(image_files(root / "input"), lambda path: path.stem, root)
        clean = _keyed(image_files(root / "target"), lambda path: path.stem, root)
    else:
        rain_folder = next((root / folder for folder in ("rain", "rainy") if (root / folder).is_dir()), None)
        if rain_folder is not None and (root / "norain").is_dir():
            rainy = _keyed(image_files(rain_folder, recursive=True), _rain_key, root)
            clean = _keyed(image_files(root / "norain", recursive=True), _rain_key, root)
        else:
            files = image_files(root)
            rainy = _keyed((p for p in files if re.match(r"^rain", p.stem, re.IGNORECASE)), _rain_key, root)
            clean = _keyed((p for p in files if re.match(r"^norain", p.stem, re.IGNORECASE)), _rain_key, root)
    keys = _pair_up(rainy, clean, root, "rain")
    return PairedFolderDataset([(rainy[key], clean[key]) for key in keys], name, [rainy[key].stem for key in keys])


def div2k(root: str | os.PathLike, split: str = "valid", scale: int = 4) -> PairedFolderDataset:
    """DIV2K super-resolution: ``<root>/DIV2K_<split>_HR/0801.png`` with
    ``<root>/DIV2K_<split>_LR_bicubic/X<scale>/0801x<scale>.png``; ``split``: train or valid;
    ``scale``: 2, 3 or 4. The degraded image is the low-resolution one."""
    if split not in ("train", "valid") or scale not in (2, 3, 4):
        raise ZooError(f"unknown DIV2K split/scale {split}/x{scale}", "use split train or valid and scale 2, 3 or 4")
    root = Path(root)
    high = root / f"DIV2K_{split}_HR"
    low = root / f"DIV2K_{split}_LR_bicubic" / f"X{scale}"
    for folder in (high, low):
        if not folder.is_dir():
            raise ZooError(f"DIV2K folder {folder} is missing", "pass the folder holding DIV2K_<split>_HR and _LR_bicubic")
    suffix = f"x{scale}"

    def low_key(path: Path) -> str:
        return path.stem[: -len(suffix)] if path.stem.lower().endswith(suffix) else path.stem

    low_files = _keyed(image_files(low), low_key, root)
    high_files = _keyed(image_files(high), lambda path: path.stem, root)
    keys = _pair_up(low_files, high_files, root, "DIV2K")
    return PairedFolderDataset([(low_files[key], high_files[key]) for key in keys], f"div2k-{split}-x{scale}", keys)
