"""Redis going away: clients are told little, the log enough (once), and calls end in time."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import anyio
import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from app import jobs
from app.errors import BackendUnavailable
from app.jobs import JobFilter
from app.models import NewJob
from app.store import Idempotency, JobStore
from app.store.outage import Outage
from app.store.redis import RedisStore
from app.store.redis_client import POOL_SIZE, UNAVAILABLE
from app.streams.events import Position
from tests.conftest import seconds
from tests.store.harness import (
    LOST_ITS_PLACE,
    WAIT,
    Clock,
    Harness,
    Recorder,
    contract_settings,
    open_redis_store,
)
from tests.store.redis_server import RedisServer

pytestmark = pytest.mark.anyio

TIMEOUT = 1.0  # JOBS_REDIS_TIMEOUT of these tests
LIMIT = TIMEOUT + seconds(TIMEOUT / 2)  # the deadline, and a margin for a busy machine

Call = Callable[[], Awaitable[object]]


def every_call(harness: Harness, job_id: str, cursor: Position) -> dict[str, Call]:
    """One of each store operation, on a job that exists and a cursor the feed still has."""
    store = harness.store
    return {
        "ping": store.ping,
        "get": lambda: store.get(job_id),
        "get_change": lambda: store.get_change(job_id),
        "create": harness.create,
        "create with a key": lambda: harness.create(idempotency=Idempotency("k", "f")),
        "update": lambda: harness.update(job_id, progress=5),
        "list": lambda: store.list(JobFilter(), 10, None),
        "list an owner's": lambda: store.list(JobFilter(owner="alice"), 10, None),
        "snapshot": lambda: store.replay(JobFilter(), None),
        "an owner's snapshot": lambda: store.replay(JobFilter(owner="alice"), None),
        "resume": lambda: store.replay(JobFilter(), cursor),
        "count": store.count_by_status,
        "sweep": store.sweep,
    }


async def fails_in_time(call: Call) -> BackendUnavailable:
    """Await ``call``: it must raise BackendUnavailable, within LIMIT."""
    started = time.monotonic()
    with pytest.raises(BackendUnavailable) as caught:
        await call()
    took = time.monotonic() - started
    assert took <= LIMIT, f"took {took:.2f}s"
    return caught.value


def logged(caplog: pytest.LogCaptureFixture, text: str) -> list[logging.LogRecord]:
    return [record for record in caplog.records if text in record.getMessage()]


@pytest.fixture
async def outage(private_redis: RedisServer, redis_prefix: str) -> AsyncIterator[Harness]:
    """A started store on a Redis of the test's own, with one job of ``alice``'s in it."""
    sink = Recorder()
    store = await open_redis_store(private_redis.url, redis_prefix, sink, redis_timeout=TIMEOUT)
    try:
        harness = Harness(store, sink, Clock())
        await harness.store.create(jobs.create(NewJob(owner="alice"), jobs.now()), None)
        yield harness
    finally:
        if private_redis.process is not None:
            private_redis.resume()
        await store.aclose()


async def until_answering(store: JobStore) -> None:
    with anyio.fail_after(WAIT):
        while True:
            try:
                await store.ping()
                return
            except BackendUnavailable:
                await anyio.sleep(0.05)


async def test_clients_are_told_nothing_of_where_redis_is(
    outage: Harness, private_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis stopped: each call's 503 is generic; the log has the detail once, then "back"."""
    caplog.set_level(logging.INFO, logger="jobcast")
    job = outage.sink.changes[-1]
    private_redis.stop()
    for name, call in every_call(outage, job.job_id, job.position).items():
        error = await fails_in_time(call)
        assert str(error) == UNAVAILABLE, name
        assert "127.0.0.1" not in str(error)
        assert str(private_redis.port) not in str(error)
        assert isinstance(error.__cause__, RedisError | OSError), name
    [warning] = logged(caplog, "requests get 503")
    assert warning.levelno == logging.WARNING
    assert f"127.0.0.1:{private_redis.port}" in warning.getMessage()

    private_redis.start()
    await until_answering(outage.store)
    [back] = logged(caplog, "answers again")
    assert back.levelno == logging.INFO
    assert len(logged(caplog, "requests get 503")) == 1


