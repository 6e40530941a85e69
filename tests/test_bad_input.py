"""Every route that takes input, fed bad input: the right problem+json, nothing changed,
and the server still answers normally afterwards."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import httpx2
import pytest
from starlette.testclient import TestClient

from app import library
from app.main import create_app
from app.settings import Settings
from tests.conftest import local_client

PROBLEM = "application/problem+json"
JSON = {"content-type": "application/json"}
MiB = 1024 * 1024


@dataclass(frozen=True)
class Route:
    """A route with a JSON body; ``{id}`` in ``path`` stands for the job under test."""

    name: str
    method: str
    path: str
    valid: dict[str, Any]  # a body this route accepts

    def url(self, job_id: str) -> str:
        return self.path.format(id=job_id)


CREATE = Route("create", "POST", "/api/jobs", {"message": "ok"})
PATCH = Route("patch", "PATCH", "/api/jobs/{id}", {"progress": 50})
COMPLETE = Route("complete", "POST", "/api/jobs/{id}/complete", {"documentId": "doc_1"})
FAIL = Route("fail", "POST", "/api/jobs/{id}/fail", {"error": "broken"})
CANCEL = Route("cancel", "POST", "/api/jobs/{id}/cancel", {"reason": "not needed"})
OUTPUT = Route("output", "POST", "/api/jobs/{id}/output", {"chunks": [{"data": "x"}]})
BODY_ROUTES = [CREATE, PATCH, COMPLETE, FAIL, CANCEL, OUTPUT]


def nested_metadata(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"a": value}
    return value


def assert_problem(
    response: httpx2.Response,
    status: int,
    slug: str | None = None,
    field: str | None = None,
) -> dict[str, Any]:
    """The response is an RFC 9457 problem with this status (and type slug, and field)."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    problem: dict[str, Any] = response.json()
    assert problem["status"] == status
    assert problem["title"] == HTTPStatus(status).phrase
    assert isinstance(problem["detail"], str)
    assert problem["detail"]
    assert isinstance(problem["type"], str)
    if slug is None:
        assert problem["type"]
    else:
        assert problem["type"].endswith(slug)
    if field is not None:
        assert field in [error["field"] for error in problem["errors"]], problem
        assert all(error["message"] for error in problem["errors"])
    return problem


class Guard:
    """Remembers the stored job and job list, to prove a refused request changed nothing."""

    def __init__(self, client: TestClient, job_id: str) -> None:
        self.client = client
        self.job_id = job_id
        self.job = client.get(f"/api/jobs/{job_id}").json()
        self.jobs = client.get("/api/jobs").json()

    def refused(
        self,
        response: httpx2.Response,
        status: int,
        slug: str | None = None,
        field: str | None = None,
    ) -> dict[str, Any]:
        """The response is the expected problem, nothing changed, and the server still works."""
        problem = assert_problem(response, status, slug, field)
        after = self.client.get(f"/api/jobs/{self.job_id}")
        assert after.status_code == 200
        assert after.json() == self.job
        assert self.client.get("/api/jobs").json() == self.jobs
        assert self.client.post("/api/jobs", json={"message": "still alive"}).status_code == 201
        return problem


@pytest.fixture
def job_id(client: TestClient) -> str:
    """A processing job with metadata, at version 2."""
    response = client.post(
        "/api/jobs", json={"jobType": "file_processing", "metadata": {"fileName": "a.pdf"}}
    )
    job_id: str = response.json()["jobId"]
    assert client.patch(f"/api/jobs/{job_id}", json={"status": "processing"}).status_code == 200
    return job_id


@pytest.fixture
def guard(client: TestClient, job_id: str) -> Guard:
    return Guard(client, job_id)


def send(client: TestClient, route: Route, job_id: str, **kwargs: Any) -> httpx2.Response:
    return client.request(route.method, route.url(job_id), **kwargs)


# -- bodies every JSON route refuses ---------------------------------------------------------

MALFORMED = {
    "truncated": b'{"message": ',
    "trailing-garbage": b'{"message": "x"} x',
    "single-quotes": b"{'message': 'x'}",
    "not-utf8": b"\xff\xfe\x00",
    "bare-word": b"hello",
}


