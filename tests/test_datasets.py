"""Data root, paired-layout readers, synthetic-degradation datasets, benchmark sets, bundled photos."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from zoo.data import bundled, datasets
from zoo.data.datasets import (
    EVALUATION_SETS,
    TRAINING_POOL,
    CleanFolderDataset,
    PairedFolderDataset,
    check_not_evaluation,
    div2k,
    gopro,
    is_evaluation_data,
    mod_crop,
    open_dataset,
    rain_pairs,
    resolve_data_root,
    sidd_medium_srgb,
)
from zoo.data.io import read_image
from zoo.errors import ZooError

REPO = Path(__file__).resolve().parents[1]


def put(path: Path, value: int, size=(4, 6)) -> Path:
    """A tiny flat image whose value identifies it: red = value, green = 255 - value."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.zeros((*size, 3), dtype=np.uint8)
    pixels[..., 0], pixels[..., 1] = value, 255 - value
    Image.fromarray(pixels).save(path)
    return path


def value_of(image: torch.Tensor) -> int:
    return round(image[0].mean().item() * 255)


def assert_pairs_match(dataset, count):
    """Every sample pairs a degraded image (value v) with its target (value v + 1)."""
    assert len(dataset) == count
    for sample in (dataset[i] for i in range(len(dataset))):
        assert value_of(sample.target) == value_of(sample.degraded) + 1, sample.name


# ----------------------------------------------------------------------------- data root


def test_data_root_explicit_env_and_errors(tmp_path, monkeypatch):
    assert resolve_data_root(tmp_path) == tmp_path
    with pytest.raises(ZooError, match="--data-root"):
        resolve_data_root(tmp_path / "missing")
    monkeypatch.setenv("ZOO_DATA_ROOT", str(tmp_path))
    assert resolve_data_root() == tmp_path
    monkeypatch.setenv("ZOO_DATA_ROOT", str(tmp_path / "missing"))
    with pytest.raises(ZooError, match="ZOO_DATA_ROOT"):
        resolve_data_root()


def test_data_root_found_beside_the_repository(tmp_path, monkeypatch):
    monkeypatch.delenv("ZOO_DATA_ROOT", raising=False)
    repo = tmp_path / "work" / "main"
    (repo / "zoo").mkdir(parents=True)
    monkeypatch.setattr(datasets, "_REPO_ROOT", repo)
    with pytest.raises(ZooError, match="pass --data-root or set ZOO_DATA_ROOT"):
        resolve_data_root()
    shared = tmp_path / "work" / "shared" / "datasets"
    shared.mkdir(parents=True)
    assert resolve_data_root() == shared
    # A shared/ inside the checkout itself is nearer and wins.
    inner = repo / "shared" / "datasets"
    inner.mkdir(parents=True)
    assert resolve_data_root() == inner


def test_repo_root_is_parent_of_package():
    assert (datasets._REPO_ROOT / "zoo" / "data" / "datasets.py").is_file()


# ----------------------------------------------------------------------------- paired layouts


def test_sidd_medium_layout(tmp_path):
    data = tmp_path / "SIDD_Medium_Srgb" / "Data"
    for number, scene in enumerate(["0001_001_S6_00100_00060_3200_L", "0002_001_S6_00100_00060_3200_N"]):
        for shot in ("010", "011"):
            value = 20 * number + (10 if shot == "011" else 0)
            put(data / scene / f"{scene[:4]}_NOISY_SRGB_{shot}.PNG", value)
            put(data / scene / f"{scene[:4]}_GT_SRGB_{shot}.PNG", value + 1)
    dataset = sidd_medium_srgb(tmp_path / "SIDD_Medium_Srgb")
    assert isinstance(dataset, PairedFolderDataset)
    assert_pairs_match(dataset, 4)
    assert dataset.names[0] == "0001_001_S6_00100_00060_3200_L/0001_010"
    assert len(sidd_medium_srgb(data)) == 4  # the Data folder itself works too

    (data / "0002_001_S6_00100_00060_3200_N" / "0002_GT_SRGB_011.PNG").unlink()
    with pytest.raises(ZooError, match=r"1 unmatched SIDD file\(s\).*0002_NOISY_SRGB_011.PNG"):
        sidd_medium_srgb(tmp_path / "SIDD_Medium_Srgb")


