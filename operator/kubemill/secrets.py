"""What a run may read, resolved at run time, and keeping those values out of everything kubemill records.

A run receives exactly the Resources and Variables its script declares (`spec.resources`), and nothing else:
this module turns the declared paths plus the namespace's Resources, Variables and Secrets into the
contents of the run's per-run Secret, and remembers which of those values are secret so the operator can
mask them in the run's status, errors, events and stored log tail. It is pure (objects in, data out): the
operator fetches the objects, calls it, and writes what it returns.

API (for the per-run Secret builder and the run status writer):

    names = secret_names(declared, resources, variables)     # the Secrets to read, nothing more
    run = resolve(declared, resources, variables, secrets)   # raises UnresolvedReference
    run.secret_data()          # {key: text}: the per-run Secret's stringData (runner file names + MASKS_KEY)
    run.masks                  # frozenset of secret values
    masks_from_secret_data(d)  # the masks back from a per-run Secret's (decoded) data, after the run
    mask_forms(masks)          # every form a secret value takes in text (see `mask_forms`), longest first
    mask_text(text, masks)     # "***" for every form of every secret value
    mask_json(value, masks)    # the same inside any JSON value (results, errors)
    decode_secret(data)        # a Secret's base64 `data` as text

`resources` and `variables` map Windmill paths to the parsed `Resource` / `Variable` models of the namespace;
`secrets` maps Secret names to their decoded data. A resource value's strings `$var:<path>` and `$res:<path>`
are replaced here (so the run sees the final value and does not get the referenced variable as a file of its
own); a referenced secret variable's value is masked too.

An undeclared path is simply absent from the run (the runner's `ResourceNotFound` then says how to declare
it). `UnresolvedReference.reason` is `ResourceNotFound` (a declared path names no Resource or Variable),
`SecretNotFound` (a Secret or key is missing; `retryable`, it may be created later), `VariableNotFound` (a
`$var:` target) or `ReferenceCycle` (`$res:` references nested too deep).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, quote_plus

from pydantic import JsonValue

from kubemill import constants
from kubemill.models.common import SecretKeyRef
from kubemill.models.resources import Resource, Variable
from kubemill.runners.rundir import resource_files

MASK = "***"
MASKS_KEY = "kubemill.masks.json"
"""Key of the per-run Secret listing the values to mask (read by the operator after the run)."""
MASK_FORMS_KEY = "kubemill.mask-forms.json"
"""Key of the per-run Secret listing every form of those values (`mask_forms`), mounted into the runner:
it masks what it writes where viewers read (termination message, result log line) before writing it."""
MIN_FORM_LENGTH = 6
"""Encoded forms (base64 cores, URL escapes) shorter than this are not masked: too many false hits."""
MIN_MASKED_LENGTH = 3
"""Shorter secret values are not masked: masking `1` or `on` everywhere would garble every log."""
_MAX_DEPTH = 8
WORKSPACE_STORAGE_LABEL = constants.LABEL_WORKSPACE_STORAGE
"""A Resource of type s3 with this label set to "true" is its namespace's workspace storage: every run gets
its value (key WORKSPACE_STORAGE_KEY of the per-run Secret), for `wmill.load_s3_file`, `write_s3_file` and
results over 1 MiB, as every script of a Windmill workspace may use the workspace's object storage."""
WORKSPACE_STORAGE_KEY = "kubemill.workspace-storage.json"

VAR_PREFIX = "$var:"
RES_PREFIX = "$res:"


