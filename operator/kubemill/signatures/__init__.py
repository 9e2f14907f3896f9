"""Signatures: a script's `main` parameters as the JSON Schema Windmill would store for it.

The schema drives validation of run arguments, the form a person fills in, and `kubemill schema FILE`.
It is pure: code in, schema out (only `cli_schema` reads a file). One module per language does the
reading; `schema.py` holds the shared JSON Schema encodings; see docs/signatures.md for the mappings.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import PurePath
from typing import Any

from kubemill.signatures import bash, go, python, typescript
from kubemill.signatures.schema import SignatureError

__all__ = [
    "LANGUAGES",
    "PREPROCESSOR_LANGUAGES",
    "SignatureError",
    "add_arguments_schema",
    "cli_schema",
    "derive_schema",
    "language_for_path",
    "preprocessor_schema",
]

_READERS: dict[str, Callable[..., dict[str, Any]]] = {
    "python3": python.parse,
    "deno": typescript.parse,
    "bun": typescript.parse,
    "typescript": typescript.parse,
    "go": go.parse,
    "bash": bash.parse,
}

LANGUAGES: frozenset[str] = frozenset(_READERS)

PREPROCESSOR_LANGUAGES: frozenset[str] = frozenset({"python3", "deno", "bun", "typescript"})
"""Languages whose scripts may define Windmill's `preprocessor` function (Windmill: Python and TypeScript)."""

# Longest suffix first: Windmill's sync layout names Bun and Deno scripts `<name>.bun.ts` / `<name>.deno.ts`.
_SUFFIXES: tuple[tuple[str, str], ...] = (
    (".bun.ts", "bun"),
    (".deno.ts", "deno"),
    (".ts", "deno"),
    (".py", "python3"),
    (".go", "go"),
    (".sh", "bash"),
    (".bash", "bash"),
)


def derive_schema(language: str, code: str, function: str = "main") -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of `main`'s parameters; `SignatureError` if the code does not parse.
    `function="preprocessor"` reads Windmill's preprocessor instead (Python and TypeScript only)."""
    reader = _READERS.get(language)
    if reader is None:
        raise SignatureError(
            f"unsupported language {language!r} (expected one of {', '.join(sorted(LANGUAGES))})"
        )
    if function == "main":
        return reader(code)
    if language not in PREPROCESSOR_LANGUAGES:
        raise SignatureError(f"{language} scripts have only a main function")
    return reader(code, function)


def preprocessor_schema(language: str, code: str) -> dict[str, Any] | None:
    """The schema of the script's `preprocessor` function, or None when it defines none (or its language
    has none: Windmill's preprocessors are Python or TypeScript) or the code does not parse."""
    if language not in PREPROCESSOR_LANGUAGES or "preprocessor" not in code:
        return None
    try:
        return derive_schema(language, code, "preprocessor")
    except SignatureError:
        return None


def language_for_path(path: str) -> str:
    """The script language a file name implies (`.py` python3, `.ts` deno, `.go` go, `.sh` bash)."""
    name = PurePath(path).name.lower()
    for suffix, language in _SUFFIXES:
        if name.endswith(suffix):
            return language
    raise ValueError(f"cannot tell the language of {path!r} from its extension (.py, .ts, .go, .sh)")


def add_arguments_schema(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="a script with a main function")
    parser.add_argument(
        "--language",
        choices=sorted(LANGUAGES),
        help="the script's language (default: from the file extension)",
    )


def cli_schema(args: argparse.Namespace) -> int:
    """`kubemill schema FILE [--language L]`: print the schema, or one line naming where parsing failed."""
    path: str = args.file
    try:
        language = args.language or language_for_path(path)
        with open(path, encoding="utf-8") as f:
            code = f.read()
        schema = derive_schema(language, code)
    except SignatureError as exc:
        where = f"{path}:{exc.line}" if exc.line is not None else path
        print(f"kubemill schema: {where}: {exc.message}", file=sys.stderr)
        return 1
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        print(f"kubemill schema: {path}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(schema, indent=2))
    return 0
