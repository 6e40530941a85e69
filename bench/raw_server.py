"""The limit: a raw uvloop Protocol server that writes pre-encoded SSE bytes to S sockets.

``GET /events`` answers the SSE head and joins the subscribers; any request with a
body (the publisher's ``PATCH /api/jobs/{id}``) is framed once into a job-sized SSE
event and written to every subscriber, then answered ``200``. No ASGI, no queues,
no tasks: what this Python can deliver through the kernel at best.

usage: python -m bench.raw_server PORT
"""

from __future__ import annotations

import asyncio
import sys
from typing import cast

import uvloop

SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
    b"cache-control: no-cache\r\ntransfer-encoding: identity\r\n\r\nretry: 2000\n\n"
)
OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: application/json\r\n\r\n{}"
# The fields a Jobcast job carries around the publisher's change, so the frame is job-sized.
JOB_HEAD = (
    b'event: job\ndata: {"jobId":"job_raw0000000000000000000","jobType":"generic",'
    b'"status":"running","message":"","progress":50,'
    b'"createdAt":"2026-11-28T15:00:29.866Z","updatedAt":"2026-11-28T15:00:29.866Z",'
    b'"version":1,"change":'
)


class Hub:
    def __init__(self) -> None:
        self.subscribers: set[asyncio.Transport] = set()
        self.seq = 0

    def publish(self, body: bytes) -> None:
        self.seq += 1
        frame = b"%s%s}\nid: %d\n\n" % (JOB_HEAD, body, self.seq)
        for transport in self.subscribers:
            transport.write(frame)


class Http(asyncio.Protocol):
    """Just enough HTTP/1.1 for the benchmark's own clients (keep-alive, Content-Length)."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.hub.subscribers.discard(self.transport)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while self._one_request():
            pass

    def _one_request(self) -> bool:
        head_end = self.buffer.find(b"\r\n\r\n")
        if head_end < 0 or self.transport is None:
            return False
        head = self.buffer[:head_end].lower()
        length = 0
        marker = head.find(b"content-length:")
        if marker >= 0:
            length = int(head[marker + 15 :].split(b"\r\n", 1)[0])
        end = head_end + 4 + length
        if len(self.buffer) < end:
            return False
        body = self.buffer[head_end + 4 : end]
        self.buffer = self.buffer[end:]
        if head.startswith(b"get /events"):
            self.transport.write(SSE_HEAD)
            self.hub.subscribers.add(self.transport)
        else:
            self.hub.publish(body)
            self.transport.write(OK)
        return True


async def serve(port: int) -> None:
    hub = Hub()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Http(hub), "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(serve(int(sys.argv[1])))
