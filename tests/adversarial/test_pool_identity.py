"""A RunnerPool's identity against the Jobs it was never given.

A pool's Role lets its ServiceAccount patch every Job of its namespace (RBAC cannot name the Jobs of one
pool). The admission policy `kubemill-pool-jobs` (config/admission/pool-jobs-policy.yaml, installed by the
operator harness as the chart installs it) narrows that: with the pool's own token (a TokenRequest, as the
worker's projected token is), a patch may only move the claim annotations of a Job offered to that pool, the
way the worker protocol does; claiming another pool's Job, changing the Job's spec, pod template or labels,
setting any other annotation, or touching a Job offered to no pool is refused with the policy's message.

Behind the policy, the operator and the workers still take a Job as offered only when its pod template says
so: whoever else may patch Jobs (a namespace editor) must not be able to have a run that runs as a Job
reported by, or run a second time in, the pool.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from kubemill.k8s import builders, pool_inputs
from kubemill.k8s import pools as kpools

from tests.conftest import Cluster, wait_for
from tests.integration.test_operator import finished, script, script_run
from tests.integration.test_pools import (  # noqa: F401 (marks_file: a fixture)
    MARKED,
    marks,
    marks_file,
    pool_key,
    pool_kubeconfig,
    ready_pool,
    worker_processes,
)
from tests.operator_harness import Operator

pytestmark = pytest.mark.cluster

DENIED = "ValidatingAdmissionPolicy 'kubemill-pool-jobs' with binding 'kubemill-pool-jobs' denied request"


class PoolToken:
    """kubectl with a pool's ServiceAccount token from the API server (TokenRequest), not impersonation."""

    def __init__(self, cluster: Cluster, namespace: str, pool: str, where: Path) -> None:
        self.cluster, self.namespace = cluster, namespace
        port = int(cluster.plane.server.rsplit(":", 1)[1])  # straight to the API server
        self.kubeconfig = pool_kubeconfig(cluster, namespace, pool, port, where)

    def kubectl(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.cluster.plane.bin_dir / "kubectl"), f"--kubeconfig={self.kubeconfig}", *args]
        return subprocess.run(
            cmd, input=input, capture_output=True, text=True, timeout=60, env=self.cluster.env()
        )

    def patch(
        self, job: str, patch: list[dict[str, Any]] | dict[str, Any]
    ) -> subprocess.CompletedProcess[str]:
        kind = "json" if isinstance(patch, list) else "merge"
        return self.kubectl(
            "patch", "job", job, "-n", self.namespace, f"--type={kind}", "-p", json.dumps(patch)
        )


def refused(result: subprocess.CompletedProcess[str], *words: str) -> str:
    assert result.returncode != 0, f"admitted: {result.stdout}"
    assert DENIED in result.stderr, result.stderr
    for word in words:
        assert word in result.stderr, result.stderr
    return result.stderr


def in_force(cluster: Cluster, namespace: str, job: str, account: str) -> None:
    """Wait for the policy to be in force (the API server loads policies asynchronously): a dry-run patch of
    a Job offered to no pool, as the pool's account, is refused by it."""
    probe = json.dumps({"metadata": {"annotations": {kpools.STATE: "claimed"}}})

    def refused_by_policy() -> bool:
        result = cluster.kubectl(
            *("patch", "job", job, "-n", namespace, "--type=merge", "-p", probe, "--dry-run=server"),
            f"--as=system:serviceaccount:{namespace}:{account}",
            check=False,
        )
        return DENIED in result.stderr

    wait_for(refused_by_policy, 30, "the pool workers' admission policy to be in force")


@pytest.fixture
def paused_pool(running_operator: Operator, cluster: Cluster, namespace: str) -> Iterator[str]:
    """A ready pool whose workers are stopped (SIGSTOP): the operator offers it runs (its worker is
    ready) and nobody claims them but the test, with the pool's token. Claims do not time out meanwhile."""
    name = f"py-{namespace[-6:]}"
    ready_pool(cluster, namespace, name, claimTimeoutSeconds=600, leaseSeconds=120)
    agents = worker_processes(name)  # its agent (and the runners' fork servers)
    assert agents, "no worker process found"
    for pid in agents:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield name
    finally:
        for pid in agents:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


