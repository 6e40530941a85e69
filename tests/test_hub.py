"""The hub, its subscriptions and their conflating mailboxes, without a server."""

from __future__ import annotations

from collections.abc import Callable

import anyio
import anyio.abc
import pytest

from app import jobs
from app.jobs import JobFilter
from app.models import Job, JobStatus, JobType, JobUpdate, NewJob
from app.streams.events import Change, Output, Position, Synced
from app.streams.hub import Hub, Subscription
from app.streams.mailbox import CloseReason, Mailbox, Pending
from tests.conftest import seconds


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Feed:
    """Jobs and their changes, numbered in feed order like a store would."""

    def __init__(self) -> None:
        self.seq = 0

    def position(self) -> Position:
        self.seq += 1
        return Position(1, self.seq)

    def new(self, job_type: JobType = "generic") -> Change:
        return Change.of(jobs.create(NewJob(job_type=job_type), jobs.now()), self.position())

    def next(self, change: Change, status: JobStatus | None = None, **fields: object) -> Change:
        """The job of `change` updated once more (progress bumped unless given)."""
        before = change.job
        assert before is not None
        update = JobUpdate.model_validate(
            {"progress": min(100.0, before.progress + 1), **fields, "status": status}
        )
        after = jobs.update(before, update, jobs.now())
        return Change.of(after, self.position(), before.status)

    def removal(self, change: Change) -> Change:
        return Change(
            job_id=change.job_id, job_type=change.job_type, position=self.position(), job=None
        )


def job_of(change: Change) -> Job:
    assert change.job is not None
    return change.job


@pytest.fixture
def feed() -> Feed:
    return Feed()


def primed(
    mailbox: Mailbox, *, job_id: str | None = None, where: JobFilter | None = None
) -> Subscription:
    """A subscription that is live already (its snapshot's end left out: these tests
    are about what it delivers live)."""
    subscription = Subscription(mailbox, job_id=job_id, where=where)
    subscription.prime([], synced=False)
    return subscription


def described(events: list[Pending]) -> list[Pending | tuple[str, int, Position | None]]:
    """Changes as themselves, a snapshot's end as ("synced", its version, its head)."""
    return [
        ("synced", event.version, event.head) if isinstance(event, Synced) else event
        for event in events
    ]


# --- Mailbox ------------------------------------------------------------------------


def test_mailbox_keeps_only_the_newest_change_per_job_in_feed_order(feed: Feed) -> None:
    """A job changed again while pending is replaced by its newest change, moved to the end."""
    mailbox = Mailbox(capacity=10)
    a1, b1 = feed.new(), feed.new()
    a2 = feed.next(a1)
    a3 = feed.next(a2)
    for change in (a1, b1, a2, a3):
        mailbox.put(change)
    assert mailbox.take() == [b1, a3]
    assert mailbox.conflated == 2
    assert mailbox.take() == []


def test_mailbox_hands_out_each_skipped_state_count_once(feed: Feed) -> None:
    """take_conflated reports the states skipped since the last call, then starts over."""
    mailbox = Mailbox(capacity=10)
    a1 = feed.new()
    mailbox.put(a1)
    mailbox.put(feed.next(a1))
    assert mailbox.take_conflated() == 1
    assert mailbox.take_conflated() == 0


def test_mailbox_over_capacity_closes_with_overflow(feed: Feed) -> None:
    """A mailbox asked to hold more distinct jobs than its capacity closes with "overflow"."""
    mailbox = Mailbox(capacity=2)
    a, b, c = feed.new(), feed.new(), feed.new()
    mailbox.put(a)
    mailbox.put(b)
    mailbox.put(feed.next(a))  # replacing a pending job never overflows
    assert mailbox.closed is None
    mailbox.put(c)
    assert mailbox.closed == "overflow"
    mailbox.put(feed.new())  # ignored once closed
    assert [change.job_id for change in mailbox.take()] == [b.job_id, a.job_id]


def test_mailbox_close_keeps_the_first_reason(feed: Feed) -> None:
    """Once closed, a mailbox keeps the reason it was first closed for."""
    mailbox = Mailbox(capacity=1)
    mailbox.close("slow")
    mailbox.close("shutdown")
    assert mailbox.closed == "slow"


