"""The deliverer in this process, sending to real receivers: what one endpoint may take of
the places deliveries share, and what it keeps once its deliveries are done."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import anyio
import pytest

from app import jobs
from app.metrics import Metrics
from app.models import Completion, NewJob
from app.settings import Settings
from app.streams.events import Change, Position
from app.webhooks.deliverer import HOLD, PER_RECEIVER, Deliverer, _receiver
from app.webhooks.queue import MemoryQueue
from app.webhooks.sender import Sender
from tests.conftest import seconds
from tests.e2e.conftest import free_port

from .receiver import SECRET, Receiver, serve

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]


@pytest.fixture
def hold() -> int:
    return HOLD


@pytest.fixture
def settings() -> Settings:
    return Settings(webhook_secret=SECRET, webhook_hosts=("127.0.0.1",))


@pytest.fixture
async def delivering(settings: Settings, hold: int) -> AsyncIterator[tuple[Deliverer, MemoryQueue]]:
    """A deliverer running on a memory queue, to jobs' own URLs on 127.0.0.1."""
    queue = MemoryQueue(settings)
    sender = Sender(settings)
    deliverer = Deliverer(settings, queue, sender, Metrics(), hold=hold)
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


@pytest.mark.parametrize("hold", [5])
async def test_a_full_hold_of_a_failing_receivers_events_gives_the_oldest_up(
    delivering: tuple[Deliverer, MemoryQueue], receiver: Receiver
) -> None:
    """Every event held waits on a receiver that is down: the hold is full, and took no
    more from the queue. The failing receiver's oldest deliveries are given up early to
    make room (lanes whose task had not started yet too), and another receiver's events
    go on."""
    deliverer, queue = delivering
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens: refused, and refused again
    for number in range(2):
        queue.offer(completed(f"{dead}/{number}", number))
    with anyio.fail_after(seconds(10)):
        while not any(gate.failing for gate in deliverer._gates.values()):  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    for number in range(2, 5):  # the hold fills with lanes whose tasks have not run yet
        queue.offer(completed(f"{dead}/{number % 2}", number))
    for number in range(5, 8):
        queue.offer(completed(receiver.url, number))
    await receiver.wait_for(lambda r: len(r.accepted()) == 3)
    failed = deliverer._metrics.webhooks_failed
    with anyio.fail_after(seconds(5)):
        # Each event delivered (let go once its answer is in), held, or given up.
        while len(deliverer._held) + failed._value.get() != 5:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    assert failed._value.get() >= 1, "the room was made by giving up the dead receiver's"
    lanes = list(deliverer._lanes.values())
    assert all(lane.task is not None and not lane.task.done() for lane in lanes), "no lane left"
    held = deliverer._held.values()
    assert sum(h.left for h in held) == sum(len(lane.deliveries) for lane in lanes)


@pytest.mark.parametrize(
    "settings",
    [
        Settings(
            webhook_secret=SECRET,
            webhook_hosts=("127.0.0.1",),
            webhook_retry_for=2,
            webhook_backoff_max=5,
        )
    ],
)
async def test_a_delivery_is_tried_until_its_retry_window_has_passed(
    delivering: tuple[Deliverer, MemoryQueue], receiver: Receiver
) -> None:
    """Given up JOBS_WEBHOOK_RETRY_FOR after its event, not as soon as the next backoff
    would pass it: the last wait ends at the deadline."""
    deliverer, queue = delivering
    receiver.status = lambda: 500
    queue.offer(completed(receiver.url, 1))
    queued = time.time()
    failed = deliverer._metrics.webhooks_failed
    with anyio.fail_after(seconds(10)):
        while not failed._value.get():  # noqa: ASYNC110 (no event says a delivery gave up)
            await asyncio.sleep(0.02)
    assert time.time() - queued >= 2 - 0.05
    assert len(receiver.deliveries) >= 2
