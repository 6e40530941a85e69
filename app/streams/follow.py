"""What the SSE and WebSocket streams share: following jobs, and holding a connection.

Both transports do the same steps and differ only in how they frame what
they send (:mod:`app.streams.sse`, :mod:`app.streams.ws`):

- :func:`follow_job`: subscribe to one job, read it (checking the caller
  may), and prime the subscription with the job unless the client already
  has that version, so nothing is missed between the read and the
  subscription, nothing is sent twice, and the snapshot ends with
  ``synced``. A client that already holds the terminal state gets nothing.
- :func:`follow_all`: the same for every job a filter (narrowed to what the
  caller may read) admits, resuming after a cursor when the client gives
  one; an all-jobs snapshot spends one of the client's snapshots.
- :class:`Lease`: a streaming connection's hold on the process for its
  whole life: a stream slot, its mailbox's place in the hub (shutdown,
  heartbeats, the slow-reader check), the connection gauge, and the end of
  its credential (the stream closes when its token expires). Ending the
  lease gives all of it back and counts what the connection cost. What its
  writer takes from the mailbox it sends through :meth:`Lease.sendable`,
  which reads back the output left in the store a page at a time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass

from app.auth import Access, load_job, scope_filter
from app.errors import BackendUnavailable, JobGone, JobNotFound
from app.jobs import JobFilter
from app.metrics import TransportMetrics
from app.runtime import Runtime
from app.store import JobStore
from app.streams.events import OUTPUT_EVENT_BYTES, Backfill, Change, Event, Output, Position
from app.streams.hub import Subscription
from app.streams.limits import Slot
from app.streams.mailbox import Direct, Mailbox, Pending, WriteThrough

# A stream reads a job's output a page at a time, of about PAGE_BYTES (one event): the
# first with the job, each after it once the one before it has gone out. The job's read
# asks for FIRST_PAGE chunks (at most 64 KiB each) and keeps a page of them; a read back
# asks for one, and then for as many as the one before suggests fit a page.
PAGE_BYTES = OUTPUT_EVENT_BYTES
FIRST_PAGE = 4
_MOST_CHUNKS_A_PAGE = 1024


@dataclass(frozen=True, slots=True)
class Followed:
    """One job followed: its subscription (None when nothing will follow, the client
    holding the terminal state already) and the job as it was read."""

    subscription: Subscription | None
    current: Change

    @property
    def has_the_end(self) -> bool:
        return self.subscription is None


async def follow_job(
    runtime: Runtime,
    access: Access,
    mailbox: Mailbox,
    job_id: str,
    known: int | None,
    held: int | None = None,
) -> Followed:
    """Follow ``job_id`` into ``mailbox``; ``known`` is the version the client holds,
    and ``held``, when it follows the job's output too, the output chunks it holds.

    The snapshot is what the client lacks, in the order it happened: the output
    appended before the job's current state, that state, then the output since.
    Raises what reading the job raises (not found, gone, forbidden), subscribed to nothing.
    """
    hub = runtime.hub
    output = held is not None
    subscription = hub.subscribe(Subscription(mailbox, job_id=job_id, output=output))
    try:
        current = await load_job(access, job_id, runtime.store)
        read = None
        if held is not None:
            read = await runtime.store.read_output(job_id, held, FIRST_PAGE)
    except BaseException:
        hub.unsubscribe(subscription)
        raise
    total = read.total if read is not None else 0
    if holds_the_end(known, current) and (held is None or held >= total):
        hub.unsubscribe(subscription)
        return Followed(None, current)
    snapshot: list[Change | Output | Backfill] = [] if known == current.version else [current]
    if read is not None:
        page = read.output.pieces(PAGE_BYTES)[0]
        if snapshot:  # the output the job had at its current state goes before that state
            assert current.job is not None  # a removed job cannot be read
            split = current.job.output_size or 0
            # Sent before the state the client lacks, at the version it holds: its id
            # must not claim that state, or a resume from it would never send it.
            snapshot[:0] = output_events(page, known or 0, page.offset, min(split, total))
            snapshot += output_events(page, current.version, split, total)
        else:
            # At the version the client will hold (the read may have seen a later one).
            snapshot += output_events(page, current.version, page.offset, total)
    # A client claiming more than there is gets what comes next, from the real end.
    subscription.prime(snapshot, version=current.version, offset=total, final=current.is_final)
    return Followed(subscription, current)


def output_events(page: Output, version: int, start: int, stop: int) -> list[Output | Backfill]:
    """Chunks ``start`` to ``stop`` of a job's output as events at ``version``: those
    ``page`` holds in pieces, the rest left in the store."""
    events: list[Output | Backfill] = []
    first = max(start, page.offset)
    chunks = page.after(first).until(stop)
    if chunks.bodies:
        events += Output(page.job_id, version, chunks.offset, chunks.bodies).pieces(
            OUTPUT_EVENT_BYTES
        )
    rest = max(first, page.next_offset)
    if rest < stop:
        events.append(Backfill(page.job_id, version, rest, stop))
    return events


async def read_back(store: JobStore, backfill: Backfill) -> AsyncIterator[list[Event]]:
    """The chunks ``backfill`` left in the store, a page of output events at a time."""
    offset, limit = backfill.offset, 1  # chunks: until one is read, any may be 64 KiB
    while offset < backfill.end:
        try:
            read = await store.read_output(
                backfill.job_id, offset, min(limit, backfill.end - offset)
            )
        except (JobNotFound, JobGone):
            return  # deleted meanwhile: its removal follows
        if read.output.offset != offset or not read.output.bodies:
            return  # never, as output is only appended to; nothing to send if it were
        page = Output(backfill.job_id, backfill.version, offset, read.output.bodies)
        yield list(page.pieces(OUTPUT_EVENT_BYTES))
        offset = page.next_offset
        # About PAGE_BYTES a read, whether the chunks are a token or 64 KiB each; growing
        # by four at most, so that a few small chunks before large ones ask for few.
        fitting = limit * PAGE_BYTES // max(1, page.size)
        limit = max(1, min(_MOST_CHUNKS_A_PAGE, 4 * limit, fitting))


def holds_the_end(known: int | None, current: Change) -> bool:
    """Whether a client holding version ``known`` has the job's terminal state already."""
    return known == current.version and current.is_final


