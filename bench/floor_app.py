"""The least an ASGI app can hold per idle connection under uvicorn: the memory floor.

A GET gets an SSE response started and then waits for the client to
leave; a WebSocket is accepted and read until it closes. No store, no queue,
no task of its own: what an idle connection costs here is what uvicorn (and,
for WebSockets, its websockets implementation) spends before any application
code runs. Serve with: uvicorn bench.floor_app:app
"""

from __future__ import annotations

from starlette.types import Receive, Scope, Send

SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
    elif scope["type"] == "http" and scope["method"] != "GET":  # the benchmark's warm-up
        headers = [(b"content-type", b"application/json"), (b"content-length", b"2")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"{}"})
    elif scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
        await send({"type": "http.response.body", "body": b": hi\n\n", "more_body": True})
        while (await receive())["type"] != "http.disconnect":
            pass
    else:
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        while (await receive())["type"] != "websocket.disconnect":
            pass
