"""Shared by tests/test_bench.py and tests/test_check.py: one tiny hinet-lite-s ExecuTorch XNNPACK
fp32 artifact (tile 64, shipped weights) and a folder of small synthetic photos.

The export (10-25 s on a busy 2-core machine) is kept in pytest's cache folder
(``.pytest_cache/d/zoo-tiny-artifact``, git-ignored) and reused while its manifest and checksum
verify and it was made by the same tool versions from the same shipped weights; otherwise it is
exported again. ``pytest --cache-clear`` forces a fresh export.
"""

from pathlib import Path

import torch

#: (height, width) of the synthetic images: one needs several 64-pixel tiles, one fits one tile.
IMAGE_SIZES = ((72, 88), (64, 64), (48, 80))


def _still_valid(folder: Path) -> bool:
    from export_mobile.manifest import sha256_of, tool_versions
    from export_mobile.runners import verify_artifact
    from zoo.errors import ZooError
    from zoo.registry import get_card

    try:
        manifest, _artifact = verify_artifact(folder)
    except ZooError:
        return False
    weights = get_card("hinet-lite-s").weights_path
    return manifest["tools"] == tool_versions() and manifest["model"]["weights"]["sha256"] == sha256_of(weights)[0]


def tiny_artifact(request) -> Path:
    """The export folder of hinet-lite-s, executorch-xnnpack, fp32, tile 64 (``request``: a pytest
    fixture request, for the cache folder)."""
    from export_mobile.api import export_model

    folder = request.config.cache.mkdir("zoo-tiny-artifact") / "hinet-lite-s-xnnpack-fp32-64"
    if not (folder / "manifest.json").is_file() or not _still_valid(folder):
        export_model("hinet-lite-s", "executorch-xnnpack", "fp32", 64, folder, verify=False)
    return folder


def tiny_images(folder: Path) -> Path:
    """Three small PNGs (smooth gradients plus texture, 8-bit RGB) in ``folder``; returns it."""
    from zoo.data.io import write_image

    folder.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(7)
    for index, (height, width) in enumerate(IMAGE_SIZES):
        ramp = torch.linspace(0, 1, width).expand(3, height, width) * torch.tensor([0.9, 0.6, 0.3])[:, None, None]
        image = (0.1 + 0.7 * ramp + 0.2 * torch.rand(3, height, width, generator=generator)).clamp(0, 1)
        write_image(folder / f"img{index}.png", image, overwrite=True)
    return folder
