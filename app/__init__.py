"""Jobcast: a live job-status server.

Code that runs inside the server's process (the demo's workers, say) uses
the Jobs API's server-side functions, in Python naming::

    from app import create_job, update_job_with_notification, complete_job, fail_job, get_job

Workers in other processes use the Python client instead (the
``jobcast-client`` distribution, ``import jobcast_client``).

Importing this package loads nothing: each name below is imported when it
is first used, so ``import app`` (or ``python -m app``) costs only what it
uses.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what the names below are, for type checkers ("X as X": re-exported)
    from app.errors import (
        BackendUnavailable as BackendUnavailable,
        IdempotencyConflict as IdempotencyConflict,
        InvalidJobData as InvalidJobData,
        InvalidTransition as InvalidTransition,
        JobGone as JobGone,
        JobNotFound as JobNotFound,
        JobsError as JobsError,
        NotServing as NotServing,
        OffsetMismatch as OffsetMismatch,
        OutputTooLarge as OutputTooLarge,
    )
    from app.library import (
        append_job_output as append_job_output,
        cancel_job as cancel_job,
        complete_job as complete_job,
        create_job as create_job,
        delete_job as delete_job,
        fail_job as fail_job,
        get_job as get_job,
        update_job_with_notification as update_job_with_notification,
    )
    from app.main import create_app as create_app
    from app.models import Job as Job, JobStatus as JobStatus, JobType as JobType
    from app.settings import Settings as Settings, SettingsError as SettingsError

# Each public name, and the module that defines it.
_HOMES = {
    "BackendUnavailable": "app.errors",
    "IdempotencyConflict": "app.errors",
    "InvalidJobData": "app.errors",
    "InvalidTransition": "app.errors",
    "JobGone": "app.errors",
    "JobNotFound": "app.errors",
    "JobsError": "app.errors",
    "NotServing": "app.errors",
    "OffsetMismatch": "app.errors",
    "OutputTooLarge": "app.errors",
    "append_job_output": "app.library",
    "cancel_job": "app.library",
    "complete_job": "app.library",
    "delete_job": "app.library",
    "create_job": "app.library",
    "fail_job": "app.library",
    "get_job": "app.library",
    "update_job_with_notification": "app.library",
    "create_app": "app.main",
    "Job": "app.models",
    "JobStatus": "app.models",
    "JobType": "app.models",
    "Settings": "app.settings",
    "SettingsError": "app.settings",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'app' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # found once, then a plain attribute
    return value


def __dir__() -> list[str]:
    return __all__