class UnresolvedReference(Exception):
    """A declared resource or variable that cannot be resolved; `reason` is a CamelCase word."""

    def __init__(self, reason: str, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.retryable = retryable


@dataclass(frozen=True)
class ResolvedRun:
    """The resources and variables one run may read, with the secret values among them."""

    resources: Mapping[str, JsonValue] = field(default_factory=dict)
    variables: Mapping[str, str] = field(default_factory=dict)
    masks: frozenset[str] = frozenset()
    workspace_storage: JsonValue = None
    args: Mapping[str, JsonValue] = field(default_factory=dict)
    """The run's args with `$res:<path>` / `$var:<path>` strings replaced by those values (`resolve`)."""

    def secret_data(self) -> dict[str, str]:
        """The per-run Secret's `stringData`: a key per resource/variable (runner file names), the masks."""
        data = resource_files(self.resources, self.variables)
        if self.workspace_storage is not None:
            data[WORKSPACE_STORAGE_KEY] = json.dumps(self.workspace_storage)
        data[MASKS_KEY] = json.dumps(sorted(self.masks))
        data[MASK_FORMS_KEY] = json.dumps(mask_forms(self.masks))
        return data


# --- resolution ---------------------------------------------------------------------------------------------


def secret_names(
    declared: Iterable[str], resources: Mapping[str, Resource], variables: Mapping[str, Variable]
) -> set[str]:
    """The Secrets a run declaring `declared` needs (following `$var:`/`$res:` references)."""
    names: set[str] = set()
    seen: set[tuple[str, str]] = set()
    pending = [(kind, p) for p in declared for kind in ("resource", "variable")]
    while pending:
        kind, path = pending.pop()
        if (kind, path) in seen:
            continue
        seen.add((kind, path))
        if kind == "variable" and path in variables:
            source = variables[path].spec.value_from
            if source is not None:
                names.add(source.secret_key_ref.name)
        elif kind == "resource" and path in resources:
            spec = resources[path].spec
            names.update(s.secret_key_ref.name for s in (spec.value_from or {}).values())
            pending.extend(_references(spec.value))
    return names


def _references(value: Any) -> list[tuple[str, str]]:
    if isinstance(value, str):
        if value.startswith(VAR_PREFIX):
            return [("variable", value[len(VAR_PREFIX) :])]
        if value.startswith(RES_PREFIX):
            return [("resource", value[len(RES_PREFIX) :])]
        return []
    if isinstance(value, Mapping):
        return [r for v in value.values() for r in _references(v)]
    if isinstance(value, list | tuple):
        return [r for v in value for r in _references(v)]
    return []


class _Resolver:
    def __init__(
        self,
        resources: Mapping[str, Resource],
        variables: Mapping[str, Variable],
        secrets: Mapping[str, Mapping[str, str]],
    ) -> None:
        self.resources = resources
        self.variables = variables
        self.secrets = secrets
        self.masks: set[str] = set()

    def secret(self, ref: SecretKeyRef, what: str) -> str:
        data = self.secrets.get(ref.name)
        if data is None:
            raise UnresolvedReference(
                "SecretNotFound",
                f"{what} comes from Secret {ref.name!r}, which does not exist",
                retryable=True,
            )
        if ref.key not in data:
            raise UnresolvedReference(
                "SecretNotFound",
                f"{what} comes from key {ref.key!r} of Secret {ref.name!r}, which has no such key "
                f"(it has: {', '.join(sorted(data)) or 'no keys'})",
                retryable=True,
            )
        value = data[ref.key]
        self.masks.add(value)
        return value

    def variable(self, path: str) -> str:
        variable = self.variables.get(path)
        if variable is None:
            raise UnresolvedReference(
                "VariableNotFound", f"no Variable with spec.path {path!r} in this namespace"
            )
        spec = variable.spec
        if spec.value_from is not None:
            return self.secret(spec.value_from.secret_key_ref, f"variable {path!r}")
        value = spec.value or ""
        if spec.is_secret:
            self.masks.add(value)
        return value

    def resource(self, path: str, depth: int = 0) -> JsonValue:
        if depth > _MAX_DEPTH:
            raise UnresolvedReference(
                "ReferenceCycle", f"resource {path!r}: $res: references nest deeper than {_MAX_DEPTH}"
            )
        resource = self.resources.get(path)
        if resource is None:
            raise UnresolvedReference(
                "ResourceNotFound", f"no Resource with spec.path {path!r} in this namespace"
            )
        spec = resource.spec
        value: dict[str, JsonValue] = {k: self.interpolate(v, depth) for k, v in spec.value.items()}
        for name, source in (spec.value_from or {}).items():
            value[name] = self.secret(source.secret_key_ref, f"field {name!r} of resource {path!r}")
        return value

    def interpolate(self, value: JsonValue, depth: int) -> JsonValue:
        if isinstance(value, str):
            if value.startswith(VAR_PREFIX):
                return self.variable(value[len(VAR_PREFIX) :])
            if value.startswith(RES_PREFIX):
                return self.resource(value[len(RES_PREFIX) :], depth + 1)
            return value
        if isinstance(value, dict):
            return {k: self.interpolate(v, depth) for k, v in value.items()}
        if isinstance(value, list):
            return [self.interpolate(v, depth) for v in value]
        return value


def resolve(
    declared: Sequence[str],
    resources: Mapping[str, Resource],
    variables: Mapping[str, Variable],
    secrets: Mapping[str, Mapping[str, str]],
    workspace_storage: str | None = None,
    args: Mapping[str, JsonValue] | None = None,
) -> ResolvedRun:
    """Resolve every declared path to a Resource, a Variable, or both (Windmill allows one of each per path),
    and `workspace_storage` (the path of the namespace's workspace storage Resource, if it has one). In
    `args`, a string `$res:<path>` or `$var:<path>` (at any depth, as Windmill's resource picker sends it)
    becomes that resource's or variable's value, only for a path the script declares: anyone who may start
    a run could otherwise read any resource by naming it (`ReferenceNotAllowed`).

    `resources`/`variables` are keyed by `spec.path`; `secrets` by Secret name (decoded data). Raises
    `UnresolvedReference` when a declared path names nothing, or a Secret or `$var:` target is missing."""
    resolver = _Resolver(resources, variables, secrets)
    storage = None if workspace_storage is None else resolver.resource(workspace_storage)
    out_resources: dict[str, JsonValue] = {}
    out_variables: dict[str, str] = {}
    for path in declared:
        if path not in resources and path not in variables:
            raise UnresolvedReference(
                "ResourceNotFound",
                f"the script declares {path!r} in spec.resources, but no Resource or Variable in this "
                f"namespace has spec.path {path!r}: create one, or remove it from spec.resources",
            )
        if path in resources:
            out_resources[path] = resolver.resource(path)
        if path in variables:
            out_variables[path] = resolver.variable(path)
    lookup = _declared_lookup(resolver, set(declared))
    resolved_args = {k: _replace_references(v, k, lookup) for k, v in (args or {}).items()}
    return ResolvedRun(out_resources, out_variables, frozenset(resolver.masks), storage, resolved_args)


def is_reference(value: Any) -> bool:
    return isinstance(value, str) and value.startswith((VAR_PREFIX, RES_PREFIX))


def has_references(value: Any) -> bool:
    """Whether `value` holds a `$res:` or `$var:` string anywhere."""
    if isinstance(value, Mapping):
        return any(has_references(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(has_references(v) for v in value)
    return is_reference(value)


Lookup = Callable[[str, str, str], JsonValue]
"""(kind "resource" or "variable", path, the arg's place like `db.hosts[0]`) -> the value to put there."""


def _replace_references(value: JsonValue, where: str, lookup: Lookup) -> JsonValue:
    """`value` with every `$res:`/`$var:` string (at any depth) replaced by what `lookup` gives."""
    if isinstance(value, dict):
        return {k: _replace_references(v, f"{where}.{k}", lookup) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace_references(v, f"{where}[{i}]", lookup) for i, v in enumerate(value)]
    if not isinstance(value, str) or not is_reference(value):
        return value
    kind = "variable" if value.startswith(VAR_PREFIX) else "resource"
    return lookup(kind, value.split(":", 1)[1], where)


def _declared_lookup(resolver: _Resolver, declared: set[str]) -> Lookup:
    def lookup(kind: str, path: str, where: str) -> JsonValue:
        if path not in declared:
            raise UnresolvedReference(
                "ReferenceNotAllowed",
                f"arg {where!r} names {kind} {path!r}, which the script does not declare in spec.resources: "
                f"a run's args may name only the resources and variables its Script may read",
            )
        return resolver.variable(path) if kind == "variable" else resolver.resource(path)

    return lookup


def substitute_references(
    args: Mapping[str, JsonValue], resources: Mapping[str, JsonValue], variables: Mapping[str, str]
) -> dict[str, JsonValue]:
    """`kubemill run`: `$res:<path>` / `$var:<path>` strings in `args` (at any depth) replaced by the local
    workspace's resource values and variable texts. Every path of the workspace may be named: the person
    running it holds its files already. `UnresolvedReference` (`ResourceNotFound`) names the arg and the path
    when the workspace has no such resource or variable."""

    def lookup(kind: str, path: str, where: str) -> JsonValue:
        found = variables.get(path) if kind == "variable" else resources.get(path)
        if found is None:
            raise UnresolvedReference(
                "ResourceNotFound", f"arg {where!r} names {kind} {path!r}, which this workspace does not have"
            )
        return found

    return {k: _replace_references(v, k, lookup) for k, v in args.items()}


def decode_secret(data: Mapping[str, str] | None) -> dict[str, str]:
    """A Secret's `data` (base64) as text; values that are not UTF-8 are kept as their base64 text."""
    out: dict[str, str] = {}
    for key, encoded in (data or {}).items():
        try:
            out[key] = base64.b64decode(encoded, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            out[key] = encoded
    return out


def masks_from_secret_data(data: Mapping[str, str]) -> frozenset[str]:
    """The secret values recorded in a per-run Secret (decoded data), for masking what the run produced."""
    try:
        values = json.loads(data.get(MASKS_KEY, "[]"))
    except ValueError:
        return frozenset()
    return frozenset(v for v in values if isinstance(v, str))


# --- masking ------------------------------------------------------------------------------------------------


def _base64_forms(raw: bytes) -> set[str]:
    """The parts of base64 (standard and URL-safe) that stand for `raw` wherever it sits in encoded data.

    Base64 maps 3 bytes to 4 characters, so the same secret encodes differently at each of the 3 offsets
    modulo 3 it can start at; at each, the characters of the groups that hold only secret bytes do not
    depend on what surrounds it. Those cores (and the whole padded encoding) are masked."""
    forms: set[str] = set()
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + raw).decode()
        first = 1 if offset else 0  # the group that mixes prefix bytes and secret bytes
        last = (offset + len(raw)) // 3  # groups that end inside the secret
        core = encoded[4 * first : 4 * last]
        forms.add(core)
    forms.add(base64.b64encode(raw).decode())
    forms |= {f.replace("+", "-").replace("/", "_") for f in forms}
    return forms


def mask_forms(masks: Iterable[str]) -> list[str]:
    """Every form a secret takes in stored text, longest first: as is, JSON-escaped, each line of a
    multi-line one, URL-encoded (`%XX` and form encoding) and base64-encoded (standard and URL-safe, at any
    offset: see `_base64_forms`). Masking replaces the longest first, so overlapping secrets mask whole."""
    forms: set[str] = set()
    for value in masks:
        if len(value) < MIN_MASKED_LENGTH:
            continue
        plain = {value, json.dumps(value)[1:-1]}
        if "\n" in value:
            plain.update(line.strip() for line in value.splitlines())
        forms.update(c for c in plain if len(c) >= MIN_MASKED_LENGTH)
        encoded = {quote(value, safe=""), quote_plus(value), quote(value)} | _base64_forms(value.encode())
        forms.update(c for c in encoded if len(c) >= MIN_FORM_LENGTH)
    return sorted(forms, key=lambda f: (-len(f), f))


def mask_text(text: str, masks: Iterable[str]) -> str:
    """`text` with every secret value replaced by `***` (longest first, so overlapping secrets mask whole)."""
    for form in mask_forms(masks):
        text = text.replace(form, MASK)
    return text


def mask_json(value: Any, masks: Iterable[str]) -> Any:
    """A JSON value with secrets masked in every string, keys included (results, errors, state)."""
    forms = mask_forms(masks)
    if not forms:
        return value

    def walk(item: Any) -> Any:
        if isinstance(item, str):
            for form in forms:
                item = item.replace(form, MASK)
            return item
        if isinstance(item, Mapping):
            return {walk(k): walk(v) for k, v in item.items()}
        if isinstance(item, list | tuple):
            return [walk(v) for v in item]
        return item

    return walk(value)
