"""The in-process library (``from app import create_job, ...``): the Jobs API's server-side
functions, acting on the running app's store, and refusing where no app runs."""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Iterator
from functools import partial
from typing import Any, TypeVar

import anyio
import pytest
from starlette.testclient import TestClient

from app import (
    InvalidJobData,
    InvalidTransition,
    Job,
    JobNotFound,
    NotServing,
    OffsetMismatch,
    append_job_output,
    complete_job,
    create_app,
    create_job,
    fail_job,
    get_job,
    library,
    update_job_with_notification,
)
from tests.conftest import local_client

T = TypeVar("T")


def in_app(client: TestClient) -> Callable[..., Any]:
    """Call a library function on the event loop of the app ``client`` runs."""

    def call(function: Callable[..., Coroutine[Any, Any, T]], *args: Any, **kwargs: Any) -> T:
        assert client.portal is not None, "the client runs its app: inside `with`"
        result: T = client.portal.call(partial(function, *args, **kwargs))
        return result

    return call


def standalone(function: Callable[..., Coroutine[Any, Any, T]], *args: Any, **kwargs: Any) -> T:
    """Call a library function with no app running."""
    return anyio.run(partial(function, *args, **kwargs))


@pytest.fixture
def call(client: TestClient) -> Callable[..., Any]:
    return in_app(client)


@pytest.fixture
def no_app() -> Iterator[None]:
    """No app installed, as in a process where no server runs."""
    previous = library.install(None)
    yield
    library.install(previous)


def http_job(client: TestClient, job_id: str) -> dict[str, Any]:
    response = client.get(f"/api/jobs/{job_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_jobs_api_example_completes(client: TestClient, call: Callable[..., Any]) -> None:
    """The Jobs API's createJob / updateJobWithNotification / completeJob example, in Python."""
    job = call(
        create_job,
        job_type="document_analysis",
        message="Starting analysis...",
        metadata={"documentId": "doc_123"},
    )
    assert isinstance(job, Job)
    assert (job.status, job.version) == ("queued", 1)
    call(
        update_job_with_notification,
        job.job_id,
        status="processing",
        progress=50,
        message="Analyzing document structure...",
    )
    seen = http_job(client, job.job_id)
    assert (seen["status"], seen["progress"], seen["message"]) == (
        "processing",
        50,
        "Analyzing document structure...",
    )
    done = call(complete_job, job.job_id, "doc_123", "Analysis completed")
    assert (done.status, done.progress, done.document_id) == ("completed", 100, "doc_123")
    seen = http_job(client, job.job_id)
    assert {k: seen[k] for k in ("status", "progress", "documentId", "message", "version")} == {
        "status": "completed",
        "progress": 100,
        "documentId": "doc_123",
        "message": "Analysis completed",
        "version": 3,
    }
    assert seen["metadata"] == {"documentId": "doc_123"}
    assert seen["jobType"] == "document_analysis"


def test_jobs_api_example_fails(client: TestClient, call: Callable[..., Any]) -> None:
    """The Jobs API's failJob branch and its try/except pattern mark the job as failed."""
    job = call(create_job, job_type="file_processing")
    try:
        raise ValueError("Failed to parse document")
    except ValueError as error:
        call(fail_job, job.job_id, str(error))
    seen = http_job(client, job.job_id)
    assert (seen["status"], seen["error"], seen["message"]) == (
        "error",
        "Failed to parse document",
        "Processing failed",
    )


def test_library_returns_what_http_shows(client: TestClient, call: Callable[..., Any]) -> None:
    """The Job a library call returns is the state GET then serves, version included."""
    job = call(create_job, message="m")
    updated = call(update_job_with_notification, job.job_id, progress=12.5)
    seen = http_job(client, job.job_id)
    assert seen["version"] == updated.version == 2
    assert seen["progress"] == 12.5
    assert seen["jobId"] == job.job_id


def test_get_job_sees_http_changes(client: TestClient, call: Callable[..., Any]) -> None:
    """get_job reads the same store the HTTP routes write."""
    job_id = client.post("/api/jobs", json={"message": "from http"}).json()["jobId"]
    client.patch(f"/api/jobs/{job_id}", json={"status": "processing", "progress": 30})
    job = call(get_job, job_id)
    assert (job.message, job.status, job.progress, job.version) == (
        "from http",
        "processing",
        30,
        2,
    )


def test_library_change_is_listed(client: TestClient, call: Callable[..., Any]) -> None:
    """A job created through the library shows up in GET /api/jobs."""
    job = call(create_job, job_type="llm_agent")
    listed = client.get("/api/jobs?jobType=llm_agent").json()["jobs"]
    assert [item["jobId"] for item in listed] == [job.job_id]


def test_library_change_is_pushed_to_subscribers(
    client: TestClient, call: Callable[..., Any]
) -> None:
    """A library update reaches a live WebSocket subscriber, with the full job."""
    job = call(create_job)
    with client.websocket_connect("/api/jobs/ws") as socket:
        socket.send_json({"type": "subscribe", "jobId": job.job_id})
        assert socket.receive_json()["type"] == "subscribed"
        assert socket.receive_json()["job"]["version"] == 1
        assert socket.receive_json()["type"] == "synced"
        call(update_job_with_notification, job.job_id, progress=50, message="half")
        frame = socket.receive_json()
    assert frame["type"] == "job"
    assert (frame["job"]["version"], frame["job"]["progress"], frame["job"]["message"]) == (
        2,
        50,
        "half",
    )


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"progress": 150}, "progress"),
        ({"progress": -1}, "progress"),
        ({"progress": float("nan")}, "progress"),
        ({"status": "done"}, "status"),
        ({"metadata": ["not", "an", "object"]}, "metadata"),
        ({"message": 5}, "message"),
    ],
)
def test_invalid_update_raises_invalid_job_data(
    client: TestClient, call: Callable[..., Any], fields: dict[str, Any], field: str
) -> None:
    """Bad values raise InvalidJobData naming the field, and the job stays as it was."""
    job = call(create_job)
    with pytest.raises(InvalidJobData) as caught:
        call(update_job_with_notification, job.job_id, **fields)
    assert field in [error.field for error in caught.value.errors]
    assert http_job(client, job.job_id)["version"] == 1


