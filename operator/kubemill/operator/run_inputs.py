"""What a run is given besides its args: the files of its per-run Secret, resolved from the namespace.

Reads the namespace's Resources and Variables and the Secrets they draw on (only those, and only when the
script declares anything or the namespace has workspace storage, which every run gets: k8s/objectstore.py),
and hands them to the pure `kubemill.secrets.resolve`, whose result becomes the per-run Secret through
`kubemill.k8s.builders.build_run_secret`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import pydantic

from kubemill import constants
from kubemill.errors import KubemillError
from kubemill.k8s.api import KubeApi
from kubemill.k8s.objectstore import storage_path
from kubemill.models.resources import Resource, Variable
from kubemill.secrets import (
    MASKS_KEY,
    UnresolvedReference,
    decode_secret,
    has_references,
    resolve,
    secret_names,
)

API = constants.API_VERSION
M = TypeVar("M", Resource, Variable)


def _by_path(model: type[M], bodies: list[dict[str, Any]]) -> dict[str, M]:
    out: dict[str, M] = {}
    for body in bodies:
        try:
            parsed = model.model_validate(body)
        except pydantic.ValidationError:
            continue  # reported on the object's own status by its handler
        out[parsed.spec.path] = parsed
    return out


def run_secret_files(
    kube: KubeApi, namespace: str, declared: Sequence[str], args: Mapping[str, Any] | None = None
) -> tuple[dict[str, str], dict[str, Any]]:
    """The per-run Secret's files (`resource.*`, `variable.*`, the mask list) and the args with their
    `$res:`/`$var:` references resolved; raises `kubemill.secrets.UnresolvedReference` when a declared path
    or a reference cannot be resolved (or names a path the script does not declare)."""
    args = dict(args or {})
    bodies = kube.list(API, "Resource", namespace)
    try:
        storage = storage_path(bodies)
    except KubemillError as exc:
        raise UnresolvedReference("WorkspaceStorageAmbiguous", str(exc)) from None
    if not declared and storage is None and not has_references(args):
        return {MASKS_KEY: "[]"}, args
    resources = _by_path(Resource, bodies)
    variables = _by_path(Variable, kube.list(API, "Variable", namespace)) if declared else {}
    secrets = {}
    for name in secret_names([*declared, *([storage] if storage else [])], resources, variables):
        secret = kube.get_or_none("v1", "Secret", namespace, name)
        if secret is not None:
            secrets[name] = decode_secret(secret.get("data"))
    resolved = resolve(declared, resources, variables, secrets, workspace_storage=storage, args=args)
    return resolved.secret_data(), dict(resolved.args)
