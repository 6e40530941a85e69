"""Webhooks on the Redis backend: a durable queue shared by every process, delivered by
exactly one of them, taken over when that one dies, kept across restarts."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING

import anyio
import pytest

from tests.conftest import seconds

from .receiver import SECRET, Delivery, Receiver, failing_for

if TYPE_CHECKING:
    from tests.e2e.conftest import JobsClient, RunningServer
    from tests.store.redis_server import RedisServer

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

Start = Callable[..., "RunningServer"]


@pytest.fixture
def on_redis(redis_server: str, redis_prefix: str) -> dict[str, str]:
    return {
        "JOBS_BACKEND": "redis",
        "JOBS_REDIS_URL": redis_server,
        "JOBS_REDIS_PREFIX": redis_prefix,
        "JOBS_WEBHOOK_SECRET": SECRET,
    }


def assert_delivered_once_each_in_order(
    deliveries: list[Delivery], expected: dict[str, list[int]]
) -> None:
    """Every expected event accepted; per job, first acceptances in version order; every
    signature valid; a repeated delivery only ever under the same webhook-id, same body."""
    assert all(d.verified for d in deliveries)
    first: dict[str, Delivery] = {}
    for delivery in deliveries:
        if 200 <= delivery.answered < 300:
            earlier = first.setdefault(delivery.webhook_id, delivery)
            assert earlier.body == delivery.body
    for job_id, wanted in expected.items():
        got = [d.job["version"] for d in first.values() if d.job["jobId"] == job_id]
        assert got == wanted, job_id
    assert len(first) == sum(len(v) for v in expected.values())


async def leader_of(servers: list[RunningServer]) -> RunningServer:
    """The one server whose metrics say it delivers."""
    with anyio.fail_after(10):
        while True:
            leading = []
            for srv in servers:
                async with srv.client() as api:
                    if await api.metric("jobcast_webhooks_delivering") == 1:
                        leading.append(srv)
            if len(leading) == 1:
                return leading[0]
            await asyncio.sleep(0.1)  # leadership is another process's state: poll it


@pytest.mark.slow
@pytest.mark.timeout(seconds(300))
async def test_a_minute_of_failures_then_everything_arrives_once_in_order(
    server: Start, receiver: Receiver, on_redis: dict[str, str]
) -> None:
    """1000 jobs end while the receiver answers 500 for a minute; then it answers 200,
    and gets every event, signed, in order per job, repeats only under the same id."""
    receiver.status = failing_for(60.0)
    settings = {
        **on_redis,
        "JOBS_WEBHOOK_URLS": receiver.url,
        "JOBS_WEBHOOK_EVENTS": "all",
        "JOBS_WEBHOOK_BACKOFF_MAX": "2",
    }
    one, two = server(**settings), server(**settings)
    expected: dict[str, list[int]] = {}
    # Fewer jobs in flight than a client has connections: none waits for one past its
    # timeout when the machine is slow.
    at_once = anyio.CapacityLimiter(50)
    async with one.client() as a, two.client() as b:

        async def run_job(writer: JobsClient, other: JobsClient) -> None:
            async with at_once:
                job_id = await writer.create_job()
                await other.complete(job_id)
            expected[job_id] = [1, 2]

        async with anyio.create_task_group() as group:
            for n in range(1000):
                writer, other = (a, b) if n % 2 else (b, a)
                group.start_soon(run_job, writer, other)
        await receiver.wait_for(lambda r: len({d.webhook_id for d in r.accepted()}) == 2000, 150)
    assert_delivered_once_each_in_order(receiver.deliveries, expected)
    assert any(d.answered == 500 for d in receiver.deliveries)


async def test_a_killed_deliverer_is_taken_over_and_nothing_is_lost(
    server: Start, receiver: Receiver, on_redis: dict[str, str]
) -> None:
    """kill -9 of the delivering process while a delivery is in flight: the other
    process takes the lead and delivers everything that was pending."""
    receiver.hold = asyncio.Event()
    settings = {**on_redis, "JOBS_WEBHOOK_URLS": receiver.url}
    servers = [server(**settings), server(**settings)]
    expected: dict[str, list[int]] = {}
    async with servers[0].client() as api:
        for _ in range(30):
            job_id = await api.create_job()
            await api.update(job_id, status="processing")
            expected[job_id] = [(await api.complete(job_id))["version"]]
    await receiver.wait_for(lambda r: r.in_flight > 0)
    leader = await leader_of(servers)
    os.kill(leader.pid, signal.SIGKILL)
    leader.process.wait()
    receiver.hold.set()
    survivor = next(srv for srv in servers if srv is not leader)
    await receiver.wait_for(lambda r: len({d.webhook_id for d in r.accepted()}) == 30, 30)
    assert await leader_of([survivor]) is survivor
    assert_delivered_once_each_in_order(receiver.deliveries, expected)


async def test_queued_events_survive_a_restart(
    server: Start, receiver: Receiver, on_redis: dict[str, str]
) -> None:
    """Events queued while the receiver is down are delivered by the next server process,
    after every process was stopped."""
    receiver.status = lambda: 500
    settings = {**on_redis, "JOBS_WEBHOOK_URLS": receiver.url, "JOBS_WEBHOOK_BACKOFF_MAX": "0.5"}
    first = server(**settings)
    expected: dict[str, list[int]] = {}
    async with first.client() as api:
        for _ in range(5):
            job_id = await api.create_job()
            expected[job_id] = [(await api.fail(job_id))["version"]]
    await receiver.wait_for(lambda r: len(r.deliveries) > 0)
    first.stop()
    receiver.status = lambda: 200
    second = server(**settings)
    await receiver.wait_for(lambda r: len({d.webhook_id for d in r.accepted()}) == 5, 20)
    assert_delivered_once_each_in_order(receiver.deliveries, expected)
    async with second.client() as api:
        await api.wait_for_metric("jobcast_webhooks_pending", lambda value: value == 0)


async def test_a_deliverer_that_loses_redis_says_no_other_process_has_the_lead(
    server: Start, receiver: Receiver, private_redis: RedisServer, redis_prefix: str
) -> None:
    """Redis gone past the lead's lease: the deliverer lets go of it, and its log says that
    whichever process reaches Redis first delivers, not that another one does."""
    srv = server(
        JOBS_BACKEND="redis",
        JOBS_REDIS_URL=private_redis.url,
        JOBS_REDIS_PREFIX=redis_prefix,
        JOBS_WEBHOOK_SECRET=SECRET,
        JOBS_WEBHOOK_URLS=receiver.url,
    )
    assert await leader_of([srv]) is srv
    private_redis.stop()
    said = "lost the lead; Redis is unreachable: whichever process reaches it first delivers"
    with anyio.fail_after(seconds(30)):
        while said not in srv.log():  # noqa: ASYNC110 (another process's log is no event)
            await asyncio.sleep(0.1)
    assert "another one delivers" not in srv.log()
    private_redis.start()
    assert await leader_of([srv]) is srv
