"""The pure ScriptRun lifecycle: observing an attempt from its Job and Pod, and deciding what comes next.

Decisions are checked on the status as written to the API (`wire`): the typed engine keeps the wire format."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kubemill.engine import scriptrun
from kubemill.engine.actions import RequeueAfter
from kubemill.engine.scriptrun import Decision, Failure, Inputs, Observation, decide, status_data
from kubemill.k8s import builders, scriptruns
from kubemill.k8s.builders import RunTarget
from kubemill.k8s.scriptruns import observe_attempt
from kubemill.models.openflow_parts import Retry
from kubemill.models.scripts import ScriptRun
from kubemill.runners.envelope import parse_envelope

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
TARGET = RunTarget(
    path="f/demo/hello",
    language="python3",
    code="def main(name: str): ...",
    schema={"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]},
)


def run(status: dict[str, Any] | None = None, args: dict[str, Any] | None = None, **meta: Any) -> ScriptRun:
    body: dict[str, Any] = {
        "apiVersion": "kubemill.dev/v1alpha1",
        "kind": "ScriptRun",
        "metadata": {"name": "r1", "namespace": "ns", "uid": "u1", "generation": 1, **meta},
        "spec": {"scriptPath": "f/demo/hello", "args": {"name": "x"} if args is None else args},
    }
    if status is not None:
        body["status"] = status
    return ScriptRun.model_validate(body)


def running(attempts: int = 1) -> dict[str, Any]:
    return {"phase": "Running", "attempts": attempts, "job": {"name": builders.job_name("r1", attempts)}}


def job(*conditions: tuple[str, str]) -> dict[str, Any]:
    return {"status": {"conditions": [{"type": t, "status": "True", "reason": r} for t, r in conditions]}}


def pod(message: str | None = None, exit_code: int = 0) -> dict[str, Any]:
    terminated = {"exitCode": exit_code, "reason": "Completed" if exit_code == 0 else "Error"}
    if message is not None:
        terminated["message"] = message
    state = {"terminated": terminated} if message is not None or exit_code else {"running": {}}
    return {"metadata": {"name": "r1-pod"}, "status": {"containerStatuses": [{"state": state}]}}


def wire(decision: Decision) -> dict[str, Any]:
    return status_data(decision.status)


def envelope(result: Any = None, error: dict[str, str] | None = None) -> str:
    return json.dumps({"result": result, "error": error, "state": None})


# --- observe_attempt ---------------------------------------------------------------------------------------


def test_a_running_pod_is_running_and_named() -> None:
    assert observe_attempt(job(), pod()) == Observation("running", "r1-pod")


def test_a_result_in_the_termination_message_is_read_without_logs() -> None:
    obs = observe_attempt(job(("Complete", "")), pod(envelope({"a": 1})))
    assert (obs.state, obs.result_json) == ("succeeded", '{"a":1}')


def test_a_truncated_summary_asks_for_logs_then_reads_the_last_line() -> None:
    summary = json.dumps({"result": None, "state": None, "error": None, "truncated": True, "bytes": 50000})
    assert observe_attempt(job(), pod(summary)).state == "needs-logs"
    logs = "noise\n\nKUBEMILL_RESULT:" + envelope("x" * 50000) + "\n"
    obs = observe_attempt(job(), pod(summary), logs)
    assert obs.state == "succeeded" and obs.result_json == json.dumps("x" * 50000)


def test_an_envelope_too_large_to_log_is_result_too_large() -> None:
    summary = json.dumps(
        {"result": None, "state": None, "error": None, "truncated": True, "bytes": 3_000_000}
    )
    obs = observe_attempt(job(), pod(summary), "lots of output\n")
    assert obs.failure is not None and obs.failure.name == "ResultTooLarge"


def test_an_error_envelope_fails_the_attempt_with_its_error() -> None:
    error = {"name": "ValueError", "message": "bad", "stack": "Traceback..."}
    obs = observe_attempt(job(("Failed", "BackoffLimitExceeded")), pod(envelope(error=error), 1))
    assert obs.failure == Failure("ValueError", "bad", "Traceback...")


def test_deadline_exceeded_is_a_timeout_and_a_missing_job_is_reported() -> None:
    obs = observe_attempt(job(("Failed", "DeadlineExceeded")), None, timeout_seconds=5)
    assert obs.failure is not None and obs.failure.name == "Timeout" and "5s" in obs.failure.message
    lost = observe_attempt(None, None)
    assert lost.failure is not None and lost.failure.name == "JobDeleted"


def test_a_crash_without_envelope_names_the_exit_code() -> None:
    obs = observe_attempt(job(("Failed", "BackoffLimitExceeded")), pod("", 137), "killed\n")
    assert obs.failure is not None and obs.failure.name == "RunnerFailed" and "137" in obs.failure.message


# --- decide ------------------------------------------------------------------------------------------------


def test_a_new_run_with_valid_args_starts_attempt_one() -> None:
    d = decide(run(), Inputs(now=NOW, target=TARGET))
    assert d.actions == (scriptrun.StartAttempt(1),)
    assert wire(d)["phase"] == "Running" and wire(d)["attempts"] == 1
    assert wire(d)["job"]["name"] == builders.job_name("r1", 1)
    assert wire(d)["startedAt"] == "2026-01-02T03:04:05Z"


def test_invalid_args_fail_at_once_naming_the_field() -> None:
    d = decide(run(args={"name": 3}), Inputs(now=NOW, target=TARGET))
    assert wire(d)["phase"] == "Failed" and d.actions == ()
    assert wire(d)["error"]["name"] == "InvalidArgs" and "name" in wire(d)["error"]["message"]


def test_a_full_script_keeps_the_run_pending_with_a_reason() -> None:
    d = decide(run(), Inputs(now=NOW, target=TARGET, slot_free=False, running_count=2))
    assert wire(d)["phase"] == "Pending" and d.actions == ()
    assert wire(d)["conditions"][0]["reason"] == "ConcurrencyLimit"


def test_a_small_result_goes_inline_and_cleans_up() -> None:
    obs = Observation("succeeded", "p", result_json='{"ok":true}')
    d = decide(run(running()), Inputs(now=NOW, target=TARGET, observation=obs))
    assert wire(d)["phase"] == "Succeeded" and wire(d)["result"] == {"ok": True}
    assert wire(d)["pod"] == {"name": "p", "kind": "Pod"}
    assert d.actions == (scriptrun.DeleteRunSecret(), scriptrun.DeleteJob(builders.job_name("r1", 1)))


@pytest.mark.parametrize(("size", "where"), [(20_000, "resultRef"), (2_000_000, "error")])
def test_large_results_go_to_a_configmap_and_too_large_ones_fail(size: int, where: str) -> None:
    obs = Observation("succeeded", "p", result_json=json.dumps("x" * size))
    d = decide(run(running()), Inputs(now=NOW, target=TARGET, observation=obs))
    assert where in wire(d) and "result" not in wire(d)
    if where == "resultRef":
        assert isinstance(d.actions[0], scriptrun.StoreResult) and wire(d)["phase"] == "Succeeded"
    else:
        assert wire(d)["error"]["name"] == "ResultTooLarge" and wire(d)["phase"] == "Failed"


@pytest.mark.parametrize(
    ("language", "said"),
    [
        ("python3", "at most 1 MiB (1048576 bytes) is kept without workspace storage"),
        ("go", "go runners keep at most 1 MiB (1048576 bytes): only Python and TypeScript results go"),
        ("bash", "bash runners keep at most 1 MiB"),
    ],
)
def test_a_result_over_1_mib_says_what_would_keep_it_for_its_language(language: str, said: str) -> None:
    obs = Observation("succeeded", "p", result_json=json.dumps("x" * 2_000_000))
    target = dataclasses.replace(TARGET, language=language)
    d = decide(run(running()), Inputs(now=NOW, target=target, observation=obs))
    assert wire(d)["error"]["name"] == "ResultTooLarge" and said in wire(d)["error"]["message"]


def test_a_result_the_runner_put_in_workspace_storage_is_a_reference_in_the_status() -> None:
    ref = {"s3": "kubemill/results/ns/r1/result.json", "bytes": 3_000_000}
    message = json.dumps({"result": None, "error": None, "state": None, "result_ref": ref})
    obs = observe_attempt(job(("Complete", "")), pod(message))
    assert (obs.state, obs.result_json, obs.result_ref) == ("succeeded", None, ref)
    d = decide(run(running()), Inputs(now=NOW, target=TARGET, observation=obs))
    status = wire(d)
    assert (
        status["phase"] == "Succeeded" and status["resultRef"]["s3"] == ref["s3"] and "result" not in status
    )
    assert status["resultRef"]["bytes"] == ref["bytes"] and "name" not in status["resultRef"]
    assert not any(isinstance(a, scriptrun.StoreResult) for a in d.actions)


@pytest.mark.parametrize("ref", [{"s3": 1, "bytes": 2}, {"s3": "k"}, "k"])
def test_a_malformed_result_reference_is_no_envelope(ref: Any) -> None:
    message = json.dumps({"result": None, "error": None, "state": None, "result_ref": ref})
    with pytest.raises(ValueError, match="result_ref"):
        parse_envelope(message)
    assert observe_attempt(job(("Complete", "")), pod(message)).state == "needs-logs"


def test_secret_values_are_masked_in_results_and_errors() -> None:
    masks = frozenset({"hunter22"})
    ok = Observation("succeeded", "p", result_json='{"token":"hunter22"}')
    d = decide(run(running()), Inputs(now=NOW, target=TARGET, observation=ok, masks=masks))
    assert wire(d)["result"] == {"token": "***"}
    bad = Observation("failed", "p", failure=Failure("E", "bad hunter22", "at hunter22"))
    d = decide(run(running()), Inputs(now=NOW, target=TARGET, observation=bad, masks=masks))
    assert wire(d)["error"] == {"name": "E", "message": "bad ***", "stack": "at ***"}
    assert "hunter22" not in json.dumps(wire(d)) and d.event is not None and "hunter22" not in d.event[1]


def test_a_failure_with_retries_left_waits_then_starts_the_next_attempt() -> None:
    retry = Retry.model_validate({"constant": {"attempts": 1, "seconds": 10}})
    target = RunTarget(**{**TARGET.__dict__, "retry": retry})
    failed = Observation("failed", "p", failure=Failure("E", "boom"))
    d = decide(run(running(1)), Inputs(now=NOW, target=target, observation=failed))
    assert wire(d)["phase"] == "Pending" and wire(d)["conditions"][0]["reason"] == "RetryScheduled"
    assert RequeueAfter(seconds=10.0) in d.actions and wire(d)["error"]["message"] == "boom"
    waiting = run(wire(d))
    early = decide(waiting, Inputs(now=NOW + timedelta(seconds=4), target=target))
    assert early.actions == (RequeueAfter(seconds=6.0),) and early.status == d.status
    due = decide(waiting, Inputs(now=NOW + timedelta(seconds=10), target=target))
    assert due.actions == (scriptrun.StartAttempt(2),) and wire(due)["attempts"] == 2
    # The second failure has no retry left: the run fails with it.
    last = decide(run(running(2)), Inputs(now=NOW, target=target, observation=failed))
    assert wire(last)["phase"] == "Failed" and wire(last)["error"]["name"] == "E"


def test_cancel_annotation_ends_the_run_and_deletes_its_job() -> None:
    d = decide(run(running(), annotations={"kubemill.dev/cancel": "true"}), Inputs(now=NOW, target=TARGET))
    assert wire(d)["phase"] == "Cancelled"
    assert scriptrun.DeleteJob(builders.job_name("r1", 1)) in d.actions


def test_a_missing_script_waits_briefly_then_fails() -> None:
    created = {"creationTimestamp": "2026-01-02T03:04:00Z"}
    soon = decide(run(**created), Inputs(now=NOW, target=None))
    assert wire(soon)["phase"] == "Pending" and wire(soon)["conditions"][0]["reason"] == "ScriptNotFound"
    later = decide(run(**created), Inputs(now=NOW + timedelta(minutes=5), target=None))
    assert wire(later)["phase"] == "Failed" and wire(later)["error"]["name"] == "ScriptNotFound"


def test_finished_runs_are_final_and_decisions_are_stable() -> None:
    obs = Observation("succeeded", "p", result_json="1")
    d = decide(run(running()), Inputs(now=NOW, target=TARGET, observation=obs))
    again = decide(run(wire(d)), Inputs(now=NOW + timedelta(hours=1), target=TARGET, observation=obs))
    assert again.status == d.status and again.actions == ()
    # A running attempt with nothing new writes nothing.
    same = decide(run({**running(), "pod": {"name": "p", "kind": "Pod"}}), Inputs(now=NOW, target=TARGET))
    assert same.status == scriptrun.current_status(run({**running(), "pod": {"name": "p", "kind": "Pod"}}))


def test_a_run_whose_script_was_deleted_still_finishes_its_attempt() -> None:
    obs = Observation("succeeded", "p", result_json='"done"')
    d = decide(run(running()), Inputs(now=NOW, target=None, observation=obs))
    assert wire(d)["phase"] == "Succeeded" and wire(d)["result"] == "done"
    failed = Observation("failed", "p", failure=Failure("E", "boom"))
    d = decide(run(running()), Inputs(now=NOW, target=None, observation=failed))
    assert wire(d)["phase"] == "Failed" and wire(d)["error"]["name"] == "E"


@pytest.mark.parametrize(
    ("reason", "state"), [("CreateContainerConfigError", "failed"), ("ContainerCreating", "running")]
)
def test_a_pod_that_cannot_start_fails_the_attempt(reason: str, state: str) -> None:
    waiting = {
        "metadata": {"name": "p"},
        "status": {"containerStatuses": [{"state": {"waiting": {"reason": reason}}}]},
    }
    obs = observe_attempt(job(), waiting)
    assert obs.state == state
    if state == "failed":
        assert obs.failure is not None and reason in obs.failure.message


def test_the_state_an_attempt_leaves_is_kept_even_when_it_fails() -> None:
    summary = json.dumps({"result": None, "error": {"name": "E", "message": "m"}, "state": {"n": 2}})
    obs = observe_attempt(job(("Failed", "BackoffLimitExceeded")), pod(summary, 1))
    assert obs.state_json == '{"n":2}'
    d = decide(run(running()), Inputs(now=NOW, target=TARGET, observation=obs))
    assert scriptrun.StoreState("f/demo/hello", '{"n":2}') in d.actions
    stateless = Observation("succeeded", "p", result_json="1")
    assert not any(
        isinstance(a, scriptrun.StoreState)
        for a in decide(run(running()), Inputs(now=NOW, target=TARGET, observation=stateless)).actions
    )


def test_a_pod_event_older_than_the_jobs_end_is_not_taken_for_the_pod() -> None:
    running_pod = pod() | {"metadata": {"name": "p", "labels": {"job-name": "j"}}}
    assert scriptruns.pod_is_current(job(), running_pod, "j")
    assert not scriptruns.pod_is_current(job(("Complete", "")), running_pod, "j")
    done_pod = pod(envelope(1)) | {"metadata": {"name": "p", "labels": {"job-name": "j"}}}
    assert scriptruns.pod_is_current(job(("Complete", "")), done_pod, "j")
    assert not scriptruns.pod_is_current(job(), done_pod, "other")
