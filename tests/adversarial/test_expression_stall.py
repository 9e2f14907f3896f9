"""A run-only user's input cannot stall the operator: a flow whose predicate is a backtracking regex over
the flow's input (a real ReDoS, the user picks the input) fails at the sandbox's hard limit, and while such
runs are stuck, other runs advance and approvals are decided."""

from __future__ import annotations

from typing import Any

import pytest

from tests.adversarial.conftest import apply_as, flowrun
from tests.adversarial.test_approvals_forgery import alice_approves, install, waiting
from tests.conftest import Cluster
from tests.integration.test_approvals import wait_phase
from tests.operator_harness import Operator

pytestmark = pytest.mark.cluster
REDOS = "f/stall/check_name"


def redos_flow(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "kubemill.dev/v1alpha1",
        "kind": "Flow",
        "metadata": {"name": "check-name", "namespace": namespace},
        "spec": {
            "path": REDOS,
            "summary": "validates a name with a regex that backtracks",
            "value": {
                "modules": [
                    {
                        "id": "check",
                        "value": {
                            "type": "branchone",
                            "branches": [
                                {
                                    "expr": "/^([a-z]+)+$/.test(flow_input.name)",
                                    "modules": [{"id": "ok", "value": {"type": "identity"}}],
                                }
                            ],
                            "default": [],
                        },
                    }
                ]
            },
        },
    }


def test_a_backtracking_regex_in_a_flow_fails_alone_and_approvals_still_pass(
    cluster: Cluster, run_only: str, running_operator: Operator
) -> None:
    ns = run_only
    install(cluster, ns)
    cluster.apply(redos_flow(ns))
    ok = apply_as(cluster, "mallory", flowrun(ns, "fine", REDOS, {"name": "alice"}))
    assert ok.returncode == 0, ok.stderr
    assert wait_phase(cluster, ns, "fine", "Succeeded")["phase"] == "Succeeded"

    waiting(cluster, ns, "pay", {"amount": 100})
    evil = {"name": "a" * 40 + "!"}
    for i in range(6):
        made = apply_as(cluster, "mallory", flowrun(ns, f"stall-{i}", REDOS, evil))
        assert made.returncode == 0, made.stderr

    # admission answers while the regexes spin (a stalled webhook would time the annotate out: Fail policy)
    alice_approves(cluster, ns, "pay")
    assert wait_phase(cluster, ns, "pay", "Succeeded", timeout=60)["phase"] == "Succeeded"
    for i in range(6):
        failed = wait_phase(cluster, ns, f"stall-{i}", "Failed", timeout=90)
        assert failed["error"]["name"] == "ExpressionTimeout", failed["error"]
        assert "hard limit" in failed["error"]["message"], failed["error"]
