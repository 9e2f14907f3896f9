"""TypeScript (Deno and Bun): read `export [async] function main(...)` from a tree-sitter syntax tree.

Type aliases and interfaces declared in the file are resolved to their structure; a name that is neither
declared here nor built in (and `RT.Name`, `Resource<"name">`, or an alias of `object`) is a Windmill
resource type, as windmill-parser-ts reads it. Defaults come from literal initialisers only.
"""

from __future__ import annotations

import json
import math
from typing import Any

from tree_sitter import Node

from kubemill.signatures import syntax_tree as st
from kubemill.signatures.schema import (
    ANY,
    BOOLEAN,
    BYTES,
    DATETIME,
    EMAIL,
    INTEGER,
    NO_DEFAULT,
    NUMBER,
    OBJECT,
    SQL,
    STRING,
    JsonSchema,
    Param,
    SignatureError,
    any_of,
    array,
    enum,
    from_default,
    mapping,
    object_schema,
    record,
    resource,
)

_PREDEFINED: dict[str, JsonSchema] = {
    "string": STRING,
    "number": NUMBER,
    "boolean": BOOLEAN,
    "bigint": INTEGER,
    "object": OBJECT,
}
_BUILTIN_REFS: dict[str, JsonSchema] = {
    "bigint": INTEGER,  # tree-sitter reads `bigint` as a type name, not a predefined type
    "Date": DATETIME,
    "Base64": BYTES,
    "Email": EMAIL,
    "Sql": SQL,
    "String": STRING,
    "Number": NUMBER,
    "Boolean": BOOLEAN,
    "Object": OBJECT,
}
_NULLISH = {"undefined", "null", "void"}


def parse(code: str, function: str = "main") -> JsonSchema:
    """The JSON Schema of the exported `main`'s parameters (or those of another exported `function`, e.g.
    Windmill's `preprocessor`)."""
    root = st.parse("typescript", code)
    types = _Declarations(root)
    main = _find_main(root, function)
    if main is None:
        raise SignatureError(
            f"no `export function {function}(...)` (or `export async function {function}`) in the script"
        )
    params = st.field(main, "parameters")
    assert params is not None
    return object_schema(
        [_param(p, types) for p in st.children(params, "required_parameter", "optional_parameter")]
    )


def _find_main(root: Node, function: str = "main") -> Node | None:
    for export in st.children(root, "export_statement"):
        decl = st.field(export, "declaration")
        if (
            decl is not None
            and decl.type == "function_declaration"
            and st.text(st.field(decl, "name")) == function
        ):
            return decl
    return None


def _param(node: Node, types: _Declarations) -> Param:
    pattern = st.field(node, "pattern")
    if pattern is None or pattern.type != "identifier":
        message = "main's parameters must be plain names (no destructuring, no `...rest`)"
        raise SignatureError(message, st.line(node))
    annotation = st.field(node, "type")
    value_node = st.field(node, "value")
    default = _literal(value_node) if value_node is not None else NO_DEFAULT
    optional = node.type == "optional_parameter" or value_node is not None
    if annotation is not None and annotation.named_children:
        schema, nullable = types.schema(annotation.named_children[0])
        optional = optional or nullable
    else:
        schema = from_default(default) if default is not NO_DEFAULT else dict(ANY)
    return Param(st.text(pattern), schema, not optional, default)


