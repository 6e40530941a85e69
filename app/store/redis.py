"""The Redis store: jobs shared by every worker process and every host.

Every process runs the same code against one Redis; nothing is held only
in one process's memory except the delivery cursor of its feed listener.

Keys (all under ``JOBS_REDIS_PREFIX``, default ``jobcast:``)::

    {p}job:{id}      hash: job (JSON), v (version), status, type, pos (feed position),
                     idem and fp (its Idempotency-Key and request fingerprint)
    {p}created       sorted set: id by creation number, for newest-first pages
    {p}created:seq   the creation counter
    {p}expiry        sorted set: terminal job id by removal deadline (unix seconds)
    {p}tomb:{id}     tombstone: the job type, with a native TTL of JOBS_TOMBSTONE_TTL
    {p}tombs         sorted set: tombstoned id by removal time (age and count limits)
    {p}idem:{hash}   Idempotency-Key (as its SHA-256, hex) → job id, deleted with the job
    {p}counts        hash: status → number of jobs (kept by the same scripts)
    {p}feed          stream: one entry per accepted change, MAXLEN ~ JOBS_REDIS_FEED_LENGTH

A job id is checked against ``job_`` + URL-safe characters before it goes
into a key name, so no id can reach outside its job's key; any other id
is simply not found. An Idempotency-Key goes in only as its SHA-256 (hex),
so whatever a client sends, its key name has one fixed shape and length.
A job's ``owner`` is stored in its hash (and on its removal's feed entry)
so owner-scoped lists and streams can filter without parsing every job.

Decisions, and why:

- **Rules stay in Python.** ``update`` reads the job, runs the Mutation
  (``app.jobs``) and hands the result to a Lua script that writes it only
  if the stored version is still the one read, and in the same atomic
  step appends the change to the feed and stores its position in the
  job. On a version conflict it reads again and re-runs the rules, so
  concurrent writers in any number of processes never lose a change, skip
  a version or break a transition rule.
- **The feed position is the stream id.** ``Position(ms, seq)`` prints as
  ``ms-seq``, exactly an XADD id, so the cursor a client resumes with is a
  stream id every worker understands.
- **One listener per process.** ``start()`` starts one supervised task that
  XREADs the feed (BLOCK) and calls ``sink.publish`` for every entry, in
  feed order; subscribers never open Redis connections. On a Redis error
  it calls ``sink.close()`` (open streams end cleanly, clients reconnect
  and resume by cursor), waits with exponential backoff and jitter, and
  resumes from the last entry it delivered, so it never skips one.
- **Read your writes.** A write returns once this process's listener has
  published it (bounded by JOBS_REDIS_TIMEOUT), so "stored and pushed to
  every subscriber before the call returns" holds for local subscribers.
- **Snapshots without blocking Redis.** ``replay(after=None)`` notes the
  feed's last id H, reads every job in pages, then reads the feed after H
  and applies it: the result is every job exactly as of the last entry
  read (the returned head). A change is in the snapshot or delivered live,
  never both, never neither; no script walks every job while Redis waits.
- **Resuming.** A cursor still inside the feed replays the entries after
  it, newest state per job (removals included). A cursor older than the
  first retained entry (trimmed, or from before a Redis restart that lost
  data) or newer than the last (another deployment) gets ``reset`` and
  the full state.
- **Clean-up once.** The sweep script removes due terminal jobs, writes
  their tombstones and appends their ``removed`` changes atomically, so
  with any number of processes sweeping each removal happens once.
- **Fail fast.** Socket timeouts of JOBS_REDIS_TIMEOUT, no client-side
  retries (a retried write could apply twice); every Redis error becomes
  ``BackendUnavailable`` (503) at this module's boundary. Pooled
  connections that Redis closed are replaced on their next use, so a
  restarted Redis is used again without restarting the server.

Needs Redis 6.2 or later (exclusive XRANGE bounds; tested with 7.0), with
``maxmemory-policy noeviction``: an evicted key would be a lost job, while
a full Redis under noeviction refuses writes, which surface as 503s.
Scripts name some keys they derive from the prefix (a job's key from its
id), which a single Redis (with replicas or Sentinel) allows and Redis
Cluster does not: Cluster is not supported.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import re
import time
from collections.abc import AsyncGenerator, Callable, Iterator, Sequence
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from app.errors import (
    BackendUnavailable,
    IdempotencyConflict,
    JobGone,
    JobNotFound,
)
from app.events import Change, Position
from app.models import JOB_STATUSES, JOB_TYPES, Job, JobStatus, JobType, encode
from app.settings import Settings, SettingsError
from app.store import (
    FeedSink,
    Idempotency,
    JobFilter,
    Mutation,
    Page,
    Replay,
    decode_page_cursor,
    encode_page_cursor,
)

logger = logging.getLogger("jobcast")

_JOB_ID = re.compile(r"job_[A-Za-z0-9_-]{1,64}")
_START = Position(0, 0)  # before every stream id
_ID_PART_LIMIT = 2**64 - 1
_PAGE = 500  # entries or jobs read per round trip
_SWEEP_BATCH = 200  # jobs removed per script call, so one call never holds Redis long
_MAX_ATTEMPTS = 1000  # version conflicts one update may lose before giving up
_FEED_BLOCK_MS = 2000
_BACKOFF_FIRST, _BACKOFF_CAP = 0.05, 2.0
POOL_SIZE = 64  # connections to Redis per process
_SNAPSHOT_ATTEMPTS = 3

# Named here because inside RedisStore ``list`` is the method of that name.
Changes = list[Change]
Rows = list[list[Any]]
Batch = list[tuple[str, int]]

# Look-ups that turn stored text back into the Literal types.
_JOB_TYPE: dict[str, JobType] = {name: name for name in JOB_TYPES}
_STATUS: dict[str, JobStatus] = {name: name for name in JOB_STATUSES}

_CREATE = """
-- KEYS: job, created, created:seq, feed, counts[, idem]
-- ARGV: id, json, type, status, version, maxlen, prefix, owner ('' for none)[, fingerprint]
if KEYS[6] then
  local earlier = redis.call('GET', KEYS[6])
  if earlier then
    local found = redis.call('HMGET', ARGV[7] .. 'job:' .. earlier, 'job', 'fp')
    if found[1] then return {0, found[1], found[2]} end
  end
