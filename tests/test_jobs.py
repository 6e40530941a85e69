"""The pure job rules of ``app.jobs``: ids, defaults, transitions, versions, merging."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from app import jobs
from app.errors import InvalidTransition
from app.models import CancelRequest, Completion, Failure, Job, JobStatus, JobUpdate, NewJob

T0 = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
T1 = T0 + timedelta(seconds=7)

Move = Callable[[Job, datetime], Job]


def queued(**fields: object) -> Job:
    return jobs.create(NewJob.model_validate(fields), T0)


def at_status(status: JobStatus) -> Job:
    """A job that reached ``status`` through the rules themselves."""
    job = queued(message="Upload queued", metadata={"fileName": "contract.pdf"})
    if status == "queued":
        return job
    if status == "processing":
        return jobs.update(job, JobUpdate(status="processing", progress=45), T0)
    if status == "completed":
        return jobs.complete(job, Completion(document_id="doc_123abc"), T0)
    return jobs.fail(job, Failure(error="Invalid file format"), T0)


MOVES: dict[str, Move] = {
    "update to queued": lambda job, at: jobs.update(job, JobUpdate(status="queued"), at),
    "update to processing": lambda job, at: jobs.update(job, JobUpdate(status="processing"), at),
    "update to completed": lambda job, at: jobs.update(job, JobUpdate(status="completed"), at),
    "update to error": lambda job, at: jobs.update(job, JobUpdate(status="error"), at),
    "update message only": lambda job, at: jobs.update(job, JobUpdate(message="step 2"), at),
    "update progress only": lambda job, at: jobs.update(job, JobUpdate(progress=60), at),
    "update metadata only": lambda job, at: jobs.update(job, JobUpdate(metadata={"k": 1}), at),
    "complete": lambda job, at: jobs.complete(job, Completion(), at),
    "fail": lambda job, at: jobs.fail(job, Failure(error="boom"), at),
}

# (start, move, status after); every combination not listed here is refused.
ALLOWED: list[tuple[JobStatus, str, JobStatus]] = [
    ("queued", "update to queued", "queued"),
    ("queued", "update to processing", "processing"),
    ("queued", "update to completed", "completed"),
    ("queued", "update to error", "error"),
    ("queued", "update message only", "queued"),
    ("queued", "update progress only", "queued"),
    ("queued", "update metadata only", "queued"),
    ("queued", "complete", "completed"),
    ("queued", "fail", "error"),
    ("processing", "update to processing", "processing"),
    ("processing", "update to completed", "completed"),
    ("processing", "update to error", "error"),
    ("processing", "update message only", "processing"),
    ("processing", "update progress only", "processing"),
    ("processing", "update metadata only", "processing"),
    ("processing", "complete", "completed"),
    ("processing", "fail", "error"),
]
_ALLOWED_PAIRS = {(start, move) for start, move, _ in ALLOWED}
REFUSED: list[tuple[JobStatus, str]] = [
    (start, move)
    for start in ("queued", "processing", "completed", "error")
    for move in MOVES
    if (start, move) not in _ALLOWED_PAIRS
]


@pytest.mark.parametrize(("start", "move", "after"), ALLOWED)
def test_allowed_transition_bumps_version_and_time(
    start: JobStatus, move: str, after: JobStatus
) -> None:
    """Every allowed change gives the new status, version +1 and a moved updatedAt/timestamp."""
    job = at_status(start)
    changed = MOVES[move](job, T1)
    assert changed.status == after
    assert changed.version == job.version + 1
    assert changed.updated_at == T1
    assert changed.timestamp == T1
    assert changed.created_at == job.created_at == T0
    assert changed.job_id == job.job_id


@pytest.mark.parametrize(("start", "move"), REFUSED)
def test_refused_transition_raises_and_leaves_job_alone(start: JobStatus, move: str) -> None:
    """Backwards moves and any change to a terminal job raise InvalidTransition, job untouched."""
    job = at_status(start)
    before = job.model_dump()
    with pytest.raises(InvalidTransition):
        MOVES[move](job, T1)
    assert job.model_dump() == before


def test_refused_transitions_cover_every_terminal_move() -> None:
    """Both terminal statuses refuse every kind of change, and processing cannot go back."""
    assert {(s, m) for s, m in REFUSED if s in ("completed", "error")} == {
        (s, m) for s in ("completed", "error") for m in MOVES
    }
    assert ("processing", "update to queued") in REFUSED


def test_versions_count_every_accepted_change() -> None:
    """A chain of accepted changes numbers the versions 1, 2, 3, 4."""
    job = queued()
    second = jobs.update(job, JobUpdate(status="processing"), T1)
    third = jobs.update(second, JobUpdate(progress=50), T1)
    fourth = jobs.complete(third, Completion(), T1)
    assert [j.version for j in (job, second, third, fourth)] == [1, 2, 3, 4]


def test_create_defaults() -> None:
    """A new job is queued, generic, empty message, progress 0, version 1, no documentId/error."""
    job = jobs.create(NewJob(), T0)
    assert job.status == "queued"
    assert job.job_type == "generic"
    assert job.message == ""
    assert job.progress == 0
    assert job.metadata == {}
    assert job.version == 1
    assert job.created_at == job.updated_at == job.timestamp == T0
    assert job.document_id is None
    assert job.error is None


def test_create_keeps_given_fields() -> None:
    """jobType, message and metadata given at creation are stored as given."""
    job = queued(jobType="file_processing", message="Upload queued", metadata={"fileSize": 10})
    assert (job.job_type, job.message, job.metadata) == (
        "file_processing",
        "Upload queued",
        {"fileSize": 10},
    )


@pytest.mark.parametrize(
    "move",
    [
        lambda job: jobs.complete(job, Completion(), T1),
        lambda job: jobs.update(job, JobUpdate(status="completed", progress=30), T1),
    ],
    ids=["complete", "update-status-completed"],
)
def test_completed_forces_progress_100(move: Callable[[Job], Job]) -> None:
    """Reaching `completed` sets progress to 100, whatever progress was given or held."""
    assert move(at_status("processing")).progress == 100


def test_fail_keeps_progress() -> None:
    """Failing a job keeps the progress it had reached."""
    assert jobs.fail(at_status("processing"), Failure(error="x"), T1).progress == 45


def test_update_changes_only_what_is_given() -> None:
    """A progress-only update keeps status, message and metadata."""
    job = at_status("processing")
    changed = jobs.update(job, JobUpdate(progress=80), T1)
    assert changed.progress == 80
    assert (changed.status, changed.message, changed.metadata) == (
        job.status,
        job.message,
        job.metadata,
    )


def test_an_update_to_error_says_why() -> None:
    """A job failed by PATCH has an `error`, as every failed job does: the message the
    update gives, else "Processing failed"; its message is left as it was."""
    running = at_status("processing")
    said = jobs.update(running, JobUpdate(status="error", message="Disk full"), T1)
    assert (said.error, said.message) == ("Disk full", "Disk full")
    unsaid = jobs.update(running, JobUpdate(status="error"), T1)
    assert (unsaid.error, unsaid.message) == ("Processing failed", running.message)


def test_metadata_is_shallow_merged() -> None:
    """Update metadata replaces top-level keys it names and keeps the others."""
    job = queued(metadata={"a": 1, "nested": {"x": 1}})
    changed = jobs.update(job, JobUpdate(metadata={"nested": {"y": 2}, "b": 2}), T1)
    assert changed.metadata == {"a": 1, "nested": {"y": 2}, "b": 2}
    assert job.metadata == {"a": 1, "nested": {"x": 1}}


def test_create_copies_metadata() -> None:
    """The stored metadata is a copy: changing the request's dict later does not reach the job."""
    request = NewJob(metadata={"a": 1})
    job = jobs.create(request, T0)
    request.metadata["a"] = 2
    assert job.metadata == {"a": 1}


