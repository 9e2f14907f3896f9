"""The conformance cases marked `cluster: true`, as FlowRuns on the real control plane (steps as ScriptRuns
in runner pods), each agreeing with Windmill's expectation and with `kubemill run` on the same case."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conformance.cases import Case, check, load_cases, run_locally
from tests.conftest import Cluster, wait_for
from tests.operator_harness import Operator

pytestmark = pytest.mark.cluster

API = "kubemill.dev/v1alpha1"
CASES = [case for case in load_cases() if case.cluster]


def test_a_representative_subset_runs_on_the_cluster() -> None:
    assert len(CASES) >= 10


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_flowrun_conforms_and_agrees_with_kubemill_run(
    case: Case, cluster: Cluster, namespace: str, running_operator: Operator, tmp_path: Path
) -> None:
    name = case.name.replace("_", "-")
    path = f"f/conformance/{case.name}"
    cluster.apply(
        {
            "apiVersion": API,
            "kind": "Flow",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"path": path, **case.flow},
        }
    )
    cluster.apply(
        {
            "apiVersion": API,
            "kind": "FlowRun",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"flowPath": path, "args": case.args},
        }
    )

    def finished() -> dict[str, Any] | None:
        status: dict[str, Any] = cluster.get("flowrun", name, "-n", namespace).get("status") or {}
        return status if status.get("phase") in ("Succeeded", "Failed", "Cancelled") else None

    status = wait_for(finished, 240, f"flowrun {name} finished")
    exit_code = 0 if status["phase"] == "Succeeded" else 1
    result = status.get("result")
    assert check(case, exit_code, result) == [], json.dumps(status, indent=1)[-3000:]
    local = run_locally(case, tmp_path)
    assert (local.exit, without_stacks(local.result)) == (exit_code, without_stacks(result))


def without_stacks(value: Any) -> Any:
    """A result with errors' `stack` left out (file paths differ between a pod and this machine)."""
    if isinstance(value, dict):
        return {k: without_stacks(v) for k, v in value.items() if k != "stack"}
    if isinstance(value, list):
        return [without_stacks(v) for v in value]
    return value
