"""Flow and FlowRun handlers: a Flow's `Ready` condition, and driving each FlowRun with the pure engine.

A FlowRun is reconciled by one function, `reconcile_run`: read the run, its Flow and its children, call
`advance()`, carry out the actions (create or delete child runs, offload a large result), write the status
once (a whole-status update guarded by `resourceVersion`, so two writers can never interleave). It is
triggered by the run's own watch events (creation, annotations for approvals and cancel), by a child run
reaching a final phase, and by timers for the engine's `RequeueAfter` (`run_queue.RunQueue` serialises and
coalesces them). Kopf's `on.event` handlers are used (no progress annotations, no extra writes):
the reconcile is idempotent, so an event seen twice costs a few reads and nothing else.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import kopf
import pydantic

from kubemill import constants
from kubemill.engine import (
    CacheEntry,
    CreateRun,
    DeleteRun,
    EarlyReturn,
    Finish,
    Observations,
    RequeueAfter,
    StoreCache,
    advance,
    restart,
    validate_flow,
)
from kubemill.engine.cache import uses_cache
from kubemill.engine.state import RunError
from kubemill.engine.validation import field_problems, input_key_problems, unknown_key_problems
from kubemill.errors import NotFound, NotOurs
from kubemill.k8s.api import KubeApi
from kubemill.k8s.builders import resume_secret_name
from kubemill.k8s.flowruns import (
    CACHE_LABEL,
    CANCEL_ANNOTATION,
    PARENT_UID_LABEL,
    SNAPSHOT_KEY,
    TERMINAL,
    cache_config_map,
    cache_entries,
    child_run_manifest,
    flow_document,
    flow_snapshot,
    observe_children,
    offload_result,
    shared_claim,
    shared_claim_name,
    status_body,
)
from kubemill.models.common import API_VERSION, Condition
from kubemill.models.flows import MAX_SUBFLOW_DEPTH, Flow, FlowPin, FlowRun, FlowRunStatus
from kubemill.models.openflow import OpenFlow, PathFlow, PathScript
from kubemill.operator import kube, metrics
from kubemill.operator.approvals import approval_events, requester_of
from kubemill.operator.resume_urls import resume_secret, resume_urls_document
from kubemill.operator.run_queue import RunQueue
from kubemill.operator.script_catalog import claim_order

log = logging.getLogger("kubemill.flows")

GROUP, VERSION = API_VERSION.split("/")


# --- reading what a run needs ----------------------------------------------------------------------------


class Observed:
    """What this process saw last, to spare reads on the path from a child finishing to the next child:
    the versions it wrote itself (the watch event of its own write is not a trigger), the latest body of
    each FlowRun (from its events and from our own writes; a stale one makes the status write fail with a
    Conflict, and the run is read again) and of each Flow by path."""

    def __init__(self) -> None:
        self.written: dict[tuple[str, str], str] = {}
        self.child_phase: dict[str, str] = {}
        self.runs: dict[tuple[str, str], dict[str, Any]] = {}
        self.flows: dict[tuple[str, str], dict[str, Any]] = {}
        self.children: dict[str, dict[str, dict[str, Any]]] = {}
        """Children by parent uid and name, once listed."""
        self.snapshots: dict[str, OpenFlow] = {}
        """Pinned flows read from snapshots, by run uid."""
        self.lock = threading.Lock()


OBSERVED = Observed()


def find_flow(api: KubeApi, namespace: str, path: str) -> dict[str, Any] | None:
    cached = OBSERVED.flows.get((namespace, path))
    if cached is not None:
        return cached
    items = api.list(API_VERSION, "Flow", namespace, fields={"spec.path": path})
    return items[0] if items else None


def read_result_ref(api: KubeApi, namespace: str) -> Callable[[str, str], Any]:
    def read(name: str, key: str) -> Any:
        config_map = api.get("v1", "ConfigMap", namespace, name)
        text = (config_map.get("data") or {}).get(key)
        return json.loads(text) if text is not None else None

    return read


def list_children(api: KubeApi, run: FlowRun, flow: OpenFlow) -> list[dict[str, Any]]:
    """Every child of the run: listed once per run and process, then kept current from the children's own
    watch events (and our creates), so a step transition reads nothing."""
    uid = run.metadata.uid or ""
    with OBSERVED.lock:
        known = OBSERVED.children.get(uid)
        if known is not None:
            return list(known.values())
    labels = {PARENT_UID_LABEL: uid}
    children = api.list(API_VERSION, "ScriptRun", run.metadata.namespace, labels=labels)
    if any(isinstance(m.value, PathFlow) for m in flow.value.all_modules()):
        children += api.list(API_VERSION, "FlowRun", run.metadata.namespace, labels=labels)
    with OBSERVED.lock:
        index = OBSERVED.children.setdefault(uid, {})
        for child in children:  # a newer version seen by an event meanwhile wins
            index.setdefault(child["metadata"]["name"], child)
        return list(index.values())


def remember_child(body: dict[str, Any], deleted: bool = False, only_if_new: bool = False) -> None:
    """Keep a child's latest body in its parent's index (an event's body wins over our create's reply)."""
    parent_uid = (body["metadata"].get("labels") or {}).get(PARENT_UID_LABEL)
    if parent_uid is None:
        return
    with OBSERVED.lock:
        index = OBSERVED.children.get(parent_uid)
        if index is None:
            return  # not listed yet in this process: the first reconcile lists
        name = body["metadata"]["name"]
        if deleted:
            index.pop(name, None)
        elif not only_if_new or name not in index:
            index[name] = body


# --- the reconcile -----------------------------------------------------------------------------------------


def reconcile_run(namespace: str, name: str) -> float | None:
    """One reconcile of a FlowRun; returns when to look again (seconds) or None."""
    with metrics.FLOW_RECONCILE.time():
        return _reconcile_run(namespace, name)


def _reconcile_run(namespace: str, name: str) -> float | None:
    api = kube()
    body = OBSERVED.runs.get((namespace, name)) or api.get_or_none(API_VERSION, "FlowRun", namespace, name)
    if body is None or body["metadata"].get("deletionTimestamp"):
        return None
    run = FlowRun.model_validate(body)
    status = run.status or FlowRunStatus()
    if status.done:
        return None
    now = datetime.now(UTC)
    pinned = _pinned_flow(api, body, run, status, now)
    if isinstance(pinned, RunError):
        failed = status.model_copy(
            update={
                "phase": "Failed",
                "error": pinned,
                "started_at": status.started_at or now,
                "finished_at": now,
                "current_step": None,
            }
        )
        _write_status(api, body, failed)
        return None
    flow, started = pinned
    children = observe_children(list_children(api, run, flow), read_result_ref(api, namespace))
    annotations = dict(run.metadata.annotations or {})
    observations = Observations(
        run_name=name,
        args=dict(run.spec.args),
        children=children,
        approvals=approval_events(body),
        cancel_requested=CANCEL_ANNOTATION in annotations,
        requester=requester_of(body),
        may_start=started.phase != "Pending" or has_slot(api, body, flow, now),
        cache=read_cache(api, namespace_of(body), now) if uses_cache(flow) else {},
        trigger_event=run.spec.trigger_event,
    )
    decision = advance(flow, started, observations, now)
    new_status = decision.status
    requeue: float | None = None
    for action in decision.actions:
        if isinstance(action, CreateRun):
            conflict = _create_child(api, body, run, flow, action, now)
            if conflict is not None:
                new_status = new_status.model_copy(
                    update={"phase": "Failed", "error": conflict, "finished_at": now, "current_step": None}
                )
                break
        elif isinstance(action, DeleteRun):
            api.delete(API_VERSION, action.kind, namespace, action.name)
        elif isinstance(action, RequeueAfter):
            requeue = action.seconds
        elif isinstance(action, StoreCache):
            store_cache(api, namespace_of(body), action)
        elif isinstance(action, EarlyReturn):  # the result itself is in status.earlyResult
            log.info(
                "flowrun %s/%s: early_return step done; status.earlyResult holds its result", *key_of(body)
            )
        elif isinstance(action, Finish):
            new_status, config_map = offload_result(new_status, run)
            if config_map is not None:
                api.create(config_map)
            if flow.value.same_worker:  # Windmill's ./shared lives as long as the flow
                api.delete("v1", "PersistentVolumeClaim", namespace, shared_claim_name(run))
    if new_status != status:
        _write_status(api, body, new_status)
    if new_status.done:
        metrics.FLOW_RUNS_FINISHED.labels(namespace, run.spec.flow_path, new_status.phase).inc()
        forget_run(namespace, name, run.metadata.uid or "")
    return requeue


def namespace_of(body: dict[str, Any]) -> str:
    return str(body["metadata"]["namespace"])


def key_of(body: dict[str, Any]) -> tuple[str, str]:
    return namespace_of(body), str(body["metadata"]["name"])


def read_cache(api: KubeApi, namespace: str, now: datetime) -> dict[str, CacheEntry]:
    """The namespace's live `cache_ttl` results; expired ones are deleted on the way."""
    entries, expired = cache_entries(
        api.list("v1", "ConfigMap", namespace, labels={CACHE_LABEL: "result"}), now
    )
    for name in expired:
        api.delete("v1", "ConfigMap", namespace, name)
    return entries


