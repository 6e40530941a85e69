"""The WebSocket protocol of /api/jobs/ws against the real server (SPEC section 4)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.conftest import seconds

if TYPE_CHECKING:
    from .conftest import JobsClient, RunningServer

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

Start = Callable[..., "RunningServer"]


@asynccontextmanager
async def socket_to(srv: RunningServer) -> AsyncIterator[ClientConnection]:
    async with connect(srv.ws_url, open_timeout=seconds(5), close_timeout=seconds(2)) as ws:
        yield ws


async def send(ws: ClientConnection, frame: dict[str, Any]) -> None:
    await ws.send(json.dumps(frame))


async def receive(ws: ClientConnection) -> dict[str, Any]:
    """The next frame, decoded; fails if none comes in time."""
    with anyio.fail_after(seconds(5)):
        text = await ws.recv()
    assert isinstance(text, str), "the server sends text frames"
    frame: dict[str, Any] = json.loads(text)
    return frame


async def subscribe(ws: ClientConnection, job_id: str, **extra: Any) -> dict[str, Any]:
    await send(ws, {"type": "subscribe", "jobId": job_id, **extra})
    subscribed = await receive(ws)
    assert subscribed["type"] == "subscribed", subscribed
    return subscribed


async def subscribe_all(ws: ClientConnection, **extra: Any) -> dict[str, Any]:
    await send(ws, {"type": "subscribe", "all": True, **extra})
    subscribed = await receive(ws)
    assert (subscribed["type"], subscribed["all"]) == ("subscribed", True), subscribed
    return subscribed


async def next_job(ws: ClientConnection) -> dict[str, Any]:
    frame = await receive(ws)
    assert frame["type"] == "job", frame
    job: dict[str, Any] = frame["job"]
    return job


async def expect_synced(ws: ClientConnection, job_id: str, version: int) -> None:
    """The next frame ends `job_id`'s snapshot: the client then holds `version`."""
    assert await receive(ws) == {"type": "synced", "jobId": job_id, "version": version}


async def all_snapshot(ws: ClientConnection, subscribed: dict[str, Any]) -> list[dict[str, Any]]:
    """The jobs of an all-jobs snapshot, up to its `synced`, whose cursor is `subscribed`'s."""
    jobs = []
    while (frame := await receive(ws))["type"] == "job":
        jobs.append(frame["job"])
    assert frame == {"type": "synced", "all": True, "cursor": subscribed["cursor"]}, frame
    return jobs


async def error_frame(ws: ClientConnection, code: str, **about: Any) -> dict[str, Any]:
    """The next frame, an `error` with `code` and, for a subscription, what it concerns."""
    error = await receive(ws)
    concerns = {key: error.get(key) for key in ("jobId", "all")}
    assert (error["type"], error.get("code"), bool(error.get("error")), concerns) == (
        "error",
        code,
        True,
        {"jobId": about.get("jobId"), "all": about.get("all")},
    ), error
    return error


PONG = {"type": "pong"}


async def wait_for_ws_connections(api: JobsClient, count: int) -> None:
    await api.wait_for_metric("jobcast_connections", lambda value: value == count, transport="ws")


async def test_subscribe_sends_subscribed_then_snapshot_then_changes(shared_server: Start) -> None:
    """Subscribing to a job answers `subscribed`, then its current state, then each change."""
    srv = shared_server()
    async with srv.client() as api, socket_to(srv) as ws:
        job_id = await api.create_job(message="start")
        await api.update(job_id, progress=5)
        subscribed = await subscribe(ws, job_id)
        assert (subscribed["jobId"], subscribed["version"]) == (job_id, 2)
        assert await next_job(ws) == await api.job(job_id)
        await expect_synced(ws, job_id, 2)
        for progress in (10, 20, 30):
            updated = await api.update(job_id, status="processing", progress=progress)
            assert await next_job(ws) == updated


async def test_job_frames_come_in_version_order_under_a_burst(shared_server: Start) -> None:
    """A burst of updates reaches the socket in increasing version order, ending at the last."""
    srv = shared_server()
    async with srv.client() as api, socket_to(srv) as ws:
        job_id = await api.create_job()
        await subscribe(ws, job_id)
        for progress in range(40):
            await api.update(job_id, progress=progress)
        await api.complete(job_id)
        # The snapshot and `synced` went out with `subscribed`, before the burst began.
        versions = [(await next_job(ws))["version"]]
        await expect_synced(ws, job_id, 1)
        while versions[-1] < 42:
            versions.append((await next_job(ws))["version"])
        assert versions == sorted(set(versions))
        assert versions[0] == 1


