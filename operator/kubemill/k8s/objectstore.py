"""The namespace's workspace storage (a Resource of type s3 labelled `kubemill.dev/workspace-storage=true`),
found and read for whoever reads a result the runner put there (`kubemill get`, `kubemill logs`).

Runs reach the storage themselves (runner_images/python3/wmill/s3.py and the TypeScript client): the
operator only hands them its value. This side reads whole objects with the caller's credentials to the
cluster: it needs read access to the Resource and the Secret its `secretKey` comes from.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from typing import Any

from kubemill.errors import KubemillError
from kubemill.k8s.api import KubeApi
from kubemill.models.common import API_VERSION
from kubemill.secrets import WORKSPACE_STORAGE_LABEL, UnresolvedReference, decode_secret, resolve


def storage_path(resources: Iterable[Mapping[str, Any]]) -> str | None:
    """The `spec.path` of the namespace's workspace storage among its Resources (bodies), if any;
    KubemillError when several claim it (the message names them)."""
    found = sorted(
        str(r["spec"].get("path"))
        for r in resources
        if (r.get("metadata", {}).get("labels") or {}).get(WORKSPACE_STORAGE_LABEL) == "true"
        and (r.get("spec") or {}).get("resourceType") == "s3"
    )
    if len(found) > 1:
        raise KubemillError(
            f"several Resources of type s3 are labelled {WORKSPACE_STORAGE_LABEL}=true ({', '.join(found)}): "
            f"keep the label on one"
        )
    return found[0] if found else None


def read_storage(kube: KubeApi, namespace: str) -> dict[str, Any] | None:
    """The workspace storage's resolved value (with its secret fields), or None without one."""
    import pydantic

    from kubemill.models.resources import Resource

    bodies = kube.list(API_VERSION, "Resource", namespace)
    path = storage_path(bodies)
    if path is None:
        return None
    resources = {}
    for body in bodies:
        try:
            parsed = Resource.model_validate(body)
        except pydantic.ValidationError:
            continue
        resources[parsed.spec.path] = parsed
    secrets = {}
    for source in (resources[path].spec.value_from or {}).values():
        secret = kube.get_or_none("v1", "Secret", namespace, source.secret_key_ref.name)
        if secret is not None:
            secrets[source.secret_key_ref.name] = decode_secret(secret.get("data"))
    try:
        value = resolve([], resources, {}, secrets, workspace_storage=path).workspace_storage
    except UnresolvedReference as exc:
        raise KubemillError(f"the workspace storage {path!r} cannot be read: {exc.message}") from None
    return dict(value) if isinstance(value, dict) else None


def endpoint_url(storage: Mapping[str, Any]) -> str:
    """The base URL of the service a resource of type s3 names (AWS when `endPoint` is empty)."""
    host = str(storage.get("endPoint") or f"s3.{storage.get('region') or 'us-east-1'}.amazonaws.com")
    if "://" in host:
        return host.rstrip("/")
    port = storage.get("port")
    scheme = "https" if storage.get("useSSL", True) is not False else "http"
    return f"{scheme}://{host}{f':{port}' if port else ''}"


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def get_object(storage: Mapping[str, Any], key: str) -> bytes:
    """An object's content, by a path-style GET signed with AWS Signature Version 4."""
    base = urllib.parse.urlsplit(endpoint_url(storage))
    bucket, region = str(storage["bucket"]), str(storage.get("region") or "us-east-1")
    path = f"/{urllib.parse.quote(bucket)}/{urllib.parse.quote(key, safe='/~')}"
    now = datetime.datetime.now(datetime.UTC)
    stamp, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    empty = hashlib.sha256(b"").hexdigest()
    signed = "host;x-amz-content-sha256;x-amz-date"
    headers = f"host:{base.netloc}\nx-amz-content-sha256:{empty}\nx-amz-date:{stamp}\n"
    canonical = f"GET\n{path}\n\n{headers}\n{signed}\n{empty}"
    scope = f"{day}/{region}/s3/aws4_request"
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    signing = _hmac(
        _hmac(_hmac(_hmac(f"AWS4{storage['secretKey']}".encode(), day), region), "s3"), "aws4_request"
    )
    to_sign = f"AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{digest}"
    signature = hmac.new(signing, to_sign.encode(), hashlib.sha256)
    request = urllib.request.Request(f"{base.scheme}://{base.netloc}{path}")  # noqa: S310 - http(s) only
    request.add_header("x-amz-content-sha256", empty)
    request.add_header("x-amz-date", stamp)
    request.add_header(
        "authorization",
        f"AWS4-HMAC-SHA256 Credential={storage['accessKeyId']}/{scope}, SignedHeaders={signed}, "
        f"Signature={signature.hexdigest()}",
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310 - http(s) only
            return bytes(response.read())
    except urllib.error.HTTPError as exc:
        raise KubemillError(
            f"reading {key!r} from bucket {bucket!r} failed: HTTP {exc.code} {exc.reason}"
        ) from None
    except urllib.error.URLError as exc:
        raise KubemillError(f"reading {key!r} from bucket {bucket!r} failed: {exc.reason}") from None