def store_cache(api: KubeApi, namespace: str, action: StoreCache) -> None:
    """Keep a cached result (a later run of the same key overwrites an older entry)."""
    desired = cache_config_map(namespace, action)
    _, created = api.create(desired, adopt_any=True)
    if not created:
        patch = {"metadata": {"annotations": desired["metadata"]["annotations"]}, "data": desired["data"]}
        api.patch("v1", "ConfigMap", namespace, desired["metadata"]["name"], patch)


def has_slot(api: KubeApi, body: dict[str, Any], flow: OpenFlow, now: datetime) -> bool:
    """Whether a Pending run may start under its flow's `concurrent_limit`: fewer than the limit of the other
    runs of the same flow path are ahead of it (started and not finished, or Pending and created before it;
    with `concurrency_time_window_s`, also those that started within that many seconds, as Windmill counts).
    The order is the same for every reconcile, so two Pending runs reconciled at once never both take the
    last slot."""
    limit = flow.value.concurrent_limit
    if not limit:
        return True
    window = flow.value.concurrency_time_window_s or 0
    meta = body["metadata"]
    mine = (meta.get("creationTimestamp") or "", meta["name"])
    ahead = 0
    for other in api.list(API_VERSION, "FlowRun", meta["namespace"]):
        other_meta, other_status = other["metadata"], other.get("status") or {}
        if other_meta["name"] == meta["name"] or (other.get("spec") or {}).get("flowPath") != body[
            "spec"
        ].get("flowPath"):
            continue
        phase = other_status.get("phase") or "Pending"
        if phase in TERMINAL:
            started_at = other_status.get("startedAt")
            recent = (
                window and started_at and (now - datetime.fromisoformat(started_at)).total_seconds() < window
            )
            ahead += bool(recent)
        elif phase != "Pending" or (other_meta.get("creationTimestamp") or "", other_meta["name"]) < mine:
            ahead += 1
    return ahead < limit


