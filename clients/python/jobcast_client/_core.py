"""The calls without the I/O: what each one sends, and what each answer means.

Each call (``create_job``, ``complete_job``, ...) is written once, here, as a
generator: it yields the :class:`Call` it needs sent, receives the
:class:`Reply`, and returns its result or raises the matching exception.
The sync and async clients (:mod:`._client`) only run these generators, each
with its own way of waiting, so building requests, retrying and mapping
errors exist once.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, NoReturn, TypeAlias, TypeVar, Unpack
from urllib.parse import quote

import httpx2

from ._exceptions import (
    BackendUnavailable,
    BodyTooLarge,
    Forbidden,
    IdempotencyConflict,
    InvalidJobData,
    InvalidTransition,
    JobGone,
    JobNotFound,
    MalformedJSON,
    MisdirectedRequest,
    OutputTooLarge,
    RateLimited,
    ResponseError,
    ServerError,
    TooManyStreams,
    Unauthenticated,
)
from ._models import (
    CANCELED,
    DEFAULT_FAILED_MESSAGE,
    Changes,
    FieldError,
    Job,
    JobStatus,
    JobType,
    ReadToken,
)
from ._retry import Attempts, RetryPolicy, retry_after
from ._version import __version__

DEFAULT_URL = "http://127.0.0.1:8000"
PAGE_SIZE = 100
# The server's problem types are this prefix and a slug (job-not-found, ...).
PROBLEM_TYPE_PREFIX = "tag:jobcast,2026:"

T = TypeVar("T")
Transport = TypeVar("Transport", httpx2.BaseTransport, httpx2.AsyncBaseTransport)


@dataclass(frozen=True, slots=True)
class Call:
    """One HTTP request, as a call describes it and either client sends it."""

    method: str
    path: str
    json: dict[str, Any] | None = None
    params: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    job_id: str | None = None  # names the job in JobNotFound and JobGone
    # False: it must not reach the server twice, so it is retried only when it surely
    # did not (see _retry). Every call but an output append without expectedOffset.
    replayable: bool = True

    def __post_init__(self) -> None:
        # NaN and infinities are no JSON: refused here, naming the field, rather than by
        # the encoder (which names nothing) or the server.
        where = _not_finite(self.json)
        if where is not None:
            raise ValueError(f"{where}: NaN and infinities are not JSON numbers: give a finite one")

    @property
    def options(self) -> dict[str, Any]:
        """The keyword arguments of ``httpx2.Client.request`` besides method and URL."""
        return {"json": self.json, "params": self.params, "headers": self.headers}


@dataclass(frozen=True, slots=True)
class Reply:
    """The answer to a :class:`Call`, how many attempts it took, and whether an earlier
    one may have reached the server (and been applied there, its answer lost)."""

    response: httpx2.Response
    attempts: int
    reached_before: bool = False


# A call: yields the requests it needs, receives their replies, returns the result.
Operation: TypeAlias = Generator[Call, Reply, T]


def _not_finite(value: Any, where: str = "") -> str | None:
    """Where in ``value`` (a JSON body) a float is NaN or infinite (``progress``,
    ``metadata.scores.1``); None if nowhere."""
    if isinstance(value, float):
        return where if not math.isfinite(value) else None
    if isinstance(value, Mapping):
        items: Any = value.items()
    elif isinstance(value, list | tuple):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        found = _not_finite(item, f"{where}.{key}" if where else str(key))
        if found is not None:
            return found
    return None


def job_path(job_id: str, suffix: str = "") -> str:
    """The path of a job's resource; ValueError for what cannot be a job's id."""
    if not isinstance(job_id, str) or not job_id.strip():
        raise ValueError(
            f"job_id must be a job's id as create_job returned it (job_…), not {job_id!r}"
        )
    return f"/api/jobs/{quote(job_id, safe='')}{suffix}"


def given(**fields: Any) -> dict[str, Any]:
    """The fields that have a value (the server takes an absent field as "unchanged")."""
    return {name: value for name, value in fields.items() if value is not None}


# --- answers --------------------------------------------------------------------------


def expect_json(reply: Reply, what: str, job_id: str | None = None) -> Any:
    """The decoded JSON of a successful answer; the matching exception for an error answer."""
    response = reply.response
    if not response.is_success:
        raise_for(response, job_id)
    try:
        return json.loads(response.content)
    except ValueError:
        raise ResponseError(
            f"the server's answer is not a {what}: it is not JSON",
            status_code=response.status_code,
        ) from None


def parse_job(data: object, status_code: int = 200) -> Job:
    """``data`` as a :class:`Job`; a ResponseError naming what is wrong if it is not one."""
    try:
        return Job.from_wire(data)
    except ValueError as exc:
        raise ResponseError(
            f"the server's answer is not a Job ({exc})", status_code=status_code
        ) from None


def expect_job(reply: Reply, job_id: str | None = None) -> Job:
    return parse_job(expect_json(reply, "Job", job_id), reply.response.status_code)


def _ended_by(job: Job, changes: Changes) -> bool:
    """Whether ``job`` is what an update that ends it made: its status, message and
    metadata (merged in), and its progress but where completing set it to 100. Only an
    update that ends the job is refused when sent again; any other 409 is the job's."""
    status = changes.get("status")
    if status not in ("completed", "error") or job.status != status:
        return False
    merged = changes.get("metadata") or {}
    if any(key not in job.metadata or job.metadata[key] != merged[key] for key in merged):
        return False
    fields = ("message",) if status == "completed" else ("progress", "message")
    return all(changes.get(name) in (None, getattr(job, name)) for name in fields)


