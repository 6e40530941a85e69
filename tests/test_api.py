"""The JSON API through TestClient: the Jobs API's shapes and lifecycle, lists, ETags, idempotency,
long-poll basics, health, metrics and the OpenAPI document."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from app.models import Completion, Failure, JobUpdate, NewJob
from tests.conftest import seconds

TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
JOB_FIELDS = {
    "jobId",
    "jobType",
    "status",
    "message",
    "progress",
    "metadata",
    "createdAt",
    "updatedAt",
    "timestamp",
    "version",
}
JOBS_API_UPLOAD = {
    "jobType": "file_processing",
    "message": "Upload queued",
    "metadata": {"fileName": "contract.pdf", "fileSize": 1024000},
}


def create(client: TestClient, body: dict[str, Any] | None = None, **headers: str) -> str:
    response = client.post("/api/jobs", json=body if body is not None else {}, headers=headers)
    assert response.status_code == 201, response.text
    job_id: str = response.json()["jobId"]
    return job_id


def get(client: TestClient, job_id: str) -> dict[str, Any]:
    response = client.get(f"/api/jobs/{job_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def patch(client: TestClient, job_id: str, body: dict[str, Any]) -> dict[str, Any]:
    response = client.patch(f"/api/jobs/{job_id}", json=body)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def listed(client: TestClient, query: str = "") -> list[str]:
    response = client.get(f"/api/jobs{query}")
    assert response.status_code == 200, response.text
    return [job["jobId"] for job in response.json()["jobs"]]


def metric(client: TestClient, name: str, **labels: str) -> float:
    """The value of one sample of /metrics (0 when absent)."""
    text = client.get("/metrics").text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


# -- the Jobs API's shapes -----------------------------------------------------------------------


def test_create_answers_201_with_the_jobs_api_shape(client: TestClient) -> None:
    """POST /api/jobs answers 201 {jobId, status: "queued", timestamp} and a Location header."""
    response = client.post("/api/jobs", json=JOBS_API_UPLOAD)
    assert response.status_code == 201
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"jobId", "status", "timestamp"}
    assert body["status"] == "queued"
    assert body["jobId"].startswith("job_")
    assert TIMESTAMP.fullmatch(body["timestamp"])
    assert response.headers["location"] == f"/api/jobs/{body['jobId']}"
    assert client.get(response.headers["location"]).status_code == 200


@pytest.mark.parametrize(
    "send",
    [
        lambda c: c.post("/api/jobs"),
        lambda c: c.post("/api/jobs", json={}),
        lambda c: c.post("/api/jobs", content=b"", headers={"content-type": "application/json"}),
        lambda c: c.post("/api/jobs", content=b"{}", headers={"content-type": "text/plain"}),
    ],
    ids=["no-body", "empty-object", "empty-json", "text-plain-json"],
)
def test_create_body_is_optional(client: TestClient, send: Any) -> None:
    """A create without body (or {}) makes a queued generic job with the defaults."""
    response = send(client)
    assert response.status_code == 201
    job = get(client, response.json()["jobId"])
    assert (job["jobType"], job["status"], job["message"], job["progress"], job["metadata"]) == (
        "generic",
        "queued",
        "",
        0,
        {},
    )


def test_get_has_the_jobs_api_fields_and_the_full_job(client: TestClient) -> None:
    """GET gives status/message/progress/timestamp plus the full job, optional fields omitted."""
    job_id = create(client, JOBS_API_UPLOAD)
    response = client.get(f"/api/jobs/{job_id}")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    job = response.json()
    assert set(job) == JOB_FIELDS
    assert job["jobId"] == job_id
    assert job["jobType"] == "file_processing"
    assert job["metadata"] == JOBS_API_UPLOAD["metadata"]
    assert job["version"] == 1
    for field in ("createdAt", "updatedAt", "timestamp"):
        assert TIMESTAMP.fullmatch(job[field])
    assert job["timestamp"] == job["updatedAt"] == job["createdAt"]


def test_optional_fields_omitted_not_null(client: TestClient) -> None:
    """documentId and error never appear as null: absent until set, then present."""
    job_id = create(client)
    patch(client, job_id, {"status": "processing"})
    for body in (get(client, job_id), patch(client, job_id, {"progress": 10})):
        assert "documentId" not in body
        assert "error" not in body
        assert None not in body.values()
    done = client.post(f"/api/jobs/{job_id}/complete", json={"documentId": "doc_1"}).json()
    assert done["documentId"] == "doc_1"
    assert "error" not in done
    failed = client.post(f"/api/jobs/{create(client)}/fail", json={"error": "x"}).json()
    assert failed["error"] == "x"
    assert "documentId" not in failed


def test_jobs_api_lifecycle_to_completed(client: TestClient) -> None:
    """The Jobs API's lifecycle: queued, processing 45 "Extracting document data...", completed."""
    job_id = create(client, JOBS_API_UPLOAD)
    assert {k: get(client, job_id)[k] for k in ("status", "message", "progress")} == {
        "status": "queued",
        "message": "Upload queued",
        "progress": 0,
    }
    patch(client, job_id, {"status": "processing", "message": "Extracting document data..."})
    patch(client, job_id, {"progress": 45})
    job = get(client, job_id)
    assert {k: job[k] for k in ("status", "message", "progress")} == {
        "status": "processing",
        "message": "Extracting document data...",
        "progress": 45,
    }
    assert isinstance(job["progress"], int)
    response = client.post(
        f"/api/jobs/{job_id}/complete",
        json={"documentId": "doc_123abc", "message": "Document processed successfully"},
    )
    assert response.status_code == 200
    job = get(client, job_id)
    assert {k: job[k] for k in ("status", "message", "progress", "documentId")} == {
        "status": "completed",
        "message": "Document processed successfully",
        "progress": 100,
        "documentId": "doc_123abc",
    }


