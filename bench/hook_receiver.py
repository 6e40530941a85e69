"""A webhook receiver for the ``hooks`` section: slow, failing or fast, by path.

``POST /hold/{seconds}`` reads the delivery and answers ``200`` that many seconds
later (a slow receiver); ``POST /fail`` answers ``500`` at once (a receiver that is
down, so every delivery is retried); ``POST /ok`` answers ``200`` at once.
``GET /counts`` answers the requests received so far, by path, as JSON. A bare
ASGI app, so what it costs is uvicorn's. Serve with:
uvicorn bench.hook_receiver:app
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter

from starlette.types import Receive, Scope, Send

counts: Counter[str] = Counter()


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    path: str = scope["path"]
    if scope["method"] == "GET" and path == "/counts":
        await _answer(send, 200, json.dumps(counts).encode())
        return
    while (await receive()).get("more_body"):  # the delivery's body, read and dropped
        pass
    counts[path] += 1
    if path.startswith("/hold/"):
        await asyncio.sleep(float(path.removeprefix("/hold/")))
        await _answer(send, 200, b"")
    elif path == "/fail":
        await _answer(send, 500, b"")
    else:
        await _answer(send, 200, b"")


async def _answer(send: Send, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
