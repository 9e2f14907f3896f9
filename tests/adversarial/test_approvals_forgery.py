"""Approving in someone else's name, as a run-only user would try it (issue 12's findings and variants).

mallory may create and update FlowRuns and read what `view` reads. Each test is an attack that succeeded on
the first version of kubemill; now the admission checks refuse it with a message that says why, and
nothing is recorded. The pure checks behind them are unit-tested in tests/unit/test_approvals_identity.py.
"""

from __future__ import annotations

import base64
import json
import ssl
import urllib.request
import uuid
from typing import Any

import pytest

from tests.adversarial.conftest import apply_as, as_user, flowrun
from tests.conftest import Cluster, wait_for
from tests.integration.test_approvals import MANAGERS, approval_flow, status, wait_phase
from tests.operator_harness import Operator

pytestmark = pytest.mark.cluster
PATH = "f/approvals/pay"
STEP = "manager_approval"


def waiting(
    cluster: Cluster, namespace: str, name: str, args: dict[str, Any] | None = None, user: str = "bob"
) -> dict[str, Any]:
    """A run of the approval flow, created by `user`, once it waits."""
    proc = apply_as(cluster, user, flowrun(namespace, name, PATH, args))
    assert proc.returncode == 0, proc.stderr
    return wait_phase(cluster, namespace, name, "Suspended")


def install(cluster: Cluster, namespace: str, approval: dict[str, Any] | None = None) -> None:
    cluster.apply(approval_flow(namespace, PATH, approval or MANAGERS))


def decisions(cluster: Cluster, namespace: str, name: str) -> dict[str, str]:
    annotations = cluster.get("flowrun", name, "-n", namespace)["metadata"].get("annotations") or {}
    return {k: v for k, v in annotations.items() if k.startswith("approval.kubemill.dev/")}


def alice_approves(cluster: Cluster, namespace: str, name: str, *extra: str) -> None:
    proc = as_user(
        cluster,
        "alice",
        "annotate",
        f"flowrun/{name}",
        "-n",
        namespace,
        f"kubemill.dev/approve={STEP}",
        *extra,
    )
    assert proc.returncode == 0, proc.stderr


def test_a_decision_copied_into_a_new_run_never_approves_it(
    cluster: Cluster, run_only: str, running_operator: Operator
) -> None:
    ns = run_only
    install(cluster, ns)
    waiting(cluster, ns, "small", {"amount": 100})
    alice_approves(cluster, ns, "small")
    wait_phase(cluster, ns, "small", "Succeeded")
    (copied,) = decisions(cluster, ns, "small").items()
    uid = cluster.get("flowrun", "small", "-n", ns)["metadata"]["uid"]
    forged = json.loads(copied[1]) | {"uid": uid}

    # at CREATE, with the decision (and the old run's uid) in it
    made = apply_as(
        cluster,
        "mallory",
        flowrun(ns, "big", PATH, {"amount": 999999}, annotations={copied[0]: json.dumps(forged)}),
    )
    assert made.returncode != 0
    assert "a FlowRun cannot be created with approval decisions" in made.stderr
    assert as_user(cluster, "mallory", "get", "flowrun", "big", "-n", ns).returncode != 0  # nothing stored

    # on a waiting run: merge patch, JSON patch, server-side apply
    waiting(cluster, ns, "big", {"amount": 999999}, user="mallory")
    value = copied[1]
    attempts = [
        ("annotate", "flowrun/big", "-n", ns, f"{copied[0]}={value}"),
        (
            "patch",
            "flowrun",
            "big",
            "-n",
            ns,
            "--type=merge",
            "-p",
            json.dumps({"metadata": {"annotations": {copied[0]: value}}}),
        ),
        (
            "patch",
            "flowrun",
            "big",
            "-n",
            ns,
            "--type=json",
            "-p",
            json.dumps(
                [
                    {
                        "op": "add",
                        "path": "/metadata/annotations/" + copied[0].replace("/", "~1"),
                        "value": value,
                    }
                ]
            ),
        ),
    ]
    for args in attempts:
        proc = as_user(cluster, "mallory", *args)
        assert proc.returncode != 0, args
        assert "names alice@example.com, not the requester mallory@example.com" in proc.stderr, proc.stderr
    ssa = flowrun(ns, "big", PATH, {"amount": 999999}, annotations={copied[0]: value})
    proc = apply_as(cluster, "mallory", ssa, "--server-side", "--force-conflicts")
    assert proc.returncode != 0 and "not the requester" in proc.stderr, proc.stderr
    assert decisions(cluster, ns, "big") == {}
    assert status(cluster, ns, "big")["phase"] == "Suspended"

    # into a waiting run of another flow with a step of the same id
    other = approval_flow(ns, "f/approvals/refund", MANAGERS)
    cluster.apply(other)
    assert apply_as(cluster, "mallory", flowrun(ns, "refund", "f/approvals/refund")).returncode == 0
    wait_phase(cluster, ns, "refund", "Suspended")
    proc = as_user(cluster, "mallory", "annotate", "flowrun/refund", "-n", ns, f"{copied[0]}={value}")
    assert proc.returncode != 0 and "not the requester" in proc.stderr, proc.stderr
    assert decisions(cluster, ns, "refund") == {}
    assert status(cluster, ns, "refund")["phase"] == "Suspended"


