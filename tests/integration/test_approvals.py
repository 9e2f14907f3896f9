"""Approvals on the real control plane: `kubectl annotate` as alice, bob and mallory, checked by the
operator's admission webhook against the step's approvers, recorded in the FlowRun's ledger.

The flows here use only identity steps around the approval, so they need no runner: what is under test is
the webhook (who may decide, what they are told when they may not), the ledger and the engine's reaction.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.conftest import Cluster, wait_for
from tests.operator_harness import Operator

pytestmark = pytest.mark.cluster


def grant_users(cluster: Cluster, namespace: str) -> None:
    """alice, bob and mallory may edit kubemill objects here (the built-in `edit` role, aggregated)."""
    cluster.kubectl(
        "create", "rolebinding", "users-edit", "--clusterrole=edit", "--group=kubemill-users", "-n", namespace
    )


def approval_flow(namespace: str, path: str, approval: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "kubemill.dev/v1alpha1",
        "kind": "Flow",
        "metadata": {"name": path.rsplit("/", 1)[-1].replace("_", "-"), "namespace": namespace},
        "spec": {
            "path": path,
            "summary": "approval between two identity steps",
            "value": {
                "modules": [
                    {"id": "prepare", "value": {"type": "identity"}},
                    {"id": "manager_approval", "value": {"type": "approval", **approval}},
                    {
                        "id": "after",
                        "value": {
                            "type": "rawscript",
                            "language": "bash",
                            "content": "echo unused",
                        },
                        "mock": {"enabled": True, "return_value": {"done": True}},
                    },
                ]
            },
        },
    }


def start_run(
    cluster: Cluster, namespace: str, name: str, flow_path: str, args: dict[str, Any] | None = None
) -> None:
    cluster.apply(
        {
            "apiVersion": "kubemill.dev/v1alpha1",
            "kind": "FlowRun",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"flowPath": flow_path, "args": args or {}},
        }
    )


def status(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    found: dict[str, Any] = cluster.get("flowrun", name, "-n", namespace).get("status") or {}
    return found


def wait_phase(
    cluster: Cluster, namespace: str, name: str, phase: str, timeout: float = 60
) -> dict[str, Any]:
    """The run's status once it is in `phase`; fails at once (with the status) if it ends in another."""
    ended = {"Succeeded", "Failed", "Cancelled"} - {phase}
    found = wait_for(
        lambda: (s := status(cluster, namespace, name)).get("phase") in {phase, *ended} and s,
        timeout,
        f"flowrun {name} {phase}",
    )
    assert found["phase"] == phase, json.dumps(found, indent=1)
    return found


def annotate(cluster: Cluster, namespace: str, run: str, user: str, *pairs: str, check: bool = False) -> Any:
    return cluster.kubectl("annotate", f"flowrun/{run}", "-n", namespace, *pairs, user=user, check=check)


def metric(operator: Operator, name: str, **labels: str) -> float | None:
    """The value of the operator's `name` sample with these labels, None when it serves none."""
    for line in operator.metrics().splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


MANAGERS = {"approvers": ["alice@example.com", "group:managers"], "timeout": 3600}


def suspended_run(cluster: Cluster, namespace: str, run: str, approval: dict[str, Any]) -> dict[str, Any]:
    """Users granted, a flow with this approval step applied, a run of it started and waiting."""
    grant_users(cluster, namespace)
    cluster.apply(approval_flow(namespace, f"f/approvals/{run.replace('-', '_')}", approval))
    start_run(cluster, namespace, run, f"f/approvals/{run.replace('-', '_')}")
    return wait_phase(cluster, namespace, run, "Suspended")


def test_an_unlisted_user_is_refused_at_admission_and_a_listed_one_resumes_the_run(
    cluster: Cluster, namespace: str, running_operator: Operator
) -> None:
    waiting = suspended_run(cluster, namespace, "big-order", MANAGERS)
    assert waiting["currentStep"] == "manager_approval"
    assert [p["step"] for p in waiting["pendingApprovals"]] == ["manager_approval"]
    pending = {"namespace": namespace, "flow": "f/approvals/big_order"}
    oldest = "kubemill_pending_approval_oldest_timestamp_seconds"
    wait_for(lambda: metric(running_operator, "kubemill_pending_approvals", **pending) == 1, 10, "1 pending")
    since = metric(running_operator, oldest, namespace=namespace)
    assert since is not None and time.time() - 60 < since <= time.time(), since
    running_operator.kill()  # a new process rebuilds both gauges from the FlowRuns' statuses
    running_operator.start()
    wait_for(lambda: metric(running_operator, "kubemill_pending_approvals", **pending) == 1, 10, "1 again")
    assert metric(running_operator, oldest, namespace=namespace) == since

    refused = annotate(cluster, namespace, "big-order", "mallory", "kubemill.dev/approve=manager_approval")
    assert refused.returncode != 0
    assert (
        "mallory@example.com may not approve step manager_approval of flowrun big-order; "
        "approvers: alice@example.com, group:managers"
    ) in refused.stderr
    annotations = cluster.get("flowrun", "big-order", "-n", namespace)["metadata"].get("annotations") or {}
    assert not any(k.startswith(("kubemill.dev/approve", "approval.kubemill.dev/")) for k in annotations)

    payload = json.dumps({"note": "known customer"})
    annotate(
        cluster,
        namespace,
        "big-order",
        "alice",
        "kubemill.dev/approve=manager_approval",
        "kubemill.dev/comment=fine by me",
        f"kubemill.dev/payload={payload}",
        check=True,
    )
    done = wait_phase(cluster, namespace, "big-order", "Succeeded")
    assert done["result"] == {"done": True}
    assert done["steps"]["manager_approval"]["result"] == {"note": "known customer"}
    [entry] = done["approvals"]
    assert entry["user"] == "alice@example.com"
    assert "managers" in entry["groups"]
    assert (entry["step"], entry["decision"], entry["comment"]) == (
        "manager_approval",
        "approve",
        "fine by me",
    )
    assert "pendingApprovals" not in done
    wait_for(lambda: metric(running_operator, "kubemill_pending_approvals", **pending) == 0, 10, "0 pending")
    assert metric(running_operator, oldest, namespace=namespace) is None


