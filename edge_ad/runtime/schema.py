"""A small JSON Schema (draft 2020-12 subset) validator for the model package manifest.

The runtime must not depend on the `jsonschema` package (not installed on the line), so this module implements the
keywords the manifest schema uses and refuses schemas using any other keyword (silently ignoring one would make a
check vanish). Errors are user-facing: `manifest.json: input.preprocess.crop: expected array of 2 integers, got 'abc'`.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

from edge_ad.errors import PackageError

MANIFEST_SCHEMA_PATH = Path(__file__).resolve().parents[1] / "schemas" / "manifest.schema.json"

_ANNOTATIONS = {"$schema", "$id", "title", "description", "default", "examples", "$comment"}
_KEYWORDS = {
    "type", "required", "properties", "additionalProperties", "enum", "const", "items", "minItems", "maxItems",
    "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength", "pattern", "anyOf",
}
_TYPE_NAMES = {
    "object": "object", "array": "array", "string": "string", "integer": "integer", "number": "number",
    "boolean": "boolean", "null": "null",
}


def _is_type(value: Any, type_name: str) -> bool:
    """JSON type test with JSON Schema semantics (bool is not a number; 1.0 is an integer)."""
    if type_name == "object":
        return isinstance(value, dict)
    if type_name == "array":
        return isinstance(value, list)
    if type_name == "string":
        return isinstance(value, str)
    if type_name == "boolean":
        return isinstance(value, bool)
    if type_name == "null":
        return value is None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if type_name == "number":
        return True
    if type_name == "integer":
        return isinstance(value, int) or float(value).is_integer()
    raise ValueError(f"schema: unknown type {type_name!r}")


def _json_equal(a: Any, b: Any) -> bool:
    """Equality as JSON Schema defines it for `const`/`enum`: true != 1, 1 == 1.0."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b))
    if _is_num(a) and _is_num(b):
        return a == b
    return type(a) is type(b) and a == b


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _plural(type_name: str) -> str:
    return {"boolean": "booleans", "integer": "integers", "number": "numbers", "string": "strings",
            "object": "objects", "array": "arrays", "null": "nulls"}.get(type_name, type_name)


def describe(schema: dict[str, Any]) -> str:
    """Human description of what `schema` accepts, e.g. 'array of 2 integers >= 1' or "one of 'RGB', 'BGR'"."""
    if "const" in schema:
        return f"{json.dumps(schema['const'])}"
    if "enum" in schema:
        return "one of " + ", ".join(json.dumps(v) for v in schema["enum"])
    if "anyOf" in schema:
        return " or ".join(describe(s) for s in schema["anyOf"])
    t = schema.get("type")
    names = [t] if isinstance(t, str) else list(t or [])
    base = " or ".join(_TYPE_NAMES.get(n, n) for n in names) or "value"
    if names == ["array"]:
        lo, hi = schema.get("minItems"), schema.get("maxItems")
        item = schema.get("items", {})
        it = item.get("type") if isinstance(item, dict) else None
        of = _plural(it) if isinstance(it, str) else "items"
        bounds = _bounds(item) if isinstance(item, dict) else ""
        if lo is not None and lo == hi:
            return f"array of {lo} {of}{bounds}"
        if lo:
            return f"array of at least {lo} {of}{bounds}"
        return f"array of {of}{bounds}"
    return base + _bounds(schema)


def _bounds(schema: dict[str, Any]) -> str:
    parts = []
    if "minimum" in schema:
        parts.append(f">= {schema['minimum']}")
    if "exclusiveMinimum" in schema:
        parts.append(f"> {schema['exclusiveMinimum']}")
    if "maximum" in schema:
        parts.append(f"<= {schema['maximum']}")
    if "exclusiveMaximum" in schema:
        parts.append(f"< {schema['exclusiveMaximum']}")
    if "minLength" in schema:
        parts.append("non-empty" if schema["minLength"] == 1 else f"of length >= {schema['minLength']}")
    if "pattern" in schema:
        parts.append(f"matching /{schema['pattern']}/")
    return (" " + " ".join(parts)) if parts else ""


