"""Jobcast: a live job-status server.

The in-process library (the seed's server-side functions, in Python naming)::

    from app import create_job, update_job_with_notification, complete_job, fail_job, get_job
"""

from app.errors import (
    BackendUnavailable,
    IdempotencyConflict,
    InvalidJobData,
    InvalidTransition,
    JobGone,
    JobNotFound,
    JobsError,
)
from app.library import complete_job, create_job, fail_job, get_job, update_job_with_notification
from app.main import create_app
from app.models import Job, JobStatus, JobType
from app.settings import Settings, SettingsError

__all__ = [
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
    "Settings",
    "SettingsError",
    "complete_job",
    "create_app",
    "create_job",
    "fail_job",
    "get_job",
    "update_job_with_notification",
]
