"""The Redis store: jobs shared by every worker process and every host.

Every process runs the same code against one Redis; nothing is held only
in one process's memory except the delivery cursor of its feed listener.

The keys and the Lua scripts that change them atomically are in
:mod:`app.store.redis_keys`. How each operation runs under one deadline, and
how its errors are told, is in :mod:`app.store.redis_client`. The change
feed, and the one listener per process that delivers it to this process's
subscribers (so a write returns once they have it), are in
:mod:`app.store.redis_feed`.

Decisions, and why:

- **Rules stay in Python.** ``update`` runs the Mutation (``app.jobs``) on
  the job and hands the result to a Lua script that writes it only if the
  stored version, output size and last write (the feed position of the write
  that made the state, ``w``) are still the ones the rules saw, and in the
  same atomic step appends the change to the feed and stores its position in
  the job. (The last write tells two states of one version apart should
  Redis lose a write, in a failover or a restore.) On a conflict it reads
  again and re-runs the rules, so concurrent writers in any number of
  processes never lose a change, skip a version or break a transition rule.
  The rules first run on the state this process knows
  (:mod:`app.store.recent`), without a read; only a write or a conflict
  tells whether that state was current, so a refusal or "nothing to change"
  found on it is decided again on a fresh read.
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
- **An owner's reads read only that owner's jobs.** The create script
  adds a job that has an owner to that owner's index, and the sweep
  script takes it out, in the same atomic steps as the rest. A list or a
  snapshot filtered by owner pages through that index instead of
  ``created``; the snapshot is taken as above (a job created or removed
  while it is read is in the feed after H). A resume reads the feed after
  its cursor whatever the filter (removals are recorded only there; what
  it reads is bounded by the feed's length, not by the job table), but
  each entry names its job's owner, so other owners' entries are skipped
  without decoding their jobs.
- **Jobs older than the owner indexes** (created by an earlier version)
  are in none at first. Until ``owners:indexed`` exists, owner-scoped
  reads page through ``created`` as they used to (complete, not bounded),
  while every sweep indexes the next batch of them from ``owners:walked``
  on; the last batch sets ``owners:indexed``, and from then on each
  process uses the indexes. A deployment whose first job is created by
  this version is marked at that first create. During a rolling upgrade,
  jobs that a process of the earlier version creates after the walk has
  finished are in no index: owner-scoped lists and snapshots miss them
  (owner streams still get their changes live) until they are removed.
  Deleting ``owners:indexed`` runs the walk again.
- **Clean-up once.** The sweep script removes due terminal jobs, writes
  their tombstones and appends their ``removed`` changes atomically, so
  with any number of processes sweeping each removal happens once.

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
import random
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

from app.errors import (
    BackendUnavailable,
    IdempotencyConflict,
    JobGone,
    JobNotFound,
    JobsError,
    OffsetMismatch,
)
from app.jobs import JobFilter, is_job_id
from app.models import JOB_STATUSES, Job, JobList, JobStatus, encode
from app.settings import Settings
from app.store import (
    Appended,
    Bodies,
    FeedSink,
    Idempotency,
    Mutation,
    OutputRead,
    Replay,
    decode_page_cursor,
    encode_page_cursor,
    output_after_end,
    output_too_large,
    redis_keys as scripts,
)
from app.store.recent import RecentJobs
from app.store.redis_client import RedisClient, connect, progressed
from app.store.redis_feed import (
    BLOCK_SECONDS,
    JOB_TYPE,
    PAGE,
    START,
    STATUS,
    Changes,
    FeedListener,
    Rows,
    apply,
    bounds,
    is_stream_id,
    newest_per_job,
    position_of,
    readable_changes,
)
from app.store.redis_keys import Keys
from app.streams.events import Change, Output, Position
from app.webhooks import policy as webhook_policy

_SWEEP_BATCH = 200  # jobs removed per script call, so one call never holds Redis long
_MAX_ATTEMPTS = 1000  # version conflicts one update may lose before giving up
_RECENT_JOBS = 1024  # jobs whose newest state a process keeps, to change them without a read
_SNAPSHOT_ATTEMPTS = 3
_WALK_BATCH = 500  # older jobs put into their owner's index per sweep

# Named here because inside RedisStore ``list`` is the method of that name.
Ids = list[str]
Batch = list[tuple[str, int]]
# Writes a job's change from the first state (last written at the feed position given) to
# the second, unless the first is no longer the stored one: the change's position, or None.
Write = Callable[[Job, Job, str], Awaitable[Position | None]]


class RedisStore:
    def __init__(
        self, settings: Settings, sink: FeedSink, clock: Callable[[], float] = time.time
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._keys = Keys(settings.redis_prefix)
        timeout = settings.redis_timeout
        self._client = RedisClient(settings.redis_url, timeout)
        self._call = self._client.call
        self._redis = self._client.redis
        self._create = self._redis.register_script(scripts.CREATE)
        self._update = self._redis.register_script(scripts.UPDATE)
        self._append = self._redis.register_script(scripts.APPEND)
        self._sweep = self._redis.register_script(scripts.SWEEP)
        self._delete = self._redis.register_script(scripts.DELETE)
        self._index_older = self._redis.register_script(scripts.INDEX_OLDER)
        # Whether every job with an owner is in its owner's index (then reads use them).
        self._owners_indexed = False
        self._recent = RecentJobs(_RECENT_JOBS)
        self._feed = FeedListener(
            # The listener runs under no deadline, and blocks in XREAD: its reads may take
            # that long too.
            connect(settings.redis_url, timeout, timeout + BLOCK_SECONDS),
            self._keys.feed,
            sink,
            self._recent,
            self._client.where,
        )

    # -- lifecycle ---------------------------------------------------------

    async def start(self) -> None:
        # Redis may be down: serve anyway (/readyz says 503, and the outage is
        # logged); the listener pins the feed's start once Redis answers.
        with contextlib.suppress(BackendUnavailable):
            async with self._call():
                await self._feed.pin_start(self._redis)
        self._feed.start()

    async def aclose(self) -> None:
        await self._feed.aclose()
        await self._client.aclose()

    async def ping(self) -> None:
        async with self._call():
            await self._redis.ping()

    # -- writes ------------------------------------------------------------

    async def create(self, job: Job, idempotency: Idempotency | None) -> tuple[Job, bool]:
        keys = self._keys
        script_keys = [
            keys.job(job.job_id),
            keys.created,
            keys.created_seq,
            keys.feed,
            keys.counts,
            keys.owners_indexed,
            keys.active,
            keys.hooks,
        ]
        args: list[Any] = [
            job.job_id,
            encode(job),
            job.job_type,
            job.status,
            job.version,
            self._settings.redis_feed_length,
            keys.prefix,
            job.owner or "",
            repr(job.updated_at.timestamp()),
            self._hook(job),
        ]
        if job.owner:
            script_keys.append(keys.owner(job.owner))
        if idempotency is not None:
            script_keys.append(keys.idempotency(idempotency.key))
            args.append(idempotency.fingerprint)
        async with self._call(writes=True) as deadline:
            await self._feed.pin_start(self._redis)
            reply = await self._create(keys=script_keys, args=args)
        if int(reply[0]) == 0:
            if _text(reply[2]) != (idempotency.fingerprint if idempotency else None):
                raise IdempotencyConflict(
                    "this Idempotency-Key was used with a different request body"
                )
            return Job.model_validate_json(reply[1]), False
        position = position_of(reply[1])
        self._recent.wrote(job, position, self._feed.delivered)
        await self._feed.until_delivered(position, deadline)
        return job, True

    async def update(self, job_id: str, mutation: Mutation) -> Job:
        async with self._call(writes=True) as deadline:
            _, after, position = await self._change(job_id, mutation, self._write_if_unchanged)
        if position is not None:
            await self._feed.until_delivered(position, deadline)
        return after

    async def _change(
        self, job_id: str, mutation: Mutation, write: Write
    ) -> tuple[Job, Job, Position | None]:
        """The job before and after ``mutation``, and where ``write`` stored the change in
        the feed (None: the mutation changed nothing).

        The mutation is decided first on the state this process knows (no read); a
        decision that state may have got wrong (a refusal, nothing to change) is made
        again on the stored job, and ``write`` refuses a state that is not current.
        """
        for attempt in range(_MAX_ATTEMPTS):
            known = self._recent.get(job_id) if attempt == 0 else None
            if known is None:
                before, _, written = await self._current(job_id)
            else:
                written, before = str(known[0]), known[1]
            try:
                after = mutation(before)
            except JobsError:
                if known is None:
                    raise
                continue
            if after is before:
                if known is None:
                    return before, after, None
                continue
            position = await write(before, after, written)
            if position is not None:
                self._recent.wrote(after, position, self._feed.delivered)
                return before, after, position
            self._recent.forget(job_id)  # what this process knew, or read, is stale
            if attempt >= 2:
                # Several writers keep colliding: spread them out a little.
                await asyncio.sleep(random.uniform(0, 0.001 * min(attempt, 20)))
        raise BackendUnavailable(f"job {job_id} changes too often; try again")

    async def _write_if_unchanged(self, before: Job, after: Job, written: str) -> Position | None:
        """Store ``after`` and append it to the feed, unless ``before`` (last written at
        feed position ``written``) is no longer current."""
        keys = self._keys
        # Retention runs on the store clock, as in the memory store.
        deadline = repr(self._clock() + self._settings.terminal_ttl) if after.is_terminal else ""
        reply = await self._update(
            keys=[
                keys.job(before.job_id),
                keys.feed,
                keys.counts,
                keys.expiry,
                keys.active,
                keys.hooks,
            ],
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
                before.owner or "",
                repr(after.updated_at.timestamp()),
                self._hook(after),
                before.output_size or 0,
                written,
            ],
        )
        # 0: removed meanwhile, -1: changed meanwhile; either way, read it again.
        return position_of(reply[1]) if int(reply[0]) == 1 else None

    async def append_output(self, job_id: str, bodies: Bodies, expected: int | None) -> Appended:
        # As updates do: decide in Python, write if nothing changed since (the job's
        # JSON carries outputSize, so appends and changes are one sequence per job).
        def grow(job: Job) -> Job:
            if job.is_terminal:
                raise output_after_end(job)
            held = job.output_size or 0
            if expected is not None and expected != held:
                raise OffsetMismatch(expected, held)
            return job.model_copy(update={"output_size": held + len(bodies)})

        async def write(job: Job, grown: Job, written: str) -> Position | None:
            held = job.output_size or 0
            reply = await self._append(
                keys=[self._keys.job(job_id), self._keys.output(job_id), self._keys.feed],
                args=[
                    job_id,
                    job.version,
                    held,
                    encode(grown),
                    self._settings.output_max_bytes,
                    self._settings.redis_feed_length,
                    job.job_type,
                    job.owner or "",
                    written,
                    ",".join(str(len(body)) for body in bodies),
                    *bodies,
                ],
            )
            if int(reply[0]) == -2:
                raise output_too_large(int(reply[1]), self._settings.output_max_bytes)
            # 0: removed meanwhile, -1: changed meanwhile; either way, read it again.
            return position_of(reply[1]) if int(reply[0]) == 1 else None

        async with self._call(writes=True) as deadline:
            before, after, position = await self._change(job_id, grow, write)
        assert position is not None  # grow never leaves a job as it is
        await self._feed.until_delivered(position, deadline)
        return Appended(Output(job_id, before.version, before.output_size or 0, bodies), after)

    async def read_output(self, job_id: str, after: int, limit: int | None) -> OutputRead:
        if not is_job_id(job_id):
            raise JobNotFound(job_id)
        keys = self._keys
        # Not a MULTI, which a Redis out of memory refuses even to read: chunks appended
        # between the reads are cut off below (the job's size comes first), and the next
        # read or the stream brings them.
        async with self._call(), self._redis.pipeline(transaction=False) as pipe:
            pipe.hmget(keys.job(job_id), "v", "osize", "status")
            pipe.exists(keys.tombstone(job_id))
            if limit != 0:
                pipe.lrange(keys.output(job_id), after, -1 if limit is None else after + limit - 1)
            (version, size, status), gone, *pages = await pipe.execute()
        if version is None:
            raise JobGone(job_id) if gone else JobNotFound(job_id)
        total = int(size or 0)
        bodies: Bodies = list(pages[0][: max(0, total - after)]) if pages else []
        output = Output(job_id, int(version), min(after, total), bodies)
        return OutputRead(output, total, status.decode() in ("completed", "error"))

    def _hook(self, job: Job) -> str:
        """The scripts' flag: '1' to queue this state of the job for webhooks."""
        return "1" if webhook_policy.wanted(job, self._settings) else ""

    async def delete(self, job_id: str) -> None:
        if not is_job_id(job_id):
            raise JobNotFound(job_id)
        settings = self._settings
        async with self._call(writes=True) as deadline:
            await self._feed.pin_start(self._redis)
            position = await self._delete(
                keys=self._removal_keys(),
                args=[
                    job_id,
                    repr(self._clock()),
                    settings.redis_feed_length,
                    self._keys.prefix,
                    max(1, round(settings.tombstone_ttl * 1000)),
                ],
            )
            if position is None:
                gone = await self._redis.exists(self._keys.tombstone(job_id))
                raise JobGone(job_id) if gone else JobNotFound(job_id)
        await self._feed.until_delivered(position_of(position), deadline)

    async def untouched_since(self, moment: datetime, limit: int) -> Ids:
        async with self._call():
            found: Any = await self._redis.zrangebyscore(
                self._keys.active, "-inf", repr(moment.timestamp()), start=0, num=limit
            )
        return [job_id.decode() for job_id in found]

    def _removal_keys(self) -> list[str]:
        """The KEYS of the scripts that remove jobs (SWEEP, DELETE)."""
        keys = self._keys
        return [keys.expiry, keys.created, keys.counts, keys.feed, keys.tombstones, keys.active]

    async def sweep(self) -> None:
        now = self._clock()
        settings, keys = self._settings, self._keys
        last: Position | None = None
        async with self._call(writes=True) as deadline:
            await self._feed.pin_start(self._redis)
            while True:
                due, forgotten, position = await self._sweep(
                    keys=self._removal_keys(),
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
                progressed()
                if position is not None:
                    last = position_of(position)
                if int(due) < _SWEEP_BATCH and int(forgotten) < _SWEEP_BATCH:
                    break
            await self._index_older_jobs()
        if last is not None:
            await self._feed.until_delivered(last, deadline)

    async def _index_older_jobs(self) -> None:
        """One step of the walk that puts jobs older than the owner indexes into them."""
        keys = self._keys
        indexed, walked = await self._redis.mget(keys.owners_indexed, keys.owners_walked)
        self._owners_indexed = indexed is not None
        if self._owners_indexed:
            return
        reply: Any = await self._redis.zrangebyscore(
            keys.created, f"({int(walked or 0)}", "+inf", start=0, num=_WALK_BATCH, withscores=True
        )
        batch = [(job_id.decode(), int(number)) for job_id, number in reply]
        rows = await self._fields([job_id for job_id, _ in batch], "owner", "owned")
        done = len(batch) < _WALK_BATCH
        args: list[Any] = [keys.prefix, batch[-1][1] if batch else 0, "1" if done else "0"]
        for (job_id, number), (owner, owned) in zip(batch, rows, strict=True):
            if owner is not None and owned is None:
                args += [job_id, owner, keys.owner(owner.decode()), number]
        await self._index_older(keys=[keys.owners_walked, keys.owners_indexed], args=args)
        self._owners_indexed = done

    # -- reads -------------------------------------------------------------

    async def get(self, job_id: str) -> Job:
        async with self._call():
            job, _, _ = await self._current(job_id)
        return job

    async def get_change(self, job_id: str) -> Change:
        async with self._call():
            job, position, _ = await self._current(job_id)
        return Change.of(job, position)

    async def _current(self, job_id: str) -> tuple[Job, Position, str]:
        """The stored job, the feed position of its last change, and that of its last write
        ('' if no write has recorded it yet: written by an earlier version)."""
        if not is_job_id(job_id):
            raise JobNotFound(job_id)
        await self._feed.pin_start(self._redis)
        fields: Any = await self._redis.hmget(self._keys.job(job_id), ["job", "pos", "w"])
        body, position, written = fields
        if body is None:
            # Not atomic with the read, and need not be: ids are never reused.
            gone = await self._redis.exists(self._keys.tombstone(job_id))
            raise JobGone(job_id) if gone else JobNotFound(job_id)
        return Job.model_validate_json(body), position_of(position), _text(written) or ""

    async def list(self, where: JobFilter, limit: int, cursor: str | None) -> JobList:
        below = None if cursor is None else decode_page_cursor(cursor)
        jobs: list[Job] = []
        async with self._call():
            index = await self._index_of(where.owner)
            batches = self._newest_first(index, below, min(max(limit + 1, 64), 1000))
            async with contextlib.aclosing(batches):
                async for batch in batches:
                    ids = [job_id for job_id, _ in batch]
                    rows = await self._fields(ids, "type", "status", "owner", "job")
                    for (_, number), (job_type, status, owner, body) in zip(
                        batch, rows, strict=True
                    ):
                        if body is None or not where.matches(
                            JOB_TYPE[job_type.decode()], STATUS[status.decode()], _text(owner)
                        ):
                            continue
                        if len(jobs) == limit:
                            # The next page starts at this job: numbers below number + 1.
                            return JobList(jobs=jobs, next_cursor=encode_page_cursor(number + 1))
                        jobs.append(Job.model_validate_json(body))
        return JobList(jobs=jobs)

    async def count_by_status(self) -> dict[JobStatus, int]:
        async with self._call():
            counts = await self._redis.hgetall(self._keys.counts)
        return {status: int(counts.get(status.encode(), 0)) for status in JOB_STATUSES}

    async def replay(self, where: JobFilter, after: Position | None) -> Replay:
        async with self._call():
            await self._feed.pin_start(self._redis)
            if after is not None:
                resumed = await self._resume(where, after)
                if resumed is not None:
                    return resumed
            return await self._full_state(where, reset=after is not None)

    async def _resume(self, where: JobFilter, after: Position) -> Replay | None:
        """The newest change of each job since ``after``; None if the feed cannot tell."""
        first, last = await bounds(self._redis, self._keys.feed)
        if not is_stream_id(after):
            return None  # not one of ours, and Redis would refuse it as an XRANGE bound
        # A snapshot taken while the feed was empty ends at START: the whole feed follows
        # it, as long as none of the feed was ever trimmed.
        from_the_start = after == START and first is not None
        if after > (last or START) or (first is not None and after < first and not from_the_start):
            return None
        if from_the_start and not await self._feed_never_trimmed():
            return None  # asked first, so a trimmed feed is not read in vain
        changes = await self._feed_after(after, where.owner)
        if changes is None or (from_the_start and not await self._feed_never_trimmed()):
            return None  # trimmed while it was read
        head = changes[-1].position if changes else after
        born_since = {c.job_id for c in changes if c.job is not None and c.job.version == 1}
        latest = newest_per_job(changes)
        return Replay(
            [c for c in latest if where.replays(c, known=c.job_id not in born_since)],
            head,
            reset=False,
        )

    async def _feed_never_trimmed(self) -> bool:
        """Whether no entry was ever removed from the feed: Redis 7 counts the entries ever
        added (XINFO STREAM), an earlier one does not (then False)."""
        info: Any = await self._redis.xinfo_stream(self._keys.feed)
        added = info.get("entries-added")
        return added is not None and int(added) == int(info["length"])

    async def _full_state(self, where: JobFilter, *, reset: bool) -> Replay:
        """Every matching job as of one feed position, read without blocking Redis."""
        index = await self._index_of(where.owner)
        for _ in range(_SNAPSHOT_ATTEMPTS):
            _, since = await bounds(self._redis, self._keys.feed)
            since = since or START
            state = await self._snapshot(index)
            changes = await self._feed_after(since, where.owner)
            if changes is None:
                continue  # trimmed past ``since`` while we read: start again
            for change in changes:
                apply(state, change)
            head = changes[-1].position if changes else since
            matching = [change for change in state.values() if where.replays(change, known=False)]
            matching.sort(key=lambda change: change.position)
            return Replay(matching, head, reset)
        raise BackendUnavailable("the change feed moved faster than a snapshot could be read")

    async def _snapshot(self, index: str) -> dict[str, Change]:
        """Every job in ``index`` with the position of its latest change (each read at its
        own moment)."""
        state: dict[str, Change] = {}
        async for batch in self._newest_first(index, None, PAGE):
            rows = await self._fields([job_id for job_id, _ in batch], "job", "pos")
            for body, position in rows:
                if body is not None:
                    job = Job.model_validate_json(body)
                    state[job.job_id] = Change.of(job, position_of(position))
        return state

    async def _index_of(self, owner: str | None) -> str:
        """The sorted set that holds every job of ``owner`` (None: of everyone)."""
        if owner is None:
            return self._keys.created
        if not self._owners_indexed:
            self._owners_indexed = bool(await self._redis.exists(self._keys.owners_indexed))
        # Until older jobs are indexed, an owner's are found among everyone's.
        return self._keys.owner(owner) if self._owners_indexed else self._keys.created

    async def _newest_first(
        self, index: str, below: int | None, size: int
    ) -> AsyncGenerator[Batch, None]:
        """Batches of (id, creation number) from a creation index, newest first."""
        while True:
            reply: Any = await self._redis.zrevrangebyscore(
                index,
                "+inf" if below is None else f"({below}",
                "-inf",
                start=0,
                num=size,
                withscores=True,
            )
            progressed()
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

    async def _feed_after(self, after: Position, owner: str | None = None) -> Changes | None:
        """Every change after ``after`` (of ``owner``'s jobs only, if given), oldest first;
        None if some were trimmed away."""
        changes: Changes = []
        # The first page starts at ``after`` itself, which must be there: a feed that
        # holds the entries around it but not it lost it (a Redis rolled back to its last
        # snapshot, then written again), and what follows is not what the client missed.
        check = after != START
        bound = str(after) if check else f"({after}"
        while True:
            entries: Any = await self._redis.xrange(self._keys.feed, bound, "+", count=PAGE)
            progressed()
            full = len(entries) == PAGE
            if check:
                if not entries or position_of(entries[0][0]) != after:
                    return None
                check = False
                bound = f"({after}"
                entries = entries[1:]
            changes += readable_changes(entries, owner)
            if not full:
                break
            bound = f"({position_of(entries[-1][0])}"
        # Trimming only removes the oldest entries: if the first one is still at or
        # before ``after``, nothing after it was ever removed. (START means the feed
        # was empty: what follows it is complete unless a whole feed length was
        # written during this one read.)
        first, _ = await bounds(self._redis, self._keys.feed)
        if first is not None and first > after and after != START:
            return None
        return changes


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value
