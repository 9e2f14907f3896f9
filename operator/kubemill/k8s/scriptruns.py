"""How a ScriptRun moves through its phases, as pure functions: observations in, a status and actions out.

`observe_attempt(job, pod, logs)` reads how the current attempt stands from its Job and Pod (and, when the
termination message was only a summary, the pod's last log lines). `decide(...)` takes the run, what it
executes (or why that cannot be found), that observation, whether a concurrency slot is free, the secret
values to mask, and the time, and returns the next status and the actions for the adapter to carry out
(start an attempt, store a large result, delete a finished Job, requeue). No clock, no API: the same inputs
always give the same decision, so a restarted operator recomputes exactly what it would have done.

Phases: Pending (validating, waiting for a concurrency slot, or waiting to retry) -> Running (a Job for
attempt `status.attempts`) -> Succeeded | Failed | Cancelled. The condition `Succeeded` says why
(`Queued`, `ConcurrencyLimit`, `RetryScheduled`, `ScriptNotFound`, `Running`, `Succeeded`, `InvalidArgs`,
`Timeout`, `ResultTooLarge`, `Cancelled`, `ScriptNotReady`, or the script's error name).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from kubemill.engine.retry import retry_delay
from kubemill.k8s.builders import RESULT_KEY, RunTarget, job_name, result_configmap_name
from kubemill.models.scripts import ScriptRun, ScriptRunStatus
from kubemill.runners import Envelope, envelope_from_logs, envelope_from_termination_message
from kubemill.runners.validation import args_for_language, validate_args
from kubemill.secrets import mask_json, mask_text

RESULT_INLINE_LIMIT = 16 * 1024
RESULT_MAX = 1024 * 1024 - 1024  # what a ConfigMap holds, less room for its key and metadata
CANCEL_ANNOTATION = "kubemill.dev/cancel"
SCRIPT_NOT_FOUND_GRACE = timedelta(seconds=30)
CONDITION = "Succeeded"
TERMINAL = frozenset({"Succeeded", "Failed", "Cancelled"})
LOG_LINES = 3
TAIL_CHARS = 500
"""What a failure message keeps of the runner's last log line, cut after masking."""
LEFT_NO_RESULT = " and left no result"
TAIL_READ = 64 * 1024
"""What is read of that line before masking: more than any secret a run is given."""
FATAL_WAITING = frozenset(
    {"InvalidImageName", "CreateContainerConfigError", "CreateContainerError", "ErrImageNeverPull"}
)
"""Container waiting reasons no waiting fixes: the attempt fails (an image pull back-off may recover)."""


# --- observing an attempt -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Failure:
    """Why an attempt or a run failed (Windmill's error shape)."""

    name: str
    message: str
    stack: str | None = None


@dataclass(frozen=True)
class Observation:
    """How the current attempt stands. `state` is `running`, `needs-logs` (read the log tail and observe
    again), `succeeded` (with `result_json`) or `failed` (with `failure`)."""

    state: Literal["running", "needs-logs", "succeeded", "failed"]
    pod: str | None = None
    result_json: str | None = None
    failure: Failure | None = None
    state_json: str | None = None
    flow_user_states: dict[str, Any] | None = None
    """A flow step's flow user states after the attempt, when it set one (`wmill.set_flow_user_state`)."""


