"""The application: ``create_app(settings)``, its lifespan, and its routes.

``app`` itself is built on first access from the environment, so
``uvicorn app.main:app`` works and importing this module reads nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, TypedDict

from sse_starlette.sse import AppStatus
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp

from app import api, collector, library
from app.auth import Guard, key_required, redact_tokens_in_server_logs
from app.demo import Demo
from app.edge import Edge
from app.edge.origins import OriginPolicy
from app.edge.reach import Reach
from app.errors import BackendUnavailable
from app.logs import quiet_websocket_connections, relevel_client_faults
from app.metrics import CONTENT_TYPE, Metrics
from app.models import Health, encode
from app.openapi import Operation, openapi_document
from app.service import JobService
from app.settings import Settings
from app.store import open_store
from app.streams import sse
from app.streams.hub import Hub
from app.streams.limits import StreamSlots
from app.streams.ws import SocketRoute
from app.tokens import Tokens

logger = logging.getLogger("jobcast")

STATIC = Path(__file__).resolve().parent.parent / "static"
VERSION = "0.1.0"


class State(TypedDict):
    """What every request finds in ``request.state``. At most five entries: uvicorn
    copies this dict into every request, and a sixth doubles the copy's table."""

    settings: Settings
    service: JobService
    hub: Hub
    auth: Guard
    streams: StreamSlots


