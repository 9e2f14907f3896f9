"""What goes into and comes out of `advance()`: observations in, a `Decision` (new status + actions) out.

Actions are plain frozen data; the operator's one executor turns them into API calls (create a ScriptRun or
FlowRun, delete one, record a pending approval, requeue, finish the run). Observations are what the operator
saw since: the child runs (by name), approval decisions whose requester the admission webhook verified, and
whether someone asked to cancel the run. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Literal

from pydantic import Field, JsonValue

from kubemill.engine.state import FlowRunStatus, Frozen, RunError, RunPhase


class RawScriptSource(Frozen):
    """An inline script (a `rawscript` step) for a child ScriptRun's `spec.script`."""

    language: str
    content: str
    path: str | None = None
    lock: str | None = None


class CreateRun(Frozen):
    """Create a child run (idempotent: the name is deterministic, so 409 means adopt)."""

    kind: Literal["ScriptRun", "FlowRun"]
    name: str
    step: str
    """The step path this child runs (`validate_order`, `each/3/charge`)."""
    attempt: int = 0
    script_path: str | None = None
    flow_path: str | None = None
    script: RawScriptSource | None = None
    args: Mapping[str, JsonValue] = Field(default_factory=dict)
    timeout_seconds: float | None = None
    flow_user_states: Mapping[str, JsonValue] = Field(default_factory=dict)
    """The flow run's user states when the child starts (`wmill.get_flow_user_state`)."""
    entrypoint: Literal["main", "preprocessor"] = "main"
    """`preprocessor` for the flow's `preprocessor_module` step: Windmill runs that step's script through its
    `preprocessor` function (engine/entrypoints.py)."""


class DeleteRun(Frozen):
    """Cancel a child run (404 means it is already gone)."""

    kind: Literal["ScriptRun", "FlowRun"]
    name: str
    reason: str


class AwaitApproval(Frozen):
    """A step now waits for people; the operator publishes resume URLs and the pending approval."""

    step: str
    approvers: tuple[str, ...]
    required_events: int
    deadline: datetime | None = None


class RequeueAfter(Frozen):
    """Reconcile again after this many seconds even if nothing changes (retry delays, sleeps, timeouts)."""

    seconds: float


class EarlyReturn(Frozen):
    """The flow's `early_return` step finished: its result can be handed to a waiting caller now."""

    result: JsonValue = None


class Finish(Frozen):
    """The run is over: write its phase, result or error."""

    phase: RunPhase
    result: JsonValue = None
    error: RunError | None = None


class StoreCache(Frozen):
    """Keep a step's or a flow's result under its `cache_ttl` key until `expires_at` (engine/cache.py)."""

    key: str
    result: JsonValue = None
    expires_at: datetime


class CacheEntry(Frozen):
    """A cached result the executor still holds (`Observations.cache`)."""

    result: JsonValue = None
    expires_at: datetime


Action = CreateRun | DeleteRun | AwaitApproval | RequeueAfter | EarlyReturn | StoreCache | Finish


class Decision(Frozen):
    """The outcome of one `advance()`: the status to write (once) and the actions to carry out."""

    status: FlowRunStatus
    actions: tuple[Action, ...] = ()


ChildPhase = Literal["Pending", "Running", "Suspended", "Succeeded", "Failed", "Cancelled"]


class ChildObservation(Frozen):
    """A child run as the operator last saw it (its result resolved from `resultRef` if it had one)."""

    phase: ChildPhase
    result: JsonValue = None
    error: RunError | None = None
    flow_user_states: Mapping[str, JsonValue] | None = None
    """The flow user states the child left (`wmill.set_flow_user_state`), when it set one."""


class ApprovalEvent(Frozen):
    """An approve/reject decision on a step, by a requester the admission webhook verified."""

    step: str
    user: str
    groups: tuple[str, ...] = ()
    decision: Literal["approve", "reject"]
    payload: JsonValue = None
    comment: str | None = None
    at: datetime


class Observations(Frozen):
    """Everything the operator hands the engine about the world, for one FlowRun."""

    run_name: str
    """The FlowRun's name: child run names derive from it."""
    args: Mapping[str, JsonValue] = Field(default_factory=dict)
    """The FlowRun's `spec.args` (the flow input)."""
    children: Mapping[str, ChildObservation] = Field(default_factory=dict)
    """Every child run of this FlowRun that exists, by name (the operator lists them by label)."""
    approvals: tuple[ApprovalEvent, ...] = ()
    cancel_requested: bool = False
    may_start: bool = True
    """False while the flow's `concurrent_limit` is reached: the run stays Pending."""
    requester: str | None = None
    """Who started the run (for `self_approval_disabled`)."""
    cache: Mapping[str, CacheEntry] = Field(default_factory=dict)
    """Cached results by key (`cache_ttl`; engine/cache.py), as the executor holds them."""
    trigger_event: Mapping[str, JsonValue] | None = None
    """A run started by a trigger (a webhook, an HTTP route): the event (`kind`, `body`, `query`,
    `headers`...). A flow's `preprocessor_module` runs on it first and returns the flow input."""
