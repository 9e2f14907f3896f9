"""The operator's signing key: HMAC over approval decisions and resume URLs, stable across restarts.

The key lives in a Secret in the operator's namespace (`kubemill-signing-key`, created with 32 random bytes
the first time, read afterwards), so decisions signed and URLs handed out before a restart still verify
after it.
`KUBEMILL_SIGNING_KEY` (hex) overrides it, for `kubemill run` and tests that need no cluster.
"""

from __future__ import annotations

import base64
import os
import secrets
import threading

from kubemill.errors import NotFound
from kubemill.k8s.api import KubeApi

SECRET_NAME = "kubemill-signing-key"  # noqa: S105 - a name, not a secret
SECRET_KEY = "key"  # noqa: S105 - a name, not a secret


def operator_namespace() -> str:
    """Where the operator keeps its objects: `KUBEMILL_NAMESPACE`, the pod's namespace, or kubemill-system."""
    if os.environ.get("KUBEMILL_NAMESPACE"):
        return os.environ["KUBEMILL_NAMESPACE"]
    try:
        with open("/var/run/secrets/kubernetes.io/serviceaccount/namespace", encoding="utf-8") as f:
            return f.read().strip()
    except OSError:
        return "kubemill-system"


class SigningKey:
    """The operator's HMAC key, loaded once (from `KUBEMILL_SIGNING_KEY`, else the Secret, created on first
    use) through the operator's API client."""

    def __init__(self, api: KubeApi) -> None:
        self._api = api
        self._key: bytes | None = None
        self._lock = threading.Lock()

    def get(self) -> bytes:
        with self._lock:
            if self._key is None:
                self._key = _load_key(self._api)
            return self._key


def _load_key(api: KubeApi) -> bytes:
    if os.environ.get("KUBEMILL_SIGNING_KEY"):
        return bytes.fromhex(os.environ["KUBEMILL_SIGNING_KEY"])
    namespace = operator_namespace()
    try:
        secret = api.get("v1", "Secret", namespace, SECRET_NAME)
    except NotFound:
        fresh = base64.b64encode(secrets.token_bytes(32)).decode()
        secret, _ = api.create(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {
                    "name": SECRET_NAME,
                    "namespace": namespace,
                    "labels": {"app.kubernetes.io/part-of": "kubemill"},
                },
                "type": "Opaque",
                "data": {SECRET_KEY: fresh},
            }
        )
    return base64.b64decode(secret["data"][SECRET_KEY])
