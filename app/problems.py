"""Every error as ``application/problem+json`` (RFC 9457), mapped in one place."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from http import HTTPStatus

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from app.errors import (
    BackendUnavailable,
    FieldError,
    IdempotencyConflict,
    InvalidJobData,
    InvalidTransition,
    JobGone,
    JobNotFound,
    JobsError,
    MalformedJSON,
)
from app.models import Problem, ProblemField, encode

logger = logging.getLogger("jobcast")

MEDIA_TYPE = "application/problem+json"
TYPE_PREFIX = "tag:jobcast,2026:"

_JOBS_ERRORS: dict[type[JobsError], tuple[int, str]] = {
    JobNotFound: (404, "job-not-found"),
    JobGone: (410, "job-gone"),
    InvalidTransition: (409, "invalid-transition"),
    InvalidJobData: (422, "invalid-request"),
    MalformedJSON: (400, "malformed-json"),
    IdempotencyConflict: (422, "idempotency-conflict"),
    BackendUnavailable: (503, "backend-unavailable"),
}


def problem(
    status: int,
    detail: str,
    *,
    slug: str | None = None,
    errors: Sequence[FieldError] = (),
    headers: Mapping[str, str] | None = None,
) -> Response:
    body = Problem(
        type=TYPE_PREFIX + slug if slug else "about:blank",
        title=HTTPStatus(status).phrase,
        status=status,
        detail=detail,
        errors=[ProblemField(field=e.field, message=e.message) for e in errors] or None,
    )
    return Response(encode(body), status_code=status, headers=headers, media_type=MEDIA_TYPE)


async def on_jobs_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, JobsError)
    status, slug = _JOBS_ERRORS[type(exc)]
    errors = exc.errors if isinstance(exc, InvalidJobData) else ()
    headers = {"Retry-After": "1"} if status == 503 else None
    return problem(status, str(exc), slug=slug, errors=errors, headers=headers)


async def on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code in (204, 304):
        return Response(status_code=exc.status_code, headers=exc.headers)
    detail = exc.detail
    if exc.status_code == 404:
        detail = f"nothing at {request.url.path}"
    elif exc.status_code == 405:
        detail = f"{request.method} is not allowed on {request.url.path}"
    elif exc.status_code == 413:
        detail = "the request body is larger than the server accepts"
    return problem(exc.status_code, detail, headers=exc.headers)


async def on_unexpected_error(request: Request, exc: Exception) -> Response:
    logger.exception("unexpected error on %s %s", request.method, request.url.path)
    return problem(500, "the server hit an unexpected error; it has been logged")


EXCEPTION_HANDLERS = {
    JobsError: on_jobs_error,
    HTTPException: on_http_error,
    Exception: on_unexpected_error,
}
