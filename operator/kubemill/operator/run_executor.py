"""Carries out ScriptRun decisions: gathers what `kubemill.k8s.scriptruns.decide` needs, acts on what it says.

Every trigger (the run changed, its Job or Pod changed, a wake-up came due) ends in `RunExecutor.reconcile`,
level-triggered and serialised per run: read the run, find what it executes, observe the current attempt,
decide, then act in an order that survives a crash at any point: objects a status will point at are created
before the status is written (a Job before `status.job`, a result ConfigMap before `status.resultRef`), and
cleanup (finished Jobs, the per-run Secret) happens after. The status write carries the run's
resourceVersion, so two writers can never both record a result: the loser re-reads and finds it recorded.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Hashable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from kubemill.errors import ApiRejected, ApiUnavailable, Conflict, NotFound, NotOurs
from kubemill.k8s import builders, runlogs, scriptruns
from kubemill.k8s.builders import JobOptions, RunIdentity, RunTarget
from kubemill.k8s.client import Body, Kube
from kubemill.k8s.scriptruns import Decision, Failure, Inputs, Observation
from kubemill.models.scripts import ScriptRun
from kubemill.operator import metrics
from kubemill.operator.requeue import Requeue
from kubemill.operator.run_inputs import run_secret_files
from kubemill.operator.script_catalog import ScriptCatalog
from kubemill.runners.languages import RunContext
from kubemill.runners.validation import args_for_language, run_args
from kubemill.secrets import UnresolvedReference, decode_secret, masks_from_secret_data

log = logging.getLogger(__name__)
API = "kubemill.dev/v1alpha1"
HISTORY_ANNOTATION = "kubemill.dev/history-limit"
FLOW_RUN_LABEL = "kubemill.dev/flow-run-uid"
PARENT_RUN_LABEL = "kubemill.dev/parent-run-uid"
"""On runs a script started through `wmill` (runner_images/python3/wmill/jobs.py): the starting run's uid."""
RunKey = tuple[str, str]


@dataclass
class RunRecord:
    """What the executor remembers of a run between events (for concurrency limits and history)."""

    script_path: str
    phase: str
    created: str
    finished: str = ""
    kept_by_parent: bool = False  # a flow's step: the FlowRun, not the script's history, decides


