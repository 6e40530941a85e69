"""Events: one accepted change to a job, chunks appended to a job's output, each
encoded once for every transport, and the marker that ends a snapshot.

Every write the store accepts produces one :class:`Change` with the full job
(or, for a clean-up, only the id) and its :class:`Position` in the change
feed. The SSE and WebSocket encodings are computed on first use and then
shared by every subscriber: serialize once, write many.

A subscription's stream starts with a snapshot (the state as of
connecting, or what changed since the client's cursor) and goes on live;
:class:`Synced` sits between the two, so clients never guess when the
snapshot is over.
"""

from __future__ import annotations

import collections
import operator
from collections.abc import Callable, Iterable, Iterator, Sized
from typing import Any, Generic, NamedTuple, TypeVar

import orjson

from app.models import Job, JobStatus, JobType, encode
from app.validation import whole_number


class Position(NamedTuple):
    """Where a change sits in the feed of all changes: ordered, opaque on the wire.

    ``epoch`` tells feeds apart (a restarted memory store starts a new one);
    ``seq`` counts within it. A tuple, because every live change is compared
    with every subscriber's floor: tuple comparison runs in C.
    """

    epoch: int
    seq: int

    def __str__(self) -> str:
        return f"{self.epoch}-{self.seq}"

    @classmethod
    def parse(cls, text: str) -> Position | None:
        epoch, sep, seq = text.strip().partition("-")
        # Each part is at most 64 bits (a Redis stream id): 20 digits.
        parts = whole_number(epoch, 20), whole_number(seq, 20)
        if not sep or parts[0] is None or parts[1] is None:
            return None
        return cls(parts[0], parts[1])


class Change:
    """A job's new state (``job`` set) or its removal (``job`` is ``None``)."""

    __slots__ = (
        "_data",
        "_sse_all",
        "_sse_job",
        "_sse_out",
        "_ws",
        "is_final",
        "job",
        "job_id",
        "job_type",
        "owner",
        "position",
        "previous_status",
        "version",
    )

    def __init__(
        self,
        *,
        job_id: str,
        job_type: JobType,
        position: Position,
        job: Job | None,
        previous_status: JobStatus | None = None,
        owner: str | None = None,
    ) -> None:
        self.job_id = job_id
        self.job_type = job_type
        # A removal has no job left to ask: owner filters need it on the change.
        self.owner = job.owner if job is not None else owner
        self.position = position
        self.job = job
        self.previous_status = previous_status
        # Read for every subscriber a change is offered to: worked out once.
        self.version = job.version if job is not None else 0
        # Nothing can follow this change for this job but its removal.
        self.is_final = job is None or job.is_terminal
        self._data: bytes | None = None
        self._sse_job: bytes | None = None
        self._sse_all: bytes | None = None
        self._sse_out: bytes | None = None
        self._ws: str | None = None

    @classmethod
    def of(cls, job: Job, position: Position, previous_status: JobStatus | None = None) -> Change:
        return cls(
            job_id=job.job_id,
            job_type=job.job_type,
            position=position,
            job=job,
            previous_status=previous_status,
        )

    @property
    def data(self) -> bytes:
        """The JSON the events carry: the full job, or `{"jobId": ...}` for a removal."""
        if self._data is None:
            job = self.job
            self._data = encode(job) if job is not None else orjson.dumps({"jobId": self.job_id})
        return self._data

    @property
    def kind(self) -> str:
        return "job" if self.job is not None else "removed"

    def sse_for_job_stream(self) -> bytes:
        """SSE frame for ``/api/jobs/{jobId}/events``: ``id`` is the job's version; a removal
        has none, so that the client keeps the last version it saw."""
        if self._sse_job is None:
            version = str(self.version) if self.job is not None else None
            self._sse_job = _sse(self.kind, self.data, version)
        return self._sse_job

    def sse_for_output_stream(self) -> bytes:
        """SSE frame for ``/api/jobs/{jobId}/events?output=1``: ``id`` is the version and
        the output the job had then (everything appended before this change is sent
        before it, so that is what the client holds)."""
        if self._sse_out is None:
            job = self.job
            event_id = f"{job.version}.{job.output_size or 0}" if job is not None else None
            self._sse_out = _sse(self.kind, self.data, event_id)
        return self._sse_out

    def sse_for_all_stream(self) -> bytes:
        """SSE frame for ``/api/jobs/events``: ``id`` is the feed position."""
        if self._sse_all is None:
            self._sse_all = _sse(self.kind, self.data, str(self.position))
        return self._sse_all

    def ws_frame(self) -> str:
        if self._ws is None:
            key = "job" if self.job is not None else "jobId"
            value: Any = orjson.Fragment(self.data) if self.job is not None else self.job_id
            self._ws = orjson.dumps(
                {"type": self.kind, "cursor": str(self.position), key: value}
            ).decode()
        return self._ws