@pytest.mark.parametrize(
    ("completion", "message", "document_id"),
    [
        (Completion(), "Completed", None),
        (Completion(document_id="doc_123abc"), "Completed", "doc_123abc"),
        (
            Completion(document_id="doc_123abc", message="Document processed successfully"),
            "Document processed successfully",
            "doc_123abc",
        ),
    ],
)
def test_complete_message_and_document(
    completion: Completion, message: str, document_id: str | None
) -> None:
    """complete sets status, the message (default "Completed") and documentId when given."""
    job = jobs.complete(at_status("processing"), completion, T1)
    assert (job.status, job.message, job.document_id) == ("completed", message, document_id)
    assert job.error is None


@pytest.mark.parametrize(
    ("failure", "message"),
    [
        (Failure(error="Invalid file format"), "Processing failed"),
        (Failure(error="Invalid file format", message="Upload rejected"), "Upload rejected"),
    ],
)
def test_fail_message_and_error(failure: Failure, message: str) -> None:
    """fail sets status error, the error text and the message (default "Processing failed")."""
    job = jobs.fail(at_status("processing"), failure, T1)
    assert (job.status, job.message, job.error) == ("error", message, "Invalid file format")
    assert job.document_id is None


@pytest.mark.parametrize(
    ("failure", "error"),
    [
        (Failure(error=""), "Processing failed"),
        (Failure(error="  "), "Processing failed"),
        (Failure(error="", message="Upload rejected"), "Upload rejected"),
    ],
)
def test_a_blank_error_says_why_as_a_patch_does(failure: Failure, error: str) -> None:
    """A failed job always says why: a blank error is the message, else the default."""
    job = jobs.fail(at_status("processing"), failure, T1)
    assert (job.status, job.error) == ("error", error)