def webhook_url(cluster: Cluster, name: str) -> str:
    kind = "mutatingwebhookconfiguration" if name == "approve" else "validatingwebhookconfiguration"
    config = cluster.get(kind, "kubemill-approvals")
    hook = next(w for w in config["webhooks"] if w["name"] == f"{name}.kubemill.dev")
    url: str = hook["clientConfig"]["url"]
    return url


def review(url: str, request: dict[str, Any]) -> dict[str, Any]:
    """POST an AdmissionReview straight to the webhook, as any pod that can reach it could."""
    body = json.dumps(
        {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}
    ).encode()
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10, context=context) as response:
        found: dict[str, Any] = json.loads(response.read())["response"]
        return found


def test_a_forged_admission_review_yields_nothing_that_can_be_stored(
    cluster: Cluster, run_only: str, running_operator: Operator
) -> None:
    ns = run_only
    install(cluster, ns)
    waiting(cluster, ns, "target", {"amount": 5}, user="mallory")
    stored = cluster.get("flowrun", "target", "-n", ns)
    claimed = {"username": "alice@example.com", "groups": ["managers", "kubemill-users"]}
    asking = json.loads(json.dumps(stored))
    asking["metadata"].setdefault("annotations", {})["kubemill.dev/approve"] = STEP
    request = {
        "uid": str(uuid.uuid4()),
        "kind": {"group": "kubemill.dev", "version": "v1alpha1", "kind": "FlowRun"},
        "resource": {"group": "kubemill.dev", "version": "v1alpha1", "resource": "flowruns"},
        "name": "target",
        "namespace": ns,
        "operation": "UPDATE",
        "userInfo": claimed,
        "object": asking,
        "oldObject": stored,
        "dryRun": False,
    }
    answer = review(webhook_url(cluster, "approve"), request)
    patch = json.loads(base64.b64decode(answer["patch"]))
    made = next(
        op for op in patch if "approval.kubemill.dev" in op["path"] or op["path"] == "/metadata/annotations"
    )
    value = made["value"]
    annotations = (
        value if isinstance(value, dict) else {made["path"].rsplit("/", 1)[-1].replace("~1", "/"): value}
    )
    key, decision = next((k, v) for k, v in annotations.items() if k.startswith("approval.kubemill.dev/"))
    # the reply carries what alice's decision would look like, but nothing in it makes it alice's
    proc = as_user(cluster, "mallory", "annotate", "flowrun/target", "-n", ns, f"{key}={decision}")
    assert proc.returncode != 0
    assert "names alice@example.com, not the requester mallory@example.com" in proc.stderr
    assert decisions(cluster, ns, "target") == {} and status(cluster, ns, "target")["phase"] == "Suspended"


