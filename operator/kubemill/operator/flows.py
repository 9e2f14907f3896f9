"""Flow and FlowRun handlers: a Flow's `Ready` condition, and driving each FlowRun with the pure engine.

A FlowRun is reconciled by one function, `reconcile_run`: read the run, its Flow and its children, call
`advance()`, carry out the actions (create or delete child runs, offload a large result), write the status
once (a whole-status update guarded by `resourceVersion`, so two writers can never interleave). It is
triggered by the run's own watch events (creation, annotations for approvals and cancel), by a child run
reaching a final phase, and by timers for the engine's `RequeueAfter`. Runs are reconciled one at a time
each (a lock per run); a trigger that arrives while the run is being reconciled leaves one more reconcile
queued instead of piling up. Kopf's `on.event` handlers are used (no progress annotations, no extra writes):
the reconcile is idempotent, so an event seen twice costs a few reads and nothing else.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import kopf
import pydantic

from kubemill.engine import CreateRun, DeleteRun, Finish, Observations, RequeueAfter, advance, validate_flow
from kubemill.engine.state import RunError
from kubemill.errors import Conflict, KubemillError
from kubemill.k8s.client import Kube, object_path
from kubemill.k8s.flowruns import (
    CANCEL_ANNOTATION,
    PARENT_UID_LABEL,
    TERMINAL,
    child_run_manifest,
    observe_children,
    offload_result,
    status_body,
)
from kubemill.models.common import API_VERSION, Condition
from kubemill.models.flows import Flow, FlowRun, FlowRunStatus
from kubemill.models.openflow import OpenFlow, PathFlow
from kubemill.operator import kube
from kubemill.operator.approvals import approval_events, requester_of
from kubemill.operator.resume_urls import ANNOTATION as RESUME_ANNOTATION
from kubemill.operator.resume_urls import resume_urls_annotation

log = logging.getLogger("kubemill.flows")
GROUP, VERSION = API_VERSION.split("/")


# --- scheduling: one reconcile at a time per run, coalesced triggers, timers ------------------------------


class RunQueue:
    """Serialises reconciles of each run and coalesces triggers that arrive meanwhile."""

    def __init__(self, work: Callable[[str, str], float | None]) -> None:
        self._work = work
        self._guard = threading.Lock()
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._queued: set[tuple[str, str]] = set()
        self._timers: dict[tuple[str, str], threading.Timer] = {}

    def trigger(self, namespace: str, name: str) -> None:
        """Reconcile the run now (in the calling thread) unless a reconcile is already queued for it."""
        key = (namespace, name)
        with self._guard:
            if key in self._queued:
                return
            self._queued.add(key)
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            with self._guard:
                self._queued.discard(key)
            requeue = self._run(namespace, name)
        self.after(namespace, name, requeue)

    def _run(self, namespace: str, name: str) -> float | None:
        for _ in range(3):
            try:
                return self._work(namespace, name)
            except Conflict:
                continue  # the run changed while we looked at it: look again
            except KubemillError as exc:
                log.warning("flowrun %s/%s: %s; retrying in 5 s", namespace, name, exc)
                return 5.0
            except Exception:
                log.exception("reconciling flowrun %s/%s failed; retrying in 5 s", namespace, name)
                return 5.0
        return 1.0

    def after(self, namespace: str, name: str, seconds: float | None) -> None:
        """Reconcile again in `seconds` (None: no timer); replaces the run's previous timer."""
        key = (namespace, name)
        with self._guard:
            old = self._timers.pop(key, None)
            if old is not None:
                old.cancel()
            if seconds is None:
                return
            timer = threading.Timer(max(seconds, 0.05), self.trigger, (namespace, name))
            timer.daemon = True
            self._timers[key] = timer
        timer.start()

    def forget(self, namespace: str, name: str) -> None:
        self.after(namespace, name, None)
        with self._guard:
            self._locks.pop((namespace, name), None)


# --- reading what a run needs ----------------------------------------------------------------------------


class Observed:
    """Versions this process wrote itself, so the watch event of its own write is not a trigger."""

    def __init__(self) -> None:
        self.written: dict[tuple[str, str], str] = {}
        self.child_phase: dict[str, str] = {}


OBSERVED = Observed()


def find_flow(api: Kube, namespace: str, path: str) -> dict[str, Any] | None:
    query = {"fieldSelector": f"spec.path={path}"}
    found = api.request("GET", object_path(API_VERSION, "flows", namespace), query=query)
    items: list[dict[str, Any]] = found.get("items", [])
    return items[0] if items else None


