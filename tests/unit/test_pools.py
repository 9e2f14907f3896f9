"""Warm runner pools, the pure half: the attempts a pool may take, their sealed files, the claim."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kubemill.k8s import builders, jobs, pool_inputs
from kubemill.k8s import pools as kpools
from kubemill.models.scripts import RunnerSpec
from kubemill.runners import RunContext

RUN = builders.RunIdentity("ns", "run-1", "uid-1")
NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
CODE = "def main():\n    return 1\n"
CODE_HASH = builders.content_hash("python3", CODE)


def job(**runner: Any) -> dict[str, Any]:
    target = builders.RunTarget(
        path="f/a/b", language="python3", code="def main():\n    return 1\n", runner=RunnerSpec(**runner)
    )
    return jobs.build_job(RUN, target, 1, ["args.json"], RunContext(workspace="ns", job_id="uid-1"))


def test_an_attempt_needing_more_than_a_pool_gives_runs_as_a_job_and_says_why() -> None:
    assert kpools.offer_problem(job()) is None
    assert "serviceAccountName" in str(kpools.offer_problem(job(service_account_name="robot")))
    assert "nodeSelector" in str(kpools.offer_problem(job(node_selector={"a": "b"})))
    assert "resources" in str(kpools.offer_problem(job(resources={"limits": {"cpu": "1"}})))
    target = builders.RunTarget(path="f/a/b", language="python3", code="def main():\n    return 1\n")
    context = RunContext(workspace="ns", job_id="uid-1")
    shared = jobs.build_job(RUN, target, 1, ["args.json"], context, shared_claim="flow-1-shared")
    assert "same_worker" in str(kpools.offer_problem(shared))  # a pool worker has no ./shared volume


def files_of(offered_job: dict[str, Any]) -> dict[str, Any]:
    return pool_inputs.volume_files(
        offered_job,
        {
            ("ConfigMap", builders.code_configmap_name(CODE_HASH)): {"main.py": CODE.encode()},
            ("Secret", builders.run_secret_name("run-1")): {"args.json": b'{"token": "hunter2"}'},
        },
    )


def test_an_offered_job_is_suspended_and_carries_its_files_sealed_for_its_pool_only() -> None:
    plain = job()
    key = pool_inputs.new_key()
    files = files_of(plain)
    # The files the pod would mount: the code, the args; the optional resume and state volumes absent.
    assert files["code"] == {"main.py": b"def main():\n    return 1\n"}
    assert files["input"] == {"args.json": b'{"token": "hunter2"}'}
    assert files["resume"] == {}
    sealed = pool_inputs.seal(key, "ns", plain["metadata"]["name"], "py", files)
    offered = kpools.offered(plain, "py", NOW, sealed)
    assert offered["spec"]["suspend"] is True
    assert kpools.pool_of(offered) == "py"
    assert offered["spec"]["template"]["metadata"]["labels"][kpools.OFFERED_TO] == "py"
    assert kpools.claim_of(offered) == kpools.Claim(state="offered", offered_at=NOW)
    text = json.dumps(offered)
    assert "hunter2" not in text
    assert base64.b64encode(b"hunter2").decode() not in text  # whoever reads Jobs sees ciphertext only
    name = plain["metadata"]["name"]
    sealed_on_job = offered["metadata"]["annotations"][pool_inputs.INPUTS]
    assert pool_inputs.unseal(key, "ns", name, "py", sealed_on_job) == files


@pytest.mark.parametrize(
    ("why", "namespace", "job_name", "pool", "other_key"),
    [
        ("another pool's key", "ns", None, "py", True),
        ("offered to another pool", "ns", None, "other", False),
        ("copied onto another Job", "ns", "run-2-a1-0000", "py", False),
        ("copied into another namespace", "ns2", None, "py", False),
    ],
)
def test_sealed_inputs_do_not_open_elsewhere(
    why: str, namespace: str, job_name: str | None, pool: str, other_key: bool
) -> None:
    plain = job()
    key = pool_inputs.new_key()
    sealed = pool_inputs.seal(key, "ns", plain["metadata"]["name"], "py", files_of(plain))
    with pytest.raises(pool_inputs.SealError, match="do not open"):
        pool_inputs.unseal(
            pool_inputs.new_key() if other_key else key,
            namespace,
            job_name or plain["metadata"]["name"],
            pool,
            sealed,
        )


def test_altered_sealed_inputs_do_not_open() -> None:
    plain = job()
    key = pool_inputs.new_key()
    sealed = pool_inputs.seal(key, "ns", "j", "py", files_of(plain))
    raw = bytearray(base64.b64decode(sealed))
    raw[-1] ^= 1
    for text in (base64.b64encode(bytes(raw)).decode(), sealed[:-8], "not base64!"):
        with pytest.raises(pool_inputs.SealError):
            pool_inputs.unseal(key, "ns", "j", "py", text)


def test_a_required_volume_whose_object_is_missing_is_named() -> None:
    with pytest.raises(KeyError, match="Secret run-1-input"):
        pool_inputs.volume_files(job(), {("ConfigMap", builders.code_configmap_name(CODE_HASH)): {}})


def test_the_pool_key_round_trips_through_its_secret_and_its_mounted_file() -> None:
    key = pool_inputs.new_key()
    pool = {"metadata": {"name": "py", "namespace": "ns", "uid": "u"}, "spec": {"language": "python3"}}
    secret = kpools.build_key_secret(pool, key)
    text = secret["stringData"][pool_inputs.KEY_FILE]
    assert pool_inputs.key_from_file_text(text + "\n") == key
    data = {pool_inputs.KEY_FILE: base64.b64encode(text.encode()).decode()}  # as the API returns it
    assert pool_inputs.key_from_secret_data(data) == key
    short = base64.b64encode(b"short").decode()
    assert pool_inputs.key_from_secret_data({pool_inputs.KEY_FILE: short}) is None
    assert pool_inputs.key_from_file_text("c2hvcnQ=") is None
    deployment = next(o for o in kpools.build_pool_objects(pool, "a", "r") if o["kind"] == "Deployment")
    containers = {c["name"]: c for c in deployment["spec"]["template"]["spec"]["containers"]}
    mounts = {c: {m["name"] for m in containers[c]["volumeMounts"]} for c in containers}
    assert "key" in mounts["agent"]
    assert all("key" not in names for c, names in mounts.items() if c != "agent")  # the runner has no key


def test_a_claim_is_renewed_and_lapses_after_the_lease() -> None:
    claimed = kpools.claim_of(
        {
            "metadata": {
                "annotations": {
                    kpools.STATE: "claimed",
                    kpools.WORKER: "w",
                    kpools.RENEWED_AT: "2026-12-02T12:00:00.000000Z",
                }
            }
        }
    )
    assert not claimed.expired(NOW + timedelta(seconds=9), 10)
    assert claimed.expired(NOW + timedelta(seconds=11), 10)


def test_each_step_of_the_claim_tests_the_state_it_moves_from() -> None:
    def tests(patch: list[dict[str, Any]]) -> list[tuple[str, str]]:
        return [(op["path"].rsplit("~1", 1)[-1], op["value"]) for op in patch if op["op"] == "test"]

    assert tests(kpools.claim_patch("w", NOW)) == [("pool-state", "offered")]
    assert tests(kpools.renew_patch("w", NOW)) == [("pool-state", "claimed"), ("pool-worker", "w")]
    assert tests(kpools.report_patch("w", "{}")) == [("pool-state", "claimed"), ("pool-worker", "w")]
    assert tests(kpools.lost_patch("w")) == [("pool-state", "claimed"), ("pool-worker", "w")]
    assert tests(kpools.fall_back_patch("why")) == [("pool-state", "offered")]
    assert {"op": "replace", "path": "/spec/suspend", "value": False} in kpools.fall_back_patch("why")


def test_the_runner_container_has_no_token_and_the_agent_has_only_the_pools_jobs() -> None:
    body = {"metadata": {"name": "py", "namespace": "ns", "uid": "u"}, "spec": {"language": "python3"}}
    sa, role, _, deployment = kpools.build_pool_objects(body, "agent:1", "runner:1")
    assert sa["automountServiceAccountToken"] is False
    assert role["rules"] == [
        {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get", "list", "watch", "patch"]}
    ]
    pod = deployment["spec"]["template"]["spec"]
    agent, runner = pod["containers"]
    assert pod["automountServiceAccountToken"] is False
    assert any(m["name"] == "token" for m in agent["volumeMounts"])
    assert not any(m["name"] == "token" for m in runner["volumeMounts"])
    assert runner["command"][-2:] == ["--listen", kpools.SOCKET]


def test_a_job_relabelled_after_the_fact_is_no_pool_job() -> None:
    """Whoever may patch Jobs (a pool's identity) can change a Job's labels and annotations, not the pod
    template of a Job that has started: only the template says which pool the operator offered it to."""
    notes = {kpools.STATE: "done", kpools.OUTCOME: '{"result": "forged"}'}
    relabelled = job()
    relabelled["metadata"]["labels"] = {**relabelled["metadata"].get("labels", {}), kpools.LABEL_POOL: "py"}
    relabelled["metadata"]["annotations"] = {**(relabelled["metadata"].get("annotations") or {}), **notes}
    assert kpools.pool_of(relabelled) is None
    moved = kpools.offered(job(), "py", NOW, "sealed")
    moved["metadata"]["labels"][kpools.LABEL_POOL] = "other"  # offered to py, relabelled to another pool
    assert kpools.pool_of(moved) is None


def test_the_default_agent_image_is_the_image_the_operator_is_built_as() -> None:
    """Without --pool-agent-image the workers' agent runs the operator image, as the Dockerfile, the chart and
    scripts/build-images name it: a name nothing builds leaves a real node's workers in ImagePullBackOff."""
    from pathlib import Path

    from kubemill.operator.pools import AGENT_IMAGE

    repo = Path(__file__).resolve().parents[2]
    assert AGENT_IMAGE.format(version="1.2.3") == "ghcr.io/kubemill/operator:1.2.3"
    assert 'tag="ghcr.io/kubemill/operator:$VERSION"' in (repo / "scripts/build-images").read_text()
