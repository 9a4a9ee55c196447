"""JSON Schema validation shared by the manifest (``manifest.schema.json``) and the results files
(``results.schema.json``).

:func:`schema_errors` uses ``jsonschema`` (draft 2020-12) when it is installed, else the small
validator below, which implements the keywords the zoo's schemas use (type, const, enum, required,
properties, additionalProperties, items, minItems/maxItems, minimum/maximum/exclusiveMinimum,
minLength, pattern, local ``$ref``). Either way each error is one ``"field.path: message"`` string,
e.g. ``records[0].latency_ms.median: -1 is less than the minimum of 0``.

Both also refuse NaN and infinities anywhere in a document: JSON has no such numbers (Python's
``json`` writes ``NaN``/``Infinity`` anyway, and reads them back), JSON Schema's ``number`` lets
them through, and one NaN breaks every ranking and comparison made with it.
"""

from __future__ import annotations

import json
import math
import re
from functools import lru_cache
from pathlib import Path

from zoo.errors import ZooError

__all__ = ["load_schema_file", "schema_errors", "validate_document", "read_json_file", "path_text"]


@lru_cache(maxsize=None)
def load_schema_file(path: str | Path) -> dict:
    """A JSON Schema file as a dict (cached per path; do not mutate the result)."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def path_text(path) -> str:
    """A field path (list of keys and indices) as text: ``records[0].latency_ms`` or ``(top level)``."""
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
    """(path, message) for every way ``value`` breaks ``schema`` (the keywords our schemas use)."""
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
        if "maximum" in schema and value > schema["maximum"]:
            errors.append((path, f"{value!r} is greater than the maximum of {schema['maximum']}"))
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


def _non_finite_errors(value, path: list) -> list[tuple[list, str]]:
    """(path, message) for every NaN or infinite float in ``value`` (a parsed JSON document)."""
    if isinstance(value, float) and not math.isfinite(value):
        return [(path, f"{json.dumps(value)} is not a finite number (JSON has no NaN or Infinity; write null for unknown)")]
    if isinstance(value, dict):
        return [error for key, item in value.items() for error in _non_finite_errors(item, path + [key])]
    if isinstance(value, list):
        return [error for index, item in enumerate(value) for error in _non_finite_errors(item, path + [index])]
    return []


def _jsonschema_errors(document, schema: dict) -> list[tuple[list, str]] | None:
    """jsonschema's (path, message) list, sorted by path; None when jsonschema is not installed."""
    try:
        import jsonschema
    except ImportError:
        return None
    validator = jsonschema.Draft202012Validator(schema)
    found = sorted(validator.iter_errors(document), key=lambda e: list(map(str, e.absolute_path)))
    return [(list(error.absolute_path), error.message) for error in found]


def schema_errors(document, schema: dict, *, use_jsonschema: bool | None = None) -> list[str]:
    """Every violation of ``schema`` by ``document`` as ``"field.path: message"`` (empty when valid),
    non-finite numbers (NaN, infinities) included wherever they are.

    ``use_jsonschema``: True forces jsonschema (ImportError when missing), False the built-in
    validator, None (default) jsonschema when importable.
    """
    errors = None
    if use_jsonschema is not False:
        errors = _jsonschema_errors(document, schema)
        if errors is None and use_jsonschema:
            raise ImportError("jsonschema is not installed")
    if errors is None:
        errors = _builtin_errors(document, schema, schema, [])
    non_finite = _non_finite_errors(document, [])
    if non_finite:  # one error per field, the real one: -inf is also "less than the minimum of 0"
        bad = {path_text(path) for path, _message in non_finite}
        errors = sorted([error for error in errors if path_text(error[0]) not in bad] + non_finite,
                        key=lambda error: list(map(str, error[0])))
    return [f"{path_text(path)}: {message}" for path, message in errors]


def validate_document(document, schema: dict, *, source: str, fix: str, format_name: str | None = None,
                      format_version: int | None = None, use_jsonschema: bool | None = None):
    """Return ``document`` when it follows ``schema``, else raise :class:`ZooError`
    ``"{source} is invalid: field {path}: {message}"`` (the first error; the count of the others).

    With ``format_name``/``format_version``, a document of that format and a newer version gets its
    own message (upgrade the zoo) instead of a list of unknown fields.
    """
    if format_name is not None and isinstance(document, dict) and document.get("format") == format_name \
            and isinstance(document.get("format_version"), int) and document["format_version"] > format_version:
        raise ZooError(f"{source} has format_version {document['format_version']}, newer than this zoo's "
                       f"{format_version}", "upgrade mobile-restoration-zoo to read it")
    errors = schema_errors(document, schema, use_jsonschema=use_jsonschema)
    if errors:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ZooError(f"{source} is invalid: field {errors[0]}{more}", fix)
    return document


def _non_finite_constant(token: str) -> float:
    """``json.loads`` hook for NaN/Infinity/-Infinity: a float the validators then refuse by field."""
    return float(token)


def read_json_file(path: Path, *, missing: tuple[str, str], fix: str):
    """The parsed JSON of ``path``; :class:`ZooError` ``missing`` (problem, fix) when it is not a file,
    ``"{path} is not valid JSON (...)"`` with ``fix`` when it does not parse.

    The tokens ``NaN``, ``Infinity`` and ``-Infinity`` (not JSON, but what Python's ``json`` writes)
    are read as floats on purpose, so that :func:`validate_document` refuses them naming the field.
    """
    if not path.is_file():
        raise ZooError(*missing)
    try:
        return json.loads(path.read_text(encoding="utf-8"), parse_constant=_non_finite_constant)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ZooError(f"{path} is not valid JSON ({err})", fix) from None
