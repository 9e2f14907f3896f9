"""Measure candidate embedded JavaScript engines for flow expressions (the figures in docs/flows.md).

Not part of the test suite: the candidates are not project dependencies, so run it in a scratch virtualenv:

    python3 -m venv /tmp/jsbench && /tmp/jsbench/bin/pip install mini-racer dukpy quickjs
    /tmp/jsbench/bin/python tests/bench/measure_js_engines.py

For each engine it reports: import + first-context time, per-evaluation latency of a typical transform
(`results.validate_order.total > 5000` over a ~2 KiB context, fresh global state each time), whether a
`while(true){}` is stopped by a 200 ms limit (and how long it took), and whether a runaway allocation is
stopped by a 32 MiB memory limit without killing the process.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable

CONTEXT = {
    "flow_input": {
        "order": {"customer_email": "a@example.com", "items": [{"sku": f"s{i}"} for i in range(40)]}
    },
    "results": {"validate_order": {"order_id": "o-1", "total": 7200, "items": ["a", "b"]}},
    "previous_result": {"order_id": "o-1", "total": 7200},
}
EXPR = "results.validate_order.total > 5000"
LOOP = "while(true){}"
ALLOC = "let a=[]; while(true){ a.push(new Array(100000).fill(1.5)); }"


def program(expr: str) -> str:
    ctx = json.dumps(CONTEXT)
    names = "const flow_input=c.flow_input, results=c.results, previous_result=c.previous_result;"
    return f"(function(){{ const c = {ctx}; {names} return JSON.stringify(({expr})); }})()"


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    try:
        out: object = fn()
    except BaseException as exc:  # the point is to see what each engine raises
        out = f"{type(exc).__name__}: {str(exc)[:80]}"
    return time.perf_counter() - start, out


def latency(run: Callable[[], object], n: int = 300) -> str:
    samples = []
    for _ in range(n):
        t, _ = timed(run)
        samples.append(t * 1e6)
    samples.sort()
    return f"median {statistics.median(samples):.0f} us, p99 {samples[int(n * 0.99) - 1]:.0f} us"


def measure_mini_racer() -> None:
    t, _ = timed(lambda: __import__("py_mini_racer"))
    from py_mini_racer import MiniRacer

    t2, _ = timed(MiniRacer)
    print(f"mini-racer: import {t * 1e3:.1f} ms, first context {t2 * 1e3:.1f} ms")
    t3, _ = timed(lambda: MiniRacer().close())
    print(f"  next context {t3 * 1e3:.1f} ms")
    ctx = MiniRacer()
    print(
        "  eval (shared context):",
        latency(lambda: ctx.eval(program(EXPR), timeout_sec=1, max_memory=32 << 20)),
    )

    def fresh() -> object:
        c = MiniRacer()
        try:
            return c.eval(program(EXPR), timeout_sec=1)
        finally:
            c.close()

    print("  eval (fresh context):", latency(fresh, 50))
    t, out = timed(lambda: MiniRacer().eval(LOOP, timeout_sec=0.2))
    print(f"  while(true) with 200 ms limit: {t * 1e3:.0f} ms -> {out}")
    c = MiniRacer()
    t, out = timed(lambda: c.eval(ALLOC, timeout_sec=5, max_memory=32 << 20))
    print(f"  runaway allocation with 32 MiB limit: {t * 1e3:.0f} ms -> {out}")
    print("  process alive after limits:", ctx.eval("1+1") == 2)


def measure_quickjs() -> None:
    t, _ = timed(lambda: __import__("quickjs"))
    import quickjs

    t2, _ = timed(quickjs.Context)
    print(f"quickjs: import {t * 1e3:.1f} ms, first context {t2 * 1e3:.1f} ms")

    def fresh() -> object:
        c = quickjs.Context()
        c.set_time_limit(1)
        c.set_memory_limit(32 << 20)
        return c.eval(program(EXPR))

    print("  eval (fresh context):", latency(fresh))
    shared = quickjs.Context()
    print("  eval (shared context):", latency(lambda: shared.eval(program(EXPR))))

    def loop() -> object:
        c = quickjs.Context()
        c.set_time_limit(0.2)
        return c.eval(LOOP)

    t, out = timed(loop)
    print(f"  while(true) with 200 ms limit: {t * 1e3:.0f} ms -> {out}")

    def alloc() -> object:
        c = quickjs.Context()
        c.set_time_limit(5)
        c.set_memory_limit(32 << 20)
        return c.eval(ALLOC)

    t, out = timed(alloc)
    print(f"  runaway allocation with 32 MiB limit: {t * 1e3:.0f} ms -> {out}")
    print("  process alive after limits:", fresh() == "true")


def measure_dukpy() -> None:
    t, _ = timed(lambda: __import__("dukpy"))
    import dukpy

    print(f"dukpy: import {t * 1e3:.1f} ms (a new heap per evaljs call)")
    print("  eval (fresh heap):", latency(lambda: dukpy.evaljs(program(EXPR))))
    print("  time limit: evaljs has no timeout or memory-limit parameter; while(true) would hang the thread")


if __name__ == "__main__":
    which = sys.argv[1:] or ["mini_racer", "quickjs", "dukpy"]
    for name in which:
        globals()[f"measure_{name}"]()
