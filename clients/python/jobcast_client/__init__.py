"""jobcast-client: report and follow Jobcast jobs from Python, sync or async.

    from jobcast_client import JobsClient

    with JobsClient("http://127.0.0.1:8000") as jobs:
        job = jobs.create_job(job_type="file_processing", message="Upload queued")
        jobs.update_job_with_notification(job.job_id, status="processing", progress=50)
        jobs.complete_job(job.job_id, document_id="doc_123abc")

Everything public is imported from here; the ``_``-modules behind it are
private. Importing this package loads httpx2 and the standard library only
(the ``jobcast`` command's click is imported when the command runs).
"""

from ._client import AsyncJobsClient, AsyncTrackedJob, JobsClient, TrackedJob
from ._core import DEFAULT_URL
from ._exceptions import (
    BackendUnavailable,
    BodyTooLarge,
    ConnectionFailed,
    Forbidden,
    IdempotencyConflict,
    InvalidJobData,
    InvalidTransition,
    JobCanceled,
    JobcastError,
    JobGone,
    JobNotFound,
    MalformedJSON,
    MisdirectedRequest,
    OffsetMismatch,
    OutputTooLarge,
    RateLimited,
    ResponseError,
    ServerError,
    TooManyStreams,
    Unauthenticated,
)
from ._models import (
    Changes,
    Chunk,
    FieldError,
    Job,
    JobStatus,
    JobType,
    OutputAppended,
    OutputChunk,
    ReadToken,
)
from ._retry import RetryPolicy
from ._version import __version__
from ._writer import AsyncOutputWriter, OutputWriter

__all__ = [
    "DEFAULT_URL",
    "AsyncJobsClient",
    "AsyncOutputWriter",
    "AsyncTrackedJob",
    "BackendUnavailable",
    "BodyTooLarge",
    "Changes",
    "Chunk",
    "ConnectionFailed",
    "FieldError",
    "Forbidden",
    "IdempotencyConflict",
    "InvalidJobData",
    "InvalidTransition",
    "Job",
    "JobCanceled",
    "JobGone",
    "JobNotFound",
    "JobStatus",
    "JobType",
    "JobcastError",
    "JobsClient",
    "MalformedJSON",
    "MisdirectedRequest",
    "OffsetMismatch",
    "OutputAppended",
    "OutputChunk",
    "OutputTooLarge",
    "OutputWriter",
    "RateLimited",
    "ReadToken",
    "ResponseError",
    "RetryPolicy",
    "ServerError",
    "TooManyStreams",
    "TrackedJob",
    "Unauthenticated",
    "__version__",
]

# Exceptions say they come from here in tracebacks (jobcast_client.JobNotFound: ...), as
# httpx's do. Not the dataclasses: typing.get_type_hints() resolves their annotations in
# the namespace of their __module__, which must stay the module that defines them.
for _name in __all__:
    _member = globals()[_name]
    if isinstance(_member, type) and issubclass(_member, Exception):
        _member.__module__ = __name__
del _name, _member
