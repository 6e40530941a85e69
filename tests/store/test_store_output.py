"""The output part of the store contract, on the memory store and the Redis store alike:
appends are atomic, ordered with the job's changes, exactly-once with an expected
offset, bounded, and go with their job."""

from __future__ import annotations

import anyio
import pytest

from app.errors import InvalidTransition, JobGone, JobNotFound, OffsetMismatch, OutputTooLarge
from app.models import MAX_COUNT
from app.streams.events import Output
from tests.store.harness import OUTPUT_LIMIT, Harness

pytestmark = pytest.mark.anyio


def bodies(*words: str) -> list[bytes]:
    return [b'{"data":"%s","kind":"token"}' % word.encode() for word in words]


async def test_appended_chunks_read_back_in_order_without_a_new_version(harness: Harness) -> None:
    job = await harness.create("llm_agent")
    first = (await harness.store.append_output(job.job_id, bodies("Hel", "lo"), None)).output
    second = (await harness.store.append_output(job.job_id, bodies(" world"), None)).output
    assert (first.offset, first.next_offset, second.offset, second.next_offset) == (0, 2, 2, 3)
    read = await harness.store.read_output(job.job_id, 0, None)
    assert read.output.bodies == bodies("Hel", "lo", " world")
    assert (read.output.offset, read.total, read.ended) == (0, 3, False)
    stored = await harness.store.get(job.job_id)
    assert (stored.version, stored.output_size) == (1, 3)
    await harness.sink.wait_for(lambda sink: len(sink.outputs) == 2)
    published = harness.sink.outputs
    assert [(o.offset, o.bodies, o.version) for o in published] == [
        (0, bodies("Hel", "lo"), 1),
        (2, bodies(" world"), 1),
    ]


async def test_output_is_published_in_order_with_the_jobs_changes(harness: Harness) -> None:
    """A change made after an append carries the output size it saw, and comes after it."""
    job = await harness.create()
    await harness.store.append_output(job.job_id, bodies("a"), None)
    updated = await harness.update(job.job_id, status="processing")
    await harness.store.append_output(job.job_id, bodies("b", "c"), None)
    done = await harness.complete(job.job_id)
    assert updated.output_size == 1
    assert done.output_size == 3
    await harness.sink.wait_for(lambda sink: len(sink.events) == 5)
    shape = [
        ("out", e.offset) if isinstance(e, Output) else ("job", e.version)
        for e in harness.sink.events
    ]
    assert shape == [("job", 1), ("out", 0), ("job", 2), ("out", 1), ("job", 3)]
    assert [c.job.output_size for c in harness.sink.changes if c.job] == [None, 1, 3]


async def test_an_expected_offset_appends_exactly_once(harness: Harness) -> None:
    job = await harness.create()
    await harness.store.append_output(job.job_id, bodies("a", "b"), 0)
    # The same append again (a retry after a lost answer): refused, with the count.
    with pytest.raises(OffsetMismatch) as refused:
        await harness.store.append_output(job.job_id, bodies("a", "b"), 0)
    assert refused.value.next_offset == 2
    await harness.store.append_output(job.job_id, bodies("c"), 2)
    read = await harness.store.read_output(job.job_id, 0, None)
    assert read.output.bodies == bodies("a", "b", "c")


async def test_an_ended_job_takes_no_output(harness: Harness) -> None:
    job = await harness.create()
    await harness.store.append_output(job.job_id, bodies("a"), None)
    await harness.fail(job.job_id)
    with pytest.raises(InvalidTransition, match="ended"):
        await harness.store.append_output(job.job_id, bodies("b"), None)
    read = await harness.store.read_output(job.job_id, 0, None)
    assert (read.output.bodies, read.total, read.ended) == (bodies("a"), 1, True)