def _pinned_flow(
    api: KubeApi, body: dict[str, Any], run: FlowRun, status: FlowRunStatus, now: datetime
) -> tuple[OpenFlow, FlowRunStatus] | RunError:
    """The Flow this run runs, and its status with the pin: on the first reconcile, the Flow as it is now
    (snapshotted into an immutable ConfigMap owned by the run, its hash and generation in the status, and the
    run's subflow depth); later, that same document even if the Flow changed or went away."""
    namespace = str(body["metadata"]["namespace"])
    uid = run.metadata.uid or ""
    if status.flow is not None:
        cached = OBSERVED.snapshots.get(uid)
        if cached is not None:
            return cached, status
        current = find_flow(api, namespace, run.spec.flow_path)
        parsed = _parse_flow(current) if current is not None else None
        found: OpenFlow | RunError
        if parsed is not None and flow_document(parsed)[1] == status.flow.hash:
            found = parsed
        else:
            found = _snapshot(api, namespace, status.flow.snapshot, status.flow.hash)
        if isinstance(found, RunError):
            return found
        with OBSERVED.lock:
            OBSERVED.snapshots[uid] = found
        return found, status
    flow_body = find_flow(api, namespace, run.spec.flow_path)
    failure = _flow_failure(flow_body, run.spec.flow_path)
    if failure is not None:
        return failure
    assert flow_body is not None
    depth = _depth_of(api, body)
    if depth > MAX_SUBFLOW_DEPTH:
        return RunError(
            name="SubflowTooDeep",
            message=f"subflows nest deeper than {MAX_SUBFLOW_DEPTH} (does {run.spec.flow_path} call itself?)",
        )
    flow = Flow.model_validate(flow_body).spec.openflow()
    invalid = _start_problems(api, namespace, flow)
    if invalid is not None:
        return invalid
    text, digest = flow_document(flow)
    snapshot = flow_snapshot(run, text, digest)
    stored, created = api.create(snapshot, adopt_any=True)  # checked here, to fail the run with a reason
    if not created and (stored.get("data") or {}).get(SNAPSHOT_KEY) != text:
        return RunError(
            name="SnapshotConflict",
            message=f"ConfigMap {snapshot['metadata']['name']} exists and does not hold this run's flow; "
            "delete it and create the run again",
        )
    pin = FlowPin(
        hash=digest,
        generation=flow_body["metadata"].get("generation"),
        snapshot=snapshot["metadata"]["name"],
    )
    update: dict[str, Any] = {"flow": pin, "depth": depth}
    if (run.metadata.annotations or {}).get(RETRY_FROM) == "failed-step":
        seeded = _retry_seed(api, run, flow, digest)
        if isinstance(seeded, RunError):
            return seeded
        update.update(seeded)
    with OBSERVED.lock:
        OBSERVED.snapshots[uid] = flow
    return flow, status.model_copy(update=update)


