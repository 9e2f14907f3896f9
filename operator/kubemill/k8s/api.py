"""`KubeApi`: what the operator asks of the Kubernetes API, as a protocol.

`k8s.client.Kube` implements it against a real API server; `kubemill.testing.kubeapi.FakeKube` implements it
in memory (resourceVersions kept, 404 and 409 answered as the API server answers them) for unit tests of the
reconcilers. The operator's code is typed against this protocol, never against either class. The contract of
each call (idempotent creates, deletes that tolerate 404, conditional replaces) is written on `Kube`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

Body = dict[str, Any]
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"


class KubeApi(Protocol):
    """The calls the operator makes; see `k8s.client.Kube` for what each promises."""

    def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> Body: ...

    def get_or_none(self, api_version: str, kind: str, namespace: str | None, name: str) -> Body | None: ...

    def list(
        self,
        api_version: str,
        kind: str,
        namespace: str | None,
        *,
        labels: Mapping[str, str] | None = None,
        fields: Mapping[str, str] | None = None,
    ) -> list[Body]: ...

    def create(self, body: Mapping[str, Any], *, adopt_any: bool = False) -> tuple[Body, bool]: ...

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
    ) -> Body: ...

    def replace(self, body: Mapping[str, Any], *, status: bool = False) -> Body: ...

    def delete(
        self,
        api_version: str,
        kind: str,
        namespace: str | None,
        name: str,
        *,
        propagation: str = "Background",
    ) -> bool: ...

    def pod_log(
        self,
        namespace: str,
        name: str,
        *,
        container: str | None = None,
        limit_bytes: int | None = None,
        tail_lines: int | None = None,
    ) -> str: ...

    def event(self, body: Mapping[str, Any]) -> None: ...

    def request(
        self,
        method: str,
        path: str,
        *,
        body: object = None,
        query: Mapping[str, str | int | bool] | None = None,
        content_type: str = "application/json",
        raw: bool = False,
    ) -> Any: ...
