"""The table of kubemill kinds: each kind's model, names and printer columns, and parsing any manifest.

`kubemill.crdgen` turns this table into CustomResourceDefinitions; the operator and tests use `parse_manifest`
to turn a manifest (a dict, as `kubectl` or the API returns it) into the typed model of its kind.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel

from kubemill.models.common import API_VERSION
from kubemill.models.flows import Flow, FlowRun, FlowRunSpec, FlowRunStatus, FlowSpec, FlowStatus
from kubemill.models.pools import RunnerPool, RunnerPoolSpec, RunnerPoolStatus
from kubemill.models.resources import (
    DefinitionStatus,
    Resource,
    ResourceSpec,
    ResourceType,
    ResourceTypeSpec,
    Variable,
    VariableSpec,
)
from kubemill.models.schedules import Schedule, ScheduleSpec, ScheduleStatus
from kubemill.models.scripts import (
    Script,
    ScriptRun,
    ScriptRunSpec,
    ScriptRunStatus,
    ScriptSpec,
    ScriptStatus,
)
from kubemill.models.triggers import HttpTrigger, HttpTriggerSpec, HttpTriggerStatus

CATEGORY = "kubemill"
READY = '.status.conditions[?(@.type=="Ready")].status'
REASON = '.status.conditions[?(@.type=="Ready")].reason'

ColumnType = Literal["string", "integer", "number", "boolean", "date"]


@dataclass(frozen=True)
class Column:
    """One `kubectl get` column (priority 1 columns show with `-o wide`)."""

    name: str
    json_path: str
    type: ColumnType = "string"
    description: str = ""
    priority: int = 0


AGE = Column("Age", ".metadata.creationTimestamp", "date", "time since the object was created")


@dataclass(frozen=True)
class Kind:
    """A kubemill kind: its model, spec and status models, names and printer columns."""

    model: type[BaseModel]
    spec: type[BaseModel]
    status: type[BaseModel]
    plural: str
    short_names: tuple[str, ...]
    columns: tuple[Column, ...]
    selectable_fields: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """The kind's name (`Script`)."""
        return self.model.__name__

    @property
    def crd_name(self) -> str:
        """The CustomResourceDefinition's name (`scripts.kubemill.dev`)."""
        return f"{self.plural}.{API_VERSION.split('/')[0]}"


def _path_column(what: str) -> Column:
    return Column("Path", ".spec.path", description=f"the {what}'s Windmill path")


def _ready_columns(what: str) -> tuple[Column, Column]:
    return (
        Column("Ready", READY, description=f"whether the {what} is usable"),
        Column("Reason", REASON, description="why it is (not) ready", priority=1),
    )


