"""RunnerPool handlers: a pool becomes its workers, and its status says what they are doing.

A RunnerPool becomes a ServiceAccount, a Role on the namespace's Jobs, a RoleBinding and a Deployment of
workers (k8s/pools.py builds them, docs/pools.md says how they work). A timer reads each pool's Deployment and
Jobs every two seconds: the pool's status (ready, busy, queued: `kubectl get runnerpools`), its Prometheus
gauges, and the run executor's dispatcher's view of its capacity.
"""

from __future__ import annotations

from typing import Any

import kopf

from kubemill import __version__
from kubemill.k8s import pools as kpools
from kubemill.k8s.api import KubeApi
from kubemill.operator.pool_dispatch import BUSY_WORKERS, QUEUE_DEPTH, READY_WORKERS, PoolInfo
from kubemill.operator.runtime import Operator, of

GROUP, VERSION = "kubemill.dev", "v1alpha1"
AGENT_IMAGE = "ghcr.io/kubemill/operator:{version}"  # the operator image (Dockerfile, chart, build-images)


def _info_of(body: Any, ready: int = 0, queued: int = 0) -> PoolInfo:
    spec = body.get("spec") or {}
    return PoolInfo(
        language=str(spec.get("language", "python3")),
        default=bool(spec.get("default", False)),
        lease_seconds=int(spec.get("leaseSeconds", 10)),
        claim_timeout_seconds=int(spec.get("claimTimeoutSeconds", 30)),
        max_queued=int(spec.get("maxQueued", 100)),
        ready=ready,
        queued=queued,
    )


def apply_pool(api: KubeApi, runner_image_template: str, agent_image: str, body: Any) -> None:
    """Create or bring up to date the pool's ServiceAccount, Role, RoleBinding and Deployment."""
    spec = body.get("spec") or {}
    runner_image = spec.get("image") or runner_image_template.format(
        language=spec.get("language", "python3"), version=__version__
    )
    agent_image = spec.get("agentImage") or agent_image or AGENT_IMAGE.format(version=__version__)
    for obj in kpools.build_pool_objects(body, agent_image, runner_image):
        _, created = api.create(obj, adopt_any=True)
        if not created and obj["kind"] == "Deployment":
            api.patch(
                "apps/v1",
                "Deployment",
                obj["metadata"]["namespace"],
                obj["metadata"]["name"],
                {"spec": {"replicas": obj["spec"]["replicas"], "template": obj["spec"]["template"]}},
            )


@kopf.on.event(GROUP, VERSION, "runnerpools")
def pool_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    op = of(memo)
    applied = op.executor.pools.applied
    namespace, name = body.metadata.namespace or "", body.metadata.name or ""
    if type == "DELETED":
        op.executor.pools.update(namespace, name, None)
        applied.pop((namespace, name), None)
        return
    seen = (body.metadata.uid or "", int(body.get("metadata", {}).get("generation") or 0))
    if applied.get((namespace, name)) != seen:
        apply_pool(op.kube, op.settings.runner_image_template, op.settings.pool_agent_image, dict(body))
        applied[(namespace, name)] = seen
        refresh(op, namespace, name, dict(body))


@kopf.timer(GROUP, VERSION, "runnerpools", interval=2.0, idle=0)
def pool_timer(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    refresh(of(memo), body.metadata.namespace or "", body.metadata.name or "", dict(body))


def refresh(op: Operator, namespace: str, name: str, body: dict[str, Any]) -> None:
    """The pool's workers and queue, read afresh: the dispatcher's view, the gauges, the status."""
    api = op.kube
    deployment = api.get_or_none("apps/v1", "Deployment", namespace, kpools.deployment_name(name))
    ready = int(((deployment or {}).get("status") or {}).get("readyReplicas") or 0)
    replicas = int(((deployment or {}).get("status") or {}).get("replicas") or 0)
    jobs = api.list("batch/v1", "Job", namespace, labels={kpools.LABEL_POOL: name})
    queued, busy = kpools.counts(jobs)
    op.executor.pools.update(namespace, name, _info_of(body, ready, queued))
    QUEUE_DEPTH.labels(namespace, name).set(queued)
    BUSY_WORKERS.labels(namespace, name).set(busy)
    READY_WORKERS.labels(namespace, name).set(ready)
    status = {
        "observedGeneration": body.get("metadata", {}).get("generation"),
        "replicas": replicas,
        "readyReplicas": ready,
        "busy": busy,
        "queued": queued,
    }
    old = body.get("status") or {}
    if any(old.get(k) != v for k, v in status.items()):
        api.patch("kubemill.dev/v1alpha1", "RunnerPool", namespace, name, {"status": status}, status=True)
