"""Run args against a script's schema: optional nulls mean "not given", problems name their field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kubemill.runners.validation import Problem, _plainly_valid, args_for_language, run_args, validate_args
from kubemill.signatures import derive_schema

BRIEF = Path(__file__).parents[1] / "fixtures" / "brief"
FETCH = derive_schema("python3", (BRIEF / "fetch_and_transform.py").read_text())


def test_the_brief_optional_dict_keeps_a_single_type_with_a_null_default() -> None:
    assert FETCH["properties"]["filters"]["type"] == "object"
    assert FETCH["properties"]["filters"]["default"] is None


def test_explicit_null_for_an_optional_parameter_is_absent() -> None:
    args = {"api_endpoint": "http://x", "filters": None}
    assert validate_args(FETCH, args) == []
    assert run_args(FETCH, args) == {"api_endpoint": "http://x"}


def test_null_for_a_required_parameter_is_an_error_naming_it() -> None:
    assert validate_args(FETCH, {"api_endpoint": None}) == [
        Problem("api_endpoint", "None is not of type 'string'")
    ]
    assert run_args(FETCH, {"api_endpoint": None}) == {"api_endpoint": None}


def test_problems_name_nested_fields_and_optional_nested_nulls_pass() -> None:
    schema = derive_schema(
        "deno",
        "type C = { size: number; label?: string };\nexport function main(c: C, tags: string[]) {}\n",
    )
    assert validate_args(schema, {"c": {"size": 1, "label": None}, "tags": ["a"]}) == []
    problems = validate_args(schema, {"c": {"size": "big"}, "tags": ["a", 2]})
    assert [str(p) for p in problems] == [
        "c.size: 'big' is not of type 'number'",
        "tags.1: 2 is not of type 'string'",
    ]
    assert run_args(schema, {"c": {"size": 1, "label": None}, "tags": []})["c"] == {"size": 1, "label": None}


def test_missing_required_and_nullable_types() -> None:
    [missing] = validate_args(FETCH, {})
    assert (missing.field, missing.message) == ("", "'api_endpoint' is a required property")
    nullable = {"type": "object", "properties": {"x": {"type": ["string", "null"]}, "y": {}}}
    assert run_args(nullable, {"x": None, "y": None}) == {"x": None, "y": None}
    assert validate_args(nullable, {"x": None}) == []


PLAIN = {
    "type": "object",
    "properties": {
        "s": {"type": "string", "description": ""},
        "i": {"type": "integer", "default": 3},
        "n": {"type": "number"},
        "b": {"type": "boolean"},
        "o": {"type": "object"},
        "a": {"type": "array", "format": "x"},
        "any": {"description": "anything"},
    },
    "required": ["s"],
}


@pytest.mark.parametrize(
    "args",
    [
        {"s": "x"},
        {"s": "x", "i": 1, "n": 1.5, "b": False, "o": {}, "a": [], "any": None, "extra": 1},
        {"s": "x", "n": 2},
        {},
        {"s": 1},
        {"s": "x", "i": True},
        {"s": "x", "i": 1.0},
        {"s": "x", "i": 1.5},
        {"s": "x", "n": True},
        {"s": "x", "b": 0},
        {"s": "x", "o": []},
        {"s": "x", "a": {}},
        {"s": None},
    ],
)
def test_the_fast_path_agrees_with_jsonschema(args: dict[str, Any]) -> None:
    import jsonschema

    truth = [e.message for e in jsonschema.Draft202012Validator(PLAIN).iter_errors(args)]
    assert sorted(p.message for p in validate_args(PLAIN, args)) == sorted(truth)
    if _plainly_valid(PLAIN, args):
        assert truth == []


def test_schemas_beyond_plain_types_go_to_jsonschema() -> None:
    enum = {"type": "object", "properties": {"c": {"type": "string", "enum": ["a"]}}}
    assert not _plainly_valid(enum, {"c": "b"})
    assert [str(p) for p in validate_args(enum, {"c": "b"})] == ["c: 'b' is not one of ['a']"]


def test_bash_takes_non_string_args_as_their_json_text() -> None:
    schema = derive_schema("bash", 'email="$1"\ndetails="$2"\ncount="${3:-1}"\n')
    args = {"email": "a@b.c", "details": {"order_id": "o-1", "total": 12.5}, "count": 3}
    assert validate_args(schema, args) != []  # as given, an object is not a Bash string
    coerced = args_for_language("bash", args)
    assert coerced == {"email": "a@b.c", "details": '{"order_id":"o-1","total":12.5}', "count": "3"}
    assert validate_args(schema, coerced) == []
    assert args_for_language("python3", args) == args
