"""The embedded in-memory store: one process, no dependencies.

Indexes, each kept so no operation walks every job:

- ``_latest``: id → the job's latest change (so its current state), ordered
  by feed position, so a replay walks back only over what changed since.
  Keeping the change (not just the job) keeps its encodings: a job's JSON
  is encoded once per version, whether a poll, a snapshot or a live push
  asks first.
- ``_created``: every job id in creation order, for newest-first pages.
- ``_owned``: owner → that owner's job ids in creation order, so an owner's
  list and full replay walk only that owner's jobs (a job without an owner
  is in none; an owner whose last job is removed leaves the index).
- ``_born``: id → feed position of its creation (did a client's cursor know it?).
- ``_expiry``: a heap of (deadline, id) for terminal jobs, for the sweeper.
- ``_tombstones``: id → removal, in removal order, bounded in count and age.
- ``_output``: id → the job's output, in segments (:class:`_Output`): a job's
  output costs its bytes, one more per chunk, and at most about one segment.
"""

from __future__ import annotations

import heapq
import secrets
import time
from array import array
from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

from app.errors import IdempotencyConflict, JobGone, JobNotFound, OffsetMismatch
from app.jobs import JobFilter
from app.models import JOB_STATUSES, Job, JobList, JobStatus, JobType
from app.settings import Settings
from app.store import (
    Appended,
    Bodies,
    Idempotency,
    Mutation,
    OutputRead,
    Publish,
    PublishOutput,
    Replay,
    decode_page_cursor,
    encode_page_cursor,
    output_after_end,
    output_too_large,
)
from app.streams.events import Change, Output, Position

Ids = list[str]  # named here because inside MemoryStore ``list`` is a method
SEGMENT = 16 * 1024  # bytes of a job's output stored together (see _Output)


@dataclass(frozen=True, slots=True)
class _Tombstone:
    job_type: JobType
    removed_at: float
    position: Position
    owner: str | None


class _CreationOrder:
    """Job ids by creation number, oldest first: (number, id), sorted, for newest-first pages.

    A removed job's entry stays until removed ones are most of the list; then
    they all go in one pass. Removal stays cheap, and a walk visits at most
    about twice as many entries as there are jobs.
    """

    __slots__ = ("entries", "live")

    def __init__(self) -> None:
        self.entries: list[tuple[int, str]] = []
        self.live = 0

    def add(self, number: int, job_id: str) -> None:
        self.entries.append((number, job_id))
        self.live += 1

    def removed(self, is_live: Callable[[str], bool]) -> None:
        """One of these jobs is gone (``is_live`` no longer holds for it)."""
        self.live -= 1
        if len(self.entries) > 64 and self.live < len(self.entries) // 2:
            self.entries = [entry for entry in self.entries if is_live(entry[1])]


class _Output:
    """One job's output, about as compact as its bytes: the chunks' JSON, each ended by a
    newline (stored JSON has none), in segments of about SEGMENT bytes, and the offset of
    each segment's first chunk. Full segments are exact-size ``bytes``; only the one being
    filled has room to grow. So a job's output costs its bytes, one more per chunk, and
    at most about one segment: no index entry, object or allocation slack per chunk."""

    __slots__ = ("count", "filling", "firsts", "json_bytes", "segments")

    def __init__(self) -> None:
        self.segments: list[bytes] = []  # full segments, oldest first
        self.filling = bytearray()  # the segment being filled
        self.firsts = array("Q")  # the offset of each segment's first chunk, filling's last
        self.count = 0  # chunks held
        self.json_bytes = 0  # their JSON, newlines not counted (JOBS_OUTPUT_MAX_BYTES)

    def append(self, bodies: Bodies) -> None:
        for body in bodies:
            if self.filling and len(self.filling) + len(body) >= SEGMENT:
                self.segments.append(bytes(self.filling))
                self.filling = bytearray()
            if not self.filling:
                self.firsts.append(self.count)
            assert b"\n" not in body  # the service encodes chunks as compact JSON
            self.filling += body
            self.filling += b"\n"
            self.count += 1
            self.json_bytes += len(body)

    def read(self, start: int, stop: int) -> Bodies:
        found: Bodies = []
        index = max(0, bisect_right(self.firsts, start) - 1)
        while len(found) < stop - start and index < len(self.firsts):
            segment = self.segments[index] if index < len(self.segments) else self.filling
            first = self.firsts[index]
            bodies = bytes(segment).split(b"\n")[:-1]
            found += bodies[max(0, start - first) : stop - first]
            index += 1
        return found