def _start_problems(api: KubeApi, namespace: str, flow: OpenFlow) -> RunError | None:
    """What the Flow's Ready condition would say, checked again as the run starts (the condition may not be
    written yet, or a Script may have changed since): refused fields, unknown keys, input_transforms keys
    that name no parameter of the step's script, with the condition's message."""
    uses_scripts = any(isinstance(m.value, PathScript) for m in flow.value.all_modules())
    params = _script_params(api.list(API_VERSION, "Script", namespace)) if uses_scripts else None
    problems = field_problems(flow) + unknown_key_problems(flow) + input_key_problems(flow, params)
    if not problems:
        return None
    said = "; ".join(f"step {p.step_id}: {p.message}" if p.step_id else p.message for p in problems)
    return RunError(name="InvalidFlow", message=said)


def _retry_seed(api: KubeApi, run: FlowRun, flow: OpenFlow, digest: str) -> dict[str, Any] | RunError:
    """A retry from the failed step (`kubemill.dev/retry-from: failed-step`, `kubemill.dev/retry-of: <run>`):
    the failed run's reusable step records (kubemill.engine.restart) and flow user states."""
    namespace = run.metadata.namespace or ""
    old_name = (run.metadata.annotations or {}).get(RETRY_OF, "")
    old_body = api.get_or_none(API_VERSION, "FlowRun", namespace, old_name) if old_name else None
    old = FlowRun.model_validate(old_body) if old_body is not None else None
    why = "it does not exist" if old is None else restart.problem_with(old, run, digest)
    if why is not None or old is None:
        return RunError(
            name="RetryNotPossible",
            message=f"{RETRY_FROM}: flowrun {old_name or '(no kubemill.dev/retry-of)'} cannot be retried "
            f"from its failed step: {why}; retry it from the start instead",
        )
    old_status = old.status or FlowRunStatus()
    return {"steps": restart.reusable_steps(flow, old_status), "user_states": dict(old_status.user_states)}


RETRY_OF = constants.ANNOTATION_RETRY_OF
RETRY_FROM = constants.ANNOTATION_RETRY_FROM


def _parse_flow(body: dict[str, Any]) -> OpenFlow | None:
    try:
        return Flow.model_validate(body).spec.openflow()
    except pydantic.ValidationError:
        return None


def _snapshot(api: KubeApi, namespace: str, name: str, digest: str) -> OpenFlow | RunError:
    """The pinned document from its ConfigMap, checked against the hash in the status."""
    lost = RunError(
        name="FlowChanged",
        message=f"the Flow changed since this run started and its snapshot {name} is gone or altered; "
        "create a new run to run the current Flow",
    )
    try:
        config_map = api.get("v1", "ConfigMap", namespace, name)
    except NotFound:
        return lost
    text = (config_map.get("data") or {}).get(SNAPSHOT_KEY) or ""
    if hashlib.sha256(text.encode()).hexdigest() != digest:
        return lost
    return OpenFlow.model_validate(json.loads(text))


