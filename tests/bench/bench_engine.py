"""Bench: what one advance() costs per step transition on a 40-step sequential flow (median, p99).

A plain script (`make bench` runs it): each step is a script with one JavaScript input transform
(`previous_result.n + 1`) and one static input, so every transition evaluates one expression in the QuickJS
sandbox (the killable `IsolatedEvaluator`, as the operator and `kubemill run` use it). Each run makes 41
advance() calls (one per child run finishing, plus the first).

    .venv/bin/python tests/bench/bench_engine.py [runs]
"""

from __future__ import annotations

import statistics
import sys
import time
from datetime import UTC, datetime, timedelta

from kubemill.engine import ChildObservation, CreateRun, Evaluator, FlowRunStatus, Observations, advance
from kubemill.engine.sandbox import IsolatedEvaluator
from kubemill.models.openflow import OpenFlow

STEPS = 40


def forty_step_flow() -> OpenFlow:
    modules = [
        {
            "id": f"s{i}",
            "value": {
                "type": "script",
                "path": "f/bench/step",
                "input_transforms": {
                    "n": {"type": "javascript", "expr": "previous_result.n + 1" if i else "flow_input.start"},
                    "label": {"type": "static", "value": f"step {i}"},
                },
            },
        }
        for i in range(STEPS)
    ]
    return OpenFlow.model_validate({"value": {"modules": modules}})


def one_run(flow: OpenFlow, samples: list[float], evaluator: Evaluator) -> None:
    status, children, now = FlowRunStatus(), {}, datetime(2025, 1, 1, tzinfo=UTC)
    while not status.done:
        observations = Observations(run_name="bench", args={"start": 0}, children=dict(children))
        start = time.perf_counter()
        decision = advance(flow, status, observations, now, evaluator)
        samples.append(time.perf_counter() - start)
        status = decision.status
        for action in decision.actions:
            if isinstance(action, CreateRun):
                children[action.name] = ChildObservation(phase="Succeeded", result={"n": action.args["n"]})
        now += timedelta(seconds=1)
    assert status.result == {"n": STEPS - 1}, status.result


def main() -> int:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    flow = forty_step_flow()
    evaluator = IsolatedEvaluator()  # what the operator and `kubemill run` use
    one_run(flow, [], evaluator)  # warm-up
    samples: list[float] = []
    for _ in range(runs):
        one_run(flow, samples, evaluator)
    samples.sort()
    ms = [s * 1000 for s in samples]
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    print(f"advance() on a {STEPS}-step sequential flow: {len(ms)} transitions over {runs} runs")
    print(f"  median {statistics.median(ms):.2f} ms, p99 {p99:.2f} ms, max {ms[-1]:.2f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
