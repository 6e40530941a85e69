"""What the server sends and takes, as plain frozen dataclasses: :class:`Job`, :class:`ReadToken`,
and a job's output (:class:`Chunk` appended, :class:`OutputChunk` read, :class:`OutputAppended`).

The wire is camelCase JSON (``jobId``, ``documentId``, ...); Python code reads
snake_case attributes (``job.job_id``). :meth:`Job.from_wire` and
:meth:`Job.to_wire` convert between the two.

A newer server may send fields this client does not know yet: they are
never an error. They stay out of the attributes and out of ``==``, and are
kept in :attr:`Job.extra` only so that ``to_wire()`` gives back everything
the server sent (``jobcast get --json``).
Status and type words are not checked against the ones listed here either,
for the same reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, TypedDict, cast

JobType = Literal["file_processing", "document_analysis", "llm_agent", "generic"]
JobStatus = Literal["queued", "processing", "completed", "error"]

JOB_TYPES: tuple[JobType, ...] = ("file_processing", "document_analysis", "llm_agent", "generic")
JOB_STATUSES: tuple[JobStatus, ...] = ("queued", "processing", "completed", "error")
TERMINAL_STATUSES: frozenset[str] = frozenset({"completed", "error"})
# The error of a job a cancel ended: a forced one, or a tracked job whose worker stopped.
CANCELED = "canceled"
DEFAULT_FAILED_MESSAGE = "Processing failed"  # what the server says of a failure without one

# The wire name of each attribute, in the order the server writes them.
_WIRE_NAMES = {
    "job_id": "jobId",
    "job_type": "jobType",
    "status": "status",
    "message": "message",
    "progress": "progress",
    "document_id": "documentId",
    "error": "error",
    "metadata": "metadata",
    "owner": "owner",
    "webhook_url": "webhookUrl",
    "cancel_requested": "cancelRequested",
    "cancel_reason": "cancelReason",
    "output_size": "outputSize",
    "created_at": "createdAt",
    "updated_at": "updatedAt",
    "version": "version",
}
# Derived from the others: read, never stored, written back by to_wire().
_DERIVED = frozenset({"timestamp"})
# Flags and counts the server leaves out until they are true (or more than 0).
_ABSENT_WHEN_FALSE = frozenset({"cancel_requested", "output_size"})


@dataclass(frozen=True, slots=True)
class FieldError:
    """One offending field of a refused request: where it is, and what is wrong with it."""

    field: str
    message: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Job:
    """A job as the server last described it: every answer and every event carries all of it.

    ``document_id``, ``error``, ``owner`` and ``webhook_url`` are None until they are set.
    ``cancel_requested`` turns true once someone asked the job's worker to stop
    (``cancel_job``), with ``cancel_reason`` if they gave one. ``output_size``
    is how many output chunks the job has (``append_output``); appending
    does not change ``version``.
    """

    job_id: str
    job_type: JobType
    status: JobStatus
    message: str
    progress: float
    document_id: str | None = None
    error: str | None = None
    metadata: dict[str, Any] = field(hash=False)
    owner: str | None = None
    webhook_url: str | None = None
    cancel_requested: bool = False
    cancel_reason: str | None = None
    output_size: int = 0
    created_at: datetime
    updated_at: datetime
    version: int
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)
    """Fields the server sent that this client does not know, by their wire names."""

    @property
    def timestamp(self) -> datetime:
        """The Jobs API's name for the last update time (the same as ``updated_at``)."""
        return self.updated_at

    @property
    def is_terminal(self) -> bool:
        """Whether the job has ended (``completed`` or ``error``): nothing changes it any more."""
        return self.status in TERMINAL_STATUSES

    @classmethod
    def from_wire(cls, data: object) -> Job:
        """The job in a decoded JSON object of the server; ValueError if it is not one."""
        if not isinstance(data, Mapping):
            raise ValueError(f"a job is a JSON object, not {type(data).__name__}")
        read = _Reader(data)
        known = {*_WIRE_NAMES.values(), *_DERIVED}
        return cls(
            job_id=read.text("jobId"),
            # Not checked against the Literal: a newer server may add a word.
            job_type=cast(JobType, read.text("jobType")),
            status=cast(JobStatus, read.text("status")),
            message=read.text("message"),
            progress=read.number("progress"),
            document_id=read.optional_text("documentId"),
            error=read.optional_text("error"),
            metadata=read.object("metadata"),
            owner=read.optional_text("owner"),
            webhook_url=read.optional_text("webhookUrl"),
            cancel_requested=read.flag("cancelRequested"),
            cancel_reason=read.optional_text("cancelReason"),
            output_size=read.count("outputSize"),
            created_at=read.moment("createdAt"),
            updated_at=read.moment("updatedAt"),
            version=read.integer("version"),
            extra={name: value for name, value in data.items() if name not in known},
        )

    def to_wire(self) -> dict[str, Any]:
        """The camelCase JSON object the server would send (unset fields left out)."""
        wire: dict[str, Any] = {}
        for name, wire_name in _WIRE_NAMES.items():
            value = getattr(self, name)
            if value is None or (name in _ABSENT_WHEN_FALSE and not value):
                continue
            if isinstance(value, datetime):
                value = format_timestamp(value)
            elif name == "progress":
                value = int(value) if float(value).is_integer() else value
            wire[wire_name] = value
        wire["timestamp"] = format_timestamp(self.timestamp)
        return {**wire, **self.extra}


