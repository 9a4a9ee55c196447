"""Training patches: a deterministic, seekable stream of (degraded, target) batches.

Batch ``i`` of a run is a pure function of (seed, i): sample ``k`` of the global batch draws its
image, crop position, flip/rotation and degradation seed from ``SeedSequence([seed, i, k])``.
So

* resuming at iteration ``i`` needs no sampler state beyond ``i`` (bit-for-bit continuation);
* data-parallel process ``r`` of ``W`` takes samples ``k = r*B/W .. (r+1)*B/W - 1`` of the same
  global batch, so the union over processes is exactly the single-process batch (sharding like
  ``DistributedSampler``, without a shuffled epoch to keep in sync);
* DataLoader workers give the same batches whatever their number or scheduling.

Decoded training images are cached as integer levels (uint8 for 8-bit files, int32 for 16-bit)
and turned into float32 in [0, 1] exactly as :func:`zoo.data.io.read_image` does.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from zoo.errors import ZooError
from zoo.train.config import DataConfig, PairedFolders, is_evaluation_set


@dataclass(frozen=True)
class TrainingImage:
    """One image of the training pool: a clean file, or a (degraded input, clean target) pair."""

    name: str
    target_path: Path
    #: The degraded input of a pair; None for clean images degraded on the fly.
    input_path: Path | None = None


def _image_files(folder: Path) -> list[Path]:
    from zoo.data.io import IMAGE_EXTENSIONS

    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _refuse_if_evaluation_folder(folder: Path, data_root: Path | None, what: str) -> None:
    """Refuse a folder that is (or lies inside) one of the evaluation-only sets."""
    from zoo.data.datasets import is_evaluation_data

    if is_evaluation_set(folder.resolve().name) or is_evaluation_data(folder, data_root=data_root):
        raise ZooError(f"{what} {folder} is an evaluation-only benchmark set (set5, set14, bsd68)",
                       "train and validate on urban100, bundled or your own images")


def _try_data_root(explicit: str | None) -> Path | None:
    from zoo.data.datasets import resolve_data_root

    try:
        return Path(resolve_data_root(explicit))
    except ZooError:
        if explicit is not None:
            raise
        return None


def _clean_source(source: str, data_root: Path | None, explicit_root: str | None) -> list[TrainingImage]:
    if source == "bundled":
        from zoo.data.bundled import bundled_photos

        # A bundled photo that is also a benchmark image would leak the test set into training.
        return [TrainingImage(f"bundled/{photo.name}", Path(photo.path))
                for photo in bundled_photos() if not photo.in_evaluation_sets]
    if source == "urban100":
        if data_root is None:
            from zoo.data.datasets import resolve_data_root

            resolve_data_root(explicit_root)  # raises the ZooError that says where it looked
        folder = data_root / "urban100"
    else:
        folder = Path(source).expanduser()
    if not folder.is_dir():
        raise ZooError(f"training source {source!r}: folder {folder} not found",
                       "check data.sources and data.data_root (or $ZOO_DATA_ROOT)")
    _refuse_if_evaluation_folder(folder, data_root, "training source")
    files = _image_files(folder)
    if not files:
        raise ZooError(f"training source {folder} holds no images", "point data.sources at a folder of PNG/JPEG files")
    return [TrainingImage(f"{folder.name}/{path.name}", path) for path in files]


def _paired_source(pair: PairedFolders, data_root: Path | None, key: str) -> list[TrainingImage]:
    inputs, targets = Path(pair.input).expanduser(), Path(pair.target).expanduser()
    for folder, what in ((inputs, f"{key}.input"), (targets, f"{key}.target")):
        if not folder.is_dir():
            raise ZooError(f"{what} folder {folder} not found",
                           "check the path (these recipes need the dataset downloaded)")
        _refuse_if_evaluation_folder(folder, data_root, what)
    input_files = {path.name: path for path in _image_files(inputs)}
    target_files = _image_files(targets)
    missing = [path.name for path in target_files if path.name not in input_files]
    if missing or not target_files:
        raise ZooError(f"{key}: {len(missing)} of {len(target_files)} target images have no input of the same name "
                       f"in {inputs} (e.g. {missing[:2]})", "pair inputs and targets by identical file names")
    return [TrainingImage(f"{targets.name}/{path.name}", path, input_files[path.name]) for path in target_files]


def training_pool(config: DataConfig) -> list[TrainingImage]:
    """Every training-pool image the config names (clean sources, then pairs), in a fixed order.

    Raises :class:`ZooError` for a missing folder or an evaluation-only set.
    """
    data_root = _try_data_root(config.data_root)
    pool: list[TrainingImage] = []
    for source in config.sources:
        pool.extend(_clean_source(source, data_root, config.data_root))
    if config.paired is not None:
        pool.extend(_paired_source(config.paired, data_root, "data.paired"))
    return pool


def split_pool(pool: list[TrainingImage], val_images: int,
               seed: int) -> tuple[list[TrainingImage], list[TrainingImage]]:
    """Hold ``val_images`` images out of the pool for validation (a seeded choice); (train, val).

    The rest stay in file order for training. At least one image must remain for training.
    """
    if val_images == 0:
        return list(pool), []
    if val_images >= len(pool):
        raise ZooError(f"data.val_images is {val_images} but the training pool has only {len(pool)} images",
                       "hold out fewer images (data.val_images) or add training data")
    chosen = set(np.random.default_rng([seed, 0x5A11D]).permutation(len(pool))[:val_images].tolist())
    train = [image for index, image in enumerate(pool) if index not in chosen]
    val = [image for index, image in enumerate(pool) if index in chosen]
    return train, val


# --------------------------------------------------------------------------------------------
# Decoding and caching


def _to_levels(image: torch.Tensor, bit_depth: int) -> torch.Tensor:
    top = 65535 if bit_depth == 16 else 255
    levels = torch.round(image * top)
    return levels.to(torch.int32 if bit_depth == 16 else torch.uint8)


def _from_levels(levels: torch.Tensor) -> torch.Tensor:
    top = 65535.0 if levels.dtype == torch.int32 else 255.0
    return levels.to(torch.float32) / top


class ImageCache:
    """Decoded images as integer levels, read once per process (or every time if disabled)."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self._levels: dict[Path, torch.Tensor] = {}

    def levels(self, path: Path) -> torch.Tensor:
        """(3, H, W) uint8 (or int32 for 16-bit files) levels of ``path``."""
        cached = self._levels.get(path)
        if cached is not None:
            return cached
        from zoo.data.io import read_image

        loaded = read_image(path)
        levels = _to_levels(loaded.image, loaded.bit_depth)
        if self.enabled:
            self._levels[path] = levels
        return levels


