"""The trigger: what a Schedule's CronJob runs at each tick, and the CronJob and identity it runs with.

Kubernetes does the timing (a CronJob per Schedule, `timeZone` from the schedule); its pod runs
`kubemill trigger`, which creates the ScriptRun or FlowRun for that tick under the deterministic name
`<schedule>-<unix time of the tick>`, so a tick that fires twice creates one run (409 is success). The tick is
read from the Job's name (the CronJob controller names each Job `<cronjob>-<minutes since the epoch>` and the
pod sees it through the downward API), so a late-starting pod still names the right tick. With `noOverlap`,
the trigger first looks at the schedule's last run (the operator keeps its name in the CronJob's pod
template) and skips the tick while it is still going; the operator notices the tick without a run and
records the skip.

The trigger pod runs as ServiceAccount `kubemill-trigger` of the namespace, bound to the ClusterRole
`kubemill-trigger` (config/rbac/trigger-role.yaml): create and get ScriptRuns and FlowRuns, nothing else. The
Schedule itself is handed to the pod in `KUBEMILL_SCHEDULE` (JSON), so the pod needs no right to read it.

`build_cronjob`, `build_service_account` and `build_role_binding` are pure; `cli_trigger` is the command.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubemill import __version__
from kubemill.engine.naming import identity_digest
from kubemill.models.common import API_VERSION
from kubemill.models.schedules import ScheduleSpec
from kubemill.schedules import (
    SCHEDULE_LABEL,
    TERMINAL_PHASES,
    Cron,
    CronError,
    parse_cron,
    run_manifest,
)

TRIGGER_ACCOUNT = "kubemill-trigger"
"""ServiceAccount (per namespace) and ClusterRole of trigger pods."""
CONFIG_ENV = "KUBEMILL_SCHEDULE"
JOB_NAME_ENV = "KUBEMILL_JOB_NAME"
TICK_ENV = "KUBEMILL_TICK"
DEFAULT_IMAGE = f"ghcr.io/kubemill/operator:{__version__}"
TRIGGER_UID = 65532
CRONJOB_MAX_NAME = 52  # the CronJob controller appends `-<11 digits>` to name each Job (63 in all)


# --- what the operator builds --------------------------------------------------------------------------


@dataclass(frozen=True)
class TriggerConfig:
    """What the trigger pod knows: the schedule (name, path, spec) and, with noOverlap, its last run."""

    name: str
    namespace: str
    path: str
    spec: ScheduleSpec
    last_run: Mapping[str, str] | None = None

    def to_json(self) -> str:
        return json.dumps(
            {
                "name": self.name,
                "namespace": self.namespace,
                "path": self.path,
                "spec": self.spec.to_manifest(),
                "lastRun": dict(self.last_run) if self.last_run else None,
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> TriggerConfig:
        data = json.loads(text)
        return cls(
            name=data["name"],
            namespace=data["namespace"],
            path=data["path"],
            spec=ScheduleSpec.model_validate(data["spec"]),
            last_run=data.get("lastRun"),
        )


def cronjob_name(schedule: str) -> str:
    """The Schedule's CronJob: the schedule's name, cut to 52 characters with a hash when longer."""
    if len(schedule) <= CRONJOB_MAX_NAME:
        return schedule
    digest = identity_digest(schedule)[:8]
    return f"{schedule[: CRONJOB_MAX_NAME - 9].rstrip('-.')}-{digest}"


def build_cronjob(
    config: TriggerConfig,
    cron: Cron,
    *,
    suspended: bool,
    owner: Mapping[str, str],
    image: str = DEFAULT_IMAGE,
) -> dict[str, Any]:
    """The CronJob of a Schedule (`owner`: its apiVersion, kind, name, uid); its pod runs the trigger."""
    labels = {SCHEDULE_LABEL: config.name, "app.kubernetes.io/managed-by": "kubemill"}
    container = {
        "name": "trigger",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["kubemill", "trigger"],
        "env": [
            {"name": CONFIG_ENV, "value": config.to_json()},
            {
                "name": JOB_NAME_ENV,
                "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['batch.kubernetes.io/job-name']"}},
            },
            {"name": "HOME", "value": "/tmp"},  # noqa: S108 - a path inside the pod
            {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"},
        ],
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "runAsUser": TRIGGER_UID,
            "runAsGroup": TRIGGER_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "resources": {"requests": {"cpu": "10m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],  # noqa: S108 - a path inside the pod
    }
    pod_spec = {
        "serviceAccountName": TRIGGER_ACCOUNT,
        "restartPolicy": "Never",
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": TRIGGER_UID,
            "runAsGroup": TRIGGER_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "16Mi"}}],
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {
            "name": cronjob_name(config.name),
            "namespace": config.namespace,
            "labels": labels,
            "ownerReferences": [{**owner, "controller": True, "blockOwnerDeletion": True}],
        },
        "spec": {
            "schedule": cron.kubernetes,
            "timeZone": config.spec.timezone,
            "suspend": suspended,
            "concurrencyPolicy": "Forbid",  # one trigger pod at a time; it only creates a run
            "startingDeadlineSeconds": 120,
            "successfulJobsHistoryLimit": 1,
            "failedJobsHistoryLimit": 3,
            "jobTemplate": {
                "metadata": {"labels": labels},
                "spec": {
                    "backoffLimit": 3,  # a retry of the same tick adopts the run it may have created
                    "activeDeadlineSeconds": 300,
                    "ttlSecondsAfterFinished": 3600,
                    "template": {"metadata": {"labels": labels}, "spec": pod_spec},
                },
            },
        },
    }


def build_service_account(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {
            "name": TRIGGER_ACCOUNT,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": "kubemill"},
        },
    }


def build_role_binding(namespace: str) -> dict[str, Any]:
    """Binds the namespace's trigger account to the ClusterRole `kubemill-trigger`, in this namespace only."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {
            "name": TRIGGER_ACCOUNT,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": "kubemill"},
        },
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": TRIGGER_ACCOUNT},
        "subjects": [{"kind": "ServiceAccount", "name": TRIGGER_ACCOUNT, "namespace": namespace}],
    }


