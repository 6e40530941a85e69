"""The job operations every entry point shares: HTTP routes and the in-process library.

Each call validates its input with the wire models, applies the rules of
``app.jobs`` through the store (atomically), and counts it. The store
publishes every accepted change to the hub before the call returns.
"""

from __future__ import annotations

import hashlib

import orjson

from app import jobs
from app.metrics import Metrics
from app.models import Completion, Failure, Job, JobUpdate, NewJob
from app.store import Idempotency, JobFilter, JobStore, Page


class JobService:
    def __init__(self, store: JobStore, metrics: Metrics | None = None) -> None:
        self.store = store
        self._metrics = metrics or Metrics()

    async def create(self, request: NewJob, idempotency_key: str | None = None) -> tuple[Job, bool]:
        """Create a job; with a key seen before, return that job and ``False`` instead."""
        idempotency = None
        if idempotency_key is not None:
            body = orjson.dumps(request.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)
            idempotency = Idempotency(idempotency_key, hashlib.sha256(body).hexdigest())
        job, created = await self.store.create(jobs.create(request, jobs.now()), idempotency)
        if created:
            self._metrics.jobs_created.inc()
        return job, created

    async def get(self, job_id: str) -> Job:
        return await self.store.get(job_id)

    async def update(self, job_id: str, change: JobUpdate) -> Job:
        job = await self.store.update(job_id, lambda job: jobs.update(job, change, jobs.now()))
        self._count(job)
        return job

    async def complete(self, job_id: str, completion: Completion) -> Job:
        job = await self.store.update(
            job_id, lambda job: jobs.complete(job, completion, jobs.now())
        )
        self._count(job)
        return job

    async def fail(self, job_id: str, failure: Failure) -> Job:
        job = await self.store.update(job_id, lambda job: jobs.fail(job, failure, jobs.now()))
        self._count(job)
        return job

    async def list(self, where: JobFilter, limit: int, cursor: str | None) -> Page:
        return await self.store.list(where, limit, cursor)

    def _count(self, job: Job) -> None:
        self._metrics.jobs_updated.inc()
        if job.status == "completed":
            self._metrics.jobs_completed.inc()
        elif job.status == "error":
            self._metrics.jobs_failed.inc()
