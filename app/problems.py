"""Every error as ``application/problem+json`` (RFC 9457), mapped in one place."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from http import HTTPStatus

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket

from app.errors import (
    BackendUnavailable,
    BodyTooLarge,
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
    OffsetMismatch,
    OutputTooLarge,
    RateLimited,
    TooManyStreams,
    Unauthenticated,
    UnsupportedMediaType,
)
from app.models import Problem, encode

logger = logging.getLogger("jobcast")

MEDIA_TYPE = "application/problem+json"
TYPE_PREFIX = "tag:jobcast,2026:"

_JOBS_ERRORS: dict[type[JobsError], tuple[int, str]] = {
    JobNotFound: (404, "job-not-found"),
    JobGone: (410, "job-gone"),
    InvalidTransition: (409, "invalid-transition"),
    InvalidJobData: (422, "invalid-request"),
    MalformedJSON: (400, "malformed-json"),
    BodyTooLarge: (413, "body-too-large"),
    UnsupportedMediaType: (415, "unsupported-media-type"),
    IdempotencyConflict: (422, "idempotency-conflict"),
    BackendUnavailable: (503, "backend-unavailable"),
    Unauthenticated: (401, "unauthenticated"),
    Forbidden: (403, "forbidden"),
    MisdirectedRequest: (421, "host-not-served"),
    RateLimited: (429, "rate-limited"),
    TooManyStreams: (503, "too-many-streams"),
    OffsetMismatch: (409, "offset-mismatch"),
    OutputTooLarge: (413, "output-too-large"),
}
# Seconds a client should wait before retrying, per error that asks it to.
_RETRY_AFTER: dict[type[JobsError], str] = {BackendUnavailable: "1", TooManyStreams: "5"}


def problem(
    status: int,
    detail: str,
    *,
    slug: str | None = None,
    errors: Sequence[FieldError] = (),
    headers: Mapping[str, str] | None = None,
    next_offset: int | None = None,
) -> Response:
    body = Problem(
        type=TYPE_PREFIX + slug if slug else "about:blank",
        title=HTTPStatus(status).phrase,
        status=status,
        detail=detail,
        errors=list(errors) or None,
        next_offset=next_offset,
    )
    return Response(encode(body), status_code=status, headers=headers, media_type=MEDIA_TYPE)


def problem_for(exc: JobsError) -> Response:
    """The problem+json response for one of our errors (status, type and headers)."""
    status, slug = _JOBS_ERRORS[type(exc)]
    errors = exc.errors if isinstance(exc, InvalidJobData | OutputTooLarge) else ()
    headers: dict[str, str] = {}
    if type(exc) in _RETRY_AFTER:
        headers["Retry-After"] = _RETRY_AFTER[type(exc)]
    elif isinstance(exc, RateLimited):
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
    if isinstance(exc, Unauthenticated):
        headers["WWW-Authenticate"] = challenge(exc)
    next_offset = exc.next_offset if isinstance(exc, OffsetMismatch) else None
    return problem(
        status, str(exc), slug=slug, errors=errors, headers=headers or None, next_offset=next_offset
    )


# WebSocket error frames carry a code instead of a status: "fix your request"
# and "try again later" must be told apart without parsing the message.
_FRAME_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    410: "gone",
    413: "bad_request",
    422: "bad_request",
    429: "rate_limited",
    503: "unavailable",
}


def frame_code(exc: JobsError) -> str:
    """The ``code`` of the WebSocket ``error`` frame that reports ``exc``."""
    return _FRAME_CODES.get(_JOBS_ERRORS[type(exc)][0], "bad_request")


def challenge(exc: Unauthenticated) -> str:
    """The RFC 6750 ``WWW-Authenticate`` value: which scheme, and what was wrong."""
    if not exc.presented:
        return 'Bearer realm="jobcast"'
    return 'Bearer realm="jobcast", error="invalid_token"'


async def refuse(scope: Scope, receive: Receive, send: Send, exc: JobsError) -> None:
    """Answer a request or WebSocket handshake with ``exc``'s problem, before any route."""
    if scope["type"] == "websocket":
        await refuse_websocket(WebSocket(scope, receive, send), exc)
    else:
        await problem_for(exc)(scope, receive, send)


async def refuse_websocket(websocket: WebSocket, exc: JobsError) -> None:
    """Refuse a WebSocket handshake, before accepting it, with ``exc``'s problem.

    Where the server supports the denial-response extension (uvicorn, the
    TestClient) the client gets the HTTP status and problem+json; elsewhere
    the handshake is closed with 1008 and the reason.
    """
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(problem_for(exc))
    else:
        await websocket.close(1008, str(exc)[:120])


def problem_answer(request: Request, exc: Exception) -> Response:
    """The answer to ``exc``, raised while serving ``request`` before it was answered.

    Our errors and Starlette's (an unknown path, a method not allowed, a body
    too large) are problems of their own; anything else is a bug: a 500, logged.
    """
    if isinstance(exc, JobsError):
        return problem_for(exc)
    if isinstance(exc, HTTPException):
        return _http_problem(request, exc)
    logger.exception("unexpected error on %s %s", request.method, request.url.path)
    return problem(500, "the server hit an unexpected error; it has been logged")


def _http_problem(request: Request, exc: HTTPException) -> Response:
    if exc.status_code in (204, 304):
        return Response(status_code=exc.status_code, headers=exc.headers)
    detail = exc.detail
    if exc.status_code == 404:
        detail = f"nothing at {request.url.path}"
    elif exc.status_code == 405:
        detail = f"{request.method} is not allowed on {request.url.path}"
        return problem(405, detail, headers={"Allow": ", ".join(_served_methods(request))})
    return problem(exc.status_code, detail, headers=exc.headers)


def _served_methods(request: Request) -> list[str]:
    """Every method some route serves at this path: Starlette's own 405 names only
    the first route's, and a path served by several routes would look narrower."""
    methods: set[str] = set()
    for route in request.app.routes:
        if isinstance(route, Route) and route.methods:
            match, _ = route.matches({**request.scope, "method": ""})
            if match is Match.PARTIAL:
                methods |= route.methods
    return sorted(methods)
