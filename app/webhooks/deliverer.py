"""Delivery: every queued event to each of its endpoints, at least once, in order.

Each (endpoint, job) pair is a *lane*: its events go one after the other, each
retried until delivered, so a receiver sees a job's events in the order they
happened. Lanes run side by side, at most :data:`IN_FLIGHT` requests at once,
and at most :data:`PER_RECEIVER` of them to one receiver (a scheme, host and
port, whatever the paths): a receiver that answers slowly holds a quarter of
the places at most, and the others' deliveries go on.

Each endpoint has a *gate*. While the endpoint answers, the gate is open. Once
it fails, the gate closes for a backoff that doubles with each failure in a
row (up to JOBS_WEBHOOK_BACKOFF_MAX); when it reopens, one waiting delivery
goes first as a probe, and the others follow only once one succeeds. So a
receiver that is down gets one request per backoff, not one per event, and
gets everything soon after it is back. A delivery is given up (and counted
as failed) JOBS_WEBHOOK_RETRY_FOR seconds after its event was queued.

The process holds :data:`HOLD` events at most, and takes no more from the queue
while it holds that many. Held events waiting on a receiver that fails would
then stop every other receiver's deliveries too: so once the hold is full, the
oldest deliveries to the failing receiver that holds the most are given up
early, to make room.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from app.backoff import backoff
from app.errors import BackendUnavailable
from app.metrics import Metrics
from app.settings import Settings
from app.store.outage import Outage
from app.webhooks.policy import Endpoint, endpoints, request_of
from app.webhooks.queue import EventQueue, LeadershipLost, QueuedEvent
from app.webhooks.sender import Outcome, Sender

logger = logging.getLogger("jobcast")

T = TypeVar("T")
IN_FLIGHT = 32  # requests at once, across endpoints
PER_RECEIVER = 8  # of those, to one receiver
HOLD = 10_000  # events held in this process at most; the rest wait in the queue
EVICT = HOLD // 100  # deliveries given up at once to make room in a full hold, at least
FIRST_BACKOFF = 1.0


@dataclass(eq=False, slots=True)
class _Held:
    """An event being delivered, and how many of its endpoints are still to go."""

    event: QueuedEvent
    left: int


@dataclass(eq=False, slots=True)
class _Lane:
    receiver: str
    deliveries: deque[_Held] = field(default_factory=deque)
    task: asyncio.Task[None] | None = None
    evicted: bool = False  # given up to make room: its task is cancelled for it


class _Gate:
    """Whether an endpoint may be sent to now; see the module's docstring.

    While the endpoint fails, one waiting delivery *watches* for the gate to reopen
    (and then goes as the probe); the others sleep until they are woken: all of them
    when the endpoint answers again, one when the watcher's place is free. So a failed
    probe costs one wake-up, however many deliveries wait.
    """

    def __init__(self, url: str, most: float, clock: Callable[[], float]) -> None:
        self.url = url
        self._most = most
        self._clock = clock
        self._failures = 0
        self._reopens_at = 0.0
        self._probing = False
        self._watched = False  # a waiting delivery watches for the reopening
        self._waiters: dict[asyncio.Future[None], None] = {}  # in the order they came
        self._recovered = asyncio.Event()
        self.outage = Outage(f"webhook endpoint {url} fails", f"webhook endpoint {url} answers")

    @property
    def failing(self) -> bool:
        return self._failures > 0

    async def admit(self, deadline: float) -> bool | None:
        """Wait for a turn: False to go as one of many, True to go as the probe, None
        when ``deadline`` came first."""
        while self._failures:
            now = self._clock()
            if not self._probing and now >= self._reopens_at:
                self._probing = True
                return True
            if now >= deadline:
                return None
            watching = not self._probing and not self._watched
            self._watched = self._watched or watching
            until = min(deadline, self._reopens_at) if watching else deadline
            waiter = asyncio.get_running_loop().create_future()
            self._waiters[waiter] = None
            # asyncio.timeout, not wait_for: on Python 3.11, wait_for on a future woken just
            # before a cancel returns, and the cancelled delivery (a lane given up) goes on.
            try:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(until - now):
                        await waiter
            except asyncio.CancelledError:
                # Woken, then cancelled before it ran: the wake-up goes to another.
                self._stop_waiting(waiter, watching, woken=not waiter.cancelled())
                raise
            self._stop_waiting(waiter, watching)
        return False

    def _stop_waiting(
        self, waiter: asyncio.Future[None], watching: bool, woken: bool = False
    ) -> None:
        """``waiter`` waits no more. A watch it kept is someone else's now (if not ours
        again), and a wake-up it will not use goes to the next one."""
        del self._waiters[waiter]
        if watching:
            self._watched = False
        if watching or woken:
            self._wake_one()

    async def rest(self, seconds: float) -> None:
        """Wait ``seconds`` before trying again, or less if the endpoint answers meanwhile."""
        recovered = self._recovered
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await recovered.wait()

    def report(self, probe: bool, ok: bool | None, detail: str) -> None:
        """An attempt's result (None: it says nothing about the endpoint)."""
        if probe:
            self._probing = False
        if ok:
            if self._failures:
                self._recovered.set()  # wake every delivery resting after a failure
                self._recovered = asyncio.Event()
            self._failures, self._reopens_at = 0, 0.0
            self.outage.over()
            self._wake_all()  # the gate is open: every waiting delivery goes
            return
        if ok is False and self._clock() >= self._reopens_at:  # once per closing
            self._failures += 1
            self._reopens_at = self._clock() + backoff(self._failures, FIRST_BACKOFF, self._most)
            self.outage.failed(detail)
        if probe:
            self._wake_one()  # someone watches for the next reopening

    def _wake_one(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
                return

    def _wake_all(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)


class _Kept(Generic[T]):
    """What is kept per key (an endpoint's gate, a receiver's places) while deliveries
    use it, and let go after: every job's own URL would otherwise keep it for ever."""

    def __init__(self, make: Callable[[str], T]) -> None:
        self._make = make
        self._kept: dict[str, tuple[T, int]] = {}

    def __len__(self) -> int:
        return len(self._kept)

    def values(self) -> Iterator[T]:
        return (value for value, _ in self._kept.values())

    @contextlib.contextmanager
    def use(self, key: str) -> Iterator[T]:
        value, users = self._kept.get(key) or (self._make(key), 0)
        self._kept[key] = (value, users + 1)
        try:
            yield value
        finally:
            value, users = self._kept[key]
            if users == 1:
                del self._kept[key]
            else:
                self._kept[key] = (value, users - 1)


def _receiver(url: str) -> str:
    """Who answers ``url``: its scheme, host and port, however the URL spells them
    (``HTTPS://Hooks.example.com.:443`` is ``https://hooks.example.com:443``)."""
    scheme, host, port, _, _ = request_of(url)
    return f"{scheme}://{host}:{port}"


class Deliverer:
    def __init__(
        self,
        settings: Settings,
        queue: EventQueue,
        sender: Sender,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
        hold: int = HOLD,
    ) -> None:
        self._settings = settings
        self._hold = hold
        self._queue = queue
        self._sender = sender
        self._metrics = metrics
        self._clock = clock
        self._lanes: dict[tuple[str, str], _Lane] = {}
        most = settings.webhook_backoff_max
        self._gates = _Kept(lambda url: _Gate(url, most, clock))
        self._places = _Kept(lambda _: asyncio.Semaphore(PER_RECEIVER))
        self._held: dict[str, _Held] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._sending = asyncio.Semaphore(IN_FLIGHT)
        self._room = asyncio.Event()
        self._queue_outage = Outage(
            "webhook queue unavailable, deliveries wait", "webhook queue available again"
        )
        metrics.webhooks_pending.set_function(lambda: self.pending)
        metrics.webhooks_oldest.set_function(self._oldest_age)
        metrics.webhooks_delivering.set_function(lambda: int(queue.delivering))

    @property
    def pending(self) -> int:
        """Events held or queued, not delivered (or given up) everywhere yet."""
        return len(self._held) + self._queue.pending

    async def run(self) -> None:
        """Take events from the queue and deliver them, until cancelled."""
        try:
            while True:
                room = self._hold - len(self._held)
                if room <= 0:
                    self._room.clear()
                    self._make_room()
                    # Looked at again each second: a receiver may start failing meanwhile.
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(1.0):  # not wait_for: see _Gate.admit
                            await self._room.wait()
                    continue
                try:
                    events = await self._queue.take(room)
                except LeadershipLost:
                    self._drop_everything()
                    continue
                except BackendUnavailable as exc:
                    self._queue_outage.failed(str(exc))
                    await asyncio.sleep(1.0)  # the queue's backend is away: try again soon
                    continue
                except Exception:
                    # A bug: say so with its traceback, and keep delivering what can be.
                    logger.exception("webhooks: reading the queue failed")
                    await asyncio.sleep(1.0)
                    continue
                self._queue_outage.over()
                for event in events:
                    self._accept(event)
        finally:
            self._drop_everything()

    def _accept(self, event: QueuedEvent) -> None:
        targets = endpoints(event.job, self._settings)
        held = _Held(event, len(targets))
        self._held[event.key] = held
        if not targets:  # its endpoint left the configuration meanwhile
            self._finish(held)
            return
        for endpoint in targets:
            key = (endpoint.url, event.job.job_id)
            lane = self._lanes.get(key)
            if lane is None:
                lane = self._lanes[key] = _Lane(_receiver(endpoint.url))
                lane.task = self._start(self._drain(key, endpoint, lane))
            lane.deliveries.append(held)

    def _make_room(self) -> None:
        """The hold is full: give up the oldest deliveries to the failing receiver that holds
        the most (a receiver that answers makes room by itself)."""
        failing = {gate.url for gate in self._gates.values() if gate.failing}
        stuck: Counter[str] = Counter()  # deliveries waiting on a failing endpoint
        for (url, _), lane in self._lanes.items():
            if url in failing:
                stuck[lane.receiver] += len(lane.deliveries)
        if not stuck:
            return
        receiver = stuck.most_common(1)[0][0]
        evicted = 0
        for key, lane in list(self._lanes.items()):  # the oldest lanes first
            if evicted >= EVICT:
                break
            if key[0] in failing and lane.receiver == receiver:
                # Given up here, at once: its task may not have started, and a cancelled
                # task that never started runs nothing. A newer event starts a new lane.
                del self._lanes[key]
                lane.evicted = True
                if lane.task is not None:
                    lane.task.cancel()
                evicted += len(lane.deliveries)
                while lane.deliveries:
                    self._metrics.webhooks_failed.inc()
                    self._leave(lane)
        if evicted:
            logger.warning(
                "webhooks: %d deliveries to %s, which fails, given up early: this process "
                "holds %d events at most, and the others' deliveries wait behind them",
                evicted,
                receiver,
                self._hold,
            )

    def _start(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)  # held: the loop keeps only weak references to tasks
        task.add_done_callback(self._tasks.discard)
        return task

    async def _drain(self, key: tuple[str, str], endpoint: Endpoint, lane: _Lane) -> None:
        # _accept appends the lane's first delivery before this task first runs.
        try:
            while lane.deliveries:
                held = lane.deliveries[0]
                try:
                    await self._deliver(endpoint, held.event)
                except Exception as exc:  # a bug: lose this delivery, not the lane behind it
                    logger.exception("webhooks: delivering %s failed", held.event.webhook_id)
                    self._given_up(endpoint, held.event, repr(exc))
                if lane.evicted:
                    return  # given up meanwhile, its cancel to come: _make_room did the rest
                self._leave(lane)
        except asyncio.CancelledError:
            if lane.evicted:
                return  # _make_room gave its deliveries up, and took it off the lanes
            raise
        del self._lanes[key]

    def _leave(self, lane: _Lane) -> None:
        """The lane's first delivery is over, delivered or not."""
        held = lane.deliveries.popleft()
        held.left -= 1
        if held.left == 0:
            self._finish(held)

    async def _deliver(self, endpoint: Endpoint, event: QueuedEvent) -> None:
        """Send ``event`` until delivered, refused, or given up."""
        with (
            self._gates.use(endpoint.url) as gate,
            self._places.use(_receiver(endpoint.url)) as places,
        ):
            await self._through(gate, places, endpoint, event)

    async def _through(
        self, gate: _Gate, places: asyncio.Semaphore, endpoint: Endpoint, event: QueuedEvent
    ) -> None:
        give_up_at = event.queued_at + self._settings.webhook_retry_for
        failures = 0
        while True:
            probe = await gate.admit(give_up_at)
            if probe is None:
                return self._given_up(endpoint, event, "its endpoint kept failing")
            try:
                async with places, self._sending:  # one of its receiver's, then one of all
                    attempt = await self._sender.attempt(endpoint, event)
            except asyncio.CancelledError:
                gate.report(probe, None, "cancelled")  # a probe cut short: another may go
                raise
            delivered = attempt.outcome is Outcome.DELIVERED
            said = None if attempt.outcome is Outcome.REFUSED else delivered
            gate.report(probe, said, attempt.detail)
            if delivered:
                self._metrics.webhooks_sent.inc()
                return None
            if attempt.outcome is Outcome.REFUSED:
                return self._given_up(endpoint, event, attempt.detail)
            failures += 1
            left = give_up_at - self._clock()
            if left <= 0:
                return self._given_up(endpoint, event, attempt.detail)
            # The last wait ends at the deadline: its attempt is the last, if the gate lets it.
            wait = backoff(failures, FIRST_BACKOFF, self._settings.webhook_backoff_max)
            self._metrics.webhooks_retried.inc()
            await gate.rest(min(wait, left))

    def _given_up(self, endpoint: Endpoint, event: QueuedEvent, why: str) -> None:
        self._metrics.webhooks_failed.inc()
        logger.warning(
            "webhook %s (job %s, version %d) to %s given up: %s",
            event.webhook_id,
            event.job.job_id,
            event.job.version,
            endpoint.url,
            why,
        )

    def _finish(self, held: _Held) -> None:
        """The event is done everywhere: let it go, and tell the queue in a task of its own
        (a lane given up while it waited must not cut the acknowledgement short)."""
        self._held.pop(held.event.key, None)
        self._room.set()
        self._start(self._acknowledge(held.event))

    async def _acknowledge(self, event: QueuedEvent) -> None:
        try:
            await self._queue.done(event)
        except BackendUnavailable as exc:
            # Still pending in the queue: delivered again by whoever leads next (same id).
            self._queue_outage.failed(str(exc))

    async def stop(self) -> None:
        """Stop every delivery in progress, and wait until they have stopped."""
        tasks = list(self._tasks)
        self._drop_everything()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _drop_everything(self) -> None:
        """Stop every delivery: another process delivers what this one held."""
        for task in self._tasks:
            task.cancel()
        self._lanes.clear()
        self._held.clear()
        self._room.set()

    def _oldest_age(self) -> float:
        if not self._held:
            return 0.0
        return max(0.0, self._clock() - min(h.event.queued_at for h in self._held.values()))
