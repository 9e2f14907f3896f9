"""What the steps of one `advance()` pass share: where a step stands (`Outcome`), what its expressions see
(`Scope`), and how expressions are evaluated against the run's results (`Expressions`, which `Walk` extends).
A step whose expression or input fails unwinds with `StepFailed`; a stored result that points at a child
run the operator did not list raises `MissingResult`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from pydantic import JsonValue

from kubemill.engine.actions import Observations
from kubemill.engine.expressions import Evaluator, ExpressionError
from kubemill.engine.state import RunError, referenced_run
from kubemill.models.openflow import OpenFlow
from kubemill.models.openflow_parts import InputTransform, StaticTransform

OutcomeState = Literal["done", "running", "failed", "stopped"]


class StepFailed(Exception):
    """Unwinds a step whose expression or input failed (never retried: expressions are deterministic)."""

    def __init__(self, error: RunError) -> None:
        super().__init__(error.message)
        self.error = error


class MissingResult(Exception):
    """A stored result points at a child run the operator did not list (it must list every child)."""


@dataclass(frozen=True)
class Outcome:
    """Where a step or a sequence of steps stands after this pass."""

    state: OutcomeState
    result: JsonValue = None
    """Stored form (may hold `$ref`s)."""
    error: RunError | None = None
    skipped: bool = False
    """skip_if fired: the result is null and `previous_result` passes over this step."""
    stop_skip: bool = False
    stop_error: RunError | None = None


RUNNING = Outcome("running")


@dataclass
class Scope:
    """What expressions of the steps in one sequence see."""

    prefix: str
    flow_input: dict[str, JsonValue]
    results: dict[str, JsonValue]
    previous: JsonValue = None
    resume: JsonValue = None
    approvers: tuple[str, ...] = ()
    resumes: tuple[JsonValue, ...] = ()

    def path(self, step_id: str) -> str:
        return f"{self.prefix}{step_id}"


@dataclass
class Expressions:
    """Expressions of one pass: the flow, what the operator observed, and the clock `Date` reads."""

    flow: OpenFlow
    obs: Observations
    clock: datetime
    """What `Date` is in expressions: the run's start, so re-evaluation gives the same value."""
    evaluator: Evaluator

    def resolve(self, stored: JsonValue) -> JsonValue:
        """A stored result as its value: `$ref`s are read from the child runs the operator listed."""
        run = referenced_run(stored)
        if run is not None:
            child = self.obs.children.get(run)
            if child is None:
                raise MissingResult(run)
            return child.result
        if isinstance(stored, list):
            return [self.resolve(item) for item in stored]
        return stored

    def variables(self, expr: str, scope: Scope, extra: dict[str, JsonValue]) -> dict[str, JsonValue]:
        """What an expression sees. `result` is Windmill's other name of `previous_result` (a condition's
        own `result`, passed in `extra`, takes its place); `resumes` holds every payload of the last
        approval; `flow_env` is the flow's own values."""
        wanted = any(name in expr for name in ("previous_result", "error", "result"))
        previous = self.resolve(scope.previous) if wanted else None
        variables: dict[str, JsonValue] = {
            "flow_input": scope.flow_input,
            "results": {k: self.resolve(v) for k, v in scope.results.items() if k in expr},
            "previous_result": previous,
            "result": previous,
            "resume": scope.resume,
            "resumes": list(scope.resumes),
            "approvers": list(scope.approvers),
            "error": previous.get("error") if isinstance(previous, dict) else None,
            "flow_env": dict(self.flow.value.flow_env or {}),
        }
        variables.update(extra)
        return variables

    def evaluate(self, expr: str, scope: Scope, step: str, **extra: JsonValue) -> JsonValue:
        try:
            return self.evaluator.evaluate(expr, self.variables(expr, scope, extra), self.clock)
        except ExpressionError as exc:
            raise StepFailed(RunError(name=exc.name, message=str(exc), step=step)) from None

    def transform(self, transform: InputTransform, scope: Scope, step: str) -> JsonValue:
        if isinstance(transform, StaticTransform):
            return transform.value
        return self.evaluate(transform.expr, scope, step)

    def number(self, transform: InputTransform | None, scope: Scope, step: str, what: str) -> float | None:
        if transform is None:
            return None
        value = self.transform(transform, scope, step)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise StepFailed(RunError(name="InvalidValue", message=f"{what} must be a number, got {value!r}"))
        return float(value)
