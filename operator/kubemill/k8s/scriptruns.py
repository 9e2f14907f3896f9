"""A ScriptRun's attempt as Kubernetes shows it: its Job and Pod (and log tail) read into an `Observation`.

`observe_attempt(job, pod, logs)` reads how the current attempt stands; `pod_is_current` says whether a pod
from an event can stand for the Job's pod now. Both are pure: the operator reads the objects, these read the
objects, and `kubemill.engine.scriptrun.decide` turns the observation into the run's next status.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from kubemill.engine.scriptrun import LEFT_NO_RESULT, RESULT_MAX, Failure, Observation
from kubemill.runners import Envelope, envelope_from_logs, envelope_from_termination_message
from kubemill.secrets import WORKSPACE_STORAGE_LABEL

LOG_LINES = 3
TAIL_READ = 64 * 1024
"""What is read of that line before masking: more than any secret a run is given."""
FATAL_WAITING = frozenset(
    {"InvalidImageName", "CreateContainerConfigError", "CreateContainerError", "ErrImageNeverPull"}
)
"""Container waiting reasons no waiting fixes: the attempt fails (an image pull back-off may recover)."""


# --- observing an attempt -----------------------------------------------------------------------------------


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
    states = envelope.flow_user_states
    if envelope.error is not None:
        return Observation("failed", pod, failure=envelope.error, state_json=state, flow_user_states=states)
    result = None if envelope.result_ref else json.dumps(envelope.result, separators=(",", ":"))
    return Observation(
        "succeeded",
        pod,
        result_json=result,
        state_json=state,
        flow_user_states=states,
        result_ref=envelope.result_ref,
    )


def observe_attempt(  # noqa: C901, PLR0911 - complexity debt, docs/architecture.md
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
            failure=Failure(
                "ResultTooLarge",
                f"the result envelope is {size}; at most 1 MiB without workspace storage (a Resource "
                f"of type s3 labelled {WORKSPACE_STORAGE_LABEL}=true)",
            ),
        )
    code = terminated.get("exitCode")
    reason = terminated.get("reason") or "Error"
    tail = logs.strip().splitlines()[-1:] if logs.strip() else []
    message = f"the runner exited with code {code} ({reason}){LEFT_NO_RESULT}"
    if tail:  # cut to TAIL_CHARS only after masking (`_masked`): a cut secret would escape the mask
        message += f": {tail[0][-TAIL_READ:]}"
    return Observation("failed", pod_name, failure=Failure("RunnerFailed", message))
