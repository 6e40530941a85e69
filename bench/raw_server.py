"""The limit: a raw uvloop Protocol server that writes pre-encoded bytes to S sockets.

``GET /events`` answers the SSE head and joins the SSE subscribers; ``GET
/api/jobs/ws`` with a WebSocket upgrade answers ``101`` and joins the WebSocket
subscribers (whatever they send afterwards is ignored). Any request with a body
(the publisher's ``PATCH /api/jobs/{id}``) is framed once into a job-sized SSE
event and once into a job-sized WebSocket text frame, written to every subscriber
of each kind, then answered ``200``. No ASGI, no queues, no tasks: what this
Python can deliver through the kernel at best.

usage: python -m bench.raw_server PORT
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import struct
import sys
from typing import cast

import uvloop

SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
    b"cache-control: no-cache\r\ntransfer-encoding: identity\r\n\r\nretry: 2000\n\n"
)
OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: application/json\r\n\r\n{}"
WS_HEAD = (
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: %s\r\n\r\n"
)
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455's constant
WS_KEY = re.compile(rb"\r\nsec-websocket-key:[ \t]*(\S+)", re.IGNORECASE)
# The fields a Jobcast job carries around the publisher's change, so the frame is job-sized.
JOB_FIELDS = (
    b'{"jobId":"job_raw0000000000000000000","jobType":"generic",'
    b'"status":"running","message":"","progress":50,'
    b'"createdAt":"2026-11-28T15:00:29.866Z","updatedAt":"2026-11-28T15:00:29.866Z",'
    b'"version":1,"change":'
)


def ws_text_frame(payload: bytes) -> bytes:
    """One final, unmasked text frame (server to client)."""
    size = len(payload)
    if size < 126:
        return struct.pack("!BB", 0x81, size) + payload
    if size < 1 << 16:
        return struct.pack("!BBH", 0x81, 126, size) + payload
    return struct.pack("!BBQ", 0x81, 127, size) + payload


def ws_accept(key: bytes) -> bytes:
    return base64.b64encode(hashlib.sha1(key + WS_GUID).digest())


class Hub:
    def __init__(self) -> None:
        self.sse: set[asyncio.Transport] = set()
        self.ws: set[asyncio.Transport] = set()
        self.seq = 0

    def publish(self, body: bytes) -> None:
        self.seq += 1
        job = b"%s%s}" % (JOB_FIELDS, body)
        event = b"event: job\ndata: %s\nid: %d\n\n" % (job, self.seq)
        for transport in self.sse:
            transport.write(event)
        frame = ws_text_frame(b'{"type":"job","job":%s}' % job)
        for transport in self.ws:
            transport.write(frame)

    def leave(self, transport: asyncio.Transport) -> None:
        self.sse.discard(transport)
        self.ws.discard(transport)


class Http(asyncio.Protocol):
    """Just enough HTTP/1.1 for the benchmark's own clients (keep-alive, Content-Length)."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.upgraded = False  # a WebSocket now: its client frames are not read

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.hub.leave(self.transport)

    def data_received(self, data: bytes) -> None:
        if self.upgraded:
            return
        self.buffer += data
        while self._one_request():
            pass

    def _one_request(self) -> bool:
        head_end = self.buffer.find(b"\r\n\r\n")
        if head_end < 0 or self.transport is None:
            return False
        raw_head = self.buffer[:head_end]
        head = raw_head.lower()
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
            self.hub.sse.add(self.transport)
        elif head.startswith(b"get /api/jobs/ws") and (key := WS_KEY.search(raw_head)):
            self.transport.write(WS_HEAD % ws_accept(key.group(1)))
            self.hub.ws.add(self.transport)
            self.upgraded = True
            self.buffer = b""
            return False
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