@dataclass(frozen=True, slots=True)
class FollowedAll:
    """Every job a filter admits, followed: the subscription, the filter in force (an
    owner token's narrowed to its owner), where its snapshot ends, and whether the
    client's cursor could not be resumed (so the snapshot is the whole state)."""

    subscription: Subscription
    where: JobFilter
    head: Position
    reset: bool


async def follow_all(
    runtime: Runtime,
    access: Access,
    mailbox: Mailbox,
    where: JobFilter,
    cursor: str | None,
    client: str | None,
) -> FollowedAll:
    """Follow every job ``where`` admits into ``mailbox``, resuming after ``cursor``.

    ``client`` (its address) spends one of its snapshots. Raises, subscribed to
    nothing, when the caller may not read these jobs, is over its snapshot
    budget, or the store cannot be read.
    """
    where = scope_filter(access, where)
    runtime.streams.admit_snapshot(client)
    after = Position.parse(cursor) if cursor is not None else None
    hub = runtime.hub
    subscription = hub.subscribe(Subscription(mailbox, where=where))
    try:
        replay = await runtime.store.replay(where, after)
    except BaseException:
        hub.unsubscribe(subscription)
        raise
    subscription.prime(replay.changes, head=replay.head)
    # A cursor we could not read (garbage, or from a restarted server) is a reset too.
    reset = replay.reset or (cursor is not None and after is None)
    return FollowedAll(subscription, where, replay.head, reset)


class Lease:
    """A streaming connection's hold on the process (see the module docstring)."""

    __slots__ = ("_expiry", "_runtime", "_started", "mailbox", "metrics", "slot")

    def __init__(self, runtime: Runtime, metrics: TransportMetrics) -> None:
        """Take a stream slot (TooManyStreams when none is free) and a mailbox."""
        self.slot: Slot = runtime.streams.acquire()
        self._runtime = runtime
        self.metrics = metrics
        self.mailbox = Mailbox(runtime.settings.subscriber_backlog)
        self._expiry: asyncio.TimerHandle | None = None
        self._started = False

    def start(self, access: Access, *, heartbeat: bool) -> None:
        """The connection streams from now on: attach it, count it, and end it with its
        token (one timer per connection)."""
        self._started = True
        self._runtime.hub.attach(self.mailbox, heartbeat=heartbeat)
        self.metrics.connections.inc()
        if access.expires_at is not None:
            delay = max(0.0, access.expires_at - time.time())
            loop = asyncio.get_running_loop()
            self._expiry = loop.call_later(delay, self.mailbox.close, "expired")

    def write_through(self, write: WriteThrough, direct: Direct | None = None) -> None:
        """Live events for the idle connection go to ``write`` (see :meth:`Mailbox.live`),
        or to ``direct``'s socket if given; once its response has started."""
        self.mailbox.write_through(write, self._runtime.hub.flush, direct)

    async def sendable(self, pending: list[Pending]) -> AsyncGenerator[list[Event]]:
        """What the writer took from the mailbox, in batches to send in order, with
        each backfill read back a page at a time as the batch before it has gone out;
        at least one batch (one empty batch: nothing to send, or only a ping). A store
        that cannot be read closes the mailbox: the client resumes from what it got."""
        batch: list[Event] = []
        sent_any = False
        try:
            for item in pending:
                if not isinstance(item, Backfill):
                    batch.append(item)
                    continue
                if batch:
                    yield batch
                    batch, sent_any = [], True
                async for page in read_back(self._runtime.store, item):
                    yield page
                    sent_any = True
        except BackendUnavailable:
            self.mailbox.close("unavailable")
            return
        if batch or not sent_any:
            yield batch

    def sent(self, events: list[Event], *, output: bool) -> None:
        """Count ``events`` as written, and the states skipped before them; with
        ``output``, the output chunks among them."""
        metrics, mailbox = self.metrics, self.mailbox
        if mailbox.conflated:
            metrics.conflated.inc(mailbox.take_conflated())
        metrics.sent += len(events)
        if output:
            metrics.count_output(events)

    def end(self, *subscriptions: Subscription | None) -> bool:
        """Give back everything (once started); whether the client was cut for not reading."""
        hub, mailbox, metrics = self._runtime.hub, self.mailbox, self.metrics
        mailbox.stop_writing_through()
        if self._expiry is not None:
            self._expiry.cancel()
        for subscription in subscriptions:
            if subscription is not None:
                hub.unsubscribe(subscription)
        self.slot.release()
        if not self._started:  # nothing was attached or counted
            return False
        hub.detach(mailbox)
        metrics.connections.dec()
        metrics.conflated.inc(mailbox.take_conflated())
        cut = mailbox.closed in ("slow", "overflow")
        if cut:
            metrics.slow_disconnects.inc()
        return cut
