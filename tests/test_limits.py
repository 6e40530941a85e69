"""Limits: metadata and text sizes, WebSocket frames, subscriptions and rates, open streams."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from app.errors import RateLimited, TooManyStreams
from app.main import create_app
from app.settings import Settings
from app.streams.limits import StreamSlots, TokenBucket
from app.streams.mailbox import Mailbox
from tests.conftest import local_client


def app_client(**settings: Any) -> TestClient:
    return local_client(create_app(Settings(**settings)))


@pytest.fixture
def small() -> Iterator[TestClient]:
    """A server with small limits, so tests can reach them quickly."""
    with app_client(
        max_metadata_bytes=100,
        max_text_length=20,
        ws_max_frame_bytes=1024,
        ws_max_subscriptions=3,
        ws_rate=2,
        max_streams=2,
    ) as client:
        yield client


def _receive_until_closed(socket: Any, frames: int = 200) -> tuple[list[Any], WebSocketDisconnect]:
    """Frames read until the server closes the socket (at most ``frames`` of them)."""
    seen = []
    for _ in range(frames):
        try:
            seen.append(socket.receive_json())
        except WebSocketDisconnect as closed:
            return seen, closed
    raise AssertionError(f"the socket sent {frames} frames and did not close")


# -- sizes ---------------------------------------------------------------------------------


def test_metadata_over_the_limit_is_422_naming_metadata(small: TestClient) -> None:
    """Metadata whose JSON exceeds JOBS_MAX_METADATA_BYTES is refused, naming the field."""
    response = small.post("/api/jobs", json={"metadata": {"blob": "x" * 200}})
    assert response.status_code == 422
    assert [error["field"] for error in response.json()["errors"]] == ["metadata"]


def test_merged_metadata_cannot_grow_past_the_limit(small: TestClient) -> None:
    """PATCHes that each add a little cannot grow a job's metadata past the limit."""
    job_id = small.post("/api/jobs", json={"metadata": {"a": "x" * 40}}).json()["jobId"]
    assert small.patch(f"/api/jobs/{job_id}", json={"metadata": {"b": "y" * 20}}).status_code == 200
    grown = small.patch(f"/api/jobs/{job_id}", json={"metadata": {"c": "z" * 40}})
    assert grown.status_code == 422
    assert grown.json()["errors"][0]["field"] == "metadata"
    job = small.get(f"/api/jobs/{job_id}").json()
    assert (job["version"], set(job["metadata"])) == (2, {"a", "b"})


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/jobs", {"message": "m" * 21}, "message"),
        ("/api/jobs/{id}", {"message": "m" * 21}, "message"),
        ("/api/jobs/{id}/complete", {"documentId": "d" * 21}, "documentId"),
        ("/api/jobs/{id}/fail", {"error": "e" * 21}, "error"),
    ],
)
def test_text_over_the_configured_length_is_422(
    small: TestClient, path: str, body: dict[str, str], field: str
) -> None:
    """Message, documentId and error longer than JOBS_MAX_TEXT_LENGTH are refused by name."""
    job_id = small.post("/api/jobs", json={"message": "m" * 20}).json()["jobId"]
    method = "PATCH" if path == "/api/jobs/{id}" else "POST"
    response = small.request(method, path.format(id=job_id), json=body)
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == field


# -- WebSocket -----------------------------------------------------------------------------


def test_frame_over_the_size_limit_closes_with_1009(small: TestClient) -> None:
    """A WebSocket frame over JOBS_WS_MAX_FRAME_BYTES closes the socket with 1009."""
    with small.websocket_connect("/api/jobs/ws") as socket:
        socket.send_text('{"type": "ping", "pad": "' + "x" * 2000 + '"}')
        _, closed = _receive_until_closed(socket)
    assert closed.code == 1009


def test_subscriptions_beyond_the_limit_get_an_error(small: TestClient) -> None:
    """The subscription past JOBS_WS_MAX_SUBSCRIPTIONS is refused with an error frame."""
    ids = [small.post("/api/jobs", json={}).json()["jobId"] for _ in range(4)]
    with small.websocket_connect("/api/jobs/ws") as socket:
        for job_id in ids[:3]:
            socket.send_json({"type": "subscribe", "jobId": job_id})
            assert socket.receive_json()["type"] == "subscribed"
            assert socket.receive_json()["type"] == "job"
            assert socket.receive_json()["type"] == "synced"
        socket.send_json({"type": "subscribe", "jobId": ids[3]})
        refused = socket.receive_json()
        assert (refused["type"], refused["code"], refused["jobId"]) == ("error", "too_many", ids[3])
        assert "at most 3 subscriptions" in refused["error"]
        # Re-subscribing to one it holds is not a new subscription.
        socket.send_json({"type": "subscribe", "jobId": ids[0], "since": 1})
        assert socket.receive_json()["type"] == "subscribed"


