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


REFUSED = [case for case in load_cases() if "refused" in case.expect and case.expect.get("exit") == 2]
SAME_WORKER = next(case for case in load_cases() if case.flow["value"].get("same_worker"))


def ready_condition(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    def found() -> dict[str, Any] | None:
        conditions = (cluster.get("flow", name, "-n", namespace).get("status") or {}).get("conditions") or []
        return next((c for c in conditions if c["type"] == "Ready"), None)

    return wait_for(found, 60, f"flow {name} Ready condition")


@pytest.mark.parametrize("case", [*REFUSED, SAME_WORKER], ids=lambda c: c.name)
def test_a_flow_kubemill_cannot_honour_is_not_ready_and_the_message_names_the_field(
    case: Case, cluster: Cluster, namespace: str, running_operator: Operator
) -> None:
    name = case.name.replace("_", "-")
    spec = {"path": f"f/conformance/{case.name}", **case.flow}
    cluster.apply(
        {"apiVersion": API, "kind": "Flow", "metadata": {"name": name, "namespace": namespace}, "spec": spec}
    )
    ready = ready_condition(cluster, namespace, name)
    said = case.expect.get("refused") if case is not SAME_WORKER else "same_worker: steps of a FlowRun run"
    assert (ready["status"], ready["reason"]) == ("False", "InvalidFlow") and said in ready["message"], ready


def test_an_unquoted_yaml_boolean_key_is_refused_naming_step_key_and_parameters(
    cluster: Cluster, namespace: str, running_operator: Operator
) -> None:
    """Issue 14's new user: `input_transforms: {n: ...}` in a manifest reaches the API server as `false`."""
    cluster.apply(
        {
            "apiVersion": API,
            "kind": "Script",
            "metadata": {"name": "double", "namespace": namespace},
            "spec": {
                "path": "f/conformance/double",
                "language": "python3",
                "content": "def main(n: int):\n    return n * 2\n",
            },
        }
    )
    wait_for(
        lambda: (cluster.get("script", "double", "-n", namespace).get("status") or {}).get("schema") or None,
        60,
        "script double's schema",
    )
    manifest = f"""
apiVersion: {API}
kind: Flow
metadata: {{name: doubling, namespace: {namespace}}}
spec:
  path: f/conformance/doubling
  value:
    modules:
      - id: twice
        value:
          type: script
          path: f/conformance/double
          input_transforms:
            n: {{type: static, value: 2}}
"""
    cluster.apply(manifest)
    message = wait_for(
        lambda: (c := ready_condition(cluster, namespace, "doubling"))["status"] == "False" and c["message"],
        60,
        "flow doubling refused",
    )
    assert (
        "step twice: input_transforms key 'false' is not a parameter of the script (its parameters: n); "
        "YAML reads an unquoted n as false: quote the key ('n')"
    ) in message


def test_early_return_result_is_in_the_status_and_the_run_goes_on(
    cluster: Cluster, namespace: str, running_operator: Operator
) -> None:
    case = next(c for c in load_cases() if c.name == "early_return_result")
    cluster.apply(
        {
            "apiVersion": API,
            "kind": "Flow",
            "metadata": {"name": "early", "namespace": namespace},
            "spec": {"path": "f/conformance/early", **case.flow},
        }
    )
    cluster.apply(
        {
            "apiVersion": API,
            "kind": "FlowRun",
            "metadata": {"name": "early", "namespace": namespace},
            "spec": {"flowPath": "f/conformance/early"},
        }
    )
    status = wait_for(
        lambda: (
            (s := cluster.get("flowrun", "early", "-n", namespace).get("status") or {}).get("phase")
            == "Succeeded"
            and s
        ),
        240,
        "flowrun early succeeded",
    )
    assert (status["earlyResult"], status["earlyResultSent"], status["result"]) == ("early", True, "late")
