"""The store contract, run against the memory store and the Redis store alike.

Each test gets a fresh store, a recording sink and a clock it can move:
whatever passes here behaves the same on both backends. The tests after
the contract are about Redis only: many writers, many processes, several
deployments on one server, and Redis going away and coming back.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta

import anyio
import anyio.lowlevel
import pytest
from redis.asyncio import Redis

from app import jobs
from app.errors import (
    BackendUnavailable,
    IdempotencyConflict,
    InvalidJobData,
    InvalidTransition,
    JobGone,
    JobNotFound,
)
from app.jobs import JobFilter
from app.models import Job, JobStatus, JobType, JobUpdate, NewJob, encode
from app.store import Idempotency, JobStore
from app.streams.events import Change, Position
from tests.conftest import seconds
from tests.store.harness import (
    LOST_ITS_PLACE,
    TOMBSTONE_TTL,
    TTL,
    WAIT,
    Clock,
    Harness,
    Recorder,
    open_redis_store,
)
from tests.store.redis_server import RedisServer

pytestmark = pytest.mark.anyio


def wire(job: Job) -> bytes:
    return encode(job)


# -- the contract ---------------------------------------------------------------


async def test_created_job_reads_back_as_created(harness: Harness) -> None:
    """A new job reads back identically, at version 1, with the position it was published at."""
    job = await harness.create("llm_agent", "starting")
    assert wire(await harness.store.get(job.job_id)) == wire(job)
    change = await harness.store.get_change(job.job_id)
    assert change.version == 1
    assert [c.position for c in harness.sink.changes] == [change.position]
    assert harness.sink.changes[0].data == wire(job)


async def test_unknown_and_malformed_ids_are_not_found(harness: Harness) -> None:
    """Ids never issued, or shaped to reach other keys, are simply not found."""
    for job_id in ("job_doesNotExist", "job_", "job_a:b", "../counts", "job_*", "x" * 300):
        with pytest.raises(JobNotFound):
            await harness.store.get(job_id)
        with pytest.raises(JobNotFound):
            await harness.update(job_id, progress=5)


async def test_update_applies_the_rules_and_bumps_the_version(harness: Harness) -> None:
    """Updates merge, bump the version by one, and publish the full new state."""
    job = await harness.create(message="queued")
    await harness.update(job.job_id, status="processing", metadata={"a": 1})
    updated = await harness.update(job.job_id, progress=45, metadata={"b": 2})
    assert updated.version == 3
    assert updated.metadata == {"a": 1, "b": 2}
    assert updated.status == "processing"
    assert wire(await harness.store.get(job.job_id)) == wire(updated)
    assert harness.sink.changes[-1].data == wire(updated)
    assert harness.sink.changes[-1].previous_status == "processing"


async def test_refused_transition_changes_nothing(harness: Harness) -> None:
    """A change a terminal job refuses leaves it stored as it was and publishes nothing."""
    job = await harness.create()
    done = await harness.complete(job.job_id)
    published = len(harness.sink.changes)
    with pytest.raises(InvalidTransition):
        await harness.update(job.job_id, progress=10)
    with pytest.raises(InvalidTransition):
        await harness.fail(job.job_id)
    assert wire(await harness.store.get(job.job_id)) == wire(done)
    assert len(harness.sink.changes) == published


async def test_changes_are_published_in_write_order(harness: Harness) -> None:
    """Every accepted write is published once, before the call returns, at increasing positions."""
    first = await harness.create()
    second = await harness.create()
    await harness.update(first.job_id, progress=10)
    await harness.update(second.job_id, progress=20)
    await harness.complete(first.job_id)
    seen = [(change.job_id, change.version) for change in harness.sink.changes]
    assert seen == [
        (first.job_id, 1),
        (second.job_id, 1),
        (first.job_id, 2),
        (second.job_id, 2),
        (first.job_id, 3),
    ]
    positions = [change.position for change in harness.sink.changes]
    assert positions == sorted(positions)
    assert len(set(positions)) == len(positions)
    assert (await harness.store.get_change(first.job_id)).position == positions[-1]


async def test_list_pages_newest_first(harness: Harness) -> None:
    """Pages run newest first, the cursor continues exactly, and the last page has none."""
    created = [await harness.create() for _ in range(7)]
    newest_first = [job.job_id for job in reversed(created)]
    pages: list[list[str]] = []
    cursor = None
    while True:
        page = await harness.store.list(JobFilter(), 3, cursor)
        pages.append([job.job_id for job in page.jobs])
        cursor = page.next_cursor
        if cursor is None:
            break
    assert pages == [newest_first[:3], newest_first[3:6], newest_first[6:]]
    exact = await harness.store.list(JobFilter(), 7, None)
    assert exact.next_cursor is None
    assert [job.job_id for job in exact.jobs] == newest_first


async def test_list_filters_by_status_and_type(harness: Harness) -> None:
    """Filters select by job type and current status, and page across skipped jobs."""
    agents = [await harness.create("llm_agent") for _ in range(3)]
    for _ in range(4):
        await harness.create("file_processing")
    await harness.update(agents[0].job_id, status="processing")
    await harness.complete(agents[2].job_id)
    by_type = await harness.store.list(JobFilter(job_type="llm_agent"), 2, None)
    assert [job.job_id for job in by_type.jobs] == [agents[2].job_id, agents[1].job_id]
    assert by_type.next_cursor is not None
    rest = await harness.store.list(JobFilter(job_type="llm_agent"), 2, by_type.next_cursor)
    assert [job.job_id for job in rest.jobs] == [agents[0].job_id]
    assert rest.next_cursor is None
    processing = await harness.store.list(JobFilter(status="processing"), 10, None)
    assert [job.job_id for job in processing.jobs] == [agents[0].job_id]
    queued_files = await harness.store.list(
        JobFilter(job_type="file_processing", status="queued"), 10, None
    )
    assert len(queued_files.jobs) == 4


async def test_owner_filter_scopes_lists_replays_and_removals(harness: Harness) -> None:
    """An owner filter selects that owner's jobs in lists, replays and removal events alike."""

    async def create(owner: str | None) -> Job:
        job, _ = await harness.store.create(jobs.create(NewJob(owner=owner), jobs.now()), None)
        return job

    alice = [await create("alice"), await create("alice")]
    bob, nobody = await create("bob"), await create(None)
    only_alice = JobFilter(owner="alice")
    listed = await harness.store.list(only_alice, 10, None)
    assert [job.job_id for job in listed.jobs] == [alice[1].job_id, alice[0].job_id]
    assert all(job.owner == "alice" for job in listed.jobs)
    assert (await harness.store.get(nobody.job_id)).owner is None
    full = await harness.store.replay(only_alice, None)
    assert {change.job_id for change in full.changes} == {job.job_id for job in alice}
    await harness.complete(alice[0].job_id)
    await harness.complete(bob.job_id)
    await harness.expire_terminal_jobs()
    resumed = await harness.store.replay(only_alice, full.head)
    assert [(change.job_id, change.kind) for change in resumed.changes] == [
        (alice[0].job_id, "removed")
    ]
    removals = {change.job_id: change for change in harness.sink.changes if change.job is None}
    assert removals[alice[0].job_id].owner == "alice"
    assert removals[bob.job_id].owner == "bob"
    assert only_alice.admits(removals[alice[0].job_id])
    assert not only_alice.admits(removals[bob.job_id])


