"""The obvious design a user would write: sse-starlette, one asyncio.Queue per subscriber.

Each subscriber encodes the job dict itself. ``/api/jobs/ws`` is the same design over
a Starlette WebSocket: read the subscribe frame, then one queue and one
``send_text(json.dumps(...))`` per event, a receive loop noticing the client leave.
``GET /api/jobs/{jobId}`` is the bare Starlette reference for polling: it returns
pre-encoded bytes, no store, no model.
Serve with: uvicorn bench.naive_app:app
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from sse_starlette import EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

queues: set[asyncio.Queue[dict[str, Any]]] = set()
jobs: dict[str, dict[str, Any]] = {}
# Set by the benchmark (POST /poll-body) to the exact bytes Jobcast answers a GET with.
poll_body = [b"{}"]


async def events(_: Request) -> EventSourceResponse:
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    queues.add(queue)

    async def stream() -> AsyncIterator[dict[str, str]]:
        try:
            while True:
                job = await queue.get()
                yield {"event": "job", "data": json.dumps(job), "id": str(job["version"])}
        finally:
            queues.discard(queue)

    return EventSourceResponse(stream())


async def ws_events(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.receive_text()  # the subscribe frame: everything, whatever it asks
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    queues.add(queue)

    async def send_events() -> None:
        while True:
            job = await queue.get()
            await websocket.send_text(json.dumps({"type": "job", "job": job}))

    sender = asyncio.create_task(send_events())
    try:
        while True:  # until the client leaves
            await websocket.receive_text()
    except WebSocketDisconnect:
        pass
    finally:
        queues.discard(queue)
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)  # it may have failed first


def new_job(job_id: str) -> dict[str, Any]:
    """The fields a Jobcast job carries, so each event is job-sized."""
    stamp = "2026-11-28T15:00:29.866Z"
    return {
        "jobId": job_id,
        "jobType": "generic",
        "status": "running",
        "message": "bench",
        "progress": 0,
        "metadata": {},
        "createdAt": stamp,
        "updatedAt": stamp,
        "version": 0,
    }


async def update(request: Request) -> JSONResponse:
    job_id = request.path_params["jobId"]
    job = jobs.setdefault(job_id, new_job(job_id))
    job.update(await request.json())
    job["version"] += 1
    for queue in queues:
        queue.put_nowait(dict(job))
    return JSONResponse(job)


async def read(_: Request) -> Response:
    return Response(poll_body[0], media_type="application/json")


async def set_poll_body(request: Request) -> Response:
    poll_body[0] = await request.body()
    return Response(status_code=204)


app = Starlette(
    routes=[
        Route("/events", events),
        Route("/api/jobs/{jobId}", update, methods=["PATCH"]),
        Route("/api/jobs/{jobId}", read, methods=["GET"]),
        Route("/poll-body", set_poll_body, methods=["POST"]),
        WebSocketRoute("/api/jobs/ws", ws_events),
    ]
)
