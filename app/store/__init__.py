"""The job store seam: a Protocol, and ``open_store`` to pick a backend by setting.

A store keeps jobs and their output, applies changes and appends atomically
(the rules themselves live in ``app.jobs``; the store only runs them against
the current state), and calls ``publish`` once for every accepted change and
``publish_output`` once for every append, in feed order. Those callbacks are
the hook the live-push hub plugs into.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from app.errors import FieldError, InvalidJobData, InvalidTransition, OutputTooLarge
from app.jobs import JobFilter
from app.models import Job, JobList, JobStatus
from app.settings import Settings
from app.streams.events import Change, Output, Position

Publish = Callable[[Change], None]
PublishOutput = Callable[[Output], None]
Mutation = Callable[[Job], Job]
Bodies = list[bytes]  # output chunks as stored: each one's JSON without its offset


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


def output_after_end(job: Job) -> InvalidTransition:
    return InvalidTransition(
        f"job {job.job_id} has ended ({job.status}): its output can no longer be appended to"
    )


def output_too_large(size: int, limit: int) -> OutputTooLarge:
    return OutputTooLarge(
        f"the job's output would be {size} bytes of chunk JSON; a job's output may hold at "
        f"most {limit} (JOBS_OUTPUT_MAX_BYTES)"
    )


@dataclass(frozen=True, slots=True)
class Idempotency:
    key: str
    fingerprint: str


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


@dataclass(frozen=True, slots=True)
class Appended:
    """An append as the store made it: its chunks, and the job as it left it (its
    ``outputSize`` grown; a ``cancelRequested`` there is the appending worker's cue)."""

    output: Output
    job: Job


@dataclass(frozen=True, slots=True)
class OutputRead:
    """A stretch of a job's output read back: the chunks from ``output.offset`` on,
    how many the job has in all, and whether the job has ended (so no more come)."""

    output: Output
    total: int
    ended: bool


class FeedSink(Protocol):
    """Where a store delivers its change feed: the hub."""

    def publish(self, change: Change) -> None:
        """Deliver one change, in feed order."""
        ...

    def publish_output(self, output: Output) -> None:
        """Deliver chunks appended to a job's output, in feed order with its changes."""
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
        """Apply ``mutation`` to the current job atomically and store the result; a
        mutation that returns the job it was given changes (and publishes) nothing."""
        ...

    async def list(self, where: JobFilter, limit: int, cursor: str | None) -> JobList:
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

    async def append_output(self, job_id: str, bodies: Bodies, expected: int | None) -> Appended:
        """Append chunks (their JSON without offsets) to an unfinished job's output,
        atomically, publish them, and return them as appended, with the job.
        ``expected``: append only if the job has exactly that many chunks. Raises
        JobNotFound, JobGone, InvalidTransition (the job has ended), OffsetMismatch,
        OutputTooLarge (the job's output would pass JOBS_OUTPUT_MAX_BYTES); nothing is
        appended then."""
        ...

    async def read_output(self, job_id: str, after: int, limit: int | None) -> OutputRead:
        """The job's chunks from offset ``after`` on, ``limit`` at most (None: all);
        raises JobNotFound or JobGone."""
        ...

    async def delete(self, job_id: str) -> None:
        """Remove the job now, whatever its state, as the clean-up does: a tombstone
        (410), its idempotency key forgotten, a removal published; raises JobNotFound
        or JobGone."""
        ...

    async def untouched_since(self, moment: datetime, limit: int) -> Sequence[str]:
        """Up to ``limit`` unfinished jobs whose last change is at or before ``moment``,
        the longest untouched first (candidates: the caller re-checks each as it fails it)."""
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

    return MemoryStore(settings, sink.publish, publish_output=sink.publish_output)
