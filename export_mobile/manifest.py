"""The manifest.json beside every exported artifact: build, validate, write, read, checksum.

The format is the JSON Schema ``export_mobile/schemas/manifest.schema.json`` (draft 2020-12),
documented in ``docs/export.md``; the demo apps read the same file. Every manifest is validated
when written and when read by :mod:`export_mobile.schema` (``jsonschema`` when it is installed,
else a small built-in validator of the keywords the schema uses). Either way an invalid manifest
raises :class:`ZooError` naming the field, e.g. ``manifest field inputs[0].dtype: 'float64' is not one of ...``.
"""

from __future__ import annotations

import datetime
import hashlib
import importlib.metadata
from functools import lru_cache
from pathlib import Path

from export_mobile.schema import load_schema_file, read_json_file, schema_errors, validate_document
from zoo.errors import ZooError
from zoo.hashing import file_sha256
from zoo.registry import weights_record  # re-exported: manifests and quantize sidecars share it
from zoo.tasks import canonical_task

#: File name of the manifest inside an export folder.
MANIFEST_NAME = "manifest.json"
FORMAT = "zoo-mobile-manifest"
FORMAT_VERSION = 1
SCHEMA_PATH = Path(__file__).resolve().parent / "schemas" / "manifest.schema.json"

#: Packages whose versions every manifest records (null when not installed).
TOOL_PACKAGES = ("mobile-restoration-zoo", "torch", "torchao", "executorch", "coremltools", "litert-torch",
                 "ai-edge-litert", "onnx", "onnxruntime")

#: Largest finite float16 value: activations beyond it overflow to inf in fp16.
FP16_MAX = 65504.0

__all__ = ["MANIFEST_NAME", "FORMAT", "FORMAT_VERSION", "SCHEMA_PATH", "load_schema", "validate_manifest",
           "manifest_errors", "tiling_errors", "declared_errors",
           "write_manifest", "read_manifest", "sha256_of", "weights_record", "tool_versions", "tensor_spec", "utc_now"]


@lru_cache(maxsize=1)
def load_schema() -> dict:
    """The manifest JSON Schema as a dict."""
    return load_schema_file(SCHEMA_PATH)


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


_FIX = "re-export the artifact with `zoo export` (do not edit manifest.json by hand)"


def tiling_errors(manifest: dict) -> list[str]:
    """What a schema cannot say about a schema-valid ``manifest``, as ``"field.path: message"``:
    ``tiling`` must be a square tile plan ``zoo.tiling.plan_tiles`` accepts, ``tiling.scale`` must
    equal ``model.scale``, and ``inputs[0]`` / ``outputs[0]`` must hold one RGB tile of
    ``tiling.tile`` / ``tiling.tile * scale`` pixels in their layout (-1 for a dynamic height or
    width). The demo apps make the same checks on load, so a tile whose output would not fit
    the artifact is refused before any image runs. Empty when consistent.
    """
    from zoo.tiling import plan_tiles

    tiling = manifest["tiling"]
    height, width = tiling["tile"]
    if height != width:
        return [f"tiling.tile: tile {height}x{width} is not square; the tile plan uses square tiles: "
                "export with a square --tile"]
    errors = []
    scale = tiling["scale"]
    if scale != manifest["model"]["scale"]:
        errors.append(f"tiling.scale: {scale} differs from model.scale {manifest['model']['scale']}")
    try:
        plan_tiles(height, height, tile=height, overlap=tiling["overlap"], size_multiple=tiling["size_multiple"],
                   margin=tiling["margin"])
    except ZooError as err:
        errors.append(f"tiling: {err}")
    dynamic = manifest["dynamic_shapes"]
    for kind, side, what in (("inputs", height, f"tiling.tile {height}"),
                             ("outputs", height * scale, f"tiling.tile {height} x scale {scale} = {height * scale}")):
        spec = manifest[kind][0]
        expected = [1, 3, side, side] if spec["layout"] == "NCHW" else [1, side, side, 3]
        spatial = (2, 3) if spec["layout"] == "NCHW" else (1, 2)
        shape = spec["shape"]
        if any(value != wanted and not (dynamic and value == -1 and index in spatial)
               for index, (value, wanted) in enumerate(zip(shape, expected))):
            errors.append(f"{kind}[0].shape: {shape} does not fit {spec['layout']} RGB tiles of {what}: "
                          f"expected {expected}")
    return errors


