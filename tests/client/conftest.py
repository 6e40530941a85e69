"""Fixtures of the client's tests.

The real server comes from the end-to-end suite (``tests/e2e/conftest.py``):
``server(**settings)`` starts ``python -m app`` on a free port; ``shared_server``
hands tests that touch only their own jobs one such server per test process. Its report
hook comes along, so that a passing test still fails when the server logged
a traceback. The fakes for what a real server cannot be made to do on
demand (lose an answer, cut a stream) are in :mod:`tests.client.fakes`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.e2e.conftest import (
    _shared_servers as _shared_servers,
    anyio_backend as anyio_backend,
    pytest_runtest_makereport as pytest_runtest_makereport,
    server as server,
    shared_server as shared_server,
)

from .fakes import CutProxy, FakeServer, Script


@pytest.fixture
def fake() -> Iterator[Callable[..., FakeServer]]:
    """Start a :class:`FakeServer`: ``fake(script, upstream=url)``; closed at teardown."""
    started: list[FakeServer] = []

    def start(script: Script, upstream: str | None = None) -> FakeServer:
        started.append(FakeServer(script, upstream))
        return started[-1]

    yield start
    for running in started:
        running.close()


@pytest.fixture
def proxy() -> Iterator[Callable[[int], CutProxy]]:
    """Start a :class:`CutProxy` in front of a port; closed at teardown."""
    started: list[CutProxy] = []

    def start(port: int) -> CutProxy:
        started.append(CutProxy(port))
        return started[-1]

    yield start
    for running in started:
        running.close()
