"""A Windmill-compatible `wmill` client backed by files, so Windmill scripts run unchanged under kubemill.

kubemill hands a run exactly the resources and variables its Script declares, as files in
$KUBEMILL_RESOURCES_DIR (default /var/run/kubemill/resources): `resource.<path>` holds a resource's JSON value
and `variable.<path>` a variable's text, where <path> is the Windmill path with every `/` written as `.`
(`u/admin/api_credentials` -> `resource.u.admin.api_credentials`). State lives in $KUBEMILL_STATE_FILE and
travels in the result envelope. A run whose Script opts in to a ServiceAccount
(spec.runner.serviceAccountName) lists, creates, updates and deletes Resource and Variable objects through
the Kubernetes API (`kube_api.py`), as far as RBAC lets that identity; without one those calls fail saying
how to opt in. With the same opt-in, run_script, run_script_async, run_flow_async, wait_job, get_result and
get_job_status start and follow child runs (`jobs.py`). Other calls that would change the workspace
(update_schedule...) fail with a message saying to change the manifests in git instead.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from wmill import kube_api
from wmill.kube_api import NotSupported, PermissionDenied, ResourceExists, ResourceRejected

__all__ = [
    "Client",
    "NotSupported",
    "PermissionDenied",
    "ResourceExists",
    "ResourceNotFound",
    "ResourceRejected",
    "S3Object",
    "cancel_running",
    "create_resource",
    "delete_resource",
    "get_boto3_connection_settings",
    "get_flow_user_state",
    "get_job_status",
    "get_progress",
    "get_resource",
    "get_result",
    "get_resume_url",
    "get_resume_urls",
    "get_root_job_id",
    "get_state",
    "get_state_path",
    "get_variable",
    "get_workspace",
    "list_resources",
    "load_s3_file",
    "load_s3_file_reader",
    "run_flow",
    "run_flow_async",
    "run_script",
    "run_script_async",
    "set_flow_user_state",
    "set_progress",
    "set_resource",
    "set_state",
    "set_variable",
    "update_resource",
    "wait_job",
    "whoami",
    "write_s3_file",
]

ROOT = "/var/run/kubemill"
_MISSING = object()
_state: dict[str, Any] = {"value": _MISSING, "original": None, "file": None}


class ResourceNotFound(Exception):
    """A resource or variable this run was not given."""


def _resources_dir() -> str:
    return os.environ.get("KUBEMILL_RESOURCES_DIR") or ROOT + "/resources"


def resource_filename(kind: str, path: str) -> str:
    """`resource.u.admin.x` for resource u/admin/x: the Secret key and file name kubemill uses."""
    return kind + "." + path.strip("/").replace("/", ".")


def _read(kind: str, path: str) -> str | None:
    try:
        with open(os.path.join(_resources_dir(), resource_filename(kind, path)), encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        return None


def _not_found(kind: str, path: str) -> ResourceNotFound:
    local = f"{path}.{kind}.yaml"
    return ResourceNotFound(
        f"{kind} {path!r} is not available to this run: list it in the Script's spec.resources and "
        f"create a {kind.capitalize()} with spec.path {path!r} in the namespace (for `kubemill run`, "
        f"a {local} file in the workspace)"
    )


def _interpolate(value: Any) -> Any:
    if isinstance(value, str):
        if value.startswith("$var:"):
            return get_variable(value[5:])
        if value.startswith("$res:"):
            return get_resource(value[5:])
        return value
    if isinstance(value, dict):
        return {k: _interpolate(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v) for v in value]
    return value


def get_resource(path: str | None = None, none_if_undefined: bool = False) -> Any:
    """The resource's value, with `$var:<path>` strings replaced by those variables' values."""
    if path is None:
        raise ValueError("get_resource needs the resource path, e.g. 'u/admin/my_db'")
    text = _read("resource", path)
    if text is None:
        found = _api_find("resource", path)
        if found is not None:
            return _interpolate((found.get("spec") or {}).get("value") or {})
        if none_if_undefined:
            return None
        raise _not_found("resource", path)
    return _interpolate(json.loads(text))


class VariableText(str):
    """A variable's value: a string, as in Windmill; when it holds a JSON object, it also answers `.get()` and
    `[key]` like that object, so scripts that treat a JSON variable as a dict keep working."""

    def _object(self) -> dict[str, Any]:
        parsed = json.loads(self)
        if not isinstance(parsed, dict):
            raise TypeError("this variable is not a JSON object")
        return parsed

    def get(self, key: str, default: Any = None) -> Any:
        return self._object().get(key, default)

    def __getitem__(self, key: Any) -> Any:  # type: ignore[override]
        if isinstance(key, str):
            return self._object()[key]
        return str.__getitem__(self, key)

    def keys(self) -> Any:
        return self._object().keys()

    def items(self) -> Any:
        return self._object().items()


def get_variable(path: str) -> str:
    text = _read("variable", path)
    if text is None:
        found = _api_find("variable", path)
        if found is not None and (found.get("spec") or {}).get("value") is not None:
            return VariableText(found["spec"]["value"])
        raise _not_found("variable", path)
    return VariableText(text)


def list_resources(resource_type: str | None = None, **_filters: Any) -> list[dict[str, Any]]:
    """The namespace's Resources when the run has an identity (docs/resources.md), else the resources this
    run was given (a run sees only what its Script declares)."""
    api = _api_or_none()
    if api is not None:
        listed = [kube_api.windmill_view(o) for o in api.list("resource")]
        return [r for r in listed if resource_type in (None, r["resource_type"])]
    found = []
    try:
        names = sorted(os.listdir(_resources_dir()))
    except FileNotFoundError:
        names = []
    for name in names:
        if name.startswith("resource."):
            found.append({"path": name[len("resource.") :].replace(".", "/"), "resource_type": None})
    return found


# --- state ------------------------------------------------------------------------------------------------


def _load_state(path: str) -> None:
    _state["file"] = path
    try:
        with open(path, encoding="utf-8") as f:
            _state["original"] = json.load(f)
    except (FileNotFoundError, ValueError):
        _state["original"] = None


def _current_state() -> Any:
    return _state["original"] if _state["value"] is _MISSING else _state["value"]


def _state_changed() -> bool:
    return _state["value"] is not _MISSING


def get_state() -> Any:
    """The state the previous run of this script left (None on the first run)."""
    if _state["file"] is None:
        _load_state(os.environ.get("KUBEMILL_STATE_FILE") or ROOT + "/state/state.json")
    return _current_state()


def set_state(value: Any) -> None:
    """Keep `value` for the next run of this script (it travels in the result envelope)."""
    if _state["file"] is None:
        get_state()
    _state["value"] = value


def get_state_path() -> str:
    return os.environ.get("WM_STATE_PATH", "")


_flow_user_states: dict[str, Any] = {"value": None, "changed": False}


def _flow_states() -> dict[str, Any]:
    if _flow_user_states["value"] is None:
        text = os.environ.get("KUBEMILL_FLOW_USER_STATES")
        path = os.environ.get("KUBEMILL_FLOW_USER_STATES_FILE")
        if text is None and path:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        if text is None:
            raise NotSupported(
                "flow user state (get_flow_user_state/set_flow_user_state) exists only in a step of a flow "
                "run; this script runs on its own"
            )
        loaded = json.loads(text)
        _flow_user_states["value"] = loaded if isinstance(loaded, dict) else {}
    states: dict[str, Any] = _flow_user_states["value"]
    return states


def get_flow_user_state(key: str) -> Any:
    """The value a step of this flow run stored under `key` with `set_flow_user_state` (None if none)."""
    return _flow_states().get(key)


def set_flow_user_state(key: str, value: Any) -> None:
    """Keep `value` under `key` for the later steps of this flow run (Windmill's flow user state)."""
    _flow_states()[key] = value
    _flow_user_states["changed"] = True


def _changed_flow_user_states() -> dict[str, Any] | None:
    """Every flow user state after this run, when it set one (None otherwise)."""
    return _flow_user_states["value"] if _flow_user_states["changed"] else None


# --- context ----------------------------------------------------------------------------------------------


def get_workspace() -> str:
    return os.environ.get("WM_WORKSPACE", "")


def get_root_job_id(job_id: str | None = None) -> str:
    return os.environ.get("WM_ROOT_FLOW_JOB_ID") or os.environ.get("WM_JOB_ID", "")


def whoami() -> dict[str, Any]:
    return {
        "email": os.environ.get("WM_EMAIL", ""),
        "username": os.environ.get("WM_USERNAME", ""),
        "workspace_id": get_workspace(),
        "is_admin": False,
        "groups": [],
    }


def get_resume_urls(approver: str | None = None) -> dict[str, str]:
    """`{approvalPage, resume, cancel}`: signed URLs deciding the approval step after this one, for
    `approver` (one the step lists), or anonymous ones (they decide only a step that lists no approvers).
    Only a POST to `resume`/`cancel` decides; a GET shows the page with both buttons."""
    path = os.environ.get("KUBEMILL_RESUME_URLS_FILE") or ROOT + "/resume-urls.json"
    try:
        with open(path, encoding="utf-8") as f:
            document: dict[str, Any] = json.load(f)
    except FileNotFoundError:
        raise NotSupported(
            "resume URLs exist only for a flow step followed by an approval step; this run has none"
        ) from None
    by_approver: dict[str, dict[str, str]] = document.get("approvers") or {}
    if approver:
        if approver not in by_approver:
            listed = ", ".join(by_approver) or "none by name"
            raise NotSupported(f"no resume URLs for approver {approver!r}: the step's approvers are {listed}")
        return dict(by_approver[approver])
    return {k: document[k] for k in ("approvalPage", "resume", "cancel")}


def get_resume_url(approver: str | None = None) -> str:
    return get_resume_urls(approver)["resume"]


_progress = {"value": 0}


def set_progress(value: int, job_id: str | None = None) -> None:
    """Report progress (0-100); it appears on stderr as `KUBEMILL_PROGRESS: <value>`."""
    _progress["value"] = int(value)
    print(f"KUBEMILL_PROGRESS: {int(value)}", file=sys.stderr, flush=True)


def get_progress(job_id: str | None = None) -> int:
    return _progress["value"]


def _unsupported(name: str) -> Any:
    def call(*args: Any, **kwargs: Any) -> Any:
        raise NotSupported(
            f"wmill.{name} is not available under kubemill: resources, variables and schedules are "
            f"declared as manifests in git (Resource, Variable, Schedule); change them there"
        )

    call.__name__ = name
    return call


for _name in (
    "update_schedule",
    "create_schedule",
    "delete_schedule",
):
    globals()[_name] = _unsupported(_name)


# --- object storage (wmill/s3.py): Windmill's S3 helpers ---------------------------------------------------

S3Object = dict  # Windmill's TypedDict {"s3": "<key>"} (and "storage", which kubemill does not use)


def _s3_settings(s3_resource_path: str | None) -> dict[str, Any]:
    from wmill import s3

    if s3_resource_path:
        value = get_resource(s3_resource_path)
        if not isinstance(value, dict):
            raise ValueError(f"resource {s3_resource_path!r} is not an object of type s3")
        return value
    storage = s3.workspace_storage()
    if storage is None:
        raise ResourceNotFound(
            "this namespace has no workspace storage: label a Resource of type s3 "
            "kubemill.dev/workspace-storage=true, or pass s3_resource_path (a resource the Script declares)"
        )
    return storage


def _s3_key(s3object: Any) -> str:
    key = s3object.get("s3") if isinstance(s3object, dict) else s3object
    if not isinstance(key, str) or not key:
        raise ValueError('an S3Object is {"s3": "<key>"} with a non-empty key')
    return key


def get_boto3_connection_settings(s3_resource_path: str | None = "") -> dict[str, Any]:
    """boto3's `client("s3", **settings)` arguments for the workspace storage or `s3_resource_path`."""
    from wmill import s3

    settings = _s3_settings(s3_resource_path)
    return {
        "endpoint_url": s3.endpoint_url(settings),
        "region_name": settings.get("region") or "us-east-1",
        "use_ssl": settings.get("useSSL", True) is not False,
        "aws_access_key_id": settings.get("accessKeyId"),
        "aws_secret_access_key": settings.get("secretKey"),
    }


def load_s3_file(s3object: Any, s3_resource_path: str | None = None) -> bytes:
    """The content of the object `s3object` names ({"s3": key}, or the key itself)."""
    from wmill import s3

    return s3.Client(_s3_settings(s3_resource_path)).get(_s3_key(s3object))


def load_s3_file_reader(s3object: Any, s3_resource_path: str | None = None) -> Any:
    import io

    return io.BufferedReader(io.BytesIO(load_s3_file(s3object, s3_resource_path)))  # type: ignore[arg-type]


def write_s3_file(
    s3object: Any,
    file_content: Any,
    s3_resource_path: str | None = None,
    content_type: str | None = None,
    content_disposition: str | None = None,
) -> dict[str, str]:
    """Write `file_content` (bytes, str or a binary reader) to the object `s3object` names (a new key under
    windmill_uploads/ when None); returns its S3Object."""
    import uuid

    from wmill import s3

    key = _s3_key(s3object) if s3object else f"windmill_uploads/{uuid.uuid4().hex}"
    if hasattr(file_content, "read"):
        file_content = file_content.read()
    body = file_content.encode() if isinstance(file_content, str) else bytes(file_content)
    s3.Client(_s3_settings(s3_resource_path)).put(key, body, content_type)
    return {"s3": key}


# --- runs started by scripts (a run with a ServiceAccount; wmill/jobs.py) ---------------------------------


def _jobs(call: str) -> Any:
    from wmill import jobs

    if _api_or_none() is None and "KUBEMILL_SERVICE_ACCOUNT" not in os.environ:
        raise NotSupported(
            f"wmill.{call} starts runs on the cluster, which `kubemill run` does not do: run this script "
            f"as a ScriptRun whose Script sets spec.runner.serviceAccountName (docs/resources.md, 'Scripts "
            f"that start runs'), or make the child a step of a flow"
        )
    return jobs, _api(call)


def run_script_async(
    path: str | None = None, hash_: str | None = None, args: dict[str, Any] | None = None, **_: Any
) -> str:
    """Start the Script at `path` with `args` as a child run; its job id (the ScriptRun's name)."""
    if not path:
        raise NotSupported("wmill.run_script_async needs a script path (kubemill has no script hashes)")
    jobs, api = _jobs("run_script_async")
    return str(jobs.start(api, "scriptrun", path, args))


def run_flow_async(path: str, args: dict[str, Any] | None = None, **_: Any) -> str:
    """Start the Flow at `path` with `args` as a child run; its job id (the FlowRun's name)."""
    jobs, api = _jobs("run_flow_async")
    return str(jobs.start(api, "flowrun", path, args))


def wait_job(job_id: str, timeout: float | None = None, **_: Any) -> Any:
    """Wait for a run started here (or any run of this namespace) to end; its result."""
    jobs, api = _jobs("wait_job")
    return jobs.wait(api, job_id, timeout)


def run_script(
    path: str | None = None,
    hash_: str | None = None,
    args: dict[str, Any] | None = None,
    timeout: float | None = None,
    **_: Any,
) -> Any:
    """Run the Script at `path` as a child run and wait for its result."""
    return wait_job(run_script_async(path, hash_, args), timeout)


def run_flow(path: str, args: dict[str, Any] | None = None, timeout: float | None = None, **_: Any) -> Any:
    return wait_job(run_flow_async(path, args), timeout)


def get_result(job_id: str, **_: Any) -> Any:
    """The result of a finished run (None while it runs)."""
    jobs, api = _jobs("get_result")
    _, run = jobs.get_run(api, job_id)
    return jobs.result_of(api, run)


def cancel_running(**_: Any) -> dict[str, Any]:
    """Cancel the other running executions of this script (Windmill's `cancel_running`)."""
    jobs, api = _jobs("cancel_running")
    return jobs.cancel_running(api)


def get_job_status(job_id: str, **_: Any) -> str:
    """WAITING, RUNNING or COMPLETED."""
    jobs, api = _jobs("get_job_status")
    _, run = jobs.get_run(api, job_id)
    return str(jobs.job_status(run))


# --- resources and variables through the Kubernetes API (a run with a ServiceAccount) ----------------------

_api_cache: dict[str, Any] = {}


def _api_or_none() -> kube_api.KubeApi | None:
    if "api" not in _api_cache:
        creds = kube_api.credentials()
        _api_cache["api"] = kube_api.KubeApi(creds) if creds is not None else None
    api: kube_api.KubeApi | None = _api_cache["api"]
    return api


def _api(call: str) -> kube_api.KubeApi:
    api = _api_or_none()
    if api is None:
        raise kube_api.no_identity_error(call, os.environ)
    return api


def _api_find(kind: str, path: str) -> dict[str, Any] | None:
    """A Resource or Variable the run was not given, read through the API when the run has an identity."""
    api = _api_or_none()
    return api.find(kind, path, verb="list") if api is not None else None


def _absent(kind: str, path: str) -> ResourceNotFound:
    return ResourceNotFound(f"no {kind.capitalize()} has spec.path {path!r} in namespace {get_workspace()!r}")


def create_resource(
    path: str, value: dict[str, Any], resource_type: str, description: str = "", **_: Any
) -> dict[str, Any]:
    """Create the Resource `path` (refused if it exists; secret fields must come from Secrets)."""
    spec = kube_api.resource_spec(path, value, resource_type, description)
    return kube_api.windmill_view(_api("create_resource").create("resource", path, spec))


def update_resource(
    path: str,
    value: dict[str, Any],
    resource_type: str | None = None,
    description: str | None = None,
    **_: Any,
) -> dict[str, Any]:
    """Replace the value of the Resource `path` (and its type or description when given)."""
    api = _api("update_resource")
    try:
        obj = api.replace(
            "resource", path, lambda old: kube_api.resource_spec(path, value, resource_type, description, old)
        )
    except KeyError:
        raise _absent("resource", path) from None
    return kube_api.windmill_view(obj)


def delete_resource(path: str, **_: Any) -> None:
    """Delete the Resource `path`."""
    if not _api("delete_resource").delete("resource", path):
        raise _absent("resource", path)


def set_resource(value: Any, path: str, resource_type: str = "any", **_: Any) -> None:
    """Windmill's set_resource: update the Resource `path`, or create it."""
    api = _api("set_resource")
    try:
        api.replace("resource", path, lambda old: kube_api.resource_spec(path, value, None, None, old))
    except KeyError:
        api.create("resource", path, kube_api.resource_spec(path, value, resource_type, ""))


def set_variable(path: str, value: str, is_secret: bool | None = None, **_: Any) -> None:
    """Windmill's set_variable: update the Variable `path` (inline values only), or create it."""
    api = _api("set_variable")
    try:
        api.replace("variable", path, lambda old: kube_api.variable_spec(path, value, is_secret, old))
    except KeyError:
        api.create("variable", path, kube_api.variable_spec(path, value, is_secret))


class Client:
    """`wmill.Client()`: the same calls as the module functions."""

    def __init__(self, base_url: str | None = None, token: str | None = None) -> None:
        self.base_url = base_url or os.environ.get("BASE_INTERNAL_URL", "")
        self.token = token or os.environ.get("WM_TOKEN", "")
        self.workspace = get_workspace()

    def __getattr__(self, name: str) -> Any:
        found = globals().get(name)
        if callable(found) and not name.startswith("_"):
            return found
        raise AttributeError(name)


Windmill = Client