async def test_a_jobs_output_is_bounded_in_bytes(harness: Harness) -> None:
    job = await harness.create()
    fits = [b'{"data":"' + b"x" * (OUTPUT_LIMIT - 12) + b'"}']
    assert len(fits[0]) == OUTPUT_LIMIT - 1
    await harness.store.append_output(job.job_id, fits, None)
    with pytest.raises(OutputTooLarge, match="JOBS_OUTPUT_MAX_BYTES"):
        await harness.store.append_output(job.job_id, [b'{"data":1}'], None)
    assert (await harness.store.read_output(job.job_id, 0, None)).total == 1
    assert (await harness.store.get(job.job_id)).output_size == 1


async def test_pages_start_where_the_reader_is(harness: Harness) -> None:
    job = await harness.create()
    await harness.store.append_output(job.job_id, bodies("a", "b", "c", "d"), None)
    page = await harness.store.read_output(job.job_id, 1, 2)
    assert (page.output.offset, page.output.bodies, page.total) == (1, bodies("b", "c"), 4)
    assert (await harness.store.read_output(job.job_id, 3, 10)).output.bodies == bodies("d")
    beyond = await harness.store.read_output(job.job_id, 9, 10)
    assert (beyond.output.offset, beyond.output.bodies) == (4, [])
    # The largest offset a request may name, with the largest page (a 64-bit range on Redis).
    farthest = await harness.store.read_output(job.job_id, MAX_COUNT, 1000)
    assert (farthest.output.offset, farthest.output.bodies, farthest.total) == (4, [], 4)
    counted = await harness.store.read_output(job.job_id, 0, 0)
    assert (counted.output.bodies, counted.total) == ([], 4)


async def test_an_append_answers_with_the_job_as_it_left_it(harness: Harness) -> None:
    """The job after the append: its outputSize grown, its version not, and a cancel
    asked for meanwhile (the cue of a worker that only streams output)."""
    job = await harness.create("llm_agent")
    first = await harness.store.append_output(job.job_id, bodies("a"), None)
    assert (first.job.output_size, first.job.version, first.job.cancel_requested) == (1, 1, None)
    canceled = await harness.cancel(job.job_id)
    second = await harness.store.append_output(job.job_id, bodies("b", "c"), None)
    assert second.job.cancel_requested is True
    assert second.job.cancel_reason == canceled.cancel_reason
    assert (second.job.output_size, second.job.version) == (3, canceled.version)


async def test_output_goes_with_its_job(harness: Harness) -> None:
    kept = await harness.create()
    deleted = await harness.create()
    finished = await harness.create()
    for job in (kept, deleted, finished):
        await harness.store.append_output(job.job_id, bodies("a"), None)
    await harness.store.delete(deleted.job_id)
    await harness.complete(finished.job_id)
    await harness.expire_terminal_jobs()
    for job in (deleted, finished):
        with pytest.raises(JobGone):
            await harness.store.read_output(job.job_id, 0, None)
        with pytest.raises(JobGone):
            await harness.store.append_output(job.job_id, bodies("b"), None)
    assert (await harness.store.read_output(kept.job_id, 0, None)).total == 1
    for unknown in ("job_nobodyHasThisId000", "../counts", "job_a:b"):
        with pytest.raises(JobNotFound):
            await harness.store.read_output(unknown, 0, None)
        with pytest.raises(JobNotFound):
            await harness.store.append_output(unknown, bodies("b"), None)


async def test_concurrent_appends_never_interleave_or_get_lost(harness: Harness) -> None:
    """Writers racing on one job (and a change racing them): each append lands whole,
    at consecutive offsets, and none is lost."""
    job = await harness.create()
    writers, size = 20, 5

    async def append(writer: int) -> None:
        words = [f"w{writer}c{i}" for i in range(size)]
        await harness.store.append_output(job.job_id, bodies(*words), None)

    async with anyio.create_task_group() as group:
        for writer in range(writers):
            group.start_soon(append, writer)
        group.start_soon(lambda: harness.update(job.job_id, progress=50))
    read = await harness.store.read_output(job.job_id, 0, None)
    assert read.total == writers * size
    runs = [read.output.bodies[i : i + size] for i in range(0, writers * size, size)]
    assert sorted(runs) == sorted(
        bodies(*[f"w{w}c{i}" for i in range(size)]) for w in range(writers)
    )
    assert (await harness.store.get(job.job_id)).output_size == writers * size
