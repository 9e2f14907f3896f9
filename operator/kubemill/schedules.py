"""Schedules, pure part: cron expressions, when a schedule runs next, and what each tick creates.

Windmill's cron has an optional seconds field first (`0 0 12 * * MON-FRI`); Kubernetes CronJobs schedule by
the minute with five fields. `parse_cron` accepts both, validates with croniter, and refuses what a CronJob
cannot do (a seconds field other than 0, `L`/`W`/`#`, a `TZ=` prefix) with a message that says why. Times are
computed in the schedule's IANA time zone, so `next_run_at` is right across DST changes.

A tick's run has a deterministic name, `<schedule>-<unix time of the tick>` (`run_name`), so a tick that fires
twice creates one run (the second create gets 409). `run_manifest` builds that run from the schedule (args,
retry, `schedulePath`, `scheduledFor`), `hook_run` the run of an `onFailure`/`onRecovery`/`onSuccess`
handler. The operator, the trigger pod (kubemill.triggers) and tests share these functions; no I/O here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, croniter  # type: ignore[import-untyped]

from kubemill import constants
from kubemill.engine.naming import MAX_NAME, child_run_name, identity_digest
from kubemill.models.common import API_VERSION
from kubemill.models.schedules import STREAK_WINDOW, ScheduleHook, ScheduleSpec

SCHEDULE_LABEL = constants.LABEL_SCHEDULE
"""Label on everything a schedule creates (trigger Jobs, runs, handler runs): the Schedule's name."""
HOOK_LABEL = constants.LABEL_SCHEDULE_HOOK
"""Label on handler runs: `on-failure`, `on-recovery` or `on-success`."""
PATH_ANNOTATION = constants.ANNOTATION_PATH
"""Optional Windmill path of the Schedule itself (WM_SCHEDULE_PATH); by default the path of what it runs."""

TERMINAL_PHASES = constants.TERMINAL_PHASES


class CronError(ValueError):
    """A cron expression kubemill cannot schedule; the message says what to write instead."""


@dataclass(frozen=True)
class Cron:
    """A validated cron expression: `kubernetes` is the five-field form a CronJob takes."""

    expression: str
    kubernetes: str

    def next_after(self, after: datetime, timezone: str) -> datetime:
        """The first tick strictly after `after`, as an aware UTC datetime, computed in `timezone`."""
        start = after.astimezone(zone(timezone))
        tick: datetime = croniter(self.kubernetes, start).get_next(datetime)
        return tick.astimezone(UTC)

    def latest_at(self, at: datetime, timezone: str) -> datetime:
        """The most recent tick at or before `at` (UTC): the tick a trigger pod started at `at` belongs to."""
        start = at.astimezone(zone(timezone)) + timedelta(seconds=1)
        tick: datetime = croniter(self.kubernetes, start.replace(microsecond=0)).get_prev(datetime)
        return tick.astimezone(UTC)


_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_DAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
_NAMES = frozenset(_MONTHS + _DAYS)


def parse_cron(expression: str) -> Cron:
    """Validate a 5-field or (Windmill) 6-field cron expression; raise CronError with a clear message."""
    fields = expression.split()
    if expression.strip().upper().startswith(("TZ=", "CRON_TZ=")):
        raise CronError(f"{expression!r}: set the time zone in spec.timezone, not in the cron expression")
    if len(fields) not in (5, 6):
        raise CronError(
            f"{expression!r} has {len(fields)} fields: a cron expression has 5 (minute hour day month "
            "weekday) or 6 with seconds first (0 0 12 * * MON-FRI)"
        )
    if len(fields) == 6:
        seconds, fields = fields[0], fields[1:]
        if not re.fullmatch(r"0+", seconds):
            raise CronError(
                f"{expression!r}: the seconds field must be 0 (got {seconds!r}); Kubernetes CronJobs "
                "schedule by the minute, so runs can start at most once a minute, at second 0"
            )
    kubernetes = " ".join(fields)
    words = {w.upper() for w in re.findall(r"[A-Za-z]+", kubernetes)} - _NAMES
    if words or "#" in kubernetes:
        raise CronError(
            f"{expression!r}: {', '.join(sorted(words)) or '#'} is not supported by Kubernetes CronJobs "
            "(L, W, # and H are croner/Jenkins extensions); list the days or hours instead"
        )
    if not croniter.is_valid(kubernetes):
        raise CronError(f"{expression!r} is not a valid cron expression (minute hour day month weekday)")
    try:
        croniter(kubernetes, datetime(2000, 1, 1, tzinfo=UTC)).get_next(datetime)
    except CroniterBadDateError:
        raise CronError(f"{expression!r} never fires (no such day in any of its months)") from None
    return Cron(expression, kubernetes)


