"""The operator's Prometheus metrics (prefix `kubemill_`), served on `/metrics`.

Handlers record what users care about (runs started and finished, how long they ran, how long they waited,
how many are active) and what operators of the operator care about (reconcile errors, Kubernetes API
requests and their latency, observed through `kubemill.k8s.client.Kube`'s observer hook).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

REGISTRY = CollectorRegistry(auto_describe=True)

_RUN_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600)
_API_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)

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


def observe_api_request(verb: str, resource: str, status: int, seconds: float) -> None:
    """The `kubemill.k8s.client.Observer` hook."""
    API_REQUESTS.labels(verb, resource, str(status)).inc()
    API_LATENCY.labels(verb, resource).observe(seconds)


def serve(port: int, address: str = "0.0.0.0") -> None:
    """Serve `/metrics` on a background thread."""
    start_http_server(port, addr=address, registry=REGISTRY)