class RunExecutor:
    """Reconciles ScriptRuns; one per operator process."""

    def __init__(
        self,
        kube: Kube,
        catalog: ScriptCatalog,
        options: JobOptions | None = None,
        history_limit: int = 100,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        workers: int = 8,
        live_log_seconds: float = 5.0,
    ) -> None:
        self.kube = kube
        self.catalog = catalog
        self.options = options or JobOptions()
        self.history_limit = history_limit
        self.clock = clock
        self.live_log_seconds = live_log_seconds
        self._log_due: dict[RunKey, float] = {}
        self._logs_written: set[RunKey] = set()  # runs whose log ConfigMap this process wrote
        self._locks: dict[RunKey, threading.Lock] = {}
        self._script_locks: dict[tuple[str, str], threading.Lock] = {}
        self._guard = threading.Lock()
        self._runs: dict[RunKey, RunRecord] = {}
        self._written: dict[RunKey, Body] = {}  # the last body written, while the run is not final
        self._final: dict[RunKey, int] = {}  # resourceVersion at which a run became final (no body kept)
        self._masks: dict[RunKey, frozenset[str]] = {}
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kubemill-requeued")
        self.requeue = Requeue(self._requeued)

    # --- triggers ------------------------------------------------------------------------------------

    def _requeued(self, key: Hashable) -> None:
        assert isinstance(key, tuple)  # the executor only requeues RunKeys
        self._pool.submit(self._safe_reconcile, str(key[0]), str(key[1]))

    def _safe_reconcile(self, namespace: str, name: str) -> None:
        try:
            self.reconcile(namespace, name)
        except Exception as exc:
            metrics.RECONCILE_ERRORS.labels("ScriptRun", type(exc).__name__).inc()
            log.exception("reconcile of scriptrun %s/%s failed; retrying in 5s", namespace, name)
            self.requeue.after((namespace, name), 5.0)

    def forget(self, namespace: str, name: str) -> None:
        """The run was deleted."""
        key = (namespace, name)
        with self._guard:
            record = self._runs.pop(key, None)
            if record is not None:
                self._set_phase(key, record, "")
            self._written.pop(key, None)
            self._final.pop(key, None)
            self._masks.pop(key, None)
            self._log_due.pop(key, None)
            self._logs_written.discard(key)
            self._locks.pop(key, None)

    def _lock(self, key: RunKey) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

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
        with self._lock(key):
            if body is not None and _rv(body) < self._final.get(key, 0):
                return  # an event older than the final status this process wrote: nothing left to do
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
        """Delete a Job its run no longer needs (the run finished, or moved on to a later attempt): what a
        crash between recording a result and deleting the Job leaves behind."""
        key = (namespace, run_name)
        with self._lock(key):
            body = self._written.get(key) or self._freshest(key, None)
            if body is None:
                return
            status = body.get("status") or {}
            current = (status.get("job") or {}).get("name")
            earlier = {builders.job_name(run_name, n) for n in range(1, int(status.get("attempts", 0)))}
            if status.get("phase") in scriptruns.TERMINAL or (job_name in earlier and job_name != current):
                self.kube.delete("batch/v1", "Job", namespace, job_name, propagation="Background")

    def _freshest(self, key: RunKey, body: Mapping[str, Any] | None) -> Body | None:
        written = self._written.get(key)
        if body is None:
            return self.kube.get_or_none(API, "ScriptRun", key[0], key[1])
        if written is not None and _rv(written) > _rv(body):
            return written
        return dict(body)

    def _step(self, key: RunKey, body: Body, pod: Mapping[str, Any] | None) -> None:
        """One decision, carried out."""
        run = ScriptRun.model_validate(body)
        status = scriptruns.current_status(run)
        phase = status.get("phase", "Pending")
        self._remember(key, run, phase)
        if phase in scriptruns.TERMINAL:
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
                running = self._running_count(key, target.path)
                inputs = replace(inputs, slot_free=running < target.concurrency_limit, running_count=running)
                self._act(key, run, body, target, scriptruns.decide(run, inputs))
            return
        self._act(key, run, body, target, scriptruns.decide(run, inputs))

    def _observe(
        self, run: ScriptRun, status: Mapping[str, Any], timeout: int | None, pod: Mapping[str, Any] | None
    ) -> Observation:
        namespace = run.metadata.namespace or ""
        job_name = (status.get("job") or {}).get("name")
        job = self.kube.get_or_none("batch/v1", "Job", namespace, job_name) if job_name else None
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

    def _running_count(self, key: RunKey, path: str) -> int:
        with self._guard:
            return sum(
                1
                for k, r in self._runs.items()
                if k != key and k[0] == key[0] and r.script_path == path and r.phase == "Running"
            )

    def _remember(self, key: RunKey, run: ScriptRun, phase: str) -> None:
        created = str((run.metadata.model_extra or {}).get("creationTimestamp", ""))
        finished = run.status.finished_at if run.status is not None else None
        with self._guard:
            record = self._runs.get(key)
            if record is None:
                record = self._runs[key] = RunRecord(
                    run.spec.script_path or "",
                    "",
                    created,
                    kept_by_parent=bool(run.spec.flow_run or (run.metadata.labels or {}).get(FLOW_RUN_LABEL)),
                )
            self._set_phase(key, record, phase)
            if finished is not None and not record.finished:
                record.finished = finished.strftime("%Y-%m-%dT%H:%M:%SZ")

    @staticmethod
    def _set_phase(key: RunKey, record: RunRecord, phase: str) -> None:
        """Record a phase; the active-runs gauge follows every move into and out of Running, however the
        operator learned of it (its own write, or a run already running when it started)."""
        if record.phase != "Running" and phase == "Running":
            metrics.ACTIVE_RUNS.labels(key[0]).inc()
        elif record.phase == "Running" and phase != "Running":
            metrics.ACTIVE_RUNS.labels(key[0]).dec()
        record.phase = phase

    # --- acting --------------------------------------------------------------------------------------

    def _act(
        self, key: RunKey, run: ScriptRun, body: Body, target: RunTarget | None, decision: Decision
    ) -> None:
        namespace, name = key
        identity = RunIdentity(namespace, name, run.metadata.uid or "")
        old = scriptruns.current_status(run)
        new_status = decision.status
        for action in decision.actions:
            if isinstance(action, scriptruns.StartAttempt) and target is not None:
                started = self._start(key, run, identity, target, action.attempt)
                if started is not None:  # resources could not be resolved: the run fails instead
                    new_status = started
            elif isinstance(action, scriptruns.StoreResult):
                self.kube.create(builders.build_result_configmap(identity, action.result_json))
            elif isinstance(action, scriptruns.StoreState):
                self._store_state(namespace, action)
        if old.get("phase") == "Running" and new_status.get("phase") != "Running":
            # The attempt ended: keep its output before its Job (and pod) are deleted.
            ended = {**old, "pod": new_status.get("pod") or old.get("pod")}
            self._store_log(key, identity, ended, final=decision.finished)
        elif new_status.get("phase") == "Running" and self.live_log_seconds > 0 and new_status.get("pod"):
            self._live_log(key, identity, new_status)
        changed = new_status != old
        if changed:
            written = self.kube.replace({**body, "status": new_status}, status=True)
            if decision.finished:
                self._written.pop(key, None)
                self._final[key] = _rv(written)
            else:
                self._written[key] = written
            self._after_transition(key, run, old, new_status, target, decision)
        for action in decision.actions:
            if isinstance(action, scriptruns.DeleteJob):
                self.kube.delete("batch/v1", "Job", namespace, action.name, propagation="Background")
            elif isinstance(action, scriptruns.DeleteRunSecret):
                self.kube.delete("v1", "Secret", namespace, builders.run_secret_name(name))
            elif isinstance(action, scriptruns.Requeue):
                self.requeue.after(key, action.seconds)
        if decision.event is not None and changed:
            reason, message = decision.event
            warning = new_status.get("phase") == "Failed"
            self.kube.event(builders.build_event(identity, reason, message, warning, self.clock()))

    def _live_log(self, key: RunKey, identity: RunIdentity, status: Mapping[str, Any]) -> None:
        """While an attempt runs, refresh its stored log every `live_log_seconds` (`kubemill logs -f` and
        the UI follow the stored, masked log, never the raw pod log)."""
        now = self.clock().timestamp()
        with self._guard:
            due = self._log_due.get(key)
            if (
                due is None
            ):  # the first refresh one interval in: most runs are over by then (no extra requests)
                self._log_due[key] = now + self.live_log_seconds
                self.requeue.after(key, self.live_log_seconds)
                return
            if now < due:
                return
            self._log_due[key] = now + self.live_log_seconds
        self._store_log(key, identity, status, final=False)
        self.requeue.after(key, self.live_log_seconds)

    def _store_log(self, key: RunKey, identity: RunIdentity, status: Mapping[str, Any], final: bool) -> None:
        """Append the current attempt's output (masked, bounded) to the run's stored log. Best effort: a log
        that cannot be read (the pod is gone) or written never changes how the run ends."""
        namespace, name = key
        pod = (status.get("pod") or {}).get("name")
        attempt = int(status.get("attempts", 0) or 0)
        if not pod or attempt < 1:
            return
        try:
            raw = self.kube.pod_log(
                namespace, pod, container=builders.CONTAINER, tail_lines=runlogs.POD_LOG_LINES
            )
        except (NotFound, ApiRejected, ApiUnavailable):
            log.info("scriptrun %s/%s: the log of pod %s is gone; none stored", namespace, name, pod)
            return
        text = runlogs.run_log_text(attempt, raw, self._masks_for(key))
        cm_name = runlogs.log_configmap_name(name)
        try:
            if attempt == 1 and key not in self._logs_written:
                # Nothing stored for this run by this process: usually nothing at all, so try creating first
                # (one request); anything already there is dealt with below.
                bounded, cut = runlogs.bound(text, runlogs.LOG_MAX)
                try:
                    _, created = self.kube.create(runlogs.build_log_configmap(identity, bounded, cut, final))
                except NotOurs:
                    created = False
                if created:
                    self._logs_written.add(key)
                    return
            previous = self.kube.get_or_none("v1", "ConfigMap", namespace, cm_name)
            owners = ((previous or {}).get("metadata") or {}).get("ownerReferences") or []
            if previous is not None and not any(o.get("uid") == identity.uid for o in owners):
                # Not this run's (planted before it, or left by an earlier run of the same name): replace it.
                self.kube.delete("v1", "ConfigMap", namespace, cm_name)
                previous = None
            cut = 0
            if previous is not None:
                stored = runlogs.read_log_configmap(previous)
                header = runlogs.attempt_header(attempt)
                kept = runlogs.strip_notice(stored.text)
                if header in kept:  # this attempt was stored already (a crash before the status write)
                    kept = kept[: kept.index(header)]
                text, cut = kept + text, stored.cut_bytes
            text, cut = runlogs.bound(text, runlogs.LOG_MAX, cut)
            cm = runlogs.build_log_configmap(identity, text, cut, final)
            if previous is not None and previous.get("binaryData") == cm["binaryData"] and not final:
                return
            if previous is None:
                self.kube.create(cm)
            else:
                patch = {k: cm[k] for k in ("binaryData",)}
                patch["metadata"] = {"annotations": cm["metadata"]["annotations"]}
                self.kube.patch("v1", "ConfigMap", namespace, cm_name, patch)
            self._logs_written.add(key)
        except (ApiRejected, ApiUnavailable, NotOurs) as exc:
            log.warning("scriptrun %s/%s: its log could not be stored: %s", namespace, name, exc)

    def _store_state(self, namespace: str, action: scriptruns.StoreState) -> None:
        owner = self.catalog.owner_of(namespace, action.state_path)
        cm = builders.build_state_configmap(namespace, action.state_path, action.state_json, owner)
        existing, created = self.kube.create(cm, adopt_any=True)  # the state is overwritten just below
        if not created and (existing.get("data") or {}).get(builders.STATE_KEY) != action.state_json:
            patch = {"data": {builders.STATE_KEY: action.state_json}}
            self.kube.patch("v1", "ConfigMap", namespace, cm["metadata"]["name"], patch)

    def _start(
        self, key: RunKey, run: ScriptRun, identity: RunIdentity, target: RunTarget, attempt: int
    ) -> dict[str, Any] | None:
        try:
            return self._create_attempt(key, run, identity, target, attempt)
        except NotOurs as exc:  # something planted under a name we compute: never run with it
            inputs = Inputs(now=self.clock(), target=None, target_problem=Failure("NotOurs", str(exc)))
            return scriptruns.decide(run, inputs).status

    def _create_attempt(
        self, key: RunKey, run: ScriptRun, identity: RunIdentity, target: RunTarget, attempt: int
    ) -> dict[str, Any] | None:
        namespace, name = key
        script_owner = self.catalog.owner_of(namespace, target.path)
        self.catalog.ensure_code(namespace, target, script_owner or identity)
        try:
            files = run_secret_files(self.kube, namespace, target.resources)
        except UnresolvedReference as exc:
            failure = Failure(exc.reason, exc.message)
            inputs = Inputs(now=self.clock(), target=None, target_problem=failure)
            return scriptruns.decide(run, inputs).status
        self._masks[key] = masks_from_secret_data(files)
        args = args_for_language(target.language, run.spec.args)
        if target.schema is not None:
            args = run_args(target.schema, args)  # optional nulls left out, so the script's defaults apply
        if run.spec.flow_user_states is not None:
            files = {**files, builders.FLOW_STATES_KEY: json.dumps(run.spec.flow_user_states)}
        secret = builders.build_run_secret(identity, args, files)
        self.kube.create(secret)
        context = RunContext(
            workspace=namespace,
            job_id=run.metadata.uid or name,
            job_path=target.path,
            flow_job_id=(run.metadata.labels or {}).get("kubemill.dev/flow-run-uid", ""),
            flow_step_id=run.spec.step_id or "",
            schedule_path=run.spec.schedule_path or "",
            scheduled_for=run.spec.scheduled_for.isoformat() if run.spec.scheduled_for else "",
        )
        job = builders.build_job(
            identity,
            target,
            attempt,
            list(secret["stringData"]),
            context,
            self.options,
        )
        _, created = self.kube.create(job)
        if created:
            metrics.RUNS_STARTED.labels(namespace, target.language, target.path).inc()
        return None

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
        with self._guard:
            record = self._runs.get(key)
            if record is not None:
                self._set_phase(key, record, str(phase))
        if phase == "Running" and was != "Running" and not old.get("startedAt"):
            created = (run.metadata.model_extra or {}).get("creationTimestamp")
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
                if record is not None:
                    record.finished = str(new.get("finishedAt", ""))
                self._masks.pop(key, None)
                self._log_due.pop(key, None)
                self._logs_written.discard(key)
            self._trim_history(namespace, path)

    def _cancel_started_runs(self, namespace: str, uid: str) -> None:
        """Cancelling a run cancels the runs its script started (`wmill.run_script_async`, ...: labelled
        `kubemill.dev/parent-run-uid`), as Windmill cancels a job's children."""
        if not uid:
            return
        for kind in ("ScriptRun", "FlowRun"):
            for child in self.kube.list(API, kind, namespace, labels={PARENT_RUN_LABEL: uid}):
                if (child.get("status") or {}).get("phase") in scriptruns.TERMINAL:
                    continue
                patch = {"metadata": {"annotations": {scriptruns.CANCEL_ANNOTATION: "true"}}}
                try:
                    self.kube.patch(API, kind, namespace, child["metadata"]["name"], patch)
                except NotFound:
                    continue

    def _wake_waiting(self, namespace: str, path: str) -> None:
        with self._guard:
            waiting = sorted(
                (r.created, k)
                for k, r in self._runs.items()
                if k[0] == namespace and r.script_path == path and r.phase == "Pending"
            )
        for _, key in waiting:
            self.requeue.after(key, 0)

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
        with self._guard:
            finished = sorted(
                (r.finished, k)
                for k, r in self._runs.items()
                if k[0] == namespace
                and r.script_path == path
                and r.phase in scriptruns.TERMINAL
                and r.finished
                and not r.kept_by_parent
            )
        for _, (ns, name) in finished[: max(len(finished) - limit, 0)]:
            self.kube.delete(API, "ScriptRun", ns, name)
            self.forget(ns, name)


def _rv(body: Mapping[str, Any]) -> int:
    try:
        return int(body.get("metadata", {}).get("resourceVersion", 0))
    except (TypeError, ValueError):
        return 0


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
