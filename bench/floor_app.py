"""uvicorn's floor: the least an ASGI app can hold per connection, and spend per frame.

Memory: a GET gets an SSE response started and then waits for the client to
leave; a WebSocket is accepted and read until it closes. No store, no queue,
no task of its own: what an idle connection costs here is what uvicorn (and,
for WebSockets, its websockets implementation) spends before any application
code runs.

WebSocket fan-out: a PATCH's body, wrapped once as a job message, is sent to
every open WebSocket by the request itself, one ``send`` after another: no
task per subscriber, no buffer, no encoding per subscriber. What a message
costs here is uvicorn's own per-frame send. Serve with:
uvicorn bench.floor_app:app
"""

from __future__ import annotations

import contextlib

from starlette.types import Receive, Scope, Send

SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
sockets: set[Send] = set()


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
    elif scope["type"] == "http" and scope["method"] != "GET":
        await publish(receive)
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
        sockets.add(send)
        try:
            while (await receive())["type"] != "websocket.disconnect":
                pass
        finally:
            sockets.discard(send)


async def publish(receive: Receive) -> None:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    frame = {"type": "websocket.send", "text": '{"type":"job","job":' + body.decode() + "}"}
    for socket_send in list(sockets):
        # A client that left raises; its own receive loop then forgets it.
        with contextlib.suppress(OSError):
            await socket_send(frame)
