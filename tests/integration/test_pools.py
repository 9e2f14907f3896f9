"""RunnerPools on the real control plane: warm workers (a Deployment's pods, on the node agent) claim runs
from suspended Jobs, run them without a pod per run, and survive what Jobs survive: a worker SIGKILLed
mid-run, an operator restart, a pool with no ready worker, a worker cut off from the API server."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubemill.k8s import pool_inputs
from kubemill.k8s import pools as kpools

from tests.conftest import Cluster, wait_for
from tests.integration.test_operator import finished, script, script_run
from tests.operator_harness import Operator

pytestmark = pytest.mark.cluster

API = "kubemill.dev/v1alpha1"
REPO = Path(__file__).resolve().parents[2]

# Appends "start" to a file, and, while it holds fewer starts than `hold_until`, sleeps (a run to kill).
MARKED = """
import os, time

def main(marks: str, hold_until: int = 0, hold_seconds: float = 120):
    with open(marks, "a") as f:
        f.write("start\\n")
    starts = open(marks).read().count("start")
    if starts < hold_until:
        time.sleep(hold_seconds)
    with open(marks, "a") as f:
        f.write("done\\n")
    return {"starts": starts, "pid": os.getpid()}
"""


def pool(name: str, replicas: int = 1, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "RunnerPool",
        "metadata": {"name": name},
        "spec": {"language": "python3", "replicas": replicas, "leaseSeconds": 3, **spec},
    }


def ready_pool(cluster: Cluster, namespace: str, name: str, replicas: int = 1, **spec: Any) -> None:
    cluster.apply(pool(name, replicas, **spec), "-n", namespace)

    def ready() -> bool:
        status = cluster.get("runnerpool", name, "-n", namespace).get("status") or {}
        return int(status.get("readyReplicas") or 0) >= replicas

    wait_for(ready, 90, f"RunnerPool {name} to have {replicas} ready worker(s)")


def pods(cluster: Cluster, namespace: str, selector: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = cluster.get("pods", "-n", namespace, "-l", selector)["items"]
    return items


@pytest.fixture
def marks_file() -> Iterator[Path]:
    """A file the runs (host processes as uid 65532 on the node agent) can append to: outside /tmp, which
    the runner container has its own of."""
    folder = Path(tempfile.mkdtemp(prefix="kubemill-pools-", dir="/var/tmp"))
    folder.chmod(0o777)
    path = folder / "marks"
    path.touch()
    path.chmod(0o666)
    yield path
    shutil.rmtree(folder, ignore_errors=True)


def marks(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def worker_processes(pool_name: str) -> list[int]:
    """The host processes of a pool's worker pods (the node agent runs containers as host processes)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        words = [a.decode(errors="replace") for a in argv]
        if ("worker" in words and "--pool" in words and pool_name in words) or (
            any(w.endswith("forkserver.py") for w in words) and "--listen" in words
        ):
            found.append(int(entry.name))
    return found


def test_a_pool_runs_a_scripts_runs_without_a_pod_per_run(
    running_operator: Operator, cluster: Cluster, restricted_namespace: str
) -> None:
    ns = restricted_namespace
    ready_pool(cluster, ns, "py")
    code = "def main(a: int, b: int = 2):\n    print('adding')\n    return {'sum': a + b}\n"
    cluster.apply(script("add", "f/pool/add", "python3", code, runner={"pool": "py"}), "-n", ns)
    for i in range(3):
        cluster.apply(script_run(f"add-{i}", "f/pool/add", {"a": i}), "-n", ns)
    for i in range(3):
        status = finished(running_operator, ns, f"add-{i}")["status"]
        assert status["phase"] == "Succeeded", status
        assert status["result"] == {"sum": i + 2}
        assert status["attempts"] == 1
        assert not status.get("pod"), status  # no pod ran it
    assert pods(cluster, ns, "kubemill.dev/run-uid") == []
    listed = cluster.kubectl("get", "runnerpools", "-n", ns).stdout
    assert listed.split("\n")[0].split()[:6] == ["NAME", "LANGUAGE", "DESIRED", "READY", "BUSY", "QUEUED"]
    metrics = running_operator.metrics()
    assert f'kubemill_pool_claim_latency_seconds_count{{namespace="{ns}",pool="py"}} 3.0' in metrics
    assert f'kubemill_pool_attempts_total{{namespace="{ns}",outcome="reported",pool="py"}} 3.0' in metrics


