"""Carries out ScriptRun decisions: gathers what `engine.scriptrun.decide` needs, acts on what it says.

Every trigger (the run changed, its Job or Pod changed, a wake-up came due) ends in `RunExecutor.reconcile`,
level-triggered and serialised per run: read the run, find what it executes, observe the current attempt,
decide, then act in an order that survives a crash at any point: objects a status will point at are created
before the status is written (a Job before `status.job`, a result ConfigMap before `status.resultRef`), and
cleanup (finished Jobs, the per-run Secret) happens after. The status write carries the run's
resourceVersion, so two writers can never both record a result: the loser re-reads and finds it recorded.

resourceVersions are compared for equality only (Kubernetes promises nothing more). An event's body is the
freshest picture unless this process wrote the run since: then a body with the version it last wrote is
that write's echo, one with a version it read or wrote before is older (the watch delivers in order), and
one with a version it never saw is another writer's, which a read from the API server settles.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Hashable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, assert_never

from kubemill import constants
from kubemill.engine import scriptrun
from kubemill.engine.actions import RequeueAfter
from kubemill.engine.scriptrun import (
    Decision,
    DeleteJob,
    DeleteRunSecret,
    Inputs,
    Observation,
    StartAttempt,
    StoreResult,
    StoreState,
    status_data,
)
from kubemill.errors import Conflict, NotFound
from kubemill.k8s import builders, scriptruns
from kubemill.k8s.api import Body, KubeApi
from kubemill.k8s.builders import JobOptions, RunIdentity, RunTarget
from kubemill.models.scripts import ScriptRun, ScriptRunStatus
from kubemill.operator import metrics
from kubemill.operator.attempts import Attempts
from kubemill.operator.pool_dispatch import PoolDispatcher
from kubemill.operator.run_logs import StoredLogs
from kubemill.operator.run_records import RunKey, RunRecords
from kubemill.operator.script_catalog import ScriptCatalog
from kubemill.operator.work_queue import WorkQueue
from kubemill.secrets import decode_secret, masks_from_secret_data

log = logging.getLogger(__name__)
API = constants.API_VERSION
HISTORY_ANNOTATION = constants.ANNOTATION_HISTORY_LIMIT
FLOW_RUN_LABEL = constants.LABEL_FLOW_RUN_UID
PARENT_RUN_LABEL = constants.LABEL_PARENT_RUN_UID
"""On runs a script started through `wmill` (runner_images/python3/wmill/jobs.py): the starting run's uid."""
KIND = "ScriptRun"