async def owned_by(harness: Harness, owner: str | None, job_type: JobType = "generic") -> Job:
    job, _ = await harness.store.create(
        jobs.create(NewJob(owner=owner, job_type=job_type), jobs.now()), None
    )
    return job


async def pages(store: JobStore, where: JobFilter, limit: int) -> list[str]:
    """Every job a list with ``where`` returns, following its cursors (newest first)."""
    listed: list[str] = []
    cursor = None
    while True:
        page = await store.list(where, limit, cursor)
        assert len(page.jobs) <= limit
        listed += [job.job_id for job in page.jobs]
        cursor = page.next_cursor
        if cursor is None:
            return listed


async def assert_owner_reads_are_everyone_filtered(harness: Harness, owners: list[str]) -> None:
    """Each owner's lists and snapshots are exactly the unscoped ones narrowed to that owner."""
    everyone = await harness.store.replay(JobFilter(), None)
    listed = (await harness.store.list(JobFilter(), 1000, None)).jobs
    for owner in owners:
        for where in (
            JobFilter(owner=owner),
            JobFilter(owner=owner, job_type="llm_agent"),
            JobFilter(owner=owner, status="processing"),
        ):
            snapshot = await harness.store.replay(where, None)
            assert snapshot.head == everyone.head
            assert [(c.job_id, c.version, c.position) for c in snapshot.changes] == [
                (c.job_id, c.version, c.position)
                for c in everyone.changes
                if c.job is not None and where.matches(c.job_type, c.job.status, c.owner)
            ]
            expected = [j.job_id for j in listed if where.matches(j.job_type, j.status, j.owner)]
            assert await pages(harness.store, where, 2) == expected
            assert await pages(harness.store, where, 1000) == expected


