"""The ScriptRun reconciler (`operator.run_executor`) against the in-memory API server (`kubemill.testing`).

The world around the operator is played by hand: the Job controller and the kubelet are `finish_job` (a
Complete Job and its terminated pod with the runner's envelope). Each table row is a way things go wrong that
a cluster shows only now and then: the process dies before any one of its writes and a fresh one carries on,
another writer changes the run between a read and a write, a child is deleted, an event arrives late. In every
row the run must end as it ends when nothing goes wrong: one Job, one result, nothing left behind.
"""

from __future__ import annotations

import json
from collections.abc import Hashable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kubemill.k8s import builders
from kubemill.operator.run_executor import RunExecutor
from kubemill.operator.script_catalog import ScriptCatalog
from kubemill.operator.work_queue import WorkQueue
from kubemill.testing.kubeapi import Crash, FakeKube

NS, RUN, PATH = "ns", "r1", "f/demo/inc"
API = "kubemill.dev/v1alpha1"
START = datetime(2026, 12, 2, 12, 0, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


class Wakeups:
    """Stands in for the executor's timer thread: records wake-ups, the test decides when they come due."""

    def __init__(self) -> None:
        self.asked: list[tuple[Hashable, float]] = []

    def after(self, key: Hashable, seconds: float) -> None:
        self.asked.append((key, seconds))

    def stop(self) -> None:
        return None

    def pending(self) -> int:
        return len({key for key, _ in self.asked})


def world(clock: Clock, **script: Any) -> FakeKube:
    kube = FakeKube(clock)
    spec = {"path": PATH, "language": "python3", "content": "def main(n: int):\n    return n + 1\n", **script}
    meta = {"name": "inc", "namespace": NS}
    kube.put({"apiVersion": API, "kind": "Script", "metadata": meta, "spec": spec})
    kube.put(
        {
            "apiVersion": API,
            "kind": "ScriptRun",
            "metadata": {"name": RUN, "namespace": NS, "generation": 1},
            "spec": {"scriptPath": PATH, "args": {"n": 3}},
        }
    )
    return kube


def executor(kube: FakeKube, clock: Clock) -> RunExecutor:
    """A fresh operator process: nothing remembered."""
    queue = WorkQueue(workers=1, timer=Wakeups())
    return RunExecutor(kube, ScriptCatalog(kube), clock=clock, live_log_seconds=0, queue=queue)


def finish_job(kube: FakeKube, envelope: dict[str, Any]) -> None:
    """What the Job controller and the kubelet do for a Job that ran: its pod terminated, the Job Complete."""
    for job in kube.of_kind("Job"):
        conditions = (job.get("status") or {}).get("conditions") or []
        if conditions:
            continue
        name = job["metadata"]["name"]
        terminated = {"exitCode": 0, "reason": "Completed", "message": json.dumps(envelope)}
        kube.put(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": f"{name}-pod", "namespace": NS, "labels": {"job-name": name}},
                "status": {"containerStatuses": [{"state": {"terminated": terminated}}]},
            }
        )
        kube.put(job | {"status": {"conditions": [{"type": "Complete", "status": "True"}]}})


def status(kube: FakeKube) -> dict[str, Any]:
    run = kube.find("ScriptRun", NS, RUN)
    assert run is not None
    return dict(run.get("status") or {})


def drive(kube: FakeKube, clock: Clock, rounds: int = 6) -> int:
    """Reconcile until the run is final, restarting the 'process' after each crash; the number of restarts."""
    ex, restarts = executor(kube, clock), 0
    for _ in range(rounds):
        try:
            ex.reconcile(NS, RUN)
            finish_job(kube, {"result": 4, "error": None, "state": None})
            ex.reconcile(NS, RUN)
        except Crash:
            ex, restarts = executor(kube, clock), restarts + 1
            continue
        if status(kube).get("phase") in ("Succeeded", "Failed"):
            for job in kube.of_kind("Job"):  # a Job's own event collects what a crash left behind
                ex.collect_job(NS, RUN, job["metadata"]["name"])
            return restarts
    raise AssertionError(f"the run did not finish: {status(kube)}")


def assert_finished_cleanly(kube: FakeKube) -> None:
    final = status(kube)
    assert (final["phase"], final.get("result"), final["attempts"]) == ("Succeeded", 4, 1)
    assert final["job"]["name"] == builders.job_name(RUN, 1)
    assert [w for w in kube.writes if w[:2] == ("create", "Job")] == [("create", "Job", final["job"]["name"])]
    assert kube.of_kind("Job") == [] and kube.of_kind("Secret") == []


