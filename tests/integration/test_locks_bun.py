"""Locked Bun scripts on the real control plane: `kubemill lock` writes Windmill's Bun lock, `kubemill sync`
carries it into the Script's `spec.lock`, and the runner (on the node agent, as a pod would run it) installs
exactly the lock with `bun install --frozen-lockfile`, auto-install off; an import the lock lacks and a
tampered integrity hash fail the run naming the package, and the API server refuses a lock on Deno."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kubemill.runners.lockfile import parse_bun_lock

from tests.conftest import Cluster
from tests.integration.test_day2_cli import kubemill
from tests.integration.test_locks import deps_cache, locked_and_synced  # noqa: F401 (deps_cache: a fixture)
from tests.integration.test_operator import finished, script, script_run
from tests.operator_harness import Operator

pytestmark = pytest.mark.cluster

CODE = (
    'import isOdd from "npm:is-odd@3.0.1";\n\n'
    "export async function main(n: number = 3) {\n  return { odd: isOdd(n), n };\n}\n"
)
UNLISTED = 'import leftPad from "left-pad";\n\nexport function main() {\n  return leftPad("x", 3);\n}\n'


@pytest.fixture(scope="module")
def synced(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The Script manifest `kubemill sync` makes of a workspace where `kubemill lock` locked is-odd."""
    return locked_and_synced(tmp_path_factory, "odd.bun.ts", CODE)


def run_of(op: Operator, namespace: str, name: str, content: str, lock: str) -> dict[str, Any]:
    """The status of a finished run of a Bun Script holding `content` and `lock`."""
    op.cluster.apply(script("odd", "f/demo/odd", "bun", content, lock=lock), "-n", namespace)
    op.cluster.apply(script_run(name, "f/demo/odd", {"n": 5}), "-n", namespace)
    status: dict[str, Any] = finished(op, namespace, name, timeout=180)["status"]
    return status


def test_a_synced_bun_lock_is_installed_exactly_in_the_pod(
    running_operator: Operator, cluster: Cluster, restricted_namespace: str, synced: dict[str, Any]
) -> None:
    ns = restricted_namespace
    lock = synced["spec"]["lock"]
    assert synced["spec"]["language"] == "bun"
    assert parse_bun_lock(lock).packages()["is-odd"][0] == "is-odd@3.0.1"
    cluster.apply({**synced, "metadata": {**synced["metadata"], "namespace": ns}})
    cluster.apply(script_run("odd-1", "f/demo/odd", {"n": 5}), "-n", ns)
    status = finished(running_operator, ns, "odd-1", timeout=180)["status"]
    assert status["phase"] == "Succeeded", status
    assert status["result"] == {"odd": True, "n": 5}
    (code,) = [c for c in cluster.get("configmaps", "-n", ns)["items"] if "script.lock" in c.get("data", {})]
    assert code["data"]["script.lock"] == lock


def test_an_import_the_lock_lacks_fails_the_run_naming_it(
    running_operator: Operator, namespace: str, synced: dict[str, Any]
) -> None:
    status = run_of(running_operator, namespace, "odd-2", UNLISTED, synced["spec"]["lock"])
    assert status["phase"] == "Failed", status
    assert status["error"]["name"] == "DependencyError"
    assert status["error"]["message"].startswith(
        "main.ts imports left-pad, which the script's lock does not contain (it has is-odd@3.0.1)"
    )


def test_a_tampered_integrity_fails_the_run_in_the_pod(
    running_operator: Operator, namespace: str, synced: dict[str, Any]
) -> None:
    lock = synced["spec"]["lock"]
    integrity = parse_bun_lock(lock).packages()["is-odd"][1]
    status = run_of(
        running_operator, namespace, "odd-3", CODE, lock.replace(integrity, "sha512-" + "A" * 86 + "==")
    )
    assert status["phase"] == "Failed", status
    assert status["error"]["name"] == "DependencyError"
    assert "installing the lock's is-odd@3.0.1 failed" in status["error"]["message"]
    assert "Integrity check failed for tarball: is-odd" in status["error"]["message"]


