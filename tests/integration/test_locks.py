"""Locked Python scripts on the real control plane: `kubemill lock` pins a dependency, `kubemill sync`
carries the lock into the Script's `spec.lock`, and the runner pod installs exactly it, hash-checked; a
tampered hash fails the run, and a lock that does not parse refuses the run before any Job exists."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubemill.cli import main
from kubemill.gitops import sync_workspace

from tests.conftest import Cluster, wait_for
from tests.integration.test_day2_cli import kubemill
from tests.integration.test_operator import finished, script, script_run
from tests.operator_harness import Operator

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]

CODE = (
    "# requirements:\n# six==1.15.0\n\nimport six\n\n\n"
    "def main(x: str = 'a'):\n    return {'x': six.ensure_text(x), 'six': six.__version__}\n"
)


def locked_and_synced(tmp_path_factory: pytest.TempPathFactory, file: str, code: str) -> dict[str, Any]:
    """The Script manifest `kubemill sync` makes of a workspace holding `f/demo/<file>`, once `kubemill lock`
    locked it."""
    ws = tmp_path_factory.mktemp("ws")
    (ws / "wmill.yaml").write_text("defaultTs: bun\n")
    (ws / "f" / "demo").mkdir(parents=True)
    (ws / "f" / "demo" / file).write_text(code)
    assert main(["lock", "--workspace", str(ws), str(ws / "f")]) == 0
    (manifest,) = sync_workspace(ws).manifests
    return manifest


@pytest.fixture(scope="module")
def synced(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The Script manifest `kubemill sync` makes of a workspace where `kubemill lock` pinned six."""
    return locked_and_synced(tmp_path_factory, "six_user.py", CODE)


def jobs_of(cluster: Cluster, namespace: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = cluster.get("jobs", "-n", namespace)["items"]
    return items


def test_a_synced_lock_is_installed_exactly_in_the_pod(
    running_operator: Operator, cluster: Cluster, restricted_namespace: str, synced: dict[str, Any]
) -> None:
    ns = restricted_namespace
    lock = synced["spec"]["lock"]
    assert lock.startswith("# py: 3.") and "six==1.15.0" in lock and "# hash: six==1.15.0 sha256:" in lock
    cluster.apply({**synced, "metadata": {**synced["metadata"], "namespace": ns}})
    cluster.apply(script_run("six-1", "f/demo/six_user", {"x": "b"}), "-n", ns)
    status = finished(running_operator, ns, "six-1", timeout=180)["status"]
    assert status["phase"] == "Succeeded", status
    assert status["result"] == {"x": "b", "six": "1.15.0"}
    (code,) = [c for c in cluster.get("configmaps", "-n", ns)["items"] if "script.lock" in c.get("data", {})]
    assert code["data"]["script.lock"] == lock


def failed_run(op: Operator, namespace: str, lock: str) -> dict[str, Any]:
    """The error of a run of the Script with `lock`, which must fail."""
    op.cluster.apply(script("six", "f/demo/six_user", "python3", CODE, lock=lock), "-n", namespace)
    op.cluster.apply(script_run("six-2", "f/demo/six_user"), "-n", namespace)
    status = finished(op, namespace, "six-2", timeout=180)["status"]
    assert status["phase"] == "Failed", status
    error: dict[str, Any] = status["error"]
    return error


def test_a_tampered_hash_fails_the_run_in_the_pod(
    running_operator: Operator, cluster: Cluster, namespace: str, synced: dict[str, Any]
) -> None:
    lock = synced["spec"]["lock"]
    for line in lock.splitlines():
        if line.startswith("# hash:"):
            for digest in line.split()[3:]:
                lock = lock.replace(digest, "sha256:" + "0" * 64)
    error = failed_run(running_operator, namespace, lock)
    assert error["name"] == "DependencyError"
    assert "installing the lock's six==1.15.0 failed" in error["message"]
    assert "Hash mismatch for `six==1.15.0`" in error["message"]


def test_a_lock_that_does_not_parse_is_refused_before_any_job(
    running_operator: Operator, cluster: Cluster, namespace: str
) -> None:
    lock = "# py: 3.11\nsix>=1\n"  # not pinned: the runner would install whatever is newest
    error = failed_run(running_operator, namespace, lock)
    assert error["name"] == "ScriptNotReady"
    assert "spec.lock: line 2: 'six>=1' is not a pinned requirement" in error["message"]
    assert jobs_of(cluster, namespace) == []


def test_a_lock_on_a_bash_script_is_refused_by_the_api_server(cluster: Cluster, namespace: str) -> None:
    manifest = script("sh", "f/demo/sh", "bash", "echo 1\n", lock="six==1.15.0\n")
    done = cluster.apply(manifest, "-n", namespace, check=False)
    assert done.returncode != 0
    assert (
        "lock is for python3 or bun scripts (the pinned dependencies `kubemill lock` writes), not bash"
        in (done.stderr)
    )


@pytest.fixture
def deps_cache(cluster: Cluster, restricted_namespace: str) -> Iterator[Path]:
    """The namespace's shared dependency cache, as its administrator provides it: the claim `kubemill-deps`
    bound to a PersistentVolume (a host folder the node agent mounts; the test control plane has no
    provisioner). Yields the folder."""
    ns = restricted_namespace
    folder = REPO / ".cache" / "volumes" / ns
    folder.mkdir(parents=True)
    folder.chmod(0o777)
    volume = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": ns},
        "spec": {
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteOnce"],
            "hostPath": {"path": str(folder)},
            "claimRef": {"namespace": ns, "name": "kubemill-deps"},
        },
    }
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "kubemill-deps", "namespace": ns},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "1Gi"}},
            "volumeName": ns,
            "storageClassName": "",
        },
    }
    volume["spec"]["storageClassName"] = ""
    cluster.apply(volume)
    cluster.apply(claim)
    wait_for(
        lambda: cluster.get("pvc", "kubemill-deps", "-n", ns).get("status", {}).get("phase") == "Bound",
        60,
        "the claim kubemill-deps Bound",
    )
    try:
        yield folder
    finally:
        cluster.kubectl("delete", "persistentvolume", ns, "--wait=false")
        shutil.rmtree(folder, ignore_errors=True)


