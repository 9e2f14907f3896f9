"""Drive `advance()` without a cluster: child runs are function calls, time is a clock you pass in.

`kubemill run` uses `run_flow_locally` (real time: `RequeueAfter` really sleeps). Tests use `drive` with a
fake clock, and record each cycle's (observations, now) as a run history for replay. Children run
synchronously, one at a time, so parallel branches and loops run one after another here. Approvals come
from an `approve` callback (locally nobody can annotate a FlowRun); without one, a flow that suspends fails.
"""

from __future__ import annotations

import time
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from pydantic import JsonValue

from kubemill.engine.actions import (
    ApprovalEvent,
    AwaitApproval,
    CacheEntry,
    ChildObservation,
    CreateRun,
    DeleteRun,
    EarlyReturn,
    Finish,
    Observations,
    RequeueAfter,
    StoreCache,
)
from kubemill.engine.advance import advance
from kubemill.engine.expressions import Evaluator
from kubemill.engine.sandbox import IsolatedEvaluator
from kubemill.engine.state import FlowRunStatus, RunError
from kubemill.models.openflow import OpenFlow

RunStep = Callable[[CreateRun], JsonValue | ChildObservation]
"""Runs one child (script or subflow) to completion: its result, or a ChildObservation; raising fails it."""
Approve = Callable[[AwaitApproval, datetime], list[ApprovalEvent]]


class FlowFailed(Exception):
    """The flow ended in a phase other than Succeeded."""

    def __init__(self, phase: str, error: RunError | None, result: JsonValue = None) -> None:
        self.phase = phase
        self.error = error
        self.result = result
        """The flow's result, when it has one (a failure module's output, a loop's list of results)."""
        super().__init__(f"flow {phase.lower()}: {error.message if error else 'no error recorded'}")


class Clock:
    """Real time: `now()` in UTC, `sleep(seconds)` blocks."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


@dataclass
class FakeClock:
    """Test time: `sleep` moves `now` forward instantly."""

    current: datetime = field(default_factory=lambda: datetime(2025, 1, 1, tzinfo=UTC))

    def now(self) -> datetime:
        return self.current

    def sleep(self, seconds: float) -> None:
        self.current += timedelta(seconds=seconds)


@dataclass(frozen=True)
class Cycle:
    """One call of `advance()` as it happened: enough to replay it."""

    observations: Observations
    now: datetime


@dataclass
class Run:
    """The outcome of driving a flow: final status and the history of cycles."""

    status: FlowRunStatus
    history: list[Cycle]


def _observe(run_step: RunStep, action: CreateRun) -> ChildObservation:
    try:
        outcome = run_step(action)
    except Exception as exc:  # a failing step is data, not a crash of the driver
        return ChildObservation(phase="Failed", error=RunError(name=type(exc).__name__, message=str(exc)))
    if isinstance(outcome, ChildObservation):
        return outcome
    return ChildObservation(phase="Succeeded", result=outcome)


def drive(  # noqa: C901, PLR0913 - complexity debt, docs/architecture.md
    flow: OpenFlow,
    args: dict[str, JsonValue],
    run_step: RunStep,
    *,
    clock: Clock | FakeClock,
    approve: Approve | None = None,
    run_name: str = "local",
    requester: str | None = None,
    evaluator: Evaluator | None = None,
    max_cycles: int = 1_000_000,
    cache: MutableMapping[str, CacheEntry] | None = None,
    on_early_return: Callable[[JsonValue], None] | None = None,
    trigger_event: dict[str, JsonValue] | None = None,
) -> Run:
    """Call `advance()` until the run finishes, carrying out its actions locally. `cache` holds `cache_ttl`
    results (a dict for this run only by default); `on_early_return` gets the `early_return` step's result
    as soon as that step is done (the flow goes on). `trigger_event`: the run was started by a trigger with
    this event (a `preprocessor_module` turns it into the flow input)."""
    cache = {} if cache is None else cache
    status = FlowRunStatus()
    children: dict[str, ChildObservation] = {}
    approvals: list[ApprovalEvent] = []
    history: list[Cycle] = []
    for _ in range(max_cycles):
        observations = Observations(
            run_name=run_name,
            args=args,
            children=dict(children),
            approvals=tuple(approvals),
            requester=requester,
            cache=dict(cache),
            trigger_event=trigger_event,
        )
        now = clock.now()
        history.append(Cycle(observations, now))
        decision = advance(flow, status, observations, now, evaluator)
        status, approvals = decision.status, []
        progressed = False
        requeue: float | None = None
        for action in decision.actions:
            if isinstance(action, Finish):
                return Run(status, history)
            if isinstance(action, CreateRun):
                children[action.name] = _observe(run_step, action)
                progressed = True
            elif isinstance(action, DeleteRun) and action.name in children:
                children[action.name] = ChildObservation(phase="Cancelled")
                progressed = True
            elif isinstance(action, AwaitApproval):
                if approve is None:
                    waits = RunError(name="NeedsApproval", message=f"step {action.step} waits for approval")
                    raise FlowFailed("Suspended", waits)
                approvals.extend(approve(action, now))
                progressed = progressed or bool(approvals)
            elif isinstance(action, RequeueAfter):
                requeue = action.seconds
            elif isinstance(action, StoreCache):
                cache[action.key] = CacheEntry(result=action.result, expires_at=action.expires_at)
            elif isinstance(action, EarlyReturn) and on_early_return is not None:
                on_early_return(action.result)
        if not progressed:
            if requeue is None:
                message = "the flow is waiting for approval" if status.pending_approvals else "no progress"
                raise FlowFailed(status.phase, RunError(name="Stuck", message=message))
            clock.sleep(max(requeue, 0.001))
    raise FlowFailed(status.phase, RunError(name="Stuck", message=f"not finished after {max_cycles} cycles"))


def run_flow_locally(
    flow: OpenFlow,
    args: dict[str, JsonValue],
    run_step: RunStep,
    approve: Approve | None = None,
) -> JsonValue:
    """Run `flow` on this machine with real time; its result, or `FlowFailed`."""
    evaluator = IsolatedEvaluator()
    try:
        run = drive(flow, args, run_step, clock=Clock(), approve=approve, evaluator=evaluator)
    finally:
        evaluator.close()
    if run.status.phase != "Succeeded":
        raise FlowFailed(run.status.phase, run.status.error, run.status.result)
    return run.status.result
