"""Fixtures shared by every tier. The `cluster` fixture starts the real test control plane (tests/cluster)
once per session, on first use; unit tests never ask for it, so `pytest tests/unit` starts nothing.

A control plane that cannot start is an error, never a skip.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "cluster"))

import controlplane  # noqa: E402

T = TypeVar("T")


def pytest_configure(config: pytest.Config) -> None:
    """SIGTERM and SIGHUP (a CI timeout, `timeout`, a closed terminal) end the session like Ctrl-C, so pytest
    tears the session's fixtures down and no control plane or operator is left running. SIGINT too: started
    in the background by a non-interactive shell, pytest inherits it ignored."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.default_int_handler)


@dataclass
class Cluster:
    """What a test sees of the control plane: kubectl as any test user, kubeconfigs, waiting helpers."""

    plane: controlplane.ControlPlane

    @property
    def kubeconfig(self) -> Path:
        return self.plane.kubeconfig

    def kubeconfig_for(self, user: str) -> Path:
        return self.plane.kubeconfigs / f"{user}.kubeconfig"

    def env(self) -> dict[str, str]:
        return self.plane.env()

    def kubectl(
        self,
        *args: str,
        user: str = "admin",
        input: str | None = None,
        check: bool = True,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.plane.bin_dir / "kubectl"), f"--kubeconfig={self.kubeconfig_for(user)}", *args]
        proc = subprocess.run(
            cmd, input=input, capture_output=True, text=True, timeout=timeout, env=self.env()
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} (as {user}) exited {proc.returncode}:\n{proc.stderr}{proc.stdout}"
            )
        return proc

    def get(self, *args: str, user: str = "admin") -> Any:
        return json.loads(self.kubectl("get", *args, "-o", "json", user=user).stdout)

    def apply(
        self, manifest: dict[str, Any] | str, *extra: str, user: str = "admin", check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        text = manifest if isinstance(manifest, str) else json.dumps(manifest)
        return self.kubectl("apply", "-f", "-", *extra, input=text, user=user, check=check)

    def api_client(self, user: str = "admin") -> Any:
        import kubernetes

        return kubernetes.config.new_client_from_config(config_file=str(self.kubeconfig_for(user)))

    def log_tail(self, component: str, lines: int = 60) -> str:
        return self.plane.log_tail(component, lines)


def wait_for(check: Callable[[], T | None], timeout: float, what: str, interval: float = 0.2) -> T:
    """Poll `check` until it returns something truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def finished_scriptrun(
    cluster: Cluster, namespace: str, name: str, script_path: str, args: dict[str, Any], timeout: float = 120
) -> dict[str, Any]:
    """Create a ScriptRun of `script_path` (as the admin) and return its status once it has finished."""
    cluster.apply(
        {
            "apiVersion": "kubemill.dev/v1alpha1",
            "kind": "ScriptRun",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"scriptPath": script_path, "args": args},
        }
    )

    def finished() -> dict[str, Any] | None:
        status: dict[str, Any] = cluster.get("scriptrun", name, "-n", namespace).get("status") or {}
        return status if status.get("phase") in ("Succeeded", "Failed") else None

    return wait_for(finished, timeout, f"scriptrun {name} to finish")


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    bin_dir = Path(os.environ["KUBEMILL_CLUSTER_BIN"]) if "KUBEMILL_CLUSTER_BIN" in os.environ else None
    with controlplane.running(bin_dir) as plane:
        yield Cluster(plane)


@pytest.fixture
def namespace(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace per test, deleted afterwards (without waiting)."""
    base = request.node.name.lower().replace("_", "-")
    name = "".join(ch for ch in base if ch.isalnum() or ch == "-")[:40].strip("-")
    name = f"{name}-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", name)
    wait_for(
        lambda: cluster.kubectl("get", "serviceaccount", "default", "-n", name, check=False).returncode == 0,
        30,
        f"the default service account in {name}",
    )
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


# The operator's fixtures: one operator per session, shared by the integration and e2e tiers. Imported here,
# at the end, because the harness itself builds on the Cluster above.
from tests import objectstore  # noqa: E402
from tests.objectstore import ObjectStore  # noqa: E402
from tests.operator_harness import Operator, install_operator_identity  # noqa: E402


@pytest.fixture(scope="session")
def operator(cluster: Cluster) -> Iterator[Operator]:
    workdir = Path(tempfile.mkdtemp(prefix="kubemill-operator-"))  # its kubeconfig and log
    op = Operator(cluster, install_operator_identity(cluster, workdir), workdir)
    op.start()
    try:
        yield op
    finally:
        op.stop()
        if os.environ.get("KUBEMILL_SHOW_OPERATOR_LOG"):
            print(op.log()[-20000:], file=sys.stderr)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def object_store() -> Iterator[ObjectStore]:
    """A real S3-compatible server (SeaweedFS, tests/objectstore.py) for the session, started on first use."""
    with objectstore.running() as store:
        yield store


def workspace_storage(
    cluster: Cluster, namespace: str, store: ObjectStore, path: str = "f/ops/storage"
) -> None:
    """Make `store` the workspace storage of `namespace`: a Secret with its key, a labelled s3 Resource."""
    cluster.kubectl(
        "create",
        "secret",
        "generic",
        "storage-key",
        f"--from-literal=secretKey={store.secret_key}",
        "-n",
        namespace,
    )
    cluster.apply(
        {
            "apiVersion": "kubemill.dev/v1alpha1",
            "kind": "Resource",
            "metadata": {
                "name": "storage",
                "namespace": namespace,
                "labels": {"kubemill.dev/workspace-storage": "true"},
            },
            "spec": {
                "path": path,
                "resourceType": "s3",
                "value": store.value(),
                "valueFrom": {"secretKey": {"secretKeyRef": {"name": "storage-key", "key": "secretKey"}}},
            },
        }
    )


@pytest.fixture
def running_operator(operator: Operator) -> Operator:
    """The session operator, started again if a previous test killed it and did not restart it."""
    if not operator.running():
        operator.start()
    return operator


@pytest.fixture
def restricted_namespace(cluster: Cluster, namespace: str) -> str:
    """A fresh namespace enforcing the restricted Pod Security Standard (runner pods must pass it)."""
    cluster.kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")
    return namespace
