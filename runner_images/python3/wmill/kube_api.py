"""The Kubernetes API behind the `wmill` calls that list and change Resources and Variables.

A run whose Script sets `spec.runner.serviceAccountName` runs as that ServiceAccount with a projected token
(docs/resources.md): `wmill.create_resource`, `update_resource`, `delete_resource`, `set_resource`,
`set_variable` and `list_resources` then act on the kubemill.dev/v1alpha1 Resource and Variable objects of the
run's namespace (WM_WORKSPACE), with the in-cluster configuration (KUBERNETES_SERVICE_HOST/PORT and the token
and CA under /var/run/secrets/kubernetes.io/serviceaccount) and nothing but the standard library (the runner
has no third-party dependencies). RBAC decides what the identity may do; a refusal becomes a
`PermissionDenied` naming the verb, the kind, the path and the identity. A Windmill path is found through the
`spec.path` field selector; a new object's name is derived from the path (a DNS-1123 subdomain).

Transient failures are retried (docs/runners.md, "Retries"): a connection refused, reset or timed out, an
HTTP 502/503/504, and the API server's 500 for an admission webhook it could not call (its pod restarting),
with exponential backoff and jitter until $KUBEMILL_API_RETRY_SECONDS (60 s) have passed. Nothing else is
retried. A create stays one object across a retry: its name is chosen before the first attempt, and a 409
on a later attempt is the first attempt's object when it holds what was sent.

Everything but `KubeApi._send` is pure, so the unit tests load this file on its own.
"""

from __future__ import annotations

import base64
import json
import os
import random
import re
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # ssl and urllib.request cost ~30 ms to import: only runs that call the API pay for them
    import ssl
    import urllib.request

GROUP_VERSION = "kubemill.dev/v1alpha1"
SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
KINDS = {
    "resource": ("Resource", "resources"),
    "variable": ("Variable", "variables"),
    "scriptrun": ("ScriptRun", "scriptruns"),
    "flowrun": ("FlowRun", "flowruns"),
    "configmap": ("ConfigMap", "configmaps"),
}
MAX_NAME = 253
RETRY_ENV = "KUBEMILL_API_RETRY_SECONDS"
DEFAULT_RETRY_SECONDS = 60.0
RETRY_STATUSES = frozenset({502, 503, 504})
ATTEMPT_TIMEOUT = 30.0  # seconds for one request, less when the retry deadline is nearer
BACKOFF_FIRST, BACKOFF_MAX = 0.2, 5.0
_NOT_NAME = re.compile(r"[^a-z0-9]+")
_DOCS = "docs/resources.md, 'wmill calls that change resources'"


class PermissionDenied(PermissionError):
    """The run's identity may not do this (no identity at all, or RBAC refused it)."""


class NotSupported(Exception):
    """A Windmill API call that has no meaning here (e.g. a workspace write under `kubemill run`)."""


class ResourceRejected(ValueError):
    """The API server refused the object: the admission policy (a secret field in clear), or the schema."""


class ResourceExists(Exception):
    """create_resource on a path that already names a Resource."""


