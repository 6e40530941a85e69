"""Security and limits on the real server: tokens on streams, Origin, stream and rate limits.

Every server here runs with ``JOBS_API_KEY``: writes carry the key, and
streams are opened the way a browser would, with ``?token=``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Origin

from tests.conftest import seconds

from .sse_reader import SSEStream

if TYPE_CHECKING:
    from .conftest import JobsClient, RunningServer

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

Start = Callable[..., "RunningServer"]
KEY = "e2e-key-0123456789abcdefghij0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}


def keyed(server: Start, **settings: str) -> RunningServer:
    return server(JOBS_API_KEY=KEY, **settings)


async def create(api: JobsClient, **body: Any) -> dict[str, Any]:
    response = await api.post("/api/jobs", json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def mint(api: JobsClient, **body: Any) -> str:
    response = await api.post("/api/tokens", json=body)
    assert response.status_code == 200, response.text
    token: str = response.json()["token"]
    return token


async def receive(ws: ClientConnection) -> dict[str, Any]:
    with anyio.fail_after(seconds(5)):
        text = await ws.recv()
    frame: dict[str, Any] = json.loads(text)
    return frame


async def read_until_closed(
    ws: ClientConnection, frames: int = 500
) -> tuple[list[dict[str, Any]], int | None]:
    """Frames read until the server closes the socket, and its close code (None: no frame)."""
    replies: list[dict[str, Any]] = []
    with anyio.fail_after(seconds(10)):
        for _ in range(frames):
            try:
                replies.append(json.loads(await ws.recv()))
            except ConnectionClosed as closed:
                return replies, closed.rcvd.code if closed.rcvd is not None else None
    raise AssertionError("the socket stayed open")


async def closed_code(ws: ClientConnection) -> int | None:
    """Read until the server closes the socket; its close code."""
    return (await read_until_closed(ws))[1]


async def test_job_token_from_create_streams_that_job_over_sse(server: Start) -> None:
    """The token POST /api/jobs answers opens that job's SSE stream as ?token=, and only it."""
    srv = keyed(server)
    async with srv.client(headers=AUTH) as api:
        created = await create(api, message="first")
        other = await create(api)
        job_id, token = created["jobId"], created["token"]
        url = f"{srv.base_url}/api/jobs/{job_id}/events?token={token}"
        async with await SSEStream.open(url) as stream:
            assert stream.status == 200
            first = await stream.next_event(seconds(5))
            assert first.json()["message"] == "first"
            await stream.expect_synced("1")
            await api.complete(job_id, message="done")
            events = await stream.events_until_end(seconds(5))
            assert events[-1].json()["status"] == "completed"
        refused = await SSEStream.open(
            f"{srv.base_url}/api/jobs/{other['jobId']}/events?token={token}"
        )
        async with refused:
            assert refused.status == 403
        anonymous = await SSEStream.open(f"{srv.base_url}/api/jobs/{job_id}/events")
        async with anonymous:
            assert anonymous.status == 401
            assert anonymous.headers["www-authenticate"].startswith("Bearer")


async def test_owner_token_streams_exactly_its_owners_jobs(server: Start) -> None:
    """The all-jobs stream under an owner token sends that owner's jobs and no one else's."""
    srv = keyed(server)
    async with srv.client(headers=AUTH) as api:
        mine = (await create(api, owner="alice"))["jobId"]
        theirs = (await create(api, owner="bob"))["jobId"]
        token = await mint(api, owner="alice")
        url = f"{srv.base_url}/api/jobs/events?token={token}"
        async with await SSEStream.open(url) as stream:
            assert stream.status == 200
            snapshot, _ = await stream.until_synced(seconds(5))
            assert [event.json()["jobId"] for event in snapshot] == [mine]
            await api.update(theirs, progress=50)
            await api.update(mine, progress=60)
            event = await stream.next_event(seconds(5))
            assert (event.json()["jobId"], event.json()["progress"]) == (mine, 60)


