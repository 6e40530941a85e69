"""The public API of the ``app`` package, pinned: what ``__all__`` lists, and that it imports."""

from __future__ import annotations

import importlib
import inspect

import pytest

import app

PUBLIC = [
    "BackendUnavailable",
    "IdempotencyConflict",
    "InvalidJobData",
    "InvalidTransition",
    "Job",
    "JobGone",
    "JobNotFound",
    "JobStatus",
    "JobType",
    "JobsError",
    "NotServing",
    "OffsetMismatch",
    "OutputTooLarge",
    "Settings",
    "SettingsError",
    "append_job_output",
    "cancel_job",
    "complete_job",
    "create_app",
    "create_job",
    "delete_job",
    "fail_job",
    "get_job",
    "update_job_with_notification",
]
ERRORS = [
    "BackendUnavailable",
    "IdempotencyConflict",
    "InvalidJobData",
    "InvalidTransition",
    "JobGone",
    "JobNotFound",
]
LIBRARY = ["create_job", "update_job_with_notification", "complete_job", "fail_job", "get_job"]


def test_all_is_pinned() -> None:
    """app.__all__ lists exactly the public names, sorted, none twice."""
    assert app.__all__ == PUBLIC


@pytest.mark.parametrize("name", PUBLIC)
def test_every_public_name_imports(name: str) -> None:
    """Each public name can be imported from `app` and is a real object."""
    module = importlib.import_module("app")
    assert getattr(module, name) is not None


def test_star_import_gives_exactly_the_public_names() -> None:
    """`from app import *` binds the names of __all__ and nothing else."""
    namespace: dict[str, object] = {}
    exec("from app import *", namespace)
    namespace.pop("__builtins__")
    assert sorted(namespace) == PUBLIC


@pytest.mark.parametrize("name", ERRORS)
def test_errors_share_one_root(name: str) -> None:
    """Every public error is a JobsError, so one except clause catches them all."""
    assert issubclass(getattr(app, name), app.JobsError)


def test_malformed_json_is_invalid_job_data() -> None:
    """A body that is not JSON is a kind of invalid data (catching InvalidJobData covers it)."""
    from app.errors import MalformedJSON

    assert issubclass(MalformedJSON, app.InvalidJobData)


@pytest.mark.parametrize("name", LIBRARY)
def test_library_functions_are_async(name: str) -> None:
    """The Jobs API's server-side functions are coroutine functions, awaited by callers."""
    assert inspect.iscoroutinefunction(getattr(app, name))


def test_library_names_come_from_the_library_module() -> None:
    """`app.create_job` and friends are the very functions of app.library."""
    from app import library

    for name in LIBRARY:
        assert getattr(app, name) is getattr(library, name)
