"""Server-Sent Events against the real server: SPEC section 3, read by a real SSE client."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from tests.conftest import seconds

from .sse_reader import Event, EventStreamParser, SSEStream

if TYPE_CHECKING:
    from .conftest import JobsClient, RunningServer

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

Start = Callable[..., "RunningServer"]


async def job_stream(srv: RunningServer, job_id: str, **kwargs: Any) -> SSEStream:
    return await SSEStream.open(f"{srv.base_url}/api/jobs/{job_id}/events", **kwargs)


async def all_stream(srv: RunningServer, query: str = "", **kwargs: Any) -> SSEStream:
    return await SSEStream.open(f"{srv.base_url}/api/jobs/events{query}", **kwargs)


async def next_job(stream: SSEStream) -> dict[str, Any]:
    """The next event, which must be a `job` event; its job."""
    event = await stream.next_event(seconds(5))
    assert event.event == "job", event
    job: dict[str, Any] = event.json()
    return job


async def read_jobs(stream: SSEStream, count: int) -> list[Event]:
    return [await stream.next_event(seconds(5)) for _ in range(count)]


async def read_until(stream: SSEStream, job_id: str, status: str) -> None:
    """Read events until one shows `job_id` in `status`."""
    while True:
        event = await stream.next_event(seconds(5))
        if event.event == "job" and (event.json()["jobId"], event.json()["status"]) == (
            job_id,
            status,
        ):
            return


async def wait_for_sse_connections(api: JobsClient, count: int) -> None:
    await api.wait_for_metric("jobcast_connections", lambda value: value == count, transport="sse")


# --- the reader itself -------------------------------------------------------------


def test_reader_follows_the_whatwg_parsing_rules() -> None:
    """The test client parses CR, LF and CRLF endings, comments, multi-line data and ids."""
    parser = EventStreamParser()
    for piece in ["retry: 15", "00\r", "\n: ping\rid: 7\nevent: job\r\ndata: a\n", "data:b\r"]:
        parser.feed(piece)
    parser.feed("\r\ndata: only data\n\nid\ndata: x\nretry: soon\nbogus: 1\n\n")
    assert parser.retry == 1500
    assert list(parser.comments) == ["ping"]
    first, second, third = parser.events
    assert (first.event, first.data, first.id) == ("job", "a\nb", "7")
    assert (second.event, second.data, second.id, second.has_id) == (
        "message",
        "only data",
        "7",
        False,
    )
    assert (third.data, third.id) == ("x", "")
    assert parser.order == ["retry", "comment", "event", "event", "event"]


# --- snapshot first, then every change --------------------------------------------------


async def test_job_stream_opens_with_retry_then_the_current_state(server: Start) -> None:
    """A job stream starts with the configured `retry:` line, then the job as it is now."""
    srv = server(JOBS_SSE_RETRY_MS="1234")
    async with srv.client() as api:
        job_id = await api.create_job(jobType="llm_agent", message="thinking")
        await api.update(job_id, status="processing", progress=45)
        async with await job_stream(srv, job_id) as stream:
            assert stream.status == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            assert stream.headers["cache-control"] == "no-cache"
            event = await stream.next_event(seconds(5))
            assert stream.retry == 1234
            assert stream.order[:2] == ["retry", "event"]
            assert (event.event, event.id) == ("job", "2")
            job = event.json()
            assert job == await api.job(job_id)
            assert (job["status"], job["progress"], job["message"]) == (
                "processing",
                45,
                "thinking",
            )


async def test_all_jobs_stream_opens_with_every_current_job(server: Start) -> None:
    """The all-jobs stream starts with `retry:` and one `job` event per existing job, current."""
    srv = server()
    async with srv.client() as api:
        first = await api.create_job()
        second = await api.create_job(jobType="file_processing")
        await api.update(first, message="moved on")
        async with await all_stream(srv) as stream:
            events = await read_jobs(stream, 2)
            assert stream.order[0] == "retry"
            assert {event.event for event in events} == {"job"}
            states = {event.json()["jobId"]: event.json() for event in events}
            assert states == {first: await api.job(first), second: await api.job(second)}
            await api.update(second, progress=10)
            change = await next_job(stream)
            assert (change["jobId"], change["version"], change["progress"]) == (second, 2, 10)


async def test_every_change_arrives_with_its_version_as_id(server: Start) -> None:
    """A subscriber that keeps up gets each change as it happens; `id` is the job's version."""
    srv = server()
    async with srv.client() as api:
        job_id = await api.create_job()
        async with await job_stream(srv, job_id) as stream:
            assert (await next_job(stream))["version"] == 1
            for progress in range(1, 11):
                updated = await api.update(job_id, status="processing", progress=progress)
                event = await stream.next_event(seconds(5))
                assert event.id == str(updated["version"])
                assert event.json() == updated


