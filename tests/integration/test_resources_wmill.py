"""The brief's manage_resources.py on the real control plane: with a ServiceAccount a Role lets manage
Resources, `wmill` lists, reads, creates, updates and deletes them through the API; the admission policy's
refusal of a secret in clear reaches the script; without the RoleBinding the run fails with a permission
error naming the identity; without a ServiceAccount, with one saying how to opt in. Runner pods stay within
the restricted Pod Security Standard (the namespace enforces it)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import REPO, Cluster, wait_for
from tests.integration.test_resources import admission_policy  # noqa: F401 - the policies in force
from tests.operator_harness import Operator

pytestmark = pytest.mark.cluster
API = "kubemill.dev/v1alpha1"
CODE = (REPO / "tests/fixtures/brief/manage_resources.py").read_text()
VERBS = ["get", "list", "create", "update", "delete"]


def identities(cluster: Cluster, namespace: str) -> None:
    """`resource-admin` may manage Resources; `no-rights` exists but nothing is bound to it."""
    for name in ("resource-admin", "no-rights"):
        cluster.kubectl("create", "serviceaccount", name, "-n", namespace)
    cluster.apply(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "manage-resources", "namespace": namespace},
            "rules": [
                {"apiGroups": ["kubemill.dev"], "resources": ["resources", "variables"], "verbs": VERBS}
            ],
        }
    )
    cluster.kubectl(
        "create", "rolebinding", "manage-resources", "-n", namespace,
        "--role=manage-resources", f"--serviceaccount={namespace}:resource-admin",
    )  # fmt: skip


def script(namespace: str, name: str, service_account: str | None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "path": f"f/admin/{name.replace('-', '_')}",
        "language": "python3",
        "content": CODE,
    }
    if service_account:
        spec["runner"] = {"serviceAccountName": service_account}
    return {
        "apiVersion": API,
        "kind": "Script",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def run(cluster: Cluster, namespace: str, name: str, script_name: str, **args: Any) -> dict[str, Any]:
    cluster.apply(
        {
            "apiVersion": API,
            "kind": "ScriptRun",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"scriptPath": f"f/admin/{script_name.replace('-', '_')}", "args": args},
        }
    )

    def finished() -> dict[str, Any] | None:
        status: dict[str, Any] = cluster.get("scriptrun", name, "-n", namespace).get("status") or {}
        return status if status.get("phase") in ("Succeeded", "Failed") else None

    return wait_for(finished, 120, f"scriptrun {name} to finish")


def succeeded(status: dict[str, Any]) -> Any:
    assert status["phase"] == "Succeeded", status.get("error")
    return status["result"]


def resources(cluster: Cluster, namespace: str) -> dict[str, dict[str, Any]]:
    items = cluster.get("resources", "-n", namespace)["items"]
    return {o["spec"]["path"]: o for o in items}


@pytest.fixture
def restricted(cluster: Cluster, namespace: str) -> str:
    cluster.kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")
    identities(cluster, namespace)
    return namespace


def test_a_script_with_an_allowed_identity_manages_resources(
    cluster: Cluster, restricted: str, operator: Operator
) -> None:
    ns = restricted
    cluster.apply(script(ns, "manage", "resource-admin"))
    value = {"host": "db.internal", "port": 5432, "user": "app", "dbname": "crm"}
    created = succeeded(
        run(cluster, ns, "create", "manage", action="create", resource_path="u/admin/crm_db",
            resource_type="postgresql", resource_value=value, description="CRM")
    )  # fmt: skip
    assert created == {
        "action": "created",
        "path": "u/admin/crm_db",
        "resource_type": "postgresql",
        "success": True,
    }
    obj = resources(cluster, ns)["u/admin/crm_db"]
    assert obj["metadata"]["name"] == "u-admin-crm-db"
    assert (obj["spec"]["value"], obj["spec"]["resourceType"], obj["spec"]["description"]) == (
        value,
        "postgresql",
        "CRM",
    )

    listed = succeeded(run(cluster, ns, "list", "manage", action="list"))
    assert listed == {
        "total": 1,
        "resources": [{"path": "u/admin/crm_db", "resource_type": "postgresql", "description": "CRM"}],
    }
    got = succeeded(run(cluster, ns, "get", "manage", action="get", resource_path="u/admin/crm_db"))
    assert got == {"path": "u/admin/crm_db", "value": value, "found": True}

    changed = {**value, "dbname": "crm2"}
    updated = run(cluster, ns, "update", "manage", action="update", resource_path="u/admin/crm_db",
                  resource_value=changed)  # fmt: skip
    assert succeeded(updated) == {"action": "updated", "path": "u/admin/crm_db", "success": True}
    assert resources(cluster, ns)["u/admin/crm_db"]["spec"]["value"] == changed

    # A secret field in clear is refused by the admission policy, and the script is told why.
    refused = run(cluster, ns, "create-pw", "manage", action="create", resource_path="u/admin/pw_db",
                  resource_type="postgresql", resource_value={**value, "password": "hunter22"})  # fmt: skip
    assert refused["phase"] == "Failed"
    assert refused["error"]["name"] == "ResourceRejected"
    assert "field password of a postgresql resource is secret" in refused["error"]["message"]
    assert "hunter22" not in str(refused)

    deleted = succeeded(run(cluster, ns, "delete", "manage", action="delete", resource_path="u/admin/crm_db"))
    assert deleted == {"action": "deleted", "path": "u/admin/crm_db", "success": True}
    assert resources(cluster, ns) == {}
    gone = succeeded(run(cluster, ns, "get-gone", "manage", action="get", resource_path="u/admin/crm_db"))
    assert gone["found"] is False and "spec.resources" in gone["error"]


def test_an_identity_without_the_binding_gets_a_permission_error(
    cluster: Cluster, restricted: str, operator: Operator
) -> None:
    ns = restricted
    cluster.apply(script(ns, "manage-no-rights", "no-rights"))
    for action in ("list", "create"):
        args = {"resource_path": "u/admin/x", "resource_type": "postgresql", "resource_value": {"host": "h"}}
        status = run(cluster, ns, f"{action}-denied", "manage-no-rights", action=action, **args)
        assert status["phase"] == "Failed"
        assert status["error"]["name"] == "PermissionDenied"
        message = status["error"]["message"]
        assert f"system:serviceaccount:{ns}:no-rights may not list resources.kubemill.dev" in message
        assert "Role" in message
    assert resources(cluster, ns) == {}


def test_without_a_service_account_a_write_says_how_to_opt_in(
    cluster: Cluster, restricted: str, operator: Operator
) -> None:
    ns = restricted
    cluster.apply(script(ns, "manage-anonymous", None))
    status = run(cluster, ns, "create-anon", "manage-anonymous", action="create", resource_path="u/admin/x",
                 resource_type="postgresql", resource_value={"host": "h"})  # fmt: skip
    assert status["phase"] == "Failed"
    assert status["error"]["name"] == "PermissionDenied"
    assert "set spec.runner.serviceAccountName on the Script" in status["error"]["message"]
    assert resources(cluster, ns) == {}
