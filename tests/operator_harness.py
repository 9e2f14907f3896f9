"""The operator harness (the `operator` fixture lives in tests/conftest.py): kubemill's operator running
against the test control plane as a real deployment would run it, not as admin: crds/, config/rbac/ and the
pool workers' admission policy (config/admission/pool-jobs-policy.yaml) installed, the ServiceAccount
kubemill-system/kubemill-operator bound to the ClusterRole `kubemill-operator`, a token for it in a
kubeconfig, and `kubemill operator` started as a subprocess with that identity. `restart()` and `kill()`
(SIGKILL) let tests crash it; `log()` returns what it printed; `metrics()` scrapes `/metrics`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tests.conftest import REPO, Cluster, controlplane, wait_for

# What this machine needs to reach package registries (a CA bundle, proxies), handed to runner pods the way
# a cluster operator would set them (`--runner-env`): the node agent runs pods with the pod's env only.
RUNNER_HOST_ENV = ("SSL_CERT_FILE", "SSL_CERT_DIR", "HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY", "UV_INDEX_URL")
SYSTEM_NAMESPACE = "kubemill-system"
SERVICE_ACCOUNT = "kubemill-operator"
POOL_POLICY = REPO / "config" / "admission" / "pool-jobs-policy.yaml"
RUN_FIELDS_POLICY = REPO / "config" / "admission" / "run-fields-policy.yaml"


def _http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return int(resp.status)
    except OSError:
        return 0


WEBHOOK_READY = "webhook configurations kubemill-approvals point at"
"""What the operator logs once its admission webhook serves and the configurations point at it."""


@dataclass
class Operator:
    """A `kubemill operator` subprocess under the operator's own identity."""

    cluster: Cluster
    kubeconfig: Path
    workdir: Path
    metrics_port: int = field(default_factory=controlplane.free_port)
    health_port: int = field(default_factory=controlplane.free_port)
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    # Retention sweeps every 2s (no namespace has a policy unless a test annotates it: nothing else changes).
    extra_args: tuple[str, ...] = ("--verbose", "--retention-interval=2")

    @property
    def log_path(self) -> Path:
        return self.workdir / "operator.log"

    def start(self, timeout: float = 60) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        env = dict(self.cluster.env())
        env["KUBECONFIG"] = str(self.kubeconfig)
        env["PYTHONUNBUFFERED"] = "1"
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"\n===== start {self.starts} =====\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [
                    str(REPO / ".venv" / "bin" / "kubemill"),
                    "operator",
                    f"--kubeconfig={self.kubeconfig}",
                    f"--metrics-port={self.metrics_port}",
                    f"--health-port={self.health_port}",
                    "--bind=127.0.0.1",
                    *(f"--runner-env={k}={os.environ[k]}" for k in RUNNER_HOST_ENV if k in os.environ),
                    *self.extra_args,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=str(REPO),
                start_new_session=True,
            )
        proc = self.proc
        wait_for(
            lambda: (
                proc.poll() is not None or _http_status(f"http://127.0.0.1:{self.health_port}/healthz") == 200
            ),
            timeout,
            "the operator's /healthz",
        )
        if proc.poll() is not None:
            raise AssertionError(f"the operator exited {proc.returncode}:\n{self.log()[-4000:]}")
        # /healthz answers before the admission webhook serves; the webhooks' failure policy is Fail, so a
        # test that writes right after a restart would meet the previous process's dead port.
        marker = f"===== start {self.starts} ====="
        wait_for(
            lambda: proc.poll() is not None or WEBHOOK_READY in self.log().rpartition(marker)[2],
            timeout,
            "the operator's admission webhook configured",
        )
        if proc.poll() is not None:
            raise AssertionError(f"the operator exited {proc.returncode}:\n{self.log()[-4000:]}")

    def kill(self) -> None:
        """SIGKILL, no chance to clean up (what a node crash or OOM kill looks like)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def restart(self) -> None:
        self.stop()
        self.start()

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def rss_bytes(self) -> int:
        """The operator process's resident memory."""
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as resp:
            text: str = resp.read().decode()
            return text


def install_operator_identity(cluster: Cluster, workdir: Path) -> Path:
    """CRDs, RBAC, the ServiceAccount and its binding; returns a kubeconfig holding the account's token."""
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "config" / "rbac"))
    # The pool workers' admission policy, installed beside the operator as the chart does (pools rely on it).
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(POOL_POLICY))
    # Who may set inline code and a flow step's fields on runs, as the chart installs it.
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(RUN_FIELDS_POLICY))
    crd_names = [
        f"crd/{p.name.split('_', 1)[1].removesuffix('.yaml')}.kubemill.dev"
        for p in (REPO / "crds").glob("*.yaml")
    ]
    cluster.kubectl("wait", "--for", "condition=established", "--timeout=60s", *crd_names)
    cluster.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": SYSTEM_NAMESPACE}})
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": SERVICE_ACCOUNT, "namespace": SYSTEM_NAMESPACE},
        }
    )
    cluster.apply(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "kubemill-operator"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "kubemill-operator",
            },
            "subjects": [{"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": SYSTEM_NAMESPACE}],
        }
    )
    token = cluster.kubectl(
        "create", "token", SERVICE_ACCOUNT, "-n", SYSTEM_NAMESPACE, "--duration=48h"
    ).stdout.strip()
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": admin["clusters"],
        "users": [{"name": SERVICE_ACCOUNT, "user": {"token": token}}],
        "contexts": [
            {
                "name": "operator",
                "context": {"cluster": admin["clusters"][0]["name"], "user": SERVICE_ACCOUNT},
            }
        ],
        "current-context": "operator",
    }
    path = workdir / "operator.kubeconfig"
    path.write_text(json.dumps(config))
    path.chmod(0o600)
    return path
