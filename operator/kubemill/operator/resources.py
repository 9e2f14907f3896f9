"""ResourceType, Resource and Variable handlers: each one's `Ready` condition, so `kubectl get` tells a person
what is missing before a run trips on it.

A ResourceType is Ready when its schema is a JSON Schema. A Resource is Ready when its type exists (in the
namespace, or built in: kubemill.resourcetypes), its value fits the type with secret fields coming from
Secrets (not in clear), and every Secret key it names exists. A Variable is Ready when its Secret key exists.
Messages name fields, Secrets and keys, never values. Plaintext secret fields are refused earlier, at
admission, by the ValidatingAdmissionPolicies in config/admission/; this is the same rule for anything
that got in before the policy. Values are read by runs only (kubemill.secrets), at run time: updating a
Secret takes effect for the next run. Kopf `on.event` handlers, idempotent; status written only on change.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import kopf
import pydantic

from kubemill.errors import KubemillError
from kubemill.k8s.api import KubeApi
from kubemill.models.common import API_VERSION, SecretKeyRef, ready_condition
from kubemill.models.resources import Resource, ResourceType, Variable
from kubemill.operator.runtime import of
from kubemill.resourcetypes import check_resource, check_schema, find_type, type_name

GROUP, VERSION = API_VERSION.split("/")


def _ready(body: Mapping[str, Any], ok: bool, reason: str, message: str) -> dict[str, Any]:
    return ready_condition(
        body.get("status") or {}, ok, reason, message, body["metadata"].get("generation"), datetime.now(UTC)
    )


def _write(api: KubeApi, kind: str, body: Mapping[str, Any], ok: bool, reason: str, message: str) -> None:
    status = {
        "observedGeneration": body["metadata"].get("generation"),
        "conditions": [_ready(body, ok, reason, message)],
    }
    current = body.get("status") or {}
    old = (current.get("conditions") or [{}])[0]
    new = status["conditions"][0]
    if current.get("observedGeneration") == status["observedGeneration"] and all(
        old.get(k) == new[k] for k in ("status", "reason", "message")
    ):
        return
    meta = body["metadata"]
    api.patch(API_VERSION, kind, meta["namespace"], meta["name"], {"status": status}, status=True)


def _invalid(exc: pydantic.ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())


def missing_keys(api: KubeApi, namespace: str, refs: Iterable[tuple[str, SecretKeyRef]]) -> list[str]:
    """For each (what, ref) whose Secret or key does not exist, a sentence saying so."""
    problems = []
    cache: dict[str, Mapping[str, Any] | None] = {}
    for what, ref in refs:
        if ref.name not in cache:
            cache[ref.name] = api.get_or_none("v1", "Secret", namespace, ref.name)
        secret = cache[ref.name]
        if secret is None:
            problems.append(f"{what} comes from Secret {ref.name!r}, which does not exist")
        elif ref.key not in (secret.get("data") or {}) and ref.key not in (secret.get("stringData") or {}):
            problems.append(
                f"{what} comes from key {ref.key!r} of Secret {ref.name!r}, which has no such key"
            )
    return problems


def _namespace_types(api: KubeApi, namespace: str) -> dict[str, ResourceType]:
    types = {}
    for item in api.list(API_VERSION, "ResourceType", namespace):
        try:
            parsed = ResourceType.model_validate(item)
        except pydantic.ValidationError:
            continue
        types[type_name(parsed)] = parsed
    return types


def reconcile_resource_type(api: KubeApi, body: Mapping[str, Any]) -> None:
    try:
        parsed = ResourceType.model_validate(body)
    except pydantic.ValidationError as exc:
        _write(api, "ResourceType", body, False, "InvalidSpec", _invalid(exc))
        return
    problem = check_schema(parsed.spec.schema_)
    if problem:
        _write(api, "ResourceType", body, False, "InvalidSchema", problem)
    else:
        _write(api, "ResourceType", body, True, "Valid", f"resource type {type_name(parsed)}")


def reconcile_resource(api: KubeApi, body: Mapping[str, Any]) -> None:
    namespace = body["metadata"]["namespace"]
    try:
        resource = Resource.model_validate(body)
    except pydantic.ValidationError as exc:
        _write(api, "Resource", body, False, "InvalidSpec", _invalid(exc))
        return
    spec = resource.spec
    resource_type = find_type(spec.resource_type, _namespace_types(api, namespace))
    if resource_type is None:
        message = (
            f"no ResourceType named {spec.resource_type!r} in this namespace and no built-in type of that "
            "name (built in: http_bearer, mysql, postgresql, s3, slack_webhook, smtp)"
        )
        _write(api, "Resource", body, False, "TypeNotFound", message)
        return
    problems = check_resource(spec, resource_type, body["metadata"]["name"])
    if problems:
        reason = "PlaintextSecret" if "must not be written in spec.value" in problems[0] else "InvalidValue"
        _write(api, "Resource", body, False, reason, "; ".join(problems))
        return
    refs = [(f"field {f!r}", s.secret_key_ref) for f, s in (spec.value_from or {}).items()]
    missing = missing_keys(api, namespace, refs)
    if missing:
        _write(api, "Resource", body, False, "SecretNotFound", "; ".join(missing))
        return
    _write(api, "Resource", body, True, "Valid", f"a {spec.resource_type} resource")


def reconcile_variable(api: KubeApi, body: Mapping[str, Any]) -> None:
    try:
        variable = Variable.model_validate(body)
    except pydantic.ValidationError as exc:
        _write(api, "Variable", body, False, "InvalidSpec", _invalid(exc))
        return
    source = variable.spec.value_from
    missing = (
        missing_keys(api, body["metadata"]["namespace"], [("the value", source.secret_key_ref)])
        if source
        else []
    )
    if missing:
        _write(api, "Variable", body, False, "SecretNotFound", "; ".join(missing))
    else:
        _write(api, "Variable", body, True, "Valid", "from a Secret" if source else "inline")


def _handle(work: Any, type: str | None, body: kopf.Body, memo: kopf.Memo) -> None:
    if type == "DELETED":
        return
    try:
        work(of(memo).kube, dict(body))
    except KubemillError as exc:
        raise kopf.TemporaryError(str(exc), delay=getattr(exc, "delay", 5.0)) from exc


@kopf.on.event(GROUP, VERSION, "resourcetypes")
def resource_type_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    _handle(reconcile_resource_type, type, body, memo)


@kopf.on.event(GROUP, VERSION, "resources")
def resource_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    _handle(reconcile_resource, type, body, memo)


@kopf.on.event(GROUP, VERSION, "variables")
def variable_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    _handle(reconcile_variable, type, body, memo)
