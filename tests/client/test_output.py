"""A job's output through the clients, sync and async, against the real server: appending
(exactly once, however it is retried), reading back, the batching writers, and watching
output live, resumed after a cut.

The ``flavor`` adapter of :mod:`tests.client.test_client` runs each test with both
clients. A lost answer is simulated as the server sees it: the fake server forwards the
append to the real one, then closes the connection without answering.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import subprocess
import sys
import threading
from collections.abc import AsyncGenerator, Callable, Iterable
from typing import TYPE_CHECKING, Any

import anyio
import httpx2
import pytest
from jobcast_client import (
    AsyncJobsClient,
    AsyncOutputWriter,
    BackendUnavailable,
    Chunk,
    ConnectionFailed,
    InvalidJobData,
    InvalidTransition,
    Job,
    JobCanceled,
    JobNotFound,
    JobsClient,
    OffsetMismatch,
    OutputAppended,
    OutputChunk,
    OutputTooLarge,
    OutputWriter,
    ResponseError,
    RetryPolicy,
)

from tests.conftest import seconds

from .fakes import (
    EVENT_STREAM,
    FORWARD,
    FORWARD_THEN_DROP,
    Answer,
    CutProxy,
    FakeServer,
    Seen,
    in_order,
    job_answer,
    job_data,
    problem,
)
from .test_client import FAST, AsyncJobs, SyncJobs, _in_thread, connect, flavor as flavor

if TYPE_CHECKING:
    from tests.e2e.conftest import RunningServer

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

Start = Callable[..., "RunningServer"]


# --- helpers over both clients ----------------------------------------------------------


async def read_all(jobs: SyncJobs | AsyncJobs, job_id: str, after: int = 0) -> list[OutputChunk]:
    """Every chunk ``output()`` yields, through the client of either flavor."""
    if isinstance(jobs, SyncJobs):
        chunks: list[OutputChunk] = await _in_thread(
            lambda: list(jobs.client.output(job_id, after))
        )
        return chunks
    return [chunk async for chunk in jobs.client.output(job_id, after)]


async def write_all(
    jobs: SyncJobs | AsyncJobs, job_id: str, items: Iterable[Any], **options: Any
) -> int | None:
    """Write ``items`` through an output writer, closed at the end; its last offset."""
    if isinstance(jobs, SyncJobs):

        def write() -> int | None:
            with jobs.client.output_writer(job_id, **options) as out:
                for item in items:
                    out.write(item)
            return out.offset

        offset: int | None = await _in_thread(write)
        return offset
    async with jobs.client.output_writer(job_id, **options) as out:
        for item in items:
            await out.write(item)
    return out.offset


def data_of(chunks: Iterable[OutputChunk]) -> list[Any]:
    return [chunk.data for chunk in chunks]


def posts(fake: FakeServer) -> list[dict[str, Any]]:
    """The bodies of the appends the fake server saw, decoded."""
    return [
        json.loads(seen.body)
        for seen in fake.requests
        if seen.method == "POST" and seen.path.endswith("/output")
    ]


# --- append and read ----------------------------------------------------------------------


async def test_appended_chunks_are_read_back_in_order_with_their_offsets(
    shared_server: Start, flavor: str
) -> None:
    """One chunk, then several (plain values with the call's kind, Chunk items with their own,
    a dict and a null as data): output() gives them all back, numbered from 0, and the job
    counts them in output_size without a new version."""
    srv = shared_server()
    async with connect(flavor, srv.base_url) as jobs:
        job = await jobs.create_job(job_type="llm_agent")
        first = await jobs.append_output(job.job_id, "Hel", kind="token")
        assert first == OutputAppended(offset=0, next_offset=1)
        mixed = ["lo", Chunk({"rows": [1, 2]}, kind="result"), None, Chunk("plain")]
        more = await jobs.append_output(job.job_id, chunks=mixed, kind="token")
        assert (more.offset, more.next_offset, more.already_applied) == (1, 5, False)
        assert await read_all(jobs, job.job_id) == [
            OutputChunk(0, "Hel", "token"),
            OutputChunk(1, "lo", "token"),
            OutputChunk(2, {"rows": [1, 2]}, "result"),
            OutputChunk(3, None, "token"),
            OutputChunk(4, "plain", None),
        ]
        assert data_of(await read_all(jobs, job.job_id, after=3)) == [None, "plain"]
        assert await read_all(jobs, job.job_id, after=5) == []
        now = await jobs.get_job(job.job_id)
        assert (now.output_size, now.version) == (5, job.version)
        assert now.to_wire()["outputSize"] == 5
        assert "outputSize" not in job.to_wire()


async def test_output_pages_through_more_than_one_page(shared_server: Start, flavor: str) -> None:
    """output() follows the pages (1000 chunks each) to the end of what the job holds."""
    srv = shared_server()
    async with connect(flavor, srv.base_url) as jobs:
        job_id = (await jobs.create_job()).job_id
        for start in range(0, 2500, 500):
            await jobs.append_output(job_id, chunks=range(start, start + 500))
        chunks = await read_all(jobs, job_id, after=1)
        assert data_of(chunks) == list(range(1, 2500))
        assert [chunk.offset for chunk in chunks] == list(range(1, 2500))


async def test_an_append_made_again_with_its_expected_offset_lands_once(
    shared_server: Start, flavor: str
) -> None:
    """The same append with the same expected_offset twice (a worker retrying after it heard
    nothing) is reported as already applied, and its chunks are there once; other chunks at
    that offset raise OffsetMismatch with the count the job holds."""
    srv = shared_server()
    async with connect(flavor, srv.base_url) as jobs:
        job_id = (await jobs.create_job()).job_id
        sent = await jobs.append_output(job_id, chunks=["a", ("b", 1)], expected_offset=0)
        again = await jobs.append_output(job_id, chunks=["a", ("b", 1)], expected_offset=0)
        assert sent == OutputAppended(0, 2)
        assert again == OutputAppended(0, 2, already_applied=True)
        assert data_of(await read_all(jobs, job_id)) == ["a", ["b", 1]]
        with pytest.raises(OffsetMismatch) as other:
            await jobs.append_output(job_id, chunks=["a", "c"], expected_offset=0)
        assert (other.value.expected_offset, other.value.next_offset) == (0, 2)
        assert "expectedOffset is 0 but the job has 2 output chunks" in str(other.value)
        with pytest.raises(OffsetMismatch) as behind:
            await jobs.append_output(job_id, "d", expected_offset=5)
        assert behind.value.next_offset == 2
        assert await jobs.append_output(job_id, "d", expected_offset=2) == OutputAppended(2, 3)
        assert data_of(await read_all(jobs, job_id)) == ["a", ["b", 1], "d"]


async def test_an_append_whose_answer_was_lost_is_retried_exactly_once(
    fake: Callable[..., FakeServer], shared_server: Start, flavor: str
) -> None:
    """The first attempt reaches the server and its answer is lost; the retry gets 409, the
    client reads the chunks at its offset, finds its own, and returns: nothing twice."""
    srv = shared_server()
    lossy = fake(in_order(), upstream=srv.base_url)
    async with connect(flavor, lossy.url) as jobs:
        job_id = (await jobs.create_job()).job_id
        lossy.requests.clear()
        lossy.script = in_order(FORWARD_THEN_DROP)
        done = await jobs.append_output(job_id, chunks=["x", "y"], kind="log", expected_offset=0)
        assert done == OutputAppended(0, 2, already_applied=True)
        assert [(seen.method, seen.path.partition("?")[0][-7:]) for seen in lossy.requests] == [
            ("POST", "/output"),
            ("POST", "/output"),
            ("GET", "/output"),
            ("GET", job_id[-7:]),  # the job: the cancel flag the lost answer carried
        ]
        assert [body["expectedOffset"] for body in posts(lossy)] == [0, 0]
        assert await read_all(jobs, job_id) == [
            OutputChunk(0, "x", "log"),
            OutputChunk(1, "y", "log"),
        ]


async def test_a_tracked_append_whose_answer_was_lost_still_hears_a_cancel(
    fake: Callable[..., FakeServer], shared_server: Start
) -> None:
    """The answer that carried the cancel flag was lost; the retry recognises the append as
    landed and takes the flag from the job, so the worker hears JobCanceled all the same."""
    srv = shared_server()
    lossy = fake(in_order(), upstream=srv.base_url)

    def work() -> None:
        with (
            JobsClient(lossy.url) as worker,
            JobsClient(srv.base_url) as user,
            worker.track(job_type="llm_agent") as job,
        ):
            user.cancel_job(job.job_id, "stop now")
            lossy.script = in_order(FORWARD_THEN_DROP)
            job.append_output("landed", expected_offset=0)

    with pytest.raises(JobCanceled, match="stop now") as canceled:
        await _in_thread(work)
    async with connect("async", srv.base_url) as jobs:
        ended = await jobs.get_job(canceled.value.job_id)
    assert (ended.status, ended.error, ended.output_size) == ("error", "canceled", 1)


async def test_a_lost_answer_is_recognised_after_another_writers_append(
    fake: Callable[..., FakeServer], shared_server: Start, flavor: str
) -> None:
    """The append landed (its answer lost) and another writer appended after it: the
    retry finds its chunks at its offset all the same, and appends nothing again."""
    srv = shared_server()
    lossy = fake(in_order(), upstream=srv.base_url)
    async with connect(flavor, lossy.url, retry=RetryPolicy(retries=0)) as jobs:
        job_id = (await jobs.create_job()).job_id
        lossy.script = in_order(FORWARD_THEN_DROP)
        with pytest.raises(ConnectionFailed):
            await jobs.append_output(job_id, chunks=["A1", "A2"], expected_offset=0)
        await jobs.append_output(job_id, chunks=["B"], expected_offset=2)  # the other writer
        done = await jobs.append_output(job_id, chunks=["A1", "A2"], expected_offset=0)
        assert done == OutputAppended(0, 2, already_applied=True)
        assert data_of(await read_all(jobs, job_id)) == ["A1", "A2", "B"]


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
async def test_a_writer_sends_a_batch_whose_answer_was_lost_again_alone(
    fake: Callable[..., FakeServer], shared_server: Start, asynchronous: bool
) -> None:
    """A batch that landed with its answer lost is kept, and its failure is raised by the
    next write, which keeps nothing; the next append sends the batch again as it was
    (recognised: nothing twice), then what was written since."""
    srv = shared_server()
    lossy = fake(in_order(), upstream=srv.base_url)
    with JobsClient(srv.base_url) as direct:
        job_id = direct.create_job().job_id
    # The writer's first request reads where to start; its first append lands, unanswered.
    lossy.script = in_order("forward", FORWARD_THEN_DROP)
    once = RetryPolicy(retries=0)
    if asynchronous:
        async with (
            AsyncJobsClient(lossy.url, retry=once) as client,
            client.output_writer(job_id, max_chunks=2, max_delay=60) as out,
        ):
            await out.write("a")
            await out.write("b")  # full: appended, in the background
            with pytest.raises(ConnectionFailed):
                await out.write("c")  # heard now: "c" is not kept
            await out.write("c")
    else:

        def write() -> None:
            with (
                JobsClient(lossy.url, retry=once) as client,
                client.output_writer(job_id, max_chunks=2, max_delay=60) as out,
            ):
                out.write("a")
                out.write("b")  # full: appended, in the background
                with pytest.raises(ConnectionFailed):
                    out.write("c")  # heard now: "c" is not kept
                out.write("c")

        await _in_thread(write)
    assert [body["chunks"] for body in posts(lossy)][1] == [{"data": "a"}, {"data": "b"}]
    with JobsClient(srv.base_url) as direct:
        assert [chunk.data for chunk in direct.output(job_id)] == ["a", "b", "c"]


async def test_an_append_without_expected_offset_is_never_sent_twice(
    fake: Callable[..., FakeServer], shared_server: Start, flavor: str
) -> None:
    """Without expected_offset a lost answer or a 503 is raised, not retried (the chunk may
    have landed: it did, once); a refused connection's 429 is retried."""
    srv = shared_server()
    lossy = fake(in_order(), upstream=srv.base_url)
    async with connect(flavor, lossy.url) as jobs:
        job_id = (await jobs.create_job()).job_id
        lossy.script = in_order(FORWARD_THEN_DROP)
        with pytest.raises(ConnectionFailed, match="after 1 attempt") as lost:
            await jobs.append_output(job_id, "once")
        assert "may have reached the server and been applied" in str(lost.value.__notes__)
        assert data_of(await read_all(jobs, job_id)) == ["once"]
        lossy.script = in_order(problem(503, "backend-unavailable", "down"))
        with pytest.raises(BackendUnavailable):
            await jobs.append_output(job_id, "not sent")
        lossy.script = in_order(problem(429, "rate-limited", "slow down", **{"Retry-After": "0"}))
        assert (await jobs.append_output(job_id, "after a 429")).offset == 1
        lossy.script = in_order(problem(503, "backend-unavailable", "down"))
        assert (await jobs.append_output(job_id, "retried", expected_offset=2)).offset == 2
        assert data_of(await read_all(jobs, job_id)) == ["once", "after a 429", "retried"]
        assert len(posts(lossy)) == 6, "the 429 and the 503 with expected_offset retried"