async def test_a_burst_of_changes_arrives_in_version_order_none_twice(server: Start) -> None:
    """Under a burst of updates a job's events come in increasing version order, to the last."""
    srv = server()
    async with srv.client() as api:
        job_id = await api.create_job()
        async with await job_stream(srv, job_id) as stream:
            async with anyio.create_task_group() as tasks:

                async def burst() -> None:
                    for progress in range(60):
                        await api.update(job_id, progress=progress, message=f"step {progress}")
                    await api.complete(job_id)

                tasks.start_soon(burst)
                events = await stream.events_until_end(seconds(20))
            versions = [event.json()["version"] for event in events]
            assert versions == sorted(set(versions))
            assert [event.id for event in events] == [str(version) for version in versions]
            assert versions[0] == 1
            assert versions[-1] == 62
            assert events[-1].json()["status"] == "completed"


async def test_all_jobs_stream_keeps_each_jobs_versions_in_order(server: Start) -> None:
    """On the all-jobs stream, interleaved updates to several jobs keep each job's order."""
    srv = server()
    async with srv.client() as api:
        ids = [await api.create_job() for _ in range(3)]
        async with await all_stream(srv) as stream:
            await read_jobs(stream, 3)
            for round_ in range(10):
                for job_id in ids:
                    await api.update(job_id, progress=round_)
            for job_id in ids:
                await api.complete(job_id)
            seen: dict[str, list[int]] = {job_id: [] for job_id in ids}
            while any(not versions or versions[-1] < 12 for versions in seen.values()):
                job = await next_job(stream)
                seen[job["jobId"]].append(job["version"])
            for versions in seen.values():
                assert versions == sorted(set(versions))
                assert versions[-1] == 12


async def test_two_concurrent_first_subscribers_each_get_every_change(server: Start) -> None:
    """Two streams opened at the same moment on a quiet job both receive every change."""
    srv = server()
    async with srv.client() as api:
        job_id = await api.create_job()
        other = await api.create_job()
        streams: list[SSEStream] = []

        async def open_both(opener: Callable[[], Any]) -> list[SSEStream]:
            opened: list[SSEStream] = []

            async def one() -> None:
                opened.append(await opener())

            async with anyio.create_task_group() as tasks:
                tasks.start_soon(one)
                tasks.start_soon(one)
            return opened

        streams += await open_both(lambda: job_stream(srv, job_id))
        streams += await open_both(lambda: all_stream(srv))
        try:
            per_job, all_jobs = streams[:2], streams[2:]
            for stream in per_job:
                assert (await next_job(stream))["version"] == 1
            for stream in all_jobs:
                assert {job["jobId"] for job in [await next_job(stream) for _ in range(2)]} == {
                    job_id,
                    other,
                }
            for step in range(2, 7):
                await api.update(job_id, progress=step)
                for stream in streams:
                    job = await next_job(stream)
                    assert (job["jobId"], job["version"]) == (job_id, step)
        finally:
            for stream in streams:
                stream.close()


# --- resuming --------------------------------------------------------------------


