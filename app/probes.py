"""What operators and their tools ask: liveness, readiness, and Prometheus metrics."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from app.api import json_response
from app.errors import BackendUnavailable
from app.metrics import CONTENT_TYPE
from app.models import Health, encode
from app.openapi import Operation
from app.runtime import runtime_of

HEALTH = Operation(
    "GET", "/healthz", "Liveness: the process serves", responses={200: Health}, auth="public"
)
READY = Operation(
    "GET",
    "/readyz",
    "Readiness: the backend answers",
    responses={200: Health, 503: Health},
    auth="public",
)
METRICS = Operation(
    "GET",
    "/metrics",
    "Prometheus metrics",
    media_type="text/plain",
    responses={200: "Prometheus text exposition format"},
)

_OK = encode(Health(status="ok"))
# The reason (the backend's address among it) goes to the log, not into this
# answer: anyone may ask /readyz.
_UNREADY = encode(Health(status="unavailable", detail="the job store cannot be reached"))


async def healthz(_: Request) -> Response:
    return json_response(_OK)


async def readyz(request: Request) -> Response:
    try:
        await runtime_of(request).store.ping()
    except BackendUnavailable:
        return json_response(_UNREADY, 503)
    return json_response(_OK)


async def metrics(request: Request) -> Response:
    runtime = runtime_of(request)
    counts = await runtime.store.count_by_status()
    headers = {"Cache-Control": "no-store"}  # a reading of now, behind the API key
    return Response(runtime.metrics.render(counts), media_type=CONTENT_TYPE, headers=headers)


ROUTES = [(HEALTH, healthz), (READY, readyz), (METRICS, metrics)]
