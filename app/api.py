"""The JSON routes: ``/api/jobs`` (create, read and long-poll, list, update, finish,
cancel, delete) and ``/api/tokens`` (mint a read token).

Writes and token minting need an API key (``main`` wraps them with
:func:`key_required`, as their operations say); reads check the caller's
scope here, through :mod:`app.auth`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from app.auth import load_job, require_key, scope_filter
from app.edge import DIRECT_SEND
from app.errors import BodyTooLarge, FieldError, InvalidJobData, UnsupportedMediaType
from app.jobs import JobFilter
from app.models import (
    CancelRequest,
    Completion,
    Failure,
    Job,
    JobCreated,
    JobList,
    JobQuery,
    JobUpdate,
    ListQuery,
    NewJob,
    OutputAppend,
    OutputAppended,
    OutputPage,
    OutputQuery,
    Problem,
    TokenIssued,
    TokenRequest,
    encode,
)
from app.openapi import Operation
from app.runtime import runtime_of
from app.store import JobStore
from app.streams.events import Change
from app.streams.hub import Hub, Subscription
from app.streams.mailbox import Mailbox
from app.validation import parse, parse_query, whole_number

JSON = "application/json"
_ACCEPTED_MEDIA = ("", "application/json", "text/plain")
_JOB = "/api/jobs/{jobId}"
NO_QUERY = JobQuery()
# Reads a client may keep and must revalidate (by ETag), and a shared cache may not keep:
# each answers one caller's credentials, which may be a token in the URL.
READ_CACHING = "private, no-cache"
_READ_CACHING_HEADER = (b"cache-control", READ_CACHING.encode())
Endpoint = Callable[[Request], Awaitable[Response]]

CREATE = Operation(
    "POST",
    "/api/jobs",
    "Create a job",
    body=NewJob,
    headers={"Idempotency-Key": "Retry-safe creation: the same key and body return the same job."},
    responses={
        201: JobCreated,
        200: JobCreated,
        400: Problem,
        413: Problem,
        415: Problem,
        422: Problem,
    },
)
LIST = Operation(
    "GET",
    "/api/jobs",
    "List jobs, newest first",
    query=ListQuery,
    headers={"If-None-Match": "The ETag of the page you have: 304 while it is the same."},
    responses={200: JobList, 304: "Not modified: the page is the same", 422: Problem},
    auth="read",
)
GET = Operation(
    "GET",
    _JOB,
    "Get a job (poll; long-poll with waitForVersion)",
    query=JobQuery,
    headers={"If-None-Match": "The ETag of the state you have: 304 while it is current."},
    responses={
        200: Job,
        304: "Not modified: the job is still at that version",
        404: Problem,
        410: Problem,
        422: Problem,
    },
    auth="read",
)
UPDATE = Operation(
    "PATCH",
    _JOB,
    "Update a job's status, progress, message or metadata",
    body=JobUpdate,
    body_required=True,
    responses={200: Job, 400: Problem, 404: Problem, 409: Problem, 410: Problem, 422: Problem},
)
COMPLETE = Operation(
    "POST",
    _JOB + "/complete",
    "Complete a job (progress 100)",
    body=Completion,
    responses={200: Job, 400: Problem, 404: Problem, 409: Problem, 410: Problem, 422: Problem},
)
FAIL = Operation(
    "POST",
    _JOB + "/fail",
    "Fail a job with an error",
    body=Failure,
    body_required=True,
    responses={200: Job, 400: Problem, 404: Problem, 409: Problem, 410: Problem, 422: Problem},
)
CANCEL = Operation(
    "POST",
    _JOB + "/cancel",
    "Ask a job's worker to stop (cancelRequested); with force, end the job now",
    body=CancelRequest,
    responses={200: Job, 400: Problem, 404: Problem, 409: Problem, 410: Problem, 422: Problem},
)
DELETE = Operation(
    "DELETE",
    _JOB,
    "Delete a job now, whatever its state (subscribers get `removed`; GET then answers 410)",
    responses={204: "Deleted", 404: Problem, 410: Problem},
)
APPEND_OUTPUT = Operation(
    "POST",
    _JOB + "/output",
    "Append chunks to a job's output (tokens, log lines, partial results), in order",
    body=OutputAppend,
    body_required=True,
    responses={
        200: OutputAppended,
        400: Problem,
        404: Problem,
        409: Problem,
        410: Problem,
        413: Problem,
        415: Problem,
        422: Problem,
    },
)
READ_OUTPUT = Operation(
    "GET",
    _JOB + "/output",
    "Page through a job's output",
    query=OutputQuery,
    responses={200: OutputPage, 404: Problem, 410: Problem, 422: Problem},
    auth="read",
)
TOKENS = Operation(
    "POST",
    "/api/tokens",
    "Mint a read token for one job or one owner's jobs",
    body=TokenRequest,
    body_required=True,
    responses={200: TokenIssued, 400: Problem, 413: Problem, 415: Problem, 422: Problem},
)


def json_response(
    body: bytes, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(body, status_code=status, headers=headers, media_type=JSON)


def key_required(endpoint: Endpoint) -> Endpoint:
    """``endpoint``, answering 401/403 unless the caller has an API key (or all is open)."""

    @functools.wraps(endpoint)
    async def guarded(request: Request) -> Response:
        require_key(runtime_of(request).guard.identify(request))
        return await endpoint(request)

    return guarded


async def read_body(request: Request) -> bytes:
    """The raw JSON body (`{}` when empty); 415 for forms, 413 past the size limit.

    The limit is checked while reading, so an oversized body is never held whole.
    """
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media not in _ACCEPTED_MEDIA and not media.endswith("+json"):
        raise UnsupportedMediaType(
            f"{media} is not accepted: send the body as JSON with "
            "Content-Type: application/json (jobs only track work; files are not uploaded here)"
        )
    coding = request.headers.get("content-encoding", "identity").strip().lower()
    if coding != "identity":
        # Bodies are small JSON: nothing here decodes gzip or br, and reading one as
        # plain text would refuse it as bad JSON, or take what was never meant.
        raise UnsupportedMediaType(
            f"Content-Encoding {coding} is not accepted: send the body uncompressed"
        )
    limit = runtime_of(request).settings.max_body_bytes
    too_large = BodyTooLarge(
        f"the request body is larger than this server accepts (JOBS_MAX_BODY_BYTES = {limit})"
    )
    declared = whole_number(request.headers.get("content-length", ""), 30)
    if declared is not None and declared > limit:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large
    return bytes(body) if body.strip() else b"{}"


async def create_job(request: Request) -> Response:
    request_body = parse(NewJob, await read_body(request))
    key = request.headers.get("idempotency-key")
    if key is not None and not (0 < len(key) <= 255 and key.isascii() and key.isprintable()):
        raise InvalidJobData(
            "Idempotency-Key must be 1 to 255 printable ASCII characters",
            [FieldError("Idempotency-Key", "1 to 255 printable ASCII characters")],
        )
    runtime = runtime_of(request)
    job, created = await runtime.service.create(request_body, key)
    guard = runtime.guard
    # With no keys every route is open: a token would grant nothing, so none is sent.
    token = guard.tokens.mint("job", job.job_id)[0] if guard.protected else None
    answer = JobCreated(job_id=job.job_id, status=job.status, timestamp=job.updated_at, token=token)
    headers = {"Location": f"/api/jobs/{job.job_id}"}
    if token is not None:
        headers["Cache-Control"] = "no-store"  # it carries a credential
    return json_response(encode(answer), 201 if created else 200, headers)


async def list_jobs(request: Request) -> Response:
    query = parse_query(ListQuery, request.query_params)
    where = JobFilter(job_type=query.job_type, status=query.status, owner=query.owner)
    runtime = runtime_of(request)
    where = scope_filter(runtime.guard.identify(request), where)
    body = encode(await runtime.store.list(where, query.limit, query.cursor))
    # A page has no version of its own: its bytes are its state. A client polling the
    # list (a browser revalidates by itself) is told 304 rather than sent it again.
    etag = b'"%s"' % hashlib.blake2b(body, digest_size=12).hexdigest().encode()
    headers = {"ETag": etag.decode(), "Cache-Control": READ_CACHING}
    if _matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    return json_response(body, headers=headers)


class JobRoute:
    """``GET /api/jobs/{jobId}`` as a plain ASGI app, for Starlette's router.

    Every poll takes this route, so it answers with the job's stored JSON and
    its headers as they go on the wire, without the request/response layer
    (and Response object) Starlette puts around a function endpoint. Errors
    reach the edge, which answers them as problem+json.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        change, modified = await _poll(Request(scope, receive))
        etag = _etag(change)
        if not modified:
            await send({"type": "http.response.start", "status": 304, "headers": [(b"etag", etag)]})
            await send({"type": "http.response.body", "body": b""})
            return
        body = change.data
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", b"%d" % len(body)),
            (b"etag", etag),
            _READ_CACHING_HEADER,
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        # Every layer is done with the response once it has started.
        await scope.get(DIRECT_SEND, send)({"type": "http.response.body", "body": body})


