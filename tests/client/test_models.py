"""The wire types (``jobcast_client._models``): Job and ReadToken from the JSON and back."""

from __future__ import annotations

import dataclasses
import pickle
import typing
from datetime import UTC, datetime
from typing import Any

import pytest
from jobcast_client import Chunk, Job, JobStatus, JobType, OutputAppended, OutputChunk, ReadToken

SERVER_JOB: dict[str, Any] = {
    "jobId": "job_abc",
    "jobType": "file_processing",
    "status": "completed",
    "message": "Document processed successfully",
    "progress": 100,
    "documentId": "doc_123abc",
    "metadata": {"fileName": "contract.pdf", "pages": [1, 2]},
    "owner": "alice",
    "createdAt": "2026-01-02T03:04:05.006Z",
    "updatedAt": "2026-01-02T03:04:07.890Z",
    "version": 4,
    "timestamp": "2026-01-02T03:04:07.890Z",
}


def test_a_job_reads_every_field_of_the_server_json() -> None:
    """from_wire maps each camelCase field to its attribute, times as aware UTC datetimes."""
    job = Job.from_wire(SERVER_JOB)
    assert (job.job_id, job.job_type, job.status, job.message) == (
        "job_abc",
        "file_processing",
        "completed",
        "Document processed successfully",
    )
    assert (job.progress, job.document_id, job.error, job.owner, job.version) == (
        100,
        "doc_123abc",
        None,
        "alice",
        4,
    )
    assert job.metadata == {"fileName": "contract.pdf", "pages": [1, 2]}
    assert job.created_at == datetime(2026, 1, 2, 3, 4, 5, 6000, tzinfo=UTC)
    assert job.timestamp == job.updated_at == datetime(2026, 1, 2, 3, 4, 7, 890000, tzinfo=UTC)
    assert job.is_terminal
    assert job.extra == {}


def test_to_wire_gives_back_exactly_what_the_server_sent() -> None:
    """to_wire is the server's JSON again: same names, same values, unset fields left out."""
    assert Job.from_wire(SERVER_JOB).to_wire() == SERVER_JOB
    running = {**SERVER_JOB, "status": "processing", "progress": 42.5}
    del running["documentId"], running["owner"]
    assert Job.from_wire(running).to_wire() == running
    assert list(Job.from_wire(SERVER_JOB).to_wire()) == list(SERVER_JOB)


def test_unknown_fields_are_kept_aside_not_compared() -> None:
    """Fields a newer server adds neither fail nor change ==; to_wire still writes them."""
    newer = {**SERVER_JOB, "shard": 12, "priority": "high"}
    job = Job.from_wire(newer)
    assert job == Job.from_wire(SERVER_JOB)
    assert job.extra == {"shard": 12, "priority": "high"}
    assert job.to_wire() == newer
    assert "shard" not in repr(job)


def test_the_cancel_fields_are_read_and_left_out_until_set() -> None:
    """cancelRequested and cancelReason become attributes (False and None when absent), take
    part in ==, and to_wire writes them back where the server does, only when they are set."""
    plain = Job.from_wire(SERVER_JOB)
    assert (plain.cancel_requested, plain.cancel_reason) == (False, None)
    assert "cancelRequested" not in plain.to_wire()
    asked = {
        "jobId": "job_abc",
        "jobType": "llm_agent",
        "status": "processing",
        "message": "Thinking...",
        "progress": 40,
        "metadata": {},
        "owner": "alice",
        "cancelRequested": True,
        "cancelReason": "the user closed the tab",
        "createdAt": "2026-01-02T03:04:05.006Z",
        "updatedAt": "2026-01-02T03:04:07.890Z",
        "version": 3,
        "timestamp": "2026-01-02T03:04:07.890Z",
    }
    canceled = Job.from_wire(asked)
    assert (canceled.cancel_requested, canceled.cancel_reason) == (True, "the user closed the tab")
    assert canceled.extra == {}
    assert list(canceled.to_wire().items()) == list(asked.items())
    not_asked = {name: value for name, value in asked.items() if not name.startswith("cancel")}
    assert canceled != Job.from_wire(not_asked)
    without_reason = Job.from_wire({**not_asked, "cancelRequested": True})
    assert (without_reason.cancel_requested, without_reason.cancel_reason) == (True, None)
    assert Job.from_wire({**not_asked, "cancelRequested": None}).cancel_requested is False


def test_status_and_type_words_a_newer_server_adds_still_parse() -> None:
    """A status or job type this client does not list is read as it is, never refused."""
    job = Job.from_wire({**SERVER_JOB, "status": "paused", "jobType": "video"})
    assert (job.status, job.job_type, job.is_terminal) == ("paused", "video", False)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"jobId": None}, "jobId: expected a string, got NoneType"),
        ({"progress": "45"}, "progress: expected a number, got str"),
        ({"progress": True}, "progress: expected a number, got bool"),
        ({"version": 1.5}, "version: expected an integer, got float"),
        ({"metadata": []}, "metadata: expected an object, got list"),
        ({"createdAt": "yesterday"}, "createdAt: 'yesterday' is not an ISO 8601 timestamp"),
        ({"error": 3}, "error: expected a string, got int"),
        ({"cancelRequested": "yes"}, "cancelRequested: expected a boolean, got str"),
        ({"cancelRequested": 1}, "cancelRequested: expected a boolean, got int"),
        ({"cancelReason": False}, "cancelReason: expected a string, got bool"),
    ],
)
def test_a_field_of_the_wrong_kind_is_named(change: dict[str, Any], reason: str) -> None:
    """from_wire raises ValueError naming the first field that is not what a Job has."""
    with pytest.raises(ValueError, match="^" + reason.replace("(", r"\(") + "$"):
        Job.from_wire({**SERVER_JOB, **change})


