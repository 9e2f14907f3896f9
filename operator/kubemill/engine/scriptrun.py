"""How a ScriptRun moves through its phases, as a pure function: the run and what was observed in, a typed
status and actions out (the ScriptRun's counterpart of `advance()`).

`decide(run, inputs)` takes the run, what it executes (or why that cannot be found), how its current attempt
stands (an `Observation`, read from its Job and Pod by `k8s.scriptruns.observe_attempt`), whether a
concurrency slot is free, the secret values to mask, and the time, and returns the next `ScriptRunStatus`
and the actions for the operator to carry out (start an attempt, store a large result or the script's state,
delete a finished Job or the run's Secret, requeue). No clock, no API: the same inputs always give the same
decision, so a restarted operator recomputes exactly what it would have done.

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
from typing import Any, Literal, Protocol

from pydantic import JsonValue

from kubemill import constants
from kubemill.engine.actions import RequeueAfter
from kubemill.engine.entrypoints import Call, CallProblem, plan_call
from kubemill.engine.naming import job_name, result_configmap_name
from kubemill.engine.retry import retry_delay
from kubemill.models.common import Condition, ConditionStatus, condition
from kubemill.models.openflow_parts import Retry
from kubemill.models.scripts import ObjectRef, ResultRef, RunError, ScriptRun, ScriptRunStatus
from kubemill.runners.envelope import EnvelopeError
from kubemill.runners.validation import args_for_language, validate_args
from kubemill.secrets import WORKSPACE_STORAGE_LABEL, has_references, mask_json, mask_text

RESULT_KEY = "result.json"
RESULT_INLINE_LIMIT = 16 * 1024
RESULT_MAX = 1024 * 1024 - 1024  # what a ConfigMap holds, less room for its key and metadata
CANCEL_ANNOTATION = constants.ANNOTATION_CANCEL
SCRIPT_NOT_FOUND_GRACE = timedelta(seconds=30)
CONDITION = "Succeeded"
TERMINAL = constants.TERMINAL_PHASES
TAIL_CHARS = 500
"""What a failure message keeps of the runner's last log line, cut after masking."""
LEFT_NO_RESULT = " and left no result"
CONDITION_MESSAGE_MAX = 4000


class Target(Protocol):
    """What `decide` reads of what a run executes (`k8s.builders.RunTarget` is one)."""

    @property
    def path(self) -> str: ...
    @property
    def language(self) -> str: ...
    @property
    def code(self) -> str: ...
    @property
    def schema(self) -> Mapping[str, Any] | None: ...
    @property
    def retry(self) -> Retry | None: ...
    @property
    def concurrency_limit(self) -> int | None: ...


@dataclass(frozen=True)
class _Orphaned:
    """The target of a run whose Script went away while an attempt runs: it finishes without retries."""

    path: str
    language: str = ""
    code: str = ""
    schema: Mapping[str, Any] | None = None
    retry: Retry | None = None
    concurrency_limit: int | None = None


def call_for(run: ScriptRun, target: Target) -> Call | CallProblem:
    """What the run's attempts call: `main` with `spec.args`, or a preprocessor (engine/entrypoints.py),
    decided from the run's spec and the Script's code alone (never from its args)."""
    spec = run.spec
    return plan_call(
        target.language,
        target.code,
        spec.args,
        entrypoint=spec.entrypoint,
        trigger_event=spec.trigger_event,
        step=spec.step_id,
    )


# --- what was observed -------------------------------------------------------------------------------------


Failure = EnvelopeError
"""Why an attempt or a run failed: Windmill's error shape (name, message, stack), the one the runner's
envelope carries."""


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
    result_ref: dict[str, Any] | None = None
    """The result's object in the workspace storage (`{"s3": key, "bytes": n}`), put there by the runner."""


@dataclass(frozen=True)
class Inputs:
    """Everything `decide` looks at besides the run itself."""

    now: datetime
    target: Target | None = None
    target_problem: Failure | None = None
    observation: Observation | None = None
    slot_free: bool = True
    running_count: int = 0
    masks: Iterable[str] = field(default_factory=frozenset)


