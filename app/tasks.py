"""The running app's background work, each job run periodically by :func:`every`:
the clean-up sweep, the SSE heartbeats, the check that cuts slow readers, and
(with JOBS_STALE_TTL) the one that fails jobs nobody touches any more."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable, Callable

from app.errors import BackendUnavailable
from app.runtime import Runtime
from app.streams.hub import HEARTBEAT_PARTS

logger = logging.getLogger("jobcast")


def start(runtime: Runtime) -> list[asyncio.Task[None]]:
    """Start every periodic job of ``runtime``; the lifespan cancels them."""
    settings, hub = runtime.settings, runtime.hub

    # A part of the SSE streams about every second, each stream every JOBS_HEARTBEAT.
    parts = max(1, min(HEARTBEAT_PARTS, int(settings.heartbeat)))
    turns = itertools.count()

    async def heartbeat() -> None:
        hub.ping(next(turns) % parts, parts)

    async def cut_stalled() -> None:
        hub.cut_stalled(time.monotonic(), settings.send_timeout)

    async def expire_stale() -> None:
        await runtime.service.expire_stale(settings.stale_ttl)

    # A terminal job is removed at most a quarter of its TTL late (and at most a second).
    sweep_every = min(1.0, max(0.05, settings.terminal_ttl / 4))
    # A blocked send is cut at most a quarter of the send timeout late.
    stall_every = min(1.0, max(0.01, settings.send_timeout / 4))
    running = [
        asyncio.create_task(every("clean-up", sweep_every, runtime.store.sweep)),
        asyncio.create_task(every("heartbeat", settings.heartbeat / parts, heartbeat)),
        asyncio.create_task(every("slow-reader check", stall_every, cut_stalled)),
    ]
    if settings.stale_ttl:
        # A stale job fails at most a quarter of JOBS_STALE_TTL late (and at most 10 s).
        stale_every = min(10.0, max(0.05, settings.stale_ttl / 4))
        running.append(asyncio.create_task(every("stale-job check", stale_every, expire_stale)))
    return running


async def stop(tasks: list[asyncio.Task[None]]) -> None:
    # Python 3.11's wait_for (inside redis-py) can swallow one cancellation:
    # cancel until every task is really done.
    while pending := [task for task in tasks if not task.done()]:
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=0.1)


async def every(name: str, seconds: float, job: Callable[[], Awaitable[None]]) -> None:
    """Run ``job`` every ``seconds``. A failure is logged once, when a run of failures
    begins (an outage of the backend says so in one line; anything else is a bug and
    gets its traceback), and once more when the job succeeds again."""
    failing_since: float | None = None
    while True:
        await asyncio.sleep(seconds)
        try:
            await job()
        except BackendUnavailable as exc:
            if failing_since is None:
                failing_since = time.monotonic()
                logger.warning("%s paused: %s; retrying every %.1fs", name, exc, seconds)
        except Exception:
            if failing_since is None:
                failing_since = time.monotonic()
                logger.exception("%s failed; retrying every %.1fs", name, seconds)
        else:
            if failing_since is not None:
                down = time.monotonic() - failing_since
                logger.info("%s works again after %.1fs", name, down)
                failing_since = None
