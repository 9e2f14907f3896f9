"""Pure builders and readers for what a FlowRun owns: its child runs, its large result, its observations.

The FlowRun handler lists a run's children by the `kubemill.dev/flow-run-uid` label, turns them into the
engine's `ChildObservation`s here, and turns the engine's `CreateRun` actions into child manifests here.
Children carry a controller owner reference to the FlowRun, so deleting a FlowRun deletes them (and their
Jobs) through the garbage collector, and their names come from the engine (deterministic, so a create after
a crash meets 409 and adopts). Nothing here does I/O.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, get_args

import pydantic

from kubemill import constants
from kubemill.engine.actions import CacheEntry, ChildObservation, ChildPhase, CreateRun, StoreCache
from kubemill.models.common import API_VERSION
from kubemill.models.flows import FlowRun, FlowRunStatus
from kubemill.models.openflow import OpenFlow
from kubemill.models.scripts import LOCKED, ResultRef, RunError

PARENT_UID_LABEL = constants.LABEL_FLOW_RUN_UID
"""On every child run: the uid of the FlowRun that created it (label values are limited to 63 characters,
so the uid, not the name)."""
STEP_ANNOTATION = constants.ANNOTATION_STEP
CANCEL_ANNOTATION = constants.ANNOTATION_CANCEL
"""Any value on a FlowRun asks for it to be cancelled (children in flight are deleted)."""
RESULT_INLINE_LIMIT = 16 * 1024
"""A FlowRun result whose JSON is larger than this goes to a ConfigMap (`status.resultRef`)."""
RESULT_KEY = "result.json"

Body = dict[str, Any]


def owner_reference(run: FlowRun) -> Body:
    return {
        "apiVersion": API_VERSION,
        "kind": "FlowRun",
        "name": run.metadata.name,
        "uid": run.metadata.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


SNAPSHOT_KEY = "flow.json"


def flow_document(flow: OpenFlow) -> tuple[str, str]:
    """(canonical JSON, sha256) of an OpenFlow document: what a run pins when it starts."""
    text = json.dumps(flow.to_document(), sort_keys=True, separators=(",", ":"))
    return text, hashlib.sha256(text.encode()).hexdigest()


def flow_snapshot(run: FlowRun, text: str, digest: str) -> Body:
    """The immutable ConfigMap (owned by the run) holding the Flow as the run started it."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": f"{run.metadata.name}-flow"[:253],
            "namespace": run.metadata.namespace,
            "labels": {"app.kubernetes.io/managed-by": "kubemill"},
            "annotations": {"kubemill.dev/flow-hash": digest},
            "ownerReferences": [owner_reference(run)],
        },
        "immutable": True,
        "data": {SNAPSHOT_KEY: text},
    }


SHARED_SIZE_ENV = "KUBEMILL_SHARED_STORAGE_SIZE"
SHARED_CLASS_ENV = "KUBEMILL_SHARED_STORAGE_CLASS"


def shared_claim_name(run: FlowRun) -> str:
    """The PersistentVolumeClaim of a `same_worker` FlowRun: its steps' `./shared` folder."""
    return f"{run.metadata.name}-shared"  # what ScriptRunSpec's rule accepts as a step's sharedClaim


def shared_claim(run: FlowRun, env: Mapping[str, str] | None = None) -> Body:
    """The per-run claim (owned by the run) mounted at `./shared` in every step pod of a `same_worker` flow:
    ReadWriteOnce (one node: the step pods follow each other there, builders.build_job); size and class
    from `KUBEMILL_SHARED_STORAGE_SIZE` (default 1Gi) and `KUBEMILL_SHARED_STORAGE_CLASS` (default: the
    cluster's default class)."""
    env = os.environ if env is None else env
    spec: Body = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": env.get(SHARED_SIZE_ENV) or "1Gi"}},
    }
    if env.get(SHARED_CLASS_ENV):
        spec["storageClassName"] = env[SHARED_CLASS_ENV]
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": shared_claim_name(run),
            "namespace": run.metadata.namespace,
            "labels": {"app.kubernetes.io/managed-by": "kubemill", PARENT_UID_LABEL: run.metadata.uid or ""},
            "ownerReferences": [owner_reference(run)],
        },
        "spec": spec,
    }


def child_run_manifest(
    action: CreateRun,
    parent: FlowRun,
    annotations: Mapping[str, str] | None = None,
    shared_claim: str | None = None,
) -> Body:
    """The child ScriptRun or FlowRun for one `CreateRun` action (`annotations` added to its own); a step
    of a `same_worker` flow mounts `shared_claim` at `./shared`."""
    spec: Body = {"args": dict(action.args), "flowRun": parent.metadata.name, "stepId": action.step}
    if action.kind == "FlowRun":
        spec["flowPath"] = action.flow_path
    elif action.script is not None:
        spec["script"] = {"language": action.script.language, "content": action.script.content}
        if action.script.lock and action.script.language in LOCKED:  # Windmill's pinned deps
            spec["script"]["lock"] = action.script.lock
    else:
        spec["scriptPath"] = action.script_path
    if action.kind == "ScriptRun":
        spec["flowUserStates"] = dict(action.flow_user_states)
        if action.entrypoint != "main":  # the preprocessor_module step (engine/entrypoints.py)
            spec["entrypoint"] = action.entrypoint
        if shared_claim is not None:
            spec["sharedClaim"] = shared_claim
    if action.timeout_seconds and action.kind == "ScriptRun":
        spec["timeoutSeconds"] = max(1, int(action.timeout_seconds))
    if parent.spec.schedule_path is not None:
        spec["schedulePath"] = parent.spec.schedule_path
    return {
        "apiVersion": API_VERSION,
        "kind": action.kind,
        "metadata": {
            "name": action.name,
            "namespace": parent.metadata.namespace,
            "labels": {PARENT_UID_LABEL: parent.metadata.uid},
            "annotations": {
                STEP_ANNOTATION: action.step,
                "kubemill.dev/attempt": str(action.attempt),
                **(annotations or {}),
            },
            "ownerReferences": [owner_reference(parent)],
        },
        "spec": spec,
    }