def _terminated(pod: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    for status in (pod or {}).get("status", {}).get("containerStatuses") or []:
        terminated = (status.get("state") or {}).get("terminated")
        if terminated:
            return dict(terminated)
    return None


def _waiting(pod: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    for status in (pod or {}).get("status", {}).get("containerStatuses") or []:
        waiting = (status.get("state") or {}).get("waiting")
        if waiting:
            return dict(waiting)
    return None


def _job_condition(job: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for cond in job.get("status", {}).get("conditions") or []:
        if cond.get("type") == kind and cond.get("status") == "True":
            return dict(cond)
    return None


def pod_is_current(job: Mapping[str, Any], pod: Mapping[str, Any] | None, job_name: str | None) -> bool:
    """Whether `pod` (from an event) can stand for the Job's pod now: it belongs to the Job, and it has
    terminated if the Job has finished (else it is an older picture than the Job's)."""
    if pod is None or pod.get("metadata", {}).get("labels", {}).get("job-name") != job_name:
        return False
    finished = _job_condition(job, "Complete") or _job_condition(job, "Failed")
    return finished is None or _terminated(pod) is not None


def _from_envelope(envelope: Envelope, pod: str | None) -> Observation:
    state = None if envelope.state is None else json.dumps(envelope.state, separators=(",", ":"))
    if envelope.error is not None:
        error = envelope.error
        failure = Failure(error.name, error.message, error.stack)
        return Observation(
            "failed", pod, failure=failure, state_json=state, flow_user_states=envelope.flow_user_states
        )
    result = json.dumps(envelope.result, separators=(",", ":"))
    return Observation(
        "succeeded", pod, result_json=result, state_json=state, flow_user_states=envelope.flow_user_states
    )


def observe_attempt(
    job: Mapping[str, Any] | None,
    pod: Mapping[str, Any] | None,
    logs: str | None = None,
    timeout_seconds: int | None = None,
) -> Observation:
    """The current attempt, from its Job and Pod (None: not found) and, if asked for, its last log lines."""
    pod_name = (pod or {}).get("metadata", {}).get("name")
    if job is None:
        return Observation("failed", pod_name, failure=Failure("JobDeleted", "the run's Job was deleted"))
    failed = _job_condition(job, "Failed") or _job_condition(job, "FailureTarget")
    if failed is not None and failed.get("reason") == "DeadlineExceeded":
        limit = f" of {timeout_seconds}s" if timeout_seconds else ""
        return Observation(
            "failed", pod_name, failure=Failure("Timeout", f"the run exceeded its timeout{limit}")
        )
    terminated = _terminated(pod)
    if terminated is None:
        if failed is not None:
            message = failed.get("message") or failed.get("reason") or "the Job failed"
            return Observation("failed", pod_name, failure=Failure("RunnerFailed", str(message)))
        if _job_condition(job, "Complete") is not None:
            failure = Failure("RunnerFailed", "the Job completed but its pod (and result) are gone")
            return Observation("failed", pod_name, failure=failure)
        waiting = _waiting(pod)
        if waiting is not None and waiting.get("reason") in FATAL_WAITING:
            message = f"the runner pod cannot start: {waiting.get('reason')}: {waiting.get('message', '')}"
            return Observation("failed", pod_name, failure=Failure("RunnerFailed", message.rstrip(": ")))
        return Observation("running", pod_name)
    envelope = envelope_from_termination_message(terminated.get("message"))
    if envelope is not None and not envelope.truncated:
        return _from_envelope(envelope, pod_name)
    if logs is None:
        return Observation("needs-logs", pod_name)
    try:
        logged = envelope_from_logs(logs)
    except ValueError as exc:
        return Observation("failed", pod_name, failure=Failure("RunnerFailed", str(exc)))
    if logged is not None:
        return _from_envelope(logged, pod_name)
    if envelope is not None and (envelope.bytes or 0) > RESULT_MAX:
        size = f"{envelope.bytes} bytes" if envelope.bytes else "too large"
        return Observation(
            "failed",
            pod_name,
            failure=Failure("ResultTooLarge", f"the result envelope is {size}; at most 1 MiB"),
        )
    code = terminated.get("exitCode")
    reason = terminated.get("reason") or "Error"
    tail = logs.strip().splitlines()[-1:] if logs.strip() else []
    message = f"the runner exited with code {code} ({reason}){LEFT_NO_RESULT}"
    if tail:  # cut to TAIL_CHARS only after masking (`_masked`): a cut secret would escape the mask
        message += f": {tail[0][-TAIL_READ:]}"
    return Observation("failed", pod_name, failure=Failure("RunnerFailed", message))


# --- deciding ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StartAttempt:
    attempt: int


@dataclass(frozen=True)
class StoreResult:
    """Write the result ConfigMap before the status that points at it."""

    name: str
    result_json: str


@dataclass(frozen=True)
class StoreState:
    """Keep the state the attempt left for the script's next run (`wmill.set_state`)."""

    state_path: str
    state_json: str


@dataclass(frozen=True)
class DeleteJob:
    name: str


@dataclass(frozen=True)
class DeleteRunSecret:
    pass


@dataclass(frozen=True)
class Requeue:
    seconds: float


Action = StartAttempt | StoreResult | StoreState | DeleteJob | DeleteRunSecret | Requeue


@dataclass(frozen=True)
class Decision:
    status: dict[str, Any]
    actions: tuple[Action, ...] = ()
    event: tuple[str, str] | None = None  # (reason, message) worth telling the user

    @property
    def finished(self) -> bool:
        return self.status.get("phase") in TERMINAL


@dataclass(frozen=True)
class Inputs:
    """Everything `decide` looks at besides the run itself."""

    now: datetime
    target: RunTarget | None = None
    target_problem: Failure | None = None
    observation: Observation | None = None
    slot_free: bool = True
    running_count: int = 0
    masks: Iterable[str] = field(default_factory=frozenset)


def _iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _condition(
    status: str, reason: str, message: str, now: datetime, generation: int | None
) -> dict[str, Any]:
    cond: dict[str, Any] = {
        "type": CONDITION,
        "status": status,
        "reason": reason,
        "message": message[:4000],
        "lastTransitionTime": _iso(now),
    }
    if generation is not None:
        cond["observedGeneration"] = generation
    return cond


def current_status(run: ScriptRun) -> dict[str, Any]:
    """The run's status as plain camelCase data (an empty Pending status for a new run)."""
    status = run.status or ScriptRunStatus()
    return status.model_dump(mode="json", by_alias=True, exclude_none=True)


def _reason(status: Mapping[str, Any]) -> str | None:
    for cond in status.get("conditions") or []:
        if cond.get("type") == CONDITION:
            return str(cond.get("reason"))
    return None


def _with(
    status: dict[str, Any], run: ScriptRun, inputs: Inputs, cond: tuple[str, str, str], **fields: Any
) -> dict[str, Any]:
    out = dict(status)
    out.update({k: v for k, v in fields.items()})
    old = next((c for c in status.get("conditions") or [] if c.get("type") == CONDITION), None)
    new = _condition(*cond, inputs.now, run.metadata.generation)
    if old is not None and (old.get("status"), old.get("reason"), old.get("message")) == cond:
        new = dict(old)
    out["conditions"] = [new]
    out["observedGeneration"] = run.metadata.generation
    return {k: v for k, v in out.items() if v is not None}


def _masked(message: str, masks: Iterable[str]) -> str:
    """A failure message masked, then cut: the runner's log line it may end with keeps TAIL_CHARS."""
    masked = mask_text(message, masks)
    head, sep, tail = masked.partition(LEFT_NO_RESULT + ": ")
    return head + sep + tail[:TAIL_CHARS] if sep else masked


def _finish(
    status: dict[str, Any], run: ScriptRun, inputs: Inputs, phase: str, failure: Failure | None, **fields: Any
) -> dict[str, Any]:
    error = None
    if failure is not None:
        error = {"name": failure.name, "message": _masked(failure.message, inputs.masks)}
        if failure.stack:
            error["stack"] = mask_text(failure.stack, inputs.masks)
    reason = "Succeeded" if failure is None else failure.name
    message = "" if failure is None else error["message"] if error else ""
    cond_status = "True" if failure is None else "False"
    return _with(
        status,
        run,
        inputs,
        (cond_status, reason, message),
        phase=phase,
        error=error,
        finishedAt=_iso(inputs.now),
        **fields,
    )


def retry_due(run: ScriptRun, status: Mapping[str, Any], target: RunTarget) -> datetime | None:
    """When the scheduled retry may start (from the failure time and Windmill's retry policy)."""
    cond = next((c for c in status.get("conditions") or [] if c.get("type") == CONDITION), None)
    if cond is None:
        return None
    failed_at = datetime.fromisoformat(str(cond["lastTransitionTime"]).replace("Z", "+00:00"))
    delay = retry_delay(
        run.spec.retry or target.retry, int(status.get("attempts", 0)) - 1, run.metadata.name or "", ""
    )
    return failed_at + timedelta(seconds=delay or 0)


def decide(run: ScriptRun, inputs: Inputs) -> Decision:
    """The next status of `run` and what to do (a status equal to `current_status(run)`: nothing to write)."""
    status = current_status(run)
    phase = status.get("phase", "Pending")
    attempts = int(status.get("attempts", 0))
    current_job = (status.get("job") or {}).get("name")
    cleanup: tuple[Action, ...] = (DeleteJob(current_job),) if current_job else ()
    if phase in TERMINAL:
        return Decision(status)
    annotations = run.metadata.annotations or {}
    if annotations.get(CANCEL_ANNOTATION, "").lower() in ("true", "yes", "1"):
        failure = Failure("Cancelled", "cancelled with the kubemill.dev/cancel annotation")
        new = _finish(status, run, inputs, "Cancelled", failure)
        return Decision(new, (*cleanup, DeleteRunSecret()), ("Cancelled", failure.message))
    target = inputs.target
    if target is None and phase == "Running":
        # The Script went away (or changed into something unreadable) while an attempt runs: deleting a
        # definition does not kill runs already started; this one finishes with what it has, without retries.
        target = RunTarget(path=run.spec.script_path or "", language="", code="")
    if target is None:
        problem = inputs.target_problem or Failure(
            "ScriptNotFound", f"no Script with path {run.spec.script_path}"
        )
        created = run.metadata.model_extra.get("creationTimestamp") if run.metadata.model_extra else None
        created_at = datetime.fromisoformat(str(created).replace("Z", "+00:00")) if created else inputs.now
        if problem.name == "ScriptNotFound" and inputs.now - created_at < SCRIPT_NOT_FOUND_GRACE:
            new = _with(status, run, inputs, ("Unknown", problem.name, problem.message), phase="Pending")
            return Decision(new, (Requeue(2.0),))
        return Decision(
            _finish(status, run, inputs, "Failed", problem),
            (DeleteRunSecret(),),
            (problem.name, problem.message),
        )

    if phase == "Pending":
        if attempts == 0 and target.schema is not None:
            problems = validate_args(
                target.schema, args_for_language(target.language, run.spec.args), target.language
            )
            if problems:
                message = "invalid args: " + "; ".join(
                    f"{p.field or '(args)'}: {mask_text(p.message, inputs.masks)}" for p in problems
                )
                failure = Failure("InvalidArgs", message)
                return Decision(_finish(status, run, inputs, "Failed", failure), (), ("InvalidArgs", message))
        if attempts > 0 and _reason(status) == "RetryScheduled":
            due = retry_due(run, status, target)
            if due is not None and inputs.now < due:
                return Decision(status, (Requeue((due - inputs.now).total_seconds()),))
        if not inputs.slot_free:
            message = (
                f"waiting for a slot: {inputs.running_count} run(s) of {target.path} running, "
                f"concurrencyLimit is {target.concurrency_limit}"
            )
            return Decision(
                _with(status, run, inputs, ("Unknown", "ConcurrencyLimit", message), phase="Pending")
            )
        attempt = attempts + 1
        name = job_name(run.metadata.name or "", attempt)
        new = _with(
            status,
            run,
            inputs,
            ("Unknown", "Running", f"attempt {attempt} started"),
            phase="Running",
            attempts=attempt,
            job={"name": name, "kind": "Job"},
            pod=None,
            startedAt=status.get("startedAt") or _iso(inputs.now),
        )
        return Decision(new, (StartAttempt(attempt),))

    # Running: follow the attempt's Job.
    observation = inputs.observation or Observation("running")
    if observation.state in ("running", "needs-logs"):
        if observation.pod and (status.get("pod") or {}).get("name") != observation.pod:
            return Decision({**status, "pod": {"name": observation.pod, "kind": "Pod"}})
        return Decision(status)
    pod = {"name": observation.pod, "kind": "Pod"} if observation.pod else status.get("pod")
    ended: dict[str, Any] = {"pod": pod}
    if observation.flow_user_states is not None:  # read by the FlowRun's engine, masked like a result
        ended["flowUserStates"] = mask_json(observation.flow_user_states, inputs.masks)
    if observation.state_json is not None and target.path and len(observation.state_json) <= RESULT_MAX:
        # masked like a result: the state ConfigMap is readable by viewers (the runner masks it too)
        state = json.dumps(mask_json(json.loads(observation.state_json), inputs.masks), separators=(",", ":"))
        cleanup = (StoreState(target.path, state), *cleanup)
    if observation.state == "succeeded" and observation.result_json is not None:
        masked = json.dumps(
            mask_json(json.loads(observation.result_json), inputs.masks), separators=(",", ":")
        )
        size = len(masked.encode())
        if size <= RESULT_INLINE_LIMIT:
            new = _finish(status, run, inputs, "Succeeded", None, result=json.loads(masked), **ended)
            return Decision(new, (*cleanup, DeleteRunSecret()))
        if size <= RESULT_MAX:
            ref = {"name": result_configmap_name(run.metadata.name or ""), "key": RESULT_KEY}
            new = _finish(status, run, inputs, "Succeeded", None, resultRef=ref, **ended)
            return Decision(new, (StoreResult(ref["name"], masked), *cleanup, DeleteRunSecret()))
        failure = Failure(
            "ResultTooLarge", f"the result is {size} bytes; at most 1 MiB (1048576 bytes) is kept"
        )
        return Decision(
            _finish(status, run, inputs, "Failed", failure, pod=pod),
            (*cleanup, DeleteRunSecret()),
            (failure.name, failure.message),
        )
    failure = observation.failure or Failure("RunnerFailed", "the attempt failed")
    delay = (
        None
        if failure.name in ("ResultTooLarge",)
        else retry_delay(run.spec.retry or target.retry, attempts - 1, run.metadata.name or "", "")
    )
    if delay is not None:
        error = {"name": failure.name, "message": _masked(failure.message, inputs.masks)}
        message = f"attempt {attempts} failed ({failure.name}); retrying in {delay:g}s"
        new = _with(
            status, run, inputs, ("Unknown", "RetryScheduled", message), phase="Pending", error=error, pod=pod
        )
        new["conditions"][0]["lastTransitionTime"] = _iso(inputs.now)
        return Decision(new, (*cleanup, Requeue(delay)), ("RetryScheduled", message))
    new = _finish(status, run, inputs, "Failed", failure, **ended)
    return Decision(new, (*cleanup, DeleteRunSecret()), (failure.name, new["error"]["message"]))