async def test_refused_appends_raise_with_the_servers_reason(server: Start, flavor: str) -> None:
    """A kind over 64 characters, output over a limit, an ended job and an unknown job raise
    the matching exceptions with the server's own words; bad arguments raise ValueError."""
    srv = server(JOBS_OUTPUT_MAX_CHUNKS="3", JOBS_OUTPUT_MAX_CHUNK_BYTES="100")
    async with connect(flavor, srv.base_url) as jobs, srv.client() as api:
        job_id = (await jobs.create_job()).job_id
        with pytest.raises(InvalidJobData) as long_kind:
            await jobs.append_output(job_id, "x", kind="k" * 65)
        assert [error.field for error in long_kind.value.errors] == ["chunks.0.kind"]
        said = await api.post(
            f"/api/jobs/{job_id}/output", json={"chunks": [{"data": "x", "kind": "k" * 65}]}
        )
        assert str(long_kind.value) == said.json()["detail"]
        with pytest.raises(OutputTooLarge, match="JOBS_OUTPUT_MAX_CHUNKS"):
            await jobs.append_output(job_id, chunks=[1, 2, 3, 4])
        with pytest.raises(OutputTooLarge, match="JOBS_OUTPUT_MAX_CHUNK_BYTES") as too_big:
            await jobs.append_output(job_id, "x" * 200)
        assert isinstance(too_big.value, InvalidJobData)
        with pytest.raises(JobNotFound):
            await jobs.append_output("job_nope", "x")
        with pytest.raises(ValueError, match="exactly one of data or chunks"):
            await jobs.append_output(job_id)
        with pytest.raises(ValueError, match="exactly one of data or chunks"):
            await jobs.append_output(job_id, "x", chunks=["y"])
        with pytest.raises(ValueError, match="empty"):
            await jobs.append_output(job_id, chunks=[])
        for letters in ("abc", b"abc", {"a": 1}):
            with pytest.raises(
                ValueError, match=r"chunks is a list .* append one chunk with data="
            ):
                await jobs.append_output(job_id, chunks=letters)
        for offset in ("0", -1, 1.0, True):
            with pytest.raises(ValueError, match="expected_offset must be a count of chunks"):
                await jobs.append_output(job_id, "x", expected_offset=offset)
        await jobs.complete_job(job_id)
        with pytest.raises(InvalidTransition, match="ended"):
            await jobs.append_output(job_id, "too late")
        with pytest.raises(InvalidTransition, match="ended"):
            await jobs.append_output(job_id, "too late", expected_offset=0)
        assert await read_all(jobs, job_id) == []


# --- the writers ----------------------------------------------------------------------------


