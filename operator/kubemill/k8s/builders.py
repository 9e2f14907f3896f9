"""Pure builders of the Kubernetes objects a script run needs: names, the code ConfigMap, the per-run Secret,
the result and state ConfigMaps, the Script's status and events (the Job and its pod are in `k8s/jobs.py`).

Everything here is a function of its arguments (no clock, no API): the same run and attempt always give the
same names and the same manifests, which is what lets a restarted operator adopt what it created before
(409 on create) instead of duplicating it.

Mounted for the runner (docs/runners.md): the code ConfigMap at `/var/run/kubemill/code/` and the per-run
Secret at `/var/run/kubemill/input/` (`args.json` and `resources/<resource.|variable.><path>`).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kubemill import __version__, constants
from kubemill.engine.naming import child_name as child_name
from kubemill.engine.naming import job_name as job_name
from kubemill.engine.naming import result_configmap_name as result_configmap_name
from kubemill.engine.scriptrun import RESULT_KEY as RESULT_KEY
from kubemill.models.openflow_parts import Retry
from kubemill.models.scripts import EnvVar, RunnerSpec
from kubemill.runners import code_filename
from kubemill.runners.languages import RUN_ROOT
from kubemill.runners.lockfile import LOCK_FILE

MAX_NAME = 63
RUNNER_UID = 65532
MANAGED_BY = {"app.kubernetes.io/managed-by": "kubemill"}
LABEL_RUN_UID = constants.LABEL_RUN_UID
LABEL_ATTEMPT = constants.LABEL_ATTEMPT
LABEL_CODE = constants.LABEL_CODE
LABEL_SHARED = constants.LABEL_SHARED_CLAIM
"""On the pods of a `same_worker` flow's steps: a digest of their shared claim (pod affinity keeps the ones
running at the same time on one node, as the ReadWriteOnce claim needs)."""
SHARED_DIR = "/tmp/shared"  # noqa: S108 - a path inside the pod (an emptyDir), not the host's /tmp
DEPS_CLAIM = "kubemill-deps"
"""A namespace's shared dependency cache: a PersistentVolumeClaim of this name, made by its administrator."""
DEPS_DIR = "/var/cache/kubemill/deps"
"""`./shared` of a `same_worker` flow's steps (the runner's working directory is /tmp)."""
ANNOTATION_RUN = constants.ANNOTATION_SCRIPT_RUN
ANNOTATION_PATH = constants.ANNOTATION_SCRIPT_PATH
ARGS_KEY = "args.json"
FLOW_STATES_KEY = "flow-user-states.json"
"""In the per-run Secret of a flow step: the FlowRun's user states when the step started."""

STATE_KEY = "state.json"
CONTAINER = "runner"
DEFAULT_IMAGE_TEMPLATE = "ghcr.io/kubemill/runner-{language}:{version}"
INPUT_DIR = f"{RUN_ROOT}/input"
MASK_FORMS_FILE = "mask-forms.json"

_INVALID = re.compile(r"[^a-z0-9-]+")


# --- names -------------------------------------------------------------------------------------------------


def _digest(*parts: str, length: int = 10) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:length]


RESUME_KEY = "resume-urls.json"


def resume_secret_name(run_name: str) -> str:
    """The Secret with a flow step's resume URLs (written by the FlowRun handler before it creates the step's
    run; owned by the FlowRun)."""
    return f"{run_name}-resume"


def run_secret_name(run_name: str) -> str:
    """The per-run Secret (args, resources, variables), shared by the run's attempts."""
    return child_name(run_name, "input")


def state_configmap_name(state_path: str) -> str:
    """The ConfigMap keeping the state a script's runs pass on (`wmill.get_state`/`set_state`)."""
    return f"kubemill-state-{_digest(state_path, length=16)}"


def content_hash(language: str, code: str, lock: str | None = None) -> str:
    """A hash of the code and the file it runs as (and its lock, when it has one): equal code shares one
    code ConfigMap."""
    text = f"{code_filename(language)}\x00{code}" + (f"\x00{LOCK_FILE}\x00{lock}" if lock is not None else "")
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def code_configmap_name(digest: str) -> str:
    return f"kubemill-code-{digest}"


# --- what a run executes -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunTarget:
    """What a run executes, from a Script or from an inline script: code, language (the runtime) and how."""

    path: str
    language: str
    code: str
    schema: Mapping[str, Any] | None = None
    requirements: tuple[str, ...] = ()
    lock: str | None = None
    resources: tuple[str, ...] = ()
    timeout_seconds: int | None = None
    retry: Retry | None = None
    concurrency_limit: int | None = None
    env: tuple[EnvVar, ...] = ()
    runner: RunnerSpec | None = None

    @property
    def content_hash(self) -> str:
        return content_hash(self.language, self.code, self.lock)


@dataclass(frozen=True)
class RunIdentity:
    """The run an object belongs to (for names, labels and the owner reference)."""

    namespace: str
    name: str
    uid: str
    kind: str = "ScriptRun"
    api_version: str = "kubemill.dev/v1alpha1"