# --- what to do --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StartAttempt:
    """Create attempt `attempt`'s Secret and Job (before the status that names the Job is written)."""

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
    """Delete the run's Secret (its args and resolved secrets). A finished run's decision puts this before
    `DeleteJob`: a crash between the two leaves the Job, whose next event collects both."""


Action = StartAttempt | StoreResult | StoreState | DeleteJob | DeleteRunSecret | RequeueAfter


@dataclass(frozen=True)
class Decision:
    """The status to write (once; equal to the run's: nothing to write), the actions, and an event worth
    telling the user (reason, message)."""

    status: ScriptRunStatus
    actions: tuple[Action, ...] = ()
    event: tuple[str, str] | None = None

    @property
    def finished(self) -> bool:
        return self.status.phase in TERMINAL


# --- deciding ----------------------------------------------------------------------------------------------


def current_status(run: ScriptRun) -> ScriptRunStatus:
    """The run's status (an empty Pending status for a new run)."""
    return run.status or ScriptRunStatus()


def status_data(status: ScriptRunStatus) -> dict[str, Any]:
    """A status as written to the API (camelCase, no nulls)."""
    return status.model_dump(mode="json", by_alias=True, exclude_none=True)


def _second(t: datetime) -> datetime:
    return t.replace(microsecond=0)


Cond = tuple[ConditionStatus, str, str]
"""The `Succeeded` condition's (status, reason, message)."""


def _with(
    status: ScriptRunStatus, run: ScriptRun, now: datetime, cond: Cond, **fields: Any
) -> ScriptRunStatus:
    """The status with `fields` changed and the `Succeeded` condition set (kept as it was, transition time
    and all, when its status, reason and message hold)."""
    cond_status, reason, message = cond
    old = condition(status.conditions, CONDITION)
    new = Condition(
        type=CONDITION,
        status=cond_status,
        reason=reason,
        message=message[:CONDITION_MESSAGE_MAX],
        last_transition_time=_second(now),
        observed_generation=run.metadata.generation,
    )
    if old is not None and (old.status, old.reason, old.message) == (cond_status, reason, message):
        new = old
    return status.model_copy(
        update={**fields, "conditions": (new,), "observed_generation": run.metadata.generation}
    )


def _masked(message: str, masks: Iterable[str]) -> str:
    """A failure message masked, then cut: the runner's log line it may end with keeps TAIL_CHARS."""
    masked = mask_text(message, masks)
    head, sep, tail = masked.partition(LEFT_NO_RESULT + ": ")
    return head + sep + tail[:TAIL_CHARS] if sep else masked


def _error(failure: Failure, masks: Iterable[str]) -> RunError:
    stack = mask_text(failure.stack, masks) if failure.stack else None
    return RunError(name=failure.name, message=_masked(failure.message, masks), stack=stack)


def _finish(
    status: ScriptRunStatus,
    run: ScriptRun,
    inputs: Inputs,
    phase: str,
    failure: Failure | None,
    **fields: Any,
) -> ScriptRunStatus:
    error = None if failure is None else _error(failure, inputs.masks)
    cond: Cond = ("True", "Succeeded", "") if error is None else ("False", error.name, error.message)
    return _with(
        status, run, inputs.now, cond, phase=phase, error=error, finished_at=_second(inputs.now), **fields
    )


def retry_due(run: ScriptRun, status: ScriptRunStatus, target: Target) -> datetime | None:
    """When the scheduled retry may start (from the failure time and Windmill's retry policy)."""
    cond = condition(status.conditions, CONDITION)
    if cond is None:
        return None
    delay = retry_delay(run.spec.retry or target.retry, status.attempts - 1, run.metadata.name or "", "")
    return cond.last_transition_time + timedelta(seconds=delay or 0)


def _created_at(run: ScriptRun, default: datetime) -> datetime:
    created = run.metadata.creation_timestamp
    return datetime.fromisoformat(str(created).replace("Z", "+00:00")) if created else default


def _compact(value: JsonValue) -> str:
    return json.dumps(value, separators=(",", ":"))