class RunExecutor:
    """Reconciles ScriptRuns; one per operator process."""

    def __init__(
        self,
        kube: KubeApi,
        catalog: ScriptCatalog,
        options: JobOptions | None = None,
        history_limit: int = 100,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        workers: int = 8,
        live_log_seconds: float = 5.0,
        queue: WorkQueue | None = None,
    ) -> None:
        self.kube = kube
        self.catalog = catalog
        self.options = options or JobOptions()
        self.history_limit = history_limit
        self.clock = clock
        self.live_log_seconds = live_log_seconds
        self._script_locks: dict[tuple[str, str], threading.Lock] = {}
        self._guard = threading.Lock()
        self.records = RunRecords()
        self._written: dict[RunKey, Body] = {}  # the last body written, while the run is not final
        self._final: dict[RunKey, str] = {}  # resourceVersion at which a run became final (no body kept)
        self._seen: dict[RunKey, set[str]] = {}  # versions read or written before the last write
        self._masks: dict[RunKey, frozenset[str]] = {}
        self.queue = queue if queue is not None else WorkQueue(workers=workers)
        self.queue.register(KIND, self._reconcile_queued)
        wake = lambda key: self.requeue_after(key, live_log_seconds)  # noqa: E731 - a live log's next refresh
        self.logs = StoredLogs(kube, self._masks_for, wake, clock, live_log_seconds)
        self.pools = PoolDispatcher(kube, clock, self.requeue_after)  # warm runner pools (docs/pools.md)
        self.attempts = Attempts(kube, catalog, self.options, self.pools, clock)

    # --- triggers ------------------------------------------------------------------------------------

    def requeue_after(self, key: Hashable, seconds: float) -> None:
        """Reconcile the run `key` (namespace, name) again in `seconds`, through the operator's queue."""
        assert isinstance(key, tuple)  # the executor only requeues RunKeys
        self.queue.after(KIND, str(key[0]), str(key[1]), seconds)

    def _reconcile_queued(self, namespace: str, name: str) -> None:
        """A re-add that came due: the queue retries it when it fails."""
        self.reconcile(namespace, name)

    def forget(self, namespace: str, name: str) -> None:
        """The run was deleted."""
        key = (namespace, name)
        self.records.drop(key)
        with self._guard:
            self._written.pop(key, None)
            self._final.pop(key, None)
            self._seen.pop(key, None)
            self._masks.pop(key, None)
        self.queue.forget(KIND, namespace, name)
        self.logs.forget(key)

    def cache_sizes(self) -> dict[str, int]:
        """How many runs each per-run record holds (bounded by the runs that exist: tests and the memory
        report read it)."""
        with self._guard:
            sizes = {
                "runs": len(self.records),
                "written": len(self._written),
                "final": len(self._final),
                "seen": len(self._seen),
                "masks": len(self._masks),
                "script_locks": len(self._script_locks),
            }
        sizes |= self.logs.cache_sizes() | self.pools.cache_sizes()
        return sizes | self.queue.sizes(KIND)

    def _script_lock(self, namespace: str, path: str) -> threading.Lock:
        with self._guard:
            return self._script_locks.setdefault((namespace, path), threading.Lock())

    # --- the reconcile -------------------------------------------------------------------------------

    def reconcile(
        self,
        namespace: str,
        name: str,
        body: Mapping[str, Any] | None = None,
        pod: Mapping[str, Any] | None = None,
    ) -> None:
        """Bring one run a step forward: decide on its freshest body, act, write its status once."""
        key = (namespace, name)
        with self.queue.holding(KIND, namespace, name):
            if body is not None and key in self._final:
                if _rv(body) == self._final[key]:  # the echo of the final status this process wrote
                    self._seen.pop(key, None)
                    return
                if _rv(body) in self._seen.get(key, ()):
                    return  # an event from before the final status this process wrote: nothing left to do
            current = self._freshest(key, body)
            for _ in range(3):
                if current is None:
                    self.forget(namespace, name)
                    return
                try:
                    self._step(key, current, pod)
                    return
                except Conflict:  # the run changed since we read it: decide again on what it is now
                    current = self.kube.get_or_none(API, "ScriptRun", namespace, name)
                except NotFound:  # the run was deleted meanwhile (what it owns goes with it)
                    current = None

    def collect_job(self, namespace: str, run_name: str, job_name: str) -> None:
        """Delete a Job its run no longer needs (the run finished, or moved on to a later attempt), and a
        finished run's Secret: what a crash between recording a result and the cleanup leaves behind."""
        key = (namespace, run_name)
        with self.queue.holding(KIND, namespace, run_name):
            body = self._written.get(key) or self._freshest(key, None)
            if body is None:  # the run is gone (its Job's events outlive it): nothing of it kept here
                self.forget(namespace, run_name)
                return
            status = body.get("status") or {}
            current = (status.get("job") or {}).get("name")
            earlier = {builders.job_name(run_name, n) for n in range(1, int(status.get("attempts", 0)))}
            if status.get("phase") in scriptrun.TERMINAL:  # its Secret goes first, as in the decision
                self.kube.delete("v1", "Secret", namespace, builders.run_secret_name(run_name))
            if status.get("phase") in scriptrun.TERMINAL or (job_name in earlier and job_name != current):
                self.kube.delete("batch/v1", "Job", namespace, job_name, propagation="Background")

    def _freshest(self, key: RunKey, body: Mapping[str, Any] | None) -> Body | None:
        """The run as it is now: the event's body, what this process last wrote, or (when neither can be
        known to be current) a fresh read."""
        if body is None:
            return self.kube.get_or_none(API, "ScriptRun", key[0], key[1])
        written = self._written.get(key)
        if written is None and key not in self._final:
            return dict(body)  # nothing written by this process since its last event: the event is current
        version = _rv(body)
        if written is not None and version == _rv(written):
            return dict(body)  # the echo of this process's last write
        if written is not None and version in self._seen.get(key, ()):
            return written  # an event from before this process's last write
        return self.kube.get_or_none(API, "ScriptRun", key[0], key[1])  # another writer's version

    def _step(self, key: RunKey, body: Body, pod: Mapping[str, Any] | None) -> None:
        """One decision, carried out."""
        run = ScriptRun.model_validate(body)
        status = scriptrun.current_status(run)
        phase = status.phase
        self.records.remember(key, run, phase)
        if phase in scriptrun.TERMINAL:
            return
        target, problem = self.catalog.target_for(run)
        inputs = Inputs(now=self.clock(), target=target, target_problem=problem)
        if phase == "Running":
            timeout = target.timeout_seconds if target is not None else run.spec.timeout_seconds
            observation = self._observe(run, status, timeout, pod)
            inputs = replace(inputs, observation=observation, masks=self._masks_for(key))
        elif phase == "Pending" and target is not None and target.concurrency_limit:
            # Count and take a slot under the script's lock, so two runs never take the last one together.
            with self._script_lock(key[0], target.path):
                running = self.records.running_besides(key, target.path)
                inputs = replace(inputs, slot_free=running < target.concurrency_limit, running_count=running)
                self._act(key, run, body, target, scriptrun.decide(run, inputs))
            return
        self._act(key, run, body, target, scriptrun.decide(run, inputs))

    def _observe(
        self, run: ScriptRun, status: ScriptRunStatus, timeout: int | None, pod: Mapping[str, Any] | None
    ) -> Observation:
        namespace = run.metadata.namespace or ""
        job_name = status.job.name if status.job is not None else None
        job = self.kube.get_or_none("batch/v1", "Job", namespace, job_name) if job_name else None
        pooled = self.pools.observe((namespace, run.metadata.name or ""), job)
        if pooled is not None:  # a pool worker runs this attempt: its claim on the Job says how it goes
            return pooled
        # The triggering pod event's body serves only if it is this Job's pod and at least as far along as
        # the Job: a Job already finished with a pod body from before its end needs the pod read afresh.
        if job is not None and not scriptruns.pod_is_current(job, pod, job_name):
            pods = self.kube.list("v1", "Pod", namespace, labels={"job-name": str(job_name)})
            pod = max(pods, key=lambda p: p["metadata"].get("creationTimestamp", ""), default=None)
        observation = scriptruns.observe_attempt(job, pod, None, timeout)
        if observation.state == "needs-logs" and pod is not None:
            try:
                logs = self.kube.pod_log(
                    namespace,
                    pod["metadata"]["name"],
                    container=builders.CONTAINER,
                    tail_lines=scriptruns.LOG_LINES,
                )
            except NotFound:
                logs = ""
            observation = scriptruns.observe_attempt(job, pod, logs, timeout)
        return observation

    def _masks_for(self, key: RunKey) -> frozenset[str]:
        if key in self._masks:
            return self._masks[key]
        secret = self.kube.get_or_none("v1", "Secret", key[0], builders.run_secret_name(key[1]))
        masks = masks_from_secret_data(decode_secret((secret or {}).get("data")))
        self._masks[key] = masks
        return masks

    # --- acting --------------------------------------------------------------------------------------

    def _act(  # noqa: C901, PLR0912 - complexity debt, docs/architecture.md
        self, key: RunKey, run: ScriptRun, body: Body, target: RunTarget | None, decision: Decision
    ) -> None:
        namespace, name = key
        identity = RunIdentity(namespace, name, run.metadata.uid or "")
        old = status_data(scriptrun.current_status(run))
        new_status = status_data(decision.status)
        for action in decision.actions:  # what the status to be written will point at, first
            match action:
                case StartAttempt(attempt=attempt) if target is not None:
                    started = self._start(key, run, identity, target, attempt)
                    if started is not None:  # resources could not be resolved: the run fails instead
                        new_status = started
                case StoreResult(result_json=result_json):
                    self.kube.create(builders.build_result_configmap(identity, result_json))
                case StoreState():
                    self._store_state(namespace, action)
                case StartAttempt() | DeleteJob() | DeleteRunSecret() | RequeueAfter():
                    pass  # after the write
                case _:
                    assert_never(action)
        if old.get("phase") == "Running" and new_status.get("phase") != "Running":
            # The attempt ended: keep its output before its Job (and pod) are deleted.
            ended = {**old, "pod": new_status.get("pod") or old.get("pod")}
            self.logs.store(key, identity, ended, final=decision.finished)
        elif new_status.get("phase") == "Running" and self.live_log_seconds > 0 and new_status.get("pod"):
            self.logs.live(key, identity, new_status)
        changed = new_status != old
        if changed:
            written = self.kube.replace({**body, "status": new_status}, status=True)
            seen = self._seen.setdefault(key, set())
            seen.add(_rv(body))
            if key in self._written:
                seen.add(_rv(self._written[key]))
            if decision.finished:
                self._written.pop(key, None)
                self._final[key] = _rv(written)
            else:
                self._written[key] = written
            self._after_transition(key, run, old, new_status, target, decision)
        for action in decision.actions:  # cleanup and wake-ups, after the write
            match action:
                case DeleteJob(name=job):
                    self.kube.delete("batch/v1", "Job", namespace, job, propagation="Background")
                case DeleteRunSecret():
                    self.kube.delete("v1", "Secret", namespace, builders.run_secret_name(name))
                case RequeueAfter(seconds=seconds):
                    self.requeue_after(key, seconds)
                case StartAttempt() | StoreResult() | StoreState():
                    pass  # before the write
                case _:
                    assert_never(action)
        if decision.event is not None and changed:
            reason, message = decision.event
            warning = new_status.get("phase") == "Failed"
            self.kube.event(builders.build_event(identity, reason, message, warning, self.clock()))

    def _store_state(self, namespace: str, action: StoreState) -> None:
        owner = self.catalog.owner_of(namespace, action.state_path)
        cm = builders.build_state_configmap(namespace, action.state_path, action.state_json, owner)
        existing, created = self.kube.create(cm, adopt_any=True)  # the state is overwritten just below
        if not created and (existing.get("data") or {}).get(builders.STATE_KEY) != action.state_json:
            patch = {"data": {builders.STATE_KEY: action.state_json}}
            self.kube.patch("v1", "ConfigMap", namespace, cm["metadata"]["name"], patch)

    def _start(
        self, key: RunKey, run: ScriptRun, identity: RunIdentity, target: RunTarget, attempt: int
    ) -> dict[str, Any] | None:
        """Create the attempt's Secret and Job; a status instead when the run fails before it has a Job."""
        started = self.attempts.start(run, identity, target, attempt)
        if started.masks is not None:
            self._masks[key] = started.masks
        return started.status

    def _after_transition(
        self,
        key: RunKey,
        run: ScriptRun,
        old: Mapping[str, Any],
        new: Mapping[str, Any],
        target: RunTarget | None,
        decision: Decision,
    ) -> None:
        namespace, _ = key
        phase, was = new.get("phase"), old.get("phase", "Pending")
        language = target.language if target is not None else "unknown"
        path = target.path if target is not None else (run.spec.script_path or "")
        self.records.moved(key, str(phase), str(new.get("finishedAt", "")) if decision.finished else "")
        if phase == "Running" and was != "Running" and not old.get("startedAt"):
            created = run.metadata.creation_timestamp
            if created:
                waited = (self.clock() - _parse_time(str(created))).total_seconds()
                metrics.QUEUE_WAIT.labels(language).observe(max(waited, 0.0))
        if was == "Running" and phase != "Running":
            self._wake_waiting(namespace, path)
        if phase == "Cancelled":
            self._cancel_started_runs(namespace, run.metadata.uid or "")
        if decision.finished:
            metrics.RUNS_FINISHED.labels(namespace, language, path, str(phase)).inc()
            started = new.get("startedAt")
            if started:
                duration = (_parse_time(str(new["finishedAt"])) - _parse_time(str(started))).total_seconds()
                metrics.RUN_DURATION.labels(language, str(phase)).observe(max(duration, 0.0))
            with self._guard:
                self._masks.pop(key, None)
            self.logs.forget(key)
            self._trim_history(namespace, path)

    def _cancel_started_runs(self, namespace: str, uid: str) -> None:
        """Cancelling a run cancels the runs its script started (`wmill.run_script_async`, ...: labelled
        `kubemill.dev/parent-run-uid`), as Windmill cancels a job's children."""
        if not uid:
            return
        for kind in ("ScriptRun", "FlowRun"):
            for child in self.kube.list(API, kind, namespace, labels={PARENT_RUN_LABEL: uid}):
                if (child.get("status") or {}).get("phase") in scriptrun.TERMINAL:
                    continue
                patch = {"metadata": {"annotations": {scriptrun.CANCEL_ANNOTATION: "true"}}}
                try:
                    self.kube.patch(API, kind, namespace, child["metadata"]["name"], patch)
                except NotFound:
                    continue

    def _wake_waiting(self, namespace: str, path: str) -> None:
        for key in self.records.pending(namespace, path):
            self.requeue_after(key, 0)

    def _trim_history(self, namespace: str, path: str) -> None:
        """Delete the oldest finished runs of a script beyond its history limit (the operator's
        `--run-history-limit`, or the Script's `kubemill.dev/history-limit` annotation; 0 keeps all)."""
        limit = self.history_limit
        script = self.catalog.get(namespace, path) if path else None
        annotated = ((script.metadata.annotations or {}) if script is not None else {}).get(
            HISTORY_ANNOTATION
        )
        if annotated is not None and annotated.isdigit():
            limit = int(annotated)
        if not path or limit <= 0:
            return
        for ns, name in self.records.beyond_history(namespace, path, limit):
            self.kube.delete(API, "ScriptRun", ns, name)
            self.forget(ns, name)


def _rv(body: Mapping[str, Any]) -> str:
    """An object's resourceVersion: an opaque string, compared for equality only."""
    return str(body.get("metadata", {}).get("resourceVersion", ""))


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
