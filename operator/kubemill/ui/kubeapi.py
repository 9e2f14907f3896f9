"""The UI server's Kubernetes API client: every request carries the caller's own bearer token.

`kubemill ui` holds no privileges of its own: it knows where the API server is and which CA to trust, and
forwards each person's token, so RBAC and admission webhooks decide exactly as for kubectl. It is asynchronous
(aiohttp) because it serves many callers at once and streams watches and pod logs to browsers, which the
operator's synchronous `kubemill.k8s.client.Kube` is not built for; it shares that module's URL helpers.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from kubemill import constants
from kubemill.k8s.client import load_configuration, object_path, plural_of

Body = dict[str, Any]
KUBEMILL = constants.API_VERSION


class ApiError(Exception):
    """The API server said no (or could not be reached: status 502); `message` is its own words."""

    def __init__(self, status: int, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason = reason


@dataclass(frozen=True)
class ApiServer:
    """Where the API server is and how to trust it; `token` is only used for HttpTrigger deliveries."""

    url: str
    ssl_context: ssl.SSLContext | bool
    token: str | None = None

    @classmethod
    def from_kubeconfig(cls, kubeconfig: str | None) -> ApiServer:
        config = load_configuration(kubeconfig)
        context: ssl.SSLContext | bool = False
        if config.verify_ssl:
            context = ssl.create_default_context(cafile=config.ssl_ca_cert or None)
        bearer = (config.api_key or {}).get("authorization") or (config.api_key or {}).get("BearerToken")
        token = bearer.removeprefix("Bearer ").strip() if bearer else None
        return cls(config.host.rstrip("/"), context, token)


def kind_path(kind: str, namespace: str | None, name: str | None = None, api_version: str = KUBEMILL) -> str:
    """The URL path of a kubemill (or other) object or collection."""
    return object_path(api_version, plural_of(kind), namespace, name)


async def _error_from(response: aiohttp.ClientResponse) -> ApiError:
    text = await response.text()
    try:
        status = json.loads(text)
        return ApiError(response.status, str(status.get("message") or text), str(status.get("reason", "")))
    except ValueError:
        return ApiError(response.status, text[:500] or response.reason or "error")


class KubeApi:
    """Requests to the API server as whoever's token is passed in."""

    def __init__(self, server: ApiServer, session: aiohttp.ClientSession) -> None:
        self.server = server
        self._session = session

    @staticmethod
    def session(limit: int = 200) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=limit), trust_env=False)

    def _headers(self, token: str, content_type: str = "application/json") -> dict[str, str]:
        return {
            "Authorization": f"Bearer {token}",
            "Accept": "application/json",
            "Content-Type": content_type,
        }

    async def request(
        self,
        method: str,
        path: str,
        token: str,
        *,
        body: object = None,
        query: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> Any:
        """One request; the decoded JSON answer, or ApiError."""
        try:
            async with self._session.request(
                method,
                self.server.url + path,
                params=dict(query or {}),
                data=None if body is None else json.dumps(body),
                headers=self._headers(token, content_type),
                ssl=self.server.ssl_context,
                timeout=aiohttp.ClientTimeout(total=30),
            ) as response:
                if response.status >= 400:
                    raise await _error_from(response)
                text = await response.text()
                return json.loads(text) if text else None
        except aiohttp.ClientError as exc:
            raise ApiError(502, f"the Kubernetes API server could not be reached: {exc}") from exc

    async def stream(
        self, path: str, token: str, query: Mapping[str, str], timeout: float | None = None
    ) -> AsyncIterator[bytes]:
        """The lines of a streamed answer (a watch, a followed log), as they arrive."""
        try:
            async with self._session.get(
                self.server.url + path,
                params=dict(query),
                headers=self._headers(token),
                ssl=self.server.ssl_context,
                timeout=aiohttp.ClientTimeout(total=timeout, sock_read=None),
            ) as response:
                if response.status >= 400:
                    raise await _error_from(response)
                async for line in response.content:
                    yield line
        except aiohttp.ClientError as exc:
            raise ApiError(502, f"the Kubernetes API server could not be reached: {exc}") from exc

    # --- what the UI and the webhooks need -----------------------------------------------------------

    async def create(self, token: str, body: Body) -> Body:
        meta = body["metadata"]
        path = object_path(body["apiVersion"], plural_of(body["kind"]), meta.get("namespace"))
        created: Body = await self.request("POST", path, token, body=body)
        return created

    async def get(
        self, token: str, kind: str, namespace: str, name: str, api_version: str = KUBEMILL
    ) -> Body:
        found: Body = await self.request("GET", kind_path(kind, namespace, name, api_version), token)
        return found

    async def list(
        self, token: str, kind: str, namespace: str, *, field_selector: str = "", api_version: str = KUBEMILL
    ) -> list[Body]:
        query = {"fieldSelector": field_selector} if field_selector else None
        result = await self.request("GET", kind_path(kind, namespace, None, api_version), token, query=query)
        items: list[Body] = result.get("items", [])
        for item in items:  # list items carry no kind; the UI wants it
            item.setdefault("kind", kind)
            item.setdefault("apiVersion", api_version)
        return items

    async def merge_patch(self, token: str, kind: str, namespace: str, name: str, patch: Body) -> Body:
        patched: Body = await self.request(
            "PATCH",
            kind_path(kind, namespace, name),
            token,
            body=patch,
            content_type="application/merge-patch+json",
        )
        return patched

    async def whoami(self, token: str) -> Body:
        """The caller's user name and groups, as the API server authenticated them."""
        review = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
        answer = await self.request(
            "POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews", token, body=review
        )
        info: Body = (answer.get("status") or {}).get("userInfo") or {}
        return info

    async def watch(
        self, token: str, kind: str, namespace: str, name: str, resource_version: str, timeout: int
    ) -> AsyncIterator[Body]:
        """Each change to one object after `resource_version`, for up to `timeout` seconds."""
        query = {
            "watch": "true",
            "fieldSelector": f"metadata.name={name}",
            "resourceVersion": resource_version,
            "timeoutSeconds": str(timeout),
            "allowWatchBookmarks": "false",
        }
        async for line in self.stream(kind_path(kind, namespace), token, query, timeout + 5):
            if line.strip():
                yield json.loads(line)
