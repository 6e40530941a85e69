"""A real webhook receiver on loopback: an HTTP server (uvicorn, in the test's event
loop) that checks every delivery's signature with ``standardwebhooks``, records it,
and answers as the test says."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import uvicorn
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.conftest import seconds

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # a test secret, shared with the servers


@dataclass(frozen=True)
class Delivery:
    webhook_id: str
    verified: bool  # the signature checked out with SECRET
    body: dict[str, Any]
    answered: int  # the status this receiver answered
    path: str
    headers: dict[str, str]
    peer: tuple[str, int] | None  # the delivering connection's end: which connection it came on

    @property
    def job(self) -> dict[str, Any]:
        job: dict[str, Any] = self.body["data"]
        return job


@dataclass
class Receiver:
    """Records every request; answers ``status()`` (200 by default), after ``hold`` is set
    when a test holds requests open."""

    url: str = ""
    status: Callable[[], int] = lambda: 200
    hold: asyncio.Event | None = None
    answer: bytes = b""  # the body of every answer
    deliveries: list[Delivery] = field(default_factory=list)
    in_flight: int = 0
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)
    _verifier: Webhook = field(default_factory=lambda: Webhook(SECRET))

    def accepted(self) -> list[Delivery]:
        return [d for d in self.deliveries if 200 <= d.answered < 300]

    async def wait_for(self, condition: Callable[[Receiver], bool], within: float = 10) -> None:
        with anyio.fail_after(seconds(within)):
            while not condition(self):
                self._arrived.clear()
                await self._arrived.wait()

    async def handle(self, request: Request) -> Response:
        body = await request.body()
        headers = dict(request.headers)
        try:
            self._verifier.verify(body, headers)
            verified = True
        except WebhookVerificationError:
            verified = False
        self.in_flight += 1
        self._arrived.set()
        try:
            if self.hold is not None:
                await self.hold.wait()
            answered = self.status()
        finally:
            self.in_flight -= 1
        self.deliveries.append(
            Delivery(
                headers.get("webhook-id", ""),
                verified,
                json.loads(body),
                answered,
                request.url.path,
                headers,
                None if request.client is None else (request.client.host, request.client.port),
            )
        )
        self._arrived.set()
        if 300 <= answered < 400:  # a redirect, which deliveries must not follow
            return Response(status_code=answered, headers={"location": "/elsewhere"})
        return Response(self.answer, status_code=answered)


def failing_for(duration: float) -> Callable[[], int]:
    """A status function: 500 for ``duration`` seconds from the first delivery, then 200.

    From the first delivery, not from now: a busy machine may take that long to start
    the server and make the events, and the receiver must have failed some of them.
    """
    until: float | None = None

    def status() -> int:
        nonlocal until
        if until is None:
            until = time.monotonic() + duration
        return 500 if time.monotonic() < until else 200

    return status


async def serve(
    receiver: Receiver, tls: tuple[str, str] | None = None, host: str = "127.0.0.1"
) -> tuple[uvicorn.Server, asyncio.Task[None]]:
    """Serve ``receiver`` on a free port; over https with ``tls`` (its key and certificate
    files), at ``host`` in its URL."""
    app = Starlette(routes=[Route("/{path:path}", receiver.handle, methods=["POST"])])
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(512)  # connections wait in the backlog until uvicorn accepts them
    port = sock.getsockname()[1]
    keyfile, certfile = tls or (None, None)
    config = uvicorn.Config(
        app,
        log_level="warning",
        lifespan="off",
        timeout_graceful_shutdown=1,
        ssl_keyfile=keyfile,
        ssl_certfile=certfile,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    receiver.url = f"{'https' if tls else 'http'}://{host}:{port}/hooks"
    return server, task
