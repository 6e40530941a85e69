"""The public API of ``jobcast_client``, pinned (as httpx's tests/test_exported_members.py)."""

from __future__ import annotations

import jobcast_client

PUBLIC = [
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


def test_all_is_pinned() -> None:
    """__all__ lists exactly the public names, none twice."""
    assert jobcast_client.__all__ == PUBLIC


def test_every_public_attribute_is_exported() -> None:
    """Every name of the package without a leading underscore is in __all__, and back."""
    public = {name for name in dir(jobcast_client) if not name.startswith("_")}
    assert public == {name for name in PUBLIC if not name.startswith("_")}


def test_star_import_gives_exactly_the_public_names() -> None:
    """`from jobcast_client import *` binds the names of __all__ and nothing else."""
    namespace: dict[str, object] = {}
    exec("from jobcast_client import *", namespace)
    namespace.pop("__builtins__")
    assert sorted(namespace) == sorted(PUBLIC)


def test_the_version_is_the_distributions() -> None:
    """__version__ is the installed jobcast-client's version."""
    from importlib.metadata import version

    assert jobcast_client.__version__ == version("jobcast-client") == "0.1.0"
