"""Warm runner pools, the pure half: the attempts a pool may take, what its identity is granted, the claim."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from kubemill.k8s import builders, jobs
from kubemill.k8s import pools as kpools
from kubemill.models.scripts import RunnerSpec
from kubemill.runners import RunContext

RUN = builders.RunIdentity("ns", "run-1", "uid-1")
NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


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


def test_an_offered_job_is_suspended_and_its_grant_names_only_its_own_secret_and_configmaps() -> None:
    offered = kpools.offered(job(), "py", NOW)
    assert offered["spec"]["suspend"] is True
    assert kpools.pool_of(offered) == "py"
    assert offered["spec"]["template"]["metadata"]["labels"][kpools.OFFERED_TO] == "py"
    assert kpools.claim_of(offered) == kpools.Claim(state="offered", offered_at=NOW)
    role, binding = kpools.build_grant(RUN, offered, "py")
    names = {tuple(r["resources"]): r["resourceNames"] for r in role["rules"]}
    assert names[("secrets",)] == [builders.run_secret_name("run-1"), builders.resume_secret_name("run-1")]
    code = builders.content_hash("python3", "def main():\n    return 1\n")
    assert names[("configmaps",)] == [builders.code_configmap_name(code)]
    assert all(r["verbs"] == ["get"] for r in role["rules"])
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": kpools.worker_account("py"), "namespace": "ns"}
    ]
    assert role["metadata"]["ownerReferences"][0]["uid"] == "uid-1"  # it goes with the run


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
    moved = kpools.offered(job(), "py", NOW)
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