@pytest.mark.parametrize("route", BODY_ROUTES, ids=lambda r: r.name)
@pytest.mark.parametrize("body", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_json_is_400(client: TestClient, guard: Guard, route: Route, body: bytes) -> None:
    """A body that is not JSON answers 400 malformed-json."""
    response = send(client, route, guard.job_id, content=body, headers=JSON)
    guard.refused(response, 400, "malformed-json")


@pytest.mark.parametrize("route", BODY_ROUTES, ids=lambda r: r.name)
def test_json_nested_10000_levels_is_refused(
    client: TestClient, guard: Guard, route: Route
) -> None:
    """JSON nested 10 000 levels deep is refused with a 4xx problem, never a crash."""
    body = b"[" * 10_000 + b"]" * 10_000
    response = send(client, route, guard.job_id, content=body, headers=JSON)
    assert response.status_code in (400, 422), response.text
    guard.refused(response, response.status_code)


@pytest.mark.parametrize("route", [CREATE, PATCH], ids=lambda r: r.name)
def test_metadata_nested_10000_levels_is_refused(
    client: TestClient, guard: Guard, route: Route
) -> None:
    """Metadata nested 10 000 levels deep (raw JSON) is refused with a 4xx problem."""
    body = b'{"metadata": ' + b'{"a": ' * 10_000 + b"1" + b"}" * 10_001
    response = send(client, route, guard.job_id, content=body, headers=JSON)
    assert response.status_code in (400, 422), response.text
    guard.refused(response, response.status_code)


@pytest.mark.parametrize("route", BODY_ROUTES, ids=lambda r: r.name)
@pytest.mark.parametrize("body", [[], "text", 5, None, True], ids=repr)
def test_body_that_is_not_an_object_is_422(
    client: TestClient, guard: Guard, route: Route, body: Any
) -> None:
    """A JSON body that is not an object answers 422 naming the body."""
    response = send(client, route, guard.job_id, content=json.dumps(body), headers=JSON)
    guard.refused(response, 422, "invalid-request", field="body")


@pytest.mark.parametrize("route", BODY_ROUTES, ids=lambda r: r.name)
def test_unknown_field_is_422(client: TestClient, guard: Guard, route: Route) -> None:
    """A field the route does not know answers 422 naming that field."""
    response = send(client, route, guard.job_id, json={**route.valid, "bogus": 1})
    guard.refused(response, 422, "invalid-request", field="bogus")


@pytest.mark.parametrize("route", BODY_ROUTES, ids=lambda r: r.name)
def test_body_over_one_mib_is_413(client: TestClient, guard: Guard, route: Route) -> None:
    """A 2 MiB body answers 413 as problem+json naming the limit and its setting."""
    body = json.dumps({"message": "x" * (2 * MiB)})
    response = send(client, route, guard.job_id, content=body, headers=JSON)
    problem = guard.refused(response, 413)
    assert "JOBS_MAX_BODY_BYTES = 1048576" in problem["detail"]


@pytest.mark.parametrize("route", BODY_ROUTES, ids=lambda r: r.name)
def test_streamed_body_over_one_mib_is_413(client: TestClient, guard: Guard, route: Route) -> None:
    """A 2 MiB body sent in chunks without Content-Length answers 413 naming the limit."""
    chunks = (b"x" * 65536 for _ in range(32))
    response = send(client, route, guard.job_id, content=chunks, headers=JSON)
    problem = guard.refused(response, 413)
    assert "JOBS_MAX_BODY_BYTES = 1048576" in problem["detail"]


def test_body_just_under_one_mib_is_accepted() -> None:
    """A body just under 1 MiB is within the body limit and accepted (metadata limit raised)."""
    body = json.dumps({"metadata": {"blob": "x" * (MiB - 100)}})
    assert len(body) < MiB
    with local_client(create_app(Settings(max_metadata_bytes=2 * MiB))) as client:
        response = client.post("/api/jobs", content=body, headers=JSON)
    assert response.status_code == 201


@pytest.mark.parametrize("route", BODY_ROUTES, ids=lambda r: r.name)
def test_multipart_form_like_the_old_api_is_415(
    client: TestClient, guard: Guard, route: Route
) -> None:
    """The Jobs API's old FormData upload answers 415 with a detail that says to send JSON."""
    response = send(
        client,
        route,
        guard.job_id,
        files={"file": ("contract.pdf", b"%PDF-1.4", "application/pdf")},
        data={"documentType": "contract", "parentId": "c_1"},
    )
    problem = guard.refused(response, 415)
    assert "JSON" in problem["detail"]
    assert "multipart/form-data" in problem["detail"]


@pytest.mark.parametrize("route", BODY_ROUTES, ids=lambda r: r.name)
@pytest.mark.parametrize(
    "content_type", ["application/x-www-form-urlencoded", "text/html", "application/xml"]
)
def test_other_media_types_are_415(
    client: TestClient, guard: Guard, route: Route, content_type: str
) -> None:
    """Forms and other non-JSON media types answer 415 saying to send JSON."""
    response = send(
        client, route, guard.job_id, content=b"message=x", headers={"content-type": content_type}
    )
    problem = guard.refused(response, 415)
    assert "JSON" in problem["detail"]


@pytest.mark.parametrize("coding", ["gzip", "br"])
def test_an_encoded_body_is_415_saying_to_send_it_uncompressed(
    client: TestClient, guard: Guard, coding: str
) -> None:
    """A Content-Encoding other than identity is refused, not read as plain JSON."""
    response = send(
        client,
        PATCH,
        guard.job_id,
        content=b'{"progress": 50}',
        headers={**JSON, "content-encoding": coding},
    )
    problem = guard.refused(response, 415)
    assert f"Content-Encoding {coding}" in problem["detail"]
    assert "uncompressed" in problem["detail"]


# -- field values, per route -----------------------------------------------------------------

# A case: a body, and the field its problem must name.
Cases = dict[str, tuple[dict[str, Any], str]]

CREATE_CASES: Cases = {
    "jobType-unknown": ({"jobType": "video"}, "jobType"),
    "jobType-number": ({"jobType": 1}, "jobType"),
    "jobType-null": ({"jobType": None}, "jobType"),
    "message-number": ({"message": 123}, "message"),
    "message-bool": ({"message": True}, "message"),
    "message-too-long": ({"message": "x" * 10_001}, "message"),
    "metadata-list": ({"metadata": [1, 2]}, "metadata"),
    "metadata-string": ({"metadata": "x"}, "metadata"),
    "metadata-number": ({"metadata": 5}, "metadata"),
    "metadata-bool": ({"metadata": True}, "metadata"),
    "metadata-null": ({"metadata": None}, "metadata"),
    "metadata-nested-40": ({"metadata": nested_metadata(40)}, "metadata"),
}

PATCH_CASES: Cases = {
    "progress-negative": ({"progress": -1}, "progress"),
    "progress-just-negative": ({"progress": -0.001}, "progress"),
    "progress-over-100": ({"progress": 100.5}, "progress"),
    "progress-101": ({"progress": 101}, "progress"),
    "progress-string": ({"progress": "50"}, "progress"),
    "progress-true": ({"progress": True}, "progress"),
    "progress-false": ({"progress": False}, "progress"),
    "progress-list": ({"progress": [50]}, "progress"),
    "status-unknown": ({"status": "done"}, "status"),
    "status-number": ({"status": 1}, "status"),
    "status-case": ({"status": "Processing"}, "status"),
    "message-number": ({"message": 5}, "message"),
    "message-too-long": ({"message": "x" * 10_001}, "message"),
    "metadata-list": ({"metadata": ["a"]}, "metadata"),
    "metadata-string": ({"metadata": "x"}, "metadata"),
    "metadata-number": ({"metadata": 1.5}, "metadata"),
    "metadata-nested-40": ({"metadata": nested_metadata(40)}, "metadata"),
    "empty-object": ({}, "body"),
    "only-nulls": ({"status": None, "progress": None}, "body"),
    "good-and-bad": ({"message": "fine", "progress": 500}, "progress"),
}

COMPLETE_CASES: Cases = {
    "documentId-number": ({"documentId": 5}, "documentId"),
    "documentId-bool": ({"documentId": True}, "documentId"),
    "message-list": ({"message": []}, "message"),
    "message-too-long": ({"message": "x" * 10_001}, "message"),
}

FAIL_CASES: Cases = {
    "error-missing": ({}, "error"),
    "error-only-message": ({"message": "m"}, "error"),
    "error-number": ({"error": 5}, "error"),
    "error-null": ({"error": None}, "error"),
    "error-object": ({"error": {"code": 1}}, "error"),
    "message-number": ({"error": "e", "message": 5}, "message"),
}

CANCEL_CASES: Cases = {
    "reason-number": ({"reason": 5}, "reason"),
    "reason-object": ({"reason": {"why": "x"}}, "reason"),
    "reason-too-long": ({"reason": "x" * 10_001}, "reason"),
    "force-string": ({"force": "yes"}, "force"),
    "force-number": ({"force": 2}, "force"),
    "force-null": ({"force": None}, "force"),
}


def _cases(route: Route, cases: Cases) -> list[Any]:
    return [
        pytest.param(route, body, field, id=f"{route.name}-{name}")
        for name, (body, field) in cases.items()
    ]


FIELD_CASES = [
    *_cases(CREATE, CREATE_CASES),
    *_cases(PATCH, PATCH_CASES),
    *_cases(COMPLETE, COMPLETE_CASES),
    *_cases(FAIL, FAIL_CASES),
    *_cases(CANCEL, CANCEL_CASES),
]


@pytest.mark.parametrize(("route", "body", "field"), FIELD_CASES)
def test_invalid_field_is_422_naming_it(
    client: TestClient, guard: Guard, route: Route, body: dict[str, Any], field: str
) -> None:
    """A wrong type, out-of-range value or unknown word answers 422 naming the field."""
    response = send(client, route, guard.job_id, json=body)
    guard.refused(response, 422, "invalid-request", field=field)


# app.service checks text lengths against a setting and still words its own detail.
PYDANTIC_WORDING = (
    "Value error",
    "Input should",
    "Field required",
    "Extra inputs",
    "invalid value",
)


@pytest.mark.parametrize(("route", "body", "field"), FIELD_CASES)
def test_invalid_field_detail_is_its_first_field_error(
    client: TestClient, guard: Guard, route: Route, body: dict[str, Any], field: str
) -> None:
    """The detail is the first field error as `field: why`, one error per field, in our words."""
    response = send(client, route, guard.job_id, json=body)
    problem = guard.refused(response, 422, "invalid-request", field=field)
    errors = problem["errors"]
    first = f"{errors[0]['field']}: {errors[0]['message']}"
    more = len(errors) - 1
    assert problem["detail"] == (f"{first} (and {more} more)" if more else first)
    assert len({error["field"] for error in errors}) == len(errors)
    for text in [problem["detail"], *(error["message"] for error in errors)]:
        assert not any(words in text for words in PYDANTIC_WORDING), text


JOB_TYPES_WORDS = "'file_processing', 'document_analysis', 'llm_agent', 'generic'"
STATUSES_WORDS = "'queued', 'processing', 'completed', 'error'"
DETAILS = {
    "at-most": (PATCH, {"progress": 150}, "progress: must be at most 100"),
    "at-least": (PATCH, {"progress": -1}, "progress: must be at least 0"),
    "number": (PATCH, {"progress": "50"}, "progress: must be a number"),
    "one-of": (PATCH, {"status": "done"}, f"status: must be one of: {STATUSES_WORDS}"),
    "validator": (
        PATCH,
        {},
        "body: give at least one of status, progress, message, metadata",
    ),
    "only-nulls": (
        PATCH,
        {"progress": None, "message": None},
        "body: give at least one of status, progress, message, metadata"
        " (null leaves a field as it is)",
    ),
    "past-2**53": (
        OUTPUT,
        {"chunks": [{"data": 1}], "expectedOffset": 2**53},
        "expectedOffset: must be at most 9007199254740991",
    ),
    "nesting": (
        PATCH,
        {"metadata": nested_metadata(40)},
        "metadata: may nest at most 32 levels deep",
    ),
    "typo": (
        PATCH,
        {"progres": 5},
        "progres: is not a field of this request; did you mean progress?",
    ),
    "unknown": (
        PATCH,
        {"bogus": 1},
        "bogus: is not a field of this request; it takes status, progress, message, metadata",
    ),
    "chunk-unknown": (
        OUTPUT,
        {"chunks": [{"data": 1, "extra": 2}]},
        "chunks.0.extra: is not a field here; it takes data, kind",
    ),
    "chunk-typo": (
        OUTPUT,
        {"chunks": [{"data": 1}, {"data": 2, "knd": "log"}]},
        "chunks.1.knd: is not a field here; did you mean kind?",
    ),
    "several": (
        PATCH,
        {"progress": 500, "status": "done", "message": 5},
        f"status: must be one of: {STATUSES_WORDS} (and 2 more)",
    ),
    "job-type": (CREATE, {"jobType": "video"}, f"jobType: must be one of: {JOB_TYPES_WORDS}"),
    "string": (CREATE, {"message": 5}, "message: must be a string"),
    "object": (CREATE, {"metadata": [1]}, "metadata: must be an object"),
    "pattern": (
        CREATE,
        {"owner": "a b"},
        "owner: must be visible ASCII characters, without spaces",
    ),
    "too-long": (CREATE, {"owner": "x" * 201}, "owner: may hold at most 200 characters"),
    "empty": (CREATE, {"owner": ""}, "owner: must not be empty"),
    "not-object": (CREATE, [], "body: must be a JSON object"),
    "required": (FAIL, {}, "error: is required"),
}


@pytest.mark.parametrize(("route", "body", "detail"), DETAILS.values(), ids=DETAILS.keys())
def test_invalid_field_detail_says_what_to_change(
    client: TestClient, guard: Guard, route: Route, body: Any, detail: str
) -> None:
    """Each kind of refusal reads as an instruction: `progress: must be at most 100`."""
    response = send(client, route, guard.job_id, json=body)
    assert guard.refused(response, 422, "invalid-request")["detail"] == detail


SNAKE_CASES = {
    "create-jobType": (CREATE, {"job_type": "llm_agent"}, "job_type", "jobType"),
    "complete-documentId": (COMPLETE, {"document_id": "doc_1"}, "document_id", "documentId"),
    "both-spellings": (
        CREATE,
        {"jobType": "generic", "job_type": "llm_agent"},
        "job_type",
        "jobType",
    ),
}


@pytest.mark.parametrize(
    ("route", "body", "snake", "camel"), SNAKE_CASES.values(), ids=SNAKE_CASES.keys()
)
def test_snake_case_field_is_422_suggesting_the_wire_name(
    client: TestClient, guard: Guard, route: Route, body: dict[str, Any], snake: str, camel: str
) -> None:
    """A Python (snake_case) name in a body is refused, naming it and the camelCase to send."""
    response = send(client, route, guard.job_id, json=body)
    problem = guard.refused(response, 422, "invalid-request", field=snake)
    assert problem["detail"] == f"{snake}: is not a field of this request; did you mean {camel}?"
    assert [error["field"] for error in problem["errors"]] == [snake]


NON_FINITE = ["NaN", "Infinity", "-Infinity"]


@pytest.mark.parametrize("literal", NON_FINITE)
def test_non_finite_progress_is_refused(client: TestClient, guard: Guard, literal: str) -> None:
    """NaN/Infinity literals as progress are refused (400 not-JSON, or 422 naming progress)."""
    body = f'{{"progress": {literal}}}'.encode()
    response = client.patch(f"/api/jobs/{guard.job_id}", content=body, headers=JSON)
    _refused_as_non_finite(guard, response, "progress")


@pytest.mark.parametrize("route", [CREATE, PATCH], ids=lambda r: r.name)
@pytest.mark.parametrize("literal", NON_FINITE)
def test_non_finite_metadata_is_refused(
    client: TestClient, guard: Guard, route: Route, literal: str
) -> None:
    """NaN/Infinity literals inside metadata are refused, not stored (JSON has no such values)."""
    body = f'{{"metadata": {{"ratio": {literal}}}}}'.encode()
    response = send(client, route, guard.job_id, content=body, headers=JSON)
    _refused_as_non_finite(guard, response, "metadata")


@pytest.mark.parametrize(
    "data", ["NaN", "-Infinity", '{"scores": [1, Infinity]}', "1e400"], ids=str
)
def test_non_finite_output_is_refused(client: TestClient, guard: Guard, data: str) -> None:
    """NaN/Infinity in a chunk, however deep, is refused: sent on, it would break every
    reader's JSON (the parser takes the literals, and 1e400 overflows to Infinity)."""
    body = f'{{"chunks": [{{"data": "fine"}}, {{"data": {data}}}]}}'.encode()
    response = send(client, OUTPUT, guard.job_id, content=body, headers=JSON)
    problem = guard.refused(response, 422, "invalid-request", field="chunks.1.data")
    assert "finite numbers only" in problem["detail"]
    assert client.get(f"/api/jobs/{guard.job_id}/output").json()["chunks"] == []


def _refused_as_non_finite(guard: Guard, response: httpx2.Response, field: str) -> None:
    if response.status_code == 400:
        guard.refused(response, 400, "malformed-json")
    else:
        guard.refused(response, 422, "invalid-request", field=field)


def test_empty_patch_body_is_422(client: TestClient, guard: Guard) -> None:
    """A PATCH with no body at all answers 422: there is nothing to change."""
    response = client.patch(f"/api/jobs/{guard.job_id}", content=b"", headers=JSON)
    problem = guard.refused(response, 422, "invalid-request", field="body")
    assert "status" in problem["errors"][0]["message"]


def test_empty_fail_body_is_422_naming_error(client: TestClient, guard: Guard) -> None:
    """A fail with no body answers 422 naming the missing `error`."""
    response = client.post(f"/api/jobs/{guard.job_id}/fail")
    guard.refused(response, 422, "invalid-request", field="error")


# -- Idempotency-Key -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [b"", b"k" * 256, "clé".encode(), b"a\tb", b"a\x7fb"],
    ids=["empty", "too-long", "non-ascii", "tab", "control"],
)
def test_bad_idempotency_key_is_422(client: TestClient, guard: Guard, key: bytes) -> None:
    """An Idempotency-Key that is empty, too long or not printable ASCII answers 422."""
    response = client.post("/api/jobs", json={}, headers=[(b"Idempotency-Key", key)])
    guard.refused(response, 422, "invalid-request", field="Idempotency-Key")