@pytest.mark.anyio
async def test_mailbox_wait_returns_once_there_is_something_to_send(feed: Feed) -> None:
    """`wait` sleeps while the mailbox is empty and wakes on a change, a frame, a ping or close."""
    wakers: list[Callable[[Mailbox], object]] = [
        lambda box: box.put(feed.new()),
        lambda box: box.say('{"type":"pong"}'),
        lambda box: box.ping(),
        lambda box: box.close("gone"),
    ]
    for wake in wakers:
        mailbox = Mailbox(capacity=4)
        woke = anyio.Event()

        async def writer(box: Mailbox = mailbox, done: anyio.Event = woke) -> None:
            await box.wait()
            done.set()

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(writer)
            await anyio.wait_all_tasks_blocked()
            assert not woke.is_set()
            wake(mailbox)
            with anyio.fail_after(seconds(1)):
                await woke.wait()


def test_mailbox_control_frames_are_taken_apart_from_changes(feed: Feed) -> None:
    """Control frames queue in order and are taken separately from job changes."""
    mailbox = Mailbox(capacity=4)
    change = feed.new()
    mailbox.put(change)
    mailbox.say("one")
    mailbox.say("two")
    assert mailbox.take_control() == ["one", "two"]
    assert mailbox.take_control() == []
    assert mailbox.take() == [change]


# --- Subscription ---------------------------------------------------------------------


def test_unprimed_subscription_holds_changes_until_primed(feed: Feed) -> None:
    """Before `prime`, offered changes wait; the mailbox sees nothing yet."""
    mailbox = Mailbox(capacity=10)
    first = feed.new()
    subscription = Subscription(mailbox, job_id=first.job_id)
    subscription.offer(feed.next(first))
    assert mailbox.take() == []


def test_prime_sends_the_snapshot_first_then_only_newer_early_changes(feed: Feed) -> None:
    """`prime` puts the snapshot first, drops early changes it covers, keeps newer ones."""
    mailbox = Mailbox(capacity=10)
    a1, b = feed.new(), feed.new()
    a2 = feed.next(a1)
    subscription = Subscription(mailbox)
    c = feed.new()  # created while the snapshot was being read, after its head
    for early in (a1, c, a2):
        subscription.offer(early)
    subscription.prime([b, a2], head=a2.position)
    assert described(mailbox.take()) == [b, a2, ("synced", 0, a2.position), c]
    assert mailbox.conflated == 0


def test_a_snapshot_asked_for_again_and_again_does_not_loosen_the_backlog(feed: Feed) -> None:
    """Each snapshot gets room beside the backlog, but the room is not added up: a socket
    that subscribes over and over keeps the bound of its largest snapshot."""
    mailbox = Mailbox(capacity=4)
    jobs = [feed.new() for _ in range(6)]
    for _ in range(10):
        Subscription(mailbox).prime(jobs, head=jobs[-1].position)
        mailbox.take()
    assert mailbox.capacity == 4 + 6 + 1


def test_prime_of_a_job_stream_drops_versions_the_snapshot_covers(feed: Feed) -> None:
    """Per job, early changes at or below the snapshot's version are not sent again."""
    mailbox = Mailbox(capacity=10)
    v1 = feed.new()
    v2 = feed.next(v1)
    subscription = Subscription(mailbox, job_id=v1.job_id)
    subscription.offer(v1)
    subscription.offer(v2)
    subscription.prime([v2], version=2)
    assert described(mailbox.take()) == [v2, ("synced", 2, None)]
    assert mailbox.conflated == 0


def test_prime_of_a_job_stream_keeps_a_newer_early_change(feed: Feed) -> None:
    """Per job, an early change newer than the snapshot replaces it: the newest state wins."""
    mailbox = Mailbox(capacity=10)
    v1 = feed.new()
    v2 = feed.next(v1)
    v3 = feed.next(v2)
    subscription = Subscription(mailbox, job_id=v1.job_id)
    subscription.offer(v3)
    subscription.prime([v2], version=2)
    assert described(mailbox.take()) == [v3, ("synced", 3, None)]


