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

SECRET_NAME = "kubemill-signing-key"
SECRET_KEY = "key"

_key: bytes | None = None
_lock = threading.Lock()


def operator_namespace() -> str:
    """Where the operator keeps its objects: `KUBEMILL_NAMESPACE`, the pod's namespace, or kubemill-system."""
    if os.environ.get("KUBEMILL_NAMESPACE"):
        return os.environ["KUBEMILL_NAMESPACE"]
    try:
        with open("/var/run/secrets/kubernetes.io/serviceaccount/namespace", encoding="utf-8") as f:
            return f.read().strip()
    except OSError:
        return "kubemill-system"


def signing_key() -> bytes:
    global _key
    with _lock:
        if _key is None:
            _key = _load_key()
        return _key


def _load_key() -> bytes:
    if os.environ.get("KUBEMILL_SIGNING_KEY"):
        return bytes.fromhex(os.environ["KUBEMILL_SIGNING_KEY"])
    from kubemill.operator import kube

    api = kube()
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
