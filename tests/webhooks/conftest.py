"""Fixtures of the webhook tests: a real receiver, real servers, a real redis-server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.e2e.conftest import (
    anyio_backend as anyio_backend,
    pytest_runtest_makereport as pytest_runtest_makereport,
    server as server,
)
from tests.store.conftest import (
    private_redis as private_redis,
    redis_prefix as redis_prefix,
    redis_server as redis_server,
    shared_redis as shared_redis,
)

from .receiver import Receiver, serve


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """A receiver listening on a free loopback port (``receiver.url``)."""
    hooks = Receiver()
    server, task = await serve(hooks)
    try:
        yield hooks
    finally:
        if hooks.hold is not None:
            hooks.hold.set()
        server.should_exit = True
        await task