def test_prime_with_nothing_known_sends_nothing_older_than_the_client_has(feed: Feed) -> None:
    """A resumed job stream (empty snapshot, version known) sends only later versions."""
    mailbox = Mailbox(capacity=10)
    v1 = feed.new()
    v2 = feed.next(v1)
    v3 = feed.next(v2)
    subscription = Subscription(mailbox, job_id=v1.job_id)
    subscription.prime([], version=2)
    subscription.offer(v2)
    assert described(mailbox.take()) == [("synced", 2, None)]
    subscription.offer(v3)
    assert mailbox.take() == [v3]


def test_job_subscription_floor_is_by_version_and_removals_pass(feed: Feed) -> None:
    """A primed job subscription admits versions above its floor, and the job's removal."""
    mailbox = Mailbox(capacity=10)
    v1 = feed.new()
    v2 = feed.next(v1)
    v3 = feed.next(v2, status="completed")
    subscription = Subscription(mailbox, job_id=v1.job_id)
    subscription.prime([], version=2, synced=False)
    for change in (v1, v2):
        subscription.offer(change)
    assert mailbox.take() == []
    subscription.offer(v3)
    removed = feed.removal(v3)
    subscription.offer(removed)
    assert mailbox.take() == [removed]  # conflated with v3: the newest of the job
    assert mailbox.conflated == 1


def test_all_jobs_filter_admits_a_job_leaving_it(feed: Feed) -> None:
    """A `status=processing` subscription gets a job's move out of processing, then nothing."""
    mailbox = Mailbox(capacity=10)
    subscription = primed(mailbox, where=JobFilter(status="processing"))
    queued = feed.new()
    subscription.offer(queued)
    assert mailbox.take() == []
    processing = feed.next(queued, status="processing")
    subscription.offer(processing)
    assert mailbox.take() == [processing]
    completed = feed.next(processing, status="completed")
    subscription.offer(completed)
    assert mailbox.take() == [completed]
    subscription.offer(feed.next(feed.new(), message="still queued"))
    assert mailbox.take() == []


def test_all_jobs_job_type_filter_applies_to_removals(feed: Feed) -> None:
    """A `jobType` subscription gets removals of its type only."""
    mailbox = Mailbox(capacity=10)
    subscription = primed(mailbox, where=JobFilter(job_type="llm_agent"))
    agent, plain = feed.new("llm_agent"), feed.new()
    subscription.offer(feed.removal(plain))
    removed = feed.removal(agent)
    subscription.offer(removed)
    assert mailbox.take() == [removed]


def test_all_jobs_subscription_drops_changes_at_or_before_its_head(feed: Feed) -> None:
    """Primed at a feed head, an all-jobs subscription ignores changes up to that head."""
    mailbox = Mailbox(capacity=10)
    old, new = feed.new(), feed.new()
    subscription = Subscription(mailbox)
    subscription.prime([], head=old.position)
    subscription.offer(old)
    subscription.offer(new)
    assert described(mailbox.take()) == [("synced", 0, old.position), new]


def test_unprimed_subscription_closes_its_mailbox_past_capacity(feed: Feed) -> None:
    """Too many changes before `prime` close the mailbox with "overflow" instead of growing."""
    mailbox = Mailbox(capacity=2)
    subscription = Subscription(mailbox)
    for _ in range(3):
        subscription.offer(feed.new())
    assert mailbox.closed == "overflow"


# --- Hub ---------------------------------------------------------------------------------


def test_publish_reaches_two_concurrent_first_subscribers(feed: Feed) -> None:
    """Two subscriptions to a job made at once both get a change published while they prime."""
    hub = Hub()
    first = feed.new()
    boxes = [Mailbox(capacity=10), Mailbox(capacity=10)]
    subscriptions = [hub.subscribe(Subscription(box, job_id=first.job_id)) for box in boxes]
    during = feed.next(first)
    hub.publish(during)
    for subscription in subscriptions:
        subscription.prime([first], version=1)
    after = feed.next(during)
    hub.publish(after)
    for box in boxes:
        # first → during → after, the newest kept, and the snapshot's end behind it
        assert described(box.take()) == [after, ("synced", 3, None)]
        assert box.conflated == 2