@pytest.mark.parametrize(("since", "expected"), [(2, 4), (4, None)])
async def test_subscribe_since_resumes(
    shared_server: Start, since: int, expected: int | None
) -> None:
    """`since` sends only the current state if it is newer, nothing if the client has it."""
    srv = shared_server()
    async with srv.client() as api, socket_to(srv) as ws:
        job_id = await api.create_job()
        for progress in (1, 2, 3):
            await api.update(job_id, progress=progress)
        assert (await subscribe(ws, job_id, since=since))["version"] == 4
        if expected is not None:
            assert (await next_job(ws))["version"] == expected
        await expect_synced(ws, job_id, 4)
        await api.update(job_id, progress=50)
        job = await next_job(ws)
        assert (job["version"], job["progress"]) == (5, 50)


async def test_subscription_ends_after_the_terminal_state(server: Start) -> None:
    """After a job's terminal frame its subscription is over: its later removal is not sent."""
    srv = server(JOBS_TERMINAL_TTL="0.2")
    async with srv.client() as api, socket_to(srv) as ws, socket_to(srv) as watcher:
        job_id = await api.create_job()
        marker = await api.create_job()
        await subscribe(ws, job_id)
        await next_job(ws)
        await expect_synced(ws, job_id, 1)
        await subscribe(ws, marker)
        await next_job(ws)
        await expect_synced(ws, marker, 1)
        assert len(await all_snapshot(watcher, await subscribe_all(watcher))) == 2
        completed = await api.complete(job_id)
        assert await next_job(ws) == completed
        assert await next_job(watcher) == completed
        removed = await receive(watcher)
        assert removed == {"type": "removed", "jobId": job_id, "cursor": removed["cursor"]}
        await api.update(marker, progress=1)
        frame = await receive(ws)
        assert (frame["type"], frame["job"]["jobId"]) == ("job", marker)


async def test_subscribe_to_a_finished_job_already_known_sends_nothing_more(
    shared_server: Start,
) -> None:
    """Subscribing with `since` = a finished job's version answers `subscribed` and nothing else."""
    srv = shared_server()
    async with srv.client() as api, socket_to(srv) as ws:
        job_id = await api.create_job()
        await api.complete(job_id)
        marker = await api.create_job()
        known = await subscribe(ws, job_id, since=2)
        assert (known["version"], known.get("final")) == (2, True)
        # Neither a snapshot nor `synced`: the next frame answers the next subscription.
        await subscribe(ws, marker)
        assert (await next_job(ws))["jobId"] == marker
        await expect_synced(ws, marker, 1)


async def test_subscribe_all_with_filters(server: Start) -> None:
    """An all-jobs subscription with jobType and status sends only matching jobs, and leavers."""
    srv = server()
    async with srv.client() as api, socket_to(srv) as ws:
        agent = await api.create_job(jobType="llm_agent")
        busy_agent = await api.create_job(jobType="llm_agent")
        await api.update(busy_agent, status="processing")
        other = await api.create_job(jobType="generic")
        await api.update(other, status="processing")
        subscribed = await subscribe_all(ws, jobType="llm_agent", status="processing")
        assert (subscribed["jobType"], subscribed["status"], subscribed["reset"]) == (
            "llm_agent",
            "processing",
            False,
        )
        assert [job["jobId"] for job in await all_snapshot(ws, subscribed)] == [busy_agent]
        await api.update(other, progress=3)  # wrong type
        await api.update(agent, message="still queued")  # wrong status
        await api.update(agent, status="processing")
        entered = await next_job(ws)
        assert (entered["jobId"], entered["status"]) == (agent, "processing")
        await api.complete(busy_agent)
        left = await next_job(ws)
        assert (left["jobId"], left["status"]) == (busy_agent, "completed")


async def test_subscribe_all_since_a_cursor_sends_only_what_changed(server: Start) -> None:
    """`since` with a cursor from an earlier subscription resumes: only later changes come."""
    srv = server()
    async with srv.client() as api:
        quiet = await api.create_job()
        busy = await api.create_job()
        async with socket_to(srv) as ws:
            subscribed = await subscribe_all(ws)
            jobs = await all_snapshot(ws, subscribed)
            assert sorted(job["jobId"] for job in jobs) == sorted([quiet, busy])
            cursor = subscribed["cursor"]  # what `synced` said the client holds
        await api.update(busy, progress=70)
        fresh = await api.create_job()
        async with socket_to(srv) as ws:
            subscribed = await subscribe_all(ws, since=cursor)
            assert subscribed["reset"] is False
            assert subscribed["cursor"] != cursor  # the feed moved on
            jobs = await all_snapshot(ws, subscribed)
            assert [(job["jobId"], job["version"]) for job in jobs] == [(busy, 2), (fresh, 1)]
            await api.update(quiet, progress=1)
            assert (await next_job(ws))["jobId"] == quiet  # it was not re-sent before