def decide(run: ScriptRun, inputs: Inputs) -> Decision:
    """The next status of `run` and what to do (a status equal to `current_status(run)`: nothing to write)."""
    status = current_status(run)
    cleanup: tuple[Action, ...] = (DeleteJob(status.job.name),) if status.job is not None else ()
    if status.phase in TERMINAL:
        return Decision(status)
    annotations = run.metadata.annotations or {}
    if annotations.get(CANCEL_ANNOTATION, "").lower() in ("true", "yes", "1"):
        failure = Failure("Cancelled", "cancelled with the kubemill.dev/cancel annotation")
        new = _finish(status, run, inputs, "Cancelled", failure)
        return Decision(new, (DeleteRunSecret(), *cleanup), ("Cancelled", failure.message))
    target = inputs.target
    if target is None and status.phase == "Running":
        # The Script went away (or changed into something unreadable) while an attempt runs: deleting a
        # definition does not kill runs already started; this one finishes with what it has, without retries.
        target = _Orphaned(path=run.spec.script_path or "")
    if target is None:
        problem = inputs.target_problem or Failure(
            "ScriptNotFound", f"no Script with path {run.spec.script_path}"
        )
        waited = inputs.now - _created_at(run, inputs.now)
        if problem.name == "ScriptNotFound" and waited < SCRIPT_NOT_FOUND_GRACE:
            new = _with(status, run, inputs.now, ("Unknown", problem.name, problem.message), phase="Pending")
            return Decision(new, (RequeueAfter(seconds=2.0),))
        return Decision(
            _finish(status, run, inputs, "Failed", problem),
            (DeleteRunSecret(),),
            (problem.name, problem.message),
        )
    if status.phase == "Pending":
        return _pending(run, status, inputs, target)
    return _running(run, status, inputs, target, cleanup)


def _pending(run: ScriptRun, status: ScriptRunStatus, inputs: Inputs, target: Target) -> Decision:
    """Validate the args (first attempt), wait out a retry's delay, wait for a slot, or start an attempt."""
    attempts = status.attempts
    call = call_for(run, target)
    if isinstance(call, CallProblem):
        failure = Failure(call.name, call.message)
        return Decision(
            _finish(status, run, inputs, "Failed", failure), (DeleteRunSecret(),), (call.name, call.message)
        )
    if attempts == 0 and target.schema is not None and call.validate:
        args = args_for_language(target.language, call.args)
        problems = [  # a `$res:`/`$var:` arg is checked when resolved, as the run starts
            p
            for p in validate_args(target.schema, args, target.language)
            if not has_references(args.get(p.field.split(".")[0]))
        ]
        if problems:
            message = "invalid args: " + "; ".join(
                f"{p.field or '(args)'}: {mask_text(p.message, inputs.masks)}" for p in problems
            )
            failure = Failure("InvalidArgs", message)
            return Decision(_finish(status, run, inputs, "Failed", failure), (), ("InvalidArgs", message))
    cond = condition(status.conditions, CONDITION)
    if attempts > 0 and cond is not None and cond.reason == "RetryScheduled":
        due = retry_due(run, status, target)
        if due is not None and inputs.now < due:
            return Decision(status, (RequeueAfter(seconds=(due - inputs.now).total_seconds()),))
    if not inputs.slot_free:
        message = (
            f"waiting for a slot: {inputs.running_count} run(s) of {target.path} running, "
            f"concurrencyLimit is {target.concurrency_limit}"
        )
        return Decision(
            _with(status, run, inputs.now, ("Unknown", "ConcurrencyLimit", message), phase="Pending")
        )
    attempt = attempts + 1
    new = _with(
        status,
        run,
        inputs.now,
        ("Unknown", "Running", f"attempt {attempt} started"),
        phase="Running",
        attempts=attempt,
        job=ObjectRef(name=job_name(run.metadata.name or "", attempt), kind="Job"),
        pod=None,
        started_at=status.started_at or _second(inputs.now),
    )
    return Decision(new, (StartAttempt(attempt),))