@pytest.mark.parametrize("via", ["header", "query"])
async def test_job_stream_resumes_after_last_event_id(server: Start, via: str) -> None:
    """A job stream resumed from version 2 sends the current state only, then new changes."""
    srv = server()
    async with srv.client() as api:
        job_id = await api.create_job()
        await api.update(job_id, progress=10)
        await api.update(job_id, progress=20)
        latest = await api.update(job_id, progress=30)
        headers, query = ({"Last-Event-ID": "2"}, "") if via == "header" else ({}, "?lastEventId=2")
        url = f"{srv.base_url}/api/jobs/{job_id}/events{query}"
        async with await SSEStream.open(url, headers=headers) as stream:
            event = await stream.next_event(seconds(5))
            assert (event.id, event.json()) == ("4", latest)
            await api.update(job_id, progress=40)
            assert (await next_job(stream))["version"] == 5


async def test_job_stream_resumed_at_the_current_version_sends_only_new_changes(
    server: Start,
) -> None:
    """A client that already has the current version is not sent it again."""
    srv = server()
    async with srv.client() as api:
        job_id = await api.create_job()
        await api.update(job_id, progress=10)
        async with await job_stream(srv, job_id, headers={"Last-Event-ID": "2"}) as stream:
            await api.update(job_id, progress=20)
            event = await stream.next_event(seconds(5))
            assert (event.id, event.json()["progress"]) == ("3", 20)


async def test_job_stream_ignores_a_last_event_id_it_cannot_use(server: Start) -> None:
    """A job stream resumed from an id that is no version sends the current state, never a 5xx."""
    srv = server()
    async with srv.client() as api:
        job_id = await api.create_job()
        current = await api.update(job_id, progress=10)
        url = f"{srv.base_url}/api/jobs/{job_id}/events"
        attempts = [
            ("header", "9" * 5000),  # digits, but past int()'s 4300-digit limit
            ("header", "\u00b2"),  # "²": str.isdigit() says yes, int() says no
            ("query", "%C2%B2"),
            ("header", "abc"),
            ("header", "-1"),
        ]
        answers = {}
        for via, value in attempts:
            headers = {"Last-Event-ID": value} if via == "header" else {}
            target = url if via == "header" else f"{url}?lastEventId={value}"
            async with await SSEStream.open(target, headers=headers) as stream:
                if stream.status != 200:
                    answers[via, value[:12]] = stream.status
                    continue
                event = await stream.next_event(seconds(5))
                answers[via, value[:12]] = event.json() == current or event.json()
        assert answers == dict.fromkeys(answers, True)


@pytest.mark.parametrize("via", ["header", "query"])
async def test_all_jobs_stream_resumes_after_its_opaque_cursor(server: Start, via: str) -> None:
    """Resuming the all-jobs stream from its last id sends only the jobs that changed since."""
    srv = server()
    async with srv.client() as api:
        quiet = await api.create_job()
        busy = await api.create_job()
        async with await all_stream(srv) as stream:
            await read_jobs(stream, 2)
            cursor = stream.last_event_id
        assert cursor not in ("", "1", "2")  # an opaque cursor, not a job version
        await api.update(busy, progress=50)
        await api.update(busy, progress=60)
        fresh = await api.create_job()
        if via == "header":
            resumed = await all_stream(srv, headers={"Last-Event-ID": cursor})
        else:
            resumed = await all_stream(srv, f"?lastEventId={cursor}")
        async with resumed:
            first, second = await read_jobs(resumed, 2)
            assert [first.event, second.event] == ["job", "job"]
            assert (first.json()["jobId"], first.json()["version"]) == (busy, 3)
            assert second.json()["jobId"] == fresh
            # The quiet job is not sent again: the next event is the next change.
            await api.update(fresh, progress=1)
            event = await resumed.next_event(seconds(5))
            assert (event.json()["jobId"], event.json()["version"]) == (fresh, 2)
            assert quiet not in {event.json()["jobId"] for event in (first, second)}