async def test_the_writer_batches_writes_into_few_exactly_once_appends(
    fake: Callable[..., FakeServer], shared_server: Start, flavor: str
) -> None:
    """95 writes with max_chunks=10 make 10 appends (9 full, the rest on close), each with
    expectedOffset, starting after the output the job had; every chunk arrives, in order."""
    srv = shared_server()
    recorder = fake(in_order(), upstream=srv.base_url)
    async with connect(flavor, recorder.url) as jobs:
        job_id = (await jobs.create_job()).job_id
        await jobs.append_output(job_id, chunks=["earlier", "output"])
        tokens = [f"t{number} " for number in range(95)]
        last = await write_all(jobs, job_id, tokens, kind="token", max_chunks=10, max_delay=60)
        assert last == 97
        appends = posts(recorder)[1:]
        assert len(appends) == 10 < len(tokens)
        assert [body["expectedOffset"] for body in appends] == list(range(2, 97, 10))
        assert [len(body["chunks"]) for body in appends] == [10] * 9 + [5]
        chunks = await read_all(jobs, job_id)
        assert data_of(chunks) == ["earlier", "output", *tokens]
        assert {chunk.kind for chunk in chunks[2:]} == {"token"}


async def test_the_writer_appends_after_max_delay_without_another_write(
    shared_server: Start, flavor: str
) -> None:
    """A batch that is not full goes once its oldest chunk has waited max_delay, though no
    write or flush follows (a background thread or task sees to it)."""
    srv = shared_server()
    async with connect(flavor, srv.base_url) as jobs:
        job_id = (await jobs.create_job()).job_id
        writer: OutputWriter | AsyncOutputWriter
        async with contextlib.AsyncExitStack() as stack:
            if isinstance(jobs, SyncJobs):
                writer = jobs.client.output_writer(job_id, max_chunks=100, max_delay=0.1)
                stack.callback(writer.close)
                for word in ("one", "two", "three"):
                    writer.write(word)
            else:
                entered = await stack.enter_async_context(
                    jobs.client.output_writer(job_id, max_chunks=100, max_delay=0.1)
                )
                for word in ("one", "two", "three"):
                    await entered.write(word)
                writer = entered
            with anyio.fail_after(seconds(5)):
                while True:
                    if len(await read_all(jobs, job_id)) == 3:
                        break
                    await anyio.sleep(0.02)
            assert writer.offset == 3
        assert data_of(await read_all(jobs, job_id)) == ["one", "two", "three"]


async def test_writers_of_one_job_take_turns_without_losing_or_doubling(
    shared_server: Start, flavor: str
) -> None:
    """Two writers on one job (tokens and log lines) append in turns: each moves past the
    other's batches, so every chunk is there once and each writer's stay in order."""
    srv = shared_server()
    async with connect(flavor, srv.base_url) as jobs:
        job_id = (await jobs.create_job()).job_id
        tokens = [f"t{number}" for number in range(30)]
        lines = [f"line {number}" for number in range(30)]
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(
                functools.partial(write_all, jobs, job_id, tokens, kind="token", max_chunks=4)
            )
            tasks.start_soon(
                functools.partial(write_all, jobs, job_id, lines, kind="log", max_chunks=3)
            )
        chunks = await read_all(jobs, job_id)
        assert [chunk.offset for chunk in chunks] == list(range(60))
        assert [chunk.data for chunk in chunks if chunk.kind == "token"] == tokens
        assert [chunk.data for chunk in chunks if chunk.kind == "log"] == lines


async def test_a_batch_the_server_refuses_is_kept_raised_and_given_up_on_close(
    shared_server: Start,
) -> None:
    """flush() raises what the append raised and keeps the batch (a later flush tries it
    again); close() raises it too, then drops it; a closed writer takes no more."""
    srv = shared_server()
    with JobsClient(srv.base_url, retry=FAST) as jobs:
        job_id = jobs.create_job().job_id
        writer = jobs.output_writer(job_id, max_delay=60)
        writer.write("kept")
        writer.flush()
        writer.write("refused")
        jobs.complete_job(job_id)
        with pytest.raises(InvalidTransition):
            writer.flush()
        with pytest.raises(InvalidTransition):
            writer.flush()
        with pytest.raises(InvalidTransition):
            writer.close()
        writer.close()
        with pytest.raises(ValueError, match="closed"):
            writer.write("more")
        assert [chunk.data for chunk in jobs.output(job_id)] == ["kept"]


async def test_the_writer_keeps_each_append_under_max_bytes(
    fake: Callable[..., FakeServer], server: Start, flavor: str
) -> None:
    """Chunks larger in all than the server takes in one body go in several appends, each
    at most max_bytes of chunk JSON, where one append would be refused (413) for ever."""
    srv = server(JOBS_MAX_BODY_BYTES="100000")
    recorder = fake(in_order(), upstream=srv.base_url)
    async with connect(flavor, recorder.url) as jobs:
        job_id = (await jobs.create_job()).job_id
        pages = [f"page {number}: " + "x" * 25_000 for number in range(10)]
        last = await write_all(jobs, job_id, pages, kind="log", max_delay=60, max_bytes=60_000)
        assert last == 10
        appends = posts(recorder)
        assert [len(body["chunks"]) for body in appends] == [2] * 5
        assert all(len(json.dumps(body["chunks"])) <= 60_000 for body in appends)
        assert data_of(await read_all(jobs, job_id)) == pages


async def test_a_refused_chunk_is_dropped_alone_and_raised(server: Start, flavor: str) -> None:
    """One chunk over the server's limit among 99 good ones: the writer splits the refused
    batch until it finds it, appends the 99 in order, drops that one, and raises its 413."""
    srv = server(JOBS_OUTPUT_MAX_CHUNK_BYTES="1000")
    good = [f"t{number}" for number in range(99)]
    items = [*good[:40], "y" * 2000, *good[40:]]
    async with connect(flavor, srv.base_url) as jobs:
        job_id = (await jobs.create_job()).job_id
        with pytest.raises(OutputTooLarge) as refused:
            await write_all(jobs, job_id, items, max_delay=60)
        assert "dropped 1 chunk(s)" in "\n".join(refused.value.__notes__)
        assert data_of(await read_all(jobs, job_id)) == good


async def test_a_max_chunks_above_the_servers_limit_settles_below_it(
    fake: Callable[..., FakeServer], server: Start, flavor: str
) -> None:
    """max_chunks=25 on a server that takes 10 chunks an append: every chunk lands, in
    order, and once refused the writer sends at most half as many."""
    srv = server(JOBS_OUTPUT_MAX_CHUNKS="10")
    recorder = fake(in_order(), upstream=srv.base_url)
    async with connect(flavor, recorder.url) as jobs:
        job_id = (await jobs.create_job()).job_id
        tokens = [f"t{number}" for number in range(75)]
        await write_all(jobs, job_id, tokens, max_chunks=25, max_delay=60)
        assert data_of(await read_all(jobs, job_id)) == tokens
        sizes = [len(body["chunks"]) for body in posts(recorder)]
        assert sizes[:3] == [25, 12, 6]  # refused, refused, landed
        assert max(sizes[3:]) <= 6


async def test_a_chunk_refused_in_the_background_is_raised_by_the_next_call(
    server: Start, flavor: str
) -> None:
    """The timer's append of a chunk over the limit: the good chunk beside it lands, and
    the refusal is raised by the next flush, however many sends come between."""
    srv = server(JOBS_OUTPUT_MAX_CHUNK_BYTES="1000")
    async with connect(flavor, srv.base_url) as jobs:
        job_id = (await jobs.create_job()).job_id

        async def appended() -> bool:
            return data_of(await read_all(jobs, job_id)) == ["ok"]

        if isinstance(jobs, SyncJobs):
            writer = jobs.client.output_writer(job_id, max_delay=0.01)
            writer.write("ok")
            writer.write("y" * 2000)
            await until_true(appended)
            with pytest.raises(OutputTooLarge):
                writer.flush()
            writer.write("after")
            writer.close()
        else:
            async with jobs.client.output_writer(job_id, max_delay=0.01) as out:
                await out.write("ok")
                await out.write("y" * 2000)
                await until_true(appended)
                with pytest.raises(OutputTooLarge):
                    await out.flush()
                await out.write("after")
        assert data_of(await read_all(jobs, job_id)) == ["ok", "after"]