def read_result_ref(api: Kube, namespace: str) -> Callable[[str, str], Any]:
    def read(name: str, key: str) -> Any:
        import json

        config_map = api.get("v1", "ConfigMap", namespace, name)
        text = (config_map.get("data") or {}).get(key)
        return json.loads(text) if text is not None else None

    return read


def list_children(api: Kube, run: FlowRun, flow: OpenFlow) -> list[dict[str, Any]]:
    labels = {PARENT_UID_LABEL: run.metadata.uid or ""}
    children = api.list(API_VERSION, "ScriptRun", run.metadata.namespace, labels=labels)
    if any(isinstance(m.value, PathFlow) for m in flow.value.all_modules()):
        children += api.list(API_VERSION, "FlowRun", run.metadata.namespace, labels=labels)
    return children


# --- the reconcile -----------------------------------------------------------------------------------------


def reconcile_run(namespace: str, name: str) -> float | None:
    """One reconcile of a FlowRun; returns when to look again (seconds) or None."""
    api = kube()
    body = api.get_or_none(API_VERSION, "FlowRun", namespace, name)
    if body is None or body["metadata"].get("deletionTimestamp"):
        return None
    run = FlowRun.model_validate(body)
    status = run.status or FlowRunStatus()
    if status.done:
        return None
    now = datetime.now(UTC)
    flow_body = find_flow(api, namespace, run.spec.flow_path)
    failure = _flow_failure(flow_body, run.spec.flow_path)
    if failure is not None:
        failed = status.model_copy(
            update={
                "phase": "Failed",
                "error": failure,
                "started_at": status.started_at or now,
                "finished_at": now,
                "current_step": None,
            }
        )
        _write_status(api, body, failed)
        return None
    assert flow_body is not None
    flow = Flow.model_validate(flow_body).spec.openflow()
    children = observe_children(list_children(api, run, flow), read_result_ref(api, namespace))
    annotations = dict(run.metadata.annotations or {})
    observations = Observations(
        run_name=name,
        args=dict(run.spec.args),
        children=children,
        approvals=approval_events(body),
        cancel_requested=CANCEL_ANNOTATION in annotations,
        requester=requester_of(body),
    )
    decision = advance(flow, status, observations, now)
    new_status = decision.status
    requeue: float | None = None
    for action in decision.actions:
        if isinstance(action, CreateRun):
            urls = resume_urls_annotation(flow, action.step, namespace, name, run.metadata.uid or "")
            extra = {RESUME_ANNOTATION: urls} if urls else None
            api.create(child_run_manifest(action, run, extra))
        elif isinstance(action, DeleteRun):
            api.delete(API_VERSION, action.kind, namespace, action.name)
        elif isinstance(action, RequeueAfter):
            requeue = action.seconds
        elif isinstance(action, Finish):
            new_status, config_map = offload_result(new_status, run)
            if config_map is not None:
                api.create(config_map)
    if new_status != status:
        _write_status(api, body, new_status)
    return requeue


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


def _write_status(api: Kube, body: dict[str, Any], status: FlowRunStatus) -> None:
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


QUEUE = RunQueue(reconcile_run)


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
    if PARENT_UID_LABEL in (meta.get("labels") or {}):
        _child_event(type, raw)
    if type == "DELETED":
        QUEUE.forget(namespace, name)
        OBSERVED.written.pop((namespace, name), None)
        return
    if OBSERVED.written.get((namespace, name)) == meta.get("resourceVersion"):
        return  # the event of our own status write
    if (raw.get("status") or {}).get("phase") in TERMINAL:
        return
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


def _paths(api: Kube, namespace: str, kind: str) -> set[str]:
    return {
        str(item["spec"]["path"])
        for item in api.list(API_VERSION, kind, namespace)
        if isinstance(item.get("spec"), dict) and item["spec"].get("path")
    }


def flow_conditions(body: dict[str, Any], api: Kube) -> dict[str, Any]:
    """The Flow's status: `Ready` (problems named by step id) and the paths it references."""
    namespace = body["metadata"]["namespace"]
    spec = dict(body.get("spec") or {})
    spec.pop("path", None)
    problems = validate_flow(spec, _paths(api, namespace, "Script"), _paths(api, namespace, "Flow"))
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
    if type == "DELETED":
        return
    reconcile_flow(dict(body))


@kopf.on.event(GROUP, VERSION, "scripts")
def script_event_for_flows(type: str | None, body: kopf.Body, **_: Any) -> None:
    """A Script appeared or went away: the Flows of its namespace may have become (un)ready."""
    if type not in ("ADDED", "DELETED"):
        return
    api = kube()
    for flow in api.list(API_VERSION, "Flow", body["metadata"]["namespace"]):
        reconcile_flow(flow)