@dataclass(frozen=True)
class JobOptions:
    """Operator-wide settings of runner Jobs."""

    image_template: str = DEFAULT_IMAGE_TEMPLATE
    version: str = __version__
    extra_env: Mapping[str, str] = field(default_factory=dict)

    def image(self, language: str) -> str:
        return self.image_template.format(language=language, version=self.version)


def owner_reference(owner: RunIdentity, *, controller: bool = True) -> dict[str, Any]:
    return {
        "apiVersion": owner.api_version,
        "kind": owner.kind,
        "name": owner.name,
        "uid": owner.uid,
        "controller": controller,
    }


def _meta(
    name: str, namespace: str, owner: RunIdentity | None, *, controller: bool = True, **extra: Any
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "labels": dict(MANAGED_BY)}
    if owner is not None:
        meta["ownerReferences"] = [owner_reference(owner, controller=controller)]
    for key, value in extra.items():
        meta.setdefault(key, {}).update(value)
    return meta


# --- objects -----------------------------------------------------------------------------------------------


def build_code_configmap(namespace: str, target: RunTarget, owner: RunIdentity | None) -> dict[str, Any]:
    """The content-addressed code ConfigMap (immutable): the file the runner loads, and `script.lock` beside
    it when the script has a lock (the runner installs exactly that). Shared by every run of the same code,
    so its owner (the Script, or the run of an inline script) is not its controller."""
    digest = target.content_hash
    data = {code_filename(target.language): target.code}
    if target.lock is not None:
        data[LOCK_FILE] = target.lock
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(
            code_configmap_name(digest), namespace, owner, controller=False, labels={LABEL_CODE: digest}
        ),
        "immutable": True,
        "data": data,
    }


def build_run_secret(run: RunIdentity, args: Mapping[str, Any], files: Mapping[str, str]) -> dict[str, Any]:
    """The per-run Secret: `args.json` plus `files` (resource/variable files and the mask list, as
    `kubemill.secrets.ResolvedRun.secret_data()` returns them). Owned by the run."""
    data = {ARGS_KEY: json.dumps(dict(args))} | dict(files)
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": _meta(run_secret_name(run.name), run.namespace, run, labels={LABEL_RUN_UID: run.uid}),
        "immutable": True,
        "stringData": data,
    }


def build_result_configmap(run: RunIdentity, result_json: str) -> dict[str, Any]:
    """A result too large for the status, in a ConfigMap owned by the run (deleted with it)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(
            result_configmap_name(run.name), run.namespace, run, labels={LABEL_RUN_UID: run.uid}
        ),
        "immutable": True,
        "data": {RESULT_KEY: result_json},
    }


def build_state_configmap(
    namespace: str, state_path: str, state_json: str, owner: RunIdentity | None
) -> dict[str, Any]:
    """The state a run left for the next run of the same script (owned by the Script, not as controller)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(
            state_configmap_name(state_path),
            namespace,
            owner,
            controller=False,
            annotations={"kubemill.dev/state-path": state_path},
        ),
        "data": {STATE_KEY: state_json},
    }


def build_script_status(
    generation: int | None,
    digest: str | None,
    schema: Mapping[str, Any] | None,
    problem: tuple[str, str] | None,
    old_conditions: Sequence[Mapping[str, Any]],
    now: str,
) -> dict[str, Any]:
    """A Script's status: its schema and content hash, and `Ready` (False with `problem` = (reason, message),
    e.g. `SyntaxError` and a message naming the line). A condition keeps its transition time while held."""
    status, reason, message = ("False", *problem) if problem else ("True", "Parsed", "main's schema derived")
    old = next((c for c in old_conditions if c.get("type") == "Ready"), None)
    since = now
    if old is not None and old.get("status") == status and old.get("lastTransitionTime"):
        since = str(old["lastTransitionTime"])
    ready: dict[str, Any] = {
        "type": "Ready",
        "status": status,
        "reason": reason,
        "message": message[:4000],
        "lastTransitionTime": since,
    }
    if generation is not None:
        ready["observedGeneration"] = generation
    out: dict[str, Any] = {"conditions": [ready]}
    if generation is not None:
        out["observedGeneration"] = generation
    if digest is not None:
        out["contentHash"] = digest
    if schema is not None:
        out["schema"] = dict(schema)
    return out


def build_event(
    regarding: RunIdentity, reason: str, message: str, warning: bool, now: datetime
) -> dict[str, Any]:
    """An Event about a run (what `kubectl describe` shows); the message must already be masked."""
    return {
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": {"generateName": f"{regarding.name}.", "namespace": regarding.namespace},
        "eventTime": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "reportingController": "kubemill.dev/operator",
        "reportingInstance": "kubemill-operator",
        "action": "Reconcile",
        "reason": reason[:128],
        "note": message[:1024],
        "type": "Warning" if warning else "Normal",
        "regarding": {
            "apiVersion": regarding.api_version,
            "kind": regarding.kind,
            "name": regarding.name,
            "namespace": regarding.namespace,
            "uid": regarding.uid,
        },
    }