def zone(timezone: str) -> ZoneInfo:
    """The IANA time zone; CronError if there is none by that name."""
    try:
        return ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise CronError(f"{timezone!r} is not an IANA time zone (like UTC or Europe/Paris)") from None


# --- when ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Suspension:
    """Whether the CronJob is suspended now, and when to look again (the end of `pausedUntil`)."""

    suspended: bool
    reason: str = ""
    resume_at: datetime | None = None


def suspension(spec: ScheduleSpec, now: datetime) -> Suspension:
    if not spec.enabled:
        return Suspension(True, "Disabled")
    if spec.paused_until is not None and _aware(spec.paused_until) > now:
        return Suspension(True, "Paused", _aware(spec.paused_until))
    return Suspension(False)


def next_run_at(spec: ScheduleSpec, now: datetime) -> datetime | None:
    """The next tick that will start a run: none while disabled; after `pausedUntil` while paused."""
    state = suspension(spec, now)
    if state.suspended and state.resume_at is None:
        return None
    after = state.resume_at - timedelta(microseconds=1) if state.resume_at is not None else now
    return parse_cron(spec.schedule).next_after(after, spec.timezone)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


# --- what each tick creates ------------------------------------------------------------------------------


def schedule_path(spec: ScheduleSpec, annotations: Mapping[str, str] | None) -> str:
    """The schedule's Windmill path (WM_SCHEDULE_PATH): a `kubemill.dev/path` annotation, or the target's."""
    explicit = (annotations or {}).get(PATH_ANNOTATION)
    return explicit or spec.script_path or spec.flow_path or ""


def run_name(schedule: str, tick: datetime) -> str:
    """`<schedule>-<unix time>`; a schedule name too long for that is cut and made unique with a hash."""
    stamp = str(int(tick.timestamp()))
    name = f"{schedule}-{stamp}"
    if len(name) <= MAX_NAME:
        return name
    digest = identity_digest(schedule)[:8]
    keep = MAX_NAME - len(stamp) - len(digest) - 2
    return f"{schedule[:keep].rstrip('-.')}-{digest}-{stamp}"


def run_kind(spec: ScheduleSpec | ScheduleHook) -> Literal["ScriptRun", "FlowRun"]:
    return "ScriptRun" if spec.script_path is not None else "FlowRun"


def _target(spec: ScheduleSpec | ScheduleHook) -> dict[str, Any]:
    if spec.script_path is not None:
        return {"scriptPath": spec.script_path}
    return {"flowPath": spec.flow_path}


def _iso(moment: datetime) -> str:
    return _aware(moment).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def run_manifest(
    schedule: str,
    namespace: str,
    spec: ScheduleSpec,
    tick: datetime,
    *,
    path: str,
) -> dict[str, Any]:
    """The run a tick creates. No owner reference: deleting a Schedule must not delete the runs it started."""
    run_spec: dict[str, Any] = {
        **_target(spec),
        "args": dict(spec.args),
        "schedulePath": path,
        "scheduledFor": _iso(tick),
    }
    if spec.retry is not None and spec.script_path is not None:
        run_spec["retry"] = spec.retry.model_dump(mode="json", by_alias=True, exclude_none=True)
    return {
        "apiVersion": API_VERSION,
        "kind": run_kind(spec),
        "metadata": {
            "name": run_name(schedule, tick),
            "namespace": namespace,
            "labels": {SCHEDULE_LABEL: schedule},
        },
        "spec": run_spec,
    }


HookEvent = Literal["on-failure", "on-recovery", "on-success"]


@dataclass(frozen=True)
class FinishedRun:
    """What a handler needs to know about the scheduled run that finished."""

    name: str
    kind: Literal["ScriptRun", "FlowRun"]
    phase: str
    target_path: str
    started_at: datetime | None = None
    error: Mapping[str, Any] | None = None
    result: Any = None
    created_at: datetime | None = None


