"""Checking a signed webhook delivery, and rate limiting one: pure functions of the request and the clock.

Providers sign deliveries with HMAC-SHA256 under a shared key, each in its own header form (see
`kubemill.models.triggers.SignatureSpec`). `verify` checks one delivery and returns its replay key: the
SHA-256 of bytes the signature covers (the body with the signed timestamp; for Standard Webhooks the signed
message id, which the provider keeps across its retries), so two deliveries share a key if and only if they
are the same signed message. Nothing the
signature does not cover (a fresh `X-GitHub-Delivery`, upper-case hex, an extra `v1=` entry) can make a replay
look new. The server derives the run's name from the key, so a replay collides with the first run instead of
creating a second: within the timestamp window for schemes that sign a timestamp (outside it the timestamp
check refuses it), and for GitHub (which signs only the body) for as long as the first run exists.
Nothing here does I/O; the time is an input.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass

from kubemill.models.triggers import SignatureSpec


class Refused(Exception):
    """A request the trigger refuses: the HTTP status and the message the caller gets."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _mac(key: bytes, payload: bytes) -> bytes:
    return hmac.new(key, payload, hashlib.sha256).digest()


def _matches(expected: bytes, candidates: list[str], encoding: str) -> bool:
    """Whether any of the encoded `candidates` is `expected` (constant-time per candidate)."""
    for candidate in candidates:
        try:
            given = (
                bytes.fromhex(candidate) if encoding == "hex" else base64.b64decode(candidate, validate=True)
            )
        except (ValueError, binascii.Error):
            continue
        if hmac.compare_digest(given, expected):
            return True
    return False


def _header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name.lower())
    if not value:
        raise Refused(401, f"missing signature header {name}")
    return value


def _timestamp(value: str, spec: SignatureSpec, now: float) -> None:
    try:
        sent = float(value)
    except ValueError:
        raise Refused(401, f"the signature timestamp {value[:40]!r} is not a Unix time") from None
    if abs(now - sent) > spec.tolerance_seconds:
        raise Refused(
            401,
            f"the signature timestamp is {abs(now - sent):.0f}s away from now "
            f"(more than {spec.tolerance_seconds}s): refused as a possible replay",
        )


def _stripe(spec: SignatureSpec, key: bytes, headers: Mapping[str, str], body: bytes, now: float) -> bytes:
    value = _header(headers, "Stripe-Signature")
    parts = [p.split("=", 1) for p in value.split(",") if "=" in p]
    stamps = [v for k, v in parts if k.strip() == "t"]
    if not stamps:
        raise Refused(401, "Stripe-Signature has no t= timestamp")
    _timestamp(stamps[0], spec, now)
    signed = stamps[0].encode() + b"." + body
    if not _matches(_mac(key, signed), [v for k, v in parts if k.strip() == "v1"], "hex"):
        raise Refused(401, "wrong signature")
    return signed


def _slack(spec: SignatureSpec, key: bytes, headers: Mapping[str, str], body: bytes, now: float) -> bytes:
    stamp = _header(headers, "X-Slack-Request-Timestamp")
    value = _header(headers, "X-Slack-Signature")
    _timestamp(stamp, spec, now)
    signed = b"v0:" + stamp.encode() + b":" + body
    if not value.startswith("v0=") or not _matches(_mac(key, signed), [value[3:]], "hex"):
        raise Refused(401, "wrong signature")
    return signed


def standard_webhooks_key(key: bytes) -> bytes:
    """A Standard Webhooks secret (`whsec_<base64>`) as the raw HMAC key; other keys are used as they are."""
    text = key.strip()
    if text.startswith(b"whsec_"):
        try:
            return base64.b64decode(text[6:], validate=True)
        except binascii.Error:
            raise Refused(500, "the trigger's signing key starts with whsec_ but is not base64") from None
    return text


