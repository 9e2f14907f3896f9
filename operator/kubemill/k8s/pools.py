"""Warm runner pools, the pure half: the objects a RunnerPool becomes, and the claim protocol on a Job.

A run offered to a pool is an ordinary attempt Job created *suspended* (no pod starts) and labelled with the
pool; its pod template is what a worker executes, so a pool run gets exactly the env, code, args and resources
a Job's pod would. The claim lives in the Job's annotations and moves only by JSON patches whose `test`
operations make each step atomic:

    offered --claim (a worker)--> claimed --report--> done
       |                             |--hand back--> offered
       |                             '--lease lapsed (the operator)--> lost
       '--fall back (the operator: unclaimed too long, or no ready worker)--> job  (the Job is unsuspended)

A claimed run whose claim is not renewed within the pool's `leaseSeconds` is lost: the operator fails the
attempt (`WorkerLost`) and the Script's retry decides what follows; a late report from that worker fails its
`test` (the state is no longer `claimed` by it) and is dropped, so no attempt is recorded twice.

The run's files travel sealed on the offered Job itself (k8s/pool_inputs.py): the pool's identity reads no
Secret or ConfigMap. docs/security.md says what that identity can and cannot read.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from kubemill.k8s import pool_inputs
from kubemill.k8s.builders import (
    CONTAINER,
    MANAGED_BY,
    RunIdentity,
    child_name,
    owner_reference,
)
from kubemill.k8s.jobs import restricted_container_security, restricted_pod_security
from kubemill.runners import command_for

LABEL_POOL = "kubemill.dev/pool"
OFFERED_TO = "kubemill.dev/offered-to-pool"
"""On an offered Job's pod template (fixed once a Job has started): the pool the operator offered it to."""
OFFERED_TO_ACCOUNT = "kubemill.dev/offered-to-account"
"""Beside `OFFERED_TO`: that pool's workers' ServiceAccount, the one account the admission policy lets patch
the Job (k8s/pool_admission.py; RBAC cannot name the Jobs of a pool, and CEL cannot derive the account)."""
STATE = "kubemill.dev/pool-state"
WORKER = "kubemill.dev/pool-worker"
CLAIMED_AT = "kubemill.dev/pool-claimed-at"
RENEWED_AT = "kubemill.dev/pool-renewed-at"
OUTCOME = "kubemill.dev/pool-outcome"
OFFERED_AT = "kubemill.dev/pool-offered-at"
FALLBACK = "kubemill.dev/pool-fallback"
"""On a Job that runs as a Job although its Script names a pool: why (kubectl describe job shows it)."""
OUTCOME_MAX = 200 * 1024
"""Bytes of result envelope a worker reports in the Job's annotation (annotations hold 256 KiB in all)."""
WORK_DIR = "/var/run/kubemill-pool"
SOCKET = f"{WORK_DIR}/fork.sock"
TOKEN_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"  # noqa: S105 - a name, not a secret
State = Literal["offered", "claimed", "done", "lost", "job"]


def _pointer(annotation: str) -> str:
    return "/metadata/annotations/" + annotation.replace("~", "~0").replace("/", "~1")


def _iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# --- offering a Job to a pool ------------------------------------------------------------------------------


def offer_problem(job: Mapping[str, Any]) -> str | None:
    """Why this attempt's pod cannot run in a pool worker (None: it can)."""
    pod = job["spec"]["template"]["spec"]
    if pod.get("serviceAccountName"):
        return "the Script sets spec.runner.serviceAccountName (an identity of its own): runs as a Job"
    if any("persistentVolumeClaim" in v for v in pod.get("volumes") or []):
        return "a same_worker flow's step mounts the run's ./shared volume: runs as a Job"
    if pod.get("nodeSelector") or pod.get("tolerations"):
        return "the Script sets spec.runner.nodeSelector or tolerations: runs as a Job where it asks"
    container = pod["containers"][0]
    if container.get("resources"):
        return "the Script sets spec.runner.resources (a pool's workers share the pool's): runs as a Job"
    if any("valueFrom" in e for e in container.get("env") or []):
        return "the Script's env reads a Secret or ConfigMap (valueFrom): runs as a Job"
    return None


