"""The exceptions (``jobcast_client._exceptions``): one tree, as drawn; each one pickles."""

from __future__ import annotations

import pickle
import re

import jobcast_client
import jobcast_client._exceptions
import pytest
from jobcast_client import (
    FieldError,
    InvalidJobData,
    Job,
    JobCanceled,
    JobcastError,
    JobNotFound,
    OffsetMismatch,
    RateLimited,
    ResponseError,
    ServerError,
    Unauthenticated,
)

from .test_models import SERVER_JOB

EXCEPTIONS = sorted(
    (
        member
        for name in jobcast_client.__all__
        if isinstance(member := getattr(jobcast_client, name), type)
        and issubclass(member, Exception)
    ),
    key=lambda kind: kind.__name__,
)


def drawn_tree() -> dict[str, str | None]:
    """Each exception in the module docstring's drawing, and the one it hangs from."""
    parents: dict[str, str | None] = {}
    stack: list[tuple[int, str]] = []
    for line in (jobcast_client._exceptions.__doc__ or "").splitlines():
        match = re.match(r"^ {4}([│ ]*(?:├── |└── )?)([A-Z][A-Za-z]+)\b", line)
        if not match:
            continue
        depth, name = len(match.group(1)), match.group(2)
        while stack and stack[-1][0] >= depth:
            stack.pop()
        parents[name] = stack[-1][1] if stack else None
        stack.append((depth, name))
    return parents


def test_the_drawn_tree_is_the_class_tree() -> None:
    """The docstring's drawing names every exported exception under its real base, no other."""
    drawn = drawn_tree()
    actual = {
        kind.__name__: None if kind is JobcastError else kind.__bases__[0].__name__
        for kind in EXCEPTIONS
    }
    assert drawn == actual
    assert all(issubclass(kind, JobcastError) for kind in EXCEPTIONS)


@pytest.mark.parametrize(
    "exc",
    [
        JobNotFound("no job with id 'job_1'", job_id="job_1"),
        InvalidJobData("progress: must be at most 100", [FieldError("progress", "too big")]),
        Unauthenticated("the token has expired", presented=True),
        RateLimited("too often", retry_after=2.5),
        ServerError("boom", status_code=502, problem={"detail": "boom", "status": 502}),
        ResponseError("teapot", status_code=418),
        OffsetMismatch("expectedOffset is 3 but ...", expected_offset=3, next_offset=5),
        JobCanceled(
            Job.from_wire(
                {
                    **SERVER_JOB,
                    "status": "processing",
                    "cancelRequested": True,
                    "cancelReason": "not needed",
                }
            )
        ),
    ],
    ids=lambda exc: type(exc).__name__,
)
def test_every_exception_pickles_with_its_attributes(exc: JobcastError) -> None:
    """An exception comes back from pickle (as Celery sends it) with its message and attributes."""
    back = pickle.loads(pickle.dumps(exc))
    assert type(back) is type(exc)
    assert str(back) == str(exc)
    assert vars(back) == vars(exc)


def test_exceptions_name_the_package_in_tracebacks() -> None:
    """Exported exceptions say jobcast_client, not the private module that defines them."""
    assert {kind.__module__ for kind in EXCEPTIONS} == {"jobcast_client"}


def test_job_canceled_names_the_job_and_the_reason() -> None:
    """JobCanceled carries the job as last seen, its id and the cancel's reason, and says both."""
    asked = {**SERVER_JOB, "status": "processing", "cancelRequested": True}
    job = Job.from_wire({**asked, "cancelReason": "the user closed the tab"})
    canceled = JobCanceled(job)
    assert (canceled.job_id, canceled.reason, canceled.job) == (
        "job_abc",
        "the user closed the tab",
        job,
    )
    assert str(canceled) == "job job_abc was canceled: the user closed the tab"
    unexplained = JobCanceled(Job.from_wire(asked))
    assert (unexplained.reason, str(unexplained)) == (None, "job job_abc was canceled")
