"""Bash: a script's parameters are its top-level `name="$1"` / `name="${2:-default}"` assignments.

Every parameter is a string; a default makes it optional. Parameters are ordered by positional index and,
as in Windmill, end at the first missing index (a runner passes them as `$1 $2 ...` in that order).
"""

from __future__ import annotations

from tree_sitter import Node

from kubemill.signatures import syntax_tree as st
from kubemill.signatures.schema import NO_DEFAULT, STRING, JsonSchema, Param, object_schema


def parse(code: str) -> JsonSchema:
    """The JSON Schema of the script's positional parameters."""
    root = st.parse("bash", code)
    by_index: dict[int, Param] = {}
    for assignment in st.children(root, "variable_assignment"):
        found = _positional(st.field(assignment, "value"))
        if found is not None:
            index, optional, default = found
            name = st.text(st.field(assignment, "name"))
            by_index[index] = Param(name, dict(STRING), required=not optional, default=default)
    params: list[Param] = []
    while len(params) + 1 in by_index:
        params.append(by_index[len(params) + 1])
    return object_schema(params)


def _positional(value: Node | None) -> tuple[int, bool, object] | None:
    """(index, optional, default) when a value is exactly `$N`, `${N}` or `${N:-default}`, quoted or not."""
    if value is None:
        return None
    if value.type == "string":
        parts = value.named_children
        if len(parts) != 1 or len(value.children) != 3:  # the quotes and one expansion, nothing else
            return None
        value = parts[0]
    if value.type == "simple_expansion":
        digits = st.text(value)[1:]
        return (int(digits), False, NO_DEFAULT) if digits.isdigit() and digits != "0" else None
    if value.type != "expansion":
        return None
    inner = st.text(value)[2:-1]  # between `${` and `}`
    digits = inner[: len(inner) - len(inner.lstrip("0123456789"))]
    if not digits or digits == "0":
        return None
    rest = inner[len(digits) :]
    if not rest:
        return int(digits), False, NO_DEFAULT
    for operator in (":-", "-"):
        if rest.startswith(operator):
            return int(digits), True, _static_word(rest[len(operator) :])
    return None


def _static_word(word: str) -> object:
    """The default's value when it is literal text (quotes removed); NO_DEFAULT if it expands anything."""
    if "$" in word or "`" in word:
        return NO_DEFAULT
    if len(word) >= 2 and word[0] == word[-1] and word[0] in "'\"":
        return word[1:-1]
    return word
