"""The one module that talks to the Kubernetes API server (besides Kopf's own watches).

Every request goes through `Kube.request`, which times it, reports it to an optional observer (the operator's
Prometheus metrics) and turns HTTP failures into the exceptions of `kubemill.errors`. Objects are plain dicts
(what the pure builders in `kubemill.k8s.builders` return); the client derives each object's URL from its
`apiVersion`, `kind` (or a plural) and namespace. Creates are idempotent: on 409 `create` returns the existing
object, but only when it holds everything the create would have written (`holds`: a restart finds its own
object; anything planted under a name kubemill computes raises `NotOurs`). Deletes tolerate 404 (`delete`
returns False: already gone).

It is synchronous on purpose: Kopf runs synchronous handlers in its thread pool, and one urllib3 pool
shared by those threads keeps connections warm.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote, urlencode

import kubernetes
from kubernetes.client import ApiClient, Configuration
from kubernetes.client.exceptions import ApiException

from kubemill.errors import ApiRejected, ApiUnavailable, Conflict, NotFound, NotOurs
from kubemill.k8s.api import JSON_PATCH as JSON_PATCH
from kubemill.k8s.api import MERGE_PATCH as MERGE_PATCH
from kubemill.k8s.api import Body as Body
from kubemill.k8s.api import KubeApi

Observer = Callable[[str, str, int, float], None]
"""Called after each request with (verb, resource plural, HTTP status or 0 on connection error, seconds)."""

_PLURALS = {
    "Endpoints": "endpoints",
    "NetworkPolicy": "networkpolicies",
    "PodDisruptionBudget": "poddisruptionbudgets",
}


def plural_of(kind: str) -> str:
    """The resource name of a kind (`Job` -> `jobs`, `ScriptRun` -> `scriptruns`)."""
    return _PLURALS.get(kind, kind.lower() + "s")


def object_path(api_version: str, plural: str, namespace: str | None, name: str | None = None) -> str:
    """`/api/v1/namespaces/N/pods/P` or `/apis/G/V/namespaces/N/R/NAME` (name and namespace optional)."""
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    if namespace:
        base += f"/namespaces/{quote(namespace)}"
    base += f"/{plural}"
    return f"{base}/{quote(name)}" if name else base


def load_configuration(kubeconfig: str | None = None) -> Configuration:
    """The API server and credentials: `kubeconfig` if given, else in-cluster, else the default kubeconfig."""
    config = Configuration()
    if kubeconfig:
        kubernetes.config.load_kube_config(config_file=kubeconfig, client_configuration=config)  # type: ignore[no-untyped-call]
        return config
    try:
        kubernetes.config.load_incluster_config(client_configuration=config)  # type: ignore[no-untyped-call]
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config(client_configuration=config)  # type: ignore[no-untyped-call]
    return config


class Kube:
    """A thin, typed-enough REST client over the Kubernetes API; the real `k8s.api.KubeApi`."""

    def __init__(self, configuration: Configuration, observe: Observer | None = None, timeout: float = 30.0):
        configuration.connection_pool_maxsize = max(configuration.connection_pool_maxsize or 0, 32)
        self._api = ApiClient(configuration)
        self._observe = observe
        self._timeout = timeout

    @classmethod
    def from_kubeconfig(cls, kubeconfig: str | None = None, observe: Observer | None = None) -> Kube:
        return cls(load_configuration(kubeconfig), observe)

    def close(self) -> None:
        self._api.close()  # type: ignore[no-untyped-call]

    # --- the single request path ---------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        body: object = None,
        query: Mapping[str, str | int | bool] | None = None,
        content_type: str = "application/json",
        raw: bool = False,
    ) -> Any:
        """Send one request; return decoded JSON (text with `raw`). Raises kubemill.errors on failure."""
        url = path + (
            "?" + urlencode({k: str(v).lower() if isinstance(v, bool) else v for k, v in query.items()})
            if query
            else ""
        )
        headers = {"Accept": "*/*" if raw else "application/json", "Content-Type": content_type}
        m, full_url, h, b, _ = self._api.param_serialize(
            method, url, header_params=headers, body=body, auth_settings=["BearerToken"]
        )
        verb = _verb(method, path, query)
        resource = _resource_of(path)
        start = time.perf_counter()
        status = 0
        try:
            response = self._api.call_api(
                m, full_url, header_params=h, body=b, _request_timeout=self._timeout
            )
            data = response.read()  # type: ignore[no-untyped-call]
            status = response.status
        except ApiException as exc:
            status = int(exc.status or 0)
            raise _error_for(status, f"{method} {path}", exc.body) from None
        except Exception as exc:  # urllib3 connection errors and timeouts
            raise ApiUnavailable(f"{method} {path}: {exc}") from exc
        finally:
            if self._observe is not None:
                self._observe(verb, resource, status, time.perf_counter() - start)
        text = data.decode("utf-8", errors="replace") if isinstance(data, bytes) else str(data)
        if status >= 400:  # call_api returns error responses instead of raising them
            raise _error_for(status, f"{method} {path}", text)
        return text if raw else (json.loads(text) if text else None)

    # --- objects -------------------------------------------------------------------------------------

    def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> Body:
        """The object; raises NotFound."""
        result: Body = self.request("GET", object_path(api_version, plural_of(kind), namespace, name))
        return result

    def get_or_none(self, api_version: str, kind: str, namespace: str | None, name: str) -> Body | None:
        try:
            return self.get(api_version, kind, namespace, name)
        except NotFound:
            return None

    def list(
        self,
        api_version: str,
        kind: str,
        namespace: str | None,
        *,
        labels: Mapping[str, str] | None = None,
        fields: Mapping[str, str] | None = None,
    ) -> list[Body]:
        """The items of a collection, optionally filtered by equality label and field selectors."""
        query: dict[str, str | int | bool] = {}
        if labels:
            query["labelSelector"] = ",".join(f"{k}={v}" for k, v in labels.items())
        if fields:
            query["fieldSelector"] = ",".join(f"{k}={v}" for k, v in fields.items())
        path = object_path(api_version, plural_of(kind), namespace)
        result = self.request("GET", path, query=query or None)
        items: list[Body] = result.get("items", [])
        return items

    def create(self, body: Mapping[str, Any], *, adopt_any: bool = False) -> tuple[Body, bool]:
        """Create `body`; on 409 return the existing object if it `holds` body (else raise `NotOurs`), or
        whatever it is with `adopt_any` (for a caller that then overwrites it). Returns (object, created)."""
        meta = body["metadata"]
        path = object_path(body["apiVersion"], plural_of(body["kind"]), meta.get("namespace"))
        try:
            created: Body = self.request("POST", path, body=dict(body))
            return created, True
        except Conflict:
            existing = self.get(body["apiVersion"], body["kind"], meta.get("namespace"), meta["name"])
            if not adopt_any and (problem := holds(existing, body)) is not None:
                where = f"{meta.get('namespace')}/{meta['name']}" if meta.get("namespace") else meta["name"]
                raise NotOurs(
                    f"{body['kind']} {where} already exists and is not the one kubemill would create "
                    f"({problem}); delete it, or find who made it"
                ) from None
            return existing, False

    def patch(
        self,
        api_version: str,
        kind: str,
        namespace: str | None,
        name: str,
        patch: object,
        *,
        status: bool = False,
        content_type: str = MERGE_PATCH,
    ) -> Body:
        """A merge patch (JSON patch with `content_type=JSON_PATCH`); the status subresource with `status`."""
        path = object_path(api_version, plural_of(kind), namespace, name) + ("/status" if status else "")
        result: Body = self.request("PATCH", path, body=patch, content_type=content_type)
        return result

    def replace(self, body: Mapping[str, Any], *, status: bool = False) -> Body:
        """PUT the whole object (its status subresource with `status`); its resourceVersion makes it
        conditional: a concurrent change is a Conflict, never a lost write."""
        meta = body["metadata"]
        path = object_path(body["apiVersion"], plural_of(body["kind"]), meta.get("namespace"), meta["name"])
        result: Body = self.request("PUT", path + ("/status" if status else ""), body=dict(body))
        return result

    def delete(
        self,
        api_version: str,
        kind: str,
        namespace: str | None,
        name: str,
        *,
        propagation: str = "Background",
    ) -> bool:
        """Delete; False if it was already gone."""
        path = object_path(api_version, plural_of(kind), namespace, name)
        try:
            self.request("DELETE", path, body={"propagationPolicy": propagation})
        except NotFound:
            return False
        return True

    def pod_log(
        self,
        namespace: str,
        name: str,
        *,
        container: str | None = None,
        limit_bytes: int | None = None,
        tail_lines: int | None = None,
    ) -> str:
        """A pod's log (through the API server, which asks the node)."""
        query: dict[str, str | int | bool] = {}
        if container:
            query["container"] = container
        if tail_lines is not None:
            query["tailLines"] = tail_lines
        if limit_bytes:
            query["limitBytes"] = limit_bytes
        text: str = self.request(
            "GET", object_path("v1", "pods", namespace, name) + "/log", query=query, raw=True
        )
        return text

    def event(self, body: Mapping[str, Any]) -> None:
        """Post an Event (best effort: failures are ignored, events are never worth failing a run for)."""
        try:
            self.create(body)
        except Exception:  # an event we could not post is not an error of the run
            return