def test_publish_reaches_job_and_all_jobs_subscribers_only_for_their_job(feed: Feed) -> None:
    """A change goes to its job's subscribers and to all-jobs subscribers, not to other jobs'."""
    hub = Hub()
    mine, other = feed.new(), feed.new()
    mine_box, other_box, all_box = Mailbox(10), Mailbox(10), Mailbox(10)
    hub.subscribe(primed(mine_box, job_id=mine.job_id))
    hub.subscribe(primed(other_box, job_id=other.job_id))
    hub.subscribe(primed(all_box))
    change = feed.next(mine)
    hub.publish(change)
    assert mine_box.take() == [change]
    assert all_box.take() == [change]
    assert other_box.take() == []


def test_unsubscribe_stops_delivery(feed: Feed) -> None:
    """After `unsubscribe` a subscription receives nothing and the hub forgets it."""
    hub = Hub()
    job = feed.new()
    job_box, all_box = Mailbox(10), Mailbox(10)
    by_job = hub.subscribe(primed(job_box, job_id=job.job_id))
    every = hub.subscribe(primed(all_box))
    assert hub.subscriptions == 2
    hub.unsubscribe(by_job)
    hub.unsubscribe(every)
    hub.unsubscribe(every)  # twice is harmless
    hub.publish(feed.next(job))
    assert job_box.take() == []
    assert all_box.take() == []
    assert hub.subscriptions == 0


@pytest.mark.anyio
async def test_close_shuts_every_attached_mailbox_and_wakes_writers() -> None:
    """`Hub.close` closes each attached mailbox with "shutdown", waking a waiting writer."""
    hub = Hub()
    boxes = [Mailbox(4), Mailbox(4)]
    hub.attach(boxes[0], heartbeat=True)
    hub.attach(boxes[1], heartbeat=False)
    detached = Mailbox(4)
    hub.attach(detached, heartbeat=True)
    hub.detach(detached)
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(boxes[0].wait)
        await anyio.wait_all_tasks_blocked()
        hub.close()
        with anyio.fail_after(seconds(1)):
            await boxes[0].wait()
    assert [box.closed for box in boxes] == ["shutdown", "shutdown"]
    assert detached.closed is None


def test_ping_reaches_only_heartbeat_mailboxes() -> None:
    """`Hub.ping` marks a ping due on SSE (heartbeat) mailboxes, not on WebSocket ones."""
    hub = Hub()
    sse, ws = Mailbox(4), Mailbox(4)
    hub.attach(sse, heartbeat=True)
    hub.attach(ws, heartbeat=False)
    hub.ping()
    assert (sse.ping_due, ws.ping_due) == (True, False)
    assert sse.take() == []
    assert not sse.ping_due


class BlockedSend:
    """A send that blocks like a socket whose client stopped reading."""

    def __init__(self) -> None:
        self.entered = anyio.Event()
        self.release = anyio.Event()

    async def __call__(self, message: str) -> None:
        self.entered.set()
        await self.release.wait()


class Writer:
    """A mailbox's writer task: one `deliver` blocked in `send`; `results` is its return."""

    def __init__(self, mailbox: Mailbox) -> None:
        self.mailbox = mailbox
        self.send = BlockedSend()
        self.results: list[bool] = []

    async def start(self, tasks: anyio.abc.TaskGroup) -> None:
        """Start delivering one frame and return once the send blocks."""
        tasks.start_soon(self._deliver)
        await self.send.entered.wait()

    async def _deliver(self) -> None:
        self.results.append(await self.mailbox.deliver(self.send("frame")))


@pytest.mark.anyio
@pytest.mark.parametrize("reason", ["overflow", "gone", "slow", "expired"])
async def test_closing_a_mailbox_cuts_a_blocked_send_short(reason: CloseReason) -> None:
    """A writer blocked in `deliver` returns False the moment its mailbox closes."""
    mailbox = Mailbox(4)
    writer = Writer(mailbox)
    with anyio.fail_after(seconds(1)):
        async with anyio.create_task_group() as tasks:
            await writer.start(tasks)
            mailbox.close(reason)
    assert writer.results == [False]