async def test_unreadable_or_stale_cursor_resets_then_sends_everything(server: Start) -> None:
    """A cursor the server cannot resume from yields `event: reset`, then the full state."""
    srv = server()
    async with srv.client() as api:
        ids = {await api.create_job(), await api.create_job()}
        # Garbage, another run's feed (epoch 1), beyond the head, half-formed.
        for cursor in ["not-a-cursor", "1-1", "281474976710656-0", "-", "1-", "a-b"]:
            async with await all_stream(srv, headers={"Last-Event-ID": cursor}) as stream:
                reset = await stream.next_event(seconds(5))
                assert reset.event == "reset", cursor
                events = await read_jobs(stream, 2)
                assert {event.event for event in events} == {"job"}
                assert {event.json()["jobId"] for event in events} == ids


async def test_resuming_after_a_removal_replays_the_removed_event(server: Start) -> None:
    """A client that was away while a job was cleaned up learns of it on resume."""
    srv = server(JOBS_TERMINAL_TTL="0.3")
    async with srv.client() as api:
        job_id = await api.create_job()
        async with await all_stream(srv) as stream:
            await read_jobs(stream, 1)
            cursor = stream.last_event_id
        async with await all_stream(srv) as watcher:
            await read_jobs(watcher, 1)
            await api.complete(job_id)
            await read_until(watcher, job_id, "completed")
            removed = await watcher.next_event(seconds(10))
            assert removed.event == "removed"
        async with await all_stream(srv, headers={"Last-Event-ID": cursor}) as resumed:
            event = await resumed.next_event(seconds(5))
            assert (event.event, event.json()) == ("removed", {"jobId": job_id})


# --- the end of a job --------------------------------------------------------------------


async def test_job_stream_ends_after_the_terminal_event(server: Start) -> None:
    """The job stream sends the terminal state and then ends the response body."""
    srv = server()
    async with srv.client() as api:
        job_id = await api.create_job()
        async with await job_stream(srv, job_id) as stream:
            await next_job(stream)
            failed = await api.fail(job_id, "disk full")
            events = await stream.events_until_end(seconds(5))
            assert [event.json() for event in events] == [failed]
            assert stream.ended
            assert failed["error"] == "disk full"


async def test_job_stream_of_a_finished_job_sends_it_and_ends(server: Start) -> None:
    """Connecting to an already finished job sends its final state once and ends."""
    srv = server()
    async with srv.client() as api:
        job_id = await api.create_job()
        done = await api.complete(job_id, documentId="doc-1")
        async with await job_stream(srv, job_id) as stream:
            events = await stream.events_until_end(seconds(5))
            assert [(event.id, event.json()) for event in events] == [("2", done)]


async def test_reconnect_with_the_terminal_version_gets_204(server: Start) -> None:
    """A reconnect whose Last-Event-ID is the terminal version is told to stop: 204."""
    srv = server()
    async with srv.client() as api:
        job_id = await api.create_job()
        await api.complete(job_id)
        async with await job_stream(srv, job_id, headers={"Last-Event-ID": "2"}) as stream:
            assert stream.status == 204
            assert await stream.body(seconds(5)) == b""


async def test_unknown_job_stream_is_404_problem_json(server: Start) -> None:
    """A stream for an id that never existed is refused with a 404 problem document."""
    srv = server()
    async with await job_stream(srv, "job_doesnotexist") as stream:
        assert stream.status == 404
        assert stream.headers["content-type"] == "application/problem+json"
        problem = json.loads(await stream.body(seconds(5)))
        assert problem["status"] == 404
        assert {"type", "title", "detail"} <= problem.keys()


async def test_cleaned_up_job_stream_is_410(server: Start) -> None:
    """Once a finished job is cleaned up, its stream answers 410 Gone as problem+json."""
    srv = server(JOBS_TERMINAL_TTL="0.2")
    async with srv.client() as api:
        job_id = await api.create_job()
        async with await all_stream(srv) as watcher:
            await read_jobs(watcher, 1)
            await api.complete(job_id)
            await read_until(watcher, job_id, "completed")
            assert (await watcher.next_event(seconds(10))).event == "removed"
        async with await job_stream(srv, job_id) as stream:
            assert stream.status == 410
            assert stream.headers["content-type"] == "application/problem+json"
            assert b'"status":410' in await stream.body(seconds(5))


