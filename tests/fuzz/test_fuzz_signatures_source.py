"""Schema derivation from source: any program text gives a JSON Schema or a SignatureError, never a crash.

Programs are built from fragments of `main` signatures (names, types, defaults, declarations) mixed with
arbitrary text, so the generator reaches the readers' type and default handling, not only their syntax check.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kubemill.signatures import derive_schema
from kubemill.signatures.schema import SignatureError

_NOISE = st.text(max_size=12)
_NAME = st.one_of(st.sampled_from(["a", "x_y", "Camel", "_", "main", "self", "ñ", "1a", ""]), _NOISE)

_PY_TYPE = st.one_of(
    st.sampled_from(
        [
            "int",
            "str",
            "float",
            "bool",
            "bytes",
            "dict",
            "list",
            "list[int]",
            "dict[str, int]",
            "Optional[str]",
            "str | None",
            "Literal['a', 'b']",
            "Literal[1, 2.5, None]",
            "datetime",
            "Color",
            "postgresql",
            "List[List[str]]",
            "tuple[int, ...]",
            "Annotated[int, 1]",
            "typing.Any",
            "'str'",
            "wmill.S3Object",
            "Literal[]",
            "dict[",
            "list[int, str]",
            "None",
            "Point",
            "Union[int, str]",
        ]
    ),
    _NOISE,
)
_PY_DEFAULT = st.one_of(
    st.sampled_from(
        [
            "1",
            "-1",
            "1e999",
            "'s'",
            "None",
            "True",
            "[1, 'a']",
            "{'k': 1}",
            "(1,)",
            "1j",
            "f'x'",
            "b'x'",
            "x",
            "Color.RED",
            "-True",
            "{1, 2}",
            "...",
            "0x10",
            "[*a]",
            "{**a}",
        ]
    ),
    _NOISE,
)
_PY_DECLS = st.lists(
    st.sampled_from(
        [
            "class Color(str, Enum):\n    RED = 'r'\n    BLUE = 'b'\n",
            "class Point(TypedDict):\n    x: int\n    y: 'str'\n",
            "@dataclass\nclass Point:\n    x: int = 0\n",
            "postgresql = dict\n",
            "Alias = list[int]\n",
            "class Empty(Enum):\n    pass\n",
        ]
    ),
    max_size=3,
).map("".join)


@st.composite
def python_programs(draw: st.DrawFn) -> str:
    params = []
    for _ in range(draw(st.integers(0, 4))):
        param = draw(_NAME)
        if draw(st.booleans()):
            param += ": " + draw(_PY_TYPE)
        if draw(st.booleans()):
            param += " = " + draw(_PY_DEFAULT)
        params.append(param)
    prefix = draw(st.sampled_from(["", "*, ", "*args, ", "/, ", "**kw, "]))
    doc = draw(st.sampled_from(["", '    """Doc.\n\n    Args:\n        a: the a\n    """\n']))
    return draw(_PY_DECLS) + f"def main({prefix}{', '.join(params)}):\n{doc}    return 1\n"


_TS_TYPE = st.one_of(
    st.sampled_from(
        [
            "number",
            "string",
            "boolean",
            "object",
            "any",
            "unknown",
            "string[]",
            "Array<number>",
            "'a' | 'b'",
            "1 | 2",
            "{ a: number; b?: string }",
            "Record<string, number>",
            "Date",
            "Point",
            "Color",
            "bigint",
            "wmill.Resource<'postgresql'>",
            "RT.Postgresql",
            "[number, string]",
            "null | string",
            "-1 | 2n",
            "`tpl`",
            "Partial<Point>",
            "() => void",
            "Array<",
            "{ [k: string]: number }",
        ]
    ),
    _NOISE,
)
_TS_DEFAULT = st.one_of(
    st.sampled_from(
        [
            "1",
            "-1",
            "0x1f",
            "1e400",
            "1_000",
            "'s'",
            '"\\u00e9"',
            "'\\x41'",
            "`t`",
            "true",
            "null",
            "[1, 'a']",
            "{ a: 1 }",
            "undefined",
            "Color.Red",
            "-'x'",
            "new Date()",
            "1n",
            "'\\u{1F600}'",
            "'\\u{110000}'",
            "'\\uD800'",
            "'\\8'",
            "0o17",
            "0b2",
            ".5",
            "5.",
            "-0",
        ]
    ),
    _NOISE,
)
_TS_DECLS = st.lists(
    st.sampled_from(
        [
            "type Point = { x: number; y?: string };\n",
            "interface Point { x: number }\n",
            "enum Color { Red = 'r', Blue = 'b' }\n",
            "enum Color { A, B = 3, C }\n",
            "type Alias = Point[];\n",
            "type Point = Point;\n",
        ]
    ),
    max_size=3,
).map("".join)


@st.composite
def typescript_programs(draw: st.DrawFn) -> str:
    params = []
    for _ in range(draw(st.integers(0, 4))):
        param = draw(_NAME) + draw(st.sampled_from(["", "?"]))
        if draw(st.booleans()):
            param += ": " + draw(_TS_TYPE)
        if draw(st.booleans()):
            param += " = " + draw(_TS_DEFAULT)
        params.append(param)
    head = draw(
        st.sampled_from(
            [
                "export async function main",
                "export function main",
                "function main",
                "export const main = async ",
            ]
        )
    )
    arrow = " => " if "const" in head else " "
    return draw(_TS_DECLS) + f"{head}({', '.join(params)}){arrow}{{ return 1 }}\n"


_GO_TYPE = st.one_of(
    st.sampled_from(
        [
            "int",
            "int64",
            "string",
            "bool",
            "float64",
            "[]string",
            "map[string]int",
            "*int",
            "interface{}",
            "any",
            "Point",
            "[]Point",
            "time.Time",
            "[3]int",
            'struct{ A int `json:"a"` }',
            "chan int",
            "func()",
            "map[int]string",
            "[]",
        ]
    ),
    _NOISE,
)
_GO_DECLS = st.lists(
    st.sampled_from(
        [
            'type Point struct {\n\tX int `json:"x"`\n\tY string `json:"y,omitempty"`\n\tz int\n}\n',
            'type Point struct {\n\tX int `json:"-"`\n\tPoint\n}\n',
            "type Alias = []int\n",
            "type Point []Point\n",
            'type Point struct { X `json:"` }\n',
        ]
    ),
    max_size=2,
).map("".join)


@st.composite
def go_programs(draw: st.DrawFn) -> str:
    params = [f"{draw(_NAME)} {draw(_GO_TYPE)}" for _ in range(draw(st.integers(0, 4)))]
    result = draw(st.sampled_from(["(interface{}, error)", "error", "", "(any, error)"]))
    body = "{\n\treturn nil, nil\n}\n"
    return f"package inner\n\n{draw(_GO_DECLS)}func main({', '.join(params)}) {result} {body}"


_BASH_LINES = st.one_of(
    st.sampled_from(
        [
            'name="$1"',
            'count="${2:-3}"',
            "x=$3",
            'y="${4:-}"',
            'z="${1:-$HOME}"',
            "w=${10:-a b}",
            'v="${2-default}"',
            "u='$1'",
            'eval "$1"',
            "set -- a b",
            'echo "$1"',
            'q="${1:?need}"',
            'r="${1#x}"',
            'a=${1:-"quoted"}',
            "b=$((1+$2))",
            'c="${1:-$(date)}"',
            "d=( $1 )",
            'e="${0}"',
        ]
    ),
    _NOISE,
)


@st.composite
def bash_programs(draw: st.DrawFn) -> str:
    return "#!/bin/bash\n" + "\n".join(draw(st.lists(_BASH_LINES, max_size=6))) + "\n"


def _derive(language: str, code: str) -> None:
    try:
        schema = derive_schema(language, code)
    except SignatureError as exc:
        assert str(exc)  # noqa: PT017 - Hypothesis: the exception is checked whatever its type
        return
    assert schema.get("type") == "object"
    json.dumps(schema, allow_nan=False)  # what is stored must be plain JSON


@given(python_programs())
def test_python_signatures(code: str) -> None:
    _derive("python3", code)


@given(typescript_programs(), st.sampled_from(["deno", "bun"]))
def test_typescript_signatures(code: str, language: str) -> None:
    _derive(language, code)


@given(go_programs())
def test_go_signatures(code: str) -> None:
    _derive("go", code)


@given(bash_programs())
def test_bash_signatures(code: str) -> None:
    _derive("bash", code)


@given(st.sampled_from(["python3", "deno", "go", "bash"]), st.text(max_size=300))
def test_any_text(language: str, code: str) -> None:
    _derive(language, code)


def test_literal_types_json_cannot_hold_are_any() -> None:
    """Found by this harness: `2n` in a union of literal types crashed schema storage (not JSON)."""
    _derive("deno", "export async function main(a, a: -1 | 2n) { return 1 }\n")
    with pytest.raises(SignatureError, match="two parameters named 'a'"):
        derive_schema("deno", "export async function main(a, a: -1 | 2n) { return 1 }\n")
    schema = derive_schema("deno", "export async function main(b: 2n) { return 1 }\n")
    assert schema["properties"]["b"].get("enum") is None
