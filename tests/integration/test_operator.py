"""The operator on the real control plane: Scripts and ScriptRuns as a user sees them (`kubectl get`)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import Cluster, wait_for
from tests.operator_harness import Operator

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
    running_operator: Operator, cluster: Cluster, restricted_namespace: str
) -> None:
    namespace = restricted_namespace
    cluster.apply(script("hello", "f/demo/hello", "python3", HELLO_PY), "-n", namespace)
    cluster.apply(script_run("hello-1", "f/demo/hello", {"name": "kubemill", "times": 2}), "-n", namespace)
    run = finished(running_operator, namespace, "hello-1")
    status = run["status"]
    assert status["phase"] == "Succeeded", status
    assert status["result"] == {"greeting": "hello kubemill", "times": 2}
    assert status["attempts"] == 1
    assert status["job"]["name"] and status["pod"]["name"]
    assert status["startedAt"] <= status["finishedAt"]
    ready = wait_for(
        lambda: cluster.get("script", "hello", "-n", namespace).get("status"), 30, "the Script's status"
    )
    assert ready["schema"]["required"] == ["name"]
    assert ready["conditions"][0]["status"] == "True"


def test_runner_pods_are_restricted_and_carry_no_token(
    running_operator: Operator, cluster: Cluster, restricted_namespace: str
) -> None:
    ns = restricted_namespace
    cluster.apply(
        script("nap", "f/demo/nap", "python3", "import time\n\ndef main():\n    time.sleep(4)\n"), "-n", ns
    )
    cluster.apply(script_run("nap-1", "f/demo/nap"), "-n", ns)
    pods = wait_for(lambda: cluster.get("pods", "-n", ns)["items"], 30, "the runner pod")
    spec = pods[0]["spec"]
    assert spec["automountServiceAccountToken"] is False
    assert not any("serviceAccountToken" in json.dumps(v) for v in spec.get("volumes", []))
    container = spec["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    job = cluster.get("jobs", "-n", ns)["items"][0]
    assert job["metadata"]["ownerReferences"][0]["kind"] == "ScriptRun"
    status = finished(running_operator, ns, "nap-1")["status"]
    assert status["phase"] == "Succeeded", status
    # The Job and its pod are collected; the run record stays.
    wait_for(lambda: cluster.get("jobs", "-n", ns)["items"] == [], 30, "the Job to be deleted")
    wait_for(lambda: cluster.get("pods", "-n", ns)["items"] == [], 60, "the pod to be deleted")
    assert cluster.get("scriptrun", "nap-1", "-n", ns)["status"]["phase"] == "Succeeded"


def test_operator_killed_mid_run_restarts_and_finishes_the_run_once(
    running_operator: Operator, cluster: Cluster, namespace: str
) -> None:
    code = "import time\n\ndef main(s: float):\n    time.sleep(s)\n    return 'done'\n"
    cluster.apply(script("steady", "f/demo/steady", "python3", code), "-n", namespace)
    cluster.apply(script_run("steady-1", "f/demo/steady", {"s": 4}), "-n", namespace)
    wait_for(lambda: cluster.get("jobs", "-n", namespace)["items"], 30, "the run's Job")
    running_operator.kill()
    cluster.apply(script_run("steady-2", "f/demo/steady", {"s": 0}), "-n", namespace)  # created while down
    running_operator.start()
    first = finished(running_operator, namespace, "steady-1")["status"]
    second = finished(running_operator, namespace, "steady-2")["status"]
    assert (first["phase"], first["result"], first["attempts"]) == ("Succeeded", "done", 1)
    assert (second["phase"], second["result"], second["attempts"]) == ("Succeeded", "done", 1)
    events = cluster.get("events", "-n", namespace)["items"]
    created = [e for e in events if e.get("reason") == "SuccessfulCreate" and "steady-1" in json.dumps(e)]
    assert len({e["message"] for e in created}) <= 1  # one pod for steady-1's single Job
    wait_for(lambda: cluster.get("jobs", "-n", namespace)["items"] == [], 30, "the Jobs to be collected")


def test_metrics_reflect_what_ran(running_operator: Operator, cluster: Cluster, namespace: str) -> None:
    cluster.apply(script("m", "f/metrics/ok", "python3", "def main():\n    return 1\n"), "-n", namespace)
    cluster.apply(
        script("mf", "f/metrics/bad", "python3", "def main():\n    raise KeyError('k')\n"), "-n", namespace
    )
    for i in range(2):
        cluster.apply(script_run(f"ok-{i}", "f/metrics/ok"), "-n", namespace)
    cluster.apply(script_run("bad-0", "f/metrics/bad"), "-n", namespace)
    for name in ("ok-0", "ok-1", "bad-0"):
        finished(running_operator, namespace, name)
    text = running_operator.metrics()

    def sample(name: str, **labels: str) -> float:
        for line in text.splitlines():
            if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    ns = {"namespace": namespace}
    assert sample("kubemill_runs_started_total", path="f/metrics/ok", language="python3", **ns) == 2
    assert sample("kubemill_runs_finished_total", path="f/metrics/ok", phase="Succeeded", **ns) == 2
    assert sample("kubemill_runs_finished_total", path="f/metrics/bad", phase="Failed", **ns) == 1
    assert sample("kubemill_run_duration_seconds_count", language="python3", phase="Succeeded") >= 2
    assert sample("kubemill_run_queue_wait_seconds_count", language="python3") >= 3
    assert sample("kubemill_active_runs", **ns) == 0
    assert sample("kubemill_kubernetes_api_requests_total", verb="create", resource="jobs", code="201") >= 3
    assert "kubemill_kubernetes_api_request_duration_seconds_bucket" in text
    assert "kubemill_reconcile_errors_total" in text or "kubemill_reconcile_errors" in text


def test_two_scripts_with_one_path_the_first_created_keeps_it_across_a_restart(
    running_operator: Operator, cluster: Cluster, namespace: str
) -> None:
    """A path names one Script: the first created runs, whatever order the operator hears of them in (a
    restart lists them afresh; the last event used to win, so a path's runs switched code, #13), and the
    other says PathConflict naming it. Deleting the first hands the path to the other."""
    cluster.apply(
        script("first", "f/demo/twice", "python3", "def main():\n    return 'first'\n"), "-n", namespace
    )
    wait_for(lambda: cluster.get("script", "first", "-n", namespace).get("status"), 30, "first's status")
    # "z-second" is heard of last, in the watch's events and in a restart's listing (by name)
    cluster.apply(
        script("z-second", "f/demo/twice", "python3", "def main():\n    return 'second'\n"), "-n", namespace
    )

    def ready(name: str, expected: str) -> dict[str, Any] | None:
        conditions = (cluster.get("script", name, "-n", namespace).get("status") or {}).get(
            "conditions"
        ) or []
        found = next((c for c in conditions if c["type"] == "Ready"), None)
        return found if found and found["status"] == expected else None

    conflict = wait_for(lambda: ready("z-second", "False"), 30, "z-second's PathConflict")
    assert (
        conflict["reason"] == "PathConflict"
        and "Script first has spec.path f/demo/twice" in conflict["message"]
    )
    assert ready("first", "True")
    for attempt in ("before", "after"):
        if attempt == "after":
            running_operator.kill()
            running_operator.start()
        cluster.apply(script_run(f"twice-{attempt}", "f/demo/twice"), "-n", namespace)
        status = finished(running_operator, namespace, f"twice-{attempt}")["status"]
        assert (status["phase"], status["result"]) == ("Succeeded", "first"), (attempt, status)
    cluster.kubectl("delete", "script", "first", "-n", namespace)
    wait_for(lambda: ready("z-second", "True"), 30, "z-second to keep the path")
    cluster.apply(script_run("twice-handed-over", "f/demo/twice"), "-n", namespace)
    status = finished(running_operator, namespace, "twice-handed-over")["status"]
    assert (status["phase"], status["result"]) == ("Succeeded", "second"), status


def test_code_shared_by_runs_and_scripts_outlives_the_first_of_them(
    running_operator: Operator, cluster: Cluster, namespace: str
) -> None:
    """One ConfigMap holds each distinct code, owned by every Script and inline run that has it: the garbage
    collector takes it with the last of them, never while another still runs it (a process that had made it
    once used to skip it for good, and the next run of the same code waited for it forever)."""
    code = "def main():\n    return 'shared'\n"

    def inline(name: str) -> dict[str, Any]:
        body = script_run(name, "", script={"language": "python3", "content": code})
        del body["spec"]["scriptPath"]
        return body

    def code_maps() -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = cluster.get("configmaps", "-n", namespace, "-l", "kubemill.dev/code")[
            "items"
        ]
        return items

    cluster.apply(inline("inline-1"), "-n", namespace)
    assert finished(running_operator, namespace, "inline-1")["status"]["result"] == "shared"
    [made] = code_maps()
    cluster.kubectl("delete", "scriptrun", "inline-1", "-n", namespace)  # as retention does
    wait_for(lambda: code_maps() == [] or None, 60, "the garbage collector to take inline-1's code")
    cluster.apply(inline("inline-2"), "-n", namespace)
    assert finished(running_operator, namespace, "inline-2")["status"]["result"] == "shared"
    [again] = code_maps()
    assert again["metadata"]["name"] == made["metadata"]["name"]
    assert [ref["name"] for ref in again["metadata"]["ownerReferences"]] == ["inline-2"]

    # Two Scripts with that code (and the run): each is an owner; the first deleted, the other still runs
    for name, path in (("one", "f/demo/one"), ("two", "f/demo/two")):
        cluster.apply(script(name, path, "python3", code), "-n", namespace)
        wait_for(
            lambda n=name: cluster.get("script", n, "-n", namespace).get("status"), 30, f"{name}'s status"
        )
    uids = {cluster.get("script", n, "-n", namespace)["metadata"]["uid"] for n in ("one", "two")}

    def owned_by_both() -> bool | None:
        [held] = code_maps()
        return uids <= {ref["uid"] for ref in held["metadata"]["ownerReferences"]} or None

    wait_for(owned_by_both, 30, "both Scripts to own the code")
    cluster.kubectl("delete", "scriptrun", "inline-2", "-n", namespace)
    cluster.kubectl("delete", "script", "one", "-n", namespace)
    cluster.apply(script_run("two-runs", "f/demo/two"), "-n", namespace)
    assert finished(running_operator, namespace, "two-runs")["status"]["result"] == "shared"