async def test_expiring_token_ends_the_stream_and_cannot_reopen_it(server: Start) -> None:
    """A stream opened with a 1 s token ends cleanly when it expires; reopening it is 401."""
    srv = keyed(server, JOBS_HEARTBEAT="0.2")
    async with srv.client(headers=AUTH) as api:
        await create(api, owner="alice")
        token = await mint(api, owner="alice", ttl=1)
        url = f"{srv.base_url}/api/jobs/events?token={token}"
        async with await SSEStream.open(url) as stream:
            assert stream.status == 200
            events = await stream.events_until_end(seconds(5))
            assert [event.event for event in events] == ["job", "synced"]
            assert stream.ended, "the stream ended with a complete response"
        async with await SSEStream.open(url) as again:
            assert again.status == 401
            assert b"expired" in await again.body(seconds(5))


async def test_websocket_reads_with_a_token_in_the_url(server: Start) -> None:
    """A socket opened with ?token= subscribes to its job; other jobs and `all` get errors."""
    srv = keyed(server)
    async with srv.client(headers=AUTH) as api:
        created = await create(api)
        other = await create(api)
        url = f"{srv.ws_url}?token={created['token']}"
        async with connect(url, open_timeout=seconds(5)) as ws:
            await ws.send(json.dumps({"type": "subscribe", "jobId": created["jobId"]}))
            assert (await receive(ws))["type"] == "subscribed"
            assert (await receive(ws))["job"]["jobId"] == created["jobId"]
            synced = await receive(ws)
            assert synced == {"type": "synced", "jobId": created["jobId"], "version": 1}
            await ws.send(json.dumps({"type": "subscribe", "jobId": other["jobId"]}))
            refused = await receive(ws)
            assert (refused["type"], refused["code"], refused["jobId"]) == (
                "error",
                "forbidden",
                other["jobId"],
            )
            await ws.send(json.dumps({"type": "subscribe", "all": True}))
            refused = await receive(ws)
            assert (refused["type"], refused["code"], refused["all"]) == (
                "error",
                "forbidden",
                True,
            )


async def test_websocket_without_credentials_is_refused_with_401(server: Start) -> None:
    """The handshake without a credential, while keys are configured, answers 401."""
    srv = keyed(server)
    with pytest.raises(InvalidStatus) as refused:
        async with connect(srv.ws_url, open_timeout=seconds(5)):
            pass
    assert refused.value.response.status_code == 401


async def test_websocket_from_a_foreign_origin_is_refused(server: Start) -> None:
    """A handshake whose Origin is not allowed answers 403; a listed origin connects."""
    srv = keyed(server, JOBS_CORS_ORIGINS="https://app.example.com")
    async with srv.client(headers=AUTH) as api:
        token = (await create(api))["token"]
    url = f"{srv.ws_url}?token={token}"
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url, origin=Origin("https://evil.example"), open_timeout=seconds(5)):
            pass
    assert refused.value.response.status_code == 403
    async with connect(
        url, origin=Origin("https://app.example.com"), open_timeout=seconds(5)
    ) as ws:
        await ws.send(json.dumps({"type": "ping"}))
        assert (await receive(ws)) == {"type": "pong"}


async def test_streams_past_the_limit_get_503_and_1013(server: Start) -> None:
    """With JOBS_MAX_STREAMS open, SSE answers 503 with Retry-After and a socket closes 1013."""
    srv = keyed(server, JOBS_MAX_STREAMS="2")
    async with srv.client(headers=AUTH) as api:
        token = await mint(api, owner="alice")
        url = f"{srv.base_url}/api/jobs/events?token={token}"
        async with await SSEStream.open(url) as one, await SSEStream.open(url) as two:
            assert (one.status, two.status) == (200, 200)
            async with await SSEStream.open(url) as third:
                assert third.status == 503
                assert third.headers["retry-after"].isdigit()
                assert third.headers["content-type"] == "application/problem+json"
            async with connect(f"{srv.ws_url}?token={token}", open_timeout=seconds(5)) as ws:
                assert await closed_code(ws) == 1013
        # Both streams are gone: a new one gets a slot again.
        await api.wait_for_metric("jobcast_connections", lambda v: v == 0, transport="sse")
        async with await SSEStream.open(url) as fourth:
            assert fourth.status == 200