async def test_what_a_split_leaves_goes_within_max_delay(server: Start, flavor: str) -> None:
    """15 chunks in one batch on a server that takes 10: the halves that went leave one
    chunk waiting, which the timer sends within max_delay, with no other call."""
    srv = server(JOBS_OUTPUT_MAX_CHUNKS="10")
    tokens = [f"t{number}" for number in range(15)]
    async with connect(flavor, srv.base_url) as jobs:
        job_id = (await jobs.create_job()).job_id

        async def all_there() -> bool:
            return data_of(await read_all(jobs, job_id)) == tokens

        if isinstance(jobs, SyncJobs):
            writer = jobs.client.output_writer(job_id, max_chunks=15, max_delay=0.2)
            for token in tokens:
                writer.write(token)
            await until_true(all_there)
            writer.close()
        else:
            async with jobs.client.output_writer(job_id, max_chunks=15, max_delay=0.2) as out:
                for token in tokens:
                    await out.write(token)
                await until_true(all_there)


async def test_a_body_limit_learned_costs_few_requests(
    fake: Callable[..., FakeServer], server: Start, flavor: str
) -> None:
    """A body over the server's limit teaches the writer a smaller one: the pages go one
    by one, and the small chunks after them still a hundred at a time."""
    srv = server(JOBS_MAX_BODY_BYTES="100000")
    recorder = fake(in_order(), upstream=srv.base_url)
    async with connect(flavor, recorder.url) as jobs:
        job_id = (await jobs.create_job()).job_id
        pages = ["x" * 60_000, "y" * 60_000]
        tokens = [f"t{number}" for number in range(1000)]
        await write_all(jobs, job_id, [*pages, *tokens], max_delay=60)
        assert data_of(await read_all(jobs, job_id)) == [*pages, *tokens]
        assert len(posts(recorder)) <= 1 + 2 + 10  # refused, each page alone, ten of 100


async def write_hearing(
    jobs: SyncJobs | AsyncJobs, job_id: str, items: Iterable[Any], **options: Any
) -> list[InvalidJobData]:
    """Write ``items`` as a caller that hears refusals should: a write that raises one kept
    nothing, so it is made again; the refusals heard, the close's among them."""
    heard: list[InvalidJobData] = []
    if isinstance(jobs, SyncJobs):

        def write() -> None:
            out = jobs.client.output_writer(job_id, **options)
            for item in items:
                try:
                    out.write(item)
                except InvalidJobData as refusal:
                    heard.append(refusal)
                    with contextlib.suppress(InvalidJobData):  # the output is full
                        out.write(item)
            try:
                out.close()
            except InvalidJobData as refusal:
                heard.append(refusal)

        await _in_thread(write)
        return heard
    async with jobs.client.output_writer(job_id, **options) as out:
        for item in items:
            try:
                await out.write(item)
            except InvalidJobData as refusal:
                heard.append(refusal)
                with contextlib.suppress(InvalidJobData):
                    await out.write(item)
        try:
            await out.flush()
        except InvalidJobData as refusal:
            heard.append(refusal)
    return heard


async def test_a_full_output_drops_what_waits_and_takes_no_more(
    fake: Callable[..., FakeServer], server: Start, flavor: str
) -> None:
    """Once a batch is refused for the job's whole output, it and all that waits are
    dropped at once, and the writer takes no more: the output stays a start of what was
    written, with no hole, though a later, smaller chunk would fit."""
    srv = server(JOBS_OUTPUT_MAX_BYTES="300")
    recorder = fake(in_order(), upstream=srv.base_url)
    items = [f"c{number}" for number in range(150)]  # 13 or 14 bytes each: 21 fit
    async with connect(flavor, recorder.url) as jobs:
        job_id = (await jobs.create_job()).job_id
        heard = await write_hearing(jobs, job_id, items, max_chunks=10, max_delay=60)
        assert "JOBS_OUTPUT_MAX_BYTES" in str(heard[0])
        assert "dropped 10 chunk(s)" in "\n".join(heard[0].__notes__)  # c20..c29
        assert len(heard) > 1
        assert all("output is full" in str(refusal) for refusal in heard[1:])
        assert data_of(await read_all(jobs, job_id)) == items[:20]
        assert len(posts(recorder)) == 3


async def test_a_chunk_the_server_cannot_parse_costs_no_smaller_batches(
    fake: Callable[..., FakeServer], shared_server: Start, flavor: str
) -> None:
    """A refusal that names no chunk and no limit (a chunk nested deeper than the server
    parses) is found by halving that batch alone; the chunks after it still go a hundred
    at a time."""
    srv = shared_server()
    recorder = fake(in_order(), upstream=srv.base_url)
    deep: Any = "bottom"
    for _ in range(300):
        deep = [deep]
    lines = [f"line {number}" for number in range(400)]
    async with connect(flavor, recorder.url) as jobs:
        job_id = (await jobs.create_job()).job_id
        heard = await write_hearing(jobs, job_id, [*lines[:99], deep, *lines[99:]], max_delay=60)
        assert len(heard) == 1
        assert data_of(await read_all(jobs, job_id)) == lines
        assert len(posts(recorder)) <= 1 + 2 * 7 + 4  # the refused batch halved, then 100s


async def test_a_chunk_found_among_pieces_keeps_the_order_of_the_rest(
    server: Start, flavor: str
) -> None:
    """A batch refused for a chunk the server cannot parse is halved, and a half is then
    refused for holding more chunks than an append may: every other chunk still lands,
    in the order written."""
    srv = server(JOBS_OUTPUT_MAX_CHUNKS="2")
    deep: Any = "bottom"
    for _ in range(300):
        deep = [deep]
    items = list(range(7))
    async with connect(flavor, srv.base_url) as jobs:
        job_id = (await jobs.create_job()).job_id
        heard = await write_hearing(jobs, job_id, [*items, deep], max_chunks=8, max_delay=60)
        assert len(heard) == 1
        assert data_of(await read_all(jobs, job_id)) == items


def test_an_attempt_that_never_left_makes_no_equal_chunk_the_writers_own(
    shared_server: Start,
) -> None:
    """The first attempt of an append is refused at connect while another writer appends
    an equal chunk: the retry's 409 is not taken for this append having landed."""
    srv = shared_server()

    class RefusedOnce(httpx2.HTTPTransport):
        refused = False

        def handle_request(self, request: httpx2.Request) -> httpx2.Response:
            if request.url.path.endswith("/output") and not self.refused:
                self.refused = True
                other.append_output(job_id, "tick")  # meanwhile, the other writer
                raise httpx2.ConnectError("refused", request=request)
            return super().handle_request(request)

    with (
        JobsClient(srv.base_url, retry=FAST) as other,
        JobsClient(srv.base_url, retry=FAST, transport=RefusedOnce()) as jobs,
    ):
        job_id = jobs.create_job().job_id
        with jobs.output_writer(job_id, max_delay=60) as out:
            out.write("tick")
        assert [chunk.data for chunk in jobs.output(job_id)] == ["tick", "tick"]


def test_closing_the_client_appends_what_an_unclosed_writer_holds(shared_server: Start) -> None:
    """A writer used without ``with`` and never closed: its chunks wait for a daemon timer,
    so the client's close appends them before the connections go."""
    srv = shared_server()
    with JobsClient(srv.base_url) as jobs:
        job_id = jobs.create_job().job_id
        out = jobs.output_writer(job_id, max_delay=60)
        out.write("left in the writer")
    with JobsClient(srv.base_url) as reader:
        assert [chunk.data for chunk in reader.output(job_id)] == ["left in the writer"]
    with pytest.raises(ValueError, match="closed output writer"):
        out.write("after")


