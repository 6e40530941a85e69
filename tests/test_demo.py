"""The demo's simulated worker behaves as a real one should."""

from __future__ import annotations

import random

from starlette.testclient import TestClient

from app.demo import SCRIPTS, Demo


def test_a_sample_job_stops_when_its_cancel_is_requested(client: TestClient) -> None:
    """At its next update the simulated worker sees cancelRequested and fails the job as
    canceled, with the reason, instead of carrying on to the end."""
    job_id = client.post("/api/jobs", json={"jobType": "llm_agent"}).json()["jobId"]
    asked = client.post(f"/api/jobs/{job_id}/cancel", json={"reason": "not needed any more"})
    assert asked.status_code == 200
    worker = Demo(rng=random.Random(7), speed=10_000)
    assert client.portal is not None
    client.portal.call(worker._work, job_id, SCRIPTS["llm_agent"])
    job = client.get(f"/api/jobs/{job_id}").json()
    assert (job["status"], job["error"], job["message"]) == (
        "error",
        "canceled",
        "not needed any more",
    )
    assert job["version"] == 4  # created, cancel requested, one update, failed
