"""An endpoint's gate with many deliveries waiting at it: a failed probe wakes one of
them (the next to watch for the reopening), not all; an answer lets them all go."""

from __future__ import annotations

import asyncio

import pytest

from app.webhooks.deliverer import _Gate

pytestmark = pytest.mark.anyio

WAITING = 200
FAR = 10_000.0  # a deadline nobody reaches in a test


class Clock:
    """A clock that moves only when told, counting how often it is read: each read is
    a waiting delivery looking at the gate again."""

    def __init__(self) -> None:
        self.now = 1_000.0
        self.reads = 0

    def __call__(self) -> float:
        self.reads += 1
        return self.now


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_failed_probe_wakes_one_waiting_delivery_and_an_answer_all() -> None:
    clock = Clock()
    gate = _Gate("http://receiver.example/hook", 60.0, clock)
    gate.report(False, False, "answered 500")  # the endpoint fails: the gate closes
    clock.now += 120  # past its reopening: the next to come goes as the probe
    assert await gate.admit(clock.now + FAR) is True
    waiting = [asyncio.ensure_future(gate.admit(clock.now + FAR)) for _ in range(WAITING)]
    await settle()
    assert not any(task.done() for task in waiting)

    clock.reads = 0
    gate.report(True, False, "answered 500")  # the probe failed
    await settle()
    assert clock.reads <= 3, "a failed probe woke more than the next watcher"
    assert not any(task.done() for task in waiting)

    clock.now += 120  # the watcher's wait ends at the reopening: it goes as the probe
    gate._wake_one()  # one looks again, as the watcher's timer (real time) would make it
    await settle()
    probes = [task for task in waiting if task.done()]
    assert [task.result() for task in probes] == [True]

    gate.report(True, True, "200")  # the endpoint answers: everyone goes
    await settle()
    rest = [task for task in waiting if task not in probes]
    assert all(task.done() and task.result() is False for task in rest)


async def test_a_watcher_that_gives_up_hands_the_watch_on() -> None:
    clock = Clock()
    gate = _Gate("http://receiver.example/hook", 60.0, clock)
    gate.report(False, False, "answered 500")
    soon = asyncio.ensure_future(gate.admit(clock.now + 0.01))  # watches, gives up first
    later = asyncio.ensure_future(gate.admit(clock.now + FAR))
    await settle()
    clock.now += 0.02
    assert await asyncio.wait_for(soon, 5) is None
    clock.now += 120
    # The one left watches now, and goes as the probe once the gate reopens.
    gate._wake_one()
    assert await asyncio.wait_for(later, 5) is True


def test_a_gate_failing_for_a_day_keeps_its_backoff_at_the_cap() -> None:
    """Over a thousand failures in a row (a receiver down for a day, at one a minute): the
    backoff stays at its cap (the doubling overflowed a float at the 1 025th)."""
    gate = _Gate("http://down.example/hook", 60.0, Clock())
    for _ in range(1_100):
        gate.report(False, False, "refused")
        gate._reopens_at = 0.0  # the next failure closes it again
    assert gate.failing


async def test_a_delivery_woken_then_cancelled_hands_its_wake_up_on() -> None:
    """A delivery woken to look at the gate, then given up (its lane made room) before it
    ran: it stops, and the next waiting delivery is woken in its place (on Python 3.11 it
    went on as if never cancelled; on later ones the wake-up was lost)."""
    clock = Clock()
    gate = _Gate("http://receiver.example/hook", 60.0, clock)
    gate.report(False, False, "answered 500")
    tasks = [asyncio.ensure_future(gate.admit(clock.now + FAR)) for _ in range(3)]
    await settle()
    watcher, woken, next_one = tasks
    clock.reads = 0
    list(gate._waiters)[1].set_result(None)  # `woken`'s wake-up...
    woken.cancel()  # ...and its cancel, in the same turn of the loop
    await settle()
    assert woken.cancelled()
    assert clock.reads >= 1, "another delivery looked at the gate in its place"
    assert not watcher.done()
    assert not next_one.done()
    for task in (watcher, next_one):
        task.cancel()
    await settle()
