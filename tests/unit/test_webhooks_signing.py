"""Signature checks of HttpTrigger deliveries, per provider form, and the per-trigger token bucket."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from kubemill.models.triggers import SignatureSpec
from kubemill.ui.signing import Refused, TokenBucket, replay_name, sign, verify

KEY = b"test-webhook-secret"
BODY = b'{"event_type": "order.created", "data": {"id": 7}}'
NOW = 1_700_000_000.0

SPECS = {
    "github": SignatureSpec(format="github"),
    "stripe": SignatureSpec(format="stripe"),
    "slack": SignatureSpec(format="slack"),
    "standard-webhooks": SignatureSpec(format="standard-webhooks"),
    "generic": SignatureSpec(),
    "generic-base64-timestamp": SignatureSpec(
        header="X-Sig", prefix="v1=", encoding="base64", timestamp_header="X-Sig-Time"
    ),
}
TIMED = ["stripe", "slack", "standard-webhooks", "generic-base64-timestamp"]


def lower(headers: dict[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


@pytest.mark.parametrize("form", SPECS)
def test_a_correctly_signed_delivery_passes(form: str) -> None:
    headers = sign(SPECS[form], KEY, BODY, NOW)
    assert verify(SPECS[form], KEY, lower(headers), BODY, NOW + 5)


@pytest.mark.parametrize("form", SPECS)
def test_unsigned_deliveries_are_refused_with_401(form: str) -> None:
    with pytest.raises(Refused) as refused:
        verify(SPECS[form], KEY, {}, BODY, NOW)
    assert refused.value.status == 401
    assert "missing signature header" in refused.value.message


@pytest.mark.parametrize("form", SPECS)
def test_a_changed_body_or_another_key_is_refused(form: str) -> None:
    headers = lower(sign(SPECS[form], KEY, BODY, NOW))
    for key, body in ((KEY, BODY + b" "), (b"other-key", BODY)):
        with pytest.raises(Refused) as refused:
            verify(SPECS[form], key, headers, body, NOW)
        assert (refused.value.status, refused.value.message) == (401, "wrong signature")


@pytest.mark.parametrize("form", TIMED)
def test_deliveries_outside_the_timestamp_window_are_refused_as_replays(form: str) -> None:
    headers = lower(sign(SPECS[form], KEY, BODY, NOW))
    verify(SPECS[form], KEY, headers, BODY, NOW + 300)
    for later in (NOW + 301, NOW - 400):
        with pytest.raises(Refused, match="possible replay") as refused:
            verify(SPECS[form], KEY, headers, BODY, later)
        assert refused.value.status == 401


def test_the_providers_documented_examples_verify() -> None:
    # GitHub's documented example: secret "It's a Secret to Everybody", payload "Hello, World!".
    github = {
        "x-hub-signature-256": "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    }
    assert verify(SPECS["github"], b"It's a Secret to Everybody", github, b"Hello, World!", NOW)
    # Standard Webhooks: the key is base64 after whsec_.
    raw = b"\x01" * 24
    key = b"whsec_" + base64.b64encode(raw)
    mac = base64.b64encode(hmac.new(raw, b"msg_p5jX.1614265330.{}", hashlib.sha256).digest()).decode()
    headers = {"webhook-id": "msg_p5jX", "webhook-timestamp": "1614265330", "webhook-signature": f"v1,{mac}"}
    assert verify(SPECS["standard-webhooks"], key, headers, b"{}", 1614265330) == (
        "standard-webhooks:" + hashlib.sha256(b"msg_p5jX").hexdigest()
    )


def test_stripe_accepts_any_of_several_v1_signatures_during_key_rotation() -> None:
    good = sign(SPECS["stripe"], KEY, BODY, NOW)["Stripe-Signature"]
    stamp, v1 = good.split(",")
    headers = {"stripe-signature": f"{stamp},v1={'00' * 32},{v1},v0=zz"}
    assert verify(SPECS["stripe"], KEY, headers, BODY, NOW)


def test_malformed_signatures_and_timestamps_are_refused_not_crashed() -> None:
    for headers in (
        {"x-hub-signature-256": "sha256=not-hex"},
        {"x-hub-signature-256": "md5=abc"},
        {"stripe-signature": "v1=abc"},
        {"stripe-signature": "t=yesterday,v1=abc"},
    ):
        form = "github" if "x-hub-signature-256" in headers else "stripe"
        with pytest.raises(Refused) as refused:
            verify(SPECS[form], KEY, headers, BODY, NOW)
        assert refused.value.status == 401


def test_the_replay_key_is_the_same_for_the_same_delivery_and_differs_otherwise() -> None:
    spec = SPECS["stripe"]
    first = verify(spec, KEY, lower(sign(spec, KEY, BODY, NOW)), BODY, NOW)
    again = verify(spec, KEY, lower(sign(spec, KEY, BODY, NOW)), BODY, NOW + 1)
    other = verify(spec, KEY, lower(sign(spec, KEY, BODY + b"\n", NOW)), BODY + b"\n", NOW)
    assert first == again != other
    name = replay_name("a-trigger-with-a-rather-long-name-that-goes-on-and-on", first)
    assert len(name) <= 63
    assert name == replay_name("a-trigger-with-a-rather-long-name-that-goes-on-and-on", again)


def test_the_token_bucket_allows_a_burst_then_the_sustained_rate() -> None:
    bucket = TokenBucket(rate=2, burst=3)
    assert [bucket.take(NOW) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(NOW) == pytest.approx(0.5)
    assert bucket.take(NOW + 0.5) == 0.0
    assert bucket.take(NOW + 0.5) > 0
    assert [bucket.take(NOW + 100) for _ in range(4)][:3] == [0.0, 0.0, 0.0]


def _variants(form: str, headers: dict[str, str]) -> list[dict[str, str]]:
    """The same signed delivery, re-sent with what its signature does not cover changed."""
    out = [{**headers, "x-github-delivery": "a-fresh-delivery-id"}, {**headers, "x-unrelated": "1"}]
    for name, value in headers.items():
        if name in {"x-hub-signature-256", "x-slack-signature", "stripe-signature", "x-signature-256"}:
            out.append(
                {
                    **headers,
                    name: value.upper()
                    .replace("SHA256=", "sha256=")
                    .replace("V0=", "v0=")
                    .replace("T=", "t=")
                    .replace("V1=", "v1="),
                }
            )
        if name == "stripe-signature":
            out.append({**headers, name: value + ",v1=" + "00" * 32})
        if name == "webhook-signature":
            out.append({**headers, name: "v1,AAAA " + value})
    return out


@pytest.mark.parametrize("form", SPECS)
def test_a_replay_with_unsigned_parts_changed_has_the_same_replay_key(form: str) -> None:
    """A new X-GitHub-Delivery, upper-case hex or an extra signature entry must not make a replay look new."""
    spec = SPECS[form]
    headers = lower(sign(spec, KEY, BODY, NOW))
    first = verify(spec, KEY, headers, BODY, NOW)
    for variant in _variants(form, headers):
        assert verify(spec, KEY, variant, BODY, NOW + 1) == first, variant
    other = lower(sign(spec, KEY, BODY + b" ", NOW, delivery="msg_2"))
    assert verify(spec, KEY, other, BODY + b" ", NOW) != first