def test_a_missing_field_or_a_non_object_is_refused() -> None:
    """A job without a required field, or JSON that is not an object, is a ValueError."""
    incomplete = dict(SERVER_JOB)
    del incomplete["version"]
    with pytest.raises(ValueError, match="version: missing"):
        Job.from_wire(incomplete)
    with pytest.raises(ValueError, match="not list"):
        Job.from_wire([SERVER_JOB])


def test_a_job_is_frozen_hashable_and_picklable() -> None:
    """A Job cannot be changed in place, can key a dict, and survives pickling."""
    job = Job.from_wire(SERVER_JOB)
    with pytest.raises(dataclasses.FrozenInstanceError):
        job.status = "error"  # type: ignore[misc]
    assert {job: 1}[Job.from_wire(SERVER_JOB)] == 1
    assert pickle.loads(pickle.dumps(job)) == job
    assert dataclasses.replace(job, message="other").message == "other"


def test_the_literals_list_the_words_of_the_contract() -> None:
    """JobStatus and JobType hold exactly the words the product contract names."""
    assert typing.get_args(JobStatus) == ("queued", "processing", "completed", "error")
    assert typing.get_args(JobType) == (
        "file_processing",
        "document_analysis",
        "llm_agent",
        "generic",
    )
    hints = typing.get_type_hints(Job)
    assert hints["status"] == JobStatus


def test_a_read_token_parses_and_hides_its_secret() -> None:
    """ReadToken reads {token, expiresAt}, writes it back, and keeps the token out of repr."""
    wire = {"token": "eyJ.secret.sig", "expiresAt": "2026-01-02T04:04:05.000Z"}
    minted = ReadToken.from_wire(wire)
    assert minted.expires_at == datetime(2026, 1, 2, 4, 4, 5, tzinfo=UTC)
    assert minted.to_wire() == wire
    assert "secret" not in repr(minted)
    assert "2026" in repr(minted)
    with pytest.raises(ValueError, match="expiresAt: missing"):
        ReadToken.from_wire({"token": "t"})


def test_output_size_is_read_and_left_out_while_it_is_0() -> None:
    """outputSize becomes output_size (0 when absent), takes part in ==, and to_wire writes it
    back only once the job has output."""
    plain = Job.from_wire(SERVER_JOB)
    assert plain.output_size == 0
    assert "outputSize" not in plain.to_wire()
    grown = Job.from_wire({**SERVER_JOB, "outputSize": 12})
    assert grown.output_size == 12
    assert grown != plain
    assert grown.to_wire()["outputSize"] == 12
    with pytest.raises(ValueError, match="outputSize: expected 0 or more"):
        Job.from_wire({**SERVER_JOB, "outputSize": -1})
    with pytest.raises(ValueError, match="outputSize: expected an integer"):
        Job.from_wire({**SERVER_JOB, "outputSize": "12"})


def test_output_chunks_read_the_wire_and_write_it_back() -> None:
    """An OutputChunk reads offset, data (absent: null) and kind, and writes them back; a Chunk
    writes data and kind, without kind when it has none; an append's answer is read."""
    wire = {"offset": 3, "data": {"rows": [1]}, "kind": "result"}
    assert OutputChunk.from_wire(wire) == OutputChunk(3, {"rows": [1]}, "result")
    assert OutputChunk.from_wire(wire).to_wire() == wire
    assert OutputChunk.from_wire({"offset": 0}) == OutputChunk(0, None)
    assert OutputChunk(0, "x").to_wire() == {"offset": 0, "data": "x"}
    broken: list[tuple[object, str]] = [
        ([], "a chunk is a JSON object"),
        ({"data": 1}, "offset: missing"),
        ({"offset": "0", "data": 1}, "offset: expected an integer"),
        ({"offset": 0, "kind": 5}, "kind: expected a string"),
    ]
    for data, reason in broken:
        with pytest.raises(ValueError, match=reason):
            OutputChunk.from_wire(data)
    assert Chunk("tok", "token").to_wire() == {"data": "tok", "kind": "token"}
    assert Chunk(None).to_wire() == {"data": None}
    answer = {"jobId": "job_abc", "offset": 2, "nextOffset": 5}
    assert OutputAppended.from_wire(answer) == OutputAppended(2, 5, already_applied=False)
    with pytest.raises(ValueError, match="nextOffset: missing"):
        OutputAppended.from_wire({"offset": 2})