def _show(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _check_keywords(schema: dict[str, Any], where: str) -> None:
    unknown = set(schema) - _KEYWORDS - _ANNOTATIONS
    if unknown:
        raise ValueError(f"schema {where or '<root>'}: unsupported keyword(s) {sorted(unknown)}")


def validate(instance: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """All violations of `schema` by `instance` as 'field.path: expected X, got Y' strings (empty when valid)."""
    _check_keywords(schema, path)
    errors: list[str] = []
    here = path or "<root>"

    def fail() -> None:
        errors.append(f"{here}: expected {describe(schema)}, got {_show(instance)}")

    if "const" in schema and not _json_equal(instance, schema["const"]):
        fail()
        return errors
    if "enum" in schema and not any(_json_equal(instance, v) for v in schema["enum"]):
        fail()
        return errors
    if "anyOf" in schema and all(validate(instance, sub, path) for sub in schema["anyOf"]):
        fail()
        return errors
    t = schema.get("type")
    if t is not None:
        names = [t] if isinstance(t, str) else list(t)
        if not any(_is_type(instance, n) for n in names):
            fail()
            return errors
    if _is_num(instance) and (
        ("minimum" in schema and instance < schema["minimum"]) or (
            "maximum" in schema and instance > schema["maximum"]) or (
            "exclusiveMinimum" in schema and instance <= schema["exclusiveMinimum"]) or (
            "exclusiveMaximum" in schema and instance >= schema["exclusiveMaximum"])
    ):
        fail()
        return errors
    if isinstance(instance, str) and (
        ("minLength" in schema and len(instance) < schema["minLength"])
        or ("pattern" in schema and re.search(schema["pattern"], instance) is None)
    ):
        fail()
        return errors
    if isinstance(instance, list):
        if ("minItems" in schema and len(instance) < schema["minItems"]) or (
            "maxItems" in schema and len(instance) > schema["maxItems"]
        ):
            fail()
            return errors
        item_schema = schema.get("items")
        if isinstance(item_schema, dict):
            item_errors = [e for i, v in enumerate(instance) for e in validate(v, item_schema, _join(path, i))]
            scalar_items = item_schema.get("type") not in ("object", "array")
            if item_errors and scalar_items:
                fail()  # arrays of scalars read better as one message about the whole array
                return errors
            errors.extend(item_errors)
    if isinstance(instance, dict):
        props: dict[str, Any] = schema.get("properties", {})
        for name in schema.get("required", []):
            if name not in instance:
                errors.append(f"{_join(path, name)}: missing required field")
        extra = schema.get("additionalProperties", True)
        for key, value in instance.items():
            if key in props:
                errors.extend(validate(value, props[key], _join(path, key)))
            elif extra is False:
                allowed = ", ".join(sorted(props))
                errors.append(f"{_join(path, key)}: unexpected field (allowed: {allowed})")
            elif isinstance(extra, dict):
                errors.extend(validate(value, extra, _join(path, key)))
    return errors


@lru_cache(maxsize=1)
def manifest_schema() -> dict[str, Any]:
    """The packaged manifest JSON Schema (loaded once)."""
    with open(MANIFEST_SCHEMA_PATH, encoding="utf-8") as f:
        return json.load(f)


def validate_manifest(manifest: Any, source: str = "manifest.json") -> None:
    """Raise PackageError listing every schema violation of `manifest`, each prefixed with `source`."""
    errors = validate(manifest, manifest_schema())
    if errors:
        shown = errors[:20]
        more = f"\n  ... and {len(errors) - 20} more" if len(errors) > 20 else ""
        if len(shown) == 1:
            raise PackageError(f"{source}: {shown[0]}")
        raise PackageError(f"{source}: {len(errors)} problems:\n  " + "\n  ".join(shown) + more)