def test_a_pool_worker_runs_a_triggered_scripts_preprocessor_then_main(
    running_operator: Operator, cluster: Cluster, restricted_namespace: str
) -> None:
    """The entrypoint reaches a pool worker's fork server in the Job's environment, as it reaches a pod."""
    ns = restricted_namespace
    ready_pool(cluster, ns, "py")
    code = (
        "def preprocessor(event: dict):\n    return {'a': event['body']['a'] * 10}\n\n"
        "def main(a: int):\n    return {'a': a}\n"
    )
    cluster.apply(script("pre", "f/pool/pre", "python3", code, runner={"pool": "py"}), "-n", ns)
    event = {"kind": "webhook", "body": {"a": 4}, "raw_string": None, "query": {}, "headers": {}}
    cluster.apply(
        script_run("pre-hook", "f/pool/pre", {"KUBEMILL_ENTRYPOINT": "main"}, triggerEvent=event), "-n", ns
    )
    cluster.apply(
        script_run("pre-direct", "f/pool/pre", {"a": 2, "KUBEMILL_ENTRYPOINT": "preprocessor"}), "-n", ns
    )
    for name, result in (("pre-hook", {"a": 40}), ("pre-direct", {"a": 2})):
        status = finished(running_operator, ns, name)["status"]
        assert (status["phase"], status.get("result")) == ("Succeeded", result), status
        assert not status.get("pod"), status  # the pool ran it


def test_a_run_of_a_pool_with_no_ready_worker_runs_as_a_job_and_says_why(
    running_operator: Operator, cluster: Cluster, namespace: str
) -> None:
    ns = namespace
    cluster.apply(pool("idle", replicas=0), "-n", ns)
    code = "def main():\n    return 'ran'\n"
    cluster.apply(script("s", "f/pool/s", "python3", code, runner={"pool": "idle"}), "-n", ns)
    cluster.apply(script_run("s-1", "f/pool/s"), "-n", ns)
    status = finished(running_operator, ns, "s-1")["status"]
    assert status["phase"] == "Succeeded", status
    assert status["result"] == "ran"
    assert status.get("pod"), status  # a Job's pod ran it


def test_a_worker_killed_mid_run_loses_the_attempt_and_the_scripts_retry_runs_it_once_more(
    running_operator: Operator, cluster: Cluster, namespace: str, marks_file: Path
) -> None:
    ns = namespace
    name = f"kill-{ns[-6:]}"
    ready_pool(cluster, ns, name)
    retry = {"constant": {"attempts": 1, "seconds": 1}}
    cluster.apply(script("m", "f/pool/m", "python3", MARKED, runner={"pool": name}, retry=retry), "-n", ns)
    cluster.apply(script_run("m-1", "f/pool/m", {"marks": str(marks_file), "hold_until": 2}), "-n", ns)
    wait_for(lambda: marks(marks_file) == ["start"], 60, "the first attempt to start")
    victims = worker_processes(name)
    assert victims, "no worker process found"
    for pid in victims:  # the whole worker pod dies at once, as on a node crash
        os.kill(pid, signal.SIGKILL)
    run = finished(running_operator, ns, "m-1", timeout=120)
    status = run["status"]
    assert status["phase"] == "Succeeded", status
    assert status["attempts"] == 2
    assert status["result"]["starts"] == 2
    # The first attempt never completed: killed with its worker, never reported, never run again by it.
    assert marks(marks_file) == ["start", "start", "done"]


