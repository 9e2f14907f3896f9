"""Runs against a run-only user: input that would change how the runner behaves, a planted child run, a
flow that calls itself."""

from __future__ import annotations

import pytest
from kubemill.engine.naming import child_run_name
from kubemill.models.flows import MAX_SUBFLOW_DEPTH

from tests.adversarial.conftest import apply_as, flowrun
from tests.conftest import Cluster, wait_for
from tests.integration.test_approvals import wait_phase
from tests.integration.test_flows import flow, script, step, wait_ready
from tests.operator_harness import Operator

pytestmark = pytest.mark.cluster

DEPLOY = 'service="$1"\necho "deploying $service to ${ENVIRONMENT:-dev}"\n'


def scriptrun(namespace: str, name: str, path: str, args: dict[str, str]) -> dict[str, object]:
    return {
        "apiVersion": "kubemill.dev/v1alpha1",
        "kind": "ScriptRun",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"scriptPath": path, "args": args},
    }


def run_phase(cluster: Cluster, namespace: str, name: str) -> dict[str, object]:
    def done() -> dict[str, object] | None:
        found = cluster.get("scriptrun", name, "-n", namespace).get("status") or {}
        return found if found.get("phase") in ("Succeeded", "Failed") else None

    return wait_for(done, 120, f"scriptrun {name} finished")


def test_an_arg_named_bash_env_is_refused_and_never_reaches_the_shell(
    cluster: Cluster, run_only: str, running_operator: Operator
) -> None:
    ns = run_only
    cluster.apply(script(ns, "f/ops/deploy", DEPLOY, language="bash"))
    evil = {"service": "api", "BASH_ENV": "/var/run/kubemill/input/args.json", "x": "$(kill -9 $PPID)"}
    made = apply_as(cluster, "mallory", scriptrun(ns, "evil", "f/ops/deploy", evil))
    assert made.returncode == 0, made.stderr
    failed = run_phase(cluster, ns, "evil")
    assert failed["phase"] == "Failed", failed
    assert failed["error"]["name"] == "InvalidArgs"  # type: ignore[index]
    assert "BASH_ENV: bash, the loader or the runner reads $BASH_ENV itself" in failed["error"]["message"]  # type: ignore[index]
    assert not cluster.get("jobs", "-n", ns)["items"]  # nothing ran
    made = apply_as(
        cluster, "mallory", scriptrun(ns, "plain", "f/ops/deploy", {"service": "api", "ENVIRONMENT": "prod"})
    )
    assert made.returncode == 0, made.stderr
    assert run_phase(cluster, ns, "plain")["phase"] == "Succeeded"


def test_a_child_run_planted_under_the_next_steps_name_is_never_adopted(
    cluster: Cluster, run_only: str, running_operator: Operator
) -> None:
    ns = run_only
    cluster.apply(script(ns, "f/ops/notify", "def main():\n    return 'real'\n"))
    cluster.apply(script(ns, "f/ops/leak", "def main():\n    return 'planted'\n"))
    approval = {"id": "sign_off", "value": {"type": "approval", "approvers": ["alice@example.com"]}}
    cluster.apply(
        flow(
            ns,
            "f/ops/chain",
            [
                {"id": "wait", "value": {"type": "identity"}, "sleep": {"type": "static", "value": 3}},
                step("notify", "f/ops/notify"),
                approval,
            ],
        )
    )
    wait_ready(cluster, ns, "chain")
    made = apply_as(cluster, "bob", flowrun(ns, "chain", "f/ops/chain"))
    assert made.returncode == 0, made.stderr
    planted = scriptrun(ns, child_run_name("chain", "notify", 0), "f/ops/leak", {})
    made = apply_as(cluster, "mallory", planted)  # before the step starts: the name is computable
    assert made.returncode == 0, made.stderr
    failed = wait_phase(cluster, ns, "chain", "Failed", timeout=120)
    assert failed["error"]["name"] == "ChildConflict", failed
    assert "is not the run this step starts" in failed["error"]["message"]
    secrets = [s["metadata"]["name"] for s in cluster.get("secrets", "-n", ns)["items"]]
    assert not any(name.endswith("-resume") for name in secrets), secrets


def test_a_flow_that_calls_itself_stops_at_the_depth_limit(
    cluster: Cluster, run_only: str, running_operator: Operator
) -> None:
    ns = run_only
    cluster.apply(
        flow(ns, "f/ops/again", [{"id": "again", "value": {"type": "flow", "path": "f/ops/again"}}])
    )
    wait_ready(cluster, ns, "again")
    made = apply_as(cluster, "mallory", flowrun(ns, "fork", "f/ops/again"))
    assert made.returncode == 0, made.stderr
    failed = wait_phase(cluster, ns, "fork", "Failed", timeout=240)
    assert "SubflowTooDeep" in str(failed["error"]) or "subflows nest deeper than 16" in str(
        failed["error"]
    ), failed
    runs = cluster.get("flowruns", "-n", ns)["items"]
    # the top run, 16 levels below it, and the 17th, which fails without starting anything
    assert len(runs) == MAX_SUBFLOW_DEPTH + 2, len(runs)
    depths = sorted((r.get("status") or {}).get("depth", 0) for r in runs)
    assert depths[-1] == MAX_SUBFLOW_DEPTH
    refused = [r for r in runs if "flow" not in (r.get("status") or {})]  # failed before it pinned a flow
    assert len(refused) == 1
    assert "subflows nest deeper than 16" in refused[0]["status"]["error"]["message"]
