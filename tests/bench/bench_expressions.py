"""Bench: one expression evaluation in process (QuickJSEvaluator) and in the killable sandbox
(IsolatedEvaluator, the default since the sandbox must stop a backtracking regex), side by side.

A plain script (`make bench` runs it): 5 runs of 300 evaluations of `results.validate_order.total > 5000`
over a ~2 KiB context each; prints the median of the runs' medians and p99s, their ratio, and what starting
a sandbox worker costs (the first evaluation).

    .venv/bin/python tests/bench/bench_expressions.py
"""

from __future__ import annotations

import statistics
import time
from datetime import UTC, datetime

from kubemill.engine import Evaluator, IsolatedEvaluator, QuickJSEvaluator

CONTEXT = {"results": {"validate_order": {"total": 6000, "items": list(range(300))}}}
EXPR = "results.validate_order.total > 5000"
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def one_run(evaluator: Evaluator, samples: int = 300) -> tuple[float, float]:
    times = []
    for _ in range(samples):
        started = time.perf_counter()
        evaluator.evaluate(EXPR, CONTEXT, NOW)
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.99) - 1]


def main() -> None:
    starts = []
    for _ in range(5):
        fresh = IsolatedEvaluator()
        started = time.perf_counter()
        fresh.evaluate("1", {}, NOW)
        starts.append((time.perf_counter() - started) * 1000)
        fresh.close()
    figures = {}
    for name, evaluator in (("in-process", QuickJSEvaluator()), ("sandbox", IsolatedEvaluator())):
        evaluator.evaluate("1", {}, NOW)
        runs = [one_run(evaluator) for _ in range(5)]
        figures[name] = (statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs))
        print(f"{name:>10}: median {figures[name][0]:.3f} ms, p99 {figures[name][1]:.3f} ms (5 runs)")
    ratio = figures["sandbox"][0] / figures["in-process"][0]
    start = statistics.median(starts)
    print(f"sandbox / in-process: {ratio:.2f}x; a sandbox worker starts in {start:.1f} ms")


if __name__ == "__main__":
    main()
