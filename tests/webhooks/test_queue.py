"""The memory backend's webhook queue: what it takes from the feed, and its bound."""

from __future__ import annotations

import asyncio
import logging

import pytest

from app import jobs
from app.models import Completion, NewJob
from app.settings import Settings
from app.streams.events import Change, Position
from app.webhooks import queue
from app.webhooks.queue import MemoryQueue

from .receiver import SECRET

pytestmark = pytest.mark.anyio


def finished(n: int) -> Change:
    job = jobs.complete(jobs.create(NewJob(), jobs.now()), Completion(), jobs.now())
    return Change.of(job, Position(0, n))


def hooked() -> Settings:
    return Settings(webhook_urls=("https://hooks.example.com/x",), webhook_secret=SECRET)


async def test_only_wanted_changes_are_queued_in_feed_order() -> None:
    waiting = MemoryQueue(hooked())
    started = jobs.create(NewJob(), jobs.now())
    waiting.offer(Change.of(started, Position(0, 1)))  # not terminal: not an event to send
    ends = [finished(n) for n in range(2, 5)]
    for change in ends:
        waiting.offer(change)
    taken = await waiting.take(10)
    assert [event.job for event in taken] == [change.job for change in ends]
    assert waiting.pending == 0


async def test_a_full_queue_drops_its_oldest_and_says_so(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(queue, "MEMORY_QUEUE_LENGTH", 3)
    drops: list[None] = []
    waiting = MemoryQueue(hooked(), dropped=lambda: drops.append(None))
    ends = [finished(n) for n in range(5)]
    with caplog.at_level(logging.WARNING, logger="jobcast"):
        for change in ends:
            waiting.offer(change)
    assert len(drops) == 2
    assert [event.job for event in await waiting.take(10)] == [c.job for c in ends[2:]]
    assert len([r for r in caplog.records if "webhook queue full" in r.getMessage()]) == 1


async def test_a_take_cancelled_as_an_event_arrives_is_cancelled() -> None:
    """A stopping server cancels the deliverer just as an event arrives: the take ends
    cancelled (Python 3.11's wait_for returned the event instead, and the deliverer went
    on, so the server waited for it for ever)."""
    waiting = MemoryQueue(hooked())
    take = asyncio.ensure_future(waiting.take(10))
    for _ in range(5):
        await asyncio.sleep(0)
    waiting.offer(finished(1))  # sets the event the take waits on...
    take.cancel()  # ...in the same turn as the cancel
    with pytest.raises(asyncio.CancelledError):
        await take
    assert take.cancelled()
