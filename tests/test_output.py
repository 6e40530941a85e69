"""Job output over HTTP: append, read back, the job's outputSize, the per-job stream
with ``?output=1``, WebSocket subscriptions with ``output``, the library, metrics,
and every way an append or a read can be wrong (problem+json, nothing stored)."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from tests.conftest import local_client
from tests.e2e.sse_reader import Event, EventStreamParser
from tests.test_bad_input import assert_problem

LIMITS = Settings(output_max_chunks=3, output_max_chunk_bytes=20, output_max_bytes=60)


@pytest.fixture
def small() -> Any:
    with local_client(create_app(LIMITS)) as test_client:
        yield test_client


def new_job(client: TestClient, job_type: str = "llm_agent") -> str:
    return str(client.post("/api/jobs", json={"jobType": job_type}).json()["jobId"])


def append(client: TestClient, job_id: str, *data: Any, kind: str | None = "token") -> Any:
    chunks = [{"data": d} if kind is None else {"data": d, "kind": kind} for d in data]
    response = client.post(f"/api/jobs/{job_id}/output", json={"chunks": chunks})
    assert response.status_code == 200, response.text
    return response.json()


def read_all(client: TestClient, job_id: str) -> list[dict[str, Any]]:
    return list(client.get(f"/api/jobs/{job_id}/output").json()["chunks"])


def stream(client: TestClient, path: str, last_id: str | None = None) -> list[Event]:
    headers = {"Last-Event-ID": last_id} if last_id is not None else {}
    with client.stream("GET", path, headers=headers) as response:
        assert response.status_code == 200
        parser = EventStreamParser()
        parser.feed(response.read().decode())
    return list(parser.events)


# -- append and read -------------------------------------------------------------


def test_append_answers_where_the_chunks_went(client: TestClient) -> None:
    job_id = new_job(client)
    assert append(client, job_id, "Hel", "lo") == {"jobId": job_id, "offset": 0, "nextOffset": 2}
    assert append(client, job_id, {"rows": [1, 2]}, kind=None)["offset"] == 2
    assert read_all(client, job_id) == [
        {"offset": 0, "data": "Hel", "kind": "token"},
        {"offset": 1, "data": "lo", "kind": "token"},
        {"offset": 2, "data": {"rows": [1, 2]}},
    ]


def test_an_append_answers_the_cancel_flag_once_a_cancel_was_asked(client: TestClient) -> None:
    """A worker that only streams output hears a cancel in its append's answer, as every
    write's answer carries the flag; the chunks are appended all the same."""
    job_id = new_job(client)
    client.patch(f"/api/jobs/{job_id}", json={"status": "processing"})
    canceled = client.post(f"/api/jobs/{job_id}/cancel", json={"reason": "the user left"})
    assert canceled.status_code == 200, canceled.text
    answer = append(client, job_id, "more")
    assert answer == {
        "jobId": job_id,
        "offset": 0,
        "nextOffset": 1,
        "cancelRequested": True,
        "cancelReason": "the user left",
    }
    assert read_all(client, job_id) == [{"offset": 0, "data": "more", "kind": "token"}]


def test_pages_resume_from_next_offset(client: TestClient) -> None:
    job_id = new_job(client)
    append(client, job_id, *range(5))
    page = client.get(f"/api/jobs/{job_id}/output?after=1&limit=2").json()
    assert [c["data"] for c in page["chunks"]] == [1, 2]
    assert (page["nextOffset"], page["complete"]) == (3, False)
    rest = client.get(f"/api/jobs/{job_id}/output?after={page['nextOffset']}").json()
    assert [c["data"] for c in rest["chunks"]] == [3, 4]
    assert rest["complete"] is False
    client.post(f"/api/jobs/{job_id}/complete", json={})
    end = client.get(f"/api/jobs/{job_id}/output?after=5").json()
    assert (end["chunks"], end["nextOffset"], end["complete"]) == ([], 5, True)
    # Ended, but this page is not the last one: not complete yet.
    assert client.get(f"/api/jobs/{job_id}/output?limit=2").json()["complete"] is False


def test_output_size_joins_the_job_without_a_new_version(client: TestClient) -> None:
    job_id = new_job(client)
    before = client.get(f"/api/jobs/{job_id}")
    assert "outputSize" not in before.json()
    append(client, job_id, "a", "b")
    after = client.get(f"/api/jobs/{job_id}")
    assert (after.json()["version"], after.json()["outputSize"]) == (1, 2)
    # The ETag follows the output too: a client holding the old one gets the new JSON.
    assert after.headers["etag"] != before.headers["etag"]
    fresh = client.get(f"/api/jobs/{job_id}", headers={"If-None-Match": before.headers["etag"]})
    assert fresh.status_code == 200
    same = client.get(f"/api/jobs/{job_id}", headers={"If-None-Match": after.headers["etag"]})
    assert same.status_code == 304
    listed = client.get("/api/jobs").json()["jobs"]
    assert [job["outputSize"] for job in listed if job["jobId"] == job_id] == [2]


