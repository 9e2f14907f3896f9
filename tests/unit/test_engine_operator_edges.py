"""The pure edges around the engine in the operator: child run manifests, large results, observations of
children, who may decide (the admission's checks are in test_approvals_identity.py), which step a resume URL
resumes."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import kopf
import pytest
from kubemill.engine import CreateRun, RawScriptSource
from kubemill.k8s.flowruns import (
    PARENT_UID_LABEL,
    RESULT_INLINE_LIMIT,
    child_run_manifest,
    observe_children,
    offload_result,
)
from kubemill.models.flows import FlowRun, FlowRunStatus
from kubemill.models.openflow import OpenFlow
from kubemill.operator.approvals import decide_request
from kubemill.operator.resume_urls import approval_after

KEY = b"k" * 32
PARENT = FlowRun.model_validate(
    {
        "apiVersion": "kubemill.dev/v1alpha1",
        "kind": "FlowRun",
        "metadata": {"name": "order-7", "namespace": "shop", "uid": "u-1"},
        "spec": {"flowPath": "f/shop/order"},
    }
)


def test_a_child_run_is_owned_labelled_and_names_its_step() -> None:
    script = CreateRun(
        kind="ScriptRun", name="order-7-a-1", step="loop/2/a", script_path="f/x/a", args={"n": 1}
    )
    manifest = child_run_manifest(script, PARENT, {"kubemill.dev/requested-by": "{}"})
    assert manifest["metadata"]["labels"] == {PARENT_UID_LABEL: "u-1"}
    assert manifest["metadata"]["ownerReferences"][0] | {"uid": "u-1"} == {
        "apiVersion": "kubemill.dev/v1alpha1",
        "kind": "FlowRun",
        "name": "order-7",
        "uid": "u-1",
        "controller": True,
        "blockOwnerDeletion": True,
    }
    assert manifest["spec"] == {
        "args": {"n": 1},
        "flowRun": "order-7",
        "stepId": "loop/2/a",
        "scriptPath": "f/x/a",
        "flowUserStates": {},
    }
    assert manifest["metadata"]["annotations"]["kubemill.dev/requested-by"] == "{}"
    raw = CreateRun(
        kind="ScriptRun",
        name="r",
        step="b",
        script=RawScriptSource(language="bash", content="echo"),
        timeout_seconds=2.5,
    )
    assert child_run_manifest(raw, PARENT)["spec"]["script"] == {"language": "bash", "content": "echo"}
    assert child_run_manifest(raw, PARENT)["spec"]["timeoutSeconds"] == 2
    sub = CreateRun(kind="FlowRun", name="s", step="c", flow_path="f/x/sub")
    assert child_run_manifest(sub, PARENT)["spec"]["flowPath"] == "f/x/sub"


def test_a_result_over_16_kib_moves_to_a_config_map() -> None:
    small = FlowRunStatus(phase="Succeeded", result=["x" * 100])
    assert offload_result(small, PARENT) == (small, None)
    large = FlowRunStatus(phase="Succeeded", result=["x" * RESULT_INLINE_LIMIT])
    status, config_map = offload_result(large, PARENT)
    assert config_map is not None and status.result is None and status.result_ref is not None
    assert status.result_ref.name == config_map["metadata"]["name"] == "order-7-result"
    assert json.loads(config_map["data"]["result.json"]) == large.result


def test_children_are_observed_with_offloaded_results_and_early_deletion_as_cancelled() -> None:
    def child(name: str, status: dict[str, Any], deleting: bool = False) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": name}
        if deleting:
            meta["deletionTimestamp"] = "2025-01-01T00:00:00Z"
        return {"metadata": meta, "status": status}

    reads: list[tuple[str, str]] = []

    def read(name: str, key: str) -> Any:
        reads.append((name, key))
        return {"big": True}

    observed = observe_children(
        [
            child("a", {"phase": "Succeeded", "resultRef": {"name": "a-result", "key": "result.json"}}),
            child("b", {"phase": "Running"}, deleting=True),
            child("c", {"phase": "Failed", "error": {"name": "ValueError", "message": "no"}}),
            child("d", {}),
        ],
        read,
    )
    assert observed["a"].result == {"big": True} and reads == [("a-result", "result.json")]
    assert observed["b"].phase == "Cancelled" and observed["b"].error is not None
    assert observed["c"].error is not None and observed["c"].error.message == "no"
    assert observed["d"].phase == "Pending"


def suspended(approvers: list[str], **annotations: str) -> dict[str, Any]:
    return {
        "metadata": {"name": "order-7", "uid": "u-1", "annotations": annotations},
        "status": {
            "pendingApprovals": [{"step": "each/1/sign", "approvers": approvers, "requiredEvents": 1}]
        },
    }


NOW = datetime(2025, 1, 1, tzinfo=UTC)


def ann(body: dict[str, Any]) -> dict[str, str]:
    annotations: dict[str, str] = body["metadata"]["annotations"]
    return annotations


@pytest.mark.parametrize(
    ("approvers", "user", "groups", "allowed"),
    [
        (["alice@example.com", "group:managers"], "alice@example.com", [], True),
        (["alice@example.com", "group:managers"], "bob@example.com", ["managers"], True),
        (["alice@example.com", "group:managers"], "mallory@example.com", ["kubemill-users"], False),
        ([], "anyone@example.com", [], True),
    ],
)
def test_who_may_approve(approvers: list[str], user: str, groups: list[str], allowed: bool) -> None:
    body = suspended(approvers, **{"kubemill.dev/approve": "sign"})
    if allowed:
        key, decision = decide_request(ann(body), body, {"username": user, "groups": groups}, NOW)
        assert decision["step"] == "each/1/sign" and decision["user"] == user
        assert key.startswith("approval.kubemill.dev/")
    else:
        with pytest.raises(kopf.AdmissionError, match=f"{user} may not approve step each/1/sign"):
            decide_request(ann(body), body, {"username": user, "groups": groups}, NOW)


def test_requests_that_cannot_be_decided_say_why() -> None:
    user = {"username": "alice@example.com"}
    with pytest.raises(kopf.AdmissionError, match="step 'other' is not waiting for approval"):
        decide_request({"kubemill.dev/approve": "other"}, suspended([]), user, NOW)
    with pytest.raises(kopf.AdmissionError, match="must be JSON"):  # noqa: PT012
        bad = {"kubemill.dev/approve": "sign", "kubemill.dev/payload": "{"}
        decide_request(bad, suspended([]), user, NOW)
    both = {"kubemill.dev/approve": "sign", "kubemill.dev/reject": "sign"}
    with pytest.raises(kopf.AdmissionError, match="set only one"):
        decide_request(both, suspended([]), user, NOW)


def test_the_step_before_an_approval_gets_its_urls() -> None:
    flow = OpenFlow.model_validate(
        {
            "value": {
                "modules": [
                    {"id": "a", "value": {"type": "identity"}},
                    {
                        "id": "each",
                        "value": {
                            "type": "forloopflow",
                            "iterator": {"type": "javascript", "expr": "[1]"},
                            "modules": [
                                {"id": "notify", "value": {"type": "identity"}},
                                {"id": "sign", "value": {"type": "approval", "approvers": ["a@b.c"]}},
                            ],
                        },
                    },
                    {"id": "held", "value": {"type": "identity"}, "suspend": {"required_events": 1}},
                ]
            }
        }
    )
    assert approval_after(flow, "each/3/notify") == "each/3/sign"
    assert approval_after(flow, "held") == "held"
    assert approval_after(flow, "a") is None
