"""The server's Retry-After hint, in both of RFC 9110's forms (section 10.2.3), and what is not one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from types import SimpleNamespace

import pytest

from bliss_sampletrack.delivery.http_answers import gateway_down, retry_after


def answer(value: str | None) -> SimpleNamespace:
    return SimpleNamespace(headers={} if value is None else {"Retry-After": value})


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("120", 120.0), ("0", 0.0), ("2.5", 2.5), ("-3", 0.0), (None, None), ("soon", None), ("inf", None)],
)
def test_retry_after_in_seconds(value: str | None, seconds: float | None) -> None:
    assert retry_after(answer(value)) == seconds


def test_retry_after_as_an_http_date() -> None:
    later = datetime.now(UTC) + timedelta(seconds=90)
    got = retry_after(answer(format_datetime(later, usegmt=True)))
    assert got is not None and 85 <= got <= 90
    past = datetime.now(UTC) - timedelta(hours=1)
    assert retry_after(answer(format_datetime(past, usegmt=True))) == 0.0


def test_only_the_gateway_statuses_say_the_service_is_down() -> None:
    assert [s for s in (400, 408, 429, 500, 501, 502, 503, 504, 505) if gateway_down(s)] == [502, 503, 504]
