"""The FlowRun status the engine reads and writes: compact, frozen, and only references to child runs.

`advance()` is a function of this status (plus the flow, observations and the clock), so everything the engine
must remember between two reconciles lives here and nowhere else. It stays small on purpose: a step record
names its child run instead of copying the child's status; a step's result is kept inline only while it is
small (`INLINE_RESULT_LIMIT` bytes of JSON) and otherwise as `{"$ref": <child run name>}`, resolved from the
child run when needed; the records of a finished loop iteration are dropped and only its (compact) result is
kept on the loop's record. So a 1,000-iteration loop costs about one short JSON value per iteration.

Record keys are step paths: a top-level step's id (`validate_order`), or, inside loop iteration `i`,
`<loop path>/<i>/<id>` (`each_item/3/charge`). Step ids are unique in a flow, so branches need no segment.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue

RunPhase = Literal["Pending", "Running", "Suspended", "Succeeded", "Failed", "Cancelled"]
TERMINAL_PHASES: frozenset[str] = frozenset({"Succeeded", "Failed", "Cancelled"})

StepPhase = Literal[
    "Running",  # its child run (or its body, for loops and branches) is in flight
    "Waiting",  # waiting for a retry delay or a `sleep` to pass (`wake_at`)
    "Suspended",  # waiting for approvals
    "Succeeded",
    "Failed",
    "Skipped",
]
DONE_STEP_PHASES: frozenset[str] = frozenset({"Succeeded", "Failed", "Skipped"})

INLINE_RESULT_LIMIT = 256
"""Results whose JSON is longer than this many bytes are stored as a reference to the child run."""

REF_KEY = "$ref"


class Frozen(BaseModel):
    """Base of the status models: immutable, and strict about unknown fields (a typo is a bug, not data)."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class RunError(Frozen):
    """Why a run or a step failed, Windmill-shaped (`previous_result.error.message` / `.name`)."""

    name: str
    message: str
    stack: str | None = None
    step: str | None = None

    def as_result(self) -> dict[str, JsonValue]:
        """The error as a failed step's result: `{"error": {...}}`, as Windmill hands it on."""
        return {"error": self.model_dump(mode="json", exclude_none=True)}


class StepRecord(Frozen):
    """What the engine remembers about one step (one step of one loop iteration)."""

    phase: StepPhase
    attempt: int = 0
    """Retry attempt of the current (or last) child run; 0 is the first try."""
    run: str | None = None
    """The child ScriptRun/FlowRun of the current attempt."""
    result: JsonValue = None
    """The step's result when done: inline JSON, or `{"$ref": run}` (see module docstring)."""
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


class PendingApproval(Frozen):
    """A step waiting for people: who may approve, how many, until when."""

    step: str
    approvers: tuple[str, ...] = ()
    """User names or `group:<name>`; empty means any authenticated user (Windmill's default)."""
    required_events: int = 1
    deadline: datetime | None = None
    continue_on_timeout: bool = False
    self_approval_disabled: bool = False
    form: Mapping[str, JsonValue] | None = None


class ApprovalRecord(Frozen):
    """One entry of the approval ledger: a verified person's decision on a step."""

    step: str
    user: str
    groups: tuple[str, ...] = ()
    decision: Literal["approve", "reject"]
    at: datetime
    comment: str | None = None


class FlowRunStatus(Frozen):
    """The status of a FlowRun as the engine owns it (the operator adds Kubernetes bookkeeping around it)."""

    phase: RunPhase = "Pending"
    started_at: datetime | None = None
    finished_at: datetime | None = None
    steps: Mapping[str, StepRecord] = Field(default_factory=dict)
    pending_approvals: tuple[PendingApproval, ...] = ()
    approvals: tuple[ApprovalRecord, ...] = ()
    result: JsonValue = None
    error: RunError | None = None
    early_result_sent: bool = False
    skipped: bool = False
    """The flow was stopped by a `stop_after_if` with `skip_if_stopped`."""
    failure_step: str | None = None
    """Set once the flow's failure module has been started (its record is under this key)."""

    @property
    def done(self) -> bool:
        return self.phase in TERMINAL_PHASES

    def to_json(self) -> str:
        """Compact JSON, defaults left out: what the operator writes to the FlowRun status."""
        return self.model_dump_json(exclude_defaults=True)

    def size_bytes(self) -> int:
        return len(self.to_json().encode())


def store_result(value: JsonValue, run: str | None) -> JsonValue:
    """The compact form of a child's result: inline when small (or when there is no run to point at)."""
    if run is None:
        return value
    text = json.dumps(value, separators=(",", ":"))
    is_ref_like = isinstance(value, dict) and REF_KEY in value
    if len(text) > INLINE_RESULT_LIMIT or is_ref_like:
        return {REF_KEY: run}
    return value


def referenced_run(stored: JsonValue) -> str | None:
    """The child run a stored result points at, or None when it is inline."""
    if isinstance(stored, dict) and len(stored) == 1 and isinstance(stored.get(REF_KEY), str):
        ref = stored[REF_KEY]
        assert isinstance(ref, str)
        return ref
    return None