class ApiError(Exception):
    """Any other answer of the API server. `retried`: the answer came to a repeated attempt, so an earlier
    one may have been carried out (its answer lost)."""

    def __init__(self, message: str, status: int = 0, retried: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.retried = retried


class Unavailable(ApiError):
    """The API server did not answer, or answered only transient failures, until the retry deadline."""


# --- retries (pure) ----------------------------------------------------------------------------------------


def retry_seconds(environ: Mapping[str, str]) -> float:
    """How long a request is retried ($KUBEMILL_API_RETRY_SECONDS; 0 makes one attempt)."""
    text = environ.get(RETRY_ENV, "").strip()
    if not text:
        return DEFAULT_RETRY_SECONDS
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 3600:
        raise ValueError(f"{RETRY_ENV}={text!r}: give a number of seconds between 0 and 3600")
    return value


def transient_answer(status: int, body: str) -> bool:
    """An answer worth another attempt: a gateway or the API server unavailable for a moment, or an admission
    webhook the API server could not reach (e.g. its pod restarting). Every other answer is final."""
    if status in RETRY_STATUSES:
        return True
    return status == 500 and "failed calling webhook" in body


def transient_error(exc: BaseException) -> bool:
    """A request that got no answer: connection refused, reset or aborted, a timeout, a cut-off answer or TLS
    handshake (a certificate that does not verify is final)."""
    import http.client
    import ssl
    import urllib.error

    if isinstance(exc, urllib.error.URLError) and isinstance(exc.reason, BaseException):
        exc = exc.reason
    return isinstance(exc, (ConnectionError, TimeoutError, http.client.IncompleteRead, ssl.SSLEOFError))


def backoff(attempt: int, rand: Callable[[], float] = random.random) -> float:
    """The pause after failed attempt `attempt` (1, 2, ...): doubling from 0.2 s up to 5 s, each drawn in its
    upper half so that runs that failed together do not come back together."""
    ceiling = min(BACKOFF_MAX, BACKOFF_FIRST * 2.0 ** (attempt - 1))
    return ceiling * (0.5 + rand() / 2)


# --- pure parts --------------------------------------------------------------------------------------------


def object_name(path: str, *, unique: bool = False) -> str:
    """The object name for a Windmill path: `u/admin/my_api` -> `u-admin-my-api`, lowercase DNS-1123.
    `unique` adds a hash of the exact path, for when the plain name is taken by another path."""
    base = _NOT_NAME.sub("-", path.lower()).strip("-") or "resource"
    if not unique and len(base) <= MAX_NAME:
        return base
    import hashlib

    digest = hashlib.sha256(path.encode()).hexdigest()[:8]
    return f"{base[: MAX_NAME - 9].rstrip('-')}-{digest}"


def identity_from_token(token: str) -> str:
    """Who a service-account token speaks for (`system:serviceaccount:<ns>:<name>`, its `sub` claim), read
    without verifying it: it is only named in error messages."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return str(claims["sub"])
    except (IndexError, ValueError, KeyError, TypeError):
        return "this run's ServiceAccount"


def no_identity_error(call: str, environ: Mapping[str, str]) -> Exception:
    """Why a write cannot happen without credentials: in a pod, how to opt in; locally, that it is not
    done."""
    if "KUBEMILL_SERVICE_ACCOUNT" not in environ:
        return NotSupported(
            f"wmill.{call} changes the workspace, which `kubemill run` does not do: edit the workspace's "
            f"*.resource.yaml / *.variable.yaml files instead, or run the script as a ScriptRun whose Script "
            f"sets spec.runner.serviceAccountName"
        )
    namespace = environ.get("WM_WORKSPACE", "")
    return PermissionDenied(
        f"wmill.{call} needs a Kubernetes identity and this run has none: set spec.runner.serviceAccountName "
        f"on the Script to a ServiceAccount of namespace {namespace!r} that a Role allows to get, list, "
        f"create, update and delete resources.kubemill.dev and variables.kubemill.dev; its runs then get "
        f"that ServiceAccount's token (see {_DOCS})"
    )


def _message(body: str) -> str:
    """The `message` of a Status answer, else the body."""
    try:
        return str(json.loads(body).get("message") or body)
    except (ValueError, AttributeError):
        return body


def api_error(
    status: int, body: str, verb: str, kind: str, path: str, identity: str, namespace: str
) -> Exception:
    """The exception for an API server answer other than success."""
    message = _message(body)
    plural = KINDS[kind][1]
    group = "" if kind == "configmap" else "kubemill.dev"
    what = f"{verb} {plural}{'.' + group if group else ''} in namespace {namespace!r}"
    if status == 403:
        return PermissionDenied(
            f"{identity} may not {what} ({kind} {path!r}): grant the verb '{verb}' on '{plural}' "
            f"(apiGroup {group or 'core'}) to it with a Role and RoleBinding. The API server said: {message}"
        )
    if status == 401:
        return PermissionDenied(f"the API server did not accept this run's token ({what}, {kind} {path!r})")
    if status in (400, 422):
        return ResourceRejected(f"{kind} {path!r} was refused: {message}")
    return ApiError(f"{what} ({kind} {path!r}) failed with HTTP {status}: {message}", status)


def resource_spec(
    path: str,
    value: Any,
    resource_type: str | None,
    description: str | None,
    old: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A Resource's spec: `old` (an existing spec, for updates) with what the call sets."""
    spec = dict(old or {})
    spec["path"] = path
    if value is not None:
        if not isinstance(value, dict):
            raise ValueError(f"a resource value must be a JSON object, not {type(value).__name__}")
        spec["value"] = value
        if spec.get("valueFrom"):  # fields now given in clear no longer come from their Secret
            spec["valueFrom"] = {k: v for k, v in spec["valueFrom"].items() if k not in value} or None
            if spec["valueFrom"] is None:
                del spec["valueFrom"]
    if resource_type:
        spec["resourceType"] = resource_type
    if description is not None:
        spec["description"] = description
    if not spec.get("resourceType"):
        raise ValueError(f"resource {path!r} needs a resource_type (e.g. 'postgresql') to be created")
    return spec


def variable_spec(
    path: str, value: str, is_secret: bool | None, old: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """A Variable's spec with `value` inline. A variable kept in a Secret is not rewritten in clear."""
    if old and old.get("valueFrom"):
        ref = old["valueFrom"].get("secretKeyRef") or {}
        raise ResourceRejected(
            f"variable {path!r} is kept in Secret {ref.get('name')!r} (key {ref.get('key')!r}): change the "
            f"Secret, not the Variable"
        )
    spec = dict(old or {})
    spec.update(path=path, value=str(value))
    if is_secret is not None:
        spec["isSecret"] = bool(is_secret)
    return spec


def holds(obj: Mapping[str, Any], spec: Mapping[str, Any]) -> bool:
    """Whether `obj`'s spec has every field of `spec` as given (the API server may add defaults)."""
    found = obj.get("spec") or {}
    return all(found.get(k) == v for k, v in spec.items())


def windmill_view(obj: Mapping[str, Any]) -> dict[str, Any]:
    """A Resource object as Windmill's list_resources answers it."""
    spec = obj.get("spec") or {}
    return {
        "path": spec.get("path"),
        "resource_type": spec.get("resourceType"),
        "description": spec.get("description", ""),
        "name": (obj.get("metadata") or {}).get("name"),
    }


# --- the API -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Credentials:
    server: str
    token_file: str
    ca_file: str
    namespace: str
    identity: str


def credentials(environ: Mapping[str, str] | None = None) -> Credentials | None:
    """The in-cluster credentials of this run, or None when it has no token."""
    env = os.environ if environ is None else environ
    sa_dir = env.get("KUBEMILL_SERVICEACCOUNT_DIR") or SA_DIR
    token_file = os.path.join(sa_dir, "token")
    host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT", "443")
    if not host or not os.path.isfile(token_file):
        return None
    with open(token_file, encoding="utf-8") as f:
        token = f.read().strip()
    name = env.get("KUBEMILL_SERVICE_ACCOUNT")
    namespace = env.get("WM_WORKSPACE", "")
    identity = identity_from_token(token)
    if name and identity.startswith("this run"):
        identity = f"system:serviceaccount:{namespace}:{name}"
    host = f"[{host}]" if ":" in host else host
    return Credentials(
        f"https://{host}:{port}", token_file, os.path.join(sa_dir, "ca.crt"), namespace, identity
    )


Sender = Callable[["urllib.request.Request"], "tuple[int, str]"]


class KubeApi:
    """Resources and Variables of one namespace, found by Windmill path."""

    def __init__(
        self,
        creds: Credentials,
        send: Sender | None = None,
        retry_for: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        attempt_timeout: float = ATTEMPT_TIMEOUT,
    ) -> None:
        self.creds = creds
        self._send_fn = send or self._send
        self._context: ssl.SSLContext | None = None
        self.retry_for = retry_seconds(os.environ) if retry_for is None else retry_for
        self._clock, self._sleep = clock, sleep
        self.attempt_timeout = attempt_timeout

    def _send(self, request: urllib.request.Request) -> tuple[int, str]:
        import ssl
        import urllib.error
        import urllib.request

        if self._context is None:
            self._context = ssl.create_default_context(cafile=self.creds.ca_file)
        # The API server is reached directly, whatever proxy the run's environment names.
        opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=self._context)
        )
        try:
            with opener.open(request, timeout=request.timeout or self.attempt_timeout) as response:
                return int(response.status), response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def _send_retrying(
        self, method: str, url: str, data: bytes | None, headers: dict[str, str]
    ) -> tuple[int, str, bool]:
        """(status, body, retried) of the first final answer; Unavailable once the deadline has passed."""
        import urllib.request

        start = self._clock()
        deadline = start + self.retry_for
        attempt = 0
        while True:
            attempt += 1
            with open(self.creds.token_file, encoding="utf-8") as f:  # projected tokens rotate
                token = f.read().strip()
            request = urllib.request.Request(  # noqa: S310 - the API server's https URL
                self.creds.server + url,
                data=data,
                method=method,
                headers={**headers, "Authorization": f"Bearer {token}"},
            )
            request.timeout = max(1.0, min(self.attempt_timeout, deadline - self._clock()))
            try:
                status, text = self._send_fn(request)
            except Exception as exc:
                if not transient_error(exc):
                    raise
                reason = f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
            else:
                if not transient_answer(status, text):
                    return status, text, attempt > 1
                reason = f"HTTP {status}: {_message(text)}"
            pause = backoff(attempt)
            if self._clock() + pause > deadline:
                raise Unavailable(
                    f"{method} {url} got no answer but transient failures for "
                    f"{self._clock() - start:.0f}s ({attempt} attempts; {RETRY_ENV}={self.retry_for:g}); "
                    f"the last: {reason}",
                    503,
                )
            self._sleep(pause)

    def _call(
        self, method: str, verb: str, kind: str, path: str, name: str = "", body: Any = None, query: str = ""
    ) -> dict[str, Any]:
        plural = KINDS[kind][1]
        url = f"/apis/{GROUP_VERSION}/namespaces/{self.creds.namespace}/{plural}"
        url += f"/{name}" if name else ""
        url += f"?{query}" if query else ""
        found = self.request(method, url, verb, kind, path, body)
        return found if found is not None else {}

    def request(
        self,
        method: str,
        url: str,
        verb: str,
        kind: str,
        path: str,
        body: Any = None,
        missing_ok: bool = False,
        content_type: str = "application/json",
    ) -> Any:
        """One request to `url` (a path on the API server), retried while it fails transiently; None for a
        404 with `missing_ok`."""
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = content_type
        try:
            status, text, retried = self._send_retrying(method, url, data, headers)
        except Unavailable as exc:
            what = f"{verb} {KINDS[kind][1]} in namespace {self.creds.namespace!r} ({kind} {path!r})"
            raise Unavailable(f"{what}: {exc}", 503) from None
        if status == 404 and missing_ok:
            return None
        if status >= 300:
            error = api_error(status, text, verb, kind, path, self.creds.identity, self.creds.namespace)
            if isinstance(error, ApiError):
                error.retried = retried
            raise error
        return json.loads(text) if text else {}

    def list(self, kind: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self._call("GET", "list", kind, "*").get("items") or []
        return sorted(found, key=lambda o: str((o.get("spec") or {}).get("path")))

    def find(self, kind: str, path: str, verb: str = "list") -> dict[str, Any] | None:
        query = urllib.parse.urlencode({"fieldSelector": f"spec.path={path}"})
        items = self._call("GET", verb, kind, path, query=query).get("items") or []
        return items[0] if items else None

    def create(self, kind: str, path: str, spec: dict[str, Any]) -> dict[str, Any]:
        if self.find(kind, path) is not None:
            raise ResourceExists(f"{kind} {path!r} already exists in namespace {self.creds.namespace!r}")
        body: dict[str, Any] = {
            "apiVersion": GROUP_VERSION,
            "kind": KINDS[kind][0],
            "metadata": {"name": object_name(path), "labels": {"app.kubernetes.io/managed-by": "wmill"}},
            "spec": spec,
        }
        for unique in (False, True):
            body["metadata"]["name"] = object_name(path, unique=unique)
            try:
                return self._call("POST", "create", kind, path, body=body)
            except ApiError as exc:
                if exc.status != 409:
                    raise
                if exc.retried and (mine := self._created(kind, path, body)) is not None:
                    return mine  # an earlier attempt created it and its answer was lost
                if unique:
                    raise
                # the plain name is another path's: try the name with the path's hash
        raise AssertionError("unreachable")

    def _created(self, kind: str, path: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """The object named as `body` if it holds what `body` asked for (an earlier attempt's), else None."""
        name = body["metadata"]["name"]
        url = f"/apis/{GROUP_VERSION}/namespaces/{self.creds.namespace}/{KINDS[kind][1]}/{name}"
        found = self.request("GET", url, "get", kind, path, missing_ok=True)
        return dict(found) if found is not None and holds(found, body["spec"]) else None

    def replace(
        self, kind: str, path: str, change: Callable[[dict[str, Any]], dict[str, Any]]
    ) -> dict[str, Any]:
        """Update the object at `path` with `change(old spec) -> new spec` (retried once on a conflict)."""
        for attempt in (1, 2):
            obj = self.find(kind, path)
            if obj is None:
                raise KeyError(path)
            obj["spec"] = change(obj.get("spec") or {})
            obj.pop("status", None)
            try:
                return self._call("PUT", "update", kind, path, name=obj["metadata"]["name"], body=obj)
            except ApiError as exc:
                if attempt == 2 or exc.status != 409:
                    raise
        raise AssertionError("unreachable")

    def delete(self, kind: str, path: str) -> bool:
        obj = self.find(kind, path)
        if obj is None:
            return False
        plural = KINDS[kind][1]
        url = f"/apis/{GROUP_VERSION}/namespaces/{self.creds.namespace}/{plural}/{obj['metadata']['name']}"
        self.request("DELETE", url, "delete", kind, path, missing_ok=True)  # 404 on a retry: done
        return True
