"""Resource types: the built-in ones, which fields are secret, and checking a Resource against its type.

The YAML files beside this module are ResourceType manifests for common services (postgresql, mysql, s3,
smtp, slack_webhook, http_bearer). The operator falls back to them when a namespace defines no ResourceType
of that name; `kubectl apply -f` works on them too. A property with `password: true` is secret: its value
must come from a Kubernetes Secret (`spec.valueFrom.<field>.secretKeyRef`) or a Variable (`$var:<path>`),
never from `spec.value` in clear (`check_resource` says how to fix it). The same rule is enforced at
admission by the ValidatingAdmissionPolicies `admission_policies()` generates (config/admission/). Pure.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from kubemill.models.resources import ResourceSpec, ResourceType

HERE = Path(__file__).parent
PLACEHOLDER = "<from a Secret>"
POLICY_NAME = "kubemill-resource-secrets"


@cache
def builtin_types() -> dict[str, ResourceType]:
    """The built-in ResourceTypes by their Windmill name."""
    types = (ResourceType.model_validate(yaml.safe_load(p.read_text())) for p in sorted(HERE.glob("*.yaml")))
    return {type_name(t): t for t in types}


def type_name(resource_type: ResourceType) -> str:
    """The Windmill name of a type: `spec.name`, else `metadata.name`."""
    return resource_type.spec.name or resource_type.metadata.name or ""


def secret_fields(schema: Mapping[str, Any]) -> frozenset[str]:
    """Top-level properties marked `password: true`."""
    properties = schema.get("properties")
    if not isinstance(properties, Mapping):
        return frozenset()
    return frozenset(k for k, v in properties.items() if isinstance(v, Mapping) and v.get("password") is True)


def find_type(name: str, namespace_types: Mapping[str, ResourceType]) -> ResourceType | None:
    """The namespace's ResourceType of that name, else the built-in one."""
    return namespace_types.get(name) or builtin_types().get(name)


def plaintext_secret_message(field: str, type_label: str, resource: str = "<name>") -> str:
    return (
        f"field {field!r} of a {type_label} resource is secret and must not be written in spec.value: "
        f"put it in a Secret (kubectl create secret generic {resource} --from-literal={field}=...) and set "
        f"spec.valueFrom.{field}.secretKeyRef: {{name: {resource}, key: {field}}}, "
        f"or reference a secret Variable with '$var:<path>'"
    )


def check_resource(spec: ResourceSpec, resource_type: ResourceType, resource: str = "<name>") -> list[str]:
    """What is wrong with a Resource for its type (empty: nothing). Never quotes a secret value."""
    schema = resource_type.spec.schema_
    secret = secret_fields(schema)
    problems = [
        plaintext_secret_message(field, type_name(resource_type), resource)
        for field in sorted(secret)
        if field in spec.value and not _is_reference(spec.value[field])
    ]
    if problems:
        return problems
    value: dict[str, Any] = {k: v for k, v in spec.value.items()}
    for field in spec.value_from or {}:
        value[field] = PLACEHOLDER
    for field, item in value.items():
        if _is_reference(item):
            value[field] = _placeholder_for(schema, field)
    validator = jsonschema.Draft202012Validator(dict(schema), format_checker=None)
    for error in sorted(validator.iter_errors(value), key=lambda e: list(e.path)):
        where = "/".join(str(p) for p in error.path) or "(value)"
        message = error.message if not (set(map(str, error.path)) & secret) else "does not match the type"
        problems.append(f"{where}: {message}")
    return problems


