"""Long-polling GET /api/jobs/{jobId}?waitForVersion=N&timeout=S against the real server."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio
import httpx2
import pytest

from tests.conftest import seconds

if TYPE_CHECKING:
    from .conftest import JobsClient, RunningServer

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

Start = Callable[..., "RunningServer"]


async def long_poll(
    api: JobsClient, job_id: str, version: int, wait: float, into: list[httpx2.Response]
) -> None:
    response = await api.get(
        f"/api/jobs/{job_id}",
        params={"waitForVersion": version, "timeout": wait},
        timeout=wait + seconds(10),
    )
    into.append(response)


async def settle(api: JobsClient) -> None:
    """A full round trip to the server: requests sent before this one have been read."""
    assert (await api.get("/healthz")).status_code == 200


async def test_long_poll_answers_as_soon_as_a_change_lands(shared_server: Start) -> None:
    """A waiting long-poll returns the new state when another client changes the job."""
    srv = shared_server()
    async with srv.client() as api, srv.client() as worker:
        job_id = await api.create_job()
        responses: list[httpx2.Response] = []
        started = time.monotonic()
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(long_poll, api, job_id, 1, 30, responses)
            await settle(worker)
            updated = await worker.update(job_id, status="processing", progress=12)
        elapsed = time.monotonic() - started
        (response,) = responses
        assert response.status_code == 200
        assert response.json() == updated
        assert response.headers["etag"] == '"2"'
        assert elapsed < seconds(10), "answered on the change, not at the 30 s timeout"


async def test_one_change_wakes_every_waiting_long_poll(shared_server: Start) -> None:
    """Several clients long-polling the same job are all answered by one change."""
    srv = shared_server()
    async with srv.client() as api, srv.client() as worker:
        job_id = await api.create_job()
        responses: list[httpx2.Response] = []
        async with anyio.create_task_group() as tasks:
            for _ in range(5):
                tasks.start_soon(long_poll, api, job_id, 1, 30, responses)
            await settle(worker)
            updated = await worker.update(job_id, message="hello")
        assert [response.status_code for response in responses] == [200] * 5
        assert all(response.json() == updated for response in responses)


async def test_long_poll_waits_past_versions_it_already_has(shared_server: Start) -> None:
    """A long-poll for version 3 ignores the change to version 3 and answers with version 4."""
    srv = shared_server()
    async with srv.client() as api, srv.client() as worker:
        job_id = await api.create_job()
        await api.update(job_id, progress=1)
        responses: list[httpx2.Response] = []
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(long_poll, api, job_id, 3, 30, responses)
            await settle(worker)
            third = await worker.update(job_id, progress=2)
            assert third["version"] == 3
            fourth = await worker.update(job_id, progress=3)
        assert responses[0].json() == fourth


async def test_long_poll_returns_at_once_when_the_job_is_already_newer(
    shared_server: Start,
) -> None:
    """A long-poll for an older version is answered immediately with the current job."""
    srv = shared_server()
    async with srv.client() as api:
        job_id = await api.create_job()
        updated = await api.update(job_id, progress=40)
        started = time.monotonic()
        responses: list[httpx2.Response] = []
        await long_poll(api, job_id, 1, 30, responses)
        assert responses[0].status_code == 200
        assert responses[0].json() == updated
        assert time.monotonic() - started < seconds(10)


async def test_long_poll_times_out_with_304(shared_server: Start) -> None:
    """With no change during the wait, the long-poll answers 304 Not Modified after S seconds."""
    srv = shared_server()
    async with srv.client() as api:
        job_id = await api.create_job()
        await api.update(job_id, progress=5)
        started = time.monotonic()
        responses: list[httpx2.Response] = []
        await long_poll(api, job_id, 2, 0.5, responses)
        elapsed = time.monotonic() - started
        assert responses[0].status_code == 304
        assert responses[0].content == b""
        assert responses[0].headers["etag"] == '"2"'
        assert 0.45 <= elapsed < seconds(10)


async def test_long_poll_answers_410_when_the_job_is_cleaned_up_meanwhile(
    server: Start,
) -> None:
    """A long-poll on a finished job ends with 410 Gone as soon as the job is cleaned up."""
    srv = server(JOBS_TERMINAL_TTL="0.3")
    async with srv.client() as api:
        job_id = await api.create_job()
        await api.complete(job_id)
        started = time.monotonic()
        responses: list[httpx2.Response] = []
        await long_poll(api, job_id, 2, 30, responses)
        assert responses[0].status_code == 410
        assert responses[0].headers["content-type"] == "application/problem+json"
        assert time.monotonic() - started < seconds(10)


async def test_long_poll_refuses_bad_requests(shared_server: Start) -> None:
    """An unknown job is 404 and out-of-range parameters are 422, as problem+json."""
    srv = shared_server()
    async with srv.client() as api:
        job_id = await api.create_job()
        cases: list[tuple[str, dict[str, Any], int]] = [
            ("job_unknown", {"waitForVersion": 1, "timeout": 1}, 404),
            (job_id, {"waitForVersion": -1}, 422),
            (job_id, {"waitForVersion": 1, "timeout": 61}, 422),
            (job_id, {"waitForVersion": 1, "timeout": 0}, 422),
            (job_id, {"waitForVersion": "soon"}, 422),
        ]
        for target, params, status in cases:
            response = await api.get(f"/api/jobs/{target}", params=params)
            assert response.status_code == status, params
            assert response.headers["content-type"] == "application/problem+json"


async def test_a_long_poll_whose_client_leaves_stops_waiting(server: Start) -> None:
    """A client that hangs up on a long-poll ends it at once (counted as 499, client closed),
    so nothing waits for a change nobody will read and shutdown is not held by it."""
    srv = server()
    async with srv.client() as api:
        job_id = await api.create_job()
        async with await anyio.connect_tcp("127.0.0.1", srv.port) as connection:
            await connection.send(
                f"GET /api/jobs/{job_id}?waitForVersion=1&timeout=60 HTTP/1.1\r\n"
                "Host: 127.0.0.1\r\n\r\n".encode()
            )
            await settle(api)  # the long-poll has been read and is waiting
        await api.wait_for_metric(
            "jobcast_request_duration_seconds_count",
            lambda count: count == 1,
            method="GET",
            route="/api/jobs/{jobId}",
            status="499",
        )
    started = time.monotonic()
    srv.stop()
    assert time.monotonic() - started < seconds(3)
    assert "CancelledError" not in srv.log()
