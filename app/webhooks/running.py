"""Webhooks in a running app: the queue of its backend, the sender and the deliverer."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from app.metrics import Metrics
from app.settings import Settings
from app.store import FeedSink
from app.webhooks.deliverer import Deliverer
from app.webhooks.queue import EventQueue, MemoryQueue
from app.webhooks.sender import Sender

logger = logging.getLogger("jobcast")


class Webhooks:
    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self._memory: MemoryQueue | None = None
        queue: EventQueue
        if settings.backend == "redis":
            from app.webhooks.redis_queue import RedisQueue

            queue = RedisQueue(settings)
        else:
            queue = self._memory = MemoryQueue(settings, dropped=metrics.webhooks_failed.inc)
        self._queue = queue
        self._sender = Sender(settings)
        self._deliverer = Deliverer(settings, queue, self._sender, metrics)
        self._task: asyncio.Task[None] | None = None

    def watching(self, sink: FeedSink) -> FeedSink:
        """The sink the store is to publish to. On Redis the store's own scripts queue the
        events, so ``sink`` itself; in memory, ``sink`` with this process's queue beside it."""
        return sink if self._memory is None else self._memory.watching(sink)

    def start(self) -> None:
        self._task = asyncio.create_task(self._deliverer.run(), name="jobcast-webhooks")

    async def aclose(self) -> None:
        if self._memory is not None and (lost := self._deliverer.pending):
            # Held by this process alone (as its jobs are): said, for whoever must know.
            logger.warning(
                "webhooks: %d event(s) not delivered yet are lost with this process "
                "(the memory backend keeps them nowhere else)",
                lost,
            )
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._deliverer.stop()
        await self._queue.aclose()
        await self._sender.aclose()
