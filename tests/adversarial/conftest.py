"""The adversarial tier: kubemill against people who may only run and watch flows.

Every test here runs on the real control plane with the session's operator. `mallory@example.com` and
`bob@example.com` get exactly the `kubemill-run-only` ClusterRole (config/rbac/run-only-role.yaml) and the
built-in `view` role in the test's namespace, so whatever refuses them in these tests is kubemill (its
admission checks, its CRD rules, its operator), never RBAC. alice is the listed approver; she gets the same
run-only role. Definitions (Scripts, Flows) are applied by the admin, as a GitOps sync would.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import Cluster

RUN_ONLY = ("mallory", "bob", "alice")


@pytest.fixture
def run_only(cluster: Cluster, namespace: str) -> str:
    """The namespace, with mallory, bob and alice bound to kubemill-run-only and view there."""
    for role in ("kubemill-run-only", "view"):
        cluster.kubectl(
            "create",
            "rolebinding",
            f"people-{role}",
            f"--clusterrole={role}",
            *(f"--user={u}@example.com" for u in RUN_ONLY),
            "-n",
            namespace,
        )
    return namespace


def as_user(cluster: Cluster, user: str, *args: str, input: str | None = None) -> Any:
    """kubectl as `user`, not checked: the test looks at the exit code and the message."""
    return cluster.kubectl(*args, user=user, input=input, check=False)


def apply_as(cluster: Cluster, user: str, manifest: dict[str, Any], *extra: str) -> Any:
    return as_user(cluster, user, "apply", "-f", "-", *extra, input=json.dumps(manifest))


def flowrun(
    namespace: str, name: str, flow_path: str, args: dict[str, Any] | None = None, **meta: Any
) -> dict[str, Any]:
    return {
        "apiVersion": "kubemill.dev/v1alpha1",
        "kind": "FlowRun",
        "metadata": {"name": name, "namespace": namespace, **meta},
        "spec": {"flowPath": flow_path, "args": args or {}},
    }
