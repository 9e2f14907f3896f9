"""Stored run logs against people who may only run and watch: what they read is the operator's masked copy,
never a secret (as is, or in the base64 form a script may print), and never the raw pod log."""

from __future__ import annotations

import json

import pytest

from tests.conftest import Cluster, wait_for
from tests.integration.test_day2_cli import TOKEN, kubemill, leaky_script, pods_of
from tests.integration.test_operator import finished, script, script_run
from tests.integration.test_webhooks import UiServer, bearer, http
from tests.operator_harness import Operator

pytestmark = pytest.mark.cluster


def test_a_run_only_viewer_reads_masked_logs_from_the_cli_and_the_ui(
    running_operator: Operator, cluster: Cluster, run_only: str, tmp_path: object
) -> None:
    ns = run_only
    leaky_script(cluster, ns)
    done = kubemill(cluster, "mallory", "submit", "f/day2/leaky", "--watch", "-n", ns)
    assert done.returncode == 0, done.stderr
    name = cluster.get("scriptruns", "-n", ns)["items"][0]["metadata"]["name"]
    text = kubemill(cluster, "mallory", "logs", name, "-n", ns).stdout
    assert "the token is ***" in text and TOKEN not in text
    server = UiServer(cluster, tmp_path)  # type: ignore[arg-type]
    server.start()
    try:
        status, body = http(
            f"{server.url}/api/ui/ns/{ns}/scriptruns/{name}/log", None, bearer(cluster, "bob")
        )
    finally:
        server.stop()
    assert status == 200 and "the token is ***" in body and TOKEN not in body, (status, body)


def test_run_only_alone_reads_neither_the_raw_pod_log_nor_the_stored_one(
    running_operator: Operator, cluster: Cluster, restricted_namespace: str
) -> None:
    ns = restricted_namespace
    cluster.kubectl(
        "create", "rolebinding", "bob-run-only", "--clusterrole=kubemill-run-only", "--user=bob@example.com",
        "-n", ns,
    )  # fmt: skip
    leaky_script(cluster, ns)
    code = "import time\nimport wmill\n\ndef main():\n"
    code += "    print(wmill.get_variable('f/day2/token'), flush=True)\n    time.sleep(60)\n"
    cluster.apply(script("holder", "f/day2/holder", "python3", code, resources=["f/day2/token"]), "-n", ns)
    started = kubemill(cluster, "bob", "submit", "f/day2/holder", "--name", "holder-1", "-n", ns)
    assert started.returncode == 0, started.stderr
    pod = wait_for(lambda: pods_of(cluster, ns, "holder-1"), 60, "the runner pod")[0]["metadata"]["name"]
    wait_for(lambda: cluster.kubectl("logs", pod, "-n", ns, check=False).stdout, 60, "the raw pod log")
    raw = cluster.kubectl("logs", pod, "-n", ns, user="bob", check=False)
    assert raw.returncode != 0 and "forbidden" in raw.stderr.lower() and TOKEN not in raw.stdout
    stored = kubemill(cluster, "bob", "logs", "holder-1", "-n", ns)
    assert stored.returncode == 2 and "run holder-1: its stored log" in stored.stderr, stored.stderr
    assert TOKEN not in stored.stdout + stored.stderr
    # The admin's copy, refreshed while the run runs, is masked.
    wait_for(
        lambda: "***" in kubemill(cluster, "admin", "logs", "holder-1", "-n", ns).stdout, 30, "the live copy"
    )
    assert kubemill(cluster, "bob", "cancel", "holder-1", "-n", ns).returncode == 0
    assert finished(running_operator, ns, "holder-1")["status"]["phase"] == "Cancelled"
    everything = cluster.kubectl("get", "configmaps,scriptruns,events", "-n", ns, "-o", "json").stdout
    leaks = [
        (o["kind"], o["metadata"]["name"], json.dumps(o))
        for o in json.loads(everything)["items"]
        if TOKEN in json.dumps(o)
    ]
    assert not leaks, leaks


def test_a_planted_log_configmap_is_replaced_not_appended_to(
    running_operator: Operator, cluster: Cluster, restricted_namespace: str
) -> None:
    """Someone who may write ConfigMaps creates the run's log ConfigMap before the run ends, with fake
    earlier output: the operator keeps only what the run's own pod printed."""
    from kubemill.k8s import runlogs
    from kubemill.k8s.builders import RunIdentity

    ns = restricted_namespace
    code = "def main():\n    print('real output')\n"
    cluster.apply(script("plain", "f/day2/plain", "python3", code), "-n", ns)
    fake = runlogs.build_log_configmap(
        RunIdentity(ns, "plain-1", "not-the-uid"), "approved by ceo\n", 0, False
    )
    del fake["metadata"]["ownerReferences"]
    cluster.apply(fake)
    cluster.apply(script_run("plain-1", "f/day2/plain"), "-n", ns)
    assert finished(running_operator, ns, "plain-1")["status"]["phase"] == "Succeeded"
    text = kubemill(cluster, "admin", "logs", "plain-1", "-n", ns).stdout
    assert "real output" in text and "approved by ceo" not in text