def test_jobs_api_lifecycle_to_error(client: TestClient) -> None:
    """The Jobs API's error state: status error, message "Processing failed", the error text."""
    job_id = create(client, JOBS_API_UPLOAD)
    patch(client, job_id, {"status": "processing", "progress": 45})
    response = client.post(f"/api/jobs/{job_id}/fail", json={"error": "Invalid file format"})
    assert response.status_code == 200
    job = get(client, job_id)
    assert {k: job[k] for k in ("status", "message", "error")} == {
        "status": "error",
        "message": "Processing failed",
        "error": "Invalid file format",
    }


def test_complete_without_body(client: TestClient) -> None:
    """POST complete with no body completes with progress 100 and the default message."""
    job_id = create(client)
    response = client.post(f"/api/jobs/{job_id}/complete")
    assert response.status_code == 200
    assert {k: response.json()[k] for k in ("status", "progress", "message")} == {
        "status": "completed",
        "progress": 100,
        "message": "Completed",
    }


def test_fail_with_message(client: TestClient) -> None:
    """A message given to fail replaces the default one."""
    job_id = create(client)
    body = client.post(f"/api/jobs/{job_id}/fail", json={"error": "e", "message": "Stopped"})
    assert body.json()["message"] == "Stopped"


def test_patch_to_error_says_why(client: TestClient) -> None:
    """A job failed by PATCH has `error`, as the contract says every failed job has: the
    message given with it, else "Processing failed"."""
    said, unsaid = create(client), create(client)
    client.patch(f"/api/jobs/{said}", json={"status": "error", "message": "Disk full"})
    client.patch(f"/api/jobs/{unsaid}", json={"status": "error"})
    assert (get(client, said)["error"], get(client, said)["message"]) == ("Disk full", "Disk full")
    assert get(client, unsaid)["error"] == "Processing failed"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("", {"status": "processing", "progress": 12.5, "message": "m", "metadata": {"k": 1}}),
        ("/complete", {"documentId": "doc_9"}),
        ("/fail", {"error": "boom"}),
    ],
    ids=["patch", "complete", "fail"],
)
def test_changes_answer_200_with_the_full_job(
    client: TestClient, path: str, body: dict[str, Any]
) -> None:
    """PATCH, complete and fail answer 200 with the full job, equal to what GET then shows."""
    job_id = create(client)
    method = "PATCH" if path == "" else "POST"
    response = client.request(method, f"/api/jobs/{job_id}{path}", json=body)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    answer = response.json()
    assert set(answer) >= JOB_FIELDS
    assert answer["version"] == 2
    assert answer == get(client, job_id)


