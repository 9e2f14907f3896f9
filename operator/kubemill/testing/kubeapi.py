"""`FakeKube`: an in-memory `k8s.api.KubeApi` that answers as the API server does, for unit tests.

It keeps what the reconcilers depend on and nothing more: objects by (kind, namespace, name) with a uid,
a creationTimestamp and a resourceVersion that changes on every write and is opaque (random-looking, never
ordered: code that compares versions for anything but equality is caught); 404 on a get, replace or patch
of a missing object; 409 on a create of an existing name and on a replace carrying a stale resourceVersion;
the status subresource (a status write leaves the rest alone, and the reverse); a Secret's `stringData`
stored base64-encoded as `data`; garbage collection of owned objects on delete; label and field selectors.

Tests drive the world around the reconciler by hand (`put` a Job's status, `set_log` of a pod), and
`before_write` lets the process "crash" before any write or another writer get there first. `Crash` derives
from BaseException so the code under test cannot swallow it, as it could not survive a killed process.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import itertools
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from kubemill.errors import Conflict, NotFound, NotOurs
from kubemill.k8s.api import MERGE_PATCH, Body, KubeApi
from kubemill.k8s.client import holds

Key = tuple[str, str, str]
"""(kind, namespace, name)."""


class Crash(BaseException):
    """The operator process died here (raised before the write it names)."""


def _merge(target: Any, patch: Any) -> Any:
    """RFC 7386 merge patch."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = _merge(out.get(key), value)
    return out


def _field(body: Mapping[str, Any], dotted: str) -> Any:
    value: Any = body
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