async def test_owner_scoped_reads_follow_creates_updates_and_sweeps(harness: Harness) -> None:
    """Owner-scoped lists and snapshots equal the unscoped ones filtered, through sweeps too."""
    made: dict[str | None, list[Job]] = {"alice": [], "bob": [], "carol": [], None: []}
    for n in range(18):
        owner = [None, "alice", "bob", "alice", "carol", "alice"][n % 6]
        made[owner].append(await owned_by(harness, owner, "llm_agent" if n % 4 else "generic"))
    owners = ["alice", "bob", "carol", "nobody-at-all"]
    await harness.update(made["alice"][1].job_id, status="processing", progress=20)
    await harness.update(made["bob"][0].job_id, status="processing")
    await harness.update(made["alice"][0].job_id, progress=5)
    await assert_owner_reads_are_everyone_filtered(harness, owners)
    snapshot = await harness.store.replay(JobFilter(owner="alice"), None)
    assert {change.job_id for change in snapshot.changes} == {job.job_id for job in made["alice"]}

    for job in [*made["alice"][::2], made["bob"][0], *made["carol"]]:
        await harness.complete(job.job_id)
    await assert_owner_reads_are_everyone_filtered(harness, owners)
    await harness.expire_terminal_jobs()
    await assert_owner_reads_are_everyone_filtered(harness, owners)
    alice_left = {job.job_id for job in made["alice"][1::2]}
    snapshot = await harness.store.replay(JobFilter(owner="alice"), None)
    assert {change.job_id for change in snapshot.changes} == alice_left
    assert set(await pages(harness.store, JobFilter(owner="alice"), 2)) == alice_left
    assert (await harness.store.replay(JobFilter(owner="carol"), None)).changes == []
    assert (await harness.store.list(JobFilter(owner="carol"), 10, None)).jobs == []

    later = await owned_by(harness, "carol")
    await assert_owner_reads_are_everyone_filtered(harness, owners)
    assert await pages(harness.store, JobFilter(owner="carol"), 2) == [later.job_id]


async def test_owner_snapshot_brings_in_changes_made_after_its_head(harness: Harness) -> None:
    """Resuming an owner's snapshot sends that owner's creations, changes and removals only."""
    kept, ends = await owned_by(harness, "alice"), await owned_by(harness, "alice")
    await harness.complete(ends.job_id)
    head = (await harness.store.replay(JobFilter(owner="alice"), None)).head
    await owned_by(harness, "bob")
    fresh = await owned_by(harness, "alice")
    await harness.update(kept.job_id, progress=50)
    await harness.expire_terminal_jobs()
    resumed = await harness.store.replay(JobFilter(owner="alice"), head)
    assert [(c.job_id, c.kind) for c in resumed.changes] == [
        (fresh.job_id, "job"),
        (kept.job_id, "job"),
        (ends.job_id, "removed"),
    ]


async def test_list_refuses_a_cursor_it_did_not_make(harness: Harness) -> None:
    """A forged or garbled cursor is invalid request data, not a crash."""
    for cursor in ("nonsense", "!!!", "eDEy"):
        with pytest.raises(InvalidJobData):
            await harness.store.list(JobFilter(), 10, cursor)


async def test_idempotency_key_returns_the_first_job(harness: Harness) -> None:
    """The same key and body return the first job; another body is a conflict."""
    key = Idempotency("retry-me", "fingerprint-1")
    first, created = await harness.store.create(jobs.create(NewJob(), jobs.now()), key)
    again, created_again = await harness.store.create(jobs.create(NewJob(), jobs.now()), key)
    assert (created, created_again) == (True, False)
    assert wire(again) == wire(first)
    assert len(harness.sink.changes) == 1
    with pytest.raises(IdempotencyConflict):
        await harness.store.create(
            jobs.create(NewJob(), jobs.now()), Idempotency("retry-me", "fingerprint-2")
        )
    assert (await harness.store.count_by_status())["queued"] == 1


async def test_terminal_jobs_expire_into_tombstones(harness: Harness) -> None:
    """A terminal job is removed after its TTL, once, leaving a tombstone that expires too."""
    job = await harness.create()
    await harness.fail(job.job_id)
    harness.clock.advance(TTL - 5)
    await harness.store.sweep()
    assert (await harness.store.get(job.job_id)).status == "error"

    await harness.expire_terminal_jobs()
    await harness.store.sweep()
    with pytest.raises(JobGone):
        await harness.store.get(job.job_id)
    removals = [change for change in harness.sink.of(job.job_id) if change.job is None]
    assert len(removals) == 1
    assert removals[0].job_type == "generic"
    assert (await harness.store.list(JobFilter(), 10, None)).jobs == []
    assert (await harness.store.count_by_status())["error"] == 0

    harness.clock.advance(TOMBSTONE_TTL + 1)
    await harness.store.sweep()
    with pytest.raises(JobNotFound):
        await harness.store.get(job.job_id)


