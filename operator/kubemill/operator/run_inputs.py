"""What a run is given besides its args: the files of its per-run Secret, resolved from the namespace.

Reads the namespace's Resources and Variables and the Secrets they draw on (only those, and only when the
script declares anything), and hands them to the pure `kubemill.secrets.resolve`, whose result becomes the
per-run Secret through `kubemill.k8s.builders.build_run_secret`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

import pydantic

from kubemill.k8s.client import Kube
from kubemill.models.resources import Resource, Variable
from kubemill.secrets import MASKS_KEY, decode_secret, resolve, secret_names

API = "kubemill.dev/v1alpha1"
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


def run_secret_files(kube: Kube, namespace: str, declared: Sequence[str]) -> dict[str, str]:
    """The per-run Secret's files (`resource.*`, `variable.*` and the mask list); raises
    `kubemill.secrets.UnresolvedReference` when a declared path cannot be resolved."""
    if not declared:
        return {MASKS_KEY: "[]"}
    resources = _by_path(Resource, kube.list(API, "Resource", namespace))
    variables = _by_path(Variable, kube.list(API, "Variable", namespace))
    secrets = {}
    for name in secret_names(declared, resources, variables):
        secret = kube.get_or_none("v1", "Secret", namespace, name)
        if secret is not None:
            secrets[name] = decode_secret(secret.get("data"))
    return resolve(declared, resources, variables, secrets).secret_data()
