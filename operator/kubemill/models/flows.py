"""Flow (an OpenFlow document under a Windmill path) and FlowRun (one execution of it): spec and status.

`Flow.spec` is a Windmill `flow.yaml` plus `path`: the OpenFlow fields stay snake_case and any other top-level
key a Windmill export carries (`ws_error_handler_muted`, `tag`, ...) is kept rather than refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Literal

from pydantic import ConfigDict, Field, JsonValue

from kubemill import constants
from kubemill.models.common import (
    IMMUTABLE,
    Conditions,
    JsonObject,
    KubemillModel,
    KubemillResource,
    Name,
    StatusModel,
    WindmillPath,
    validations,
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
            summary=self.summary, description=self.description, value=self.value, schema_=self.schema_
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
    """Run the Flow at `flowPath` with `args`; parent and schedule fields are set by the run's creator.
    Immutable: the Flow's content is pinned in the status when the run starts (`status.flow`)."""

    model_config = ConfigDict(json_schema_extra=validations(IMMUTABLE))

    flow_path: WindmillPath
    args: JsonObject = Field(default_factory=dict)
    flow_run: Name | None = None
    step_id: str | None = None
    schedule_path: WindmillPath | None = None
    scheduled_for: datetime | None = None
    trigger_event: JsonObject | None = None
    """Set by a trigger (a webhook, an HttpTrigger): the event (`kind`, `body`, `query`, `headers`...) a
    flow's `preprocessor_module` turns into the flow input, as in Windmill; ignored by flows without one."""


StepPhase = Literal[
    "Running",  # its child run (or its body, for loops and branches) is in flight
    "Waiting",  # waiting for a retry delay or a `sleep` to pass (`wakeAt`)
    "Suspended",  # waiting for approvals
    "Succeeded",
    "Failed",
    "Skipped",
]
TERMINAL_PHASES: frozenset[str] = constants.TERMINAL_PHASES
DONE_STEP_PHASES: frozenset[str] = frozenset({"Succeeded", "Failed", "Skipped"})


class StepRecord(StatusModel):
    """What the flow engine remembers about one step (one step of one loop iteration): its phase and the
    child run doing the work, never a copy of the child's status."""

    phase: StepPhase
    attempt: Annotated[int, Field(ge=0)] = 0
    """Retry attempt of the current (or last) child run; 0 is the first try."""
    run: Name | None = None
    """The child ScriptRun/FlowRun of the current attempt."""
    result: JsonValue = None
    """The step's result when done: inline JSON while small, else `{"$ref": <child run>}`."""
    error: RunError | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    wake_at: datetime | None = None
    """Retry delay or `sleep` end (phase `Waiting`); for running steps with a timeout, the deadline."""
    branch: int | None = None
    """branchone: index of the chosen branch, -1 for the default branch."""
    count: int | None = None
    """forloopflow: number of items the iterator produced."""
    results: tuple[JsonValue, ...] = ()
    """Loops: results of the iterations started so far, by index (compact, as `result`)."""
    active: tuple[int, ...] = ()
    """Loops: iterations started but not finished (their entry in `results` is a placeholder)."""
    stopped: bool = False
    """This step's `stop_after_if` fired (or a loop was broken by one of its steps)."""
    resume: JsonValue = None
    """After an approval: the resume payload, `resume` in the next step's expressions."""
    approvers: tuple[str, ...] = ()
    """After an approval: who approved, `approvers` in the next step's expressions."""
    resumes: tuple[JsonValue, ...] = ()
    """After an approval: every approver's resume payload, in order (`resumes` in expressions)."""
    failed: tuple[int, ...] = ()
    """Loops and branchall: the iterations / branches that failed (their entry in `results` is the error)."""


class PendingApproval(StatusModel):
    """An approval a suspended step waits for: who may approve, how many, until when."""

    step: str
    approvers: tuple[str, ...] = ()
    """User names or `group:<name>`; empty means any authenticated user (Windmill's default)."""
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


MAX_SUBFLOW_DEPTH = 16
"""Subflows nest at most this deep, locally and on the cluster (a flow that calls itself would never end)."""


class FlowPin(StatusModel):
    """The Flow a run runs, fixed when it starts: a later edit of the Flow changes no run in flight."""

    hash: str
    """sha256 of the Flow's OpenFlow document (canonical JSON) as the run started."""
    generation: int | None = None
    """The Flow's `metadata.generation` then."""
    snapshot: Name
    """The ConfigMap (owned by the run, immutable) holding that document."""


class FlowRunStatus(StatusModel):
    """Where the flow run is: phase, per-step records keyed by step path (`each_item/3/charge` inside loops),
    approvals, and its result or error. The flow engine reads and writes this model as it is (it is the one
    model of a FlowRun's status); the operator adds `resultRef`, `observedGeneration` and `conditions`."""

    observed_generation: int | None = None
    phase: FlowRunPhase = "Pending"
    current_step: str | None = None
    """The step running or waiting (the innermost one; one of them when several run at once)."""
    steps: Mapping[str, StepRecord] = Field(default_factory=dict)
    pending_approvals: tuple[PendingApproval, ...] = ()
    approvals: tuple[ApprovalRecord, ...] = ()
    result: JsonValue = None
    result_ref: ResultRef | None = None
    error: RunError | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    early_result_sent: bool = False
    """The `early_return` step's result was handed out."""
    early_result: JsonValue = None
    """The `early_return` step's result: what a caller waiting for the run gets before the run ends."""
    skipped: bool = False
    """The flow was stopped by a `stop_after_if` with `skip_if_stopped`."""
    cached: bool = False
    """The flow's result came from its `cache_ttl` cache: no step ran."""
    failure_step: str | None = None
    """Set once the flow's failure module has been started (its record is under this key)."""
    user_states: Mapping[str, JsonValue] = Field(default_factory=dict)
    """Windmill's flow user states: what steps stored with `wmill.set_flow_user_state(key, value)`."""
    flow: FlowPin | None = None
    depth: Annotated[int, Field(ge=0)] = 0
    """How deep this run is in a chain of subflows (0 for a run nobody's flow started)."""
    conditions: Conditions = ()

    @property
    def done(self) -> bool:
        return self.phase in TERMINAL_PHASES

    def to_json(self) -> str:
        """Compact camelCase JSON, defaults left out: what is written to the FlowRun's status."""
        return self.model_dump_json(exclude_defaults=True, by_alias=True)

    def size_bytes(self) -> int:
        return len(self.to_json().encode())


class FlowRun(KubemillResource):
    """A FlowRun resource."""

    kind: Literal["FlowRun"]
    spec: FlowRunSpec
    status: FlowRunStatus | None = None
