"""Stand-ins for what the server writes live events to below ASGI: uvicorn's request
cycle of an SSE response, and its WebSocket protocol. Each records what reached its
socket, and can be made to fail or to stop taking writes as the real one does."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import cast

from websockets.frames import Frame
from websockets.protocol import Protocol, Side, State


class Response:
    """What the hub and ``streaming.write_now`` read of uvicorn's request cycle (its flow
    control, its state, its transport). ``chunks`` is what reached the socket."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.flow = SimpleNamespace(write_paused=False)
        self.disconnected = self.response_complete = False
        self.transport = SimpleNamespace(write=self.write)
        self.fail: BaseException | None = None

    def write(self, chunk: bytes) -> None:
        if self.fail is not None:
            raise self.fail
        self.chunks.append(chunk)

    def body(self) -> bytes:
        """What was written, de-chunked."""
        body = b""
        for chunk in self.chunks:
            size, _, rest = chunk.partition(b"\r\n")
            assert rest[int(size, 16) :] == b"\r\n"
            body += rest[: int(size, 16)]
        return body


class WebSocketProtocol:
    """What the hub and ``streaming.send_now`` read of uvicorn's websockets-sansio
    protocol (its flow control, its state, its transport). ``writes`` is what reached
    the socket, ``frames`` the same read back as a client reads it."""

    def __init__(self) -> None:
        self.writable = asyncio.Event()
        self.writable.set()
        self.disconnected = self.close_sent = False
        self.conn = SimpleNamespace(state=State.OPEN)
        self.writes: list[bytes] = []
        self.transport = SimpleNamespace(write=self.write)
        self.fail: BaseException | None = None

    def write(self, data: bytes) -> None:
        if self.fail is not None:
            raise self.fail
        self.writes.append(data)

    @property
    def frames(self) -> list[str]:
        client = Protocol(Side.CLIENT)
        for data in self.writes:
            client.receive_data(data)
        return [bytes(cast(Frame, frame).data).decode() for frame in client.events_received()]