async def test_retention_counts_on_the_store_clock(harness: Harness) -> None:
    """A job's time to removal starts when the store sees it finish, on the store's clock."""
    job = await harness.create()
    harness.clock.advance(10 * TTL)
    await harness.complete(job.job_id)
    harness.clock.advance(TTL - 1)
    await harness.store.sweep()
    assert (await harness.store.get(job.job_id)).status == "completed"
    harness.clock.advance(2)
    await harness.store.sweep()
    with pytest.raises(JobGone):
        await harness.store.get(job.job_id)


async def test_expiry_frees_the_idempotency_key(harness: Harness) -> None:
    """Once its job is cleaned up, an Idempotency-Key creates a new job."""
    key = Idempotency("nightly", "same-body")
    first, _ = await harness.store.create(jobs.create(NewJob(), jobs.now()), key)
    await harness.complete(first.job_id)
    await harness.expire_terminal_jobs()
    second, created = await harness.store.create(jobs.create(NewJob(), jobs.now()), key)
    assert created
    assert second.job_id != first.job_id


async def test_unfinished_jobs_never_expire(harness: Harness) -> None:
    """Queued and processing jobs stay, however much time passes."""
    queued = await harness.create()
    running = await harness.create()
    await harness.update(running.job_id, status="processing")
    harness.clock.advance(30 * 24 * 3600)
    await harness.store.sweep()
    assert (await harness.store.get(queued.job_id)).status == "queued"
    assert (await harness.store.get(running.job_id)).status == "processing"


async def test_full_replay_is_the_current_state_in_feed_order(harness: Harness) -> None:
    """With no cursor, replay is each matching job's latest state, in feed order, up to the head."""
    a = await harness.create("llm_agent")
    b = await harness.create("generic")
    c = await harness.create("llm_agent")
    await harness.update(a.job_id, status="processing", progress=30)
    await harness.complete(c.job_id)
    replay = await harness.store.replay(JobFilter(), None)
    assert not replay.reset
    assert replay.head == harness.sink.changes[-1].position
    assert [(ch.job_id, ch.version) for ch in replay.changes] == [
        (b.job_id, 1),
        (a.job_id, 2),
        (c.job_id, 2),
    ]
    agents = await harness.store.replay(JobFilter(job_type="llm_agent", status="processing"), None)
    assert [ch.job_id for ch in agents.changes] == [a.job_id]


async def test_resumed_replay_sends_what_changed_since(harness: Harness) -> None:
    """From a cursor, replay sends the newest state of each job changed since, removals too."""
    stays = await harness.create()
    changes = await harness.create("llm_agent")
    ends = await harness.create()
    await harness.complete(ends.job_id)
    cursor = (await harness.store.replay(JobFilter(), None)).head

    await harness.update(changes.job_id, status="processing")
    await harness.update(changes.job_id, progress=60)
    await harness.expire_terminal_jobs()
    fresh = await harness.create()
    replay = await harness.store.replay(JobFilter(), cursor)
    assert not replay.reset
    assert replay.head == harness.sink.changes[-1].position
    summary = [(ch.kind, ch.job_id, ch.version) for ch in replay.changes]
    assert summary == [
        ("job", changes.job_id, 3),
        ("removed", ends.job_id, 0),
        ("job", fresh.job_id, 1),
    ]
    assert stays.job_id not in {ch.job_id for ch in replay.changes}
    positions = [ch.position for ch in replay.changes]
    assert positions == sorted(positions)
    assert (await harness.store.replay(JobFilter(), replay.head)).changes == []


async def test_resumed_replay_sends_jobs_that_left_the_filter(harness: Harness) -> None:
    """A resumed filtered replay sends a job that left the filter, none that never matched."""
    job = await harness.create("llm_agent")
    await harness.update(job.job_id, status="processing")
    where = JobFilter(status="processing")
    cursor = (await harness.store.replay(where, None)).head
    await harness.complete(job.job_id)
    other_type = await harness.create("generic")
    replay = await harness.store.replay(where, cursor)
    assert [(ch.job_id, ch.version) for ch in replay.changes] == [(job.job_id, 3)]
    assert other_type.job_id not in {ch.job_id for ch in replay.changes}
    typed = await harness.store.replay(JobFilter(job_type="llm_agent"), cursor)
    assert [ch.job_id for ch in typed.changes] == [job.job_id]


async def test_replay_from_an_unknown_cursor_resets(harness: Harness) -> None:
    """A cursor older than the feed, or from another feed's future, gets reset and full state."""
    a = await harness.create()
    b = await harness.create()
    head = harness.sink.changes[-1].position
    for cursor in (Position(1, 0), Position(head.epoch + 10**9, 0), Position(head.epoch, 2**70)):
        replay = await harness.store.replay(JobFilter(), cursor)
        assert replay.reset
        assert [ch.job_id for ch in replay.changes] == [a.job_id, b.job_id]
        assert replay.head == head