# --- the pod -----------------------------------------------------------------------------------------------


def tick_of(job_name: str | None, cron: Cron, timezone: str, now: datetime) -> datetime:
    """The tick to run for: from the Job's name (`<cronjob>-<minutes>`), else the latest tick."""
    if job_name:
        _, _, minutes = job_name.rpartition("-")
        if minutes.isdigit() and len(minutes) >= 8:
            return datetime.fromtimestamp(int(minutes) * 60, UTC)
    return cron.latest_at(now, timezone)


@dataclass(frozen=True)
class Outcome:
    """What the trigger did: `created`, `exists` (the tick fired twice) or `skipped` (noOverlap)."""

    what: str
    run: str
    message: str


def trigger(kube: Any, config: TriggerConfig, tick: datetime) -> Outcome:
    """Create the tick's run (or skip it under noOverlap). `kube` is a `kubemill.k8s.client.Kube`."""
    from kubemill.errors import NotFound

    manifest = run_manifest(config.name, config.namespace, config.spec, tick, path=config.path)
    name = manifest["metadata"]["name"]
    if config.spec.no_overlap and config.last_run and config.last_run.get("name") != name:
        last = config.last_run
        try:
            previous = kube.get(
                API_VERSION, last.get("kind") or manifest["kind"], config.namespace, last["name"]
            )
        except NotFound:
            previous = None
        phase = ((previous or {}).get("status") or {}).get("phase") or "Pending"
        if previous is not None and phase not in TERMINAL_PHASES:
            return Outcome(
                "skipped",
                name,
                f"skipped tick {tick:%Y-%m-%dT%H:%M:%SZ}: {last['name']} is still {phase} (noOverlap)",
            )
    _, created = kube.create(manifest)
    kind = manifest["kind"].lower()
    if created:
        return Outcome("created", name, f"created {kind}/{name} for tick {tick:%Y-%m-%dT%H:%M:%SZ}")
    return Outcome(
        "exists", name, f"{kind}/{name} already exists: tick {tick:%Y-%m-%dT%H:%M:%SZ} fired twice"
    )


def add_arguments_trigger(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--schedule-json",
        default=None,
        help=f"the schedule as the operator hands it to the pod (default: ${CONFIG_ENV})",
    )
    parser.add_argument("--tick", help="the tick (ISO 8601 or unix seconds); default: from the Job's name")
    parser.add_argument("--kubeconfig", help="kubeconfig (default: in-cluster, then ~/.kube/config)")


def _parse_tick(text: str) -> datetime:
    if text.isdigit():
        return datetime.fromtimestamp(int(text), UTC)
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def cli_trigger(args: argparse.Namespace) -> int:
    from kubemill.errors import KubemillError
    from kubemill.k8s.client import Kube

    text = args.schedule_json or os.environ.get(CONFIG_ENV)
    if not text:
        print(f"kubemill trigger: no schedule (set {CONFIG_ENV} or --schedule-json)", file=sys.stderr)
        return 2
    try:
        config = TriggerConfig.from_json(text)
        cron = parse_cron(config.spec.schedule)
    except (ValueError, KeyError, CronError) as exc:
        print(f"kubemill trigger: bad schedule: {exc}", file=sys.stderr)
        return 2
    tick_text = args.tick or os.environ.get(TICK_ENV)
    now = datetime.now(UTC)
    tick = (
        _parse_tick(tick_text)
        if tick_text
        else tick_of(os.environ.get(JOB_NAME_ENV), cron, config.spec.timezone, now)
    )
    kube = Kube.from_kubeconfig(args.kubeconfig)
    try:
        outcome = trigger(kube, config, tick)
    except KubemillError as exc:
        print(
            f"kubemill trigger: {config.namespace}/{config.name}: {exc} (the trigger runs as "
            f"ServiceAccount {TRIGGER_ACCOUNT}, which may only create and get scriptruns and flowruns)",
            file=sys.stderr,
        )
        return 1
    finally:
        kube.close()
    print(outcome.message)
    _write_termination_message(outcome)
    return 0


def _write_termination_message(outcome: Outcome) -> None:
    try:
        with open("/dev/termination-log", "w", encoding="utf-8") as f:
            f.write(json.dumps({"outcome": outcome.what, "run": outcome.run, "message": outcome.message}))
    except OSError:
        return
