"""The JSON routes of ``/api/jobs``: create, read (and long-poll), list, update, finish."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from app.errors import FieldError, InvalidJobData
from app.hub import Hub, Mailbox, Subscription
from app.models import (
    Completion,
    Failure,
    Job,
    JobCreated,
    JobList,
    JobQuery,
    JobUpdate,
    ListQuery,
    NewJob,
    Problem,
    encode,
    parse,
)
from app.openapi import Operation
from app.service import JobService
from app.store import JobFilter

JSON = "application/json"
_ACCEPTED_MEDIA = ("", "application/json", "text/plain")
_JOB = "/api/jobs/{jobId}"

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
    responses={200: JobList, 422: Problem},
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


def service_of(request: Request) -> JobService:
    service: JobService = request.state.service
    return service


def json_response(
    body: bytes, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(body, status_code=status, headers=headers, media_type=JSON)


async def read_body(request: Request) -> bytes:
    """The raw JSON body (`{}` when empty); 415 for forms, 413 past the size limit.

    The limit is checked while reading, so an oversized body is never held whole.
    """
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media not in _ACCEPTED_MEDIA and not media.endswith("+json"):
        raise HTTPException(
            415,
            f"{media} is not accepted: send the body as JSON with "
            "Content-Type: application/json (jobs only track work; files are not uploaded here)",
        )
    limit: int = request.state.settings.max_body_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise HTTPException(413)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise HTTPException(413)
    return bytes(body) if body.strip() else b"{}"


async def create_job(request: Request) -> Response:
    request_body = parse(NewJob, await read_body(request))
    key = request.headers.get("idempotency-key")
    if key is not None and not (0 < len(key) <= 255 and key.isascii() and key.isprintable()):
        raise InvalidJobData(
            "Idempotency-Key must be 1 to 255 printable ASCII characters",
            [FieldError("Idempotency-Key", "1 to 255 printable ASCII characters")],
        )
    job, created = await service_of(request).create(request_body, key)
    answer = JobCreated(job_id=job.job_id, status=job.status, timestamp=job.updated_at)
    return json_response(
        encode(answer), 201 if created else 200, {"Location": f"/api/jobs/{job.job_id}"}
    )


async def list_jobs(request: Request) -> Response:
    query = parse(ListQuery, dict(request.query_params))
    where = JobFilter(job_type=query.job_type, status=query.status)
    page = await service_of(request).list(where, query.limit, query.cursor)
    return json_response(encode(JobList(jobs=page.jobs, next_cursor=page.next_cursor)))


async def get_job(request: Request) -> Response:
    job_id: str = request.path_params["jobId"]
    query = parse(JobQuery, dict(request.query_params))
    service = service_of(request)
    if query.wait_for_version is None:
        job = await service.get(job_id)
    else:
        hub: Hub = request.state.hub
        job = await wait_for_change(service, hub, job_id, query.wait_for_version, query.timeout)
        if job.version <= query.wait_for_version:
            return Response(status_code=304, headers=_etag(job))
    if _matches(request.headers.get("if-none-match"), job):
        return Response(status_code=304, headers=_etag(job))
    return json_response(encode(job), headers={**_etag(job), "Cache-Control": "no-cache"})


async def wait_for_change(
    service: JobService, hub: Hub, job_id: str, version: int, wait: float
) -> Job:
    """The job once its version exceeds ``version``, or as it is after ``wait`` seconds."""
    mailbox = Mailbox(capacity=1)
    subscription = hub.subscribe(Subscription(mailbox, job_id=job_id))
    try:
        # Subscribed before reading, so a change between the two is not missed.
        job = await service.get(job_id)
        subscription.prime((), version=version)
        if job.version > version:
            return job
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                await mailbox.wait()
        return await service.get(job_id)
    finally:
        hub.unsubscribe(subscription)


async def update_job(request: Request) -> Response:
    change = parse(JobUpdate, await read_body(request))
    job = await service_of(request).update(request.path_params["jobId"], change)
    return json_response(encode(job))


async def complete_job(request: Request) -> Response:
    completion = parse(Completion, await read_body(request))
    job = await service_of(request).complete(request.path_params["jobId"], completion)
    return json_response(encode(job))


async def fail_job(request: Request) -> Response:
    failure = parse(Failure, await read_body(request))
    job = await service_of(request).fail(request.path_params["jobId"], failure)
    return json_response(encode(job))


def _etag(job: Job) -> dict[str, str]:
    return {"ETag": f'"{job.version}"'}


def _matches(if_none_match: str | None, job: Job) -> bool:
    if if_none_match is None:
        return False
    wanted = f'"{job.version}"'
    tags = (tag.strip().removeprefix("W/") for tag in if_none_match.split(","))
    return any(tag in ("*", wanted) for tag in tags)


ROUTES: list[tuple[Operation, Any]] = [
    (CREATE, create_job),
    (LIST, list_jobs),
    (GET, get_job),
    (UPDATE, update_job),
    (COMPLETE, complete_job),
    (FAIL, fail_job),
]