def create_app(settings: Settings | None = None) -> Jobcast:
    settings = settings or Settings()
    metrics = Metrics()
    hub = Hub()
    demo = Demo(enabled=settings.demo_enabled, offered=not settings.api_keys)
    guard = Guard(settings, Tokens(settings))
    streams = StreamSlots(settings.max_streams, settings.snapshot_rate)
    redact_tokens_in_server_logs()
    relevel_client_faults()
    if not settings.access_log:
        quiet_websocket_connections()

    def cut_stalled() -> None:
        hub.cut_stalled(time.monotonic(), settings.send_timeout)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[State]:
        if not settings.protected and settings.allow_anonymous:
            logger.warning(
                "JOBS_ALLOW_ANONYMOUS=1: serving on %s WITHOUT AUTHENTICATION; anyone who can "
                "reach this port can read and change every job. Set JOBS_API_KEY to protect it.",
                settings.host,
            )
        store = open_store(settings, hub)
        await store.start()
        collector.settle()
        service = JobService(store, metrics, settings)
        previous = library.install(service)
        tasks = [
            asyncio.create_task(_every("clean-up", _sweep_interval(settings), store.sweep)),
            asyncio.create_task(_every("heartbeat", settings.heartbeat, _async(hub.ping))),
            asyncio.create_task(
                _every("slow-reader check", _stall_interval(settings), _async(cut_stalled))
            ),
            asyncio.create_task(_close_streams_on_exit(hub)),
        ]
        try:
            yield {
                "settings": settings,
                "service": service,
                "hub": hub,
                "auth": guard,
                "streams": streams,
            }
        finally:
            hub.close()
            # Python 3.11's wait_for (inside redis-py) can swallow one cancellation:
            # cancel until every task is really done.
            while pending := [task for task in tasks if not task.done()]:
                for task in pending:
                    task.cancel()
                await asyncio.wait(pending, timeout=0.1)
            await demo.aclose()
            library.install(previous)
            await store.aclose()

    async def openapi(_: Request) -> Response:
        return JSONResponse(document)

    async def metrics_endpoint(request: Request) -> Response:
        counts = await request.state.service.store.count_by_status()
        return Response(metrics.render(counts), media_type=CONTENT_TYPE)

    operations: list[tuple[Operation, Any]] = [
        *api.ROUTES,
        (sse.ALL_EVENTS, sse.StreamRoute(sse.all_events)),
        (sse.JOB_EVENTS, sse.StreamRoute(sse.job_events)),
        (HEALTH, healthz),
        (READY, readyz),
        (METRICS, metrics_endpoint),
        (OPENAPI, openapi),
        (PAGE, index),
    ]
    document = openapi_document([op for op, _ in operations], title="Jobcast", version=VERSION)

    ordered = sorted(operations, key=lambda pair: _route_rank(pair[0]))
    routes: list[BaseRoute] = [
        WebSocketRoute("/api/jobs/ws", SocketRoute()),
        *(
            Route(
                op.path,
                key_required(endpoint) if op.auth == "key" else endpoint,
                methods=[op.method],
            )
            for op, endpoint in ordered
        ),
        *_key_required(demo.routes),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    return Jobcast(
        Edge.around(Reach(settings), OriginPolicy(settings.cors_origins), metrics),
        routes=routes,
        middleware=_cors(settings),
        lifespan=lifespan,
    )


class Jobcast(Starlette):
    """Starlette whose layers are the edge (:mod:`app.edge`), which also answers
    errors, and outside it CORS when configured, so error answers get CORS
    headers too. Starlette's own error and exception middlewares are left out:
    the edge does their work in the frame it already costs every request."""

    def __init__(self, edge: Callable[[ASGIApp], ASGIApp], **options: Any) -> None:
        self._edge = edge
        super().__init__(**options)

    def build_middleware_stack(self) -> ASGIApp:
        app = self._edge(self.router)
        for cls, args, kwargs in reversed(self.user_middleware):
            app = cls(app, *args, **kwargs)
        return app


def _cors(settings: Settings) -> list[Middleware]:
    cors = []
    if settings.cors_origins:
        cors.append(
            Middleware(
                CORSMiddleware,
                allow_origins=settings.cors_origins,
                allow_methods=["GET", "POST", "PATCH"],
                allow_headers=[
                    "Authorization",
                    "Content-Type",
                    "Idempotency-Key",
                    "If-None-Match",
                    "Last-Event-ID",
                ],
                allow_credentials=settings.cors_credentials,
                expose_headers=["ETag", "Location", "Retry-After"],
                max_age=600,
            )
        )
    return cors


def _route_rank(op: Operation) -> int:
    """Routes are tried in order: /api/jobs/events before /api/jobs/{jobId}, which
    would match it, then the routes every poll and update takes, then the rest."""
    if op.path.startswith("/api/jobs/") and "{" not in op.path:
        return 0
    return 1 if op in (api.GET, api.UPDATE) else 2


def _key_required(routes: Iterable[BaseRoute]) -> list[BaseRoute]:
    """Routes added from outside (the demo's): their writes need the API key."""
    return [
        Route(route.path, key_required(route.endpoint), methods=route.methods)
        if isinstance(route, Route) and (route.methods or set()) - {"GET", "HEAD"}
        else route
        for route in routes
    ]


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
OPENAPI = Operation(
    "GET",
    "/openapi.json",
    "This OpenAPI document",
    responses={200: "OpenAPI 3.1 document"},
    auth="public",
)
PAGE = Operation(
    "GET",
    "/",
    "The live status-indicator page",
    media_type="text/html",
    responses={200: "The page (static HTML; its scripts and styles live under /static/)"},
    auth="public",
)


UNREADY = Health(status="unavailable", detail="the job store cannot be reached")


async def healthz(_: Request) -> Response:
    return api.json_response(encode(Health(status="ok")))


async def readyz(request: Request) -> Response:
    try:
        await request.state.service.store.ping()
    except BackendUnavailable:
        # The reason (the backend's address among it) is in the log, not in this
        # answer: anyone may ask /readyz.
        return api.json_response(encode(UNREADY), 503)
    return api.json_response(encode(Health(status="ok")))


async def index(_: Request) -> Response:
    return FileResponse(STATIC / "index.html")


def _sweep_interval(settings: Settings) -> float:
    return min(1.0, max(0.05, settings.terminal_ttl / 4))


def _stall_interval(settings: Settings) -> float:
    """How often blocked sends are checked: each is cut at most this long past the timeout."""
    return min(1.0, max(0.01, settings.send_timeout / 4))


def _async(function: Callable[[], None]) -> Callable[[], Awaitable[None]]:
    async def call() -> None:
        function()

    return call


async def _every(name: str, seconds: float, job: Callable[[], Awaitable[None]]) -> None:
    """Run ``job`` every ``seconds``. A failure is logged once, when a run of failures
    begins (an outage of the backend says so in one line; anything else is a bug and
    gets its traceback), and once more when the job succeeds again."""
    failing_since: float | None = None
    while True:
        await asyncio.sleep(seconds)
        try:
            await job()
        except BackendUnavailable as exc:
            if failing_since is None:
                failing_since = time.monotonic()
                logger.warning("%s paused: %s; retrying every %.1fs", name, exc, seconds)
        except Exception:
            if failing_since is None:
                failing_since = time.monotonic()
                logger.exception("%s failed; retrying every %.1fs", name, seconds)
        else:
            if failing_since is not None:
                down = time.monotonic() - failing_since
                logger.info("%s works again after %.1fs", name, down)
                failing_since = None


async def _close_streams_on_exit(hub: Hub) -> None:
    """End open streams as soon as the server starts shutting down.

    uvicorn waits for open responses before it runs the lifespan shutdown, so
    streams would otherwise hold shutdown until its graceful timeout.
    """
    # uvicorn offers no event to await: poll its flag, as sse-starlette does.
    while not _server_exiting():  # noqa: ASYNC110
        await asyncio.sleep(0.2)
    hub.close()


def _server_exiting() -> bool:
    if AppStatus.should_exit:
        return True
    # uvicorn's signal handler is a bound method of its Server.
    server = getattr(signal.getsignal(signal.SIGINT), "__self__", None)
    return bool(getattr(server, "should_exit", False))


def create_app_from_env() -> Starlette:
    return create_app(Settings.from_env())


def __getattr__(name: str) -> Starlette:
    if name == "app":
        return create_app_from_env()
    raise AttributeError(name)
