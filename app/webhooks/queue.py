"""The events waiting for delivery, as the deliverer takes them: :class:`EventQueue`.

:class:`MemoryQueue` is the memory backend's: it watches the store's feed in
this process, so what it holds is lost when the process stops, exactly as the
jobs themselves are. The Redis backend's is :class:`app.webhooks.redis_queue.RedisQueue`.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from app.models import Job
from app.settings import Settings
from app.store import FeedSink
from app.store.outage import Outage
from app.streams.events import Change, Output
from app.webhooks.policy import wanted


@dataclass(frozen=True, slots=True)
class QueuedEvent:
    """One state of a job to deliver; ``key`` is the queue's own, to acknowledge it by."""

    key: str
    job: Job
    queued_at: float  # unix seconds: JOBS_WEBHOOK_RETRY_FOR counts from here

    @property
    def webhook_id(self) -> str:
        """The `webhook-id` of every attempt, to every endpoint: receivers de-duplicate by it."""
        return f"msg_{self.job.job_id}_{self.job.version}"


class LeadershipLost(Exception):
    """Another process delivers from now on: drop what is held, it is theirs."""


class EventQueue(Protocol):
    @property
    def delivering(self) -> bool:
        """Whether this process delivers (on Redis, only the holder of the lead)."""
        ...

    @property
    def pending(self) -> int:
        """Events in the queue not yet handed out (what the deliverer holds aside)."""
        ...

    async def take(self, most: int) -> list[QueuedEvent]:
        """Up to ``most`` events, in the order they were queued; waits a while for one,
        and may return none. Raises :class:`LeadershipLost` when another process takes over."""
        ...

    async def done(self, event: QueuedEvent) -> None:
        """The event is delivered (or given up) everywhere: forget it."""
        ...

    async def aclose(self) -> None: ...


MEMORY_QUEUE_LENGTH = 100_000  # events waiting in a memory-backed server at most


class MemoryQueue:
    """Events of this process's store, kept in this process: at most
    :data:`MEMORY_QUEUE_LENGTH`, the oldest dropped (and counted as failed) beyond."""

    def __init__(
        self,
        settings: Settings,
        dropped: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._dropped = dropped
        self._clock = clock
        self._events: deque[QueuedEvent] = deque()
        self._arrived = asyncio.Event()
        self._count = 0
        self._full = Outage(
            f"webhook queue full ({MEMORY_QUEUE_LENGTH} events): the oldest are dropped",
            "webhook queue has room again",
        )

    @property
    def delivering(self) -> bool:
        return True

    @property
    def pending(self) -> int:
        return len(self._events)

    def watching(self, sink: FeedSink) -> FeedSink:
        """``sink``, with every change to deliver also queued here (in the same call, so in
        feed order and never lost while the process lives)."""
        return _Tee(sink, self)

    def offer(self, change: Change) -> None:
        job = change.job
        if job is not None and wanted(job, self._settings):
            self._count += 1
            if len(self._events) >= MEMORY_QUEUE_LENGTH:
                lost = self._events.popleft()
                self._full.failed(f"dropped {lost.webhook_id}")
                self._dropped()
            self._events.append(QueuedEvent(str(self._count), job, self._clock()))
            self._arrived.set()

    async def take(self, most: int) -> list[QueuedEvent]:
        if not self._events:
            self._arrived.clear()
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancel that
            # comes with an event's arrival, and a stopping server would wait for ever.
            try:
                async with asyncio.timeout(1.0):
                    await self._arrived.wait()
            except TimeoutError:
                return []
        count = min(most, len(self._events))
        taken = [self._events.popleft() for _ in range(count)]
        self._full.over()
        return taken

    async def done(self, event: QueuedEvent) -> None:
        return None  # nothing outside this process remembers it

    async def aclose(self) -> None:
        return None


@dataclass(frozen=True, slots=True)
class _Tee:
    sink: FeedSink
    queue: MemoryQueue

    def publish(self, change: Change) -> None:
        self.sink.publish(change)
        self.queue.offer(change)

    def publish_output(self, output: Output) -> None:
        self.sink.publish_output(output)  # output is not a webhook event

    def close(self) -> None:
        self.sink.close()
