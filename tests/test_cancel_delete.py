"""Cancel and delete through the JSON API and the in-process library: what each answers,
what it changes, what it leaves alone, and what ``/metrics`` counts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from starlette.testclient import TestClient

from app import JobGone, cancel_job, create_job, delete_job, get_job
from tests.test_api import create, get, metric, patch
from tests.test_library import in_app


def cancel(client: TestClient, job_id: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    response = client.post(f"/api/jobs/{job_id}/cancel", json=body if body is not None else {})
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


# -- cancel ----------------------------------------------------------------------


def test_cancel_sets_the_flag_as_a_new_version(client: TestClient) -> None:
    job_id = create(client)
    patch(client, job_id, {"status": "processing", "progress": 20})
    asked = cancel(client, job_id, {"reason": "the user closed the tab"})
    assert (asked["status"], asked["cancelRequested"], asked["cancelReason"]) == (
        "processing",
        True,
        "the user closed the tab",
    )
    assert asked["version"] == 3
    assert get(client, job_id) == asked


def test_cancel_is_idempotent(client: TestClient) -> None:
    """A second cancel answers 200 with the job unchanged: no new version."""
    job_id = create(client)
    first = cancel(client, job_id, {"reason": "first"})
    again = cancel(client, job_id, {"reason": "second"})
    assert again == first
    assert get(client, job_id)["version"] == 2


def test_cancel_takes_an_empty_body(client: TestClient) -> None:
    job_id = create(client)
    response = client.post(f"/api/jobs/{job_id}/cancel")
    assert response.status_code == 200, response.text
    assert response.json()["cancelRequested"] is True
    assert "cancelReason" not in response.json()


def test_every_write_answer_carries_the_flag_to_the_worker(client: TestClient) -> None:
    """The worker learns of the cancel from the answer to its next update, and ends the job."""
    job_id = create(client)
    assert "cancelRequested" not in patch(client, job_id, {"status": "processing"})
    cancel(client, job_id)
    assert patch(client, job_id, {"progress": 40})["cancelRequested"] is True
    ended = client.post(f"/api/jobs/{job_id}/fail", json={"error": "canceled by request"})
    assert ended.json()["cancelRequested"] is True
    assert ended.json()["status"] == "error"


def test_forced_cancel_ends_the_job_now(client: TestClient) -> None:
    job_id = create(client)
    ended = cancel(client, job_id, {"force": True, "reason": "its worker is gone"})
    assert (ended["status"], ended["error"], ended["message"]) == (
        "error",
        "canceled",
        "its worker is gone",
    )
    assert metric(client, "jobcast_jobs", status="error") == 1
    assert metric(client, "jobcast_jobs_failed_total") == 1


@pytest.mark.parametrize("ending", ["complete", "fail"])
def test_cancel_of_a_finished_job_is_409(client: TestClient, ending: str) -> None:
    job_id = create(client)
    client.post(f"/api/jobs/{job_id}/{ending}", json={"error": "e"} if ending == "fail" else {})
    before = get(client, job_id)
    response = client.post(f"/api/jobs/{job_id}/cancel", json={})
    assert response.status_code == 409
    assert "nothing to cancel" in response.json()["detail"]
    assert get(client, job_id) == before


def test_cancels_are_counted(client: TestClient) -> None:
    job_id = create(client)
    cancel(client, job_id)
    cancel(client, job_id, {"force": True})
    assert metric(client, "jobcast_jobs_canceled_total") == 2


# -- delete ----------------------------------------------------------------------


@pytest.mark.parametrize("state", ["queued", "processing", "completed", "error"])
def test_delete_answers_204_and_the_job_is_gone(client: TestClient, state: str) -> None:
    job_id = create(client)
    if state == "processing":
        patch(client, job_id, {"status": "processing"})
    elif state != "queued":
        ending = "complete" if state == "completed" else "fail"
        client.post(f"/api/jobs/{job_id}/{ending}", json={"error": "e"})
    response = client.delete(f"/api/jobs/{job_id}")
    assert (response.status_code, response.content) == (204, b"")
    gone = client.get(f"/api/jobs/{job_id}")
    assert gone.status_code == 410
    assert job_id in gone.json()["detail"]
    assert job_id not in [job["jobId"] for job in client.get("/api/jobs").json()["jobs"]]
    assert client.delete(f"/api/jobs/{job_id}").status_code == 410
    assert metric(client, "jobcast_jobs", status=state) == 0
    assert metric(client, "jobcast_jobs_deleted_total") == 1


def test_delete_frees_the_idempotency_key(client: TestClient) -> None:
    key = {"Idempotency-Key": "nightly-report"}
    first = create(client, {"message": "report"}, **key)
    repeat = client.post("/api/jobs", json={"message": "report"}, headers=key)
    assert (repeat.status_code, repeat.json()["jobId"]) == (200, first)
    assert client.delete(f"/api/jobs/{first}").status_code == 204
    assert create(client, {"message": "report"}, **key) != first


# -- the library -----------------------------------------------------------------


@pytest.fixture
def call(client: TestClient) -> Callable[..., Any]:
    return in_app(client)


def test_library_cancels_and_deletes(client: TestClient, call: Callable[..., Any]) -> None:
    job = call(create_job, job_type="llm_agent")
    asked = call(cancel_job, job.job_id, "stop it")
    assert (asked.cancel_requested, asked.cancel_reason, asked.version) == (True, "stop it", 2)
    assert get(client, job.job_id)["cancelRequested"] is True
    forced = call(cancel_job, job.job_id, force=True)
    assert (forced.status, forced.error) == ("error", "canceled")
    call(delete_job, job.job_id)
    with pytest.raises(JobGone):
        call(get_job, job.job_id)