def _conforms(kube: Kube) -> KubeApi:
    return kube  # mypy checks here that the client implements the whole protocol


def holds(existing: Mapping[str, Any], desired: Mapping[str, Any]) -> str | None:
    """None if `existing` holds every field `desired` sets (the API server may have added defaults, and
    others may have added labels); else what differs. Compared: the owner references, the labels, and every
    top-level field but `metadata` and `status` (a Secret's `stringData` against its base64 `data`)."""
    want, have = dict(desired), dict(existing)
    if "stringData" in want:
        encoded = {k: base64.b64encode(str(v).encode()).decode() for k, v in want.pop("stringData").items()}
        want["data"] = {**(want.get("data") or {}), **encoded}
    meta, stored = want.get("metadata") or {}, have.get("metadata") or {}
    owners = {(o.get("uid"), bool(o.get("controller"))) for o in meta.get("ownerReferences") or []}
    if not owners <= {(o.get("uid"), bool(o.get("controller"))) for o in stored.get("ownerReferences") or []}:
        return "other owners"
    fields = [(stored.get("labels") or {}, meta.get("labels") or {}, "metadata.labels")] + [
        (have.get(key), value, key)
        for key, value in want.items()
        if key not in ("apiVersion", "kind", "metadata", "status")
    ]
    return next((p for h, w, where in fields if (p := _contains(h, w, where)) is not None), None)