async def _poll(request: Request) -> tuple[Change, bool]:
    """The job as the client should see it, and whether it differs from what it has."""
    job_id: str = request.path_params["jobId"]
    runtime = runtime_of(request)
    access = runtime.guard.identify(request)
    query = NO_QUERY
    if request.scope["query_string"]:  # most polls carry none: nothing to validate
        query = parse_query(JobQuery, request.query_params)
    store = runtime.store
    change = await load_job(access, job_id, store)
    if query.wait_for_version is not None:
        wait = query.timeout
        if access.expires_at is not None:
            wait = max(0.0, min(wait, access.expires_at - time.time()))
        with runtime.metrics.long_polls.track_inprogress():
            change = await wait_for_change(
                store, runtime.hub, job_id, query.wait_for_version, wait, request.receive
            )
        if change.version <= query.wait_for_version:
            return change, False
    return change, not _matches(request.headers.get("if-none-match"), _etag(change))


async def wait_for_change(
    store: JobStore, hub: Hub, job_id: str, version: int, wait: float, receive: Receive
) -> Change:
    """The job once its version exceeds ``version``, or as it is after ``wait`` seconds.

    A client that leaves meanwhile ends the wait (ClientDisconnect): nothing is
    left waiting for a change nobody will read.
    """
    mailbox = Mailbox(capacity=1)
    subscription = hub.subscribe(Subscription(mailbox, job_id=job_id))
    hub.attach(mailbox, heartbeat=False)  # so shutdown answers it at once
    watcher = asyncio.ensure_future(_until_gone(receive))
    watcher.add_done_callback(mailbox.client_left)
    try:
        # Subscribed before reading, so a change between the two is not missed.
        change = await store.get_change(job_id)
        subscription.prime((), version=version, synced=False)
        if change.version > version:
            return change
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                await mailbox.wait()
        if mailbox.closed == "gone":
            raise ClientDisconnect()
        return await store.get_change(job_id)
    finally:
        watcher.cancel()
        hub.unsubscribe(subscription)
        hub.detach(mailbox)


