"""The application: ``create_app(settings)``, its lifespan, and how its routes are assembled.

Building an app changes nothing outside it (tests build many in one
process); serving it is :mod:`app.serve`'s. ``app`` itself is built on first
access from the environment, so ``uvicorn app.main:app`` works and
importing this module reads nothing.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp

from app import api, library, probes, tasks
from app.auth import Guard
from app.demo import Demo
from app.edge import Edge
from app.edge.origins import OriginPolicy
from app.edge.reach import Reach
from app.metrics import Metrics
from app.openapi import Operation, openapi_document
from app.problems import problem
from app.runtime import Runtime
from app.service import JobService
from app.settings import Settings
from app.store import open_store
from app.streams import sse
from app.streams.hub import Hub
from app.streams.limits import StreamSlots
from app.streams.ws import SocketRoute, not_a_socket
from app.tokens import Tokens

if TYPE_CHECKING:
    from app.webhooks.running import Webhooks

logger = logging.getLogger("jobcast")

# An installed package carries the page inside it; a checkout keeps it beside the package.
_HERE = Path(__file__).resolve().parent
STATIC = _HERE / "static" if (_HERE / "static").is_dir() else _HERE.parent / "static"
VERSION = "0.1.0"

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


def create_app(settings: Settings | None = None) -> Jobcast:
    settings = settings or Settings()
    metrics = Metrics()
    hub = Hub()
    demo = Demo(enabled=settings.demo_enabled, offered=not settings.api_keys)
    guard = Guard(settings, Tokens(settings))
    streams = StreamSlots(settings.max_streams, settings.snapshot_rate)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[dict[str, Runtime]]:
        if not settings.protected and settings.allow_anonymous:
            logger.warning(
                "JOBS_ALLOW_ANONYMOUS=1: serving on %s WITHOUT AUTHENTICATION; anyone who can "
                "reach this port can read and change every job. Set JOBS_API_KEY to protect it.",
                settings.host,
            )
        webhooks = _webhooks(settings, metrics)
        store = open_store(settings, hub if webhooks is None else webhooks.watching(hub))
        await store.start()
        runtime = Runtime(settings, JobService(store, metrics, settings), hub, guard, streams)
        previous = library.install(runtime.service)
        running = tasks.start(runtime)
        if webhooks is not None:
            webhooks.start()
        try:
            yield runtime.state()
        finally:
            hub.close()
            await tasks.stop(running)
            if webhooks is not None:
                await webhooks.aclose()
            await demo.aclose()
            library.install(previous)
            await store.aclose()

    ordered = sorted(_operations(), key=lambda pair: _route_rank(pair[0]))
    routes: list[BaseRoute] = [
        WebSocketRoute("/api/jobs/ws", SocketRoute()),
        Route("/api/jobs/ws", not_a_socket, methods=["GET"]),
        *(
            Route(
                op.path,
                api.key_required(endpoint) if op.auth == "key" else endpoint,
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
        # A path with a slash too many or too few is a 404 like any other: Starlette's
        # redirect would name whatever host the request did, before any check.
        self.router.redirect_slashes = False

    def build_middleware_stack(self) -> ASGIApp:
        app = self._edge(self.router)
        for cls, args, kwargs in reversed(self.user_middleware):
            app = cls(app, *args, **kwargs)
        return app


def _webhooks(settings: Settings, metrics: Metrics) -> Webhooks | None:
    """The webhook deliveries the settings ask for; their libraries are imported only then."""
    if not settings.webhooks:
        return None
    from app.webhooks.running import Webhooks

    return Webhooks(settings, metrics)


def _cors(settings: Settings) -> list[Middleware]:
    cors = []
    if settings.cors_origins:
        cors.append(
            Middleware(
                ProblemCORSMiddleware,
                allow_origins=settings.cors_origins,
                allow_methods=["GET", "POST", "PATCH", "DELETE"],
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
        Route(route.path, api.key_required(route.endpoint), methods=route.methods)
        if isinstance(route, Route) and (route.methods or set()) - {"GET", "HEAD"}
        else route
        for route in routes
    ]


async def index(_: Request) -> Response:
    return FileResponse(STATIC / "index.html")


async def openapi(_: Request) -> Response:
    return JSONResponse(_openapi_document())


def _operations() -> list[tuple[Operation, Any]]:
    """Every documented route, with its endpoint."""
    return [
        *api.ROUTES,
        (sse.ALL_EVENTS, sse.StreamRoute(sse.all_events)),
        (sse.JOB_EVENTS, sse.StreamRoute(sse.job_events)),
        *probes.ROUTES,
        (OPENAPI, openapi),
        (PAGE, index),
    ]


@functools.cache
def _openapi_document() -> dict[str, Any]:
    # Built when first asked for, once per process: it is the code's, the same for every
    # app whatever its settings, and building it is most of what creating an app costs.
    return openapi_document([op for op, _ in _operations()], title="Jobcast", version=VERSION)


def create_app_from_env() -> Starlette:
    return create_app(Settings.from_env())


def __getattr__(name: str) -> Starlette:
    if name == "app":
        return create_app_from_env()
    raise AttributeError(name)


class ProblemCORSMiddleware(CORSMiddleware):
    """Starlette's CORS, whose refused preflights say what to fix as problem+json, as
    every other refusal does (its own are plain text: "Disallowed CORS origin")."""

    def preflight_response(self, request_headers: Headers) -> Response:
        answer = super().preflight_response(request_headers)
        if answer.status_code < 400:
            return answer
        refused = bytes(answer.body).decode().removeprefix("Disallowed CORS ")
        kept = {
            name: value
            for name, value in answer.headers.items()
            if name.startswith("access-control-") or name == "vary"
        }
        detail = (
            f"CORS preflight refused ({refused}): the origins allowed are JOBS_CORS_ORIGINS, "
            "the methods GET, POST, PATCH and DELETE"
        )
        return problem(answer.status_code, detail, headers=kept)