def test_patch_merges_metadata_and_moves_time(client: TestClient) -> None:
    """PATCH metadata is shallow-merged; version and updatedAt/timestamp move, createdAt stays."""
    job_id = create(client, {"metadata": {"a": 1, "b": {"x": 1}}})
    before = get(client, job_id)
    after = patch(client, job_id, {"metadata": {"b": {"y": 2}, "c": 3}})
    assert after["metadata"] == {"a": 1, "b": {"y": 2}, "c": 3}
    assert after["version"] == before["version"] + 1
    assert after["createdAt"] == before["createdAt"]
    assert after["timestamp"] == after["updatedAt"] >= before["updatedAt"]


def test_patch_null_leaves_the_field_as_it_is(client: TestClient) -> None:
    """A null in a PATCH is as if the field were absent, as docs/api.md says."""
    job_id = create(client, {"message": "Upload queued"})
    after = patch(client, job_id, {"message": None, "status": None, "progress": 5})
    assert (after["message"], after["status"], after["progress"]) == ("Upload queued", "queued", 5)


def test_fractional_progress_kept(client: TestClient) -> None:
    """A fractional progress is stored and shown as given."""
    job_id = create(client)
    assert patch(client, job_id, {"progress": 33.5})["progress"] == 33.5


# -- list ------------------------------------------------------------------------------------


def test_list_is_newest_first_without_cursor_on_last_page(client: TestClient) -> None:
    """GET /api/jobs lists full jobs newest first; nextCursor is absent on the only page."""
    ids = [create(client) for _ in range(3)]
    response = client.get("/api/jobs")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"jobs"}
    assert [job["jobId"] for job in body["jobs"]] == ids[::-1]
    assert body["jobs"][0] == get(client, ids[-1])


def test_list_filters(client: TestClient) -> None:
    """status and jobType filter the list, alone and together."""
    llm = create(client, {"jobType": "llm_agent"})
    llm_running = create(client, {"jobType": "llm_agent"})
    patch(client, llm_running, {"status": "processing"})
    generic = create(client)
    assert listed(client, "?jobType=llm_agent") == [llm_running, llm]
    assert listed(client, "?status=queued") == [generic, llm]
    assert listed(client, "?status=processing&jobType=llm_agent") == [llm_running]
    assert listed(client, "?jobType=document_analysis") == []


def test_list_pages_with_limit_and_cursor(client: TestClient) -> None:
    """limit and cursor page through every job exactly once; the last page has no nextCursor."""
    ids = [create(client) for _ in range(5)]
    seen: list[str] = []
    query = "?limit=2"
    pages = 0
    while True:
        body = client.get(f"/api/jobs{query}").json()
        pages += 1
        assert len(body["jobs"]) <= 2
        seen += [job["jobId"] for job in body["jobs"]]
        if "nextCursor" not in body:
            break
        query = f"?limit=2&cursor={body['nextCursor']}"
    assert seen == ids[::-1]
    assert pages == 3


def test_list_default_limit_is_100(client: TestClient) -> None:
    """Without limit, a page holds 100 jobs and offers a cursor to the rest."""
    for _ in range(101):
        create(client)
    body = client.get("/api/jobs").json()
    assert len(body["jobs"]) == 100
    assert "nextCursor" in body
    rest = client.get(f"/api/jobs?cursor={body['nextCursor']}").json()
    assert len(rest["jobs"]) == 1
    assert "nextCursor" not in rest


# -- ETag ------------------------------------------------------------------------------------


def test_etag_is_the_version(client: TestClient) -> None:
    """GET sends the version as ETag, and it follows each change."""
    job_id = create(client)
    assert client.get(f"/api/jobs/{job_id}").headers["etag"] == '"1"'
    patch(client, job_id, {"progress": 5})
    assert client.get(f"/api/jobs/{job_id}").headers["etag"] == '"2"'