def declared_errors(manifest: dict) -> list[str]:
    """What else a schema-valid ``manifest`` declares that cannot be true, as ``"field.path:
    message"``: ``precision`` is int8 exactly when ``quantization`` says how the model was made,
    ``artifact.file`` has the suffix its ``target`` writes, and a model of this zoo has its card's
    family, variant, task and scale. A manifest that names another model than the one exported
    would make ``zoo check`` compare the artifact with that model and ``zoo bench`` count its
    MACs; one that names another target would hand the file to the wrong runtime. Models and
    targets this zoo does not know (a newer zoo's) are not compared. Empty when consistent.
    """
    from export_mobile.targets import artifact_suffix
    from zoo.registry import get_card

    errors = []
    precision, quantization = manifest["precision"], manifest["quantization"]
    if (precision == "int8") != (quantization is not None):
        errors.append(f"quantization: null for an int8 artifact (it records how the int8 model was made)"
                      if quantization is None else
                      f"quantization: describes an int8 model (method {quantization['method']}) but precision is "
                      f"{precision}")
    suffix, file = artifact_suffix(manifest["target"]), manifest["artifact"]["file"]
    if suffix is not None and not file.endswith(suffix):
        errors.append(f"artifact.file: {file} is not a {suffix} file, which target {manifest['target']} writes")
    model = manifest["model"]
    try:
        card = get_card(model["name"])
    except ZooError:
        card = None
    if card is not None:
        declared = {"family": model["family"], "variant": model["variant"], "task": canonical_task(model["task"]),
                    "scale": model["scale"]}
        actual = {"family": card.family, "variant": card.variant, "task": card.task, "scale": card.scale}
        differ = [key for key in declared if declared[key] != actual[key]]
        if differ:
            errors.append(f"model: {model['name']} is " + ", ".join(f"{key} {actual[key]!r}" for key in differ)
                          + " in this zoo, the manifest says " + ", ".join(f"{declared[key]!r}" for key in differ)
                          + ": it names another model than the one exported")
    return errors


def manifest_errors(manifest, *, use_jsonschema: bool | None = None) -> list[str]:
    """Every schema violation of ``manifest`` as ``"field.path: message"`` (empty when valid; the
    consistency of a schema-valid one is :func:`tiling_errors` and :func:`declared_errors`).

    ``use_jsonschema``: True forces jsonschema (ImportError when missing), False the built-in
    validator, None (default) jsonschema when importable.
    """
    return schema_errors(manifest, load_schema(), use_jsonschema=use_jsonschema)


def validate_manifest(manifest, *, source: str = "manifest", use_jsonschema: bool | None = None) -> dict:
    """Return ``manifest`` when it follows the schema, its tiling fits its tensors
    (:func:`tiling_errors`) and what it declares can be true (:func:`declared_errors`), else raise
    :class:`ZooError` naming the field.

    A manifest of a newer ``format_version`` gets its own message (upgrade the zoo).
    """
    validate_document(manifest, load_schema(), source=source, format_name=FORMAT, format_version=FORMAT_VERSION,
                      use_jsonschema=use_jsonschema, fix=_FIX)
    errors = tiling_errors(manifest) + declared_errors(manifest)
    if errors:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ZooError(f"{source} is invalid: field {errors[0]}{more}", _FIX)
    return manifest