async def test_subscribe_all_with_an_unusable_cursor_resets(server: Start) -> None:
    """A `since` cursor the server cannot resume from is flagged `reset`; the full state follows."""
    srv = server()
    async with srv.client() as api, socket_to(srv) as ws:
        ids = {await api.create_job(), await api.create_job()}
        subscribed = await subscribe_all(ws, since="1-1")
        assert subscribed["reset"] is True
        jobs = await all_snapshot(ws, subscribed)
        assert sorted(job["jobId"] for job in jobs) == sorted(ids)
        # Digits str.isdigit() takes and int() refuses: as unusable, on the same socket.
        superscript = await subscribe_all(ws, since="1-\u00b2")
        assert superscript["reset"] is True
        assert len(await all_snapshot(ws, superscript)) == 2
        # The cursor `synced` gave resumes: no second reset, and nothing changed since.
        again = await subscribe_all(ws, since=subscribed["cursor"])
        assert (again["reset"], again["cursor"]) == (False, subscribed["cursor"])
        assert await all_snapshot(ws, again) == []


async def test_unsubscribe_stops_the_events(shared_server: Start) -> None:
    """After `unsubscribed`, changes to that job are no longer sent; others still are."""
    srv = shared_server()
    async with srv.client() as api, socket_to(srv) as ws:
        dropped = await api.create_job()
        kept = await api.create_job()
        await subscribe(ws, dropped)
        await next_job(ws)
        await expect_synced(ws, dropped, 1)
        await subscribe(ws, kept)
        await next_job(ws)
        await expect_synced(ws, kept, 1)
        await send(ws, {"type": "unsubscribe", "jobId": dropped})
        assert await receive(ws) == {"type": "unsubscribed", "jobId": dropped}
        await api.update(dropped, progress=99)
        await api.update(kept, progress=1)
        assert (await next_job(ws))["jobId"] == kept


async def test_one_socket_gets_a_change_once_however_many_subscriptions_match(
    server: Start,
) -> None:
    """A job matched by a per-job and an all-jobs subscription on one socket is sent once."""
    srv = server()
    async with srv.client() as api, socket_to(srv) as ws:
        job_id = await api.create_job()
        marker = await api.create_job()
        await subscribe(ws, job_id)
        assert (await next_job(ws))["jobId"] == job_id
        await expect_synced(ws, job_id, 1)
        snapshot = await all_snapshot(ws, await subscribe_all(ws))
        assert sorted(job["jobId"] for job in snapshot) == sorted([job_id, marker])
        await api.update(job_id, progress=5)
        await api.update(marker, progress=5)
        first, second = await next_job(ws), await next_job(ws)
        assert (first["jobId"], first["version"], second["jobId"]) == (job_id, 2, marker)


async def test_ping_gets_pong(shared_server: Start) -> None:
    """An application-level ping frame is answered with a pong frame."""
    srv = shared_server()
    async with socket_to(srv) as ws:
        for _ in range(2):
            await send(ws, {"type": "ping"})
            assert await receive(ws) == {"type": "pong"}


MALFORMED: list[str | bytes] = [
    "not json",
    "[1, 2, 3]",
    '"subscribe"',
    '{"type": "dance"}',
    '{"no": "type"}',
    '{"type": "subscribe"}',
    '{"type": "subscribe", "jobId": 7}',
    '{"type": "subscribe", "jobId": "job_x", "since": -1}',
    '{"type": "subscribe", "jobId": "job_x", "extra": 1}',
    '{"type": "subscribe", "all": true, "status": "sleeping"}',
    '{"type": "subscribe", "all": true, "owner": "a b"}',
    '{"type": "unsubscribe"}',
    b"\x00\x01binary",
]


async def test_malformed_frames_get_an_error_and_the_socket_stays_usable(
    shared_server: Start,
) -> None:
    """Each frame outside the protocol gets an `error` frame; the socket keeps working after it."""
    srv = shared_server()
    async with srv.client() as api, socket_to(srv) as ws:
        job_id = await api.create_job()
        await subscribe(ws, job_id)
        await next_job(ws)
        await expect_synced(ws, job_id, 1)
        answers = {}
        for frame in MALFORMED:
            await ws.send(frame)
            reply = await receive(ws)
            await send(ws, {"type": "ping"})
            answers[frame] = (
                reply["type"],
                reply.get("code"),
                bool(reply.get("error")),
                await receive(ws),
            )
        expected = ("error", "bad_request", True, PONG)
        wrong = {frame: got for frame, got in answers.items() if got != expected}
        assert wrong == {}, "frames not answered with a bad_request error (then pong)"
        updated = await api.update(job_id, progress=3)  # the subscription survived them all
        assert await next_job(ws) == updated