@pytest.mark.parametrize("tag", ['"1"', 'W/"1"', '"7", "1"', '"0",W/"1"', "*"])
def test_if_none_match_current_answers_304(client: TestClient, tag: str) -> None:
    """If-None-Match naming the current version (also weak, in a list, or *) gives a bare 304."""
    job_id = create(client)
    response = client.get(f"/api/jobs/{job_id}", headers={"If-None-Match": tag})
    assert response.status_code == 304
    assert response.content == b""
    assert response.headers["etag"] == '"1"'


def test_a_list_page_answers_304_until_it_changes(client: TestClient) -> None:
    """A page of the list has an ETag of its bytes: the same page is a bare 304, a change
    to a job on it, or a new job, gives the new page."""
    job_id = create(client)
    first = client.get("/api/jobs?limit=5")
    tag = first.headers["etag"]
    assert first.headers["cache-control"] == "private, no-cache"
    same = client.get("/api/jobs?limit=5", headers={"If-None-Match": tag})
    assert (same.status_code, same.content, same.headers["etag"]) == (304, b"", tag)
    assert same.headers["cache-control"] == "private, no-cache"
    patch(client, job_id, {"progress": 5})
    changed = client.get("/api/jobs?limit=5", headers={"If-None-Match": tag})
    assert changed.status_code == 200
    assert changed.json()["jobs"][0]["progress"] == 5
    create(client)
    grown = client.get("/api/jobs?limit=5", headers={"If-None-Match": changed.headers["etag"]})
    assert len(grown.json()["jobs"]) == 2
    other = client.get("/api/jobs?limit=1", headers={"If-None-Match": grown.headers["etag"]})
    assert other.status_code == 200, "another page is another ETag"


@pytest.mark.parametrize("tag", ['"2"', 'W/"0"', '"1x"', "1"])
def test_if_none_match_other_version_answers_200(client: TestClient, tag: str) -> None:
    """If-None-Match with another version (or an unquoted one) gives the job again."""
    job_id = create(client)
    response = client.get(f"/api/jobs/{job_id}", headers={"If-None-Match": tag})
    assert response.status_code == 200
    assert response.json()["version"] == 1


def test_if_none_match_stale_after_change(client: TestClient) -> None:
    """After a change, the old ETag no longer matches: the new state comes back."""
    job_id = create(client)
    patch(client, job_id, {"message": "next"})
    response = client.get(f"/api/jobs/{job_id}", headers={"If-None-Match": '"1"'})
    assert response.status_code == 200
    assert response.json()["message"] == "next"
    assert response.headers["etag"] == '"2"'


# -- idempotency -----------------------------------------------------------------------------


def test_idempotency_key_same_body_returns_same_job(client: TestClient) -> None:
    """The same Idempotency-Key and body answer 200 with the same jobId; one job exists."""
    first = client.post("/api/jobs", json=JOBS_API_UPLOAD, headers={"Idempotency-Key": "upload-1"})
    again = client.post("/api/jobs", json=JOBS_API_UPLOAD, headers={"Idempotency-Key": "upload-1"})
    assert first.status_code == 201
    assert again.status_code == 200
    assert again.json()["jobId"] == first.json()["jobId"]
    assert again.headers["location"] == first.headers["location"]
    assert listed(client) == [first.json()["jobId"]]


def test_idempotency_key_other_body_is_422(client: TestClient) -> None:
    """The same key with another body answers 422 problem+json and creates nothing."""
    job_id = create(client, {"message": "a"}, **{"Idempotency-Key": "k"})
    response = client.post("/api/jobs", json={"message": "b"}, headers={"Idempotency-Key": "k"})
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == 422
    assert problem["type"].endswith("idempotency-conflict")
    assert problem["title"] == "Unprocessable Entity"
    assert "Idempotency-Key" in problem["detail"]
    assert listed(client) == [job_id]


def test_different_idempotency_keys_make_different_jobs(client: TestClient) -> None:
    """Two keys with the same body are two jobs."""
    first = create(client, JOBS_API_UPLOAD, **{"Idempotency-Key": "a"})
    second = create(client, JOBS_API_UPLOAD, **{"Idempotency-Key": "b"})
    assert first != second


