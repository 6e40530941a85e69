"""The demo's simulated worker behaves as a real one should."""

from __future__ import annotations

import random
from typing import Any

import pytest
from starlette.testclient import TestClient

from app.demo import ANSWERS, SCRIPTS, Demo, tokens_of
from app.models import JobType


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


def run_sample(client: TestClient, job_type: JobType, answer: str = "") -> dict[str, Any]:
    """Run one sample job's worker to its end (never failing); its job and output."""
    job_id = client.post("/api/jobs", json={"jobType": job_type}).json()["jobId"]
    worker = Demo(rng=random.Random(3), speed=10_000)
    assert client.portal is not None
    client.portal.call(worker._work, job_id, SCRIPTS[job_type], answer)
    job: dict[str, Any] = client.get(f"/api/jobs/{job_id}").json()
    job["output"] = client.get(f"/api/jobs/{job_id}/output").json()["chunks"]
    return job


def test_a_sample_agent_streams_its_answer_token_by_token(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("app.demo.FAILURE_RATE", 0.0)
    answer = ANSWERS["Compare two NDAs"]
    job = run_sample(client, "llm_agent", answer)
    assert job["status"] == "completed"
    assert {chunk["kind"] for chunk in job["output"]} == {"token"}
    assert "".join(chunk["data"] for chunk in job["output"]) == answer
    assert len(job["output"]) == job["outputSize"] > 50  # a token at a time, not one blob


def test_a_sample_file_logs_each_step(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("app.demo.FAILURE_RATE", 0.0)
    job = run_sample(client, "file_processing")
    lines = [chunk["data"] for chunk in job["output"]]
    assert {chunk["kind"] for chunk in job["output"]} == {"log"}
    steps = [message.rstrip(".") for _, message in SCRIPTS["file_processing"].steps]
    assert [next(s for s in steps if s in line) for line in lines] == steps  # one per step


@pytest.mark.parametrize("answer", list(ANSWERS.values()))
def test_tokens_join_back_into_the_answer(answer: str) -> None:
    tokens = tokens_of(answer)
    assert "".join(tokens) == answer
    assert max(map(len, tokens)) <= 6
