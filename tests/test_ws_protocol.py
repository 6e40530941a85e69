"""WebSocket protocol details, through Starlette's TestClient."""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest
from starlette.testclient import TestClient, WebSocketDenialResponse
from starlette.types import Message

from app import jobs
from app.errors import (
    BackendUnavailable,
    Forbidden,
    InvalidJobData,
    JobGone,
    JobNotFound,
    JobsError,
    RateLimited,
    TooManyStreams,
    Unauthenticated,
)
from app.models import NewJob
from app.problems import frame_code
from app.streams.events import Change, Position
from app.streams.frames import BATCH_CHARS, decode_frame, frames as framed


def test_subscribing_at_the_terminal_version_says_final_and_sends_nothing(
    client: TestClient,
) -> None:
    """`since` at a finished job's last version answers subscribed with final, then nothing."""
    job_id = client.post("/api/jobs", json={}).json()["jobId"]
    done = client.post(f"/api/jobs/{job_id}/complete", json={}).json()
    with client.websocket_connect("/api/jobs/ws") as socket:
        socket.send_json({"type": "subscribe", "jobId": job_id, "since": done["version"]})
        assert socket.receive_json() == {
            "type": "subscribed",
            "jobId": job_id,
            "version": done["version"],
            "final": True,
        }
        socket.send_json({"type": "ping"})
        assert socket.receive_json() == {"type": "pong"}


def test_subscribing_behind_a_finished_job_sends_its_terminal_state(client: TestClient) -> None:
    """A `since` below the terminal version gets subscribed (not final), then the final state."""
    job_id = client.post("/api/jobs", json={}).json()["jobId"]
    done = client.post(f"/api/jobs/{job_id}/fail", json={"error": "Invalid file format"}).json()
    with client.websocket_connect("/api/jobs/ws") as socket:
        socket.send_json({"type": "subscribe", "jobId": job_id, "since": 1})
        subscribed = socket.receive_json()
        assert subscribed["type"] == "subscribed"
        assert "final" not in subscribed
        frame = socket.receive_json()
        assert frame["type"] == "job"
        assert frame["job"]["status"] == "error"
        assert frame["job"]["version"] == done["version"]


Frame = dict[str, Any]  # a frame, as JSON decodes it


def _messages(frames: list[Frame]) -> list[Frame]:
    flat: list[Frame] = []
    for frame in frames:
        inner = frame.get("messages")
        flat.extend(inner if frame["type"] == "batch" and isinstance(inner, list) else [frame])
    return flat


def _snapshot_frames(client: TestClient, path: str, count: int) -> list[Frame]:
    """The frames that carry `subscribed`, a snapshot of `count` jobs and `synced`."""
    with client.websocket_connect(path) as socket:
        socket.send_json({"type": "subscribe", "all": True})
        frames: list[Frame] = []
        while len(_messages(frames)) < count + 2:
            frames.append(socket.receive_json())
    return frames


def test_batch_mode_sends_what_is_pending_as_one_frame(client: TestClient) -> None:
    """With ?batch=1 the reply and the snapshot pending together arrive as one batch frame,
    the same messages in the same order as one frame each without it."""
    ids = [client.post("/api/jobs", json={}).json()["jobId"] for _ in range(3)]
    single = _snapshot_frames(client, "/api/jobs/ws", len(ids))
    batched = _snapshot_frames(client, "/api/jobs/ws?batch=1", len(ids))
    assert all(frame["type"] != "batch" for frame in single)
    assert len(single) == len(ids) + 2
    assert len(batched) == 1
    assert batched[0]["type"] == "batch"
    assert _messages(batched) == single
    assert [m["job"]["jobId"] for m in single[1:-1]] == ids
    assert single[-1]["type"] == "synced"


def test_batch_mode_sends_a_lone_message_as_itself(client: TestClient) -> None:
    """A single pending message is never wrapped: clients see plain frames most of the time."""
    with client.websocket_connect("/api/jobs/ws?batch=1") as socket:
        socket.send_json({"type": "ping"})
        assert socket.receive_json() == {"type": "pong"}