end
local position = redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[6], '*',
  'id', ARGV[1], 'type', ARGV[3], 'job', ARGV[2])
redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[3]), ARGV[1])
redis.call('HSET', KEYS[1], 'job', ARGV[2], 'v', ARGV[5], 'status', ARGV[4],
  'type', ARGV[3], 'pos', position)
redis.call('HINCRBY', KEYS[5], ARGV[4], 1)
if ARGV[8] ~= '' then redis.call('HSET', KEYS[1], 'owner', ARGV[8]) end
if KEYS[6] then
  redis.call('SET', KEYS[6], ARGV[1])
  redis.call('HSET', KEYS[1], 'idem', KEYS[6], 'fp', ARGV[9])
end
return {1, position}
"""

_UPDATE = """
-- KEYS: job, feed, counts, expiry
-- ARGV: id, version read, json, new version, old status, new status, type, maxlen, deadline
local stored = redis.call('HGET', KEYS[1], 'v')
if not stored then return {0} end
if stored ~= ARGV[2] then return {-1} end
local position = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[8], '*',
  'id', ARGV[1], 'type', ARGV[7], 'job', ARGV[3], 'prev', ARGV[5])
redis.call('HSET', KEYS[1], 'job', ARGV[3], 'v', ARGV[4], 'status', ARGV[6], 'pos', position)
if ARGV[5] ~= ARGV[6] then
  redis.call('HINCRBY', KEYS[3], ARGV[5], -1)
  redis.call('HINCRBY', KEYS[3], ARGV[6], 1)