def hook_args(
    event: HookEvent,
    run: FinishedRun,
    *,
    namespace: str,
    path: str,
    previous_error: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Windmill's schedule-handler arguments: what ran, which schedule, and the error (or result)."""
    args: dict[str, Any] = {
        "workspace_id": namespace,
        "job_id": run.name,
        "path": run.target_path,
        "is_flow": run.kind == "FlowRun",
        "schedule_path": path,
        "started_at": _iso(run.started_at) if run.started_at else None,
    }
    if event == "on-failure":
        args |= {"error": dict(run.error or {}), "failed_times": 1}
    elif event == "on-recovery":
        args |= {"error": dict(previous_error or {}), "success_result": run.result, "success_times": 1}
    else:
        args |= {"success_result": run.result}
    return args


def hook_run(
    schedule: str,
    namespace: str,
    hook: ScheduleHook,
    event: HookEvent,
    run: FinishedRun,
    *,
    path: str,
    accepted: frozenset[str] | None = None,
    previous_error: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The handler run for `event` after `run`, named from the run so a repeated reaction adopts it.

    The hook's own `args` come on top of Windmill's handler arguments; `accepted` (the parameter names of the
    handler's schema, when known) keeps only those, so a handler taking just `error` still validates."""
    args = hook_args(event, run, namespace=namespace, path=path, previous_error=previous_error)
    args |= dict(hook.args)
    if accepted is not None:
        args = {k: v for k, v in args.items() if k in accepted}
    return {
        "apiVersion": API_VERSION,
        "kind": run_kind(hook),
        "metadata": {
            "name": child_run_name(run.name, event, 0),
            "namespace": namespace,
            "labels": {SCHEDULE_LABEL: schedule, HOOK_LABEL: event},
        },
        "spec": {**_target(hook), "args": args, "schedulePath": path},
    }


def _streak(phases: Sequence[str], phase: str) -> int:
    """How many of the last `phases` (most recent last) are `phase`, in a row."""
    count = 0
    for earlier in reversed(phases):
        if earlier != phase:
            break
        count += 1
    return count


def hooks_for(spec: ScheduleSpec, phase: str, earlier: Sequence[str]) -> list[tuple[HookEvent, ScheduleHook]]:
    """Which handlers a run finishing in `phase` starts, given the phases of the schedule's runs before it
    (most recent last), as Windmill decides: `onFailure` once `onFailureTimes` runs in a row failed (with
    `onFailureExact` only at exactly that many), `onRecovery` when `onRecoveryTimes` runs in a row succeeded
    after a failure."""
    hooks: list[tuple[HookEvent, ScheduleHook]] = []
    if phase == "Failed" and spec.on_failure is not None:
        streak, times = 1 + _streak(earlier, "Failed"), spec.on_failure_times or 1
        if streak == times or (streak > times and not spec.on_failure_exact):
            hooks.append(("on-failure", spec.on_failure))
    if phase == "Succeeded":
        times = spec.on_recovery_times or 1  # the run before this streak of `times` successes failed
        recovered = _streak(earlier, "Succeeded") == times - 1 and earlier[-times:][:1] == ["Failed"]
        if recovered and len(earlier) >= times and spec.on_recovery is not None:
            hooks.append(("on-recovery", spec.on_recovery))
        if spec.on_success is not None:
            hooks.append(("on-success", spec.on_success))
    return hooks


# --- what a scheduled run's progress changes in the Schedule's status -------------------------------------

RECENT_RUNS = STREAK_WINDOW


@dataclass(frozen=True)
class RunRecord:
    """The status fields to merge into the Schedule, and the handlers to start, after seeing a run."""

    status: dict[str, Any]
    hooks: tuple[tuple[HookEvent, ScheduleHook], ...] = ()
    previous_run: str | None = None
    lag_seconds: float | None = None
    """Set once per tick, when its run is first recorded: how long after the tick the run was created."""


def record_run(
    spec: ScheduleSpec, status: Mapping[str, Any], run: FinishedRun, scheduled_for: datetime | None
) -> RunRecord:
    """Fold one observation of a scheduled run into the Schedule's status (as a merge patch).

    `lastRun`/`lastRunAt` follow the most recent tick (a tick newer than `lastRunAt` also yields the
    schedule's lag, so it is measured once per tick, restarts included); a run reaching a final phase is
    counted once (the `recentRuns` window remembers what was counted) and starts the handlers its phase calls
    for."""
    patch: dict[str, Any] = {}
    lag: float | None = None
    last_at = status.get("lastRunAt")
    if scheduled_for is not None and (last_at is None or _iso(scheduled_for) >= str(last_at)):
        last = {"name": run.name, "kind": run.kind, "phase": run.phase}
        if status.get("lastRun") != last or last_at != _iso(scheduled_for):
            patch |= {"lastRun": last, "lastRunAt": _iso(scheduled_for)}
        if last_at != _iso(scheduled_for) and run.created_at is not None:
            lag = max(0.0, (run.created_at - scheduled_for).total_seconds())
    recent: list[dict[str, Any]] = list(status.get("recentRuns") or [])
    if run.phase not in TERMINAL_PHASES or any(r.get("name") == run.name for r in recent):
        return RunRecord(patch, lag_seconds=lag)
    previous = recent[-1] if recent else None
    counter = {"Succeeded": "successCount", "Failed": "failureCount"}.get(run.phase)
    if counter is not None:
        patch[counter] = int(status.get(counter) or 0) + 1
    patch["recentRuns"] = [*recent, {"name": run.name, "phase": run.phase}][-RECENT_RUNS:]
    hooks = hooks_for(spec, run.phase, [str(r.get("phase")) for r in recent])
    return RunRecord(patch, tuple(hooks), previous.get("name") if previous else None, lag)
