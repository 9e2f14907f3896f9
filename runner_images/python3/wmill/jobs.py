"""`wmill.run_script`, `run_script_async`, `run_flow_async`, `wait_job`, `get_result`, `get_job_status`:
scripts that start runs, as ScriptRuns and FlowRuns created through the Kubernetes API.

Only a run whose Script opts in to an identity (`spec.runner.serviceAccountName`) can start runs: it creates
them as that ServiceAccount, so RBAC decides (least privilege: `create` and `get` on scriptruns/flowruns of
its own namespace; `get` on configmaps too for results over 16 KiB). Each child carries an owner reference to
the run that started it (deleting the parent, or retention deleting it, deletes its children) and the
label `kubemill.dev/parent-run-uid`. A job id is the child run's name. `wait_job` polls the child's status
until it ends and returns its result, or raises `JobFailed` with the child's error.

A child's name is chosen here, before the first attempt (not `generateName`): when the API server's answer to
a create is lost and the request retried (kube_api.py), the 409 that follows names the child the first
attempt made, which is adopted when it is this run's and holds what was sent, so one call makes one run.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import time
import urllib.parse
from typing import Any

from wmill.kube_api import GROUP_VERSION, ApiError, KubeApi, holds

PARENT_LABEL = "kubemill.dev/parent-run-uid"
PARENT_ANNOTATION = "kubemill.dev/parent-run"
CANCEL_ANNOTATION = "kubemill.dev/cancel"
TERMINAL = ("Succeeded", "Failed", "Cancelled")
_NOT_NAME = re.compile(r"[^a-z0-9]+")
_SUFFIX = "bcdfghjklmnpqrstvwxz2456789"  # the API server's generateName alphabet
_kinds: dict[str, str] = {}  # job id -> kind, for the runs this script started


class JobFailed(Exception):
    """A run started with run_script/run_flow_async ended without succeeding."""


def _request(api: KubeApi, method: str, path: str, verb: str, kind: str, what: str, body: Any = None) -> Any:
    return api.request(method, path, verb, kind, what, body, missing_ok=method == "GET")


def _runs_path(api: KubeApi, plural: str, name: str = "") -> str:
    ns = urllib.parse.quote(api.creds.namespace)
    return f"/apis/{GROUP_VERSION}/namespaces/{ns}/{plural}" + (
        f"/{urllib.parse.quote(name)}" if name else ""
    )


def start(api: KubeApi, kind: str, path: str, args: dict[str, Any] | None) -> str:
    """Create a child ScriptRun or FlowRun of this run; its name (the job id)."""
    parent_name = os.environ.get("KUBEMILL_RUN_NAME", "")
    parent_uid = os.environ.get("WM_JOB_ID", "")
    base = _NOT_NAME.sub("-", path.rsplit("/", 1)[-1].lower()).strip("-")[:40] or "run"
    meta: dict[str, Any] = {"labels": {PARENT_LABEL: parent_uid}}
    if parent_name and parent_uid:
        meta["annotations"] = {PARENT_ANNOTATION: parent_name}
        meta["ownerReferences"] = [
            {"apiVersion": GROUP_VERSION, "kind": "ScriptRun", "name": parent_name, "uid": parent_uid}
        ]
    field = "scriptPath" if kind == "scriptrun" else "flowPath"
    body = {
        "apiVersion": GROUP_VERSION,
        "kind": "ScriptRun" if kind == "scriptrun" else "FlowRun",
        "metadata": meta,
        "spec": {field: path, "args": dict(args or {})},
    }
    plural = kind + "s"
    for _attempt in range(5):
        meta["name"] = f"{base}-{''.join(secrets.choice(_SUFFIX) for _ in range(5))}"
        try:
            created = _request(api, "POST", _runs_path(api, plural), "create", kind, path, body)
        except ApiError as exc:
            if exc.status != 409:
                raise
            if not (exc.retried and _is_ours(api, plural, kind, path, body)):
                continue  # the name is another run's: draw another
            created = body  # an earlier attempt created it; its answer was lost
        name = str(created["metadata"]["name"])
        _kinds[name] = kind
        return name
    raise ApiError(f"create {plural} ({kind} {path!r}): five names in a row were taken", 409)


def _is_ours(api: KubeApi, plural: str, kind: str, path: str, body: dict[str, Any]) -> bool:
    """Whether the run named as `body` is the one `body` asked for, made by this run."""
    meta = body["metadata"]
    found = _request(api, "GET", _runs_path(api, plural, meta["name"]), "get", kind, path)
    if found is None:
        return False
    labels = (found.get("metadata") or {}).get("labels") or {}
    return labels.get(PARENT_LABEL) == meta["labels"][PARENT_LABEL] and holds(found, body["spec"])


def get_run(api: KubeApi, job_id: str) -> tuple[str, dict[str, Any]]:
    """(kind, run) of a job id: a ScriptRun or FlowRun of this namespace."""
    kinds = [_kinds[job_id]] if job_id in _kinds else ["scriptrun", "flowrun"]
    for kind in kinds:
        found = _request(api, "GET", _runs_path(api, kind + "s", job_id), "get", kind, job_id)
        if found is not None:
            _kinds[job_id] = kind
            return kind, found
    raise KeyError(f"no ScriptRun or FlowRun named {job_id!r} in namespace {api.creds.namespace!r}")


def result_of(api: KubeApi, run: dict[str, Any]) -> Any:
    status = run.get("status") or {}
    ref = status.get("resultRef")
    if not ref:
        return status.get("result")
    if ref.get("s3"):  # over 1 MiB: in the workspace storage, which this run is given too
        from wmill import s3

        storage = s3.workspace_storage()
        if storage is None:
            raise KeyError(f"the result of {run['metadata']['name']} is in workspace storage, not given")
        return json.loads(s3.Client(storage).get(ref["s3"]))
    ns = urllib.parse.quote(api.creds.namespace)
    cm = _request(
        api, "GET", f"/api/v1/namespaces/{ns}/configmaps/{ref['name']}", "get", "configmap", ref["name"]
    )
    if cm is None:
        raise KeyError(f"the result of {run['metadata']['name']} (ConfigMap {ref['name']}) is gone")
    return json.loads((cm.get("data") or {}).get(ref.get("key", "result.json"), "null"))


def job_status(run: dict[str, Any]) -> str:
    """Windmill's job status: WAITING, RUNNING or COMPLETED."""
    phase = (run.get("status") or {}).get("phase", "Pending")
    return "COMPLETED" if phase in TERMINAL else "WAITING" if phase == "Pending" else "RUNNING"


