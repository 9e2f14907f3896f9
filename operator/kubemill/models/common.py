"""Pieces every kubemill kind shares: the camelCase base model, Windmill paths, conditions, references.

Kubernetes fields are camelCase (an alias generator maps them to snake_case attributes); `x-kubernetes-*` keys
in `json_schema_extra` are carried into the generated CRDs by `kubemill.crdgen`, and each CEL rule there has a
Python twin in a validator, so a manifest the API server accepts is one the models accept, and the reverse.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, JsonValue
from pydantic.alias_generators import to_camel

from kubemill import constants

GROUP, VERSION, API_VERSION = constants.GROUP, constants.VERSION, constants.API_VERSION

JsonObject = Mapping[str, JsonValue]
"""An open-ended JSON object (args, results, resource values, JSON Schemas)."""

PATH_PATTERN = r"^[ufg]/[A-Za-z0-9_-]+(/[A-Za-z0-9_.-]+)+$"
PATH_MAX_LENGTH = 255
PATH_MESSAGE = (
    "must be a Windmill path like f/<folder>/<name>, u/<user>/<name> or g/<group>/<name> "
    "(letters, digits, _ and -, segments separated by /)"
)


def rule(
    expression: str, message: str, *, field_path: str | None = None, message_expression: str | None = None
) -> dict[str, str]:
    """One CEL rule for `x-kubernetes-validations` (`field_path` points the error at a field;
    `message_expression`, CEL too, says more than `message` where the API server can evaluate it)."""
    out = {"rule": expression, "message": message}
    if message_expression is not None:
        out["messageExpression"] = message_expression
    if field_path is not None:
        out["fieldPath"] = field_path
    return out


IMMUTABLE_RUN_SPEC = (
    "a run's spec is fixed when it is created (what was approved is what runs): create a new run instead"
)
IMMUTABLE = rule("self == oldSelf", IMMUTABLE_RUN_SPEC)
"""The rule on ScriptRun and FlowRun specs: args, target and parent never change after creation."""


def validations(*rules: dict[str, str]) -> dict[str, Any]:
    """`json_schema_extra` carrying CEL rules into the CRD."""
    return {"x-kubernetes-validations": list(rules)}


def _check_path(value: str) -> str:
    if not re.match(PATH_PATTERN, value):
        raise ValueError(f"{value!r} {PATH_MESSAGE}")
    return value


WindmillPath = Annotated[
    str,
    AfterValidator(_check_path),
    Field(
        min_length=1,
        max_length=PATH_MAX_LENGTH,
        json_schema_extra=validations(rule(f"self.matches(r'{PATH_PATTERN}')", PATH_MESSAGE)),
    ),
]
"""A Windmill path (`f/<folder>/<name>`, `u/<user>/<name>`, `g/<group>/<name>`)."""

PathList = Annotated[tuple[WindmillPath, ...], Field(max_length=256)]
"""Windmill paths (bounded, so the API server can budget the CEL rule on each)."""

Name = Annotated[str, Field(min_length=1, max_length=253)]
"""The name of a Kubernetes object in the same namespace."""


def exactly_one(values: Mapping[str, object], message: str) -> None:
    """Raise `message` unless exactly one of `values` is set (the twin of a `has(a) != has(b)` CEL rule)."""
    if sum(value is not None for value in values.values()) != 1:
        raise ValueError(message)


class KubemillModel(BaseModel):
    """Base of Kubernetes-side models: camelCase on the wire, frozen, unknown fields rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, frozen=True, extra="forbid", serialize_by_alias=True
    )

    def to_manifest(self) -> dict[str, Any]:
        """Plain data as a manifest would carry it: camelCase, only the fields that were set."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)


class StatusModel(KubemillModel):
    """Base of status models: fields written by a newer operator are ignored, not refused."""

    model_config = ConfigDict(extra="ignore")


class ConfigMapKeyRef(KubemillModel):
    """A key of a ConfigMap in the same namespace."""

    name: Name
    key: Annotated[str, Field(min_length=1, max_length=253)]


class SecretKeyRef(KubemillModel):
    """A key of a Secret in the same namespace."""

    name: Name
    key: Annotated[str, Field(min_length=1, max_length=253)]


class SecretValueSource(KubemillModel):
    """Where a secret value comes from."""

    secret_key_ref: SecretKeyRef


ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(KubemillModel):
    """A Kubernetes condition (`type` is `Ready` on definitions, `Succeeded` on runs)."""

    type: Annotated[str, Field(min_length=1, max_length=316)]
    status: ConditionStatus
    reason: Annotated[str, Field(min_length=1, max_length=1024)]
    message: Annotated[str, Field(max_length=32768)] = ""
    last_transition_time: datetime
    observed_generation: Annotated[int, Field(ge=0)] | None = None


Conditions = Annotated[
    tuple[Condition, ...],
    Field(json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]}),
]


def condition(status: tuple[Condition, ...], kind: str) -> Condition | None:
    """The condition of type `kind`, if any."""
    return next((c for c in status if c.type == kind), None)


def ready_condition(
    status: Mapping[str, Any], ok: bool, reason: str, message: str, generation: int | None, now: datetime
) -> dict[str, Any]:
    """The `Ready` condition as written to status, keeping its lastTransitionTime while its status holds."""
    old = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
    value = "True" if ok else "False"
    since = old["lastTransitionTime"] if old and old.get("status") == value else None
    return {
        "type": "Ready",
        "status": value,
        "reason": reason,
        "message": message,
        "lastTransitionTime": since or now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "observedGeneration": generation,
    }


class ObjectMeta(BaseModel):
    """The parts of `metadata` kubemill reads; everything else is kept as is."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, frozen=True, extra="allow", serialize_by_alias=True
    )

    name: str | None = None
    generate_name: str | None = None
    namespace: str | None = None
    uid: str | None = None
    generation: int | None = None
    resource_version: str | None = None
    creation_timestamp: str | None = None
    labels: Mapping[str, str] | None = None
    annotations: Mapping[str, str] | None = None


class KubemillResource(KubemillModel):
    """Base of the eight kinds: `apiVersion` and `metadata`; each kind adds `kind`, `spec` and `status`."""

    api_version: Literal["kubemill.dev/v1alpha1"]
    metadata: ObjectMeta
