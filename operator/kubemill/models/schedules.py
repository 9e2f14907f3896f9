"""Schedule: run a script or flow on a cron schedule (reconciled into a CronJob): spec and status."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, ConfigDict, Field, model_validator

from kubemill.models.common import (
    Conditions,
    JsonObject,
    KubemillModel,
    KubemillResource,
    Name,
    StatusModel,
    WindmillPath,
    exactly_one,
    rule,
    validations,
)
from kubemill.models.openflow_parts import Retry

SERVER_DEFAULT = {"x-kubemill-server-default": True}
"""Filled in by the API server, so `kubectl get` shows it (see kubemill.crdgen)."""

CRON_MESSAGE = (
    "must be a cron expression with 5 fields (minute hour day month weekday), or 6 with seconds first"
)
CRON_PATTERN = r"^\s*\S+(\s+\S+){4,5}\s*$"


def _check_cron(value: str) -> str:
    if not 5 <= len(value.split()) <= 6:
        raise ValueError(f"{value!r} {CRON_MESSAGE}")
    return value


def _check_timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{value!r} is not an IANA time zone (like UTC or Europe/Paris)") from None
    return value


Cron = Annotated[
    str,
    AfterValidator(_check_cron),
    Field(
        max_length=256, json_schema_extra=validations(rule(f"self.matches(r'{CRON_PATTERN}')", CRON_MESSAGE))
    ),
]
TimeZone = Annotated[str, AfterValidator(_check_timezone), Field(min_length=1, max_length=64)]


EXACTLY_ONE_TARGET = "set exactly one of spec.scriptPath or spec.flowPath"
EXACTLY_ONE_HOOK_TARGET = "set exactly one of scriptPath or flowPath in onFailure, onRecovery and onSuccess"
TARGET_RULE = "has(self.scriptPath) != has(self.flowPath)"
STREAK_WINDOW = 20
"""How many finished runs a Schedule remembers (`status.recentRuns`): the longest streak it can count."""
HOOK_COUNTS = (
    ("onFailureTimes", "onFailure"),
    ("onFailureExact", "onFailure"),
    ("onRecoveryTimes", "onRecovery"),
)


def _needs(field: str, hook: str) -> str:
    return f"spec.{field} applies to spec.{hook}: set {hook}, or remove {field}"


RETRY_RULE = "!has(self.retry) || has(self.scriptPath)"
RETRY_ON_A_FLOW = (
    "spec.retry applies to Schedules of scripts (spec.scriptPath), as in Windmill, which ignores it for a "
    "flow: set retry on the flow's steps, or remove spec.retry"
)


class ScheduleHook(KubemillModel):
    """A script or flow run when a scheduled run fails, recovers or succeeds."""

    model_config = ConfigDict(json_schema_extra=validations(rule(TARGET_RULE, EXACTLY_ONE_HOOK_TARGET)))

    script_path: WindmillPath | None = None
    flow_path: WindmillPath | None = None
    args: JsonObject = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_target(self) -> ScheduleHook:
        exactly_one({"s": self.script_path, "f": self.flow_path}, EXACTLY_ONE_HOOK_TARGET)
        return self


class ScheduleSpec(KubemillModel):
    """When to run (`schedule`, `timezone`), what (`scriptPath` or `flowPath`, `args`), what to do after."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            rule(TARGET_RULE, EXACTLY_ONE_TARGET),
            *(rule(f"!has(self.{f}) || has(self.{hook})", _needs(f, hook)) for f, hook in HOOK_COUNTS),
            rule(RETRY_RULE, RETRY_ON_A_FLOW),
        )
    )

    schedule: Cron
    timezone: Annotated[TimeZone, Field(json_schema_extra=SERVER_DEFAULT)] = "UTC"
    script_path: WindmillPath | None = None
    flow_path: WindmillPath | None = None
    args: JsonObject = Field(default_factory=dict)
    summary: str = ""
    enabled: Annotated[bool, Field(json_schema_extra=SERVER_DEFAULT)] = True
    paused_until: datetime | None = None
    no_overlap: bool = False
    retry: Retry | None = None
    on_failure: ScheduleHook | None = None
    on_recovery: ScheduleHook | None = None
    on_success: ScheduleHook | None = None
    on_failure_times: Annotated[int, Field(ge=1, le=STREAK_WINDOW)] | None = None
    """Windmill's `on_failure_times`: `onFailure` runs once this many runs in a row failed (default 1)."""
    on_failure_exact: bool | None = None
    """Windmill's `on_failure_exact`: `onFailure` runs only when the streak is exactly `onFailureTimes`, not
    again for every later failure of the same streak."""
    on_recovery_times: Annotated[int, Field(ge=1, le=STREAK_WINDOW - 1)] | None = None
    """Windmill's `on_recovery_times`: `onRecovery` runs when this many runs in a row succeeded after a
    failure (default 1)."""

    @model_validator(mode="after")
    def _one_target(self) -> ScheduleSpec:
        exactly_one({"s": self.script_path, "f": self.flow_path}, EXACTLY_ONE_TARGET)
        for field, hook in HOOK_COUNTS:
            if getattr(self, _snake(field)) is not None and getattr(self, _snake(hook)) is None:
                raise ValueError(_needs(field, hook))
        if self.retry is not None and self.script_path is None:
            raise ValueError(RETRY_ON_A_FLOW)
        return self


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name)


class LastRun(StatusModel):
    """The most recent run this schedule started."""

    name: Name
    kind: Literal["ScriptRun", "FlowRun"] | None = None
    phase: str | None = None


class RecordedRun(StatusModel):
    """A finished run already counted (and its handlers started), most recent last."""

    name: Name
    phase: str


Count = Annotated[int, Field(ge=0)]


class ScheduleStatus(StatusModel):
    """When the schedule runs next, what it ran last, how its runs went, and the CronJob it owns."""

    observed_generation: int | None = None
    next_run_at: datetime | None = None
    last_run_at: datetime | None = None
    last_run: LastRun | None = None
    cron_job: Name | None = None
    success_count: Count = 0
    failure_count: Count = 0
    skip_count: Count = 0
    last_skipped_at: datetime | None = None
    recent_runs: Annotated[tuple[RecordedRun, ...], Field(max_length=20)] = ()
    conditions: Conditions = ()


class Schedule(KubemillResource):
    """A Schedule resource."""

    kind: Literal["Schedule"]
    spec: ScheduleSpec
    status: ScheduleStatus | None = None
