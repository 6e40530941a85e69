"""How a backend's outage is logged: once when it starts, then reminders, and once when it ends.

During an outage every request fails; a line per failure would bury the log
(and the one line that says what is wrong) under thousands of copies.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

logger = logging.getLogger("jobcast")

REMIND_EVERY = 60.0  # seconds between warnings while requests keep failing


class Outage:
    """Logs an outage when it starts and when it ends, not once per failure.

    ``remind_every``: while it lasts, warn again at most this often (None: never).
    """

    def __init__(
        self,
        started: str,
        ended: str,
        remind_every: float | None = REMIND_EVERY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._started = started
        self._ended = ended
        self._remind_every = remind_every
        self._clock = clock
        self._since: float | None = None
        self._warned = 0.0
        self._failures = 0

    def failed(self, detail: str) -> None:
        now = self._clock()
        if self._since is None:
            self._since = self._warned = now
            self._failures = 1
            logger.warning("%s: %s", self._started, detail)
            return
        self._failures += 1
        if self._remind_every is not None and now - self._warned >= self._remind_every:
            self._warned = now
            logger.warning(
                "%s; for %.0fs now, %d failures: %s",
                self._started,
                now - self._since,
                self._failures,
                detail,
            )

    def over(self) -> None:
        if self._since is not None:
            logger.info(
                "%s after %.1fs, %d failures",
                self._ended,
                self._clock() - self._since,
                self._failures,
            )
            self._since = None