def happy_writes() -> list[tuple[str, str, str]]:
    clock = Clock()
    kube = world(clock)
    assert drive(kube, clock) == 0
    assert_finished_cleanly(kube)
    return list(kube.writes)


def test_a_run_goes_pending_to_succeeded_with_one_job_and_no_leftovers() -> None:
    writes = happy_writes()
    verbs = [(verb, kind) for verb, kind, _ in writes]
    # objects a status points at are written before it; cleanup after it
    assert verbs.index(("create", "Job")) < verbs.index(("replace", "ScriptRun"))
    assert verbs[-2:] == [("delete", "Secret"), ("delete", "Job")]


@pytest.mark.parametrize("crash_at", range(len(happy_writes())))
def test_a_crash_before_any_write_ends_the_run_as_without_it(crash_at: int) -> None:
    clock = Clock()
    kube = world(clock)
    tried = [0]

    def crash_once(verb: str, kind: str, name: str) -> None:
        tried[0] += 1
        if tried[0] == crash_at + 1:
            raise Crash(f"before {verb} {kind} {name}")

    kube.before_write = crash_once
    assert drive(kube, clock) == 1
    assert_finished_cleanly(kube)


def test_another_writer_between_read_and_write_is_a_conflict_decided_again() -> None:
    clock = Clock()
    kube = world(clock)
    interfered: list[str] = []

    def label_the_run(verb: str, kind: str, name: str) -> None:
        if (verb, kind) == ("replace", "ScriptRun") and len(interfered) < 2:
            run = kube.find("ScriptRun", NS, RUN)
            assert run is not None
            run["metadata"].setdefault("labels", {})[f"team{len(interfered)}"] = "a"
            kube.put(run)  # a new resourceVersion: the executor's write carries a stale one
            interfered.append(verb)

    kube.before_write = label_the_run
    assert drive(kube, clock) == 0
    assert len(interfered) == 2
    assert_finished_cleanly(kube)
    run = kube.find("ScriptRun", NS, RUN)
    assert run is not None and set(run["metadata"]["labels"]) == {"team0", "team1"}


def test_two_operators_reconciling_the_same_run_record_one_result() -> None:
    clock = Clock()
    kube = world(clock)
    first, second = executor(kube, clock), executor(kube, clock)
    first.reconcile(NS, RUN)
    second.reconcile(NS, RUN)  # sees the Job already started: adopts, never starts a second
    finish_job(kube, {"result": 4, "error": None, "state": None})
    stale = kube.find("ScriptRun", NS, RUN)
    second.reconcile(NS, RUN)
    first.reconcile(NS, RUN, body=stale)  # its event is older than the other's final write
    assert_finished_cleanly(kube)
    assert [w for w in kube.writes if w[0] == "replace"] == [("replace", "ScriptRun", RUN)] * 2


def test_a_deleted_job_fails_the_attempt_and_names_it() -> None:
    clock = Clock()
    kube = world(clock)
    ex = executor(kube, clock)
    ex.reconcile(NS, RUN)
    kube.delete("batch/v1", "Job", NS, builders.job_name(RUN, 1))
    ex.reconcile(NS, RUN)
    final = status(kube)
    assert (final["phase"], final["error"]["name"]) == ("Failed", "JobDeleted")
    assert kube.of_kind("Secret") == []


def test_a_deleted_run_is_forgotten_and_its_children_go_with_it() -> None:
    clock = Clock()
    kube = world(clock)
    ex = executor(kube, clock)
    ex.reconcile(NS, RUN)
    kube.delete(API, "ScriptRun", NS, RUN)
    assert kube.of_kind("Job") == [] and kube.of_kind("Secret") == []
    writes = len(kube.writes)
    ex.reconcile(NS, RUN)
    assert len(kube.writes) == writes


