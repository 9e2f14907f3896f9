"""Resource types: built-ins, secret fields, checking a Resource against its type, the admission policy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kubemill.models.resources import ResourceSpec, ResourceType
from kubemill.resourcetypes import (
    admission_policies_yaml,
    builtin_types,
    check_resource,
    check_schema,
    find_type,
    secret_fields,
)

REPO = Path(__file__).resolve().parents[2]


def resource(value: dict[str, Any], secret: tuple[str, ...] = (), kind: str = "postgresql") -> ResourceSpec:
    value_from = {f: {"secretKeyRef": {"name": "pg", "key": f}} for f in secret}
    return ResourceSpec.model_validate(
        {"path": "u/admin/pg", "resourceType": kind, "value": value, "valueFrom": value_from or None}
    )


def test_builtin_types_and_their_secret_fields() -> None:
    types = builtin_types()
    assert set(types) == {"postgresql", "mysql", "s3", "smtp", "slack_webhook", "http_bearer"}
    assert {n: secret_fields(t.spec.schema_) for n, t in types.items()} == {
        "postgresql": {"password"},
        "mysql": {"password"},
        "s3": {"secretKey"},
        "smtp": {"password"},
        "slack_webhook": {"url"},
        "http_bearer": {"token"},
    }
    for resource_type in types.values():
        assert check_schema(resource_type.spec.schema_) is None


def test_a_namespace_type_overrides_a_builtin() -> None:
    own = ResourceType.model_validate(
        {
            "apiVersion": "kubemill.dev/v1alpha1",
            "kind": "ResourceType",
            "metadata": {"name": "postgresql"},
            "spec": {"schema": {"type": "object"}},
        }
    )
    assert find_type("postgresql", {"postgresql": own}) is own
    assert find_type("postgresql", {}) is builtin_types()["postgresql"]
    assert find_type("nope", {}) is None


PG = {"host": "db", "user": "app", "dbname": "w"}


def test_plaintext_password_is_refused_with_how_to_fix() -> None:
    [problem] = check_resource(resource({**PG, "password": "hunter22"}), builtin_types()["postgresql"], "pg")
    assert "hunter22" not in problem
    assert "spec.valueFrom.password.secretKeyRef" in problem
    assert "kubectl create secret generic pg --from-literal=password=" in problem


@pytest.mark.parametrize(
    "spec",
    [
        resource(PG, secret=("password",)),
        resource({**PG, "password": "$var:u/admin/pg_password"}),
        resource({**PG, "port": "$var:u/admin/port"}, secret=("password",)),
    ],
)
def test_secret_from_a_secret_or_a_variable_is_fine(spec: ResourceSpec) -> None:
    assert check_resource(spec, builtin_types()["postgresql"]) == []


def test_value_checked_against_the_schema() -> None:
    problems = check_resource(
        resource({"host": "db", "port": "x"}, secret=("password",)), builtin_types()["postgresql"]
    )
    assert "port: 'x' is not of type 'integer'" in problems
    assert any("'user' is a required property" in p for p in problems)


def test_check_schema_says_what_is_wrong() -> None:
    assert "not a valid JSON Schema" in (check_schema({"type": 5}) or "")


def test_admission_policy_file_is_current() -> None:
    path = REPO / "config" / "admission" / "resource-secrets-policy.yaml"
    assert path.read_text() == admission_policies_yaml(), (
        "regenerate config/admission/ from kubemill.resourcetypes"
    )