# -- long-poll (no concurrency needed) -------------------------------------------------------


def test_long_poll_below_current_version_answers_at_once(client: TestClient) -> None:
    """waitForVersion below the current version answers 200 with the job without waiting."""
    job_id = create(client)
    patch(client, job_id, {"progress": 10})
    started = time.monotonic()
    response = client.get(f"/api/jobs/{job_id}?waitForVersion=1&timeout=30")
    assert time.monotonic() - started < seconds(5)
    assert response.status_code == 200
    assert response.json()["version"] == 2
    assert response.headers["etag"] == '"2"'


def test_long_poll_at_current_version_times_out_with_304(client: TestClient) -> None:
    """waitForVersion equal to the current version answers a bodyless 304 after the timeout."""
    job_id = create(client)
    response = client.get(f"/api/jobs/{job_id}?waitForVersion=1&timeout={seconds(0.05)}")
    assert response.status_code == 304
    assert response.content == b""
    assert response.headers["etag"] == '"1"'
    assert "jobcast_long_polls 0.0" in client.get("/metrics").text  # no longer waiting


# -- health, metrics -------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_health_endpoints_answer_ok(client: TestClient, path: str) -> None:
    """/healthz and /readyz answer 200 with status ok on a healthy memory backend."""
    response = client.get(path)
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_metrics_counters_move(client: TestClient) -> None:
    """created, updated, completed and failed counters count each accepted call."""
    names = ["created", "updated", "completed", "failed"]
    before = {n: metric(client, f"jobcast_jobs_{n}_total") for n in names}
    done, failed = create(client), create(client)
    patch(client, done, {"progress": 50})
    client.post(f"/api/jobs/{done}/complete")
    client.post(f"/api/jobs/{failed}/fail", json={"error": "x"})
    after = {n: metric(client, f"jobcast_jobs_{n}_total") for n in names}
    assert {n: after[n] - before[n] for n in names} == {
        "created": 2,
        "updated": 3,
        "completed": 1,
        "failed": 1,
    }


def test_metrics_refused_change_not_counted(client: TestClient) -> None:
    """A refused change (409) does not move the update counters."""
    job_id = create(client)
    client.post(f"/api/jobs/{job_id}/complete")
    updated = metric(client, "jobcast_jobs_updated_total")
    assert client.patch(f"/api/jobs/{job_id}", json={"progress": 1}).status_code == 409
    assert metric(client, "jobcast_jobs_updated_total") == updated


def test_metrics_jobs_by_status_gauge(client: TestClient) -> None:
    """The jobs gauge reports how many stored jobs are in each status."""
    create(client)
    running = create(client)
    patch(client, running, {"status": "processing"})
    done = create(client)
    client.post(f"/api/jobs/{done}/complete")
    counts = {s: metric(client, "jobcast_jobs", status=s) for s in ("queued", "processing")}
    assert counts == {"queued": 1, "processing": 1}
    assert metric(client, "jobcast_jobs", status="completed") == 1
    assert metric(client, "jobcast_jobs", status="error") == 0


def test_metrics_request_latency_histogram(client: TestClient) -> None:
    """Requests are timed in a histogram labelled by route template, not by raw path."""
    job_id = create(client)
    get(client, job_id)
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    labels = {"method": "GET", "route": "/api/jobs/{jobId}", "status": "200"}
    assert metric(client, "jobcast_request_duration_seconds_count", **labels) >= 1
    assert metric(client, "jobcast_request_duration_seconds_bucket", le="+Inf", **labels) >= 1
    assert job_id not in response.text


def test_metrics_count_events_sent_per_transport(client: TestClient) -> None:
    """jobcast_events_sent_total counts what SSE and WebSocket subscribers were written."""
    job_id = create(client)
    client.post(f"/api/jobs/{job_id}/complete", json={})
    with client.stream("GET", f"/api/jobs/{job_id}/events") as stream:
        events = [line for line in stream.iter_lines() if line.startswith("event:")]
    assert events == ["event: job", "event: synced"]  # the terminal state, then the end
    create(client)
    with client.websocket_connect("/api/jobs/ws") as socket:
        socket.send_json({"type": "subscribe", "all": True})
        frames = [socket.receive_json() for _ in range(4)]  # subscribed + 2 jobs + synced
    assert [frame["type"] for frame in frames] == ["subscribed", "job", "job", "synced"]
    assert metric(client, "jobcast_events_sent_total", transport="sse") == 2
    assert metric(client, "jobcast_events_sent_total", transport="ws") == 3