def image_size(path: Path) -> tuple[int, int]:
    """(height, width) of an image file, read from its header only."""
    from PIL import Image

    with Image.open(path) as opened:
        width, height = opened.size
        # read_image applies the EXIF orientation, which swaps the sides of rotated photos.
        orientation = opened.getexif().get(0x0112, 1)
    return (width, height) if orientation in (5, 6, 7, 8) else (height, width)


# --------------------------------------------------------------------------------------------
# The patch stream


def dihedral(image: torch.Tensor, transform: int) -> torch.Tensor:
    """One of the 8 flips/rotations of a (..., H, W) tensor: rot90 by ``transform % 4``, then a
    horizontal flip when ``transform >= 4``."""
    out = torch.rot90(image, transform % 4, dims=(-2, -1)) if transform % 4 else image
    return torch.flip(out, dims=(-1,)) if transform >= 4 else out


class PatchBatches(torch.utils.data.Dataset):
    """Item ``i`` = this process's share of the training batch of iteration ``i``.

    Returns ``(degraded, target)``: float32 NCHW tensors, N = batch_size / world_size, target
    patches ``patch_size`` pixels square in [0, 1], degraded patches ``patch_size / scale`` square
    (unclipped for additive noise). Images smaller than the (largest) patch are left out of the pool.

    ``schedule``: progressive patch sizes, ``[(iteration, patch_size, batch_size), ...]`` with
    increasing iterations; from each iteration on its sizes hold (``patch_size`` and ``batch_size``
    before the first). Batch ``i`` stays a pure function of (seed, i), so resuming needs nothing more.
    """

    def __init__(self, images: list[TrainingImage], *, degradation: str | None, patch_size: int, batch_size: int,
                 iterations: int, seed: int, flips: bool = True, rotations: bool = True, rank: int = 0,
                 world_size: int = 1, cache_images: bool = True, schedule=()):
        #: (first iteration, patch size, global batch) of each stage, in order.
        self.stages = [(0, patch_size, batch_size)] + [tuple(int(v) for v in entry) for entry in schedule or ()]
        self.degradation_spec = degradation
        self.scale = self._degradation().scale if degradation else 1
        for _, size, batch in self.stages:
            if batch % world_size:
                raise ZooError(f"batch size {batch} (data.batch_size or data.patch_schedule) does not split evenly "
                               f"over {world_size} processes", f"use a multiple of {world_size}")
            if size % self.scale:
                raise ZooError(f"patch size {size} (data.patch_size or data.patch_schedule) is not a multiple of the "
                               f"degradation's scale {self.scale}", f"use a multiple of {self.scale}")
        largest = max(size for _, size, _ in self.stages)
        usable = []
        for image in images:
            height, width = image_size(image.target_path)
            if min(height, width) >= largest:
                usable.append(image)
        if not usable:
            raise ZooError(f"no training image is at least {largest}x{largest} pixels",
                           "lower data.patch_size (and data.patch_schedule) or add larger images")
        self.images = usable
        self.skipped = len(images) - len(usable)
        self.iterations = iterations
        self.seed = seed
        self.flips = flips
        self.rotations = rotations
        self.rank = rank
        self.world_size = world_size
        self.cache = ImageCache(cache_images)
        self._degradation_obj = None

    def stage(self, iteration: int) -> tuple[int, int]:
        """(patch size, global batch size) of ``iteration``."""
        current = self.stages[0]
        for stage in self.stages[1:]:
            if iteration >= stage[0]:
                current = stage
        return current[1], current[2]

    def _degradation(self):
        from zoo.data.degradations import parse_degradation

        return parse_degradation(self.degradation_spec)

    def __getstate__(self):
        # Worker processes rebuild the degradation and start with an empty cache of their own.
        state = dict(self.__dict__)
        state["_degradation_obj"] = None
        state["cache"] = ImageCache(self.cache.enabled)
        return state

    def __len__(self) -> int:
        return self.iterations

    def sample(self, iteration: int, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample ``index`` of the global batch of ``iteration``: (degraded CHW, target CHW)."""
        rng = np.random.default_rng([self.seed, iteration, index])
        image = self.images[int(rng.integers(len(self.images)))]
        target_levels = self.cache.levels(image.target_path)
        height, width = target_levels.shape[-2:]
        size = self.stage(iteration)[0]
        top = int(rng.integers(height - size + 1))
        left = int(rng.integers(width - size + 1))
        transform = int(rng.integers(8))
        degradation_seed = int(rng.integers(2**62))
        if not self.rotations:
            transform = 4 * (transform // 4)
        if not self.flips:
            transform = transform % 4
        target = dihedral(_from_levels(target_levels[:, top:top + size, left:left + size]), transform)
        if image.input_path is not None:
            input_levels = self.cache.levels(image.input_path)
            if input_levels.shape != target_levels.shape:
                raise ZooError(f"paired images differ in size: {image.input_path} {tuple(input_levels.shape)} vs "
                               f"{image.target_path} {tuple(target_levels.shape)}", "pair images of the same size")
            degraded = dihedral(_from_levels(input_levels[:, top:top + size, left:left + size]), transform)
            return degraded.contiguous(), target.contiguous()
        if self._degradation_obj is None:
            self._degradation_obj = self._degradation()
        degradation = self._degradation_obj
        # Blur and rain read pixels around the patch: degrade the patch with as much real image
        # around it as there is (the same margin on every side, so the dihedral transform keeps it
        # centred; a multiple of the degradation's grid: of the scale, so the LR crop is exact, of
        # the 16-pixel JPEG block grid, so the patch starts on a block edge), then cut the margin off.
        margin = min(degradation.context, top, left, height - top - size, width - left - size)
        margin -= margin % degradation.grid
        if margin > 0:
            window = target_levels[:, top - margin:top + size + margin, left - margin:left + size + margin]
            extended = dihedral(_from_levels(window), transform).contiguous()
            degraded = degradation(extended, degradation_seed)
            inner = margin // self.scale
            degraded = degraded[:, inner:inner + size // self.scale, inner:inner + size // self.scale]
            return degraded.contiguous(), degradation.target(target.contiguous()).contiguous()
        target = target.contiguous()
        degraded = degradation(target, degradation_seed)
        return degraded.contiguous(), degradation.target(target).contiguous()

    def __getitem__(self, iteration: int) -> tuple[torch.Tensor, torch.Tensor]:
        local = self.stage(int(iteration))[1] // self.world_size
        pairs = [self.sample(int(iteration), self.rank * local + offset) for offset in range(local)]
        return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])


def _seed_worker(worker_id: int) -> None:
    # Batches do not depend on global RNGs; seeding them keeps any stray randomness reproducible.
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def batch_loader(batches: PatchBatches, start: int, workers: int = 0, pin_memory: bool = False):
    """An iterator over ``batches[start:]`` (one item per iteration), prepared by ``workers`` processes."""
    if workers == 0:
        return (batches[iteration] for iteration in range(start, len(batches)))
    generator = torch.Generator().manual_seed(batches.seed)
    loader = torch.utils.data.DataLoader(batches, batch_size=None, sampler=range(start, len(batches)),
                                         num_workers=workers, worker_init_fn=_seed_worker, generator=generator,
                                         pin_memory=pin_memory, persistent_workers=False, prefetch_factor=2)
    return iter(loader)


# --------------------------------------------------------------------------------------------
# Validation


@dataclass
class ValidationImage:
    name: str
    degraded: torch.Tensor  # CHW float32
    target: torch.Tensor    # CHW float32 in [0, 1]


def _centre_crop(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    top = (image.shape[-2] - height) // 2
    left = (image.shape[-1] - width) // 2
    return image[..., top:top + height, left:left + width]


def validation_set(images: list[TrainingImage], *, degradation: str | None, crop: int, size_multiple: int,
                   seed: int) -> list[ValidationImage]:
    """Fixed validation inputs: centre crops (``crop`` pixels, 0 = whole image) rounded down to a
    multiple of ``size_multiple * scale``, degraded once with seed ``seed + index``."""
    from zoo.data.io import read_image

    degrade = None
    scale = 1
    if degradation:
        from zoo.data.degradations import parse_degradation

        degrade = parse_degradation(degradation)
        scale = degrade.scale
    step = size_multiple * scale
    out = []
    for index, image in enumerate(images):
        target = read_image(image.target_path).image
        height, width = target.shape[-2:]
        if crop:
            height, width = min(height, crop), min(width, crop)
        height, width = height - height % step, width - width % step
        if height == 0 or width == 0:
            raise ZooError(f"validation image {image.name} is smaller than {step} pixels", "hold out larger images")
        target = _centre_crop(target, height, width).contiguous()
        if image.input_path is not None:
            degraded = _centre_crop(read_image(image.input_path).image, height, width).contiguous()
        else:
            degraded = degrade(target, seed + index)
            target = degrade.target(target)
        out.append(ValidationImage(image.name, degraded, target))
    return out
