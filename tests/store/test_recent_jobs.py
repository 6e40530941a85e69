"""A Redis worker changes a job without reading it back, and never on a stale state.

The Redis store decides a change on the newest state it knows of the job
(what this process wrote, or its listener saw since), and the write script
refuses that state once it is stale. These tests make it stale on purpose:
``deaf`` is a store whose feed listener never runs, so nothing refreshes what
it knows, while ``other`` (another process) changes the job.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from app.errors import InvalidTransition, JobGone
from app.models import Job
from app.store.recent import RecentJobs
from app.streams.events import Change, Output, Position
from tests.store.harness import Clock, Harness, Recorder, open_redis_store

pytestmark = pytest.mark.anyio

CHUNK = b'{"data":"line"}'


@pytest.fixture
async def other(redis_server: str, redis_prefix: str) -> AsyncIterator[Harness]:
    """Another process of the same deployment."""
    sink = Recorder()
    store = await open_redis_store(redis_server, redis_prefix, sink)
    try:
        yield Harness(store, sink, Clock())
    finally:
        await store.aclose()


async def calls(raw: Redis) -> Counter[str]:
    """How many HMGETs and script calls Redis has run so far."""
    stats = await raw.info("commandstats")
    return Counter(
        {
            name: int(stats.get(f"cmdstat_{name}", {}).get("calls", 0))
            for name in ("hmget", "evalsha")
        }
    )


async def test_a_sequential_worker_never_reads_its_job_back(other: Harness, raw: Redis) -> None:
    """Changes and appends one after another: each is one script call, no read before it.

    Each write script reads the job once itself (an HMGET inside it); a read by
    the store would be one more.
    """
    job = await other.create()
    # Redis learns each script at its first use (one more, refused, call): not measured.
    await other.update(job.job_id, status="processing")
    await other.store.append_output(job.job_id, [CHUNK], None)
    before = await calls(raw)
    for progress in (10, 20):
        await other.update(job.job_id, progress=progress)
        await other.store.append_output(job.job_id, [CHUNK], None)
    done = await other.complete(job.job_id)
    assert await calls(raw) - before == Counter(hmget=5, evalsha=5)
    assert (done.version, done.output_size) == (5, 3)


async def test_a_change_on_a_stale_state_is_made_again_on_the_stored_one(
    deaf: Harness, other: Harness
) -> None:
    """Another process changed the job since: nothing it wrote is lost."""
    job = await deaf.create()
    await deaf.update(job.job_id, status="processing", progress=10)
    await other.update(job.job_id, progress=60, metadata={"by": "other"})
    changed = await deaf.update(job.job_id, message="still going")
    assert (changed.version, changed.progress, changed.message) == (4, 60, "still going")
    assert changed.metadata == {"by": "other"}
    stored = await other.store.get(job.job_id)
    assert stored.model_dump() == changed.model_dump()


async def test_nothing_to_change_is_decided_on_the_stored_state(
    deaf: Harness, other: Harness
) -> None:
    """Asking twice to cancel changes nothing, unless the job finished meanwhile: then 409."""
    job = await deaf.create()
    await deaf.cancel(job.job_id)
    await other.complete(job.job_id)
    with pytest.raises(InvalidTransition, match="nothing to cancel"):
        await deaf.cancel(job.job_id)
    stored = await other.store.get(job.job_id)
    assert (stored.status, stored.version) == ("completed", 3)


async def test_a_refusal_is_decided_on_the_stored_state(deaf: Harness, other: Harness) -> None:
    """An offset that is wrong for a stale state but right for the stored one is taken."""
    job = await deaf.create()
    await deaf.store.append_output(job.job_id, [CHUNK], None)
    await other.store.append_output(job.job_id, [CHUNK], None)
    output = (await deaf.store.append_output(job.job_id, [CHUNK], expected=2)).output
    assert (output.offset, output.next_offset) == (2, 3)
    assert (await other.store.get(job.job_id)).output_size == 3


async def test_a_write_redis_lost_is_not_mistaken_for_the_stored_state(
    deaf: Harness, other: Harness, raw: Redis, redis_prefix: str
) -> None:
    """Redis loses a write (a failover, a restore) and another process writes a state with
    the same version: the state this process remembers is not taken for it."""
    job = await deaf.create()
    key = f"{redis_prefix}job:{job.job_id}"
    as_created: dict[Any, Any] = await raw.hgetall(key)
    await deaf.update(job.job_id, status="processing", progress=10)  # remembered: v2
    await raw.delete(key)
    await raw.hset(key, mapping=as_created)  # Redis is back to v1
    await other.update(job.job_id, metadata={"by": "other"})  # another v2
    changed = await deaf.update(job.job_id, message="mine")
    assert (changed.version, changed.metadata, changed.message) == (3, {"by": "other"}, "mine")
    assert changed.status == "queued"  # the lost write's status is not brought back


async def test_a_job_an_earlier_version_wrote_still_changes(
    deaf: Harness, other: Harness, raw: Redis, redis_prefix: str
) -> None:
    """Jobs written before the last write was recorded have none: checked as before, by
    version and output size, and recorded from their next write on."""
    job = await other.create()
    key = f"{redis_prefix}job:{job.job_id}"
    await raw.hdel(key, "w")
    changed = await deaf.update(job.job_id, progress=40)  # deaf knows nothing of the job
    await deaf.store.append_output(job.job_id, [CHUNK], None)
    assert (changed.version, changed.progress) == (2, 40)
    assert await raw.hget(key, "w") is not None


async def test_a_job_removed_elsewhere_is_not_changed(deaf: Harness, other: Harness) -> None:
    """A job deleted by another process stays deleted: the change is refused as gone."""
    job = await deaf.create()
    await deaf.update(job.job_id, status="processing")
    await other.store.delete(job.job_id)
    with pytest.raises(JobGone):
        await deaf.update(job.job_id, progress=90)
    with pytest.raises(JobGone):
        await other.store.get(job.job_id)


async def test_the_listener_keeps_what_a_process_knows_fresh(
    other: Harness, raw: Redis, redis_server: str, redis_prefix: str
) -> None:
    """A change from another process, once heard, is known: the next change reads nothing."""
    sink = Recorder()
    store = await open_redis_store(redis_server, redis_prefix, sink)
    try:
        job = await other.create()
        await other.update(job.job_id, status="processing")  # known to ``other`` only
        mine = Harness(store, sink, Clock())
        await mine.update(job.job_id, progress=5)  # read once: now known to both
        await other.update(job.job_id, progress=6)
        await sink.wait_for(lambda heard: heard.of(job.job_id)[-1].version == 4)
        before = await calls(raw)
        changed = await mine.update(job.job_id, progress=7)
        assert await calls(raw) - before == Counter(hmget=1, evalsha=1)
    finally:
        await store.aclose()
    assert (changed.version, changed.progress) == (5, 7)


# -- what is known, as a unit ------------------------------------------------------


def job_at(version: int, output_size: int | None = None) -> Job:
    return Job.model_validate(
        {
            "jobId": "job_known",
            "jobType": "generic",
            "status": "processing",
            "message": "",
            "progress": version,
            "metadata": {},
            "createdAt": "2026-12-07T00:00:00Z",
            "updatedAt": "2026-12-07T00:00:00Z",
            "version": version,
            "outputSize": output_size,
        }
    )


def test_only_jobs_written_here_are_known() -> None:
    recent = RecentJobs(size=4)
    recent.saw(Change.of(job_at(2), Position(1, 2)))
    assert recent.get("job_known") is None


def test_an_older_write_never_replaces_a_newer_change() -> None:
    """The listener may deliver another process's change before this write's reply."""
    recent = RecentJobs(size=4)
    recent.wrote(job_at(1), Position(1, 1), Position(1, 1))
    recent.saw(Change.of(job_at(3), Position(1, 3)))
    recent.wrote(job_at(2), Position(1, 2), Position(1, 3))
    assert recent.get("job_known") == (Position(1, 3), job_at(3))
    recent.saw(Change.of(job_at(2), Position(1, 2)))
    assert recent.get("job_known") == (Position(1, 3), job_at(3))


def test_a_removal_forgets_the_job() -> None:
    recent = RecentJobs(size=4)
    recent.wrote(job_at(1), Position(1, 1), Position(1, 1))
    recent.saw(Change(job_id="job_known", job_type="generic", position=Position(1, 2), job=None))
    assert recent.get("job_known") is None


def test_a_write_whose_sequel_went_by_unseen_is_not_kept() -> None:
    """The listener delivered this write's removal before the write's reply came: the
    job is not kept as if it were still there."""
    recent = RecentJobs(size=4)
    recent.wrote(job_at(1), Position(1, 1), Position(1, 1))
    recent.saw(Change(job_id="job_known", job_type="generic", position=Position(1, 3), job=None))
    recent.wrote(job_at(2), Position(1, 2), Position(1, 3))
    assert recent.get("job_known") is None


def test_an_append_grows_the_known_output() -> None:
    recent = RecentJobs(size=4)
    recent.wrote(job_at(2, output_size=1), Position(1, 1), Position(1, 1))
    recent.saw_output(Output("job_known", 2, 1, [CHUNK, CHUNK]), Position(1, 2))
    assert recent.get("job_known") == (Position(1, 2), job_at(2, output_size=3))


def test_an_append_that_does_not_follow_forgets_the_job() -> None:
    """An append at another offset means a change was missed: read the job next time."""
    recent = RecentJobs(size=4)
    recent.wrote(job_at(2, output_size=1), Position(1, 1), Position(1, 1))
    recent.saw_output(Output("job_known", 2, 5, [CHUNK]), Position(1, 2))
    assert recent.get("job_known") is None


def test_the_least_recently_written_job_is_dropped_first() -> None:
    recent = RecentJobs(size=2)
    first, second, third = (
        job_at(1).model_copy(update={"job_id": f"job_{name}"}) for name in "abc"
    )
    recent.wrote(first, Position(1, 1), Position(1, 1))
    recent.wrote(second, Position(1, 2), Position(1, 2))
    recent.wrote(first, Position(1, 3), Position(1, 3))  # written again: now the newest
    recent.wrote(third, Position(1, 4), Position(1, 4))
    kept = [recent.get(job.job_id) for job in (first, second, third)]
    assert kept == [(Position(1, 3), first), None, (Position(1, 4), third)]