# -- OpenAPI ---------------------------------------------------------------------------------

SPEC_PATHS = {
    "/api/jobs": {"post", "get"},
    "/api/jobs/{jobId}": {"get", "patch"},
    "/api/jobs/{jobId}/complete": {"post"},
    "/api/jobs/{jobId}/fail": {"post"},
    "/api/jobs/{jobId}/events": {"get"},
    "/api/jobs/events": {"get"},
    "/": {"get"},
    "/healthz": {"get"},
    "/readyz": {"get"},
    "/metrics": {"get"},
}


@pytest.fixture
def openapi(client: TestClient) -> dict[str, Any]:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


def test_openapi_is_version_3_1(openapi: dict[str, Any]) -> None:
    """/openapi.json is an OpenAPI 3.1.x document."""
    assert re.fullmatch(r"3\.1\.\d+", openapi["openapi"])
    assert openapi["info"]["title"]


def test_openapi_documents_the_job_routes(openapi: dict[str, Any]) -> None:
    """Every /api/jobs route of SPEC section 2 (all but the WebSocket) is documented."""
    for path, methods in SPEC_PATHS.items():
        if path.startswith("/api/"):
            assert methods <= set(openapi["paths"].get(path, {})), path
    assert "/api/jobs/ws" not in openapi["paths"]


def test_openapi_documents_every_spec_path(openapi: dict[str, Any]) -> None:
    """Every HTTP route of SPEC section 2 above /openapi.json is in the document."""
    missing = {
        path: sorted(methods - set(openapi["paths"].get(path, {})))
        for path, methods in SPEC_PATHS.items()
        if methods - set(openapi["paths"].get(path, {}))
    }
    assert missing == {}


@pytest.mark.parametrize(
    ("model", "path", "method"),
    [
        (NewJob, "/api/jobs", "post"),
        (JobUpdate, "/api/jobs/{jobId}", "patch"),
        (Completion, "/api/jobs/{jobId}/complete", "post"),
        (Failure, "/api/jobs/{jobId}/fail", "post"),
    ],
)
def test_openapi_request_schemas_come_from_the_models(
    openapi: dict[str, Any], model: Any, path: str, method: str
) -> None:
    """Each request body refers to the schema pydantic generates for its model."""
    content = openapi["paths"][path][method]["requestBody"]["content"]
    reference = content["application/json"]["schema"]["$ref"]
    assert reference == f"#/components/schemas/{model.__name__}"
    assert openapi["components"]["schemas"][model.__name__] == model.model_json_schema()


def test_openapi_new_job_lists_the_job_types(openapi: dict[str, Any]) -> None:
    """NewJob.jobType is an enum of the four job types, defaulting to generic."""
    job_type = openapi["components"]["schemas"]["NewJob"]["properties"]["jobType"]
    assert set(job_type["enum"]) == {"file_processing", "document_analysis", "llm_agent", "generic"}
    assert job_type["default"] == "generic"


def test_openapi_progress_range_is_documented(openapi: dict[str, Any]) -> None:
    """JobUpdate.progress carries the 0-100 bounds the server enforces."""
    progress = openapi["components"]["schemas"]["JobUpdate"]["properties"]["progress"]
    number = next(option for option in progress["anyOf"] if option.get("type") == "number")
    assert (number["minimum"], number["maximum"]) == (0, 100)


def test_openapi_errors_are_problem_json(openapi: dict[str, Any]) -> None:
    """Error responses are documented as application/problem+json Problem documents."""
    responses = openapi["paths"]["/api/jobs/{jobId}"]["patch"]["responses"]
    for status in ("404", "409", "410", "422"):
        schema = responses[status]["content"]["application/problem+json"]["schema"]
        assert schema["$ref"] == "#/components/schemas/Problem"