def offered(job: Mapping[str, Any], pool: str, now: datetime, sealed_inputs: str) -> dict[str, Any]:
    """The attempt's Job as offered to `pool`: suspended, labelled, annotated with the claim state and its
    sealed files (`pool_inputs.seal`, for the pool's workers: they read no Secret or ConfigMap). Its
    pod template names the pool too (`OFFERED_TO`): a Job's template cannot change once the Job has started,
    so a Job created to run as a pod cannot be relabelled into a pool Job by whoever may patch Jobs. And it
    names the pool's ServiceAccount (`OFFERED_TO_ACCOUNT`), the one worker account admission lets patch it."""
    meta = job["metadata"]
    template = job["spec"]["template"]
    template_meta = template.get("metadata") or {}
    template_labels = {
        **(template_meta.get("labels") or {}),
        OFFERED_TO: pool,
        OFFERED_TO_ACCOUNT: worker_account(pool),
    }
    return {
        **job,
        "metadata": {
            **meta,
            "labels": {**(meta.get("labels") or {}), LABEL_POOL: pool},
            "annotations": {
                **(meta.get("annotations") or {}),
                STATE: "offered",
                OFFERED_AT: _iso(now),
                pool_inputs.INPUTS: sealed_inputs,
            },
        },
        "spec": {
            **job["spec"],
            "suspend": True,
            "template": {**template, "metadata": {**template_meta, "labels": template_labels}},
        },
    }


def with_fallback_reason(job: Mapping[str, Any], reason: str) -> dict[str, Any]:
    meta = job["metadata"]
    return {**job, "metadata": {**meta, "annotations": {**(meta.get("annotations") or {}), FALLBACK: reason}}}


def pool_of(job: Mapping[str, Any]) -> str | None:
    """The pool a Job was offered to, while the pool (not the Job) runs it. Only a Job whose pod template
    names the same pool (as the operator creates an offered Job) counts: whoever may patch Jobs (a namespace
    editor; a pool's ServiceAccount too where the admission policy of k8s/pool_admission.py is not installed)
    can relabel and annotate one, and must not have the pool report the outcome of a Job that runs a pod."""
    meta = job.get("metadata") or {}
    state = (meta.get("annotations") or {}).get(STATE)
    if state in (None, "job"):
        return None
    pool = str((meta.get("labels") or {}).get(LABEL_POOL) or "")
    template_meta = ((job.get("spec") or {}).get("template") or {}).get("metadata") or {}
    if not pool or (template_meta.get("labels") or {}).get(OFFERED_TO) != pool:
        return None
    return pool


# --- the claim protocol ------------------------------------------------------------------------------------


def _test(annotation: str, value: str) -> dict[str, Any]:
    return {"op": "test", "path": _pointer(annotation), "value": value}


def _set(annotation: str, value: str) -> dict[str, Any]:
    return {"op": "add", "path": _pointer(annotation), "value": value}  # add replaces an existing member


def claim_patch(worker: str, now: datetime) -> list[dict[str, Any]]:
    return [
        _test(STATE, "offered"),
        _set(STATE, "claimed"),
        _set(WORKER, worker),
        _set(CLAIMED_AT, _iso(now)),
        _set(RENEWED_AT, _iso(now)),
    ]


def renew_patch(worker: str, now: datetime) -> list[dict[str, Any]]:
    return [_test(STATE, "claimed"), _test(WORKER, worker), _set(RENEWED_AT, _iso(now))]


def report_patch(worker: str, envelope_text: str) -> list[dict[str, Any]]:
    return [_test(STATE, "claimed"), _test(WORKER, worker), _set(STATE, "done"), _set(OUTCOME, envelope_text)]


def hand_back_patch(worker: str) -> list[dict[str, Any]]:
    return [
        _test(STATE, "claimed"),
        _test(WORKER, worker),
        _set(STATE, "offered"),
        {"op": "remove", "path": _pointer(WORKER)},
    ]


