"""MemoryStore on its own: storage, publishing, listing, retention, idempotency, replay,
and the owner index that keeps an owner's reads to that owner's jobs."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import given, settings, strategies as st

from app import jobs
from app.errors import (
    IdempotencyConflict,
    InvalidJobData,
    InvalidTransition,
    JobGone,
    JobNotFound,
)
from app.jobs import JobFilter
from app.models import Completion, Failure, Job, JobType, JobUpdate, NewJob
from app.settings import Settings
from app.store import Idempotency
from app.store.memory import SEGMENT, MemoryStore, _Output
from app.streams.events import Change, Position

if TYPE_CHECKING:
    from _collections_abc import dict_items, dict_keys, dict_values  # dict's own views

TERMINAL_TTL = 300.0
TOMBSTONE_TTL = 3600.0

pytestmark = pytest.mark.anyio


class FakeClock:
    """A clock that moves only when a test moves it."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def moment(self) -> datetime:
        return datetime.fromtimestamp(self.now, UTC)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def published() -> list[Change]:
    return []


def make_store(
    clock: FakeClock, published: list[Change], *, max_tombstones: int = 100
) -> MemoryStore:
    settings = Settings(
        terminal_ttl=TERMINAL_TTL, tombstone_ttl=TOMBSTONE_TTL, max_tombstones=max_tombstones
    )
    return MemoryStore(settings, published.append, clock=clock)


@pytest.fixture
def store(clock: FakeClock, published: list[Change]) -> MemoryStore:
    return make_store(clock, published)


async def add(
    store: MemoryStore,
    clock: FakeClock,
    job_type: JobType = "generic",
    idempotency: Idempotency | None = None,
) -> Job:
    job, _ = await store.create(jobs.create(NewJob(job_type=job_type), clock.moment()), idempotency)
    return job


async def start(store: MemoryStore, clock: FakeClock, job_id: str, progress: float = 10) -> Job:
    change = JobUpdate(status="processing", progress=progress)
    return await store.update(job_id, lambda job: jobs.update(job, change, clock.moment()))


async def finish(store: MemoryStore, clock: FakeClock, job_id: str) -> Job:
    return await store.update(job_id, lambda job: jobs.complete(job, Completion(), clock.moment()))


async def add_many(store: MemoryStore, clock: FakeClock, count: int) -> list[str]:
    """Create ``count`` jobs, oldest first, and return their ids."""
    return [(await add(store, clock)).job_id for _ in range(count)]


async def all_pages(store: MemoryStore, where: JobFilter, limit: int) -> list[list[str]]:
    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        page = await store.list(where, limit, cursor)
        pages.append([job.job_id for job in page.jobs])
        if page.next_cursor is None:
            return pages
        cursor = page.next_cursor


async def expire(store: MemoryStore, clock: FakeClock) -> None:
    """Let every terminal job's time run out, and sweep."""
    clock.advance(TERMINAL_TTL)
    await store.sweep()


def removals(published: list[Change], job_id: str) -> list[Change]:
    return [c for c in published if c.job_id == job_id and c.job is None]


# -- create, get, update, publish ------------------------------------------------------------


async def test_create_then_get_returns_the_job(store: MemoryStore, clock: FakeClock) -> None:
    """A created job is returned as created=True and read back unchanged."""
    job = jobs.create(NewJob(message="hi"), clock.moment())
    stored, created = await store.create(job, None)
    assert created is True
    assert stored == job
    assert await store.get(job.job_id) == job


async def test_get_unknown_raises_not_found(store: MemoryStore) -> None:
    """Reading an id the store never had raises JobNotFound."""
    with pytest.raises(JobNotFound):
        await store.get("job_missing")


async def test_update_stores_the_mutation_result(store: MemoryStore, clock: FakeClock) -> None:
    """update applies the mutation to the current job and stores what it returns."""
    job = await add(store, clock)
    changed = await start(store, clock, job.job_id, progress=45)
    assert (changed.status, changed.progress, changed.version) == ("processing", 45, 2)
    assert await store.get(job.job_id) == changed


async def test_update_unknown_raises_not_found(store: MemoryStore, published: list[Change]) -> None:
    """Updating an unknown id raises JobNotFound and publishes nothing."""
    with pytest.raises(JobNotFound):
        await store.update("job_missing", lambda job: job)
    assert published == []


