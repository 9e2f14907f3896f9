"""Python: read `def main(...)` with the standard library's `ast` and map its annotations as Windmill does.

Enum subclasses, dataclasses and pydantic models declared in the same file are resolved; any other name
Windmill does not know is a resource type (`format: resource-<snake_name>`). Descriptions come from the
`Args:` section of `main`'s docstring.
"""

from __future__ import annotations

import ast
import math
from typing import Any

from kubemill.signatures.schema import (
    ANY,
    BOOLEAN,
    BYTES,
    DATE,
    DATETIME,
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

_SIMPLE: dict[str, JsonSchema] = {
    "str": STRING,
    "int": INTEGER,
    "float": NUMBER,
    "bool": BOOLEAN,
    "dict": OBJECT,
    "bytes": BYTES,
    "datetime": DATETIME,
    "date": DATE,
    "Sql": SQL,
    "sql": SQL,
    "Any": ANY,
    "object": ANY,
}
_LISTS = {"list", "List", "Sequence", "Iterable", "set", "Set", "tuple", "Tuple"}
_DICTS = {"dict", "Dict", "Mapping"}
_ENUM_BASES = {"Enum", "StrEnum", "IntEnum", "Flag", "IntFlag"}
_MODEL_BASES = {"BaseModel"}
_DOC_SECTIONS = {"Returns:", "Return:", "Raises:", "Yields:", "Examples:", "Example:", "Note:", "Notes:"}
_TYPING_MODULES = {"typing", "t", "typing_extensions", "collections.abc"}


def parse(code: str, function: str = "main") -> JsonSchema:
    """The JSON Schema of `main`'s parameters (or those of another top-level `function`, e.g. Windmill's
    `preprocessor`)."""
    try:
        module = ast.parse(code)
    except SyntaxError as exc:
        raise SignatureError(exc.msg, exc.lineno) from None
    except ValueError:  # a NUL byte, which ast refuses before tokenizing
        raise SignatureError(
            "the code contains a NUL byte", code[: code.find("\0")].count("\n") + 1
        ) from None
    except (RecursionError, MemoryError):
        raise SignatureError("the code nests too deeply to read") from None
    main = next(
        (
            n
            for n in module.body
            if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name == function
        ),
        None,
    )
    if main is None:
        raise SignatureError(f"no `def {function}(...)` at the top level of the script")
    types = _LocalTypes(module)
    descriptions = _docstring_args(ast.get_docstring(main) or "")
    args = main.args
    positional = [*args.posonlyargs, *args.args]
    defaults: list[ast.expr | None] = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
    pairs = [*zip(positional, defaults, strict=True), *zip(args.kwonlyargs, args.kw_defaults, strict=True)]
    return object_schema([_param(a, d, types, descriptions) for a, d in pairs])


def _param(arg: ast.arg, default: ast.expr | None, types: _LocalTypes, docs: dict[str, str]) -> Param:
    value = NO_DEFAULT if default is None else types.value(default)
    optional = default is not None
    if arg.annotation is None:
        schema = from_default(value) if value is not NO_DEFAULT else dict(ANY)
    else:
        schema, nullable = types.schema(arg.annotation)
        optional = optional or nullable
    return Param(arg.arg, schema, not optional, value, docs.get(arg.arg, ""))


class _LocalTypes:
    """Enum classes and models declared at the top level, and the annotation -> schema mapping."""

    def __init__(self, module: ast.Module) -> None:
        self.enums: dict[str, dict[str, Any]] = {}
        self.models: dict[str, ast.ClassDef] = {}
        for node in module.body:
            if isinstance(node, ast.ClassDef):
                bases = {_dotted(b).rsplit(".", 1)[-1] for b in node.bases}
                if bases & _ENUM_BASES:
                    self.enums[node.name] = _enum_members(node)
                elif bases & _MODEL_BASES or any(_dotted(d).endswith("dataclass") for d in _decos(node)):
                    self.models[node.name] = node
        self._resolving: set[str] = set()

    def schema(self, node: ast.expr) -> tuple[JsonSchema, bool]:
        """(schema, nullable): `Optional[T]`, `T | None` and `Union[T, None]` are nullable T."""
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            try:  # a string annotation ("Foo") is the annotation it spells
                node = ast.parse(node.value, mode="eval").body
            except SyntaxError:
                return dict(ANY), False
        if isinstance(node, ast.Constant) and node.value is None:
            return dict(ANY), True
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
            return self._union(_flatten_or(node))
        if isinstance(node, ast.Subscript):
            return self._generic(_name(node.value), node.slice)
        name = _name(node)
        if name is None:
            return dict(ANY), False
        return self._named(name), False

    def _named(self, name: str) -> JsonSchema:
        if name in self.enums:
            return enum(list(self.enums[name].values()))
        if name in self.models:
            return self._model(name)
        if name in _SIMPLE:
            return dict(_SIMPLE[name])
        if name in _LISTS:
            return array()
        return resource(name)

    def _generic(self, name: str | None, arg: ast.expr) -> tuple[JsonSchema, bool]:
        params = arg.elts if isinstance(arg, ast.Tuple) else [arg]
        if name == "Optional":
            return self.schema(params[0])[0], True
        if name == "Union":
            return self._union(params)
        if name == "Literal":
            values = [self.value(p) for p in params]
            return enum([v for v in values if v is not NO_DEFAULT]), False
        if name in _LISTS:
            items = [p for p in params if not (isinstance(p, ast.Constant) and p.value is Ellipsis)]
            return array(any_of([self.schema(p)[0] for p in items]) if items else None), False
        if name in _DICTS and len(params) == 2:
            return mapping(self.schema(params[1])[0]), False
        if name == "Annotated":
            return self.schema(params[0])
        return (self._named(name) if name else dict(ANY)), False

    def _union(self, members: list[ast.expr]) -> tuple[JsonSchema, bool]:
        nullable = any(isinstance(m, ast.Constant) and m.value is None for m in members)
        rest = [self.schema(m)[0] for m in members if not (isinstance(m, ast.Constant) and m.value is None)]
        return any_of(rest), nullable

    def _model(self, name: str) -> JsonSchema:
        if name in self._resolving:  # a recursive model: stop at an untyped object
            return dict(OBJECT)
        self._resolving.add(name)
        props: dict[str, JsonSchema] = {}
        required: list[str] = []
        for stmt in self.models[name].body:
            if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                schema, nullable = self.schema(stmt.annotation)
                props[stmt.target.id] = schema
                if stmt.value is None and not nullable:
                    required.append(stmt.target.id)
        self._resolving.discard(name)
        return record(props, required)

    def value(self, node: ast.expr) -> Any:  # noqa: PLR0911 - complexity debt, docs/architecture.md
        """A default's JSON value: literals, containers of literals, `Enum.MEMBER`; else NO_DEFAULT."""
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            members = self.enums.get(node.value.id)
            if members is not None and node.attr in members:
                return members[node.attr]
            return NO_DEFAULT
        if isinstance(node, ast.List | ast.Tuple | ast.Set):
            items = [self.value(e) for e in node.elts]
            return NO_DEFAULT if NO_DEFAULT in items else items
        if isinstance(node, ast.Dict):
            keys = [self.value(k) if k is not None else NO_DEFAULT for k in node.keys]
            vals = [self.value(v) for v in node.values]
            if NO_DEFAULT in keys or NO_DEFAULT in vals or not all(isinstance(k, str) for k in keys):
                return NO_DEFAULT
            return dict(zip(keys, vals, strict=True))
        try:
            value = ast.literal_eval(node)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            return NO_DEFAULT
        if isinstance(value, float) and not math.isfinite(value):
            return NO_DEFAULT  # JSON has no Infinity or NaN
        if value is None or isinstance(value, bool | int | float | str):
            return value
        return NO_DEFAULT


def _enum_members(node: ast.ClassDef) -> dict[str, Any]:
    members: dict[str, Any] = {}
    for stmt in node.body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            target = stmt.targets[0].id
            if not target.startswith("_") and isinstance(stmt.value, ast.Constant):
                members[target] = stmt.value.value
    return members


def _decos(node: ast.ClassDef) -> list[ast.expr]:
    return [d.func if isinstance(d, ast.Call) else d for d in node.decorator_list]


def _dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _name(node: ast.expr) -> str | None:
    """The name an annotation spells: `List` for `typing.List`, `S3Object` for `wmill.S3Object`."""
    dotted = _dotted(node)
    if not dotted:
        return None
    head, _, last = dotted.rpartition(".")
    if head and head not in _TYPING_MODULES | {"wmill", "datetime", "pydantic", "enum"}:
        return None
    return last


def _flatten_or(node: ast.expr) -> list[ast.expr]:
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return [*_flatten_or(node.left), *_flatten_or(node.right)]
    return [node]


def _docstring_args(doc: str) -> dict[str, str]:
    """Google-style `Args:` lines: `name (type): text` or `name: text`; deeper lines continue the text."""
    out: dict[str, str] = {}
    lines = doc.splitlines()
    try:
        start = next(i for i, ln in enumerate(lines) if ln.strip() in {"Args:", "Arguments:", "Parameters:"})
    except StopIteration:
        return out
    base: int | None = None
    current: str | None = None
    for ln in lines[start + 1 :]:
        stripped = ln.strip()
        if not stripped:
            continue
        indent = len(ln) - len(ln.lstrip())
        if base is None:
            base = indent
        if indent < base or (indent == base and stripped in _DOC_SECTIONS):
            break
        if indent == base and ":" in stripped:
            head, _, text = stripped.partition(":")
            current = head.split("(", 1)[0].strip().lstrip("*")
            out[current] = text.strip()
        elif current is not None and indent > base:
            out[current] = f"{out[current]} {stripped}".strip()
    return out
