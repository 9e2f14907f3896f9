"""Driving each FlowRun with the pure engine: read the run, its Flow and its children, call `advance()`, carry
out the actions (create or delete child runs, keep a cached result, offload a large result), write the status
once (a whole-status update guarded by `resourceVersion`, so two writers can never interleave).

A reconcile is triggered by the run's own watch events (creation, annotations for approvals and cancel), by a
child run reaching a final phase, and by timers for the engine's `RequeueAfter`; the operator's one
`work_queue.WorkQueue` (kind "FlowRun") serialises and coalesces them. The reconcile is idempotent, so an
event seen twice costs a few reads and nothing else. One `FlowRunReconciler` lives in the process's
`runtime.Operator`; a unit test builds one around `kubemill.testing.FakeKube`.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any, assert_never

from kubemill.engine import (
    AwaitApproval,
    CreateRun,
    DeleteRun,
    EarlyReturn,
    Evaluator,
    Finish,
    Observations,
    RequeueAfter,
    StoreCache,
    advance,
)
from kubemill.engine.cache import uses_cache
from kubemill.engine.state import RunError
from kubemill.errors import NotOurs
from kubemill.k8s.api import KubeApi
from kubemill.k8s.builders import resume_secret_name
from kubemill.k8s.flowruns import (
    CANCEL_ANNOTATION,
    PARENT_UID_LABEL,
    SNAPSHOT_KEY,
    TERMINAL,
    child_run_manifest,
    flow_document,
    flow_snapshot,
    observe_children,
    offload_result,
    shared_claim,
    shared_claim_name,
    status_body,
)
from kubemill.models.common import API_VERSION
from kubemill.models.flows import MAX_SUBFLOW_DEPTH, Flow, FlowPin, FlowRun, FlowRunStatus
from kubemill.models.openflow import OpenFlow, PathFlow
from kubemill.operator import flow_pin, metrics
from kubemill.operator.approvals import approval_events, requester_of
from kubemill.operator.flowrun_cache import Observed
from kubemill.operator.resume_urls import ResumeLinks, resume_secret
from kubemill.operator.work_queue import WorkQueue

log = logging.getLogger("kubemill.flows")
KIND = "FlowRun"


class FlowRunReconciler:
    """The FlowRun controller of one operator process: its caches, its queue, and the reconcile."""

    def __init__(
        self,
        api: KubeApi,
        links: ResumeLinks,
        evaluator: Evaluator | None = None,
        queue: WorkQueue | None = None,
    ) -> None:
        self.api = api
        self.links = links
        self.evaluator = evaluator
        self.observed = Observed()
        self.queue = queue if queue is not None else WorkQueue()
        self.queue.register(KIND, self.reconcile, on_conflict=self._drop_run)

    def trigger(self, namespace: str, name: str) -> None:
        """Reconcile the run through the queue (now, unless a reconcile of it is already waiting)."""
        self.queue.trigger(KIND, namespace, name)

    def _drop_run(self, namespace: str, name: str) -> None:
        self.observed.runs.pop((namespace, name), None)

    # --- events ----------------------------------------------------------------------------------------

    def on_flowrun(self, event_type: str | None, raw: dict[str, Any]) -> None:
        """A FlowRun's watch event."""
        meta = raw["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        metrics.PENDING.observe(raw, deleted=event_type == "DELETED")
        if PARENT_UID_LABEL in (meta.get("labels") or {}):
            self.on_child(event_type, raw)
        if event_type == "DELETED" or (raw.get("status") or {}).get("phase") in TERMINAL:
            if event_type == "DELETED":
                self.queue.forget(KIND, namespace, name)
            self.forget_run(namespace, name, meta.get("uid", ""))
            return
        self.observed.runs[(namespace, name)] = raw
        if self.observed.written.get((namespace, name)) == meta.get("resourceVersion"):
            return  # the event of our own status write
        self.trigger(namespace, name)

    def on_child(self, event_type: str | None, body: dict[str, Any]) -> None:
        """A child run changed: when it reached a final phase, is being deleted or vanished, its parent has
        work to do."""
        meta = body["metadata"]
        parent = _parent_of(body)
        if parent is None:
            return
        phase = (body.get("status") or {}).get("phase", "")
        uid = meta.get("uid", "")
        self.remember_child(body, deleted=event_type == "DELETED")
        if event_type == "DELETED":
            self.observed.child_phase.pop(uid, None)
            self.trigger(meta["namespace"], parent)
            return
        if phase not in TERMINAL and meta.get("deletionTimestamp"):
            phase = "Deleting"  # deleted before it finished (a finalizer holds it): its step fails
        if (phase in TERMINAL or phase == "Deleting") and self.observed.child_phase.get(uid) != phase:
            self.observed.child_phase[uid] = phase
            self.trigger(meta["namespace"], parent)

    def on_flow(self, event_type: str | None, raw: dict[str, Any]) -> None:
        """A Flow's watch event: keep its latest body by path (runs find their Flow without a read)."""
        key = (raw["metadata"]["namespace"], str((raw.get("spec") or {}).get("path")))
        if event_type == "DELETED":
            self.observed.flows.pop(key, None)
        else:
            self.observed.flows[key] = raw

    # --- reading ---------------------------------------------------------------------------------------

    def find_flow(self, namespace: str, path: str) -> dict[str, Any] | None:
        cached = self.observed.flows.get((namespace, path))
        if cached is not None:
            return cached
        items = self.api.list(API_VERSION, "Flow", namespace, fields={"spec.path": path})
        return items[0] if items else None

    def list_children(self, run: FlowRun, flow: OpenFlow) -> list[dict[str, Any]]:
        """Every child of the run: listed once per run and process, then kept current from the children's
        own watch events (and our creates), so a step transition reads nothing."""
        uid = run.metadata.uid or ""
        observed = self.observed
        with observed.lock:
            known = observed.children.get(uid)
            if known is not None:
                return list(known.values())
        labels = {PARENT_UID_LABEL: uid}
        children = self.api.list(API_VERSION, "ScriptRun", run.metadata.namespace, labels=labels)
        if any(isinstance(m.value, PathFlow) for m in flow.value.all_modules()):
            children += self.api.list(API_VERSION, "FlowRun", run.metadata.namespace, labels=labels)
        with observed.lock:
            index = observed.children.setdefault(uid, {})
            for child in children:  # a newer version seen by an event meanwhile wins
                index.setdefault(child["metadata"]["name"], child)
            return list(index.values())

    def remember_child(self, body: dict[str, Any], deleted: bool = False, only_if_new: bool = False) -> None:
        """Keep a child's latest body in its parent's index (an event's body wins over our create's reply)."""
        parent_uid = (body["metadata"].get("labels") or {}).get(PARENT_UID_LABEL)
        if parent_uid is None:
            return
        with self.observed.lock:
            index = self.observed.children.get(parent_uid)
            if index is None:
                return  # not listed yet in this process: the first reconcile lists
            name = body["metadata"]["name"]
            if deleted:
                index.pop(name, None)
            elif not only_if_new or name not in index:
                index[name] = body

    def forget_run(self, namespace: str, name: str, uid: str) -> None:
        """A finished (or deleted) run needs nothing remembered: drop its caches, its children's too."""
        observed = self.observed
        observed.written.pop((namespace, name), None)
        observed.runs.pop((namespace, name), None)
        with observed.lock:
            observed.snapshots.pop(uid, None)
            for child in (observed.children.pop(uid, None) or {}).values():
                observed.child_phase.pop(child["metadata"].get("uid", ""), None)

    # --- the reconcile ---------------------------------------------------------------------------------

    def reconcile(self, namespace: str, name: str) -> float | None:
        """One reconcile of a FlowRun; returns when to look again (seconds) or None."""
        with metrics.FLOW_RECONCILE.time():
            return self._reconcile(namespace, name)

    def _reconcile(self, namespace: str, name: str) -> float | None:
        api = self.api
        body = self.observed.runs.get((namespace, name)) or api.get_or_none(
            API_VERSION, "FlowRun", namespace, name
        )
        if body is None or body["metadata"].get("deletionTimestamp"):
            return None
        run = FlowRun.model_validate(body)
        status = run.status or FlowRunStatus()
        if status.done:
            return None
        now = datetime.now(UTC)
        pinned = self.pinned_flow(body, run, status, now)
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
            self.write_status(body, failed)
            return None
        flow, started = pinned
        children = observe_children(self.list_children(run, flow), flow_pin.read_result_ref(api, namespace))
        observations = Observations(
            run_name=name,
            args=dict(run.spec.args),
            children=children,
            approvals=approval_events(body),
            cancel_requested=CANCEL_ANNOTATION in (run.metadata.annotations or {}),
            requester=requester_of(body),
            may_start=started.phase != "Pending" or flow_pin.has_slot(api, body, flow, now),
            cache=flow_pin.read_cache(api, namespace, now) if uses_cache(flow) else {},
            trigger_event=run.spec.trigger_event,
        )
        decision = advance(flow, started, observations, now, evaluator=self.evaluator)
        new_status, requeue = self._act(body, run, flow, decision.status, decision.actions, now)
        if new_status != status:
            self.write_status(body, new_status)
        if new_status.done:
            metrics.FLOW_RUNS_FINISHED.labels(namespace, run.spec.flow_path, new_status.phase).inc()
            self.forget_run(namespace, name, run.metadata.uid or "")
        return requeue

    def _act(
        self,
        body: dict[str, Any],
        run: FlowRun,
        flow: OpenFlow,
        new_status: FlowRunStatus,
        actions: tuple[Any, ...],
        now: datetime,
    ) -> tuple[FlowRunStatus, float | None]:
        """Carry out the engine's actions; the status to write and when to look again."""
        namespace = run.metadata.namespace or ""
        requeue: float | None = None
        for action in actions:
            match action:
                case CreateRun():
                    conflict = self.create_child(body, run, flow, action, now)
                    if conflict is not None:
                        failed = {
                            "phase": "Failed",
                            "error": conflict,
                            "finished_at": now,
                            "current_step": None,
                        }
                        return new_status.model_copy(update=failed), None
                case DeleteRun(kind=kind, name=child):
                    self.api.delete(API_VERSION, kind, namespace, child)
                case RequeueAfter(seconds=seconds):
                    requeue = seconds
                case StoreCache():
                    flow_pin.store_cache(self.api, namespace, action)
                case EarlyReturn():  # the result itself is in status.earlyResult
                    log.info(
                        "flowrun %s/%s: early_return step done; status.earlyResult holds it",
                        namespace,
                        run.metadata.name,
                    )
                case AwaitApproval():
                    pass  # the pending approval is in the status; a decision annotation triggers the run
                case Finish():
                    new_status, config_map = offload_result(new_status, run)
                    if config_map is not None:
                        self.api.create(config_map)
                    if flow.value.same_worker:  # Windmill's ./shared lives as long as the flow
                        self.api.delete("v1", "PersistentVolumeClaim", namespace, shared_claim_name(run))
                case _:
                    assert_never(action)
        return new_status, requeue

    def pinned_flow(  # noqa: PLR0911 - complexity debt, docs/architecture.md
        self, body: dict[str, Any], run: FlowRun, status: FlowRunStatus, now: datetime
    ) -> tuple[OpenFlow, FlowRunStatus] | RunError:
        """The Flow this run runs, and its status with the pin: on the first reconcile, the Flow as it is
        now (snapshotted into an immutable ConfigMap owned by the run, its hash and generation in the status,
        and the run's subflow depth); later, that same document even if the Flow changed or went away."""
        api, observed = self.api, self.observed
        namespace = str(body["metadata"]["namespace"])
        uid = run.metadata.uid or ""
        if status.flow is not None:
            cached = observed.snapshots.get(uid)
            if cached is not None:
                return cached, status
            current = self.find_flow(namespace, run.spec.flow_path)
            parsed = flow_pin.parse_flow(current) if current is not None else None
            found: OpenFlow | RunError
            if parsed is not None and flow_document(parsed)[1] == status.flow.hash:
                found = parsed
            else:
                found = flow_pin.snapshot(api, namespace, status.flow.snapshot, status.flow.hash)
            if isinstance(found, RunError):
                return found
            with observed.lock:
                observed.snapshots[uid] = found
            return found, status
        flow_body = self.find_flow(namespace, run.spec.flow_path)
        failure = flow_pin.flow_failure(flow_body, run.spec.flow_path)
        if failure is not None:
            return failure
        assert flow_body is not None
        depth = flow_pin.depth_of(api, body)
        if depth > MAX_SUBFLOW_DEPTH:
            return RunError(
                name="SubflowTooDeep",
                message=f"subflows nest deeper than {MAX_SUBFLOW_DEPTH} "
                f"(does {run.spec.flow_path} call itself?)",
            )
        flow = Flow.model_validate(flow_body).spec.openflow()
        invalid = flow_pin.start_problems(api, namespace, flow)
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
        if (run.metadata.annotations or {}).get(flow_pin.RETRY_FROM) == "failed-step":
            seeded = flow_pin.retry_seed(api, run, flow, digest)
            if isinstance(seeded, RunError):
                return seeded
            update.update(seeded)
        with observed.lock:
            observed.snapshots[uid] = flow
        return flow, status.model_copy(update=update)

    def create_child(
        self, body: dict[str, Any], run: FlowRun, flow: OpenFlow, action: CreateRun, now: datetime
    ) -> RunError | None:
        """Create one child (its resume URLs first, so its pod finds them). A child of that name that someone
        else created is never adopted: it must be the very run this step asks for, or the flow fails."""
        api = self.api
        namespace, uid = str(body["metadata"]["namespace"]), run.metadata.uid or ""
        claim = None
        if flow.value.same_worker and action.kind == "ScriptRun":  # ./shared: the run's own volume
            try:
                claim = api.create(shared_claim(run))[0]["metadata"]["name"]
            except NotOurs as exc:
                return RunError(name="NotOurs", message=f"step {action.step}: same_worker: {exc}")
        manifest = child_run_manifest(action, run, shared_claim=claim)
        urls = self.links.document(flow, action.step, namespace, str(body["metadata"]["name"]), uid, now)
        if urls is not None:
            existing = api.get_or_none(API_VERSION, action.kind, namespace, action.name)
            if existing is not None and not flow_pin.is_our_child(existing, manifest, uid):
                return flow_pin.child_conflict(action)
            try:
                api.create(resume_secret(body, action.name, urls))
            except NotOurs:  # a Secret planted under the links' name: never mount it into the child
                return flow_pin.child_conflict(action)
        created, fresh = api.create(manifest, adopt_any=True)  # `is_our_child` decides
        if not fresh and not flow_pin.is_our_child(created, manifest, uid):
            if urls is not None:
                api.delete("v1", "Secret", namespace, resume_secret_name(action.name))
            return flow_pin.child_conflict(action)
        if urls is not None:  # from now on the links live and die with this very child (a later run of the
            # same name, after this one is deleted, never finds them)
            owner: dict[str, Any] = {"apiVersion": API_VERSION, "kind": action.kind, "name": action.name}
            owner |= {"uid": created["metadata"]["uid"], "blockOwnerDeletion": True}
            patch = {"metadata": {"ownerReferences": [owner]}}
            api.patch("v1", "Secret", namespace, resume_secret_name(action.name), patch)
        self.remember_child(created, only_if_new=True)
        return None

    def write_status(self, body: dict[str, Any], status: FlowRunStatus) -> None:
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
        written = self.api.replace(update, status=True)
        self.observed.written[(meta["namespace"], meta["name"])] = written["metadata"]["resourceVersion"]
        self.observed.runs[(meta["namespace"], meta["name"])] = written


def _parent_of(body: dict[str, Any]) -> str | None:
    for ref in body["metadata"].get("ownerReferences") or []:
        if ref.get("kind") == "FlowRun" and ref.get("controller"):
            return str(ref["name"])
    return None