def test_an_outage_is_logged_at_its_start_now_and_then_and_at_its_end(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Failures warn once, then at most once a reminder period, and recovery says how long."""
    caplog.set_level(logging.INFO, logger="jobcast")
    now = [100.0]
    outage = Outage("Redis is down", "Redis is back", remind_every=60, clock=lambda: now[0])
    outage.over()  # nothing was wrong: nothing to say
    for _ in range(50):
        outage.failed("Error 111 connecting to 10.0.0.7:6379")
        now[0] += 1.5  # 75 seconds of failures in all
    outage.over()
    outage.over()
    messages = [(record.levelname, record.getMessage()) for record in caplog.records]
    assert messages == [
        ("WARNING", "Redis is down: Error 111 connecting to 10.0.0.7:6379"),
        (
            "WARNING",
            "Redis is down; for 60s now, 41 failures: Error 111 connecting to 10.0.0.7:6379",
        ),
        ("INFO", "Redis is back after 75.0s, 50 failures"),
    ]


async def test_every_call_ends_within_the_timeout_when_redis_hangs(
    outage: Harness, private_redis: RedisServer
) -> None:
    """A paused Redis turns every call, and a crowd larger than the pool, into 503s in time."""
    job = outage.sink.changes[-1]
    calls = list(every_call(outage, job.job_id, job.position).values())
    # More callers than pooled connections: some wait for one, inside the same deadline.
    calls += [lambda: outage.store.get(job.job_id)] * (2 * POOL_SIZE)
    private_redis.pause()
    async with anyio.create_task_group() as group:
        for call in calls:
            group.start_soon(fails_in_time, call)


async def test_a_call_cut_short_leaves_no_reply_behind(
    outage: Harness, private_redis: RedisServer
) -> None:
    """Commands cut short by the deadline never hand their late replies to later calls."""
    job = outage.sink.changes[-1]
    store = outage.store
    private_redis.pause()
    async with anyio.create_task_group() as group:
        for call in every_call(outage, job.job_id, job.position).values():
            group.start_soon(fails_in_time, call)
    private_redis.resume()
    await until_answering(store)
    for _ in range(2 * POOL_SIZE):
        assert (await store.get(job.job_id)).job_id == job.job_id
        counts = await store.count_by_status()
        assert sum(counts.values()) == len((await store.list(JobFilter(), 100, None)).jobs)
        await store.ping()


@pytest.fixture
def black_hole() -> Iterator[str]:
    """The URL of a port that accepts connections and never says a word."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4 * POOL_SIZE)
        yield f"redis://127.0.0.1:{listener.getsockname()[1]}/0"


async def test_a_server_that_never_answers_fails_in_time(
    black_hole: str, redis_prefix: str
) -> None:
    """Against a port that accepts and never answers, start-up and calls end in time."""
    settings = contract_settings(
        backend="redis", redis_url=black_hole, redis_prefix=redis_prefix, redis_timeout=TIMEOUT
    )
    store = RedisStore(settings, Recorder())
    try:
        started = time.monotonic()
        await store.start()
        assert time.monotonic() - started <= LIMIT
        harness = Harness(store, Recorder(), Clock())
        async with anyio.create_task_group() as group:
            for call in every_call(harness, "job_x", Position(1, 1)).values():
                group.start_soon(fails_in_time, call)
    finally:
        await store.aclose()


async def test_the_feed_listener_logs_an_outage_once(
    outage: Harness, private_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Through a multi-second outage the listener retries often, warns once, and logs its return."""
    caplog.set_level(logging.INFO, logger="jobcast")
    private_redis.stop()
    started = time.monotonic()
    with anyio.fail_after(WAIT):
        # Every failed attempt ends the live streams: wait for a good many of them.
        await outage.sink.wait_for(lambda sink: sink.closed >= 6)
    await anyio.sleep(max(0.0, seconds(2.0) - (time.monotonic() - started)))
    private_redis.start()  # with nothing: the listener's last entry is gone
    await outage.sink.wait_for(lambda _: LOST_ITS_PLACE in caplog.text)
    again = await outage.create()
    await outage.sink.wait_for(lambda sink: sink.changes[-1].job_id == again.job_id)

    [lost] = logged(caplog, "live streams end until it is back")
    assert lost.levelno == logging.WARNING
    assert str(private_redis.port) in lost.getMessage()
    [back] = logged(caplog, "back after")
    assert back.levelno == logging.INFO
    took = float(back.getMessage().split(" after ")[1].split("s,")[0])
    assert took >= 2.0


async def test_a_full_redis_refuses_writes_and_still_answers_reads(
    private_redis: RedisServer, redis_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Out of memory (`maxmemory`, `noeviction`), Redis refuses writes, and every
    transaction, even one that only reads: the reads are no transactions, so dashboards
    and streams still see the jobs, on a worker that started after it filled up too."""
    caplog.set_level(logging.INFO, logger="jobcast")
    sink = Recorder()
    store = await open_redis_store(private_redis.url, redis_prefix, sink, redis_timeout=TIMEOUT)
    harness = Harness(store, sink, Clock())
    job = await harness.create()
    await store.append_output(job.job_id, [b'{"data":"hello"}'], None)
    cursor = (await store.get_change(job.job_id)).position
    await store.aclose()
    admin = Redis.from_url(private_redis.url)
    await admin.config_set("maxmemory-policy", "noeviction")
    await admin.config_set("maxmemory", "1")
    try:
        started = await open_redis_store(private_redis.url, redis_prefix, sink)
        try:
            assert (await started.get(job.job_id)).job_id == job.job_id
            assert (await started.get_change(job.job_id)).version == job.version
            assert [j.job_id for j in (await started.list(JobFilter(), 10, None)).jobs] == [
                job.job_id
            ]
            assert await started.replay(JobFilter(), None) is not None
            assert await started.replay(JobFilter(), cursor) is not None
            read = await started.read_output(job.job_id, 0, None)
            assert (read.total, len(read.output.bodies)) == (1, 1)
            writer = Harness(started, sink, Clock())
            for progress in (5, 6):
                with pytest.raises(BackendUnavailable):
                    await writer.update(job.job_id, progress=progress)
                await started.get(job.job_id)  # a read between: no "answers again"
            # One line for the lack of memory, however reads and writes alternate.
            assert len(logged(caplog, "out of memory (maxmemory), writes get 503")) == 1
            assert logged(caplog, "answers again") == logged(caplog, "takes writes again") == []
            await admin.config_set("maxmemory", "0")
            await writer.update(job.job_id, progress=7)
            assert len(logged(caplog, "takes writes again")) == 1
        finally:
            await started.aclose()
    finally:
        await admin.config_set("maxmemory", "0")
        await admin.aclose()


async def test_a_resume_past_what_a_rolled_back_redis_lost_is_a_reset(
    private_redis: RedisServer, redis_prefix: str
) -> None:
    """Redis restarts from its last snapshot (RDB, or the second AOF loses), and is
    written again: the feed holds entries before and after a client's cursor, but not the
    cursor's own. What follows it is not what the client missed: a full state, reset."""
    sink = Recorder()
    store = await open_redis_store(private_redis.url, redis_prefix, sink, redis_timeout=TIMEOUT)
    harness = Harness(store, sink, Clock())
    try:
        kept = await harness.create(message="kept")
        admin = Redis.from_url(private_redis.url)
        await admin.save()
        await admin.aclose()
        await harness.update(kept.job_id, message="lost with the restart")
        cursor = (await store.replay(JobFilter(), None)).head
        private_redis.stop()
        private_redis.start()  # from the snapshot: the update and its feed entry are gone
        with anyio.fail_after(seconds(10)):
            while True:  # the pool reconnects on its next use
                try:
                    await harness.update(kept.job_id, message="written after")
                    break
                except BackendUnavailable:
                    await anyio.sleep(0.05)
        await harness.create(message="new")
        replay = await store.replay(JobFilter(), cursor)
        assert replay.reset
        assert {c.job.message for c in replay.changes if c.job} == {"written after", "new"}
    finally:
        await store.aclose()


@pytest.mark.parametrize("stamped_ahead", [False, True], ids=["wiped", "stamped ahead"])
async def test_a_feed_that_lost_the_listeners_place_is_followed_again(
    private_redis: RedisServer,
    redis_prefix: str,
    caplog: pytest.LogCaptureFixture,
    stamped_ahead: bool,
) -> None:
    """The feed loses the listener's last entry: its keys wiped, or Redis restored from a
    snapshot that never had it. What follows the cursor then is not what the listener
    missed, and when the lost entry was stamped by a clock ahead, new entries even take
    ids before it. The listener notices at its next read, says so, ends the streams
    (their clients resume into a reset, which holds the changes since) and delivers what
    comes next."""
    caplog.set_level(logging.INFO, logger="jobcast")
    sink = Recorder()
    store = await open_redis_store(private_redis.url, redis_prefix, sink, redis_timeout=TIMEOUT)
    harness = Harness(store, sink, Clock())
    admin = Redis.from_url(private_redis.url)
    try:
        job = await harness.create()
        feed = f"{redis_prefix}feed"
        last = sink.changes[-1].position
        if stamped_ahead:
            last = Position(int(time.time() * 1000) + 3_600_000, 0)
            entries: Any = await admin.xrevrange(feed, count=1)
            [(_, creation)] = entries  # the job's creation, again, stamped an hour ahead
            await admin.xadd(feed, creation, str(last))
            await sink.wait_for(lambda s: s.changes[-1].position == last)
        await admin.delete(feed)
        closed = sink.closed
        await harness.update(job.job_id, message="before it noticed")
        await sink.wait_for(lambda s: s.closed > closed)
        await harness.update(job.job_id, message="after")
        await sink.wait_for(
            lambda s: s.changes[-1].job is not None and s.changes[-1].job.message == "after"
        )
        [lost] = logged(caplog, LOST_ITS_PLACE)
        assert lost.levelno == logging.WARNING
        assert str(last) in lost.getMessage()
    finally:
        await admin.aclose()
        await store.aclose()
