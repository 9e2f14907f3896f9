"""Bench: a flow's step-transition overhead on the test control plane, and the same flow with `kubemill run`.

A 40-step sequential flow of trivial Python steps. On Kubernetes (the test control plane, the operator
running under its own ServiceAccount as in the integration tests) a watch on the run's ScriptRuns records
when each child reaches `Succeeded` and when the next child is created, both as this process receives the
events, so the watch's own delay cancels out: transition = next child ADDED - previous child Succeeded.
Targets: p50 < 50 ms, p99 < 250 ms. Locally, the same flow's wall time through `kubemill run` (target
<= 1.0 s, its steps forked from a warm interpreter).

    .venv/bin/python tests/bench/bench_flows.py
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

STEPS = 40
LOCAL_RUNS = 5
STEP_CODE = "def main(n: int = 0):\n    return n + 1\n"


def modules() -> list[dict[str, Any]]:
    return [
        {
            "id": f"s{i}",
            "value": {
                "type": "script",
                "path": "f/bench/step",
                "input_transforms": {
                    "n": {"type": "javascript", "expr": "previous_result" if i else "0"},
                },
            },
        }
        for i in range(STEPS)
    ]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def bench_local() -> float:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "wmill.yaml").write_text("{}\n")
        (root / "f/bench").mkdir(parents=True)
        (root / "f/bench/step.py").write_text(STEP_CODE)
        (root / "f/bench/forty.flow").mkdir()
        (root / "f/bench/forty.flow/flow.yaml").write_text(json.dumps({"value": {"modules": modules()}}))
        command = [str(REPO / ".venv/bin/kubemill"), "run", "f/bench/forty", "-w", str(root)]
        subprocess.run(command, capture_output=True, check=True, timeout=120)  # warm caches
        walls = []
        for _ in range(LOCAL_RUNS):
            started = time.perf_counter()
            done = subprocess.run(command, capture_output=True, text=True, check=True, timeout=120)
            walls.append(time.perf_counter() - started)
            assert json.loads(done.stdout) == STEPS, done.stdout
        return statistics.median(walls)


def bench_cluster(runs: int) -> tuple[list[float], list[float]]:
    import kubernetes

    from tests.conftest import Cluster, controlplane
    from tests.operator_harness import Operator, install_operator_identity

    transitions: list[float] = []
    walls: list[float] = []
    with controlplane.running() as plane:
        cluster = Cluster(plane)
        workdir = Path(tempfile.mkdtemp(prefix="kubemill-bench-"))
        operator = Operator(cluster, install_operator_identity(cluster, workdir), workdir)
        operator.start()
        try:
            namespace = "bench"
            cluster.kubectl("create", "namespace", namespace)
            script = {
                "apiVersion": "kubemill.dev/v1alpha1",
                "kind": "Script",
                "metadata": {"name": "step", "namespace": namespace},
                "spec": {"path": "f/bench/step", "language": "python3", "content": STEP_CODE},
            }
            flow = {
                "apiVersion": "kubemill.dev/v1alpha1",
                "kind": "Flow",
                "metadata": {"name": "forty", "namespace": namespace},
                "spec": {"path": "f/bench/forty", "value": {"modules": modules()}},
            }
            cluster.apply(script)
            cluster.apply(flow)
            api = kubernetes.client.CustomObjectsApi(cluster.api_client("admin"))
            for run in range(runs):
                name = f"forty-{run}"
                gaps, wall = one_run(cluster, api, namespace, name)
                transitions.extend(gaps)
                walls.append(wall)
                print(
                    f"run {run}: wall {wall:.1f} s, transitions p50 {statistics.median(gaps) * 1000:.1f} ms"
                )
        finally:
            operator.stop()
    return transitions, walls


def one_run(
    cluster: Any, api: Any, namespace: str, name: str, flow_path: str = "f/bench/forty"
) -> tuple[list[float], float]:
    import kubernetes

    created: dict[str, float] = {}
    succeeded: dict[str, float] = {}
    finished = threading.Event()
    watch = kubernetes.watch.Watch()

    def follow() -> None:
        for event in watch.stream(
            api.list_namespaced_custom_object,
            "kubemill.dev",
            "v1alpha1",
            namespace,
            "scriptruns",
            timeout_seconds=600,
        ):
            now = time.perf_counter()
            obj = event["object"]
            step = (obj.get("spec") or {}).get("stepId")
            if step is None or not obj["metadata"]["name"].startswith(name):
                continue
            if event["type"] == "ADDED":
                created.setdefault(step, now)
            if (obj.get("status") or {}).get("phase") == "Succeeded":
                succeeded.setdefault(step, now)
                if len(succeeded) == STEPS:
                    finished.set()
                    watch.stop()

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    time.sleep(0.5)  # let the watch open before the run starts (its first events must not be missed)
    started = time.perf_counter()
    cluster.apply(
        {
            "apiVersion": "kubemill.dev/v1alpha1",
            "kind": "FlowRun",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"flowPath": flow_path, "args": {}},
        }
    )
    if not finished.wait(600):
        raise SystemExit(f"{name}: only {len(succeeded)} of {STEPS} steps succeeded")
    deadline = time.monotonic() + 60
    while cluster.get("flowrun", name, "-n", namespace).get("status", {}).get("phase") != "Succeeded":
        if time.monotonic() > deadline:
            raise SystemExit(f"{name} did not succeed")
        time.sleep(0.1)
    wall = time.perf_counter() - started
    gaps = [created[f"s{i + 1}"] - succeeded[f"s{i}"] for i in range(STEPS - 1)]
    return gaps, wall


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    local = bench_local()
    print(
        f"kubemill run, {STEPS} trivial Python steps: {local:.2f} s, median of {LOCAL_RUNS} "
        f"(target <= 1.0 s: one warm fork server for the flow)"
    )
    gaps, walls = bench_cluster(runs)
    ms = [g * 1000 for g in gaps]
    print(
        f"control plane, step transition (child Succeeded -> next child created), {len(ms)} transitions: "
        f"p50 {statistics.median(ms):.1f} ms, p99 {percentile(ms, 0.99):.1f} ms, max {max(ms):.1f} ms "
        f"(targets: p50 < 50 ms, p99 < 250 ms); flow wall time median {statistics.median(walls):.1f} s"
    )


if __name__ == "__main__":
    main()
