"""Schedules, pure part: cron validation, nextRunAt across DST with a fixed clock, tick names, status folding,
handler runs, the trigger's CronJob."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from kubemill.models.schedules import ScheduleSpec
from kubemill.schedules import (
    SCHEDULE_LABEL,
    CronError,
    FinishedRun,
    hook_run,
    next_run_at,
    parse_cron,
    record_run,
    run_manifest,
    run_name,
    suspension,
)
from kubemill.triggers import TriggerConfig, build_cronjob, cronjob_name, tick_of


def spec(**fields: Any) -> ScheduleSpec:
    return ScheduleSpec.model_validate({"schedule": "30 2 * * *", "scriptPath": "f/ops/job", **fields})


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("expression", "kubernetes"),
    [
        ("* * * * *", "* * * * *"),
        ("0 0 12 * * MON-FRI", "0 12 * * MON-FRI"),
        ("00 */5 * * * *", "*/5 * * * *"),
        ("0 9 1-7 JAN,JUL wed", "0 9 1-7 JAN,JUL wed"),
    ],
)
def test_five_or_six_fields(expression: str, kubernetes: str) -> None:
    assert parse_cron(expression).kubernetes == kubernetes


@pytest.mark.parametrize(
    ("expression", "words"),
    [
        ("30 * * * * *", ["seconds field must be 0", "by the minute"]),
        ("* * *", ["3 fields", "5", "6 with seconds first"]),
        ("61 * * * *", ["not a valid cron expression"]),
        ("0 0 L * *", ["L is not supported"]),
        ("0 0 * * 5#2", ["# is not supported"]),
        ("H * * * *", ["H is not supported"]),
        ("CRON_TZ=UTC 0 * * * *", ["spec.timezone"]),
    ],
)
def test_refused_cron_says_why(expression: str, words: list[str]) -> None:
    with pytest.raises(CronError) as caught:
        parse_cron(expression)
    for word in words:
        assert word in str(caught.value)


def test_next_run_at_across_spring_forward_in_paris() -> None:
    # 2024-03-31: clocks jump from 02:00 to 03:00 in Europe/Paris; 02:30 does not exist that day.
    s = spec(schedule="30 2 * * *", timezone="Europe/Paris")
    assert next_run_at(s, utc(2024, 3, 30, 12)) == utc(2024, 3, 31, 1, 0)  # 03:00 CEST, first valid time
    assert next_run_at(s, utc(2024, 3, 31, 1, 0)) == utc(2024, 4, 1, 0, 30)  # 02:30 CEST = 00:30 UTC
    assert next_run_at(s, utc(2024, 3, 29, 12)) == utc(2024, 3, 30, 1, 30)  # 02:30 CET = 01:30 UTC


def test_next_run_at_across_fall_back_in_new_york() -> None:
    # 2024-11-03: 02:00 EDT becomes 01:00 EST; a 09:00 schedule stays at 09:00 local, so moves in UTC.
    s = spec(schedule="0 9 * * *", timezone="America/New_York")
    assert next_run_at(s, utc(2024, 11, 2, 12)) == utc(2024, 11, 2, 13)  # 09:00 EDT
    assert next_run_at(s, utc(2024, 11, 2, 14)) == utc(2024, 11, 3, 14)  # 09:00 EST


def test_disabled_and_paused() -> None:
    now = utc(2024, 5, 1, 12)
    assert suspension(spec(enabled=False), now).suspended
    assert next_run_at(spec(enabled=False), now) is None
    paused = spec(schedule="0 * * * *", pausedUntil="2024-05-01T15:30:00Z")
    state = suspension(paused, now)
    assert state.suspended and state.reason == "Paused" and state.resume_at == utc(2024, 5, 1, 15, 30)
    assert next_run_at(paused, now) == utc(2024, 5, 1, 16)
    assert not suspension(paused, utc(2024, 5, 1, 16)).suspended


def test_run_names_are_deterministic_and_bounded() -> None:
    tick = utc(2024, 5, 1, 12)
    assert run_name("nightly", tick) == "nightly-1714564800"
    long = run_name("x" * 80, tick)
    assert len(long) <= 63 and long.endswith("-1714564800") and long == run_name("x" * 80, tick)
    assert run_name("x" * 80, tick) != run_name("x" * 79 + "y", tick)


def test_run_manifest_carries_schedule_fields() -> None:
    s = spec(args={"n": 1}, retry={"constant": {"attempts": 2, "seconds": 5}})
    run = run_manifest("nightly", "ws", s, utc(2024, 5, 1, 12), path="f/ops/job")
    assert run["kind"] == "ScriptRun"
    assert run["metadata"] == {
        "name": "nightly-1714564800",
        "namespace": "ws",
        "labels": {SCHEDULE_LABEL: "nightly"},
    }
    assert run["spec"] == {
        "scriptPath": "f/ops/job",
        "args": {"n": 1},
        "schedulePath": "f/ops/job",
        "scheduledFor": "2024-05-01T12:00:00Z",
        "retry": {"constant": {"attempts": 2, "seconds": 5}},
    }
    flow = run_manifest("n", "ws", spec(scriptPath=None, flowPath="f/ops/flow"), utc(2024, 5, 1), path="p")
    assert flow["kind"] == "FlowRun" and "retry" not in flow["spec"]


def finished(name: str, phase: str, **kw: Any) -> FinishedRun:
    return FinishedRun(name=name, kind="ScriptRun", phase=phase, target_path="f/ops/job", **kw)


def test_record_run_counts_once_and_starts_handlers() -> None:
    hooks = {"scriptPath": "f/ops/alert", "args": {"channel": "#ops"}}
    s = spec(onFailure=hooks, onRecovery=hooks, onSuccess=hooks)
    tick = utc(2024, 5, 1, 12)
    running = record_run(s, {}, finished("a", "Running"), tick)
    assert running.status == {
        "lastRun": {"name": "a", "kind": "ScriptRun", "phase": "Running"},
        "lastRunAt": "2024-05-01T12:00:00Z",
    }
    assert running.hooks == ()
    status: dict[str, Any] = dict(running.status)
    failed = record_run(s, status, finished("a", "Failed", error={"name": "ValueError"}), tick)
    assert failed.status["failureCount"] == 1 and [e for e, _ in failed.hooks] == ["on-failure"]
    status |= failed.status
    assert record_run(s, status, finished("a", "Failed"), tick).hooks == ()  # seen twice: counted once
    assert "failureCount" not in record_run(s, status, finished("a", "Failed"), tick).status
    ok = record_run(s, status, finished("b", "Succeeded"), utc(2024, 5, 1, 12, 1))
    assert [e for e, _ in ok.hooks] == ["on-recovery", "on-success"] and ok.previous_run == "a"
    assert ok.status["successCount"] == 1 and ok.status["lastRun"]["name"] == "b"
    status |= ok.status
    late = record_run(s, status, finished("old", "Succeeded"), utc(2024, 5, 1, 11))
    assert "lastRun" not in late.status  # an older tick finishing late does not become the last run


def handlers_through(s: ScheduleSpec, phases: str) -> str:
    """The handlers each run of a sequence starts (`F` failed, `S` succeeded, recorded one after another):
    `f` on-failure, `r` on-recovery, `.` none."""
    status: dict[str, Any] = {}
    started = ""
    for index, letter in enumerate(phases):
        phase = {"F": "Failed", "S": "Succeeded"}[letter]
        record = record_run(s, status, finished(f"r{index}", phase), utc(2024, 5, 1, 12, index))
        status |= record.status
        started += "".join(event[3] for event, _ in record.hooks) or "."
    return started


@pytest.mark.parametrize(
    ("fields", "phases", "expected"),
    [  # Windmill's on_failure_times / on_failure_exact / on_recovery_times
        ({}, "FFS", "ffr"),
        ({"onFailureTimes": 2}, "FFFSF", ".ffr."),
        ({"onFailureTimes": 2, "onFailureExact": True}, "FFFSFF", ".f.r.f"),
        ({"onRecoveryTimes": 2}, "FSSSFSFSS", "f.r.f.f.r"),
    ],
)
def test_handlers_count_streaks_as_windmill_does(fields: dict[str, Any], phases: str, expected: str) -> None:
    hook = {"scriptPath": "f/ops/alert"}
    assert handlers_through(spec(onFailure=hook, onRecovery=hook, **fields), phases) == expected


@pytest.mark.parametrize("field", ["onFailureTimes", "onFailureExact", "onRecoveryTimes"])
def test_a_streak_count_without_its_handler_is_refused_naming_it(field: str) -> None:
    with pytest.raises(ValueError, match=f"spec.{field} applies to spec.on"):
        spec(**{field: True if field.endswith("Exact") else 2})


def test_a_retry_on_a_flows_schedule_is_refused_naming_it() -> None:
    retry = {"constant": {"attempts": 2, "seconds": 5}}
    assert spec(retry=retry).retry is not None  # a script's schedule keeps it
    with pytest.raises(ValueError, match=r"spec.retry applies to Schedules of scripts \(spec.scriptPath\)"):
        ScheduleSpec.model_validate({"schedule": "30 2 * * *", "flowPath": "f/ops/flow", "retry": retry})


def test_the_lag_is_measured_once_per_tick_from_the_tick_to_the_run() -> None:
    tick = utc(2024, 5, 1, 12)
    created = datetime(2024, 5, 1, 12, 0, 4, tzinfo=UTC)
    first = record_run(spec(), {}, finished("a", "Pending", created_at=created), tick)
    assert first.lag_seconds == 4.0
    status = dict(first.status)
    assert record_run(spec(), status, finished("a", "Running", created_at=created), tick).lag_seconds is None
    done = record_run(spec(), status, finished("a", "Succeeded", created_at=created), tick)
    assert done.lag_seconds is None and done.status["successCount"] == 1
    status |= done.status
    older = record_run(spec(), status, finished("o", "Pending", created_at=created), utc(2024, 5, 1, 11))
    assert older.lag_seconds is None
    early = datetime(2024, 5, 1, 12, 0, 59, tzinfo=UTC)  # a clock slightly behind the tick's: no negative lag
    assert (
        record_run(
            spec(), status, finished("b", "Pending", created_at=early), utc(2024, 5, 1, 12, 1)
        ).lag_seconds
        == 0.0
    )
    assert record_run(spec(), status, finished("b", "Pending"), utc(2024, 5, 1, 12, 1)).lag_seconds is None


def test_hook_run_passes_the_error_and_schedule_path() -> None:
    s = spec(onFailure={"scriptPath": "f/ops/alert", "args": {"channel": "#ops"}})
    assert s.on_failure is not None
    run = finished("nightly-1", "Failed", error={"name": "ValueError", "message": "boom"})
    hook = hook_run("nightly", "ws", s.on_failure, "on-failure", run, path="f/ops/job")
    assert hook["kind"] == "ScriptRun" and hook["spec"]["scriptPath"] == "f/ops/alert"
    args = hook["spec"]["args"]
    assert args["error"] == {"name": "ValueError", "message": "boom"}
    assert args["schedule_path"] == "f/ops/job" and args["path"] == "f/ops/job" and args["channel"] == "#ops"
    assert (
        hook["metadata"]["name"]
        == hook_run("nightly", "ws", s.on_failure, "on-failure", run, path="x")["metadata"]["name"]
    )
    only = hook_run(
        "nightly",
        "ws",
        s.on_failure,
        "on-failure",
        run,
        path="p",
        accepted=frozenset({"error", "schedule_path"}),
    )
    assert set(only["spec"]["args"]) == {"error", "schedule_path"}


def test_cronjob_runs_the_trigger_locked_down() -> None:
    s = spec(schedule="0 0 12 * * MON-FRI", timezone="Europe/Paris", noOverlap=True)
    config = TriggerConfig("nightly", "ws", "f/ops/job", s, {"name": "nightly-1", "kind": "ScriptRun"})
    owner = {"apiVersion": "kubemill.dev/v1alpha1", "kind": "Schedule", "name": "nightly", "uid": "u1"}
    cj = build_cronjob(config, parse_cron(s.schedule), suspended=True, owner=owner)
    assert cj["spec"]["schedule"] == "0 12 * * MON-FRI" and cj["spec"]["timeZone"] == "Europe/Paris"
    assert cj["spec"]["suspend"] is True
    pod = cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "kubemill-trigger"
    container = pod["containers"][0]
    assert container["command"] == ["kubemill", "trigger"]
    sc = container["securityContext"]
    assert sc["runAsNonRoot"] and sc["runAsUser"] == 65532 and sc["readOnlyRootFilesystem"]
    assert sc["capabilities"] == {"drop": ["ALL"]} and sc["allowPrivilegeEscalation"] is False
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    env = {e["name"]: e for e in container["env"]}
    assert TriggerConfig.from_json(env["KUBEMILL_SCHEDULE"]["value"]) == config
    assert cronjob_name("n" * 60) != cronjob_name("n" * 61) and len(cronjob_name("n" * 60)) <= 52


def test_tick_from_the_job_name_or_the_clock() -> None:
    cron = parse_cron("*/5 * * * *")
    assert tick_of("nightly-28576080", cron, "UTC", utc(2030, 1, 1)) == utc(2024, 5, 1, 12)
    assert tick_of(None, cron, "UTC", utc(2024, 5, 1, 12, 7, 30)) == utc(2024, 5, 1, 12, 5)
    assert tick_of("manual", cron, "UTC", utc(2024, 5, 1, 12, 5)) == utc(2024, 5, 1, 12, 5)
