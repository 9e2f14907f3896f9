"""The test control plane itself: what later tiers rely on (Jobs run as local processes, logs, volumes,
status, RBAC, admission, CronJobs, deletion and deadlines, many pods at once)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from tests.conftest import Cluster, wait_for

pytestmark = pytest.mark.cluster
TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"


def job(name: str, command: list[str], **pod_spec: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": [{"name": "main", "image": "python:3.12-slim", "command": command}],
    }
    spec.update(pod_spec)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {"backoffLimit": 0, "template": {"spec": spec}},
    }


def pod_of(cluster: Cluster, namespace: str, job_name: str) -> dict[str, Any]:
    pods = cluster.get("pods", "-n", namespace, "-l", f"job-name={job_name}")["items"]
    assert len(pods) == 1, pods
    return pods[0]  # type: ignore[no-any-return]


def test_job_runs_python_and_logs_reach_kubectl(cluster: Cluster, namespace: str) -> None:
    cluster.apply(
        job("hello", ["python3", "-c", "import sys; print('hello', sys.argv[1:])", "from-a-job"]),
        "-n",
        namespace,
    )
    cluster.kubectl("wait", "-n", namespace, "--for=condition=complete", "job/hello", "--timeout=60s")
    assert cluster.kubectl("logs", "-n", namespace, "job/hello").stdout == "hello ['from-a-job']\n"
    pod = pod_of(cluster, namespace, "hello")
    assert pod["status"]["phase"] == "Succeeded"
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (0, "Completed")


def test_failing_container_fails_its_job_with_exit_code_and_termination_message(
    cluster: Cluster, namespace: str
) -> None:
    script = "open('/dev/termination-log', 'w').write('gave up'); raise SystemExit(3)"
    cluster.apply(job("fails", ["python3", "-c", script]), "-n", namespace)
    cluster.kubectl("wait", "-n", namespace, "--for=condition=failed", "job/fails", "--timeout=60s")
    pod = pod_of(cluster, namespace, "fails")
    assert pod["status"]["phase"] == "Failed"
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"], terminated["message"]) == (3, "Error", "gave up")


def test_configmap_secret_projected_and_env_reach_the_container(cluster: Cluster, namespace: str) -> None:
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "code"},
            "data": {"main.py": "print('from a configmap')", "other": "x"},
        },
        "-n",
        namespace,
    )
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "creds"},
            "data": {"password": base64.b64encode(b"s3cret").decode()},
        },
        "-n",
        namespace,
    )
    script = (
        "import json, os, pathlib\n"
        "print(json.dumps({\n"
        " 'code': pathlib.Path('/var/run/kubemill/code/main.py').read_text(),\n"
        " 'other_absent': not pathlib.Path('/var/run/kubemill/code/other').exists(),\n"
        " 'password': pathlib.Path('/var/run/kubemill/secrets/password').read_text(),\n"
        " 'ns': pathlib.Path('/etc/podinfo/namespace').read_text(),\n"
        " 'env': [os.environ['FROM_SECRET'], os.environ['POD_NAME'].startswith('volumes-'),\n"
        "         os.environ['PLAIN']],\n"
        f" 'token': bool(pathlib.Path({TOKEN!r}).read_text()),\n"
        " 'scratch': pathlib.Path('/scratch').is_dir(),\n"
        "}))\n"
    )
    container = {
        "name": "main",
        "image": "python:3.12-slim",
        "command": ["python3", "-c", script],
        "env": [
            {"name": "FROM_SECRET", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
            {"name": "PLAIN", "value": "$(FROM_SECRET)-expanded"},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        ],
        "volumeMounts": [
            {"name": "code", "mountPath": "/var/run/kubemill/code", "readOnly": True},
            {"name": "creds", "mountPath": "/var/run/kubemill/secrets", "readOnly": True},
            {"name": "podinfo", "mountPath": "/etc/podinfo"},
            {"name": "scratch", "mountPath": "/scratch"},
        ],
    }
    volumes = [
        {"name": "code", "configMap": {"name": "code", "items": [{"key": "main.py", "path": "main.py"}]}},
        {"name": "creds", "secret": {"secretName": "creds"}},
        {
            "name": "podinfo",
            "projected": {
                "sources": [
                    {
                        "downwardAPI": {
                            "items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]
                        }
                    }
                ]
            },
        },
        {"name": "scratch", "emptyDir": {}},
    ]
    cluster.apply(job("volumes", ["unused"], containers=[container], volumes=volumes), "-n", namespace)
    cluster.kubectl("wait", "-n", namespace, "--for=condition=complete", "job/volumes", "--timeout=60s")
    seen = json.loads(cluster.kubectl("logs", "-n", namespace, "job/volumes").stdout)
    assert seen == {
        "code": "print('from a configmap')",
        "other_absent": True,
        "password": "s3cret",
        "ns": namespace,
        "env": ["s3cret", True, "s3cret-expanded"],
        "token": True,
        "scratch": True,
    }


def test_an_emptydir_over_tmp_hides_nothing_the_pod_needs(cluster: Cluster, namespace: str) -> None:
    """Restricted pods mount an emptyDir at /tmp; the cluster's state (volume sources, termination files) and
    possibly the checkout live under /tmp on the host: the pod still gets its files and tools."""
    cluster.apply(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}, "data": {"k": "v"}},
        "-n",
        namespace,
    )
    script = "cat /etc/cfg/k; echo; kubemill --help | head -1; ls -A /tmp | grep -c scratch; touch /tmp/x"
    spec = job("tmp", ["sh", "-c", script], securityContext={"runAsUser": 65532, "runAsNonRoot": True})
    pod = spec["spec"]["template"]["spec"]
    pod["containers"][0]["command"] = ["sh", "-c", f"mkdir /tmp/scratch && {script}"]
    pod["containers"][0]["volumeMounts"] = [
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "cfg", "mountPath": "/etc/cfg"},
    ]
    pod["volumes"] = [{"name": "tmp", "emptyDir": {}}, {"name": "cfg", "configMap": {"name": "cfg"}}]
    cluster.apply(spec, "-n", namespace)
    cluster.kubectl("wait", "-n", namespace, "--for=condition=complete", "job/tmp", "--timeout=60s")
    assert cluster.kubectl("logs", "-n", namespace, "job/tmp").stdout.splitlines() == [
        "v",
        "usage: kubemill [-h] COMMAND ...",
        "1",
    ]
    missing = job("tmp-missing", ["/no/such/tool"])
    missing["spec"]["template"]["spec"]["containers"][0]["volumeMounts"] = [
        {"name": "tmp", "mountPath": "/tmp"}
    ]
    missing["spec"]["template"]["spec"]["volumes"] = [{"name": "tmp", "emptyDir": {}}]
    cluster.apply(missing, "-n", namespace)
    cluster.kubectl("wait", "-n", namespace, "--for=condition=failed", "job/tmp-missing", "--timeout=60s")
    state = pod_of(cluster, namespace, "tmp-missing")["status"]["containerStatuses"][0]["state"]["terminated"]
    assert state["reason"] == "StartError"


def test_pod_with_a_missing_binary_fails_with_a_clear_reason(cluster: Cluster, namespace: str) -> None:
    cluster.apply(job("missing", ["/no/such/binary", "--flag"]), "-n", namespace)
    cluster.kubectl("wait", "-n", namespace, "--for=condition=failed", "job/missing", "--timeout=60s")
    terminated = pod_of(cluster, namespace, "missing")["status"]["containerStatuses"][0]["state"][
        "terminated"
    ]
    assert terminated["reason"] == "StartError"
    assert terminated["exitCode"] == 128
    assert '"/no/such/binary": executable file not found' in terminated["message"]


def test_restricted_pod_runs_as_its_non_root_user_without_a_token(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")
    sc = {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    script = f"import os, pathlib; print(os.getuid(), pathlib.Path({TOKEN!r}).exists())"
    spec = job("restricted", ["python3", "-c", script], automountServiceAccountToken=False)
    spec["spec"]["template"]["spec"]["containers"][0]["securityContext"] = sc
    cluster.apply(spec, "-n", namespace)
    cluster.kubectl("wait", "-n", namespace, "--for=condition=complete", "job/restricted", "--timeout=60s")
    assert cluster.kubectl("logs", "-n", namespace, "job/restricted").stdout.split() == ["65532", "False"]
    # The same pod without the security context is refused by Pod Security admission.
    bad = job("privileged", ["true"])
    bad["kind"], bad["apiVersion"] = "Pod", "v1"
    bad["spec"] = bad["spec"]["template"]["spec"]
    refused = cluster.apply(bad, "-n", namespace, check=False)
    assert refused.returncode != 0
    assert 'violates PodSecurity "restricted:latest"' in refused.stderr


def test_rbac_denies_mallory_and_allows_a_bound_user(cluster: Cluster, namespace: str) -> None:
    denied = cluster.kubectl("get", "pods", "-n", namespace, user="mallory", check=False)
    assert denied.returncode != 0
    assert 'User "mallory@example.com" cannot list resource "pods"' in denied.stderr
    cluster.kubectl(
        "create", "rolebinding", "bob-view", "--clusterrole=view", "--user=bob@example.com", "-n", namespace
    )
    wait_for(
        lambda: cluster.kubectl("get", "pods", "-n", namespace, user="bob", check=False).returncode == 0,
        10,
        "bob's view binding to take effect",
    )
    assert (
        cluster.kubectl(
            "auth", "can-i", "list", "pods", "-n", namespace, user="mallory", check=False
        ).stdout.strip()
        == "no"
    )
    groups = cluster.kubectl("auth", "whoami", "-o", "json", user="alice").stdout
    assert {"managers", "kubemill-users"} <= set(json.loads(groups)["status"]["userInfo"]["groups"])


def test_validating_admission_policy_is_enforced(cluster: Cluster, namespace: str) -> None:
    cluster.apply(
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": f"{namespace}-labels"},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {
                    "resourceRules": [
                        {
                            "apiGroups": [""],
                            "apiVersions": ["v1"],
                            "operations": ["CREATE"],
                            "resources": ["configmaps"],
                        }
                    ]
                },
                "validations": [
                    {
                        "expression": "has(object.metadata.labels) && 'team' in object.metadata.labels",
                        "message": "every ConfigMap needs a team label",
                    }
                ],
            },
        }
    )
    cluster.apply(
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": f"{namespace}-labels"},
            "spec": {
                "policyName": f"{namespace}-labels",
                "validationActions": ["Deny"],
                "matchResources": {
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
                },
            },
        }
    )
    unlabelled = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}

    def denied() -> str | None:
        r = cluster.apply(
            dict(unlabelled, metadata={"name": "probe"}), "-n", namespace, "--dry-run=server", check=False
        )
        return r.stderr if r.returncode != 0 else None

    message = wait_for(denied, 30, "the policy to be enforced")
    assert "every ConfigMap needs a team label" in message
    cluster.apply(dict(unlabelled, metadata={"name": "ok", "labels": {"team": "a"}}), "-n", namespace)
    cluster.kubectl("delete", "validatingadmissionpolicybinding", f"{namespace}-labels")
    cluster.kubectl("delete", "validatingadmissionpolicy", f"{namespace}-labels")


def test_deletion_sends_sigterm_then_the_pod_goes_away(cluster: Cluster, namespace: str) -> None:
    script = (
        "import signal, sys, time\n"
        "def bye(*_):\n print('got SIGTERM', flush=True); sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, bye)\nprint('ready', flush=True)\ntime.sleep(600)\n"
    )
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "sleeper"},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 20,
            "containers": [
                {"name": "main", "image": "python:3.12-slim", "command": ["python3", "-c", script]}
            ],
        },
    }
    cluster.apply(pod, "-n", namespace)
    wait_for(
        lambda: "ready" in cluster.kubectl("logs", "-n", namespace, "sleeper", check=False).stdout,
        60,
        "the sleeper to start",
    )
    # Follow the logs while deleting: the handler's line must arrive before the pod is gone.
    cluster.kubectl("delete", "pod", "sleeper", "-n", namespace, "--wait=true", "--timeout=30s")
    gone = cluster.kubectl("get", "pod", "sleeper", "-n", namespace, check=False)
    assert "NotFound" in gone.stderr


def test_active_deadline_fails_the_pod(cluster: Cluster, namespace: str) -> None:
    spec = job("slow", ["python3", "-c", "import time; time.sleep(600)"], activeDeadlineSeconds=2)
    cluster.apply(spec, "-n", namespace)
    cluster.kubectl("wait", "-n", namespace, "--for=condition=failed", "job/slow", "--timeout=60s")
    pod = wait_for(
        lambda: next(
            (
                p
                for p in cluster.get("pods", "-n", namespace)["items"]
                if p["status"].get("reason") == "DeadlineExceeded"
            ),
            None,
        ),
        30,
        "the pod to report DeadlineExceeded",
    )
    assert pod["status"]["phase"] == "Failed"


def test_agent_survives_fifty_concurrent_pods(cluster: Cluster, namespace: str) -> None:
    spec = job("many", ["python3", "-c", "import os; print('done', os.environ['JOB_COMPLETION_INDEX'])"])
    spec["spec"].update({"completions": 50, "parallelism": 50, "completionMode": "Indexed"})
    cluster.apply(spec, "-n", namespace)
    cluster.kubectl(
        "wait", "-n", namespace, "--for=condition=complete", "job/many", "--timeout=240s", timeout=260
    )
    status = cluster.get("job", "many", "-n", namespace)["status"]
    assert status["succeeded"] == 50
    assert status.get("failed", 0) == 0
    # The node stays Ready and takes new work afterwards.
    cluster.apply(job("after", ["python3", "-c", "print('still here')"]), "-n", namespace)
    cluster.kubectl("wait", "-n", namespace, "--for=condition=complete", "job/after", "--timeout=60s")


@pytest.mark.slow
def test_cronjob_fires(cluster: Cluster, namespace: str) -> None:
    cronjob = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": "tick"},
        "spec": {
            "schedule": "* * * * *",
            "jobTemplate": {"spec": job("unused", ["python3", "-c", "print('tick')"])["spec"]},
        },
    }
    cluster.apply(cronjob, "-n", namespace)

    def completed_job() -> str | None:
        jobs = cluster.get("jobs", "-n", namespace)["items"]
        done = [j for j in jobs if j.get("status", {}).get("succeeded")]
        return done[0]["metadata"]["name"] if done else None

    name = wait_for(completed_job, 130, "the CronJob's first Job to complete", interval=1)
    assert cluster.kubectl("logs", "-n", namespace, f"job/{name}").stdout == "tick\n"
    last = cluster.get("cronjob", "tick", "-n", namespace)["status"]
    assert last.get("lastScheduleTime")