async def test_clean_up_sends_removed_on_the_all_jobs_stream(server: Start) -> None:
    """When a finished job is cleaned up, the all-jobs stream gets `event: removed` with its id."""
    srv = server(JOBS_TERMINAL_TTL="0.2")
    async with srv.client() as api:
        job_id = await api.create_job()
        keep = await api.create_job()
        async with await all_stream(srv) as stream:
            await read_jobs(stream, 2)
            await api.complete(job_id)
            await read_until(stream, job_id, "completed")
            removed = await stream.next_event(seconds(10))
            assert (removed.event, removed.json()) == ("removed", {"jobId": job_id})
            assert removed.has_id
            response = await api.get(f"/api/jobs/{job_id}")
            assert response.status_code == 410
            assert (await api.job(keep))["status"] == "queued"


# --- heartbeats, filters, encoding -----------------------------------------------------------


async def test_idle_streams_get_ping_comments(server: Start) -> None:
    """With nothing to say, both streams send `: ping` comments at the heartbeat interval."""
    srv = server(JOBS_HEARTBEAT="0.1")
    async with srv.client() as api:
        job_id = await api.create_job()
        async with await job_stream(srv, job_id) as one, await all_stream(srv) as every:
            for stream in (one, every):
                await stream.next_event(seconds(5))
                assert await stream.next_comment(seconds(5)) == "ping"
                assert await stream.next_comment(seconds(5)) == "ping"


async def test_job_type_filter_sends_only_that_type(server: Start) -> None:
    """`?jobType=` limits the snapshot and the live changes to jobs of that type."""
    srv = server()
    async with srv.client() as api:
        agent = await api.create_job(jobType="llm_agent")
        plain = await api.create_job()
        async with await all_stream(srv, "?jobType=llm_agent") as stream:
            assert (await next_job(stream))["jobId"] == agent
            await api.update(plain, progress=5)
            second_agent = await api.create_job(jobType="llm_agent")
            await api.update(agent, progress=7)
            first, second = await next_job(stream), await next_job(stream)
            assert (first["jobId"], second["jobId"]) == (second_agent, agent)
            assert second["progress"] == 7


async def test_status_filter_sends_the_event_of_a_job_leaving_it(server: Start) -> None:
    """With `?status=processing`, a job entering is sent, and so is its one event leaving."""
    srv = server()
    async with srv.client() as api:
        moving = await api.create_job()
        waiting = await api.create_job()
        marker = await api.create_job()
        async with await all_stream(srv, "?status=processing") as stream:
            await api.update(moving, status="processing", progress=10)
            entered = await next_job(stream)
            assert (entered["jobId"], entered["status"]) == (moving, "processing")
            await api.complete(moving)
            left = await next_job(stream)
            assert (left["jobId"], left["status"]) == (moving, "completed")
            await api.update(waiting, message="still queued")  # never matches: not sent
            await api.update(marker, status="processing")
            assert (await next_job(stream))["jobId"] == marker


async def test_newlines_in_job_text_stay_inside_one_data_line(server: Start) -> None:
    """Newlines and SSE-looking text in messages and metadata arrive JSON-escaped, not injected."""
    srv = server()
    hostile = "line one\n\nevent: removed\ndata: {}\r\nid: 999\rretry: 1\n: ping\u2028\u0085end"
    async with srv.client() as api:
        job_id = await api.create_job(message=hostile, metadata={"note\nkey": hostile})
        async with await job_stream(srv, job_id) as stream:
            first = await stream.next_event(seconds(5))
            updated = await api.update(job_id, message="x\r\n\r\ny", metadata={"more": "a\rb"})
            second = await stream.next_event(seconds(5))
            for event in (first, second):
                assert event.event == "job"
                assert "\n" not in event.data
            assert (first.id, second.id) == ("1", "2")
            assert first.json()["message"] == hostile
            assert first.json()["metadata"] == {"note\nkey": hostile}
            assert second.json() == updated
            assert stream.retry == 2000
            assert stream.comments == []


