"""Operator latency and memory on the test control plane (`make bench`).

1. create-to-Job and create-to-Succeeded of a trivial Python ScriptRun, p50/p99 over RUNS runs created one
   after another (each measured from just before the create request to the moment this process's watch
   sees the Job, and the run's `Succeeded` phase). Targets: create-to-Job p50 < 100 ms.
2. The operator's resident memory (RSS) with COMPLETED finished runs present: that many ScriptRuns are
   created and marked Succeeded through the status subresource (as admin, no pods: the figure is about what
   the operator holds for runs it watches), the operator is restarted so it lists them all, and RSS is read
   from /proc once it has caught up. Target: < 200 MB.

The operator runs as it does in the integration tests: a subprocess under its own ServiceAccount.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from kubernetes import watch  # noqa: E402

from tests.conftest import Cluster, controlplane, wait_for  # noqa: E402
from tests.operator_harness import Operator, install_operator_identity  # noqa: E402

RUNS = int(os.environ.get("BENCH_RUNS", "100"))
COMPLETED = int(os.environ.get("BENCH_COMPLETED", "1000"))
NAMESPACE = "bench"
API = ("kubemill.dev", "v1alpha1")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


class Seen:
    """Local monotonic times at which a watch saw each Job and each run's Succeeded phase."""

    def __init__(self, cluster: Cluster) -> None:
        import kubernetes

        self.jobs: dict[str, float] = {}
        self.succeeded: dict[str, float] = {}
        self.cond = threading.Condition()
        self._batch = kubernetes.client.BatchV1Api(cluster.api_client())
        self._custom = kubernetes.client.CustomObjectsApi(cluster.api_client())
        for target in (self._jobs, self._runs):
            threading.Thread(target=self._quietly, args=(target,), daemon=True).start()

    @staticmethod
    def _quietly(follow: Any) -> None:
        try:
            follow()
        except Exception:  # the control plane went away at the end of the benchmark
            return

    def _jobs(self) -> None:
        for event in watch.Watch().stream(self._batch.list_namespaced_job, NAMESPACE):
            run = (event["object"].metadata.annotations or {}).get("kubemill.dev/script-run")
            if run and event["type"] == "ADDED":
                with self.cond:
                    self.jobs.setdefault(run, time.monotonic())
                    self.cond.notify_all()

    def _runs(self) -> None:
        stream = watch.Watch().stream(
            self._custom.list_namespaced_custom_object, *API, NAMESPACE, "scriptruns"
        )
        for event in stream:
            obj: dict[str, Any] = event["object"]
            if obj.get("status", {}).get("phase") == "Succeeded":
                with self.cond:
                    self.succeeded.setdefault(obj["metadata"]["name"], time.monotonic())
                    self.cond.notify_all()

    def wait(self, table: dict[str, float], name: str, timeout: float = 60) -> float:
        with self.cond:
            if not self.cond.wait_for(lambda: name in table, timeout):
                raise AssertionError(f"{name} not seen in {timeout}s")
            return table[name]


def run_manifest(name: str, i: int) -> dict[str, Any]:
    return {
        "apiVersion": "kubemill.dev/v1alpha1",
        "kind": "ScriptRun",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"scriptPath": "f/bench/trivial", "args": {"x": i}},
    }


def latency(cluster: Cluster, operator: Operator) -> None:
    import kubernetes

    custom = kubernetes.client.CustomObjectsApi(cluster.api_client())
    cluster.apply(
        {
            "apiVersion": "kubemill.dev/v1alpha1",
            "kind": "Script",
            "metadata": {"name": "trivial", "namespace": NAMESPACE},
            "spec": {
                "path": "f/bench/trivial",
                "language": "python3",
                "content": "def main(x: int):\n    return x\n",
            },
        }
    )
    seen = Seen(cluster)
    time.sleep(1)  # let the watches and the Script's status settle before the first measurement
    to_job, to_done = [], []
    for i in range(RUNS):
        name = f"lat-{i}"
        start = time.monotonic()
        custom.create_namespaced_custom_object(*API, NAMESPACE, "scriptruns", run_manifest(name, i))
        to_job.append((seen.wait(seen.jobs, name) - start) * 1000)
        to_done.append((seen.wait(seen.succeeded, name, 120) - start) * 1000)
    print(
        f"create-to-Job       over {RUNS} runs: p50 {percentile(to_job, 50):7.1f} ms  "
        f"p99 {percentile(to_job, 99):7.1f} ms  (target p50 < 100 ms)"
    )
    print(
        f"create-to-Succeeded over {RUNS} runs: p50 {percentile(to_done, 50):7.1f} ms  "
        f"p99 {percentile(to_done, 99):7.1f} ms  (mean {statistics.mean(to_done):.1f} ms)"
    )


def memory(cluster: Cluster, operator: Operator) -> None:
    import kubernetes

    custom = kubernetes.client.CustomObjectsApi(cluster.api_client())
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    status = {
        "phase": "Succeeded",
        "attempts": 1,
        "result": {"ok": True},
        "startedAt": now,
        "finishedAt": now,
    }
    operator.stop()
    for i in range(COMPLETED):
        name = f"done-{i}"
        custom.create_namespaced_custom_object(*API, NAMESPACE, "scriptruns", run_manifest(name, i))
        custom.patch_namespaced_custom_object_status(*API, NAMESPACE, "scriptruns", name, {"status": status})
    operator.start()
    total = len(custom.list_namespaced_custom_object(*API, NAMESPACE, "scriptruns")["items"])
    # Caught up: a run created now is handled (its Job appears) only after the listing was processed.
    custom.create_namespaced_custom_object(*API, NAMESPACE, "scriptruns", run_manifest("probe", 0))
    wait_for(
        lambda: (
            cluster.get("scriptrun", "probe", "-n", NAMESPACE).get("status", {}).get("phase") == "Succeeded"
        ),
        120,
        "the probe run",
    )
    time.sleep(2)
    rss = operator.rss_bytes() / 1e6
    print(f"operator RSS with {total} finished runs present: {rss:.0f} MB  (target < 200 MB)")


def main() -> int:
    with controlplane.running() as plane:
        cluster = Cluster(plane)
        workdir = Path(tempfile.mkdtemp(prefix="kubemill-bench-"))
        operator = Operator(
            cluster,
            install_operator_identity(cluster, workdir),
            workdir,
            extra_args=("--run-history-limit=0",),
        )
        cluster.kubectl("create", "namespace", NAMESPACE)
        operator.start()
        try:
            latency(cluster, operator)
            memory(cluster, operator)
        except BaseException:
            print(operator.log()[-3000:], file=sys.stderr)
            raise
        finally:
            operator.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
