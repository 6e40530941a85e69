"""The seed's calls over HTTP, for workers in other processes: sync and async.

    from app.client import JobsClient

    with JobsClient("http://127.0.0.1:8000") as jobs:
        with jobs.track(job_type="file_processing", message="Upload queued") as job:
            job.update(status="processing", progress=50, message="Extracting document data...")
            job.document_id = "doc_123abc"  # completed on success, failed on an exception

:class:`JobsClient` and :class:`AsyncJobsClient` offer the same calls
(``create_job``, ``update_job_with_notification``, ``complete_job``,
``fail_job``, ``get_job``, ``list_jobs``, ``watch``, ``track``) and return the
server's own wire model, :class:`app.models.Job`. Both drive one sans-I/O
core: each call is a generator that yields the requests it needs and
decodes the answers, so building requests, retrying and mapping errors
exist once and the two clients only differ in how they wait.

Retries (:class:`RetryPolicy`, bounded, exponential backoff with jitter)
cover connection errors, ``503`` and ``429`` (waiting at least their ``Retry-After``).
Every call is safe to repeat: a create carries an ``Idempotency-Key``
(one per call, the same on each of its retries), an update sets the same
values again, and a complete or fail whose first attempt landed before
its answer was lost is recognised on the ``409`` of the retry.

Errors are the server's own exceptions (``app.errors``), plus three only a client meets::

    JobsError (app.errors)
    ├── JobNotFound           404: no job has ever had this id
    ├── JobGone               410: the job ended and was cleaned up
    ├── InvalidTransition     409: the job's status does not allow the change
    ├── InvalidJobData        422, 413: a value is refused (``errors`` names each field)
    │   └── MalformedJSON     400
    ├── IdempotencyConflict   422: an Idempotency-Key reused with another body
    ├── BackendUnavailable    503, once the retries are spent
    ├── Unauthenticated       401: no credential, or one the server does not accept
    ├── Forbidden             403: the credential does not cover this request
    ├── MisdirectedRequest    421: the server does not answer to the host in the URL
    ├── RateLimited           429, once the retries are spent
    ├── TooManyStreams        503 on a stream: the server is full, once the retries are spent
    ├── ResponseError         any other answer; carries ``status_code`` and ``problem``
    │   └── ServerError       500 and the other 5xx
    └── ConnectionFailed      no answer at all, once the retries are spent

The message of each is the server's problem+json ``detail``.
"""

from __future__ import annotations

import contextlib
import email.utils
import functools
import inspect
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Generator, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import (
    Any,
    Concatenate,
    Generic,
    NoReturn,
    ParamSpec,
    Self,
    TypeAlias,
    TypedDict,
    TypeVar,
    Unpack,
)
from urllib.parse import quote

import anyio
import httpx
from httpx_sse import ServerSentEvent, SSEError, aconnect_sse, connect_sse
from pydantic import BaseModel, ValidationError

from app.errors import (
    BackendUnavailable,
    FieldError,
    Forbidden,
    IdempotencyConflict,
    InvalidJobData,
    InvalidTransition,
    JobGone,
    JobNotFound,
    JobsError,
    MalformedJSON,
    MisdirectedRequest,
    RateLimited,
    TooManyStreams,
    Unauthenticated,
)
from app.models import Job, JobCreated, JobList, JobStatus, JobType, Problem
from app.problems import TYPE_PREFIX

__all__ = [
    "DEFAULT_URL",
    "AsyncJobsClient",
    "AsyncTrackedJob",
    "Changes",
    "ConnectionFailed",
    "JobsClient",
    "ResponseError",
    "RetryPolicy",
    "ServerError",
    "TrackedJob",
]

DEFAULT_URL = "http://127.0.0.1:8000"
PAGE_SIZE = 100

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)
P = ParamSpec("P")
_Transport = TypeVar("_Transport", httpx.BaseTransport, httpx.AsyncBaseTransport)


# --- exceptions only a client meets -----------------------------------------------------


class ResponseError(JobsError):
    """An answer that maps to none of the server's errors (no such route, not Jobcast, ...)."""

    def __init__(self, detail: str, *, status_code: int, problem: Problem | None) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.problem = problem


class ServerError(ResponseError):
    """A 5xx other than 503: the server failed; the request may or may not have been applied."""