async def test_count_by_status(harness: Harness) -> None:
    """Counts follow every create, transition and clean-up."""
    jobs_made = [await harness.create() for _ in range(5)]
    await harness.update(jobs_made[0].job_id, status="processing")
    await harness.update(jobs_made[1].job_id, status="processing")
    await harness.complete(jobs_made[1].job_id)
    await harness.fail(jobs_made[2].job_id)
    expected: dict[JobStatus, int] = {"queued": 2, "processing": 1, "completed": 1, "error": 1}
    assert await harness.store.count_by_status() == expected
    await harness.expire_terminal_jobs()
    expected |= {"completed": 0, "error": 0}
    assert await harness.store.count_by_status() == expected


async def test_ping_answers_when_the_backend_is_there(harness: Harness) -> None:
    """ping() returns quietly while the backend is reachable."""
    await harness.store.ping()


# -- Redis only ---------------------------------------------------------------


@pytest.fixture
async def redis_pair(
    redis_server: str, redis_prefix: str
) -> AsyncIterator[tuple[Harness, Harness]]:
    """Two stores on one prefix: two server processes of one deployment."""
    clock = Clock()
    harnesses = []
    for _ in range(2):
        sink = Recorder()
        # Their tests are of many writers colliding, which a busy machine makes slow; the
        # deadline is tested elsewhere.
        store = await open_redis_store(
            redis_server, redis_prefix, sink, clock, redis_timeout=seconds(10)
        )
        harnesses.append(Harness(store, sink, clock))
    try:
        yield harnesses[0], harnesses[1]
    finally:
        for harness in harnesses:
            await harness.store.aclose()


def versions_of(sink: Recorder, job_id: str) -> list[int]:
    return [change.version for change in sink.of(job_id)]


async def test_concurrent_updates_lose_nothing(redis_pair: tuple[Harness, Harness]) -> None:
    """Many concurrent writers in two processes: every change kept, versions gapless and ordered."""
    one, two = redis_pair
    job = await one.create()
    writers = 25

    async def write(harness: Harness, n: int) -> None:
        await harness.update(job.job_id, metadata={f"k{n}": n}, progress=n)

    async with anyio.create_task_group() as group:
        for n in range(writers):
            group.start_soon(write, one, n)
            group.start_soon(write, two, writers + n)
    final = await one.store.get(job.job_id)
    assert final.version == 1 + 2 * writers
    assert final.metadata == {f"k{n}": n for n in range(2 * writers)}
    everything = list(range(1, 2 + 2 * writers))
    for harness in (one, two):
        await harness.sink.wait_for(lambda sink: len(sink.of(job.job_id)) == len(everything))
        assert versions_of(harness.sink, job.job_id) == everything


async def test_racing_finishers_obey_the_rules(redis_pair: tuple[Harness, Harness]) -> None:
    """Racing complete and fail calls from two processes: exactly one wins, the rest are refused."""
    one, two = redis_pair
    job = await one.create()
    outcomes: list[str] = []

    async def finish(harness: Harness, completing: bool) -> None:
        try:
            await (harness.complete if completing else harness.fail)(job.job_id)
            outcomes.append("won")
        except InvalidTransition:
            outcomes.append("refused")

    async with anyio.create_task_group() as group:
        for n in range(10):
            group.start_soon(finish, one if n % 2 else two, n % 3 == 0)
    assert sorted(outcomes) == ["refused"] * 9 + ["won"]
    assert (await one.store.get(job.job_id)).version == 2
    assert sum((await one.store.count_by_status()).values()) == 1


async def test_two_sweepers_remove_each_job_once(redis_pair: tuple[Harness, Harness]) -> None:
    """Two processes sweeping at once: each expired job is removed, and announced, exactly once."""
    one, two = redis_pair
    done = [await one.create() for _ in range(6)]
    for job in done:
        await two.complete(job.job_id)
    one.clock.advance(TTL + 1)
    async with anyio.create_task_group() as group:
        for _ in range(3):
            group.start_soon(one.store.sweep)
            group.start_soon(two.store.sweep)
    for harness in (one, two):
        await harness.sink.wait_for(
            lambda sink: sum(change.job is None for change in sink.changes) >= len(done)
        )
        removals = [change.job_id for change in harness.sink.changes if change.job is None]
        assert sorted(removals) == sorted(job.job_id for job in done)
    assert (await one.store.count_by_status())["completed"] == 0


