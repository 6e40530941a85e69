"""The deliverer in this process, sending to real receivers: what one endpoint may take of
the places deliveries share, and what it keeps once its deliveries are done."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import anyio
import pytest

from app import jobs
from app.metrics import Metrics
from app.models import Completion, NewJob
from app.settings import Settings
from app.streams.events import Change, Position
from app.webhooks.deliverer import PER_RECEIVER, Deliverer, _receiver
from app.webhooks.queue import MemoryQueue
from app.webhooks.sender import Sender
from tests.conftest import seconds

from .receiver import SECRET, Receiver, serve

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]


@pytest.fixture
async def delivering() -> AsyncIterator[tuple[Deliverer, MemoryQueue]]:
    """A deliverer running on a memory queue, to jobs' own URLs on 127.0.0.1."""
    settings = Settings(webhook_secret=SECRET, webhook_hosts=("127.0.0.1",))
    queue = MemoryQueue(settings)
    sender = Sender(settings)
    deliverer = Deliverer(settings, queue, sender, Metrics())
    task = asyncio.create_task(deliverer.run())
    try:
        yield deliverer, queue
    finally:
        task.cancel()
        await deliverer.stop()
        await sender.aclose()


def completed(url: str, number: int) -> Change:
    """A job whose own URL is ``url``, completed: an event to deliver."""
    job = jobs.create(NewJob(webhook_url=url), jobs.now())
    done = jobs.complete(job, Completion(), jobs.now())
    return Change.of(done, Position(1, number), "queued")


async def test_a_slow_receiver_takes_only_its_own_places(
    delivering: tuple[Deliverer, MemoryQueue], receiver: Receiver
) -> None:
    """A receiver that holds every delivery gets PER_RECEIVER at once, whatever is queued
    for it (at forty URLs of its own); another receiver's delivery goes meanwhile."""
    _, queue = delivering
    receiver.hold = asyncio.Event()
    fast = Receiver()
    server, task = await serve(fast)
    try:
        for number in range(40):
            queue.offer(completed(f"{receiver.url}/{number}", number))
        await receiver.wait_for(lambda r: r.in_flight == PER_RECEIVER)
        queue.offer(completed(fast.url, 40))
        await fast.wait_for(lambda r: len(r.accepted()) == 1)
        assert receiver.in_flight == PER_RECEIVER
    finally:
        receiver.hold.set()
        server.should_exit = True
        await task


def test_a_receiver_is_its_scheme_host_and_port_however_spelt() -> None:
    spellings = ["http://hooks.example/a", "HTTP://Hooks.Example.:80/b", "http://hooks.example:80"]
    assert {_receiver(url) for url in spellings} == {"http://hooks.example:80"}
    assert _receiver("https://hooks.example/a") != _receiver("http://hooks.example/a")


async def test_an_endpoint_is_forgotten_once_its_deliveries_are_done(
    delivering: tuple[Deliverer, MemoryQueue], receiver: Receiver
) -> None:
    """Each job's own URL has its gate (and its receiver its places) while delivered to,
    not for the life of the process."""
    deliverer, queue = delivering
    for number in range(20):
        queue.offer(completed(f"{receiver.url}/{number}", number))
    await receiver.wait_for(lambda r: len(r.accepted()) == 20)
    with anyio.fail_after(seconds(5)):
        # Let go as each delivery returns, after its answer: no event says so.
        while len(deliverer._gates) or len(deliverer._places):  # noqa: ASYNC110
            await asyncio.sleep(0.01)
