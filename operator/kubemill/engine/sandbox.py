"""Expressions in worker processes that can be killed: the hard limit QuickJS's own time limit lacks.

QuickJS's interrupt handler (`QuickJSEvaluator`'s time limit) is polled by the bytecode interpreter but not
by its regular-expression engine, so a backtracking regex (`/^(a+)+$/.test("aaaa…b")`) runs for as long as
it likes inside one call. `IsolatedEvaluator` runs each evaluation in a small pool of worker processes
(`python -I kubemill/engine/expressions.py`, each a `QuickJSEvaluator`) and waits for the answer at most
`hard_limit` seconds; a worker that has not answered by then is killed (SIGKILL) and replaced, and the
expression fails with `ExpressionTimeout`. An evaluation in flight holds its worker alone, so a stuck
expression stalls nothing but its own run, and at most `workers` of them run at once.

The protocol is one JSON line each way: `{"expr", "variables", "now"}` in, `{"value"}` or `{"error",
"name"}` out. A worker costs one Python interpreter with quickjs (~15 MiB); they start on first use.
"""

from __future__ import annotations

import atexit
import json
import os
import select
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from datetime import datetime

from pydantic import JsonValue

from kubemill.engine import expressions
from kubemill.engine.expressions import (
    DEFAULT_MEMORY_LIMIT,
    DEFAULT_TIME_LIMIT,
    ExpressionError,
    ExpressionTimeout,
    QuickJSEvaluator,
)

HARD_LIMIT_MARGIN = 1.0
"""Seconds past the soft time limit before a worker is killed (starting a worker takes part of it)."""
DEFAULT_WORKERS = 4


class _Worker:
    def __init__(self, time_limit: float, memory_limit: int) -> None:
        env = {**os.environ, "KUBEMILL_SANDBOX_LIMITS": json.dumps([time_limit, memory_limit])}
        self.process = subprocess.Popen(
            [sys.executable, "-I", expressions.__file__],  # the file alone: no package imports
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        self.buffer = b""

    def ask(self, request: bytes, deadline: float) -> bytes | None:
        """The worker's answer line, or None if it gave none before `deadline` (monotonic) or died."""
        assert self.process.stdin is not None and self.process.stdout is not None
        try:
            self.process.stdin.write(request + b"\n")
            self.process.stdin.flush()
        except OSError:
            return None
        fd = self.process.stdout.fileno()
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return None
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                pipe.close()


class IsolatedEvaluator:
    """An `Evaluator` whose evaluations run in killable worker processes (see the module's docstring)."""

    def __init__(
        self,
        time_limit: float = DEFAULT_TIME_LIMIT,
        memory_limit: int = DEFAULT_MEMORY_LIMIT,
        hard_limit: float | None = None,
        workers: int = DEFAULT_WORKERS,
    ) -> None:
        self.time_limit = time_limit
        self.memory_limit = memory_limit
        self.hard_limit = hard_limit if hard_limit is not None else time_limit + HARD_LIMIT_MARGIN
        self._parser = QuickJSEvaluator(time_limit, memory_limit)  # parsing runs nothing: in process
        self._idle: list[_Worker] = []
        self._slots = threading.BoundedSemaphore(workers)
        self._lock = threading.Lock()
        atexit.register(self.close)

    def evaluate(self, expr: str, variables: Mapping[str, JsonValue], now: datetime) -> JsonValue:
        request = json.dumps({"expr": expr, "variables": dict(variables), "now": now.isoformat()}).encode()
        with self._slots:
            with self._lock:
                worker = self._idle.pop() if self._idle else None
            if worker is None:
                worker = _Worker(self.time_limit, self.memory_limit)
            answer = worker.ask(request, time.monotonic() + self.hard_limit)
            if answer is None:
                worker.kill()
                raise ExpressionTimeout(
                    expr, f"took longer than the hard limit of {self.hard_limit:g}s (its worker was killed)"
                )
            with self._lock:
                self._idle.append(worker)
        reply = json.loads(answer)
        if "error" in reply:
            kind = ExpressionTimeout if reply.get("name") == ExpressionTimeout.name else ExpressionError
            raise kind(expr, str(reply["error"]))
        value: JsonValue = reply["value"]
        return value

    def syntax_error(self, expr: str) -> str | None:
        return self._parser.syntax_error(expr)

    def close(self) -> None:
        """Stop the idle workers (those in flight stop when their evaluation ends or is killed)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for worker in idle:
            worker.kill()