async def test_prefixes_keep_deployments_apart(redis_server: str) -> None:
    """Two deployments on one Redis, with different prefixes, never see each other's jobs."""
    blue_sink, green_sink = Recorder(), Recorder()
    blue = await open_redis_store(redis_server, "blue-test:", blue_sink)
    green = await open_redis_store(redis_server, "green-test:", green_sink)
    try:
        job, _ = await blue.create(jobs.create(NewJob(), jobs.now()), Idempotency("k", "f"))
        with pytest.raises(JobNotFound):
            await green.get(job.job_id)
        _, created = await green.create(jobs.create(NewJob(), jobs.now()), Idempotency("k", "g"))
        assert created
        assert job.job_id not in {change.job_id for change in green_sink.changes}
        assert job.job_id not in {j.job_id for j in (await green.list(JobFilter(), 10, None)).jobs}
        green_replay = await green.replay(JobFilter(), None)
        assert job.job_id not in {change.job_id for change in green_replay.changes}
    finally:
        await blue.aclose()
        await green.aclose()


async def test_trimmed_feed_resets_an_old_cursor(redis_server: str, redis_prefix: str) -> None:
    """A cursor whose entries were trimmed from the bounded feed gets reset and full state."""
    sink = Recorder()
    store = await open_redis_store(redis_server, redis_prefix, sink, redis_feed_length=100)
    try:
        harness = Harness(store, sink, Clock())
        job = await harness.create()
        cursor = sink.changes[-1].position
        for n in range(300):
            await harness.update(job.job_id, progress=n % 100)
        replay = await store.replay(JobFilter(), cursor)
        assert replay.reset
        assert [(ch.job_id, ch.version) for ch in replay.changes] == [(job.job_id, 301)]
        recent = await store.replay(JobFilter(), sink.changes[-2].position)
        assert not recent.reset
        assert [ch.version for ch in recent.changes] == [301]
    finally:
        await store.aclose()


async def test_a_snapshot_of_an_empty_feed_resumes_until_the_feed_is_trimmed(
    redis_server: str, redis_prefix: str
) -> None:
    """A client that synced before the deployment's first change holds the feed's start:
    it resumes with every change since, not a reset, for as long as none was trimmed."""
    sink = Recorder()
    store = await open_redis_store(redis_server, redis_prefix, sink, redis_feed_length=100)
    try:
        harness = Harness(store, sink, Clock())
        empty = await store.replay(JobFilter(), None)
        assert (empty.changes, empty.reset) == ([], False)
        jobs = [await harness.create() for _ in range(3)]
        resumed = await store.replay(JobFilter(), empty.head)
        assert not resumed.reset
        assert [change.job_id for change in resumed.changes] == [job.job_id for job in jobs]
        for n in range(300):
            await harness.update(jobs[0].job_id, progress=n % 100)
        trimmed = await store.replay(JobFilter(), empty.head)
        assert trimmed.reset
        assert len(trimmed.changes) == 3
    finally:
        await store.aclose()


async def test_full_replay_is_one_consistent_cut(redis_pair: tuple[Harness, Harness]) -> None:
    """Snapshots taken while another process writes are each exactly the state at their head."""
    one, two = redis_pair
    created = [await two.create() for _ in range(20)]
    stop = anyio.Event()

    async def keep_writing() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            await two.update(created[n % len(created)].job_id, progress=n % 100)

    async with anyio.create_task_group() as group:
        group.start_soon(keep_writing)
        replays = []
        for _ in range(15):
            replays.append(await one.store.replay(JobFilter(), None))
            await anyio.lowlevel.checkpoint()
        stop.set()
    furthest = max(replay.head for replay in replays)
    await one.sink.wait_for(lambda sink: sink.changes[-1].position >= furthest)
    for replay in replays:
        expected: dict[str, Change] = {}
        for change in one.sink.changes:
            if change.position <= replay.head:
                expected[change.job_id] = change
        got = {change.job_id: (change.version, change.position) for change in replay.changes}
        assert got == {job_id: (ch.version, ch.position) for job_id, ch in expected.items()}


