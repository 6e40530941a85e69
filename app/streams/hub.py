"""Local fan-out: every change reaches every interested subscriber of this process.

    store ──publish(change)──▶ Hub ──offer──▶ Subscription ──live──▶ Mailbox ──▶ socket
                                  (per job, or all jobs + filter)   (one per connection)

Publishing never awaits, so one slow socket cannot hold up others: each
connection's :class:`~app.streams.mailbox.Mailbox` buffers, conflates, and
writes through (see :mod:`app.streams.mailbox`). The common case skips the
arrows: a change for streams whose writers are idle (SSE and WebSocket) goes
from the hub's own loop straight to their sockets (:meth:`Hub.publish`).

A :class:`Subscription` starts *unprimed*: it collects live changes while
its stream reads the current state from the store, then ``prime`` merges
the two so nothing is missed, nothing older than the snapshot follows it,
and nothing is sent twice; a :class:`~app.streams.events.Synced` marker between
them tells the client where the snapshot ends.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import cast

from websockets.protocol import State

from app.jobs import JobFilter
from app.streams.events import (
    OUTPUT_EVENT_BYTES,
    Backfill,
    Change,
    Output,
    Position,
    Synced,
    chunked,
)
from app.streams.frames import text_frame
from app.streams.mailbox import DirectResponse, DirectWebSocket, Flush, Mailbox, Pending

EVERY_JOB = JobFilter()
# SSE streams get their heartbeats in this many parts (by mailbox), one part at a time
# spread over the interval (app.tasks): all of them at once would hold up every change.
HEARTBEAT_PARTS = 15


class Subscription:
    """Interest in one job (``job_id``), with its output if ``output``, or in all jobs
    matching ``where``."""

    __slots__ = (
        "_early",
        "_floor_offset",
        "_floor_position",
        "_floor_version",
        "job_id",
        "mailbox",
        "output",
        "where",
    )

    def __init__(
        self,
        mailbox: Mailbox,
        *,
        job_id: str | None = None,
        where: JobFilter | None = None,
        output: bool = False,
    ) -> None:
        self.mailbox = mailbox
        self.job_id = job_id
        # Every unfiltered subscription shares one filter: the hub's loop tells it by identity.
        self.where = EVERY_JOB if where is None or where == EVERY_JOB else where
        self.output = output
        self._early: list[Change | Output] | None = []
        self._floor_version = 0
        self._floor_position: Position | None = None
        self._floor_offset = 0  # output chunks the client has, or has coming

    def offer(self, change: Change) -> None:
        if self._early is not None:
            self._hold(change)
        elif self._admits(change):
            self.mailbox.live(change)

    def offer_output(self, output: Output) -> None:
        if not self.output:
            return
        if self._early is not None:
            self._hold(output)
        else:
            self._add_output(output)

    def _hold(self, event: Change | Output) -> None:
        if len(self._early or ()) >= self.mailbox.capacity:
            self.mailbox.close("overflow")
        else:
            assert self._early is not None
            self._early.append(event)

    def _add_output(self, output: Output, *, live: bool = True) -> None:
        """Send or queue what the client does not have of ``output``."""
        floor = self._floor_offset
        if output.next_offset <= floor:
            return  # in the snapshot already
        if output.offset > floor:
            # Chunks between are missing here (a feed cannot skip, but if it did): the
            # client reconnects and reads them back from the store.
            self.mailbox.close("overflow")
            return
        self._floor_offset = output.next_offset
        if live:
            self.mailbox.live(output.after(floor))
        else:
            self.mailbox.add_output(output.after(floor))

    def prime(
        self,
        snapshot: Iterable[Change | Output | Backfill],
        *,
        version: int = 0,
        head: Position | None = None,
        offset: int = 0,
        synced: bool = True,
        final: bool = False,
    ) -> None:
        """Deliver the snapshot, its end (unless ``synced`` is false), then whatever
        arrived meanwhile that is newer.

        ``version`` (per-job) or ``head`` (all jobs), and ``offset`` (output), are
        what the client has once the snapshot is sent: anything at or below them
        is not sent again. ``final``: the job has ended, nothing follows the end.
        """
        early, self._early = self._early or [], None
        self._floor_version = version
        self._floor_position = head
        self._floor_offset = offset
        snapshot = list(snapshot)
        mailbox = self.mailbox
        mailbox.make_room(len(snapshot))
        for event in snapshot:
            if not isinstance(event, Change):
                mailbox.add_output(event)
            else:
                mailbox.put(event)
        if synced:
            held = offset if self.output else None
            marker = Synced(
                job_id=self.job_id, version=version, head=head, offset=held, final=final
            )
            mailbox.mark(marker)
        for event in early:
            if isinstance(event, Output):
                self._add_output(event, live=False)
            elif self._admits(event):
                mailbox.put(event)

    def covers(self, event: Pending) -> bool:
        """Whether this subscription would deliver ``event`` (ignoring what was sent)."""
        if isinstance(event, Synced | Output | Backfill) or self.job_id is not None:
            return event.job_id == self.job_id  # a marker names its subscription's job
        return self.where.admits(event)

    def _admits(self, change: Change) -> bool:
        if self.job_id is not None:
            return change.job is None or change.version > self._floor_version
        floor = self._floor_position
        return self.where.admits(change) and (floor is None or change.position > floor)


class Hub:
    def __init__(self) -> None:
        self.flush = Flush()  # for the streams' write-through
        self._by_job: dict[str, set[Subscription]] = {}
        self._all: set[Subscription] = set()
        self._pinged: list[set[Mailbox]] = [set() for _ in range(HEARTBEAT_PARTS)]
        self._parts = itertools.cycle(range(HEARTBEAT_PARTS))
        self._mailboxes: set[Mailbox] = set()

    @property
    def subscriptions(self) -> int:
        return len(self._all) + sum(len(subs) for subs in self._by_job.values())

    def publish(self, change: Change) -> None:
        flush = self.flush
        flush.begin()
        subscriptions = self._by_job.get(change.job_id, ())
        if flush.direct and not change.is_final:
            self._write_idle(change, subscriptions)
            self._write_idle(change, self._all)
            return
        for subscription in subscriptions:
            subscription.offer(change)
        for subscription in self._all:
            subscription.offer(change)

    def _write_idle(self, change: Change, subscriptions: Iterable[Subscription]) -> None:
        """Offer a change to ``subscriptions``, writing it to each idle stream's socket
        right here.

        What ``offer`` → :meth:`Mailbox.live` → the stream's write-through would do
        for such a stream (primed and behind this change, with no filter; its writer
        waits with nothing due; its socket takes writes now), done in this one loop: a
        Python call per subscriber is what a live change costs most, and here there
        are none but the WebSocket's state (see docs/performance.md). Every other
        case takes ``offer``: a filter, a busy writer, a paused socket, a state skipped
        and not yet counted, a compressed WebSocket or another server's (no
        ``direct``). The caller sees to the rest: the turn's first change
        (``flush.direct``), not a job's last.
        """
        version, position = change.version, change.position
        framed_by = None  # the SSE frame function the chunk below is for
        chunk = b""
        frame = b""  # the WebSocket frame, once one is written
        wrote = False
        for subscription in subscriptions:
            mailbox = subscription.mailbox
            direct = mailbox.direct
            waiter = mailbox._waiter
            floor = subscription._floor_position
            if (
                direct is None
                or subscription._early is not None
                # _admits, for a job's subscription and for an unfiltered one of all jobs
                or (
                    version <= subscription._floor_version
                    if subscription.job_id is not None
                    else subscription.where is not EVERY_JOB
                    or (floor is not None and position <= floor)
                )
                or waiter is None
                or waiter.done()
                or mailbox._due
                or mailbox.conflated
                or mailbox._through_last is change
            ):
                subscription.offer(change)
                continue
            # streaming.write_now's and send_now's tests, inline (a call per subscriber
            # is what this loop saves; the edge imports the hub): keep them alike. A
            # socket that cannot take it now leaves the change to offer, which sends it
            # through the server.
            if type(direct) is DirectResponse:
                cycle = direct.cycle
                if cycle.flow.write_paused or cycle.disconnected or cycle.response_complete:
                    subscription.offer(change)
                    continue
                if direct.frame is not framed_by:  # a job's stream, its output's, all jobs'
                    framed_by = direct.frame
                    chunk = chunked(framed_by(change))
                data, transport = chunk, cycle.transport
            else:
                socket = cast(DirectWebSocket, direct).socket
                if (
                    not socket.writable.is_set()
                    or socket.disconnected
                    or socket.close_sent
                    or socket.conn.state is not State.OPEN
                ):
                    subscription.offer(change)
                    continue
                if not frame:
                    frame = text_frame(change.ws_frame())
                data, transport = frame, socket.transport
            mailbox._through_last = change
            direct.metrics.sent += 1
            wrote = True
            try:
                transport.write(data)
            except Exception as error:
                mailbox.write_failed(error)
        if wrote:
            self.flush.arm()

    def publish_output(self, output: Output) -> None:
        """Chunks appended to a job's output: only its own subscriptions may want them."""
        self.flush.begin()
        subscriptions = self._by_job.get(output.job_id, ())
        for piece in output.pieces(OUTPUT_EVENT_BYTES) if subscriptions else ():
            for subscription in subscriptions:
                subscription.offer_output(piece)

    def subscribe(self, subscription: Subscription) -> Subscription:
        if subscription.job_id is None:
            self._all.add(subscription)
        else:
            self._by_job.setdefault(subscription.job_id, set()).add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        if subscription.job_id is None:
            self._all.discard(subscription)
            return
        subscriptions = self._by_job.get(subscription.job_id)
        if subscriptions is not None:
            subscriptions.discard(subscription)
            if not subscriptions:
                del self._by_job[subscription.job_id]

    def attach(self, mailbox: Mailbox, *, heartbeat: bool) -> None:
        """Track a connection's mailbox, for shutdown and (SSE) heartbeats."""
        self._mailboxes.add(mailbox)
        if heartbeat:  # the parts in turn, so that they stay alike in size
            self._pinged[next(self._parts)].add(mailbox)

    def detach(self, mailbox: Mailbox) -> None:
        self._mailboxes.discard(mailbox)
        for part in self._pinged:
            part.discard(mailbox)

    def ping(self, part: int = 0, parts: int = 1) -> None:
        """A heartbeat for the SSE streams of one part in ``parts`` (by default all of
        them): each of HEARTBEAT_PARTS goes with exactly one of ``part`` 0 to ``parts`` - 1.

        An idle stream's socket is written right here, as :meth:`_write_idle` writes a
        change: a thousand writers woken at once hold up the loop, and every change
        published meanwhile, for tens of milliseconds. Any other stream's writer is
        woken to send it after what it has.
        """
        for index in range(part, HEARTBEAT_PARTS, parts):
            for mailbox in self._pinged[index]:
                direct = mailbox.direct
                if type(direct) is DirectResponse and mailbox.waiting and not mailbox._due:
                    cycle = direct.cycle
                    if not (
                        cycle.flow.write_paused or cycle.disconnected or cycle.response_complete
                    ):
                        try:
                            cycle.transport.write(direct.ping)
                        except Exception as error:
                            mailbox.write_failed(error)
                        continue
                mailbox.ping()

    def cut_stalled(self, now: float, timeout: float) -> None:
        """Close every mailbox whose send has been blocked for ``timeout`` seconds."""
        for mailbox in self._mailboxes:
            since = mailbox.sending_since
            if since is not None and now - since >= timeout:
                mailbox.close("slow")

    def close(self) -> None:
        """End every stream cleanly (server shutdown): clients reconnect and resume."""
        for mailbox in self._mailboxes:
            mailbox.close("shutdown")
