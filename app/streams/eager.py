"""Sending now, in the caller's turn of the event loop.

A live change reaches an idle connection through the code that published it:
:func:`start` runs the connection's send until the send first has to wait.
Most sends never wait (the socket takes the bytes at once), and then the
change cost no task wake-up, no future and no second turn of the loop: per
subscriber, that is most of what a fan-out costs in Python.

A send that does have to wait (its transport is paused: the client reads
slower than it is sent to) comes back :class:`Suspended`. Awaiting that, from
the connection's own task, finishes the send exactly as if the task had
awaited it from the start: what it waits on, its cancellation and its
errors all pass through. Python 3.12's eager tasks do the first half of
this, but cost a task per send and do not exist on 3.11.
"""

from __future__ import annotations

from collections.abc import Awaitable, Generator
from typing import Any


class Suspended:
    """A send that :func:`start` began and that waits; awaiting it finishes it."""

    __slots__ = ("_coro", "_waiting_on")

    def __init__(self, coro: Generator[Any, Any, None], waiting_on: Any) -> None:
        self._coro = coro
        self._waiting_on = waiting_on

    def __await__(self) -> Generator[Any, Any, None]:
        coro, waiting_on = self._coro, self._waiting_on
        while True:
            # Hand what the send waits on to the awaiting task, and the task's answer
            # (a result, or an exception such as its cancellation) back to the send.
            try:
                answer = yield waiting_on
            except BaseException as exc:  # every exception is the send's to handle
                try:
                    waiting_on = coro.throw(exc)
                except StopIteration:
                    return
                continue
            try:
                waiting_on = coro.send(answer)
            except StopIteration:
                return

    def close(self) -> None:
        """Abandon the send (nothing will await it)."""
        self._coro.close()


def start(send: Awaitable[None]) -> Suspended | None:
    """Run ``send`` until it finishes (None) or has to wait (:class:`Suspended`).

    Its errors are raised here, to the caller."""
    steps = send.__await__()
    try:
        waiting_on = steps.send(None)
    except StopIteration:
        return None
    return Suspended(steps, waiting_on)
