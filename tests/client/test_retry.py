"""RetryPolicy (``jobcast_client._retry``): how long each retry waits, and when it gives up."""

from __future__ import annotations

import email.utils
from datetime import UTC, datetime, timedelta

import httpx2
import pytest
from jobcast_client import RetryPolicy
from jobcast_client._retry import retry_after


def test_backoff_grows_exponentially_with_jitter_up_to_its_cap() -> None:
    """Retry n waits between half and all of backoff * 2**(n-1), capped, and Retry-After wins."""
    policy = RetryPolicy(retries=6, backoff=0.5, max_backoff=4)
    for retry, ceiling in [(1, 0.5), (2, 1), (3, 2), (4, 4), (5, 4)]:
        pauses = {policy.pause(retry) for _ in range(50)}
        assert all(p is not None and ceiling / 2 <= p <= ceiling for p in pauses), retry
        assert len(pauses) > 1, "jittered"
    assert policy.pause(7) is None
    assert policy.pause(1, retry_after=3) == 3
    assert policy.pause(1, retry_after=5) is None
    assert RetryPolicy(retries=0).pause(1) is None
    assert policy.pause(7, patient=True) is not None, "a watch counts reconnect_for instead"
    assert RetryPolicy(retries=0).pause(1, patient=True) is None, "retries=0: none at all"
    assert policy.pause(5000, patient=True) is not None, "however many retries a watch counts"


def test_a_negative_setting_is_refused() -> None:
    """RetryPolicy refuses a negative setting when it is made."""
    for settings in (
        {"retries": -1},
        {"backoff": -0.1},
        {"max_backoff": -1.0},
        {"reconnect_for": -1.0},
    ):
        with pytest.raises(ValueError, match="must not be negative"):
            RetryPolicy(**settings)


def test_retry_after_reads_seconds_and_http_dates() -> None:
    """Retry-After in seconds or as an HTTP date becomes seconds; garbage or none is None."""
    later = email.utils.format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    earlier = email.utils.format_datetime(datetime.now(UTC) - timedelta(seconds=30), usegmt=True)

    def seconds_of(value: str | None) -> float | None:
        # As a server's bytes: a header is Latin-1 on the wire.
        headers = {} if value is None else {b"Retry-After": value.encode("latin-1")}
        return retry_after(httpx2.Response(503, headers=headers))

    assert seconds_of("7") == 7
    pause = seconds_of(later)
    assert pause is not None
    assert 25 < pause <= 30
    assert seconds_of(earlier) == 0
    assert seconds_of("soon") is None
    assert seconds_of("\u00b2") is None  # "²": str.isdigit() says yes, float() says no
    assert seconds_of(None) is None