def _changes(count: int, metadata_chars: int = 0) -> list[Change]:
    new = NewJob(metadata={"blob": "x" * metadata_chars} if metadata_chars else {})
    return [Change.of(jobs.create(new, jobs.now()), Position(1, n)) for n in range(count)]


def test_live_changes_pending_together_share_one_batch_frame() -> None:
    """Changes pending at one wake (no replies) go out as one batch, or one frame each."""
    changes = _changes(3)
    expected = [json.loads(change.ws_frame()) for change in changes]
    [batch] = framed([], list(changes), batch=True)
    assert json.loads(batch) == {"type": "batch", "messages": expected}
    assert [json.loads(text) for text in framed([], list(changes), batch=False)] == expected


def test_batches_are_split_at_about_batch_chars() -> None:
    """A batch frame holds about BATCH_CHARS: big jobs are spread over several frames."""
    changes = _changes(4, metadata_chars=BATCH_CHARS // 3)
    frames = list(framed([], list(changes), batch=True))
    assert len(frames) == 2
    assert all(len(frame) < 2 * BATCH_CHARS for frame in frames)
    sent = _messages([json.loads(frame) for frame in frames])  # a lone last one is plain
    assert sent == [json.loads(change.ws_frame()) for change in changes]


@pytest.mark.parametrize("value", ["yes", "2", "", "TRUE "])
def test_a_batch_value_that_is_not_1_or_0_is_refused(client: TestClient, value: str) -> None:
    """`?batch=` takes 1/true or 0/false; anything else is a 422 problem at the handshake."""
    with (
        pytest.raises(WebSocketDenialResponse) as denied,
        client.websocket_connect(f"/api/jobs/ws?batch={value}"),
    ):
        pass
    assert denied.value.status_code == 422
    assert denied.value.headers["content-type"] == "application/problem+json"
    problem = denied.value.json()
    assert problem["errors"] == [{"field": "batch", "message": "must be 1, true, 0 or false"}]
    assert problem["detail"] == "batch: must be 1, true, 0 or false"


@pytest.mark.parametrize("value", ["0", "false"])
def test_batch_off_sends_one_message_per_frame(client: TestClient, value: str) -> None:
    """?batch=0 or false is the default: one message per frame."""
    client.post("/api/jobs", json={})
    client.post("/api/jobs", json={})
    frames = _snapshot_frames(client, f"/api/jobs/ws?batch={value}", 2)
    assert [frame["type"] for frame in frames] == ["subscribed", "job", "job", "synced"]


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (JobNotFound("job_x"), "not_found"),
        (JobGone("job_x"), "gone"),
        (Forbidden("no"), "forbidden"),
        (Unauthenticated("no", presented=False), "unauthorized"),
        (BackendUnavailable("down"), "unavailable"),
        (TooManyStreams("full"), "unavailable"),
        (RateLimited("slow down", retry_after=1), "rate_limited"),
        (InvalidJobData("bad"), "bad_request"),
    ],
)
def test_every_error_has_a_frame_code(error: JobsError, code: str) -> None:
    """Each error a subscription can meet maps to the code SPEC section 4 lists for it."""
    assert frame_code(error) == code


def test_a_job_subscription_ends_its_snapshot_with_its_version(client: TestClient) -> None:
    """`subscribed`, the job, then `synced` naming the job and the version the client holds."""
    job_id = client.post("/api/jobs", json={}).json()["jobId"]
    client.patch(f"/api/jobs/{job_id}", json={"progress": 5})
    with client.websocket_connect("/api/jobs/ws") as socket:
        socket.send_json({"type": "subscribe", "jobId": job_id})
        frames = [socket.receive_json() for _ in range(3)]
    assert [frame["type"] for frame in frames] == ["subscribed", "job", "synced"]
    assert frames[2] == {"type": "synced", "jobId": job_id, "version": 2}


