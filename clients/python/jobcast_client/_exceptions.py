"""Every exception the client raises on purpose, rooted in :class:`JobcastError`.

    JobcastError
    ├── JobNotFound           404: no job has ever had this id
    ├── JobGone               410: the job was cleaned up or deleted (or removed while watched)
    ├── InvalidTransition     409: the job's status does not allow the change
    ├── OffsetMismatch        409: the job's output is not at an append's expected_offset
    ├── JobCanceled           a tracked job was asked to stop (``cancel_job``): its worker's cue
    ├── InvalidJobData        422, 413: a value is refused (``errors`` names each field)
    │   ├── MalformedJSON     400: the server could not read the request body
    │   ├── BodyTooLarge      413: the request body is over the server's (or a proxy's) limit
    │   └── OutputTooLarge    413: an append over one of the server's output limits
    ├── IdempotencyConflict   422: an Idempotency-Key reused with another body
    ├── Unauthenticated       401: no credential, or one the server does not accept
    ├── Forbidden             403: the credential does not cover this request
    ├── MisdirectedRequest    421: the server does not answer to the host in the URL
    ├── RateLimited           429, once the retries are spent
    ├── BackendUnavailable    503, once the retries are spent
    ├── TooManyStreams        503 on a stream: the server is full, once the retries are spent
    ├── ResponseError         any other answer; carries ``status_code`` and ``problem``
    │   └── ServerError       500 and the other 5xx
    └── ConnectionFailed      no answer at all, once the retries are spent

``str(exc)`` is the server's own words: the ``detail`` of its problem+json
answer (``progress: must be at most 100``); JobCanceled, which is no error
answer, says which job and why. Besides these the client raises
``ValueError`` for arguments it can tell are wrong before sending anything.
An httpx2 error (refused, reset, timed out, an undecodable body) becomes
ConnectionFailed once the retries are spent; its ``__cause__`` is the original.

Every exception pickles (a Celery worker sends its task's exception to the
result backend), keeping its attributes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ._models import FieldError, Job


class JobcastError(Exception):
    """Base of every error the Jobcast client raises on purpose."""

    def __reduce__(self) -> tuple[Any, ...]:
        # Exception's own pickling calls cls(*args), which a subclass whose
        # __init__ takes other arguments cannot survive; rebuild without __init__.
        return (_rebuild, (type(self), self.args), self.__dict__)


def _rebuild(cls: type[JobcastError], args: tuple[Any, ...]) -> JobcastError:
    return cls.__new__(cls, *args)


class JobNotFound(JobcastError):
    """No job has ever had this id (or it was cleaned up so long ago that nothing remembers it)."""

    def __init__(self, detail: str, *, job_id: str) -> None:
        super().__init__(detail)
        self.job_id = job_id


class JobGone(JobcastError):
    """The job is gone: it ended and was cleaned up (the server's terminal TTL passed), or
    someone deleted it (``delete_job``)."""

    def __init__(self, detail: str, *, job_id: str) -> None:
        super().__init__(detail)
        self.job_id = job_id


class InvalidTransition(JobcastError):
    """The job's status does not allow the change (it has ended); the job is unchanged."""


class OffsetMismatch(JobcastError):
    """An append's ``expected_offset`` is not the job's chunk count: nothing was appended.

    ``next_offset`` is the count the server holds, ``expected_offset`` the one
    the append expected. Another writer appended meanwhile (or this one lost
    count): read the output, or append at ``next_offset``.
    """

    def __init__(self, detail: str, *, expected_offset: int, next_offset: int) -> None:
        super().__init__(detail)
        self.expected_offset = expected_offset
        self.next_offset = next_offset


class JobCanceled(JobcastError):
    """Someone asked this tracked job to stop (``cancel_job``): the worker's cue to end its work.

    Raised by a tracked job's ``update`` once the job carries ``cancel_requested``
    (or when the update is refused because a forced cancel already ended it);
    ``track()`` then fails the job as ``canceled``, unless it has ended, and lets
    this propagate. ``job`` is the job as last seen, ``reason`` its
    ``cancel_reason``.
    """

    def __init__(self, job: Job) -> None:
        reason = job.cancel_reason
        super().__init__(f"job {job.job_id} was canceled" + (f": {reason}" if reason else ""))
        self.job_id = job.job_id
        self.reason = reason
        self.job = job


class InvalidJobData(JobcastError):
    """The server refused a value; ``errors`` names each offending field and what is wrong."""

    def __init__(self, detail: str, errors: Iterable[FieldError] = ()) -> None:
        super().__init__(detail)
        self.errors = tuple(errors)


class MalformedJSON(InvalidJobData):
    """The server could not read the request body as JSON."""


class BodyTooLarge(InvalidJobData):
    """A request body over the server's JOBS_MAX_BODY_BYTES, or a proxy's limit (a 413
    that is not about output): nothing was done. Send less at once."""


class OutputTooLarge(InvalidJobData):
    """An append over one of the server's output limits: nothing was appended.

    The message names the limit: chunks per request (JOBS_OUTPUT_MAX_CHUNKS),
    bytes of one chunk's data (JOBS_OUTPUT_MAX_CHUNK_BYTES) or bytes of the
    job's whole output (JOBS_OUTPUT_MAX_BYTES).
    """


class IdempotencyConflict(JobcastError):
    """The same Idempotency-Key came back with a different request body."""


class Unauthenticated(JobcastError):
    """No credential, or one the server does not accept (unknown, malformed, expired).

    ``presented`` tells the two apart: whether the request carried one.
    """

    def __init__(self, detail: str, *, presented: bool) -> None:
        super().__init__(detail)
        self.presented = presented


class Forbidden(JobcastError):
    """The credential is valid but does not cover this request (a read token writing, say)."""


class MisdirectedRequest(JobcastError):
    """The server does not answer to the host name in the URL (see its JOBS_ALLOWED_HOSTS)."""


class RateLimited(JobcastError):
    """This client asked too often; ``retry_after`` is how many seconds the server asked for."""

    def __init__(self, detail: str, *, retry_after: float) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class BackendUnavailable(JobcastError):
    """The server cannot reach its job store right now; later may work."""


class TooManyStreams(JobcastError):
    """The server holds every stream it allows; later may work."""


class ResponseError(JobcastError):
    """An answer that means none of the above: no such route (a wrong URL?), not Jobcast, ...

    ``status_code`` is the HTTP status; ``problem`` the problem+json document
    as sent, or None when the answer was not one.
    """

    def __init__(
        self, detail: str, *, status_code: int, problem: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.problem = problem


class ServerError(ResponseError):
    """A 5xx other than 503: the server failed; the request may or may not have been applied."""


class ConnectionFailed(JobcastError):
    """No usable answer: the connection was refused, reset or timed out (or the answer
    could not be decoded), on every attempt. ``__cause__`` is httpx2's exception."""
