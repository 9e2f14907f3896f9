"""RunnerPool handlers: a pool becomes its workers, and its status says what they are doing.

A RunnerPool becomes a key Secret (what seals its runs' files, k8s/pool_inputs.py), a ServiceAccount, a Role
on the namespace's Jobs, a RoleBinding and a Deployment of workers (k8s/pools.py builds them, docs/pools.md
says how they work). A timer reads each pool's Deployment and
Jobs every two seconds: the pool's status (ready, busy, queued: `kubectl get runnerpools`), its Prometheus
gauges, and the run executor's dispatcher's view of its capacity.
"""

from __future__ import annotations

import base64
from typing import Any

import kopf

from kubemill import __version__
from kubemill.errors import NotOurs
from kubemill.k8s import pool_inputs
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


def pool_key(api: KubeApi, body: Any) -> bytes:
    """The pool's sealing key: its key Secret's, created with a new random key when there is none. A Secret
    of that name that this pool does not own, or that holds no key, is refused (NotOurs), never used: whoever
    planted it would know the key."""
    secret, created = api.create(kpools.build_key_secret(body, pool_inputs.new_key()), adopt_any=True)
    data = secret.get("data")
    if created and not data:  # the create's answer carries `data`; a fake may echo stringData only
        data = {k: base64.b64encode(v.encode()).decode() for k, v in secret["stringData"].items()}
    owners = {o.get("uid") for o in (secret.get("metadata") or {}).get("ownerReferences") or []}
    key = pool_inputs.key_from_secret_data(data)
    if key is None or body["metadata"].get("uid") not in owners:
        name = kpools.key_secret_name(body["metadata"]["name"])
        raise NotOurs(
            f"Secret {body['metadata']['namespace']}/{name} is not this RunnerPool's key (it must be owned "
            f"by the pool and hold a {pool_inputs.KEY_BYTES}-byte key under '{pool_inputs.KEY_FILE}'): "
            "delete it, or find who made it"
        )
    return key


def apply_pool(api: KubeApi, runner_image_template: str, agent_image: str, body: Any) -> bytes:
    """Create or bring up to date the pool's key Secret, ServiceAccount, Role, RoleBinding and Deployment;
    the pool's key."""
    key = pool_key(api, body)
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
    return key


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
        key = apply_pool(op.kube, op.settings.runner_image_template, op.settings.pool_agent_image, dict(body))
        op.executor.pools.set_key(namespace, name, key)
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