class FakeKube:
    """An API server in a dict (thread-safe, like the client it stands in for)."""

    def __init__(self, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.clock = clock
        self.objects: dict[Key, Body] = {}
        self.events: list[Body] = []
        self.logs: dict[tuple[str, str], str] = {}
        self.writes: list[tuple[str, str, str]] = []
        """Every write carried out: (verb, kind, name)."""
        self.before_write: Callable[[str, str, str], None] = lambda verb, kind, name: None
        """Called with (verb, kind, name) before each write is tried: a test raises `Crash` here (the process
        dies before the write) or changes the object (a conflicting writer got there first)."""
        self._serial = itertools.count(1)
        self._lock = threading.RLock()

    # --- helpers for tests -----------------------------------------------------------------------------

    def _version(self) -> str:
        return hashlib.sha256(str(next(self._serial)).encode()).hexdigest()[:12]

    def _before(self, verb: str, kind: str, name: str) -> None:
        hook, self.before_write = self.before_write, lambda verb, kind, name: None  # not re-entered
        try:
            hook(verb, kind, name)
        finally:
            self.before_write = hook

    def put(self, body: Mapping[str, Any]) -> Body:
        """Store `body` as it is (a controller or another writer did it): no checks, a new version."""
        with self._lock:
            meta = body["metadata"]
            key = (body["kind"], meta.get("namespace") or "", meta["name"])
            stored = copy.deepcopy(dict(body))
            old = self.objects.get(key)
            uid = (old or {}).get("metadata", {}).get("uid")
            stored["metadata"].setdefault("uid", uid or self._version())
            stored["metadata"].setdefault("creationTimestamp", self.clock().strftime("%Y-%m-%dT%H:%M:%SZ"))
            stored["metadata"]["resourceVersion"] = self._version()
            self.objects[key] = stored
            return copy.deepcopy(stored)

    def find(self, kind: str, namespace: str, name: str) -> Body | None:
        with self._lock:
            found = self.objects.get((kind, namespace, name))
            return copy.deepcopy(found) if found is not None else None

    def of_kind(self, kind: str) -> list[Body]:
        with self._lock:
            return [copy.deepcopy(b) for (k, _, _), b in sorted(self.objects.items()) if k == kind]

    def set_log(self, namespace: str, pod: str, text: str) -> None:
        self.logs[(namespace, pod)] = text

    # --- KubeApi ---------------------------------------------------------------------------------------

    def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> Body:
        found = self.find(kind, namespace or "", name)
        if found is None:
            raise NotFound(f"{kind} {namespace}/{name} not found")
        return found

    def get_or_none(self, api_version: str, kind: str, namespace: str | None, name: str) -> Body | None:
        return self.find(kind, namespace or "", name)

    def list(
        self,
        api_version: str,
        kind: str,
        namespace: str | None,
        *,
        labels: Mapping[str, str] | None = None,
        fields: Mapping[str, str] | None = None,
    ) -> list[Body]:
        out = []
        for body in self.of_kind(kind):
            if namespace and body["metadata"].get("namespace") != namespace:
                continue
            have = body["metadata"].get("labels") or {}
            if any(have.get(k) != v for k, v in (labels or {}).items()):
                continue
            if any(str(_field(body, k)) != v for k, v in (fields or {}).items()):
                continue
            out.append(body)
        return out

    def create(self, body: Mapping[str, Any], *, adopt_any: bool = False) -> tuple[Body, bool]:
        meta = body["metadata"]
        with self._lock:
            self._before("create", body["kind"], meta["name"])
            existing = self.find(body["kind"], meta.get("namespace") or "", meta["name"])
            if existing is not None:  # 409: adopt it, as `Kube.create` does, if it is ours
                if not adopt_any and (problem := holds(existing, body)) is not None:
                    raise NotOurs(f"{body['kind']} {meta['name']} already exists ({problem})")
                return existing, False
            self.writes.append(("create", body["kind"], meta["name"]))
            stored = copy.deepcopy(dict(body))
            if "stringData" in stored:
                plain = stored.pop("stringData").items()
                encoded = {k: base64.b64encode(str(v).encode()).decode() for k, v in plain}
                stored["data"] = {**(stored.get("data") or {}), **encoded}
            stored["metadata"].pop("resourceVersion", None)
            stored["metadata"].pop("uid", None)
            return self.put(stored), True

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
        assert content_type == MERGE_PATCH, "the fake speaks merge patches only"
        with self._lock:
            self._before("patch", kind, name)
            current = self.get(api_version, kind, namespace, name)
            assert isinstance(patch, Mapping)
            expected = (patch.get("metadata") or {}).get("resourceVersion")
            if expected not in (None, current["metadata"]["resourceVersion"]):  # a precondition, as served
                raise Conflict(f"{kind} {name}: the object has been modified")
            if status:
                patch = {"status": patch.get("status")}
            else:
                patch = {k: v for k, v in patch.items() if k != "status"}
            self.writes.append(("patch", kind, name))
            return self.put(_merge(current, patch))

    def replace(self, body: Mapping[str, Any], *, status: bool = False) -> Body:
        meta = body["metadata"]
        with self._lock:
            self._before("replace", body["kind"], meta["name"])
            current = self.get(body.get("apiVersion", ""), body["kind"], meta.get("namespace"), meta["name"])
            if meta.get("resourceVersion") not in (None, current["metadata"]["resourceVersion"]):
                raise Conflict(f"{body['kind']} {meta['name']}: the object has been modified")
            self.writes.append(("replace", body["kind"], meta["name"]))
            if status:
                new = {**current, "status": copy.deepcopy(body.get("status"))}
            else:
                new = {**copy.deepcopy(dict(body)), "status": current.get("status")}
                new["metadata"] = {**new["metadata"], "uid": current["metadata"]["uid"]}
            return self.put(new)

    def delete(
        self,
        api_version: str,
        kind: str,
        namespace: str | None,
        name: str,
        *,
        propagation: str = "Background",
    ) -> bool:
        with self._lock:
            self._before("delete", kind, name)
            found = self.objects.get((kind, namespace or "", name))
            if found is None:
                return False
            self.writes.append(("delete", kind, name))
            del self.objects[(kind, namespace or "", name)]
            uid = found["metadata"]["uid"]
            for (k, ns, n), body in list(self.objects.items()):  # the garbage collector, at once
                if any(o.get("uid") == uid for o in body["metadata"].get("ownerReferences") or []):
                    self.delete("", k, ns, n)
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
        if self.find("Pod", namespace, name) is None:
            raise NotFound(f"pod {namespace}/{name} not found")
        text = self.logs.get((namespace, name), "")
        if tail_lines is not None:
            text = "".join(text.splitlines(keepends=True)[-tail_lines:])
        return text[-limit_bytes:] if limit_bytes else text

    def event(self, body: Mapping[str, Any]) -> None:
        self.events.append(copy.deepcopy(dict(body)))

    user = "system:serviceaccount:kubemill-system:kubemill-operator"
    """Who a SelfSubjectReview says the client is."""

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
        """Only what kubemill sends by path: a SelfSubjectReview; anything else is a 404."""
        if method == "POST" and path.endswith("/selfsubjectreviews"):
            return {"status": {"userInfo": {"username": self.user}}}
        raise NotFound(f"{method} {path}: not served by FakeKube")


def _conforms(fake: FakeKube) -> KubeApi:
    return fake  # mypy checks here that the fake implements the whole protocol