async def test_websocket_flood_gets_errors_then_1008(server: Start) -> None:
    """Frames over JOBS_WS_RATE get error frames, and sustained flooding closes with 1008."""
    srv = keyed(server, JOBS_WS_RATE="5")
    async with srv.client(headers=AUTH) as api:
        token = (await create(api))["token"]
    async with connect(f"{srv.ws_url}?token={token}", open_timeout=seconds(5)) as ws:
        # Five seconds' worth is the burst; the frames after it are refused one by one.
        for _ in range(30):
            await ws.send('{"type":"ping"}')
        replies = [await receive(ws) for _ in range(30)]
        assert [reply["type"] for reply in replies[:25]] == ["pong"] * 25
        assert "too many messages" in replies[-1]["error"]
        assert replies[-1]["code"] == "rate_limited"
        for _ in range(200):
            await ws.send('{"type":"ping"}')
        _, code = await read_until_closed(ws)
    assert code == 1008


async def test_oversized_frame_closes_the_socket_with_1009(server: Start) -> None:
    """A frame over JOBS_WS_MAX_FRAME_BYTES is refused by the server with 1009."""
    srv = keyed(server, JOBS_WS_MAX_FRAME_BYTES="2048")
    async with srv.client(headers=AUTH) as api:
        token = (await create(api))["token"]
    async with connect(f"{srv.ws_url}?token={token}", open_timeout=seconds(5)) as ws:
        await ws.send('{"type":"ping","pad":"' + "x" * 4096 + '"}')
        assert await closed_code(ws) == 1009


async def test_newlines_cannot_inject_sse_fields_or_events(server: Start) -> None:
    """Newlines in a message or metadata stay inside one JSON data line: no forged event."""
    srv = keyed(server)
    forged = 'done\n\nevent: removed\ndata: {"jobId": "x"}\nid: 999\r\n\r\nretry: 1'
    async with srv.client(headers=AUTH) as api:
        created = await create(api, message=forged, metadata={"note\nevent: x": "a\rb\n\nc"})
        job_id, token = created["jobId"], created["token"]
        await api.complete(job_id, message=forged)
        url = f"{srv.base_url}/api/jobs/{job_id}/events?token={token}"
        async with await SSEStream.open(url) as stream:
            events = await stream.events_until_end(seconds(5))
    assert [event.event for event in events] == ["job", "synced"]
    job = events[0].json()
    assert job["message"] == forged
    assert job["metadata"] == {"note\nevent: x": "a\rb\n\nc"}
    assert events[0].id == str(job["version"])
    assert (events[1].id, events[1].data) == (str(job["version"]), "{}")
    assert stream.retry == 2000


async def test_tokens_and_keys_never_reach_the_log(server: Start) -> None:
    """URLs with ?token= are logged with the token blanked; an API key is never logged."""
    srv = keyed(server)
    async with srv.client(headers=AUTH) as api:
        created = await create(api)
        token = created["token"]
        response = await api.get(f"/api/jobs/{created['jobId']}", params={"token": token})
        assert response.status_code == 200
    async with srv.client() as anonymous:
        misplaced = await anonymous.get("/api/jobs", params={"token": KEY})
        assert misplaced.status_code == 401
    async with connect(f"{srv.ws_url}?token={token}", open_timeout=seconds(5)) as ws:
        await ws.send('{"type":"ping"}')
        await receive(ws)
    log = srv.log()
    assert "token=REDACTED" in log
    assert token not in log
    assert KEY not in log


async def test_public_routes_and_headers_on_the_real_server(server: Start) -> None:
    """Health and the page answer without a key, the page with its CSP; reads need one."""
    srv = keyed(server)
    async with srv.client() as anonymous:
        assert (await anonymous.get("/healthz")).status_code == 200
        page = await anonymous.get("/")
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert page.headers["referrer-policy"] == "no-referrer"
        assert (await anonymous.get("/api/jobs")).status_code == 401
        assert (await anonymous.get("/metrics")).status_code == 401