def test_the_exit_of_the_interpreter_appends_what_an_unclosed_writer_holds(
    shared_server: Start,
) -> None:
    """A script that never closes its client nor its writer: the exit, which stops the
    daemon timer, appends what the writer holds first."""
    srv = shared_server()
    script = (
        "import sys; from jobcast_client import JobsClient\n"
        "jobs = JobsClient(sys.argv[1])\n"
        "out = jobs.output_writer(sys.argv[2], max_delay=60)\n"
        "out.write('the last tokens')\n"
    )
    with JobsClient(srv.base_url) as jobs:
        job_id = jobs.create_job().job_id
        ran = subprocess.run(
            [sys.executable, "-c", script, srv.base_url, job_id],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert (ran.returncode, ran.stderr) == (0, "")
        assert [chunk.data for chunk in jobs.output(job_id)] == ["the last tokens"]


async def test_equal_chunks_of_another_writer_never_stand_in_for_the_writers_own(
    shared_server: Start, flavor: str
) -> None:
    """A writer's batch refused at its offset because another writer appended the same
    chunk there goes after it: both are held, where a first attempt refused was taken
    for one that landed."""
    srv = shared_server()
    async with connect(flavor, srv.base_url) as jobs, srv.client() as api:
        job_id = (await jobs.create_job()).job_id
        beat = {"data": "heartbeat", "kind": "log"}
        if isinstance(jobs, SyncJobs):
            writer = jobs.client.output_writer(job_id, kind="log", max_delay=60)
            writer.write("heartbeat")
            writer.flush()
            await api.post(f"/api/jobs/{job_id}/output", json={"chunks": [beat]})
            writer.write("heartbeat")
            writer.close()
        else:
            async with jobs.client.output_writer(job_id, kind="log", max_delay=60) as out:
                await out.write("heartbeat")
                await out.flush()
                await api.post(f"/api/jobs/{job_id}/output", json={"chunks": [beat]})
                await out.write("heartbeat")
        assert data_of(await read_all(jobs, job_id)) == ["heartbeat"] * 3


async def test_a_refusal_is_heard_after_a_failure_that_came_first(
    fake: Callable[..., FakeServer], server: Start, flavor: str
) -> None:
    """A chunk refused, then the append of the rest lost: flush raises the lost append's
    failure, and the next flush, once the rest has gone, the refusal."""
    srv = server(JOBS_OUTPUT_MAX_CHUNK_BYTES="1000")
    gate = fake(in_order(), upstream=srv.base_url)
    async with connect(flavor, gate.url, retry=RetryPolicy(retries=0)) as jobs:
        job_id = (await jobs.create_job()).job_id
        # The writer reads where to start, its first append is refused (413), the next dropped.
        gate.script = in_order("forward", "forward", FORWARD_THEN_DROP)
        if isinstance(jobs, SyncJobs):
            writer = jobs.client.output_writer(job_id, max_delay=60)
            writer.write("y" * 2000)
            writer.write("kept")
            with pytest.raises(ConnectionFailed):
                writer.flush()
            with pytest.raises(OutputTooLarge):
                writer.flush()
            writer.close()
        else:
            async with jobs.client.output_writer(job_id, max_delay=60) as out:
                await out.write("y" * 2000)
                await out.write("kept")
                with pytest.raises(ConnectionFailed):
                    await out.flush()
                with pytest.raises(OutputTooLarge):
                    await out.flush()
        assert data_of(await read_all(jobs, job_id)) == ["kept"]


async def test_a_batch_moved_past_another_writer_is_sent_again_where_it_went(
    fake: Callable[..., FakeServer], shared_server: Start, flavor: str
) -> None:
    """The writer's batch, moved past another writer's append, lands but every answer
    about it is lost until the retries are spent: sent again, it is recognised where it
    went, not appended twice."""
    srv = shared_server()
    lost = 0

    def script(seen: Seen) -> Answer | str:
        nonlocal lost
        appending = seen.method == "POST" and seen.path.endswith("/output")
        if appending and lost < 4 and json.loads(seen.body).get("expectedOffset") == 2:
            lost += 1
            return FORWARD_THEN_DROP
        return FORWARD

    gate = fake(script, upstream=srv.base_url)
    async with connect(flavor, gate.url) as jobs, srv.client() as api:
        job_id = (await jobs.create_job()).job_id
        if isinstance(jobs, SyncJobs):
            writer = jobs.client.output_writer(job_id, max_delay=60)
            writer.write("a")
            writer.flush()
            await append(api, job_id, "other")
            writer.write("b")
            with pytest.raises(ConnectionFailed):
                writer.flush()
            writer.close()
        else:
            async with jobs.client.output_writer(job_id, max_delay=60) as out:
                await out.write("a")
                await out.flush()
                await append(api, job_id, "other")
                await out.write("b")
                with pytest.raises(ConnectionFailed):
                    await out.flush()
        assert data_of(await read_all(jobs, job_id)) == ["a", "other", "b"]


async def test_a_background_error_that_a_flush_made_moot_is_not_raised(
    fake: Callable[..., FakeServer], shared_server: Start, flavor: str
) -> None:
    """The timer's append fails while a flush waits its turn; the flush sends that batch
    again, and it lands. Nothing is lost, so the next write raises nothing."""
    srv = shared_server()
    arrived, answer = threading.Event(), threading.Event()

    def script(seen: Seen) -> Answer | str:
        if seen.method == "POST" and seen.path.endswith("/output") and not arrived.is_set():
            arrived.set()
            answer.wait(seconds(10))
            return problem(409, "invalid-transition", "refused, this once")
        return FORWARD

    gate = fake(script, upstream=srv.base_url)
    async with connect(flavor, gate.url) as jobs:
        job_id = (await jobs.create_job()).job_id
        if isinstance(jobs, SyncJobs):
            writer = jobs.client.output_writer(job_id, max_delay=0.01)
            writer.write("first")
            await _in_thread(arrived.wait, seconds(10))  # the timer's append, held
            flushing = threading.Thread(target=writer.flush)
            flushing.start()
            await until(lambda: _waits_in(flushing, "_send"))
            answer.set()
            await _in_thread(flushing.join, seconds(10))
            writer.write("second")
            writer.close()
        else:
            async with jobs.client.output_writer(job_id, max_delay=0.01) as out:
                await out.write("first")
                await _in_thread(arrived.wait, seconds(10))
                async with anyio.create_task_group() as tasks:
                    tasks.start_soon(out.flush)
                    waiting = out._sending.statistics
                    await until(lambda: waiting().tasks_waiting == 1)
                    answer.set()
                await out.write("second")
        assert data_of(await read_all(jobs, job_id)) == ["first", "second"]


def _waits_in(thread: threading.Thread, function: str) -> bool:
    """Whether ``thread`` is inside ``function`` now."""
    frame = sys._current_frames().get(thread.ident or 0)
    while frame is not None:
        if frame.f_code.co_name == function:
            return True
        frame = frame.f_back
    return False


async def until_true(check: Callable[[], Any]) -> None:
    """Await ``check()`` every 10 ms until it holds (what the server holds sends no event)."""
    with anyio.fail_after(seconds(10)):
        while True:
            if await check():
                return
            await anyio.sleep(0.01)


async def until(check: Callable[[], bool]) -> None:
    """Look every 10 ms until ``check()`` holds (a lock's waiters send no event)."""
    with anyio.fail_after(seconds(10)):
        while True:
            if check():
                return
            await anyio.sleep(0.01)


async def test_an_async_writer_must_be_entered_and_flushes_when_cancelled(
    shared_server: Start,
) -> None:
    """The async writer refuses writes outside `async with`; a cancelled block still appends
    what it holds (shielded), and the cancellation goes on."""
    srv = shared_server()
    async with AsyncJobsClient(srv.base_url, retry=FAST) as jobs:
        job_id = (await jobs.create_job()).job_id
        with pytest.raises(RuntimeError, match="async with"):
            await jobs.output_writer(job_id).write("x")
        with anyio.CancelScope() as scope:
            async with jobs.output_writer(job_id, max_delay=60) as out:
                await out.write("before the cancel")
                scope.cancel()
                await anyio.sleep_forever()
        assert scope.cancelled_caught
        assert [chunk.data async for chunk in jobs.output(job_id)] == ["before the cancel"]


async def test_a_tracked_job_writes_its_output_before_it_completes(
    shared_server: Start, flavor: str
) -> None:
    """track()'s job appends with append_output() and an output_writer(); all of it is there
    when the job completes."""
    srv = shared_server()
    async with connect(flavor, srv.base_url) as jobs:
        if isinstance(jobs, SyncJobs):

            def work() -> str:
                with jobs.client.track(job_type="llm_agent") as job:
                    job.append_output("Thinking...", kind="log")
                    with job.output_writer(kind="token") as out:
                        for token in ("Hello", ", ", "world"):
                            out.write(token)
                return job.job_id

            job_id: str = await _in_thread(work)
        else:
            async with jobs.client.track(job_type="llm_agent") as tracked:
                await tracked.append_output("Thinking...", kind="log")
                async with tracked.output_writer(kind="token") as out:
                    for token in ("Hello", ", ", "world"):
                        await out.write(token)
            job_id = tracked.job_id
        done = await jobs.get_job(job_id)
        assert (done.status, done.output_size) == ("completed", 4)
        assert [(c.data, c.kind) for c in await read_all(jobs, job_id)] == [
            ("Thinking...", "log"),
            ("Hello", "token"),
            (", ", "token"),
            ("world", "token"),
        ]


@pytest.mark.parametrize("writer", [False, True], ids=["append_output", "output_writer"])
async def test_a_tracked_job_that_only_streams_output_hears_a_cancel(
    shared_server: Start, flavor: str, writer: bool
) -> None:
    """A worker that appends and never updates hears an ordinary cancel: its append raises
    JobCanceled (the chunk appended all the same), and so does its writer's next write once
    an append heard it; track() then fails the job as canceled."""
    srv = shared_server()

    def cancel(job_id: str) -> None:
        with JobsClient(srv.base_url) as user:
            user.cancel_job(job_id, "the user closed the tab")

    async with connect(flavor, srv.base_url) as jobs:
        written: list[int] = []
        if isinstance(jobs, SyncJobs):

            def work(client: JobsClient = jobs.client) -> str:
                with client.track(job_type="llm_agent") as job:
                    job.append_output("before", kind="log")
                    cancel(job.job_id)
                    if not writer:
                        job.append_output("heard", kind="log")
                    with job.output_writer(kind="token", max_delay=60) as out:
                        for token in range(100):
                            out.write(token)
                            if token % 10 == 9:
                                out.flush()
                            written.append(token)
                return job.job_id

            with pytest.raises(JobCanceled) as raised:
                await _in_thread(work)
        else:

            async def awork(client: AsyncJobsClient = jobs.client) -> str:
                async with client.track(job_type="llm_agent") as job:
                    await job.append_output("before", kind="log")
                    await _in_thread(cancel, job.job_id)
                    if not writer:
                        await job.append_output("heard", kind="log")
                    async with job.output_writer(kind="token", max_delay=60) as out:
                        for token in range(100):
                            await out.write(token)
                            if token % 10 == 9:
                                await out.flush()
                            written.append(token)
                return job.job_id

            with pytest.raises(JobCanceled) as raised:
                await awork()
        canceled = raised.value
        assert canceled.reason == "the user closed the tab"
        assert canceled.job.cancel_requested is True
        ended = await jobs.get_job(canceled.job_id)
        assert (ended.status, ended.error) == ("error", "canceled")
        data = [chunk.data for chunk in await read_all(jobs, canceled.job_id)]
        if writer:
            # The first flush heard it: its ten tokens are there, and it raised.
            assert (data, written) == (["before", *range(10)], list(range(9)))
        else:
            assert (data, written) == (["before", "heard"], [])


async def test_a_background_append_leaves_the_tracked_jobs_state_to_its_worker(
    shared_server: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer's timer thread hears the cancel; the job's state changes only when the
    worker's own thread hears it, so the timer never overwrites a newer state the worker
    kept meanwhile (its update's answer, with its progress)."""
    from jobcast_client import _writer

    srv = shared_server()
    sent = threading.Event()
    send_answered = _writer.Batch.sent

    def answered(batch: _writer.Batch, appended: OutputAppended) -> None:
        send_answered(batch, appended)
        sent.set()

    monkeypatch.setattr(_writer.Batch, "sent", answered)

    def work() -> tuple[Job, Job]:
        with JobsClient(srv.base_url) as client, client.track(job_type="llm_agent") as job:
            client.cancel_job(job.job_id, "stop")
            with job.output_writer(max_delay=0) as out:
                out.write("token")  # the timer thread appends it, and hears the cancel
                assert sent.wait(seconds(10))
                before = job.state
                with pytest.raises(JobCanceled):
                    job.update(progress=50)
                with pytest.raises(JobCanceled):
                    out.write("next")  # the writer's own news, heard on this thread
            return before, job.state

    before, after = await _in_thread(work)
    assert before.cancel_requested is False  # the timer thread left it alone
    assert (after.cancel_requested, after.cancel_reason, after.progress) == (True, "stop", 50)


async def test_plain_appends_report_a_cancel_and_go_on(shared_server: Start, flavor: str) -> None:
    """Only tracked jobs raise: a plain append answers the flag, and a plain writer goes on."""
    srv = shared_server()
    async with connect(flavor, srv.base_url) as jobs:
        job = await jobs.create_job(job_type="llm_agent")
        await jobs.cancel_job(job.job_id, "stop please")
        answer = await jobs.append_output(job.job_id, "still", kind="log")
        assert (answer.cancel_requested, answer.cancel_reason) == (True, "stop please")
        if isinstance(jobs, SyncJobs):

            def write() -> None:
                with jobs.client.output_writer(job.job_id) as out:
                    out.write("on")
                    out.flush()
                    out.write("and on")

            await _in_thread(write)
        else:
            async with jobs.client.output_writer(job.job_id) as aout:
                await aout.write("on")
                await aout.flush()
                await aout.write("and on")
        assert [c.data for c in await read_all(jobs, job.job_id)] == ["still", "on", "and on"]


# --- watch(output=True) ------------------------------------------------------------------


async def follow(
    jobs: SyncJobs | AsyncJobs, job_id: str
) -> AsyncGenerator[Job | list[OutputChunk], None]:
    async for update in jobs.watch(job_id, output=True):
        yield update


async def append(api: Any, job_id: str, *data: Any) -> None:
    """Append straight to the server (the tests' own HTTP client), one chunk per value."""
    chunks = [{"data": item} for item in data]
    response = await api.post(f"/api/jobs/{job_id}/output", json={"chunks": chunks})
    assert response.status_code == 200, response.text


def flatten(updates: Iterable[Job | list[OutputChunk]]) -> list[OutputChunk]:
    return [chunk for update in updates if isinstance(update, list) for chunk in update]


async def test_watch_with_output_yields_every_chunk_then_the_terminal_state(
    shared_server: Start, flavor: str
) -> None:
    """watch(output=True) yields the output the job had, then each append live, between the
    states; everything appended before the completion comes before the completed state."""
    srv = shared_server()
    async with connect(flavor, srv.base_url) as jobs, srv.client() as api:
        job_id = await api.create_job(jobType="llm_agent")
        await jobs.append_output(job_id, "early", kind="log")
        updates: list[Job | list[OutputChunk]] = []
        with anyio.fail_after(seconds(15)):
            async for update in jobs.watch(job_id, output=True):
                updates.append(update)
                got = flatten(updates)
                if isinstance(update, Job) and update.version == 1:
                    await api.update(job_id, status="processing", progress=10)
                elif isinstance(update, Job) and update.version == 2:
                    await jobs.append_output(job_id, chunks=["Hel", "lo"], kind="token")
                elif len(got) == 3:
                    await jobs.append_output(job_id, "!", kind="token")
                    await api.complete(job_id)
        states = [update for update in updates if isinstance(update, Job)]
        assert [(state.version, state.status) for state in states] == [
            (1, "queued"),
            (2, "processing"),
            (3, "completed"),
        ]
        assert updates[-1] == states[-1]
        chunks = flatten(updates)
        assert [(chunk.offset, chunk.data) for chunk in chunks] == [
            (0, "early"),
            (1, "Hel"),
            (2, "lo"),
            (3, "!"),
        ]
        assert updates[0] == [OutputChunk(0, "early", "log")], "output before the state it preceded"


async def test_watch_with_output_takes_an_append_larger_than_an_event_may_be(
    server: Start, flavor: str
) -> None:
    """One append of 2 MB (a server whose JOBS_MAX_BODY_BYTES allows it) reaches a live
    reader whole: the server sends it in events of 64 KiB, under the 1 MiB a client reads
    as one event (a reader following it live failed on it)."""
    srv = server(JOBS_MAX_BODY_BYTES=str(4 * 1024 * 1024))
    big = ["y" * 20_000 for _ in range(100)]
    async with connect(flavor, srv.base_url) as jobs, srv.client() as api:
        job_id = await api.create_job(jobType="llm_agent")
        updates: list[Job | list[OutputChunk]] = []
        with anyio.fail_after(seconds(20)):
            async for update in jobs.watch(job_id, output=True):
                updates.append(update)
                if isinstance(update, Job) and update.version == 1:
                    await jobs.append_output(job_id, chunks=big, kind="token")
                elif isinstance(update, list) and len(flatten(updates)) == len(big):
                    await api.complete(job_id)
        assert [chunk.data for chunk in flatten(updates)] == big
        assert sum(1 for update in updates if isinstance(update, list)) > 1, "in pieces"


async def test_watch_with_output_resumes_after_a_cut_without_repeats(
    shared_server: Start, flavor: str, proxy: Callable[[int], CutProxy]
) -> None:
    """A cut stream is reopened with Last-Event-ID <version>.<nextOffset>: the output goes on
    from the next chunk, none twice, none lost, and the watch ends at the terminal state."""
    srv = shared_server()
    tunnel = proxy(srv.port)
    async with connect(flavor, tunnel.url) as jobs, srv.client() as api:
        job_id = await api.create_job()
        await api.update(job_id, status="processing")
        await append(api, job_id, "a", "b")
        with anyio.fail_after(seconds(15)):
            async with contextlib.aclosing(follow(jobs, job_id)) as updates:
                seen = [await anext(updates)]
                while len(flatten(seen)) < 2 or not any(isinstance(u, Job) for u in seen):
                    seen.append(await anext(updates))
                tunnel.cut()
                await append(api, job_id, "c", "d")
                while len(flatten(seen)) < 4:
                    seen.append(await anext(updates))
                await append(api, job_id, "e")
                await api.complete(job_id)
                seen += [update async for update in updates]
        assert data_of(flatten(seen)) == ["a", "b", "c", "d", "e"]
        states = [update for update in seen if isinstance(update, Job)]
        assert [state.version for state in states] == [2, 3]
        assert len(tunnel.heads) == 2, "one reconnection"
        assert b"last-event-id: 2.2\r\n" in bytes(tunnel.heads[1]).lower()
        assert b"output=1" in bytes(tunnel.heads[0])


async def test_watch_with_output_skips_chunks_a_reconnection_sends_again(
    fake: Callable[..., FakeServer], flavor: str
) -> None:
    """Chunks sent again after a reconnection (offsets already yielded) are left out."""

    def stream(*events: tuple[str, Any], end: bool = False) -> Answer:
        body = b"retry: 10\n\n" + b"".join(
            b"event: %s\ndata: %s\n\n" % (kind.encode(), json.dumps(data).encode())
            for kind, data in events
        )
        return Answer(200, body, EVENT_STREAM, truncated=not end)

    def out(*offsets: int) -> tuple[str, Any]:
        chunks = [{"offset": o, "data": f"c{o}", "kind": "token"} for o in offsets]
        return ("output", {"jobId": "job_fake", "chunks": chunks})

    events = fake(
        in_order(
            stream(("job", job_data(1)), out(0, 1)),
            then=stream(
                out(1, 2), ("job", job_data(1)), ("job", job_data(2, "completed")), end=True
            ),
        )
    )
    async with connect(flavor, events.url) as jobs:
        with anyio.fail_after(seconds(10)):
            seen = [update async for update in follow(jobs, "job_fake")]
    assert [c.offset for c in flatten(seen)] == [0, 1, 2]
    assert [u.version for u in seen if isinstance(u, Job)] == [1, 2]
    assert [seen_request.headers.get("last-event-id") for seen_request in events.requests] == [
        None,
        "1.2",
    ]
    assert all("output=1" in seen_request.path for seen_request in events.requests)


async def test_an_output_event_that_is_not_one_raises(
    fake: Callable[..., FakeServer], flavor: str
) -> None:
    """An output event without a list of chunks is no stream of this server: ResponseError."""
    body = b'retry: 10\n\nevent: output\ndata: {"jobId": "job_fake"}\n\n'
    events = fake(in_order(then=Answer(200, body, EVENT_STREAM)))
    async with connect(flavor, events.url) as jobs:
        with anyio.fail_after(seconds(10)), pytest.raises(ResponseError, match="no chunks"):
            _ = [update async for update in follow(jobs, "job_fake")]


async def test_a_plain_watch_never_yields_output(shared_server: Start, flavor: str) -> None:
    """Without output=True a watch yields states only, and asks for no output."""
    srv = shared_server()
    async with connect(flavor, srv.base_url) as jobs:
        job_id = (await jobs.create_job()).job_id
        await jobs.append_output(job_id, "x")
        await jobs.complete_job(job_id)
        with anyio.fail_after(seconds(10)):
            seen = [update async for update in jobs.watch(job_id)]
        assert [type(update) for update in seen] == [Job]
        assert seen[0].output_size == 1


# --- what goes wrong ----------------------------------------------------------------------


def test_bad_arguments_raise_value_error_before_anything_is_sent() -> None:
    """Writer bounds, a negative offset, a negative `after`, and a chunk no JSON body can
    carry are refused at once."""
    with JobsClient("http://127.0.0.1:9", retry=FAST) as jobs:
        with pytest.raises(ValueError, match="max_chunks"):
            jobs.output_writer("job_1", max_chunks=0)
        with pytest.raises(ValueError, match="max_delay"):
            jobs.output_writer("job_1", max_delay=-1)
        with pytest.raises(ValueError, match="max_bytes must be more than 64"):
            jobs.output_writer("job_1", max_bytes=64)
        with pytest.raises(ValueError, match="expected_offset"):
            jobs.append_output("job_1", "x", expected_offset=-1)
        with pytest.raises(ValueError, match="after"):
            next(jobs.output("job_1", after=-1))
        writer = jobs.output_writer("job_1")
        assert repr(writer) == "<OutputWriter job_1 at None>"
        with pytest.raises(TypeError, match="not JSON serializable"):
            writer.write(object())
        with pytest.raises(ValueError, match="Out of range float"):
            writer.write(float("nan"))
        with pytest.raises(UnicodeEncodeError):  # a lone surrogate: no UTF-8 can carry it
            writer.write("half a pair: \ud800")
        writer.close()  # nothing kept: nothing sent


async def test_a_background_append_that_fails_is_raised_by_the_next_write(
    shared_server: Start, flavor: str
) -> None:
    """When the timer's append fails (the job ended meanwhile), the next write raises that
    error; the chunks stay, and the writer's end raises it again, then gives them up."""
    srv = shared_server()
    async with connect(flavor, srv.base_url) as jobs, srv.client() as api:
        job_id = (await jobs.create_job()).job_id
        if isinstance(jobs, SyncJobs):
            writer = jobs.client.output_writer(job_id, max_delay=0.2)
            writer.flush()  # nothing to append: nothing sent
            await api.complete(job_id)
            writer.write("refused")
            await anyio.sleep(seconds(1))
            with pytest.raises(InvalidTransition):
                writer.write("next")
            with pytest.raises(InvalidTransition):
                writer.close()
        else:

            async def block() -> None:
                async with jobs.client.output_writer(job_id, max_delay=0.2) as out:
                    await api.complete(job_id)
                    await out.write("refused")
                    await anyio.sleep(seconds(1))
                    with pytest.raises(InvalidTransition):
                        await out.write("next")

            with pytest.raises(InvalidTransition, match="ended"):
                await block()
        assert await read_all(jobs, job_id) == []


async def test_an_error_in_the_block_appends_the_rest_and_propagates(
    shared_server: Start, flavor: str
) -> None:
    """A block that raises still appends what its writer holds, and its own error goes on;
    when that append fails too, the block's error carries a note saying so."""
    srv = shared_server()
    async with connect(flavor, srv.base_url) as jobs, srv.client() as api:
        job_id = (await jobs.create_job()).job_id
        ended_id = (await jobs.create_job()).job_id

        async def work(target: str, then: Callable[[], Any] | None = None) -> None:
            if isinstance(jobs, SyncJobs):

                def block() -> None:
                    with jobs.client.output_writer(target, max_delay=60) as out:
                        out.write("last words")
                        raise KeyError("broke")

                await _in_thread(block)
            else:
                async with jobs.client.output_writer(target, max_delay=60) as out:
                    await out.write("last words")
                    raise KeyError("broke")

        with pytest.raises(KeyError, match="broke"):
            await work(job_id)
        assert data_of(await read_all(jobs, job_id)) == ["last words"]
        await api.complete(ended_id)
        with pytest.raises(KeyError, match="broke") as noted:
            await work(ended_id)
        assert any("could not be appended" in note for note in noted.value.__notes__)


async def test_a_writer_refused_where_nobody_appended_gives_up(
    fake: Callable[..., FakeServer], flavor: str
) -> None:
    """A writer moves past other writers' appends as often as they land; refused again at
    the offset it moved to, with no append there meanwhile, it raises OffsetMismatch."""
    crowded = problem(409, "offset-mismatch", "someone else was first", nextOffset="99")
    mismatch = Answer(
        409,
        json.dumps({**json.loads(crowded.body), "nextOffset": 99}).encode(),
        crowded.headers,
    )
    # Someone else's chunks at every offset the writer expected: never its own.
    others = Answer(
        200,
        json.dumps(
            {"jobId": "job_fake", "chunks": [{"offset": 0, "data": "theirs"}], "nextOffset": 1}
        ).encode(),
        {"Content-Type": "application/json"},
    )

    def script(seen: Seen) -> Answer:
        if seen.method == "POST":
            return mismatch
        return others if "/output" in seen.path else job_answer(1)

    answers = fake(script)
    async with connect(flavor, answers.url) as jobs:
        with pytest.raises(OffsetMismatch, match="someone else") as refused:
            await write_all(jobs, "job_fake", ["x"])
    assert refused.value.next_offset == 99
    assert [body["expectedOffset"] for body in posts(answers)] == [0, 99]


async def test_writers_on_one_job_take_turns_however_often_they_must(shared_server: Start) -> None:
    """Four writers of small batches on one job: every chunk of each lands, once, in its
    writer's order, however many times a batch moves past the others'."""
    srv = shared_server()
    async with connect("sync", srv.base_url) as jobs:
        job_id = (await jobs.create_job()).job_id

        def write(name: str) -> None:
            with (
                JobsClient(srv.base_url) as client,
                client.output_writer(job_id, max_chunks=5, max_delay=0) as out,
            ):
                for n in range(300):
                    out.write(f"{name}{n}")

        await asyncio.gather(*(_in_thread(write, name) for name in "abcd"))
        data = data_of(await read_all(jobs, job_id))
    assert len(data) == 1200
    for name in "abcd":
        assert [d for d in data if d.startswith(name)] == [f"{name}{n}" for n in range(300)]


async def test_answers_that_are_not_the_servers_raise_response_error(
    fake: Callable[..., FakeServer], flavor: str
) -> None:
    """An append's answer without offsets, a page without chunks or with a broken chunk, and
    an offset-mismatch without nextOffset raise ResponseError."""
    json_type = {"Content-Type": "application/json"}
    no_count = Answer(
        409,
        json.dumps(
            {"type": "tag:jobcast,2026:offset-mismatch", "status": 409, "detail": "no count"}
        ).encode(),
        {"Content-Type": "application/problem+json"},
    )
    answers = fake(
        in_order(
            Answer(200, b'{"jobId": "job_fake"}', json_type),
            Answer(200, b'{"jobId": "job_fake"}', json_type),
            Answer(200, b'{"chunks": [{"data": 1}]}', json_type),
            no_count,
        )
    )
    async with connect(flavor, answers.url) as jobs:
        with pytest.raises(ResponseError, match="not an append's answer"):
            await jobs.append_output("job_fake", "x")
        with pytest.raises(ResponseError, match=r"not a page of output \(chunks: missing\)"):
            await read_all(jobs, "job_fake")
        with pytest.raises(ResponseError, match=r"offset: missing"):
            await read_all(jobs, "job_fake")
        with pytest.raises(ResponseError, match="no nextOffset"):
            await jobs.append_output("job_fake", "x", expected_offset=0)


def event_stream(*frames: bytes) -> Answer:
    """An event stream that sends ``frames`` and ends."""
    return Answer(200, b"retry: 10\n\n" + b"".join(frames), EVENT_STREAM)


def output_event(*offsets: int) -> bytes:
    """An output event holding the chunks at ``offsets`` (each one's data its offset)."""
    chunks = [{"offset": o, "data": o} for o in offsets]
    return b"event: output\ndata: %s\n\n" % json.dumps({"chunks": chunks}).encode()


FINAL = b"event: job\ndata: %s\n\n" % json.dumps(job_data(1, "completed")).encode()


async def test_output_events_that_are_old_or_broken(
    fake: Callable[..., FakeServer], flavor: str
) -> None:
    """An output event holding only chunks already yielded yields nothing; one whose data is
    not JSON, or whose chunk is not one, raises ResponseError."""

    answers = fake(
        in_order(
            event_stream(output_event(0, 1), output_event(1), output_event(0), FINAL),
            event_stream(b"event: output\ndata: {nope\n\n"),
            event_stream(b'event: output\ndata: {"chunks": [{"offset": "x"}]}\n\n'),
        )
    )
    async with connect(flavor, answers.url) as jobs:
        seen = [update async for update in follow(jobs, "job_fake")]
        assert [[c.offset for c in u] if isinstance(u, list) else u.version for u in seen] == [
            [0, 1],
            1,
        ]
        with pytest.raises(ResponseError, match="not JSON"):
            _ = [update async for update in follow(jobs, "job_fake")]
        with pytest.raises(ResponseError, match="chunk is not one"):
            _ = [update async for update in follow(jobs, "job_fake")]


async def test_an_output_event_that_skips_chunks_is_read_again_from_the_gap(
    fake: Callable[..., FakeServer], flavor: str
) -> None:
    """Chunks missing from a stream: what came before them is yielded, and the stream is
    opened again after it (as jobcast.js does), so nothing is missing and nothing twice."""

    answers = fake(
        in_order(
            event_stream(output_event(0), output_event(1, 3, 4)),
            event_stream(output_event(2, 3), FINAL),
        )
    )
    async with connect(flavor, answers.url, retry=FAST) as jobs:
        seen = [update async for update in follow(jobs, "job_fake")]
    assert [[c.offset for c in u] if isinstance(u, list) else u.version for u in seen] == [
        [0],
        [1],
        [2, 3],
        1,
    ]
    assert answers.requests[1].headers["last-event-id"] == "0.2"