def test_an_operator_restart_mid_run_records_the_pool_run_once(
    running_operator: Operator, cluster: Cluster, namespace: str, marks_file: Path
) -> None:
    ns = namespace
    ready_pool(cluster, ns, "py")
    cluster.apply(script("m", "f/pool/m", "python3", MARKED, runner={"pool": "py"}), "-n", ns)
    args = {"marks": str(marks_file), "hold_until": 2, "hold_seconds": 4}
    cluster.apply(script_run("m-1", "f/pool/m", args), "-n", ns)
    wait_for(lambda: marks(marks_file) == ["start"], 60, "the run to start")
    running_operator.kill()
    wait_for(lambda: marks(marks_file) == ["start", "done"], 60, "the run to end while no operator runs")
    running_operator.start()
    status = finished(running_operator, ns, "m-1")["status"]
    assert status["phase"] == "Succeeded", status
    assert status["attempts"] == 1
    assert status["result"]["starts"] == 1
    assert marks(marks_file) == ["start", "done"]


def test_a_pool_scaled_to_zero_finishes_the_run_it_claimed_and_sends_the_next_to_a_job(
    running_operator: Operator, cluster: Cluster, namespace: str, marks_file: Path
) -> None:
    ns = namespace
    ready_pool(cluster, ns, "py")
    cluster.apply(script("m", "f/pool/m", "python3", MARKED, runner={"pool": "py"}), "-n", ns)
    args = {"marks": str(marks_file), "hold_until": 2, "hold_seconds": 4}
    cluster.apply(script_run("m-1", "f/pool/m", args), "-n", ns)
    wait_for(lambda: marks(marks_file) == ["start"], 60, "the run to start")
    cluster.kubectl("patch", "runnerpool", "py", "-n", ns, "--type=merge", "-p", '{"spec": {"replicas": 0}}')
    status = finished(running_operator, ns, "m-1")["status"]
    assert status["phase"] == "Succeeded", status
    assert status["attempts"] == 1
    assert not status.get("pod"), status  # the worker finished it while its pod was going away
    assert marks(marks_file) == ["start", "done"]
    wait_for(lambda: pods(cluster, ns, "kubemill.dev/pool=py") == [], 60, "the pool's pods to go")
    cluster.apply(script_run("m-2", "f/pool/m", {"marks": str(marks_file)}), "-n", ns)
    status = finished(running_operator, ns, "m-2")["status"]
    assert status["phase"] == "Succeeded", status
    assert status.get("pod"), status  # no worker left: a Job's pod ran it


class CuttableProxy:
    """A TCP proxy to the API server that a test can cut: open connections reset, new ones refused."""

    def __init__(self, port: int) -> None:
        self.upstream_port = port
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.cut = threading.Event()
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.cut.is_set():
                client.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := a.recv(65536):
                b.sendall(data)
        for s in (a, b):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def sever(self) -> None:
        self.cut.set()
        for s in self.sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.sever()
        self.listener.close()


def pool_kubeconfig(cluster: Cluster, namespace: str, pool_name: str, port: int, where: Path) -> Path:
    """A kubeconfig with the pool's worker identity, through 127.0.0.1:`port`."""
    account = kpools.worker_account(pool_name)
    token = cluster.kubectl("create", "token", account, "-n", namespace).stdout.strip()
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    clusters = [
        {**c, "cluster": {**c["cluster"], "server": f"https://127.0.0.1:{port}"}} for c in admin["clusters"]
    ]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": clusters,
        "users": [{"name": "worker", "user": {"token": token}}],
        "contexts": [{"name": "w", "context": {"cluster": clusters[0]["name"], "user": "worker"}}],
        "current-context": "w",
    }
    path = where / "worker.kubeconfig"
    path.write_text(json.dumps(config))
    return path