def _reading_fails(text: str) -> Any:
    if "trip" in text:
        raise RuntimeError("a bug")
    return decode_frame(text)


def _writing_fails(replies: list[str], changes: list[Any], *, batch: bool) -> Any:
    if any('"pong"' in reply for reply in replies):
        raise RuntimeError("a bug")
    return framed(replies, changes, batch=batch)


@pytest.mark.parametrize(
    ("where", "bug", "frame"),
    [
        ("decode_frame", _reading_fails, '{"type": "ping", "trip": true}'),
        ("frames", _writing_fails, '{"type": "ping"}'),
    ],
    ids=["reading", "writing"],
)
def test_a_bug_ends_only_its_socket_with_1011_and_gives_back_what_it_held(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, where: str, bug: Any, frame: str
) -> None:
    """A bug while reading or writing closes that socket with 1011 (the traceback is raised
    and logged), and the socket lets go of its subscriptions and its count; the server
    goes on.

    The socket is driven as an ASGI app directly: TestClient's session may drop the close
    frame when the app raises after sending it.
    """
    monkeypatch.setattr(f"app.streams.ws.{where}", bug)
    job_id = client.post("/api/jobs", json={}).json()["jobId"]
    scope = {
        "type": "websocket",
        "path": "/api/jobs/ws",
        "raw_path": b"/api/jobs/ws",
        "root_path": "",
        "scheme": "ws",
        "query_string": b"",
        "headers": [(b"host", b"127.0.0.1:8000")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "subprotocols": [],
        "state": client.app_state.copy(),
    }
    frames = [
        {"type": "websocket.connect"},
        {"type": "websocket.receive", "text": json.dumps({"type": "subscribe", "jobId": job_id})},
        {"type": "websocket.receive", "text": frame},
    ]
    sent: list[Message] = []

    async def serve() -> None:
        inbox = iter(frames)
        synced = anyio.Event()

        async def receive() -> Message:
            following = next(inbox, None)
            if following is None:
                await anyio.sleep_forever()
            if following is frames[-1]:
                await synced.wait()  # the bug comes once the subscription is served
            return following or {}

        async def send(message: Message) -> None:
            sent.append(message)
            if '"synced"' in message.get("text", ""):
                synced.set()

        with pytest.raises(RuntimeError, match="a bug"):
            await client.app(scope, receive, send)

    assert client.portal is not None
    client.portal.call(serve)
    texts = [json.loads(m["text"])["type"] for m in sent if m["type"] == "websocket.send"]
    assert texts[:3] == ["subscribed", "job", "synced"]
    assert (sent[-1]["type"], sent[-1]["code"], sent[-1]["reason"]) == (
        "websocket.close",
        1011,
        "internal error",
    )
    assert 'jobcast_connections{transport="ws"} 0.0' in client.get("/metrics").text
    monkeypatch.undo()
    with client.websocket_connect("/api/jobs/ws") as socket:  # the server goes on
        socket.send_json({"type": "ping"})
        assert socket.receive_json() == {"type": "pong"}


def test_a_star_job_id_is_refused_and_leaves_the_all_subscription_alone(
    client: TestClient,
) -> None:
    """`jobId: "*"` is no job id: an error frame, and the all-jobs subscription keeps going."""
    with client.websocket_connect("/api/jobs/ws") as socket:
        socket.send_json({"type": "subscribe", "all": True})
        assert [socket.receive_json()["type"] for _ in range(2)] == ["subscribed", "synced"]
        socket.send_json({"type": "subscribe", "jobId": "*"})
        refused = socket.receive_json()
        assert (refused["type"], refused["code"], refused["jobId"]) == ("error", "bad_request", "*")
        job_id = client.post("/api/jobs", json={}).json()["jobId"]
        assert socket.receive_json()["job"]["jobId"] == job_id