def test_a_retried_append_with_its_expected_offset_applies_once(client: TestClient) -> None:
    job_id = new_job(client)
    body = {"chunks": [{"data": "a"}, {"data": "b"}], "expectedOffset": 0}
    assert client.post(f"/api/jobs/{job_id}/output", json=body).status_code == 200
    again = client.post(f"/api/jobs/{job_id}/output", json=body)
    problem = assert_problem(again, 409, "offset-mismatch")
    assert problem["nextOffset"] == 2
    assert "expectedOffset is 0" in problem["detail"]
    assert [c["data"] for c in read_all(client, job_id)] == ["a", "b"]


# -- refused, and nothing stored ---------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "chunks"),
        ({"chunks": []}, "chunks"),
        ({"chunks": "abc"}, "chunks"),
        ({"chunks": [{"kind": "token"}]}, "chunks.0.data"),
        ({"chunks": [{"data": 1, "kind": ""}]}, "chunks.0.kind"),
        ({"chunks": [{"data": 1, "kind": "k" * 65}]}, "chunks.0.kind"),
        ({"chunks": [{"data": 1, "kind": 7}]}, "chunks.0.kind"),
        ({"chunks": [{"data": 1, "offset": 3}]}, "chunks.0.offset"),
        ({"chunks": [{"data": 1}], "expectedOffset": -1}, "expectedOffset"),
        ({"chunks": [{"data": 1}], "expectedOffset": "2"}, "expectedOffset"),
    ],
)
def test_a_bad_append_is_422_naming_the_field(
    client: TestClient, body: dict[str, Any], field: str
) -> None:
    job_id = new_job(client)
    response = client.post(f"/api/jobs/{job_id}/output", json=body)
    assert_problem(response, 422, "invalid-request", field)
    assert read_all(client, job_id) == []


def test_appends_past_each_limit_are_413_naming_it(small: TestClient) -> None:
    job_id = new_job(small)
    url = f"/api/jobs/{job_id}/output"
    too_many = small.post(url, json={"chunks": [{"data": i} for i in range(4)]})
    many = assert_problem(too_many, 413, "output-too-large", "chunks")
    assert "JOBS_OUTPUT_MAX_CHUNKS" in many["detail"]
    too_big = small.post(url, json={"chunks": [{"data": 1}, {"data": "x" * 19}]})
    big = assert_problem(too_big, 413, "output-too-large", "chunks.1.data")
    assert "chunks.1.data" in big["detail"]
    assert "JOBS_OUTPUT_MAX_CHUNK_BYTES" in big["detail"]
    append(small, job_id, "x" * 10, "y" * 10, kind=None)  # 2 x 21 bytes of 60
    over = small.post(url, json={"chunks": [{"data": "z" * 10}]})
    full = assert_problem(over, 413, "output-too-large")
    assert "JOBS_OUTPUT_MAX_BYTES" in full["detail"]
    assert "errors" not in full  # the job's whole output: no part of this append to blame
    assert [c["data"] for c in read_all(small, job_id)] == ["x" * 10, "y" * 10]
    assert small.get(f"/api/jobs/{job_id}").json()["outputSize"] == 2


def test_an_ended_job_takes_no_output(client: TestClient) -> None:
    job_id = new_job(client)
    append(client, job_id, "a")
    client.post(f"/api/jobs/{job_id}/complete", json={})
    refused = client.post(f"/api/jobs/{job_id}/output", json={"chunks": [{"data": "b"}]})
    assert "ended" in assert_problem(refused, 409, "invalid-transition")["detail"]
    assert [c["data"] for c in read_all(client, job_id)] == ["a"]


def test_output_of_unknown_and_deleted_jobs(client: TestClient) -> None:
    body = {"chunks": [{"data": 1}]}
    unknown = "job_nobodyHasThisId000"
    assert_problem(client.post(f"/api/jobs/{unknown}/output", json=body), 404, "job-not-found")
    assert_problem(client.get(f"/api/jobs/{unknown}/output"), 404, "job-not-found")
    job_id = new_job(client)
    append(client, job_id, "a")
    client.delete(f"/api/jobs/{job_id}")
    assert_problem(client.post(f"/api/jobs/{job_id}/output", json=body), 410, "job-gone")
    assert_problem(client.get(f"/api/jobs/{job_id}/output"), 410, "job-gone")


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("after=-1", "after"),
        ("after=x", "after"),
        ("after=9007199254740992", "after"),  # past what every JSON client holds exactly
        ("after=1_0", "after"),  # a count is digits: not 10
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
    ],
)
def test_a_bad_page_query_is_422(client: TestClient, query: str, field: str) -> None:
    job_id = new_job(client)
    assert_problem(client.get(f"/api/jobs/{job_id}/output?{query}"), 422, "invalid-request", field)