async def test_redis_outage_fails_fast_and_recovers(
    private_redis: RedisServer, redis_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """With Redis gone every call raises BackendUnavailable quickly; once back, all works
    again, once the listener has noticed that this Redis came back without the feed it
    was following."""
    sink = Recorder()
    store = await open_redis_store(private_redis.url, redis_prefix, sink)
    try:
        harness = Harness(store, sink, Clock())
        job = await harness.create()
        private_redis.stop()
        calls: list[Callable[[], Awaitable[object]]] = [
            store.ping,
            lambda: store.get(job.job_id),
            lambda: harness.update(job.job_id, progress=5),
            harness.create,
            lambda: store.list(JobFilter(), 10, None),
            lambda: store.replay(JobFilter(), None),
            store.count_by_status,
            store.sweep,
        ]
        for call in calls:
            started = time.monotonic()
            with pytest.raises(BackendUnavailable):
                await call()
            assert time.monotonic() - started < 1.0 + seconds(1)  # redis_timeout, and a margin
        await sink.wait_for(lambda sink: sink.closed >= 1)

        private_redis.start()  # with nothing: the listener's last entry is gone
        await sink.wait_for(lambda _: LOST_ITS_PLACE in caplog.text)
        again = await harness.create()
        await sink.wait_for(lambda sink: sink.changes[-1].job_id == again.job_id)
        assert (await harness.update(again.job_id, progress=50)).version == 2
        assert sink.changes[-1].version == 2
    finally:
        await store.aclose()


async def test_hung_redis_times_out_instead_of_hanging(
    private_redis: RedisServer, redis_prefix: str
) -> None:
    """A Redis that stops answering turns calls into BackendUnavailable after the timeout."""
    sink = Recorder()
    store = await open_redis_store(private_redis.url, redis_prefix, sink, redis_timeout=0.5)
    try:
        job = await Harness(store, sink, Clock()).create()
        private_redis.pause()
        for call in (store.ping, lambda: store.get(job.job_id)):
            started = time.monotonic()
            with pytest.raises(BackendUnavailable):
                await call()
            assert time.monotonic() - started < 0.5 + seconds(1)  # redis_timeout, and a margin
        private_redis.resume()
        assert (await store.get(job.job_id)).job_id == job.job_id
    finally:
        private_redis.resume()
        await store.aclose()


async def test_cursor_with_absurd_numbers_resets(redis_server: str, redis_prefix: str) -> None:
    """A cursor inside the feed's time span but beyond 64-bit ids resets instead of failing."""
    sink = Recorder()
    store = await open_redis_store(redis_server, redis_prefix, sink)
    try:
        harness = Harness(store, sink, Clock())
        await harness.create()
        with anyio.fail_after(WAIT):
            while sink.changes[-1].position.epoch == sink.changes[0].position.epoch:
                await harness.create()
        forged = Position(sink.changes[0].position.epoch, 2**70)
        replay = await store.replay(JobFilter(), forged)
        assert replay.reset
        assert len(replay.changes) == len(sink.changes)
    finally:
        await store.aclose()


async def test_resume_reads_a_long_gap_in_full(redis_server: str, redis_prefix: str) -> None:
    """A cursor far behind (more than one page of feed) still gets every job's latest state."""
    sink = Recorder()
    store = await open_redis_store(redis_server, redis_prefix, sink)
    try:
        harness = Harness(store, sink, Clock())
        made = [await harness.create() for _ in range(3)]
        cursor = sink.changes[-1].position
        for n in range(600):
            await harness.update(made[n % 3].job_id, progress=n % 100)
        replay = await store.replay(JobFilter(), cursor)
        assert not replay.reset
        assert [(ch.job_id, ch.version) for ch in replay.changes] == [
            (job.job_id, 201) for job in made
        ]
        assert replay.head == sink.changes[-1].position
    finally:
        await store.aclose()


async def test_listener_skips_an_entry_it_cannot_read(redis_server: str, redis_prefix: str) -> None:
    """A malformed feed entry is skipped, live and in replays; the changes after it arrive."""
    sink = Recorder()
    store = await open_redis_store(redis_server, redis_prefix, sink)
    harness = Harness(store, sink, Clock())
    raw = Redis.from_url(redis_server)
    try:
        first = await harness.create()
        await raw.xadd(f"{redis_prefix}feed", {"id": "job_x", "type": "no-such-type"})
        second = await harness.create()
        await sink.wait_for(lambda sink: len(sink.changes) == 2)
        assert [c.job_id for c in sink.changes] == [first.job_id, second.job_id]
        assert sink.closed == 0
        replay = await store.replay(JobFilter(), sink.changes[0].position)
        assert [c.job_id for c in replay.changes] == [second.job_id]
    finally:
        await raw.aclose()
        await store.aclose()


# -- delete, no-op mutations, untouched jobs --------------------------------------


async def at_status(harness: Harness, status: JobStatus) -> Job:
    job = await harness.create()
    if status == "processing":
        return await harness.update(job.job_id, status="processing")
    if status == "completed":
        return await harness.complete(job.job_id)
    if status == "error":
        return await harness.fail(job.job_id)
    return job


@pytest.mark.parametrize("status", ["queued", "processing", "completed", "error"])
async def test_delete_removes_a_job_in_any_state(harness: Harness, status: JobStatus) -> None:
    """Deleted: 410 from then on, one removal published, out of lists and counts."""
    job = await at_status(harness, status)
    await harness.store.delete(job.job_id)
    with pytest.raises(JobGone):
        await harness.store.get(job.job_id)
    await harness.sink.wait_for(lambda sink: sink.of(job.job_id)[-1].job is None)
    removal = harness.sink.of(job.job_id)[-1]
    assert removal.job_type == "generic"
    assert (await harness.store.list(JobFilter(), 10, None)).jobs == []
    assert sum((await harness.store.count_by_status()).values()) == 0
    with pytest.raises(JobGone):
        await harness.store.delete(job.job_id)
    with pytest.raises(JobGone):
        await harness.update(job.job_id, progress=5)


async def test_delete_of_an_unknown_job_is_not_found(harness: Harness) -> None:
    with pytest.raises(JobNotFound):
        await harness.store.delete("job_nobodyHasThisId000")
    with pytest.raises(JobNotFound):
        await harness.store.delete("not an id at all")


async def test_delete_frees_the_idempotency_key(harness: Harness) -> None:
    key = Idempotency("nightly", "same-body")
    first, _ = await harness.store.create(jobs.create(NewJob(), jobs.now()), key)
    await harness.store.delete(first.job_id)
    second, created = await harness.store.create(jobs.create(NewJob(), jobs.now()), key)
    assert created
    assert second.job_id != first.job_id


async def test_a_deleted_finished_job_is_not_removed_again(harness: Harness) -> None:
    """The clean-up later finds nothing left of a deleted job to remove or announce."""
    job = await harness.create()
    await harness.complete(job.job_id)
    await harness.store.delete(job.job_id)
    await harness.expire_terminal_jobs()
    await harness.store.sweep()
    await harness.sink.wait_for(lambda sink: sink.of(job.job_id)[-1].job is None)
    removals = [change for change in harness.sink.of(job.job_id) if change.job is None]
    assert len(removals) == 1
    assert sum((await harness.store.count_by_status()).values()) == 0


async def test_deleted_jobs_leave_resumed_replays_as_removals(harness: Harness) -> None:
    kept = await harness.create()
    gone = await harness.create()
    since = harness.sink.changes[-1].position
    await harness.store.delete(gone.job_id)
    replay = await harness.store.replay(JobFilter(), since)
    assert [(change.job_id, change.job) for change in replay.changes] == [(gone.job_id, None)]
    full = await harness.store.replay(JobFilter(), None)
    assert [change.job_id for change in full.changes] == [kept.job_id]


async def test_a_mutation_that_changes_nothing_writes_and_publishes_nothing(
    harness: Harness,
) -> None:
    """A second cancel returns the job as it is: same version, no change sent."""
    job = await harness.create()
    asked = await harness.cancel(job.job_id)
    assert (asked.cancel_requested, asked.version) == (True, 2)
    await harness.sink.wait_for(lambda sink: len(sink.of(job.job_id)) == 2)
    again = await harness.cancel(job.job_id)
    assert wire(again) == wire(asked)
    assert (await harness.store.get(job.job_id)).version == 2
    later = await harness.update(job.job_id, progress=10)  # publishes after the no-op
    await harness.sink.wait_for(lambda sink: len(sink.of(job.job_id)) == 3)
    assert versions_of(harness.sink, job.job_id) == [1, 2, later.version]


async def test_untouched_since_finds_idle_unfinished_jobs_oldest_first(harness: Harness) -> None:
    moment = jobs.now()

    async def create_at(seconds_before: float) -> Job:
        at = moment - timedelta(seconds=seconds_before)
        job, _ = await harness.store.create(jobs.create(NewJob(), at), None)
        return job

    async def touch(job: Job, seconds_before: float) -> None:
        at = moment - timedelta(seconds=seconds_before)
        change = JobUpdate(status="processing")
        await harness.store.update(job.job_id, lambda job: jobs.update(job, change, at))

    oldest, running, newer = await create_at(30), await create_at(25), await create_at(20)
    await touch(running, 10)
    finished, deleted = await create_at(40), await create_at(40)
    await harness.complete(finished.job_id)
    await harness.store.delete(deleted.job_id)
    fresh = await create_at(-1)

    idle = list(await harness.store.untouched_since(moment, 10))
    assert idle == [oldest.job_id, newer.job_id, running.job_id]
    assert fresh.job_id not in idle
    assert list(await harness.store.untouched_since(moment, 2)) == idle[:2]
    assert list(await harness.store.untouched_since(moment - timedelta(seconds=22), 10)) == [
        oldest.job_id
    ]
    await touch(oldest, -1)  # changed after the moment: no longer idle
    assert list(await harness.store.untouched_since(moment, 10)) == idle[1:]
