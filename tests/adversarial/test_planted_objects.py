"""Objects planted under the names kubemill computes are never adopted.

kubemill names what it creates deterministically (the code ConfigMap by the code's content hash, the
per-run Secret by the run's name) so that a restart finds its own work (409 on create). Anyone who can
create ConfigMaps or Secrets in the namespace (a pod's ServiceAccount, a tool, a person who may not edit
Scripts) can compute those names too. A planted object used to be adopted as is: its code ran with the
Script's secrets, its args replaced the run's. Now a create that meets an object which does not hold what
kubemill would have written fails the run with `NotOurs`, and nothing from the object runs.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubemill.k8s.builders import code_configmap_name, content_hash, run_secret_name

from tests.conftest import Cluster, finished_scriptrun
from tests.operator_harness import Operator

pytestmark = pytest.mark.cluster
API = "kubemill.dev/v1alpha1"
CODE = "def main(x: str = 'default'):\n    return {'ran': 'the script', 'x': x}\n"
PLANTED = "def main(x: str = 'default'):\n    return {'ran': 'PLANTED'}\n"


def script(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "Script",
        "metadata": {"name": "echo", "namespace": namespace},
        "spec": {"path": "f/plant/echo", "language": "python3", "content": CODE},
    }


def test_a_code_configmap_planted_under_the_content_hash_name_never_runs(
    cluster: Cluster, namespace: str, running_operator: Operator
) -> None:
    name = code_configmap_name(content_hash("python3", CODE))
    planted = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
        "immutable": True,  # as kubemill makes them: only the code differs
        "data": {"main.py": PLANTED},
    }
    cluster.apply(planted)
    cluster.apply(script(namespace))
    status = finished_scriptrun(cluster, namespace, "after-plant", "f/plant/echo", {"x": "a"})
    assert status["phase"] == "Failed", status
    assert status["error"]["name"] == "NotOurs", status["error"]
    assert name in status["error"]["message"] and "data.main.py differs" in status["error"]["message"]

    cluster.kubectl("delete", "configmap", name, "-n", namespace, "--wait")
    status = finished_scriptrun(cluster, namespace, "after-delete", "f/plant/echo", {"x": "b"})
    assert status["phase"] == "Succeeded", status
    assert status["result"] == {"ran": "the script", "x": "b"}


def test_a_run_secret_planted_before_the_run_gives_it_no_args(
    cluster: Cluster, namespace: str, running_operator: Operator
) -> None:
    cluster.apply(script(namespace))
    planted = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": run_secret_name("victim"), "namespace": namespace},
        "stringData": {"args.json": json.dumps({"x": "chosen by the planter"})},
    }
    cluster.apply(planted)
    status = finished_scriptrun(cluster, namespace, "victim", "f/plant/echo", {"x": "chosen by the caller"})
    assert status["phase"] == "Failed", status
    assert status["error"]["name"] == "NotOurs", status["error"]
    assert "chosen by the planter" not in json.dumps(status)
