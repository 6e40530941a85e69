"""The exceptions Jobcast raises, all rooted in :class:`JobsError`.

    JobsError
    ├── JobNotFound          no job has ever had this id (404)
    ├── JobGone              the job ended and was cleaned up (410)
    ├── InvalidTransition    the change breaks the lifecycle rules (409)
    ├── InvalidJobData       a value is out of range or of the wrong kind (422)
    │   └── MalformedJSON    the body is not JSON at all (400)
    ├── BodyTooLarge         the request body is over JOBS_MAX_BODY_BYTES (413)
    ├── UnsupportedMediaType the body is not sent as JSON (415)
    ├── IdempotencyConflict  an Idempotency-Key reused with another body (422)
    ├── BackendUnavailable   the store cannot be reached (503)
    ├── Unauthenticated      credentials missing, invalid or expired (401)
    ├── Forbidden            valid credentials, but not for this (403)
    ├── MisdirectedRequest   the Host names a server this is not (421)
    ├── RateLimited          this client asked too often; retry later (429)
    ├── TooManyStreams       the process holds all the streams it may (503)
    └── NotServing           the in-process library, called where no server runs

``app.problems`` maps each one to an ``application/problem+json`` response,
in one place. Foreign exceptions (a Redis connection error, say) are
translated at the module boundary with ``raise ... from exc``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FieldError:
    """One offending field of a request: where it is and what is wrong."""

    field: str
    message: str


class JobsError(Exception):
    """Base of every error Jobcast raises on purpose."""


class JobNotFound(JobsError):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"no job with id {job_id!r}")
        self.job_id = job_id


class JobGone(JobsError):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id!r} is gone: it was deleted, or cleaned up after it ended")
        self.job_id = job_id


class InvalidTransition(JobsError):
    """The job's status does not allow the change; the stored job is unchanged."""


class InvalidJobData(JobsError):
    def __init__(self, detail: str, errors: Sequence[FieldError] = ()) -> None:
        super().__init__(detail)
        self.errors = tuple(errors)


class MalformedJSON(InvalidJobData):
    """The request body could not be parsed as JSON."""


class OffsetMismatch(JobsError):
    """An append's ``expectedOffset`` is not the job's chunk count: nothing was appended.

    ``next_offset`` is the count, so a writer whose earlier attempt landed can tell.
    """

    def __init__(self, expected: int, next_offset: int) -> None:
        super().__init__(
            f"expectedOffset is {expected} but the job has {next_offset} output chunks: "
            "nothing was appended (if an earlier attempt of this append was answered by "
            "nothing, it was applied when nextOffset is that offset plus its chunks)"
        )
        self.next_offset = next_offset


class OutputTooLarge(JobsError):
    """An append over one of the output limits; nothing was appended.

    ``errors`` names what is too large: ``chunks`` (too many in one append), or
    ``chunks.<i>.data`` (that chunk, as a 422 names a field); none for the job's
    whole output.
    """

    def __init__(self, detail: str, errors: Sequence[FieldError] = ()) -> None:
        super().__init__(detail)
        self.errors = tuple(errors)


class IdempotencyConflict(JobsError):
    """The same Idempotency-Key came back with a different request body."""


class BackendUnavailable(JobsError):
    """The job store cannot be reached right now; retrying later may succeed."""


class Unauthenticated(JobsError):
    """No credentials, or ones that are not valid (unknown, malformed, expired).

    ``presented`` tells a missing credential from a bad one, for the
    ``WWW-Authenticate`` challenge.
    """

    def __init__(self, detail: str, *, presented: bool) -> None:
        super().__init__(detail)
        self.presented = presented


class Forbidden(JobsError):
    """Valid credentials that do not cover this request.

    The message never says whether the job asked for exists.
    """


class BodyTooLarge(JobsError):
    """The request body is larger than this server accepts; nothing was stored."""


class UnsupportedMediaType(JobsError):
    """The request body comes in a format other than JSON."""


class MisdirectedRequest(JobsError):
    """The request names a host this server does not answer to (DNS rebinding, say)."""


class RateLimited(JobsError):
    """This client asked for something costly too often; ``retry_after`` seconds help."""

    def __init__(self, detail: str, *, retry_after: float) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class TooManyStreams(JobsError):
    """Every streaming connection this process allows is in use; retry later."""


class NotServing(JobsError):
    """The in-process library was called in a process where no Jobcast server runs.

    Its functions act on the running server's store, so every change reaches
    that server's subscribers; anywhere else they would change jobs nobody sees.
    """

    def __init__(self) -> None:
        super().__init__(
            "no Jobcast server runs in this process: the in-process functions (app.create_job "
            "and the rest) work inside the server (python -m app, make run); from another "
            "process, use the Python client (pip install ./clients/python from Jobcast's "
            "repository), then "
            "jobcast_client.JobsClient(url).create_job(...)"
        )
