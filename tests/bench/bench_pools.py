"""Bench: warm runner pools against Job-per-run and `kubemill run`, side by side on this machine.

On the test control plane (the operator under its own ServiceAccount, pool workers as the node agent's host
processes), one run prints:

- a 40-step sequential flow of trivial Python steps: wall time through a RunnerPool, through Jobs, and with
  `kubemill run` locally (medians of RUNS runs each) and the ratios. Targets: pool <= 1.5x local, Jobs >= 5x
  the pool;
- step transitions with the pool (child Succeeded -> next child created, as this process's watch sees
  them): p50 and p99. Targets: p50 <= 20 ms, p99 <= 100 ms;
- THROUGHPUT trivial ScriptRuns through one pool of 4 workers: runs per minute (target >= 3,000), and the
  resident memory of the operator (target <= 200 MB) and of each worker's agent and runner.

    .venv/bin/python tests/bench/bench_pools.py [RUNS] [THROUGHPUT]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "bench"))

import bench_flows  # noqa: E402

API = "kubemill.dev/v1alpha1"
STEPS = bench_flows.STEPS
WORKERS = 4


def modules(path: str) -> list[dict[str, Any]]:
    found = bench_flows.modules()
    for module in found:
        module["value"]["path"] = path
    return found


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def worker_pids(pool: str) -> dict[str, list[int]]:
    found: dict[str, list[int]] = {"agent": [], "runner": []}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            words = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if "worker" in words and "--pool" in words and pool in words:
            found["agent"].append(int(entry.name))
        elif any(w.endswith("forkserver.py") for w in words) and "--listen" in words:
            found["runner"].append(int(entry.name))
    return found


def install(cluster: Any, ns: str, max_queued: int) -> None:
    """In a new namespace `ns`: the RunnerPool `py` (WORKERS workers), the step Script by Job (`f/bench/step`)
    and through the pool (`f/bench/step_pool`), and the 40-step Flows over each (`f/bench/forty`,
    `f/bench/forty_pool`); returns once the pool's workers are ready."""
    from tests.conftest import wait_for

    cluster.kubectl("create", "namespace", ns)
    pool = {
        "apiVersion": API,
        "kind": "RunnerPool",
        "metadata": {"name": "py", "namespace": ns},
        "spec": {
            "language": "python3",
            "replicas": WORKERS,
            "maxQueued": max_queued,
            "claimTimeoutSeconds": 3600,
        },
    }
    cluster.apply(pool)
    for name, path, runner in (
        ("step", "f/bench/step", None),
        ("step-pool", "f/bench/step_pool", "py"),
    ):
        spec: dict[str, Any] = {"path": path, "language": "python3", "content": bench_flows.STEP_CODE}
        if runner:
            spec["runner"] = {"pool": runner}
        cluster.apply(
            {
                "apiVersion": API,
                "kind": "Script",
                "metadata": {"name": name, "namespace": ns},
                "spec": spec,
            }
        )
    for name, path in (("forty", "f/bench/step"), ("forty-pool", "f/bench/step_pool")):
        flow = {"modules": modules(path)}
        cluster.apply(
            {
                "apiVersion": API,
                "kind": "Flow",
                "metadata": {"name": name, "namespace": ns},
                "spec": {"path": f"f/bench/{name.replace('-', '_')}", "value": flow},
            }
        )

    def ready() -> bool:
        status = cluster.get("runnerpool", "py", "-n", ns).get("status") or {}
        return int(status.get("readyReplicas") or 0) >= WORKERS

    wait_for(ready, 120, "the pool's workers")


