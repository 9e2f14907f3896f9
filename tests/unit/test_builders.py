"""Pure builders of a run's objects: deterministic names, a restricted runner pod, the per-run Secret."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubemill.k8s import builders, jobs
from kubemill.k8s.builders import JobOptions, RunIdentity, RunTarget
from kubemill.models.scripts import RunnerSpec
from kubemill.runners.languages import RunContext

RUN = RunIdentity("team-a", "hello-1", "uid-1")
TARGET = RunTarget(
    path="f/demo/hello", language="python3", code="def main():\n    return 1\n", timeout_seconds=30
)
CONTEXT = RunContext(workspace="team-a", job_id="uid-1", job_path="f/demo/hello")


def job(target: RunTarget = TARGET, attempt: int = 1, keys: tuple[str, ...] = ()) -> dict[str, Any]:
    return jobs.build_job(RUN, target, attempt, ["args.json", *keys], CONTEXT, JobOptions(version="1.2.3"))


def test_names_are_deterministic_dns_labels_even_for_long_run_names() -> None:
    long = "a-very-long-run-name-" * 12
    for name in (
        builders.job_name(long, 3),
        builders.run_secret_name(long),
        builders.result_configmap_name(long),
    ):
        assert len(name) <= 63 and name == name.lower() and not name.endswith("-")
    assert builders.job_name("r", 1) == builders.job_name("r", 1)
    assert builders.job_name("r", 1) != builders.job_name("r", 2)
    assert builders.job_name(long + "x", 1) != builders.job_name(long + "y", 1)


def test_content_hash_changes_with_code_and_language() -> None:
    a = builders.content_hash("python3", "x")
    assert a == builders.content_hash("python3", "x")
    assert a != builders.content_hash("python3", "y")
    assert a != builders.content_hash("bash", "x")


def test_the_runner_pod_meets_the_restricted_standard_and_mounts_no_token() -> None:
    pod = job()["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["restartPolicy"] == "Never"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["runAsUser"] == 65532
    assert {v["name"]: next(k for k in v if k != "name") for v in pod["volumes"]} == {
        "code": "configMap",
        "input": "secret",
        "out": "emptyDir",
        "tmp": "emptyDir",
        "resume": "secret",
        "state": "configMap",
    }
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["HOME"] == "/tmp"
    assert env["WM_WORKSPACE"] == "team-a" and env["WM_JOB_PATH"] == "f/demo/hello"


def test_the_job_never_retries_by_itself_and_carries_the_timeout_and_owner() -> None:
    manifest = job()
    spec = manifest["spec"]
    assert spec["backoffLimit"] == 0
    assert spec["activeDeadlineSeconds"] == 30
    owner = manifest["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
        "ScriptRun",
        "hello-1",
        "uid-1",
        True,
    )
    labels = manifest["metadata"]["labels"]
    assert labels[builders.LABEL_RUN_UID] == "uid-1" and labels[builders.LABEL_ATTEMPT] == "1"
    container = manifest["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "ghcr.io/kubemill/runner-python3:1.2.3"
    assert container["command"] == ["python3", "/opt/kubemill/runner/run.py"]
    assert "activeDeadlineSeconds" not in job(RunTarget(path="f/x/y", language="bash", code="echo"))["spec"]


def test_only_resource_and_variable_files_are_mounted_from_the_run_secret() -> None:
    pod = job(keys=("resource.u.admin.db", "variable.f.ops.token", "kubemill.masks.json"))["spec"][
        "template"
    ]["spec"]
    items = next(v for v in pod["volumes"] if v["name"] == "input")["secret"]["items"]
    assert items == [
        {"key": "args.json", "path": "args.json"},
        {"key": "resource.u.admin.db", "path": "resources/resource.u.admin.db"},
        {"key": "variable.f.ops.token", "path": "resources/variable.f.ops.token"},
    ]


def test_runner_settings_apply_to_the_pod() -> None:
    runner = RunnerSpec(
        image="registry.local/py:1",
        resources={"limits": {"memory": "256Mi"}},
        node_selector={"pool": "runners"},
        service_account_name="runner-sa",
    )
    target = RunTarget(path="f/x/y", language="python3", code="", runner=runner)
    pod = job(target)["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == "registry.local/py:1"
    assert pod["containers"][0]["resources"] == {"limits": {"memory": "256Mi"}}
    assert pod["nodeSelector"] == {"pool": "runners"}
    assert pod["serviceAccountName"] == "runner-sa"


def env_of(built: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in built["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_a_named_service_account_is_an_opt_in_to_its_token_and_the_pod_stays_restricted() -> None:
    runner = RunnerSpec(service_account_name="resource-admin")
    built = job(RunTarget(path="f/x/y", language="python3", code="", runner=runner))
    pod = built["spec"]["template"]["spec"]
    assert (pod["serviceAccountName"], pod["automountServiceAccountToken"]) == ("resource-admin", True)
    assert env_of(built)["KUBEMILL_SERVICE_ACCOUNT"] == "resource-admin"
    assert pod["securityContext"]["runAsNonRoot"] is True
    sc = pod["containers"][0]["securityContext"]
    assert (sc["allowPrivilegeEscalation"], sc["capabilities"]) == (False, {"drop": ["ALL"]})
    # Without one: no token, and the client is told it runs in a pod without an identity.
    plain = job()
    assert "serviceAccountName" not in plain["spec"]["template"]["spec"]
    assert plain["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
    assert env_of(plain)["KUBEMILL_SERVICE_ACCOUNT"] == ""


def test_resume_urls_come_from_an_optional_secret_never_from_env_or_metadata() -> None:
    built = job()
    pod = built["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "resume")
    assert volume["secret"] == {"secretName": f"{RUN.name}-resume", "optional": True, "defaultMode": 0o444}
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "resume")
    assert env_of(built)["KUBEMILL_RESUME_URLS_FILE"] == mount["mountPath"] + "/resume-urls.json"
    assert "KUBEMILL_RESUME_URLS" not in env_of(built)
    assert "resume" not in json.dumps(built["metadata"])


def test_the_run_secret_holds_args_and_exactly_the_files_given() -> None:
    secret = builders.build_run_secret(
        RUN, {"name": "x"}, {"variable.f.a.b": "v", "kubemill.masks.json": "[]"}
    )
    assert secret["metadata"]["name"] == builders.run_secret_name("hello-1")
    assert secret["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert secret["stringData"] == {
        "args.json": json.dumps({"name": "x"}),
        "variable.f.a.b": "v",
        "kubemill.masks.json": "[]",
    }
    assert secret["immutable"] is True


def test_the_code_configmap_is_content_addressed_and_shared() -> None:
    script_owner = RunIdentity("team-a", "hello", "uid-s", kind="Script")
    cm = builders.build_code_configmap("team-a", TARGET, script_owner)
    assert cm["metadata"]["name"] == f"kubemill-code-{TARGET.content_hash}"
    assert cm["data"] == {"main.py": TARGET.code}
    assert cm["metadata"]["ownerReferences"][0]["controller"] is False
    volume = job()["spec"]["template"]["spec"]["volumes"][0]
    assert volume["configMap"]["name"] == cm["metadata"]["name"]


@pytest.mark.parametrize(
    ("problem", "status", "reason"),
    [(None, "True", "Parsed"), (("SyntaxError", "line 2: '[' was never closed"), "False", "SyntaxError")],
)
def test_script_status_says_whether_main_parsed(
    problem: tuple[str, str] | None, status: str, reason: str
) -> None:
    out = builders.build_script_status(
        3, "abc", {"type": "object"} if not problem else None, problem, [], "T1"
    )
    (ready,) = out["conditions"]
    assert (ready["type"], ready["status"], ready["reason"]) == ("Ready", status, reason)
    assert out["observedGeneration"] == 3 and out["contentHash"] == "abc"
    again = builders.build_script_status(4, "abc", None, problem, out["conditions"], "T2")
    assert again["conditions"][0]["lastTransitionTime"] == "T1"  # unchanged condition keeps its time


def test_the_scripts_state_is_mounted_read_only_when_there_is_one() -> None:
    pod = job()["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "state")
    assert volume["configMap"]["name"] == builders.state_configmap_name("f/demo/hello")
    assert volume["configMap"]["optional"] is True
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "state")
    assert mount == {"name": "state", "mountPath": "/var/run/kubemill/state", "readOnly": True}
    inline = jobs.build_job(RUN, TARGET, 1, ["args.json"], RunContext(workspace="w", job_id="j"))
    assert all(v["name"] != "state" for v in inline["spec"]["template"]["spec"]["volumes"])


def test_the_workspace_storage_is_mounted_only_when_the_run_secret_has_it() -> None:
    from kubemill.secrets import WORKSPACE_STORAGE_KEY

    def storage(body: dict[str, Any]) -> tuple[list[str], list[str]]:
        spec = body["spec"]["template"]["spec"]
        items = [i["key"] for v in spec["volumes"] for i in (v.get("secret") or {}).get("items") or []]
        env = [
            e["value"] for e in spec["containers"][0]["env"] if e["name"] == "KUBEMILL_WORKSPACE_STORAGE_FILE"
        ]
        return items, env

    items, env = storage(job(keys=(WORKSPACE_STORAGE_KEY,)))
    assert WORKSPACE_STORAGE_KEY in items and env == [f"/var/run/kubemill/input/{WORKSPACE_STORAGE_KEY}"]
    items, env = storage(job())
    assert WORKSPACE_STORAGE_KEY not in items and env == []


def test_a_same_worker_step_mounts_the_runs_claim_at_shared_and_joins_its_running_peers_node() -> None:
    built = jobs.build_job(RUN, TARGET, 1, (), CONTEXT, shared_claim="order-1-shared")
    pod = built["spec"]["template"]["spec"]
    mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert (mounts[builders.SHARED_DIR], pod["containers"][0]["workingDir"]) == ("shared", "/tmp")
    assert volumes["shared"]["persistentVolumeClaim"] == {"claimName": "order-1-shared"}
    label = built["spec"]["template"]["metadata"]["labels"][builders.LABEL_SHARED]
    (term,) = pod["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    selector = {"matchLabels": {builders.LABEL_SHARED: label}}
    assert term == {"labelSelector": selector, "topologyKey": "kubernetes.io/hostname"}
    other = jobs.build_job(RUN, TARGET, 2, (), CONTEXT, shared_claim="order-1-shared")
    assert other["spec"]["template"]["metadata"]["labels"][builders.LABEL_SHARED] == label
    assert "affinity" not in job()["spec"]["template"]["spec"]
    assert all("persistentVolumeClaim" not in v for v in job()["spec"]["template"]["spec"]["volumes"])
