"""Test helpers shared by the store tests: a recording sink, a movable clock, a store harness."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio

from app import jobs
from app.models import CancelRequest, Completion, Failure, Job, JobType, JobUpdate, NewJob
from app.settings import Settings
from app.store import Idempotency, JobStore
from app.store.redis import RedisStore
from app.streams.events import Change, Output
from tests.conftest import seconds

TTL = 300.0
TOMBSTONE_TTL = 3600.0
OUTPUT_LIMIT = 4096  # JOBS_OUTPUT_MAX_BYTES of the contract's stores
WAIT = seconds(5)  # any awaited event may take this long
# What the feed listener logs when the feed lost its place (a Redis that came back without it).
LOST_ITS_PLACE = "Redis change feed no longer holds"


class Recorder:
    """A FeedSink that keeps what it was given, and lets a test wait for it."""

    def __init__(self) -> None:
        self.changes: list[Change] = []
        self.outputs: list[Output] = []
        self.events: list[Change | Output] = []  # both, in the order they came
        self.closed = 0
        self._arrived = asyncio.Event()

    def publish(self, change: Change) -> None:
        self.changes.append(change)
        self.events.append(change)
        self._arrived.set()

    def publish_output(self, output: Output) -> None:
        self.outputs.append(output)
        self.events.append(output)
        self._arrived.set()

    def close(self) -> None:
        self.closed += 1
        self._arrived.set()

    async def wait_for(self, condition: Callable[[Recorder], bool]) -> None:
        with anyio.fail_after(WAIT):
            while not condition(self):
                self._arrived.clear()
                await self._arrived.wait()

    def of(self, job_id: str) -> list[Change]:
        return [change for change in self.changes if change.job_id == job_id]


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Harness:
    store: JobStore
    sink: Recorder
    clock: Clock

    async def create(
        self,
        job_type: JobType = "generic",
        message: str = "",
        idempotency: Idempotency | None = None,
    ) -> Job:
        request = NewJob(job_type=job_type, message=message)
        job, _ = await self.store.create(jobs.create(request, jobs.now()), idempotency)
        return job

    async def update(self, job_id: str, **fields: object) -> Job:
        change = JobUpdate.model_validate(fields)
        return await self.store.update(job_id, lambda job: jobs.update(job, change, jobs.now()))

    async def complete(self, job_id: str) -> Job:
        done = Completion(document_id="doc_1")
        return await self.store.update(job_id, lambda job: jobs.complete(job, done, jobs.now()))

    async def fail(self, job_id: str) -> Job:
        failure = Failure(error="boom")
        return await self.store.update(job_id, lambda job: jobs.fail(job, failure, jobs.now()))

    async def cancel(self, job_id: str, force: bool = False) -> Job:
        asked = CancelRequest(force=force)
        return await self.store.update(job_id, lambda job: jobs.cancel(job, asked, jobs.now()))

    async def expire_terminal_jobs(self) -> None:
        self.clock.advance(TTL + 1)
        await self.store.sweep()


def contract_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "terminal_ttl": TTL,
        "tombstone_ttl": TOMBSTONE_TTL,
        "redis_timeout": 1.0,
        "output_max_bytes": OUTPUT_LIMIT,
        **overrides,
    }
    return Settings(**values)


async def open_redis_store(
    url: str,
    prefix: str,
    sink: Recorder,
    clock: Callable[[], float] = time.time,
    **settings: object,
) -> RedisStore:
    store = RedisStore(
        contract_settings(backend="redis", redis_url=url, redis_prefix=prefix, **settings),
        sink,
        clock=clock,
    )
    await store.start()
    return store