def test_output_is_not_on_the_all_jobs_stream(client: TestClient) -> None:
    problem = assert_problem(client.get("/api/jobs/events?output=1"), 422, "invalid-request")
    assert "/api/jobs/{jobId}/events?output=1" in problem["detail"]


def test_a_bad_output_flag_is_422(client: TestClient) -> None:
    job_id = new_job(client)
    assert_problem(client.get(f"/api/jobs/{job_id}/events?output=maybe"), 422, field="output")


# -- the per-job stream ------------------------------------------------------------


def finished_job_with_output(client: TestClient) -> str:
    """Created (v1), "a" appended, processing (v2), "b" and "c", completed (v3)."""
    job_id = new_job(client)
    append(client, job_id, "a")
    client.patch(f"/api/jobs/{job_id}", json={"status": "processing"})
    append(client, job_id, "b", "c")
    client.post(f"/api/jobs/{job_id}/complete", json={})
    return job_id


def summary(events: list[Event]) -> list[tuple[str, str, Any]]:
    """Each event as (type, id, what it says: the chunks' data, or the job's version)."""
    said: list[tuple[str, str, Any]] = []
    for event in events:
        body = event.json()
        if event.event == "output":
            said.append(("output", event.id, [chunk["data"] for chunk in body["chunks"]]))
        elif event.event == "job":
            said.append(("job", event.id, body["version"]))
        else:
            said.append((event.event, event.id, body))
    return said


def test_the_stream_sends_output_before_the_state_that_followed_it(client: TestClient) -> None:
    job_id = finished_job_with_output(client)
    events = stream(client, f"/api/jobs/{job_id}/events?output=1")
    assert summary(events) == [
        ("output", "0.3", ["a", "b", "c"]),  # the client holds no state yet: version 0
        ("job", "3.3", 3),
        ("synced", "3.3", {}),
    ]


def test_a_long_output_already_held_is_sent_in_pieces(client: TestClient) -> None:
    """Held output goes in events of about 64 KiB each, so a reader on a slow link hears of
    its stream between them; together they are every chunk, in order, once."""
    job_id = new_job(client)
    words = [f"{n:04d}" + "x" * 2000 for n in range(300)]  # about 600 KB
    for start in range(0, len(words), 100):
        append(client, job_id, *words[start : start + 100])
    client.post(f"/api/jobs/{job_id}/complete", json={})
    events = stream(client, f"/api/jobs/{job_id}/events?output=1")
    pieces = [event for event in events if event.event == "output"]
    assert len(pieces) >= 9
    assert all(len(event.data) < 70 * 1024 for event in pieces)
    chunks = [chunk for event in pieces for chunk in event.json()["chunks"]]
    assert [chunk["offset"] for chunk in chunks] == list(range(300))
    assert [chunk["data"] for chunk in chunks] == words
    assert pieces[-1].id == "0.300"  # held before the state the client lacks


def test_a_resume_from_the_output_before_a_state_sends_that_state(client: TestClient) -> None:
    """A client that drops after the output that precedes the state it lacks, and resumes
    from that event's id (as EventSource does), still gets the state."""
    job_id = finished_job_with_output(client)
    first = stream(client, f"/api/jobs/{job_id}/events?output=1")[0]
    resumed = stream(client, f"/api/jobs/{job_id}/events?output=1", first.id)
    assert summary(resumed) == [("job", "3.3", 3), ("synced", "3.3", {})]


def test_a_stream_without_output_is_as_it_always_was(client: TestClient) -> None:
    job_id = finished_job_with_output(client)
    events = stream(client, f"/api/jobs/{job_id}/events")
    assert summary(events) == [("job", "3", 3), ("synced", "3", {})]


@pytest.mark.parametrize(
    ("last_id", "expected"),
    [
        ("2.1", [("output", "2.3", ["b", "c"]), ("job", "3.3", 3), ("synced", "3.3", {})]),
        ("3.1", [("output", "3.3", ["b", "c"]), ("synced", "3.3", {})]),
        # A plain version holds no output: all of it, and the state it lacks.
        ("2", [("output", "2.3", ["a", "b", "c"]), ("job", "3.3", 3), ("synced", "3.3", {})]),
        # Anything else holds nothing.
        ("x.y", [("output", "0.3", ["a", "b", "c"]), ("job", "3.3", 3), ("synced", "3.3", {})]),
    ],
)
def test_last_event_id_resumes_state_and_output(
    client: TestClient, last_id: str, expected: list[Any]
) -> None:
    job_id = finished_job_with_output(client)
    assert summary(stream(client, f"/api/jobs/{job_id}/events?output=1", last_id)) == expected