def _running(
    run: ScriptRun, status: ScriptRunStatus, inputs: Inputs, target: Target, cleanup: tuple[Action, ...]
) -> Decision:
    """Follow the attempt's Job: record its pod, then its result, or retry or fail it."""
    observation = inputs.observation or Observation("running")
    if observation.state in ("running", "needs-logs"):
        if observation.pod and (status.pod is None or status.pod.name != observation.pod):
            return Decision(status.model_copy(update={"pod": ObjectRef(name=observation.pod, kind="Pod")}))
        return Decision(status)
    pod = ObjectRef(name=observation.pod, kind="Pod") if observation.pod else status.pod
    ended: dict[str, Any] = {"pod": pod}
    if observation.flow_user_states is not None:  # read by the FlowRun's engine, masked like a result
        ended["flow_user_states"] = mask_json(observation.flow_user_states, inputs.masks)
    if observation.state_json is not None and target.path and len(observation.state_json) <= RESULT_MAX:
        # masked like a result: the state ConfigMap is readable by viewers (the runner masks it too)
        state = _compact(mask_json(json.loads(observation.state_json), inputs.masks))
        cleanup = (StoreState(target.path, state), *cleanup)
    if observation.state == "succeeded" and observation.result_ref is not None:
        # over 1 MiB, in the workspace storage (masked by the runner, which holds the run's mask forms)
        stored = ResultRef(s3=str(observation.result_ref["s3"]), bytes=int(observation.result_ref["bytes"]))
        new = _finish(status, run, inputs, "Succeeded", None, result_ref=stored, **ended)
        return Decision(new, (DeleteRunSecret(), *cleanup))
    if observation.state == "succeeded" and observation.result_json is not None:
        masked = _compact(mask_json(json.loads(observation.result_json), inputs.masks))
        size = len(masked.encode())
        if size <= RESULT_INLINE_LIMIT:
            new = _finish(status, run, inputs, "Succeeded", None, result=json.loads(masked), **ended)
            return Decision(new, (DeleteRunSecret(), *cleanup))
        if size <= RESULT_MAX:
            cm_name = result_configmap_name(run.metadata.name or "")
            ref = ResultRef(name=cm_name, key=RESULT_KEY)
            new = _finish(status, run, inputs, "Succeeded", None, result_ref=ref, **ended)
            return Decision(new, (StoreResult(cm_name, masked), DeleteRunSecret(), *cleanup))
        where = (
            f"{target.language} runners keep at most 1 MiB (1048576 bytes): only Python and TypeScript "
            "results go to workspace storage"
            if target.language in ("go", "bash")
            else f"at most 1 MiB (1048576 bytes) is kept without workspace storage (a Resource of type s3 "
            f"labelled {WORKSPACE_STORAGE_LABEL}=true)"
        )
        failure = Failure("ResultTooLarge", f"the result is {size} bytes; {where}")
        return Decision(
            _finish(status, run, inputs, "Failed", failure, pod=pod),
            (DeleteRunSecret(), *cleanup),
            (failure.name, failure.message),
        )
    failure = observation.failure or Failure("RunnerFailed", "the attempt failed")
    delay = (
        None
        if failure.name == "ResultTooLarge"
        else retry_delay(run.spec.retry or target.retry, status.attempts - 1, run.metadata.name or "", "")
    )
    if delay is not None:
        message = f"attempt {status.attempts} failed ({failure.name}); retrying in {delay:g}s"
        new = _with(
            status,
            run,
            inputs.now,
            ("Unknown", "RetryScheduled", message),
            phase="Pending",
            error=_error(Failure(failure.name, failure.message), inputs.masks),
            pod=pod,
        )
        # Each scheduled retry is a transition of its own: its delay counts from now.
        fresh = new.conditions[0].model_copy(update={"last_transition_time": _second(inputs.now)})
        new = new.model_copy(update={"conditions": (fresh,)})
        return Decision(new, (*cleanup, RequeueAfter(seconds=delay)), ("RetryScheduled", message))
    new = _finish(status, run, inputs, "Failed", failure, **ended)
    assert new.error is not None
    return Decision(new, (DeleteRunSecret(), *cleanup), (failure.name, new.error.message))
