"""Retention on the real control plane: a namespace's TTL and count annotations make the operator delete
finished runs, and with them their steps, stored logs and results (owner references, the real garbage
collector); running runs and other namespaces are left alone."""

from __future__ import annotations

import pytest

from tests.conftest import Cluster, wait_for
from tests.integration.test_day2_cli import kubemill, two_step_flow
from tests.integration.test_operator import finished, script, script_run
from tests.operator_harness import Operator

pytestmark = pytest.mark.cluster


def names(cluster: Cluster, kind: str, ns: str) -> set[str]:
    return {o["metadata"]["name"] for o in cluster.get(kind, "-n", ns)["items"]}


def test_a_ttl_deletes_finished_runs_with_their_steps_and_logs(
    running_operator: Operator, cluster: Cluster, restricted_namespace: str
) -> None:
    ns, other = restricted_namespace, f"{restricted_namespace[:50]}-other"
    cluster.kubectl("create", "namespace", other)
    wait_for(
        lambda: cluster.kubectl("get", "serviceaccount", "default", "-n", other, check=False).returncode == 0,
        30,
        f"the default service account in {other}",
    )
    try:
        _ttl_test(running_operator, cluster, ns, other)
    finally:
        cluster.kubectl("delete", "namespace", other, "--wait=false", check=False)


def _ttl_test(running_operator: Operator, cluster: Cluster, ns: str, other: str) -> None:
    code = "import time\n\ndef main(wait: int = 0):\n    print('hi')\n    time.sleep(wait)\n    return wait\n"
    for where in (ns, other):
        cluster.apply(script("hi", "f/day2/hi", "python3", code), "-n", where)
        cluster.apply(script_run("hi-1", "f/day2/hi"), "-n", where)
    cluster.apply(two_step_flow(ns))
    flow = kubemill(
        cluster, "admin", "submit", "f/day2/two_steps", "--arg", "n=1", "--name", "fr-1", "-n", ns
    )
    assert flow.returncode == 0, flow.stderr
    assert finished(running_operator, ns, "hi-1")["status"]["phase"] == "Succeeded"
    assert finished(running_operator, other, "hi-1")["status"]["phase"] == "Succeeded"
    wait_for(
        lambda: cluster.get("flowrun", "fr-1", "-n", ns).get("status", {}).get("phase") == "Succeeded",
        90,
        "fr-1 to succeed",
    )
    steps = names(cluster, "scriptruns", ns) - {"hi-1"}
    assert len(steps) == 2
    logs = {c for c in names(cluster, "configmaps", ns) if "-log-" in c}
    assert len(logs) == 3  # hi-1 and the flow's two steps
    cluster.apply(script_run("slow-1", "f/day2/hi", {"wait": 40}), "-n", ns)
    wait_for(
        lambda: cluster.get("scriptrun", "slow-1", "-n", ns).get("status", {}).get("phase") == "Running",
        60,
        "slow-1 running",
    )
    cluster.kubectl("annotate", "namespace", ns, "kubemill.dev/ttl-seconds-after-success=1")
    wait_for(lambda: names(cluster, "scriptruns", ns) == {"slow-1"}, 30, "finished runs and steps deleted")
    assert names(cluster, "flowruns", ns) == set()
    wait_for(lambda: not {c for c in names(cluster, "configmaps", ns) if "-log-" in c}, 60, "logs deleted")
    assert names(cluster, "scriptruns", other) == {"hi-1"}  # no policy there
    # A bad value is refused by name in the operator's log, and changes nothing.
    cluster.kubectl("annotate", "namespace", other, "kubemill.dev/max-finished-runs=few")
    wait_for(
        lambda: "kubemill.dev/max-finished-runs='few' is not a whole number" in running_operator.log(),
        30,
        "the refusal",
    )
    assert names(cluster, "scriptruns", other) == {"hi-1"}


def test_a_count_limit_keeps_the_newest_finished_runs(
    running_operator: Operator, cluster: Cluster, restricted_namespace: str
) -> None:
    ns = restricted_namespace
    cluster.kubectl("annotate", "namespace", ns, "kubemill.dev/max-finished-runs=2")
    cluster.apply(script("hi", "f/day2/hi", "python3", "def main():\n    return 1\n"), "-n", ns)
    for i in range(1, 5):
        cluster.apply(script_run(f"hi-{i}", "f/day2/hi"), "-n", ns)
        finished(running_operator, ns, f"hi-{i}")
    wait_for(lambda: names(cluster, "scriptruns", ns) == {"hi-3", "hi-4"}, 30, "the two newest kept")
