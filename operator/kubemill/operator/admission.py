"""Serving the approvals admission webhook: its TLS certificate, Kopf's server, the webhook configurations.

Kopf serves the `on.mutate`/`on.validate` handlers of `approvals.py` over HTTPS. Its own configuration
manager cannot express `matchConditions`, so kubemill writes the Mutating/ValidatingWebhookConfiguration
`kubemill-approvals` itself each time the server (re)starts, with CEL conditions that let through only
requests touching approval annotations: every other FlowRun update never leaves the API server.

Settings (environment, so the chart and the tests can set them without new flags):
`KUBEMILL_WEBHOOK=off` disables it; `KUBEMILL_WEBHOOK_ADDR` (default 127.0.0.1) and `KUBEMILL_WEBHOOK_PORT`
(default: a free port) where it listens; `KUBEMILL_WEBHOOK_HOST` the host the API server calls (default: the
address); `KUBEMILL_WEBHOOK_CERT_DIR` a directory with `tls.crt`, `tls.key` (and `ca.crt`), e.g. a mounted
Secret; without it a self-signed certificate is generated at start. `KUBEMILL_WEBHOOK_CONFIGURATIONS=external`
leaves the webhook configurations to whoever installed them (the Helm chart renders them from
`webhook_configurations`, pointing at a Service).
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import ipaddress
import logging
import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import kopf

from kubemill.engine.validation import admission_problems, describe
from kubemill.errors import NotFound
from kubemill.k8s.api import KubeApi

log = logging.getLogger("kubemill.admission")
CONFIGURATION_NAME = "kubemill-approvals"
ADMISSION = "admissionregistration.k8s.io/v1"

MUTATE_WHEN = (
    "has(object.metadata.annotations) && ('kubemill.dev/approve' in object.metadata.annotations"
    " || 'kubemill.dev/reject' in object.metadata.annotations)"
)
_GUARDED = (
    "(k.startsWith('approval.kubemill.dev/') || k in ['kubemill.dev/approve', 'kubemill.dev/reject',"
    " 'kubemill.dev/comment', 'kubemill.dev/payload', 'kubemill.dev/requested-by'])"
)
_NEW = "object.metadata.annotations"
_OLD = "oldObject.metadata.annotations"
VALIDATE_WHEN = (
    f"(has({_NEW}) && {_NEW}.exists(k, {_GUARDED} && (oldObject == null || !has({_OLD})"
    f" || !(k in {_OLD}) || {_OLD}[k] != {_NEW}[k])))"
    f" || (oldObject != null && has({_OLD}) && {_OLD}.exists(k, {_GUARDED}"
    f" && (!has({_NEW}) || !(k in {_NEW}))))"
)
"""Only requests that add, change or remove an approval-related annotation reach the validating webhook
(every status write of the operator, every other change, never leaves the API server)."""


SPEC_CHANGED = "oldObject == null || object.spec != oldObject.spec"
"""Only a new Flow, or a change of its spec, is checked (metadata and status writes never leave the API
server, so a Flow that became invalid later can still be labelled or cleaned up)."""


def webhook_configurations(client_config: dict[str, Any]) -> list[dict[str, Any]]:
    """The mutating webhooks (approve/reject -> a decision naming the requester; the requester stamped on
    CREATE) and the validating one (decision and requester annotations are the API server's view of who
    asked), all answered by `approvals.py`."""

    def webhook(
        name: str,
        operations: list[str],
        expression: str | None,
        *,
        subresources: bool = False,
        failure: str = "Fail",
        resource: str = "flowruns",
    ) -> dict[str, Any]:
        config = dict(client_config)
        if "url" in config:
            config["url"] = config["url"].rstrip("/") + "/" + name
        found: dict[str, Any] = {
            "name": f"{name}.kubemill.dev",
            "clientConfig": config,
            "rules": [
                {
                    "apiGroups": ["kubemill.dev"],
                    "apiVersions": ["v1alpha1"],
                    "resources": [resource, f"{resource}/status"] if subresources else [resource],
                    "operations": operations,
                    "scope": "Namespaced",
                }
            ],
            "failurePolicy": failure,
            "sideEffects": "None",
            "timeoutSeconds": 10,
            "admissionReviewVersions": ["v1"],
            "matchPolicy": "Equivalent",
        }
        if expression is not None:
            condition = "touches-approvals" if resource == "flowruns" else "changes-the-spec"
            found["matchConditions"] = [{"name": condition, "expression": expression}]
        return found

    meta = {"name": CONFIGURATION_NAME, "labels": {"app.kubernetes.io/part-of": "kubemill"}}
    never = {"reinvocationPolicy": "Never"}
    return [
        {
            "apiVersion": ADMISSION,
            "kind": "MutatingWebhookConfiguration",
            "metadata": meta,
            "webhooks": [
                {**webhook("approve", ["UPDATE"], MUTATE_WHEN), **never},
                # Ignore: creating runs must not depend on the operator being up; a run created meanwhile has
                # no requester, and a step that disallows self-approval then refuses everyone (approvals.py).
                {**webhook("requester", ["CREATE"], None, failure="Ignore"), **never},
            ],
        },
        {
            "apiVersion": ADMISSION,
            "kind": "ValidatingWebhookConfiguration",
            "metadata": meta,
            "webhooks": [
                webhook("decisions", ["CREATE", "UPDATE"], VALIDATE_WHEN, subresources=True),
                # Ignore: applying a Flow must not depend on the operator being up; its Ready condition and
                # the run's own check at start say the same then.
                webhook("flows", ["CREATE", "UPDATE"], SPEC_CHANGED, failure="Ignore", resource="flows"),
            ],
        },
    ]


@kopf.index("kubemill.dev", "v1alpha1", "scripts")
def script_parameters_index(
    namespace: str | None, spec: kopf.Spec, status: kopf.Status, **_: Any
) -> dict[tuple[str, str], list[str]]:
    """(namespace, path) -> the parameters of the Script's `main`, once its schema is derived."""
    schema = status.get("schema")
    path = spec.get("path")
    if (
        not isinstance(path, str)
        or not isinstance(schema, dict)
        or not isinstance(schema.get("properties"), dict)
    ):
        return {}
    return {(namespace or "", path): list(schema["properties"])}


