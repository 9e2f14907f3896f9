"""Workspace storage on a real S3-compatible server (SeaweedFS, tests/objectstore.py): Windmill's S3 helpers
in the Python and TypeScript clients, results over 1 MiB kept there instead of failing (read back by
`kubemill get run -o result` and by a flow's next step), and the storage's key never in what viewers read."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import Cluster, wait_for, workspace_storage
from tests.integration.test_day2_cli import kubemill
from tests.integration.test_operator import finished, script, script_run
from tests.objectstore import ObjectStore, client
from tests.operator_harness import Operator

pytestmark = pytest.mark.cluster

BIG_PY = """import wmill

def main(n: int):
    token = wmill.get_variable("f/ops/token")
    return {"rows": ["x" * 1000] * n, "token": token}
"""
HELPERS_PY = """import wmill

def main():
    put = wmill.write_s3_file({"s3": "reports/today.txt"}, b"hello s3")
    generated = wmill.write_s3_file(None, "generated")
    settings = wmill.get_boto3_connection_settings()
    return {
        "put": put,
        "loaded": wmill.load_s3_file(put).decode(),
        "reader": wmill.load_s3_file_reader("reports/today.txt").read().decode(),
        "generated": generated["s3"].startswith("windmill_uploads/"),
        "generated_content": wmill.load_s3_file(generated).decode(),
        "settings": settings,
    }
"""
HELPERS_TS = """import * as wmill from "windmill-client";

export async function main() {
  const put = await wmill.writeS3File({ s3: "reports/ts.txt" }, "hello from ts");
  const loaded = new TextDecoder().decode(await wmill.loadS3File(put));
  const big = Array.from({ length: 1500 }, (_, i) => "y".repeat(1000) + i);
  const settings = await wmill.denoS3LightClientSettings();
  return { put, loaded, big, bucket: settings.bucket, secret: settings.secretKey };
}
"""
STEP_PY = """import json
import wmill

def main(data: dict):
    return len(json.loads(wmill.load_s3_file(data))["rows"])