async def test_publish_once_per_change_with_full_job_in_order(
    store: MemoryStore, clock: FakeClock, published: list[Change]
) -> None:
    """Each accepted change is published once, with the full job and an increasing position."""
    job = await add(store, clock)
    second = await start(store, clock, job.job_id)
    third = await finish(store, clock, job.job_id)
    assert [c.job for c in published] == [job, second, third]
    positions = [c.position for c in published]
    assert positions == sorted(positions)
    assert len(set(positions)) == 3
    assert [c.previous_status for c in published] == [None, "queued", "processing"]


async def test_positions_increase_across_jobs(
    store: MemoryStore, clock: FakeClock, published: list[Change]
) -> None:
    """Positions form one feed: they increase across changes of different jobs too."""
    first = await add(store, clock)
    second = await add(store, clock)
    await start(store, clock, first.job_id)
    await start(store, clock, second.job_id)
    positions = [c.position for c in published]
    assert positions == sorted(set(positions))


async def test_nothing_published_when_mutation_raises(
    store: MemoryStore, clock: FakeClock, published: list[Change]
) -> None:
    """A refused change publishes nothing and leaves the stored job as it was."""
    job = await add(store, clock)
    done = await finish(store, clock, job.job_id)
    published.clear()
    with pytest.raises(InvalidTransition):
        await store.update(
            job.job_id, lambda j: jobs.fail(j, Failure(error="late"), clock.moment())
        )
    assert published == []
    assert await store.get(job.job_id) == done


async def test_get_change_carries_the_latest_position(
    store: MemoryStore, clock: FakeClock, published: list[Change]
) -> None:
    """get_change returns the current job at the position of its latest change."""
    job = await add(store, clock)
    await add(store, clock)
    changed = await start(store, clock, job.job_id)
    current = await store.get_change(job.job_id)
    assert current.job == changed
    assert current.position == published[-1].position


async def test_count_by_status_follows_changes(store: MemoryStore, clock: FakeClock) -> None:
    """count_by_status counts every status, moves with each change and drops removed jobs."""
    _, second, third = await add_many(store, clock, 3)
    await start(store, clock, second)
    await finish(store, clock, third)
    assert await store.count_by_status() == {
        "queued": 1,
        "processing": 1,
        "completed": 1,
        "error": 0,
    }
    await expire(store, clock)
    assert (await store.count_by_status())["completed"] == 0


# -- listing ---------------------------------------------------------------------------------


async def test_list_is_newest_first(store: MemoryStore, clock: FakeClock) -> None:
    """The list shows the most recently created job first, with no cursor on a single page."""
    ids = await add_many(store, clock, 5)
    page = await store.list(JobFilter(), 100, None)
    assert [job.job_id for job in page.jobs] == ids[::-1]
    assert page.next_cursor is None


async def test_list_filters_by_type_and_status(store: MemoryStore, clock: FakeClock) -> None:
    """jobType and status filters keep only jobs matching both."""
    llm = await add(store, clock, "llm_agent")
    llm_running = await add(store, clock, "llm_agent")
    await start(store, clock, llm_running.job_id)
    await add(store, clock, "generic")

    async def ids(where: JobFilter) -> list[str]:
        return [job.job_id for job in (await store.list(where, 100, None)).jobs]

    assert await ids(JobFilter(job_type="llm_agent")) == [llm_running.job_id, llm.job_id]
    assert await ids(JobFilter(status="processing")) == [llm_running.job_id]
    assert await ids(JobFilter(job_type="llm_agent", status="queued")) == [llm.job_id]
    assert await ids(JobFilter(job_type="document_analysis")) == []


