"""The job store seam: a Protocol, and ``open_store`` to pick a backend by setting.

A store keeps jobs, applies changes atomically (the rules themselves live in
``app.jobs``; the store only runs them against the current state), and calls
``publish`` once for every accepted change, in feed order. That callback is
the hook the live-push hub plugs into.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from app.errors import FieldError, InvalidJobData
from app.models import Job, JobStatus, JobType
from app.settings import Settings
from app.streams.events import Change, Position

Publish = Callable[[Change], None]
Mutation = Callable[[Job], Job]


@dataclass(frozen=True, slots=True)
class JobFilter:
    """The ``jobType``/``status``/``owner`` filters of the list and the all-jobs streams.

    ``owner`` is also how an owner token's view is narrowed to its own jobs.
    """

    job_type: JobType | None = None
    status: JobStatus | None = None
    owner: str | None = None

    def matches(self, job_type: JobType, status: JobStatus | None, owner: str | None) -> bool:
        return (
            (self.job_type is None or job_type == self.job_type)
            and (self.status is None or status == self.status)
            and (self.owner is None or owner == self.owner)
        )

    def _kind_matches(self, change: Change) -> bool:
        """The filters a job never leaves (its type and owner), for removals and resumes."""
        return (self.job_type is None or change.job_type == self.job_type) and (
            self.owner is None or change.owner == self.owner
        )

    def replays(self, change: Change, *, known: bool) -> bool:
        """Whether a stream connecting with this filter is sent ``change``'s job.

        ``known``: the job existed at the client's cursor, so the client may
        hold it. Such a job may have left a status filter since: it is sent
        anyway, as the live stream would have, so the client can drop it. A
        job born after the cursor is sent only if it matches now.
        """
        if known or change.job is None:
            return self._kind_matches(change)
        return self.matches(change.job_type, change.job.status, change.owner)

    def admits(self, change: Change) -> bool:
        """Whether a live subscriber with this filter gets ``change``.

        A job that leaves the filter (``status=processing`` and it completes)
        still sends that one event, so a client can drop it.
        """
        if self.job_type is None and self.status is None and self.owner is None:
            return True  # no filter: asked for every change of every job
        if change.job is None:
            return self._kind_matches(change)
        return self.matches(change.job_type, change.job.status, change.owner) or (
            change.previous_status is not None
            and self.matches(change.job_type, change.previous_status, change.owner)
        )


def encode_page_cursor(below: int) -> str:
    """The opaque `cursor` of a list page: the next page holds jobs numbered below this."""
    return base64.urlsafe_b64encode(f"c{below}".encode()).decode().rstrip("=")


def decode_page_cursor(cursor: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if text.startswith("c") and text[1:].isdigit() and len(text) < 24:
            return int(text[1:])
    except (binascii.Error, UnicodeDecodeError, ValueError):
        pass
    raise InvalidJobData(
        "cursor is not one this server gave out", [FieldError("cursor", "unknown cursor")]
    )


@dataclass(frozen=True, slots=True)
class Idempotency:
    key: str
    fingerprint: str


@dataclass(frozen=True, slots=True)
class Page:
    jobs: list[Job]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class Replay:
    """What a stream sends on connect: the changes, and the feed head they reach.

    ``reset`` is true when the asked-for position could not be replayed (too
    old, or from another feed), so ``changes`` is the full current state and
    the client should forget what it had.
    """

    changes: list[Change]
    head: Position
    reset: bool


class FeedSink(Protocol):
    """Where a store delivers its change feed: the hub."""

    def publish(self, change: Change) -> None:
        """Deliver one change, in feed order."""
        ...

    def close(self) -> None:
        """The feed was interrupted: end every stream so clients reconnect and resume."""
        ...


class JobStore(Protocol):
    async def start(self) -> None:
        """Connect and start delivering the change feed (the lifespan calls it once)."""
        ...

    async def create(self, job: Job, idempotency: Idempotency | None) -> tuple[Job, bool]:
        """Store a new job, or return the one an earlier request with this key made.

        Returns the job and whether it was created now.
        """
        ...

    async def get(self, job_id: str) -> Job:
        """The current job; raises JobNotFound or JobGone."""
        ...

    async def get_change(self, job_id: str) -> Change:
        """The current job as the change that made it (so with its feed position)."""
        ...

    async def update(self, job_id: str, mutation: Mutation) -> Job:
        """Apply ``mutation`` to the current job atomically and store the result."""
        ...

    async def list(self, where: JobFilter, limit: int, cursor: str | None) -> Page:
        """Jobs newest first; raises InvalidJobData for a cursor it did not make.

        With ``where.owner``, reads that owner's jobs only (an index per owner),
        however many other jobs there are.
        """
        ...

    async def replay(self, where: JobFilter, after: Position | None) -> Replay:
        """The latest change of every matching job after ``after`` (all, if None).

        With ``where.owner`` and no ``after`` (or one that resets), reads that
        owner's jobs only, like ``list``.
        """
        ...

    async def sweep(self) -> None:
        """Remove terminal jobs whose time is up, and forget old tombstones."""
        ...

    async def count_by_status(self) -> dict[JobStatus, int]: ...

    async def ping(self) -> None:
        """Raise BackendUnavailable when the backend cannot be reached."""
        ...

    async def aclose(self) -> None: ...


def open_store(settings: Settings, sink: FeedSink) -> JobStore:
    """The backend ``settings`` names; its optional dependencies are imported only then."""
    if settings.backend == "redis":
        from app.store.redis import RedisStore

        return RedisStore(settings, sink)
    from app.store.memory import MemoryStore

    return MemoryStore(settings, sink.publish)
