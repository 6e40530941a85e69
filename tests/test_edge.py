"""The edge hands streams the server's own send, and leaves no garbage behind."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator

import pytest
from starlette.types import Message, Receive, Scope, Send

from app.edge import DIRECT_SEND, Edge
from app.edge.origins import OriginPolicy
from app.edge.reach import Reach
from app.metrics import Metrics
from app.settings import Settings


class ServerCycle:
    """What a server's request cycle looks like to an app: it holds the scope,
    and the send it passes is one of its bound methods."""

    def __init__(self) -> None:
        self.scope: Scope = {
            "type": "http",
            "method": "GET",
            "path": "/api/jobs/job_x",
            "headers": [(b"host", b"127.0.0.1")],
        }
        self.sent: list[Message] = []

    async def receive(self) -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(self, message: Message) -> None:
        self.sent.append(message)


async def answer(scope: Scope, receive: Receive, send: Send) -> None:
    assert scope[DIRECT_SEND].__self__.scope is scope  # the server's send, not a wrapper
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await scope[DIRECT_SEND]({"type": "http.response.body", "body": b"{}"})


@pytest.fixture
def collector_off() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def test_a_request_through_the_edge_leaves_no_reference_cycle(collector_off: None) -> None:
    edge = Edge(answer, Reach(Settings()), OriginPolicy(()), Metrics())

    async def serve() -> ServerCycle:
        cycle = ServerCycle()
        await edge(cycle.scope, cycle.receive, cycle.send)
        return cycle

    cycle = asyncio.run(serve())
    assert [m["type"] for m in cycle.sent] == ["http.response.start", "http.response.body"]
    assert (b"x-content-type-options", b"nosniff") in cycle.sent[0]["headers"]
    assert DIRECT_SEND not in cycle.scope
    del cycle
    # Scope -> server send -> server cycle -> scope would leave every request's
    # objects to the cyclic collector instead of freeing them at once.
    assert gc.collect() == 0