WRITES = (
    "# requirements:\n# six==1.15.0\n\nimport os\nimport six\n\n\n"
    "def main():\n    shared = os.environ['KUBEMILL_SHARED_DEPS_DIR']\n"
    "    try:\n        open(os.path.join(shared, 'evil.pth'), 'w').write('import evil')\n"
    "        return 'wrote'\n    except OSError as exc:\n        return type(exc).__name__\n"
)


def test_a_shared_cache_serves_the_second_pod_and_no_script_can_write_it(
    running_operator: Operator,
    cluster: Cluster,
    restricted_namespace: str,
    synced: dict[str, Any],
    deps_cache: Path,
) -> None:
    ns = restricted_namespace
    lock = synced["spec"]["lock"]
    cluster.apply(script("six", "f/demo/six_user", "python3", CODE, lock=lock), "-n", ns)

    def run(name: str) -> None:
        cluster.apply(script_run(name, "f/demo/six_user"), "-n", ns)
        status = finished(running_operator, ns, name, timeout=180)["status"]
        assert status["phase"] == "Succeeded", status
        assert status["result"] == {"x": "a", "six": "1.15.0"}
        logs = kubemill(cluster, "admin", "logs", name, "-n", ns)  # the init step installed, not the run
        assert logs.returncode == 0 and "installing" not in logs.stdout, logs

    run("cached-1")
    (install,) = deps_cache.glob("python/py*/lock-*")  # one install, under the lock's key
    assert (install / "six.py").is_file()
    for folder in (deps_cache, install.parent, deps_cache / "uv"):  # the second pod could not install again
        folder.chmod(0o555)
    try:
        run("cached-2")
    finally:
        for folder in (deps_cache, install.parent, deps_cache / "uv"):
            folder.chmod(0o777)
    cluster.apply(script("writer", "f/demo/writer", "python3", WRITES, lock=lock), "-n", ns)
    cluster.apply(script_run("writer-1", "f/demo/writer"), "-n", ns)
    status = finished(running_operator, ns, "writer-1", timeout=180)["status"]
    assert status["phase"] == "Succeeded", status
    assert status["result"] in ("OSError", "PermissionError")  # read-only for scripts
    assert not list(deps_cache.rglob("evil.pth"))