def test_a_bun_lock_that_does_not_parse_is_refused_before_any_job(
    running_operator: Operator, cluster: Cluster, namespace: str
) -> None:
    status = run_of(
        running_operator, namespace, "odd-4", CODE, '{"dependencies": {}}\n//bun.lock\n{\n  "a": ]\n'
    )
    assert status["phase"] == "Failed", status
    assert status["error"]["name"] == "ScriptNotReady"
    assert "the Script's spec.lock: line 4: the bun.lock part is not JSON" in status["error"]["message"]
    assert cluster.get("jobs", "-n", namespace)["items"] == []


def test_a_lock_on_a_deno_script_is_refused_by_the_api_server_naming_the_language(
    cluster: Cluster, namespace: str, synced: dict[str, Any]
) -> None:
    manifest = script("odd", "f/demo/odd", "deno", CODE, lock=synced["spec"]["lock"])
    done = cluster.apply(manifest, "-n", namespace, check=False)
    assert done.returncode != 0
    assert "spec.lock: Invalid value" in done.stderr
    assert (
        "lock is for python3 or bun scripts (the pinned dependencies `kubemill lock` writes), not deno"
        in (done.stderr)
    )


WRITES = (
    'import isOdd from "npm:is-odd@3.0.1";\nimport { writeFileSync } from "node:fs";\n\n'
    "export function main() {\n  try {\n"
    '    writeFileSync(process.env.KUBEMILL_SHARED_DEPS_DIR + "/evil.js", "x");\n    return "wrote";\n'
    "  } catch (error) {\n    return String((error as { code?: string }).code);\n  }\n}\n"
)


def test_a_shared_cache_serves_the_second_bun_pod_and_no_script_can_write_it(
    running_operator: Operator,
    cluster: Cluster,
    restricted_namespace: str,
    synced: dict[str, Any],
    deps_cache: Path,  # noqa: F811 - the fixture
) -> None:
    """With the namespace's `kubemill-deps` claim, the init step installs the lock into it once; a second
    pod finds it there (the cache is read-only to it: it could not install again) and the script's own
    container cannot write the cache."""
    ns = restricted_namespace
    lock = synced["spec"]["lock"]
    cluster.apply(script("odd", "f/demo/odd", "bun", CODE, lock=lock), "-n", ns)

    def run(name: str) -> None:
        cluster.apply(script_run(name, "f/demo/odd", {"n": 5}), "-n", ns)
        status = finished(running_operator, ns, name, timeout=180)["status"]
        assert status["phase"] == "Succeeded", status
        assert status["result"] == {"odd": True, "n": 5}
        logs = kubemill(cluster, "admin", "logs", name, "-n", ns)  # the init step installed, not the run
        assert logs.returncode == 0, logs
        assert "installing" not in logs.stdout, logs.stdout

    run("bun-cached-1")
    (install,) = deps_cache.glob("bun/lock-*")  # one install, under the lock's key
    assert (install / "node_modules" / "is-odd" / "package.json").is_file()
    for folder in (deps_cache, install.parent):  # the second pod could not install again
        folder.chmod(0o555)
    try:
        run("bun-cached-2")
    finally:
        for folder in (deps_cache, install.parent):
            folder.chmod(0o777)
    cluster.apply(script("writer", "f/demo/writer", "bun", WRITES, lock=lock), "-n", ns)
    cluster.apply(script_run("writer-1", "f/demo/writer"), "-n", ns)
    status = finished(running_operator, ns, "writer-1", timeout=180)["status"]
    assert status["phase"] == "Succeeded", status
    assert status["result"] in ("EROFS", "EACCES"), status  # read-only for scripts
    assert not list(deps_cache.rglob("evil.js"))
