"""Per-process limits on connections: stream slots, and a token bucket for message rates."""

from __future__ import annotations

import time
from collections.abc import Callable

from app.errors import TooManyStreams


class StreamSlots:
    """At most ``capacity`` streaming connections (SSE and WebSocket together) at once.

    A slot is taken before a stream does any work and given back when it
    ends, so the count cannot overshoot however many connect at once.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.in_use = 0

    def acquire(self) -> Slot:
        """A slot; raises TooManyStreams when none is free."""
        if self.in_use >= self.capacity:
            raise TooManyStreams(
                f"this server holds its limit of {self.capacity} open streams; retry shortly"
            )
        self.in_use += 1
        return Slot(self)


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
        now = self._clock()
        self._level = min(self.burst, self._level + (now - self._stamp) * self.rate)
        self._stamp = now
        if self._level >= 1:
            self._level -= 1
            return True
        return False