def _contains(have: object, want: object, where: str) -> str | None:
    if isinstance(want, Mapping):
        if not isinstance(have, Mapping):
            return f"{where} differs"
        for key, value in want.items():
            if key not in have:
                return f"{where}.{key} is missing"
            if (problem := _contains(have[key], value, f"{where}.{key}")) is not None:
                return problem
        return None
    if isinstance(want, list):
        if not isinstance(have, list) or len(have) != len(want):
            return f"{where} differs"
        for i, (h, w) in enumerate(zip(have, want, strict=True)):
            if (problem := _contains(h, w, f"{where}[{i}]")) is not None:
                return problem
        return None
    return None if have == want else f"{where} differs"


def _verb(method: str, path: str, query: Mapping[str, object] | None) -> str:
    if method == "GET":
        return "log" if path.endswith("/log") else ("list" if _is_collection(path) else "get")
    return {"POST": "create", "PATCH": "patch", "PUT": "update", "DELETE": "delete"}.get(
        method, method.lower()
    )


def _is_collection(path: str) -> bool:
    parts = path.strip("/").split("/")
    core = parts[0] == "api"
    rest = parts[2:] if core else parts[3:]
    if rest[:1] == ["namespaces"]:
        rest = rest[2:]
    return len(rest) == 1


def _resource_of(path: str) -> str:
    parts = path.strip("/").split("/")
    rest = parts[2:] if parts[0] == "api" else parts[3:]
    if rest[:1] == ["namespaces"] and len(rest) > 2:
        rest = rest[2:]
    resource = rest[0] if rest else "unknown"
    if len(rest) >= 3:
        resource += "/" + rest[2]
    return resource


def _error_for(status: int, what: str, body: object) -> Exception:
    message = what
    if isinstance(body, (str, bytes)):
        try:
            message = f"{what}: {json.loads(body).get('message', '')}"
        except (ValueError, AttributeError):
            message = f"{what}: {body!r}"[:500]
    if status == 404:
        return NotFound(message)
    if status == 409:
        return Conflict(message)
    if status == 429 or status >= 500 or status == 0:
        return ApiUnavailable(message)
    return ApiRejected(message, status)
