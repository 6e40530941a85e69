"""Local fan-out: every change reaches every interested subscriber of this process.

    store ──publish(change)──▶ Hub ──offer──▶ Subscription ──put──▶ Mailbox ──▶ writer
                                  (per job, or all jobs + filter)   (one per connection)

A :class:`Mailbox` is one connection's bounded, conflating buffer: it keeps
only the newest change per job, in feed order, and wakes its writer only
when the writer is waiting. A reader slower than the jobs change skips
intermediate states, never the latest one; a mailbox that would hold more
than ``capacity`` jobs is closed instead, and its client reconnects and
resumes. Publishing never awaits, so one slow socket cannot hold up others.

Writers send through :meth:`Mailbox.deliver`: a send blocked on a client
that stopped reading is cut short the moment its mailbox closes, for
whatever reason but shutdown (overflow, the client leaving), and the hub's
one periodic :meth:`Hub.cut_stalled` closes mailboxes whose send has been
blocked longer than the send timeout. No timer per send: most sends never
block at all.

A :class:`Subscription` starts *unprimed*: it collects live changes while
its stream reads the current state from the store, then ``prime`` merges
the two so nothing is missed, nothing older than the snapshot follows it,
and nothing is sent twice; a :class:`~app.streams.events.Synced` marker between
them tells the client where the snapshot ends.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Literal, TypeVar

from app.jobs import JobFilter
from app.streams.events import Change, Event, Output, Position, Synced

M = TypeVar("M")
CloseReason = Literal["gone", "overflow", "slow", "shutdown", "done", "expired", "flood", "too_big"]


class Mailbox:
    __slots__ = (
        "_control",
        "_markers",
        "_pending",
        "_waiter",
        "_writer",
        "capacity",
        "closed",
        "conflated",
        "ping_due",
        "sending_since",
    )

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        # A change is keyed by its job (a newer one replaces it), a marker or output by itself.
        self._pending: dict[str | Synced | Output, Event] = {}
        self._markers: list[Synced] | None = None  # the markers among what is pending
        self._control: list[str] = []
        self._waiter: asyncio.Future[None] | None = None
        self.closed: CloseReason | None = None
        self.conflated = 0
        self.ping_due = False
        self._writer: asyncio.Task[object] | None = None  # the task that delivers
        self.sending_since: float | None = None  # time.monotonic() of the send in progress

    def put(self, change: Change) -> None:
        if self.closed is not None:
            return
        # Moving a replaced job to the end keeps the buffer in feed order, so
        # the last event a client saw is always the furthest it has read.
        replaced = self._pending.pop(change.job_id, None) is not None
        if replaced:
            self.conflated += 1
        elif len(self._pending) >= self.capacity:
            self.close("overflow")
            return
        self._pending[change.job_id] = change
        if replaced and self._markers:
            # The job may have been part of a snapshot whose end is still pending:
            # that end moves behind it, so no snapshot's job comes after its end.
            for marker in self._markers:
                del self._pending[marker]
                marker.passed(change)
                self._pending[marker] = marker
        self._wake()

    def add_output(self, output: Output) -> None:
        """Queue chunks of a job's output after what is pending. Output is never
        conflated: each append is its own entry, counted against ``capacity``; a
        reader that far behind is closed, and resumes from its offset."""
        if self.closed is not None:
            return
        if len(self._pending) >= self.capacity:
            self.close("overflow")
            return
        self._pending[output] = output
        self._wake()

    def mark(self, marker: Synced) -> None:
        """Queue a snapshot's end after what is pending."""
        if self.closed is None:
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
        if self.sending_since is not None and reason != "shutdown":
            assert self._writer is not None
            self._writer.cancel()

    def client_left(self, _: object = None) -> None:
        """Close with "gone" (a callback for whatever notices the client leaving)."""
        self.close("gone")

    async def deliver(self, send: Callable[[M], Awaitable[None]], message: M) -> bool:
        """``send(message)``; False if the mailbox closed while the send was blocked."""
        writer = self._writer_task()
        self.sending_since = time.monotonic()
        try:
            await send(message)
        except asyncio.CancelledError:
            # Cancelled by close() and by nothing else: the send is over, not the task.
            if self.closed is not None and writer.uncancel() == 0:
                return False
            raise
        finally:
            self.sending_since = None
        return True

    async def wait(self) -> None:
        """Return once there is something to send, a ping is due, or the box is closed."""
        loop = self._writer_task().get_loop()
        while not (self._pending or self._control or self.ping_due or self.closed):
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

    def take(self) -> list[Event]:
        changes = list(self._pending.values())
        self._pending.clear()
        self._markers = None
        self.ping_due = False
        return changes

    def retain(self, wanted: Callable[[Event], bool]) -> None:
        """Drop pending events nobody wants any more (an unsubscribed job's, say)."""
        for key in [key for key, event in self._pending.items() if not wanted(event)]:
            del self._pending[key]
        if self._markers:
            self._markers = [marker for marker in self._markers if marker in self._pending]

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


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
        self.where = where or JobFilter()
        self.output = output
        self._early: list[Change | Output] | None = []
        self._floor_version = 0
        self._floor_position: Position | None = None
        self._floor_offset = 0  # output chunks the client has, or has coming

    def offer(self, change: Change) -> None:
        if self._early is not None:
            self._hold(change)
        elif self._admits(change):
            self.mailbox.put(change)

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

    def _add_output(self, output: Output) -> None:
        """Queue what the client does not have of ``output``."""
        floor = self._floor_offset
        if output.next_offset <= floor:
            return  # in the snapshot already
        if output.offset > floor:
            # Chunks between are missing here (a feed cannot skip, but if it did): the
            # client reconnects and reads them back from the store.
            self.mailbox.close("overflow")
            return
        self._floor_offset = output.next_offset
        self.mailbox.add_output(output.after(floor))

    def prime(
        self,
        snapshot: Iterable[Change | Output],
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
        # The backlog bounds how far a reader falls behind live changes: the
        # state it asked for on connect does not count against it.
        self.mailbox.capacity += len(snapshot) + 1
        mailbox = self.mailbox
        for event in snapshot:
            if isinstance(event, Output):
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
                self._add_output(event)
            elif self._admits(event):
                mailbox.put(event)

    def covers(self, event: Event) -> bool:
        """Whether this subscription would deliver ``event`` (ignoring what was sent)."""
        if isinstance(event, Synced | Output) or self.job_id is not None:
            return event.job_id == self.job_id  # a marker names its subscription's job
        return self.where.admits(event)

    def _admits(self, change: Change) -> bool:
        if self.job_id is not None:
            return change.job is None or change.version > self._floor_version
        floor = self._floor_position
        return self.where.admits(change) and (floor is None or change.position > floor)


class Hub:
    def __init__(self) -> None:
        self._by_job: dict[str, set[Subscription]] = {}
        self._all: set[Subscription] = set()
        self._pinged: set[Mailbox] = set()
        self._mailboxes: set[Mailbox] = set()

    @property
    def subscriptions(self) -> int:
        return len(self._all) + sum(len(subs) for subs in self._by_job.values())

    def publish(self, change: Change) -> None:
        for subscription in self._by_job.get(change.job_id, ()):
            subscription.offer(change)
        for subscription in self._all:
            subscription.offer(change)

    def publish_output(self, output: Output) -> None:
        """Chunks appended to a job's output: only its own subscriptions may want them."""
        for subscription in self._by_job.get(output.job_id, ()):
            subscription.offer_output(output)

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
        if heartbeat:
            self._pinged.add(mailbox)

    def detach(self, mailbox: Mailbox) -> None:
        self._mailboxes.discard(mailbox)
        self._pinged.discard(mailbox)

    def ping(self) -> None:
        for mailbox in self._pinged:
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
