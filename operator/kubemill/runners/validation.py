"""Checking a run's args against its script's schema: the one place args are validated.

Schemas derived from `main` keep a single `type` for optional parameters, as Windmill writes them
(`filters: dict = None` is `{"type": "object", "default": null}`, not `["object", "null"]`), because
Windmill's forms expect that. So an explicit `null` for a property that is not `required` means "not given":
it is not a validation error, at any depth, and at the top level `run_args` leaves it out so the parameter's
default applies. Pure: the operator's admission of a ScriptRun and `kubemill run` both call `validate_args`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Problem:
    """One way the args miss the schema; `field` is the dotted path (`config.batch_size`, `items.0`), or
    empty for the args as a whole."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


def _allows_null(schema: Any) -> bool:
    if not isinstance(schema, Mapping):
        return True
    kind = schema.get("type")
    if kind is None:
        return "enum" not in schema and "const" not in schema
    return kind == "null" or (isinstance(kind, list) and "null" in kind)


def without_optional_nulls(schema: Mapping[str, Any], value: Any) -> Any:
    """`value` with every `null` removed where the schema makes that property optional (at any depth)."""
    if isinstance(value, Mapping):
        properties = schema.get("properties")
        if not isinstance(properties, Mapping):
            properties = {}
        required = set(schema.get("required") or ())
        cleaned = {}
        for key, item in value.items():
            sub = properties.get(key)
            if item is None and key not in required and not _allows_null(sub):
                continue
            cleaned[key] = without_optional_nulls(sub, item) if isinstance(sub, Mapping) else item
        return cleaned
    if isinstance(value, list):
        items = schema.get("items")
        if isinstance(items, Mapping):
            return [without_optional_nulls(items, item) for item in value]
    return value


def args_for_language(language: str, args: Mapping[str, Any]) -> dict[str, Any]:
    """The args as the script's language takes them, before validation. Bash takes only strings: any other
    value (a flow handing an object or a number to a Bash step) is passed as its compact JSON text, which is
    what the Bash runner writes for it (jq's `tojson`); other languages take args as they are."""
    if language != "bash":
        return dict(args)
    return {
        key: value if value is None or isinstance(value, str) else json.dumps(value, separators=(",", ":"))
        for key, value in args.items()
    }


def run_args(schema: Mapping[str, Any], args: Mapping[str, Any]) -> dict[str, Any]:
    """The args a script is called with: top-level optional nulls left out, so defaults apply. Nested values
    are passed as given (only validation looks past their nulls)."""
    properties = schema.get("properties")
    if not isinstance(properties, Mapping):
        properties = {}
    required = set(schema.get("required") or ())
    return {
        key: value
        for key, value in args.items()
        if not (value is None and key not in required and not _allows_null(properties.get(key)))
    }


_PLAIN_TYPES: dict[str, type | tuple[type, ...]] = {
    "string": str,
    "integer": int,
    "number": (int, float),
    "boolean": bool,
    "object": dict,
    "array": list,
}
_ANNOTATIONS = {"description", "default", "format", "title"}  # asserted nothing in draft 2020-12 by default


def _plainly_valid(schema: Mapping[str, Any], args: Mapping[str, Any]) -> bool:
    """True when `args` certainly fit a schema made only of `required` and plain `type`s, the usual derived
    schema: then jsonschema (~50 ms to import) is not needed. False means "ask jsonschema", not "invalid"."""
    if set(schema) - {"$schema", "type", "properties", "required", "order", *_ANNOTATIONS}:
        return False
    properties = schema.get("properties") or {}
    required = schema.get("required") or []
    if (
        schema.get("type") != "object"
        or not isinstance(properties, Mapping)
        or not isinstance(required, list)
    ):
        return False
    if not all(isinstance(name, str) and name in args for name in required):
        return False
    for name, value in args.items():
        sub = properties.get(name)
        if sub is None:
            continue  # no additionalProperties keyword: any other arg is allowed
        if not isinstance(sub, Mapping) or set(sub) - {"type", *_ANNOTATIONS}:
            return False
        kind = sub.get("type")
        if kind is None:
            continue
        expected = _PLAIN_TYPES.get(kind) if isinstance(kind, str) else None
        if expected is None or (isinstance(value, bool) and kind != "boolean"):
            return False
        if not isinstance(value, expected) or (kind == "integer" and isinstance(value, float)):
            return False
    return True


SHELL_READS = frozenset(
    {
        "BASH_ENV",
        "ENV",
        "SHELLOPTS",
        "BASHOPTS",
        "POSIXLY_CORRECT",
        "PS1",
        "PS2",
        "PS3",
        "PS4",
        "PROMPT_COMMAND",
        "IFS",
        "PATH",
        "CDPATH",
        "GLOBIGNORE",
        "EXECIGNORE",
        "FUNCNEST",
        "HOME",
        "SHELL",
        "TMPDIR",
        "HISTFILE",
        "INPUTRC",
        "LANG",
        "LANGUAGE",
        "TZ",
        "OLDPWD",
        "PWD",
    }
)
"""Variables bash, the dynamic loader or the runner itself read: a run's args never set them."""
SHELL_READS_PREFIXES = ("BASH", "LD_", "LC_", "GCONV_", "KUBEMILL_", "WM_")


def env_arg_name_problem(name: str) -> str | None:
    """Why an arg cannot be a Bash script's environment variable (None when it can). The Bash runner applies
    the same rule (runner_images/bash/run.sh): input never changes how the shell or the runner behaves."""
    if name in SHELL_READS or name.startswith(SHELL_READS_PREFIXES):
        return (
            f"bash, the loader or the runner reads ${name} itself, so a run cannot set it; rename the "
            "parameter (for example with a prefix)"
        )
    return None


def validate_args(
    schema: Mapping[str, Any], args: Mapping[str, Any], language: str | None = None
) -> list[Problem]:
    """Every way `args` fail `schema` (JSON Schema draft 2020-12), sorted by field; empty when they fit.
    For Bash, also every arg whose name the shell or the runner reads (`env_arg_name_problem`)."""
    instance = without_optional_nulls(schema, dict(args))
    reserved = [
        Problem(name, why)
        for name in instance
        if language == "bash" and (why := env_arg_name_problem(name)) is not None
    ]
    if reserved:
        return sorted(reserved, key=lambda p: p.field)
    if _plainly_valid(schema, instance):
        return []
    import jsonschema  # here, not at the top: most runs never need it

    validator = jsonschema.Draft202012Validator(dict(schema))
    problems = [
        Problem(".".join(str(part) for part in error.absolute_path), error.message)
        for error in validator.iter_errors(instance)
    ]
    return sorted(problems, key=lambda p: (p.field, p.message))