def test_gopro_layout(tmp_path):
    root = tmp_path / "GOPRO_Large"
    for number, scene in enumerate(["GOPR0384_11_00", "GOPR0385_11_01"]):
        for frame in range(2):
            value = 40 * number + 10 * frame
            put(root / "test" / scene / "blur" / f"{frame:06d}.png", value)
            put(root / "test" / scene / "blur_gamma" / f"{frame:06d}.png", value)
            put(root / "test" / scene / "sharp" / f"{frame:06d}.png", value + 1)
    put(root / "train" / "GOPR0372_07_00" / "blur" / "000047.png", 100)
    put(root / "train" / "GOPR0372_07_00" / "sharp" / "000047.png", 101)

    test_set = gopro(root)
    assert_pairs_match(test_set, 4)
    assert test_set.names == ["GOPR0384_11_00/000000", "GOPR0384_11_00/000001", "GOPR0385_11_01/000000", "GOPR0385_11_01/000001"]
    assert_pairs_match(gopro(root, blur="blur_gamma"), 4)
    assert_pairs_match(gopro(root, split="train"), 1)
    assert len(gopro(root / "test")) == 4

    for frame in range(2, 7):
        put(root / "test" / "GOPR0384_11_00" / "sharp" / f"{frame:06d}.png", 1)
    with pytest.raises(ZooError, match=r"5 unmatched GoPro .*000002.png.* and 2 more"):
        gopro(root)


@pytest.mark.parametrize("layout", ["mprnet", "folders", "folders_x2", "flat"])
def test_rain_layouts(tmp_path, layout):
    root = tmp_path / "Rain100L"
    for index in range(1, 4):
        value = 10 * index
        if layout == "mprnet":
            put(root / "input" / f"{index}.png", value)
            put(root / "target" / f"{index}.png", value + 1)
        elif layout == "folders":
            put(root / "rain" / f"rain-{index:03d}.png", value)
            put(root / "norain" / f"norain-{index:03d}.png", value + 1)
        elif layout == "folders_x2":
            put(root / "rain" / "X2" / f"norain-{index}x2.png", value)
            put(root / "norain" / f"norain-{index}.png", value + 1)
        else:
            put(root / f"rain-{index:03d}.png", value)
            put(root / f"norain-{index:03d}.png", value + 1)
    dataset = rain_pairs(root)
    assert dataset.name == "Rain100L"
    assert_pairs_match(dataset, 3)


def test_rain_unmatched(tmp_path):
    put(tmp_path / "input" / "1.png", 10)
    put(tmp_path / "target" / "1.png", 11)
    put(tmp_path / "input" / "2.png", 20)
    with pytest.raises(ZooError, match=r"1 unmatched rain file\(s\).*input/2.png"):
        rain_pairs(tmp_path)
    with pytest.raises(ZooError, match="no rain image pairs"):
        rain_pairs(tmp_path / "target")


def test_div2k_layout(tmp_path):
    for index in (801, 802):
        put(tmp_path / "DIV2K_valid_HR" / f"{index:04d}.png", index - 790, size=(8, 12))
        put(tmp_path / "DIV2K_valid_LR_bicubic" / "X4" / f"{index:04d}x4.png", index - 791, size=(2, 3))
    dataset = div2k(tmp_path, split="valid", scale=4)
    assert_pairs_match(dataset, 2)
    sample = dataset[0]
    assert sample.name == "0801"
    assert sample.degraded.shape == (3, 2, 3) and sample.target.shape == (3, 8, 12)
    with pytest.raises(ZooError, match="X2 is missing"):
        div2k(tmp_path, scale=2)
    put(tmp_path / "DIV2K_valid_HR" / "0803.png", 5)
    with pytest.raises(ZooError, match="1 unmatched DIV2K"):
        div2k(tmp_path)


# ----------------------------------------------------------------------------- synthetic degradations


class ShiftBySeed:
    """Test degradation: adds seed / 1000 (super-resolution variant: also subsamples)."""

    spec = "shift"

    def __init__(self, scale=1):
        self.scale = scale

    def __call__(self, clean, seed):
        return clean[:, :: self.scale, :: self.scale] + seed / 1000