end
if ARGV[9] ~= '' then redis.call('ZADD', KEYS[4], ARGV[9], ARGV[1]) end
return {1, position}
"""

_SWEEP = """
-- KEYS: expiry, created, counts, feed, tombs
-- ARGV: now, batch, maxlen, prefix, tombstone ttl (ms), forget at or before, max tombstones
local last = false
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, id in ipairs(due) do
  redis.call('ZREM', KEYS[1], id)
  local key = ARGV[4] .. 'job:' .. id
  local job = redis.call('HMGET', key, 'type', 'status', 'idem', 'owner')
  if job[1] then
    redis.call('DEL', key)
    if job[3] then redis.call('DEL', job[3]) end
    redis.call('ZREM', KEYS[2], id)
    redis.call('HINCRBY', KEYS[3], job[2], -1)
    if job[4] then
      last = redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[3], '*',
        'id', id, 'type', job[1], 'owner', job[4])
    else
      last = redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[3], '*', 'id', id, 'type', job[1])
    end
    redis.call('SET', ARGV[4] .. 'tomb:' .. id, job[1], 'PX', ARGV[5])
    redis.call('ZADD', KEYS[5], ARGV[1], id)
  end
end
local old = redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', ARGV[6], 'LIMIT', 0, ARGV[2])
local excess = redis.call('ZCARD', KEYS[5]) - #old - tonumber(ARGV[7])
if excess > 0 then
  local extra = redis.call('ZRANGE', KEYS[5], #old, #old + math.min(excess, tonumber(ARGV[2])) - 1)
  for _, id in ipairs(extra) do table.insert(old, id) end
end
for _, id in ipairs(old) do
  redis.call('DEL', ARGV[4] .. 'tomb:' .. id)
  redis.call('ZREM', KEYS[5], id)
end
return {#due, #old, last}
"""


class RedisStore:
    def __init__(
        self, settings: Settings, sink: FeedSink, clock: Callable[[], float] = time.time
    ) -> None:
        self._settings = settings
        self._sink = sink
        self._clock = clock
        self._keys = _Keys(settings.redis_prefix)
        timeout = settings.redis_timeout
        self._redis = _client(settings.redis_url, timeout, timeout)
        # The listener blocks in XREAD, so its reads may take the block time too.
        self._feed_redis = _client(settings.redis_url, timeout, timeout + _FEED_BLOCK_MS / 1000)
        self._create = self._redis.register_script(_CREATE)
        self._update = self._redis.register_script(_UPDATE)
        self._sweep = self._redis.register_script(_SWEEP)
        self._listener: asyncio.Task[None] | None = None
        # The listener delivers every entry after this; None until first learned.
        self._feed_cursor: Position | None = None
        self._delivered = _START
        self._progress = asyncio.Event()

    # -- lifecycle ---------------------------------------------------------

    async def start(self) -> None:
        try:
            await self._pin_feed_start()
        except BackendUnavailable as exc:
            # Serve anyway (/readyz says 503); the feed starts once Redis answers.
            logger.warning("Redis is not reachable at start-up: %s", exc)
        self._listener = asyncio.create_task(self._follow_feed(), name="jobcast-redis-feed")

    async def aclose(self) -> None:
        listener, self._listener = self._listener, None
        # Python 3.11's asyncio.wait_for, which redis-py uses while connecting, can
        # swallow a cancellation (fixed in 3.12): cancel until the task is done.
        # wait() rather than awaiting the task, so a cancellation aimed at us propagates.
        while listener is not None and not listener.done():
            listener.cancel()
            await asyncio.wait([listener], timeout=0.1)
        await self._feed_redis.aclose()
        await self._redis.aclose()

    async def ping(self) -> None:
        with _unavailable_on_redis_error():
            await self._redis.ping()

    # -- writes ------------------------------------------------------------

    async def create(self, job: Job, idempotency: Idempotency | None) -> tuple[Job, bool]:
        keys = self._keys
        script_keys = [keys.job(job.job_id), keys.created, keys.created_seq, keys.feed, keys.counts]
        args: list[Any] = [
            job.job_id,
            encode(job),
            job.job_type,
            job.status,
            job.version,
            self._settings.redis_feed_length,
            keys.prefix,
            job.owner or "",
        ]
        if idempotency is not None:
            script_keys.append(keys.idempotency(idempotency.key))
            args.append(idempotency.fingerprint)
        with _unavailable_on_redis_error():
            await self._pin_feed_start()
            reply = await self._create(keys=script_keys, args=args)
        if int(reply[0]) == 0:
            if _text(reply[2]) != (idempotency.fingerprint if idempotency else None):
                raise IdempotencyConflict(
                    "this Idempotency-Key was used with a different request body"
                )
            return Job.model_validate_json(reply[1]), False
        await self._until_delivered(_position(reply[1]))
        return job, True

    async def update(self, job_id: str, mutation: Mutation) -> Job:
        for attempt in range(_MAX_ATTEMPTS):
            before, _ = await self._current(job_id)
            after = mutation(before)
            position = await self._write_if_unchanged(before, after)
            if position is not None:
                await self._until_delivered(position)
                return after
            if attempt >= 2:
                # Several writers keep colliding: spread them out a little.
                await asyncio.sleep(random.uniform(0, 0.001 * min(attempt, 20)))
        raise BackendUnavailable(f"job {job_id} changes too often to update; try again")

    async def _write_if_unchanged(self, before: Job, after: Job) -> Position | None:
        """Store ``after`` and append it to the feed, unless ``before`` is no longer current."""
        keys = self._keys
        # Retention runs on the store clock, as in the memory store.
        deadline = repr(self._clock() + self._settings.terminal_ttl) if after.is_terminal else ""
        with _unavailable_on_redis_error():
            reply = await self._update(
                keys=[keys.job(before.job_id), keys.feed, keys.counts, keys.expiry],
                args=[
                    before.job_id,
                    before.version,
                    encode(after),
                    after.version,
                    before.status,
                    after.status,
                    after.job_type,
                    self._settings.redis_feed_length,
                    deadline,
                ],
            )
        # 0: removed meanwhile, -1: changed meanwhile; either way, read it again.
        return _position(reply[1]) if int(reply[0]) == 1 else None

    async def sweep(self) -> None:
        now = self._clock()
        settings, keys = self._settings, self._keys
        last: Position | None = None
        with _unavailable_on_redis_error():
            await self._pin_feed_start()
            while True:
                due, forgotten, position = await self._sweep(
                    keys=[keys.expiry, keys.created, keys.counts, keys.feed, keys.tombstones],
                    args=[
                        repr(now),
                        _SWEEP_BATCH,
                        settings.redis_feed_length,
                        keys.prefix,
                        max(1, round(settings.tombstone_ttl * 1000)),
                        repr(now - settings.tombstone_ttl),
                        settings.max_tombstones,
                    ],
                )
                if position is not None:
                    last = _position(position)
                if int(due) < _SWEEP_BATCH and int(forgotten) < _SWEEP_BATCH:
                    break
        if last is not None:
            await self._until_delivered(last)

    # -- reads -------------------------------------------------------------

    async def get(self, job_id: str) -> Job:
        job, _ = await self._current(job_id)
        return job

    async def get_change(self, job_id: str) -> Change:
        job, position = await self._current(job_id)
        return Change.of(job, position)

    async def _current(self, job_id: str) -> tuple[Job, Position]:
        if not _JOB_ID.fullmatch(job_id):
            raise JobNotFound(job_id)
        with _unavailable_on_redis_error():
            await self._pin_feed_start()
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hmget(self._keys.job(job_id), "job", "pos")
                pipe.exists(self._keys.tombstone(job_id))
                (body, position), gone = await pipe.execute()
        if body is None:
            raise JobGone(job_id) if gone else JobNotFound(job_id)
        return Job.model_validate_json(body), _position(position)

    async def list(self, where: JobFilter, limit: int, cursor: str | None) -> Page:
        below = None if cursor is None else decode_page_cursor(cursor)
        jobs: list[Job] = []
        batches = self._newest_first(below, min(max(limit + 1, 64), 1000))
        with _unavailable_on_redis_error():
            async with contextlib.aclosing(batches):
                async for batch in batches:
                    ids = [job_id for job_id, _ in batch]
                    rows = await self._fields(ids, "type", "status", "owner", "job")
                    for (_, number), (job_type, status, owner, body) in zip(
                        batch, rows, strict=True
                    ):
                        if body is None or not where.matches(
                            _JOB_TYPE[job_type.decode()], _STATUS[status.decode()], _text(owner)
                        ):
                            continue
                        if len(jobs) == limit:
                            # The next page starts at this job: numbers below number + 1.
                            return Page(jobs, encode_page_cursor(number + 1))
                        jobs.append(Job.model_validate_json(body))
        return Page(jobs, None)

    async def count_by_status(self) -> dict[JobStatus, int]:
        with _unavailable_on_redis_error():
            counts = await self._redis.hgetall(self._keys.counts)
        return {status: int(counts.get(status.encode(), 0)) for status in JOB_STATUSES}

    async def replay(self, where: JobFilter, after: Position | None) -> Replay:
        with _unavailable_on_redis_error():
            await self._pin_feed_start()
            if after is not None:
                resumed = await self._resume(where, after)
                if resumed is not None:
                    return resumed
            return await self._full_state(where, reset=after is not None)

    async def _resume(self, where: JobFilter, after: Position) -> Replay | None:
        """The newest change of each job since ``after``; None if the feed cannot tell."""
        first, last = await self._feed_bounds()
        if not _is_stream_id(after):
            return None  # not one of ours, and Redis would refuse it as an XRANGE bound
        if after > (last or _START) or (first is not None and after < first):
            return None
        changes = await self._feed_after(after)
        if changes is None:
            return None
        head = changes[-1].position if changes else after
        born_since = {c.job_id for c in changes if c.job is not None and c.job.version == 1}
        latest = _newest_per_job(changes)
        return Replay(
            [c for c in latest if where.replays(c, known=c.job_id not in born_since)],
            head,
            reset=False,
        )

    async def _full_state(self, where: JobFilter, *, reset: bool) -> Replay:
        """Every matching job as of one feed position, read without blocking Redis."""
        for _ in range(_SNAPSHOT_ATTEMPTS):
            _, since = await self._feed_bounds()
            since = since or _START
            state = await self._snapshot()
            changes = await self._feed_after(since)
            if changes is None:
                continue  # trimmed past ``since`` while we read: start again
            for change in changes:
                _apply(state, change)
            head = changes[-1].position if changes else since
            matching = [change for change in state.values() if where.replays(change, known=False)]
            matching.sort(key=lambda change: change.position)
            return Replay(matching, head, reset)
        raise BackendUnavailable("the change feed moved faster than a snapshot could be read")

    async def _snapshot(self) -> dict[str, Change]:
        """Every job with the position of its latest change (each read at its own moment)."""
        state: dict[str, Change] = {}
        async for batch in self._newest_first(None, _PAGE):
            rows = await self._fields([job_id for job_id, _ in batch], "job", "pos")
            for body, position in rows:
                if body is not None:
                    job = Job.model_validate_json(body)
                    state[job.job_id] = Change.of(job, _position(position))
        return state

    async def _newest_first(self, below: int | None, size: int) -> AsyncGenerator[Batch, None]:
        """Batches of (id, creation number) from the creation index, newest first."""
        while True:
            reply: Any = await self._redis.zrevrangebyscore(
                self._keys.created,
                "+inf" if below is None else f"({below}",
                "-inf",
                start=0,
                num=size,
                withscores=True,
            )
            if not reply:
                return
            batch = [(job_id.decode(), int(number)) for job_id, number in reply]
            yield batch
            below = batch[-1][1]

    async def _fields(self, job_ids: Sequence[str], *fields: str) -> Rows:
        """The given hash fields of each job (None for a job that is gone), one round trip."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hmget(self._keys.job(job_id), *fields)
            rows: Rows = await pipe.execute()
        return rows

    # -- the feed ----------------------------------------------------------

    async def _feed_bounds(self) -> tuple[Position | None, Position | None]:
        """The first and last positions still in the feed (None when it is empty)."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.xrange(self._keys.feed, count=1)
            pipe.xrevrange(self._keys.feed, count=1)
            first, last = await pipe.execute()
        return (  # replies are lists of (id, fields)
            _position(first[0][0]) if first else None,
            _position(last[0][0]) if last else None,
        )

    async def _feed_after(self, after: Position) -> Changes | None:
        """Every change after ``after``, oldest first; None if some were trimmed away."""
        changes: Changes = []
        cursor = after
        while True:
            entries: Any = await self._redis.xrange(self._keys.feed, f"({cursor}", "+", count=_PAGE)
            changes += _readable_changes(entries)
            if len(entries) < _PAGE:
                break
            cursor = _position(entries[-1][0])
        # Trimming only removes the oldest entries: if the first one is still at or
        # before ``after``, nothing after it was ever removed. (_START means the feed
        # was empty: what follows it is complete unless a whole feed length was
        # written during this one read.)
        first, _ = await self._feed_bounds()
        if first is not None and first > after and after != _START:
            return None
        return changes

    async def _pin_feed_start(self) -> None:
        """Make sure the listener has a start: every change from now on reaches the sink.

        Called before any read or write, so no stream can be primed with a head the
        listener would then start after.
        """
        if self._feed_cursor is not None:
            return
        with _unavailable_on_redis_error():
            _, last = await self._feed_bounds()
        if self._feed_cursor is None:  # another caller may have pinned it meanwhile
            self._feed_cursor = self._delivered = last or _START

    async def _follow_feed(self) -> None:
        """The listener: read the feed, deliver it in order, and survive Redis going away."""
        failures = 0
        while True:
            try:
                entries = await self._read_feed()
            except (RedisError, OSError, BackendUnavailable) as exc:
                failures += 1
                delay = _backoff(failures)
                logger.warning("Redis change feed lost (%s); retry in %.2fs", exc, delay)
            except Exception:
                # A bug must not silently stop every live stream of this process.
                failures += 1
                delay = _backoff(failures)
                logger.exception("Redis change feed listener failed; retry in %.2fs", delay)
            else:
                failures = 0
                self._deliver(entries)
                continue
            # Streams end cleanly; their clients reconnect and resume by cursor.
            self._sink.close()
            await asyncio.sleep(delay)

    async def _read_feed(self) -> Rows:
        await self._pin_feed_start()
        assert self._feed_cursor is not None
        reply: Any = await self._feed_redis.xread(
            {self._keys.feed: str(self._feed_cursor)}, count=_PAGE, block=_FEED_BLOCK_MS
        )
        return list(reply[0][1]) if reply else []

    def _deliver(self, entries: Rows) -> None:
        if not entries:
            return
        for change in _readable_changes(entries):
            self._sink.publish(change)
        self._feed_cursor = self._delivered = _position(entries[-1][0])
        self._progress.set()
        self._progress = asyncio.Event()

    async def _until_delivered(self, position: Position) -> None:
        """Wait (briefly) until this process's listener has published ``position``.

        So a write returns only once local subscribers have it, as with the
        memory store. If the listener is down the change is stored all the same
        and reaches subscribers when it resumes: stop waiting then.
        """
        if self._listener is None:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._settings.redis_timeout):
                while self._delivered < position:
                    await self._progress.wait()


class _Keys:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.created = prefix + "created"
        self.created_seq = prefix + "created:seq"
        self.expiry = prefix + "expiry"
        self.tombstones = prefix + "tombs"
        self.counts = prefix + "counts"
        self.feed = prefix + "feed"

    def job(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}"

    def tombstone(self, job_id: str) -> str:
        return f"{self.prefix}tomb:{job_id}"

    def idempotency(self, key: str) -> str:
        # Hashed: a client's key never shapes a key name (length, characters, prefix).
        return f"{self.prefix}idem:{hashlib.sha256(key.encode()).hexdigest()}"


def _client(url: str, connect_timeout: float, read_timeout: float) -> Redis:
    try:
        pool = BlockingConnectionPool.from_url(
            url,
            # Requests beyond the pool wait their turn (as long as a reply may take)
            # rather than fail: a thousand browsers reconnecting at once is normal.
            max_connections=POOL_SIZE,
            timeout=read_timeout,
            # RESP2: the same reply shapes from every redis-py >= 5 and every server.
            protocol=2,
            socket_connect_timeout=connect_timeout,
            socket_timeout=read_timeout,
            # No silent retries: a write retried after a lost reply could apply twice.
            retry=Retry(NoBackoff(), 0),
        )
    except ValueError as exc:
        raise SettingsError(f"JOBS_REDIS_URL={url!r} is not a Redis URL: {exc}") from None
    return Redis.from_pool(pool)


def _backoff(failures: int) -> float:
    """Exponential, capped, with jitter so many processes do not reconnect in step."""
    delay = min(_BACKOFF_CAP, _BACKOFF_FIRST * 2.0 ** (failures - 1))
    return delay * random.uniform(0.5, 1.0)


@contextlib.contextmanager
def _unavailable_on_redis_error() -> Iterator[None]:
    """Translate the client's exceptions into ours, at the module boundary."""
    try:
        yield
    except (RedisError, OSError) as exc:
        raise BackendUnavailable(f"Redis cannot be reached: {exc}") from exc


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


def _position(entry_id: bytes | str) -> Position:
    position = Position.parse(entry_id.decode() if isinstance(entry_id, bytes) else entry_id)
    if position is None:
        raise ValueError(f"not a stream id: {entry_id!r}")
    return position


def _is_stream_id(position: Position) -> bool:
    # Both parts of a stream id are 64-bit; the largest cannot start an exclusive range.
    return position.epoch < _ID_PART_LIMIT and position.seq < _ID_PART_LIMIT


def _readable_changes(entries: Rows) -> Changes:
    """Feed entries as changes, skipping (and logging) any this version cannot read."""
    changes: Changes = []
    for entry_id, fields in entries:
        try:
            changes.append(_change(entry_id, fields))
        except (KeyError, ValueError):
            logger.exception("skipped a feed entry this version cannot read: %r", entry_id)
    return changes


def _change(entry_id: bytes, fields: dict[bytes, bytes]) -> Change:
    """A feed entry as the change it records."""
    body = fields.get(b"job")
    previous = fields.get(b"prev")
    owner = fields.get(b"owner")
    return Change(
        job_id=fields[b"id"].decode(),
        job_type=_JOB_TYPE[fields[b"type"].decode()],
        position=_position(entry_id),
        job=Job.model_validate_json(body) if body is not None else None,
        previous_status=_STATUS[previous.decode()] if previous is not None else None,
        owner=owner.decode() if owner is not None else None,
    )


def _apply(state: dict[str, Change], change: Change) -> None:
    """Bring a snapshot forward by one feed change (which may be older than what it has)."""
    if change.job is None:
        state.pop(change.job_id, None)
        return
    known = state.get(change.job_id)
    if known is None or known.position < change.position:
        state[change.job_id] = Change.of(change.job, change.position)


def _newest_per_job(changes: Changes) -> Changes:
    """The last change of each job, in feed order (a conflated catch-up)."""
    latest: dict[str, Change] = {}
    for change in changes:
        latest.pop(change.job_id, None)
        latest[change.job_id] = (
            change if change.job is None else Change.of(change.job, change.position)
        )
    return list(latest.values())
