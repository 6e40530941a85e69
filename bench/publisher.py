"""The publisher: PATCH requests over raw keep-alive HTTP/1.1, each stamped with time_ns;
for the hooks section, whole job lives (create, PATCH, complete), each write timed; for
the output section, output appended to many jobs in turn, each append stamped likewise.

Raw asyncio streams rather than an HTTP client library: the publisher shares the client core with
the receiver, and must not be what limits the rate.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable

import orjson


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def request(self, method: str, path: str, body: bytes = b"") -> bytes:
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        self.writer.write(head.encode() + body)
        response_head = await self.reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in response_head.lower().split(b"\r\n"):
            if line.startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        data = await self.reader.readexactly(length)
        if not response_head.startswith((b"HTTP/1.1 2", b"HTTP/1.0 2")):
            raise RuntimeError(f"{method} {path}: {response_head[:40]!r} {data[:200]!r}")
        return data

    def close(self) -> None:
        self.writer.close()


def change(progress: int) -> bytes:
    """A job change carrying the send time for the receiver's latency sample."""
    return orjson.dumps({"progress": progress % 100, "metadata": {"bench_t": time.time_ns()}})


NEW_JOB = b'{"jobType":"generic","message":"bench"}'
# An output chunk as a token streamer appends it: 18 characters of text, 20 bytes of JSON.
TOKEN = b'{"data":"tok 0123456789abcd","kind":"token"}'


def append(batch: int) -> bytes:
    """An output append of ``batch`` chunks. The first carries the send time instead of
    text (``{"bench_t":<ns>}``, 31 bytes of JSON) for the receiver's latency sample."""
    stamp = b'{"data":{"bench_t":%d},"kind":"token"}' % time.time_ns()
    return b'{"chunks":[' + stamp + _tokens(batch - 1) + b"]}"


@functools.cache
def _tokens(count: int) -> bytes:
    return b"".join(b"," + TOKEN for _ in range(count))


async def create_job(port: int) -> str:
    conn = await Connection.open(port)
    try:
        body = await conn.request("POST", "/api/jobs", NEW_JOB)
    finally:
        conn.close()
    return str(orjson.loads(body)["jobId"])


async def flood(port: int, job_id: str, stop: asyncio.Event, *, limit: int) -> int:
    """PATCH as fast as the server answers, one at a time, until ``stop`` (or ``limit``)."""
    conn = await Connection.open(port)
    sent = 0
    try:
        while not stop.is_set() and sent < limit:
            await conn.request("PATCH", f"/api/jobs/{job_id}", change(sent))
            sent += 1
    finally:
        conn.close()
    return sent


async def paced(port: int, job_id: str, rate: float, stop: asyncio.Event, *, limit: int) -> int:
    """PATCH ``rate`` times a second on a fixed schedule (no drift), until ``stop``."""
    return await rotate(port, "PATCH", [f"/api/jobs/{job_id}"], change, rate, stop, limit=limit)


async def rotate(
    port: int,
    method: str,
    paths: list[str],
    body: Callable[[int], bytes],
    rate: float,
    stop: asyncio.Event,
    *,
    limit: int,
    phase: float = 0.0,
) -> int:
    """``rate`` requests a second on one connection, to ``paths`` in turn, on a fixed
    schedule (no drift) that starts ``phase`` seconds after the connection opens;
    ``body(n)`` is the n-th request's body. Until ``stop`` (or ``limit``)."""
    conn = await Connection.open(port)
    start = time.monotonic() + phase
    sent = 0
    try:
        while not stop.is_set() and sent < limit:
            delay = start + sent / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await conn.request(method, paths[sent % len(paths)], body(sent))
            sent += 1
    finally:
        conn.close()
    return sent


async def cycles(
    port: int,
    rate: float,
    stop: asyncio.Event,
    samples: list[tuple[str, int, float]],
    *,
    limit: int,
) -> int:
    """Jobs through their life, ``rate`` a second on a fixed schedule (no drift): each a
    create, a PATCH and a complete, one after the other. Every write's kind, send time
    (``time.monotonic_ns``) and latency in ms go to ``samples``. Returns the jobs run."""
    conn = await Connection.open(port)
    start = time.monotonic()
    done = 0
    try:
        while not stop.is_set() and done < limit:
            delay = start + done / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            sent = time.monotonic_ns()
            body = await conn.request("POST", "/api/jobs", NEW_JOB)
            samples.append(("create", sent, (time.monotonic_ns() - sent) / 1e6))
            job = orjson.loads(body)["jobId"]
            for kind, method, path, payload in (
                ("patch", "PATCH", f"/api/jobs/{job}", change(done)),
                ("complete", "POST", f"/api/jobs/{job}/complete", b"{}"),
            ):
                sent = time.monotonic_ns()
                await conn.request(method, path, payload)
                samples.append((kind, sent, (time.monotonic_ns() - sent) / 1e6))
            done += 1
    finally:
        conn.close()
    return done
