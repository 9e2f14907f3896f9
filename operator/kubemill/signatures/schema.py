"""The language-neutral half of signature parsing: parameters in, a Windmill-shaped JSON Schema out.

Each language module reads `main`'s parameters into `Param`s; `object_schema` turns them into the schema
Windmill stores for a script (`$schema`, `type: object`, `properties`, `required`, `order`). The small
builders here (`resource`, `array`, `enum`, ...) keep the JSON Schema encodings in one place so the four
languages agree on them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"

JsonSchema = dict[str, Any]


class SignatureError(ValueError):
    """The code does not parse, or `main` cannot be found or read. `str()` names the line when known."""

    def __init__(self, message: str, line: int | None = None) -> None:
        self.message = message
        self.line = line
        super().__init__(f"line {line}: {message}" if line is not None else message)


class _NoDefault:
    """Marks a parameter whose default is absent or not a static value (a call, a variable, ...)."""

    def __repr__(self) -> str:
        return "NO_DEFAULT"


NO_DEFAULT: Any = _NoDefault()


@dataclass(frozen=True)
class Param:
    """One parameter of `main`: its JSON Schema, whether a caller must pass it, and its static default."""

    name: str
    schema: JsonSchema
    required: bool
    default: Any = NO_DEFAULT
    description: str = ""


def object_schema(params: list[Param]) -> JsonSchema:
    """The script's input schema, in the shape Windmill writes into `.script.yaml`."""
    properties: dict[str, JsonSchema] = {}
    for p in params:
        if p.name in properties:
            raise SignatureError(f"main has two parameters named {p.name!r}")
        prop: JsonSchema = {**p.schema, "description": p.description}
        if p.default is not NO_DEFAULT:
            prop["default"] = p.default
        properties[p.name] = prop
    return {
        "$schema": DRAFT_2020_12,
        "type": "object",
        "properties": properties,
        "required": [p.name for p in params if p.required],
        "order": [p.name for p in params],
    }


# --- encodings shared by the languages ---------------------------------------------------------------

ANY: JsonSchema = {}
STRING: JsonSchema = {"type": "string"}
INTEGER: JsonSchema = {"type": "integer"}
NUMBER: JsonSchema = {"type": "number"}
BOOLEAN: JsonSchema = {"type": "boolean"}
OBJECT: JsonSchema = {"type": "object"}
DATETIME: JsonSchema = {"type": "string", "format": "date-time"}
DATE: JsonSchema = {"type": "string", "format": "date"}
BYTES: JsonSchema = {"type": "string", "contentEncoding": "base64"}
EMAIL: JsonSchema = {"type": "string", "format": "email"}
SQL: JsonSchema = {"type": "string", "format": "sql"}


def array(items: JsonSchema | None = None) -> JsonSchema:
    """`T[]`, `list[T]`, `[]T`; a list of unknown items constrains nothing about them."""
    return {"type": "array", "items": items} if items else {"type": "array"}


def mapping(values: JsonSchema) -> JsonSchema:
    """`dict[str, T]`, `Record<string, T>`, `map[string]T`."""
    return {"type": "object", "additionalProperties": values} if values else dict(OBJECT)


def record(properties: dict[str, JsonSchema], required: list[str]) -> JsonSchema:
    """An object with known properties (a TypeScript object type, a Go struct, a dataclass)."""
    out: JsonSchema = {"type": "object", "properties": properties}
    if required:
        out["required"] = required
    return out


def enum(values: list[Any]) -> JsonSchema:
    """`Literal[...]`, an Enum class, a union of string literals; typed when all values share a type."""
    kinds = {_json_type(v) for v in values}
    out: JsonSchema = {"enum": values}
    if len(kinds) == 1 and None not in kinds:
        out = {"type": kinds.pop(), "enum": values}
    return out


def any_of(options: list[JsonSchema]) -> JsonSchema:
    """A union that is not an enum: any of its members (or anything, if one member is unconstrained)."""
    unique: list[JsonSchema] = []
    for o in options:
        if o not in unique:
            unique.append(o)
    if len(unique) == 1:
        return unique[0]
    if not unique or ANY in unique:
        return dict(ANY)
    return {"anyOf": unique}


def resource(type_name: str) -> JsonSchema:
    """A Windmill resource type: an object whose form picks a Resource of that type (`$res:<path>`)."""
    return {"type": "object", "format": f"resource-{snake_case(type_name)}"}


def from_default(value: Any) -> JsonSchema:
    """The type of an unannotated parameter, read from its default (as Windmill does)."""
    kind = _json_type(value)
    if kind is None or value is None:
        return dict(ANY)
    if kind == "array":
        items = any_of([from_default(v) for v in value]) if value else ANY
        return array(items or None)
    return {"type": kind}


def _json_type(value: Any) -> str | None:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return None


_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def snake_case(name: str) -> str:
    """`Postgresql` -> `postgresql`, `S3Object` -> `s3_object`, `GCloudAccount` -> `g_cloud_account`."""
    if name.islower() or not any(c.isalpha() for c in name):
        return name
    words = _CAMEL_BOUNDARY.sub("_", name).lower()
    return re.sub(r"_(\d)", r"\1", words)
