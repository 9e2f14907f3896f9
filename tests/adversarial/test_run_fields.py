"""What a run may carry, and who may set it (config/admission/run-fields-policy.yaml, docs/security.md).

A person with only the right to create runs must not run code of their own: an inline ScriptRun
(`spec.script`) that declares the namespace's Resources would otherwise hand them every secret the namespace
holds (the code can print it in a form no masking recognises). Nor may they set the fields the operator puts
on a flow's steps: `spec.sharedClaim` would mount another FlowRun's `./shared`, `spec.entrypoint` would call a
Script's preprocessor, and `spec.flowRun` would hide a run from retention as if it were a step. The API server
decides from the requester's own permissions (`authorizer` in a ValidatingAdmissionPolicy), never from
anything the request says; the operator, which may write the runs' status, sets them on the steps it starts.
"""

from __future__ import annotations

import json
from typing import Any

from tests.adversarial.conftest import apply_as
from tests.conftest import Cluster, wait_for
from tests.integration.test_approvals import wait_phase
from tests.integration.test_flows import flow, js, wait_ready
from tests.integration.test_operator import finished
from tests.operator_harness import Operator

API = "kubemill.dev/v1alpha1"
PASSWORD = "prod-pw-0c7a51e9"
STEAL = """def main(db: dict):
    return {"reversed": db["password"][::-1]}
"""


def inline_run(ns: str, name: str) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "ScriptRun",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "script": {"language": "python3", "content": STEAL, "resources": ["u/admin/prod_db"]},
            "args": {"db": "$res:u/admin/prod_db"},
        },
    }


def setup(cluster: Cluster, ns: str) -> None:
    cluster.kubectl("create", "secret", "generic", "prod-db", f"--from-literal=password={PASSWORD}", "-n", ns)
    db = {
        "apiVersion": API,
        "kind": "Resource",
        "metadata": {"name": "prod-db", "namespace": ns},
        "spec": {
            "path": "u/admin/prod_db",
            "resourceType": "postgresql",
            "value": {"host": "prod.internal", "port": 5432, "user": "app", "dbname": "app"},
            "valueFrom": {"password": {"secretKeyRef": {"name": "prod-db", "key": "password"}}},
        },
    }
    cluster.apply(db)


def policy_in_force(cluster: Cluster, ns: str) -> str:
    """The refusal of a server-side dry run once the policy is loaded (the API server loads a new policy
    asynchronously); nothing is stored by a dry run."""

    def refused() -> str | None:
        tried = apply_as(cluster, "mallory", inline_run(ns, "probe"), "--dry-run=server")
        return tried.stderr if tried.returncode != 0 else None

    return wait_for(refused, 30, "the run-fields policy to refuse mallory's inline code")


def test_a_run_only_person_cannot_run_code_of_their_own(
    running_operator: Operator, cluster: Cluster, run_only: str
) -> None:
    ns = run_only
    setup(cluster, ns)
    policy_in_force(cluster, ns)
    tried = apply_as(cluster, "mallory", inline_run(ns, "steal"))
    assert tried.returncode != 0, tried.stdout
    assert "ScriptRun steal: spec.script (inline code) is refused" in tried.stderr, tried.stderr
    assert "mallory@example.com may not create Scripts in namespace " + ns in tried.stderr, tried.stderr
    assert cluster.kubectl("get", "scriptrun", "steal", "-n", ns, check=False).returncode != 0
    assert cluster.get("jobs", "-n", ns)["items"] == []
    # Someone who may write Scripts here (bob, given `edit` as well) may run inline code, as before.
    cluster.kubectl(
        "create", "rolebinding", "bob-edit", "--clusterrole=edit", "--user=bob@example.com", "-n", ns
    )
    mine = inline_run(ns, "authored")
    assert apply_as(cluster, "bob", mine).returncode == 0
    done = finished(running_operator, ns, "authored")
    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert done["status"]["result"] == {"reversed": PASSWORD[::-1]}


def test_a_run_only_person_cannot_set_the_fields_of_a_flows_steps(
    running_operator: Operator, cluster: Cluster, run_only: str
) -> None:
    ns = run_only
    policy_in_force(cluster, ns)
    cluster.apply(
        {
            "apiVersion": API,
            "kind": "Script",
            "metadata": {"name": "echo", "namespace": ns},
            "spec": {
                "path": "f/x/echo",
                "language": "python3",
                "content": "def main(x: int = 0):\n    return x\n",
            },
        }
    )
    victim = "someone-elses-run"
    attempts: dict[str, tuple[dict[str, Any], str]] = {
        "shared": (
            {
                "kind": "ScriptRun",
                "spec": {
                    "scriptPath": "f/x/echo",
                    "flowRun": victim,
                    "stepId": "a",
                    "sharedClaim": f"{victim}-shared",
                },
            },
            "ScriptRun shared: spec.flowRun, spec.stepId, spec.sharedClaim are set only by the operator",
        ),
        "preprocess": (
            {
                "kind": "ScriptRun",
                "spec": {
                    "scriptPath": "f/x/echo",
                    "flowRun": victim,
                    "stepId": "p",
                    "entrypoint": "preprocessor",
                },
            },
            "ScriptRun preprocess: spec.flowRun, spec.stepId, spec.entrypoint are set only by the operator",
        ),
        "states": (
            {"kind": "ScriptRun", "spec": {"scriptPath": "f/x/echo", "flowUserStates": {"k": "forged"}}},
            "ScriptRun states: spec.flowUserStates is set only by the operator",
        ),
        "hidden": (
            {"kind": "FlowRun", "spec": {"flowPath": "f/x/any", "flowRun": "nonexistent", "stepId": "s"}},
            "FlowRun hidden: spec.flowRun, spec.stepId are set only by the operator",
        ),
    }
    for name, (body, message) in attempts.items():
        manifest = {"apiVersion": API, "metadata": {"name": name, "namespace": ns}, **body}
        tried = apply_as(cluster, "mallory", manifest)
        assert tried.returncode != 0 and message in tried.stderr, (name, tried.stderr)
        assert "not by mallory@example.com" in tried.stderr, tried.stderr
    stored = cluster.kubectl("get", "scriptruns,flowruns", "-n", ns, "-o", "json").stdout
    assert json.loads(stored)["items"] == []


def test_the_operator_still_starts_a_flows_inline_steps_for_a_run_only_person(
    running_operator: Operator, cluster: Cluster, run_only: str
) -> None:
    ns = run_only
    policy_in_force(cluster, ns)
    double = {
        "id": "a",
        "value": {
            "type": "rawscript",
            "language": "python3",
            "content": "def main(x: int):\n    return x * 2\n",
            "input_transforms": {"x": js("flow_input.x")},
        },
    }
    cluster.apply(flow(ns, "f/x/double", [double]))
    wait_ready(cluster, ns, "double")
    run = {
        "apiVersion": API,
        "kind": "FlowRun",
        "metadata": {"name": "doubled", "namespace": ns},
        "spec": {"flowPath": "f/x/double", "args": {"x": 21}},
    }
    assert apply_as(cluster, "mallory", run).returncode == 0
    done = wait_phase(cluster, ns, "doubled", "Succeeded", timeout=120)
    assert done["result"] == 42
    [child] = cluster.get("scriptruns", "-n", ns)["items"]
    assert child["spec"]["flowRun"] == "doubled" and "script" in child["spec"]  # inline, set by the operator