# -- query strings ---------------------------------------------------------------------------

LIST_QUERIES = {
    "limit-zero": ("limit=0", "limit"),
    "limit-negative": ("limit=-1", "limit"),
    "limit-over-1000": ("limit=1001", "limit"),
    "limit-word": ("limit=ten", "limit"),
    "limit-fraction": ("limit=1.5", "limit"),
    "limit-bool": ("limit=true", "limit"),
    "limit-empty": ("limit=", "limit"),
    "status-unknown": ("status=done", "status"),
    "jobType-unknown": ("jobType=video", "jobType"),
    "cursor-garbage": ("cursor=not-a-cursor!", "cursor"),
    "owner-control": ("owner=%00", "owner"),  # owners are visible ASCII, as on create
    "limit-decimal": ("limit=1.0", "limit"),  # a count is digits: not 1
    "owner-empty": ("owner=", "owner"),
    "cursor-too-long": ("cursor=" + "a" * 300, "cursor"),
    "status-twice": ("status=queued&status=processing", "status"),  # one would win, silently
    "jobType-under-both-names": ("jobType=generic&job_type=llm_agent", "jobType"),
}

GET_QUERIES = {
    "waitForVersion-negative": ("waitForVersion=-1", "waitForVersion"),
    "waitForVersion-word": ("waitForVersion=abc", "waitForVersion"),
    "waitForVersion-fraction": ("waitForVersion=1.5", "waitForVersion"),
    "waitForVersion-bool": ("waitForVersion=true", "waitForVersion"),
    "waitForVersion-past-2**53": ("waitForVersion=9007199254740992", "waitForVersion"),
    "waitForVersion-underscore": ("waitForVersion=1_0", "waitForVersion"),  # not 10
    "timeout-zero": ("waitForVersion=2&timeout=0", "timeout"),
    "timeout-negative": ("waitForVersion=2&timeout=-1", "timeout"),
    "timeout-over-60": ("waitForVersion=2&timeout=61", "timeout"),
    "timeout-nan": ("waitForVersion=2&timeout=nan", "timeout"),
    "timeout-inf": ("waitForVersion=2&timeout=inf", "timeout"),
    "timeout-word": ("waitForVersion=2&timeout=soon", "timeout"),
    "waitForVersion-twice": ("waitForVersion=1&waitForVersion=2", "waitForVersion"),
}

