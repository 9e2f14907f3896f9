"""The admission policy that narrows a RunnerPool worker's Job patches to the claim protocol of its own pool.

A pool's Role lets its ServiceAccount patch the Jobs of its namespace (k8s/pools.py): RBAC cannot name "the
Jobs offered to this pool". This ValidatingAdmissionPolicy (CEL, admissionregistration.k8s.io/v1) does: a
request by a pool worker's ServiceAccount (`system:serviceaccount:<namespace>:<pool>-worker-<hash>`,
`worker_account`) on a Job is admitted only when it

- is an update (patch) of the Job itself: never a create, a delete or a subresource;
- touches a Job whose pod template the operator labelled with this very account (`OFFERED_TO_ACCOUNT`, written
  when it offers the Job; a Job's template is fixed once the Job has started, and this policy keeps the worker
  from changing it while the Job is suspended);
- moves the claim as the protocol does (`offered -> claimed`, `claimed -> claimed | done | offered`);
- changes nothing but the protocol's annotations (`PROTOCOL`): the spec, the labels, the finalizers, the owner
  references and every other annotation stay as they were.

`admission_policy_yaml()` is config/admission/pool-jobs-policy.yaml (a unit test compares); the chart ships a
copy (charts/kubemill/sync-files). docs/security.md says what the pool's identity can do with it in force.
Pure.
"""

from __future__ import annotations

from typing import Any

import yaml

from kubemill.k8s.pools import CLAIMED_AT, OFFERED_TO_ACCOUNT, OUTCOME, RENEWED_AT, STATE, WORKER

POLICY_NAME = "kubemill-pool-jobs"
PROTOCOL = (STATE, WORKER, CLAIMED_AT, RENEWED_AT, OUTCOME)
"""The annotations a worker writes (claim, renew, hand back, report); the operator alone writes the others."""
WORKER_ACCOUNT = r"^system:serviceaccount:[^:]+:[a-z0-9-]+-worker-[0-9a-f]{8}$"
"""The usernames of pool workers' ServiceAccounts (`worker_account`: `<pool>-worker-<8 hex digits>`)."""
TRANSITIONS = {"offered": ("claimed",), "claimed": ("claimed", "done", "offered")}
"""The claim's moves a worker makes: claim; renew, report, hand back."""


def _cel(value: Any) -> str:
    """A CEL literal: strings single-quoted (the names above hold no quotes), lists bracketed."""
    if isinstance(value, str):
        assert "'" not in value and "\\" not in value  # noqa: PT018 - one fact
        return f"'{value}'"
    return "[" + ", ".join(_cel(v) for v in value) + "]"


def _or_empty(field: str, empty: str) -> str:
    return f"(has({field}) ? {field} : {empty})"