def result_config_map(parent: FlowRun, result: object) -> Body:
    """The ConfigMap (owned by the run) that holds a result too large for the status."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": f"{parent.metadata.name}-result"[:253],
            "namespace": parent.metadata.namespace,
            "labels": {PARENT_UID_LABEL: parent.metadata.uid or ""},
            "ownerReferences": [owner_reference(parent)],
        },
        "data": {RESULT_KEY: json.dumps(result, separators=(",", ":"))},
    }


def offload_result(status: FlowRunStatus, parent: FlowRun) -> tuple[FlowRunStatus, Body | None]:
    """A finished status whose result is too large: the result moves to a ConfigMap named in `resultRef`."""
    if status.result is None or len(json.dumps(status.result, separators=(",", ":"))) <= RESULT_INLINE_LIMIT:
        return status, None
    config_map = result_config_map(parent, status.result)
    ref = ResultRef(name=config_map["metadata"]["name"], key=RESULT_KEY)
    return status.model_copy(update={"result": None, "result_ref": ref}), config_map


def observe_child(body: Mapping[str, Any], read_ref: Any) -> ChildObservation:
    """A child run as the engine sees it; `read_ref(name, key)` reads an offloaded result."""
    status = body.get("status") or {}
    phase = status.get("phase") or "Pending"
    if phase not in get_args(ChildPhase):
        phase = "Pending"
    result = status.get("result")
    ref = status.get("resultRef")
    if phase == "Succeeded" and result is None and isinstance(ref, Mapping) and ref.get("s3"):
        # over 1 MiB, in the workspace storage: later steps get Windmill's S3Object (wmill.load_s3_file)
        result = {"s3": ref["s3"]}
    elif phase == "Succeeded" and result is None and isinstance(ref, Mapping) and ref.get("name"):
        result = read_ref(ref["name"], ref.get("key") or RESULT_KEY)
    error = None
    if status.get("error"):
        try:
            error = RunError.model_validate(status["error"])
        except pydantic.ValidationError:
            error = RunError(name="Error", message=json.dumps(status["error"])[:1000])
    states = status.get("flowUserStates")
    return ChildObservation.model_validate(
        {
            "phase": phase,
            "result": result,
            "error": error,
            "flow_user_states": states if isinstance(states, Mapping) else None,
        }
    )


def observe_children(bodies: Iterable[Mapping[str, Any]], read_ref: Any) -> dict[str, ChildObservation]:
    """The engine's view of a run's children, by name. A child deleted before it finished (by someone
    else than the engine) counts as cancelled, so its step fails instead of running again."""
    observed = {}
    for body in bodies:
        child = observe_child(body, read_ref)
        if body.get("metadata", {}).get("deletionTimestamp") and child.phase not in TERMINAL:
            message = f"child run {body['metadata']['name']} was deleted before it finished"
            child = ChildObservation(phase="Cancelled", error=RunError(name="Cancelled", message=message))
        observed[body["metadata"]["name"]] = child
    return observed


TERMINAL = constants.TERMINAL_PHASES


def status_body(status: FlowRunStatus) -> Body:
    """The status as written to the API (camelCase, defaults left out)."""
    body: Body = json.loads(status.to_json())
    return body


CACHE_LABEL = constants.LABEL_CACHE
"""On the ConfigMaps holding `cache_ttl` results (value `result`); the key is in the name."""
CACHE_EXPIRES_ANNOTATION = constants.ANNOTATION_EXPIRES_AT
CACHE_PREFIX = "kubemill-cache-"


def cache_config_map(namespace: str, action: StoreCache) -> Body:
    """The ConfigMap keeping one cached result (no owner: it outlives the run that made it, until it
    expires)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": f"{CACHE_PREFIX}{action.key}",
            "namespace": namespace,
            "labels": {CACHE_LABEL: "result"},
            "annotations": {CACHE_EXPIRES_ANNOTATION: action.expires_at.isoformat()},
        },
        "data": {RESULT_KEY: json.dumps(action.result, separators=(",", ":"))},
    }


def cache_entries(items: list[Body], now: datetime) -> tuple[dict[str, CacheEntry], list[str]]:
    """The live cached results by key, and the names of the expired (or unreadable) cache ConfigMaps."""
    entries: dict[str, CacheEntry] = {}
    expired: list[str] = []
    for item in items:
        meta = item["metadata"]
        try:
            expires = datetime.fromisoformat((meta.get("annotations") or {})[CACHE_EXPIRES_ANNOTATION])
            result = json.loads((item.get("data") or {})[RESULT_KEY])
        except (KeyError, ValueError):
            expired.append(meta["name"])
            continue
        if expires <= now:
            expired.append(meta["name"])
        else:
            entries[meta["name"].removeprefix(CACHE_PREFIX)] = CacheEntry(result=result, expires_at=expires)
    return entries, expired