STREAM_QUERIES = {
    "status-unknown": ("status=done", "status"),
    "jobType-unknown": ("jobType=video", "jobType"),
    "lastEventId-too-long": ("lastEventId=" + "1" * 300, "lastEventId"),
    "owner-space": ("owner=a%20b", "owner"),
    "status-twice": ("status=queued&status=error", "status"),
}


def _query_cases(path: str, cases: dict[str, tuple[str, str]]) -> list[Any]:
    return [
        pytest.param(path, query, field, id=f"{path}-{name}")
        for name, (query, field) in cases.items()
    ]


QUERY_CASES = [
    *_query_cases("/api/jobs", LIST_QUERIES),
    *_query_cases("/api/jobs/{id}", GET_QUERIES),
    *_query_cases("/api/jobs/events", STREAM_QUERIES),
    *_query_cases("/api/jobs/{id}/events", STREAM_QUERIES),
]


@pytest.mark.parametrize(("path", "query", "field"), QUERY_CASES)
def test_invalid_query_is_422_naming_it(
    client: TestClient, guard: Guard, path: str, query: str, field: str
) -> None:
    """A bad query parameter answers 422 naming it, before any long-poll or stream starts."""
    response = client.get(f"{path.format(id=guard.job_id)}?{query}")
    guard.refused(response, 422, "invalid-request", field=field)