# Output is sent in events of at most this many bytes of chunks (one larger chunk alone),
# whatever an append held: a reader on a slow link hears of its stream between them (one
# 4 MiB event could take minutes, and a client watching for heartbeats would take the
# stream for dead), and no event outgrows what a client reads as one (httpx's 1 MiB).
OUTPUT_EVENT_BYTES = 64 * 1024


class Output:
    """Chunks appended to one job's output, as one append made them (or a slice of
    that, or a page read back from the store), with the offset of the first.

    ``bodies`` are the chunks' JSON without their offset (``{"data":…,"kind":…}``),
    as the store keeps them: the offset is spliced in when framed, once for every
    subscriber. ``version`` is the job's version when they were appended: a stream
    that sends them holds ``<version>.<next_offset>``.
    """

    __slots__ = ("_size", "_sse", "_ws", "bodies", "job_id", "offset", "version")
    is_final = False

    def __init__(self, job_id: str, version: int, offset: int, bodies: list[bytes]) -> None:
        self.job_id = job_id
        self.version = version
        self.offset = offset
        self.bodies = bodies
        self._size: int | None = None
        self._sse: bytes | None = None
        self._ws: str | None = None

    @property
    def next_offset(self) -> int:
        return self.offset + len(self.bodies)

    @property
    def size(self) -> int:
        """The chunks' bytes (counted once: every subscriber is offered the same event)."""
        if self._size is None:
            self._size = sum(map(len, self.bodies))
        return self._size

    def after(self, offset: int) -> Output:
        """The chunks from ``offset`` on (this event itself when that is all of them)."""
        if offset <= self.offset:
            return self
        return Output(self.job_id, self.version, offset, self.bodies[offset - self.offset :])

    def pieces(self, most: int) -> list[Output]:
        """These chunks as consecutive events of at most ``most`` bytes of chunks each (one
        chunk larger than that alone): a reader gets a long output a piece at a time."""
        pieces: list[Output] = []
        start, size = 0, 0
        for index, body in enumerate(self.bodies):
            if index > start and size + len(body) > most:
                pieces.append(
                    Output(self.job_id, self.version, self.offset + start, self.bodies[start:index])
                )
                start, size = index, 0
            size += len(body)
        if start < len(self.bodies) or not pieces:
            pieces.append(self.after(self.offset + start))
        return pieces

    def until(self, offset: int) -> Output:
        """The chunks before ``offset``."""
        return Output(
            self.job_id, self.version, self.offset, self.bodies[: max(0, offset - self.offset)]
        )

    def chunks(self) -> bytes:
        """The chunks as a JSON array, each with its offset."""
        return (
            b"["
            + b",".join(chunk_json(self.offset + i, b) for i, b in enumerate(self.bodies))
            + b"]"
        )

    def data(self) -> bytes:
        return b'{"jobId":' + orjson.dumps(self.job_id) + b',"chunks":' + self.chunks() + b"}"

    def sse_for_output_stream(self) -> bytes:
        if self._sse is None:
            self._sse = _sse("output", self.data(), f"{self.version}.{self.next_offset}")
        return self._sse

    def ws_frame(self) -> str:
        if self._ws is None:
            self._ws = (b'{"type":"output",' + self.data()[1:]).decode()
        return self._ws


class Backfill:
    """Chunks ``offset`` to ``end`` of a job's output that a connection has coming, left
    in the store until its writer gets to them: a connection holds at most a bounded
    share of a job's output, however far behind it is or however much it asked for.

    Sent as :class:`Output` events at ``version``, read back a page at a time.
    """

    __slots__ = ("end", "job_id", "offset", "version")
    is_final = False

    def __init__(self, job_id: str, version: int, offset: int, end: int) -> None:
        self.job_id = job_id
        self.version = version
        self.offset = offset
        self.end = end

    def __repr__(self) -> str:
        return f"Backfill({self.job_id!r}, {self.version}, {self.offset}, {self.end})"


def chunk_json(offset: int, body: bytes) -> bytes:
    """A chunk on the wire: its stored JSON with ``offset`` first."""
    return b'{"offset":%d,%s' % (offset, body[1:])