# --- connections come and go ---------------------------------------------------------------


@pytest.mark.parametrize("kind", ["job", "all"])
async def test_vanished_client_is_cleaned_up(server: Start, kind: str) -> None:
    """An SSE client that drops its socket abruptly is noticed: the gauge returns to 0."""
    srv = server()
    async with srv.client() as api:
        job_id = await api.create_job()
        streams = [
            await (job_stream(srv, job_id) if kind == "job" else all_stream(srv)) for _ in range(3)
        ]
        for stream in streams:
            await stream.next_event(seconds(5))
        await wait_for_sse_connections(api, 3)
        for stream in streams:
            stream.abort()
        await wait_for_sse_connections(api, 0)
        # The server still serves new subscribers after the drops.
        async with await job_stream(srv, job_id) as stream:
            assert (await next_job(stream))["jobId"] == job_id


async def test_all_jobs_stream_sends_every_job_even_past_the_subscriber_backlog(
    server: Start,
) -> None:
    """The snapshot on connect holds every current job, even more than JOBS_SUBSCRIBER_BACKLOG."""
    srv = server(JOBS_SUBSCRIBER_BACKLOG="5")
    async with srv.client() as api:
        ids = {await api.create_job() for _ in range(12)}
        async with await all_stream(srv) as stream:
            events = await read_jobs(stream, 12)
            assert {event.json()["jobId"] for event in events} == ids


async def test_all_jobs_stream_refuses_an_unknown_filter_value(server: Start) -> None:
    """An all-jobs stream with a status that does not exist is refused with 422 problem+json."""
    srv = server()
    async with await all_stream(srv, "?status=sleeping") as stream:
        assert stream.status == 422
        assert stream.headers["content-type"] == "application/problem+json"
        assert b"status" in await stream.body(seconds(5))


async def test_resuming_a_filtered_stream_sends_no_job_that_never_matched(server: Start) -> None:
    """On resume, `?status=processing` does not send a job created since that never processed."""
    srv = server()
    async with srv.client() as api:
        busy = await api.create_job()
        await api.update(busy, status="processing")
        async with await all_stream(srv, "?status=processing") as stream:
            await read_jobs(stream, 1)
            cursor = stream.last_event_id
        await api.create_job(message="queued, never processing")
        await api.update(busy, progress=80)
        async with await all_stream(srv, f"?status=processing&lastEventId={cursor}") as resumed:
            event = await resumed.next_event(seconds(5))
            assert (event.json()["jobId"], event.json()["progress"]) == (busy, 80)
            marker = await api.create_job()
            await api.update(marker, status="processing")
            following = await resumed.next_event(seconds(5))
            assert following.json()["jobId"] == marker, following.json()


async def test_a_cursor_from_before_a_forgotten_removal_resets(server: Start) -> None:
    """When a removal the client missed can no longer be replayed, its cursor yields a reset."""
    srv = server(JOBS_TERMINAL_TTL="0.2", JOBS_MAX_TOMBSTONES="0")
    async with srv.client() as api:
        doomed = await api.create_job()
        kept = await api.create_job()
        async with await all_stream(srv) as stream:
            await read_jobs(stream, 2)
            cursor = stream.last_event_id
            await api.complete(doomed)
            await read_until(stream, doomed, "completed")
            assert (await stream.next_event(seconds(10))).event == "removed"
        async with await all_stream(srv, headers={"Last-Event-ID": cursor}) as resumed:
            assert (await resumed.next_event(seconds(5))).event == "reset"
            event = await resumed.next_event(seconds(5))
            assert event.json()["jobId"] == kept