def test_a_payload_set_before_the_approval_is_not_the_approvers(
    cluster: Cluster, run_only: str, running_operator: Operator
) -> None:
    ns = run_only
    install(cluster, ns)
    waiting(cluster, ns, "pay", {"amount": 100})
    tampered = as_user(
        cluster, "mallory", "annotate", "flowrun/pay", "-n", ns, 'kubemill.dev/payload={"iban": "mallory"}'
    )
    assert tampered.returncode != 0
    assert "set it together with kubemill.dev/approve" in tampered.stderr
    args = as_user(
        cluster,
        "mallory",
        "patch",
        "flowrun",
        "pay",
        "-n",
        ns,
        "--type=merge",
        "-p",
        '{"spec": {"args": {"amount": 1000000}}}',
    )
    assert args.returncode != 0
    assert "a run's spec is fixed when it is created" in args.stderr
    alice_approves(cluster, ns, "pay", 'kubemill.dev/payload={"iban": "alice"}')
    done = wait_phase(cluster, ns, "pay", "Succeeded")
    assert done["steps"][STEP]["result"] == {"iban": "alice"}
    assert cluster.get("flowrun", "pay", "-n", ns)["spec"]["args"] == {"amount": 100}


def test_an_old_decision_resubmitted_after_a_reject_does_nothing(
    cluster: Cluster, run_only: str, running_operator: Operator
) -> None:
    ns = run_only
    install(cluster, ns)
    waiting(cluster, ns, "twice")
    rejected = as_user(cluster, "alice", "annotate", "flowrun/twice", "-n", ns, f"kubemill.dev/reject={STEP}")
    assert rejected.returncode == 0, rejected.stderr
    wait_phase(cluster, ns, "twice", "Failed")
    again = as_user(
        cluster, "alice", "annotate", "--overwrite", "flowrun/twice", "-n", ns, f"kubemill.dev/approve={STEP}"
    )
    assert again.returncode != 0 and "is not waiting for approval" in again.stderr
    (key, value) = next(iter(decisions(cluster, ns, "twice").items()))
    flipped = json.loads(value) | {"decision": "approve"}
    proc = as_user(
        cluster,
        "mallory",
        "annotate",
        "--overwrite",
        "flowrun/twice",
        "-n",
        ns,
        f"{key}={json.dumps(flipped)}",
    )
    assert proc.returncode != 0 and "not the requester" in proc.stderr
    proc = as_user(cluster, "mallory", "annotate", "flowrun/twice", "-n", ns, f"{key}-")
    assert proc.returncode != 0 and "approval decisions cannot be removed" in proc.stderr


def test_a_decision_for_one_step_cannot_approve_another(
    cluster: Cluster, run_only: str, running_operator: Operator
) -> None:
    ns = run_only
    flow = approval_flow(ns, PATH, MANAGERS)
    modules = flow["spec"]["value"]["modules"]
    modules.insert(2, {"id": "second_approval", "value": {"type": "approval", **MANAGERS}})
    cluster.apply(flow)
    waiting(cluster, ns, "two-steps")
    alice_approves(cluster, ns, "two-steps")
    wait_for(
        lambda: status(cluster, ns, "two-steps").get("currentStep") == "second_approval",
        30,
        "the second approval",
    )
    ((key, value),) = decisions(cluster, ns, "two-steps").items()
    moved = json.loads(value) | {"step": "second_approval"}
    for user in ("mallory", "alice"):  # not even alice may write a decision herself under another key
        proc = as_user(
            cluster,
            user,
            "annotate",
            "--overwrite",
            "flowrun/two-steps",
            "-n",
            ns,
            f"{key}={json.dumps(moved)}",
        )
        assert proc.returncode != 0, proc.stderr
    assert status(cluster, ns, "two-steps")["phase"] == "Suspended"


