"""Cron parsing: any string either parses (and then always has a next and a latest tick) or is a CronError."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import example, given
from hypothesis import strategies as st
from kubemill.schedules import CronError, parse_cron

_FIELD = st.one_of(
    st.sampled_from(["*", "0", "00", "59", "60", "*/5", "1-5", "5-1", "1,2", "31", "30", "29", "2", "0-0"]),
    st.sampled_from(["JAN", "feb", "MON-FRI", "sun", "L", "W", "?", "#", "H", "7", "12", "13", "-1", "*/0"]),
    st.text(alphabet="0123456789*/,-?LW#HA-Z ", max_size=8),
)
_EXPRESSION = st.one_of(
    st.lists(_FIELD, min_size=0, max_size=7).map(" ".join),
    st.text(max_size=40),
)
_WHEN = st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2400, 1, 1), timezones=st.just(UTC))
_ZONES = st.sampled_from(["UTC", "Europe/Paris", "America/New_York", "Australia/Lord_Howe", "Asia/Kathmandu"])


@given(_EXPRESSION, _WHEN, _ZONES)
@example(
    "0 0 30 2 *", datetime(2026, 1, 1, tzinfo=UTC), "UTC"
)  # a day no month has: parse_cron must refuse it
def test_cron_parses_or_refuses_cleanly(expression: str, when: datetime, zone: str) -> None:
    try:
        cron = parse_cron(expression)
    except CronError as exc:
        assert repr(expression)[:20] in str(exc) or expression == ""  # noqa: PT017
        return
    after = cron.next_after(when, zone)
    assert after > when
    assert cron.latest_at(when, zone) <= when
