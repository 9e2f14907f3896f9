"""Bench: the real node against the node agent, side by side in one run (`make bench`).

For each node (the node agent's host processes, then the real node's containers: tests/cluster/realnode.py),
a fresh control plane and the operator as the integration tests run it (a host process under its own
ServiceAccount), then:

1. ScriptRun create -> Succeeded of a trivial Python script, p50/p99 over RUNS runs created one after another
   (from just before the create request to the moment this process's watch sees `Succeeded`);
2. a 40-step sequential FlowRun of trivial Python steps (tests/bench/bench_flows.py): wall time from the
   create to `Succeeded`, the median of FLOW_RUNS runs.

The figures a user's cluster shows for a pod per step: image present, containerd, runc, a CNI bridge.

    .venv/bin/python tests/bench/bench_realnode.py        # BENCH_RUNS=20 BENCH_FLOW_RUNS=3
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import kubernetes  # noqa: E402

from tests.bench.bench_flows import STEP_CODE, modules, one_run  # noqa: E402
from tests.bench.bench_operator import API, NAMESPACE, Seen, percentile, run_manifest  # noqa: E402
from tests.conftest import Cluster, controlplane  # noqa: E402
from tests.operator_harness import Operator, install_operator_identity  # noqa: E402

RUNS = int(os.environ.get("BENCH_RUNS", "20"))
FLOW_RUNS = int(os.environ.get("BENCH_FLOW_RUNS", "3"))
TRIVIAL = "def main(x: int):\n    return x\n"  # bench_operator's script


def install(cluster: Cluster) -> None:
    cluster.kubectl("create", "namespace", NAMESPACE)
    for kind, name, spec in (
        ("Script", "trivial", {"path": "f/bench/trivial", "language": "python3", "content": TRIVIAL}),
        ("Script", "step", {"path": "f/bench/step", "language": "python3", "content": STEP_CODE}),
        ("Flow", "forty", {"path": "f/bench/forty", "value": {"modules": modules()}}),
    ):  # fmt: skip
        cluster.apply(
            {
                "apiVersion": "kubemill.dev/v1alpha1",
                "kind": kind,
                "metadata": {"name": name, "namespace": NAMESPACE},
                "spec": spec,
            }
        )


def measure(real_node: bool) -> dict[str, float]:
    with controlplane.running(real_node=real_node) as plane:
        cluster = Cluster(plane)
        workdir = Path(tempfile.mkdtemp(prefix="kubemill-bench-"))
        operator = Operator(cluster, install_operator_identity(cluster, workdir), workdir)
        install(cluster)
        operator.start()
        try:
            custom = kubernetes.client.CustomObjectsApi(cluster.api_client())
            seen = Seen(cluster)
            custom.create_namespaced_custom_object(*API, NAMESPACE, "scriptruns", run_manifest("warm", 0))
            seen.wait(seen.succeeded, "warm", 300)  # the image's first start (page cache) is not measured
            to_done = []
            for i in range(RUNS):
                name = f"lat-{i}"
                start = time.monotonic()
                custom.create_namespaced_custom_object(*API, NAMESPACE, "scriptruns", run_manifest(name, i))
                to_done.append((seen.wait(seen.succeeded, name, 300) - start) * 1000)
            walls = []
            for run in range(FLOW_RUNS):
                _, wall = one_run(cluster, custom, NAMESPACE, f"forty-{run}")
                walls.append(wall)
            return {
                "p50": percentile(to_done, 50),
                "p99": percentile(to_done, 99),
                "flow": statistics.median(walls),
                "flow_min": min(walls),
                "flow_max": max(walls),
            }
        except BaseException:
            print(operator.log()[-3000:], file=sys.stderr)
            raise
        finally:
            operator.stop()


def main() -> int:
    figures = {"node agent": measure(real_node=False), "real node": measure(real_node=True)}
    print(f"{'':12} | ScriptRun create->Succeeded ({RUNS} runs)  | 40-step FlowRun wall ({FLOW_RUNS} runs)")
    for node, f in figures.items():
        print(
            f"{node:12} | p50 {f['p50']:7.0f} ms   p99 {f['p99']:7.0f} ms | median {f['flow']:6.1f} s "
            f"(min {f['flow_min']:.1f}, max {f['flow_max']:.1f})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
