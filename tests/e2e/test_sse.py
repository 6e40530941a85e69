"""Server-Sent Events against the real server: SPEC section 3, read by a real SSE client."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio
import httpx2
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


async def snapshot(stream: SSEStream) -> tuple[list[dict[str, Any]], Event]:
    """The snapshot's jobs (every event before `synced` must be a `job`), and `synced`."""
    events, synced = await stream.until_synced(seconds(5))
    assert [event.event for event in events] == ["job"] * len(events), events
    return [event.json() for event in events], synced


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
            await stream.expect_synced("2")
            assert stream.order[:3] == ["retry", "event", "event"]
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
            jobs, synced = await snapshot(stream)
            assert stream.order[0] == "retry"
            assert len(jobs) == 2
            states = {job["jobId"]: job for job in jobs}
            assert states == {first: await api.job(first), second: await api.job(second)}
            await api.update(second, progress=10)
            change = await stream.next_event(seconds(5))
            assert change.event == "job"
            assert change.id not in ("", synced.id)
            assert (change.json()["jobId"], change.json()["version"]) == (second, 2)
            assert change.json()["progress"] == 10


async def test_every_change_arrives_with_its_version_as_id(shared_server: Start) -> None:
    """A subscriber that keeps up gets each change as it happens; `id` is the job's version."""
    srv = shared_server()
    async with srv.client() as api:
        job_id = await api.create_job()
        async with await job_stream(srv, job_id) as stream:
            assert (await next_job(stream))["version"] == 1
            await stream.expect_synced("1")
            for progress in range(1, 11):
                updated = await api.update(job_id, status="processing", progress=progress)
                event = await stream.next_event(seconds(5))
                assert event.id == str(updated["version"])
                assert event.json() == updated


async def test_a_burst_of_changes_arrives_in_version_order_none_twice(shared_server: Start) -> None:
    """Under a burst of updates a job's events come in increasing version order, to the last."""
    srv = shared_server()
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
            # The snapshot (version 1) and `synced`, then only live `job` events.
            assert [event.event for event in events[:2]] == ["job", "synced"]
            assert events.pop(1).id == "1"
            assert {event.event for event in events} == {"job"}
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
            jobs, _ = await snapshot(stream)
            assert sorted(job["jobId"] for job in jobs) == sorted(ids)
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
                await stream.expect_synced("1")
            for stream in all_jobs:
                jobs, _ = await snapshot(stream)
                assert sorted(job["jobId"] for job in jobs) == sorted([job_id, other])
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
async def test_job_stream_resumes_after_last_event_id(shared_server: Start, via: str) -> None:
    """A job stream resumed from version 2 sends the current state only, then new changes."""
    srv = shared_server()
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
            await stream.expect_synced("4")
            await api.update(job_id, progress=40)
            assert (await next_job(stream))["version"] == 5


async def test_job_stream_resumed_at_the_current_version_sends_only_new_changes(
    shared_server: Start,
) -> None:
    """A client that already has the current version is sent just `synced`, then new changes."""
    srv = shared_server()
    async with srv.client() as api:
        job_id = await api.create_job()
        await api.update(job_id, progress=10)
        async with await job_stream(srv, job_id, headers={"Last-Event-ID": "2"}) as stream:
            await stream.expect_synced("2")  # the first event: version 2 is not sent again
            await api.update(job_id, progress=20)
            event = await stream.next_event(seconds(5))
            assert (event.id, event.json()["progress"]) == ("3", 20)


async def test_job_stream_ignores_a_last_event_id_it_cannot_use(shared_server: Start) -> None:
    """A job stream resumed from an id that is no version sends the current state, never a 5xx."""
    srv = shared_server()
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
        answers: dict[tuple[str, str], object] = {}
        for via, value in attempts:
            headers = {"Last-Event-ID": value} if via == "header" else {}
            target = url if via == "header" else f"{url}?lastEventId={value}"
            async with await SSEStream.open(target, headers=headers) as stream:
                if stream.status != 200:
                    answers[via, value[:12]] = stream.status
                    continue
                first = await stream.next_event(seconds(5))
                then = await stream.next_event(seconds(5))
                got = (first.event, first.id, first.json(), then.event, then.id)
                answers[via, value[:12]] = got == ("job", "2", current, "synced", "2") or got
        assert answers == dict.fromkeys(answers, True)


