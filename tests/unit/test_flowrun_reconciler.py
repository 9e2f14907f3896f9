"""The FlowRun reconciler (`operator.flowrun_reconciler`) against the in-memory API server (kubemill.testing).

The ScriptRun controller is played by hand (`finish`: a child's status set to Succeeded with its result).
Each row is a way things go wrong that a cluster shows only now and then: the process dies before any one of
its writes and a fresh one carries on, another writer changes the run between a read and a write, the
process's cache of the run is stale, a child is deleted under it. In every row the flow must end as it ends
when nothing goes wrong, with one child per step, or fail saying why.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from kubemill.engine import QuickJSEvaluator
from kubemill.k8s.flowruns import PARENT_UID_LABEL
from kubemill.operator.flowrun_reconciler import FlowRunReconciler
from kubemill.operator.resume_urls import ResumeLinks
from kubemill.operator.signing import SigningKey
from kubemill.testing.kubeapi import Crash, FakeKube

NS, RUN, FLOW_PATH, SCRIPT = "ns", "order", "f/t/chain", "f/t/inc"
API = "kubemill.dev/v1alpha1"
READY = {"type": "Ready", "status": "True", "reason": "Valid", "message": "ok"}
READY["lastTransitionTime"] = "2026-12-03T00:00:00Z"


def world(modules: list[dict[str, Any]] | None = None) -> FakeKube:
    kube = FakeKube()
    schema = {"properties": {"n": {"type": "integer"}}}
    script = {"path": SCRIPT, "language": "python3", "content": "def main(n: int):\n    return n + 1\n"}
    kube.put(
        {
            "apiVersion": API,
            "kind": "Script",
            "metadata": {"name": "inc", "namespace": NS},
            "spec": script,
            "status": {"schema": schema},
        }
    )
    steps = modules or [
        step("a", {"type": "static", "value": 1}),
        step("b", {"type": "javascript", "expr": "results.a + 1"}),
    ]
    flow = {"path": FLOW_PATH, "value": {"modules": steps}}
    meta = {"name": "chain", "namespace": NS, "generation": 1}
    kube.put(
        {"apiVersion": API, "kind": "Flow", "metadata": meta, "spec": flow, "status": {"conditions": [READY]}}
    )
    run = {"apiVersion": API, "kind": "FlowRun", "metadata": {"name": RUN, "namespace": NS}}
    kube.put({**run, "spec": {"flowPath": FLOW_PATH, "args": {}}})
    return kube


def step(step_id: str, n: dict[str, Any]) -> dict[str, Any]:
    return {"id": step_id, "value": {"type": "script", "path": SCRIPT, "input_transforms": {"n": n}}}


def process(kube: FakeKube) -> FlowRunReconciler:
    """A fresh operator process: nothing remembered."""
    return FlowRunReconciler(kube, ResumeLinks(kube, SigningKey(kube)), evaluator=QuickJSEvaluator())


def children(kube: FakeKube) -> list[dict[str, Any]]:
    return [c for c in kube.of_kind("ScriptRun") if PARENT_UID_LABEL in (c["metadata"].get("labels") or {})]


def run_status(kube: FakeKube) -> dict[str, Any]:
    found = kube.find("FlowRun", NS, RUN)
    assert found is not None
    status: dict[str, Any] = found.get("status") or {}
    return status


def finish(kube: FakeKube, child: dict[str, Any]) -> dict[str, Any]:
    """The ScriptRun controller runs `main(n) = n + 1` for the child."""
    n = child["spec"]["args"]["n"]
    return kube.put({**child, "status": {"phase": "Succeeded", "result": n + 1}})


def drive(kube: FakeKube, rec: FlowRunReconciler, new_process: Callable[[], FlowRunReconciler]) -> None:
    """Reconcile and finish children until the run is done; a crashed process is replaced by a fresh one."""
    for _ in range(40):
        if run_status(kube).get("phase") in ("Succeeded", "Failed", "Cancelled"):
            return
        try:
            rec.reconcile(NS, RUN)
            for child in children(kube):
                if (child.get("status") or {}).get("phase") != "Succeeded":
                    rec.on_child("MODIFIED", finish(kube, child))  # the event triggers a reconcile
        except Crash:
            rec = new_process()
    raise AssertionError(f"the run did not finish: {run_status(kube)}")


def assert_one_child_per_step(kube: FakeKube) -> None:
    steps = sorted(c["spec"]["stepId"] for c in children(kube))
    assert steps == ["a", "b"], steps


def test_a_two_step_flow_runs_each_step_once_and_passes_results_on() -> None:
    kube = world()
    rec = process(kube)
    rec.reconcile(NS, RUN)
    assert run_status(kube)["phase"] == "Running"
    (first,) = children(kube)
    assert first["spec"]["stepId"] == "a" and first["spec"]["args"] == {"n": 1}
    rec.on_child("MODIFIED", finish(kube, first))  # the child's event triggers the next reconcile
    second = next(c for c in children(kube) if c["spec"]["stepId"] == "b")
    assert second["spec"]["args"] == {"n": 3}
    rec.on_child("MODIFIED", finish(kube, second))
    done = run_status(kube)
    assert done["phase"] == "Succeeded" and done["result"] == 4
    assert_one_child_per_step(kube)


def writes_of_a_clean_run() -> int:
    kube = world()
    drive(kube, process(kube), lambda: process(kube))
    return len(kube.writes)


@pytest.mark.parametrize("crash_at", range(writes_of_a_clean_run()))
def test_a_crash_before_any_write_loses_no_step_and_runs_none_twice(crash_at: int) -> None:
    kube = world()
    attempts = []

    def crash(verb: str, kind: str, name: str) -> None:
        attempts.append((verb, kind, name))
        if len(attempts) == crash_at + 1:
            raise Crash(f"the process dies before {verb} {kind} {name}")

    kube.before_write = crash
    drive(kube, process(kube), lambda: process(kube))
    assert len(attempts) > crash_at, "the crash never happened: the row tests nothing"
    done = run_status(kube)
    assert done["phase"] == "Succeeded" and done["result"] == 4, done
    assert_one_child_per_step(kube)


def test_a_conflicting_writer_is_not_overwritten_and_the_run_goes_on() -> None:
    kube = world()
    rec = process(kube)
    other = {"done": False}

    def someone_else_first(verb: str, kind: str, name: str) -> None:
        if verb == "replace" and kind == "FlowRun" and not other["done"]:
            other["done"] = True
            body = kube.find("FlowRun", NS, RUN)
            assert body is not None
            body["metadata"].setdefault("annotations", {})["team.example/note"] = "kept"
            kube.put(body)

    kube.before_write = someone_else_first
    rec.trigger(NS, RUN)  # through the queue: a Conflict means read again at once
    assert other["done"]
    assert run_status(kube)["phase"] == "Running"
    drive(kube, rec, lambda: process(kube))
    body = kube.find("FlowRun", NS, RUN)
    assert body is not None and body["metadata"]["annotations"]["team.example/note"] == "kept"
    assert run_status(kube)["result"] == 4
    assert_one_child_per_step(kube)


def test_a_stale_cached_run_costs_a_conflict_and_a_read_never_a_second_child() -> None:
    kube = world()
    rec = process(kube)
    rec.reconcile(NS, RUN)  # caches the body it wrote
    body = kube.find("FlowRun", NS, RUN)
    assert body is not None
    body["metadata"]["annotations"] = {"team.example/note": "changed behind the cache"}
    kube.put(body)  # a write this process has not seen an event of yet
    (first,) = children(kube)
    rec.on_child("MODIFIED", finish(kube, first))  # reconciles from the stale body: Conflict, read, again
    assert [c["spec"]["stepId"] for c in children(kube)].count("b") == 1
    assert run_status(kube)["currentStep"] == "b"
    drive(kube, rec, lambda: process(kube))
    assert run_status(kube)["result"] == 4
    assert_one_child_per_step(kube)


def test_a_child_being_deleted_before_it_finished_fails_its_step_instead_of_running_it_again() -> None:
    kube = world()
    rec = process(kube)
    rec.reconcile(NS, RUN)
    (first,) = children(kube)
    first["metadata"]["deletionTimestamp"] = "2026-12-03T00:00:01Z"
    rec.on_child("MODIFIED", kube.put(first))
    failed = run_status(kube)
    assert failed["phase"] == "Failed", failed
    assert "deleted before it finished" in failed["error"]["message"]
    assert [c["spec"]["stepId"] for c in children(kube)] == ["a"]


def test_a_child_gone_without_a_trace_is_created_again_once_under_its_name() -> None:
    """Deleted with no finalizer to hold it, a child leaves nothing to read its outcome from: the step's run
    is created again under the same name (once), as after a crash between the create and the status write."""
    kube = world()
    rec = process(kube)
    rec.reconcile(NS, RUN)
    (first,) = children(kube)
    kube.delete(API, "ScriptRun", NS, first["metadata"]["name"])
    rec.on_child("DELETED", first)
    (again,) = children(kube)
    assert again["metadata"]["name"] == first["metadata"]["name"]
    assert again["metadata"]["uid"] != first["metadata"]["uid"]
    drive(kube, rec, lambda: process(kube))
    assert run_status(kube)["result"] == 4
    assert_one_child_per_step(kube)


def test_a_vanished_flow_fails_a_new_run_naming_the_path() -> None:
    kube = world()
    kube.delete(API, "Flow", NS, "chain")
    process(kube).reconcile(NS, RUN)
    failed = run_status(kube)
    assert failed["phase"] == "Failed" and failed["error"]["name"] == "FlowNotFound"
    assert FLOW_PATH in failed["error"]["message"]