def lost_patch(worker: str) -> list[dict[str, Any]]:
    """The operator's, when a claim lapsed: the worker's late report then fails its `test`."""
    return [_test(STATE, "claimed"), _test(WORKER, worker), _set(STATE, "lost")]


def fall_back_patch(reason: str) -> list[dict[str, Any]]:
    """The operator's: only an offered (unclaimed) run falls back, and it becomes an ordinary Job."""
    return [
        _test(STATE, "offered"),
        _set(STATE, "job"),
        _set(FALLBACK, reason),
        {"op": "replace", "path": "/spec/suspend", "value": False},
    ]


@dataclass(frozen=True)
class Claim:
    """Where a pool attempt stands, read from its Job."""

    state: State
    worker: str | None = None
    offered_at: datetime | None = None
    claimed_at: datetime | None = None
    renewed_at: datetime | None = None
    outcome: str | None = None

    def expired(self, now: datetime, lease_seconds: float) -> bool:
        return self.renewed_at is not None and now - self.renewed_at > timedelta(seconds=lease_seconds)


def claim_of(job: Mapping[str, Any]) -> Claim:
    notes = (job.get("metadata") or {}).get("annotations") or {}

    def when(key: str) -> datetime | None:
        return _parse(notes[key]) if notes.get(key) else None

    state = notes.get(STATE, "job")
    return Claim(
        state=state if state in ("offered", "claimed", "done", "lost", "job") else "job",
        worker=notes.get(WORKER),
        offered_at=when(OFFERED_AT),
        claimed_at=when(CLAIMED_AT),
        renewed_at=when(RENEWED_AT),
        outcome=notes.get(OUTCOME),
    )


# --- the pool's own objects --------------------------------------------------------------------------------


def worker_account(pool: str) -> str:
    return child_name(pool, "worker")


def key_secret_name(pool: str) -> str:
    return child_name(pool, "key")


def build_key_secret(pool: Mapping[str, Any], key: bytes) -> dict[str, Any]:
    """The pool's sealing key (k8s/pool_inputs.py), mounted into its agent containers only; owned by the pool.
    The operator creates it once and never replaces it: workers running keep opening what it seals."""
    name = pool["metadata"]["name"]
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _pool_meta(pool, key_secret_name(name), {LABEL_POOL: name}),
        "type": "Opaque",
        "stringData": {pool_inputs.KEY_FILE: pool_inputs.key_secret_value(key)},
    }


def _pool_meta(pool: Mapping[str, Any], name: str, labels: Mapping[str, str]) -> dict[str, Any]:
    meta = pool["metadata"]
    owner = RunIdentity(meta["namespace"], meta["name"], meta.get("uid", ""), kind="RunnerPool")
    return {
        "name": name,
        "namespace": meta["namespace"],
        "labels": {**MANAGED_BY, **labels},
        "ownerReferences": [owner_reference(owner)],
    }