@pytest.mark.parametrize("via", ["header", "query"])
async def test_all_jobs_stream_resumes_after_its_opaque_cursor(server: Start, via: str) -> None:
    """Resuming the all-jobs stream from its last id sends only the jobs that changed since."""
    srv = server()
    async with srv.client() as api:
        quiet = await api.create_job()
        busy = await api.create_job()
        async with await all_stream(srv) as stream:
            jobs, synced = await snapshot(stream)
            assert sorted(job["jobId"] for job in jobs) == sorted([quiet, busy])
            cursor = synced.id  # what the client holds once it has the snapshot
        assert cursor not in ("", "1", "2")  # an opaque cursor, not a job version
        await api.update(busy, progress=50)
        await api.update(busy, progress=60)
        fresh = await api.create_job()
        if via == "header":
            resumed = await all_stream(srv, headers={"Last-Event-ID": cursor})
        else:
            resumed = await all_stream(srv, f"?lastEventId={cursor}")
        async with resumed:
            # Only what changed since, in feed order; the quiet job is not sent again.
            jobs, synced = await snapshot(resumed)
            assert [(job["jobId"], job["version"]) for job in jobs] == [(busy, 3), (fresh, 1)]
            assert synced.id not in ("", cursor)  # the feed moved on
            await api.update(fresh, progress=1)
            event = await resumed.next_event(seconds(5))
            assert (event.json()["jobId"], event.json()["version"]) == (fresh, 2)


async def test_unreadable_or_stale_cursor_resets_then_sends_everything(server: Start) -> None:
    """A cursor the server cannot resume from yields `event: reset`, then the full state."""
    srv = server()
    async with srv.client() as api:
        ids = {await api.create_job(), await api.create_job()}
        # Garbage, another run's feed (epoch 1), beyond the head, half-formed, and digits
        # that str.isdigit() takes and int() refuses (the header travels as Latin-1).
        for cursor in ["not-a-cursor", "1-1", "281474976710656-0", "-", "1-", "a-b", "\u00b2-1"]:
            async with await all_stream(srv, headers={"Last-Event-ID": cursor}) as stream:
                reset = await stream.next_event(seconds(5))
                assert (reset.event, reset.id, reset.has_id) == ("reset", "", True), cursor
                assert stream.order[:2] == ["retry", "event"]
                jobs, synced = await snapshot(stream)
                assert sorted(job["jobId"] for job in jobs) == sorted(ids)
                assert synced.id not in ("", cursor)


async def test_resuming_after_a_removal_replays_the_removed_event(server: Start) -> None:
    """A client that was away while a job was cleaned up learns of it on resume."""
    srv = server(JOBS_TERMINAL_TTL="0.3")
    async with srv.client() as api:
        job_id = await api.create_job()
        async with await all_stream(srv) as stream:
            _, synced = await snapshot(stream)
            cursor = synced.id
        async with await all_stream(srv) as watcher:
            await snapshot(watcher)
            await api.complete(job_id)
            await read_until(watcher, job_id, "completed")
            removed = await watcher.next_event(seconds(10))
            assert removed.event == "removed"
        async with await all_stream(srv, headers={"Last-Event-ID": cursor}) as resumed:
            events, synced = await resumed.until_synced(seconds(5))
            assert [(event.event, event.json()) for event in events] == [
                ("removed", {"jobId": job_id})
            ]
            assert synced.id not in ("", cursor)


# --- the end of a job --------------------------------------------------------------------


async def test_job_stream_ends_after_the_terminal_event(shared_server: Start) -> None:
    """The job stream sends the terminal state and then ends the response body."""
    srv = shared_server()
    async with srv.client() as api:
        job_id = await api.create_job()
        async with await job_stream(srv, job_id) as stream:
            await next_job(stream)
            await stream.expect_synced("1")
            failed = await api.fail(job_id, "disk full")
            events = await stream.events_until_end(seconds(5))
            assert [event.json() for event in events] == [failed]
            assert stream.ended
            assert failed["error"] == "disk full"


async def test_job_stream_of_a_finished_job_sends_it_and_ends(shared_server: Start) -> None:
    """Connecting to an already finished job sends its final state once, `synced`, and ends."""
    srv = shared_server()
    async with srv.client() as api:
        job_id = await api.create_job()
        done = await api.complete(job_id, documentId="doc-1")
        async with await job_stream(srv, job_id) as stream:
            events = await stream.events_until_end(seconds(5))
            assert [(event.event, event.id, event.json()) for event in events] == [
                ("job", "2", done),
                ("synced", "2", {}),
            ]
            assert stream.ended


async def test_reconnect_with_the_terminal_version_gets_204(shared_server: Start) -> None:
    """A reconnect whose Last-Event-ID is the terminal version is told to stop: 204."""
    srv = shared_server()
    async with srv.client() as api:
        job_id = await api.create_job()
        await api.complete(job_id)
        async with await job_stream(srv, job_id, headers={"Last-Event-ID": "2"}) as stream:
            assert stream.status == 204
            assert await stream.body(seconds(5)) == b""


async def test_unknown_job_stream_is_404_problem_json(shared_server: Start) -> None:
    """A stream for an id that never existed is refused with a 404 problem document."""
    srv = shared_server()
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
            await snapshot(watcher)
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
            await snapshot(stream)
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
                await snapshot(stream)
                assert await stream.next_comment(seconds(5)) == "ping"
                assert await stream.next_comment(seconds(5)) == "ping"


