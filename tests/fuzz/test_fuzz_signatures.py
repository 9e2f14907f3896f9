"""HttpTrigger signature headers: any headers and body are verified or refused (Refused), never crash; a
delivery that verifies keeps its replay key whatever unsigned headers come with it."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from kubemill.models.triggers import SignatureSpec
from kubemill.ui.signing import Refused, sign, verify

KEY = b"fuzz-key"
NOW = 1_700_000_000.0
SPECS = [
    SignatureSpec(format="github"),
    SignatureSpec(format="stripe"),
    SignatureSpec(format="slack"),
    SignatureSpec(format="standard-webhooks"),
    SignatureSpec(),
    SignatureSpec(header="X-Sig", prefix="v1=", encoding="base64", timestamp_header="X-Sig-Time"),
]
_NAMES = st.sampled_from(
    [
        "x-hub-signature-256",
        "x-github-delivery",
        "stripe-signature",
        "x-slack-signature",
        "x-slack-request-timestamp",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "x-signature-256",
        "x-sig",
        "x-sig-time",
    ]
)
_VALUES = st.one_of(
    st.text(max_size=80),
    st.sampled_from(["sha256=", "v0=", "v1,", "t=1700000000,v1=", "1700000000", "nan", "inf", "-1e309"]),
    st.builds(
        lambda a, b: a + b,
        st.sampled_from(["sha256=", "v0=", "v1,", "t=", "v1="]),
        st.text(alphabet="0123456789abcdefABCDEF=+/,t v", max_size=70),
    ),
)


@given(
    st.sampled_from(SPECS),
    st.dictionaries(_NAMES, _VALUES, max_size=6),
    st.binary(max_size=64),
    st.floats(allow_nan=False, allow_infinity=False, min_value=0, max_value=4e9),
)
def test_arbitrary_headers_are_verified_or_refused(
    spec: SignatureSpec, headers: dict[str, str], body: bytes, now: float
) -> None:
    try:
        key = verify(spec, KEY, headers, body, now)
    except Refused as exc:
        assert exc.status in (400, 401) and exc.message  # noqa: PT017
        return
    assert key.startswith(spec.format + ":")


@given(st.sampled_from(SPECS), st.binary(max_size=64), st.dictionaries(_NAMES, _VALUES, max_size=3))
def test_unsigned_extras_do_not_change_the_replay_key(
    spec: SignatureSpec, body: bytes, extra: dict[str, str]
) -> None:
    signed = {k.lower(): v for k, v in sign(spec, KEY, body, NOW).items()}
    first = verify(spec, KEY, signed, body, NOW)
    mixed = {**extra, **signed}
    mixed.setdefault("x-github-delivery", "other")
    assert verify(spec, KEY, mixed, body, NOW) == first
