"""Go: read `func main(...)` (or `Main`) in `package inner` from a tree-sitter syntax tree.

Go has no default values, so every parameter is required. Structs declared in the file become objects whose
properties are named by their `json:"..."` tags (`omitempty` fields are not required), as encoding/json reads
them; a named type that is neither built in nor declared here is a Windmill resource type.
"""

from __future__ import annotations

from tree_sitter import Node

from kubemill.signatures import syntax_tree as st
from kubemill.signatures.schema import (
    ANY,
    BOOLEAN,
    BYTES,
    DATETIME,
    INTEGER,
    NUMBER,
    OBJECT,
    STRING,
    JsonSchema,
    Param,
    SignatureError,
    array,
    mapping,
    object_schema,
    record,
    resource,
)

_INTEGERS = {
    "int",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "uintptr",
}
_BUILTINS: dict[str, JsonSchema] = {
    **{name: INTEGER for name in _INTEGERS},
    "byte": INTEGER,
    "rune": INTEGER,
    "float32": NUMBER,
    "float64": NUMBER,
    "string": STRING,
    "bool": BOOLEAN,
    "any": ANY,
    "error": ANY,
}
_QUALIFIED: dict[str, JsonSchema] = {
    "time.Time": DATETIME,
    "json.RawMessage": ANY,
    "json.Number": NUMBER,
}


def parse(code: str) -> JsonSchema:
    """The JSON Schema of `main`'s parameters."""
    root = st.parse("go", code)
    types = _TypeDeclarations(root)
    main = next(
        (
            f
            for f in st.children(root, "function_declaration")
            if st.text(st.field(f, "name")) in ("main", "Main")
        ),
        None,
    )
    if main is None:
        raise SignatureError("no `func main(...)` (or `func Main(...)`) in the script")
    plist = st.field(main, "parameters")
    assert plist is not None
    params: list[Param] = []
    for decl in plist.named_children:
        type_node = st.field(decl, "type")
        names = [n for n in decl.children_by_field_name("name")]
        if not names:
            raise SignatureError("main's parameters need names", st.line(decl))
        schema = types.schema(type_node) if type_node is not None else dict(ANY)
        if decl.type == "variadic_parameter_declaration":
            schema = array(schema)
        params.extend(Param(st.text(n), dict(schema), required=True) for n in names)
    return object_schema(params)


class _TypeDeclarations:
    """Types declared at the top level (`type X struct {...}`, `type Level string`), and type -> schema."""

    def __init__(self, root: Node) -> None:
        self.declared: dict[str, Node] = {}
        for decl in st.children(root, "type_declaration"):
            for spec in st.children(decl, "type_spec", "type_alias"):
                body = st.field(spec, "type")
                if body is not None:
                    self.declared[st.text(st.field(spec, "name"))] = body
        self._resolving: set[str] = set()

    def schema(self, node: Node) -> JsonSchema:  # noqa: PLR0911 - complexity debt, docs/architecture.md
        kind = node.type
        if kind == "type_identifier":
            return self._named(st.text(node))
        if kind == "pointer_type":
            return self.schema(node.named_children[0])
        if kind in ("slice_type", "array_type"):
            element = st.field(node, "element")
            if element is not None and st.text(element) in ("byte", "uint8") and kind == "slice_type":
                return dict(BYTES)  # encoding/json carries []byte as base64
            return array(self.schema(element) if element is not None else None)
        if kind == "map_type":
            value = st.field(node, "value")
            return mapping(self.schema(value) if value is not None else ANY)
        if kind == "struct_type":
            return self._struct(node)
        if kind == "interface_type":
            return dict(ANY)
        if kind == "qualified_type":
            return dict(_QUALIFIED.get(st.text(node), ANY))
        if kind == "parenthesized_type":
            return self.schema(node.named_children[0])
        return dict(ANY)

    def _named(self, name: str) -> JsonSchema:
        if name in _BUILTINS:
            return dict(_BUILTINS[name])
        body = self.declared.get(name)
        if body is None:
            return resource(name)
        if name in self._resolving:
            return dict(OBJECT)
        self._resolving.add(name)
        try:
            return self.schema(body)
        finally:
            self._resolving.discard(name)

    def _struct(self, node: Node) -> JsonSchema:
        props: dict[str, JsonSchema] = {}
        required: list[str] = []
        fields = next(st.children(node, "field_declaration_list"), None)
        for fd in st.children(fields, "field_declaration") if fields is not None else ():
            type_node = st.field(fd, "type")
            names = [st.text(n) for n in fd.children_by_field_name("name")]
            key, omitempty = _json_tag(st.text(st.field(fd, "tag")))
            if not names:  # an embedded struct: encoding/json lifts its fields
                embedded = self.schema(type_node) if type_node is not None else {}
                props.update(embedded.get("properties", {}))
                required.extend(embedded.get("required", []))
                continue
            for name in names:
                if key == "-" or not name[:1].isupper():  # skipped or unexported: encoding/json ignores it
                    continue
                prop = key or name
                props[prop] = self.schema(type_node) if type_node is not None else dict(ANY)
                if not omitempty:
                    required.append(prop)
        return record(props, required)


def _json_tag(tag: str) -> tuple[str, bool]:
    """(name, omitempty) from a struct tag such as `json:"batch_size,omitempty" yaml:"x"`."""
    raw = tag.strip("`")
    if raw.startswith('"'):
        raw = raw[1:-1].encode().decode("unicode_escape")
    for part in raw.split():
        label, sep, value = part.partition(":")
        if sep and label == "json" and len(value) >= 2 and value[0] == '"':
            name, *options = value[1:-1].split(",")
            return name, "omitempty" in options
    return "", False