def _depth_of(api: KubeApi, body: dict[str, Any]) -> int:
    """0 for a run no flow started; else the length of its chain of parent FlowRuns, walked through the
    controller references (each parent checked by uid), so it does not depend on a parent's status having been
    written yet. A run cannot make itself shallower than the chain it is in (it can only lie itself deeper);
    the walk stops one past the limit."""
    depth, current = 0, body
    while depth <= MAX_SUBFLOW_DEPTH:
        ref = next(
            (
                r
                for r in current["metadata"].get("ownerReferences") or []
                if r.get("kind") == "FlowRun" and r.get("controller")
            ),
            None,
        )
        if ref is None:
            break
        parent = api.get_or_none(API_VERSION, "FlowRun", body["metadata"]["namespace"], ref["name"])
        if parent is None or parent["metadata"].get("uid") != ref.get("uid"):
            break
        known = (parent.get("status") or {}).get("depth")
        if isinstance(known, int) and (parent.get("status") or {}).get("flow"):
            return depth + known + 1  # a pinned parent already knows its own depth
        depth, current = depth + 1, parent
    return depth


def _create_child(
    api: KubeApi, body: dict[str, Any], run: FlowRun, flow: OpenFlow, action: CreateRun, now: datetime
) -> RunError | None:
    """Create one child (its resume URLs first, so its pod finds them). A child of that name that someone
    else created is never adopted: it must be the very run this step asks for, or the flow fails."""
    namespace, uid = str(body["metadata"]["namespace"]), run.metadata.uid or ""
    claim = None
    if flow.value.same_worker and action.kind == "ScriptRun":  # ./shared: the run's own volume
        try:
            claim = api.create(shared_claim(run))[0]["metadata"]["name"]
        except NotOurs as exc:
            return RunError(name="NotOurs", message=f"step {action.step}: same_worker: {exc}")
    manifest = child_run_manifest(action, run, shared_claim=claim)
    urls = resume_urls_document(flow, action.step, namespace, str(body["metadata"]["name"]), uid, now)
    if urls is not None:
        existing = api.get_or_none(API_VERSION, action.kind, namespace, action.name)
        if existing is not None and not _is_our_child(existing, manifest, uid):
            return _child_conflict(action)
        try:
            api.create(resume_secret(body, action.name, urls))
        except NotOurs:  # a Secret planted under the links' name: never mount it into the child
            return _child_conflict(action)
    created, fresh = api.create(manifest, adopt_any=True)  # `_is_our_child` decides
    if not fresh and not _is_our_child(created, manifest, uid):
        if urls is not None:
            api.delete("v1", "Secret", namespace, resume_secret_name(action.name))
        return _child_conflict(action)
    if urls is not None:  # from now on the links live and die with this very child (a later run of the same
        # name, after this one is deleted, never finds them)
        owner: dict[str, Any] = {"apiVersion": API_VERSION, "kind": action.kind, "name": action.name}
        owner |= {"uid": created["metadata"]["uid"], "blockOwnerDeletion": True}
        patch = {"metadata": {"ownerReferences": [owner]}}
        api.patch("v1", "Secret", namespace, resume_secret_name(action.name), patch)
    remember_child(created, only_if_new=True)
    return None


def _is_our_child(found: dict[str, Any], manifest: dict[str, Any], parent_uid: str) -> bool:
    owners = found["metadata"].get("ownerReferences") or []
    spec = found.get("spec") or {}
    return any(o.get("uid") == parent_uid and o.get("controller") for o in owners) and all(
        spec.get(k) == v for k, v in manifest["spec"].items()
    )


def _child_conflict(action: CreateRun) -> RunError:
    return RunError(
        name="ChildConflict",
        message=f"step {action.step}: a {action.kind} named {action.name} already exists and is not the run "
        "this step starts (someone else created it); the flow stops rather than adopt it",
    )


def forget_run(namespace: str, name: str, uid: str) -> None:
    """A finished (or deleted) run needs nothing remembered: drop its caches, its children's too."""
    OBSERVED.written.pop((namespace, name), None)
    OBSERVED.runs.pop((namespace, name), None)
    with OBSERVED.lock:
        OBSERVED.snapshots.pop(uid, None)
        for child in (OBSERVED.children.pop(uid, None) or {}).values():
            OBSERVED.child_phase.pop(child["metadata"].get("uid", ""), None)


