"""Expressions in worker processes that can be killed: the hard limit QuickJS's own time limit lacks.

QuickJS's interrupt handler (`QuickJSEvaluator`'s time limit) is polled by the bytecode interpreter but not
by its regular-expression engine, so a backtracking regex (`/^(a+)+$/.test("aaaa…b")`) runs for as long as
it likes inside one call. `IsolatedEvaluator` runs each evaluation in a small pool of worker processes
(`python -I kubemill/engine/expressions.py`, each a `QuickJSEvaluator`) and waits for the answer at most
`hard_limit` seconds of the worker's CPU time (so a loaded machine does not time out trivial expressions);
a worker that has used more is killed (SIGKILL) and replaced, and the expression fails with
`ExpressionTimeout`. Starting a worker is not counted. An evaluation in flight holds its worker alone, so a
stuck expression stalls nothing but its own run, and at most `workers` of them run at once.

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
"""CPU seconds past the soft time limit before a worker is killed."""
WALL_FACTOR = 20
"""A worker that has not answered after this many times the hard limit (wall clock) is killed whatever
its CPU time says (where /proc cannot be read, the hard limit itself is the wall-clock bound)."""
START_SECONDS = 60.0
POLL_SECONDS = 0.05
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
DEFAULT_WORKERS = 4


class _Worker:
    def __init__(self, time_limit: float, memory_limit: int) -> None:
        env = {**os.environ, "KUBEMILL_SANDBOX_LIMITS": json.dumps([time_limit, memory_limit])}
        self.process = subprocess.Popen(  # noqa: S603 - a fixed argv, no shell
            [sys.executable, "-I", expressions.__file__],  # the file alone: no package imports
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        self.buffer = b""

    def ready(self, timeout: float) -> bool:
        """Wait for the worker's first line (it has imported quickjs): its start is not the expression's."""
        return self._line(time.monotonic() + timeout, None) == b"ready"

    def ask(self, request: bytes, cpu_limit: float, wall_limit: float) -> bytes | None:
        """The worker's answer line, or None if it used more than `cpu_limit` seconds of CPU on it, took
        longer than `wall_limit`, or died. CPU time, not the clock: a loaded machine slows every worker
        down, and only a worker that computes for that long is stuck."""
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(request + b"\n")
            self.process.stdin.flush()
        except OSError:
            return None
        return self._line(time.monotonic() + wall_limit, (self._cpu(), cpu_limit))

    def _line(self, deadline: float, cpu: tuple[float | None, float] | None) -> bytes | None:
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            if not select.select([fd], [], [], min(left, POLL_SECONDS))[0]:
                if cpu is not None and cpu[0] is not None and (self._cpu() or 0.0) - cpu[0] > cpu[1]:
                    return None
                continue
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return None
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line

    def _cpu(self) -> float | None:
        """The worker's CPU seconds so far (Linux /proc), or None where it cannot be read."""
        try:
            with open(f"/proc/{self.process.pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            return None
        return (int(fields[11]) + int(fields[12])) / _TICKS

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
                if not worker.ready(START_SECONDS):
                    worker.kill()
                    raise ExpressionError(expr, "the expression sandbox could not start a worker")
            wall = self.hard_limit * WALL_FACTOR if worker._cpu() is not None else self.hard_limit
            answer = worker.ask(request, self.hard_limit, wall)
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