class ConnectionFailed(JobsError):
    """No answer: the connection was refused, reset or timed out, on every attempt."""


# --- retries -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently to retry connection errors and 503.

    Retry ``n`` (from 1) waits between half and all of
    ``min(max_backoff, backoff * 2 ** (n - 1))`` seconds ("equal jitter"),
    or the server's ``Retry-After`` if that is longer. A ``Retry-After``
    beyond ``max_backoff`` is not waited for: the error is raised at once.
    ``RetryPolicy(retries=0)`` turns retrying off.
    """

    retries: int = 3
    backoff: float = 0.5
    max_backoff: float = 10.0

    def __post_init__(self) -> None:
        if self.retries < 0 or self.backoff < 0 or self.max_backoff < 0:
            raise ValueError("retries, backoff and max_backoff must not be negative")

    def pause(self, retry: int, retry_after: float | None = None) -> float | None:
        """Seconds to wait before retry number ``retry``, or None to give up."""
        if retry > self.retries:
            return None
        ceiling = min(self.max_backoff, self.backoff * 2.0 ** (retry - 1))
        pause = ceiling / 2 + random.uniform(0, ceiling / 2)
        if retry_after is not None:
            if retry_after > self.max_backoff:
                return None
            pause = max(pause, retry_after)
        return pause


# Transport errors worth another attempt; others (an unsupported URL scheme) are not.
_TRANSIENT = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)


class _Attempts:
    """The retry state of one request (or one watch): counts attempts, says how long to wait."""

    def __init__(self, policy: RetryPolicy, what: str) -> None:
        self.policy = policy
        self.what = what
        self.count = 0

    def after_error(self, exc: Exception | None) -> float:
        """The pause before the next attempt; ConnectionFailed when there is none."""
        self.count += 1
        pause = (
            self.policy.pause(self.count) if exc is None or isinstance(exc, _TRANSIENT) else None
        )
        if pause is None:
            reason = f"{type(exc).__name__}: {exc}" if exc is not None else "the stream ended"
            raise ConnectionFailed(
                f"{self.what} failed after {self.count} attempt(s) ({reason})"
            ) from exc
        return pause

    def after_response(self, response: httpx.Response) -> float | None:
        """The pause before retrying a 503 or a 429, or None to keep this answer."""
        self.count += 1
        if response.status_code not in (429, 503):
            return None
        return self.policy.pause(self.count, _retry_after(response))

    def reset(self) -> None:
        self.count = 0


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    with contextlib.suppress(TypeError, ValueError):
        moment = email.utils.parsedate_to_datetime(value)
        return max(0.0, (moment - datetime.now(UTC)).total_seconds())
    return None


# --- requests and answers ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Call:
    """One HTTP request, as the core describes it and either client sends it."""

    method: str
    path: str
    json: dict[str, Any] | None = None
    params: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    job_id: str | None = None  # names the job in JobNotFound and JobGone

    @property
    def options(self) -> dict[str, Any]:
        """The keyword arguments of ``httpx.Client.request`` besides method and URL."""
        return {"json": self.json, "params": self.params, "headers": self.headers}


@dataclass(frozen=True, slots=True)
class _Reply:
    response: httpx.Response
    attempts: int


# A call: yields the requests it needs, receives their replies, returns the result.
_Operation: TypeAlias = Generator[_Call, _Reply, T]


def _job_path(job_id: str, suffix: str = "") -> str:
    return f"/api/jobs/{quote(job_id, safe='')}{suffix}"


def _given(**fields: Any) -> dict[str, Any]:
    return {name: value for name, value in fields.items() if value is not None}


def _expect(reply: _Reply, model: type[M], job_id: str | None = None) -> M:
    """The answer as ``model``; the matching exception for an error answer."""
    response = reply.response
    if not response.is_success:
        _raise_for(response, job_id)
    return _parse(model, response.content, response.status_code)


def _parse(model: type[M], data: bytes | str, status_code: int = 200) -> M:
    try:
        return model.model_validate_json(data)
    except ValidationError as exc:
        raise ResponseError(
            f"the server's answer is not a {model.__name__}: {exc.errors()[0]['msg']}",
            status_code=status_code,
            problem=None,
        ) from None


def _problem(response: httpx.Response) -> Problem | None:
    if "json" not in response.headers.get("content-type", ""):
        return None
    try:
        return Problem.model_validate_json(response.content)
    except ValidationError:
        return None


def _raise_for(response: httpx.Response, job_id: str | None) -> NoReturn:
    """Raise the exception that matches an error answer, with its problem detail."""
    status = response.status_code
    problem = _problem(response)
    detail = problem.detail if problem else f"{status} {response.reason_phrase}".strip()
    kind = problem.type.removeprefix(TYPE_PREFIX) if problem else ""
    if status == 401:
        raise Unauthenticated(detail, presented="authorization" in response.request.headers)
    if status == 403:
        raise Forbidden(detail)
    if status == 404 and kind == "job-not-found" and job_id is not None:
        raise JobNotFound(job_id)
    if status == 410 and job_id is not None:
        raise JobGone(job_id)
    if status == 409:
        raise InvalidTransition(detail)
    if kind == "idempotency-conflict":
        raise IdempotencyConflict(detail)
    if status == 400:
        raise MalformedJSON(detail)
    if status in (413, 422):
        errors = problem.errors or [] if problem else []
        raise InvalidJobData(detail, [FieldError(error.field, error.message) for error in errors])
    if status == 421:
        raise MisdirectedRequest(detail)
    if status == 429:
        raise RateLimited(detail, retry_after=_retry_after(response) or 1.0)
    if status == 503:
        raise TooManyStreams(detail) if kind == "too-many-streams" else BackendUnavailable(detail)
    if status >= 500:
        raise ServerError(detail, status_code=status, problem=problem)
    raise ResponseError(detail, status_code=status, problem=problem)


class _Pages:
    """``list_jobs`` without the I/O: which page to ask for next, and its jobs."""

    def __init__(
        self, call: Callable[..., _Call], params: dict[str, Any], limit: int | None
    ) -> None:
        if limit is not None and limit < 1:
            raise ValueError("limit must be at least 1")
        self._call = call
        self._params = params
        self._left = limit
        self._cursor: str | None = None
        self._done = False

    def next_call(self) -> _Call | None:
        if self._done or self._left == 0:
            return None
        size = PAGE_SIZE if self._left is None else min(PAGE_SIZE, self._left)
        params = {**self._params, "limit": size, **_given(cursor=self._cursor)}
        return self._call("GET", "/api/jobs", params=params)

    def take(self, reply: _Reply) -> list[Job]:
        page = _expect(reply, JobList)
        jobs = page.jobs if self._left is None else page.jobs[: self._left]
        if self._left is not None:
            self._left -= len(jobs)
        self._cursor = page.next_cursor
        self._done = page.next_cursor is None
        return jobs


class _Watch:
    """``watch`` without the I/O: what to ask for, what each answer and event means."""

    def __init__(
        self,
        attempts: _Attempts,
        call: _Call,
        timeout: httpx.Timeout,
        job_id: str,
        since: int | None,
    ) -> None:
        self.attempts = attempts
        self.job_id = job_id
        self.version = since
        self.done = False
        self._call = call
        self._timeout = timeout

    @property
    def path(self) -> str:
        return self._call.path

    @property
    def options(self) -> dict[str, Any]:
        """The keyword arguments of the next ``connect_sse``: it resumes after ``version``."""
        resume = {} if self.version is None else {"Last-Event-ID": str(self.version)}
        return {"headers": {**self._call.headers, **resume}, "timeout": self._timeout}

    def opened(self, response: httpx.Response) -> float | None:
        """None to read the stream (or stop, on 204); else the pause before reconnecting.

        The body of an error answer must have been read.
        """
        if response.status_code == 204:  # we already have the terminal state
            self.done = True
            return None
        if response.status_code == 200:
            return None
        pause = self.attempts.after_response(response)
        if pause is None:
            _raise_for(response, self.job_id)
        return pause

    def receive(self, event: ServerSentEvent) -> Job | None:
        """The job an event carries, unless this watch has yielded that version already."""
        if event.event == "removed":
            raise JobGone(self.job_id)
        if event.event != "job":
            return None
        job = _parse(Job, event.data)
        if self.version is not None and job.version <= self.version:
            return None
        self.version = job.version
        self.done = job.is_terminal
        self.attempts.reset()  # progress: a later drop starts a fresh round of retries
        return job

    def dropped(self, exc: Exception | None) -> float:
        """The pause before reconnecting after ``exc`` (None: the stream just ended)."""
        return self.attempts.after_error(exc)

    def pause_after(self, pause: float | None) -> float:
        """The pause once a connection is over: ``pause`` if it has one, else as a drop."""
        if pause is not None:
            return pause
        return 0.0 if self.done else self.dropped(None)


# --- the shared core -----------------------------------------------------------------


class Changes(TypedDict, total=False):
    """What ``update_job_with_notification`` (and a tracked job's ``update``) may change."""

    status: JobStatus | None
    progress: float | None
    message: str | None
    metadata: dict[str, Any] | None  # shallow-merged into the job's


class _Core(Generic[_Transport]):
    """Everything both clients share: settings, request building, and the calls.

    Each call is written once, here, as a generator of requests (``_create_job``
    and so on); :func:`_blocking` and :func:`_awaiting` make the public methods
    of the two clients from it.
    """

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        api_key: str | None = None,
        token: str | None = None,
        timeout: float = 10.0,
        idle_timeout: float | None = 60.0,
        retry: RetryPolicy | None = None,
        headers: Mapping[str, str] | None = None,
        transport: _Transport | None = None,
    ) -> None:
        """Connect to the Jobcast server at ``base_url`` (nothing is sent yet).

        - ``api_key``: sent as ``Authorization: Bearer <api_key>``.
        - ``token``: a read token, sent the same way; reads (get, list, watch)
          prefer it, writes prefer ``api_key``.
        - ``timeout``: seconds for connecting and for each answer.
        - ``idle_timeout``: seconds a live stream may stay silent before
          ``watch`` reconnects (the server pings every 15).
        - ``retry``: a :class:`RetryPolicy` (default: 3 retries from 0.5 s, at most 10 s).
        - ``headers``: extra headers for every request; ``transport``: an httpx transport.
        """
        url = httpx.URL(base_url)
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"base_url must be an http:// or https:// URL, not {base_url!r}")
        self.base_url = base_url
        self.retry = retry or RetryPolicy()
        self._api_key = api_key
        self._token = token
        self._timeout = timeout
        self._stream_timeout = httpx.Timeout(timeout, read=idle_timeout)
        self._open(timeout, headers, transport)

    def _open(
        self, timeout: float, headers: Mapping[str, str] | None, transport: _Transport | None
    ) -> None:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base_url!r})"

    def _credentials(self, write: bool) -> dict[str, str]:
        # Writes prefer the API key, reads the (narrower) read token; either falls back.
        secret = (self._api_key or self._token) if write else (self._token or self._api_key)
        return {"Authorization": f"Bearer {secret}"} if secret else {}

    def _request(self, method: str, path: str, **parts: Any) -> _Call:
        headers = {**self._credentials(method != "GET"), **parts.pop("headers", {})}
        return _Call(method, path, headers=headers, **parts)

    def _attempts(self, call: _Call) -> _Attempts:
        return _Attempts(self.retry, f"{call.method} {self.base_url.rstrip('/')}{call.path}")

    # The calls: each yields the requests it needs and returns its result.

    def _create_job(
        self,
        *,
        job_type: JobType = "generic",
        message: str = "",
        metadata: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> _Operation[Job]:
        """Create a job and return it (``queued``); retries never make a second one.

        Every call sends a new ``Idempotency-Key`` (the same on each of its
        retries); give ``idempotency_key`` to make retries across processes safe too.
        """
        body = _given(jobType=job_type, message=message, metadata=metadata)
        key = idempotency_key or uuid.uuid4().hex
        reply = yield self._request(
            "POST", "/api/jobs", json=body, headers={"Idempotency-Key": key}
        )
        created = _expect(reply, JobCreated)
        return (yield from self._get_job(created.job_id))

    def _get_job(self, job_id: str) -> _Operation[Job]:
        """The job as it is now."""
        reply = yield self._request("GET", _job_path(job_id), job_id=job_id)
        return _expect(reply, Job, job_id)

    def _update_job_with_notification(
        self, job_id: str, **changes: Unpack[Changes]
    ) -> _Operation[Job]:
        """Change any of ``status``, ``progress``, ``message``, ``metadata`` (merged).

        Every watcher of the job sees the change.
        """
        body = _given(**changes)
        reply = yield self._request("PATCH", _job_path(job_id), json=body, job_id=job_id)
        return _expect(reply, Job, job_id)

    def _complete_job(
        self, job_id: str, document_id: str | None = None, message: str | None = None
    ) -> _Operation[Job]:
        """Mark the job ``completed`` (progress 100); ``message`` defaults to ``Completed``."""

        def landed(job: Job) -> bool:
            return job.status == "completed" and job.document_id == (document_id or job.document_id)

        body = _given(documentId=document_id, message=message)
        return (yield from self._finish(job_id, "complete", body, landed))

    def _fail_job(self, job_id: str, error: str, message: str | None = None) -> _Operation[Job]:
        """Mark the job ``error`` with ``error``; ``message`` defaults to ``Processing failed``."""

        def landed(job: Job) -> bool:
            return job.status == "error" and job.error == error

        body = _given(error=error, message=message)
        return (yield from self._finish(job_id, "fail", body, landed))

    def _finish(
        self, job_id: str, action: str, body: dict[str, Any], landed: Callable[[Job], bool]
    ) -> _Operation[Job]:
        reply = yield self._request(
            "POST", _job_path(job_id, f"/{action}"), json=body, job_id=job_id
        )
        if reply.response.status_code == 409 and reply.attempts > 1:
            # An earlier attempt may have landed and only its answer been lost.
            current = yield from self._get_job(job_id)
            if landed(current):
                return current
        return _expect(reply, Job, job_id)

    def _begin(
        self, job_id: str | None, job_type: JobType, message: str, metadata: dict[str, Any] | None
    ) -> _Operation[Job]:
        if job_id is not None:
            return (yield from self._get_job(job_id))
        return (yield from self._create_job(job_type=job_type, message=message, metadata=metadata))

    def _settle(self, tracked: _Tracked, exc: BaseException | None) -> _Operation[Job | None]:
        """Complete the tracked job, or fail it with the exception; nothing if it has ended."""
        if tracked.state.is_terminal:
            return None
        if exc is None:
            document_id, message = tracked.document_id, tracked.completion_message
            return (yield from self._complete_job(tracked.job_id, document_id, message))
        return (yield from self._fail_job(tracked.job_id, str(exc) or type(exc).__name__))

    def _pages(
        self, status: JobStatus | None, job_type: JobType | None, limit: int | None
    ) -> _Pages:
        return _Pages(self._request, _given(status=status, jobType=job_type), limit)

    def _watch(self, job_id: str, since: int | None) -> _Watch:
        call = self._request("GET", _job_path(job_id, "/events"), job_id=job_id)
        return _Watch(self._attempts(call), call, self._stream_timeout, job_id, since)


def _public(call: Callable[..., Any], operation: Callable[..., Any]) -> None:
    """Give ``call`` the name, docstring and signature (less the return) of ``operation``."""
    functools.update_wrapper(call, operation)
    call.__name__ = call.__qualname__ = operation.__name__.removeprefix("_")
    signature = inspect.signature(operation).replace(return_annotation=inspect.Signature.empty)
    call.__signature__ = signature  # type: ignore[attr-defined]
    del call.__wrapped__  # type: ignore[attr-defined]


def _blocking(
    operation: Callable[Concatenate[Any, P], _Operation[T]],
) -> Callable[Concatenate[JobsClient, P], T]:
    """A method of :class:`JobsClient` that runs ``operation`` to its result."""

    def call(self: JobsClient, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._run(operation(self, *args, **kwargs))

    _public(call, operation)
    return call


def _awaiting(
    operation: Callable[Concatenate[Any, P], _Operation[T]],
) -> Callable[Concatenate[AsyncJobsClient, P], Coroutine[Any, Any, T]]:
    """A coroutine method of :class:`AsyncJobsClient` that runs ``operation``."""

    async def call(self: AsyncJobsClient, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._run(operation(self, *args, **kwargs))

    _public(call, operation)
    return call


@contextlib.contextmanager
def _noting(exc: BaseException, job_id: str) -> Iterator[None]:
    """Keep ``exc`` the error that propagates when failing its job fails too; note why."""
    try:
        yield
    except JobsError as error:
        exc.add_note(f"jobcast: job {job_id} could not be marked as failed: {error}")


# --- tracked jobs --------------------------------------------------------------------


class _Tracked:
    def __init__(self, state: Job) -> None:
        self.state = state
        """The job as of its last change through this handle."""
        self.document_id: str | None = None
        """Given to ``complete_job`` when the block succeeds."""
        self.completion_message: str | None = None
        """Given to ``complete_job`` when the block succeeds (the server's default if None)."""

    @property
    def job_id(self) -> str:
        return self.state.job_id

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.job_id} {self.state.status}>"


class TrackedJob(_Tracked):
    """The job of a ``JobsClient.track()`` block: report progress with :meth:`update`."""

    def __init__(self, client: JobsClient, state: Job) -> None:
        super().__init__(state)
        self._client = client

    def update(self, **changes: Unpack[Changes]) -> Job:
        """``update_job_with_notification`` for this job."""
        self.state = self._client.update_job_with_notification(self.job_id, **changes)
        return self.state


class AsyncTrackedJob(_Tracked):
    """The job of an ``AsyncJobsClient.track()`` block: ``await job.update(...)``."""

    def __init__(self, client: AsyncJobsClient, state: Job) -> None:
        super().__init__(state)
        self._client = client

    async def update(self, **changes: Unpack[Changes]) -> Job:
        """``update_job_with_notification`` for this job."""
        self.state = await self._client.update_job_with_notification(self.job_id, **changes)
        return self.state


# --- the clients ---------------------------------------------------------------------


class JobsClient(_Core[httpx.BaseTransport]):
    """A blocking Jobcast client (httpx); use it as a context manager, or close() it."""

    create_job = _blocking(_Core._create_job)
    update_job_with_notification = _blocking(_Core._update_job_with_notification)
    complete_job = _blocking(_Core._complete_job)
    fail_job = _blocking(_Core._fail_job)
    get_job = _blocking(_Core._get_job)

    def _open(
        self,
        timeout: float,
        headers: Mapping[str, str] | None,
        transport: httpx.BaseTransport | None,
    ) -> None:
        self._http = httpx.Client(
            base_url=self.base_url, timeout=timeout, headers=headers, transport=transport
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def list_jobs(
        self,
        status: JobStatus | None = None,
        job_type: JobType | None = None,
        limit: int | None = None,
    ) -> Iterator[Job]:
        """Every matching job, newest first, fetching pages as the iteration needs them.

        ``limit`` caps how many jobs are yielded in all (default: every one).
        """
        pages = self._pages(status, job_type, limit)
        while (call := pages.next_call()) is not None:
            yield from pages.take(self._send(call))

    def watch(self, job_id: str, *, since: int | None = None) -> Iterator[Job]:
        """Each new state of the job, live over SSE, ending with its terminal state.

        The first is the job as it is now (or the first change after version
        ``since``). A dropped connection is resumed from the last version
        received (``Last-Event-ID``), so no state is yielded twice.
        """
        watch = self._watch(job_id, since)
        while not watch.done:
            try:
                with connect_sse(self._http, "GET", watch.path, **watch.options) as source:
                    if source.response.status_code not in (200, 204):
                        source.response.read()
                    pause = watch.opened(source.response)
                    if pause is None and not watch.done:
                        for event in source.iter_sse():
                            if (job := watch.receive(event)) is not None:
                                yield job
                            if watch.done:
                                return
            except httpx.TransportError as exc:
                pause = watch.dropped(exc)
            except SSEError as exc:
                raise ResponseError(str(exc), status_code=200, problem=None) from exc
            time.sleep(watch.pause_after(pause))

    @contextlib.contextmanager
    def track(
        self,
        job_id: str | None = None,
        *,
        job_type: JobType = "generic",
        message: str = "",
        metadata: dict[str, Any] | None = None,
    ) -> Iterator[TrackedJob]:
        """Create a job (or take ``job_id``), complete it when the block ends, fail it on error.

        On an exception the job fails with ``str(exc)`` (or the exception's type
        name) and the exception propagates. Set ``job.document_id`` and
        ``job.completion_message`` inside the block for the completion.
        """
        tracked = TrackedJob(self, self._run(self._begin(job_id, job_type, message, metadata)))
        try:
            yield tracked
        except BaseException as exc:
            with _noting(exc, tracked.job_id):
                self._run(self._settle(tracked, exc))
            raise
        self._run(self._settle(tracked, None))

    def _run(self, operation: _Operation[T]) -> T:
        try:
            call = next(operation)
            while True:
                call = operation.send(self._send(call))
        except StopIteration as stop:
            result: T = stop.value
            return result

    def _send(self, call: _Call) -> _Reply:
        attempts = self._attempts(call)
        while True:
            try:
                response = self._http.request(call.method, call.path, **call.options)
            except httpx.TransportError as exc:
                pause = attempts.after_error(exc)
            else:
                if (retry := attempts.after_response(response)) is None:
                    return _Reply(response, attempts.count)
                pause = retry
            time.sleep(pause)


class AsyncJobsClient(_Core[httpx.AsyncBaseTransport]):
    """An asyncio (or trio) Jobcast client; use it with ``async with``, or aclose() it."""

    create_job = _awaiting(_Core._create_job)
    update_job_with_notification = _awaiting(_Core._update_job_with_notification)
    complete_job = _awaiting(_Core._complete_job)
    fail_job = _awaiting(_Core._fail_job)
    get_job = _awaiting(_Core._get_job)

    def _open(
        self,
        timeout: float,
        headers: Mapping[str, str] | None,
        transport: httpx.AsyncBaseTransport | None,
    ) -> None:
        self._http = httpx.AsyncClient(
            base_url=self.base_url, timeout=timeout, headers=headers, transport=transport
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def list_jobs(
        self,
        status: JobStatus | None = None,
        job_type: JobType | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[Job]:
        """As :meth:`JobsClient.list_jobs`, with ``async for``."""
        pages = self._pages(status, job_type, limit)
        while (call := pages.next_call()) is not None:
            for job in pages.take(await self._send(call)):
                yield job

    async def watch(self, job_id: str, *, since: int | None = None) -> AsyncIterator[Job]:
        """As :meth:`JobsClient.watch`, with ``async for``.

        To stop early without leaving the connection open, close it:
        ``async with contextlib.aclosing(client.watch(job_id)) as states: ...``.
        """
        watch = self._watch(job_id, since)
        while not watch.done:
            try:
                async with aconnect_sse(self._http, "GET", watch.path, **watch.options) as source:
                    if source.response.status_code not in (200, 204):
                        await source.response.aread()
                    pause = watch.opened(source.response)
                    if pause is None and not watch.done:
                        async for event in source.aiter_sse():
                            if (job := watch.receive(event)) is not None:
                                yield job
                            if watch.done:
                                return
            except httpx.TransportError as exc:
                pause = watch.dropped(exc)
            except SSEError as exc:
                raise ResponseError(str(exc), status_code=200, problem=None) from exc
            await anyio.sleep(watch.pause_after(pause))

    @contextlib.asynccontextmanager
    async def track(
        self,
        job_id: str | None = None,
        *,
        job_type: JobType = "generic",
        message: str = "",
        metadata: dict[str, Any] | None = None,
    ) -> AsyncIterator[AsyncTrackedJob]:
        """As :meth:`JobsClient.track`, with ``async with``.

        A cancelled block fails the job too (shielded from the cancellation,
        for at most ``timeout`` seconds), then the cancellation goes on.
        """
        begin = self._begin(job_id, job_type, message, metadata)
        tracked = AsyncTrackedJob(self, await self._run(begin))
        try:
            yield tracked
        except BaseException as exc:
            with anyio.move_on_after(self._timeout, shield=True) as scope:
                with _noting(exc, tracked.job_id):
                    await self._run(self._settle(tracked, exc))
            if scope.cancelled_caught:
                exc.add_note(f"jobcast: job {tracked.job_id} could not be marked as failed in time")
            raise
        await self._run(self._settle(tracked, None))

    async def _run(self, operation: _Operation[T]) -> T:
        try:
            call = next(operation)
            while True:
                call = operation.send(await self._send(call))
        except StopIteration as stop:
            result: T = stop.value
            return result

    async def _send(self, call: _Call) -> _Reply:
        attempts = self._attempts(call)
        while True:
            try:
                response = await self._http.request(call.method, call.path, **call.options)
            except httpx.TransportError as exc:
                pause = attempts.after_error(exc)
            else:
                if (retry := attempts.after_response(response)) is None:
                    return _Reply(response, attempts.count)
                pause = retry
            await anyio.sleep(pause)