def offered_job(cluster: Cluster, namespace: str, pool: str, run: str) -> dict[str, Any]:
    """Have the operator offer a run of a pool Script to `pool`; its Job once offered."""
    code = "def main():\n    return 'ran in a worker'\n"
    cluster.apply(script("p", "f/pool/p", "python3", code, runner={"pool": pool}), "-n", namespace)
    cluster.apply(script_run(run, "f/pool/p"), "-n", namespace)

    def offered() -> dict[str, Any] | None:
        jobs = cluster.get("jobs", "-n", namespace, "-l", f"{kpools.LABEL_POOL}={pool}")["items"]
        return next((j for j in jobs if kpools.claim_of(j).state == "offered"), None)

    return wait_for(offered, 60, f"a Job offered to {pool}")


def plain_job(namespace: str, name: str) -> dict[str, Any]:
    """A suspended Job (no pod starts) in the shape of an attempt Job."""
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "suspend": True,
            "template": {
                "spec": {"restartPolicy": "Never", "containers": [{"name": "runner", "image": "none"}]}
            },
        },
    }


def test_a_pools_token_claims_renews_and_reports_its_own_pools_run(
    running_operator: Operator, cluster: Cluster, namespace: str, paused_pool: str, tmp_path: Path
) -> None:
    """The worker protocol, step by step with the pool's token, passes the policy; the operator takes the
    report as the run's outcome."""
    job = offered_job(cluster, namespace, paused_pool, "p-1")["metadata"]["name"]
    token = PoolToken(cluster, namespace, paused_pool, tmp_path)
    now = datetime.now(UTC)
    for step in (
        kpools.claim_patch("w-1", now),
        kpools.hand_back_patch("w-1"),
        kpools.claim_patch("w-2", now),
        kpools.renew_patch("w-2", now),
    ):
        result = token.patch(job, step)
        assert result.returncode == 0, result.stderr
    envelope = json.dumps({"result": {"via": "the pool's token"}, "error": None, "state": None})
    result = token.patch(job, kpools.report_patch("w-2", envelope))
    assert result.returncode == 0, result.stderr
    status = finished(running_operator, namespace, "p-1", timeout=60)["status"]
    assert status["phase"] == "Succeeded", status
    assert status["result"] == {"via": "the pool's token"}, status


def test_a_pools_token_reads_no_run_secret_and_whoever_reads_jobs_sees_only_ciphertext(
    running_operator: Operator, cluster: Cluster, namespace: str, paused_pool: str, tmp_path: Path
) -> None:
    """A run's files travel sealed on its offered Job (k8s/pool_inputs.py): the pool's token is refused the
    run's Secret and code ConfigMap, the Job holds neither the secret value nor its base64, and the blob opens
    with the pool's key for this Job only (not copied onto another Job, not for another pool)."""
    ns = namespace
    value = "s3cret-" + namespace[-6:] + "-kept-out-of-jobs"
    code = "def main(token: str):\n    return len(token)\n"
    cluster.apply(script("t", "f/pool/t", "python3", code, runner={"pool": paused_pool}), "-n", ns)
    cluster.apply(script_run("t-1", "f/pool/t", {"token": value}), "-n", ns)

    def offered() -> dict[str, Any] | None:
        jobs = cluster.get("jobs", "-n", ns, "-l", f"{kpools.LABEL_POOL}={paused_pool}")["items"]
        return next((j for j in jobs if kpools.claim_of(j).state == "offered"), None)

    job = wait_for(offered, 60, "the run offered to the pool")
    token = PoolToken(cluster, ns, paused_pool, tmp_path)
    volumes = job["spec"]["template"]["spec"]["volumes"]
    code_map = next(v["configMap"]["name"] for v in volumes if v["name"] == "code")
    for kind, name in (("secret", builders.run_secret_name("t-1")), ("configmap", code_map)):
        result = token.kubectl("get", kind, name, "-n", ns)
        assert result.returncode != 0, result.stdout
        assert "Forbidden" in result.stderr, result.stderr
    as_viewer = cluster.kubectl("get", "job", job["metadata"]["name"], "-n", ns, "-o", "json").stdout
    assert value not in as_viewer
    assert base64.b64encode(value.encode()).decode()[:16] not in as_viewer
    sealed = job["metadata"]["annotations"][pool_inputs.INPUTS]
    key = pool_key(cluster, ns, paused_pool)
    files = pool_inputs.unseal(key, ns, job["metadata"]["name"], paused_pool, sealed)
    assert json.loads(files["input"]["args.json"]) == {"token": value}  # the run's real inputs
    for job_name, pool in ((job["metadata"]["name"] + "x", paused_pool), (job["metadata"]["name"], "other")):
        with pytest.raises(pool_inputs.SealError):
            pool_inputs.unseal(key, ns, job_name, pool, sealed)


