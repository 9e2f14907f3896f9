"""The Job of a script run's attempt, pure: its pod under the restricted Pod Security Standard (non-root uid
65532, read-only root filesystem, no capabilities, `RuntimeDefault` seccomp, no service-account token unless
the Script names a ServiceAccount), the code ConfigMap and per-run Secret mounted for the runner, emptyDirs
for what a run writes, and the shared claims a run may mount (a `same_worker` flow's `./shared`, the
namespace's dependency cache). Names and the other objects of a run are in `builders`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from kubemill.engine.naming import job_name
from kubemill.k8s.builders import (
    ANNOTATION_PATH,
    ANNOTATION_RUN,
    ARGS_KEY,
    CONTAINER,
    DEPS_DIR,
    FLOW_STATES_KEY,
    INPUT_DIR,
    LABEL_ATTEMPT,
    LABEL_RUN_UID,
    LABEL_SHARED,
    MANAGED_BY,
    MASK_FORMS_FILE,
    RESUME_KEY,
    RUNNER_UID,
    SHARED_DIR,
    STATE_KEY,
    JobOptions,
    RunIdentity,
    RunTarget,
    _digest,
    _meta,
    code_configmap_name,
    resume_secret_name,
    run_secret_name,
    state_configmap_name,
)
from kubemill.models.scripts import RunnerSpec
from kubemill.runners import command_for, env_for
from kubemill.runners.languages import RUN_ROOT, RunContext
from kubemill.runners.lockfile import LOCKED_LANGUAGES
from kubemill.secrets import MASK_FORMS_KEY, WORKSPACE_STORAGE_KEY


def _resource_keys(files: Sequence[str]) -> list[str]:
    return sorted(k for k in files if k.startswith(("resource.", "variable.")))


def restricted_container_security() -> dict[str, Any]:
    """A runner container under the restricted Pod Security Standard: non-root, read-only, no capabilities."""
    return {
        "runAsNonRoot": True,
        "runAsUser": RUNNER_UID,
        "runAsGroup": RUNNER_UID,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def restricted_pod_security() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": RUNNER_UID,
        "runAsGroup": RUNNER_UID,
        "fsGroup": RUNNER_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def build_job(
    run: RunIdentity,
    target: RunTarget,
    attempt: int,
    secret_keys: Sequence[str],
    context: RunContext,
    options: JobOptions | None = None,
    shared_claim: str | None = None,
    deps_claim: str | None = None,
) -> dict[str, Any]:
    """The Job running attempt `attempt` of `run`: one pod, never restarted (kubemill retries, Kubernetes
    does not); deadline = the script's timeout. `secret_keys`: the per-run Secret's keys. A flow step's resume
    URLs come from the Secret `<run>-resume` the FlowRun handler writes (an optional volume: most runs have
    none), never from the run's metadata or the pod's env, which viewers can read.

    A Script's `spec.runner.serviceAccountName` is an opt-in to an identity: the pod runs as that
    ServiceAccount with its token mounted, so `wmill` can change Resources and Variables as RBAC allows it
    (docs/resources.md). `KUBEMILL_SERVICE_ACCOUNT` (empty without one) tells the client it runs in a pod
    and which identity it has. A step of a `same_worker` flow mounts the FlowRun's claim `shared_claim` at
    `./shared` (`share_claim`)."""
    options = options or JobOptions()
    runner = target.runner or RunnerSpec()
    name = job_name(run.name, attempt)
    labels = {**MANAGED_BY, LABEL_RUN_UID: run.uid, LABEL_ATTEMPT: str(attempt)}
    annotations = {ANNOTATION_RUN: run.name, ANNOTATION_PATH: target.path}
    env = env_for(target.language, context, requirements=target.requirements)
    env |= {
        "HOME": "/tmp",  # noqa: S108 - a path inside the pod (an emptyDir), not the host's /tmp
        "KUBEMILL_ARGS_FILE": f"{INPUT_DIR}/{ARGS_KEY}",
        "KUBEMILL_RESOURCES_DIR": f"{INPUT_DIR}/resources",
        "KUBEMILL_CACHE_DIR": "/tmp/kubemill/deps",  # noqa: S108 - a path inside the pod
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "KUBEMILL_SERVICE_ACCOUNT": runner.service_account_name or "",
        "KUBEMILL_RUN_NAME": run.name,  # the parent of runs the script starts (wmill.run_script_async)
        **options.extra_env,
    }
    env["KUBEMILL_RESUME_URLS_FILE"] = f"{RUN_ROOT}/resume/{RESUME_KEY}"
    container_env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in env.items()]
    container_env += [e.to_manifest() for e in target.env]
    items = [{"key": ARGS_KEY, "path": ARGS_KEY}] + [
        {"key": k, "path": f"resources/{k}"} for k in _resource_keys(secret_keys)
    ]
    if MASK_FORMS_KEY in secret_keys:  # the runner masks what it writes where viewers read
        items.append({"key": MASK_FORMS_KEY, "path": MASK_FORMS_FILE})
        container_env.append({"name": "KUBEMILL_MASKS_FILE", "value": f"{INPUT_DIR}/{MASK_FORMS_FILE}"})
    if WORKSPACE_STORAGE_KEY in secret_keys:  # wmill's S3 helpers, and results over 1 MiB
        items.append({"key": WORKSPACE_STORAGE_KEY, "path": WORKSPACE_STORAGE_KEY})
        container_env.append(
            {"name": "KUBEMILL_WORKSPACE_STORAGE_FILE", "value": f"{INPUT_DIR}/{WORKSPACE_STORAGE_KEY}"}
        )
    if FLOW_STATES_KEY in secret_keys:  # a flow step: wmill.get_flow_user_state reads them
        items.append({"key": FLOW_STATES_KEY, "path": FLOW_STATES_KEY})
        container_env.append(
            {"name": "KUBEMILL_FLOW_USER_STATES_FILE", "value": f"{INPUT_DIR}/{FLOW_STATES_KEY}"}
        )
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": runner.image or options.image(target.language),
        "imagePullPolicy": "IfNotPresent",
        "command": command_for(target.language, locked=target.lock is not None),
        "env": container_env,
        "workingDir": "/tmp",  # noqa: S108 - a path inside the pod (an emptyDir), not the host's /tmp
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
        "securityContext": restricted_container_security(),
        "volumeMounts": [
            {"name": "code", "mountPath": f"{RUN_ROOT}/code", "readOnly": True},
            {"name": "input", "mountPath": INPUT_DIR, "readOnly": True},
            {"name": "out", "mountPath": f"{RUN_ROOT}/out"},
            {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 - a path inside the pod
            {"name": "resume", "mountPath": f"{RUN_ROOT}/resume", "readOnly": True},
        ],
    }
    state_path = context.state_path or context.job_path
    if runner.resources:
        container["resources"] = dict(runner.resources)
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": restricted_pod_security(),
        "containers": [container],
        "volumes": [
            {
                "name": "code",
                "configMap": {"name": code_configmap_name(target.content_hash), "defaultMode": 0o444},
            },
            {
                "name": "input",
                "secret": {"secretName": run_secret_name(run.name), "items": items, "defaultMode": 0o444},
            },
            {"name": "out", "emptyDir": {"sizeLimit": "64Mi"}},
            {"name": "tmp", "emptyDir": {}},
            {
                "name": "resume",
                "secret": {
                    "secretName": resume_secret_name(run.name),
                    "optional": True,
                    "defaultMode": 0o444,
                },
            },
        ],
    }
    if state_path:  # the previous run's state, if there is one yet
        container["volumeMounts"].append(
            {"name": "state", "mountPath": f"{RUN_ROOT}/state", "readOnly": True}
        )
        pod_spec["volumes"].append(
            {
                "name": "state",
                "configMap": {
                    "name": state_configmap_name(state_path),
                    "optional": True,
                    "items": [{"key": STATE_KEY, "path": STATE_KEY}],
                    "defaultMode": 0o444,
                },
            }
        )
    if deps_claim is not None and target.lock is not None and target.language in LOCKED_LANGUAGES:
        share_deps_cache(container, pod_spec, deps_claim, options.extra_env)
    if shared_claim is not None:
        labels[LABEL_SHARED] = _digest(shared_claim, length=16)
        share_claim(container, pod_spec, shared_claim, labels[LABEL_SHARED])
    if runner.service_account_name:
        pod_spec["serviceAccountName"] = runner.service_account_name
        pod_spec["automountServiceAccountToken"] = True
    if runner.node_selector:
        pod_spec["nodeSelector"] = dict(runner.node_selector)
    if runner.tolerations:
        pod_spec["tolerations"] = [dict(t) for t in runner.tolerations]
    spec: dict[str, Any] = {
        "backoffLimit": 0,
        "template": {"metadata": {"labels": labels, "annotations": annotations}, "spec": pod_spec},
    }
    if target.timeout_seconds:
        spec["activeDeadlineSeconds"] = target.timeout_seconds
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": _meta(name, run.namespace, run, labels=labels, annotations=annotations),
        "spec": spec,
    }


def share_deps_cache(
    container: dict[str, Any], pod_spec: dict[str, Any], claim: str, operator_env: Mapping[str, str]
) -> None:
    """The namespace's dependency cache `claim` for a locked Python or Bun run: an init container that runs
    only the runner's install step (uv, wheels only: `--no-build`; bun `--ignore-scripts`: no package code
    runs) with none of the
    Script's env, args or secrets (only the operator's own runner env, `operator_env`) writes the lock's
    install there; the script's container mounts it read-only, so no script can change what another run
    executes (docs/security.md)."""
    container["volumeMounts"].append({"name": "deps", "mountPath": DEPS_DIR, "readOnly": True})
    container["env"].append({"name": "KUBEMILL_SHARED_DEPS_DIR", "value": DEPS_DIR})
    env = {
        **operator_env,
        "HOME": "/tmp",  # noqa: S108 - a path inside the pod (an emptyDir), not the host's /tmp
        "KUBEMILL_INSTALL_ONLY": "1",
        "KUBEMILL_CACHE_DIR": DEPS_DIR,
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
    }
    init: dict[str, Any] = {
        "name": "deps",
        "image": container["image"],
        "imagePullPolicy": container["imagePullPolicy"],
        "command": container["command"],
        "env": [{"name": k, "value": v} for k, v in env.items()],
        "workingDir": "/tmp",  # noqa: S108 - a path inside the pod (an emptyDir), not the host's /tmp
        "securityContext": restricted_container_security(),
        "volumeMounts": [
            {"name": "code", "mountPath": f"{RUN_ROOT}/code", "readOnly": True},
            {"name": "deps", "mountPath": DEPS_DIR},
            {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 - a path inside the pod
        ],
    }
    if "resources" in container:
        init["resources"] = container["resources"]
    pod_spec["initContainers"] = [init]
    pod_spec["volumes"].append({"name": "deps", "persistentVolumeClaim": {"claimName": claim}})


def share_claim(container: dict[str, Any], pod_spec: dict[str, Any], claim: str, label: str) -> None:
    """Mount `claim` at `./shared` and require the node of any running pod with the same claim: steps of a
    `same_worker` flow in flight at the same time share one node, as Windmill runs them on one worker (and
    a ReadWriteOnce volume attaches to one node at a time)."""
    container["volumeMounts"].append({"name": "shared", "mountPath": SHARED_DIR})
    pod_spec["volumes"].append({"name": "shared", "persistentVolumeClaim": {"claimName": claim}})
    term = {"labelSelector": {"matchLabels": {LABEL_SHARED: label}}, "topologyKey": "kubernetes.io/hostname"}
    pod_spec["affinity"] = {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term]}}