def test_job_id_is_prefixed_url_safe_and_long_enough() -> None:
    """Ids are `job_` followed by URL-safe characters carrying at least 128 bits."""
    for _ in range(50):
        job_id = jobs.new_job_id()
        suffix = job_id.removeprefix("job_")
        assert job_id.startswith("job_")
        assert re.fullmatch(r"[A-Za-z0-9_-]+", suffix)
        assert len(suffix) * 6 >= 128


def test_job_ids_do_not_repeat() -> None:
    """Ten thousand fresh ids, from new_job_id and from create, are all different."""
    ids = {jobs.new_job_id() for _ in range(5000)} | {queued().job_id for _ in range(5000)}
    assert len(ids) == 10_000


# -- cancel and expiry -----------------------------------------------------------


@pytest.mark.parametrize("status", ["queued", "processing"])
def test_cancel_asks_once_and_keeps_the_status(status: JobStatus) -> None:
    job = at_status(status)
    asked = jobs.cancel(job, CancelRequest(reason="user closed the tab"), T1)
    assert (asked.status, asked.cancel_requested, asked.cancel_reason) == (
        status,
        True,
        "user closed the tab",
    )
    assert asked.version == job.version + 1
    assert asked.updated_at == T1
    # Asking again is no change at all: the very same job, no new version.
    assert jobs.cancel(asked, CancelRequest(reason="again"), T1) is asked


def test_cancel_request_survives_later_updates() -> None:
    asked = jobs.cancel(at_status("processing"), CancelRequest(), T0)
    later = jobs.update(asked, JobUpdate(progress=80), T1)
    assert later.cancel_requested is True
    assert later.cancel_reason is None


@pytest.mark.parametrize("status", ["queued", "processing"])
def test_forced_cancel_ends_the_job_as_canceled(status: JobStatus) -> None:
    job = at_status(status)
    ended = jobs.cancel(job, CancelRequest(force=True), T1)
    assert (ended.status, ended.error, ended.message) == ("error", "canceled", "Canceled")
    assert ended.cancel_requested is True
    reasoned = jobs.cancel(job, CancelRequest(force=True, reason="worker died"), T1)
    assert (reasoned.message, reasoned.cancel_reason) == ("worker died", "worker died")


def test_forced_cancel_after_a_plain_one_ends_the_job_and_keeps_the_reason() -> None:
    asked = jobs.cancel(at_status("processing"), CancelRequest(reason="too slow"), T0)
    ended = jobs.cancel(asked, CancelRequest(force=True), T1)
    assert (ended.status, ended.error, ended.cancel_reason) == ("error", "canceled", "too slow")
    assert ended.version == asked.version + 1


@pytest.mark.parametrize("status", ["completed", "error"])
@pytest.mark.parametrize("force", [False, True])
def test_cancel_of_a_finished_job_is_refused(status: JobStatus, force: bool) -> None:
    job = at_status(status)
    with pytest.raises(InvalidTransition, match="nothing to cancel"):
        jobs.cancel(job, CancelRequest(force=force), T1)


@pytest.mark.parametrize("status", ["queued", "processing"])
def test_expire_fails_a_job_idle_that_long(status: JobStatus) -> None:
    job = at_status(status)
    assert jobs.expire(job, 60, T0 + timedelta(seconds=59)) is job
    stale = jobs.expire(job, 60, T0 + timedelta(seconds=60))
    assert (stale.status, stale.error) == ("error", "stale")
    assert stale.message == "No change for 60 s: its worker is gone"
    assert stale.version == job.version + 1


@pytest.mark.parametrize("status", ["completed", "error"])
def test_expire_leaves_a_finished_job_alone(status: JobStatus) -> None:
    job = at_status(status)
    assert jobs.expire(job, 60, T0 + timedelta(days=1)) is job
