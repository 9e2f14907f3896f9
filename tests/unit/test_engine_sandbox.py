"""The killable sandbox: a regex that backtracks for ever stops at the hard limit, and nothing else waits."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from kubemill.engine import ExpressionError, ExpressionTimeout, IsolatedEvaluator, QuickJSEvaluator

NOW = datetime(2026, 1, 1, tzinfo=UTC)
CATASTROPHIC = '/^(a+)+$/.test("a".repeat(40) + "b")'


@pytest.fixture
def sandbox() -> Iterator[IsolatedEvaluator]:
    evaluator = IsolatedEvaluator(time_limit=0.25, hard_limit=1.5, workers=2)
    yield evaluator
    evaluator.close()


def test_values_errors_and_the_soft_limit_come_back_as_in_process(sandbox: IsolatedEvaluator) -> None:
    direct = QuickJSEvaluator(time_limit=0.25)
    args = {"flow_input": {"n": 3}, "results": {"a": [1, 2]}}
    exprs = ("flow_input.n * 2", "results.a.map(x => x + 1)", "new Date().toISOString()", "Math.random()")
    for expr in exprs:
        assert sandbox.evaluate(expr, args, NOW) == direct.evaluate(expr, args, NOW), expr
    with pytest.raises(ExpressionError, match="ReferenceError"):
        sandbox.evaluate("nope.x", {}, NOW)
    with pytest.raises(ExpressionTimeout, match="time limit"):
        sandbox.evaluate("while (true) {}", {}, NOW)
    assert sandbox.syntax_error("1 +") is not None and sandbox.syntax_error("1 + 1") is None


def test_a_backtracking_regex_is_killed_at_the_hard_limit_and_the_worker_replaced(
    sandbox: IsolatedEvaluator,
) -> None:
    started = time.monotonic()
    with pytest.raises(ExpressionTimeout, match="hard limit"):
        sandbox.evaluate(CATASTROPHIC, {}, NOW)
    assert time.monotonic() - started < 10
    assert sandbox.evaluate("40 + 2", {}, NOW) == 42  # a fresh worker answers


def test_a_stuck_expression_stalls_only_its_own_caller(sandbox: IsolatedEvaluator) -> None:
    errors: list[BaseException] = []

    def stuck() -> None:
        try:
            sandbox.evaluate(CATASTROPHIC, {}, NOW)
        except ExpressionTimeout as exc:
            errors.append(exc)

    thread = threading.Thread(target=stuck)
    thread.start()
    answered = [sandbox.evaluate(f"{i} * 2", {}, NOW) for i in range(20)]  # the other worker
    assert answered == [i * 2 for i in range(20)]
    assert thread.is_alive(), "the stuck expression should still be running while the others answered"
    thread.join(timeout=30)
    assert len(errors) == 1
