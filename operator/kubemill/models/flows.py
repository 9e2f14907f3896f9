"""Flow (an OpenFlow document under a Windmill path) and FlowRun (one execution of it): spec and status.

`Flow.spec` is a Windmill `flow.yaml` plus `path`: the OpenFlow fields stay snake_case and any other top-level
key a Windmill export carries (`ws_error_handler_muted`, `tag`, ...) is kept rather than refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Literal

from pydantic import ConfigDict, Field, JsonValue

from kubemill.models.common import (
    Conditions,
    JsonObject,
    KubemillModel,
    KubemillResource,
    Name,
    StatusModel,
    WindmillPath,
)
from kubemill.models.openflow import FlowValue, OpenFlow
from kubemill.models.scripts import ResultRef, RunError


class FlowSpec(KubemillModel):
    """A flow: its Windmill path and the OpenFlow document (`summary`, `description`, `value`, `schema`)."""

    model_config = ConfigDict(extra="allow")

    path: WindmillPath
    summary: str = ""
    description: str | None = None
    value: FlowValue
    schema_: JsonObject | None = Field(default=None, alias="schema")

    def openflow(self) -> OpenFlow:
        """The OpenFlow document alone (what `flow.yaml` would hold)."""
        return OpenFlow(
            summary=self.summary, description=self.description, value=self.value, schema=self.schema_
        )


class FlowStatus(StatusModel):
    """Whether the flow is runnable, and the scripts and flows it references."""

    observed_generation: int | None = None
    scripts: tuple[str, ...] = ()
    flows: tuple[str, ...] = ()
    conditions: Conditions = ()


class Flow(KubemillResource):
    """A Flow resource."""

    kind: Literal["Flow"]
    spec: FlowSpec
    status: FlowStatus | None = None


# --- runs ------------------------------------------------------------------------------------------------

FlowRunPhase = Literal["Pending", "Running", "Suspended", "Succeeded", "Failed", "Cancelled"]


class FlowRunSpec(KubemillModel):
    """Run the Flow at `flowPath` with `args`; parent and schedule fields are set by the run's creator."""

    flow_path: WindmillPath
    args: JsonObject = Field(default_factory=dict)
    flow_run: Name | None = None
    step_id: str | None = None
    schedule_path: WindmillPath | None = None
    scheduled_for: datetime | None = None


class StepRecord(StatusModel):
    """What the engine remembers about one step: its phase and the child run doing the work (never a copy
    of the child's status). Mirrors `kubemill.engine.state.StepRecord`; unknown fields are kept."""

    model_config = ConfigDict(extra="allow")

    phase: str
    attempt: Annotated[int, Field(ge=0)] = 0
    run: Name | None = None
    result: JsonValue = None
    error: RunError | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    wake_at: datetime | None = None
    branch: int | None = None
    count: int | None = None


class PendingApproval(StatusModel):
    """An approval a suspended step waits for: who may approve, how many, until when."""

    step: str
    approvers: tuple[str, ...] = ()
    required_events: Annotated[int, Field(ge=1)] = 1
    deadline: datetime | None = None
    continue_on_timeout: bool = False
    self_approval_disabled: bool = False
    form: JsonObject | None = None


class ApprovalRecord(StatusModel):
    """One entry of the approval ledger, with the identity the admission webhook verified."""

    step: str
    user: str
    groups: tuple[str, ...] = ()
    decision: Literal["approve", "reject"]
    at: datetime
    comment: str | None = None


class FlowRunStatus(StatusModel):
    """Where the flow run is: phase, per-step records keyed by step path (`each_item/3/charge` inside loops),
    approvals, and its result or error. The engine's own bookkeeping fields are kept as they are."""

    model_config = ConfigDict(extra="allow")

    observed_generation: int | None = None
    phase: FlowRunPhase = "Pending"
    current_step: str | None = None
    steps: Mapping[str, StepRecord] = Field(default_factory=dict)
    pending_approvals: tuple[PendingApproval, ...] = ()
    approvals: tuple[ApprovalRecord, ...] = ()
    result: JsonValue = None
    result_ref: ResultRef | None = None
    error: RunError | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    conditions: Conditions = ()


class FlowRun(KubemillResource):
    """A FlowRun resource."""

    kind: Literal["FlowRun"]
    spec: FlowRunSpec
    status: FlowRunStatus | None = None
