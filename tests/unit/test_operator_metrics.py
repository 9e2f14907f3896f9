"""The pending-approval gauges: what a FlowRun's status says about its wait, how waits add up by flow and
namespace, and how the published series follow runs that suspend, resume and vanish."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from kubemill.operator.metrics import (
    REGISTRY,
    ApprovalWait,
    PendingApprovals,
    approval_gauges,
    approval_wait,
)
from prometheus_client import generate_latest

T0 = datetime(2025, 1, 1, 12, tzinfo=UTC)


def run(
    name: str,
    phase: str,
    pending: tuple[str, ...] = (),
    steps: dict[str, Any] | None = None,
    namespace: str = "ws",
    flow: str = "f/ops/order",
) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": namespace, "creationTimestamp": "2025-01-01T11:00:00Z"},
        "spec": {"flowPath": flow},
        "status": {
            "phase": phase,
            "startedAt": "2025-01-01T11:30:00Z",
            "steps": steps or {},
            "pendingApprovals": [{"step": s} for s in pending],
        },
    }


def test_a_suspended_run_waits_since_its_step_was_suspended() -> None:
    steps = {
        "ok": {
            "phase": "Suspended",
            "startedAt": "2025-01-01T11:59:00Z",
            "finishedAt": "2025-01-01T12:00:00Z",
        },
        "second": {"phase": "Suspended", "startedAt": "2025-01-01T12:05:00Z"},
    }
    wait = approval_wait(run("r", "Suspended", ("ok", "second"), steps))
    assert wait == ApprovalWait("ws", "f/ops/order", T0)


def test_without_a_step_record_the_wait_began_with_the_run() -> None:
    wait = approval_wait(run("r", "Suspended", ("ok",)))
    assert wait is not None and wait.since == datetime(2025, 1, 1, 11, 30, tzinfo=UTC)
    body = run("r", "Suspended", ("ok",))
    del body["status"]["startedAt"]
    assert (wait := approval_wait(body)) is not None and wait.since == datetime(2025, 1, 1, 11, tzinfo=UTC)


def test_runs_not_waiting_have_no_wait() -> None:
    assert approval_wait(run("r", "Running")) is None
    assert approval_wait(run("r", "Failed", ("ok",))) is None  # a final phase never waits
    assert approval_wait({"metadata": {"name": "r", "namespace": "ws"}, "spec": {"flowPath": "f/x"}}) is None


def test_gauges_count_runs_by_flow_and_keep_the_oldest_wait_by_namespace() -> None:
    later = datetime(2025, 1, 1, 13, tzinfo=UTC)
    counts, oldest = approval_gauges(
        [
            ApprovalWait("a", "f/x", later),
            ApprovalWait("a", "f/x", T0),
            ApprovalWait("a", "f/y", later),
            ApprovalWait("b", "f/x", later),
        ]
    )
    assert counts == {("a", "f/x"): 2, ("a", "f/y"): 1, ("b", "f/x"): 1}
    assert oldest == {"a": T0.timestamp(), "b": later.timestamp()}
    assert approval_gauges([]) == ({}, {})


def samples(name: str, namespace: str) -> dict[str, float]:
    """This metric's samples in `namespace`, keyed by their label text."""
    found = {}
    for line in generate_latest(REGISTRY).decode().splitlines():
        if line.startswith(name + "{") and f'namespace="{namespace}"' in line:
            labels, value = line.rsplit(" ", 1)
            found[labels[len(name) :]] = float(value)
    return found


def test_published_series_follow_suspend_resume_and_delete() -> None:
    tracker, ns = PendingApprovals(), "unit-pending"
    steps = {"ok": {"phase": "Suspended", "finishedAt": "2025-01-01T12:00:00Z"}}
    count, oldest = "kubemill_pending_approvals", "kubemill_pending_approval_oldest_timestamp_seconds"
    series = f'{{flow="f/ops/order",namespace="{ns}"}}'
    tracker.observe(run("a", "Suspended", ("ok",), steps, namespace=ns))
    tracker.observe(run("b", "Suspended", ("ok",), namespace=ns))
    tracker.observe(run("b", "Suspended", ("ok",), namespace=ns))  # seen twice: counted once
    assert samples(count, ns) == {series: 2.0}
    assert samples(oldest, ns) == {
        f'{{namespace="{ns}"}}': datetime(2025, 1, 1, 11, 30, tzinfo=UTC).timestamp()
    }
    tracker.observe(run("b", "Running", namespace=ns))  # approved: resumed
    assert samples(count, ns) == {series: 1.0}
    assert samples(oldest, ns) == {f'{{namespace="{ns}"}}': T0.timestamp()}
    tracker.observe(run("a", "Suspended", ("ok",), steps, namespace=ns), deleted=True)
    assert samples(count, ns) == {series: 0.0}
    assert samples(oldest, ns) == {}  # no wait: no timestamp (a 0 would read as a wait since 1970)


def test_a_fresh_tracker_rebuilds_the_gauges_from_the_listing() -> None:
    """After a restart the initial listing is all the tracker sees: the gauges come back from the statuses."""
    ns = "unit-restart"
    listing = [run(f"r{i}", "Suspended", ("ok",), namespace=ns) for i in range(3)] + [run("d", "Succeeded")]
    tracker = PendingApprovals()
    for body in listing:
        tracker.observe(body)
    assert samples("kubemill_pending_approvals", ns) == {f'{{flow="f/ops/order",namespace="{ns}"}}': 3.0}