def test_a_client_holding_everything_gets_204(client: TestClient) -> None:
    job_id = finished_job_with_output(client)
    url = f"/api/jobs/{job_id}/events?output=1"
    assert client.get(url, headers={"Last-Event-ID": "3.3"}).status_code == 204
    assert client.head(url, headers={"Last-Event-ID": "3.3"}).status_code == 204
    assert client.get(url + "&lastEventId=3.3").status_code == 204
    # Holding the state but not all the output: the rest comes.
    assert client.head(url, headers={"Last-Event-ID": "3.2"}).status_code == 200
    assert summary(stream(client, url, "3.2")) == [
        ("output", "3.3", ["c"]),
        ("synced", "3.3", {}),
    ]


# -- WebSocket ----------------------------------------------------------------------


def test_a_websocket_subscription_follows_output_live(client: TestClient) -> None:
    job_id = new_job(client)
    append(client, job_id, "a", "b")
    with client.websocket_connect("/api/jobs/ws") as ws:
        ws.send_json({"type": "subscribe", "jobId": job_id, "output": True, "sinceOffset": 1})
        assert ws.receive_json() == {
            "type": "subscribed",
            "jobId": job_id,
            "version": 1,
            "output": True,
        }
        first = ws.receive_json()
        assert first == {
            "type": "output",
            "jobId": job_id,
            "chunks": [{"offset": 1, "data": "b", "kind": "token"}],
        }
        assert ws.receive_json()["type"] == "job"
        assert ws.receive_json() == {
            "type": "synced",
            "jobId": job_id,
            "version": 1,
            "nextOffset": 2,
        }
        append(client, job_id, "c")
        live = ws.receive_json()
        assert (live["type"], live["chunks"][0]["offset"]) == ("output", 2)
        client.post(f"/api/jobs/{job_id}/complete", json={})
        done = ws.receive_json()
        assert (done["type"], done["job"]["outputSize"]) == ("job", 3)


def test_since_offset_needs_output(client: TestClient) -> None:
    job_id = new_job(client)
    with client.websocket_connect("/api/jobs/ws") as ws:
        ws.send_json({"type": "subscribe", "jobId": job_id, "sinceOffset": 1})
        error = ws.receive_json()
        assert (error["type"], error["code"], error["jobId"]) == ("error", "bad_request", job_id)
        assert "output: true" in error["error"]
        for bad in (
            {"output": "yes"},
            {"output": True, "sinceOffset": -1},
            {"output": True, "sinceOffset": 2**53},
        ):
            ws.send_json({"type": "subscribe", "jobId": job_id, **bad})
            assert ws.receive_json()["code"] == "bad_request"
        ws.send_json({"type": "ping"})  # still serving
        assert ws.receive_json() == {"type": "pong"}


# -- metrics ------------------------------------------------------------------------


def test_metrics_count_output_appended_and_sent(client: TestClient) -> None:
    job_id = finished_job_with_output(client)
    stream(client, f"/api/jobs/{job_id}/events?output=1")
    metrics = client.get("/metrics").text
    assert "jobcast_output_chunks_appended_total 3.0" in metrics
    assert 'jobcast_output_chunks_sent_total{transport="sse"} 3.0' in metrics
    # {"data":"a","kind":"token"} and its two siblings: 27 bytes each.
    assert "jobcast_output_bytes_appended_total 81.0" in metrics
    assert 'jobcast_output_bytes_sent_total{transport="sse"} 81.0' in metrics


def test_a_websocket_holding_the_end_and_all_output_is_told_final(client: TestClient) -> None:
    job_id = finished_job_with_output(client)
    with client.websocket_connect("/api/jobs/ws") as ws:
        holding = {"since": 3, "output": True, "sinceOffset": 3}
        ws.send_json({"type": "subscribe", "jobId": job_id, **holding})
        assert ws.receive_json() == {
            "type": "subscribed",
            "jobId": job_id,
            "version": 3,
            "output": True,
            "final": True,
        }
        # Holding the end but not all the output: the rest, then the end of it.
        ws.send_json({"type": "subscribe", "jobId": job_id, **holding, "sinceOffset": 1})
        assert ws.receive_json()["type"] == "subscribed"
        rest = ws.receive_json()
        assert [chunk["offset"] for chunk in rest["chunks"]] == [1, 2]
        assert ws.receive_json() == {
            "type": "synced",
            "jobId": job_id,
            "version": 3,
            "nextOffset": 3,
        }
        ws.send_json({"type": "ping"})
        assert ws.receive_json() == {"type": "pong"}  # nothing else was coming