def test_a_pools_token_may_not_touch_other_jobs_or_other_fields(
    running_operator: Operator, cluster: Cluster, namespace: str, paused_pool: str, tmp_path: Path
) -> None:
    ns = namespace
    own = offered_job(cluster, ns, paused_pool, "p-1")
    job = own["metadata"]["name"]
    token = PoolToken(cluster, ns, paused_pool, tmp_path)
    now = datetime.now(UTC)
    claim = kpools.claim_patch("w-1", now)
    # A Job the operator offered to another pool (the operator's own builder; created by the admin here).
    other = kpools.offered(plain_job(ns, "other-offered"), "other", now, "sealed")
    cluster.apply(other)
    cluster.apply(plain_job(ns, "no-pool"))
    in_force(cluster, ns, "no-pool", own_account(own))
    # RBAC alone would let the token do all of the below: it may patch every Job of the namespace.
    assert token.kubectl("auth", "can-i", "patch", "jobs", "-n", ns).stdout.strip() == "yes"

    # (a) claim a Job offered to another pool; or point it at this pool first (its template's labels may
    # change while it is suspended)
    refused(
        token.patch("other-offered", claim), "may patch only the Jobs offered to its pool", "other-worker-"
    )
    repoint = {"spec": {"template": {"metadata": {"labels": {kpools.OFFERED_TO_ACCOUNT: own_account(own)}}}}}
    refused(token.patch("other-offered", repoint), "may patch only the Jobs offered to its pool")
    # (b) change the Job's spec, pod template or labels while claiming its own pool's Job
    spec_changes: list[dict[str, Any]] = [
        {"op": "replace", "path": "/spec/suspend", "value": False},
        {"op": "add", "path": "/spec/template/spec/nodeSelector", "value": {"node": "mine"}},
        {"op": "add", "path": "/spec/template/metadata/labels/extra", "value": "x"},
        {"op": "replace", "path": "/spec/parallelism", "value": 2},
    ]
    for change in spec_changes:
        refused(token.patch(job, [*claim, change]), "may change only the claim annotations", "not its spec")
    relabel = {"op": "add", "path": "/metadata/labels/kubemill.dev~1pool", "value": "other"}
    refused(token.patch(job, [*claim, relabel]), "not its metadata.labels")
    # (c) set, change or remove an annotation outside the protocol's
    for note in ({kpools.FALLBACK: "none"}, {kpools.OFFERED_AT: None}, {"example.com/anything": "x"}):
        patch = {"metadata": {"annotations": {kpools.STATE: "claimed", kpools.WORKER: "w-1", **note}}}
        refused(token.patch(job, patch), "may set only the claim annotations", next(iter(note)))
    # a move the protocol never makes (the operator's: fall back, mark lost; or report unclaimed)
    for state in ("job", "lost", "done"):
        refused(token.patch(job, {"metadata": {"annotations": {kpools.STATE: state}}}), f"to {state}")
    # (d) a Job offered to no pool (a run that runs as a Job)
    forged = json.dumps({"result": "forged", "error": None, "state": None})
    report = {"metadata": {"annotations": {kpools.STATE: "done", kpools.OUTCOME: forged}}}
    refused(token.patch("no-pool", report), "Job no-pool is offered to no pool")
    refused(token.patch("no-pool", {"spec": {"suspend": False}}), "offered to no pool")
    # never create or delete (RBAC refuses these before admission)
    assert token.kubectl("delete", "job", job, "-n", ns, "--wait=false").returncode != 0
    created = token.kubectl("create", "-f", "-", input=json.dumps(plain_job(ns, "new")))
    assert created.returncode != 0 and "forbidden" in created.stderr, created.stderr

    # Nothing of it landed, and the protocol's own claim still goes through.
    for name, state in ((job, "offered"), ("other-offered", "offered")):
        assert kpools.claim_of(cluster.get("job", name, "-n", ns)).state == state
    assert cluster.get("job", "no-pool", "-n", ns)["spec"]["suspend"] is True
    assert token.patch(job, claim).returncode == 0