def test_a_query_parameter_given_twice_says_how(client: TestClient) -> None:
    """The detail says what was given twice; parameters no route reads are left alone."""
    twice = client.get("/api/jobs?status=queued&status=processing")
    assert twice.json()["detail"] == "status: is given 2 times: give it once"
    both = client.get("/api/jobs?jobType=generic&job_type=llm_agent")
    assert both.json()["detail"] == "jobType: is given as jobType and as job_type: give it once"
    assert client.get("/api/jobs?status=queued&_=1&_=2").status_code == 200


# -- routes, methods, ids --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/nope"),
        ("GET", "/api/jobs/{id}/nope"),
        ("POST", "/api/jobs/{id}/restart"),
        ("GET", "/api/jobs/{id}/complete/extra"),
        ("GET", "/jobs"),
    ],
)
def test_unknown_route_is_404(client: TestClient, guard: Guard, method: str, path: str) -> None:
    """A path no route serves answers 404 problem+json."""
    url = path.format(id=guard.job_id)
    problem = guard.refused(client.request(method, url), 404)
    assert url in problem["detail"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PUT", "/api/jobs/{id}"),
        ("POST", "/api/jobs/{id}"),
        ("DELETE", "/api/jobs"),
        ("PATCH", "/api/jobs"),
        ("GET", "/api/jobs/{id}/complete"),
        ("GET", "/api/jobs/{id}/fail"),
        ("GET", "/api/jobs/{id}/cancel"),
        ("DELETE", "/api/jobs/{id}/cancel"),
        ("POST", "/api/jobs/{id}/events"),
        ("POST", "/api/jobs/events"),
        ("POST", "/healthz"),
    ],
)
def test_wrong_method_is_405(client: TestClient, guard: Guard, method: str, path: str) -> None:
    """A known path with a method it does not serve answers 405, and Allow lists every
    method the path does serve, whichever of its routes serves it."""
    response = client.request(method, path.format(id=guard.job_id), json={"progress": 1})
    problem = guard.refused(response, 405)
    assert method in problem["detail"]
    assert set(response.headers["allow"].split(", ")) == SERVED[path]


