"""WebSocket protocol details, through Starlette's TestClient."""

from __future__ import annotations

from starlette.testclient import TestClient


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
