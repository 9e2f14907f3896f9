"""JavaScript expressions (input transforms, branch predicates, skip/stop conditions) in a bounded sandbox.

This is the engine's one impure edge, so it sits behind the `Evaluator` protocol that `advance()` takes as a
parameter. The real evaluator, `QuickJSEvaluator`, runs each expression in a fresh QuickJS context (chosen by
measurement, see docs/flows.md) with a time limit and a memory limit: `while(true){}` fails with
`ExpressionTimeout` after `time_limit` seconds instead of hanging the operator. Expressions stay deterministic
functions of their inputs: the context is rebuilt from JSON every time, `Date` is pinned to the `now` the
engine passes (the run's start), and `Math.random` is a fixed-seed generator.

Windmill's form is kept: an expression without `return ` is an expression (`results.a.total > 5000`, or an
object literal over several lines); one with `return ` is a function body.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

import quickjs  # type: ignore[import-untyped]

if TYPE_CHECKING:  # not at run time: `kubemill.engine.sandbox` starts this file as a light worker
    from pydantic import JsonValue

DEFAULT_TIME_LIMIT = 1.0
DEFAULT_MEMORY_LIMIT = 32 * 1024 * 1024
_STACK_LIMIT = 256 * 1024


class ExpressionError(Exception):
    """An expression failed: it does not parse, threw, or its result is not JSON."""

    name = "ExpressionError"

    def __init__(self, expr: str, message: str) -> None:
        self.expr = expr
        self.message = message
        super().__init__(f"expression `{_short(expr)}`: {message}")


class ExpressionTimeout(ExpressionError):
    """An expression ran longer than the evaluator's time limit."""

    name = "ExpressionTimeout"


class Evaluator(Protocol):
    """Evaluates JavaScript expressions over named JSON values."""

    def evaluate(self, expr: str, variables: Mapping[str, JsonValue], now: datetime) -> JsonValue:
        """The expression's value as JSON (`undefined` becomes null); raises `ExpressionError`."""
        ...

    def syntax_error(self, expr: str) -> str | None:
        """Why `expr` does not parse, or None when it does (nothing is run)."""
        ...


def _short(expr: str) -> str:
    flat = " ".join(expr.split())
    return flat if len(flat) <= 80 else flat[:77] + "..."


def function_bodies(expr: str) -> tuple[str, ...]:
    """How `expr` may be read, in order: Windmill's rule (`return ` present means a function body, otherwise
    an expression to return), then, for statements without `return` (`while (x) {...}`), a body whose value
    is undefined."""
    if "return " in expr:
        return (expr,)
    return (f"return (\n{expr}\n);", expr)


_PRELUDE = """
const __seed = {seed};
Math.random = (function () {{
  let s = __seed >>> 0;
  return function () {{ s = (s * 1664525 + 1013904223) >>> 0; return s / 4294967296; }};
}})();
Date = (function (RealDate) {{
  const fixed = {now_ms};
  function PinnedDate(...args) {{
    if (!new.target) return new RealDate(fixed).toString();
    return args.length === 0 ? new RealDate(fixed) : new RealDate(...args);
  }}
  PinnedDate.prototype = RealDate.prototype;
  PinnedDate.now = () => fixed;
  PinnedDate.parse = RealDate.parse;
  PinnedDate.UTC = RealDate.UTC;
  return PinnedDate;
}})(Date);
"""


class QuickJSEvaluator:
    """The real evaluator: a fresh QuickJS context per expression, bounded in time and memory."""

    def __init__(
        self, time_limit: float = DEFAULT_TIME_LIMIT, memory_limit: int = DEFAULT_MEMORY_LIMIT
    ) -> None:
        self.time_limit = time_limit
        self.memory_limit = memory_limit

    def _context(self) -> quickjs.Context:
        context = quickjs.Context()
        context.set_time_limit(self.time_limit)
        context.set_memory_limit(self.memory_limit)
        context.set_max_stack_size(_STACK_LIMIT)
        return context

    def evaluate(self, expr: str, variables: Mapping[str, JsonValue], now: datetime) -> JsonValue:
        declarations = "".join(
            f"const {name} = {json.dumps(value, ensure_ascii=True)};\n" for name, value in variables.items()
        )
        prelude = _PRELUDE.format(seed=len(expr) * 2654435761 % 2**32, now_ms=int(now.timestamp() * 1000))
        bodies = function_bodies(expr)
        first_error: ExpressionError | None = None
        for index, body in enumerate(bodies):
            program = (
                f"{prelude}(function () {{\n{declarations}"
                f"const __value = (function () {{\n{body}\n}})();\n"
                "return JSON.stringify(__value === undefined ? null : __value);\n})()"
            )
            try:
                text = self._context().eval(program)
                break
            except quickjs.JSException as exc:
                error = _classify(expr, str(exc))
                is_syntax = error.message.startswith("SyntaxError")
                first_error = first_error or error
                if not (is_syntax and index + 1 < len(bodies)):
                    raise (first_error if is_syntax else error) from None
        if not isinstance(text, str):
            raise ExpressionError(expr, "the value cannot be represented as JSON")
        value: JsonValue = json.loads(text)
        return value

    def syntax_error(self, expr: str) -> str | None:
        problem = None
        for body in function_bodies(expr):
            try:
                self._context().eval(f"(function () {{\n{body}\n}})")
                return None
            except quickjs.JSException as exc:
                problem = problem or _first_line(str(exc))
        return problem


def _first_line(message: str) -> str:
    return message.strip().splitlines()[0] if message.strip() else "error"


def _classify(expr: str, message: str) -> ExpressionError:
    first = _first_line(message)
    if "interrupted" in first:
        return ExpressionTimeout(expr, "took longer than the time limit (stopped)")
    if "out of memory" in first:
        return ExpressionError(expr, "used more memory than the limit (stopped)")
    return ExpressionError(expr, first)


def serve() -> None:
    """A sandbox worker (`kubemill.engine.sandbox`): one JSON request per line in, one answer per line out.
    Started as this file (not the package), so it imports nothing but quickjs."""
    time_limit, memory_limit = json.loads(os.environ.get("KUBEMILL_SANDBOX_LIMITS", "[1.0, 33554432]"))
    evaluator = QuickJSEvaluator(float(time_limit), int(memory_limit))
    for line in sys.stdin.buffer:
        request = json.loads(line)
        try:
            value = evaluator.evaluate(
                request["expr"], request["variables"], datetime.fromisoformat(request["now"])
            )
            reply: dict[str, Any] = {"value": value}
        except ExpressionError as exc:
            reply = {"error": exc.message, "name": exc.name}
        except Exception as exc:  # the worker must answer, or its caller reads a hang
            reply = {"error": f"{type(exc).__name__}: {exc}", "name": ExpressionError.name}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    serve()
