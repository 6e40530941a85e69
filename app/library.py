"""The Jobs API's server-side functions, in Python naming, for code in the server's process.

    job = await create_job(job_type="document_analysis", message="Starting analysis...")
    await update_job_with_notification(job.job_id, status="processing", progress=50)
    await append_job_output(job.job_id, [{"data": "Reading page 1", "kind": "log"}])
    await complete_job(job.job_id, "doc_123", "Analysis completed")

They act on the store of the running app (its lifespan installs it), so
every change is stored and pushed to every subscriber before the call
returns. Called where no app runs, they raise :class:`~app.errors.NotServing`,
which points to the Python client: a private store here would take the
changes and show them to nobody.

Arguments are checked as request bodies are, by the same models, but by
their Python names: a bad one raises InvalidJobData naming it
(``progress: must be at most 100``).
"""

from __future__ import annotations

from typing import Any

from app.errors import NotServing
from app.models import (
    CancelRequest,
    Completion,
    Failure,
    Job,
    JobStatus,
    JobType,
    JobUpdate,
    NewJob,
    OutputAppend,
    OutputAppended,
)
from app.service import JobService
from app.validation import parse

_service: JobService | None = None


def install(service: JobService | None) -> JobService | None:
    """Make ``service`` the one these functions use; returns the one it replaces."""
    global _service
    previous, _service = _service, service
    return previous


def current_service() -> JobService:
    if _service is None:
        raise NotServing()
    return _service


async def create_job(
    *,
    job_type: JobType = "generic",
    message: str = "",
    metadata: dict[str, Any] | None = None,
    owner: str | None = None,
    webhook_url: str | None = None,
) -> Job:
    fields = _given(
        job_type=job_type,
        message=message,
        metadata=metadata,
        owner=owner,
        webhook_url=webhook_url,
    )
    request = parse(NewJob, fields, by_name=True)
    job, _ = await current_service().create(request)
    return job


async def update_job_with_notification(
    job_id: str,
    *,
    status: JobStatus | None = None,
    progress: float | None = None,
    message: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> Job:
    fields = _given(status=status, progress=progress, message=message, metadata=metadata)
    return await current_service().update(job_id, parse(JobUpdate, fields, by_name=True))


async def complete_job(
    job_id: str, document_id: str | None = None, message: str | None = None
) -> Job:
    fields = _given(document_id=document_id, message=message)
    return await current_service().complete(job_id, parse(Completion, fields, by_name=True))


async def fail_job(job_id: str, error: str, message: str | None = None) -> Job:
    fields = _given(error=error, message=message)
    return await current_service().fail(job_id, parse(Failure, fields, by_name=True))


async def cancel_job(job_id: str, reason: str | None = None, *, force: bool = False) -> Job:
    """Ask the job's worker to stop (``cancel_requested``); ``force`` ends the job now."""
    fields = _given(reason=reason, force=force)
    return await current_service().cancel(job_id, parse(CancelRequest, fields, by_name=True))


async def delete_job(job_id: str) -> None:
    """Remove the job now, whatever its state."""
    await current_service().delete(job_id)


async def append_job_output(
    job_id: str,
    chunks: list[dict[str, Any]],
    *,
    expected_offset: int | None = None,
) -> OutputAppended:
    """Append chunks (``{"data": …, "kind": "token"}``, kind optional) to the job's
    output, in order; subscribers to its output get them before the call returns.
    ``expected_offset``: append only if the job has exactly that many chunks."""
    fields = _given(chunks=chunks, expected_offset=expected_offset)
    request = parse(OutputAppend, fields, by_name=True)
    return await current_service().append_output(job_id, request)


async def get_job(job_id: str) -> Job:
    return await current_service().get(job_id)


def _given(**fields: Any) -> dict[str, Any]:
    return {name: value for name, value in fields.items() if value is not None}
