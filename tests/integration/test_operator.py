"""The operator on the real control plane: Scripts and ScriptRuns as a user sees them (`kubectl get`)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Cluster, wait_for
from tests.integration.conftest import Operator

pytestmark = pytest.mark.cluster

API = "kubemill.dev/v1alpha1"


def script(name: str, path: str, language: str, content: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "Script",
        "metadata": {"name": name},
        "spec": {"path": path, "language": language, "content": content, **spec},
    }


def script_run(name: str, path: str, args: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "ScriptRun",
        "metadata": {"name": name},
        "spec": {"scriptPath": path, "args": args or {}, **spec},
    }


def finished(op: Operator, namespace: str, name: str, timeout: float = 90) -> dict[str, Any]:
    """The run once it reached a final phase (its whole object); on timeout, the operator's log tail."""

    def check() -> dict[str, Any] | None:
        run: dict[str, Any] = op.cluster.get("scriptrun", name, "-n", namespace)
        return run if run.get("status", {}).get("phase") in ("Succeeded", "Failed", "Cancelled") else None

    try:
        return wait_for(check, timeout, f"scriptrun {name} to finish")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- operator log ---\n{op.log()[-6000:]}") from None


HELLO_PY = """
def main(name: str, times: int = 1):
    print("hello from the runner")
    return {"greeting": f"hello {name}", "times": times}
"""


def test_operator_serves_health_and_metrics_under_its_own_identity(running_operator: Operator) -> None:
    text = running_operator.metrics()
    assert "kubemill_runs_started" in text
    assert "Forbidden" not in running_operator.log()


def test_python_script_runs_as_a_job_and_its_result_lands_in_status(
    running_operator: Operator, cluster: Cluster, namespace: str
) -> None:
    cluster.apply(script("hello", "f/demo/hello", "python3", HELLO_PY), "-n", namespace)
    cluster.apply(script_run("hello-1", "f/demo/hello", {"name": "kubemill", "times": 2}), "-n", namespace)
    run = finished(running_operator, namespace, "hello-1")
    status = run["status"]
    assert status["phase"] == "Succeeded", status
    assert status["result"] == {"greeting": "hello kubemill", "times": 2}
    assert status["attempts"] == 1
    assert status["job"]["name"] and status["pod"]["name"]
    assert status["startedAt"] <= status["finishedAt"]
    ready = cluster.get("script", "hello", "-n", namespace)["status"]
    assert ready["schema"]["required"] == ["name"]
    assert ready["conditions"][0]["status"] == "True"
