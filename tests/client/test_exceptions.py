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
    JobcastError,
    JobNotFound,
    RateLimited,
    ResponseError,
    ServerError,
    Unauthenticated,
)

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