async def test_heartbeats_asked_for_as_events_say_how_often_they_come(server: Start) -> None:
    """With `?ping=1` (as EventSource clients ask, which cannot see comments) each stream
    opens with `event: ping` saying the interval, and sends the same, not comments, at it;
    `ping=` of anything but a flag is refused by name."""
    srv = server(JOBS_HEARTBEAT="0.1")
    async with srv.client() as api:
        job_id = await api.create_job()
        one = await SSEStream.open(f"{srv.base_url}/api/jobs/{job_id}/events?ping=1")
        every = await all_stream(srv, "?ping=1")
        async with one, every:
            for stream in (one, every):
                opening = await stream.next_event(seconds(5))
                assert (opening.event, opening.json(), opening.id) == ("ping", {"every": 0.1}, "")
                await snapshot(stream)
                for _ in range(2):
                    beat = await stream.next_event(seconds(5))
                    assert (beat.event, beat.json()) == ("ping", {"every": 0.1})
                assert stream.comments == []
        refused = await api.get(f"/api/jobs/{job_id}/events?ping=maybe")
        assert refused.status_code == 422
        assert refused.json()["errors"][0]["field"] == "ping"


async def test_job_type_filter_sends_only_that_type(server: Start) -> None:
    """`?jobType=` limits the snapshot and the live changes to jobs of that type."""
    srv = server()
    async with srv.client() as api:
        agent = await api.create_job(jobType="llm_agent")
        plain = await api.create_job()
        async with await all_stream(srv, "?jobType=llm_agent") as stream:
            jobs, _ = await snapshot(stream)
            assert [job["jobId"] for job in jobs] == [agent]
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
            jobs, _ = await snapshot(stream)
            assert jobs == []  # no job is processing yet: `synced` alone
            await api.update(moving, status="processing", progress=10)
            entered = await next_job(stream)
            assert (entered["jobId"], entered["status"]) == (moving, "processing")
            await api.complete(moving)
            left = await next_job(stream)
            assert (left["jobId"], left["status"]) == (moving, "completed")
            await api.update(waiting, message="still queued")  # never matches: not sent
            await api.update(marker, status="processing")
            assert (await next_job(stream))["jobId"] == marker


async def test_newlines_in_job_text_stay_inside_one_data_line(shared_server: Start) -> None:
    """Newlines and SSE-looking text in messages and metadata arrive JSON-escaped, not injected."""
    srv = shared_server()
    hostile = "line one\n\nevent: removed\ndata: {}\r\nid: 999\rretry: 1\n: ping\u2028\u0085end"
    async with srv.client() as api:
        job_id = await api.create_job(message=hostile, metadata={"note\nkey": hostile})
        async with await job_stream(srv, job_id) as stream:
            first = await stream.next_event(seconds(5))
            await stream.expect_synced("1")
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
            await snapshot(stream)
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
            jobs, _ = await snapshot(stream)
            assert sorted(job["jobId"] for job in jobs) == sorted(ids)


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
            jobs, synced = await snapshot(stream)
            assert [job["jobId"] for job in jobs] == [busy]
            cursor = synced.id
        await api.create_job(message="queued, never processing")
        await api.update(busy, progress=80)
        async with await all_stream(srv, f"?status=processing&lastEventId={cursor}") as resumed:
            jobs, _ = await snapshot(resumed)
            assert [(job["jobId"], job["progress"]) for job in jobs] == [(busy, 80)]
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
            _, synced = await snapshot(stream)
            cursor = synced.id
            await api.complete(doomed)
            await read_until(stream, doomed, "completed")
            assert (await stream.next_event(seconds(10))).event == "removed"
        async with await all_stream(srv, headers={"Last-Event-ID": cursor}) as resumed:
            reset = await resumed.next_event(seconds(5))
            assert (reset.event, reset.id, reset.has_id) == ("reset", "", True)
            jobs, _ = await snapshot(resumed)
            assert [job["jobId"] for job in jobs] == [kept]


# --- the protocol's edges: media type, HEAD, reset and synced, the snapshot budget -----------


async def test_both_streams_are_exactly_text_event_stream(server: Start) -> None:
    """Both SSE routes answer with a Content-Type of exactly `text/event-stream`, no charset."""
    srv = server()
    async with srv.client() as api:
        job_id = await api.create_job()
        async with await job_stream(srv, job_id) as one, await all_stream(srv) as every:
            assert (one.status, every.status) == (200, 200)
            assert one.headers["content-type"] == "text/event-stream"
            assert every.headers["content-type"] == "text/event-stream"