def test_a_plain_get_of_the_websocket_endpoint_says_what_it_is(client: TestClient) -> None:
    """A browser's address bar or curl on /api/jobs/ws gets 426 naming the protocol, not
    404 for a job called ws."""
    response = client.get("/api/jobs/ws")
    assert response.status_code == 426
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["upgrade"] == "websocket"
    assert response.headers["connection"] == "Upgrade"  # Upgrade is hop-by-hop: named there
    assert "WebSocket client" in response.json()["detail"]
    assert "/api/jobs/events" in response.json()["detail"]


SERVED = {
    "/api/jobs/{id}": {"GET", "HEAD", "PATCH", "DELETE"},
    "/api/jobs": {"GET", "HEAD", "POST"},
    "/api/jobs/{id}/complete": {"POST"},
    "/api/jobs/{id}/fail": {"POST"},
    "/api/jobs/{id}/cancel": {"POST"},
    "/api/jobs/{id}/events": {"GET", "HEAD"},
    # /api/jobs/{jobId} matches it too: PATCH and DELETE reach the job routes (job "events").
    "/api/jobs/events": {"GET", "HEAD", "PATCH", "DELETE"},
    "/healthz": {"GET", "HEAD"},
}


ID_ROUTES = [
    pytest.param("GET", "/api/jobs/{id}", None, id="get"),
    pytest.param("GET", "/api/jobs/{id}?waitForVersion=0&timeout=1", None, id="long-poll"),
    pytest.param("PATCH", "/api/jobs/{id}", {"progress": 5}, id="patch"),
    pytest.param("POST", "/api/jobs/{id}/complete", {}, id="complete"),
    pytest.param("POST", "/api/jobs/{id}/fail", {"error": "x"}, id="fail"),
    pytest.param("POST", "/api/jobs/{id}/cancel", {}, id="cancel"),
    pytest.param("DELETE", "/api/jobs/{id}", None, id="delete"),
    pytest.param("GET", "/api/jobs/{id}/events", None, id="events"),
]