@pytest.mark.anyio
async def test_shutdown_lets_a_blocked_send_finish() -> None:
    """On shutdown a send in progress is not cut: what is pending still goes out."""
    mailbox = Mailbox(4)
    writer = Writer(mailbox)
    with anyio.fail_after(seconds(1)):
        async with anyio.create_task_group() as tasks:
            await writer.start(tasks)
            mailbox.close("shutdown")
            await anyio.wait_all_tasks_blocked()
            assert writer.results == []
            writer.send.release.set()
    assert writer.results == [True]


@pytest.mark.anyio
async def test_cancelling_the_writer_is_not_swallowed_by_deliver() -> None:
    """Only a cancellation from `close` ends a send quietly; any other still cancels."""
    mailbox = Mailbox(4)
    writer = Writer(mailbox)
    with anyio.fail_after(seconds(1)):
        async with anyio.create_task_group() as tasks:
            await writer.start(tasks)
            tasks.cancel_scope.cancel()
    assert writer.results == []
    assert mailbox.closed is None
    assert mailbox.sending_since is None


@pytest.mark.anyio
async def test_cut_stalled_closes_only_mailboxes_blocked_past_the_timeout() -> None:
    """The hub's periodic check closes, as "slow", a mailbox whose send outlasted the timeout."""
    hub = Hub()
    stuck, idle = Mailbox(4), Mailbox(4)
    hub.attach(stuck, heartbeat=True)
    hub.attach(idle, heartbeat=True)
    with anyio.fail_after(seconds(1)):
        async with anyio.create_task_group() as tasks:
            await Writer(stuck).start(tasks)
            assert stuck.sending_since is not None
            hub.cut_stalled(stuck.sending_since + 29, timeout=30)
            assert stuck.closed is None
            hub.cut_stalled(stuck.sending_since + 30, timeout=30)
    assert (stuck.closed, idle.closed) == ("slow", None)
    assert stuck.sending_since is None


@pytest.mark.anyio
@pytest.mark.parametrize("ending", ["done", "expired"])
async def test_cut_stalled_cuts_the_last_send_of_an_ending_stream(ending: CloseReason) -> None:
    """A stream already ending (its terminal event sent, its token expired) whose last
    send blocks on a reader that stopped reading is cut like any other stalled send."""
    hub = Hub()
    mailbox = Mailbox(4)
    hub.attach(mailbox, heartbeat=True)
    writer = Writer(mailbox)
    with anyio.fail_after(seconds(1)):
        async with anyio.create_task_group() as tasks:
            mailbox.close(ending)
            await writer.start(tasks)
            assert mailbox.sending_since is not None
            hub.cut_stalled(mailbox.sending_since + 30, timeout=30)
    assert writer.results == [False]
    assert mailbox.closed == ending  # why it ended stays what it was


def test_a_snapshot_end_belongs_to_its_own_subscription(feed: Feed) -> None:
    """On a shared mailbox, a subscription covers its own `synced` marker and no other's,
    so dropping one subscription's pending events keeps the others' markers."""
    mailbox = Mailbox(capacity=10)
    job = feed.new()
    mine = Subscription(mailbox, job_id=job.job_id)
    everything = Subscription(mailbox)
    mine.prime([job], version=1)
    everything.prime([job], head=job.position)
    mailbox.retain(everything.covers)  # what unsubscribing `mine` does
    assert described(mailbox.take()) == [job, ("synced", 0, job.position)]


def test_a_long_poll_subscription_gets_no_snapshot_end(feed: Feed) -> None:
    """Primed without `synced`, a subscription's mailbox stays empty until a change comes."""
    mailbox = Mailbox(capacity=1)
    job = feed.new()
    Subscription(mailbox, job_id=job.job_id).prime([], version=1, synced=False)
    assert mailbox.take() == []


def test_a_snapshot_job_never_comes_after_its_end(feed: Feed) -> None:
    """A live change replacing a snapshot's job before it is sent takes that job's place in
    the snapshot: the end (`synced`) moves behind it, its cursor advanced to cover it."""
    mailbox = Mailbox(capacity=10)
    a1, b1 = feed.new(), feed.new()
    one = Subscription(mailbox, job_id=a1.job_id)
    everything = Subscription(mailbox)
    one.prime([a1], version=1)
    everything.prime([b1], head=b1.position)
    a2 = feed.next(a1)
    one.offer(a2)
    everything.offer(a2)
    assert described(mailbox.take()) == [
        b1,
        a2,
        ("synced", 2, None),
        ("synced", 0, a2.position),
    ]
    c1 = feed.new()
    everything.offer(c1)
    everything.offer(feed.next(c1))  # live, after the snapshot's end was sent: no marker moves
    assert [type(event) for event in mailbox.take()] == [Change]


# -- output ---------------------------------------------------------------------------


def appended(change: Change, offset: int, count: int) -> Output:
    """``count`` chunks appended to ``change``'s job from ``offset`` on."""
    bodies = [b'{"data":%d}' % n for n in range(offset, offset + count)]
    return Output(change.job_id, change.version, offset, bodies)


def offsets(events: list[Pending]) -> list[object]:
    """Each output's chunk offsets, and each change as its version."""
    return [
        list(range(e.offset, e.next_offset)) if isinstance(e, Output) else ("v", e.version)
        for e in events
        if not isinstance(e, Synced)
    ]


def test_output_reaches_only_subscriptions_that_asked_for_it(feed: Feed) -> None:
    hub = Hub()
    job = feed.new()
    wants, does_not, everything = Mailbox(10), Mailbox(10), Mailbox(10)
    for mailbox, output in ((wants, True), (does_not, False)):
        hub.subscribe(Subscription(mailbox, job_id=job.job_id, output=output)).prime([])
    hub.subscribe(Subscription(everything)).prime([])
    for mailbox in (wants, does_not, everything):
        mailbox.take()
    hub.publish_output(appended(job, 0, 2))
    assert offsets(wants.take()) == [[0, 1]]
    assert does_not.take() == everything.take() == []


def test_output_during_the_snapshot_is_sent_once_after_it(feed: Feed) -> None:
    """Appends that land while the snapshot is read: what the snapshot has is dropped,
    what overlaps it is trimmed, the rest follows."""
    job = feed.new()
    mailbox = Mailbox(10)
    subscription = Subscription(mailbox, job_id=job.job_id, output=True)
    subscription.offer_output(appended(job, 0, 2))  # in the snapshot already
    subscription.offer_output(appended(job, 2, 3))  # half in it
    subscription.offer_output(appended(job, 5, 1))
    subscription.prime([appended(job, 0, 4), job], version=job.version, offset=4)
    assert offsets(mailbox.take()) == [[0, 1, 2, 3], ("v", 1), [4], [5]]


def test_output_before_a_change_stays_before_it_when_the_change_is_conflated(
    feed: Feed,
) -> None:
    job = feed.new()
    mailbox = Mailbox(10)
    subscription = Subscription(mailbox, job_id=job.job_id, output=True)
    subscription.prime([], version=job.version)
    mailbox.take()
    second = feed.next(job)
    subscription.offer(second)
    subscription.offer_output(appended(second, 0, 1))
    subscription.offer(third := feed.next(second))
    subscription.offer_output(appended(third, 1, 1))
    # The second state is skipped; the chunk appended after it still precedes the third.
    assert offsets(mailbox.take()) == [[0], ("v", 3), [1]]


def test_a_gap_in_the_output_closes_the_mailbox_to_resume(feed: Feed) -> None:
    job = feed.new()
    mailbox = Mailbox(10)
    subscription = Subscription(mailbox, job_id=job.job_id, output=True)
    subscription.prime([], version=job.version)
    subscription.offer_output(appended(job, 3, 1))  # chunks 0 to 2 never came
    assert mailbox.closed == "overflow"


def test_output_is_never_conflated_but_bounded(feed: Feed) -> None:
    job = feed.new()
    mailbox = Mailbox(3)
    subscription = Subscription(mailbox, job_id=job.job_id, output=True)
    subscription.prime([], version=job.version, synced=False)
    mailbox.capacity = 3
    for offset in range(3):
        subscription.offer_output(appended(job, offset, 1))
    assert mailbox.closed is None
    subscription.offer_output(appended(job, 3, 1))
    assert mailbox.closed == "overflow"