async def test_head_answers_the_stream_headers_and_holds_no_stream(server: Start) -> None:
    """HEAD on a stream is 200, its headers and a complete empty answer; 204 when done; 404."""
    srv = server()
    # One connection: a request is read only once the answer before it is complete, so a
    # HEAD that held its stream open would leave every request after it hanging.
    async with srv.client(limits=httpx2.Limits(max_connections=1)) as api:
        job_id = await api.create_job()
        done = await api.create_job()
        await api.complete(done)
        for path in (f"/api/jobs/{job_id}/events", "/api/jobs/events"):
            response = await api.head(path)
            assert response.status_code == 200, path
            assert response.headers["content-type"] == "text/event-stream"
            assert response.headers["cache-control"] == "no-cache"
            assert response.content == b""
            assert await api.metric("jobcast_connections", transport="sse") == 0
        finished = await api.head(f"/api/jobs/{done}/events", headers={"Last-Event-ID": "2"})
        assert (finished.status_code, finished.content) == (204, b"")
        assert (await api.head("/api/jobs/job_doesnotexist/events")).status_code == 404
        assert await api.metric("jobcast_connections", transport="sse") == 0


async def reset_then_resume(srv: RunningServer, cursor: str) -> list[dict[str, Any]]:
    """Connect with a `cursor` that must be reset; the snapshot's jobs, once `synced`'s id has
    been checked to resume with no reset and, nothing having changed, nothing but `synced`."""
    async with await all_stream(srv, last_event_id=cursor) as stream:
        reset = await stream.next_event(seconds(5))
        assert (reset.event, reset.id, reset.has_id) == ("reset", "", True), cursor
        assert stream.order[:2] == ["retry", "event"]  # first, before the snapshot
        jobs, synced = await snapshot(stream)
    assert synced.id not in ("", cursor)
    async with await all_stream(srv, last_event_id=synced.id) as resumed:
        assert resumed.status == 200
        await resumed.expect_synced(synced.id)  # the first event: no reset, no job
    return jobs


async def test_a_reset_ends_with_a_synced_cursor_that_never_resets_again(server: Start) -> None:
    """After `reset` (empty id) and the snapshot, `synced`'s id resumes without another reset."""
    srv = server()
    async with srv.client() as api:
        for cursor in ("1-1", "garbage"):  # no jobs at all: reset, then synced alone
            assert await reset_then_resume(srv, cursor) == [], cursor
        ids = [await api.create_job(), await api.create_job()]
        for cursor in ("1-1", "garbage"):
            jobs = await reset_then_resume(srv, cursor)
            assert sorted(job["jobId"] for job in jobs) == sorted(ids), cursor


async def test_a_client_that_leaves_after_reset_gets_the_whole_snapshot_again(
    server: Start,
) -> None:
    """An EventSource that reconnects between `reset` and `synced` gets every job and no reset."""
    srv = server()
    async with srv.client() as api:
        ids = [await api.create_job(), await api.create_job()]
        async with await all_stream(srv, last_event_id="1-1") as stream:
            reset = await stream.next_event(seconds(5))
            assert reset.event == "reset"
        # A browser that loses the connection right after `reset` holds the id it had when
        # `reset` was dispatched (more of the stream may have reached this reader since):
        # reset's empty id cleared "1-1", so the reconnect sends no Last-Event-ID.
        held = reset.id
        assert held == ""
        async with await all_stream(srv, last_event_id=held) as again:
            jobs, synced = await snapshot(again)  # job events only: no reset
            assert sorted(job["jobId"] for job in jobs) == sorted(ids)
            assert synced.id != ""


async def test_all_jobs_snapshots_past_the_clients_budget_get_429(server: Start) -> None:
    """Past JOBS_SNAPSHOT_RATE's burst an all-jobs stream gets 429 and Retry-After; per-job not."""
    srv = server(JOBS_SNAPSHOT_RATE="0.1")  # bursts are 10 s worth: one snapshot
    async with srv.client() as api:
        job_id = await api.create_job()
        for _ in range(3):
            assert (await api.head("/api/jobs/events")).status_code == 200
        async with await all_stream(srv) as first:
            assert first.status == 200
            async with await all_stream(srv) as second:
                assert second.status == 429
                assert second.headers["content-type"] == "application/problem+json"
                assert second.headers["retry-after"].isdigit()
                assert int(second.headers["retry-after"]) >= 1
                problem = json.loads(await second.body(seconds(5)))
            assert problem["status"] == 429
            assert "JOBS_SNAPSHOT_RATE" in problem["detail"]
            # HEAD asks whether a stream would be admitted, and spends nothing.
            refused = await api.head("/api/jobs/events")
            assert refused.status_code == 429
            assert refused.headers["retry-after"] == second.headers["retry-after"]
            for _ in range(3):
                async with await job_stream(srv, job_id) as one:
                    assert one.status == 200
                    assert (await next_job(one))["jobId"] == job_id
                    await one.expect_synced("1")