class MemoryStore:
    def __init__(
        self,
        settings: Settings,
        publish: Publish,
        clock: Callable[[], float] = time.time,
        *,
        publish_output: PublishOutput | None = None,
    ) -> None:
        self._settings = settings
        self._publish = publish
        self._publish_output = publish_output or (lambda output: None)
        self._output: dict[str, _Output] = {}
        self._clock = clock
        # Random, so a cursor from an earlier run (or another store) never resumes here.
        self._epoch = secrets.randbits(48)
        self._seq = 0
        self._created_seq = 0
        self._created = _CreationOrder()
        self._owned: dict[str, _CreationOrder] = {}
        self._latest: dict[str, Change] = {}
        self._born: dict[str, Position] = {}  # id → position of its creation
        self._expiry: list[tuple[float, str]] = []
        self._tombstones: dict[str, _Tombstone] = {}
        self._keys: dict[str, tuple[str, str]] = {}  # idempotency key → (fingerprint, job id)
        self._key_of: dict[str, str] = {}  # job id → idempotency key
        self._counts: Counter[JobStatus] = Counter()
        # A replay from before this position may have missed a forgotten tombstone.
        self._horizon = Position(self._epoch, 0)

    async def start(self) -> None:
        return None

    async def create(self, job: Job, idempotency: Idempotency | None) -> tuple[Job, bool]:
        self._sweep(self._clock())
        if idempotency is not None and idempotency.key in self._keys:
            fingerprint, job_id = self._keys[idempotency.key]
            if fingerprint != idempotency.fingerprint:
                raise IdempotencyConflict(
                    "this Idempotency-Key was used with a different request body"
                )
            return self._current(job_id), False
        self._created_seq += 1
        self._created.add(self._created_seq, job.job_id)
        if job.owner is not None:
            self._owned.setdefault(job.owner, _CreationOrder()).add(self._created_seq, job.job_id)
        if idempotency is not None:
            self._keys[idempotency.key] = (idempotency.fingerprint, job.job_id)
            self._key_of[job.job_id] = idempotency.key
        self._counts[job.status] += 1
        born = self._next_position()
        self._born[job.job_id] = born
        self._record(Change.of(job, born))
        return job, True

    async def get(self, job_id: str) -> Job:
        return self._current(job_id)

    async def get_change(self, job_id: str) -> Change:
        change = self._latest.get(job_id)
        if change is None:
            raise self._missing(job_id)
        return change

    async def update(self, job_id: str, mutation: Mutation) -> Job:
        before = self._current(job_id)
        after = mutation(before)
        if after is before:
            return before  # nothing to change: no new version, nothing to publish
        self._counts[before.status] -= 1
        self._counts[after.status] += 1
        if after.is_terminal:
            deadline = self._clock() + self._settings.terminal_ttl
            heapq.heappush(self._expiry, (deadline, job_id))
        self._record(Change.of(after, self._next_position(), before.status))
        return after

    async def list(self, where: JobFilter, limit: int, cursor: str | None) -> JobList:
        below = None if cursor is None else decode_page_cursor(cursor)
        entries = self._order_of(where.owner).entries
        start = len(entries) if below is None else bisect_left(entries, (below, ""))
        jobs: list[Job] = []
        for index in range(start - 1, -1, -1):
            job_id = entries[index][1]
            job = self._live(job_id)
            if job is None or not where.matches(job.job_type, job.status, job.owner):
                continue
            if len(jobs) == limit:
                return JobList(jobs=jobs, next_cursor=encode_page_cursor(entries[index + 1][0]))
            jobs.append(job)
        return JobList(jobs=jobs)

    async def replay(self, where: JobFilter, after: Position | None) -> Replay:
        head = Position(self._epoch, self._seq)
        reset = after is not None and not (self._horizon <= after <= head)
        since = None if after is None or reset else after
        if since is None:
            changes = [c for c in self._jobs_of(where.owner) if where.replays(c, known=False)]
        else:
            changes = []
            # Newest change first, back to the cursor: only what changed since.
            for job_id, change in reversed(self._latest.items()):
                if change.position <= since:
                    break
                if where.replays(change, known=self._born[job_id] <= since):
                    changes.append(change)
            for job_id, stone in reversed(self._tombstones.items()):
                if stone.position <= since:
                    break
                removal = _removal(job_id, stone)
                if where.replays(removal, known=True):
                    changes.append(removal)
        changes.sort(key=lambda change: change.position)
        return Replay(changes, head, reset)

    async def sweep(self) -> None:
        self._sweep(self._clock())

    async def count_by_status(self) -> dict[JobStatus, int]:
        return {status: self._counts[status] for status in JOB_STATUSES}

    async def ping(self) -> None:
        return None

    async def aclose(self) -> None:
        return None

    def _order_of(self, owner: str | None) -> _CreationOrder:
        """The creation order a walk needs: every job's, or only ``owner``'s."""
        if owner is None:
            return self._created
        return self._owned.get(owner) or _CreationOrder()

    def _jobs_of(self, owner: str | None) -> Iterable[Change]:
        """The latest change of every job, or of ``owner``'s jobs only, in no set order."""
        if owner is None:
            return self._latest.values()
        changes = (self._latest.get(job_id) for _, job_id in self._order_of(owner).entries)
        return [change for change in changes if change is not None]

    def _live(self, job_id: str) -> Job | None:
        change = self._latest.get(job_id)
        return None if change is None else change.job

    def _current(self, job_id: str) -> Job:
        job = self._live(job_id)
        if job is None:
            raise self._missing(job_id)
        return job

    def _missing(self, job_id: str) -> JobGone | JobNotFound:
        return JobGone(job_id) if job_id in self._tombstones else JobNotFound(job_id)

    def _next_position(self) -> Position:
        self._seq += 1
        return Position(self._epoch, self._seq)

    def _record(self, change: Change) -> None:
        self._latest.pop(change.job_id, None)
        if change.job is not None:
            self._latest[change.job_id] = change
        self._publish(change)

    async def append_output(self, job_id: str, bodies: Bodies, expected: int | None) -> Appended:
        change = await self.get_change(job_id)
        job = change.job
        assert job is not None  # the latest change of a live job
        if job.is_terminal:
            raise output_after_end(job)
        output = self._output.get(job_id) or _Output()
        held = output.count
        if expected is not None and expected != held:
            raise OffsetMismatch(expected, held)
        size = output.json_bytes + sum(map(len, bodies))
        if size > self._settings.output_max_bytes:
            raise output_too_large(size, self._settings.output_max_bytes)
        self._output[job_id] = output
        output.append(bodies)
        grown = job.model_copy(update={"output_size": output.count})
        # The same position: appending is not a change of state (no new version), and a
        # replay from before it sends the job as it is now, outputSize and all.
        self._latest[job_id] = Change.of(grown, change.position, change.previous_status)
        appended = Output(job_id, job.version, held, bodies)
        self._publish_output(appended)
        return Appended(appended, grown)

    async def read_output(self, job_id: str, after: int, limit: int | None) -> OutputRead:
        job = self._current(job_id)
        output = self._output.get(job_id) or _Output()
        total = output.count
        start = min(after, total)
        stop = total if limit is None else min(total, start + limit)
        bodies = output.read(start, stop)
        return OutputRead(Output(job_id, job.version, start, bodies), total, job.is_terminal)

    async def delete(self, job_id: str) -> None:
        job = self._current(job_id)
        self._remove(job, self._clock())

    async def untouched_since(self, moment: datetime, limit: int) -> Ids:
        # _latest is in the order of each job's last change: the oldest come first.
        found: Ids = []
        for job_id, change in self._latest.items():
            job = change.job
            if job is None or job.updated_at > moment or len(found) == limit:
                break
            if not job.is_terminal:
                found.append(job_id)
        return found

    def _sweep(self, now: float) -> None:
        while self._expiry and self._expiry[0][0] <= now:
            _, job_id = heapq.heappop(self._expiry)
            job = self._live(job_id)
            if job is not None:  # not deleted meanwhile
                self._remove(job, now)
        self._forget_tombstones(now - self._settings.tombstone_ttl)

    def _remove(self, job: Job, now: float) -> None:
        """Take the job out of every index, leave its tombstone, and publish its removal."""
        job_id = job.job_id
        self._counts[job.status] -= 1
        del self._born[job_id]
        self._output.pop(job_id, None)
        key = self._key_of.pop(job_id, None)
        if key is not None:
            del self._keys[key]
        stone = _Tombstone(job.job_type, now, self._next_position(), job.owner)
        self._tombstones[job_id] = stone
        self._record(_removal(job_id, stone))
        self._created.removed(self._latest.__contains__)
        if job.owner is not None:
            owned = self._owned[job.owner]
            owned.removed(self._latest.__contains__)
            if owned.live == 0:
                del self._owned[job.owner]

    def _forget_tombstones(self, older_than: float) -> None:
        while self._tombstones:
            job_id, stone = next(iter(self._tombstones.items()))
            if (
                stone.removed_at > older_than
                and len(self._tombstones) <= self._settings.max_tombstones
            ):
                return
            del self._tombstones[job_id]
            self._horizon = stone.position


def _removal(job_id: str, stone: _Tombstone) -> Change:
    return Change(
        job_id=job_id,
        job_type=stone.job_type,
        position=stone.position,
        job=None,
        owner=stone.owner,
    )
