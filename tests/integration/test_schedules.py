"""Schedules on the real control plane: CronJobs, the trigger pod and its identity, status, skips, hooks."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO, Cluster, wait_for
from tests.integration.test_approvals import metric
from tests.operator_harness import Operator

pytestmark = pytest.mark.cluster


def schedule(name: str, namespace: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kubemill.dev/v1alpha1",
        "kind": "Schedule",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"schedule": "0 0 1 1 *", "scriptPath": "f/sched/missing", **spec},
    }


def status(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    return cluster.get("schedule", name, "-n", namespace).get("status") or {}


def ready(cluster: Cluster, namespace: str, name: str) -> dict[str, Any] | None:
    conditions = status(cluster, namespace, name).get("conditions") or []
    return next((c for c in conditions if c["type"] == "Ready"), None)


def runs(cluster: Cluster, namespace: str, name: str, kind: str = "scriptruns") -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = cluster.get(kind, "-n", namespace, "-l", f"kubemill.dev/schedule={name}")[
        "items"
    ]
    return items


def cronjob(cluster: Cluster, namespace: str, name: str) -> dict[str, Any] | None:
    proc = cluster.kubectl("get", "cronjob", name, "-n", namespace, "-o", "json", check=False)
    return json.loads(proc.stdout) if proc.returncode == 0 else None


def fire(cluster: Cluster, namespace: str, name: str, tick: int) -> str:
    """A tick now: a Job from the CronJob, named as its controller names them (`<cronjob>-<minutes>`)."""
    job = f"{name}-{tick // 60}"
    cluster.kubectl("create", "job", job, f"--from=cronjob/{name}", "-n", namespace)
    return job


def job_done(cluster: Cluster, namespace: str, job: str) -> bool:
    conditions = cluster.get("job", job, "-n", namespace).get("status", {}).get("conditions") or []
    return any(c["type"] in ("Complete", "Failed") and c["status"] == "True" for c in conditions)


def assert_completed(cluster: Cluster, namespace: str, job: str) -> None:
    conditions = cluster.get("job", job, "-n", namespace).get("status", {}).get("conditions") or []
    logs = cluster.kubectl("logs", f"job/{job}", "-n", namespace, check=False)
    assert any(c["type"] == "Complete" for c in conditions), (conditions, logs.stdout, logs.stderr)


def test_invalid_cron_and_unknown_timezone_are_not_ready(
    cluster: Cluster, namespace: str, running_operator: Operator
) -> None:
    cluster.apply(schedule("seconds", namespace, schedule="30 * * * * *"))
    cluster.apply(schedule("range", namespace, schedule="61 * * * *"))
    cluster.apply(schedule("mars", namespace, schedule="0 * * * *", timezone="Mars/Base"))
    for name, reason, words in [
        ("seconds", "InvalidCron", "seconds field must be 0"),
        ("range", "InvalidCron", "not a valid cron expression"),
        ("mars", "UnknownTimeZone", "'Mars/Base' is not an IANA time zone"),
    ]:
        cond = wait_for(lambda n=name: ready(cluster, namespace, n), 30, f"Ready on {name}")
        assert (cond["status"], cond["reason"]) == ("False", reason), cond
        assert words in cond["message"]
        assert cronjob(cluster, namespace, name) is None
    # Fixing the spec makes it Ready and creates the CronJob.
    cluster.apply(schedule("mars", namespace, schedule="0 * * * *", timezone="Europe/Paris"))
    wait_for(lambda: (ready(cluster, namespace, "mars") or {}).get("status") == "True", 30, "mars Ready")
    cj = wait_for(lambda: cronjob(cluster, namespace, "mars"), 30, "the CronJob")
    assert cj["spec"]["timeZone"] == "Europe/Paris" and cj["spec"]["schedule"] == "0 * * * *"


def test_pause_and_resume(cluster: Cluster, namespace: str, running_operator: Operator) -> None:
    cluster.apply(schedule("p", namespace, schedule="0 0 12 * * MON-FRI", enabled=False))
    cond = wait_for(lambda: ready(cluster, namespace, "p"), 30, "Ready")
    assert (cond["status"], cond["reason"]) == ("True", "Disabled")
    assert wait_for(lambda: cronjob(cluster, namespace, "p"), 30, "CronJob")["spec"]["suspend"] is True
    assert (
        "nextRunAt" not in status(cluster, namespace, "p")
        or status(cluster, namespace, "p")["nextRunAt"] is None
    )

    cluster.kubectl(
        "patch", "schedule", "p", "-n", namespace, "--type=merge", "-p", '{"spec":{"enabled":true}}'
    )
    wait_for(lambda: (cronjob(cluster, namespace, "p") or {})["spec"]["suspend"] is False, 30, "resumed")
    wait_for(lambda: (ready(cluster, namespace, "p") or {}).get("reason") == "Scheduled", 30, "Scheduled")
    assert status(cluster, namespace, "p")["nextRunAt"].endswith("Z")

    until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3 * 86400))
    cluster.kubectl(
        "patch",
        "schedule",
        "p",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"pausedUntil": until}}),
    )
    wait_for(lambda: (cronjob(cluster, namespace, "p") or {})["spec"]["suspend"] is True, 30, "paused")
    cond = wait_for(
        lambda: (
            (ready(cluster, namespace, "p") or {}).get("reason") == "Paused"
            and ready(cluster, namespace, "p")
        ),
        30,
        "Paused",
    )
    assert until in cond["message"]
    assert status(cluster, namespace, "p")["nextRunAt"] > until


def trigger_kubeconfig(cluster: Cluster, namespace: str, tmp_path: Path) -> Path:
    token = cluster.kubectl("create", "token", "kubemill-trigger", "-n", namespace).stdout.strip()
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": admin["clusters"],
        "users": [{"name": "trigger", "user": {"token": token}}],
        "contexts": [{"name": "t", "context": {"cluster": admin["clusters"][0]["name"], "user": "trigger"}}],
        "current-context": "t",
    }
    path = tmp_path / "trigger.kubeconfig"
    path.write_text(json.dumps(config))
    return path


def test_trigger_identity_and_a_tick_fired_twice(
    cluster: Cluster, namespace: str, running_operator: Operator, tmp_path: Path
) -> None:
    cluster.apply(schedule("twice", namespace, args={"n": 1}))
    cj = wait_for(lambda: cronjob(cluster, namespace, "twice"), 30, "CronJob")
    env = {
        e["name"]: e.get("value")
        for e in cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    account = f"system:serviceaccount:{namespace}:kubemill-trigger"
    for verb, resource, where, allowed in [
        ("create", "scriptruns.kubemill.dev", namespace, "yes"),
        ("create", "flowruns.kubemill.dev", namespace, "yes"),
        ("get", "scriptruns.kubemill.dev", namespace, "yes"),
        ("create", "scriptruns.kubemill.dev", "default", "no"),
        ("get", "secrets", namespace, "no"),
        ("create", "pods", namespace, "no"),
        ("update", "schedules.kubemill.dev", namespace, "no"),
        ("delete", "scriptruns.kubemill.dev", namespace, "no"),
    ]:
        proc = cluster.kubectl("auth", "can-i", verb, resource, "-n", where, f"--as={account}", check=False)
        assert proc.stdout.strip() == allowed, (verb, resource, where, proc.stdout)

    kubeconfig = trigger_kubeconfig(cluster, namespace, tmp_path)
    command = [str(REPO / ".venv/bin/kubemill"), "trigger", f"--kubeconfig={kubeconfig}", "--tick=1714564800"]
    environment = {**cluster.env(), "KUBEMILL_SCHEDULE": env["KUBEMILL_SCHEDULE"]}
    first = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=60)
    second = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=60)
    assert first.returncode == 0, first.stderr
    assert "created scriptrun/twice-1714564800" in first.stdout
    assert second.returncode == 0, second.stderr
    assert "already exists" in second.stdout
    [run] = runs(cluster, namespace, "twice")
    assert run["metadata"]["name"] == "twice-1714564800"
    assert run["spec"]["scheduledFor"] == "2024-05-01T12:00:00Z"
    assert run["spec"]["schedulePath"] == "f/sched/missing" and run["spec"]["args"] == {"n": 1}


def test_no_overlap_skips_and_on_failure_runs_with_the_error(
    cluster: Cluster, namespace: str, running_operator: Operator
) -> None:
    hook = {"scriptPath": "f/sched/alert", "args": {"channel": "#ops"}}
    cluster.apply(schedule("nov", namespace, noOverlap=True, onFailure=hook))
    wait_for(lambda: cronjob(cluster, namespace, "nov"), 30, "CronJob")
    now = int(time.time()) // 60 * 60
    first = fire(cluster, namespace, "nov", now - 120)
    wait_for(lambda: job_done(cluster, namespace, first), 90, f"trigger job {first}")
    assert_completed(cluster, namespace, first)
    run_name = f"nov-{now - 120}"
    wait_for(
        lambda: (status(cluster, namespace, "nov").get("lastRun") or {}).get("name") == run_name,
        30,
        "lastRun",
    )

    def cronjob_knows_last_run() -> bool:
        cj = cronjob(cluster, namespace, "nov") or {}
        env = cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["env"]
        config = json.loads(next(e["value"] for e in env if e["name"] == "KUBEMILL_SCHEDULE"))
        return (config.get("lastRun") or {}).get("name") == run_name

    wait_for(cronjob_knows_last_run, 30, "the CronJob to carry the last run")
    phase = (cluster.get("scriptrun", run_name, "-n", namespace).get("status") or {}).get("phase")
    if phase in (None, "Pending", "Running"):
        second = fire(cluster, namespace, "nov", now - 60)
        wait_for(lambda: job_done(cluster, namespace, second), 90, f"trigger job {second}")
        wait_for(lambda: status(cluster, namespace, "nov").get("skipCount") == 1, 30, "the skip recorded")
        assert status(cluster, namespace, "nov")["lastSkippedAt"] == time.strftime(
            "%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 60)
        )
        assert [r["metadata"]["name"] for r in runs(cluster, namespace, "nov")] == [run_name]
        events = cluster.kubectl(
            "get", "events", "-n", namespace, "--field-selector", "reason=Skipped"
        ).stdout
        assert "still running" in events
        # The run fails (the script does not exist; without the run executor, say so as admin).
        cluster.kubectl(
            "patch",
            "scriptrun",
            run_name,
            "-n",
            namespace,
            "--subresource=status",
            "--type=merge",
            "-p",
            json.dumps(
                {
                    "status": {
                        "phase": "Failed",
                        "error": {"name": "ScriptNotFound", "message": "no script f/sched/missing"},
                    }
                }
            ),
        )

    def hook_run() -> dict[str, Any] | None:
        return next(
            (
                r
                for r in runs(cluster, namespace, "nov")
                if r["metadata"]["labels"].get("kubemill.dev/schedule-hook")
            ),
            None,
        )

    handler = wait_for(hook_run, 60, "the onFailure handler run")
    assert handler["spec"]["scriptPath"] == "f/sched/alert"
    args = handler["spec"]["args"]
    assert args["schedule_path"] == "f/sched/missing" and args["channel"] == "#ops"
    assert args["error"]["name"] and args["job_id"] == run_name
    wait_for(lambda: status(cluster, namespace, "nov").get("failureCount") == 1, 30, "failureCount")


def test_on_failure_times_and_exact_start_the_handler_once_at_the_second_failure_in_a_row(
    cluster: Cluster, namespace: str, running_operator: Operator
) -> None:
    """Windmill's `on_failure_times: 2` with `on_failure_exact`: three failed runs in a row (the script does
    not exist), one handler run, started by the second."""
    hook = {"scriptPath": "f/sched/alert"}
    cluster.apply(schedule("streak", namespace, onFailure=hook, onFailureTimes=2, onFailureExact=True))
    wait_for(lambda: cronjob(cluster, namespace, "streak"), 30, "CronJob")
    now = int(time.time()) // 60 * 60

    def handlers() -> list[str]:
        found = runs(cluster, namespace, "streak")
        return [
            r["spec"]["args"]["job_id"]
            for r in found
            if r["metadata"]["labels"].get("kubemill.dev/schedule-hook")
        ]

    for count, tick in enumerate((now - 180, now - 120, now - 60), start=1):
        job = fire(cluster, namespace, "streak", tick)
        wait_for(lambda job=job: job_done(cluster, namespace, job), 90, f"trigger job {job}")
        wait_for(
            lambda count=count: status(cluster, namespace, "streak").get("failureCount") == count,
            90,
            f"failure {count}",
        )
        if count == 2:
            assert wait_for(handlers, 60, "the onFailure handler run") == [f"streak-{now - 120}"]
    assert handlers() == [f"streak-{now - 120}"]


@pytest.mark.slow
def test_every_minute_schedule_runs_within_its_minute(
    cluster: Cluster, namespace: str, running_operator: Operator
) -> None:
    cluster.apply(schedule("minutely", namespace, schedule="* * * * *", args={"x": 1}))
    started = time.time()
    [run] = wait_for(lambda: runs(cluster, namespace, "minutely"), 130, "a scheduled run")
    name = run["metadata"]["name"]
    tick = int(name.rsplit("-", 1)[1])
    assert tick % 60 == 0 and tick >= started - 60
    created = (
        time.mktime(time.strptime(run["metadata"]["creationTimestamp"], "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
    )
    assert created - tick < 60, "the run was created within its minute"
    assert run["spec"]["scheduledFor"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(tick))
    wait_for(
        lambda: (status(cluster, namespace, "minutely").get("lastRun") or {}).get("name") == name,
        30,
        "lastRun",
    )
    lag = wait_for(
        lambda: metric(running_operator, "kubemill_schedule_lag_seconds_count", namespace=namespace),
        10,
        "the schedule lag observed",
    )
    lag_sum = metric(running_operator, "kubemill_schedule_lag_seconds_sum", namespace=namespace)
    assert lag >= 1 and lag_sum is not None and 0 <= lag_sum < 60 * lag
    assert (
        metric(running_operator, "kubemill_schedule_lag_seconds_bucket", namespace=namespace, le="60.0")
        == lag
    )