def own_account(job: dict[str, Any]) -> str:
    return str(job["spec"]["template"]["metadata"]["labels"][kpools.OFFERED_TO_ACCOUNT])


@pytest.fixture
def editor(cluster: Cluster, namespace: str) -> str:
    """mallory, with the built-in `edit` role in the namespace: she may patch its Jobs (not a pool)."""
    cluster.kubectl(
        "create",
        "rolebinding",
        "mallory-edit",
        "--clusterrole=edit",
        "--user=mallory@example.com",
        "-n",
        namespace,
    )
    return "mallory"


def test_a_job_relabelled_as_a_pool_job_is_neither_reported_nor_claimed_by_the_pool(
    running_operator: Operator,
    cluster: Cluster,
    namespace: str,
    editor: str,
    marks_file: Path,  # noqa: F811
) -> None:
    """The pool's token is refused the relabelling; a namespace editor may relabel and annotate a running
    Job, and the operator and the pool's workers still take it for what its pod template says it is."""
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
    report = {
        "metadata": {
            "labels": {kpools.LABEL_POOL: pool_name},
            "annotations": {kpools.STATE: "done", kpools.WORKER: "w", kpools.OUTCOME: forged},
        }
    }
    in_force(cluster, ns, job, kpools.worker_account(pool_name))
    as_pool = cluster.kubectl(
        "patch",
        "job",
        job,
        "-n",
        ns,
        "--type=merge",
        "-p",
        json.dumps(report),
        f"--as={account}",
        check=False,
    )
    refused(as_pool, "offered to no pool")
    cluster.kubectl("patch", "job", job, "-n", ns, "--type=merge", "-p", json.dumps(report), user=editor)
    status = finished(running_operator, ns, "m-1", timeout=120)["status"]
    assert status["phase"] == "Succeeded", status
    assert status["result"]["starts"] == 1, status  # the pod's own result, not the forged one
    assert status.get("pod"), status  # a Job's pod ran it
    assert marks(marks_file) == ["start", "done"]  # and it ran once: no worker took it up

    # Relabelled as offered (not reported), the pool's honest workers do not run it a second time either.
    cluster.apply(script_run("m-2", "f/pool/m", {**args, "hold_until": 3}), "-n", ns)
    wait_for(lambda: marks(marks_file).count("start") == 2, 60, "the second run's pod to start")
    job = cluster.get("scriptrun", "m-2", "-n", ns)["status"]["job"]["name"]
    offer = {"metadata": {"labels": {kpools.LABEL_POOL: pool_name}, "annotations": {kpools.STATE: "offered"}}}
    cluster.kubectl("patch", "job", job, "-n", ns, "--type=merge", "-p", json.dumps(offer), user=editor)
    status = finished(running_operator, ns, "m-2", timeout=120)["status"]
    assert status["phase"] == "Succeeded", status
    assert marks(marks_file) == ["start", "done", "start", "done"], "a pool worker ran the Job's run again"