def pool_key(cluster: Cluster, namespace: str, pool_name: str) -> bytes:
    """The pool's sealing key, read (as the admin) from the key Secret the operator made for the pool."""
    secret = cluster.get("secret", kpools.key_secret_name(pool_name), "-n", namespace)
    key = pool_inputs.key_from_secret_data(secret.get("data"))
    assert key is not None, secret.get("metadata")
    return key


def pool_key_file(cluster: Cluster, namespace: str, pool_name: str, where: Path) -> Path:
    """The pool's key as its agent containers have it mounted (`--key-file`)."""
    path = where / "pool.key"
    path.write_text(pool_inputs.key_secret_value(pool_key(cluster, namespace, pool_name)))
    return path


def test_a_worker_cut_off_from_the_api_kills_its_run_and_the_retry_runs_elsewhere(
    running_operator: Operator, cluster: Cluster, namespace: str, marks_file: Path, tmp_path: Path
) -> None:
    """A worker whose API calls all fail (its connection to the API server cut) kills its run before its
    lease ends and reports nothing; the operator fails the attempt (WorkerLost) and the Script's retry runs
    on the pool's other, healthy worker."""
    ns = namespace
    name = f"cut-{ns[-6:]}"
    ready_pool(cluster, ns, name)
    pod_worker = worker_processes(name)
    for pid in pod_worker:  # the pod's worker sits this one out, so the cut-off worker claims the run
        os.kill(pid, signal.SIGSTOP)
    proxy = CuttableProxy(int(cluster.plane.server.rsplit(":", 1)[1]))
    work = Path(tempfile.mkdtemp(prefix="kubemill-worker-", dir="/var/tmp"))
    server = subprocess.Popen(
        [
            sys.executable,
            str(REPO / "runner_images/python3/forkserver.py"),
            "--listen",
            str(work / "fork.sock"),
        ]
    )
    agent_log = (tmp_path / "agent.log").open("w")
    agent = subprocess.Popen(
        [
            str(REPO / ".venv/bin/kubemill"),
            *("worker", "--pool", name, "--namespace", ns, "--name", "cut-off-worker"),
            *("--socket", str(work / "fork.sock"), "--lease-seconds", "3"),
            *("--key-file", str(pool_key_file(cluster, ns, name, tmp_path))),
            *("--kubeconfig", str(pool_kubeconfig(cluster, ns, name, proxy.port, tmp_path))),
        ],
        stderr=agent_log,
    )
    try:
        retry = {"constant": {"attempts": 1, "seconds": 1}}
        cluster.apply(
            script("m", "f/pool/m", "python3", MARKED, runner={"pool": name}, retry=retry), "-n", ns
        )
        args = {"marks": str(marks_file), "hold_until": 2, "hold_seconds": 300}
        cluster.apply(script_run("m-1", "f/pool/m", args), "-n", ns)
        wait_for(lambda: marks(marks_file) == ["start"], 60, "the cut-off worker to start the run")
        proxy.sever()
        # Within 80% of the 3 s lease the worker gives the run up: its process group is killed.
        wait_for(lambda: server_children(server.pid) == [], 30, "the cut-off worker to kill its run")
        for pid in pod_worker:
            os.kill(pid, signal.SIGCONT)
        status = finished(running_operator, ns, "m-1", timeout=90)["status"]
        assert status["phase"] == "Succeeded", status
        assert status["attempts"] == 2
        assert marks(marks_file) == ["start", "start", "done"]
        agent_log.flush()
        assert "the claim lapsed (API unreachable); nothing reported" in (tmp_path / "agent.log").read_text()
    finally:
        for pid in pod_worker:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        for process in (agent, server):
            process.kill()
            process.wait()
        agent_log.close()
        proxy.close()
        shutil.rmtree(work, ignore_errors=True)


def server_children(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in children.read_text().split()] if children.exists() else []