def problem_of(response: httpx2.Response) -> Mapping[str, Any] | None:
    """The answer's problem+json document, or None when it carries none."""
    if "json" not in response.headers.get("content-type", ""):
        return None
    try:
        problem = json.loads(response.content)
    except ValueError:
        return None
    return problem if isinstance(problem, dict) else None


def raise_for(response: httpx2.Response, job_id: str | None) -> NoReturn:
    """Raise the exception that matches an error answer, with its problem detail."""
    status = response.status_code
    problem = problem_of(response)
    detail = problem.get("detail") if problem else None
    if not isinstance(detail, str) or not detail:
        detail = f"{status} {response.reason_phrase}".strip()
    kind = str(problem.get("type", "")) if problem else ""
    kind = kind.removeprefix(PROBLEM_TYPE_PREFIX)
    if status == 401:
        raise Unauthenticated(detail, presented="authorization" in response.request.headers)
    if status == 403:
        raise Forbidden(detail)
    if status == 404 and kind == "job-not-found" and job_id is not None:
        raise JobNotFound(detail, job_id=job_id)
    if status == 410 and job_id is not None:
        raise JobGone(detail, job_id=job_id)
    if status == 409:
        raise InvalidTransition(detail)
    if kind == "idempotency-conflict":
        raise IdempotencyConflict(detail)
    if status == 400:
        raise MalformedJSON(detail, _field_errors(problem))
    if kind == "output-too-large":
        raise OutputTooLarge(detail, _field_errors(problem))
    if status == 413:  # body-too-large, or a proxy's own 413
        raise BodyTooLarge(detail, _field_errors(problem))
    if status == 422:
        raise InvalidJobData(detail, _field_errors(problem))
    if status == 421:
        raise MisdirectedRequest(detail)
    if status == 429:
        raise RateLimited(detail, retry_after=retry_after(response) or 1.0)
    if status == 503:
        raise TooManyStreams(detail) if kind == "too-many-streams" else BackendUnavailable(detail)
    if status >= 500:
        raise ServerError(detail, status_code=status, problem=problem)
    raise ResponseError(detail, status_code=status, problem=problem)


def _field_errors(problem: Mapping[str, Any] | None) -> list[FieldError]:
    errors = problem.get("errors") if problem else None
    if not isinstance(errors, list):
        return []
    return [
        FieldError(str(error.get("field", "")), str(error.get("message", "")))
        for error in errors
        if isinstance(error, dict)
    ]


# --- list_jobs ------------------------------------------------------------------------


class Pages:
    """``list_jobs`` without the I/O: which page to ask for next, and its jobs."""

    def __init__(
        self, call: Callable[..., Call], params: dict[str, Any], limit: int | None
    ) -> None:
        if limit is not None and limit < 1:
            raise ValueError("limit must be at least 1")
        self._call = call
        self._params = params
        self._left = limit
        self._cursor: str | None = None
        self._done = False

    def next_call(self) -> Call | None:
        if self._done or self._left == 0:
            return None
        size = PAGE_SIZE if self._left is None else min(PAGE_SIZE, self._left)
        params = {**self._params, "limit": size, **given(cursor=self._cursor)}
        return self._call("GET", "/api/jobs", params=params)

    def take(self, reply: Reply) -> list[Job]:
        page = expect_json(reply, "page of jobs")
        items = page.get("jobs") if isinstance(page, dict) else None
        cursor = page.get("nextCursor") if isinstance(page, dict) else None
        if not isinstance(items, list) or not isinstance(cursor, str | None):
            raise ResponseError(
                "the server's answer is not a page of jobs", status_code=reply.response.status_code
            )
        jobs = [parse_job(item) for item in items]
        if self._left is not None:
            jobs = jobs[: self._left]
            self._left -= len(jobs)
        self._cursor = cursor
        self._done = cursor is None
        return jobs