def build_pool_objects(pool: Mapping[str, Any], agent_image: str, runner_image: str) -> list[dict[str, Any]]:
    """ServiceAccount, Role (get/list/watch/patch on the namespace's Jobs; admission narrows the patches to
    the pool's own Jobs: k8s/pool_admission.py), RoleBinding and the Deployment (its agent containers mount
    the key Secret, `build_key_secret`, which the operator creates first)."""
    name = pool["metadata"]["name"]
    spec = pool["spec"]
    account = worker_account(name)
    labels = {LABEL_POOL: name}
    rbac = "rbac.authorization.k8s.io"
    sa: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _pool_meta(pool, account, labels),
        "automountServiceAccountToken": False,
    }
    role = {
        "apiVersion": f"{rbac}/v1",
        "kind": "Role",
        "metadata": _pool_meta(pool, account, labels),
        "rules": [
            {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get", "list", "watch", "patch"]}
        ],
    }
    binding = {
        "apiVersion": f"{rbac}/v1",
        "kind": "RoleBinding",
        "metadata": _pool_meta(pool, account, labels),
        "roleRef": {"apiGroup": rbac, "kind": "Role", "name": account},
        "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": pool["metadata"]["namespace"]}],
    }
    restricted = restricted_container_security()
    lease = int(spec.get("leaseSeconds", 10))
    agent = {
        "name": "agent",
        "image": agent_image,
        "imagePullPolicy": "IfNotPresent",
        "command": [
            "kubemill",
            "worker",
            "--pool",
            name,
            "--lease-seconds",
            str(lease),
            "--socket",
            SOCKET,
            "--key-file",
            f"{pool_inputs.KEY_DIR}/{pool_inputs.KEY_FILE}",
        ],
        "env": [
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "HOME", "value": "/tmp"},  # noqa: S108 - a path inside the pod
        ],
        "securityContext": restricted,
        "volumeMounts": [
            {"name": "work", "mountPath": WORK_DIR},
            {"name": "token", "mountPath": TOKEN_DIR, "readOnly": True},
            {"name": "key", "mountPath": pool_inputs.KEY_DIR, "readOnly": True},
            {"name": "agent-tmp", "mountPath": "/tmp"},  # noqa: S108 - a path inside the pod
        ],
    }
    runner_command = command_for(spec["language"])
    runner = {
        "name": CONTAINER,
        "image": runner_image,
        "imagePullPolicy": "IfNotPresent",
        "command": [
            runner_command[0],
            runner_command[1].replace("run.py", "forkserver.py"),
            "--listen",
            SOCKET,
        ],
        "env": [
            {"name": "HOME", "value": "/tmp"},  # noqa: S108 - a path inside the pod
            {"name": "PYTHONUNBUFFERED", "value": "1"},
            {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"},
        ],
        "workingDir": "/tmp",  # noqa: S108 - a path inside the pod (an emptyDir), not the host's /tmp
        "securityContext": restricted,
        "volumeMounts": [{"name": "work", "mountPath": WORK_DIR}, {"name": "tmp", "mountPath": "/tmp"}],  # noqa: S108
    }
    if spec.get("resources"):
        runner["resources"] = dict(spec["resources"])
    token_sources = [
        {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]}},
    ]
    pod = {
        "serviceAccountName": account,
        "automountServiceAccountToken": False,  # the token is mounted into the agent container alone
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 30,
        "securityContext": restricted_pod_security(),
        "containers": [agent, runner],
        "volumes": [
            {"name": "work", "emptyDir": {}},
            {"name": "tmp", "emptyDir": {}},
            {"name": "agent-tmp", "emptyDir": {}},
            {"name": "token", "projected": {"defaultMode": 0o444, "sources": token_sources}},
            {"name": "key", "secret": {"secretName": key_secret_name(name), "defaultMode": 0o444}},
        ],
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _pool_meta(pool, child_name(name, "pool"), labels),
        "spec": {
            "replicas": int(spec.get("replicas", 2)),
            "selector": {"matchLabels": {**MANAGED_BY, **labels}},
            "template": {"metadata": {"labels": {**MANAGED_BY, **labels}}, "spec": pod},
        },
    }
    return [sa, role, binding, deployment]


def deployment_name(pool: str) -> str:
    return child_name(pool, "pool")


def counts(jobs: Sequence[Mapping[str, Any]]) -> tuple[int, int]:
    """(queued, busy) among a pool's Jobs."""
    states = [claim_of(j).state for j in jobs]
    return states.count("offered"), states.count("claimed")


def envelope_text(result_file_text: str | None, summary_text: str | None) -> str:
    """What a worker reports: the whole envelope when it fits the annotation, else the runner's summary
    (the termination message: the error, or a `truncated` marker the operator turns into a failure)."""
    if result_file_text is not None and len(result_file_text.encode()) <= OUTCOME_MAX:
        return result_file_text
    if summary_text:
        return summary_text
    size = len(result_file_text.encode()) if result_file_text is not None else 0
    return json.dumps({"result": None, "error": None, "state": None, "truncated": True, "bytes": size})
