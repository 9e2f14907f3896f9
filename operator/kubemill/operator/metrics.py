"""The operator's Prometheus metrics (prefix `kubemill_`), served on `/metrics`.

Handlers record what users care about (runs started and finished, how long they ran, how long they waited,
how many are active, approvals pending, how late schedules start) and what operators of the operator care
about (reconcile errors, Kubernetes API requests and their latency, observed through
`kubemill.k8s.client.Kube`'s observer hook). The pending-approval gauges are computed from the FlowRuns'
statuses (`approval_wait`, `approval_gauges`: pure) and published by `PendingApprovals`, which the FlowRun
watch keeps current (the initial listing rebuilds it after a restart).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from kubemill import constants

REGISTRY = CollectorRegistry(auto_describe=True)

_RUN_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600)
_API_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
_LAG_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 900)

RUNS_STARTED = Counter(
    "kubemill_runs_started",
    "Script run attempts started (a Job created)",
    ["namespace", "language", "path"],
    registry=REGISTRY,
)
RUNS_FINISHED = Counter(
    "kubemill_runs_finished",
    "Script runs that reached a final phase",
    ["namespace", "language", "path", "phase"],
    registry=REGISTRY,
)
RUN_DURATION = Histogram(
    "kubemill_run_duration_seconds",
    "From a run's start (first Job) to its final phase",
    ["language", "phase"],
    buckets=_RUN_BUCKETS,
    registry=REGISTRY,
)
QUEUE_WAIT = Histogram(
    "kubemill_run_queue_wait_seconds",
    "From a run's creation to its first Job (validation, concurrency limits)",
    ["language"],
    buckets=_RUN_BUCKETS,
    registry=REGISTRY,
)
ACTIVE_RUNS = Gauge(
    "kubemill_active_runs", "Script runs with a Job running now", ["namespace"], registry=REGISTRY
)
RECONCILE_ERRORS = Counter(
    "kubemill_reconcile_errors",
    "Handler failures, by kind and whether they will be retried",
    ["kind", "reason"],
    registry=REGISTRY,
)
API_REQUESTS = Counter(
    "kubemill_kubernetes_api_requests",
    "Requests the operator sent to the Kubernetes API (not counting Kopf's watches)",
    ["verb", "resource", "code"],
    registry=REGISTRY,
)
API_LATENCY = Histogram(
    "kubemill_kubernetes_api_request_duration_seconds",
    "Latency of the operator's Kubernetes API requests",
    ["verb", "resource"],
    buckets=_API_BUCKETS,
    registry=REGISTRY,
)
FLOW_RUNS_FINISHED = Counter(
    "kubemill_flow_runs_finished",
    "Flow runs that reached a final phase",
    ["namespace", "path", "phase"],
    registry=REGISTRY,
)
FLOW_RECONCILE = Histogram(
    "kubemill_flow_reconcile_duration_seconds",
    "One FlowRun reconcile: read, advance, act, write (a step transition is one)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
    registry=REGISTRY,
)
PENDING_APPROVALS = Gauge(
    "kubemill_pending_approvals",
    "FlowRuns waiting for an approval now, by flow path",
    ["namespace", "flow"],
    registry=REGISTRY,
)
PENDING_APPROVAL_OLDEST = Gauge(
    "kubemill_pending_approval_oldest_timestamp_seconds",
    "Unix time when the oldest approval still pending began (absent when none is pending)",
    ["namespace"],
    registry=REGISTRY,
)
SCHEDULE_LAG = Histogram(
    "kubemill_schedule_lag_seconds",
    "From a schedule's tick to the creation of its run (then kubemill_run_queue_wait_seconds applies)",
    ["namespace"],
    buckets=_LAG_BUCKETS,
    registry=REGISTRY,
)

# Warm runner pools (docs/pools.md), kept current by operator/pools.py and pool_dispatch.py.
POOL_QUEUE_DEPTH = Gauge(
    "kubemill_pool_queue_depth",
    "Runs offered to a RunnerPool and not yet claimed",
    ["namespace", "pool"],
    registry=REGISTRY,
)
POOL_BUSY = Gauge(
    "kubemill_pool_busy_workers",
    "Workers of a RunnerPool running a claimed run",
    ["namespace", "pool"],
    registry=REGISTRY,
)
POOL_READY = Gauge(
    "kubemill_pool_ready_workers",
    "Workers of a RunnerPool ready to claim runs",
    ["namespace", "pool"],
    registry=REGISTRY,
)
POOL_CLAIM_LATENCY = Histogram(
    "kubemill_pool_claim_latency_seconds",
    "Time from a run's offer to a worker's claim",
    ["namespace", "pool"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
    registry=REGISTRY,
)
POOL_ATTEMPTS = Counter(
    "kubemill_pool_attempts_total",
    "Attempts offered to a RunnerPool, by how they ended (reported, lost, fell back to a Job)",
    ["namespace", "pool", "outcome"],
    registry=REGISTRY,
)


def observe_api_request(verb: str, resource: str, status: int, seconds: float) -> None:
    """The `kubemill.k8s.client.Observer` hook."""
    API_REQUESTS.labels(verb, resource, str(status)).inc()
    API_LATENCY.labels(verb, resource).observe(seconds)


# --- pending approvals ------------------------------------------------------------------------------------

_FINAL_PHASES = constants.TERMINAL_PHASES


@dataclass(frozen=True)
class ApprovalWait:
    """A FlowRun waiting for an approval: where, of which flow, since when."""

    namespace: str
    flow: str
    since: datetime


def _moment(text: Any) -> datetime | None:
    return datetime.fromisoformat(text) if isinstance(text, str) and text else None


def approval_wait(body: Mapping[str, Any]) -> ApprovalWait | None:
    """What a FlowRun body says about its approvals: None unless it is unfinished and waits for one. The wait
    began when the earliest pending step was suspended (its record's `finishedAt`, else `startedAt`)."""
    meta, status = body["metadata"], body.get("status") or {}
    pending = status.get("pendingApprovals") or []
    if not pending or status.get("phase") in _FINAL_PHASES:
        return None
    steps = status.get("steps") or {}
    fallback = _moment(status.get("startedAt")) or _moment(meta.get("creationTimestamp"))
    records = [steps.get(approval.get("step")) or {} for approval in pending]
    moments = [_moment(r.get("finishedAt")) or _moment(r.get("startedAt")) or fallback for r in records]
    since = min((m for m in moments if m is not None), default=None)
    if since is None:
        return None
    return ApprovalWait(meta["namespace"], str((body.get("spec") or {}).get("flowPath") or ""), since)


def approval_gauges(waits: Iterable[ApprovalWait]) -> tuple[dict[tuple[str, str], int], dict[str, float]]:
    """The runs waiting by (namespace, flow), and the unix time the oldest wait began by namespace."""
    counts: dict[tuple[str, str], int] = {}
    oldest: dict[str, float] = {}
    for wait in waits:
        counts[(wait.namespace, wait.flow)] = counts.get((wait.namespace, wait.flow), 0) + 1
        since = wait.since.timestamp()
        oldest[wait.namespace] = min(oldest.get(wait.namespace, since), since)
    return counts, oldest


class PendingApprovals:
    """The FlowRuns waiting for approval, by (namespace, name), published as the two gauges on each change.
    A (namespace, flow) that had waiting runs reads 0 once none waits; a namespace without any pending
    approval has no oldest-timestamp series (a 0 there would look like a wait since 1970)."""

    def __init__(self) -> None:
        self._waits: dict[tuple[str, str], ApprovalWait] = {}
        self._counted: set[tuple[str, str]] = set()
        self._dated: set[str] = set()
        self._lock = threading.Lock()

    def observe(self, body: Mapping[str, Any], deleted: bool = False) -> None:
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        wait = None if deleted else approval_wait(body)
        with self._lock:
            if self._waits.get(key) == wait:
                return
            if wait is None:
                self._waits.pop(key, None)
            else:
                self._waits[key] = wait
            counts, oldest = approval_gauges(self._waits.values())
            for series in self._counted | set(counts):
                PENDING_APPROVALS.labels(*series).set(counts.get(series, 0))
            self._counted |= set(counts)
            for namespace in self._dated - set(oldest):
                PENDING_APPROVAL_OLDEST.remove(namespace)
            for namespace, since in oldest.items():
                PENDING_APPROVAL_OLDEST.labels(namespace).set(since)
            self._dated = set(oldest)


PENDING = PendingApprovals()


def serve(port: int, address: str = "0.0.0.0") -> None:  # noqa: S104 - the default listen address of a pod
    """Serve `/metrics` on a background thread."""
    start_http_server(port, addr=address, registry=REGISTRY)
