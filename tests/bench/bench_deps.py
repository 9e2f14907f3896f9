"""A script with a dependency: its first run (nothing cached: uv downloads and installs) against its second
(the install is reused), with a lock (`kubemill lock`'s, hash-checked) and without one (the imports).

Plain script (`make bench`). On this machine: `kubemill run` as a user runs it, each first run with an
empty KUBEMILL_HOME, RUNS times. On the test control plane (with the operator, as the integration tests run
it): create-to-Succeeded of ScriptRuns of the locked Script, without the namespace's cache claim (every pod
installs) and with a `kubemill-deps` claim (the first run fills it). Prints medians in milliseconds. Needs
PyPI: uv downloads `humanize` and `tabulate`, which the runner's Python lacks.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

RUNS = int(os.environ.get("BENCH_RUNS", "5"))
KUBEMILL = str(Path(sys.executable).with_name("kubemill"))
CODE = (
    "import humanize\nimport tabulate\n\n\n"
    "def main():\n    return [humanize.__version__, tabulate.__version__]\n"
)


def _run(workspace: Path, home: Path) -> float:
    start = time.perf_counter()
    subprocess.run(
        [KUBEMILL, "run", "f/bench/deps", "--workspace", str(workspace)],
        env={**os.environ, "KUBEMILL_HOME": str(home)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=True,
    )
    return (time.perf_counter() - start) * 1000


def bench(locked: bool) -> tuple[float, float]:
    firsts, seconds = [], []
    with tempfile.TemporaryDirectory(prefix="kubemill-bench-deps-") as tmp:
        workspace = Path(tmp, "ws")
        (workspace / "f" / "bench").mkdir(parents=True)
        (workspace / "wmill.yaml").write_text("defaultTs: bun\n")
        (workspace / "f" / "bench" / "deps.py").write_text(CODE)
        if locked:
            subprocess.run([KUBEMILL, "lock", "--workspace", str(workspace)], check=True, capture_output=True)
        for i in range(RUNS):
            home = Path(tmp, f"home-{i}")  # empty: the first run downloads
            firsts.append(_run(workspace, home))
            seconds.append(_run(workspace, home))
    return statistics.median(firsts), statistics.median(seconds)


def _locked_script() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="kubemill-bench-deps-") as tmp:
        workspace = Path(tmp)
        (workspace / "f" / "bench").mkdir(parents=True)
        (workspace / "f" / "bench" / "deps.py").write_text(CODE)
        subprocess.run([KUBEMILL, "lock", "--workspace", tmp], check=True, capture_output=True)
        lock = (workspace / "f" / "bench" / "deps.script.lock").read_text()
    spec = {"path": "f/bench/deps", "language": "python3", "content": CODE, "lock": lock}
    return {
        "apiVersion": "kubemill.dev/v1alpha1",
        "kind": "Script",
        "metadata": {"name": "deps"},
        "spec": spec,
    }


def cluster_runs() -> None:
    from tests.conftest import Cluster, controlplane, wait_for
    from tests.operator_harness import Operator, install_operator_identity

    def run(cluster: Cluster, ns: str, name: str) -> float:
        manifest = {"apiVersion": "kubemill.dev/v1alpha1", "kind": "ScriptRun", "metadata": {"name": name}}
        start = time.perf_counter()
        cluster.apply({**manifest, "spec": {"scriptPath": "f/bench/deps"}}, "-n", ns)

        def done() -> str | None:
            phase = cluster.get("scriptrun", name, "-n", ns).get("status", {}).get("phase")
            return phase if phase in ("Succeeded", "Failed") else None

        assert wait_for(done, 300, f"run {name}") == "Succeeded", name
        return (time.perf_counter() - start) * 1000

    with controlplane.running() as plane:
        cluster = Cluster(plane)
        workdir = Path(tempfile.mkdtemp(prefix="kubemill-bench-deps-"))
        operator = Operator(cluster, install_operator_identity(cluster, workdir), workdir)
        operator.start()
        folder = REPO / ".cache" / "volumes" / "bench-deps"
        try:
            for ns in ("no-cache", "cache"):
                cluster.kubectl("create", "namespace", ns)
                cluster.apply(_locked_script(), "-n", ns)
            folder.mkdir(parents=True, exist_ok=True)
            folder.chmod(0o777)
            pv_spec = {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteOnce"],
                "hostPath": {"path": str(folder)},
                "storageClassName": "",
                "claimRef": {"namespace": "cache", "name": "kubemill-deps"},
            }
            cluster.apply({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "bench-deps"},
                           "spec": pv_spec})  # fmt: skip
            claim_spec = {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}},
                "volumeName": "bench-deps",
                "storageClassName": "",
            }
            claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "spec": claim_spec}
            cluster.apply({**claim, "metadata": {"name": "kubemill-deps"}}, "-n", "cache")
            wait_for(
                lambda: (
                    cluster.get("pvc", "kubemill-deps", "-n", "cache").get("status", {}).get("phase")
                    == "Bound"
                ),
                60,
                "the claim Bound",
            )
            plain = [run(cluster, "no-cache", f"r-{i}") for i in range(RUNS)]
            first = run(cluster, "cache", "r-first")
            warm = [run(cluster, "cache", f"r-{i}") for i in range(RUNS)]
        except BaseException:
            print(operator.log()[-3000:], file=sys.stderr)
            raise
        finally:
            operator.stop()
            import shutil

            shutil.rmtree(folder, ignore_errors=True)
    print(f"the locked script on the test control plane, create-to-Succeeded, median of {RUNS} (ms):")
    print(f"{'without the cache claim (every pod installs)':46} {statistics.median(plain):8.0f}")
    print(f"{'with kubemill-deps: its first run (fills it)':46} {first:8.0f}")
    print(f"{'with kubemill-deps: later runs':46} {statistics.median(warm):8.0f}")


def main() -> None:
    print(f"a script importing humanize and tabulate, `kubemill run`, median of {RUNS} (ms):")
    print(f"{'':28} {'first run':>10} {'second run':>11}")
    for locked in (True, False):
        first, second = bench(locked)
        label = "with a lock (hash-checked)" if locked else "without a lock (imports)"
        print(f"{label:28} {first:10.0f} {second:11.0f}")
    if os.environ.get("BENCH_DEPS_CLUSTER", "1") != "0":
        cluster_runs()


if __name__ == "__main__":
    main()