def _is_reference(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(("$var:", "$res:"))


def _placeholder_for(schema: Mapping[str, Any], field: str) -> Any:
    """A stand-in for a value known only at run time, of the type the schema wants (so it validates)."""
    wanted = ((schema.get("properties") or {}).get(field) or {}).get("type")
    return {"integer": 0, "number": 0, "boolean": False, "object": {}, "array": []}.get(
        str(wanted), PLACEHOLDER
    )


def check_schema(schema: Mapping[str, Any]) -> str | None:
    """None if `schema` is a valid JSON Schema, else why not."""
    try:
        jsonschema.Draft202012Validator.check_schema(dict(schema))
    except jsonschema.SchemaError as exc:
        return f"spec.schema is not a valid JSON Schema: {exc.message}"
    return None


# --- admission ----------------------------------------------------------------------------------------------

_VALUE = "object.spec.value"
_IS_REF = "(type({v}[f]) == string && ({v}[f].startsWith('$var:') || {v}[f].startsWith('$res:')))"


def _plaintext_fields(fields: str) -> str:
    """CEL: the secret fields (a CEL list expression) set in clear in spec.value."""
    ref = _IS_REF.format(v=_VALUE)
    return f"({fields}).filter(f, has(object.spec.value) && f in {_VALUE} && !{ref})"


def _message(fields: str, type_expr: str) -> str:
    return (
        f"'field ' + {_plaintext_fields(fields)}[0] + ' of a ' + {type_expr} + ' resource is secret and must "
        "not be written in spec.value: put it in a Secret (kubectl create secret generic ' + "
        "object.metadata.name + ' --from-literal=' + " + _plaintext_fields(fields) + "[0] + '=...) and set "
        "spec.valueFrom.' + " + _plaintext_fields(fields) + "[0] + '.secretKeyRef {name, key}, or reference "
        "a secret Variable with $var:<path>'"
    )


def admission_policies() -> list[dict[str, Any]]:
    """ValidatingAdmissionPolicies (and bindings) refusing plaintext secret fields in Resources: one for the
    built-in types (their secret fields written into the rule), one per namespace ResourceType (as params)."""
    builtin_checks = []
    for name, resource_type in sorted(builtin_types().items()):
        fields = json.dumps(sorted(secret_fields(resource_type.spec.schema_))).replace('"', "'")
        builtin_checks.append(
            {
                "expression": f"object.spec.resourceType != '{name}' || "
                f"size({_plaintext_fields(fields)}) == 0",
                "messageExpression": _message(fields, f"'{name}'"),
                "reason": "Invalid",
            }
        )
    own_fields = (
        "has(params.spec.schema.properties) ? params.spec.schema.properties.filter(k, "
        "type(params.spec.schema.properties[k]) == map && has(params.spec.schema.properties[k].password) && "
        "params.spec.schema.properties[k].password == true) : []"
    )
    own_name = "(has(params.spec.name) ? params.spec.name : params.metadata.name)"
    match = {
        "resourceRules": [
            {
                "apiGroups": ["kubemill.dev"],
                "apiVersions": ["v1alpha1"],
                "resources": ["resources"],
                "operations": ["CREATE", "UPDATE"],
            }
        ]
    }
    labels = {"app.kubernetes.io/part-of": "kubemill"}
    admission = "admissionregistration.k8s.io/v1"
    return [
        {
            "apiVersion": admission,
            "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": f"{POLICY_NAME}-builtin", "labels": labels},
            "spec": {"failurePolicy": "Fail", "matchConstraints": match, "validations": builtin_checks},
        },
        {
            "apiVersion": admission,
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": f"{POLICY_NAME}-builtin", "labels": labels},
            "spec": {"policyName": f"{POLICY_NAME}-builtin", "validationActions": ["Deny"]},
        },
        {
            "apiVersion": admission,
            "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": POLICY_NAME, "labels": labels},
            "spec": {
                "failurePolicy": "Fail",
                "paramKind": {"apiVersion": "kubemill.dev/v1alpha1", "kind": "ResourceType"},
                "matchConstraints": match,
                "validations": [
                    {
                        "expression": f"{own_name} != object.spec.resourceType || "
                        f"size({_plaintext_fields(own_fields)}) == 0",
                        "messageExpression": _message(own_fields, own_name),
                        "reason": "Invalid",
                    }
                ],
            },
        },
        {
            "apiVersion": admission,
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": POLICY_NAME, "labels": labels},
            "spec": {
                "policyName": POLICY_NAME,
                "validationActions": ["Deny"],
                "paramRef": {"selector": {}, "parameterNotFoundAction": "Allow"},
            },
        },
    ]


def admission_policies_yaml() -> str:
    header = (
        "# Generated by kubemill.resourcetypes.admission_policies_yaml(); do not edit (a test compares).\n"
        "# Refuses Resources that write a secret field (`password: true` in their type) in spec.value.\n"
    )
    return header + yaml.safe_dump_all(admission_policies(), sort_keys=False, width=1000)
