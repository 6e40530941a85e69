"""Fixtures of the store tests: real redis-server processes, a unique key prefix per test.

The Redis legs start their own ``redis-server`` (see :mod:`tests.store.redis_server`):
missing, it fails the test under CI (``CI=true``) and skips it elsewhere, saying
what to install. The memory legs need nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from app.store import JobStore
from app.store.memory import MemoryStore
from app.store.redis import RedisStore
from tests.conftest import seconds
from tests.store.harness import Clock, Harness, Recorder, contract_settings
from tests.store.redis_server import RedisServer


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def shared_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server for the tests that never stop it (each uses its own prefix)."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_server(shared_redis: RedisServer) -> str:
    """The URL of a running redis-server."""
    return shared_redis.url


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, which it may stop and start again."""
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def raw(redis_server: str) -> AsyncIterator[Redis]:
    """A client of the test's Redis that answers in text."""
    client = Redis.from_url(redis_server, decode_responses=True)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def deaf(redis_server: str, redis_prefix: str) -> AsyncIterator[Harness]:
    """A Redis store whose feed listener never runs: only the test's own calls reach
    Redis, and it hears nothing of other processes' changes."""
    settings = contract_settings(backend="redis", redis_url=redis_server, redis_prefix=redis_prefix)
    clock = Clock()
    store = RedisStore(settings, Recorder(), clock=clock)
    try:
        yield Harness(store, Recorder(), clock)
    finally:
        await store.aclose()


@pytest.fixture
def redis_prefix() -> str:
    """Keys of this test only, so tests sharing a server cannot see each other."""
    return f"test-{uuid.uuid4().hex[:12]}:"


@pytest.fixture(params=["memory", "redis"])
async def harness(request: pytest.FixtureRequest, redis_prefix: str) -> AsyncIterator[Harness]:
    """A fresh store of each backend, with a recording sink and a clock a test can move."""
    sink, clock = Recorder(), Clock()
    store: JobStore
    if request.param == "memory":
        store = MemoryStore(
            contract_settings(), sink.publish, clock=clock, publish_output=sink.publish_output
        )
    else:
        url: str = request.getfixturevalue("redis_server")
        # Some contract tests race twenty writers, which a busy machine (three test
        # processes on two cores) can hold past a 1 s deadline; the deadline has tests
        # of its own, with stores of their own.
        settings = contract_settings(
            backend="redis", redis_url=url, redis_prefix=redis_prefix, redis_timeout=seconds(10)
        )
        store = RedisStore(settings, sink, clock=clock)
    await store.start()
    try:
        yield Harness(store, sink, clock)
    finally:
        await store.aclose()