@kopf.index("kubemill.dev", "v1alpha1", "scripts")
def script_language_index(namespace: str | None, spec: kopf.Spec, **_: Any) -> dict[tuple[str, str], str]:
    """(namespace, path) -> the Script's language (a flow's preprocessor must be Python or TypeScript)."""
    path, language = spec.get("path"), spec.get("language")
    if not isinstance(path, str) or not isinstance(language, str):
        return {}
    return {(namespace or "", path): language}


@kopf.on.validate("kubemill.dev", "v1alpha1", "flows", operations=["CREATE", "UPDATE"], id="flows")
async def refuse_flow(spec: kopf.Spec, namespace: str | None, **kwargs: Any) -> None:
    """Refuse a Flow kubemill would not run as written (the fields named; the Scripts known to the operator's
    indexes, so a step's input_transforms keys, and the language of a script step used as the preprocessor,
    are checked against the Script when it exists)."""
    document = {k: v for k, v in dict(spec).items() if k != "path"}
    here = namespace or ""
    index: kopf.Index[tuple[str, str], list[str]] = kwargs["script_parameters_index"]
    params = {path: next(iter(found)) for (where, path), found in index.items() if where == here}
    languages_index: kopf.Index[tuple[str, str], str] = kwargs["script_language_index"]
    languages = {path: next(iter(found)) for (where, path), found in languages_index.items() if where == here}
    problems = admission_problems(document, params, languages)
    if problems:
        raise kopf.AdmissionError(f"the Flow is not valid: {describe(problems)}", code=422)


def apply_configurations(api: KubeApi, client_config: dict[str, Any]) -> None:
    for body in webhook_configurations(client_config):
        try:
            api.get(ADMISSION, body["kind"], None, CONFIGURATION_NAME)
        except NotFound:
            api.create(body)
            continue
        api.patch(ADMISSION, body["kind"], None, CONFIGURATION_NAME, {"webhooks": body["webhooks"]})
    log.info("webhook configurations %s point at %s", CONFIGURATION_NAME, client_config.get("url"))


def self_signed(host: str, directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for `host` (IP or DNS name) valid a year; (certificate, key) files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    try:
        san: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        san = x509.DNSName(host)
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName([san]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "tls.crt", directory / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


class ApprovalsWebhookServer:
    """Kopf's webhook server, plus writing kubemill's own webhook configurations whenever it (re)starts."""

    def __init__(self, api: KubeApi) -> None:
        self.api = api
        self.addr = os.environ.get("KUBEMILL_WEBHOOK_ADDR", "127.0.0.1")
        self.port = int(os.environ.get("KUBEMILL_WEBHOOK_PORT", "0")) or None
        self.host = os.environ.get("KUBEMILL_WEBHOOK_HOST") or self.addr
        cert_dir = os.environ.get("KUBEMILL_WEBHOOK_CERT_DIR")
        if cert_dir:
            directory = Path(cert_dir)
            self.certfile, self.pkeyfile = directory / "tls.crt", directory / "tls.key"
            ca = directory / "ca.crt"
            self.cafile = ca if ca.exists() else self.certfile
        else:
            directory = Path(tempfile.mkdtemp(prefix="kubemill-webhook-"))
            self.certfile, self.pkeyfile = self_signed(self.host, directory)
            self.cafile = self.certfile

    async def __call__(self, fn: Any) -> AsyncIterator[Any]:
        server = kopf.WebhookServer(
            addr=self.addr,
            port=self.port,
            host=self.host,
            certfile=str(self.certfile),
            pkeyfile=str(self.pkeyfile),
            cadata=self.cafile.read_bytes(),
        )
        async for client_config in server(fn):
            config = dict(client_config)
            if "caBundle" not in config:
                config["caBundle"] = base64.b64encode(self.cafile.read_bytes()).decode()
            if os.environ.get("KUBEMILL_WEBHOOK_CONFIGURATIONS", "managed") != "external":
                await asyncio.to_thread(apply_configurations, self.api, config)
            yield client_config


def enabled() -> bool:
    return os.environ.get("KUBEMILL_WEBHOOK", "on").lower() not in ("off", "0", "false", "no")
