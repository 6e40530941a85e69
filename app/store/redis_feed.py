"""The Redis change feed: its entries read back, and the listener that delivers them.

Every change of every job is an entry of one Redis stream (the feed),
appended by the script that made the change (:mod:`app.store.redis_keys`).
An entry records either a change of state (the job as it became, or its
removal) or an output append (the chunks, with their lengths).

- **The feed position is the stream id.** ``Position(ms, seq)`` prints as
  ``ms-seq``, exactly an XADD id, so the cursor a client resumes with is a
  stream id every worker understands.
- **One listener per process.** :class:`FeedListener` runs one supervised
  task that XREADs the feed (BLOCK) and calls ``sink.publish`` for every
  entry, in feed order; subscribers never open Redis connections. On a
  Redis error it calls ``sink.close()`` (open streams end cleanly, clients
  reconnect and resume by cursor), waits with exponential backoff and
  jitter, and resumes from the last entry it delivered, so it never skips
  one. It logs an outage once when it starts and once when it ends. A
  feed that lost the listener's last entry (Redis restored from an older
  snapshot, or wiped) is noticed at the next read: the listener starts again
  from the feed's end, and the streams end so that their clients reset.
- **Read your writes.** A write waits (:meth:`FeedListener.until_delivered`)
  until this process's listener has published it, so "stored and pushed to
  every subscriber before the call returns" holds for local subscribers.
- **A start pinned before any read or write.** The listener delivers every
  entry after the feed's last one when the process first reached Redis, so
  no stream is primed with a head the listener would then start after.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.backoff import backoff
from app.models import JOB_STATUSES, JOB_TYPES, Job, JobStatus, JobType
from app.store import FeedSink
from app.store.outage import Outage
from app.store.recent import RecentJobs
from app.streams.events import Change, Output, Position

logger = logging.getLogger("jobcast")

START = Position(0, 0)  # before every stream id
PAGE = 500  # entries (or jobs) read per round trip
BLOCK_SECONDS = 2.0  # how long one XREAD of the listener waits for an entry
_ID_PART_LIMIT = 2**64 - 1
_BACKOFF_FIRST, _BACKOFF_CAP = 0.05, 2.0

Changes = list[Change]
Rows = list[list[Any]]

# Look-ups that turn stored text back into the Literal types.
JOB_TYPE: dict[str, JobType] = {name: name for name in JOB_TYPES}
STATUS: dict[str, JobStatus] = {name: name for name in JOB_STATUSES}


class FeedListener:
    """This process's reader of the feed at ``key``, delivering to ``sink``.

    ``redis`` is a client of its own, whose read timeout allows a blocking
    XREAD of :data:`BLOCK_SECONDS`; ``recent`` is kept fresh with every
    change it delivers, and cleared when it loses Redis.
    """

    def __init__(
        self, redis: Redis, key: str, sink: FeedSink, recent: RecentJobs, where: str
    ) -> None:
        self._redis = redis
        self._key = key
        self._sink = sink
        self._recent = recent
        self._task: asyncio.Task[None] | None = None
        # Every entry after this is delivered; None until first learned.
        self._cursor: Position | None = None
        self._delivered = START
        self._progress = asyncio.Event()
        self._outage = Outage(
            f"Redis change feed at {where} lost, live streams end until it is back",
            f"Redis change feed at {where} back",
            remind_every=None,
        )

    @property
    def delivered(self) -> Position:
        """The last entry delivered to the sink."""
        return self._delivered

    def start(self) -> None:
        self._task = asyncio.create_task(self._follow(), name="jobcast-redis-feed")

    async def aclose(self) -> None:
        task, self._task = self._task, None
        # Python 3.11's asyncio.wait_for, which redis-py uses while connecting, can
        # swallow a cancellation (fixed in 3.12): cancel until the task is done.
        # wait() rather than awaiting the task, so a cancellation aimed at us propagates.
        while task is not None and not task.done():
            task.cancel()
            await asyncio.wait([task], timeout=0.1)
        await self._redis.aclose()

    async def pin_start(self, redis: Redis) -> None:
        """Make sure the listener has a start: every change from now on is delivered.

        Called (through ``redis``, a client of the caller's) before any read or write.
        """
        if self._cursor is not None:
            return
        _, last = await bounds(redis, self._key)
        if self._cursor is None:  # another caller may have pinned it meanwhile
            self._cursor = self._delivered = last or START

    async def until_delivered(self, position: Position, deadline: asyncio.Timeout) -> None:
        """Wait, until ``deadline`` at most, for the listener to deliver ``position``.

        If the listener is down the change is stored all the same and is
        delivered when it resumes: stop waiting then.
        """
        if self._task is None:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(deadline.when()):
                while self._delivered < position:
                    await self._progress.wait()

    async def _follow(self) -> None:
        """Read the feed, deliver it in order, and survive Redis going away."""
        failures = 0
        while True:
            try:
                entries = await self._read()
            except (RedisError, OSError) as exc:
                failures += 1
                self._outage.failed(str(exc) or repr(exc))
            except Exception:
                # A bug must not silently stop every live stream of this process.
                failures += 1
                logger.exception("Redis change feed listener failed; retrying")
            else:
                failures = 0
                self._outage.over()
                self._deliver(entries)
                continue
            # Streams end cleanly; their clients reconnect and resume by cursor.
            self._sink.close()
            self._recent.clear()  # nothing keeps it fresh meanwhile
            await asyncio.sleep(backoff(failures, _BACKOFF_FIRST, _BACKOFF_CAP))

    async def _read(self) -> Rows:
        await self.pin_start(self._redis)
        cursor = self._cursor
        assert cursor is not None
        # The cursor's own entry is asked for in the same round trip, after the wait: if
        # it is gone, what follows the cursor is not what this process has yet to deliver.
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.xread({self._key: str(cursor)}, count=PAGE, block=round(BLOCK_SECONDS * 1000))
            pipe.xrange(self._key, str(cursor), str(cursor))
            reply, own = await pipe.execute()
        if not own and cursor != START:
            await self._start_again_after_loss(cursor)
            return []
        return list(reply[0][1]) if reply else []

    async def _start_again_after_loss(self, cursor: Position) -> None:
        """Start again from the feed's end, ending every live stream.

        The feed lost the entry at ``cursor``, the last one delivered: Redis came
        back from an older snapshot, a replica was promoted before it caught up,
        its keys were wiped, or trimming overtook this listener. New entries may
        even take ids before the cursor (when the lost ones were stamped by a
        clock ahead), where an XREAD after it would never see them. The clients
        resume by cursor into a reset, a full state read from Redis as it is.
        """
        _, last = await bounds(self._redis, self._key)
        end = last or START
        logger.warning(
            "Redis change feed no longer holds %s, the last entry this process delivered "
            "(Redis restored from an older snapshot, its keys wiped, or the feed trimmed "
            "past it): live streams start again from a snapshot at %s",
            cursor,
            end,
        )
        self._cursor = self._delivered = end
        self._sink.close()
        self._recent.clear()

    def _deliver(self, entries: Rows) -> None:
        if not entries:
            return
        sink, recent = self._sink, self._recent
        for entry_id, fields in entries:
            try:
                if b"lens" in fields:
                    output = output_of(fields)
                    recent.saw_output(output, position_of(entry_id))
                    sink.publish_output(output)
                else:
                    change = change_of(entry_id, fields)
                    recent.saw(change)
                    sink.publish(change)
            except (KeyError, ValueError):
                logger.exception("skipped a feed entry this version cannot read: %r", entry_id)
        self._cursor = self._delivered = position_of(entries[-1][0])
        self._progress.set()
        self._progress = asyncio.Event()


async def bounds(redis: Redis, key: str) -> tuple[Position | None, Position | None]:
    """The first and last positions still in the feed (None when it is empty)."""
    # Not a MULTI: a Redis out of memory refuses every transaction, even one that only
    # reads, and these two reads need none (an entry added between them is no harm).
    async with redis.pipeline(transaction=False) as pipe:
        pipe.xrange(key, count=1)
        pipe.xrevrange(key, count=1)
        first, last = await pipe.execute()
    return (  # replies are lists of (id, fields)
        position_of(first[0][0]) if first else None,
        position_of(last[0][0]) if last else None,
    )


def position_of(entry_id: bytes | str) -> Position:
    position = Position.parse(entry_id.decode() if isinstance(entry_id, bytes) else entry_id)
    if position is None:
        raise ValueError(f"not a stream id: {entry_id!r}")
    return position


def is_stream_id(position: Position) -> bool:
    # Both parts of a stream id are 64-bit; the largest cannot start an exclusive range.
    return position.epoch < _ID_PART_LIMIT and position.seq < _ID_PART_LIMIT


def readable_changes(entries: Rows, owner: str | None = None) -> Changes:
    """Feed entries as changes, skipping (and logging) any this version cannot read.

    ``owner``: only that owner's. An entry that names another owner (or none:
    ``''``) is skipped without decoding its job; one that names no owner at
    all (written by an earlier version) is decoded and left to the filter.
    """
    wanted = None if owner is None else owner.encode()
    changes: Changes = []
    for entry_id, fields in entries:
        if b"lens" in fields:
            continue  # an output append: no change of state
        if wanted is not None and fields.get(b"owner", wanted) != wanted:
            continue
        try:
            changes.append(change_of(entry_id, fields))
        except (KeyError, ValueError):
            logger.exception("skipped a feed entry this version cannot read: %r", entry_id)
    return changes


def change_of(entry_id: bytes, fields: dict[bytes, bytes]) -> Change:
    """A feed entry as the change it records."""
    body = fields.get(b"job")
    previous = fields.get(b"prev")
    owner = fields.get(b"owner")
    return Change(
        job_id=fields[b"id"].decode(),
        job_type=JOB_TYPE[fields[b"type"].decode()],
        position=position_of(entry_id),
        job=Job.model_validate_json(body) if body is not None else None,
        previous_status=STATUS[previous.decode()] if previous is not None else None,
        owner=(owner.decode() or None) if owner is not None else None,
    )


def output_of(fields: dict[bytes, bytes]) -> Output:
    """An output entry of the feed as the chunks it appended."""
    out, start, bodies = fields[b"out"], 0, []
    for length in fields[b"lens"].split(b","):
        end = start + int(length)
        bodies.append(out[start:end])
        start = end
    return Output(fields[b"id"].decode(), int(fields[b"v"]), int(fields[b"from"]), bodies)


def apply(state: dict[str, Change], change: Change) -> None:
    """Bring a snapshot forward by one feed change (which may be older than what it has)."""
    if change.job is None:
        state.pop(change.job_id, None)
        return
    known = state.get(change.job_id)
    if known is None or known.position < change.position:
        state[change.job_id] = Change.of(change.job, change.position)


def newest_per_job(changes: Changes) -> Changes:
    """The last change of each job, in feed order (a conflated catch-up)."""
    latest: dict[str, Change] = {}
    for change in changes:
        latest.pop(change.job_id, None)
        latest[change.job_id] = (
            change if change.job is None else Change.of(change.job, change.position)
        )
    return list(latest.values())