def test_flooding_gets_error_frames_then_a_1008_close(small: TestClient) -> None:
    """Frames over JOBS_WS_RATE get error frames; a client that keeps going is closed (1008)."""
    with small.websocket_connect("/api/jobs/ws") as socket:
        for _ in range(12):
            socket.send_json({"type": "ping"})
        replies = [socket.receive_json() for _ in range(12)]
        # The burst is five seconds' worth at 2 per second; the rest are refused.
        assert [reply["type"] for reply in replies] == ["pong"] * 10 + ["error"] * 2
        assert "too many messages" in replies[-1]["error"]
        for _ in range(60):
            socket.send_json({"type": "ping"})
        _, closed = _receive_until_closed(socket)
    assert closed.code == 1008


def test_socket_past_the_stream_limit_closes_with_1013(small: TestClient) -> None:
    """With every stream slot taken, a new socket is closed at once with 1013."""
    with small.websocket_connect("/api/jobs/ws"), small.websocket_connect("/api/jobs/ws"):
        with small.websocket_connect("/api/jobs/ws") as third:
            _, closed = _receive_until_closed(third)
        assert closed.code == 1013


def test_sse_past_the_stream_limit_is_503_with_retry_after(small: TestClient) -> None:
    """With every stream slot taken, an SSE request answers 503 problem+json and Retry-After."""
    job_id = small.post("/api/jobs", json={}).json()["jobId"]
    with small.websocket_connect("/api/jobs/ws"), small.websocket_connect("/api/jobs/ws"):
        response = small.get(f"/api/jobs/{job_id}/events")
        assert response.status_code == 503
        assert response.headers["retry-after"] == "5"
        assert response.json()["type"].endswith("too-many-streams")
        # HEAD answers what GET would.
        for path in (f"/api/jobs/{job_id}/events", "/api/jobs/events"):
            assert small.head(path).status_code == 503
    # The slots are free again once those sockets are gone.
    small.post(f"/api/jobs/{job_id}/complete", json={})
    assert small.get(f"/api/jobs/{job_id}/events").status_code == 200


# -- the pieces ----------------------------------------------------------------------------


def test_stream_slots_refuse_past_capacity_and_release_once() -> None:
    """Slots run out at capacity, and releasing one twice frees it only once."""
    slots = StreamSlots(2)
    first, _ = slots.acquire(), slots.acquire()
    with pytest.raises(TooManyStreams):
        slots.acquire()
    first.release()
    first.release()
    assert slots.in_use == 1
    slots.acquire()
    with pytest.raises(TooManyStreams):
        slots.acquire()


def test_a_snapshot_check_spends_nothing() -> None:
    """check_snapshot says what admit_snapshot would, for that client only, taking nothing."""
    slots = StreamSlots(10, snapshot_rate=0.1)  # a burst of one
    for _ in range(5):
        slots.check_snapshot("a")
    slots.admit_snapshot("a")
    with pytest.raises(RateLimited, match="JOBS_SNAPSHOT_RATE") as refused:
        slots.check_snapshot("a")
    assert refused.value.retry_after == 10
    slots.check_snapshot("b")


def test_token_bucket_allows_the_burst_then_the_rate() -> None:
    """A bucket gives its burst at once, then one token per 1/rate seconds."""
    now = [0.0]
    bucket = TokenBucket(rate=2, burst=3, clock=lambda: now[0])
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    now[0] += 0.5
    assert [bucket.take(), bucket.take()] == [True, False]
    now[0] += 100
    assert sum(bucket.take() for _ in range(10)) == 3


def test_replies_to_a_client_that_never_reads_are_bounded() -> None:
    """A mailbox holding `capacity` unsent replies closes instead of growing."""
    mailbox = Mailbox(capacity=3)
    for _ in range(5):
        mailbox.say('{"type":"pong"}')
    assert mailbox.closed == "overflow"
    assert len(mailbox.take_control()) == 3
