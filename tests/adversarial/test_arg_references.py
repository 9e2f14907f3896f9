"""`$res:<path>` and `$var:<path>` in a run's args (what the UI's resource picker sends) resolve as in
Windmill, but only to what the run's Script may read (its spec.resources): a run-only person who names
another resource in an arg gets a refusal naming the path, never the value."""

from __future__ import annotations

import json
from typing import Any

from tests.adversarial.conftest import apply_as
from tests.conftest import Cluster, wait_for
from tests.integration.test_operator import script
from tests.operator_harness import Operator

REPORT = """def main(db: dict, token: str = "", extra: dict | None = None):
    return {"host": db["host"], "password": db["password"], "token": token, "extra": extra}
"""
PROD_PASSWORD = "prod-pw-5d1e77a0"
APP_PASSWORD = "app-pw-29c4b8f3"
TOKEN = "tok-a8e41f0c93"


def resource(name: str, path: str, host: str, secret: str) -> dict[str, Any]:
    return {
        "apiVersion": "kubemill.dev/v1alpha1",
        "kind": "Resource",
        "metadata": {"name": name},
        "spec": {
            "path": path,
            "resourceType": "postgresql",
            "value": {"host": host, "port": 5432, "user": "app", "dbname": "app"},
            "valueFrom": {"password": {"secretKeyRef": {"name": secret, "key": "password"}}},
        },
    }


def setup(cluster: Cluster, ns: str) -> None:
    for secret, password in (("prod-db", PROD_PASSWORD), ("app-db", APP_PASSWORD)):
        cluster.kubectl(
            "create", "secret", "generic", secret, f"--from-literal=password={password}", "-n", ns
        )
    cluster.kubectl("create", "secret", "generic", "token", f"--from-literal=token={TOKEN}", "-n", ns)
    cluster.apply(resource("prod-db", "u/admin/prod_db", "prod.internal", "prod-db"), "-n", ns)
    cluster.apply(resource("app-db", "f/app/db", "app.internal", "app-db"), "-n", ns)
    variable = {
        "apiVersion": "kubemill.dev/v1alpha1",
        "kind": "Variable",
        "metadata": {"name": "token"},
        "spec": {
            "path": "f/app/token",
            "isSecret": True,
            "valueFrom": {"secretKeyRef": {"name": "token", "key": "token"}},
        },
    }
    cluster.apply(variable, "-n", ns)
    cluster.apply(
        script("report", "f/app/report", "python3", REPORT, resources=["f/app/db", "f/app/token"]), "-n", ns
    )


def run_as(cluster: Cluster, user: str, ns: str, name: str, args: dict[str, Any]) -> dict[str, Any]:
    manifest = {
        "apiVersion": "kubemill.dev/v1alpha1",
        "kind": "ScriptRun",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"scriptPath": "f/app/report", "args": args},
    }
    created = apply_as(cluster, user, manifest)
    assert created.returncode == 0, created.stderr

    def done() -> dict[str, Any] | None:
        run: dict[str, Any] = cluster.get("scriptrun", name, "-n", ns)
        return run if (run.get("status") or {}).get("phase") in ("Succeeded", "Failed") else None

    return wait_for(done, 120, f"scriptrun {name} to finish")["status"]


def test_res_and_var_args_resolve_to_what_the_script_may_read(
    running_operator: Operator, cluster: Cluster, run_only: str
) -> None:
    ns = run_only
    setup(cluster, ns)
    args = {"db": "$res:f/app/db", "token": "$var:f/app/token", "extra": {"again": ["$var:f/app/token"]}}
    status = run_as(cluster, "mallory", ns, "picked", args)
    assert status["phase"] == "Succeeded", status
    result = status["result"]
    assert result["host"] == "app.internal" and result["password"] == "***" and result["token"] == "***"
    assert result["extra"] == {"again": ["***"]}
    run = cluster.get("scriptrun", "picked", "-n", ns)
    assert run["spec"]["args"]["db"] == "$res:f/app/db"  # the reference, not the value, is what viewers see
    assert APP_PASSWORD not in json.dumps(run) and TOKEN not in json.dumps(run)


def test_a_run_only_user_cannot_read_a_resource_by_naming_it_in_an_arg(
    running_operator: Operator, cluster: Cluster, run_only: str
) -> None:
    ns = run_only
    setup(cluster, ns)
    attempts = {
        "top": {"db": "$res:u/admin/prod_db"},
        "nested": {"db": "$res:f/app/db", "extra": {"steal": "$res:u/admin/prod_db"}},
        "var": {"db": "$res:f/app/db", "token": "$var:u/admin/prod_db"},
    }
    for name, args in attempts.items():
        status = run_as(cluster, "mallory", ns, f"steal-{name}", args)
        assert status["phase"] == "Failed", status
        assert status["error"]["name"] == "ReferenceNotAllowed", status
        assert "u/admin/prod_db" in status["error"]["message"]
        assert "does not declare" in status["error"]["message"]
    seen = cluster.kubectl("get", "scriptruns,events,configmaps", "-n", ns, "-o", "json").stdout
    assert PROD_PASSWORD not in seen and "prod.internal" not in seen
