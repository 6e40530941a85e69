"""One connection's buffer of what it has still to be sent, and how it is sent.

A :class:`Mailbox` is bounded and conflating: it keeps only the newest change
per job, in feed order, and wakes its writer (the connection's task) only
when the writer is waiting. A reader slower than the jobs change skips
intermediate states, never the latest one; a mailbox that would hold more
than ``capacity`` jobs is closed instead, and its client reconnects and
resumes.

A live change for a connection whose writer is idle (waiting, nothing
pending) does not wake it: :meth:`Mailbox.live` hands it to the stream's
write-through, which writes it at once (see :mod:`app.streams.eager`): the
turn's first change from the publisher, later ones together at the end of
the turn (:class:`Flush`). Only a send that has to wait is left to the
writer (:meth:`Mailbox.settle`). A snapshot, a control frame or a job's last
change always wakes the writer, and goes out in order behind what is queued.

Writers send through :meth:`Mailbox.deliver`: a send blocked on a client
that stopped reading is cut short the moment its mailbox closes, for
whatever reason but shutdown (overflow, the client leaving), and the hub's
one periodic :meth:`~app.streams.hub.Hub.cut_stalled` closes mailboxes whose
send has been blocked longer than the send timeout. No timer per send: most
sends never block at all.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Literal, cast

from app.streams.eager import Suspended
from app.streams.events import Backfill, Change, Event, Output, Synced

if TYPE_CHECKING:
    from uvicorn.protocols.http.httptools_impl import RequestResponseCycle
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

    from app.metrics import TransportMetrics

logger = logging.getLogger("jobcast")
# A stream's write-through: writes live events now, or returns the send it began and
# that has to wait, for the stream's writer to finish.
WriteThrough = Callable[[list[Event]], Suspended | None]
CloseReason = Literal[
    "gone", "overflow", "slow", "shutdown", "done", "expired", "flood", "too_big", "unavailable"
]
# What a writer takes: events, and output it has coming that is left in the store.
Pending = Event | Backfill
# A connection holds about this much of jobs' output waiting (one event's worth): the
# rest waits in the store, and its writer reads it back as it goes.
OUTPUT_HELD_BYTES = 64 * 1024


class DirectResponse:
    """An SSE response on uvicorn's httptools (chunked), as the hub's own loop writes a
    live change or a heartbeat to its socket itself (:meth:`~app.streams.hub.Hub.publish`,
    :meth:`~app.streams.hub.Hub.ping`): its request cycle, what frames its events, its
    heartbeat as a chunk, and its transport's count of events sent."""

    __slots__ = ("cycle", "frame", "metrics", "ping")

    def __init__(
        self,
        cycle: RequestResponseCycle,
        frame: Callable[[Event], bytes],
        ping: bytes,
        metrics: TransportMetrics,
    ) -> None:
        self.cycle = cycle
        self.frame = frame
        self.ping = ping
        self.metrics = metrics


class DirectWebSocket:
    """A WebSocket on uvicorn's websockets-sansio (uncompressed), as the hub's own loop
    writes a live change to its socket itself: its protocol, and its transport's count."""

    __slots__ = ("metrics", "socket")

    def __init__(self, socket: WebSocketsSansIOProtocol, metrics: TransportMetrics) -> None:
        self.socket = socket
        self.metrics = metrics


Direct = DirectResponse | DirectWebSocket