class Synced:
    """The end of one subscription's snapshot: what came before was the state as of
    connecting (or of the resumed range), what follows is live.

    Its cursor is what the client holds once it has the snapshot: the job's
    ``version`` on a per-job stream, the feed ``head`` on the all-jobs stream.
    """

    __slots__ = ("head", "is_final", "job_id", "offset", "version")

    def __init__(
        self,
        *,
        job_id: str | None,
        version: int,
        head: Position | None,
        offset: int | None = None,
        final: bool = False,
    ) -> None:
        self.job_id = job_id  # None: the all-jobs subscription's
        self.version = version
        self.head = head
        self.offset = offset  # the output held, on a subscription that follows output
        # The job had ended: nothing follows the snapshot (a client that held the end
        # and only lacked output gets no terminal event to end its stream on).
        self.is_final = final

    def passed(self, change: Change) -> None:
        """``change`` now comes before this marker: the cursor it gives covers it too."""
        if self.job_id is None:
            if self.head is None or change.position > self.head:
                self.head = change.position
        elif change.job_id == self.job_id:
            self.version = max(self.version, change.version)
            if self.offset is not None and change.job is not None:
                self.offset = max(self.offset, change.job.output_size or 0)

    def sse_for_job_stream(self) -> bytes:
        return _sse("synced", b"{}", str(self.version))

    def sse_for_all_stream(self) -> bytes:
        return _sse("synced", b"{}", str(self.head))

    def sse_for_output_stream(self) -> bytes:
        return _sse("synced", b"{}", f"{self.version}.{self.offset or 0}")

    def ws_frame(self) -> str:
        frame: dict[str, object]
        if self.job_id is not None:
            frame = {"type": "synced", "jobId": self.job_id, "version": self.version}
            if self.offset is not None:
                frame["nextOffset"] = self.offset
        else:
            frame = {"type": "synced", "all": True, "cursor": str(self.head)}
        return orjson.dumps(frame).decode()


Event = Change | Synced | Output


def job_stream_frame(event: Event) -> bytes:
    """SSE frame of ``/api/jobs/{jobId}/events``."""
    assert not isinstance(event, Output)  # only subscriptions to output get it
    return event.sse_for_job_stream()


def output_stream_frame(event: Event) -> bytes:
    """SSE frame of ``/api/jobs/{jobId}/events?output=1``."""
    return event.sse_for_output_stream()


def all_stream_frame(event: Event) -> bytes:
    """SSE frame of ``/api/jobs/events``."""
    assert not isinstance(event, Output)  # only subscriptions to one job's output get it
    return event.sse_for_all_stream()


def ws_frame(event: Event) -> str:
    return event.ws_frame()


S = TypeVar("S", bound=Sized)
F = TypeVar("F")
M = TypeVar("M")


def encoded(changes: list[Event], frame: Callable[[Event], F]) -> Iterator[F]:
    """Each event's frame, letting go of each event (``changes`` is emptied) once
    it is encoded: a snapshot read from Redis is one connection's own, and this
    keeps one frame of it alive at a time, not the whole snapshot's."""
    pending = collections.deque(changes)
    changes.clear()
    while pending:
        yield frame(pending.popleft())


class Latest(Generic[M]):
    """What was last made from a list of events or frames: a turn's live changes are the
    same ones, in the same order, for every connection that gets them all, so each
    connection after the first takes what the first made (its frames, joined)."""

    __slots__ = ("items", "made")

    def __init__(self, made: M) -> None:
        self.items: tuple[object, ...] = ()
        self.made = made

    def made_from(self, items: list[Any]) -> bool:
        """Whether :attr:`made` was made from these very items (the same, not equal)."""
        kept = self.items
        return len(items) == len(kept) and not any(map(operator.is_not, items, kept))

    def keep(self, items: list[Any], made: M) -> None:
        self.items = tuple(items)  # a copy: the caller's list may change (see encoded)
        self.made = made


def grouped(frames: Iterable[S], limit: int) -> Iterator[list[S]]:
    """``frames`` in consecutive groups of about ``limit`` in total length (one write each)."""
    group: list[S] = []
    size = 0
    for frame in frames:
        group.append(frame)
        size += len(frame)
        if size >= limit:
            yield group
            group = []
            size = 0
    if group:
        yield group


def chunked(body: bytes) -> bytes:
    """``body`` as one chunk of an HTTP response sent chunked, as uvicorn sends streams."""
    return b"%x\r\n%b\r\n" % (len(body), body)


def _sse(event: str, data: bytes, event_id: str | None) -> bytes:
    # Imported here, not with the module: importing sse-starlette patches uvicorn's exit
    # handler for its own streams, and building the app must not touch uvicorn.
    from sse_starlette import ServerSentEvent

    return ServerSentEvent(data.decode(), event=event, id=event_id, sep="\n").encode()
