"""Go `main` signatures -> JSON Schema, as a table of (code, properties); every Go parameter is required."""

from __future__ import annotations

from typing import Any

import pytest
from jsonschema import Draft202012Validator
from kubemill.signatures import SignatureError, derive_schema

D = ""
HEAD = 'package inner\n\nimport "time"\n\n'
CONFIG = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "batch_size": {"type": "integer"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "Plain": {"type": "boolean"},
        "Other": {"type": "boolean"},
        "nested": {"type": "object", "properties": {"on": {"type": "boolean"}}, "required": ["on"]},
    },
    "required": ["id", "batch_size", "Plain", "Other"],
}

CASES: list[tuple[str, str, dict[str, Any]]] = [
    (
        "scalars",
        "func main(s string, i int, i8 int8, i64 int64, u uint, u32 uint32, f float32, g float64, b bool)"
        " (interface{}, error) {\n\treturn nil, nil\n}",
        {
            "s": {"type": "string", "description": D},
            "i": {"type": "integer", "description": D},
            "i8": {"type": "integer", "description": D},
            "i64": {"type": "integer", "description": D},
            "u": {"type": "integer", "description": D},
            "u32": {"type": "integer", "description": D},
            "f": {"type": "number", "description": D},
            "g": {"type": "number", "description": D},
            "b": {"type": "boolean", "description": D},
        },
    ),
    (
        "slices, arrays, maps, pointers, interfaces, grouped names",
        "func Main(a, b []string, c [3]int, m map[string]float64, n map[string]interface{}, p *int,"
        " x interface{}, y any, t time.Time, raw []byte) (any, error) { return nil, nil }",
        {
            "a": {"type": "array", "items": {"type": "string"}, "description": D},
            "b": {"type": "array", "items": {"type": "string"}, "description": D},
            "c": {"type": "array", "items": {"type": "integer"}, "description": D},
            "m": {"type": "object", "additionalProperties": {"type": "number"}, "description": D},
            "n": {"type": "object", "description": D},
            "p": {"type": "integer", "description": D},
            "x": {"description": D},
            "y": {"description": D},
            "t": {"type": "string", "format": "date-time", "description": D},
            "raw": {"type": "string", "contentEncoding": "base64", "description": D},
        },
    ),
    (
        "structs declared in the file, by json tag",
        'type Base struct {\n\tID string `json:"id"`\n}\n'
        "type Config struct {\n"
        "\tBase\n"
        '\tBatchSize int `json:"batch_size"`\n'
        '\tTags []string `json:"tags,omitempty"`\n'
        '\tSecret string `json:"-"`\n'
        "\tinternal int\n"
        "\tPlain, Other bool\n"
        '\tNested *struct {\n\t\tOn bool `json:"on" yaml:"x"`\n\t} `json:"nested,omitempty"`\n'
        "}\n"
        "func main(cfg Config, list []Config) (interface{}, error) { return nil, nil }",
        {
            "cfg": {**CONFIG, "description": D},
            "list": {"type": "array", "items": CONFIG, "description": D},
        },
    ),
    (
        "named non-struct types resolve; undeclared names are resource types",
        'type Level string\ntype Tree struct {\n\tKids []Tree `json:"kids"`\n}\n'
        "func main(l Level, db Postgresql, s3 S3Object, t Tree) (interface{}, error) { return nil, nil }",
        {
            "l": {"type": "string", "description": D},
            "db": {"type": "object", "format": "resource-postgresql", "description": D},
            "s3": {"type": "object", "format": "resource-s3_object", "description": D},
            "t": {
                "type": "object",
                "properties": {"kids": {"type": "array", "items": {"type": "object"}}},
                "required": ["kids"],
                "description": D,
            },
        },
    ),
    ("no parameters", "func main() (interface{}, error) { return 1, nil }", {}),
]


@pytest.mark.parametrize(("code", "properties"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_go_signature(code: str, properties: dict[str, Any]) -> None:
    schema = derive_schema("go", HEAD + code)
    Draft202012Validator.check_schema(schema)
    assert schema["properties"] == properties
    assert schema["required"] == list(properties)
    assert schema["order"] == list(properties)


def test_syntax_error_names_the_line() -> None:
    with pytest.raises(SignatureError) as info:
        derive_schema("go", HEAD + "func main(a string (interface{}, error) {\n\treturn a, nil\n}\n")
    assert info.value.line == 5
    assert str(info.value).startswith("line 5: ")


def test_missing_main_is_an_error() -> None:
    with pytest.raises(SignatureError, match="main"):
        derive_schema("go", HEAD + "func run(a string) {}\n")