def test_invalid_arguments_are_named_by_their_python_names_with_the_reason(
    call: Callable[..., Any],
) -> None:
    """The library's InvalidJobData names the Python argument and says what to change."""
    job = call(create_job, job_type="llm_agent")
    with pytest.raises(InvalidJobData) as too_far:
        call(update_job_with_notification, job.job_id, progress=150)
    assert str(too_far.value) == "progress: must be at most 100"
    with pytest.raises(InvalidJobData) as not_text:
        call(complete_job, job.job_id, document_id=5)
    assert str(not_text.value) == "document_id: must be a string"
    assert [(e.field, e.message) for e in not_text.value.errors] == [
        ("document_id", "must be a string")
    ]


def test_update_without_fields_raises_invalid_job_data(call: Callable[..., Any]) -> None:
    """An update that changes nothing is refused with InvalidJobData."""
    job = call(create_job)
    with pytest.raises(InvalidJobData):
        call(update_job_with_notification, job.job_id)


@pytest.mark.parametrize(
    "kwargs",
    [{"job_type": "video"}, {"metadata": "text"}, {"message": 3}],
    ids=["job-type", "metadata", "message"],
)
def test_invalid_create_raises_invalid_job_data(
    client: TestClient, call: Callable[..., Any], kwargs: dict[str, Any]
) -> None:
    """create_job with an unknown type or wrong kinds raises InvalidJobData and stores nothing."""
    with pytest.raises(InvalidJobData):
        call(create_job, **kwargs)
    assert client.get("/api/jobs").json()["jobs"] == []


def test_fail_job_needs_text(call: Callable[..., Any]) -> None:
    """fail_job with a non-string error raises InvalidJobData naming `error`."""
    job = call(create_job)
    with pytest.raises(InvalidJobData) as caught:
        call(fail_job, job.job_id, 404)
    assert [error.field for error in caught.value.errors] == ["error"]


@pytest.mark.parametrize(
    ("finish", "change"),
    [
        (complete_job, partial(update_job_with_notification, progress=10)),
        (complete_job, partial(fail_job, error="late")),
        (partial(fail_job, error="x"), partial(complete_job, document_id="doc")),
        (partial(fail_job, error="x"), partial(update_job_with_notification, message="m")),
    ],
    ids=["completed-update", "completed-fail", "failed-complete", "failed-update"],
)
def test_terminal_job_raises_invalid_transition(
    client: TestClient, call: Callable[..., Any], finish: Any, change: Any
) -> None:
    """Changing a completed or failed job raises InvalidTransition; the job is unchanged."""
    job = call(create_job)
    call(finish, job.job_id)
    before = http_job(client, job.job_id)
    with pytest.raises(InvalidTransition):
        call(change, job.job_id)
    assert http_job(client, job.job_id) == before


@pytest.mark.parametrize(
    "operation",
    [
        get_job,
        partial(update_job_with_notification, progress=1),
        complete_job,
        partial(fail_job, error="e"),
    ],
    ids=["get", "update", "complete", "fail"],
)
def test_unknown_job_raises_not_found(call: Callable[..., Any], operation: Any) -> None:
    """Every function given an unknown id raises JobNotFound."""
    with pytest.raises(JobNotFound):
        call(operation, "job_unknown")


@pytest.mark.usefixtures("no_app")
@pytest.mark.parametrize(
    "operation",
    [
        partial(create_job, message="offline"),
        partial(update_job_with_notification, "job_x", progress=20),
        partial(complete_job, "job_x"),
        partial(fail_job, "job_x", "boom"),
        partial(get_job, "job_x"),
    ],
    ids=["create", "update", "complete", "fail", "get"],
)
def test_without_a_server_every_function_points_to_the_client(operation: Any) -> None:
    """Where no server runs, the functions refuse (a private store would show nobody the
    change) and say how a worker in another process reaches the server."""
    with pytest.raises(NotServing, match="jobcast_client"):
        standalone(operation)


@pytest.mark.usefixtures("no_app")
def test_stopped_app_store_is_released() -> None:
    """Once an app stops, the library no longer reaches the store it had."""
    with local_client(create_app()) as client:
        job = in_app(client)(create_job)
        assert http_job(client, job.job_id)["version"] == 1
    with pytest.raises(NotServing):
        standalone(get_job, job.job_id)


def test_library_appends_output(client: TestClient, call: Callable[..., Any]) -> None:
    job = call(create_job, job_type="llm_agent")
    appended = call(
        append_job_output,
        job.job_id,
        [{"data": "Reading page 1", "kind": "log"}],
        expected_offset=0,
    )
    assert (appended.offset, appended.next_offset) == (0, 1)
    page = client.get(f"/api/jobs/{job.job_id}/output").json()
    assert page["chunks"] == [{"offset": 0, "data": "Reading page 1", "kind": "log"}]
    with pytest.raises(OffsetMismatch) as refused:
        call(append_job_output, job.job_id, [{"data": "again"}], expected_offset=0)
    assert refused.value.next_offset == 1
    with pytest.raises(InvalidJobData, match="kind"):
        call(append_job_output, job.job_id, [{"data": 1, "kind": "k" * 65}])
