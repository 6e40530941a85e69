"""Retrying: :class:`RetryPolicy` (how often, how patiently) and the count of one request.

Retried: connection errors (refused, reset, timed out), ``503`` and ``429``,
and a proxy's ``502`` and ``504`` (Jobcast never answers those: its proxy
does, while the server restarts or is slow), each after a pause that grows
exponentially with jitter, or after the server's ``Retry-After`` when that
is longer. Nothing else is retried: any other answer is the server's
decision and is raised at once.

A request that must not be applied twice and has nothing that makes a
second copy harmless (an output append without ``expected_offset``) is
retried only when it surely never reached the server: the connection was
not made, or the server answered 429 (it refuses those before reading
them). A timeout or a reset after sending, a 503, or a proxy's 502 or 504,
may follow a request the server applied, so they are raised instead.
"""

from __future__ import annotations

import contextlib
import email.utils
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx2

from ._exceptions import ConnectionFailed


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently to retry connection errors, 429, 503 and a proxy's 502
    and 504.

    Retry ``n`` (from 1) waits between half and all of
    ``min(max_backoff, backoff * 2 ** (n - 1))`` seconds ("equal jitter"),
    or the server's ``Retry-After`` if that is longer. A ``Retry-After``
    beyond ``max_backoff`` is not waited for: the error is raised at once.
    ``RetryPolicy(retries=0)`` turns retrying off.

    A watch is more patient with a server it cannot reach, or that answers
    503 (or a proxy's 502 or 504): it reconnects for ``reconnect_for``
    seconds from its first failed attempt, however many retries that takes,
    so a restart or a short outage does not end it. A stream that is served
    and keeps ending without news gives up after ``retries``.
    """

    retries: int = 3
    backoff: float = 0.5
    max_backoff: float = 10.0
    reconnect_for: float = 60.0

    def __post_init__(self) -> None:
        if min(self.retries, self.backoff, self.max_backoff, self.reconnect_for) < 0:
            raise ValueError("retries, backoff, max_backoff and reconnect_for must not be negative")

    def pause(
        self, retry: int, retry_after: float | None = None, *, patient: bool = False
    ) -> float | None:
        """Seconds to wait before retry number ``retry``, or None to give up (past
        ``retries``, unless ``patient``: the caller counts ``reconnect_for``)."""
        if retry > self.retries and not (patient and self.retries):
            return None
        # A patient watch counts retries past any limit: 2.0 ** 1024 would overflow.
        ceiling = min(self.max_backoff, self.backoff * 2.0 ** min(retry - 1, 60))
        pause = ceiling / 2 + random.uniform(0, ceiling / 2)
        if retry_after is not None:
            if retry_after > self.max_backoff:
                return None
            pause = max(pause, retry_after)
        return pause


# Transport errors worth another attempt; others (an unsupported URL scheme) are not.
TRANSIENT = (httpx2.TimeoutException, httpx2.NetworkError, httpx2.RemoteProtocolError)
# The transient errors that happen before a request is sent: it cannot have been applied.
NEVER_SENT = (httpx2.ConnectError, httpx2.ConnectTimeout, httpx2.PoolTimeout)
# Answers worth another attempt; all but a 429 may follow a request the server applied.
RETRIED_STATUSES = (429, 502, 503, 504)


class Attempts:
    """The retry state of one request (or one watch): counts attempts, says how long to wait.

    ``replayable`` is false for a request that must not reach the server
    twice: it is retried only when the last attempt surely never did.
    """

    def __init__(
        self, policy: RetryPolicy, what: str, *, replayable: bool = True, watch: bool = False
    ) -> None:
        self.policy = policy
        self.what = what
        self.replayable = replayable
        self.watch = watch  # reconnects for the policy's reconnect_for when unreachable
        self.count = 0
        self.reached = 0  # failed attempts that may have reached the server (been applied)
        self.failing_since: float | None = None  # the round's first failure (monotonic)

    def _patient(self) -> bool:
        """Whether a watch's round of failures is still within ``reconnect_for``."""
        now = time.monotonic()
        if self.failing_since is None:
            self.failing_since = now
        return self.watch and now - self.failing_since < self.policy.reconnect_for

    def after_error(self, exc: Exception | None) -> float:
        """The pause before the next attempt after ``exc`` (None: a stream just ended).

        Raises ConnectionFailed when there is none.
        """
        self.count += 1
        if not isinstance(exc, NEVER_SENT):
            self.reached += 1
        transient = exc is None or isinstance(exc, TRANSIENT if self.replayable else NEVER_SENT)
        # A stream that ended (no error) was served: no outage to be patient with.
        patient = exc is not None and self._patient()
        pause = self.policy.pause(self.count, patient=patient) if transient else None
        if pause is None:
            reason = f"{type(exc).__name__}: {exc}" if exc is not None else "the stream ended"
            failed = ConnectionFailed(
                f"{self.what} failed after {self.count} attempt(s) ({reason})"
            )
            if not self.replayable and self.reached:
                failed.add_note(
                    "jobcast: it may have reached the server and been applied, its answer "
                    "lost; an append with expected_offset can be retried safely"
                )
            raise failed from exc
        return pause

    def after_response(self, response: httpx2.Response) -> float | None:
        """The pause before retrying a 429, 502, 503 or 504 (only a 429 if not replayable),
        or None to keep this answer."""
        self.count += 1
        status = response.status_code
        if status not in (RETRIED_STATUSES if self.replayable else (429,)):
            return None
        if status != 429:  # a proxy's, maybe, with the server's work done
            self.reached += 1
        patient = status != 429 and self._patient()
        return self.policy.pause(self.count, retry_after(response), patient=patient)

    def reset(self) -> None:
        """Start a fresh round of retries (a stream made progress)."""
        self.count = self.reached = 0
        self.failing_since = None


def retry_after(response: httpx2.Response) -> float | None:
    """The answer's ``Retry-After`` in seconds (either form), or None."""
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return None
    if value.isascii() and value.isdigit():  # "²".isdigit() too, which float() refuses
        return float(value)
    with contextlib.suppress(TypeError, ValueError):
        moment = email.utils.parsedate_to_datetime(value)
        return max(0.0, (moment - datetime.now(UTC)).total_seconds())
    return None
