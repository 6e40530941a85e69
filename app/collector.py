"""The cyclic garbage collector, tuned once per process for many long-lived connections.

A full collection walks every object the collector tracks. With a thousand
open streams that is a pause of tens of milliseconds in which no event goes
out, and every subscriber feels it as latency. So, once the server has
started: ``gc.freeze()`` takes everything created until then (modules,
classes, schemas, the app: tens of thousands of objects that live as long as
the process) out of every later collection, and full collections are made
ten times rarer. Young collections keep their default pace: a refused
request can leave a reference cycle holding its body (up to
JOBS_MAX_BODY_BYTES), and those cycles die young.
"""

from __future__ import annotations

import functools
import gc

FULL_EVERY = 100  # middle-generation collections per full one (default 10)


@functools.cache
def settle() -> None:
    """Freeze the start-up objects and space out full collections (once per process)."""
    gc.collect()
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_EVERY)