def wait(api: KubeApi, job_id: str, timeout: float | None = None) -> Any:
    """The run's result once it ends (JobFailed if it did not succeed; TimeoutError after `timeout`)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    delay = 0.5
    while True:
        kind, run = get_run(api, job_id)
        status = run.get("status") or {}
        phase = status.get("phase")
        if phase == "Succeeded":
            return result_of(api, run)
        if phase in TERMINAL:
            error = status.get("error") or {}
            step = f" at step {error['step']}" if error.get("step") else ""
            reason = f"{error.get('name', phase)}: {error.get('message', '')}"
            raise JobFailed(f"{kind} {job_id} {phase.lower()}{step}: {reason}")
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(
                f"{kind} {job_id} did not finish within {timeout}s (it is {phase or 'Pending'})"
            )
        time.sleep(delay)
        delay = min(delay * 1.5, 3.0)


def cancel_running(api: KubeApi) -> dict[str, Any]:
    """Windmill's `cancel_running`: cancel the other unfinished runs of this script (WM_JOB_PATH) in this
    namespace (the `kubemill.dev/cancel` annotation, as `kubemill cancel` sets it); needs `list` and
    `patch` on scriptruns. Returns {"canceled": [names]}."""
    path, me = os.environ.get("WM_JOB_PATH", ""), os.environ.get("KUBEMILL_RUN_NAME", "")
    if not path:
        raise ValueError("cancel_running: this run has no script path (WM_JOB_PATH)")
    found = _request(api, "GET", _runs_path(api, "scriptruns"), "list", "scriptrun", path) or {}
    canceled = []
    for run in found.get("items") or []:
        name = run["metadata"]["name"]
        if name == me or (run.get("spec") or {}).get("scriptPath") != path:
            continue
        if (run.get("status") or {}).get("phase") in TERMINAL:
            continue
        patch = {"metadata": {"annotations": {CANCEL_ANNOTATION: "true"}}}
        api.request(
            "PATCH",
            _runs_path(api, "scriptruns", name),
            "patch",
            "scriptrun",
            path,
            patch,
            missing_ok=True,
            content_type="application/merge-patch+json",
        )
        canceled.append(name)
    return {"canceled": canceled}
