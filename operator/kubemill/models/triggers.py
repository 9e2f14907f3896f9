"""HttpTrigger: start a script or flow from a signed HTTP request, for callers that hold no Kubernetes token.

Payment providers and git hosts sign each delivery with a shared key (HMAC-SHA256) instead of presenting a
bearer token. An HttpTrigger names the route they call, the script or flow to run, the Secret key holding the
signing key and the provider's signature form; `kubemill ui` serves the route (see `kubemill.ui.webhooks`).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field, model_validator

from kubemill.models.common import (
    Conditions,
    KubemillModel,
    KubemillResource,
    SecretKeyRef,
    StatusModel,
    WindmillPath,
    exactly_one,
    rule,
    validations,
)

ROUTE_PATTERN = r"^[a-z0-9]([a-z0-9_.-]*[a-z0-9])?(/[a-z0-9]([a-z0-9_.-]*[a-z0-9])?)*$"
ROUTE_MESSAGE = (
    "must be lower-case letters, digits, '.', '_' and '-', segments separated by / (like github/push)"
)
HEADER_PATTERN = r"^[A-Za-z0-9-]+$"
MAX_BODY_BYTES = 1024 * 1024
"""Args live in the run's spec, and etcd keeps objects under 1.5 MiB."""

SignatureFormat = Literal["github", "stripe", "slack", "standard-webhooks", "generic"]

EXACTLY_ONE_TARGET = "set exactly one of spec.scriptPath or spec.flowPath"


class SignatureSpec(KubemillModel):
    """How the caller signs: a provider's HMAC-SHA256 header form, or a generic one described by the fields.

    `github`: `X-Hub-Signature-256: sha256=<hex>` over the body (a replay is caught by the body's
    digest: the delivery id is not signed, so a redelivery of the same body starts no second run).
    `stripe`: `Stripe-Signature: t=<unix>,v1=<hex>` over `<t>.<body>`.
    `slack`: `X-Slack-Signature: v0=<hex>` over `v0:<X-Slack-Request-Timestamp>:<body>`.
    `standard-webhooks` (Svix and others): `webhook-signature: v1,<base64>` over
    `<webhook-id>.<webhook-timestamp>.<body>`, key `whsec_<base64>`.
    `generic`: `header` carries `prefix` + the hex or base64 HMAC of the body, or of `<timestamp>.<body>` when
    `timestampHeader` is set.
    """

    scheme: Literal["hmac-sha256"] = "hmac-sha256"
    format: SignatureFormat = "generic"
    header: Annotated[str, Field(max_length=128, pattern=HEADER_PATTERN)] = "X-Signature-256"
    prefix: Annotated[str, Field(max_length=32)] = ""
    encoding: Literal["hex", "base64"] = "hex"
    timestamp_header: Annotated[str, Field(max_length=128, pattern=HEADER_PATTERN)] | None = None
    tolerance_seconds: Annotated[int, Field(ge=1, le=86400)] = 300


class HeaderArg(KubemillModel):
    """A request header copied into the run's args."""

    name: Annotated[str, Field(min_length=1, max_length=128, pattern=HEADER_PATTERN)]
    arg: Annotated[str, Field(min_length=1, max_length=128)]


class RateLimit(KubemillModel):
    """A token bucket per trigger: `requestsPerSecond` sustained, `burst` at once."""

    requests_per_second: Annotated[int, Field(ge=1, le=100000)]
    burst: Annotated[int, Field(ge=1, le=100000)] | None = None


class HttpTriggerSpec(KubemillModel):
    """A route, the script or flow it runs, the signing key and how requests become args."""

    model_config = ConfigDict(
        json_schema_extra=validations(rule("has(self.scriptPath) != has(self.flowPath)", EXACTLY_ONE_TARGET))
    )

    route: Annotated[
        str,
        Field(
            min_length=1,
            max_length=200,
            pattern=ROUTE_PATTERN,
            json_schema_extra=validations(rule(f"self.matches(r'{ROUTE_PATTERN}')", ROUTE_MESSAGE)),
        ),
    ]
    script_path: WindmillPath | None = None
    flow_path: WindmillPath | None = None
    secret_ref: SecretKeyRef
    signature: SignatureSpec = Field(default_factory=SignatureSpec)
    body_arg: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    headers: Annotated[
        tuple[HeaderArg, ...],
        Field(
            max_length=32,
            json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
        ),
    ] = ()
    max_body_bytes: Annotated[int, Field(ge=1, le=MAX_BODY_BYTES)] = MAX_BODY_BYTES
    rate_limit: RateLimit | None = None
    summary: str = ""

    @model_validator(mode="after")
    def _one_target(self) -> HttpTriggerSpec:
        exactly_one({"scriptPath": self.script_path, "flowPath": self.flow_path}, EXACTLY_ONE_TARGET)
        return self


class HttpTriggerStatus(StatusModel):
    """Readiness of the trigger (reserved; the webhook server reads the spec on each delivery)."""

    observed_generation: int | None = None
    conditions: Conditions = ()


class HttpTrigger(KubemillResource):
    """An HttpTrigger resource."""

    kind: Literal["HttpTrigger"]
    spec: HttpTriggerSpec
    status: HttpTriggerStatus | None = None
