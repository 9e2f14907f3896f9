"""Schedule handlers: a Schedule becomes a CronJob whose pod creates each tick's run; runs feed its status.

Three watches, all Kopf `on.event` handlers (no progress annotations, no extra writes; each reaction is
idempotent, so an event seen twice costs a few reads):

- the Schedule itself (and a timer): validate the cron expression and time zone (`Ready=False` with
  `InvalidCron` / `UnknownTimeZone` otherwise), make sure the namespace has the trigger's ServiceAccount and
  RoleBinding, create or update the CronJob (suspended while disabled or paused), write `nextRunAt`;
- the runs it started (label `kubemill.dev/schedule`): `lastRun`, `lastRunAt`, the success and failure
  counts, and the `onFailure` / `onRecovery` / `onSuccess` handler runs (deterministic names, so adopting);
- the trigger Jobs: a Job that completed without creating its tick's run skipped the tick (`noOverlap`),
  which is counted (`skipCount`, `lastSkippedAt`) and reported as an Event.

Reactions for one Schedule run one at a time (a lock per schedule), so counts are never lost to a race.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import kopf
import pydantic

from kubemill import constants
from kubemill.engine.naming import identity_digest
from kubemill.errors import KubemillError, NotFound, NotOurs
from kubemill.k8s.api import KubeApi
from kubemill.k8s.client import holds
from kubemill.models.common import API_VERSION, ready_condition
from kubemill.models.schedules import Schedule, ScheduleSpec
from kubemill.operator import metrics
from kubemill.operator.runtime import Operator, of
from kubemill.operator.schedule_locks import ScheduleLocks
from kubemill.schedules import (
    HOOK_LABEL,
    SCHEDULE_LABEL,
    CronError,
    FinishedRun,
    hook_run,
    next_run_at,
    parse_cron,
    record_run,
    run_kind,
    run_name,
    schedule_path,
    suspension,
    zone,
)
from kubemill.triggers import (
    DEFAULT_IMAGE,
    TriggerConfig,
    build_cronjob,
    build_role_binding,
    build_service_account,
    cronjob_name,
)

log = logging.getLogger("kubemill.schedules")
GROUP, VERSION = API_VERSION.split("/")
IMAGE_ENV = "KUBEMILL_TRIGGER_IMAGE"
SCHEDULED_TIMESTAMP = "batch.kubernetes.io/cronjob-scheduled-timestamp"
SPEC_HASH = constants.ANNOTATION_SPEC_HASH
REFRESH_SECONDS = 20.0


def _iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if moment else None


def _ready(
    status: Mapping[str, Any], ok: bool, reason: str, message: str, generation: int | None
) -> dict[str, Any]:
    return ready_condition(status, ok, reason, message, generation, datetime.now(UTC))


def _patch_status(api: KubeApi, body: Mapping[str, Any], patch: Mapping[str, Any]) -> None:
    current = body.get("status") or {}
    changed = {k: v for k, v in patch.items() if current.get(k) != v}
    if changed:
        meta = body["metadata"]
        api.patch(API_VERSION, "Schedule", meta["namespace"], meta["name"], {"status": changed}, status=True)


# --- the Schedule -> CronJob --------------------------------------------------------------------------------


def _invalid(body: Mapping[str, Any], exc: Exception) -> tuple[str, str]:
    if isinstance(exc, CronError):
        reason = "UnknownTimeZone" if "time zone" in str(exc) else "InvalidCron"
        return reason, str(exc)
    assert isinstance(exc, pydantic.ValidationError)
    messages = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
    timezone = (body.get("spec") or {}).get("timezone") or ""
    if "IANA" in messages:
        return "UnknownTimeZone", f"{timezone!r} is not an IANA time zone (like UTC or Europe/Paris)"
    if "cron" in messages:
        return "InvalidCron", messages
    return "InvalidSpec", messages


def ensure_trigger_identity(api: KubeApi, locks: ScheduleLocks, namespace: str) -> None:
    """The namespace's trigger ServiceAccount and its RoleBinding (to the ClusterRole kubemill-trigger)."""
    if namespace in locks.identities:
        return
    api.create(build_service_account(namespace))
    api.create(build_role_binding(namespace))
    locks.identities.add(namespace)