def _flow_failure(flow_body: dict[str, Any] | None, path: str) -> RunError | None:
    """Why the run cannot start with this flow, or None."""
    if flow_body is None:
        return RunError(name="FlowNotFound", message=f"no Flow with path {path} in this namespace")
    try:
        flow = Flow.model_validate(flow_body)
    except pydantic.ValidationError as exc:
        return RunError(name="FlowNotReady", message=f"flow {path} does not parse: {exc.errors()[0]['msg']}")
    ready = next((c for c in (flow.status.conditions if flow.status else ()) if c.type == "Ready"), None)
    if ready is not None and ready.status == "False":
        return RunError(name="FlowNotReady", message=f"flow {path} is not ready: {ready.message}")
    return None


def _write_status(api: KubeApi, body: dict[str, Any], status: FlowRunStatus) -> None:
    """Replace the whole status, guarded by the resourceVersion read at the start of the reconcile."""
    meta = body["metadata"]
    update = {
        "apiVersion": body["apiVersion"],
        "kind": body["kind"],
        "metadata": {
            "name": meta["name"],
            "namespace": meta["namespace"],
            "resourceVersion": meta["resourceVersion"],
        },
        "spec": body["spec"],
        "status": status_body(status),
    }
    written = api.replace(update, status=True)
    OBSERVED.written[(meta["namespace"], meta["name"])] = written["metadata"]["resourceVersion"]
    OBSERVED.runs[(meta["namespace"], meta["name"])] = written


QUEUE = RunQueue(reconcile_run, on_conflict=lambda ns, name: OBSERVED.runs.pop((ns, name), None))


def _trigger(namespace: str, name: str) -> None:
    QUEUE.trigger(namespace, name)


def _parent_of(body: dict[str, Any]) -> str | None:
    for ref in body["metadata"].get("ownerReferences") or []:
        if ref.get("kind") == "FlowRun" and ref.get("controller"):
            return str(ref["name"])
    return None


def _child_event(event_type: str | None, body: dict[str, Any]) -> None:
    """A child run changed: when it reached a final phase (or vanished), its parent has work to do."""
    meta = body["metadata"]
    parent = _parent_of(body)
    if parent is None:
        return
    phase = (body.get("status") or {}).get("phase", "")
    uid = meta.get("uid", "")
    remember_child(body, deleted=event_type == "DELETED")
    if event_type == "DELETED":
        OBSERVED.child_phase.pop(uid, None)
        _trigger(meta["namespace"], parent)
        return
    if phase in TERMINAL and OBSERVED.child_phase.get(uid) != phase:
        OBSERVED.child_phase[uid] = phase
        _trigger(meta["namespace"], parent)


# --- handlers ----------------------------------------------------------------------------------------------


