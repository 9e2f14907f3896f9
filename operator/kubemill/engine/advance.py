"""`advance(flow, status, observations, now) -> Decision`: the flow engine, a pure function.

Given the OpenFlow document, the FlowRun's status, what the operator observed and the time, it returns the
next status and the actions to carry out (`CreateRun`, `DeleteRun`, `AwaitApproval`, `RequeueAfter`,
`EarlyReturn`, `Finish`). It reads no clock, makes no API call and keeps no state of its own, so a run's
history can be replayed through it (tests/fixtures/histories/). The one impure edge is the JavaScript
evaluator, passed in as `evaluator` (deterministic for the same inputs).
"""

from __future__ import annotations

import math
from datetime import datetime

from pydantic import JsonValue

from kubemill.engine import cache
from kubemill.engine.actions import Action, Decision, EarlyReturn, Finish, Observations, RequeueAfter
from kubemill.engine.containers import sequence
from kubemill.engine.expressions import Evaluator, QuickJSEvaluator
from kubemill.engine.scope import MissingResult, Outcome, Scope, StepFailed
from kubemill.engine.state import DONE_STEP_PHASES, FlowRunStatus, RunError, RunPhase
from kubemill.engine.validation import input_problem
from kubemill.engine.walk import Walk
from kubemill.models.openflow import OpenFlow, walk_modules

WAIT_FOR_SLOT_SECONDS = 10.0
"""How soon a run held back by `concurrent_limit` asks to be looked at again."""
MISSING_CHILD_SECONDS = 5.0


def advance(
    flow: OpenFlow,
    status: FlowRunStatus,
    observations: Observations,
    now: datetime,
    evaluator: Evaluator | None = None,
) -> Decision:
    """The next status of the run and what to do about it.

    `evaluator` runs the flow's expressions. The operator and `kubemill run` each hand in the killable
    `IsolatedEvaluator` they own (a regex that backtracks for ever stops at the hard limit); without one
    (tests, benches of the engine alone) expressions run in this process's QuickJS."""
    if status.done:
        return Decision(status=status)
    if status.phase == "Pending":
        if not observations.may_start:
            return Decision(status=status, actions=(RequeueAfter(seconds=WAIT_FOR_SLOT_SECONDS),))
        # With a preprocessor to run, the input is checked once the preprocessor returned it (_walk_flow).
        problem = None if preprocesses(flow, observations) else input_problem(flow.schema_, observations.args)
        if problem is not None:
            error = RunError(name="InvalidInput", message=problem)
            return _finish(status.model_copy(update={"started_at": now}), "Failed", None, error, now, [])
        status = status.model_copy(update={"phase": "Running", "started_at": now})
        if flow.value.cache_ttl:  # Windmill: a flow with cache_ttl run again with the same input
            hit = cache.lookup(observations.cache, cache.flow_key(flow, observations.args), now)
            if hit is not None:
                return _finish(
                    status.model_copy(update={"cached": True}), "Succeeded", hit.result, None, now, []
                )
    walk = Walk(
        flow=flow,
        obs=observations,
        now=now,
        clock=status.started_at or now,
        evaluator=evaluator if evaluator is not None else QuickJSEvaluator(),
        records=dict(status.steps),
        ledger=status.approvals,
        user_states=dict(status.user_states),
    )
    if observations.cancel_requested:
        walk.cancel_children("the flow run was cancelled")
        error = RunError(name="Cancelled", message="the flow run was cancelled")
        return _finish(_with_walk(status, walk), "Cancelled", None, error, now, walk.actions)
    try:
        return _walk_flow(flow, status, walk)
    except MissingResult:
        # The operator lists every child of the run; a missing one shows up on a later reconcile (or this is
        # an operator bug, which a requeue makes visible in its logs instead of failing the user's run).
        return Decision(status=status, actions=(RequeueAfter(seconds=MISSING_CHILD_SECONDS),))


def preprocesses(flow: OpenFlow, observations: Observations) -> bool:
    """Windmill: a flow's `preprocessor_module` runs only for runs started by a trigger."""
    return flow.value.preprocessor_module is not None and observations.trigger_event is not None


def _preprocess(flow: OpenFlow, status: FlowRunStatus, walk: Walk) -> dict[str, JsonValue] | Decision:
    """Run the preprocessor step's `preprocessor` function (Windmill's entrypoint override) on
    `{"event": <the trigger's event>}`; its result (an object) is the flow input. A Decision while it runs, or
    when it failed or returned something else (the run fails)."""
    module = flow.value.preprocessor_module
    assert module is not None and walk.obs.trigger_event is not None  # noqa: PT018 - one fact
    event: dict[str, JsonValue] = {"event": dict(walk.obs.trigger_event)}
    outcome = sequence(walk, (module,), Scope(prefix="", flow_input=event, results={}, previous=event))
    if outcome.state == "running":
        status = _with_walk(status, walk)
        return Decision(status=status.model_copy(update={"phase": "Running"}), actions=tuple(walk.actions))
    result = walk.resolve(outcome.result)
    error = outcome.error or outcome.stop_error
    if error is None and not isinstance(result, dict):
        message = f"preprocessor_module must return an object (the flow input), not {json_type(result)}"
        error = RunError(name="InvalidInput", message=message, step=module.id)
    if error is None and isinstance(result, dict):
        problem = input_problem(flow.schema_, result)
        if problem is None:
            return result
        error = RunError(name="InvalidInput", message=f"the preprocessor's result: {problem}", step=module.id)
    assert error is not None
    walk.cancel_children("the flow run finished")
    return _finish(_with_walk(status, walk), "Failed", error.as_result(), error, walk.now, walk.actions)