class Flush:
    """Writing through, turn by turn of the loop.

    A worker reporting progress one request after another publishes one change a
    turn: that change is written through at once, from the publisher (``direct``).
    When a turn publishes more (several requests read at once, a busy server), every
    change after the first queues, and one callback at the end of the turn writes
    what each idle connection got as one write. A turn that saw such a burst makes
    the next turn queue from its first change too (``burst``), so a busy server
    writes once per connection per turn; one quiet turn goes back to writing at once.
    No task is woken per subscriber either way.
    """

    __slots__ = ("_due", "_later", "armed", "burst", "direct")

    def __init__(self) -> None:
        self._due: list[Mailbox] = []
        self.armed = False  # something was written through this turn: its end is scheduled
        self.direct = True  # the change being published is written through at once
        self.burst = False  # the last turn that wrote through published more than one change
        self._later = 0  # changes published this turn after something was written through

    def begin(self) -> None:
        """A change is about to be published."""
        if self.armed:
            self._later += 1
            self.direct = False
        else:
            self.direct = not self.burst

    def arm(self) -> None:
        """Something is written through this turn: end the turn with :meth:`_run`."""
        if not self.armed:
            self.armed = True
            asyncio.get_running_loop().call_soon(self._run)

    def add(self, mailbox: Mailbox) -> None:
        """``mailbox`` has changes to write through at the end of the turn."""
        self.arm()
        self._due.append(mailbox)

    def _run(self) -> None:
        self.armed = False
        self.burst, self._later = self._later > 0, 0
        due, self._due = self._due, []
        for mailbox in due:
            mailbox.flush()