KINDS: tuple[Kind, ...] = (
    Kind(
        Script,
        ScriptSpec,
        ScriptStatus,
        "scripts",
        ("scr",),
        (
            _path_column("script"),
            Column("Language", ".spec.language", description="python3, deno, bun, go or bash"),
            *_ready_columns("script"),
            Column("Summary", ".spec.summary", priority=1),
            AGE,
        ),
        (".spec.path", ".spec.language"),
    ),
    Kind(
        Flow,
        FlowSpec,
        FlowStatus,
        "flows",
        ("fl",),
        (_path_column("flow"), Column("Summary", ".spec.summary"), *_ready_columns("flow"), AGE),
        (".spec.path",),
    ),
    Kind(
        Schedule,
        ScheduleSpec,
        ScheduleStatus,
        "schedules",
        ("sched",),
        (
            Column("Schedule", ".spec.schedule", description="cron expression"),
            Column("Timezone", ".spec.timezone", priority=1),
            Column("Script", ".spec.scriptPath", description="the script it runs"),
            Column("Flow", ".spec.flowPath", description="the flow it runs"),
            Column("Enabled", ".spec.enabled", "boolean"),
            Column("Next Run", ".status.nextRunAt", description="when it runs next"),
            Column("Last Run", ".status.lastRun.phase", description="phase of the last run"),
            Column("Last Run At", ".status.lastRunAt", "date", priority=1),
            *_ready_columns("schedule"),
            AGE,
        ),
        (".spec.scriptPath", ".spec.flowPath"),
    ),
    Kind(
        ResourceType,
        ResourceTypeSpec,
        DefinitionStatus,
        "resourcetypes",
        ("rt",),
        (
            Column("Type", ".spec.name", description="Windmill name (metadata.name when empty)"),
            Column("Description", ".spec.description", priority=1),
            AGE,
        ),
    ),
    Kind(
        Resource,
        ResourceSpec,
        DefinitionStatus,
        "resources",
        ("res",),
        (
            _path_column("resource"),
            Column("Type", ".spec.resourceType", description="its resource type"),
            *_ready_columns("resource"),
            AGE,
        ),
        (".spec.path", ".spec.resourceType"),
    ),
    Kind(
        Variable,
        VariableSpec,
        DefinitionStatus,
        "variables",
        ("var",),
        (
            _path_column("variable"),
            Column("Secret", ".spec.isSecret", "boolean"),
            *_ready_columns("variable"),
            AGE,
        ),
        (".spec.path",),
    ),
    Kind(
        ScriptRun,
        ScriptRunSpec,
        ScriptRunStatus,
        "scriptruns",
        ("sr",),
        (
            Column("Script", ".spec.scriptPath", description="the script it runs (empty for inline code)"),
            Column("Phase", ".status.phase"),
            Column("Attempts", ".status.attempts", "integer"),
            Column("Started", ".status.startedAt", "date"),
            Column("Finished", ".status.finishedAt", "date", priority=1),
            Column("Error", ".status.error.message", priority=1),
            Column("Flow Run", ".spec.flowRun", priority=1),
            AGE,
        ),
        (".spec.scriptPath", ".status.phase", ".spec.flowRun"),
    ),
    Kind(
        FlowRun,
        FlowRunSpec,
        FlowRunStatus,
        "flowruns",
        ("fr",),
        (
            Column("Flow", ".spec.flowPath"),
            Column("Phase", ".status.phase"),
            Column("Step", ".status.currentStep", description="the step running or waiting"),
            Column("Started", ".status.startedAt", "date"),
            Column("Finished", ".status.finishedAt", "date", priority=1),
            Column("Error", ".status.error.message", priority=1),
            AGE,
        ),
        (".spec.flowPath", ".status.phase", ".spec.flowRun"),
    ),
    Kind(
        HttpTrigger,
        HttpTriggerSpec,
        HttpTriggerStatus,
        "httptriggers",
        ("ht",),
        (
            Column("Route", ".spec.route", description="POST /api/h/<namespace>/<route> on kubemill ui"),
            Column("Script", ".spec.scriptPath", description="the script it runs"),
            Column("Flow", ".spec.flowPath", description="the flow it runs"),
            Column("Signature", ".spec.signature.format", description="how callers sign requests"),
            AGE,
        ),
        (".spec.route",),
    ),
    Kind(
        RunnerPool,
        RunnerPoolSpec,
        RunnerPoolStatus,
        "runnerpools",
        ("rp",),
        (
            Column("Language", ".spec.language"),
            Column("Desired", ".spec.replicas", "integer", "workers asked for"),
            Column("Ready", ".status.readyReplicas", "integer", "workers ready to claim runs"),
            Column("Busy", ".status.busy", "integer", "workers running a claimed run"),
            Column("Queued", ".status.queued", "integer", "runs offered to the pool, not yet claimed"),
            Column("Default", ".spec.default", "boolean", "serves the language's Scripts that name no pool"),
            AGE,
        ),
        (".spec.language",),
    ),
)

KINDS_BY_NAME: Mapping[str, Kind] = {kind.name: kind for kind in KINDS}

KubemillObject = (
    Script
    | Flow
    | Schedule
    | ResourceType
    | Resource
    | Variable
    | ScriptRun
    | FlowRun
    | HttpTrigger
    | RunnerPool
)


def parse_manifest(manifest: Mapping[str, Any]) -> KubemillObject:
    """The typed model of a kubemill manifest (raises `ValueError` for other kinds or malformed manifests)."""
    kind = KINDS_BY_NAME.get(str(manifest.get("kind")))
    if kind is None or manifest.get("apiVersion") != API_VERSION:
        raise ValueError(f"not a kubemill manifest: {manifest.get('apiVersion')}/{manifest.get('kind')}")
    obj = kind.model.model_validate(manifest)
    assert isinstance(obj, KubemillObject)
    return obj
