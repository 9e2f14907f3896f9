"""Python `main` signatures -> JSON Schema, as a table of (code, properties, required)."""

from __future__ import annotations

from typing import Any

import pytest
from jsonschema import Draft202012Validator
from kubemill.signatures import SignatureError, derive_schema

D = ""  # an empty description, as Windmill writes it

CASES: list[tuple[str, str, dict[str, Any], list[str]]] = [
    (
        "primitives",
        "def main(s: str, i: int, f: float, b: bool, d: dict, l: list): pass",
        {
            "s": {"type": "string", "description": D},
            "i": {"type": "integer", "description": D},
            "f": {"type": "number", "description": D},
            "b": {"type": "boolean", "description": D},
            "d": {"type": "object", "description": D},
            "l": {"type": "array", "description": D},
        },
        ["s", "i", "f", "b", "d", "l"],
    ),
    (
        "defaults make parameters optional",
        "def main(a: str, n: int = -3, x: float = 1.5, on: bool = False,\n"
        "         t: list = (1, 2), m: dict = {'k': [None]}): pass",
        {
            "a": {"type": "string", "description": D},
            "n": {"type": "integer", "description": D, "default": -3},
            "x": {"type": "number", "description": D, "default": 1.5},
            "on": {"type": "boolean", "description": D, "default": False},
            "t": {"type": "array", "description": D, "default": [1, 2]},
            "m": {"type": "object", "description": D, "default": {"k": [None]}},
        },
        ["a"],
    ),
    (
        "list items",
        "import typing\nfrom typing import List\n"
        "def main(a: list[str], b: List[int], c: typing.List[dict], d: list[list[bool]]): pass",
        {
            "a": {"type": "array", "items": {"type": "string"}, "description": D},
            "b": {"type": "array", "items": {"type": "integer"}, "description": D},
            "c": {"type": "array", "items": {"type": "object"}, "description": D},
            "d": {
                "type": "array",
                "items": {"type": "array", "items": {"type": "boolean"}},
                "description": D,
            },
        },
        ["a", "b", "c", "d"],
    ),
    (
        "optional and None unions are not required",
        "from typing import Optional, Union\n"
        "def main(a: Optional[str], b: int | None, c: Union[None, float], d: Optional[list] = None): pass",
        {
            "a": {"type": "string", "description": D},
            "b": {"type": "integer", "description": D},
            "c": {"type": "number", "description": D},
            "d": {"type": "array", "description": D, "default": None},
        },
        [],
    ),
    (
        "other unions are anyOf",
        "def main(a: int | str, b: str | str): pass",
        {
            "a": {"anyOf": [{"type": "integer"}, {"type": "string"}], "description": D},
            "b": {"type": "string", "description": D},
        },
        ["a", "b"],
    ),
    (
        "Literal is an enum",
        "from typing import Literal\n"
        "def main(n: Literal[1, 2], one: Literal['x'], fmt: Literal['json', 'csv'] = 'json'): pass",
        {
            "n": {"type": "integer", "enum": [1, 2], "description": D},
            "one": {"type": "string", "enum": ["x"], "description": D},
            "fmt": {"type": "string", "enum": ["json", "csv"], "description": D, "default": "json"},
        },
        ["n", "one"],
    ),
    (
        "Enum subclasses declared in the file",
        "from enum import Enum, IntEnum\n"
        "class Color(str, Enum):\n    RED = 'red'\n    BLUE = 'blue'\n    _ignored = 'x'\n"
        "class Level(IntEnum):\n    LOW = 1\n    HIGH = 2\n"
        "def main(lv: Level, many: list[Color], c: Color = Color.BLUE): pass",
        {
            "lv": {"type": "integer", "enum": [1, 2], "description": D},
            "many": {"type": "array", "items": {"type": "string", "enum": ["red", "blue"]}, "description": D},
            "c": {"type": "string", "enum": ["red", "blue"], "description": D, "default": "blue"},
        },
        ["lv", "many"],
    ),
    (
        "dates, datetimes and bytes",
        "import datetime as dt\nfrom datetime import date, datetime\n"
        "def main(a: datetime, b: date, c: datetime.datetime, d: datetime.date, e: bytes,\n"
        "         f: datetime = datetime.now()): pass",
        {
            "a": {"type": "string", "format": "date-time", "description": D},
            "b": {"type": "string", "format": "date", "description": D},
            "c": {"type": "string", "format": "date-time", "description": D},
            "d": {"type": "string", "format": "date", "description": D},
            "e": {"type": "string", "contentEncoding": "base64", "description": D},
            "f": {"type": "string", "format": "date-time", "description": D},
        },
        ["a", "b", "c", "d", "e"],
    ),
    (
        "unknown names are resource types, snake_cased",
        "import wmill\nclass postgresql(TypedDict):\n    host: str\n"
        "def main(db: postgresql, slack: Slack, s3: wmill.S3Object,\n"
        "         gcp: GcpServiceAccount = '$res:f/x/gcp'): pass",
        {
            "db": {"type": "object", "format": "resource-postgresql", "description": D},
            "slack": {"type": "object", "format": "resource-slack", "description": D},
            "s3": {"type": "object", "format": "resource-s3_object", "description": D},
            "gcp": {
                "type": "object",
                "format": "resource-gcp_service_account",
                "description": D,
                "default": "$res:f/x/gcp",
            },
        },
        ["db", "slack", "s3"],
    ),
    (
        "dataclasses and pydantic models declared in the file are objects",
        "from dataclasses import dataclass\nfrom pydantic import BaseModel\n"
        "@dataclass\nclass Item:\n    name: str\n    qty: int = 1\n    tag: str | None\n"
        "class Order(BaseModel):\n    items: list[Item]\n    note: 'str'\n"
        "def main(order: Order): pass",
        {
            "order": {
                "type": "object",
                "properties": {
                    "items": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "name": {"type": "string"},
                                "qty": {"type": "integer"},
                                "tag": {"type": "string"},
                            },
                            "required": ["name"],
                        },
                    },
                    "note": {"type": "string"},
                },
                "required": ["items", "note"],
                "description": D,
            }
        },
        ["order"],
    ),
    (
        "unannotated parameters take their type from the default",
        "def main(a, b='x', c=2, d=[1, 2], e=None, f=print()): pass",
        {
            "a": {"description": D},
            "b": {"type": "string", "description": D, "default": "x"},
            "c": {"type": "integer", "description": D, "default": 2},
            "d": {"type": "array", "items": {"type": "integer"}, "description": D, "default": [1, 2]},
            "e": {"description": D, "default": None},
            "f": {"description": D},
        },
        ["a"],
    ),
    (
        "dict[str, T] and Any",
        "from typing import Any, Dict\n"
        "def main(a: dict[str, int], b: Dict[str, Any], c: Any, d: 'int'): pass",
        {
            "a": {"type": "object", "additionalProperties": {"type": "integer"}, "description": D},
            "b": {"type": "object", "description": D},
            "c": {"description": D},
            "d": {"type": "integer", "description": D},
        },
        ["a", "b", "c", "d"],
    ),
    (
        "async main, keyword-only parameters, *args and **kwargs ignored",
        "async def main(a: str, *args, b: int = 1, c: bool, **kw): pass",
        {
            "a": {"type": "string", "description": D},
            "b": {"type": "integer", "description": D, "default": 1},
            "c": {"type": "boolean", "description": D},
        },
        ["a", "c"],
    ),
]