def test_a_forged_decision_annotation_is_refused(
    cluster: Cluster, namespace: str, running_operator: Operator
) -> None:
    suspended_run(cluster, namespace, "forged", MANAGERS)
    forged = json.dumps(
        {"step": "manager_approval", "user": "alice@example.com", "decision": "approve", "at": "2025-01-01"}
    )
    refused = annotate(cluster, namespace, "forged", "mallory", f"approval.kubemill.dev/x={forged}")
    assert refused.returncode != 0
    assert (
        "is an approval decision; set kubemill.dev/approve or kubemill.dev/reject instead" in refused.stderr
    )


def test_two_required_approvals_need_two_distinct_people(
    cluster: Cluster, namespace: str, running_operator: Operator
) -> None:
    suspended_run(
        cluster,
        namespace,
        "two",
        {"approvers": ["alice@example.com", "bob@example.com"], "required_events": 2},
    )
    annotate(cluster, namespace, "two", "alice", "kubemill.dev/approve=manager_approval", check=True)
    wait_for(
        lambda: len(status(cluster, namespace, "two").get("approvals") or []) == 1, 30, "alice's approval"
    )
    annotate(cluster, namespace, "two", "alice", "kubemill.dev/approve=manager_approval", check=True)
    still = status(cluster, namespace, "two")
    assert still["phase"] == "Suspended", still
    annotate(cluster, namespace, "two", "bob", "kubemill.dev/approve=manager_approval", check=True)
    done = wait_phase(cluster, namespace, "two", "Succeeded")
    assert {e["user"] for e in done["approvals"]} == {"alice@example.com", "bob@example.com"}


def test_a_rejection_fails_the_run_with_the_comment(
    cluster: Cluster, namespace: str, running_operator: Operator
) -> None:
    suspended_run(cluster, namespace, "rejected", MANAGERS)
    annotate(
        cluster,
        namespace,
        "rejected",
        "alice",
        "kubemill.dev/reject=manager_approval",
        "kubemill.dev/comment=too expensive",
        check=True,
    )
    failed = wait_phase(cluster, namespace, "rejected", "Failed")
    assert failed["error"]["name"] == "ApprovalRejected"
    assert "rejected by alice@example.com: too expensive" in failed["error"]["message"]


def test_an_approval_times_out_or_continues(
    cluster: Cluster, namespace: str, running_operator: Operator
) -> None:
    cluster.apply(approval_flow(namespace, "f/approvals/timeout", {**MANAGERS, "timeout": 2}))
    cluster.apply(
        approval_flow(
            namespace,
            "f/approvals/continue",
            {**MANAGERS, "timeout": 2, "continue_on_disapprove_timeout": True},
        )
    )
    start_run(cluster, namespace, "late", "f/approvals/timeout")
    start_run(cluster, namespace, "lenient", "f/approvals/continue")
    failed = wait_phase(cluster, namespace, "late", "Failed", timeout=30)
    assert failed["error"]["name"] == "ApprovalTimeout"
    assert wait_phase(cluster, namespace, "lenient", "Succeeded", timeout=30)["result"] == {"done": True}


def test_only_requests_touching_approvals_reach_the_webhook(
    cluster: Cluster, namespace: str, running_operator: Operator
) -> None:
    suspended_run(cluster, namespace, "quiet", MANAGERS)
    running_operator.kill()  # the webhook is down and its failure policy is Fail
    try:
        annotate(cluster, namespace, "quiet", "alice", "team=payments", check=True)
        refused = annotate(cluster, namespace, "quiet", "alice", "kubemill.dev/approve=manager_approval")
        assert refused.returncode != 0
        assert 'failed calling webhook "approve.kubemill.dev"' in refused.stderr
    finally:
        running_operator.start()
    annotate(cluster, namespace, "quiet", "alice", "kubemill.dev/approve=manager_approval", check=True)
    assert wait_phase(cluster, namespace, "quiet", "Succeeded")["approvals"][0]["user"] == "alice@example.com"