def throughput(cluster: Any, api: Any, namespace: str, count: int) -> float:
    """Seconds from the first create to the last of `count` pool runs Succeeded (watched)."""
    import kubernetes

    done: set[str] = set()
    finished = threading.Event()
    watch = kubernetes.watch.Watch()

    def follow() -> None:
        for event in watch.stream(
            api.list_namespaced_custom_object, "kubemill.dev", "v1alpha1", namespace, "scriptruns"
        ):
            obj = event["object"]
            if obj["metadata"]["name"].startswith("tp-") and (obj.get("status") or {}).get("phase") in (
                "Succeeded",
                "Failed",
            ):
                done.add(obj["metadata"]["name"])
                if len(done) >= count:
                    finished.set()
                    watch.stop()
                    return

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    time.sleep(0.5)  # the watch is open before the first run exists
    started = time.perf_counter()
    body = {"apiVersion": API, "kind": "ScriptRun", "spec": {"scriptPath": "f/bench/step_pool", "args": {}}}
    for i in range(count):
        api.create_namespaced_custom_object(
            "kubemill.dev", "v1alpha1", namespace, "scriptruns", {**body, "metadata": {"name": f"tp-{i}"}}
        )
    if not finished.wait(1800):
        raise SystemExit(f"only {len(done)} of {count} runs finished")
    elapsed = time.perf_counter() - started
    failed = [
        r["metadata"]["name"]
        for r in api.list_namespaced_custom_object("kubemill.dev", "v1alpha1", namespace, "scriptruns")[
            "items"
        ]
        if r["metadata"]["name"].startswith("tp-") and r["status"]["phase"] != "Succeeded"
    ]
    if failed:
        raise SystemExit(f"{len(failed)} throughput runs failed, e.g. {failed[:3]}")
    return elapsed


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
    import kubernetes

    from tests.conftest import Cluster, controlplane
    from tests.operator_harness import Operator, install_operator_identity

    local = bench_flows.bench_local()
    with controlplane.running() as plane:
        cluster = Cluster(plane)
        workdir = Path(tempfile.mkdtemp(prefix="kubemill-bench-"))
        operator = Operator(cluster, install_operator_identity(cluster, workdir), workdir)
        operator.start()
        try:
            ns = "bench"
            install(cluster, ns, max_queued=count * 2)
            api = kubernetes.client.CustomObjectsApi(cluster.api_client("admin"))
            pool_walls, job_walls, gaps = [], [], []
            for run in range(runs):
                g, wall = bench_flows.one_run(cluster, api, ns, f"pool-{run}", "f/bench/forty_pool")
                gaps += g
                pool_walls.append(wall)
                print(
                    f"pool run {run}: {wall:.2f} s, transitions p50 {statistics.median(g) * 1000:.1f} ms",
                    flush=True,
                )
            for run in range(runs):
                _, wall = bench_flows.one_run(cluster, api, ns, f"job-{run}", "f/bench/forty")
                job_walls.append(wall)
                print(f"job run {run}: {wall:.2f} s", flush=True)
            seconds = throughput(cluster, api, ns, count)
            pids = worker_pids("py")
            agents = ", ".join(f"{rss_mb(p):.0f}" for p in pids["agent"])
            runners = ", ".join(f"{rss_mb(p):.0f}" for p in pids["runner"])
            operator_rss = operator.rss_bytes() / (1 << 20)
        finally:
            operator.stop()
    pool_wall, job_wall = statistics.median(pool_walls), statistics.median(job_walls)
    ms = [g * 1000 for g in gaps]
    print(
        f"== {STEPS}-step sequential flow of trivial Python steps "
        f"(medians of {runs}; local of {bench_flows.LOCAL_RUNS})"
    )
    print(f"pool {pool_wall:.2f} s | Job per run {job_wall:.2f} s | kubemill run {local:.2f} s")
    print(
        f"pool / local = {pool_wall / local:.2f}x (target <= 1.5x); Job / pool = {job_wall / pool_wall:.1f}x "
        "(target >= 5x)"
    )
    print(
        f"== step transition with the pool, {len(ms)} transitions: p50 {statistics.median(ms):.1f} ms, "
        f"p99 {bench_flows.percentile(ms, 0.99):.1f} ms (targets p50 <= 20 ms, p99 <= 100 ms)"
    )
    print(
        f"== {count} trivial ScriptRuns through {WORKERS} workers: {seconds:.1f} s = "
        f"{count / seconds * 60:.0f} runs/min (target >= 3000)"
    )
    print(f"RSS: operator {operator_rss:.0f} MB (target <= 200); agents {agents} MB; runners {runners} MB")


if __name__ == "__main__":
    main()
