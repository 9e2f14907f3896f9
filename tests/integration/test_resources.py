"""Resources, variables and secrets on the control plane: admission, readiness, what runs read, masking."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from tests.conftest import REPO, Cluster, wait_for
from tests.operator_harness import Operator

pytestmark = pytest.mark.cluster
API = "kubemill.dev/v1alpha1"
PG = {"host": "db.internal", "port": 5432, "user": "app", "dbname": "warehouse"}
READ_PG = """
import hashlib
import wmill

def main():
    db = wmill.get_resource("u/admin/pg")
    print("connecting with", db["password"])
    return {"db": db, "digest": hashlib.sha256(db["password"].encode()).hexdigest()}
"""


@pytest.fixture(scope="module", autouse=True)
def admission_policy(cluster: Cluster, operator: Operator) -> None:
    """The policies in force (their paramKind, ResourceType, is installed by the operator fixture)."""
    cluster.kubectl("apply", "-f", str(REPO / "config" / "admission"))
    probe = pg("default", {**PG, "password": "probe-pw"})
    wait_for(
        lambda: cluster.apply(probe, "--dry-run=server", check=False).returncode != 0,
        60,
        "the admission policies to be in force",
    )


def pg(namespace: str, value: dict[str, Any], value_from: dict[str, Any] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"path": "u/admin/pg", "resourceType": "postgresql", "value": value}
    if value_from:
        spec["valueFrom"] = value_from
    return {
        "apiVersion": API,
        "kind": "Resource",
        "metadata": {"name": "pg", "namespace": namespace},
        "spec": spec,
    }


def script(namespace: str, name: str, code: str, resources: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "Script",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"path": f"f/res/{name}", "language": "python3", "content": code, "resources": resources},
    }


def run(cluster: Cluster, namespace: str, name: str, script_name: str) -> dict[str, Any]:
    cluster.apply(
        {
            "apiVersion": API,
            "kind": "ScriptRun",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"scriptPath": f"f/res/{script_name}"},
        }
    )

    def finished() -> dict[str, Any] | None:
        status: dict[str, Any] = cluster.get("scriptrun", name, "-n", namespace).get("status") or {}
        return status if status.get("phase") in ("Succeeded", "Failed") else None

    return wait_for(finished, 120, f"scriptrun {name} to finish")


def ready(cluster: Cluster, namespace: str, kind: str, name: str) -> dict[str, Any] | None:
    conditions = (cluster.get(kind, name, "-n", namespace).get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == "Ready"), None)


def test_plaintext_password_refused_at_admission(cluster: Cluster, namespace: str) -> None:
    proc = cluster.apply(pg(namespace, {**PG, "password": "hunter22"}), check=False)  # even for admin
    assert proc.returncode != 0
    assert "field password of a postgresql resource is secret" in proc.stderr
    assert "spec.valueFrom.password.secretKeyRef" in proc.stderr
    assert "hunter22" not in proc.stderr


def test_resource_readiness(cluster: Cluster, namespace: str, running_operator: Operator) -> None:
    cluster.apply(pg(namespace, PG, {"password": {"secretKeyRef": {"name": "pg", "key": "password"}}}))
    cond = wait_for(lambda: ready(cluster, namespace, "resource", "pg"), 30, "Ready on the resource")
    assert (cond["status"], cond["reason"]) == ("False", "SecretNotFound") and "'pg'" in cond["message"]
    cluster.kubectl("create", "secret", "generic", "pg", "--from-literal=password=s3cr3t-pw", "-n", namespace)
    cluster.kubectl("annotate", "resource", "pg", "-n", namespace, "touch=1")
    wait_for(lambda: (ready(cluster, namespace, "resource", "pg") or {}).get("status") == "True", 30, "Ready")
    other = pg(namespace, PG) | {"metadata": {"name": "odd", "namespace": namespace}}
    other["spec"]["resourceType"] = "c_nothing"
    cluster.apply(other)
    cond = wait_for(lambda: ready(cluster, namespace, "resource", "odd"), 30, "Ready on odd")
    assert cond["reason"] == "TypeNotFound"


def test_declared_resource_read_masked_and_updated_secret_seen_next_run(
    cluster: Cluster, namespace: str, running_operator: Operator
) -> None:
    cluster.kubectl("create", "secret", "generic", "pg", "--from-literal=password=s3cr3t-pw", "-n", namespace)
    cluster.apply(pg(namespace, PG, {"password": {"secretKeyRef": {"name": "pg", "key": "password"}}}))
    cluster.apply(script(namespace, "reader", READ_PG, ["u/admin/pg"]))
    cluster.apply(script(namespace, "snoop", READ_PG, []))

    status = run(cluster, namespace, "read-1", "reader")
    assert status["phase"] == "Succeeded", status
    result = status["result"]
    assert result["db"] == {**PG, "password": "***"}
    assert result["digest"] == hashlib.sha256(b"s3cr3t-pw").hexdigest()
    everything = cluster.kubectl("get", "scriptrun", "read-1", "-n", namespace, "-o", "yaml").stdout
    events = cluster.kubectl("get", "events", "-n", namespace, "-o", "yaml").stdout
    assert "s3cr3t-pw" not in everything and "s3cr3t-pw" not in events

    cluster.kubectl("delete", "secret", "pg", "-n", namespace)
    cluster.kubectl("create", "secret", "generic", "pg", "--from-literal=password=n3w-pw", "-n", namespace)
    status = run(cluster, namespace, "read-2", "reader")
    assert status["phase"] == "Succeeded", status
    assert status["result"]["digest"] == hashlib.sha256(b"n3w-pw").hexdigest()

    status = run(cluster, namespace, "snoop-1", "snoop")
    assert status["phase"] == "Failed"
    assert status["error"]["name"] == "ResourceNotFound"
    assert "spec.resources" in status["error"]["message"]
