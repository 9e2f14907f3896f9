"""TypeScript `main` signatures -> JSON Schema, as a table of (code, properties, required)."""

from __future__ import annotations

from typing import Any

import pytest
from jsonschema import Draft202012Validator
from kubemill.signatures import SignatureError, derive_schema

D = ""
PG = {"type": "object", "format": "resource-postgresql", "description": D}

CASES: list[tuple[str, str, dict[str, Any], list[str]]] = [
    (
        "primitives, optional and defaulted",
        "export async function main(s: string, n: number, b: boolean, o?: object, d = 'x', k: bigint = 2) {}",
        {
            "s": {"type": "string", "description": D},
            "n": {"type": "number", "description": D},
            "b": {"type": "boolean", "description": D},
            "o": {"type": "object", "description": D},
            "d": {"type": "string", "description": D, "default": "x"},
            "k": {"type": "integer", "description": D, "default": 2},
        },
        ["s", "n", "b"],
    ),
    (
        "object literal types",
        "export function main(p: {a: string; b?: number, 'c-d': {e: boolean[]}}) {}",
        {
            "p": {
                "type": "object",
                "properties": {
                    "a": {"type": "string"},
                    "b": {"type": "number"},
                    "c-d": {
                        "type": "object",
                        "properties": {"e": {"type": "array", "items": {"type": "boolean"}}},
                        "required": ["e"],
                    },
                },
                "required": ["a", "c-d"],
                "description": D,
            }
        },
        ["p"],
    ),
    (
        "arrays and records",
        "export async function main(a: string[], b: Array<number>, c: Record<string, boolean>, d: any[]) {}",
        {
            "a": {"type": "array", "items": {"type": "string"}, "description": D},
            "b": {"type": "array", "items": {"type": "number"}, "description": D},
            "c": {"type": "object", "additionalProperties": {"type": "boolean"}, "description": D},
            "d": {"type": "array", "description": D},
        },
        ["a", "b", "c", "d"],
    ),
    (
        "unions of string literals are enums; null and undefined make a parameter optional",
        "export async function main(fmt: 'json' | 'csv' | 'parquet' = 'json', x: string | undefined,\n"
        "  y: number | null, z: 'a' | null, w: string | number) {}",
        {
            "fmt": {
                "type": "string",
                "enum": ["json", "csv", "parquet"],
                "description": D,
                "default": "json",
            },
            "x": {"type": "string", "description": D},
            "y": {"type": "number", "description": D},
            "z": {"type": "string", "enum": ["a"], "description": D},
            "w": {"anyOf": [{"type": "string"}, {"type": "number"}], "description": D},
        },
        ["w"],
    ),
    (
        "Date is a date-time string",
        "export async function main(when: Date, many: Date[]) {}",
        {
            "when": {"type": "string", "format": "date-time", "description": D},
            "many": {"type": "array", "items": {"type": "string", "format": "date-time"}, "description": D},
        },
        ["when", "many"],
    ),
    (
        "resource types: RT namespace, object aliases, undeclared names, Resource<'x'>",
        "type Postgresql = object;\n"
        "export async function main(a: RT.Postgresql, b: Postgresql, c: Slack, d: Resource<'gcp_account'>,\n"
        "  e: GcpServiceAccount) {}",
        {
            "a": PG,
            "b": PG,
            "c": {"type": "object", "format": "resource-slack", "description": D},
            "d": {"type": "object", "format": "resource-gcp_account", "description": D},
            "e": {"type": "object", "format": "resource-gcp_service_account", "description": D},
        },
        ["a", "b", "c", "d", "e"],
    ),
    (
        "aliases and interfaces declared in the file are resolved",
        "type Period = 'daily' | 'weekly';\n"
        "export interface Config { period: Period; tags?: string[]; [extra: string]: unknown }\n"
        "export type Node = { name: string; children: Node[] };\n"
        "export async function main(c: Config, n: Node) {}",
        {
            "c": {
                "type": "object",
                "properties": {
                    "period": {"type": "string", "enum": ["daily", "weekly"]},
                    "tags": {"type": "array", "items": {"type": "string"}},
                },
                "required": ["period"],
                "description": D,
            },
            "n": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "children": {"type": "array", "items": {"type": "object"}},
                },
                "required": ["name", "children"],
                "description": D,
            },
        },
        ["c", "n"],
    ),
    (
        "defaults come from literal initialisers only",
        "const X = 3;\n"
        "export async function main(a = -1.5, b = {k: [1, 'two', null, true]}, c = `tpl`, d = X,\n"
        "  e: string = `a${X}`, f = [] as string[]) {}",
        {
            "a": {"type": "number", "description": D, "default": -1.5},
            "b": {"type": "object", "description": D, "default": {"k": [1, "two", None, True]}},
            "c": {"type": "string", "description": D, "default": "tpl"},
            "d": {"description": D},
            "e": {"type": "string", "description": D},
            "f": {"type": "array", "description": D, "default": []},
        },
        [],
    ),
    (
        "string escapes in defaults",
        "export function main(s = \"a\\\"b\\n\", t = 'it\\'s') {}",
        {
            "s": {"type": "string", "description": D, "default": 'a"b\n'},
            "t": {"type": "string", "description": D, "default": "it's"},
        },
        [],
    ),
]


@pytest.mark.parametrize(
    ("code", "properties", "required"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_typescript_signature(code: str, properties: dict[str, Any], required: list[str]) -> None:
    schema = derive_schema("deno", code)
    Draft202012Validator.check_schema(schema)
    assert schema["properties"] == properties
    assert schema["required"] == required
    assert schema["order"] == list(properties)


@pytest.mark.parametrize("language", ["bun", "typescript"])
def test_bun_and_typescript_read_like_deno(language: str) -> None:
    code = "export async function main(a: string, b = 2) { return a }"
    assert derive_schema(language, code) == derive_schema("deno", code)


def test_only_the_exported_main_counts() -> None:
    code = (
        "function main(x: number) {}\nexport function other(y: number) {}\nexport function main(z: string) {}"
    )
    assert derive_schema("deno", code)["order"] == ["z"]


def test_syntax_error_names_the_line() -> None:
    with pytest.raises(SignatureError) as info:
        derive_schema(
            "deno", "import x from 'y';\n\nexport async function main(a: string {\n  return a;\n}\n"
        )
    assert info.value.line == 3
    assert str(info.value).startswith("line 3: ")


def test_missing_main_is_an_error() -> None:
    with pytest.raises(SignatureError, match="main"):
        derive_schema("deno", "export async function handler(a: string) {}\n")


@pytest.mark.parametrize("param", ["{ a }: { a: string }", "...rest: string[]"])
def test_destructured_and_rest_parameters_are_rejected_with_their_line(param: str) -> None:
    with pytest.raises(SignatureError) as info:
        derive_schema("deno", f"export function main(\n  first: string,\n  {param},\n) {{}}\n")
    assert info.value.line == 3
    assert "plain names" in info.value.message
