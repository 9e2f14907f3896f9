"""Windmill's S3 helpers over a small S3 client of the standard library (AWS Signature Version 4).

A run reaches object storage in one of two ways: the namespace's workspace storage (a Resource of type `s3`
labelled `kubemill.dev/workspace-storage: "true"`; the operator hands its value to every run as the file
$KUBEMILL_WORKSPACE_STORAGE_FILE, the way every Windmill script of a workspace may use its object storage),
or a Resource of type `s3` the Script declares (`s3_resource_path`). Objects are named as in Windmill, by an
S3Object `{"s3": "<key>"}`. The runner also puts results over 1 MiB there (`store_result`).
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

RESULTS_PREFIX = "kubemill/results"


class S3Error(Exception):
    """An S3 request that failed (the message names the bucket and key, never a credential)."""


def workspace_storage() -> dict[str, Any] | None:
    """The namespace's workspace storage settings (a resource of type s3), or None without one."""
    path = os.environ.get("KUBEMILL_WORKSPACE_STORAGE_FILE")
    if not path or not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        value = json.load(f)
    return value if isinstance(value, dict) else None


def endpoint_url(resource: dict[str, Any]) -> str:
    """The base URL of the service a resource of type s3 names (AWS when `endPoint` is empty)."""
    ssl = resource.get("useSSL", True) is not False
    host = str(resource.get("endPoint") or f"s3.{resource.get('region') or 'us-east-1'}.amazonaws.com")
    if "://" in host:
        return host.rstrip("/")
    port = resource.get("port")
    return f"{'https' if ssl else 'http'}://{host}{f':{port}' if port else ''}"


def _sign(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


class Client:
    """GET and PUT of whole objects in one bucket, path-style unless `pathStyle` is false and AWS is used."""

    def __init__(self, resource: dict[str, Any]) -> None:
        missing = [k for k in ("bucket", "accessKeyId", "secretKey") if not resource.get(k)]
        if missing:
            raise S3Error(f"the s3 resource lacks {', '.join(missing)}")
        self.bucket = str(resource["bucket"])
        self.region = str(resource.get("region") or "us-east-1")
        self.access_key = str(resource["accessKeyId"])
        self.secret_key = str(resource["secretKey"])
        self.base = endpoint_url(resource)
        self.virtual_host = resource.get("pathStyle") is False and not resource.get("endPoint")

    def _url(self, key: str) -> tuple[str, str, str]:
        quoted = urllib.parse.quote(key, safe="/~")
        parsed = urllib.parse.urlsplit(self.base)
        if self.virtual_host:
            host = f"{self.bucket}.{parsed.netloc}"
            path = f"/{quoted}"
        else:
            host = parsed.netloc
            path = f"/{urllib.parse.quote(self.bucket)}/{quoted}"
        return f"{parsed.scheme}://{host}{path}", host, path

    def _request(self, method: str, key: str, body: bytes = b"", content_type: str | None = None) -> bytes:
        url, host, path = self._url(key)
        now = datetime.datetime.now(datetime.UTC)
        stamp, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
        digest = hashlib.sha256(body).hexdigest()
        headers = {"host": host, "x-amz-content-sha256": digest, "x-amz-date": stamp}
        if content_type:
            headers["content-type"] = content_type
        names = sorted(headers)
        canonical = "\n".join(
            [method, path, "", *(f"{n}:{headers[n]}" for n in names), "", ";".join(names), digest]
        )
        scope = f"{day}/{self.region}/s3/aws4_request"
        to_sign = f"AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        key_bytes = _sign(
            _sign(_sign(_sign(f"AWS4{self.secret_key}".encode(), day), self.region), "s3"), "aws4_request"
        )
        signature = hmac.new(key_bytes, to_sign.encode(), hashlib.sha256).hexdigest()
        headers["authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={self.access_key}/{scope}, "
            f"SignedHeaders={';'.join(names)}, Signature={signature}"
        )
        request = urllib.request.Request(url, data=body if method == "PUT" else None, method=method)  # noqa: S310
        for name, value in headers.items():
            if name != "host":
                request.add_header(name, value)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310 - http(s) only
                return bytes(response.read())
        except urllib.error.HTTPError as exc:
            raise S3Error(
                f"S3 {method} of {key!r} in bucket {self.bucket!r} failed: HTTP {exc.code} {exc.reason}"
            ) from None
        except urllib.error.URLError as exc:
            raise S3Error(f"S3 {method} of {key!r} in bucket {self.bucket!r} failed: {exc.reason}") from None

    def get(self, key: str) -> bytes:
        return self._request("GET", key)

    def put(self, key: str, body: bytes, content_type: str | None = None) -> None:
        self._request("PUT", key, body, content_type)


def store_result(text: str, run_name: str) -> dict[str, Any] | None:
    """Put a result envelope's `result` JSON in the workspace storage; its reference, or None without one."""
    storage = workspace_storage()
    if storage is None:
        return None
    key = f"{RESULTS_PREFIX}/{os.environ.get('WM_WORKSPACE') or 'default'}/{run_name}/result.json"
    body = text.encode()
    Client(storage).put(key, body, "application/json")
    return {"s3": key, "bytes": len(body)}
