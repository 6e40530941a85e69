"""The job operations every entry point shares: HTTP routes and the in-process library.

Each call validates its input with the wire models, checks the size
limits (JOBS_MAX_TEXT_LENGTH, JOBS_MAX_METADATA_BYTES, the output's
per-append limits: here, and only here; the store checks a job's whole
output, atomically), applies the rules of ``app.jobs`` through the store (atomically),
and counts it. The store publishes every accepted change to the hub
before the call returns.
"""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from typing import Any

import pydantic_core

from app import jobs
from app.errors import FieldError, InvalidJobData, JobGone, JobNotFound, OutputTooLarge
from app.metrics import Metrics
from app.models import (
    CancelRequest,
    Completion,
    Failure,
    Job,
    JobUpdate,
    NewChunk,
    NewJob,
    OutputAppend,
    OutputAppended,
)
from app.settings import Settings
from app.store import Idempotency, JobStore
from app.validation import describe
from app.webhooks import policy as webhook_policy


class JobService:
    def __init__(
        self, store: JobStore, metrics: Metrics | None = None, settings: Settings | None = None
    ) -> None:
        self.store = store
        self.metrics = metrics or Metrics()
        settings = self._settings = settings or Settings()
        self._max_text = settings.max_text_length
        self._max_metadata = settings.max_metadata_bytes

    async def create(self, request: NewJob, idempotency_key: str | None = None) -> tuple[Job, bool]:
        """Create a job; with a key seen before, return that job and ``False`` instead."""
        self._check_text(message=request.message)
        self._check_metadata(request.metadata)
        webhook_policy.check_job_url(request.webhook_url, self._settings)
        idempotency = None
        if idempotency_key is not None:
            # exclude_none: bodies without an owner keep the fingerprint they always had.
            # The standard encoder: orjson refuses integers beyond 64 bits, which JSON allows.
            fields = request.model_dump(mode="json", exclude_none=True)
            body = json.dumps(
                fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False
            ).encode()
            idempotency = Idempotency(idempotency_key, hashlib.sha256(body).hexdigest())
        job, created = await self.store.create(jobs.create(request, jobs.now()), idempotency)
        if created:
            self.metrics.jobs_created.inc()
        return job, created

    async def get(self, job_id: str) -> Job:
        return await self.store.get(job_id)

    async def update(self, job_id: str, change: JobUpdate) -> Job:
        self._check_text(message=change.message)

        def apply(job: Job) -> Job:
            updated = jobs.update(job, change, jobs.now())
            if change.metadata is not None:
                # Merging can only grow metadata: the limit holds for the result.
                self._check_metadata(updated.metadata)
            return updated

        job = await self.store.update(job_id, apply)
        self._count(job)
        return job

    async def complete(self, job_id: str, completion: Completion) -> Job:
        self._check_text(documentId=completion.document_id, message=completion.message)
        job = await self.store.update(
            job_id, lambda job: jobs.complete(job, completion, jobs.now())
        )
        self._count(job)
        return job

    async def fail(self, job_id: str, failure: Failure) -> Job:
        self._check_text(error=failure.error, message=failure.message)
        job = await self.store.update(job_id, lambda job: jobs.fail(job, failure, jobs.now()))
        self._count(job)
        return job

    async def cancel(self, job_id: str, request: CancelRequest) -> Job:
        """Ask the job's worker to stop (once), or with ``force`` end the job now."""
        self._check_text(reason=request.reason)
        job = await self.store.update(job_id, lambda job: jobs.cancel(job, request, jobs.now()))
        self.metrics.jobs_canceled.inc()
        if request.force:
            self._count(job)
        return job

    async def delete(self, job_id: str) -> None:
        """Remove the job now, whatever its state (subscribers get ``removed``)."""
        await self.store.delete(job_id)
        self.metrics.jobs_deleted.inc()

    async def append_output(self, job_id: str, request: OutputAppend) -> OutputAppended:
        """Append chunks to the job's output, in order, all or none: where they went, and
        the job's cancel flag (a worker that only streams output hears a cancel so)."""
        most = self._settings.output_max_chunks
        if len(request.chunks) > most:
            detail = (
                f"this append has {len(request.chunks)} chunks; one append may carry at most "
                f"{most} (JOBS_OUTPUT_MAX_CHUNKS): send them in several"
            )
            raise OutputTooLarge(detail, [FieldError("chunks", f"at most {most} chunks")])
        bodies = [self._chunk_body(index, chunk) for index, chunk in enumerate(request.chunks)]
        appended = await self.store.append_output(job_id, bodies, request.expected_offset)
        self.metrics.output_chunks_appended.inc(len(bodies))
        self.metrics.output_bytes_appended.inc(sum(map(len, bodies)))
        output, job = appended.output, appended.job
        return OutputAppended(
            job_id=job_id,
            offset=output.offset,
            next_offset=output.next_offset,
            cancel_requested=job.cancel_requested,
            cancel_reason=job.cancel_reason,
        )

    def _chunk_body(self, index: int, chunk: NewChunk) -> bytes:
        """The chunk as stored: its JSON without the offset the store gives it."""
        # pydantic's encoder: orjson refuses integers beyond 64 bits, which JSON allows.
        data = pydantic_core.to_json(chunk.data)
        most = self._settings.output_max_chunk_bytes
        if len(data) > most:
            field = f"chunks.{index}.data"
            detail = (
                f"{field} is {len(data)} bytes as JSON; a chunk may hold at most "
                f"{most} (JOBS_OUTPUT_MAX_CHUNK_BYTES): split it"
            )
            raise OutputTooLarge(detail, [FieldError(field, f"at most {most} bytes as JSON")])
        kind = b"" if chunk.kind is None else b',"kind":' + pydantic_core.to_json(chunk.kind)
        return b'{"data":' + data + kind + b"}"

    async def expire_stale(self, idle: float, limit: int = 200) -> int:
        """Fail unfinished jobs that went ``idle`` seconds without a change; how many."""
        moment = jobs.now() - timedelta(seconds=idle)
        failed = 0
        for job_id in await self.store.untouched_since(moment, limit):
            try:
                job = await self.store.update(
                    job_id, lambda job: jobs.expire(job, idle, jobs.now())
                )
            except (JobNotFound, JobGone):
                continue  # removed meanwhile: nothing to expire
            if job.error == jobs.STALE and job.is_terminal:
                self._count(job)
                failed += 1
        return failed

    def _check_text(self, **fields: str | None) -> None:
        limit = self._max_text
        errors = [
            FieldError(name, f"may hold at most {limit} characters")
            for name, value in fields.items()
            if value is not None and len(value) > limit
        ]
        if errors:
            raise InvalidJobData(describe(errors), errors)

    def _check_metadata(self, metadata: dict[str, Any]) -> None:
        size = len(pydantic_core.to_json(metadata))
        if size > self._max_metadata:
            reason = (
                f"is {size} bytes as JSON; a job's metadata may hold at most {self._max_metadata}"
            )
            errors = [FieldError("metadata", reason)]
            raise InvalidJobData(describe(errors), errors)

    def _count(self, job: Job) -> None:
        self.metrics.jobs_updated.inc()
        if job.status == "completed":
            self.metrics.jobs_completed.inc()
        elif job.status == "error":
            self.metrics.jobs_failed.inc()