@pytest.mark.parametrize(("count", "limit"), [(7, 3), (6, 3), (1, 1), (5, 100), (4, 1)])
async def test_pages_cover_every_job_exactly_once(
    store: MemoryStore, clock: FakeClock, count: int, limit: int
) -> None:
    """Following nextCursor visits every job once, newest first, in pages of at most limit."""
    ids = await add_many(store, clock, count)
    pages = await all_pages(store, JobFilter(), limit)
    assert [job_id for page in pages for job_id in page] == ids[::-1]
    assert all(0 < len(page) <= limit for page in pages)
    assert len(pages) == -(-count // limit)


async def test_filtered_pages_cover_every_matching_job(
    store: MemoryStore, clock: FakeClock
) -> None:
    """Paging with a filter visits exactly the matching jobs, each once."""
    matching = []
    for index in range(11):
        job = await add(store, clock, "llm_agent" if index % 3 == 0 else "generic")
        if job.job_type == "llm_agent":
            matching.append(job.job_id)
    pages = await all_pages(store, JobFilter(job_type="llm_agent"), 2)
    assert [job_id for page in pages for job_id in page] == matching[::-1]


async def test_jobs_created_between_pages_do_not_disturb_paging(
    store: MemoryStore, clock: FakeClock
) -> None:
    """A cursor keeps its place: new jobs do not repeat or shift the older pages."""
    ids = await add_many(store, clock, 4)
    first = await store.list(JobFilter(), 2, None)
    await add_many(store, clock, 3)
    assert first.next_cursor is not None
    second = await store.list(JobFilter(), 2, first.next_cursor)
    assert [job.job_id for job in first.jobs + second.jobs] == ids[::-1]
    assert second.next_cursor is None


async def test_removed_jobs_leave_the_list(store: MemoryStore, clock: FakeClock) -> None:
    """A cleaned-up job no longer appears in the list."""
    kept, gone = await add_many(store, clock, 2)
    await finish(store, clock, gone)
    await expire(store, clock)
    assert [job.job_id for job in (await store.list(JobFilter(), 10, None)).jobs] == [kept]


@pytest.mark.parametrize(
    "cursor",
    ["", "not a cursor!", base64.urlsafe_b64encode(b"hello").decode(), "Yy0x", "%%%%"],
)
async def test_invalid_cursor_is_invalid_job_data(
    store: MemoryStore, clock: FakeClock, cursor: str
) -> None:
    """A cursor the store did not hand out raises InvalidJobData naming `cursor`."""
    await add_many(store, clock, 3)
    with pytest.raises(InvalidJobData) as caught:
        await store.list(JobFilter(), 10, cursor)
    assert [error.field for error in caught.value.errors] == ["cursor"]


# -- retention -------------------------------------------------------------------------------


async def test_terminal_job_removed_after_ttl(
    store: MemoryStore, clock: FakeClock, published: list[Change]
) -> None:
    """A terminal job stays until terminal_ttl has passed, then a sweep removes it (410)."""
    job = await add(store, clock)
    await finish(store, clock, job.job_id)
    clock.advance(TERMINAL_TTL - 1)
    await store.sweep()
    assert (await store.get(job.job_id)).status == "completed"
    clock.advance(1)
    await store.sweep()
    with pytest.raises(JobGone):
        await store.get(job.job_id)
    [removal] = removals(published, job.job_id)
    assert removal.kind == "removed"
    assert removal.position > published[-2].position


async def test_removal_published_once(
    store: MemoryStore, clock: FakeClock, published: list[Change]
) -> None:
    """Sweeping again after a removal publishes no second `removed` change."""
    job = await add(store, clock)
    await finish(store, clock, job.job_id)
    await expire(store, clock)
    count = len(published)
    clock.advance(10)
    await store.sweep()
    await store.sweep()
    assert len(published) == count
    assert len(removals(published, job.job_id)) == 1


async def test_removed_job_refuses_updates(
    store: MemoryStore, clock: FakeClock, published: list[Change]
) -> None:
    """Updating a cleaned-up job raises JobGone and publishes nothing."""
    job = await add(store, clock)
    await finish(store, clock, job.job_id)
    await expire(store, clock)
    published.clear()
    with pytest.raises(JobGone):
        await start(store, clock, job.job_id)
    assert published == []


async def test_tombstone_expires_into_not_found(store: MemoryStore, clock: FakeClock) -> None:
    """A cleaned-up job answers JobGone until tombstone_ttl has passed, then JobNotFound."""
    job = await add(store, clock)
    await finish(store, clock, job.job_id)
    await expire(store, clock)
    clock.advance(TOMBSTONE_TTL - 1)
    await store.sweep()
    with pytest.raises(JobGone):
        await store.get(job.job_id)
    clock.advance(1)
    await store.sweep()
    with pytest.raises(JobNotFound):
        await store.get(job.job_id)


async def test_failed_job_is_cleaned_up_too(store: MemoryStore, clock: FakeClock) -> None:
    """An `error` job is terminal as well and is removed after terminal_ttl."""
    job = await add(store, clock)
    await store.update(job.job_id, lambda j: jobs.fail(j, Failure(error="x"), clock.moment()))
    await expire(store, clock)
    with pytest.raises(JobGone):
        await store.get(job.job_id)


async def test_non_terminal_jobs_are_never_dropped(store: MemoryStore, clock: FakeClock) -> None:
    """Queued and processing jobs survive any amount of time and sweeping."""
    queued = await add(store, clock)
    running = await add(store, clock)
    await start(store, clock, running.job_id)
    for _ in range(3):
        clock.advance(10 * 365 * 24 * 3600)
        await store.sweep()
        await add(store, clock)  # creating sweeps as well
    assert (await store.get(queued.job_id)).status == "queued"
    assert (await store.get(running.job_id)).status == "processing"


async def test_tombstones_are_bounded(clock: FakeClock, published: list[Change]) -> None:
    """With max_tombstones=2, the oldest of three tombstones is forgotten (404, not 410)."""
    store = make_store(clock, published, max_tombstones=2)
    ids = await add_many(store, clock, 3)
    for job_id in ids:
        await finish(store, clock, job_id)
        clock.advance(1)
    clock.advance(TERMINAL_TTL)
    await store.sweep()
    with pytest.raises(JobNotFound):
        await store.get(ids[0])
    for job_id in ids[1:]:
        with pytest.raises(JobGone):
            await store.get(job_id)


async def test_retention_follows_the_store_clock(published: list[Change]) -> None:
    """terminal_ttl is counted on the store's clock, whatever timestamps the job carries."""
    clock = FakeClock(now=1_000.0)
    store = make_store(clock, published)
    job, _ = await store.create(jobs.create(NewJob(), jobs.now()), None)
    await store.update(job.job_id, lambda j: jobs.complete(j, Completion(), jobs.now()))
    clock.advance(TERMINAL_TTL + 1)
    await store.sweep()
    with pytest.raises(JobGone):
        await store.get(job.job_id)


# -- idempotency -----------------------------------------------------------------------------


async def test_same_key_same_fingerprint_returns_first_job(
    store: MemoryStore, clock: FakeClock, published: list[Change]
) -> None:
    """A repeated key and fingerprint returns the first job, created=False, nothing stored."""
    key = Idempotency("key-1", "fp-a")
    first = await add(store, clock, idempotency=key)
    count = len(published)
    again, created = await store.create(jobs.create(NewJob(), clock.moment()), key)
    assert again == first
    assert created is False
    assert len(published) == count
    assert [job.job_id for job in (await store.list(JobFilter(), 10, None)).jobs] == [first.job_id]


async def test_same_key_after_updates_returns_current_job(
    store: MemoryStore, clock: FakeClock
) -> None:
    """A retry after the job moved on returns the job as it is now."""
    key = Idempotency("key-1", "fp-a")
    first = await add(store, clock, idempotency=key)
    running = await start(store, clock, first.job_id)
    assert (await store.create(jobs.create(NewJob(), clock.moment()), key))[0] == running


async def test_same_key_other_fingerprint_conflicts(
    store: MemoryStore, clock: FakeClock, published: list[Change]
) -> None:
    """The same key with another fingerprint raises IdempotencyConflict and stores nothing."""
    await add(store, clock, idempotency=Idempotency("key-1", "fp-a"))
    count = len(published)
    with pytest.raises(IdempotencyConflict):
        await add(store, clock, idempotency=Idempotency("key-1", "fp-b"))
    assert len(published) == count
    assert len((await store.list(JobFilter(), 10, None)).jobs) == 1


async def test_different_keys_create_different_jobs(store: MemoryStore, clock: FakeClock) -> None:
    """Two keys with the same fingerprint are two requests: two jobs."""
    first = await add(store, clock, idempotency=Idempotency("key-1", "fp"))
    second = await add(store, clock, idempotency=Idempotency("key-2", "fp"))
    assert first.job_id != second.job_id


async def test_key_forgotten_when_job_cleaned_up(store: MemoryStore, clock: FakeClock) -> None:
    """Once its job is cleaned up, a key can be used again, even with another fingerprint."""
    first = await add(store, clock, idempotency=Idempotency("key-1", "fp-a"))
    await finish(store, clock, first.job_id)
    await expire(store, clock)
    job, created = await store.create(
        jobs.create(NewJob(), clock.moment()), Idempotency("key-1", "fp-b")
    )
    assert created is True
    assert job.job_id != first.job_id


# -- replay ----------------------------------------------------------------------------------


async def head_of(store: MemoryStore) -> Position:
    return (await store.replay(JobFilter(), None)).head


async def test_replay_from_start_gives_every_job_in_position_order(
    store: MemoryStore, clock: FakeClock, published: list[Change]
) -> None:
    """after=None gives each job once, at its latest state, ordered by position."""
    first, second, third = await add_many(store, clock, 3)
    await start(store, clock, first)
    replay = await store.replay(JobFilter(), None)
    assert replay.reset is False
    assert [c.job_id for c in replay.changes] == [second, third, first]
    assert [c.position for c in replay.changes] == sorted(c.position for c in replay.changes)
    assert replay.changes[-1].job == await store.get(first)
    assert replay.head == published[-1].position


async def test_replay_from_start_applies_filters(store: MemoryStore, clock: FakeClock) -> None:
    """after=None gives only the jobs that match the filter, in position order."""
    llm = await add(store, clock, "llm_agent")
    generic = await add(store, clock, "generic")
    running = await add(store, clock, "llm_agent")
    await start(store, clock, running.job_id)

    async def ids(where: JobFilter) -> list[str]:
        return [c.job_id for c in (await store.replay(where, None)).changes]

    assert await ids(JobFilter(job_type="llm_agent")) == [llm.job_id, running.job_id]
    assert await ids(JobFilter(status="queued")) == [llm.job_id, generic.job_id]
    assert await ids(JobFilter(job_type="generic", status="processing")) == []


async def test_replay_after_position_gives_only_what_changed(
    store: MemoryStore, clock: FakeClock
) -> None:
    """After a position, only jobs changed since come back, removals included, in order."""
    untouched, updated, removed = await add_many(store, clock, 3)
    await finish(store, clock, removed)
    mark = await head_of(store)
    created_later = await add(store, clock)
    await start(store, clock, updated)
    await expire(store, clock)
    replay = await store.replay(JobFilter(), mark)
    assert replay.reset is False
    assert [(c.job_id, c.kind) for c in replay.changes] == [
        (created_later.job_id, "job"),
        (updated, "job"),
        (removed, "removed"),
    ]
    assert untouched not in {c.job_id for c in replay.changes}
    assert all(c.position > mark for c in replay.changes)


async def test_replay_at_head_is_empty(store: MemoryStore, clock: FakeClock) -> None:
    """A client that has everything gets nothing back, and no reset."""
    await add_many(store, clock, 2)
    replay = await store.replay(JobFilter(), await head_of(store))
    assert (replay.changes, replay.reset) == ([], False)


async def test_replay_from_another_epoch_resets(store: MemoryStore, clock: FakeClock) -> None:
    """A position from another feed gives reset=True and the full current state."""
    ids = await add_many(store, clock, 3)
    head = await head_of(store)
    for foreign in (Position(head.epoch + 1, 1), Position(head.epoch - 1, head.seq)):
        replay = await store.replay(JobFilter(), foreign)
        assert replay.reset is True
        assert [c.job_id for c in replay.changes] == ids


async def test_replay_beyond_head_resets(store: MemoryStore, clock: FakeClock) -> None:
    """A position ahead of the feed (not one this store gave) gives reset=True and everything."""
    ids = await add_many(store, clock, 2)
    head = await head_of(store)
    replay = await store.replay(JobFilter(), Position(head.epoch, head.seq + 100))
    assert replay.reset is True
    assert [c.job_id for c in replay.changes] == ids


async def test_replay_older_than_forgotten_tombstones_resets(
    store: MemoryStore, clock: FakeClock
) -> None:
    """A position from before a forgotten tombstone gives reset=True and the full state."""
    kept = await add(store, clock)
    gone = await add(store, clock)
    mark = await head_of(store)
    await finish(store, clock, gone.job_id)
    await expire(store, clock)
    clock.advance(TOMBSTONE_TTL)
    await store.sweep()
    replay = await store.replay(JobFilter(), mark)
    assert replay.reset is True
    assert [(c.job_id, c.kind) for c in replay.changes] == [(kept.job_id, "job")]


async def test_replay_resumed_with_filter_keeps_jobs_leaving_it(
    store: MemoryStore, clock: FakeClock
) -> None:
    """On resume, a job that left a status filter is still sent once so clients can drop it."""
    job = await add(store, clock)
    mark = await head_of(store)
    await start(store, clock, job.job_id)
    replay = await store.replay(JobFilter(status="queued"), mark)
    assert [(c.job_id, c.job.status if c.job else None) for c in replay.changes] == [
        (job.job_id, "processing")
    ]


# -- owner-scoped reads ----------------------------------------------------------------------


class CountingTable(dict[str, Change]):
    """The store's job table, counting the entries a read looks at (a walk counts them all)."""

    looked_at = 0

    def get(self, key: str, default: Any = None) -> Any:
        self.looked_at += 1
        return super().get(key, default)

    def __getitem__(self, key: str) -> Change:
        self.looked_at += 1
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        self.looked_at += 1
        return super().__contains__(key)

    def __iter__(self) -> Iterator[str]:
        self.looked_at += len(self)
        return super().__iter__()

    def keys(self) -> dict_keys[str, Change]:
        self.looked_at += len(self)
        return super().keys()

    def values(self) -> dict_values[str, Change]:
        self.looked_at += len(self)
        return super().values()

    def items(self) -> dict_items[str, Change]:
        self.looked_at += len(self)
        return super().items()


async def test_owner_reads_look_only_at_that_owners_jobs(
    store: MemoryStore, clock: FakeClock
) -> None:
    """An owner's list and full replay look at that owner's jobs, not at every job stored."""

    async def owned(owner: str | None) -> Job:
        job, _ = await store.create(jobs.create(NewJob(owner=owner), clock.moment()), None)
        return job

    alice = [await owned("alice") for _ in range(3)]
    for n in range(2000):
        await owned(f"owner-{n % 50}" if n % 3 else None)
    await finish(store, clock, alice[0].job_id)
    table = CountingTable(store._latest)
    store._latest = table

    replay = await store.replay(JobFilter(owner="alice"), None)
    listed = await store.list(JobFilter(owner="alice"), 10, None)
    nobody = await store.replay(JobFilter(owner="nobody"), None)
    assert [c.job_id for c in replay.changes] == [alice[1].job_id, alice[2].job_id, alice[0].job_id]
    assert [job.job_id for job in listed.jobs] == [job.job_id for job in alice[::-1]]
    assert nobody.changes == []
    assert table.looked_at <= 2 * len(alice)

    await store.replay(JobFilter(), None)
    assert table.looked_at > 2000  # the unscoped snapshot does read every job


async def test_owner_index_lets_go_of_removed_jobs(store: MemoryStore, clock: FakeClock) -> None:
    """Swept jobs leave their owner's index: its reads stay small as jobs come and go."""
    made = []
    for _ in range(2000):
        job, _ = await store.create(jobs.create(NewJob(owner="bulk"), clock.moment()), None)
        made.append(job)
    for job in made[:-1]:
        await finish(store, clock, job.job_id)
    await expire(store, clock)
    table = CountingTable(store._latest)
    store._latest = table
    listed = await store.list(JobFilter(owner="bulk"), 10, None)
    assert [job.job_id for job in listed.jobs] == [made[-1].job_id]
    replay = await store.replay(JobFilter(owner="bulk"), None)
    assert [c.job_id for c in replay.changes] == [made[-1].job_id]
    # Removed entries go in batches (once they are most of an index): a few may linger.
    assert table.looked_at <= 2 * 65


# -- output's storage --------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=1, max_value=9000), min_size=1, max_size=40),
    start=st.integers(min_value=0, max_value=45),
    count=st.integers(min_value=0, max_value=45),
)
def test_output_reads_back_any_stretch_across_segments(
    sizes: list[int], start: int, count: int
) -> None:
    """Chunks of any size, in segments or across them, read back exactly, from anywhere."""
    bodies = [b'{"data":"' + b"x" * size + b'%d"}' % n for n, size in enumerate(sizes)]
    output = _Output()
    for at in range(0, len(bodies), 3):
        output.append(bodies[at : at + 3])
    start = min(start, len(bodies))
    stop = min(len(bodies), start + count)
    assert output.read(start, stop) == bodies[start:stop]
    assert (output.count, output.json_bytes) == (len(bodies), sum(map(len, bodies)))


def test_output_costs_its_bytes_and_a_newline_each_plus_one_segment() -> None:
    output = _Output()
    bodies = [b'{"data":"token%d","kind":"token"}' % n for n in range(20_000)]
    for at in range(0, len(bodies), 10):
        output.append(bodies[at : at + 10])
    held = sum(map(len, output.segments)) + len(output.filling)
    assert held == output.json_bytes + output.count
    assert len(output.filling) < SEGMENT
    assert len(output.firsts) == len(output.segments) + 1