async def _until_gone(receive: Receive) -> None:
    """Return once the client has left (a GET has no body: every message is the end)."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def update_job(request: Request) -> Response:
    change = parse(JobUpdate, await read_body(request))
    job = await runtime_of(request).service.update(request.path_params["jobId"], change)
    return json_response(encode(job))


async def complete_job(request: Request) -> Response:
    completion = parse(Completion, await read_body(request))
    job = await runtime_of(request).service.complete(request.path_params["jobId"], completion)
    return json_response(encode(job))


async def fail_job(request: Request) -> Response:
    failure = parse(Failure, await read_body(request))
    job = await runtime_of(request).service.fail(request.path_params["jobId"], failure)
    return json_response(encode(job))


async def cancel_job(request: Request) -> Response:
    asked = parse(CancelRequest, await read_body(request))
    job = await runtime_of(request).service.cancel(request.path_params["jobId"], asked)
    return json_response(encode(job))


async def delete_job(request: Request) -> Response:
    await runtime_of(request).service.delete(request.path_params["jobId"])
    return Response(status_code=204)


async def append_output(request: Request) -> Response:
    asked = parse(OutputAppend, await read_body(request))
    job_id = request.path_params["jobId"]
    return json_response(encode(await runtime_of(request).service.append_output(job_id, asked)))


async def read_output(request: Request) -> Response:
    query = parse_query(OutputQuery, request.query_params)
    job_id: str = request.path_params["jobId"]
    runtime = runtime_of(request)
    await load_job(runtime.guard.identify(request), job_id, runtime.store)
    read = await runtime.store.read_output(job_id, query.after, query.limit)
    output = read.output
    # The chunks are stored as JSON: the page is put together, not re-encoded.
    page = b'{"jobId":%b,"chunks":%b,"nextOffset":%d,"complete":%b}' % (
        orjson.dumps(job_id),
        output.chunks(),
        output.next_offset,
        b"true" if read.ended and output.next_offset >= read.total else b"false",
    )
    return json_response(page, headers={"Cache-Control": READ_CACHING})


async def mint_token(request: Request) -> Response:
    asked = parse(TokenRequest, await read_body(request))
    guard = runtime_of(request).guard
    if asked.job_id is not None:
        token, expires = guard.tokens.mint("job", asked.job_id, asked.ttl)
    else:
        assert asked.owner is not None  # the model requires one of the two
        token, expires = guard.tokens.mint("owner", asked.owner, asked.ttl)
    issued = TokenIssued(token=token, expires_at=datetime.fromtimestamp(expires, UTC))
    return json_response(encode(issued), headers={"Cache-Control": "no-store"})


def _etag(change: Change) -> bytes:
    """The job's version, and its output's size once it has output (appending changes
    the job's JSON, not its version)."""
    size = change.job.output_size if change.job is not None else None
    return b'"%d"' % change.version if size is None else b'"%d.%d"' % (change.version, size)


def _matches(if_none_match: str | None, etag: bytes) -> bool:
    if if_none_match is None:
        return False
    wanted = etag.decode()
    tags = (tag.strip().removeprefix("W/") for tag in if_none_match.split(","))
    return any(tag in ("*", wanted) for tag in tags)


ROUTES: list[tuple[Operation, Any]] = [
    (CREATE, create_job),
    (LIST, list_jobs),
    (GET, JobRoute()),
    (UPDATE, update_job),
    (COMPLETE, complete_job),
    (FAIL, fail_job),
    (CANCEL, cancel_job),
    (DELETE, delete_job),
    (APPEND_OUTPUT, append_output),
    (READ_OUTPUT, read_output),
    (TOKENS, mint_token),
]