@dataclass(frozen=True, slots=True)
class ReadToken:
    """A read token (``POST /api/tokens``) for one job or one owner's jobs, and when it expires.

    Give ``token`` to a browser (``EventSource("...?token=...")``) or to a
    client (``JobsClient(url, token=...)``); it reads, never writes. It is
    left out of ``repr()`` so that it does not end up in logs.
    """

    token: str = field(repr=False)
    expires_at: datetime

    @classmethod
    def from_wire(cls, data: object) -> ReadToken:
        """The token in the server's answer; ValueError if it is not one."""
        if not isinstance(data, Mapping):
            raise ValueError(f"a token is a JSON object, not {type(data).__name__}")
        read = _Reader(data)
        return cls(token=read.text("token"), expires_at=read.moment("expiresAt"))

    def to_wire(self) -> dict[str, Any]:
        """The camelCase JSON object the server sent (``jobcast token --json``)."""
        return {"token": self.token, "expiresAt": format_timestamp(self.expires_at)}


@dataclass(frozen=True, slots=True)
class Chunk:
    """One piece of output to append: its ``data`` (any JSON value) and an optional ``kind``.

    ``append_output(job_id, chunks=[...])`` takes plain values, which all get
    the call's ``kind``, and ``Chunk`` items, which keep their own (so one
    request can carry a ``log`` line and a ``result``). A ``dict`` in
    ``chunks`` is always data, never read as a chunk: output may well be
    ``{"data": ..., "kind": ...}`` itself.
    """

    data: Any
    kind: str | None = None

    def to_wire(self) -> dict[str, Any]:
        """The chunk as ``POST /api/jobs/{jobId}/output`` takes it (no ``kind`` when None)."""
        return {"data": self.data} if self.kind is None else {"data": self.data, "kind": self.kind}


@dataclass(frozen=True, slots=True)
class OutputChunk:
    """A chunk of a job's output as the server holds it: its ``offset`` (0, 1, ... per job),
    ``data`` (any JSON value) and ``kind`` (None when it has none)."""

    offset: int
    data: Any
    kind: str | None = None

    @classmethod
    def from_wire(cls, data: object) -> OutputChunk:
        """The chunk in a decoded JSON object of the server; ValueError if it is not one."""
        if not isinstance(data, Mapping):
            raise ValueError(f"a chunk is a JSON object, not {type(data).__name__}")
        read = _Reader(data)
        # A null data may arrive as no data at all (a server that leaves out nulls).
        return cls(read.integer("offset"), data.get("data"), read.optional_text("kind"))

    def to_wire(self) -> dict[str, Any]:
        """The camelCase JSON object the server sent (``jobcast tail --json``)."""
        wire = {"offset": self.offset, "data": self.data}
        return wire if self.kind is None else {**wire, "kind": self.kind}


@dataclass(frozen=True, slots=True)
class OutputAppended:
    """Where an append went: ``offset`` of its first chunk, and ``next_offset``, the job's
    chunk count after it (the ``expected_offset`` of a next append).

    ``already_applied`` is true when this call found its chunks already there:
    an earlier attempt, whose answer was lost, had appended them, and they
    were not appended again. ``cancel_requested`` (and ``cancel_reason``) say,
    as the job does, that someone asked its worker to stop.
    """

    offset: int
    next_offset: int
    already_applied: bool = False
    cancel_requested: bool = False
    cancel_reason: str | None = None

    @classmethod
    def from_wire(cls, data: object) -> OutputAppended:
        """The server's answer to an append; ValueError if it is not one."""
        if not isinstance(data, Mapping):
            raise ValueError(f"an append's answer is a JSON object, not {type(data).__name__}")
        read = _Reader(data)
        return cls(
            offset=read.integer("offset"),
            next_offset=read.integer("nextOffset"),
            cancel_requested=read.flag("cancelRequested"),
            cancel_reason=read.optional_text("cancelReason"),
        )


class Changes(TypedDict, total=False):
    """What ``update_job_with_notification`` (and a tracked job's ``update``) may change."""

    status: JobStatus | None
    progress: float | None
    message: str | None
    metadata: dict[str, Any] | None  # shallow-merged into the job's


def format_timestamp(moment: datetime) -> str:
    """ISO 8601 UTC with milliseconds and ``Z``, as the server writes its times."""
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


class _Reader:
    """Typed reads of one JSON object; each failure names the field."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self._data = data

    def _get(self, name: str, kinds: type | tuple[type, ...], what: str) -> Any:
        if name not in self._data:
            raise ValueError(f"{name}: missing")
        value = self._data[name]
        if isinstance(value, bool) or not isinstance(value, kinds):
            raise ValueError(f"{name}: expected {what}, got {type(value).__name__}")
        return value

    def text(self, name: str) -> str:
        value: str = self._get(name, str, "a string")
        return value

    def optional_text(self, name: str) -> str | None:
        return None if self._data.get(name) is None else self.text(name)

    def flag(self, name: str) -> bool:
        """A boolean that may be absent (or null): false then."""
        if self._data.get(name) is None:
            return False
        value = self._data[name]
        if not isinstance(value, bool):
            raise ValueError(f"{name}: expected a boolean, got {type(value).__name__}")
        return value

    def count(self, name: str) -> int:
        """A whole number of 0 or more that may be absent (or null): 0 then."""
        if self._data.get(name) is None:
            return 0
        value = self.integer(name)
        if value < 0:
            raise ValueError(f"{name}: expected 0 or more, got {value}")
        return value

    def number(self, name: str) -> float:
        return float(self._get(name, (int, float), "a number"))

    def integer(self, name: str) -> int:
        value: int = self._get(name, int, "an integer")
        return value

    def object(self, name: str) -> dict[str, Any]:
        value: dict[str, Any] = self._get(name, dict, "an object")
        return value

    def moment(self, name: str) -> datetime:
        text: str = self._get(name, str, "a timestamp")
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"{name}: {text!r} is not an ISO 8601 timestamp") from None
        return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
