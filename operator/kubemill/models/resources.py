"""ResourceType, Resource and Variable: the typed connection settings and values scripts read with
`wmill.get_resource` / `wmill.get_variable`. Secret values come from Kubernetes Secrets, never from the spec
in clear, and never appear in any status.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field, model_validator

from kubemill.models.common import (
    Conditions,
    JsonObject,
    KubemillModel,
    KubemillResource,
    SecretValueSource,
    StatusModel,
    WindmillPath,
    exactly_one,
    rule,
    validations,
)

TYPE_NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_]*$"


class DefinitionStatus(StatusModel):
    """Readiness of a definition (`Ready` names what is missing, e.g. a Secret key)."""

    observed_generation: int | None = None
    conditions: Conditions = ()


class ResourceTypeSpec(KubemillModel):
    """A resource type: the JSON Schema its values follow (`password: true` properties are secret)."""

    name: Annotated[str, Field(max_length=128, pattern=TYPE_NAME_PATTERN)] | None = None
    description: str = ""
    schema_: JsonObject = Field(alias="schema")


class ResourceType(KubemillResource):
    """A ResourceType resource (its Windmill name is `spec.name`, or `metadata.name` when unset)."""

    kind: Literal["ResourceType"]
    spec: ResourceTypeSpec
    status: DefinitionStatus | None = None


BOTH_VALUE_AND_SECRET = "a field is set both in spec.value and in spec.valueFrom; keep only one"  # noqa: S105


class ResourceSpec(KubemillModel):
    """A resource: a value of `resourceType`; secret fields come from Secrets (`valueFrom.<field>`)."""

    # No CEL twin: the API server's CEL cannot see inside an open JSON object, so the operator reports it.
    path: WindmillPath
    resource_type: Annotated[str, Field(min_length=1, max_length=128)]
    description: str = ""
    value: JsonObject = Field(default_factory=dict)
    value_from: Annotated[dict[str, SecretValueSource], Field(max_length=64)] | None = None

    @model_validator(mode="after")
    def _no_field_twice(self) -> ResourceSpec:
        if self.value_from and set(self.value_from) & set(self.value):
            raise ValueError(BOTH_VALUE_AND_SECRET)
        return self


class Resource(KubemillResource):
    """A Resource resource."""

    kind: Literal["Resource"]
    spec: ResourceSpec
    status: DefinitionStatus | None = None


EXACTLY_ONE_VALUE = "set exactly one of spec.value or spec.valueFrom (a Secret key)"


class VariableSpec(KubemillModel):
    """A variable: a string, inline or from a Secret key; `isSecret` keeps it out of logs."""

    model_config = ConfigDict(
        json_schema_extra=validations(rule("has(self.value) != has(self.valueFrom)", EXACTLY_ONE_VALUE))
    )

    path: WindmillPath
    value: str | None = None
    value_from: SecretValueSource | None = None
    is_secret: bool = False
    description: str = ""

    @model_validator(mode="after")
    def _one_value(self) -> VariableSpec:
        exactly_one({"value": self.value, "valueFrom": self.value_from}, EXACTLY_ONE_VALUE)
        return self


class Variable(KubemillResource):
    """A Variable resource."""

    kind: Literal["Variable"]
    spec: VariableSpec
    status: DefinitionStatus | None = None
