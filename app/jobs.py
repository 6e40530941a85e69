"""The job rules, in one place: ids, defaults, transitions, versions, merging.

Every path that changes a job (HTTP routes, the in-process library, every
store backend) goes through these pure functions, so the rules cannot
differ between them. Each returns a new :class:`Job` with ``version`` bumped
by one, the job itself when there is nothing to change (a second cancel), or
raises :class:`InvalidTransition` and leaves the job alone.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from app.errors import InvalidTransition
from app.models import (
    JOB_ID_PATTERN,
    CancelRequest,
    Completion,
    Failure,
    Job,
    JobStatus,
    JobType,
    JobUpdate,
    NewJob,
)
from app.streams.events import Change

DEFAULT_COMPLETED_MESSAGE = "Completed"
DEFAULT_FAILED_MESSAGE = "Processing failed"
CANCELED = "canceled"  # the error of a job a cancel ended (force)
STALE = "stale"  # the error of a job that went JOBS_STALE_TTL without a change

_NEXT_STATUSES: dict[JobStatus, frozenset[JobStatus]] = {
    "queued": frozenset({"queued", "processing", "completed", "error"}),
    "processing": frozenset({"processing", "completed", "error"}),
    "completed": frozenset(),
    "error": frozenset(),
}


def now() -> datetime:
    return datetime.now(UTC)


# What an id this server made looks like (room to spare: ids once made stay valid).
JOB_ID = re.compile(JOB_ID_PATTERN)


def new_job_id() -> str:
    """128 random bits, URL-safe: an id nobody can guess."""
    return "job_" + secrets.token_urlsafe(16)


def is_job_id(text: str) -> bool:
    """Whether ``text`` can be a job's id (no lookup: it may not exist)."""
    return JOB_ID.fullmatch(text) is not None


def create(request: NewJob, at: datetime) -> Job:
    return Job(
        job_id=new_job_id(),
        job_type=request.job_type,
        status="queued",
        message=request.message,
        progress=0.0,
        metadata=dict(request.metadata),
        owner=request.owner,
        webhook_url=request.webhook_url,
        created_at=at,
        updated_at=at,
        version=1,
    )


def update(job: Job, change: JobUpdate, at: datetime) -> Job:
    status = job.status if change.status is None else change.status
    fields: dict[str, Any] = {"status": status}
    if change.progress is not None:
        fields["progress"] = change.progress
    if change.message is not None:
        fields["message"] = change.message
    if change.metadata is not None:
        fields["metadata"] = {**job.metadata, **change.metadata}
    if status == "error":
        # A failed job always says why: the message this update gives, else the default.
        fields["error"] = change.message or DEFAULT_FAILED_MESSAGE
    return _advance(job, fields, at)


def complete(job: Job, completion: Completion, at: datetime) -> Job:
    fields: dict[str, Any] = {
        "status": "completed",
        "message": completion.message or DEFAULT_COMPLETED_MESSAGE,
    }
    if completion.document_id is not None:
        fields["document_id"] = completion.document_id
    return _advance(job, fields, at)


def fail(job: Job, failure: Failure, at: datetime) -> Job:
    message = failure.message or DEFAULT_FAILED_MESSAGE
    fields: dict[str, Any] = {
        "status": "error",
        # A blank error (a JavaScript `new Error().message`) says why as a PATCH does:
        # refusing it would leave the failing worker's job running.
        "error": failure.error if failure.error.strip() else message,
        "message": message,
    }
    return _advance(job, fields, at)


def cancel(job: Job, request: CancelRequest, at: datetime) -> Job:
    """Ask the worker to stop: ``cancelRequested`` (once; asking again changes nothing);
    with ``force``, end the job now as ``error: "canceled"``. A finished job: 409."""
    if job.is_terminal:
        raise InvalidTransition(f"job {job.job_id} is {job.status}: there is nothing to cancel")
    if request.force:
        fields: dict[str, Any] = {
            "status": "error",
            "error": CANCELED,
            "message": request.reason or "Canceled",
        }
    elif job.cancel_requested:
        return job  # asked already: the same job, no new version
    else:
        fields = {"status": job.status}
    fields.update(cancel_requested=True, cancel_reason=request.reason or job.cancel_reason)
    return _advance(job, fields, at)


def expire(job: Job, idle: float, at: datetime) -> Job:
    """Fail an unfinished job that has gone ``idle`` seconds without a change
    (``error: "stale"``); a job that finished or changed meanwhile stays as it is."""
    if job.is_terminal or (at - job.updated_at).total_seconds() < idle:
        return job
    message = f"No change for {idle:g} s: its worker is gone"
    return _advance(job, {"status": "error", "error": STALE, "message": message}, at)


def _advance(job: Job, fields: dict[str, Any], at: datetime) -> Job:
    target: JobStatus = fields["status"]
    if target not in _NEXT_STATUSES[job.status]:
        if job.is_terminal:
            raise InvalidTransition(f"job {job.job_id} is {job.status} and can no longer change")
        raise InvalidTransition(f"job {job.job_id} cannot go from {job.status} to {target}")
    if target == "completed":
        fields["progress"] = 100.0
    return job.model_copy(update={**fields, "updated_at": at, "version": job.version + 1})


@dataclass(frozen=True, slots=True)
class JobFilter:
    """The ``jobType``/``status``/``owner`` filters of the list and the all-jobs streams.

    ``owner`` is also how an owner token's view is narrowed to its own jobs.
    """

    job_type: JobType | None = None
    status: JobStatus | None = None
    owner: str | None = None

    def matches(self, job_type: JobType, status: JobStatus | None, owner: str | None) -> bool:
        return (
            (self.job_type is None or job_type == self.job_type)
            and (self.status is None or status == self.status)
            and (self.owner is None or owner == self.owner)
        )

    def _kind_matches(self, change: Change) -> bool:
        """The filters a job never leaves (its type and owner), for removals and resumes."""
        return (self.job_type is None or change.job_type == self.job_type) and (
            self.owner is None or change.owner == self.owner
        )

    def replays(self, change: Change, *, known: bool) -> bool:
        """Whether a stream connecting with this filter is sent ``change``'s job.

        ``known``: the job existed at the client's cursor, so the client may
        hold it. Such a job may have left a status filter since: it is sent
        anyway, as the live stream would have, so the client can drop it. A
        job born after the cursor is sent only if it matches now.
        """
        if known or change.job is None:
            return self._kind_matches(change)
        return self.matches(change.job_type, change.job.status, change.owner)

    def admits(self, change: Change) -> bool:
        """Whether a live subscriber with this filter gets ``change``.

        A job that leaves the filter (``status=processing`` and it completes)
        still sends that one event, so a client can drop it.
        """
        if self.job_type is None and self.status is None and self.owner is None:
            return True  # no filter: asked for every change of every job
        if change.job is None:
            return self._kind_matches(change)
        return self.matches(change.job_type, change.job.status, change.owner) or (
            change.previous_status is not None
            and self.matches(change.job_type, change.previous_status, change.owner)
        )