def _standard(spec: SignatureSpec, key: bytes, headers: Mapping[str, str], body: bytes, now: float) -> bytes:
    ident = _header(headers, "webhook-id")
    stamp = _header(headers, "webhook-timestamp")
    value = _header(headers, "webhook-signature")
    _timestamp(stamp, spec, now)
    signed = f"{ident}.{stamp}.".encode() + body
    given = [s.split(",", 1)[1] for s in value.split() if s.startswith("v1,")]
    if not _matches(_mac(standard_webhooks_key(key), signed), given, "base64"):
        raise Refused(401, "wrong signature")
    return ident.encode()  # signed; the provider's retries of one message keep it, so they start one run


def _github(spec: SignatureSpec, key: bytes, headers: Mapping[str, str], body: bytes, now: float) -> bytes:
    value = _header(headers, "X-Hub-Signature-256")
    if not value.startswith("sha256=") or not _matches(_mac(key, body), [value[7:]], "hex"):
        raise Refused(401, "wrong signature")
    return body  # X-GitHub-Delivery is not signed: anyone replaying can change it


def _generic(spec: SignatureSpec, key: bytes, headers: Mapping[str, str], body: bytes, now: float) -> bytes:
    value = _header(headers, spec.header)
    payload = body
    if spec.timestamp_header:
        stamp = _header(headers, spec.timestamp_header)
        _timestamp(stamp, spec, now)
        payload = stamp.encode() + b"." + body
    if not value.startswith(spec.prefix) or not _matches(
        _mac(key, payload), [value[len(spec.prefix) :]], spec.encoding
    ):
        raise Refused(401, "wrong signature")
    return payload


_FORMS = {
    "github": _github,
    "stripe": _stripe,
    "slack": _slack,
    "standard-webhooks": _standard,
    "generic": _generic,
}


def verify(spec: SignatureSpec, key: bytes, headers: Mapping[str, str], body: bytes, now: float) -> str:
    """Check a delivery's signature (headers keyed in lower case); return its replay key (the digest of the
    signed bytes) or raise Refused."""
    signed = _FORMS[spec.format](spec, key, headers, body, now)
    return spec.format + ":" + hashlib.sha256(signed).hexdigest()


def sign(spec: SignatureSpec, key: bytes, body: bytes, now: float, delivery: str = "msg_1") -> dict[str, str]:
    """The headers a provider of `spec.format` would send with `body` (for tests, benchmarks and docs)."""
    stamp = str(int(now))
    if spec.format == "github":
        return {"X-Hub-Signature-256": "sha256=" + _mac(key, body).hex(), "X-GitHub-Delivery": delivery}
    if spec.format == "stripe":
        return {"Stripe-Signature": f"t={stamp},v1=" + _mac(key, stamp.encode() + b"." + body).hex()}
    if spec.format == "slack":
        slack = _mac(key, b"v0:" + stamp.encode() + b":" + body).hex()
        return {"X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": "v0=" + slack}
    if spec.format == "standard-webhooks":
        mac = _mac(standard_webhooks_key(key), f"{delivery}.{stamp}.".encode() + body)
        return {
            "webhook-id": delivery,
            "webhook-timestamp": stamp,
            "webhook-signature": "v1," + base64.b64encode(mac).decode(),
        }
    payload = stamp.encode() + b"." + body if spec.timestamp_header else body
    mac = _mac(key, payload)
    encoded = mac.hex() if spec.encoding == "hex" else base64.b64encode(mac).decode()
    headers = {spec.header: spec.prefix + encoded}
    if spec.timestamp_header:
        headers[spec.timestamp_header] = stamp
    return headers


def replay_name(trigger: str, replay_key: str) -> str:
    """The run's name for a delivery: the trigger's name and a digest of its replay key (at most 63 chars)."""
    digest = hashlib.sha256(replay_key.encode()).hexdigest()[:16]
    return f"{trigger[:46].rstrip('-.')}-{digest}"


@dataclass
class TokenBucket:
    """`rate` requests per second sustained, `burst` at once; `take` says how long to wait (0: go ahead)."""

    rate: float
    burst: float
    tokens: float = -1.0
    updated: float = 0.0

    def take(self, now: float) -> float:
        if self.tokens < 0:
            self.tokens, self.updated = self.burst, now
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate
