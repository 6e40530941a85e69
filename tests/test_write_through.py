"""Live changes written from the publisher's turn of the loop: the eager send
(:mod:`app.streams.eager`) and the mailbox's write-through, without a server.
The end-to-end suite runs the same paths on real sockets (a paused one among them:
tests/e2e/test_slow_subscribers.py)."""

from __future__ import annotations

import asyncio
import gc
import logging
import weakref
from collections.abc import Callable, Sequence
from types import SimpleNamespace

import pytest
from websockets.protocol import State

from app import jobs
from app.jobs import JobFilter
from app.metrics import Metrics, TransportMetrics
from app.models import JobStatus, NewJob
from app.streams import eager
from app.streams.eager import Suspended
from app.streams.events import (
    Change,
    Event,
    Position,
    all_stream_frame,
    chunked,
    job_stream_frame,
    output_stream_frame,
)
from app.streams.follow import Lease
from app.streams.hub import HEARTBEAT_PARTS, Hub, Subscription
from app.streams.limits import StreamSlots
from app.streams.mailbox import DirectResponse, DirectWebSocket, Mailbox, Pending
from app.streams.sse import PING
from tests.conftest import seconds
from tests.sockets import Response, WebSocketProtocol

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Socket:
    """A send like a server's: it writes at once, or waits while ``paused``."""

    def __init__(self) -> None:
        self.written: list[str] = []
        self.paused: asyncio.Future[None] | None = None
        self.ended: list[str] = []  # how each send that waited ended

    async def send(self, frame: str) -> None:
        if self.paused is not None:
            try:
                await self.paused
            except BaseException as exc:
                self.ended.append(type(exc).__name__)
                raise
            finally:
                self.ended.append("finally")
        self.written.append(frame)


JOB, OTHER = "job_aaaaaaaaaaaaaaaaaaaaaa", "job_bbbbbbbbbbbbbbbbbbbbbb"


def change(seq: int, job: str = JOB, status: JobStatus = "processing") -> Change:
    """Version ``seq`` of ``job``, at feed position ``seq``."""
    created = jobs.create(NewJob(job_type="generic"), jobs.now()).model_copy(
        update={"job_id": job, "version": seq, "status": status}
    )
    return Change.of(created, Position(1, seq))


# --- eager.start --------------------------------------------------------------------


async def test_a_send_that_need_not_wait_is_done_when_start_returns() -> None:
    socket = Socket()
    assert eager.start(socket.send("a")) is None
    assert socket.written == ["a"]


async def test_a_send_that_waits_is_finished_by_the_task_that_awaits_it() -> None:
    socket = Socket()
    socket.paused = asyncio.get_running_loop().create_future()
    suspended = eager.start(socket.send("a"))
    assert isinstance(suspended, Suspended)
    assert socket.written == []
    finishing = asyncio.ensure_future(suspended)
    await asyncio.sleep(0)
    assert not finishing.done()  # it waits on what the send waits on
    socket.paused.set_result(None)
    await asyncio.wait_for(finishing, seconds(1))
    assert socket.written == ["a"]


async def test_cancelling_the_awaiting_task_reaches_the_send() -> None:
    socket = Socket()
    socket.paused = asyncio.get_running_loop().create_future()
    suspended = eager.start(socket.send("a"))
    assert suspended is not None
    finishing = asyncio.ensure_future(suspended)
    await asyncio.sleep(0)
    finishing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await finishing
    assert socket.ended == ["CancelledError", "finally"]
    assert socket.written == []


async def test_an_error_of_the_send_is_raised_to_who_started_it() -> None:
    async def failing() -> None:
        raise ConnectionResetError("gone")

    with pytest.raises(ConnectionResetError):
        eager.start(failing())


async def test_an_abandoned_send_is_closed() -> None:
    socket = Socket()
    socket.paused = asyncio.get_running_loop().create_future()
    suspended = eager.start(socket.send("a"))
    assert suspended is not None
    suspended.close()
    assert socket.ended == ["GeneratorExit", "finally"]


# --- Mailbox.live and the flush at the end of the turn ----------------------------------


class Stream:
    """A mailbox's writer, as the SSE and WebSocket streams run it, writing through to
    ``socket`` (all of a flush's events as one write)."""

    def __init__(self, mailbox: Mailbox, socket: Socket, hub: Hub) -> None:
        self.mailbox = mailbox
        self.socket = socket
        self.queued: list[str] = []  # what the writer task sent
        self.wrote = asyncio.Event()  # set once the writer task has sent something
        self.fail: BaseException | None = None
        mailbox.write_through(self.write_through, hub.flush)

    def write_through(self, events: list[Event]) -> Suspended | None:
        if self.fail is not None:
            raise self.fail
        return eager.start(self.socket.send("live " + versions(events)))

    async def run(self) -> None:
        while True:
            await self.mailbox.wait()
            if not await self.mailbox.settle() or self.mailbox.closed is not None:
                return
            frame = "queued " + versions(self.mailbox.take())
            await self.mailbox.deliver(self.socket.send(frame))
            self.queued.append(frame)
            self.wrote.set()


def versions(events: Sequence[Pending]) -> str:
    return ",".join(str(event.version) for event in events)


async def idle(stream: Stream) -> asyncio.Task[None]:
    """The stream's writer, started and waiting for something to send."""
    task = asyncio.create_task(stream.run())
    await asyncio.sleep(0)  # its first step ends waiting
    assert stream.mailbox.waiting
    return task


def live(hub: Hub, mailbox: Mailbox, job: str = JOB) -> Subscription:
    subscription = hub.subscribe(Subscription(mailbox, job_id=job))
    subscription.prime([], synced=False)
    return subscription


async def end_of_turn() -> None:
    await asyncio.sleep(0)


async def test_the_turns_first_change_is_written_at_once_without_waking_the_writer() -> None:
    hub, mailbox, socket = Hub(), Mailbox(4), Socket()
    writer = await idle(Stream(mailbox, socket, hub))
    live(hub, mailbox)
    hub.publish(change(2))
    assert socket.written == ["live 2"]  # from inside publish
    assert mailbox.waiting  # the writer never woke
    writer.cancel()


async def test_the_later_changes_of_a_turn_go_out_as_one_write_at_its_end() -> None:
    hub, mailbox, socket = Hub(), Mailbox(4), Socket()
    writer = await idle(Stream(mailbox, socket, hub))
    subscription = hub.subscribe(Subscription(mailbox))  # all jobs
    subscription.prime([], synced=False)
    hub.publish(change(2))
    hub.publish(change(3, job=OTHER))
    hub.publish(change(4))
    assert socket.written == ["live 2"]
    await end_of_turn()
    assert socket.written == ["live 2", "live 3,4"]
    assert mailbox.waiting
    writer.cancel()


async def test_after_a_busy_turn_the_next_queues_its_first_change_too() -> None:
    """A busy server writes once per connection per turn; one quiet turn ends that."""
    hub, mailbox, socket = Hub(), Mailbox(4), Socket()
    writer = await idle(Stream(mailbox, socket, hub))
    live(hub, mailbox)
    hub.publish(change(2))
    hub.publish(change(3))
    await end_of_turn()
    assert socket.written == ["live 2", "live 3"]
    hub.publish(change(4))  # after a busy turn: queued to the turn's end
    assert socket.written == ["live 2", "live 3"]
    await end_of_turn()
    assert socket.written == ["live 2", "live 3", "live 4"]
    hub.publish(change(5))  # the turn before was quiet: at once
    assert socket.written == ["live 2", "live 3", "live 4", "live 5"]
    writer.cancel()


async def test_a_writer_that_is_busy_gets_the_change_queued() -> None:
    hub, mailbox, socket = Hub(), Mailbox(4), Socket()
    Stream(mailbox, socket, hub)  # its writer never waited: not idle
    live(hub, mailbox)
    hub.publish(change(2))
    await end_of_turn()
    assert socket.written == []
    assert versions(mailbox.take()) == "2"


async def test_a_jobs_last_change_wakes_the_writer() -> None:
    """The writer may have to end the stream after a job's last change."""
    hub, mailbox, socket = Hub(), Mailbox(4), Socket()
    stream = Stream(mailbox, socket, hub)
    writer = await idle(stream)
    subscription = hub.subscribe(Subscription(mailbox))
    subscription.prime([], synced=False)
    hub.publish(change(2, job=OTHER))
    hub.publish(change(3, status="completed"))
    await asyncio.wait_for(stream.wrote.wait(), seconds(1))
    assert socket.written == ["live 2", "queued 3"]
    writer.cancel()


async def test_a_change_offered_twice_to_one_connection_is_written_once() -> None:
    """A socket subscribed to a job and to all jobs is offered that job's change twice."""
    hub, mailbox, socket = Hub(), Mailbox(4), Socket()
    writer = await idle(Stream(mailbox, socket, hub))
    live(hub, mailbox)
    hub.subscribe(Subscription(mailbox)).prime([], synced=False)
    hub.publish(change(2))
    await end_of_turn()
    assert socket.written == ["live 2"]
    writer.cancel()


async def test_a_change_offered_twice_in_a_busy_turn_is_queued_once_and_skips_nothing() -> None:
    """Queued for the turn's end, the second offer is the same change, not a newer one
    that replaces it: nothing counts as skipped."""
    hub, mailbox, socket = Hub(), Mailbox(4), Socket()
    writer = await idle(Stream(mailbox, socket, hub))
    live(hub, mailbox)
    hub.subscribe(Subscription(mailbox)).prime([], synced=False)
    hub.publish(change(2, job=OTHER))
    hub.publish(change(3))  # the turn's second change: queued, offered twice
    await end_of_turn()
    assert socket.written == ["live 2", "live 3"]
    assert mailbox.conflated == 0
    writer.cancel()


async def test_a_change_offered_twice_while_its_send_waits_is_written_once() -> None:
    """The first offer's send has to wait (the client is not reading), which wakes the
    writer: the second offer is not queued behind it as a change of its own."""
    hub, mailbox, socket = Hub(), Mailbox(4), Socket()
    stream = Stream(mailbox, socket, hub)
    writer = await idle(stream)
    live(hub, mailbox)
    hub.subscribe(Subscription(mailbox)).prime([], synced=False)
    socket.paused = asyncio.get_running_loop().create_future()
    hub.publish(change(2))
    hub.publish(change(3, job=OTHER))  # queued behind the send: something to write after it
    socket.paused.set_result(None)
    socket.paused = None
    await asyncio.wait_for(stream.wrote.wait(), seconds(1))
    assert socket.written == ["live 2", "queued 3"]
    assert mailbox.conflated == 0  # nothing was skipped either
    writer.cancel()


async def test_a_snapshot_is_never_written_through() -> None:
    """What a subscription primes (its snapshot, early changes) keeps its order
    behind control frames: only live changes are written through."""
    hub, mailbox, socket = Hub(), Mailbox(4), Socket()
    stream = Stream(mailbox, socket, hub)
    writer = await idle(stream)
    subscription = hub.subscribe(Subscription(mailbox, job_id=JOB))
    hub.publish(change(3))  # early: held until primed
    subscription.prime([change(2)], version=1, synced=False)
    await asyncio.wait_for(stream.wrote.wait(), seconds(1))
    assert socket.written == ["queued 3"]
    writer.cancel()


async def test_a_send_that_must_wait_is_finished_by_the_writer_and_keeps_the_order() -> None:
    hub, mailbox, socket = Hub(), Mailbox(4), Socket()
    stream = Stream(mailbox, socket, hub)
    writer = await idle(stream)
    live(hub, mailbox)
    socket.paused = asyncio.get_running_loop().create_future()
    hub.publish(change(2))
    await end_of_turn()
    assert mailbox.sending_since is not None
    hub.publish(change(3))  # the writer is no longer idle: queued behind the send
    socket.paused.set_result(None)
    socket.paused = None
    await asyncio.wait_for(stream.wrote.wait(), seconds(1))
    assert socket.written == ["live 2", "queued 3"]
    writer.cancel()


async def test_closing_drops_a_send_left_waiting_that_the_writer_has_not_taken_up() -> None:
    hub, mailbox, socket = Hub(), Mailbox(4), Socket()
    writer = await idle(Stream(mailbox, socket, hub))
    live(hub, mailbox)
    socket.paused = asyncio.get_running_loop().create_future()
    hub.publish(change(2))
    hub.flush._run()  # the end of the turn, before the writer can run
    mailbox.close("slow")  # nobody awaits the send yet
    assert socket.ended == ["GeneratorExit", "finally"]
    assert mailbox.sending_since is None
    await asyncio.wait_for(writer, seconds(1))
    assert socket.written == []


@pytest.mark.parametrize("error", [ConnectionResetError("reset"), RuntimeError("a bug")])
async def test_a_write_through_that_fails_closes_its_stream_only(
    error: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    hub = Hub()
    failing, fine = Stream(Mailbox(4), Socket(), hub), Stream(Mailbox(4), Socket(), hub)
    writers = [await idle(failing), await idle(fine)]
    for stream in (failing, fine):
        live(hub, stream.mailbox)
    failing.fail = error
    with caplog.at_level(logging.ERROR, logger="jobcast"):
        hub.publish(change(2))
        await end_of_turn()
    assert failing.mailbox.closed == "gone"
    assert fine.socket.written == ["live 2"]
    # A client that left is no error of the server's; anything else is logged.
    logged = [record.getMessage() for record in caplog.records]
    assert bool(logged) is isinstance(error, RuntimeError)
    await asyncio.wait_for(writers[0], seconds(1))
    writers[1].cancel()


# --- the hub's own loop: a job's change to its idle SSE streams' sockets ------------------


class SSEStream(Stream):
    """A :class:`Stream` whose live changes the hub may write to its response itself, as
    an SSE stream on uvicorn's httptools (``Mailbox.direct``)."""

    def __init__(
        self, mailbox: Mailbox, hub: Hub, frame: Callable[[Event], bytes] = job_stream_frame
    ) -> None:
        super().__init__(mailbox, Socket(), hub)
        self.cycle = Response()
        self.frame = frame
        self.lease = SimpleNamespace(metrics=TransportMetrics.of(Metrics(), "sse"))
        ping = chunked(PING)
        direct = DirectResponse(self.cycle, frame, ping, self.lease.metrics)  # type: ignore[arg-type]
        mailbox.write_through(self.write_through, hub.flush, direct)


def chunk(frame: bytes) -> bytes:
    """``frame`` as one chunk of a chunked response."""
    return b"%x\r\n%b\r\n" % (len(frame), frame)


async def test_the_hub_writes_a_jobs_change_to_an_idle_sse_streams_socket_itself() -> None:
    hub = Hub()
    streams = [SSEStream(Mailbox(4), hub) for _ in range(3)]
    writers = [await idle(stream) for stream in streams]
    for stream in streams:
        live(hub, stream.mailbox)
    published = change(2)
    hub.publish(published)
    for stream in streams:
        assert stream.cycle.chunks == [chunk(published.sse_for_job_stream())]
        assert stream.socket.written == []  # not through the stream's own write-through
        assert stream.mailbox.waiting  # the writer never woke
        assert stream.lease.metrics.sent == 1
    hub.publish(change(3))  # the turn's second change: queued, for the turn's end
    await end_of_turn()
    assert [stream.socket.written for stream in streams] == [["live 3"]] * 3
    for writer in writers:
        writer.cancel()


async def test_a_jobs_stream_and_its_output_stream_each_get_their_own_frame() -> None:
    hub = Hub()
    plain, output = SSEStream(Mailbox(4), hub), SSEStream(Mailbox(4), hub, output_stream_frame)
    writers = [await idle(plain), await idle(output), await idle(SSEStream(Mailbox(4), hub))]
    for stream in (plain, output):
        live(hub, stream.mailbox)
    published = change(2)
    hub.publish(published)
    assert plain.cycle.chunks == [chunk(published.sse_for_job_stream())]
    assert output.cycle.chunks == [chunk(published.sse_for_output_stream())]
    for writer in writers:
        writer.cancel()


@pytest.mark.parametrize(
    "state",
    [
        "paused",
        "disconnected",
        "complete",
        "writer busy",
        "writer woken",
        "conflated",
        "at its floor",
    ],
)
async def test_the_hub_leaves_a_stream_it_cannot_write_at_once_to_the_usual_way(
    state: str,
) -> None:
    """A socket that cannot take the write now, a writer with something to send, a state
    skipped and not yet counted, a change the client has: each goes as before (the
    stream's write-through through the server, or the writer)."""
    hub = Hub()
    stream, other = SSEStream(Mailbox(4), hub), SSEStream(Mailbox(4), hub)
    writers = [await idle(stream), await idle(other)]
    subscription = live(hub, stream.mailbox)
    live(hub, other.mailbox)
    if state == "paused":
        stream.cycle.flow.write_paused = True
    elif state == "disconnected":
        stream.cycle.disconnected = True
    elif state == "complete":
        stream.cycle.response_complete = True
    elif state == "writer busy":
        writers[0].cancel()
        await asyncio.sleep(0)
    elif state == "writer woken":
        stream.mailbox.ping()  # woken this turn: it has yet to run, and takes what comes
    elif state == "conflated":
        stream.mailbox.conflated = 1
    else:
        subscription.prime([], version=2, synced=False)
    published = change(2)
    hub.publish(published)
    await end_of_turn()
    assert stream.cycle.chunks == []
    expected = {
        "writer busy": ([], "2"),  # queued for the writer
        "writer woken": (["queued 2"], ""),  # which it sent when it ran
        "at its floor": ([], ""),  # not sent at all
    }.get(state, (["live 2"], ""))
    assert (stream.socket.written, versions(stream.mailbox.take())) == expected
    assert other.cycle.chunks == [chunk(published.sse_for_job_stream())]
    for writer in writers:
        writer.cancel()


async def test_the_hub_leaves_a_jobs_last_change_and_an_unprimed_stream_to_the_usual_way() -> None:
    hub = Hub()
    ending, unprimed = SSEStream(Mailbox(4), hub), SSEStream(Mailbox(4), hub)
    writers = [await idle(ending), await idle(unprimed)]
    live(hub, ending.mailbox)
    held = hub.subscribe(Subscription(unprimed.mailbox, job_id=JOB))
    hub.publish(change(2, status="completed"))  # may end the stream: the writer's
    await asyncio.wait_for(ending.wrote.wait(), seconds(1))
    assert (ending.cycle.chunks, ending.socket.written) == ([], ["queued 2"])
    held.prime([], version=1, synced=False)  # what came before it is held, then sent
    await asyncio.wait_for(unprimed.wrote.wait(), seconds(1))
    assert (unprimed.cycle.chunks, unprimed.socket.written) == ([], ["queued 2"])
    for writer in writers:
        writer.cancel()


@pytest.mark.parametrize("where", ["every job", "filtered", "at its head"])
async def test_the_hub_writes_to_an_all_jobs_stream_itself_only_without_a_filter(
    where: str,
) -> None:
    """A filter is the usual way's to apply; a change at or before the stream's head
    (its snapshot's end) is one the client has."""
    hub = Hub()
    stream = SSEStream(Mailbox(4), hub, all_stream_frame)
    writer = await idle(stream)
    published = change(2)
    subscription = hub.subscribe(
        Subscription(stream.mailbox, where=JobFilter(job_type="generic"))
        if where == "filtered"
        else Subscription(stream.mailbox, where=JobFilter())
    )
    subscription.prime([], head=published.position if where == "at its head" else None)
    await asyncio.wait_for(stream.wrote.wait(), seconds(1))  # the snapshot's end
    hub.publish(published)
    await end_of_turn()
    expected = {
        "every job": ([chunk(published.sse_for_all_stream())], []),
        "filtered": ([], ["live 2"]),  # it matches: sent the usual way
        "at its head": ([], []),
    }[where]
    assert (stream.cycle.chunks, stream.socket.written[1:]) == expected
    writer.cancel()


@pytest.mark.parametrize("error", [ConnectionResetError("reset"), RuntimeError("a bug")])
async def test_a_socket_the_hub_fails_to_write_closes_its_stream_only(
    error: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    hub = Hub()
    failing, fine = SSEStream(Mailbox(4), hub), SSEStream(Mailbox(4), hub)
    writers = [await idle(failing), await idle(fine)]
    for stream in (failing, fine):
        live(hub, stream.mailbox)
    failing.cycle.fail = error
    published = change(2)
    with caplog.at_level(logging.ERROR, logger="jobcast"):
        hub.publish(published)
    assert failing.mailbox.closed == "gone"
    assert fine.cycle.chunks == [chunk(published.sse_for_job_stream())]
    logged = [record.getMessage() for record in caplog.records]
    assert bool(logged) is isinstance(error, RuntimeError)
    await asyncio.wait_for(writers[0], seconds(1))
    writers[1].cancel()


class WSStream(Stream):
    """A :class:`Stream` whose live changes the hub may write to its socket itself, as a
    WebSocket on uvicorn's websockets-sansio (``Mailbox.direct``)."""

    def __init__(self, mailbox: Mailbox, hub: Hub) -> None:
        super().__init__(mailbox, Socket(), hub)
        self.protocol = WebSocketProtocol()
        self.metrics = TransportMetrics.of(Metrics(), "websocket")
        direct = DirectWebSocket(self.protocol, self.metrics)  # type: ignore[arg-type]
        mailbox.write_through(self.write_through, hub.flush, direct)


async def test_the_hub_writes_a_change_to_an_idle_websockets_socket_itself() -> None:
    hub = Hub()
    sockets = [WSStream(Mailbox(4), hub) for _ in range(2)]
    response = SSEStream(Mailbox(4), hub)
    writers = [await idle(stream) for stream in [*sockets, response]]
    for stream in [*sockets, response]:
        live(hub, stream.mailbox)
    published = change(2)
    hub.publish(published)
    for socket in sockets:
        assert socket.protocol.frames == [published.ws_frame()]
        assert socket.socket.written == []  # not through the connection's write-through
        assert socket.mailbox.waiting  # the writer never woke
        assert socket.metrics.sent == 1
    assert sockets[1].protocol.writes[0] is sockets[0].protocol.writes[0]  # framed once
    assert response.cycle.chunks == [chunk(published.sse_for_job_stream())]  # its own
    for writer in writers:
        writer.cancel()


@pytest.mark.parametrize("state", ["paused", "disconnected", "close sent", "closing"])
async def test_the_hub_leaves_a_websocket_it_cannot_write_at_once_to_the_usual_way(
    state: str,
) -> None:
    hub = Hub()
    stream, other = WSStream(Mailbox(4), hub), WSStream(Mailbox(4), hub)
    writers = [await idle(stream), await idle(other)]
    for each in (stream, other):
        live(hub, each.mailbox)
    if state == "paused":
        stream.protocol.writable.clear()
    elif state == "disconnected":
        stream.protocol.disconnected = True
    elif state == "close sent":
        stream.protocol.close_sent = True
    else:
        stream.protocol.conn.state = State.CLOSING
    published = change(2)
    hub.publish(published)
    assert stream.protocol.writes == []
    assert stream.socket.written == ["live 2"]  # the connection's write-through
    assert other.protocol.frames == [published.ws_frame()]
    for writer in writers:
        writer.cancel()


async def test_a_websocket_subscribed_to_a_job_and_to_all_jobs_is_written_once() -> None:
    hub = Hub()
    stream = WSStream(Mailbox(4), hub)
    writer = await idle(stream)
    live(hub, stream.mailbox)
    hub.subscribe(Subscription(stream.mailbox, where=JobFilter())).prime([], synced=False)
    published = change(2)
    hub.publish(published)
    await end_of_turn()
    assert stream.protocol.frames == [published.ws_frame()]
    assert (stream.socket.written, stream.metrics.sent) == ([], 1)
    writer.cancel()


async def test_a_websocket_the_hub_fails_to_write_closes_its_connection_only() -> None:
    hub = Hub()
    failing, fine = WSStream(Mailbox(4), hub), WSStream(Mailbox(4), hub)
    writers = [await idle(failing), await idle(fine)]
    for stream in (failing, fine):
        live(hub, stream.mailbox)
    failing.protocol.fail = ConnectionResetError("reset")
    published = change(2)
    hub.publish(published)
    assert failing.mailbox.closed == "gone"
    assert fine.protocol.frames == [published.ws_frame()]
    await asyncio.wait_for(writers[0], seconds(1))
    writers[1].cancel()


# --- heartbeats: written by the hub to idle SSE streams' sockets, a part at a time ----------


async def test_the_hub_writes_an_idle_sse_streams_heartbeat_to_its_socket_itself() -> None:
    hub = Hub()
    idle_one, paused, woken, busy = (SSEStream(Mailbox(4), hub) for _ in range(4))
    writers = [await idle(idle_one), await idle(paused), await idle(woken)]  # not busy's
    socket = WSStream(Mailbox(4), hub)
    writers.append(await idle(socket))
    for stream in (idle_one, paused, woken, busy):
        hub.attach(stream.mailbox, heartbeat=True)
    hub.attach(socket.mailbox, heartbeat=False)  # uvicorn pings WebSockets
    paused.cycle.flow.write_paused = True
    woken.mailbox.put(change(2))  # its writer has yet to run, and takes what comes
    hub.ping()
    assert idle_one.cycle.chunks == [chunked(PING)]
    assert idle_one.mailbox.waiting  # never woken
    assert not idle_one.mailbox.ping_due
    for stream in (paused, woken, busy):  # their writers send it, after what they have
        assert stream.cycle.chunks == []
        assert stream.mailbox.ping_due
    assert not paused.mailbox.waiting
    assert (socket.protocol.writes, socket.mailbox.ping_due) == ([], False)
    for writer in writers:
        writer.cancel()


async def test_a_heartbeat_the_hub_fails_to_write_closes_its_stream_only() -> None:
    hub = Hub()
    failing, fine = SSEStream(Mailbox(4), hub), SSEStream(Mailbox(4), hub)
    writers = [await idle(failing), await idle(fine)]
    for stream in (failing, fine):
        hub.attach(stream.mailbox, heartbeat=True)
    failing.cycle.fail = ConnectionResetError("reset")
    hub.ping()
    assert failing.mailbox.closed == "gone"
    assert fine.cycle.chunks == [chunked(PING)]
    await asyncio.wait_for(writers[0], seconds(1))
    writers[1].cancel()


@pytest.mark.parametrize("parts", [1, 2, 4, HEARTBEAT_PARTS])
def test_each_stream_is_pinged_once_in_every_round_of_parts(parts: int) -> None:
    hub = Hub()
    mailboxes = [Mailbox(4) for _ in range(300)]
    for mailbox in mailboxes:
        hub.attach(mailbox, heartbeat=True)
    counts = dict.fromkeys(mailboxes, 0)
    for part in range(parts):
        hub.ping(part, parts)
        pinged = [mailbox for mailbox in mailboxes if mailbox.ping_due]
        for mailbox in pinged:
            counts[mailbox] += 1
            mailbox.take()
        if parts > 1:  # a share of them, not all at once
            assert 0 < len(pinged) < len(mailboxes) * 2 / parts
    assert set(counts.values()) == {1}
    hub.detach(mailboxes[0])
    hub.ping()
    assert not mailboxes[0].ping_due


class Writer:
    """What a stream is to its mailbox: it writes through, and holds the mailbox."""

    def __init__(self, lease: Lease) -> None:
        self.lease = lease

    def write_through(self, events: list[Event]) -> Suspended | None:
        return None


async def test_the_end_of_a_stream_frees_it_without_the_cyclic_collector() -> None:
    """A stream holds its mailbox, and the mailbox its stream's write-through: the
    stream's end breaks that cycle, so a closed connection is freed at once by
    reference counting, not left for a collection that may be minutes away."""
    runtime = SimpleNamespace(
        hub=Hub(), streams=StreamSlots(4, 1.0), settings=SimpleNamespace(subscriber_backlog=4)
    )
    lease = Lease(runtime, TransportMetrics.of(Metrics(), "sse"))  # type: ignore[arg-type]
    stream = Writer(lease)
    lease.write_through(stream.write_through)
    freed = weakref.ref(stream)
    gc.disable()
    try:
        lease.end()
        del stream, lease
        assert freed() is None
    finally:
        gc.enable()
