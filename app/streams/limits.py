"""Per-process limits on streams: slots, a snapshot budget per client, and a token bucket."""

from __future__ import annotations

import time
from collections.abc import Callable

from app.errors import RateLimited, TooManyStreams

BURST_SECONDS = 10  # a client may open this many seconds' worth of snapshots at once
_MAX_CLIENTS = 10_000  # budgets kept; past this the fullest ones are forgotten


class StreamSlots:
    """At most ``capacity`` streaming connections (SSE and WebSocket together) at once,
    and at most ``snapshot_rate`` all-jobs snapshots per second per client address.

    A slot is taken before a stream does any work and given back when it
    ends, so the count cannot overshoot however many connect at once.

    An all-jobs snapshot reads every job the client may see (a resume reads
    the change feed since its cursor): the costly part of a stream. A
    client that reconnects in a loop would make a process do little else,
    so each client address gets a budget (bursts of BURST_SECONDS' worth);
    past it, 429 with Retry-After, and a WebSocket ``rate_limited`` error.
    Behind a proxy the address is the client's only when
    JOBS_FORWARDED_ALLOW_IPS trusts the proxy.
    """

    def __init__(self, capacity: int, snapshot_rate: float = 2.0) -> None:
        self.capacity = capacity
        self.in_use = 0
        self.snapshot_rate = snapshot_rate
        self._budgets: dict[str | None, TokenBucket] = {}

    def admit_snapshot(self, client: str | None) -> None:
        """Spend one of ``client``'s snapshots; raises RateLimited past its budget."""
        if not self._budget(client).take():
            raise self._too_often()

    def check_snapshot(self, client: str | None) -> None:
        """Raise RateLimited when ``client`` has no snapshot left, spending none (what a
        HEAD answers: a client may ask whether to stream without costing its stream)."""
        if not self._budget(client).ready():
            raise self._too_often()

    def _budget(self, client: str | None) -> TokenBucket:
        budget = self._budgets.get(client)
        if budget is None:
            if len(self._budgets) >= _MAX_CLIENTS:
                self._forget_full()
            burst = max(1.0, self.snapshot_rate * BURST_SECONDS)
            budget = self._budgets[client] = TokenBucket(self.snapshot_rate, burst)
        return budget

    def _too_often(self) -> RateLimited:
        return RateLimited(
            "this client opens all-jobs streams too often "
            f"(JOBS_SNAPSHOT_RATE = {self.snapshot_rate:g} per second): wait, then resume "
            "with the last event id",
            retry_after=1 / self.snapshot_rate,
        )

    def _forget_full(self) -> None:
        """Drop the budgets that have refilled: forgetting them changes nothing."""
        full = [client for client, budget in self._budgets.items() if budget.is_full()]
        for client in full or list(self._budgets)[: _MAX_CLIENTS // 2]:
            del self._budgets[client]

    def acquire(self) -> Slot:
        """A slot; raises TooManyStreams when none is free."""
        self.check()
        self.in_use += 1
        return Slot(self)

    def check(self) -> None:
        """Raise TooManyStreams when no slot is free, taking none (what a HEAD answers)."""
        if self.in_use >= self.capacity:
            raise TooManyStreams(
                f"this server holds its limit of {self.capacity} open streams; retry shortly"
            )


class Slot:
    """One taken slot; ``release`` gives it back (once, however often it is called)."""

    __slots__ = ("_slots",)

    def __init__(self, slots: StreamSlots) -> None:
        self._slots: StreamSlots | None = slots

    def release(self) -> None:
        slots, self._slots = self._slots, None
        if slots is not None:
            slots.in_use -= 1


class TokenBucket:
    """``rate`` events per second on average, with bursts of up to ``burst``."""

    __slots__ = ("_clock", "_level", "_stamp", "burst", "rate")

    def __init__(
        self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._level = burst
        self._stamp = clock()

    def take(self) -> bool:
        """Spend one token if there is one; False when the rate is exceeded."""
        self._refill()
        if self._level >= 1:
            self._level -= 1
            return True
        return False

    def ready(self) -> bool:
        """Whether a token is there to take (none is taken)."""
        self._refill()
        return self._level >= 1

    def is_full(self) -> bool:
        self._refill()
        return self._level >= self.burst

    def _refill(self) -> None:
        now = self._clock()
        self._level = min(self.burst, self._level + (now - self._stamp) * self.rate)
        self._stamp = now