class Mailbox:
    __slots__ = (
        "_control",
        "_due",
        "_flush",
        "_markers",
        "_open",
        "_output_bytes",
        "_pending",
        "_through",
        "_through_last",
        "_underway",
        "_waiter",
        "_writer",
        "backlog",
        "capacity",
        "closed",
        "conflated",
        "direct",
        "ping_due",
        "sending_since",
    )

    def __init__(self, capacity: int) -> None:
        self.backlog = capacity  # how far a reader may fall behind live changes
        self.capacity = capacity
        # A change is keyed by its job (a newer one replaces it), a marker or output by itself.
        self._pending: dict[str | Synced | Output | Backfill, Pending] = {}
        self._output_bytes = 0  # of the output events among what is pending
        # Each job's last pending backfill, while later output of the job may extend it.
        self._open: dict[str, Backfill] | None = None
        self._markers: list[Synced] | None = None  # the markers among what is pending
        self._control: list[str] = []
        self._waiter: asyncio.Future[None] | None = None
        self.closed: CloseReason | None = None
        self.conflated = 0
        self.ping_due = False
        self._writer: asyncio.Task[object] | None = None  # the task that delivers
        self.sending_since: float | None = None  # time.monotonic() of the send in progress
        self._through: WriteThrough | None = None
        self._flush: Flush | None = None
        self._due = False  # in the flush of this turn
        # The event last written through directly: a connection subscribed twice to
        # what one change concerns (its job, and all jobs) is offered it twice, the second
        # time perhaps after its send had to wait and woke the writer.
        self._through_last: Change | Output | None = None
        self._underway: Suspended | None = None  # a write-through's send left to the writer
        # The socket the hub writes itself while the writer is idle (Hub.publish,
        # which reads _waiter, _due and _through_last too).
        self.direct: Direct | None = None

    def write_through(
        self, write: WriteThrough, flush: Flush, direct: Direct | None = None
    ) -> None:
        """From now on, :meth:`live` events for an idle writer go to ``write``, from
        ``flush`` at the end of the loop's turn; or straight to ``direct``'s socket, if
        given, from the hub's own loop (:meth:`Hub.publish`)."""
        self._through = write
        self._flush = flush
        self.direct = direct

    def stop_writing_through(self) -> None:
        """Let go of the stream's write-through (its stream is over). The write-through
        is the stream's, which holds this mailbox: left in place, that cycle would
        keep a closed connection's objects for the cyclic collector to find."""
        self._through = self._flush = self._through_last = self.direct = None

    @property
    def waiting(self) -> bool:
        """Whether the writer is idle: waiting in :meth:`wait` for something to send."""
        waiter = self._waiter
        return waiter is not None and not waiter.done()

    def live(self, event: Change | Output) -> None:
        """A live event. For an idle writer it is written through without waking the
        writer: now if it is the turn's first change, else at the end of the turn
        (:class:`Flush`). A job's last event always wakes the writer, which may have
        to end the stream after it."""
        waiter, flush = self._waiter, self._flush
        if event is self._through_last:
            return  # offered again (a second subscription): written through already
        # `waiting`, inline: this runs for every subscriber of every change.
        if flush is None or waiter is None or waiter.done() or event.is_final:
            if isinstance(event, Output):
                self.add_output(event)
            else:
                self.put(event)
        elif flush.direct and not self._due:
            self._through_last = event
            if not flush.armed:  # arm() checks too; this saves the call per subscriber
                flush.arm()
            self._write_through([event])
        elif self._queue(event) and not self._due:
            self._due = True
            flush.add(self)

    def flush(self) -> None:
        """Write through what :meth:`live` queued for the idle writer (from :class:`Flush`)."""
        self._due = False
        waiter = self._waiter
        if waiter is None or waiter.done() or not self._pending:
            return  # the writer woke meanwhile (a marker, a reply, a close): it takes it all
        # No backfill: queuing one wakes the writer.
        self._write_through(cast(list[Event], self.take()))

    def _write_through(self, events: list[Event]) -> None:
        assert self._through is not None
        try:
            underway = self._through(events)
        except Exception as error:
            self.write_failed(error)
            return
        if underway is not None:
            self._underway = underway
            self.sending_since = time.monotonic()
            self._wake()

    def write_failed(self, error: Exception) -> None:
        """A write of live events raised: the stream is closed. One connection's failure
        must fail neither the publisher nor the others."""
        if not isinstance(error, OSError):  # gone: the writer would have seen it so too
            logger.error("writing live events failed; their stream is closed", exc_info=error)
        self.close("gone")

    def put(self, change: Change) -> None:
        if self._queue(change):
            self._wake()

    def make_room(self, snapshot: int) -> None:
        """Room for a snapshot of ``snapshot`` events beside what is pending: the state a
        reader asked for does not count against its backlog. Asked again (a socket that
        subscribes over and over), the room is not added up: the bound stays the largest
        one asked for."""
        self.capacity = max(self.capacity, len(self._pending) + snapshot + 1 + self.backlog)

    def add_output(self, output: Output | Backfill) -> None:
        """Queue chunks of a job's output after what is pending. Output is never
        conflated: each append is its own entry, counted against ``capacity`` (a
        reader that far behind is closed, and resumes from its offset), until the
        output pending reaches OUTPUT_HELD_BYTES: more is left in the store, as one
        backfill per job while no change of the job comes between."""
        if self._queue(output):
            self._wake()

    def _queue(self, event: Change | Output | Backfill) -> bool:
        """Queue ``event`` (without waking the writer, unless it left output in the
        store); False if the mailbox is, or now is, closed."""
        if self.closed is not None:
            return False
        pending = self._pending
        if not isinstance(event, Change):
            return self._queue_output(event)
        if self._open:  # the job's later output goes after this change
            self._open.pop(event.job_id, None)
        if pending.get(event.job_id) is event:
            return True  # offered again (a second subscription): already pending
        # Moving a replaced job to the end keeps the buffer in feed order, so
        # the last event a client saw is always the furthest it has read.
        replaced = pending.pop(event.job_id, None) is not None
        if replaced:
            self.conflated += 1
        elif len(pending) >= self.capacity:
            self.close("overflow")
            return False
        pending[event.job_id] = event
        if replaced and self._markers:
            # The job may have been part of a snapshot whose end is still pending:
            # that end moves behind it, so no snapshot's job comes after its end.
            for marker in self._markers:
                del pending[marker]
                marker.passed(event)
                pending[marker] = marker
        return True

    def _queue_output(self, output: Output | Backfill) -> bool:
        opened = self._open.get(output.job_id) if self._open else None
        if isinstance(output, Output):
            if opened and opened.end == output.offset and opened.version == output.version:
                opened.end = output.next_offset
                return True
            if self._output_bytes + output.size <= OUTPUT_HELD_BYTES:
                return self._add(output)
            output = Backfill(output.job_id, output.version, output.offset, output.next_offset)
        if not self._add(output):
            return False
        if self._open is None:
            self._open = {}
        self._open[output.job_id] = output
        self._wake()  # nothing is written through before it: the writer reads it back
        return True

    def _add(self, output: Output | Backfill) -> bool:
        if len(self._pending) >= self.capacity:
            self.close("overflow")
            return False
        self._pending[output] = output
        if isinstance(output, Output):
            self._output_bytes += output.size
        return True

    def mark(self, marker: Synced) -> None:
        """Queue a snapshot's end after what is pending."""
        if self.closed is None:
            self._open = None  # live output after it stays after it
            self._pending[marker] = marker
            self._markers = [*(self._markers or ()), marker]
            self._wake()

    def say(self, frame: str) -> None:
        """Queue a control frame (WebSocket replies); sent before pending changes.

        Replies are bounded like changes: a client that sends and never reads
        is closed once ``capacity`` replies wait for it.
        """
        if self.closed is not None:
            return
        if len(self._control) >= self.capacity:
            self.close("overflow")
            return
        self._control.append(frame)
        self._wake()

    def ping(self) -> None:
        self.ping_due = True
        self._wake()

    def close(self, reason: CloseReason) -> None:
        if self.closed is None:
            self.closed = reason
            self._wake()
        elif reason != "slow":
            return
        # Seen from here, a send in progress is a suspended one: its client is not
        # reading. On shutdown it gets to finish (uvicorn bounds that); a stream that
        # was already ending (its last event, an expired token) is cut like any other
        # once its send has stalled for the send timeout.
        if self.sending_since is None or reason == "shutdown":
            return
        if self._underway is not None:  # the writer has not taken it up: nobody awaits it
            self._underway.close()
            self._underway = None
            self.sending_since = None
        else:
            assert self._writer is not None
            self._writer.cancel()

    def client_left(self, _: object = None) -> None:
        """Close with "gone" (a callback for whatever notices the client leaving)."""
        self.close("gone")

    async def deliver(self, sending: Awaitable[None]) -> bool:
        """Await ``sending`` (a send); False if the mailbox closed while it was blocked."""
        writer = self._writer_task()
        self.sending_since = time.monotonic()
        try:
            await sending
        except asyncio.CancelledError:
            # Cancelled by close() and by nothing else: the send is over, not the task.
            if self.closed is not None and writer.uncancel() == 0:
                return False
            raise
        finally:
            self.sending_since = None
        return True

    async def settle(self) -> bool:
        """Finish the send a write-through left waiting, if any; False if the mailbox
        closed while it was blocked."""
        underway, self._underway = self._underway, None
        return underway is None or await self.deliver(underway)

    async def wait(self) -> None:
        """Return once there is something to send, or a send to finish (:meth:`settle`),
        a ping is due, or the box is closed."""
        loop = self._writer_task().get_loop()
        while not (
            self._pending or self._control or self.ping_due or self.closed or self._underway
        ):
            self._waiter = loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def _writer_task(self) -> asyncio.Task[object]:
        """The task that waits and delivers, found once: asyncio's current-task and
        running-loop lookups each cost a getpid() system call."""
        if self._writer is None:
            task = asyncio.current_task()
            assert task is not None, "a mailbox is waited on from a task"
            self._writer = task
        return self._writer

    def take_control(self) -> list[str]:
        frames, self._control = self._control, []
        return frames

    def take_conflated(self) -> int:
        """How many states were skipped since the last call (for the live metric)."""
        count, self.conflated = self.conflated, 0
        return count

    def take(self) -> list[Pending]:
        changes = list(self._pending.values())
        self._pending.clear()
        self._markers = self._open = None
        self._output_bytes = 0
        self.ping_due = False
        return changes

    def retain(self, wanted: Callable[[Pending], bool]) -> None:
        """Drop pending events nobody wants any more (an unsubscribed job's, say)."""
        pending = self._pending
        for key in [key for key, event in pending.items() if not wanted(event)]:
            del pending[key]
        if self._markers:
            self._markers = [marker for marker in self._markers if marker in pending]
        if self._open:
            self._open = {job: kept for job, kept in self._open.items() if kept in pending}
        self._output_bytes = sum(e.size for e in pending.values() if isinstance(e, Output))

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