@pytest.mark.parametrize(("method", "path", "body"), ID_ROUTES)
def test_unknown_job_is_404(
    client: TestClient, guard: Guard, method: str, path: str, body: Any
) -> None:
    """An id that never existed answers 404 job-not-found naming the id."""
    unknown = "job_doesNotExist0000000"
    response = client.request(method, path.format(id=unknown), json=body)
    problem = guard.refused(response, 404, "job-not-found")
    assert unknown in problem["detail"]


TERMINAL_CHANGES = [
    pytest.param("PATCH", "", {"progress": 5}, id="patch-progress"),
    pytest.param("PATCH", "", {"status": "processing"}, id="patch-status"),
    pytest.param("PATCH", "", {"metadata": {"k": 1}}, id="patch-metadata"),
    pytest.param("POST", "/complete", {}, id="complete"),
    pytest.param("POST", "/fail", {"error": "late"}, id="fail"),
    pytest.param("POST", "/cancel", {}, id="cancel"),
    pytest.param("POST", "/cancel", {"force": True}, id="cancel-force"),
]


@pytest.mark.parametrize("ending", ["complete", "fail"])
@pytest.mark.parametrize(("method", "suffix", "body"), TERMINAL_CHANGES)
def test_change_to_terminal_job_is_409(
    client: TestClient, job_id: str, ending: str, method: str, suffix: str, body: Any
) -> None:
    """Any change to a completed or failed job answers 409 and the job stays as it was."""
    ended = client.post(
        f"/api/jobs/{job_id}/{ending}", json={"error": "e"} if ending == "fail" else {}
    )
    assert ended.status_code == 200
    watcher = Guard(client, job_id)
    response = client.request(method, f"/api/jobs/{job_id}{suffix}", json=body)
    problem = watcher.refused(response, 409, "invalid-transition")
    assert job_id in problem["detail"]


