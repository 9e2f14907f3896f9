"""Bash positional-parameter signatures -> JSON Schema: all strings, ordered by index, defaults optional."""

from __future__ import annotations

from typing import Any

import pytest
from jsonschema import Draft202012Validator
from kubemill.signatures import SignatureError, derive_schema

S = {"type": "string", "description": ""}

CASES: list[tuple[str, str, dict[str, Any], list[str]]] = [
    (
        "quoted, braced, unquoted",
        'token="$1"\nimage="${2}"\ncount=$3\n',
        {"token": S, "image": S, "count": S},
        ["token", "image", "count"],
    ),
    (
        "defaults make parameters optional",
        'name="$1"\ndigest="${2:-latest with spaces}"\nempty="${3:-}"\nq="${4:-"quoted"}"\ndash="${5-x}"\n',
        {
            "name": S,
            "digest": {**S, "default": "latest with spaces"},
            "empty": {**S, "default": ""},
            "q": {**S, "default": "quoted"},
            "dash": {**S, "default": "x"},
        },
        ["name"],
    ),
    (
        "a default that expands something is optional without a static default",
        'dir="${1:-$HOME/tmp}"\n',
        {"dir": S},
        [],
    ),
    (
        "ordered by positional index, not by line",
        'second="$2"  # a comment\nfirst="$1"\nthird="${3:-c}"\n',
        {"first": S, "second": S, "third": {**S, "default": "c"}},
        ["first", "second"],
    ),
    (
        "parameters end at the first missing index, as in Windmill",
        'a="$1"\nc="$3"\n',
        {"a": S},
        ["a"],
    ),
    (
        "other assignments, $0, nested scopes and concatenations are not parameters",
        '#!/bin/bash\nset -euo pipefail\nself="$0"\nx="v$1"\ny="$1-suffix"\nlocal_fn() {\n  inner="$1"\n}\n'
        'only="$1"\nif true; then\n  z="$2"\nfi\n',
        {"only": S},
        ["only"],
    ),
    ("no parameters", "echo hello\n", {}, []),
]


@pytest.mark.parametrize(
    ("code", "properties", "required"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bash_signature(code: str, properties: dict[str, Any], required: list[str]) -> None:
    schema = derive_schema("bash", code)
    Draft202012Validator.check_schema(schema)
    assert schema["properties"] == properties
    assert schema["required"] == required
    assert schema["order"] == list(properties)


def test_syntax_error_names_the_line() -> None:
    with pytest.raises(SignatureError) as info:
        derive_schema("bash", 'a="$1"\necho ok\nif [ -n "$a" ]; then\n  echo "$a"\n')
    assert info.value.line == 3  # where the unclosed `if` opens, not the end of the file
    assert str(info.value) == "line 3: missing 'fi' to close 'if [ -n \"$a\" ]; then'"


def test_unterminated_string_names_its_opening_line() -> None:
    with pytest.raises(SignatureError) as info:
        derive_schema("bash", 'a="$1"\necho "unterminated\nb=2\n')
    assert info.value.line == 2