@pytest.mark.parametrize("late", ["created", "running"])
def test_a_late_event_never_takes_the_run_back(late: str) -> None:
    """The freshness guard compares resourceVersions by identity only (the fake's are not even numbers)."""
    clock = Clock()
    kube = world(clock)
    created = kube.find("ScriptRun", NS, RUN)
    ex = executor(kube, clock)
    ex.reconcile(NS, RUN, body=created)
    running = kube.find("ScriptRun", NS, RUN)
    assert running is not None and running["status"]["phase"] == "Running"
    ex.reconcile(NS, RUN, body=created)  # the creation event, delivered again after the run moved on
    assert status(kube)["phase"] == "Running"
    finish_job(kube, {"result": 4, "error": None, "state": None})
    ex.reconcile(NS, RUN)
    writes = len(kube.writes)
    for _ in range(2):
        ex.reconcile(NS, RUN, body=created if late == "created" else running)
    assert len(kube.writes) == writes
    assert_finished_cleanly(kube)


def test_a_retry_waits_its_delay_then_starts_the_next_attempt() -> None:
    clock = Clock()
    kube = world(clock, retry={"constant": {"attempts": 1, "seconds": 30}})
    ex = executor(kube, clock)
    ex.reconcile(NS, RUN)
    finish_job(kube, {"result": None, "error": {"name": "E", "message": "boom"}, "state": None})
    ex.reconcile(NS, RUN)
    assert status(kube)["phase"] == "Pending" and (("ScriptRun", NS, RUN), 30) in ex.queue.timer.asked  # type: ignore[attr-defined]
    clock.now += timedelta(seconds=10)
    ex.reconcile(NS, RUN)
    assert status(kube)["attempts"] == 1
    clock.now += timedelta(seconds=20)
    ex.reconcile(NS, RUN)
    assert status(kube)["attempts"] == 2 and len(kube.of_kind("Job")) == 1


def test_what_the_executor_keeps_is_bounded_by_the_runs_that_exist_not_by_those_it_has_seen() -> None:
    """Issue #16 (the operator's memory grew with every run it had seen). Many runs go through one process
    with a history limit: the trimmed ones get late events of their Jobs (as the garbage collector deletes
    them), some are deleted by retention. At the end the executor holds records only of the runs the
    history keeps, and nothing of the others: no lock, no version, no body, no mask, no log state."""
    clock = Clock()
    kube = world(clock)
    kube.delete(API, "ScriptRun", NS, RUN)
    ex = executor(kube, clock)
    ex.history_limit = limit = 5
    runs, trimmed = 60, 0
    for i in range(runs):
        clock.now += timedelta(seconds=1)
        name = f"tp-{i}"
        before = {r["metadata"]["name"] for r in kube.of_kind("ScriptRun")}
        created = kube.put(
            {
                "apiVersion": API,
                "kind": "ScriptRun",
                "metadata": {"name": name, "namespace": NS, "generation": 1},
                "spec": {"scriptPath": PATH, "args": {"n": i}},
            }
        )
        ex.reconcile(NS, name, body=created)  # its creation event
        running = kube.find("ScriptRun", NS, name)
        assert running is not None
        ex.reconcile(NS, name, body=running)  # the echo of the Running write
        job = builders.job_name(name, 1)
        finish_job(kube, {"result": i + 1, "error": None, "state": None})
        ex.reconcile(NS, name)  # the Job's event: the run finishes, the history is trimmed
        ex.collect_job(NS, name, job)
        final = kube.find("ScriptRun", NS, name)
        assert final is not None and final["status"]["phase"] == "Succeeded"
        ex.reconcile(NS, name, body=final)  # the echo of the final write
        now = {r["metadata"]["name"] for r in kube.of_kind("ScriptRun")}
        for gone in sorted(before - now):  # a Job's event after its run is gone, as `scripts.job_event`
            ex.reconcile(NS, gone)  # handles it (its DELETED event may never come: a watch restarted)
            ex.collect_job(NS, gone, builders.job_name(gone, 1))
        trimmed += len(before - now)
        if i % 10 == 9:  # retention deletes the newest finished run; its DELETED event follows
            kube.delete(API, "ScriptRun", NS, name)
            ex.forget(NS, name)
    kept = {r["metadata"]["name"] for r in kube.of_kind("ScriptRun")}
    assert trimmed >= runs - 10  # late events came for most of the runs gone
    assert len(kept) == limit - 1  # the history limit holds (one of the last five went to retention)
    sizes = ex.cache_sizes()
    assert {k: sizes[k] for k in ("runs", "final", "locks")} == dict.fromkeys(("runs", "final", "locks"), 4)
    assert sum(n for k, n in sizes.items() if k not in ("runs", "final", "locks", "requeued")) == 0, sizes
    assert ex.records.keys() == {(NS, n) for n in kept}