def json_type(value: object) -> str:
    names = {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "an array"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _walk_flow(flow: OpenFlow, status: FlowRunStatus, walk: Walk) -> Decision:  # noqa: C901 - complexity debt
    now = walk.now
    args = dict(walk.obs.args)
    if preprocesses(flow, walk.obs):
        preprocessed = _preprocess(flow, status, walk)
        if isinstance(preprocessed, Decision):
            return preprocessed
        args = preprocessed
    # Windmill: the first step's `previous_result` is the flow input.
    scope = Scope(prefix="", flow_input=args, results={}, previous=args)
    if not status.steps and flow.value.skip_expr:
        try:
            skipped = walk.evaluate(flow.value.skip_expr, scope, "skip_expr") is True
        except StepFailed as failed:
            return _finish(status, "Failed", None, failed.error, now, [])
        if skipped:  # Windmill's `skip_expr`: the run succeeds at once, with no result
            return _finish(status.model_copy(update={"skipped": True}), "Succeeded", None, None, now, [])
    outcome = sequence(walk, flow.value.modules, scope)
    early = flow.value.early_return
    if early is not None and not status.early_result_sent and early in scope.results:
        early_result = walk.resolve(scope.results[early])
        walk.actions.append(EarlyReturn(result=early_result))
        status = status.model_copy(update={"early_result_sent": True, "early_result": early_result})
    if outcome.state == "failed" and flow.value.failure_module is not None:
        outcome = _run_failure_module(flow, walk, scope, outcome)
        status = status.model_copy(update={"failure_step": flow.value.failure_module.id})
    if outcome.state == "running":
        status = _with_walk(status, walk)
        phase: RunPhase = "Suspended" if walk.pending and not _children_running(walk) else "Running"
        status = status.model_copy(update={"phase": phase})
        actions = list(walk.actions)
        if walk.wakes:
            actions.append(
                RequeueAfter(seconds=max(0.0, math.ceil(min(walk.wakes).timestamp() - now.timestamp())))
            )
        return Decision(status=status, actions=tuple(actions))
    walk.cancel_children("the flow run finished")
    result = walk.resolve(outcome.result)
    if outcome.state == "stopped":
        status = status.model_copy(update={"skipped": outcome.stop_skip})
        if outcome.stop_error is not None:  # Windmill: the run fails and its result is the error
            error = outcome.stop_error
            return _finish(_with_walk(status, walk), "Failed", error.as_result(), error, now, walk.actions)
        return _finish(_with_walk(status, walk), "Succeeded", result, None, now, walk.actions)
    if outcome.state == "failed":
        return _finish(_with_walk(status, walk), "Failed", result, outcome.error, now, walk.actions)
    if flow.value.cache_ttl:
        walk.actions.append(cache.store(cache.flow_key(flow, args), result, flow.value.cache_ttl, now))
    return _finish(_with_walk(status, walk), "Succeeded", result, None, now, walk.actions)


def _run_failure_module(flow: OpenFlow, walk: Walk, scope: Scope, failed: Outcome) -> Outcome:
    """Run the flow's failure module with the error as `previous_result.error`; the flow still fails."""
    module = flow.value.failure_module
    assert module is not None and failed.error is not None  # noqa: PT018 - one fact
    error_scope = Scope(prefix="", flow_input=scope.flow_input, results=dict(scope.results))
    error_scope.previous = failed.error.as_result()
    handled = sequence(walk, (module,), error_scope)
    if handled.state == "running":
        return handled
    return Outcome("failed", handled.result if handled.state == "done" else failed.result, error=failed.error)


def _children_running(walk: Walk) -> bool:
    return any(r.phase == "Running" and r.run is not None for r in walk.records.values())


def _with_walk(status: FlowRunStatus, walk: Walk) -> FlowRunStatus:
    return status.model_copy(
        update={
            "steps": dict(walk.records),
            "approvals": walk.ledger,
            "user_states": dict(walk.user_states),
            "pending_approvals": tuple(walk.pending),
            "current_step": _current_step(walk),
        }
    )


def _current_step(walk: Walk) -> str | None:
    """The innermost step not done yet; the first in the flow's order when several run at once. (Not the
    records' order: the API server hands maps back with their keys sorted.)"""
    busy = [path for path, record in walk.records.items() if record.phase not in DONE_STEP_PHASES]
    if not busy:
        return None
    modules = walk.modules
    busy_ids = {path.rsplit("/", 1)[-1] for path in busy}

    def has_busy_inside(path: str) -> bool:
        module = modules.get(path.rsplit("/", 1)[-1])
        return module is not None and any(m.id in busy_ids for m in walk_modules(module.children()))

    order = {module.id: index for index, module in enumerate(walk.flow.value.all_modules())}
    innermost = [path for path in busy if not has_busy_inside(path)] or busy
    return min(innermost, key=lambda path: (order.get(path.rsplit("/", 1)[-1], len(order)), path))


def _finish(
    status: FlowRunStatus,
    phase: RunPhase,
    result: object,
    error: RunError | None,
    now: datetime,
    actions: list[Action],
) -> Decision:
    status = status.model_copy(
        update={
            "phase": phase,
            "result": result,
            "error": error,
            "finished_at": now,
            "pending_approvals": (),
            "current_step": None,
        }
    )
    finish = Finish(phase=phase, result=status.result, error=error)
    return Decision(status=status, actions=(*actions, finish))
