"""The real node leaves the host as it found it: kernel settings (the kubelet sets its own, in the node's
mount namespace only), mounts, network links, routes and iptables rules, the places a kubelet or containerd
writes by default, cgroups and processes. A pod runs in between, so there was something to clean up."""

from __future__ import annotations

import json
import subprocess
import uuid

import pytest

from tests.conftest import Cluster, controlplane, wait_for
from tests.realnode.conftest import realnode

# The first test's budget includes the node's start: importing every image when the kept store is cold
# (about 5 min on a loaded 2-core machine).
pytestmark = [
    pytest.mark.realnode,
    pytest.mark.slow,
    pytest.mark.timeout(1500),
    # The harness's known socket leak (see test_chart_on_node.py): the collector may report the previous
    # module's sockets during this one's first test.
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]

VERSION = "0.1.0"
RESTRICTED = {
    "runAsNonRoot": True,
    "runAsUser": 65532,
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def run_pod(cluster: Cluster, namespace: str, script: str) -> str:
    """A pod of the bash runner image running `script` under the restricted settings; its log."""
    name = f"probe-{uuid.uuid4().hex[:6]}"
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "restartPolicy": "Never",
                "automountServiceAccountToken": False,
                "containers": [
                    {
                        "name": "probe",
                        "image": f"ghcr.io/kubemill/runner-bash:{VERSION}",
                        "imagePullPolicy": "Never",
                        "command": ["bash", "-c", script],
                        "securityContext": RESTRICTED,
                    }
                ],
            },
        }
    )

    def done() -> str | None:
        phase = cluster.get("pod", name, "-n", namespace).get("status", {}).get("phase")
        return phase if phase in ("Succeeded", "Failed") else None

    phase = wait_for(done, 120, f"pod {name} to finish")
    log = cluster.kubectl("logs", "-n", namespace, name).stdout
    assert phase == "Succeeded", log
    return log


def test_the_node_leaves_the_host_as_it_found_it() -> None:
    before = realnode.host_state()
    with controlplane.running(real_node=True) as plane:
        cluster = Cluster(plane)
        cluster.kubectl("create", "namespace", "probe")
        cluster.kubectl("label", "namespace", "probe", "pod-security.kubernetes.io/enforce=restricted")
        wait_for(
            lambda: cluster.kubectl("get", "sa", "default", "-n", "probe", check=False).returncode == 0,
            30,
            "the default service account",
        )
        log = run_pod(cluster, "probe", "id -u; cat /proc/sys/kernel/panic; touch /x 2>&1 || echo read-only")
        uid, panic, *rest = log.split("\n")
        assert uid == "65532"
        assert "read-only" in "".join(rest)
        assert plane.node is not None
        # The kubelet set its kernel settings (kernel.panic=10, vm.overcommit_memory=1) in the node only.
        inside = [
            subprocess.run(
                plane.node.enter("cat", f"/proc/sys/{name}"), capture_output=True, text=True, check=True
            ).stdout.strip()
            for name in ("kernel/panic", "vm/overcommit_memory")
        ]
        assert inside == ["10", "1"]
        assert panic == before["sysctls"]["kernel/panic"]  # type: ignore[index]  # a container sees the kernel's
        during = realnode.host_state()
        assert during["sysctls"] == before["sysctls"]
        # The comparison sees the node while it runs (else the final check would prove nothing).
        assert during["links"] != before["links"]
        assert during["routes"] != before["routes"]
        assert during["programs"] != before["programs"]
        assert during["iptables"] != before["iptables"]  # the node's egress (HOST_RULES)
    after = realnode.host_state()
    assert after == before, json.dumps({"before": before, "after": after}, indent=1)