def test_clean_folder_dataset_is_deterministic_per_image(tmp_path):
    for index in range(3):
        put(tmp_path / f"img{index}.png", 50 * index)
    dataset = CleanFolderDataset(tmp_path, lambda clean, seed: clean + seed / 1000, seed=7)
    assert len(dataset) == 3 and dataset.names == ["img0", "img1", "img2"]
    for index in range(3):
        sample = dataset[index]
        assert torch.allclose(sample.degraded - sample.target, torch.full_like(sample.target, (7 + index) / 1000))
        assert torch.equal(dataset[index].degraded, sample.degraded)
        assert value_of(sample.target) == 50 * index
    with pytest.raises(IndexError):
        dataset[3]


def test_clean_folder_dataset_without_degradation(tmp_path):
    put(tmp_path / "a.png", 3)
    sample = CleanFolderDataset([tmp_path / "a.png"], None)[0]
    assert torch.equal(sample.degraded, sample.target)
    assert sample.degraded.data_ptr() != sample.target.data_ptr()  # a copy, safe to modify


def test_degradation_may_define_the_reference(tmp_path):
    put(tmp_path / "a.png", 200)

    class Darker(ShiftBySeed):
        def target(self, clean):
            return clean * 0.5

    sample = CleanFolderDataset(tmp_path, Darker())[0]
    assert value_of(sample.target) == 100
    assert torch.allclose(sample.degraded, sample.target)  # degraded from the reference, seed 0


def test_super_resolution_target_is_mod_cropped(tmp_path):
    put(tmp_path / "odd.png", 9, size=(10, 8))
    sample = CleanFolderDataset(tmp_path, ShiftBySeed(scale=3))[0]
    assert sample.target.shape == (3, 9, 6)
    assert sample.degraded.shape == (3, 3, 2)
    assert mod_crop(torch.zeros(2, 3, 10, 8), 4).shape == (2, 3, 8, 8)
    assert mod_crop(torch.zeros(3, 10, 8), 1).shape == (3, 10, 8)


# ----------------------------------------------------------------------------- open_dataset


def test_open_dataset_folder_file_and_errors(tmp_path):
    for index in range(4):
        put(tmp_path / "photos" / f"p{index}.png", index)
    (tmp_path / "photos" / "notes.txt").write_text("ignored")
    dataset = open_dataset(tmp_path / "photos", limit=2, degradation=ShiftBySeed(), seed=100)
    assert dataset.names == ["p0", "p1"] and dataset.name == "photos"
    assert dataset[1].degraded[0, 0, 0].item() == pytest.approx(1 / 255 + 0.101, abs=1e-6)
    assert not dataset.is_evaluation_set
    assert len(open_dataset(tmp_path / "photos" / "p3.png")) == 1

    with pytest.raises(ZooError, match="unknown dataset 'set6'.*set5, set14, bsd68, urban100, cbsd68, bundled"):
        open_dataset("set6")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ZooError, match="no images in .*empty.*set5"):
        open_dataset(tmp_path / "empty")
    with pytest.raises(ZooError, match="limit"):
        open_dataset(tmp_path / "photos", limit=0)


def test_open_benchmark_from_a_given_root(tmp_path):
    put(tmp_path / "set5" / "baby.png", 1)
    dataset = open_dataset("Set5", data_root=tmp_path)
    assert dataset.name == "set5" and dataset.is_evaluation_set
    with pytest.raises(ZooError, match="set14 is missing"):
        open_dataset("set14", data_root=tmp_path)


def test_constants_and_evaluation_guard(tmp_path):
    assert EVALUATION_SETS == {"set5", "set14", "bsd68"}
    assert TRAINING_POOL == "urban100" and TRAINING_POOL not in EVALUATION_SETS
    for name in ("set5", "Set14", "bsd68", "cbsd68"):
        assert is_evaluation_data(name)
        with pytest.raises(ZooError, match="cannot be used for calibration"):
            check_not_evaluation(name, "calibration")
    copy = put(tmp_path / "set14" / "zebra.png", 1)
    assert is_evaluation_data(copy.parent) and is_evaluation_data(copy)
    check_not_evaluation("urban100")
    check_not_evaluation(tmp_path)


def test_bsd68(data_root):
    dataset = open_dataset("bsd68", data_root=data_root)
    assert len(dataset) == 68
    assert dataset.is_evaluation_set
    assert open_dataset("cbsd68", data_root=data_root).names == dataset.names
    for path in dataset.paths:  # sizes from the headers: decoding all 68 takes seconds
        assert Image.open(path).size in {(481, 321), (321, 481)}, path.name
    for index in (0, 33, 67):
        target = dataset[index].target
        assert tuple(target.shape) in {(3, 321, 481), (3, 481, 321)}, dataset.names[index]
        assert 0.0 <= target.min() and target.max() <= 1.0 and target.std() > 0.05
    # The datasets really come from the data root's files.
    assert all(path.parent == data_root / "bsd68" for path in dataset.paths)


