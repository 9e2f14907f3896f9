"""A RunnerPool's identity against the runs it was never given.

A pool's ServiceAccount may patch every Job of its namespace (to claim, renew and report). Whoever holds its
token (a compromised agent container, or a namespace user who mounts the pool's ServiceAccount in a pod of
their own) must still not be able to report an outcome for a run that runs as a Job, nor make the pool's
honest workers run it a second time: a Job counts as offered to a pool only when its pod template says so,
which the operator writes when it creates the Job and which cannot change once the Job has started.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kubemill.k8s import pools as kpools

from tests.conftest import Cluster, wait_for
from tests.integration.test_operator import finished, script, script_run
from tests.integration.test_pools import MARKED, marks, marks_file, ready_pool  # noqa: F401 (a fixture)
from tests.operator_harness import Operator

pytestmark = pytest.mark.cluster


def test_a_pools_identity_cannot_report_the_outcome_of_a_run_that_runs_as_a_job(
    running_operator: Operator,
    cluster: Cluster,
    namespace: str,
    marks_file: Path,  # noqa: F811
) -> None:
    ns = namespace
    pool_name = f"py-{ns[-6:]}"
    ready_pool(cluster, ns, pool_name)
    account = f"system:serviceaccount:{ns}:{kpools.worker_account(pool_name)}"
    cluster.apply(script("m", "f/pool/m", "python3", MARKED), "-n", ns)  # no pool: its runs are Jobs
    args = {"marks": str(marks_file), "hold_until": 2, "hold_seconds": 6}
    cluster.apply(script_run("m-1", "f/pool/m", args), "-n", ns)
    wait_for(lambda: marks(marks_file) == ["start"], 60, "the run's pod to start")
    job = cluster.get("scriptrun", "m-1", "-n", ns)["status"]["job"]["name"]
    forged = json.dumps({"result": "forged", "error": None, "state": None})
    patch = {
        "metadata": {
            "labels": {kpools.LABEL_POOL: pool_name},
            "annotations": {kpools.STATE: "done", kpools.WORKER: "w", kpools.OUTCOME: forged},
        }
    }
    # RBAC lets the pool's identity do this (else the test would prove nothing of kubemill's own check).
    cluster.kubectl("patch", "job", job, "-n", ns, "--type=merge", "-p", json.dumps(patch), f"--as={account}")
    status = finished(running_operator, ns, "m-1", timeout=120)["status"]
    assert status["phase"] == "Succeeded", status
    assert status["result"]["starts"] == 1, status  # the pod's own result, not the forged one
    assert status.get("pod"), status  # a Job's pod ran it
    assert marks(marks_file) == ["start", "done"]  # and it ran once: no worker took it up


def test_a_job_relabelled_as_offered_is_not_claimed_by_the_pools_workers(
    running_operator: Operator,
    cluster: Cluster,
    namespace: str,
    marks_file: Path,  # noqa: F811
) -> None:
    ns = namespace
    pool_name = f"py-{ns[-6:]}"
    ready_pool(cluster, ns, pool_name)
    account = f"system:serviceaccount:{ns}:{kpools.worker_account(pool_name)}"
    cluster.apply(script("m", "f/pool/m", "python3", MARKED), "-n", ns)
    args = {"marks": str(marks_file), "hold_until": 2, "hold_seconds": 6}
    cluster.apply(script_run("m-1", "f/pool/m", args), "-n", ns)
    wait_for(lambda: marks(marks_file) == ["start"], 60, "the run's pod to start")
    job = cluster.get("scriptrun", "m-1", "-n", ns)["status"]["job"]["name"]
    patch = {"metadata": {"labels": {kpools.LABEL_POOL: pool_name}, "annotations": {kpools.STATE: "offered"}}}
    cluster.kubectl("patch", "job", job, "-n", ns, "--type=merge", "-p", json.dumps(patch), f"--as={account}")
    status = finished(running_operator, ns, "m-1", timeout=120)["status"]
    assert status["phase"] == "Succeeded", status
    assert status["result"]["starts"] == 1, status
    assert marks(marks_file) == ["start", "done"], "a pool worker ran the Job's run a second time"