async def test_subscribing_to_an_unknown_job_gets_an_error_frame(shared_server: Start) -> None:
    """A subscription to an id that does not exist gets a `not_found` error naming it."""
    srv = shared_server()
    async with socket_to(srv) as ws:
        await send(ws, {"type": "subscribe", "jobId": "job_nope"})
        await error_frame(ws, "not_found", jobId="job_nope")
        await send(ws, {"type": "ping"})
        assert await receive(ws) == {"type": "pong"}


async def test_vanished_client_is_cleaned_up(server: Start) -> None:
    """A WebSocket client that drops its TCP connection is noticed: the gauge returns to 0."""
    srv = server()
    async with srv.client() as api:
        job_id = await api.create_job()
        sockets = []
        for _ in range(3):
            ws = await connect(srv.ws_url, open_timeout=seconds(5))
            await subscribe(ws, job_id)
            await next_job(ws)
            sockets.append(ws)
        await wait_for_ws_connections(api, 3)
        for ws in sockets:
            ws.transport.abort()
        await wait_for_ws_connections(api, 0)
        await api.update(job_id, progress=1)  # publishing to nobody is fine
        async with socket_to(srv) as ws:
            await subscribe(ws, job_id)
            assert (await next_job(ws))["version"] == 2


async def test_subscribe_all_sends_every_job_even_past_the_subscriber_backlog(
    server: Start,
) -> None:
    """Subscribing to all jobs sends each current job, even more than JOBS_SUBSCRIBER_BACKLOG."""
    srv = server(JOBS_SUBSCRIBER_BACKLOG="5")
    async with srv.client() as api, socket_to(srv) as ws:
        ids = {await api.create_job() for _ in range(12)}
        jobs = await all_snapshot(ws, await subscribe_all(ws))
        assert sorted(job["jobId"] for job in jobs) == sorted(ids)


async def test_compression_is_offered_only_when_asked_for(server: Start) -> None:
    """A client offering permessage-deflate (browsers do) gets none by default: a deflate
    context per socket costs more than the rest of the socket. JOBS_WS_COMPRESSION=1 agrees."""
    for setting, expected in (({}, None), ({"JOBS_WS_COMPRESSION": "1"}, "permessage-deflate")):
        srv = server(**setting)
        async with connect(srv.ws_url, open_timeout=seconds(5), compression="deflate") as ws:
            assert ws.response is not None
            offered = ws.response.headers.get("Sec-WebSocket-Extensions")
            assert (offered or "").split(";")[0] == (expected or "")
            await ws.send(json.dumps({"type": "ping"}))
            assert json.loads(await ws.recv()) == {"type": "pong"}


async def test_a_compressed_socket_gets_live_changes(server: Start) -> None:
    """The frames live changes share between sockets are uncompressed; a socket that
    agreed to permessage-deflate is sent its own, through the WebSocket library."""
    srv = server(JOBS_WS_COMPRESSION="1")
    async with (
        srv.client() as api,
        connect(srv.ws_url, open_timeout=seconds(5), compression="deflate") as ws,
    ):
        job_id = await api.create_job()
        assert len(await all_snapshot(ws, await subscribe_all(ws))) == 1
        for progress in (10, 20):
            updated = await api.update(job_id, progress=progress)
            assert await next_job(ws) == updated


async def test_a_subscription_to_no_job_id_is_refused_and_the_others_go_on(server: Start) -> None:
    """`subscribe` with a jobId that is no job id (`*`) gets `bad_request`; `all` still delivers."""
    srv = server()
    async with srv.client() as api, socket_to(srv) as ws:
        job_id = await api.create_job()
        assert len(await all_snapshot(ws, await subscribe_all(ws))) == 1
        await send(ws, {"type": "subscribe", "jobId": "*"})
        await error_frame(ws, "bad_request", jobId="*")
        updated = await api.update(job_id, progress=12)
        assert await next_job(ws) == updated


async def test_all_jobs_subscriptions_past_the_clients_budget_get_rate_limited(
    server: Start,
) -> None:
    """Past JOBS_SNAPSHOT_RATE's burst `all` gets a `rate_limited` error; the socket goes on."""
    srv = server(JOBS_SNAPSHOT_RATE="0.1")  # bursts are 10 s worth: one snapshot
    async with srv.client() as api, socket_to(srv) as first, socket_to(srv) as second:
        job_id = await api.create_job()
        assert len(await all_snapshot(first, await subscribe_all(first))) == 1
        await send(second, {"type": "subscribe", "all": True})
        error = await error_frame(second, "rate_limited", all=True)
        assert "JOBS_SNAPSHOT_RATE" in error["error"]
        await send(second, {"type": "ping"})
        assert await receive(second) == PONG
        # Per-job subscriptions are not limited, on the same socket.
        assert (await subscribe(second, job_id))["version"] == 1
        assert (await next_job(second))["jobId"] == job_id
        await expect_synced(second, job_id, 1)
