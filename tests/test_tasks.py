"""Periodic tasks (clean-up, heartbeats, the slow-reader check) log an outage once, not per run."""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace
from typing import cast

import pytest

from app.errors import BackendUnavailable
from app.runtime import Runtime
from app.tasks import every, start, stop
from tests.conftest import seconds


class Flaky:
    """A job that fails ``failures`` times with ``error``, then succeeds; ``done`` is set
    once it has succeeded ``successes`` times."""

    def __init__(self, error: Exception, failures: int, successes: int = 2) -> None:
        self.error = error
        self.failures = failures
        self.successes = successes
        self.done = asyncio.Event()

    async def __call__(self) -> None:
        if self.failures:
            self.failures -= 1
            raise self.error
        self.successes -= 1
        if self.successes <= 0:
            self.done.set()


async def run_until_done(job: Flaky) -> None:
    task = asyncio.create_task(every("clean-up", 0.001, job))
    try:
        await asyncio.wait_for(job.done.wait(), seconds(5))
    finally:
        task.cancel()


@pytest.mark.anyio
async def test_an_outage_is_one_warning_and_one_recovery(caplog: pytest.LogCaptureFixture) -> None:
    """Fifty failed runs while the backend is away log one line, and one more when it is back."""
    caplog.set_level(logging.INFO, logger="jobcast")
    await run_until_done(Flaky(BackendUnavailable("the job store is unavailable"), 50))
    records = [r for r in caplog.records if r.name == "jobcast"]
    assert [r.levelname for r in records] == ["WARNING", "INFO"]
    assert "clean-up paused: the job store is unavailable" in records[0].getMessage()
    assert records[0].exc_info is None
    assert "clean-up works again" in records[1].getMessage()


@pytest.mark.anyio
async def test_a_bug_is_logged_with_its_traceback_once_per_streak(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A periodic task that raises a bug logs its traceback once, not once a run."""
    caplog.set_level(logging.INFO, logger="jobcast")
    await run_until_done(Flaky(RuntimeError("a bug"), 20))
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert errors[0].exc_info is not None


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_heartbeats_go_to_one_part_of_the_streams_about_every_second() -> None:
    """With JOBS_HEARTBEAT=2, half the SSE streams get a heartbeat each second: each of
    them every two seconds, never all of them in one turn of the loop."""
    pings: list[tuple[int, int]] = []
    third = asyncio.Event()

    def ping(part: int, parts: int) -> None:
        pings.append((part, parts))
        if len(pings) == 3:
            third.set()

    settings = SimpleNamespace(heartbeat=2.0, terminal_ttl=60.0, send_timeout=60.0, stale_ttl=0)
    hub = SimpleNamespace(ping=ping)
    runtime = SimpleNamespace(settings=settings, hub=hub, store=SimpleNamespace(sweep=noop))
    running = start(cast(Runtime, runtime))
    try:
        await asyncio.wait_for(third.wait(), seconds(5))
    finally:
        await stop(running)
    assert pings == [(0, 2), (1, 2), (0, 2)]


async def noop() -> None:
    pass