def test_bsd68_degraded_deterministically(data_root):
    noisy = open_dataset("bsd68", data_root=data_root, limit=2, seed=5, degradation=lambda clean, seed: clean + seed)
    assert [round((s.degraded - s.target).mean().item()) for s in (noisy[0], noisy[1])] == [5, 6]


def test_set14_grey_image_becomes_rgb(data_root):
    dataset = open_dataset("set14", data_root=data_root)
    assert len(dataset) == 14
    bridge = dataset[dataset.names.index("bridge")].target
    assert bridge.shape[0] == 3 and torch.equal(bridge[0], bridge[1]) and torch.equal(bridge[1], bridge[2])


# ----------------------------------------------------------------------------- bundled photos


def _grey_thumbnail(path: Path, factor=8) -> np.ndarray:
    grey = np.asarray(Image.open(path).convert("L"), dtype=np.float64)
    height, width = grey.shape[0] // factor * factor, grey.shape[1] // factor * factor
    return grey[:height, :width].reshape(height // factor, factor, width // factor, factor).mean(axis=(1, 3))


def _same_content(photo: np.ndarray, reference: np.ndarray) -> float:
    """Best normalised cross-correlation of the central half of either image inside the other
    (catches crops and copies), on 8x-reduced grey thumbnails."""
    from skimage.feature import match_template

    best = 0.0
    for big, small in ((reference, photo), (photo, reference)):
        height, width = small.shape
        centre = small[height // 4 : height // 4 + height // 2, width // 4 : width // 4 + width // 2]
        if centre.shape[0] <= big.shape[0] and centre.shape[1] <= big.shape[1] and centre.std() > 0:
            best = max(best, float(match_template(big, centre).max()))
    return best


def test_bundled_photos_are_free_colour_photos():
    photos = bundled.bundled_photos()
    assert len(photos) >= 5
    assert len({photo.name for photo in photos}) == len(photos)
    for photo in photos:
        assert photo.license in {"CC0", "public domain"}, photo.name
        assert photo.credit and not photo.in_evaluation_sets
        loaded = read_image(photo.path)
        assert loaded.mode == "RGB" and min(loaded.height, loaded.width) >= 256
        # colour: the channels differ clearly (a grey image has identical channels)
        image = loaded.image
        assert (image[0] - image[1]).abs().mean() > 0.02 or (image[1] - image[2]).abs().mean() > 0.02, photo.name
    assert open_dataset("bundled").names == [photo.path.stem for photo in photos]
    assert not open_dataset("bundled").is_evaluation_set


def test_bundled_photos_are_not_evaluation_images(data_root):
    references = [
        (path, _grey_thumbnail(path))
        for name in sorted(EVALUATION_SETS)
        for path in sorted((data_root / name).glob("*.png"))
    ]
    assert len(references) == 5 + 14 + 68
    for photo in bundled.bundled_photos(include_evaluation_overlap=True):
        thumbnail = _grey_thumbnail(photo.path)
        best, where = max((_same_content(thumbnail, reference), path.name) for path, reference in references)
        if photo.in_evaluation_sets:
            assert best > 0.98, (photo.name, best, where)  # the flag is right: it is an evaluation image
        else:
            assert best < 0.9, (photo.name, best, where)


def test_bundled_photos_found_without_importing_packages():
    code = (
        "import sys\nfrom zoo.data.bundled import bundled_photos\n"
        "photos = bundled_photos()\n"
        "print(len(photos), 'skimage' in sys.modules, 'sporco' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    count, skimage_imported, sporco_imported = result.stdout.split()
    assert int(count) >= 5 and skimage_imported == "False" and sporco_imported == "False"


def test_bundled_photos_need_a_package(monkeypatch):
    monkeypatch.setattr(bundled.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ZooError, match=r"pip install scikit-image sporco \(or pip install mobile-restoration-zoo\[data\]\)"):
        bundled.bundled_photos()


def test_bundled_photo_lookup():
    assert bundled.bundled_photo("coffee").license == "CC0"
    with pytest.raises(ZooError, match="no bundled photo named 'lena'"):
        bundled.bundled_photo("lena")
