"""The clients (``jobcast_client``), sync and async, against the real server.

Every test that takes ``flavor`` runs twice: once with :class:`JobsClient`
(called from worker threads) and once with :class:`AsyncJobsClient`, through
the same small adapter, so both clients pass the same checks. Faults come
from :mod:`tests.client.fakes`: a TCP proxy whose connections a test can cut,
and an HTTP server that answers from a script.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
import httpx2
import jobcast_client._core
import pytest
from jobcast_client import (
    AsyncJobsClient,
    AsyncTrackedJob,
    BackendUnavailable,
    BodyTooLarge,
    ConnectionFailed,
    Forbidden,
    IdempotencyConflict,
    InvalidJobData,
    InvalidTransition,
    Job,
    JobCanceled,
    JobcastError,
    JobGone,
    JobNotFound,
    JobsClient,
    MalformedJSON,
    MisdirectedRequest,
    RateLimited,
    ReadToken,
    ResponseError,
    RetryPolicy,
    ServerError,
    TooManyStreams,
    TrackedJob,
    Unauthenticated,
)

from tests.conftest import seconds
from tests.e2e.conftest import free_port

from .fakes import (
    EVENT_STREAM,
    FORWARD_THEN_DROP,
    Answer,
    CutProxy,
    FakeServer,
    in_order,
    job_answer,
    job_data,
    problem,
    sse,
)

if TYPE_CHECKING:
    from tests.e2e.conftest import RunningServer

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

Start = Callable[..., "RunningServer"]
FAST = RetryPolicy(retries=3, backoff=0.01, max_backoff=2)
KEY = "k" * 40


# --- one adapter over both clients -----------------------------------------------------


async def _in_thread(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return await anyio.to_thread.run_sync(functools.partial(function, *args, **kwargs))


class SyncTracked:
    """A sync ``TrackedJob`` whose ``update`` runs in a worker thread."""

    def __init__(self, tracked: TrackedJob) -> None:
        object.__setattr__(self, "tracked", tracked)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.tracked, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self.tracked, name, value)

    async def update(self, **fields: Any) -> Job:
        job: Job = await _in_thread(self.tracked.update, **fields)
        return job


class SyncJobs:
    """The sync client, driven from async tests through worker threads."""

    def __init__(self, client: JobsClient) -> None:
        self.client = client

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self.client, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            return await _in_thread(method, *args, **kwargs)

        return call

    async def all_jobs(self, **filters: Any) -> list[Job]:
        jobs: list[Job] = await _in_thread(lambda: list(self.client.list_jobs(**filters)))
        return jobs

    async def watch(self, job_id: str, **options: Any) -> AsyncIterator[Job]:
        states = self.client.watch(job_id, **options)
        try:
            while (job := await _in_thread(next, states, None)) is not None:
                yield job
        finally:
            states.close()

    @contextlib.asynccontextmanager
    async def track(self, *args: Any, **kwargs: Any) -> AsyncIterator[SyncTracked]:
        manager = self.client.track(*args, **kwargs)
        tracked = await _in_thread(manager.__enter__)
        try:
            yield SyncTracked(tracked)
        except BaseException as exc:
            if not await _in_thread(manager.__exit__, type(exc), exc, exc.__traceback__):
                raise
        else:
            await _in_thread(manager.__exit__, None, None, None)


class AsyncJobs:
    """The async client, as it is."""

    def __init__(self, client: AsyncJobsClient) -> None:
        self.client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    async def all_jobs(self, **filters: Any) -> list[Job]:
        return [job async for job in self.client.list_jobs(**filters)]


@pytest.fixture(params=["sync", "async"])
def flavor(request: pytest.FixtureRequest) -> str:
    flavor: str = request.param
    return flavor


@contextlib.asynccontextmanager
async def connect(flavor: str, url: str, **options: Any) -> AsyncIterator[Any]:
    """A client of ``flavor`` on ``url`` (fast retries unless ``retry`` is given)."""
    options.setdefault("retry", FAST)
    options.setdefault("timeout", seconds(10))
    if flavor == "async":
        async with AsyncJobsClient(url, **options) as client:
            yield AsyncJobs(client)
    else:
        with JobsClient(url, **options) as sync_client:
            yield SyncJobs(sync_client)


# --- the calls ------------------------------------------------------------------------


def test_a_base_url_that_is_not_http_is_refused_at_once() -> None:
    """Both clients refuse a URL they could never reach, before any request."""
    for client_class in (JobsClient, AsyncJobsClient):
        with pytest.raises(ValueError, match="http"):
            client_class("ftp://127.0.0.1")
        with pytest.raises(ValueError, match="URL"):
            client_class("http://[::1")


async def test_create_and_get_return_the_servers_job(shared_server: Start, flavor: str) -> None:
    """create_job returns the full queued Job, and get_job returns the same state."""
    srv = shared_server()
    async with connect(flavor, srv.base_url) as jobs:
        metadata = {"fileName": "contract.pdf", "fileSize": 1024000}
        job = await jobs.create_job(
            job_type="file_processing", message="Upload queued", metadata=metadata
        )
        assert isinstance(job, Job)
        assert (job.job_type, job.status, job.message, job.progress, job.version) == (
            "file_processing",
            "queued",
            "Upload queued",
            0,
            1,
        )
        assert job.metadata == metadata
        assert (job.owner, job.document_id, job.error) == (None, None, None)
        assert job.timestamp == job.updated_at == job.created_at
        assert job.created_at.tzinfo is not None
        assert await jobs.get_job(job.job_id) == job
        default = await jobs.create_job()
        assert (default.job_type, default.message, default.metadata) == ("generic", "", {})


async def test_create_with_an_owner_makes_a_job_that_an_owner_token_reads(
    server: Start, flavor: str
) -> None:
    """owner= is stored on the job; that owner's token reads it, and not another owner's job."""
    srv = server(JOBS_API_KEY=KEY)
    async with connect(flavor, srv.base_url, api_key=KEY) as jobs:
        mine = await jobs.create_job(owner="alice", message="hers")
        other = await jobs.create_job(owner="bob")
        assert mine.owner == "alice"
        minted = await jobs.mint_token(owner="alice")
    async with connect(flavor, srv.base_url, token=minted.token) as reader:
        assert (await reader.get_job(mine.job_id)).message == "hers"
        assert [job.job_id for job in await reader.all_jobs()] == [mine.job_id]
        with pytest.raises(Forbidden):
            await reader.get_job(other.job_id)


async def test_mint_token_reads_one_job_for_its_lifetime(shared_server: Start, flavor: str) -> None:
    """mint_token(job_id=, ttl=) answers a ReadToken that reads that job only, until expires_at."""
    srv = shared_server(JOBS_API_KEY=KEY)
    async with connect(flavor, srv.base_url, api_key=KEY) as jobs:
        job = await jobs.create_job()
        other = await jobs.create_job()
        before = datetime.now(UTC)
        minted = await jobs.mint_token(job_id=job.job_id, ttl=600)
        assert isinstance(minted, ReadToken)
        lifetime = minted.expires_at - before
        assert timedelta(seconds=595) <= lifetime <= timedelta(seconds=605)
        assert minted.token not in repr(minted)
        default = await jobs.mint_token(job_id=job.job_id)
        assert default.expires_at > minted.expires_at, "the server's default TTL is an hour"
    async with connect(flavor, srv.base_url, token=minted.token) as reader:
        assert (await reader.get_job(job.job_id)).job_id == job.job_id
        with pytest.raises(Forbidden):
            await reader.get_job(other.job_id)
        with pytest.raises(Forbidden):
            await reader.update_job_with_notification(job.job_id, progress=5)
        with pytest.raises(Forbidden):
            await reader.mint_token(job_id=job.job_id)


@pytest.mark.parametrize("job_id", ["", "  ", None, 123])
async def test_what_cannot_be_a_job_id_is_a_value_error(
    shared_server: Start, flavor: str, job_id: Any
) -> None:
    """A job call given no id (or not a string) raises ValueError saying what a job id is;
    nothing is sent (an empty id would have been a request for the list)."""
    srv = shared_server()
    async with connect(flavor, srv.base_url) as jobs:
        calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
            ("get_job", (), {}),
            ("update_job_with_notification", (), {"progress": 1}),
            ("complete_job", (), {}),
            ("delete_job", (), {}),
            ("append_output", ("x",), {}),
        ]
        for name, args, kwargs in calls:
            with pytest.raises(ValueError, match="job_id must be a job's id"):
                await getattr(jobs, name)(job_id, *args, **kwargs)


async def test_nan_and_infinities_are_refused_naming_the_field(
    shared_server: Start, flavor: str
) -> None:
    """A NaN or an infinity anywhere in a body is a ValueError naming where, before sending."""
    srv = shared_server()
    async with connect(flavor, srv.base_url) as jobs:
        job = await jobs.create_job()
        with pytest.raises(ValueError, match=r"^progress: NaN and infinities are not JSON"):
            await jobs.update_job_with_notification(job.job_id, progress=float("nan"))
        with pytest.raises(ValueError, match=r"^metadata\.scores\.1: NaN"):
            await jobs.create_job(metadata={"scores": [1.0, float("inf")]})
        assert (await jobs.get_job(job.job_id)).version == 1


async def test_mint_token_needs_exactly_one_scope(shared_server: Start, flavor: str) -> None:
    """mint_token with neither or both of job_id and owner is a ValueError; nothing is sent."""
    srv = shared_server()
    async with connect(flavor, srv.base_url) as jobs:
        with pytest.raises(ValueError, match="exactly one"):
            await jobs.mint_token()
        with pytest.raises(ValueError, match="exactly one"):
            await jobs.mint_token(job_id="job_1", owner="alice")
        with pytest.raises(InvalidJobData, match="ttl"):
            await jobs.mint_token(owner="alice", ttl=0)


async def test_update_complete_and_fail_change_the_job(shared_server: Start, flavor: str) -> None:
    """The three worker calls each return the changed job, as the server stored it."""
    srv = shared_server()
    async with connect(flavor, srv.base_url) as jobs, srv.client() as api:
        job_id = (await jobs.create_job(metadata={"a": 1})).job_id
        updated = await jobs.update_job_with_notification(
            job_id, status="processing", progress=45, message="Extracting...", metadata={"b": 2}
        )
        assert (updated.status, updated.progress, updated.message) == (
            "processing",
            45,
            "Extracting...",
        )
        assert updated.metadata == {"a": 1, "b": 2}
        done = await jobs.complete_job(job_id, "doc_123abc", "Document processed successfully")
        assert (done.status, done.progress, done.document_id, done.message) == (
            "completed",
            100,
            "doc_123abc",
            "Document processed successfully",
        )
        assert done.is_terminal
        assert done == Job.from_wire(await api.job(job_id))
        other = (await jobs.create_job()).job_id
        failed = await jobs.fail_job(other, "Invalid file format")
        assert (failed.status, failed.error, failed.message) == (
            "error",
            "Invalid file format",
            "Processing failed",
        )


async def test_list_jobs_goes_through_every_page_newest_first(
    server: Start, flavor: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """list_jobs follows nextCursor across pages, keeps the filters, and stops at limit."""
    monkeypatch.setattr(jobcast_client._core, "PAGE_SIZE", 2)
    srv = server()
    async with connect(flavor, srv.base_url) as jobs:
        made = [(await jobs.create_job(job_type="llm_agent")).job_id for _ in range(5)]
        other = (await jobs.create_job(job_type="generic")).job_id
        await jobs.update_job_with_notification(made[0], status="processing")
        assert [job.job_id for job in await jobs.all_jobs(job_type="llm_agent")] == made[::-1]
        assert [job.job_id for job in await jobs.all_jobs()] == [other, *made[::-1]]
        assert [job.job_id for job in await jobs.all_jobs(limit=3)] == [other, made[4], made[3]]
        processing = await jobs.all_jobs(status="processing")
        assert [job.job_id for job in processing] == [made[0]]
        with pytest.raises(ValueError, match="limit"):
            await jobs.all_jobs(limit=0)


async def test_fields_a_newer_server_adds_are_ignored(
    fake: Callable[..., FakeServer], flavor: str
) -> None:
    """A job with fields this client does not know parses; they stay out of == but are kept."""
    newer = {"priority": "high", "shard": 3}
    answers = fake(in_order(job_answer(4, extra=newer), job_answer(4)))
    async with connect(flavor, answers.url) as jobs:
        grown = await jobs.get_job("job_fake")
        plain = await jobs.get_job("job_fake")
    assert (grown.version, grown.status, grown.message) == (4, "processing", "v4")
    assert grown == plain
    assert dict(grown.extra) == newer
    assert grown.to_wire() == job_data(4, extra=newer)


# --- cancel and delete ----------------------------------------------------------------


async def test_cancel_sets_the_flag_once_and_every_write_carries_it(
    shared_server: Start, flavor: str
) -> None:
    """cancel_job flags the job (a new version); asking again changes nothing; the worker's
    plain calls return the flag without raising; a finished job cannot be canceled."""
    srv = shared_server()
    async with connect(flavor, srv.base_url) as jobs:
        job_id = (await jobs.create_job()).job_id
        await jobs.update_job_with_notification(job_id, status="processing", progress=10)
        asked = await jobs.cancel_job(job_id, "the user closed the tab")
        assert (asked.cancel_requested, asked.cancel_reason) == (True, "the user closed the tab")
        assert (asked.status, asked.progress, asked.version) == ("processing", 10, 3)
        assert await jobs.cancel_job(job_id, "another reason") == asked, "no new version"
        updated = await jobs.update_job_with_notification(job_id, progress=20)
        assert (updated.cancel_requested, updated.cancel_reason, updated.version) == (
            True,
            "the user closed the tab",
            4,
        )
        assert (await jobs.get_job(job_id)).cancel_requested
        failed = await jobs.fail_job(job_id, "canceled", "Stopped")
        assert (failed.status, failed.cancel_requested) == ("error", True)
        with pytest.raises(InvalidTransition, match="nothing to cancel"):
            await jobs.cancel_job(job_id)
        with pytest.raises(JobNotFound):
            await jobs.cancel_job("job_nope")
        untouched = await jobs.create_job()
        assert (untouched.cancel_requested, untouched.cancel_reason) == (False, None)
        done = await jobs.complete_job(untouched.job_id)
        assert not done.cancel_requested


async def test_a_forced_cancel_ends_the_job_now(shared_server: Start, flavor: str) -> None:
    """force=True ends the job as error "canceled", its message the reason or "Canceled"."""
    srv = shared_server()
    async with connect(flavor, srv.base_url) as jobs:
        explained = (await jobs.create_job()).job_id
        ended = await jobs.cancel_job(explained, "worker machine lost", force=True)
        assert (ended.status, ended.error, ended.message, ended.cancel_requested) == (
            "error",
            "canceled",
            "worker machine lost",
            True,
        )
        assert ended.is_terminal
        silent = (await jobs.create_job()).job_id
        await jobs.cancel_job(silent)  # asked first, then forced: the force still ends it
        forced = await jobs.cancel_job(silent, force=True)
        assert (forced.status, forced.error, forced.message) == ("error", "canceled", "Canceled")
        with pytest.raises(InvalidTransition):
            await jobs.cancel_job(silent, force=True)


async def test_delete_removes_a_job_in_any_state(shared_server: Start, flavor: str) -> None:
    """delete_job returns None; the job then reads as JobGone, a watcher of it gets JobGone,
    a second delete is JobGone, and an id that never existed is JobNotFound."""
    srv = shared_server()
    async with connect(flavor, srv.base_url) as jobs:
        running = (await jobs.create_job()).job_id
        await jobs.update_job_with_notification(running, status="processing")
        with anyio.fail_after(seconds(10)):
            async with contextlib.aclosing(jobs.watch(running)) as states:
                assert (await anext(states)).status == "processing"
                assert await jobs.delete_job(running) is None
                with pytest.raises(JobGone):
                    await anext(states)
        with pytest.raises(JobGone) as gone:
            await jobs.get_job(running)
        assert gone.value.job_id == running
        with pytest.raises(JobGone):
            await jobs.delete_job(running)
        finished = (await jobs.create_job()).job_id
        await jobs.complete_job(finished)
        await jobs.delete_job(finished)
        with pytest.raises(JobGone):
            await jobs.get_job(finished)
        with pytest.raises(JobNotFound):
            await jobs.delete_job("job_nope")


# --- watch ----------------------------------------------------------------------------


async def test_watch_yields_every_state_and_ends_at_the_terminal_one(
    shared_server: Start, flavor: str
) -> None:
    """watch yields the current state, then each change live, and stops after completion."""
    srv = shared_server()
    async with connect(flavor, srv.base_url) as jobs, srv.client() as api:
        job_id = await api.create_job(message="Upload queued")
        seen: list[Job] = []
        with anyio.fail_after(seconds(15)):
            async for job in jobs.watch(job_id):
                seen.append(job)
                if job.version == 1:
                    await api.update(job_id, status="processing", progress=50)
                elif job.version == 2:
                    await api.complete(job_id, documentId="doc_1")
        assert [(job.version, job.status, job.progress) for job in seen] == [
            (1, "queued", 0),
            (2, "processing", 50),
            (3, "completed", 100),
        ]
        assert seen[-1].document_id == "doc_1"


async def test_watch_of_a_failed_job_yields_its_final_state_once(
    shared_server: Start, flavor: str
) -> None:
    """Watching a job that already failed yields that one state and ends."""
    srv = shared_server()
    async with connect(flavor, srv.base_url) as jobs, srv.client() as api:
        job_id = await api.create_job()
        await api.fail(job_id, "Invalid file format")
        with anyio.fail_after(seconds(10)):
            seen = [job async for job in jobs.watch(job_id)]
        assert [(job.status, job.error) for job in seen] == [("error", "Invalid file format")]


async def test_watch_from_the_terminal_version_ends_on_the_204(
    shared_server: Start, flavor: str
) -> None:
    """watch(since=terminal version) gets 204 No Content and ends at once, yielding nothing."""
    srv = shared_server()
    async with connect(flavor, srv.base_url) as jobs, srv.client() as api:
        job_id = await api.create_job()
        version = (await api.complete(job_id))["version"]
        with anyio.fail_after(seconds(10)):
            assert [job async for job in jobs.watch(job_id, since=version)] == []
            later = [job async for job in jobs.watch(job_id, since=version - 1)]
        assert [job.version for job in later] == [version]


async def test_watch_from_beyond_the_job_goes_on_from_its_current_state(
    shared_server: Start, flavor: str
) -> None:
    """watch(since=N) with N past the job's version (a mistaken cursor, a backend restored
    from a backup) yields the job's current state and every change after it, and ends
    with the job, where it waited for a version the job never reached."""
    srv = shared_server()
    async with connect(flavor, srv.base_url) as jobs, srv.client() as api:
        job_id = await api.create_job()
        await api.update(job_id, status="processing", progress=10)
        seen: list[Job] = []
        with anyio.fail_after(seconds(10)):
            async for job in jobs.watch(job_id, since=50):
                seen.append(job)
                if len(seen) == 1:
                    await api.complete(job_id)
        assert [(job.version, job.status) for job in seen] == [(2, "processing"), (3, "completed")]


async def test_watch_resumes_after_a_dropped_connection_without_repeats(
    shared_server: Start, flavor: str, proxy: Callable[[int], CutProxy]
) -> None:
    """A cut stream is reopened with Last-Event-ID: the states go on, none twice, none lost."""
    srv = shared_server()
    tunnel = proxy(srv.port)
    async with connect(flavor, tunnel.url) as jobs, srv.client() as api:
        job_id = await api.create_job()
        await api.update(job_id, status="processing", progress=10)
        with anyio.fail_after(seconds(15)):
            async with contextlib.aclosing(jobs.watch(job_id)) as states:
                first = await anext(states)
                tunnel.cut()
                await api.update(job_id, progress=60, message="after the cut")
                second = await anext(states)
                await api.complete(job_id)
                rest = [job async for job in states]
        versions = [job.version for job in (first, second, *rest)]
        assert versions == [2, 3, 4]
        assert (second.progress, second.message) == (60, "after the cut")
        assert rest[-1].status == "completed"
        assert len(tunnel.heads) == 2, "one reconnection"
        assert b"last-event-id: 2\r\n" in bytes(tunnel.heads[1]).lower()
        assert b"last-event-id" not in bytes(tunnel.heads[0]).lower()


async def test_watch_never_yields_a_version_twice_even_if_the_server_repeats(
    fake: Callable[..., FakeServer], flavor: str
) -> None:
    """States a reconnection sends again (a server ignoring Last-Event-ID) are skipped."""
    events = fake(
        in_order(
            Answer(200, sse((1, "queued"), (2, "processing")), EVENT_STREAM, truncated=True),
            then=Answer(200, sse((1, "queued"), (2, "processing"), (3, "completed")), EVENT_STREAM),
        )
    )
    async with connect(flavor, events.url) as jobs:
        with anyio.fail_after(seconds(10)):
            seen = [job.version async for job in jobs.watch("job_fake")]
    assert seen == [1, 2, 3]
    assert [request.headers.get("last-event-id") for request in events.requests] == [None, "2"]
    assert events.requests[0].headers["accept"] == "text/event-stream"


async def test_watch_yields_an_end_at_a_version_it_has_seen(
    fake: Callable[..., FakeServer], flavor: str
) -> None:
    """A Redis rolled back to its last snapshot issues versions again: the job, seen at 3,
    ends at 2. The watch, which has yielded no end, yields that one and stops (it dropped
    it as a repeat, and reconnected for ever)."""
    events = fake(
        in_order(
            Answer(200, sse((1, "queued"), (3, "processing")), EVENT_STREAM, truncated=True),
            then=Answer(200, sse((2, "completed")), EVENT_STREAM),
        )
    )
    async with connect(flavor, events.url) as jobs:
        with anyio.fail_after(seconds(10)):
            seen = [(job.version, job.status) async for job in jobs.watch("job_fake")]
    assert seen == [(1, "queued"), (3, "processing"), (2, "completed")]


async def test_watch_reads_an_end_the_server_says_it_has_but_it_never_yielded(
    fake: Callable[..., FakeServer], flavor: str
) -> None:
    """A Redis rolled back ends the job at version 3, which the watch yielded as processing:
    its reconnection (Last-Event-ID: 3) is told 204, and the watch reads the job and yields
    its end, rather than end without it."""
    events = fake(
        in_order(
            Answer(200, sse((1, "queued"), (3, "processing")), EVENT_STREAM, truncated=True),
            Answer(204, b"", {}),
            then=job_answer(3, "completed"),
        )
    )
    async with connect(flavor, events.url) as jobs:
        with anyio.fail_after(seconds(10)):
            seen = [(job.version, job.status) async for job in jobs.watch("job_fake")]
    assert seen == [(1, "queued"), (3, "processing"), (3, "completed")]


async def test_watch_told_204_for_an_end_it_never_yielded_of_a_job_now_gone_raises_gone(
    fake: Callable[..., FakeServer], flavor: str
) -> None:
    """The end it reads after the 204 is gone too (cleaned up meanwhile): JobGone, as a
    watched job removed says, not JobNotFound."""
    events = fake(
        in_order(
            Answer(200, sse((3, "processing")), EVENT_STREAM, truncated=True),
            Answer(204, b"", {}),
            then=problem(404, "job-not-found", "no job with id 'job_fake'"),
        )
    )
    async with connect(flavor, events.url) as jobs:
        with anyio.fail_after(seconds(10)), pytest.raises(JobGone):
            _ = [job async for job in jobs.watch("job_fake")]


async def test_watch_from_since_reads_an_end_at_the_version_the_server_sent_it(
    fake: Callable[..., FakeServer], flavor: str
) -> None:
    """watch(since=3): the server sends version 3, processing (the caller's version is the
    server's word now), then a Redis rolled back ends the job at 3: the 204 is for an end
    the watch never yielded, and it reads it."""
    events = fake(
        in_order(
            Answer(200, sse((3, "processing")), EVENT_STREAM, truncated=True),
            Answer(204, b"", {}),
            then=job_answer(3, "completed"),
        )
    )
    async with connect(flavor, events.url) as jobs:
        with anyio.fail_after(seconds(10)):
            seen = [(job.version, job.status) async for job in jobs.watch("job_fake", since=3)]
    assert seen == [(3, "completed")]


async def test_watch_ignores_synced_reset_and_events_it_does_not_know(
    fake: Callable[..., FakeServer], flavor: str
) -> None:
    """synced, reset (with its empty id), output and unknown events yield nothing, end nothing,
    and the reconnection still resumes from the last version yielded."""
    noise = (
        b"id: 2\nevent: synced\ndata: {}\n\n"
        b"id: \nevent: reset\ndata: {}\n\n"
        b'id: 2.1\nevent: output\ndata: {"jobId": "job_fake", "chunks": []}\n\n'
        b"event: something-new\ndata: [1, 2]\n\n"
        b": ping\n\n"
    )
    events = fake(
        in_order(
            Answer(200, sse((1, "queued"), (2, "processing"), extra=noise), EVENT_STREAM),
            then=Answer(200, sse((3, "completed")), EVENT_STREAM),
        )
    )
    async with connect(flavor, events.url) as jobs:
        with anyio.fail_after(seconds(10)):
            seen = [job.version async for job in jobs.watch("job_fake")]
    assert seen == [1, 2, 3]
    assert [request.headers.get("last-event-id") for request in events.requests] == [None, "2"]


async def test_watch_of_an_answer_that_is_not_a_stream_raises_at_once(
    fake: Callable[..., FakeServer], flavor: str
) -> None:
    """A 200 that is not text/event-stream (a proxy's page) raises ResponseError, not retried."""
    page = Answer(200, b"<html>captive portal</html>", {"Content-Type": "text/html"})
    events = fake(in_order(then=page))
    async with connect(flavor, events.url) as jobs:
        with anyio.fail_after(seconds(10)), pytest.raises(ResponseError, match="text/html"):
            _ = [job async for job in jobs.watch("job_fake")]
    assert len(events.requests) == 1


async def test_watch_gives_up_after_the_retries_when_the_stream_keeps_dropping(
    fake: Callable[..., FakeServer], flavor: str
) -> None:
    """A stream that drops again and again without news ends in ConnectionFailed."""
    events = fake(in_order(then=Answer(200, sse(), EVENT_STREAM)))
    async with connect(flavor, events.url, retry=RetryPolicy(retries=2, backoff=0.01)) as jobs:
        with anyio.fail_after(seconds(10)), pytest.raises(ConnectionFailed, match="3 attempt"):
            _ = [job async for job in jobs.watch("job_fake")]
    assert len(events.requests) == 3


async def test_watch_reconnects_through_an_outage_longer_than_its_retries(
    fake: Callable[..., FakeServer], flavor: str
) -> None:
    """A server restarting (503s, then refused connections) for longer than the retries
    last: a watch reconnects for reconnect_for seconds, and resumes once it is back. A
    request gives up after its retries."""
    unavailable = problem(503, "backend-unavailable", "restarting", **{"Retry-After": "0"})
    events = fake(
        in_order(
            Answer(200, sse((1, "processing")), EVENT_STREAM, truncated=True),
            *[unavailable] * 6,  # twice the retries
            then=Answer(200, sse((2, "completed")), EVENT_STREAM),
        )
    )
    policy = RetryPolicy(retries=3, backoff=0.01, max_backoff=0.05, reconnect_for=30)
    async with connect(flavor, events.url, retry=policy) as jobs:
        with anyio.fail_after(seconds(10)):
            seen = [job.version async for job in jobs.watch("job_fake")]
        assert seen == [1, 2]
        assert len(events.requests) == 8
        events.script = in_order(then=unavailable)
        with pytest.raises(BackendUnavailable):
            await jobs.get_job("job_fake")
        assert len(events.requests) == 8 + 4


async def test_watch_keeps_going_while_each_reconnection_is_served(
    fake: Callable[..., FakeServer], flavor: str
) -> None:
    """A quiet job behind a proxy that ends every stream early: each reconnection gets its
    snapshot (`synced`), which is news enough, so the watch does not give up."""
    synced = b"id: 1\nevent: synced\ndata: {}\n\n"
    served = Answer(200, sse(extra=synced), EVENT_STREAM)
    events = fake(
        in_order(
            Answer(200, sse((1, "queued"), extra=synced), EVENT_STREAM),
            *[served] * 4,  # more drops than the retries
            then=Answer(200, sse((2, "completed")), EVENT_STREAM),
        )
    )
    async with connect(flavor, events.url, retry=RetryPolicy(retries=2, backoff=0.01)) as jobs:
        with anyio.fail_after(seconds(10)):
            seen = [job.version async for job in jobs.watch("job_fake")]
    assert seen == [1, 2]
    assert len(events.requests) == 6


async def test_watch_raises_for_an_unknown_or_removed_job(server: Start, flavor: str) -> None:
    """watch raises JobNotFound for an id that never existed, JobGone once it is cleaned up."""
    srv = server(JOBS_TERMINAL_TTL="0")
    async with connect(flavor, srv.base_url) as jobs, srv.client() as api:
        with pytest.raises(JobNotFound):
            _ = [job async for job in jobs.watch("job_nope")]
        job_id = await api.create_job()
        await api.complete(job_id)
        await wait_until_gone(jobs, job_id)
        with pytest.raises(JobGone):
            _ = [job async for job in jobs.watch(job_id)]


async def test_watch_raises_job_gone_on_a_removed_event(
    fake: Callable[..., FakeServer], flavor: str
) -> None:
    """A removed event on the stream (the job was cleaned up while watched) raises JobGone."""
    removed = b'id: 0\nevent: removed\ndata: {"jobId": "job_fake"}\n\n'
    events = fake(in_order(then=Answer(200, sse((1, "queued"), extra=removed), EVENT_STREAM)))
    seen: list[int] = []

    async def follow(jobs: Any) -> None:
        async for job in jobs.watch("job_fake"):
            seen.append(job.version)

    async with connect(flavor, events.url) as jobs:
        with anyio.fail_after(seconds(10)), pytest.raises(JobGone) as gone:
            await follow(jobs)
    assert seen == [1]
    assert gone.value.job_id == "job_fake"


async def wait_until_gone(jobs: Any, job_id: str) -> None:
    with anyio.fail_after(seconds(10)):
        while True:
            try:
                await jobs.get_job(job_id)
            except JobGone:
                return
            await anyio.sleep(0.02)


# --- errors ---------------------------------------------------------------------------


async def test_server_errors_raise_the_matching_exceptions(server: Start, flavor: str) -> None:
    """404, 409, 410 and 422 raise JobNotFound, InvalidTransition, JobGone, InvalidJobData."""
    srv = server()
    async with connect(flavor, srv.base_url) as jobs:
        with pytest.raises(JobNotFound) as not_found:
            await jobs.get_job("job_nope")
        assert not_found.value.job_id == "job_nope"
        job_id = (await jobs.create_job()).job_id
        with pytest.raises(InvalidJobData) as invalid:
            await jobs.update_job_with_notification(job_id, progress=150)
        assert str(invalid.value) == "progress: must be at most 100"
        assert [(error.field, error.message) for error in invalid.value.errors] == [
            ("progress", "must be at most 100")
        ]
        await jobs.complete_job(job_id)
        with pytest.raises(InvalidTransition, match="completed and can no longer change"):
            await jobs.fail_job(job_id, "too late")
    short = server(JOBS_TERMINAL_TTL="0")
    async with connect(flavor, short.base_url) as jobs:
        job_id = (await jobs.create_job()).job_id
        await jobs.complete_job(job_id)
        await wait_until_gone(jobs, job_id)
        with pytest.raises(JobGone) as gone:
            await jobs.update_job_with_notification(job_id, progress=1)
        assert gone.value.job_id == job_id


async def test_each_exception_says_what_the_server_said(shared_server: Start, flavor: str) -> None:
    """str() of every problem-mapped exception is the server's detail, field errors included."""
    srv = shared_server(JOBS_API_KEY=KEY)
    deep: dict[str, Any] = {}
    for _ in range(40):
        deep = {"a": deep}
    refused_change = {"progress": 150, "metadata": deep}
    async with srv.client(headers={"Authorization": f"Bearer {KEY}"}) as http, srv.client() as bare:
        job_id = await http.create_job()
        said = {
            JobNotFound: await http.get("/api/jobs/job_nope"),
            InvalidJobData: await http.patch(f"/api/jobs/{job_id}", json=refused_change),
            Unauthenticated: await bare.get(f"/api/jobs/{job_id}"),
        }
        await http.complete(job_id)
        said[InvalidTransition] = await http.post(f"/api/jobs/{job_id}/fail", json={"error": "x"})
    raised: dict[type[JobcastError], JobcastError] = {}
    async with (
        connect(flavor, srv.base_url, api_key=KEY) as jobs,
        connect(flavor, srv.base_url) as anonymous,
    ):
        calls: dict[type[JobcastError], Callable[[], Awaitable[Any]]] = {
            JobNotFound: lambda: jobs.get_job("job_nope"),
            InvalidJobData: lambda: jobs.update_job_with_notification(job_id, **refused_change),
            Unauthenticated: lambda: anonymous.get_job(job_id),
            InvalidTransition: lambda: jobs.fail_job(job_id, "x"),
        }
        for kind, call in calls.items():
            with pytest.raises(kind) as caught:
                await call()
            raised[kind] = caught.value
    assert {kind: str(exc) for kind, exc in raised.items()} == {
        kind: response.json()["detail"] for kind, response in said.items()
    }
    invalid = raised[InvalidJobData]
    assert isinstance(invalid, InvalidJobData)
    assert str(invalid) == "progress: must be at most 100 (and 1 more)"
    fields = [{"field": error.field, "message": error.message} for error in invalid.errors]
    assert fields == said[InvalidJobData].json()["errors"]
    assert [error.field for error in invalid.errors] == ["progress", "metadata"]
    unauthenticated = raised[Unauthenticated]
    assert isinstance(unauthenticated, Unauthenticated)
    assert not unauthenticated.presented


async def test_other_answers_raise_client_exceptions_with_the_problem(
    fake: Callable[..., FakeServer], flavor: str
) -> None:
    """401, 403, 400, 413, 422 (idempotency), 500, 418 and non-job bodies map to clear errors."""
    answers = fake(
        in_order(
            problem(401, "unauthenticated", "give an API key"),
            problem(403, "forbidden", "not yours"),
            problem(400, "malformed-json", "the body is not valid JSON"),
            problem(413, None, "the request body is larger than this server accepts"),
            problem(422, "idempotency-conflict", "key reused with another body"),
            problem(500, None, "the server hit an unexpected error"),
            Answer(418, b"I'm a teapot", {"Content-Type": "text/plain"}),
            Answer(200, b'{"hello": "world"}', {"Content-Type": "application/json"}),
            Answer(200, b"<html></html>", {"Content-Type": "text/html"}),
            problem(404, None, "nothing at /api/jobs/x"),
        )
    )
    async with connect(flavor, answers.url, api_key="secret") as jobs:
        with pytest.raises(Unauthenticated, match="give an API key") as unauthenticated:
            await jobs.get_job("job_1")
        assert unauthenticated.value.presented
        with pytest.raises(Forbidden, match="not yours"):
            await jobs.get_job("job_1")
        with pytest.raises(MalformedJSON, match="not valid JSON"):
            await jobs.update_job_with_notification("job_1", progress=1)
        with pytest.raises(BodyTooLarge, match="larger than") as too_large:
            await jobs.update_job_with_notification("job_1", message="x")
        assert isinstance(too_large.value, InvalidJobData)
        assert too_large.value.errors == ()
        with pytest.raises(IdempotencyConflict, match="another body"):
            await jobs.create_job()
        with pytest.raises(ServerError, match="unexpected error") as server_error:
            await jobs.get_job("job_1")
        assert server_error.value.status_code == 500
        assert server_error.value.problem is not None
        assert server_error.value.problem["detail"] == "the server hit an unexpected error"
        with pytest.raises(ResponseError, match="418") as teapot:
            await jobs.get_job("job_1")
        assert (teapot.value.status_code, teapot.value.problem) == (418, None)
        with pytest.raises(ResponseError, match=r"not a Job \(jobId: missing\)"):
            await jobs.get_job("job_1")
        with pytest.raises(ResponseError, match="not JSON"):
            await jobs.get_job("job_1")
        with pytest.raises(ResponseError, match="nothing at") as no_route:
            await jobs.get_job("job_1")
        assert not isinstance(no_route.value, JobNotFound)


async def test_api_key_and_read_token_are_sent_as_bearer(
    fake: Callable[..., FakeServer], shared_server: Start, flavor: str
) -> None:
    """api_key goes with writes and token with reads, each as Authorization: Bearer."""
    srv = shared_server()
    recorder = fake(in_order(), upstream=srv.base_url)
    async with connect(flavor, recorder.url, api_key="the-key", token="the-token") as jobs:
        job = await jobs.create_job()
        await jobs.update_job_with_notification(job.job_id, progress=5)
        await jobs.get_job(job.job_id)
        await jobs.mint_token(job_id=job.job_id)
    assert [(r.method, r.headers.get("authorization")) for r in recorder.requests] == [
        ("POST", "Bearer the-key"),
        ("GET", "Bearer the-token"),
        ("PATCH", "Bearer the-key"),
        ("GET", "Bearer the-token"),
        ("POST", "Bearer the-key"),
    ]
    assert recorder.requests[0].headers["user-agent"].startswith("jobcast-client/")
    async with connect(flavor, recorder.url, token="only-token") as jobs:
        await jobs.update_job_with_notification(job.job_id, progress=6)
    assert recorder.requests[-1].headers.get("authorization") == "Bearer only-token"


# --- retries --------------------------------------------------------------------------


async def test_a_503_is_retried_after_retry_after_with_the_same_idempotency_key(
    fake: Callable[..., FakeServer], server: Start, flavor: str
) -> None:
    """A create answered 503 waits Retry-After, resends the same key, and makes one job."""
    srv = server()
    flaky = fake(
        in_order(problem(503, "backend-unavailable", "down", **{"Retry-After": "1"})),
        upstream=srv.base_url,
    )
    async with connect(flavor, flaky.url) as jobs, srv.client() as api:
        started = time.monotonic()
        job = await jobs.create_job(message="once", owner="alice")
        elapsed = time.monotonic() - started
        posts = [request for request in flaky.requests if request.method == "POST"]
        assert len(posts) == 2
        keys = {request.headers["idempotency-key"] for request in posts}
        assert len(keys) == 1
        assert "" not in keys
        assert {json.loads(request.body)["owner"] for request in posts} == {"alice"}
        assert elapsed >= 1.0, "waited for Retry-After, not just the 10 ms backoff"
        listed = (await api.get("/api/jobs")).json()["jobs"]
        assert [item["jobId"] for item in listed] == [job.job_id]


async def test_a_create_whose_answer_was_lost_makes_one_job(
    fake: Callable[..., FakeServer], server: Start, flavor: str
) -> None:
    """When the connection drops after the server made the job, the retry gets that same job."""
    srv = server()
    lossy = fake(in_order(FORWARD_THEN_DROP), upstream=srv.base_url)
    async with connect(flavor, lossy.url) as jobs, srv.client() as api:
        job = await jobs.create_job(job_type="llm_agent")
        listed = (await api.get("/api/jobs")).json()["jobs"]
        assert [item["jobId"] for item in listed] == [job.job_id]
        first, second = (r for r in lossy.requests if r.method == "POST")
        assert first.headers["idempotency-key"] == second.headers["idempotency-key"]
        another = await jobs.create_job(job_type="llm_agent")
        posts = [r.headers["idempotency-key"] for r in lossy.requests if r.method == "POST"]
        assert len(set(posts)) == 2, "a new call gets a new key"
        assert another.job_id != job.job_id


async def test_a_given_idempotency_key_is_sent_and_makes_one_job(
    shared_server: Start, flavor: str
) -> None:
    """create_job(idempotency_key=) twice with the same body returns the same job."""
    srv = shared_server()
    async with connect(flavor, srv.base_url) as jobs:
        first = await jobs.create_job(message="once", idempotency_key="upload-42")
        again = await jobs.create_job(message="once", idempotency_key="upload-42")
        assert again.job_id == first.job_id
        with pytest.raises(IdempotencyConflict):
            await jobs.create_job(message="other", idempotency_key="upload-42")


async def test_a_completion_whose_answer_was_lost_is_not_a_conflict(
    fake: Callable[..., FakeServer], shared_server: Start, flavor: str
) -> None:
    """complete_job retried after its first attempt landed returns the completed job, no 409."""
    srv = shared_server()
    lossy = fake(in_order(FORWARD_THEN_DROP), upstream=srv.base_url)
    async with connect(flavor, lossy.url) as jobs, srv.client() as api:
        job_id = await api.create_job()
        done = await jobs.complete_job(job_id, "doc_9")
        assert (done.status, done.document_id, done.version) == ("completed", "doc_9", 2)
        assert [r.method for r in lossy.requests] == ["POST", "POST", "GET"]
        other = await api.create_job()
        await api.fail(other, "someone else failed it")
        with pytest.raises(InvalidTransition):
            await jobs.complete_job(other)


@pytest.mark.parametrize(
    ("error", "stored"), [("disk full", "disk full"), ("", "Processing failed")]
)
async def test_a_failure_whose_answer_was_lost_is_not_a_conflict(
    fake: Callable[..., FakeServer], shared_server: Start, flavor: str, error: str, stored: str
) -> None:
    """fail_job retried after its first attempt landed returns the failed job, no 409 (a
    blank error landed as the default)."""
    srv = shared_server()
    lossy = fake(in_order(FORWARD_THEN_DROP), upstream=srv.base_url)
    async with connect(flavor, lossy.url) as jobs, srv.client() as api:
        job_id = await api.create_job()
        failed = await jobs.fail_job(job_id, error)
        assert (failed.status, failed.error) == ("error", stored)
        assert [r.method for r in lossy.requests] == ["POST", "POST", "GET"]


async def test_an_update_that_ended_the_job_with_its_answer_lost_is_not_a_conflict(
    fake: Callable[..., FakeServer], shared_server: Start, flavor: str
) -> None:
    """A PATCH that completes the job, retried after its first attempt landed, returns the
    job it made (read back), not the retry's 409; a job another writer ended otherwise is
    still a conflict."""
    srv = shared_server()
    lossy = fake(in_order(FORWARD_THEN_DROP), upstream=srv.base_url)
    async with connect(flavor, lossy.url) as jobs, srv.client() as api:
        job_id = await api.create_job()
        done = await jobs.update_job_with_notification(
            job_id, status="completed", progress=90, message="All done", metadata={"pages": 3}
        )
        assert (done.status, done.message, done.metadata["pages"]) == ("completed", "All done", 3)
        assert done.progress == 100  # completing sets it, whatever the update said
        assert [r.method for r in lossy.requests] == ["PATCH", "PATCH", "GET"]
        other = await api.create_job()
        await api.fail(other, "someone else failed it")
        lossy.script = in_order(FORWARD_THEN_DROP)
        with pytest.raises(InvalidTransition):
            await jobs.update_job_with_notification(other, status="completed")


async def test_a_delete_refused_429_first_still_says_the_job_was_gone(
    fake: Callable[..., FakeServer], shared_server: Start, flavor: str
) -> None:
    """A 429 never reached the server: the 410 after it is the job's own (someone else
    deleted it), not an earlier attempt's deletion whose answer was lost."""
    srv = shared_server()
    busy = problem(429, "rate-limited", "too often", **{"Retry-After": "0"})
    lossy = fake(in_order(busy), upstream=srv.base_url)
    async with connect(flavor, lossy.url) as jobs, srv.client() as api:
        job_id = await api.create_job()
        assert (await api.delete(f"/api/jobs/{job_id}")).status_code == 204
        with pytest.raises(JobGone):
            await jobs.delete_job(job_id)
        assert [r.method for r in lossy.requests] == ["DELETE", "DELETE"]


async def test_a_cancel_whose_answer_was_lost_lands_once(
    fake: Callable[..., FakeServer], shared_server: Start, flavor: str
) -> None:
    """A cancel retried after its first attempt landed returns the flagged job (one new
    version); a forced one is recognised on the retry's 409, as a finish is."""
    srv = shared_server()
    lossy = fake(in_order(FORWARD_THEN_DROP), upstream=srv.base_url)
    async with connect(flavor, lossy.url) as jobs, srv.client() as api:
        asked_id = await api.create_job()
        asked = await jobs.cancel_job(asked_id, "not needed")
        assert (asked.cancel_requested, asked.cancel_reason, asked.version) == (
            True,
            "not needed",
            2,
        )
        assert [r.method for r in lossy.requests] == ["POST", "POST"]
        lossy.script = in_order(FORWARD_THEN_DROP)
        forced_id = await api.create_job()
        forced = await jobs.cancel_job(forced_id, force=True)
        assert (forced.status, forced.error, forced.version) == ("error", "canceled", 2)
        assert [r.method for r in lossy.requests[2:]] == ["POST", "POST", "GET"]


async def test_a_forced_cancel_refused_on_its_retry_is_a_conflict_if_it_did_not_land(
    fake: Callable[..., FakeServer], shared_server: Start, flavor: str
) -> None:
    """A retried forced cancel whose 409 comes from a job someone else ended still raises."""
    srv = shared_server()
    cut = Answer(200, b'{"jobId": ', {"Content-Type": "application/json"}, truncated=True)
    flaky = fake(in_order(cut), upstream=srv.base_url)
    async with connect(flavor, flaky.url) as jobs, srv.client() as api:
        job_id = await api.create_job()
        await api.fail(job_id, "disk full")
        with pytest.raises(InvalidTransition):
            await jobs.cancel_job(job_id, force=True)
        assert [r.method for r in flaky.requests] == ["POST", "POST", "GET"]
        assert (await api.job(job_id))["error"] == "disk full"


async def test_a_delete_whose_answer_was_lost_is_not_gone(
    fake: Callable[..., FakeServer], shared_server: Start, flavor: str
) -> None:
    """delete_job retried after its first attempt landed returns None: the retry's 410 is its own
    success. A first attempt that gets 410 still raises JobGone."""
    srv = shared_server()
    lossy = fake(in_order(FORWARD_THEN_DROP), upstream=srv.base_url)
    async with connect(flavor, lossy.url) as jobs, srv.client() as api:
        job_id = await api.create_job()
        assert await jobs.delete_job(job_id) is None
        assert [r.method for r in lossy.requests] == ["DELETE", "DELETE"]
        assert (await api.get(f"/api/jobs/{job_id}")).status_code == 410
        with pytest.raises(JobGone):
            await jobs.delete_job(job_id)


async def test_503_on_every_attempt_raises_backend_unavailable(
    fake: Callable[..., FakeServer], flavor: str
) -> None:
    """After retries + 1 answers of 503 the call raises BackendUnavailable with the detail."""
    down = fake(
        in_order(then=problem(503, "backend-unavailable", "redis is down", **{"Retry-After": "0"}))
    )
    impatient = RetryPolicy(retries=2, backoff=0.01, reconnect_for=0)
    async with connect(flavor, down.url, retry=impatient) as jobs:
        with pytest.raises(BackendUnavailable, match="redis is down"):
            await jobs.get_job("job_1")
        assert len(down.requests) == 3
        down.script = in_order(then=problem(503, "too-many-streams", "full"))
        with pytest.raises(TooManyStreams, match="full"):
            _ = [job async for job in jobs.watch("job_1")]
        assert len(down.requests) == 6


BAD_GATEWAY = Answer(502, b"<html>502 Bad Gateway</html>", {"Content-Type": "text/html"})
GATEWAY_TIMEOUT = Answer(504, b"<html>504 Gateway Time-out</html>", {"Content-Type": "text/html"})


async def test_a_proxys_502_and_504_are_retried(
    fake: Callable[..., FakeServer], server: Start, flavor: str
) -> None:
    """A proxy answers 502 while Jobcast restarts and 504 while it is slow: each call is
    retried (a create with its key, so one job), but an append without expected_offset,
    which the server may have applied, is raised."""
    srv = server()
    proxy = fake(in_order(BAD_GATEWAY, GATEWAY_TIMEOUT, BAD_GATEWAY), upstream=srv.base_url)
    async with connect(flavor, proxy.url) as jobs, srv.client() as api:
        job = await jobs.create_job(message="once")
        posts = [request for request in proxy.requests if request.method == "POST"]
        assert len(posts) == 4
        assert len({request.headers["idempotency-key"] for request in posts}) == 1
        listed = (await api.get("/api/jobs")).json()["jobs"]
        assert [item["jobId"] for item in listed] == [job.job_id]
        proxy.script = in_order(GATEWAY_TIMEOUT)
        with pytest.raises(ServerError) as failed:
            await jobs.append_output(job.job_id, "maybe there")
        assert failed.value.status_code == 504
        assert (await jobs.get_job(job.job_id)).output_size == 0


async def test_a_429_is_retried_then_raised_as_rate_limited(
    fake: Callable[..., FakeServer], flavor: str
) -> None:
    """A 429 waits its Retry-After like a 503; once the retries are spent, RateLimited."""
    busy = fake(in_order(then=problem(429, "rate-limited", "too often", **{"Retry-After": "0"})))
    async with connect(flavor, busy.url, retry=RetryPolicy(retries=2, backoff=0.01)) as jobs:
        with pytest.raises(RateLimited, match="too often") as limited:
            await jobs.get_job("job_1")
    assert len(busy.requests) == 3
    assert limited.value.retry_after == 1.0, "a Retry-After of 0 still asks for a pause"


async def test_a_421_raises_misdirected_request_at_once(
    fake: Callable[..., FakeServer], flavor: str
) -> None:
    """A server that does not answer to the URL's host name is not asked again."""
    other = fake(in_order(then=problem(421, "host-not-served", "not this host")))
    async with connect(flavor, other.url, retry=RetryPolicy(retries=2, backoff=0.01)) as jobs:
        with pytest.raises(MisdirectedRequest, match="not this host"):
            await jobs.get_job("job_1")
    assert len(other.requests) == 1


async def test_a_retry_after_beyond_max_backoff_is_not_waited_for(
    fake: Callable[..., FakeServer], flavor: str
) -> None:
    """A 503 asking for longer than the client's max_backoff is raised at once."""
    down = fake(
        in_order(then=problem(503, "backend-unavailable", "later", **{"Retry-After": "60"}))
    )
    policy = RetryPolicy(retries=5, backoff=0.01, max_backoff=1)
    async with connect(flavor, down.url, retry=policy) as jobs:
        with anyio.fail_after(seconds(5)), pytest.raises(BackendUnavailable):
            await jobs.get_job("job_1")
    assert len(down.requests) == 1


async def test_no_server_raises_connection_failed_after_the_retries(flavor: str) -> None:
    """Connection refused on every attempt ends in ConnectionFailed, naming the attempts
    (a watch's, once its reconnect_for has passed)."""
    url = f"http://127.0.0.1:{free_port()}"
    policy = RetryPolicy(retries=2, backoff=0.01, max_backoff=0.05, reconnect_for=0.5)
    async with connect(flavor, url, retry=policy) as jobs:
        with pytest.raises(ConnectionFailed, match="after 3 attempt") as failed:
            await jobs.create_job()
        assert isinstance(failed.value.__cause__, httpx2.ConnectError)
        started = time.monotonic()
        with pytest.raises(ConnectionFailed, match=r"after \d+ attempt"):
            _ = [job async for job in jobs.watch("job_1")]
        assert time.monotonic() - started >= 0.5


async def test_an_answer_that_cannot_be_decoded_raises_connection_failed_at_once(
    fake: Callable[..., FakeServer], flavor: str
) -> None:
    """A body that breaks its Content-Encoding is not retried; ConnectionFailed says why."""
    broken = Answer(200, b"not gzip at all", {"Content-Encoding": "gzip"})
    answers = fake(in_order(then=broken))
    async with connect(flavor, answers.url) as jobs:
        with pytest.raises(ConnectionFailed, match=r"after 1 attempt.*DecodingError") as failed:
            await jobs.get_job("job_1")
    assert isinstance(failed.value.__cause__, httpx2.DecodingError)
    assert len(answers.requests) == 1


# --- track ----------------------------------------------------------------------------


async def test_track_completes_the_job_when_the_block_succeeds(
    shared_server: Start, flavor: str
) -> None:
    """A track() block that ends normally completes its job with the document id it set."""
    srv = shared_server()
    async with connect(flavor, srv.base_url) as jobs, srv.client() as api:
        async with jobs.track(
            job_type="file_processing", message="Upload queued", owner="alice"
        ) as job:
            assert (await api.job(job.job_id))["status"] == "queued"
            state = await job.update(status="processing", progress=50, message="Extracting...")
            assert (state.progress, job.state.progress) == (50, 50)
            job.document_id = "doc_123abc"
            job.completion_message = "Document processed successfully"
        stored = await api.job(job.job_id)
        assert (stored["status"], stored["progress"], stored["documentId"]) == (
            "completed",
            100,
            "doc_123abc",
        )
        assert stored["message"] == "Document processed successfully"
        assert (stored["jobType"], stored["owner"]) == ("file_processing", "alice")


async def test_track_fails_the_job_with_the_exception_and_reraises(
    shared_server: Start, flavor: str
) -> None:
    """An exception in the block fails the job with its message (or type) and propagates."""
    srv = shared_server()
    async with connect(flavor, srv.base_url) as jobs, srv.client() as api:
        tracked: list[Any] = []

        async def work() -> None:
            async with jobs.track(message="Upload queued") as job:
                tracked.append(job)
                await job.update(status="processing", progress=20)
                raise ValueError("Invalid file format")

        with pytest.raises(ValueError, match="Invalid file format"):
            await work()
        stored = await api.job(tracked[0].job_id)
        assert (stored["status"], stored["error"], stored["progress"]) == (
            "error",
            "Invalid file format",
            20,
        )
        with pytest.raises(KeyError):
            async with jobs.track() as silent:
                raise KeyError
        assert (await api.job(silent.job_id))["error"] == "KeyError"


@pytest.mark.parametrize(
    ("raised", "error"),
    [
        (ValueError("x" * 20_000), "x" * 999 + "…"),  # over the server's 10 000 characters
        (OSError("cannot read caf\udce9.pdf"), "cannot read caf\\udce9.pdf"),  # no JSON for it
        (ExceptionGroup("in a TaskGroup", [KeyError("page 3")]), "'page 3'"),
    ],
    ids=["long", "lone-surrogate", "group"],
)
async def test_track_fails_the_job_with_any_exceptions_text(
    shared_server: Start, flavor: str, raised: Exception, error: str
) -> None:
    """An exception whose text the server would refuse is still the job's error, cut short
    or escaped; a TaskGroup's error is its first exception's."""
    srv = shared_server()
    async with connect(flavor, srv.base_url) as jobs, srv.client() as api:
        with pytest.raises(type(raised)):
            async with jobs.track() as job:
                raise raised
        assert (await api.job(job.job_id))["error"] == error


async def test_a_cancel_raised_in_a_task_group_fails_the_job_as_canceled(
    shared_server: Start,
) -> None:
    """JobCanceled inside a TaskGroup's error is the job's cancel, with its reason."""
    srv = shared_server()
    async with AsyncJobsClient(srv.base_url, retry=FAST) as jobs, srv.client() as api:
        tracked: list[AsyncTrackedJob] = []

        async def work() -> None:
            async with jobs.track() as job, asyncio.TaskGroup() as group:
                tracked.append(job)
                await jobs.cancel_job(job.job_id, "not needed")
                group.create_task(job.update(progress=10))

        with pytest.raises(ExceptionGroup):
            await work()
        stored = await api.job(tracked[0].job_id)
    assert (stored["status"], stored["error"], stored["message"]) == (
        "error",
        "canceled",
        "not needed",
    )


async def test_track_takes_an_existing_job_by_id(shared_server: Start, flavor: str) -> None:
    """track(job_id) reports on a job created elsewhere, and completes it at the end."""
    srv = shared_server()
    async with connect(flavor, srv.base_url) as jobs, srv.client() as api:
        job_id = await api.create_job(jobType="document_analysis")
        async with jobs.track(job_id) as job:
            assert (job.job_id, job.state.job_type) == (job_id, "document_analysis")
        assert (await api.job(job_id))["status"] == "completed"
        with pytest.raises(JobNotFound):
            async with jobs.track("job_nope"):
                pytest.fail("the block runs only for a job that exists")


@pytest.mark.parametrize(
    "creating",
    [{"message": "Queued"}, {"metadata": {}}, {"owner": "team-a"}, {"job_type": "llm_agent"}],
)
async def test_track_refuses_what_describes_a_new_job_beside_a_job_id(
    shared_server: Start, flavor: str, creating: dict[str, Any]
) -> None:
    """track(job_id, message=…) used to drop the message silently: the job exists already."""
    srv = shared_server()
    async with connect(flavor, srv.base_url) as jobs, srv.client() as api:
        job_id = await api.create_job()
        with pytest.raises(ValueError, match=r"track\(job_id\) takes an existing job"):
            async with jobs.track(job_id, **creating):
                pytest.fail("the block must not run")
        stored = await api.job(job_id)
        assert (stored["status"], stored["version"]) == ("queued", 1)


async def test_track_leaves_a_job_the_block_ended_itself(shared_server: Start, flavor: str) -> None:
    """A block that completes or fails its own job ends without another call or a 409."""
    srv = shared_server()
    async with connect(flavor, srv.base_url) as jobs, srv.client() as api:
        async with jobs.track() as job:
            job.state = await jobs.fail_job(job.job_id, "gave up")
        stored = await api.job(job.job_id)
        assert (stored["status"], stored["error"], stored["version"]) == ("error", "gave up", 2)


async def test_track_keeps_the_original_error_when_failing_the_job_fails(
    shared_server: Start, flavor: str
) -> None:
    """If the job cannot be failed (it already ended), the block's own exception still wins."""
    srv = shared_server()
    async with connect(flavor, srv.base_url) as jobs, srv.client() as api:
        tracked: list[Any] = []

        async def work() -> None:
            async with jobs.track() as job:
                tracked.append(job)
                await api.complete(job.job_id)  # someone else ends it meanwhile
                raise RuntimeError("work broke")

        with pytest.raises(RuntimeError, match="work broke") as raised:
            await work()
        assert any("could not be marked as failed" in note for note in raised.value.__notes__)
        assert (await api.job(tracked[0].job_id))["status"] == "completed"


async def test_a_cancelled_async_block_fails_its_job_and_stays_cancelled(
    shared_server: Start,
) -> None:
    """Cancelling an async track() block fails the job (shielded), then the cancel goes on."""
    srv = shared_server()
    async with AsyncJobsClient(srv.base_url, retry=FAST) as jobs, srv.client() as api:
        with anyio.CancelScope() as scope:
            async with jobs.track() as job:
                assert isinstance(job, AsyncTrackedJob)
                scope.cancel()
                await anyio.sleep_forever()
        assert scope.cancelled_caught
        assert (await api.job(job.job_id))["status"] == "error"


async def test_a_tracked_worker_stops_at_its_first_update_after_a_cancel(
    shared_server: Start, flavor: str
) -> None:
    """Another client's cancel makes the worker's next update raise JobCanceled (the state
    stored first); track() fails the job as canceled with the reason, and re-raises."""
    srv = shared_server()
    async with (
        connect(flavor, srv.base_url) as worker,
        connect(flavor, srv.base_url) as operator,
        srv.client() as api,
    ):
        tracked: list[Any] = []
        done: list[int] = []

        async def work(reason: str | None) -> None:
            async with worker.track(job_type="document_analysis") as job:
                tracked.append(job)
                for page in range(1, 11):
                    if page == 3:
                        await operator.cancel_job(job.job_id, reason)
                    await job.update(status="processing", progress=page * 10)
                    done.append(page)

        with pytest.raises(JobCanceled) as canceled:
            await work("the user closed the tab")
        job = tracked[0]
        assert done == [1, 2], "the loop stopped at the first update after the cancel"
        assert (canceled.value.job_id, canceled.value.reason) == (
            job.job_id,
            "the user closed the tab",
        )
        assert canceled.value.job == job.state
        assert (job.state.progress, job.state.cancel_requested) == (30, True)
        stored = await api.job(job.job_id)
        assert (stored["status"], stored["error"], stored["message"], stored["progress"]) == (
            "error",
            "canceled",
            "the user closed the tab",
            30,
        )
        with pytest.raises(JobCanceled, match=r"was canceled$"):
            await work(None)
        assert (await api.job(tracked[1].job_id))["message"] == "Canceled"


async def test_a_forced_cancel_under_a_tracked_worker_raises_job_canceled(
    shared_server: Start, flavor: str
) -> None:
    """An update refused because a forced cancel ended the job raises JobCanceled, not
    InvalidTransition; the job stays as the cancel ended it, with nothing tried after."""
    srv = shared_server()
    async with (
        connect(flavor, srv.base_url) as worker,
        connect(flavor, srv.base_url) as operator,
        srv.client() as api,
    ):
        tracked: list[Any] = []
        ended: list[Job] = []

        async def work() -> None:
            async with worker.track() as job:
                tracked.append(job)
                await job.update(status="processing", progress=10)
                ended.append(
                    await operator.cancel_job(job.job_id, "worker looks stuck", force=True)
                )
                await job.update(progress=20)

        with pytest.raises(JobCanceled) as canceled:
            await work()
        assert canceled.value.reason == "worker looks stuck"
        assert not getattr(canceled.value, "__notes__", []), "no attempt to fail the job again"
        assert tracked[0].state == ended[0] == Job.from_wire(await api.job(ended[0].job_id))
        assert (ended[0].status, ended[0].error, ended[0].message, ended[0].version) == (
            "error",
            "canceled",
            "worker looks stuck",
            3,
        )

        async def refused(cancel: bool) -> None:
            async with worker.track() as job:
                await job.update(status="processing")
                if cancel:  # asked to stop, still running: the refusal is the worker's own
                    await operator.cancel_job(job.job_id)
                else:
                    await api.fail(job.job_id, "someone else failed it")
                await job.update(status="queued")

        with pytest.raises(InvalidTransition, match="can no longer change"):
            await refused(cancel=False)
        with pytest.raises(InvalidTransition, match="cannot go from processing to queued"):
            await refused(cancel=True)


@pytest.mark.parametrize("then", ["nothing", "output"])
async def test_a_forced_cancel_heard_only_at_the_blocks_end_is_job_canceled(
    shared_server: Start, flavor: str, then: str
) -> None:
    """A worker that never updates again after a forced cancel (it finishes, or only
    writes output, which the ended job refuses) hears JobCanceled, not InvalidTransition."""
    srv = shared_server()
    async with (
        connect(flavor, srv.base_url) as worker,
        connect(flavor, srv.base_url) as operator,
    ):

        async def work() -> None:
            async with worker.track() as job:
                await job.update(status="processing")
                await operator.cancel_job(job.job_id, "ops stopped it", force=True)
                if then == "output":
                    await job.append_output("late")

        with pytest.raises(JobCanceled) as canceled:
            await work()
        assert canceled.value.reason == "ops stopped it"
        assert not getattr(canceled.value, "__notes__", [])
        ended = await operator.get_job(canceled.value.job_id)
        assert (ended.status, ended.error) == ("error", "canceled")


async def test_a_cancel_of_an_inner_tracked_job_fails_the_outer_one_as_an_error(
    shared_server: Start, flavor: str
) -> None:
    """JobCanceled of another job crossing a track() block fails that block's job like any
    exception: only the canceled job ends as "canceled"."""
    srv = shared_server()
    async with connect(flavor, srv.base_url) as jobs, srv.client() as api:
        tracked: list[Any] = []

        async def work() -> None:
            async with jobs.track(message="batch") as outer, jobs.track(message="file") as inner:
                tracked.extend([outer, inner])
                await jobs.cancel_job(inner.job_id, "bad file")
                await inner.update(progress=50)

        with pytest.raises(JobCanceled) as canceled:
            await work()
        outer, inner = tracked
        assert canceled.value.job_id == inner.job_id
        assert (await api.job(inner.job_id))["error"] == "canceled"
        assert (await api.job(outer.job_id))[
            "error"
        ] == f"job {inner.job_id} was canceled: bad file"