def reconcile_schedule(op: Operator, namespace: str, name: str, now: datetime | None = None) -> None:
    api = op.kube
    with op.schedules.of(namespace, name):
        body = api.get_or_none(API_VERSION, "Schedule", namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return
        _reconcile(api, op.schedules, body, now or datetime.now(UTC))


def _reconcile(api: KubeApi, locks: ScheduleLocks, body: dict[str, Any], now: datetime) -> None:
    meta, status = body["metadata"], body.get("status") or {}
    generation = meta.get("generation")
    try:
        schedule = Schedule.model_validate(body)
        cron = parse_cron(schedule.spec.schedule)
        zone(schedule.spec.timezone)
    except (pydantic.ValidationError, CronError) as exc:
        reason, message = _invalid(body, exc)
        api.delete("batch/v1", "CronJob", meta["namespace"], cronjob_name(meta["name"]))
        _patch_status(
            api,
            body,
            {
                "observedGeneration": generation,
                "nextRunAt": None,
                "conditions": [_ready(status, False, reason, message, generation)],
            },
        )
        return
    spec = schedule.spec
    ensure_trigger_identity(api, locks, meta["namespace"])
    last_run = status.get("lastRun") if spec.no_overlap else None
    config = TriggerConfig(
        meta["name"],
        meta["namespace"],
        schedule_path(spec, meta.get("annotations")),
        spec,
        {"name": last_run["name"], "kind": last_run.get("kind") or ""} if last_run else None,
    )
    state = suspension(spec, now)
    owner = {"apiVersion": API_VERSION, "kind": "Schedule", "name": meta["name"], "uid": meta["uid"]}
    desired = build_cronjob(
        config, cron, suspended=state.suspended, owner=owner, image=os.environ.get(IMAGE_ENV, DEFAULT_IMAGE)
    )
    digest = identity_digest(json.dumps(desired["spec"], sort_keys=True))[:16]
    desired["metadata"]["annotations"] = {SPEC_HASH: digest}
    existing, created = api.create(desired, adopt_any=True)  # an older spec of ours is patched below
    if not created and holds(existing, {"metadata": {"ownerReferences": [{**owner, "controller": True}]}}):
        raise NotOurs(f"CronJob {meta['namespace']}/{desired['metadata']['name']} is not this Schedule's")
    if not created and (existing["metadata"].get("annotations") or {}).get(SPEC_HASH) != digest:
        update = {"metadata": {"annotations": {SPEC_HASH: digest}}, "spec": desired["spec"]}
        api.patch("batch/v1", "CronJob", meta["namespace"], desired["metadata"]["name"], update)
    if state.reason == "Disabled":
        ready = _ready(status, True, "Disabled", "enabled is false: the CronJob is suspended", generation)
    elif state.reason == "Paused":
        message = f"paused until {_iso(state.resume_at)}: the CronJob is suspended until then"
        ready = _ready(status, True, "Paused", message, generation)
    else:
        message = f"CronJob {desired['metadata']['name']} runs {cron.kubernetes} ({spec.timezone})"
        ready = _ready(status, True, "Scheduled", message, generation)
    _patch_status(
        api,
        body,
        {
            "observedGeneration": generation,
            "nextRunAt": _iso(next_run_at(spec, now)),
            "cronJob": desired["metadata"]["name"],
            "conditions": [ready],
        },
    )


def _safely(what: str, op: Operator, namespace: str, name: str, work: Any, *args: Any) -> None:
    try:
        work(op, namespace, name, *args)
    except KubemillError as exc:
        log.warning("%s %s/%s: %s", what, namespace, name, exc)
        raise kopf.TemporaryError(str(exc), delay=getattr(exc, "delay", 5.0)) from exc


@kopf.on.event(GROUP, VERSION, "schedules")
def schedule_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    if type == "DELETED":
        return
    meta = body["metadata"]
    status = body.get("status") or {}
    if type == "MODIFIED" and status.get("observedGeneration") == meta.get("generation"):
        return  # our own status write, or metadata only; the timer keeps nextRunAt fresh
    _safely("schedule", of(memo), meta["namespace"], meta["name"], reconcile_schedule)


@kopf.timer(GROUP, VERSION, "schedules", interval=REFRESH_SECONDS, initial_delay=REFRESH_SECONDS)
def schedule_refresh(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Keep `nextRunAt` current after each tick and lift the suspension when `pausedUntil` has passed."""
    meta = body["metadata"]
    _safely("schedule", of(memo), meta["namespace"], meta["name"], reconcile_schedule)


# --- scheduled runs -> status and handlers ----------------------------------------------------------------


def _finished_run(kind: str, body: Mapping[str, Any]) -> tuple[FinishedRun, datetime | None]:
    spec, status = body.get("spec") or {}, body.get("status") or {}
    started = status.get("startedAt")
    scheduled = spec.get("scheduledFor")
    created = body["metadata"].get("creationTimestamp")
    run = FinishedRun(
        name=body["metadata"]["name"],
        kind="FlowRun" if kind == "FlowRun" else "ScriptRun",
        phase=status.get("phase") or "Pending",
        target_path=spec.get("scriptPath") or spec.get("flowPath") or "",
        started_at=datetime.fromisoformat(started.replace("Z", "+00:00")) if started else None,
        error=status.get("error"),
        result=status.get("result"),
        created_at=datetime.fromisoformat(created) if created else None,
    )
    return run, datetime.fromisoformat(scheduled.replace("Z", "+00:00")) if scheduled else None


def _accepted_args(api: KubeApi, namespace: str, script_path: str | None) -> frozenset[str] | None:
    """The parameters a handler script takes (from its derived schema), when the Script is known."""
    if script_path is None:
        return None
    for item in api.list(API_VERSION, "Script", namespace):
        if (item.get("spec") or {}).get("path") == script_path:
            schema = (item.get("status") or {}).get("schema") or (item.get("spec") or {}).get("schema")
            if isinstance(schema, Mapping) and isinstance(schema.get("properties"), Mapping):
                return frozenset(schema["properties"])
    return None


def record_scheduled_run(
    op: Operator, namespace: str, schedule: str, kind: str, run_body: Mapping[str, Any]
) -> None:
    api = op.kube
    with op.schedules.of(namespace, schedule):
        body = api.get_or_none(API_VERSION, "Schedule", namespace, schedule)
        if body is None:
            return
        spec = ScheduleSpec.model_validate(body["spec"])
        run, scheduled_for = _finished_run(kind, run_body)
        status = body.get("status") or {}
        record = record_run(spec, status, run, scheduled_for)
        path = schedule_path(spec, body["metadata"].get("annotations"))
        previous_error = None
        if record.previous_run and any(event == "on-recovery" for event, _ in record.hooks):
            previous = api.get_or_none(API_VERSION, kind, namespace, record.previous_run)
            previous_error = ((previous or {}).get("status") or {}).get("error")
        for event, hook in record.hooks:
            manifest = hook_run(
                schedule,
                namespace,
                hook,
                event,
                run,
                path=path,
                accepted=_accepted_args(api, namespace, hook.script_path),
                previous_error=previous_error,
            )
            _, created = api.create(manifest)
            if created:
                log.info(
                    "schedule %s/%s: started %s handler %s",
                    namespace,
                    schedule,
                    event,
                    manifest["metadata"]["name"],
                )
        _patch_status(api, body, record.status)
        if record.lag_seconds is not None:
            metrics.SCHEDULE_LAG.labels(namespace).observe(record.lag_seconds)
        if spec.no_overlap and "lastRun" in record.status:
            _reconcile(
                api, op.schedules, api.get(API_VERSION, "Schedule", namespace, schedule), datetime.now(UTC)
            )


def _run_event(op: Operator, kind: str, type: str | None, body: kopf.Body) -> None:
    meta = body["metadata"]
    labels = meta.get("labels") or {}
    if type == "DELETED" or HOOK_LABEL in labels:
        return
    _safely(
        "scheduled run", op, meta["namespace"], labels[SCHEDULE_LABEL], record_scheduled_run, kind, dict(body)
    )


@kopf.on.event(GROUP, VERSION, "scriptruns", labels={SCHEDULE_LABEL: kopf.PRESENT})
def scheduled_scriptrun_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    _run_event(of(memo), "ScriptRun", type, body)


@kopf.on.event(GROUP, VERSION, "flowruns", labels={SCHEDULE_LABEL: kopf.PRESENT})
def scheduled_flowrun_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    _run_event(of(memo), "FlowRun", type, body)


# --- trigger Jobs: ticks skipped under noOverlap ------------------------------------------------------------


def _job_tick(job: Mapping[str, Any]) -> datetime | None:
    stamp = (job["metadata"].get("annotations") or {}).get(SCHEDULED_TIMESTAMP)
    if stamp:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    _, _, minutes = job["metadata"]["name"].rpartition("-")
    return datetime.fromtimestamp(int(minutes) * 60, UTC) if minutes.isdigit() else None


def record_trigger_job(op: Operator, namespace: str, schedule: str, job: Mapping[str, Any]) -> None:
    tick = _job_tick(job)
    if tick is None:
        return
    api = op.kube
    with op.schedules.of(namespace, schedule):
        body = api.get_or_none(API_VERSION, "Schedule", namespace, schedule)
        if body is None:
            return
        spec = ScheduleSpec.model_validate(body["spec"])
        status = body.get("status") or {}
        if status.get("lastSkippedAt") == _iso(tick):
            return
        name = run_name(schedule, tick)
        if api.get_or_none(API_VERSION, run_kind(spec), namespace, name) is not None:
            return
        last = (status.get("lastRun") or {}).get("name", "")
        _patch_status(
            api, body, {"skipCount": int(status.get("skipCount") or 0) + 1, "lastSkippedAt": _iso(tick)}
        )
        api.event(_skip_event(body, tick, last))


def _skip_event(body: Mapping[str, Any], tick: datetime, last: str) -> dict[str, Any]:
    meta = body["metadata"]
    now = _iso(datetime.now(UTC))
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": API_VERSION,
            "kind": "Schedule",
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta["uid"],
        },
        "type": "Normal",
        "reason": "Skipped",
        "message": f"skipped the tick of {_iso(tick)}: {last or 'the last run'} was still running",
        "source": {"component": "kubemill-operator"},
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }


@kopf.on.event("batch", "v1", "jobs", labels={SCHEDULE_LABEL: kopf.PRESENT})
def trigger_job_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    if type == "DELETED":
        return
    conditions = (body.get("status") or {}).get("conditions") or []
    if not any(c.get("type") == "Complete" and c.get("status") == "True" for c in conditions):
        return
    meta = body["metadata"]
    try:
        record_trigger_job(of(memo), meta["namespace"], meta["labels"][SCHEDULE_LABEL], dict(body))
    except (KubemillError, NotFound) as exc:
        log.warning("trigger job %s/%s: %s", meta["namespace"], meta["name"], exc)