def test_processing_back_to_queued_is_409(client: TestClient, guard: Guard) -> None:
    """A processing job cannot go back to queued: 409, unchanged."""
    response = client.patch(f"/api/jobs/{guard.job_id}", json={"status": "queued"})
    guard.refused(response, 409, "invalid-transition")


# -- cleaned-up jobs -------------------------------------------------------------------------


@pytest.fixture
def sweeping_client() -> Iterator[TestClient]:
    """An app whose terminal jobs are cleaned up as soon as the store sweeps."""
    with local_client(create_app(Settings(terminal_ttl=0))) as test_client:
        yield test_client


def cleaned_up_job(client: TestClient) -> str:
    job_id: str = client.post("/api/jobs").json()["jobId"]
    assert client.post(f"/api/jobs/{job_id}/complete").status_code == 200
    assert client.portal is not None
    client.portal.call(library.current_service().store.sweep)
    return job_id


@pytest.mark.parametrize(("method", "path", "body"), ID_ROUTES)
def test_cleaned_up_job_is_410(
    sweeping_client: TestClient, method: str, path: str, body: Any
) -> None:
    """A job removed after its terminal TTL answers 410 job-gone on every route, and stays so."""
    job_id = cleaned_up_job(sweeping_client)
    response = sweeping_client.request(method, path.format(id=job_id), json=body)
    problem = assert_problem(response, 410, "job-gone")
    assert job_id in problem["detail"]
    assert_problem(sweeping_client.get(f"/api/jobs/{job_id}"), 410, "job-gone")
    assert sweeping_client.post("/api/jobs").status_code == 201


def test_cleaned_up_job_leaves_the_list(sweeping_client: TestClient) -> None:
    """A cleaned-up job is no longer listed."""
    job_id = cleaned_up_job(sweeping_client)
    listed = sweeping_client.get("/api/jobs").json()["jobs"]
    assert job_id not in [job["jobId"] for job in listed]
