"""The cyclic garbage collector, tuned once per process for many long-lived connections.

A full collection walks every object the collector tracks. With a thousand
open streams that is a pause of tens of milliseconds in which no event goes
out, and every subscriber feels it as latency. So, once the server has
started: ``gc.freeze()`` takes everything created until then (modules,
classes, schemas, the app: tens of thousands of objects that live as long as
the process) out of every later collection; full collections are ten times
rarer; and young ones run every 10 000 allocations instead of 700, since a
fan-out to a thousand subscribers allocates a few objects per delivery and
each young collection walks whatever is in flight (and promotes it towards
the expensive generations). Cyclic garbage waits a little longer: a refused
request, the usual source, leaves about 25 small objects (measured under
uvicorn; its body is freed by reference counting).
"""

from __future__ import annotations

import gc

YOUNG_EVERY = 10_000  # allocations per young collection (default 700)
FULL_EVERY = 100  # middle-generation collections per full one (default 10)


def settle() -> None:
    """Freeze the start-up objects and space out collections (a serving process does it
    once its app has started: :mod:`app.serve`)."""
    gc.collect()
    gc.freeze()
    _, middle, _ = gc.get_threshold()
    gc.set_threshold(YOUNG_EVERY, middle, FULL_EVERY)