# --------------------------------------------------------------------------------------------
# Checksums, versions, pieces
# --------------------------------------------------------------------------------------------




def sha256_of(path: str | Path) -> tuple[str, str, int]:
    """``(hex digest, method, bytes)`` of an artifact file or folder.

    A file: sha256 of its bytes (method ``file``). A folder (``.mlpackage``): sha256 of the
    UTF-8 text with one line ``relative/posix/path<TAB>sha256-of-file\\n`` per regular file,
    sorted by path (method ``tree``); bytes is the sum of the file sizes.
    """
    path = Path(path)
    if path.is_file():
        return file_sha256(path), "file", path.stat().st_size
    if path.is_dir():
        lines, total = [], 0
        for file in sorted((p for p in path.rglob("*") if p.is_file()), key=lambda p: p.relative_to(path).as_posix()):
            lines.append(f"{file.relative_to(path).as_posix()}\t{file_sha256(file)}\n")
            total += file.stat().st_size
        return hashlib.sha256("".join(lines).encode("utf-8")).hexdigest(), "tree", total
    raise ZooError(f"artifact {path} does not exist", "re-export it with `zoo export`")


def tool_versions(packages=TOOL_PACKAGES) -> dict[str, str | None]:
    """Installed version of each package (None when it is not installed)."""
    versions = {}
    for package in packages:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def utc_now() -> str:
    """The current UTC time as ``YYYY-MM-DDTHH:MM:SSZ``."""
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def tensor_spec(name: str, shape, *, dtype: str = "float32", layout: str = "NCHW",
                value_range=(0.0, 1.0), quantization: dict | None = None) -> dict:
    """One entry of ``inputs``/``outputs``: shape in the order of ``layout``, value range of the
    real values, ``quantization = {"scale", "zero_point"}`` for int8/uint8 tensors."""
    if quantization is not None:
        quantization = {"scale": float(quantization["scale"]), "zero_point": int(quantization["zero_point"])}
    return {"name": str(name), "shape": [int(v) for v in shape], "dtype": dtype, "layout": layout, "color": "RGB",
            "value_range": [float(value_range[0]), float(value_range[1])], "quantization": quantization}


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def write_manifest(folder: str | Path, manifest: dict) -> Path:
    """Validate ``manifest`` and write it as ``folder/manifest.json`` (atomically); returns the path."""
    from zoo.atomic import write_json

    validate_manifest(manifest)
    return write_json(Path(folder) / MANIFEST_NAME, manifest)


def manifest_path_for(location: str | Path) -> Path:
    """The manifest of an export folder, of an artifact (its folder's manifest.json), or the file itself."""
    location = Path(location)
    if location.name == MANIFEST_NAME:
        return location
    if location.is_dir() and not location.suffix == ".mlpackage":
        return location / MANIFEST_NAME
    return location.parent / MANIFEST_NAME


def read_manifest(location: str | Path) -> dict:
    """Read and validate the manifest of an export folder / artifact / manifest.json path.

    Raises :class:`ZooError` when it is missing, not JSON, or breaks the schema (naming the field).
    ``model.task`` comes back as ``zoo.tasks`` spells it, also when the file uses an older alias.
    """
    path = manifest_path_for(location)
    if not Path(location).exists() and not path.exists():
        # Otherwise a mistyped export folder reads as "no manifest.json at <its parent>".
        raise ZooError(f"{location} does not exist",
                       "point at a folder written by `zoo export`, its artifact or its manifest.json")
    manifest = read_json_file(path, fix="re-export the artifact with `zoo export`", missing=(
        f"no {MANIFEST_NAME} at {path.parent}",
        "point at a folder written by `zoo export` (artifact and manifest.json side by side)"))
    validate_manifest(manifest, source=str(path))
    # An older file may spell its task by an alias ("sr"); callers see the table's name only.
    manifest["model"]["task"] = canonical_task(manifest["model"]["task"])
    return manifest