class _Declarations:
    """Type aliases and interfaces declared at the top level (exported or not), and type -> schema."""

    def __init__(self, root: Node) -> None:
        self.aliases: dict[str, Node] = {}
        for node in root.named_children:
            decl = st.field(node, "declaration") if node.type == "export_statement" else node
            if decl is not None and decl.type in ("type_alias_declaration", "interface_declaration"):
                self.aliases[st.text(st.field(decl, "name"))] = decl
        self._resolving: set[str] = set()

    def schema(self, node: Node) -> tuple[JsonSchema, bool]:  # noqa: PLR0911 - complexity debt
        """(schema, nullable): `T | undefined` and `T | null` are a nullable T."""
        kind = node.type
        if kind == "predefined_type":
            return dict(_PREDEFINED.get(st.text(node), ANY)), False
        if kind == "parenthesized_type":
            return self.schema(node.named_children[0])
        if kind == "array_type":
            return array(self.schema(node.named_children[0])[0]), False
        if kind == "object_type":
            return self._object(node), False
        if kind == "literal_type":
            value = _literal(node.named_children[0])
            if value is NO_DEFAULT:  # a literal type JSON has no value for (`2n`, a template): any
                return dict(ANY), False
            return (dict(ANY), True) if value is None else (enum([value]), False)
        if kind == "union_type":
            return self._union(node)
        if kind == "type_identifier":
            return self._reference(st.text(node)), False
        if kind == "nested_type_identifier":  # RT.Postgresql, the Windmill resource-type namespace
            return resource(st.text(st.field(node, "name"))), False
        if kind == "generic_type":
            return self._generic(node), False
        return dict(ANY), False

    def _union(self, node: Node) -> tuple[JsonSchema, bool]:
        members: list[Node] = []
        stack = [node]
        while stack:  # tree-sitter nests `a | b | c` as ((a | b) | c)
            n = stack.pop()
            if n.type == "union_type":
                stack.extend(reversed(n.named_children))
            else:
                members.append(n)
        nullable = any(st.text(m) in _NULLISH for m in members)
        kept = [m for m in members if st.text(m) not in _NULLISH]
        schemas = [self.schema(m)[0] for m in kept]
        if schemas and all("enum" in s and set(s) <= {"type", "enum"} for s in schemas):
            return enum([v for s in schemas for v in s["enum"]]), nullable
        return any_of(schemas), nullable

    def _reference(self, name: str) -> JsonSchema:
        if name in _BUILTIN_REFS:
            return dict(_BUILTIN_REFS[name])
        decl = self.aliases.get(name)
        if decl is None:
            return resource(name)
        body = st.field(decl, "value") if decl.type == "type_alias_declaration" else st.field(decl, "body")
        if body is None or (body.type == "predefined_type" and st.text(body) in ("object", "any")):
            return resource(name)  # `type Postgresql = object`: Windmill's way to name a resource type
        if name in self._resolving:
            return dict(OBJECT)
        self._resolving.add(name)
        try:
            return self._object(body) if body.type == "interface_body" else self.schema(body)[0]
        finally:
            self._resolving.discard(name)

    def _generic(self, node: Node) -> JsonSchema:
        name = st.text(st.field(node, "name"))
        args_node = st.field(node, "type_arguments")
        args = list(args_node.named_children) if args_node is not None else []
        if name in ("Array", "ReadonlyArray") and args:
            return array(self.schema(args[0])[0])
        if name == "Record" and len(args) == 2:
            return mapping(self.schema(args[1])[0])
        if name == "Resource" and args:
            value = _literal(args[0].named_children[0]) if args[0].named_children else None
            return resource(value if isinstance(value, str) else "unknown")
        if name in ("Partial", "Readonly", "Required") and args:
            return self.schema(args[0])[0]
        if name == "Promise" and args:
            return self.schema(args[0])[0]
        return self._reference(name) if name in self.aliases else dict(OBJECT)

    def _object(self, node: Node) -> JsonSchema:
        props: dict[str, JsonSchema] = {}
        required: list[str] = []
        for sig in st.children(node, "property_signature"):
            key = _property_name(st.field(sig, "name"))
            annotation = st.field(sig, "type")
            schema, nullable = (
                self.schema(annotation.named_children[0])
                if annotation is not None and annotation.named_children
                else (dict(ANY), False)
            )
            props[key] = schema
            optional = any(c.type == "?" for c in sig.children)
            if not optional and not nullable:
                required.append(key)
        for sig in st.children(node, "index_signature"):
            annotation = st.field(sig, "type")
            if annotation is not None and annotation.named_children:
                extra = self.schema(annotation.named_children[0])[0]
                if not props:
                    return mapping(extra)
                return (
                    {**record(props, required), "additionalProperties": extra}
                    if extra
                    else record(props, required)
                )
        return record(props, required)


def _property_name(node: Node | None) -> str:
    if node is not None and node.type == "string":
        return "".join(st.text(f) for f in st.children(node, "string_fragment"))
    return st.text(node)


def _literal(node: Node) -> Any:  # noqa: C901, PLR0911 - complexity debt, docs/architecture.md
    """The JSON value of a literal initialiser (objects and arrays of literals too); else NO_DEFAULT."""
    kind = node.type
    if kind == "string":
        return "".join(
            st.text(f) if f.type == "string_fragment" else _escape(st.text(f)) for f in node.named_children
        )
    if kind == "template_string":
        if any(c.type == "template_substitution" for c in node.named_children):
            return NO_DEFAULT
        return st.text(node)[1:-1]
    if kind == "number":
        return _number(st.text(node))
    if kind == "unary_expression" and st.text(st.field(node, "operator")) == "-":
        inner = _literal(st.field(node, "argument") or node)
        return -inner if isinstance(inner, int | float) and not isinstance(inner, bool) else NO_DEFAULT
    if kind in ("true", "false"):
        return kind == "true"
    if kind in ("null", "undefined"):
        return None
    if kind == "array":
        items = [_literal(c) for c in node.named_children]
        return NO_DEFAULT if NO_DEFAULT in items else items
    if kind == "object":
        out: dict[str, Any] = {}
        for pair in node.named_children:
            if pair.type != "pair":
                return NO_DEFAULT
            value = _literal(st.field(pair, "value") or pair)
            if value is NO_DEFAULT:
                return NO_DEFAULT
            out[_property_name(st.field(pair, "key"))] = value
        return out
    if kind in ("parenthesized_expression", "as_expression", "satisfies_expression"):
        return _literal(node.named_children[0])
    return NO_DEFAULT


def _number(text: str) -> Any:
    cleaned = text.replace("_", "")
    try:
        return int(cleaned, 0)
    except ValueError:
        pass
    try:
        value = float(cleaned)
    except ValueError:
        return NO_DEFAULT
    return value if math.isfinite(value) else NO_DEFAULT


def _escape(sequence: str) -> str:
    try:
        decoded: str = json.loads(f'"{sequence}"')
    except ValueError:
        return sequence[1:]
    return decoded