"""


def _token(cluster: Cluster, ns: str, value: str) -> None:
    cluster.kubectl("create", "secret", "generic", "token", f"--from-literal=token={value}", "-n", ns)
    cluster.apply(
        {
            "apiVersion": "kubemill.dev/v1alpha1",
            "kind": "Variable",
            "metadata": {"name": "token", "namespace": ns},
            "spec": {
                "path": "f/ops/token",
                "isSecret": True,
                "valueFrom": {"secretKeyRef": {"name": "token", "key": "token"}},
            },
        }
    )


def _viewable(cluster: Cluster, ns: str, name: str) -> str:
    """What a viewer reads of a run: its object, its events, its stored log."""
    run = json.dumps(cluster.get("scriptrun", name, "-n", ns))
    events = cluster.kubectl("get", "events", "-n", ns, "-o", "json").stdout
    logs = kubemill(cluster, "admin", "logs", name, "-n", ns).stdout
    return run + events + logs


def test_a_result_over_1_mib_goes_to_the_workspace_storage_masked(
    running_operator: Operator, cluster: Cluster, namespace: str, object_store: ObjectStore
) -> None:
    ns = namespace
    workspace_storage(cluster, ns, object_store)
    _token(cluster, ns, "tok-7f3a9c2e51")
    cluster.apply(script("big", "f/s3/big", "python3", BIG_PY, resources=["f/ops/token"]), "-n", ns)
    cluster.apply(script_run("big-1", "f/s3/big", {"n": 2000}), "-n", ns)
    status = finished(running_operator, ns, "big-1", timeout=180)["status"]
    assert status["phase"] == "Succeeded", status
    ref = status["resultRef"]
    assert ref["s3"] == f"kubemill/results/{ns}/big-1/result.json" and ref["bytes"] > 2_000_000
    assert "result" not in status
    stored = json.loads(client(object_store).get(ref["s3"]))
    assert len(stored["rows"]) == 2000 and stored["token"] == "***"  # masked before it left the pod
    shown = kubemill(cluster, "admin", "get", "run", "big-1", "-n", ns, "-o", "result")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout) == stored
    tree = kubemill(cluster, "admin", "get", "run", "big-1", "-n", ns)
    assert f"in workspace storage, {ref['s3']}" in tree.stdout, tree.stdout
    viewable = _viewable(cluster, ns, "big-1")
    assert object_store.secret_key not in viewable and "tok-7f3a9c2e51" not in viewable


def test_without_workspace_storage_a_result_over_1_mib_fails_saying_how_to_keep_it(
    running_operator: Operator, cluster: Cluster, namespace: str
) -> None:
    ns = namespace
    cluster.apply(script("big", "f/s3/big", "python3", 'def main():\n    return "z" * 1_300_000\n'), "-n", ns)
    cluster.apply(script_run("big-2", "f/s3/big"), "-n", ns)
    status = finished(running_operator, ns, "big-2", timeout=120)["status"]
    assert status["phase"] == "Failed" and status["error"]["name"] == "ResultTooLarge", status
    assert "kubemill.dev/workspace-storage=true" in status["error"]["message"]


def test_windmill_s3_helpers_in_python_read_and_write_the_workspace_storage(
    running_operator: Operator, cluster: Cluster, restricted_namespace: str, object_store: ObjectStore
) -> None:
    ns = restricted_namespace
    workspace_storage(cluster, ns, object_store)
    cluster.apply(script("helpers", "f/s3/helpers", "python3", HELPERS_PY), "-n", ns)
    cluster.apply(script_run("helpers-1", "f/s3/helpers"), "-n", ns)
    status = finished(running_operator, ns, "helpers-1", timeout=120)["status"]
    assert status["phase"] == "Succeeded", status
    result = status["result"]
    assert result["put"] == {"s3": "reports/today.txt"}
    assert result["loaded"] == result["reader"] == "hello s3"
    assert result["generated"] and result["generated_content"] == "generated"
    assert client(object_store).get("reports/today.txt") == b"hello s3"
    settings = result["settings"]
    assert settings["endpoint_url"] == object_store.endpoint and settings["use_ssl"] is False
    assert settings["aws_access_key_id"] == object_store.access_key
    assert settings["aws_secret_access_key"] == "***"  # the run had it; its result is masked
    assert object_store.secret_key not in _viewable(cluster, ns, "helpers-1")


@pytest.mark.parametrize("language", ["deno", "bun"])
def test_windmill_s3_helpers_in_typescript_and_a_large_result(
    running_operator: Operator, cluster: Cluster, namespace: str, object_store: ObjectStore, language: str
) -> None:
    ns = namespace
    workspace_storage(cluster, ns, object_store)
    cluster.apply(script("helpers-ts", "f/s3/helpers_ts", language, HELPERS_TS), "-n", ns)
    cluster.apply(script_run("ts-1", "f/s3/helpers_ts"), "-n", ns)
    status = finished(running_operator, ns, "ts-1", timeout=180)["status"]
    assert status["phase"] == "Succeeded", status
    assert status["resultRef"]["s3"] == f"kubemill/results/{ns}/ts-1/result.json"
    stored = json.loads(client(object_store).get(status["resultRef"]["s3"]))
    assert stored["put"] == {"s3": "reports/ts.txt"} and stored["loaded"] == "hello from ts"
    assert len(stored["big"]) == 1500 and stored["bucket"] == object_store.bucket
    assert stored["secret"] == "***"


def test_a_flow_step_gets_a_large_result_as_an_s3_object(
    running_operator: Operator, cluster: Cluster, namespace: str, object_store: ObjectStore
) -> None:
    ns = namespace
    workspace_storage(cluster, ns, object_store)
    _token(cluster, ns, "tok-flow-000111")
    cluster.apply(script("big", "f/s3/big", "python3", BIG_PY, resources=["f/ops/token"]), "-n", ns)
    cluster.apply(script("count", "f/s3/count", "python3", STEP_PY), "-n", ns)
    flow: dict[str, Any] = {
        "apiVersion": "kubemill.dev/v1alpha1",
        "kind": "Flow",
        "metadata": {"name": "big-then-count", "namespace": ns},
        "spec": {
            "path": "f/s3/big_then_count",
            "value": {
                "modules": [
                    {
                        "id": "a",
                        "value": {
                            "type": "script",
                            "path": "f/s3/big",
                            "input_transforms": {"n": {"type": "static", "value": 1500}},
                        },
                    },
                    {
                        "id": "b",
                        "value": {
                            "type": "script",
                            "path": "f/s3/count",
                            "input_transforms": {"data": {"type": "javascript", "expr": "results.a"}},
                        },
                    },
                ]
            },
        },
    }
    cluster.apply(flow)
    cluster.apply(
        {
            "apiVersion": "kubemill.dev/v1alpha1",
            "kind": "FlowRun",
            "metadata": {"name": "btc-1", "namespace": ns},
            "spec": {"flowPath": "f/s3/big_then_count", "args": {}},
        }
    )

    def done() -> dict[str, Any] | None:
        status: dict[str, Any] = cluster.get("flowrun", "btc-1", "-n", ns).get("status") or {}
        return status if status.get("phase") in ("Succeeded", "Failed", "Cancelled") else None

    status = wait_for(done, 240, "flowrun btc-1 to finish")
    assert status["phase"] == "Succeeded", status
    assert status["result"] == 1500
