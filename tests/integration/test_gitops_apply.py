"""`kubemill sync` output on the real API server: it applies cleanly (server-side dry-run, then for real with
`kubectl apply -k`), re-applying it changes nothing, and pruning a definition leaves its runs alone.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from kubemill.models.kinds import KINDS_BY_NAME

from tests.conftest import Cluster

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
WORKSPACE = REPO / "examples" / "windmill"
KINDS = ("Script", "Flow", "Schedule", "ResourceType", "Resource", "Variable")
PRUNE = [f"--prune-allowlist=kubemill.dev/v1alpha1/{kind}" for kind in KINDS]


@pytest.fixture(scope="module")
def crds(cluster: Cluster) -> Cluster:
    """crds/ installed, the CRDs of the definitions and runs Established."""
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    names = [f"crd/{KINDS_BY_NAME[k].crd_name}" for k in (*KINDS, "ScriptRun")]
    cluster.kubectl("wait", "--for", "condition=established", "--timeout=60s", *names)
    return cluster


def sync(workspace: Path, out: Path, namespace: str) -> None:
    subprocess.run(
        [str(REPO / ".venv/bin/kubemill"), "sync", str(workspace), "-o", str(out), "--namespace", namespace],
        check=True,
        capture_output=True,
        text=True,
    )


def test_sync_output_passes_a_server_side_dry_run(crds: Cluster, namespace: str, tmp_path: Path) -> None:
    sync(WORKSPACE, tmp_path / "out", namespace)
    out = crds.kubectl("apply", "--server-side", "--dry-run=server", "-k", str(tmp_path / "out")).stdout
    applied = [line for line in out.splitlines() if "serverside-applied (server dry run)" in line]
    assert len(applied) == 15, out  # every generated object, none refused
    assert crds.get("kubemill", "-n", namespace)["items"] == []


def test_sync_output_applies_reapplies_unchanged_and_prunes_without_touching_runs(
    crds: Cluster,
    namespace: str,
    tmp_path: Path,
) -> None:
    workspace = tmp_path / "ws"
    shutil.copytree(WORKSPACE, workspace)
    out = tmp_path / "out"
    sync(workspace, out, namespace)
    crds.kubectl("apply", "-k", str(out))
    scripts = {s["spec"]["path"] for s in crds.get("scripts", "-n", namespace)["items"]}
    assert "f/demo/hello" in scripts and len(scripts) == 6
    flows = crds.get("flows", "-n", namespace)["items"]
    inline = flows[0]["spec"]["value"]["modules"][0]["value"]
    assert inline["content"].startswith("def main(names: str")  # `!inline` resolved

    sync(workspace, out, namespace)  # an unchanged workspace: the same bytes, so nothing to change
    again = crds.kubectl("apply", "-k", str(out)).stdout.splitlines()
    assert again and all(line.endswith(" unchanged") for line in again), again

    # A run of the script, as the operator or a person would create it (never part of the output).
    crds.apply(
        {
            "apiVersion": "kubemill.dev/v1alpha1",
            "kind": "ScriptRun",
            "metadata": {"name": "hello-once", "namespace": namespace},
            "spec": {"scriptPath": "f/demo/hello", "args": {"name": "gitops"}},
        }
    )
    for removed in ("f/demo/hello.py", "f/demo/hello.script.yaml", "f/demo/hello_every_hour.schedule.yaml"):
        (workspace / removed).unlink()
    sync(workspace, out, namespace)
    pruned = crds.kubectl(
        "apply", "-k", str(out), "--prune", "-l", "app.kubernetes.io/managed-by=kubemill-sync", *PRUNE
    ).stdout
    assert "script.kubemill.dev/f-demo-hello pruned" in pruned, pruned
    assert "schedule.kubemill.dev/f-demo-hello-every-hour pruned" in pruned, pruned
    remaining = {s["spec"]["path"] for s in crds.get("scripts", "-n", namespace)["items"]}
    assert remaining == scripts - {"f/demo/hello"}
    assert crds.get("scriptrun", "hello-once", "-n", namespace)["spec"]["scriptPath"] == "f/demo/hello"
