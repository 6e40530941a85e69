"""The one middleware every request passes: who may reach the routes (peer,
Host, Origin), security headers, timing, and errors answered as problem+json.

One ASGI layer rather than five (Starlette's error and exception middlewares
among them): every layer costs each request a coroutine and each message a
send wrapper, which a poll is cheap enough to feel, and every open stream
holds each layer's frames and closures for its whole life. The rules live
with their subjects (:mod:`app.edge.reach`, :mod:`app.edge.origins`,
:mod:`app.edge.headers`, :mod:`app.metrics`, :mod:`app.problems`); this only
applies them.

A client that leaves while its request body is still arriving is no error
of the server's: nothing is logged and nothing can be answered; the
latency histogram counts it as status 499 (nginx's "client closed request").

Streams write their body chunks and frames with the send stored in the scope
under :data:`DIRECT_SEND`: the server's own, below every layer (each only
ever looks at a response's start). A stream's start still passes
every layer, so it gets the same headers and timing as any response.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable

from starlette.requests import ClientDisconnect, Request
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.edge.headers import security_headers
from app.edge.origins import OriginPolicy
from app.edge.reach import Reach
from app.metrics import Metrics
from app.problems import problem_answer, refuse

DIRECT_SEND = "jobcast.send"
_STARTS = ("http.response.start", "websocket.http.response.start")
CLIENT_CLOSED = 499


class Edge:
    def __init__(self, app: ASGIApp, reach: Reach, origins: OriginPolicy, metrics: Metrics) -> None:
        self.app = app
        self.reach = reach
        self.origins = origins
        self.metrics = metrics

    @classmethod
    def around(
        cls, reach: Reach, origins: OriginPolicy, metrics: Metrics
    ) -> Callable[[ASGIApp], Edge]:
        """What wraps an app in an edge with these rules."""
        return functools.partial(cls, reach=reach, origins=origins, metrics=metrics)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        edge_send = EdgeSend(self.metrics, scope, send)
        refusal = self.reach.refusal(scope) or self.origins.refusal(scope)
        if refusal is not None:
            await refuse(scope, receive, edge_send, refusal)
            return
        scope[DIRECT_SEND] = send
        try:
            await self.app(scope, receive, edge_send)
        except ClientDisconnect:
            if not edge_send.responded:
                edge_send.observe(CLIENT_CLOSED)
        except Exception as exc:
            if scope["type"] != "http" or edge_send.responded:
                raise  # too late to answer: the server ends the response or socket
            # A bug is logged there, once, with its request; the client gets a 500.
            await problem_answer(Request(scope, receive), exc)(scope, receive, edge_send)
        finally:
            # The server's send is bound to its request cycle, which holds the scope:
            # left in place, that cycle would make every request's objects wait for
            # the cyclic collector instead of being freed when the request ends.
            del scope[DIRECT_SEND]


class EdgeSend:
    """The send every layer below the edge sees: it completes a response's start.

    An object with slots rather than a closure: a stream holds it for its whole
    life, and a closure's cells would cost every open connection more memory.
    """

    __slots__ = ("extra", "metrics", "responded", "scope", "send", "started")

    def __init__(self, metrics: Metrics, scope: Scope, send: Send) -> None:
        self.metrics = metrics
        self.scope = scope
        self.send = send
        self.started = time.perf_counter()
        self.extra = security_headers(scope)
        self.responded = False  # a response (or a WebSocket denial) has started

    async def __call__(self, message: Message) -> None:
        if message["type"] in _STARTS:
            self.responded = True
            message["headers"] = [*message.get("headers", ()), *self.extra]
            self.observe(message["status"])
        await self.send(message)

    def observe(self, status: int) -> None:
        """Count an HTTP request's answer (or its absence) in the latency histogram."""
        scope = self.scope
        if scope["type"] == "http":
            route: BaseRoute | None = scope.get("route")
            self.metrics.observe_request(
                scope["method"],
                getattr(route, "path", "unmatched"),
                status,
                time.perf_counter() - self.started,
            )