# --- the calls ------------------------------------------------------------------------


class Core(Generic[Transport]):
    """Everything both clients share: settings, request building, and the calls.

    Each call is a generator of requests (``_create_job`` and so on); the
    clients make their public methods from them.
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
        transport: Transport | None = None,
    ) -> None:
        """Talk to the Jobcast server at ``base_url`` (nothing is sent yet).

        - ``api_key``: sent as ``Authorization: Bearer <api_key>``.
        - ``token``: a read token (:meth:`mint_token`), sent the same way;
          reads (get, list, watch) prefer it, writes prefer ``api_key``.
        - ``timeout``: seconds for connecting and for each answer.
        - ``idle_timeout``: seconds a live stream may stay silent before
          ``watch`` reconnects (the server pings every 15).
        - ``retry``: a :class:`RetryPolicy` (default: 3 retries from 0.5 s, at most 10 s).
        - ``headers``: extra headers for every request; ``transport``: an httpx2 transport.
        """
        try:
            url = httpx2.URL(base_url)
        except httpx2.InvalidURL as exc:
            raise ValueError(f"base_url is not a valid URL: {exc}") from None
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"base_url must be an http:// or https:// URL, not {base_url!r}")
        for name, secret in (("api_key", api_key), ("token", token)):
            # Sent in a header: anything else fails every request, and later.
            if secret and not (secret.isascii() and secret.isprintable() and " " not in secret):
                raise ValueError(f"{name} must be printable ASCII without spaces")
        self.base_url = base_url
        self.retry = retry or RetryPolicy()
        self._api_key = api_key
        self._token = token
        self._timeout = timeout
        self._stream_timeout = httpx2.Timeout(timeout, read=idle_timeout)
        self._open({"User-Agent": f"jobcast-client/{__version__}", **(headers or {})}, transport)

    def _open(self, headers: dict[str, str], transport: Transport | None) -> None:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base_url!r})"

    def _credentials(self, write: bool) -> dict[str, str]:
        # Writes prefer the API key, reads the (narrower) read token; either falls back.
        secret = (self._api_key or self._token) if write else (self._token or self._api_key)
        return {"Authorization": f"Bearer {secret}"} if secret else {}

    def _request(self, method: str, path: str, **parts: Any) -> Call:
        headers = {**self._credentials(method != "GET"), **parts.pop("headers", {})}
        return Call(method, path, headers=headers, **parts)

    def _attempts(self, call: Call, *, watch: bool = False) -> Attempts:
        what = f"{call.method} {self.base_url.rstrip('/')}{call.path}"
        return Attempts(self.retry, what, replayable=call.replayable, watch=watch)

    def _create_job(
        self,
        *,
        job_type: JobType = "generic",
        message: str = "",
        metadata: dict[str, Any] | None = None,
        owner: str | None = None,
        webhook_url: str | None = None,
        idempotency_key: str | None = None,
    ) -> Operation[Job]:
        """Create a job and return it (``queued``); retries never make a second one.

        ``owner`` names who the job belongs to: a read token minted for that
        owner (:meth:`mint_token`) reads all of its jobs and no others.
        ``webhook_url`` is where the server also POSTs this job's events (signed);
        its host must be on the server's JOBS_WEBHOOK_HOSTS.
        Every call sends a new ``Idempotency-Key`` (the same on each of its
        retries); give ``idempotency_key`` to make retries across processes safe too.
        """
        body = given(
            jobType=job_type,
            message=message,
            metadata=metadata,
            owner=owner,
            webhookUrl=webhook_url,
        )
        key = idempotency_key or uuid.uuid4().hex
        reply = yield self._request(
            "POST", "/api/jobs", json=body, headers={"Idempotency-Key": key}
        )
        created = expect_json(reply, "created job")
        job_id = created.get("jobId") if isinstance(created, dict) else None
        if not isinstance(job_id, str):
            raise ResponseError(
                "the server's answer is not a created job (jobId: missing)",
                status_code=reply.response.status_code,
            )
        return (yield from self._get_job(job_id))

    def _get_job(self, job_id: str) -> Operation[Job]:
        """The job as it is now."""
        reply = yield self._request("GET", job_path(job_id), job_id=job_id)
        return expect_job(reply, job_id)

    def _update_job_with_notification(
        self, job_id: str, **changes: Unpack[Changes]
    ) -> Operation[Job]:
        """Change any of ``status``, ``progress``, ``message``, ``metadata`` (merged).

        Every watcher of the job sees the change.
        """
        body = given(**changes)
        reply = yield self._request("PATCH", job_path(job_id), json=body, job_id=job_id)
        if reply.response.status_code == 409 and reply.reached_before:
            # An earlier attempt that ended the job may have landed, its answer lost.
            current = yield from self._get_job(job_id)
            if _ended_by(current, changes):
                return current
        return expect_job(reply, job_id)

    def _complete_job(
        self, job_id: str, document_id: str | None = None, message: str | None = None
    ) -> Operation[Job]:
        """Mark the job ``completed`` (progress 100); ``message`` defaults to ``Completed``."""

        def landed(job: Job) -> bool:
            return job.status == "completed" and job.document_id == (document_id or job.document_id)

        body = given(documentId=document_id, message=message)
        return (yield from self._finish(job_id, "complete", body, landed))

    def _fail_job(self, job_id: str, error: str, message: str | None = None) -> Operation[Job]:
        """Mark the job ``error`` with ``error``; ``message`` defaults to ``Processing failed``."""

        # A blank error is stored as the message, or the server's default.
        stored = error if error.strip() else (message or DEFAULT_FAILED_MESSAGE)

        def landed(job: Job) -> bool:
            return job.status == "error" and job.error == stored

        body = given(error=error, message=message)
        return (yield from self._finish(job_id, "fail", body, landed))

    def _cancel_job(
        self, job_id: str, reason: str | None = None, *, force: bool = False
    ) -> Operation[Job]:
        """Ask the job's worker to stop: the job gets ``cancel_requested`` (and ``cancel_reason``).

        Jobcast does not run the work: the worker learns of the cancel in the
        answer to its next write (a tracked job's ``update`` raises
        :class:`JobCanceled`) and ends the job itself. Asking again changes
        nothing. ``force`` ends the job now, as ``error`` with ``error="canceled"``
        and the reason (or ``Canceled``) as its message: for a job whose worker
        is gone. A job that has ended raises :class:`InvalidTransition`.
        """

        def landed(job: Job) -> bool:
            return job.cancel_requested and (not force or job.error == CANCELED)

        body = given(reason=reason, force=force or None)
        return (yield from self._finish(job_id, "cancel", body, landed))

    def _delete_job(self, job_id: str) -> Operation[None]:
        """Remove the job now, whatever its state; its watchers get :class:`JobGone`.

        Reading it afterwards raises :class:`JobGone`, and so does deleting it again.
        """
        reply = yield self._request("DELETE", job_path(job_id), job_id=job_id)
        if reply.response.status_code == 410 and reply.reached_before:
            return  # an earlier attempt deleted it; only its answer was lost
        if not reply.response.is_success:
            raise_for(reply.response, job_id)

    def _finish(
        self, job_id: str, action: str, body: dict[str, Any], landed: Callable[[Job], bool]
    ) -> Operation[Job]:
        reply = yield self._request(
            "POST", job_path(job_id, f"/{action}"), json=body, job_id=job_id
        )
        if reply.response.status_code == 409 and reply.reached_before:
            # An earlier attempt may have landed and only its answer been lost.
            current = yield from self._get_job(job_id)
            if landed(current):
                return current
        return expect_job(reply, job_id)

    def _mint_token(
        self, *, job_id: str | None = None, owner: str | None = None, ttl: int | None = None
    ) -> Operation[ReadToken]:
        """A read token for one job (``job_id``) or every job of one ``owner``.

        It lasts ``ttl`` seconds (default: the server's ``JOBS_TOKEN_TTL``).
        Minting needs the API key; the token reads (get, list, watch; a browser's
        ``EventSource``) and never writes.
        """
        if (job_id is None) == (owner is None):
            raise ValueError("give exactly one of job_id or owner")
        body = given(jobId=job_id, owner=owner, ttl=ttl)
        reply = yield self._request("POST", "/api/tokens", json=body)
        data = expect_json(reply, "token")
        try:
            return ReadToken.from_wire(data)
        except ValueError as exc:
            raise ResponseError(
                f"the server's answer is not a token ({exc})",
                status_code=reply.response.status_code,
            ) from None

    def _begin(
        self,
        job_id: str | None,
        job_type: JobType,
        message: str,
        metadata: dict[str, Any] | None,
        owner: str | None,
    ) -> Operation[Job]:
        if job_id is not None:
            if message or metadata is not None or owner is not None or job_type != "generic":
                # They describe a job to create; the job taken was created with its own.
                raise ValueError(
                    "track(job_id) takes an existing job: job_type, message, metadata and "
                    "owner are for creating one; report with job.update() inside the block"
                )
            return (yield from self._get_job(job_id))
        return (
            yield from self._create_job(
                job_type=job_type, message=message, metadata=metadata, owner=owner
            )
        )

    def _pages(
        self, status: JobStatus | None, job_type: JobType | None, limit: int | None
    ) -> Pages:
        return Pages(self._request, given(status=status, jobType=job_type), limit)
