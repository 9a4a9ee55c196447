"""The manifest.json beside every exported artifact: build, validate, write, read, checksum.

The format is the JSON Schema ``export_mobile/schemas/manifest.schema.json`` (draft 2020-12),
documented in ``docs/export.md``; the demo apps read the same file. Every manifest is validated
when written and when read: with ``jsonschema`` when it is installed, else with the small
validator below, which implements the keywords the schema uses (type, const, enum, required,
properties, additionalProperties, items, minItems/maxItems, minimum/exclusiveMinimum,
minLength, pattern, local ``$ref``). Either way an invalid manifest raises :class:`ZooError`
naming the field, e.g. ``manifest field inputs[0].dtype: 'float64' is not one of ...``.
"""

from __future__ import annotations

import datetime
import hashlib
import importlib.metadata
import json
import re
from functools import lru_cache
from pathlib import Path

from zoo.errors import ZooError

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
           "write_manifest", "read_manifest", "sha256_of", "tool_versions", "tensor_spec", "utc_now"]


@lru_cache(maxsize=1)
def load_schema() -> dict:
    """The manifest JSON Schema as a dict."""
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


def _path_text(path) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


_JSON_TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "integer": lambda v: (isinstance(v, int) and not isinstance(v, bool))
    or (isinstance(v, float) and v.is_integer()),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
}


def _builtin_errors(value, schema: dict, root: dict, path: list) -> list[tuple[list, str]]:
    """(path, message) for every way ``value`` breaks ``schema`` (the keywords our schema uses)."""
    if "$ref" in schema:
        reference = schema["$ref"]
        if not reference.startswith("#/"):
            raise ValueError(f"only local $ref are supported, got {reference}")
        target = root
        for key in reference[2:].split("/"):
            target = target[key]
        return _builtin_errors(value, target, root, path)
    errors: list[tuple[list, str]] = []
    if "const" in schema and not (value == schema["const"] and type(value) is type(schema["const"])):
        return [(path, f"{value!r} should be {schema['const']!r}")]
    if "enum" in schema and value not in schema["enum"]:
        return [(path, f"{value!r} is not one of {schema['enum']}")]
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_JSON_TYPES[name](value) for name in types):
            return [(path, f"{value!r} is not of type {' or '.join(types)}")]
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            errors.append((path, f"{value!r} is shorter than {schema['minLength']}"))
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append((path, f"{value!r} does not match {schema['pattern']!r}"))
    if _JSON_TYPES["number"](value):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append((path, f"{value!r} is less than the minimum of {schema['minimum']}"))
        if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
            errors.append((path, f"{value!r} is not greater than {schema['exclusiveMinimum']}"))
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            errors.append((path, f"{value!r} has fewer than {schema['minItems']} items"))
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            errors.append((path, f"{value!r} has more than {schema['maxItems']} items"))
        if isinstance(schema.get("items"), dict):
            for index, item in enumerate(value):
                errors += _builtin_errors(item, schema["items"], root, path + [index])
    if isinstance(value, dict):
        for key in schema.get("required", []):
            if key not in value:
                errors.append((path, f"{key!r} is a required property"))
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            if key in properties:
                errors += _builtin_errors(item, properties[key], root, path + [key])
            elif extra is False:
                errors.append((path, f"additional property {key!r} is not allowed"))
            elif isinstance(extra, dict):
                errors += _builtin_errors(item, extra, root, path + [key])
    return errors


def _jsonschema_errors(manifest: dict, schema: dict) -> list[tuple[list, str]] | None:
    try:
        import jsonschema
    except ImportError:
        return None
    validator = jsonschema.Draft202012Validator(schema)
    found = sorted(validator.iter_errors(manifest), key=lambda e: list(map(str, e.absolute_path)))
    return [(list(error.absolute_path), error.message) for error in found]


def manifest_errors(manifest, *, use_jsonschema: bool | None = None) -> list[str]:
    """Every schema violation of ``manifest`` as ``"field.path: message"`` (empty when valid).

    ``use_jsonschema``: True forces jsonschema (ImportError when missing), False the built-in
    validator, None (default) jsonschema when importable.
    """
    schema = load_schema()
    errors = None
    if use_jsonschema is not False:
        errors = _jsonschema_errors(manifest, schema)
        if errors is None and use_jsonschema:
            raise ImportError("jsonschema is not installed")
    if errors is None:
        errors = _builtin_errors(manifest, schema, schema, [])
    return [f"{_path_text(path)}: {message}" for path, message in errors]


def validate_manifest(manifest, *, source: str = "manifest", use_jsonschema: bool | None = None) -> dict:
    """Return ``manifest`` when it follows the schema, else raise :class:`ZooError` naming the field.

    A manifest of a newer ``format_version`` gets its own message (upgrade the zoo).
    """
    if isinstance(manifest, dict) and isinstance(manifest.get("format_version"), int) \
            and manifest.get("format") == FORMAT and manifest["format_version"] > FORMAT_VERSION:
        raise ZooError(f"{source} has format_version {manifest['format_version']}, newer than this zoo's "
                       f"{FORMAT_VERSION}", "upgrade mobile-restoration-zoo to read it")
    errors = manifest_errors(manifest, use_jsonschema=use_jsonschema)
    if errors:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ZooError(f"{source} is invalid: field {errors[0]}{more}",
                       "re-export the artifact with `zoo export` (do not edit manifest.json by hand)")
    return manifest


# --------------------------------------------------------------------------------------------
# Checksums, versions, pieces
# --------------------------------------------------------------------------------------------


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_of(path: str | Path) -> tuple[str, str, int]:
    """``(hex digest, method, bytes)`` of an artifact file or folder.

    A file: sha256 of its bytes (method ``file``). A folder (``.mlpackage``): sha256 of the
    UTF-8 text with one line ``relative/posix/path<TAB>sha256-of-file\\n`` per regular file,
    sorted by path (method ``tree``); bytes is the sum of the file sizes.
    """
    path = Path(path)
    if path.is_file():
        return _file_sha256(path), "file", path.stat().st_size
    if path.is_dir():
        lines, total = [], 0
        for file in sorted((p for p in path.rglob("*") if p.is_file()), key=lambda p: p.relative_to(path).as_posix()):
            lines.append(f"{file.relative_to(path).as_posix()}\t{_file_sha256(file)}\n")
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
    """
    path = manifest_path_for(location)
    if not path.is_file():
        raise ZooError(f"no {MANIFEST_NAME} at {path.parent}",
                       "point at a folder written by `zoo export` (artifact and manifest.json side by side)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ZooError(f"{path} is not valid JSON ({err})", "re-export the artifact with `zoo export`") from None
    return validate_manifest(manifest, source=str(path))
