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
  lease gives all of it back and counts what the connection cost.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from app.auth import Access, load_job, scope_filter
from app.jobs import JobFilter
from app.metrics import TransportMetrics
from app.runtime import Runtime
from app.streams.events import OUTPUT_EVENT_BYTES, Change, Event, Output, Position
from app.streams.hub import Subscription
from app.streams.limits import Slot
from app.streams.mailbox import Mailbox, WriteThrough


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
        read = await runtime.store.read_output(job_id, held, None) if held is not None else None
    except BaseException:
        hub.unsubscribe(subscription)
        raise
    total = read.total if read is not None else 0
    if holds_the_end(known, current) and (held is None or held >= total):
        hub.unsubscribe(subscription)
        return Followed(None, current)
    snapshot: list[Change | Output] = [] if known == current.version else [current]
    if read is not None:
        # At the version the client will hold (the read may have seen a later one).
        chunks = Output(job_id, current.version, read.output.offset, read.output.bodies)
        if snapshot:  # the output the job had at its current state goes before that state
            assert current.job is not None  # a removed job cannot be read
            split = current.job.output_size or 0
            earlier, chunks = chunks.until(split), chunks.after(split)
            if earlier.bodies:
                # Sent before the state the client lacks, at the version it holds: its id
                # must not claim that state, or a resume from it would never send it.
                before = Output(job_id, known or 0, earlier.offset, earlier.bodies)
                snapshot[:0] = before.pieces(OUTPUT_EVENT_BYTES)
        if chunks.bodies:
            snapshot.extend(chunks.pieces(OUTPUT_EVENT_BYTES))
    # A client claiming more than there is gets what comes next, from the real end.
    subscription.prime(snapshot, version=current.version, offset=total, final=current.is_final)
    return Followed(subscription, current)


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

    def write_through(self, write: WriteThrough) -> None:
        """Live events for the idle connection go to ``write`` (see :meth:`Mailbox.live`);
        once its response has started."""
        self.mailbox.write_through(write, self._runtime.hub.flush)

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