def admission_policy() -> list[dict[str, Any]]:
    """The ValidatingAdmissionPolicy and its binding. Validations are evaluated in order and the first that
    fails is the message the worker gets, so each later one may assume the earlier ones held."""
    protocol = _cel(PROTOCOL)
    transitions = " || ".join(
        f"(variables.oldState == '{old}' && variables.newState in {_cel(new)})"
        for old, new in TRANSITIONS.items()
    )
    variables = [
        {"name": "prefix", "expression": "'system:serviceaccount:' + request.namespace + ':'"},
        {
            "name": "account",
            "expression": "request.userInfo.username.startsWith(variables.prefix) ? "
            "request.userInfo.username.substring(size(variables.prefix)) : ''",
        },
        {
            "name": "offeredTo",
            "expression": "has(oldObject.spec.template.metadata) && "
            "has(oldObject.spec.template.metadata.labels) && "
            f"'{OFFERED_TO_ACCOUNT}' in oldObject.spec.template.metadata.labels ? "
            f"oldObject.spec.template.metadata.labels['{OFFERED_TO_ACCOUNT}'] : ''",
        },
        {"name": "oldNotes", "expression": _or_empty("oldObject.metadata.annotations", "{}")},
        {"name": "newNotes", "expression": _or_empty("object.metadata.annotations", "{}")},
        {
            "name": "oldState",
            "expression": f"'{STATE}' in variables.oldNotes ? variables.oldNotes['{STATE}'] : ''",
        },
        {
            "name": "newState",
            "expression": f"'{STATE}' in variables.newNotes ? variables.newNotes['{STATE}'] : ''",
        },
        {
            "name": "changedFields",
            "expression": "(object.spec == oldObject.spec ? [] : ['spec']) + ("
            + _or_empty("object.metadata.labels", "{}")
            + " == "
            + _or_empty("oldObject.metadata.labels", "{}")
            + " ? [] : ['metadata.labels']) + ("
            + _or_empty("object.metadata.finalizers", "[]")
            + " == "
            + _or_empty("oldObject.metadata.finalizers", "[]")
            + " ? [] : ['metadata.finalizers']) + ("
            + _or_empty("object.metadata.ownerReferences", "[]")
            + " == "
            + _or_empty("oldObject.metadata.ownerReferences", "[]")
            + " ? [] : ['metadata.ownerReferences'])",
        },
        {
            "name": "changedNotes",
            "expression": f"variables.newNotes.filter(k, !(k in {protocol}) && "
            "(!(k in variables.oldNotes) || variables.oldNotes[k] != variables.newNotes[k])) + "
            f"variables.oldNotes.filter(k, !(k in {protocol}) && !(k in variables.newNotes))",
        },
    ]
    who = "'a RunnerPool worker (' + variables.account + ') '"
    validations = [
        {
            "expression": "request.operation == 'UPDATE'",
            "messageExpression": who + " + 'may not ' + request.operation.lowerAscii() + ' Jobs: it may only "
            "patch the claim annotations of the Jobs offered to its pool'",
            "reason": "Forbidden",
        },
        {
            "expression": "!has(request.subResource) || request.subResource == ''",
            "messageExpression": who + " + 'may not write the ' + request.subResource + ' of a Job: it may "
            "only patch the claim annotations of the Jobs offered to its pool'",
            "reason": "Forbidden",
        },
        {
            "expression": "variables.account != '' && variables.offeredTo == variables.account",
            "messageExpression": who + " + 'may patch only the Jobs offered to its pool: Job ' + "
            f"oldObject.metadata.name + ' is ' + (variables.offeredTo == '' ? 'offered to no pool' : "
            "'offered to ' + variables.offeredTo) + ' (its pod template label "
            f"{OFFERED_TO_ACCOUNT})'",
            "reason": "Forbidden",
        },
        {
            "expression": "size(variables.changedFields) == 0",
            "messageExpression": who + " + 'may change only the claim annotations of a Job, not its ' + "
            "variables.changedFields.join(', ') + ' (Job ' + oldObject.metadata.name + ')'",
            "reason": "Forbidden",
        },
        {
            "expression": "size(variables.changedNotes) == 0",
            "messageExpression": who
            + " + 'may set only the claim annotations "
            + ", ".join(PROTOCOL)
            + " of a Job, not ' + variables.changedNotes.join(', ') + ' (Job ' + oldObject.metadata.name "
            "+ ')'",
            "reason": "Forbidden",
        },
        {
            "expression": transitions,
            "messageExpression": who + f" + 'may move {STATE} only from offered to claimed, or from claimed "
            "to claimed, done or offered; not from ' + (variables.oldState == '' ? '(none)' : "
            "variables.oldState) + ' to ' + (variables.newState == '' ? '(none)' : variables.newState) + "
            "' (Job ' + oldObject.metadata.name + ')'",
            "reason": "Forbidden",
        },
    ]
    labels = {"app.kubernetes.io/part-of": "kubemill"}
    admission = "admissionregistration.k8s.io/v1"
    return [
        {
            "apiVersion": admission,
            "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": POLICY_NAME, "labels": labels},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {
                    "resourceRules": [
                        {
                            "apiGroups": ["batch"],
                            "apiVersions": ["*"],
                            "resources": ["jobs", "jobs/status"],
                            "operations": ["CREATE", "UPDATE", "DELETE"],
                        }
                    ]
                },
                "matchConditions": [
                    {
                        "name": "a-runnerpool-worker",
                        "expression": f"request.userInfo.username.matches('{WORKER_ACCOUNT}')",
                    }
                ],
                "variables": variables,
                "validations": validations,
            },
        },
        {
            "apiVersion": admission,
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": POLICY_NAME, "labels": labels},
            "spec": {"policyName": POLICY_NAME, "validationActions": ["Deny"]},
        },
    ]


def admission_policy_yaml() -> str:
    header = (
        "# Generated by kubemill.k8s.pool_admission.admission_policy_yaml(); do not edit (a test compares).\n"
        "# Narrows what a RunnerPool worker's ServiceAccount may do to Jobs: patch the claim annotations\n"
        "# of the Jobs offered to its own pool, nothing else (docs/security.md).\n"
    )
    return header + yaml.safe_dump_all(admission_policy(), sort_keys=False, width=1000)