@kopf.on.event(GROUP, VERSION, "flowruns")
def flowrun_event(type: str | None, body: kopf.Body, **_: Any) -> None:
    raw = dict(body)
    meta = raw["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    metrics.PENDING.observe(raw, deleted=type == "DELETED")
    if PARENT_UID_LABEL in (meta.get("labels") or {}):
        _child_event(type, raw)
    if type == "DELETED" or (raw.get("status") or {}).get("phase") in TERMINAL:
        if type == "DELETED":
            QUEUE.forget(namespace, name)
        forget_run(namespace, name, meta.get("uid", ""))
        return
    OBSERVED.runs[(namespace, name)] = raw
    if OBSERVED.written.get((namespace, name)) == meta.get("resourceVersion"):
        return  # the event of our own status write
    _trigger(namespace, name)


@kopf.on.event(GROUP, VERSION, "scriptruns", labels={PARENT_UID_LABEL: kopf.PRESENT})
def child_scriptrun_event(type: str | None, body: kopf.Body, **_: Any) -> None:
    _child_event(type, dict(body))


@kopf.on.startup()
def react_at_once(settings: kopf.OperatorSettings, **_: Any) -> None:
    """A child's final phase should start the next step within milliseconds: Kopf's default 0.1 s batching
    window (waiting for more events of an object before handling it) would be most of a step transition."""
    settings.batching.batch_window = min(settings.batching.batch_window, 0.005)


# --- Flow readiness ----------------------------------------------------------------------------------------


def _paths(api: KubeApi, namespace: str, kind: str) -> set[str]:
    return {
        str(item["spec"]["path"])
        for item in api.list(API_VERSION, kind, namespace)
        if isinstance(item.get("spec"), dict) and item["spec"].get("path")
    }


def _script_params(items: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Each Script's parameter names, from the schema its status reports (Scripts not derived yet are left
    out, so their steps' input keys are not checked). Of two Scripts with one path, the one that keeps it
    (script_catalog.claim_order) is the one read."""
    found: dict[str, list[str]] = {}

    def rank(item: dict[str, Any]) -> tuple[str, str]:
        return claim_order(item["metadata"].get("creationTimestamp"), item["metadata"].get("name"))

    for item in sorted(items, key=rank, reverse=True):  # the keeper last, so that it is the one kept
        path = (item.get("spec") or {}).get("path")
        schema = (item.get("status") or {}).get("schema")
        if isinstance(path, str) and isinstance(schema, dict) and isinstance(schema.get("properties"), dict):
            found[path] = list(schema["properties"])
    return found


def flow_conditions(body: dict[str, Any], api: KubeApi) -> dict[str, Any]:
    """The Flow's status: `Ready` (problems named by step id) and the paths it references."""
    namespace = body["metadata"]["namespace"]
    spec = dict(body.get("spec") or {})
    spec.pop("path", None)
    scripts_listed = api.list(API_VERSION, "Script", namespace)
    problems = validate_flow(
        spec,
        _paths(api, namespace, "Script"),
        _paths(api, namespace, "Flow"),
        script_params=_script_params(scripts_listed),
    )
    scripts: list[str] = []
    flows: list[str] = []
    try:
        parsed = OpenFlow.model_validate(spec)
        for module in parsed.value.all_modules():
            path = getattr(module.value, "path", None)
            if isinstance(path, str):
                (flows if isinstance(module.value, PathFlow) else scripts).append(path)
    except pydantic.ValidationError:
        pass
    if problems:
        message = "; ".join(f"step {p.step_id}: {p.message}" if p.step_id else p.message for p in problems)
        ready = ("False", "InvalidFlow", message[:32000])
    else:
        ready = ("True", "Valid", "every step is valid and every script and flow it names exists")
    return {"ready": ready, "scripts": sorted(set(scripts)), "flows": sorted(set(flows))}


def reconcile_flow(body: dict[str, Any]) -> None:
    api = kube()
    meta = body["metadata"]
    found = flow_conditions(body, api)
    status = body.get("status") or {}
    old = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
    status_, reason, message = found["ready"]
    same = old is not None and (old.get("status"), old.get("reason"), old.get("message")) == found["ready"]
    generation = meta.get("generation")
    if (
        same
        and status.get("observedGeneration") == generation
        and status.get("scripts", []) == found["scripts"]
    ):
        return
    condition = Condition(
        type="Ready",
        status=status_,
        reason=reason,
        message=message,
        last_transition_time=datetime.now(UTC),
        observed_generation=generation,
    ).to_manifest()
    if same and old is not None:
        condition["lastTransitionTime"] = old["lastTransitionTime"]
    patch = {
        "status": {
            "observedGeneration": generation,
            "conditions": [condition],
            "scripts": found["scripts"],
            "flows": found["flows"],
        }
    }
    api.patch(API_VERSION, "Flow", meta["namespace"], meta["name"], patch, status=True)


@kopf.on.event(GROUP, VERSION, "flows")
def flow_event(type: str | None, body: kopf.Body, **_: Any) -> None:
    raw = dict(body)
    key = (raw["metadata"]["namespace"], str((raw.get("spec") or {}).get("path")))
    if type == "DELETED":
        OBSERVED.flows.pop(key, None)
        return
    OBSERVED.flows[key] = raw
    reconcile_flow(raw)


@kopf.on.event(GROUP, VERSION, "scripts")
def script_event_for_flows(type: str | None, body: kopf.Body, **_: Any) -> None:
    """A Script appeared or went away: the Flows of its namespace may have become (un)ready."""
    if type not in ("ADDED", "DELETED"):
        return
    api = kube()
    for flow in api.list(API_VERSION, "Flow", body["metadata"]["namespace"]):
        reconcile_flow(flow)