@pytest.mark.parametrize(
    ("code", "properties", "required"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_python_signature(code: str, properties: dict[str, Any], required: list[str]) -> None:
    schema = derive_schema("python3", code)
    Draft202012Validator.check_schema(schema)
    assert schema["properties"] == properties
    assert schema["required"] == required
    assert schema["order"] == list(properties)


def test_docstring_args_give_descriptions() -> None:
    code = '''
def main(name: str, count: int = 1, flag: bool = False, other: str = ""):
    """Do things.

    Args:
        name (str): Who to greet
        count: How many times,
            at most ten
        flag: Whether: yes or no

    Returns:
        other: not a parameter description
    """
'''
    props = derive_schema("python3", code)["properties"]
    assert props["name"]["description"] == "Who to greet"
    assert props["count"]["description"] == "How many times, at most ten"
    assert props["flag"]["description"] == "Whether: yes or no"
    assert props["other"]["description"] == ""


def test_defaults_that_are_not_json_are_left_out() -> None:
    props = derive_schema("python3", "def main(a: float = 1e999, b=b'x', c={1: 2}): pass")["properties"]
    assert props["a"] == {"type": "number", "description": D}
    assert props["b"] == props["c"] == {"description": D}


def test_main_found_among_other_functions_and_classes() -> None:
    code = "def helper(x: int): pass\nclass K:\n    def main(self, y: int): pass\ndef main(z: str): pass\n"
    assert derive_schema("python3", code)["order"] == ["z"]


def test_syntax_error_names_the_line() -> None:
    with pytest.raises(SignatureError) as info:
        derive_schema("python3", "import os\n\ndef main(a: str\n    return a\n")
    assert info.value.line == 3
    assert str(info.value).startswith("line 3: ")


def test_missing_main_is_an_error_without_a_line() -> None:
    with pytest.raises(SignatureError) as info:
        derive_schema("python3", "def handler(a: str): pass\n")
    assert info.value.line is None
    assert "main" in info.value.message