def test_self_approval_disabled_holds_against_the_requester(
    cluster: Cluster, run_only: str, running_operator: Operator
) -> None:
    ns = run_only
    install(
        cluster, ns, {"approvers": ["group:kubemill-users"], "self_approval_disabled": True, "timeout": 3600}
    )
    waiting(cluster, ns, "mine", user="mallory")
    requested = cluster.get("flowrun", "mine", "-n", ns)["metadata"]["annotations"][
        "kubemill.dev/requested-by"
    ]
    assert json.loads(requested)["user"] == "mallory@example.com"
    proc = as_user(cluster, "mallory", "annotate", "flowrun/mine", "-n", ns, f"kubemill.dev/approve={STEP}")
    assert proc.returncode != 0
    assert (
        "mallory@example.com started flowrun mine; step manager_approval disallows self-approval"
        in proc.stderr
    )
    forged = as_user(
        cluster,
        "mallory",
        "annotate",
        "--overwrite",
        "flowrun/mine",
        "-n",
        ns,
        'kubemill.dev/requested-by={"user":"bob@example.com","groups":[]}',
    )
    assert forged.returncode != 0 and "cannot change" in forged.stderr
    proc = as_user(cluster, "bob", "annotate", "flowrun/mine", "-n", ns, f"kubemill.dev/approve={STEP}")
    assert proc.returncode == 0, proc.stderr
    assert wait_phase(cluster, ns, "mine", "Succeeded")["approvals"][0]["user"] == "bob@example.com"


def test_a_requester_cannot_be_claimed_at_create(
    cluster: Cluster, run_only: str, running_operator: Operator
) -> None:
    ns = run_only
    install(cluster, ns)
    claimed = {"kubemill.dev/requested-by": json.dumps({"user": "bob@example.com", "groups": []})}
    proc = apply_as(cluster, "mallory", flowrun(ns, "claimed", PATH, annotations=claimed))
    assert proc.returncode == 0, proc.stderr  # created, but as hers: the stamp is the API server's view
    stored = cluster.get("flowrun", "claimed", "-n", ns)["metadata"]["annotations"][
        "kubemill.dev/requested-by"
    ]
    assert json.loads(stored) == {
        "user": "mallory@example.com",
        "groups": ["kubemill-users", "system:authenticated"],
    }
    running_operator.kill()  # with the webhooks down, a claim is refused, never stored
    try:
        proc = apply_as(cluster, "mallory", flowrun(ns, "claimed-2", PATH, annotations=claimed))
        assert proc.returncode != 0 and 'failed calling webhook "decisions.kubemill.dev"' in proc.stderr
        plain = apply_as(cluster, "mallory", flowrun(ns, "plain", PATH))  # a plain run is created regardless
        assert plain.returncode == 0, plain.stderr
    finally:
        running_operator.start()
    annotations = cluster.get("flowrun", "plain", "-n", ns)["metadata"].get("annotations") or {}
    assert "kubemill.dev/requested-by" not in annotations


def test_the_flow_a_run_waits_in_is_the_flow_that_finishes_it(
    cluster: Cluster, run_only: str, running_operator: Operator
) -> None:
    ns = run_only
    install(cluster, ns)
    waiting(cluster, ns, "pinned")
    edited = approval_flow(ns, PATH, MANAGERS)
    edited["spec"]["value"]["modules"][2]["mock"]["return_value"] = {
        "done": "edited after approval was asked"
    }
    cluster.apply(edited)
    pin = status(cluster, ns, "pinned")["flow"]
    assert pin["snapshot"] == "pinned-flow" and len(pin["hash"]) == 64
    alice_approves(cluster, ns, "pinned")
    assert wait_phase(cluster, ns, "pinned", "Succeeded")["result"] == {"done": True}
    waiting(cluster, ns, "after-edit")  # a new run runs the Flow as it is now
    alice_approves(cluster, ns, "after-edit")
    assert wait_phase(cluster, ns, "after-edit", "Succeeded")["result"] == {
        "done": "edited after approval was asked"
    }
