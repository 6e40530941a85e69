"""How long to wait before trying again after failures in a row."""

from __future__ import annotations

import random


def backoff(failures: int, first: float, cap: float) -> float:
    """Doubling from ``first`` per failure up to ``cap``, with jitter (between half and the
    whole of it) so that many waiters do not all try again at the same moment."""
    # The exponent stops growing long before the cap is passed: 2.0 ** 1024 overflows, and
    # a receiver down for a day fails more than a thousand times in a row.
    delay = min(cap, first * 2.0 ** min(max(1, failures) - 1, 60))
    return delay * random.uniform(0.5, 1.0)
