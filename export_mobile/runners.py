"""Run an exported artifact on the desktop, exactly as an app would ship it.

:func:`load_artifact` reads the manifest beside the artifact, checks the artifact's sha256
against it FIRST (a corrupted or swapped file is refused before any runtime touches it), then
asks the artifact's target for a desktop runner (ExecuTorch's Python runtime, the LiteRT
interpreter, ONNX Runtime, Core ML on macOS). :func:`run_artifact` restores image files with it,
tile by tile with the manifest's tile size, overlap and size multiple (``zoo.tiling``), the same
plan the demo apps follow.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from export_mobile.manifest import manifest_path_for, read_manifest, sha256_of
from zoo.errors import ZooError

__all__ = ["LoadedArtifact", "torch_runner", "verify_artifact", "check_native_shapes", "load_artifact", "run_artifact"]


def verify_artifact(location: str | Path) -> tuple[dict, Path]:
    """Read and validate the manifest for ``location`` (export folder, artifact or manifest.json)
    and check the artifact's sha256; returns ``(manifest, artifact path)``.

    Raises :class:`ZooError` when the manifest is missing or invalid, the artifact is missing,
    or its sha256 differs from the manifest's.
    """
    manifest_file = manifest_path_for(location)
    manifest = read_manifest(manifest_file)
    artifact = manifest_file.parent / manifest["artifact"]["file"]
    location = Path(location)
    names_artifact = location.name != manifest_file.name and location.resolve() != manifest_file.parent.resolve()
    if names_artifact and location.resolve() != artifact.resolve():
        raise ZooError(f"{location.name} is not the artifact its folder's manifest describes ({artifact.name})",
                       "point at the export folder or the artifact named in manifest.json")
    if not artifact.exists():
        raise ZooError(f"artifact {artifact} named by {manifest_file} is missing", "re-export it with `zoo export`")
    digest, method, _size = sha256_of(artifact)
    expected = manifest["artifact"]["sha256"]
    if method != manifest["artifact"]["sha256_method"] or digest != expected:
        raise ZooError(f"artifact {artifact.name} does not match its manifest (sha256 {digest[:12]}... != "
                       f"{expected[:12]}...): the file is corrupted or was replaced",
                       "re-export it with `zoo export` or copy the original file back")
    return manifest, artifact


@dataclass
class LoadedArtifact:
    """A verified artifact with its manifest and a desktop runner (float32 NCHW in [0, 1] in/out)."""

    artifact: Path
    manifest: dict
    runner: object

    @property
    def tile(self) -> int:
        height, width = self.manifest["tiling"]["tile"]
        return int(height)

    def forward_tiles(self, batch: torch.Tensor) -> torch.Tensor:
        """Run the artifact on an (N, 3, tile, tile) batch; returns the float32 NCHW output."""
        array = batch.detach().to(torch.float32).cpu().numpy()
        return torch.from_numpy(np.ascontiguousarray(self.runner(array), dtype=np.float32))

    def restore(self, image: torch.Tensor, *, progress: bool = False) -> torch.Tensor:
        """Restore one image (3, H, W) float32 in [0, 1] tiled with the manifest's plan;
        returns (3, H * scale, W * scale) float32 clamped to [0, 1]."""
        from zoo.tiling import tiled_forward

        tiling = self.manifest["tiling"]
        height, width = tiling["tile"]
        if height != width:
            raise ZooError(f"{self.artifact.name} has a non-square tile {height}x{width}",
                           "re-export with a square tile (zoo's tiling is square)")
        restored = tiled_forward(self.forward_tiles, image.to(torch.float32).cpu(), tile=int(height),
                                 overlap=int(tiling["overlap"]), size_multiple=int(tiling["size_multiple"]),
                                 scale=int(tiling["scale"]), margin=int(tiling["margin"]), progress=progress)
        return restored.clamp_(0.0, 1.0)


def torch_runner(module: torch.nn.Module):
    """A runner with the artifact runners' interface (float32 NCHW numpy in and out) around a
    PyTorch ``module`` (the float model ``zoo check`` compares with, a quantized PT2E graph)."""
    def run(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(batch)).to(torch.float32).numpy()

    return run


def check_native_shapes(runner, manifest: dict, artifact: Path) -> None:
    """Raise :class:`ZooError` when the tensor shapes the loaded artifact declares
    (``runner.native_shapes``: input and output, in the artifact's own layout) differ from the
    manifest's ``inputs[0]`` / ``outputs[0]`` shapes; -1 on either side is a dynamic dimension.
    Runners that cannot tell (Core ML, PyTorch) have no ``native_shapes`` and are not checked.

    The sha256 proves the artifact is the file that was exported, not that the manifest beside it
    was written for it: a manifest of another tile, scale or layout would otherwise fail inside the
    runtime at the first tile, or time a tile it does not run.
    """
    native = getattr(runner, "native_shapes", None)
    if native is None:
        return
    for kind, actual in zip(("inputs", "outputs"), native):
        spec = manifest[kind][0]
        declared = [int(v) for v in spec["shape"]]
        actual = [int(v) for v in actual]
        if len(actual) != len(declared) or any(a != d and -1 not in (a, d) for a, d in zip(actual, declared)):
            raise ZooError(f"{artifact.name} has {kind[:-1]} shape {actual}, but its manifest declares {kind}[0].shape "
                           f"{declared} ({spec['layout']}): the manifest does not describe this artifact",
                           "re-export the artifact with `zoo export` (do not edit manifest.json by hand)")


def load_artifact(location: str | Path) -> LoadedArtifact:
    """Verify (manifest schema, sha256) and load an artifact for desktop inference.

    Raises :class:`ZooError` on a bad manifest or checksum, an unknown target, when the
    artifact's own tensor shapes differ from the manifest's (:func:`check_native_shapes`), or when
    the artifact cannot run on this machine (the message says where it runs, e.g. Core ML needs macOS).
    """
    from export_mobile.targets import get_target

    manifest, artifact = verify_artifact(location)
    target = get_target(manifest["target"])
    runner = target.load_runner(artifact, manifest)
    check_native_shapes(runner, manifest, artifact)
    return LoadedArtifact(artifact=artifact, manifest=manifest, runner=runner)


def run_artifact(artifact_or_dir: str | Path, inputs: Sequence[str | Path], output: str | Path, *,
                 overwrite: bool = False, progress: bool = False) -> list[dict]:
    """Restore image files with an exported artifact (tiled); returns one record per image.

    ``output``: a file for one input, else a folder (results keep their input names). Every
    input is read and every output path checked before the first result is written; existing
    outputs are refused unless ``overwrite``. Outputs keep the input's bit depth (PNG) and
    alpha channel, like ``zoo restore`` (the same file handling: :func:`zoo.inference.restore_image_files`).
    Records add ``artifact``, ``target`` and ``precision`` to that function's fields.
    """
    from zoo.inference import plan_outputs, restore_image_files

    targets = plan_outputs(inputs, output, overwrite=overwrite)
    loaded = load_artifact(artifact_or_dir)
    facts = {"artifact": loaded.artifact.name, "target": loaded.manifest["target"],
             "precision": loaded.manifest["precision"]}
    return restore_image_files(inputs, targets, lambda image: loaded.restore(image, progress=progress),
                               scale=int(loaded.manifest["tiling"]["scale"]), overwrite=overwrite,
                               details=lambda: facts)
