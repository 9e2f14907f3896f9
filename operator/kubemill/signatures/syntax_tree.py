"""Parsing with tree-sitter for the languages the standard library cannot parse (TypeScript, Go, Bash).

One parser per grammar and thread, a check that turns the first ERROR or MISSING node into a `SignatureError`
naming its line, and a few accessors so the language modules read the tree, not the text.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from functools import cache

import tree_sitter_bash
import tree_sitter_go
import tree_sitter_typescript
from tree_sitter import Language, Node, Parser

from kubemill.signatures.schema import SignatureError

_GRAMMARS: dict[str, Callable[[], object]] = {
    "typescript": tree_sitter_typescript.language_typescript,
    "go": tree_sitter_go.language,
    "bash": tree_sitter_bash.language,
}


@cache
def _language(grammar: str) -> Language:
    return Language(_GRAMMARS[grammar]())


# A Parser is not safe to share between threads, and Kopf runs sync handlers in a thread pool.
_per_thread = threading.local()


def _parser(grammar: str) -> Parser:
    parsers: dict[str, Parser] = _per_thread.__dict__.setdefault("parsers", {})
    if grammar not in parsers:
        parsers[grammar] = Parser(_language(grammar))
    return parsers[grammar]


def parse(grammar: str, code: str) -> Node:
    """The root of `code`'s syntax tree; raises `SignatureError` at the first place it does not parse."""
    root = _parser(grammar).parse(code.encode()).root_node
    if not root.has_error:
        return root
    bad = _first_error(root)
    if bad is None:
        raise SignatureError("syntax error")
    if bad.is_missing and bad.parent is not None:  # name where the unclosed construct opens, not EOF
        opened = bad.parent
        raise SignatureError(f"missing {bad.type!r} to close {_first_line(opened)!r}", line(opened))
    near = _first_line(bad)
    raise SignatureError(f"syntax error near {near!r}" if near else "syntax error", line(bad))


def _first_line(node: Node) -> str:
    lines = text(node).splitlines()
    return lines[0].strip()[:60] if lines else ""


def _first_error(node: Node) -> Node | None:
    for child in node.children:
        if child.is_error or child.is_missing:
            return child
        if child.has_error:
            return _first_error(child) or child
    return None


def text(node: Node | None) -> str:
    """The source text of a node ('' for none)."""
    if node is None or node.text is None:
        return ""
    return node.text.decode()


def line(node: Node) -> int:
    """1-based line of a node, for messages."""
    return node.start_point.row + 1


def children(node: Node, *types: str) -> Iterator[Node]:
    """Named children of the given types (all named children when no type is given)."""
    for child in node.named_children:
        if not types or child.type in types:
            yield child


def field(node: Node, name: str) -> Node | None:
    """`node.child_by_field_name`, spelled shorter."""
    return node.child_by_field_name(name)
