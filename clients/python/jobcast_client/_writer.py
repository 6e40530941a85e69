"""Output writers: chunks written one by one (an LLM's tokens), appended in batches.

    with jobs.output_writer(job_id, kind="token") as out:
        for token in llm.stream(prompt):
            out.write(token)       # buffered; appended every 100 chunks or 0.1 s

A writer keeps the chunks written since its last append and appends them
when ``max_chunks`` are waiting, when the oldest has waited ``max_delay``
seconds (a background thread, or a task of the ``async with`` block, sees
to that even when no write comes), on :meth:`flush`, and on close. No append
carries more than ``max_chunks`` chunks or a body of more than ``max_bytes``
bytes (one chunk larger than that goes alone), so a burst of large chunks
goes in several appends, each under the server's ``JOBS_MAX_BODY_BYTES``.

Every append carries ``expectedOffset``, starting from the job's
``outputSize`` (read once, at the first append), so each batch is appended
exactly once however it is retried (:mod:`._output`). An append refused
because another writer appended first is made again at the end of the
output: a batch lands at its expected offset or nowhere, so that cannot
duplicate it. Batches leave in the order they were written, one at a time.

When an append fails (the retries are spent, the job ended), its batch is
kept as it was sent and the error is raised: by the call that flushed, or,
when the background flush failed, by the next ``write``, ``flush`` or close.
The next append sends that batch again first, alone (it may have landed with
its answer lost: sent as it was, its retry can tell), then what was written
since. ``flush()`` tries again, exactly once as ever; closing gives up on
what it could not send. An error that a later append made moot (the kept
batch went after all) is not raised.

A batch the server refuses for what it holds (:class:`InvalidJobData`, such
as :class:`OutputTooLarge`: more chunks or bytes than it takes at once, a
chunk over its limit, a job's output full) surely did not land, and sent
again as it is would be refused again. So it is split in halves, which go
again at once, and later appends carry at most as many chunks as the half;
a single chunk refused is dropped, and once the rest has gone its error is
raised, as any other. So one bad chunk costs itself, never the good ones
around it, and a ``max_chunks`` above the server's limit settles below it.
"""

from __future__ import annotations

import contextlib
import json
import math
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Self

import anyio
from anyio.abc import TaskGroup

from ._exceptions import InvalidJobData, JobcastError
from ._models import Chunk, OutputAppended
from ._output import _append_batch, _start_offset

if TYPE_CHECKING:
    from ._client import AsyncJobsClient, JobsClient

DEFAULT_MAX_CHUNKS = 100
DEFAULT_MAX_DELAY = 0.1  # seconds
# Half the server's default JOBS_MAX_BODY_BYTES (1 MiB).
DEFAULT_MAX_BYTES = 512 * 1024
# An append's body around its chunks, at most: {"chunks":[...],"expectedOffset":<20 digits>}.
ENVELOPE_BYTES = 64


class Batch:
    """What a writer holds, without the I/O: chunks waiting, since when, where they go,
    and the error a background append left for the caller."""

    def __init__(self, kind: str | None, max_chunks: int, max_delay: float, max_bytes: int) -> None:
        if max_chunks < 1:
            raise ValueError("max_chunks must be at least 1")
        if max_delay < 0:
            raise ValueError("max_delay must not be negative")
        if max_bytes <= ENVELOPE_BYTES:
            raise ValueError(f"max_bytes must be more than {ENVELOPE_BYTES}")
        self.kind = kind
        self.max_chunks = max_chunks
        self.max_delay = max_delay
        self.budget = max_bytes - ENVELOPE_BYTES  # bytes of chunk JSON one append carries
        self.limit = max_chunks  # chunks one append carries: less after a refusal
        self.chunks: list[Chunk] = []
        self.sizes: list[int] = []  # each waiting chunk's JSON, in bytes, and a comma
        self.bytes = 0  # their sum
        # A batch whose append failed: it may have landed (its answer lost), so it goes
        # again alone, as it was sent, where its retry can tell.
        self.failed: list[Chunk] = []
        self.offset: int | None = None  # where the next batch goes; None until read
        # A background append's error, for the caller; ``kept`` when its batch is the
        # failed one, so that sending that batch makes the error moot.
        self.error: Exception | None = None
        self.error_kept = False
        self._since: float | None = None  # when the oldest waiting chunk was written
        self._resending = False  # the batch taken is the failed one
        self._regrow = False  # a single chunk was dropped: the limit was not the count

    def add(self, data: Any, kind: str | None) -> bool:
        """Keep one chunk; whether the batch is full.

        A value JSON cannot carry raises here (TypeError, ValueError), at the
        write that gave it, rather than in every append of the batch it would block.
        """
        chunk = Chunk(data, kind if kind is not None else self.kind)
        size = _size(chunk)
        self.chunks.append(chunk)
        self.sizes.append(size)
        self.bytes += size
        if self._since is None:
            self._since = time.monotonic()
        return len(self.chunks) >= self.limit or self.bytes >= self.budget

    def take(self, *, full: bool = False) -> list[Chunk]:
        """The next batch to append: a failed one as it was, else the waiting chunks, as
        many as fit in ``limit`` and ``budget`` (at least one); with ``full``, only a
        batch that is full (the rest waits for more, or for its time)."""
        self._resending = bool(self.failed)
        if self.failed:
            failed, self.failed = self.failed, []
            if not self.chunks:
                self._since = None
            return failed
        count, total = 0, 0
        for size in self.sizes[: self.limit]:
            if count and total + size > self.budget:
                break
            count, total = count + 1, total + size
        if full and count == len(self.chunks) < self.limit and total < self.budget:
            return []
        chunks, self.chunks = self.chunks[:count], self.chunks[count:]
        del self.sizes[:count]
        self.bytes -= total
        if not self.chunks:
            self._since = None
        return chunks

    def moved(self, offset: int) -> None:
        """Another writer appended first: the batch goes at ``offset`` now (so that, should
        its answer be lost, it is sent again where it may have landed)."""
        self.offset = offset

    def sent(self, appended: OutputAppended) -> bool:
        """The batch taken landed; whether that made a kept error moot."""
        self.offset = appended.next_offset
        if self._regrow:
            self.limit, self._regrow = self.max_chunks, False
        if self._resending and self.error_kept:
            self.error, self.error_kept = None, False
            return True
        return False

    def refused(self, chunks: list[Chunk]) -> bool:
        """The server refused the batch for what it holds; whether a chunk was dropped.

        Several chunks go back first, as two halves, and no later append carries
        more than a half; a single chunk is dropped.
        """
        if len(chunks) == 1:
            self._regrow = True
            return True
        self.limit = max(1, len(chunks) // 2)
        sizes = [_size(chunk) for chunk in chunks]
        self.chunks[:0], self.sizes[:0] = chunks, sizes
        self.bytes += sum(sizes)
        self._since = self._since or time.monotonic()
        return False

    def put_back(self, chunks: list[Chunk]) -> None:
        """A batch an append could not send: next again, alone, and waited for anew."""
        self.failed = chunks
        self._since = time.monotonic() if chunks or self.chunks else None

    def keep_error(self, error: Exception) -> None:
        """A background append failed: the caller's to hear."""
        self.error, self.error_kept = error, bool(self.failed)

    def take_error(self, *, kept: bool) -> Exception | None:
        """The error the caller has yet to hear, forgotten now; with ``kept`` false, one
        whose batch is kept is forgotten but not returned (the next send makes it again,
        or moot)."""
        error, was_kept = self.error, self.error_kept
        self.error, self.error_kept = None, False
        return error if kept or not was_kept else None

    def give_up(self) -> None:
        """Forget every chunk (the writer closed with what it could not send)."""
        self.chunks, self.sizes, self.bytes, self.failed, self._since = [], [], 0, [], None

    def due_in(self) -> float:
        """Seconds until the oldest waiting chunk must go (inf when nothing waits, or an
        error waits for the caller)."""
        if self._since is None or self.error is not None:
            return math.inf
        return max(0.0, self._since + self.max_delay - time.monotonic())


def _size(chunk: Chunk) -> int:
    """A chunk's bytes in an append's body, at most (and a comma). Encoding it here also
    refuses, at the write, what cannot be sent: NaN, a lone surrogate."""
    text = json.dumps(chunk.to_wire(), ensure_ascii=False, allow_nan=False)
    return len(text.encode()) + 1


class Dropped:
    """The chunks one send dropped, refused one by one: the first refusal is raised, once
    the rest has gone, with a note of how many."""

    def __init__(self) -> None:
        self.error: InvalidJobData | None = None
        self.count = 0

    def add(self, error: InvalidJobData) -> None:
        self.error = self.error or error
        self.count += 1

    def raise_if_any(self) -> None:
        if self.error is not None:
            self.error.add_note(
                f"jobcast: the output writer dropped {self.count} chunk(s) the server "
                "refused, and appended the others"
            )
            raise self.error


class OutputWriter:
    """Appends the chunks written to one job's output in batches (``JobsClient.output_writer``).

    A context manager: leaving the block appends what is left. ``write(data)``
    keeps one chunk (``kind`` overrides the writer's); :meth:`flush` appends
    now; :meth:`close` appends the rest and stops. Safe to share between threads.
    """

    def __init__(self, client: JobsClient, job_id: str, batch: Batch) -> None:
        self.job_id = job_id
        self._client = client
        self._batch = batch
        self._lock = threading.Lock()  # guards the batch and the flags
        self._wake = threading.Condition(self._lock)  # the timer's: a write, an error gone
        self._sending = threading.Lock()  # one append at a time: batches stay in order
        self._closed = False
        self._timer: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"<OutputWriter {self.job_id} at {self._batch.offset}>"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: object, exc: BaseException | None, traceback: object) -> None:
        if exc is None:
            self.close()
            return
        with _noting(exc, self.job_id):
            self.close()

    @property
    def offset(self) -> int | None:
        """Where the next batch goes: the job's chunk count as of the last append (None
        before the first)."""
        return self._batch.offset

    def write(self, data: Any, *, kind: str | None = None) -> None:
        """Keep one chunk of any JSON value; append the batch if it is full.

        Raises what the last background append raised, if it failed (and then
        keeps nothing of this write).
        """
        with self._lock:
            if self._closed:
                raise ValueError("write to a closed output writer")
            self._raise(self._batch.take_error(kept=True))
            full = self._batch.add(data, kind)
            if self._timer is None:
                self._timer = threading.Thread(
                    target=self._time, name=f"jobcast output {self.job_id}", daemon=True
                )
                self._timer.start()
            self._wake.notify()
        if full:
            self._send(full=True)

    def flush(self) -> None:
        """Append every waiting chunk now (and any a failed append left)."""
        with self._lock:
            self._raise(self._batch.take_error(kept=False))
            self._wake.notify()
        self._send()

    def close(self) -> None:
        """Append what is left and stop; a closed writer takes no more chunks."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._wake.notify()
        if self._timer is not None:
            self._timer.join()
        with self._lock:
            dropped = self._batch.take_error(kept=False)
        try:
            self._send()
        except JobcastError as exc:
            if dropped is not None:
                exc.add_note(f"jobcast: an earlier append was refused too: {dropped}")
            raise
        finally:
            with self._lock:
                self._batch.give_up()  # what could not be sent
        if dropped is not None:
            raise dropped

    def _send(self, *, background: bool = False, full: bool = False) -> None:
        """Append until nothing waits (with ``full``, until no full batch waits); in the
        ``background`` (the timer), an error is kept for the caller's next call rather
        than raised."""
        with self._sending:
            try:
                self._send_all(full)
            except Exception as exc:
                if not background:
                    raise
                with self._lock:
                    self._batch.keep_error(exc)

    def _send_all(self, full: bool) -> None:
        dropped = Dropped()
        while True:  # a failed batch first, then what was written since
            with self._lock:
                chunks = self._batch.take(full=full)
            if not chunks:
                break
            try:
                if self._batch.offset is None:
                    self._batch.offset = self._client._run(_start_offset(self._client, self.job_id))
                appending = _append_batch(
                    self._client, self.job_id, chunks, self._batch.offset, self._batch.moved
                )
                appended = self._client._run(appending)
            except InvalidJobData as exc:  # refused: it did not land
                with self._lock:
                    if self._batch.refused(chunks):
                        dropped.add(exc)
                continue
            except BaseException:
                with self._lock:
                    self._batch.put_back(chunks)
                raise
            with self._lock:
                if self._batch.sent(appended):
                    self._wake.notify()
        dropped.raise_if_any()

    def _time(self) -> None:
        """The timer thread: append a batch once its oldest chunk has waited max_delay."""
        while True:
            with self._lock:
                while not self._closed and (due := self._batch.due_in()) > 0:
                    self._wake.wait(None if due == math.inf else due)
                if self._closed:
                    return
            self._send(background=True)  # an error is the caller's to hear, at its next write

    def _raise(self, error: Exception | None) -> None:
        """Raise a background append's error, now heard; the lock is held."""
        if error is not None:
            self._wake.notify()
            raise error


class AsyncOutputWriter:
    """As :class:`OutputWriter`, for ``AsyncJobsClient.output_writer``: ``async with`` it,
    and ``await`` :meth:`write`, :meth:`flush` and :meth:`aclose`.

    Its timer is a task of the ``async with`` block, which must be entered
    before writing. A cancelled block still appends what is left (shielded,
    for at most the client's ``timeout``), then the cancellation goes on.
    """

    def __init__(self, client: AsyncJobsClient, job_id: str, batch: Batch) -> None:
        self.job_id = job_id
        self._client = client
        self._batch = batch
        self._sending = anyio.Lock()  # one append at a time: batches stay in order
        self._wake = anyio.Event()  # set on a write, or an error gone: the timer looks again
        self._closed = False
        self._tasks: TaskGroup | None = None

    def __repr__(self) -> str:
        return f"<AsyncOutputWriter {self.job_id} at {self._batch.offset}>"

    @property
    def offset(self) -> int | None:
        """As :attr:`OutputWriter.offset`."""
        return self._batch.offset

    async def __aenter__(self) -> Self:
        if self._tasks is not None:
            raise RuntimeError("an output writer is entered once")
        self._tasks = anyio.create_task_group()
        await self._tasks.__aenter__()
        self._tasks.start_soon(self._time)
        return self

    async def __aexit__(self, kind: object, exc: BaseException | None, traceback: object) -> None:
        assert self._tasks is not None
        try:
            if exc is None:
                await self.aclose()
            else:
                with anyio.move_on_after(self._client._timeout, shield=True) as scope:
                    with _noting(exc, self.job_id):
                        await self.aclose()
                if scope.cancelled_caught:
                    exc.add_note(f"jobcast: the output of job {self.job_id} was cut short")
        finally:
            # Stop the timer. The block's exception is not handed to the task group,
            # which would wrap it in an ExceptionGroup: it goes on as it is.
            self._tasks.cancel_scope.cancel()
            await self._tasks.__aexit__(None, None, None)

    async def write(self, data: Any, *, kind: str | None = None) -> None:
        """As :meth:`OutputWriter.write`."""
        if self._closed:
            raise ValueError("write to a closed output writer")
        if self._tasks is None:
            raise RuntimeError("use the writer with `async with` before writing")
        self._raise(self._batch.take_error(kept=True))
        if self._batch.add(data, kind):
            await self._send(full=True)
        else:
            self._wake.set()

    async def flush(self) -> None:
        """Append every waiting chunk now (and any a failed append left)."""
        self._raise(self._batch.take_error(kept=False))
        await self._send()

    async def aclose(self) -> None:
        """Append what is left and stop; a closed writer takes no more chunks."""
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        dropped = self._batch.take_error(kept=False)
        try:
            await self._send()
        except JobcastError as exc:
            if dropped is not None:
                exc.add_note(f"jobcast: an earlier append was refused too: {dropped}")
            raise
        finally:
            self._batch.give_up()  # what could not be sent
        if dropped is not None:
            raise dropped

    async def _send(self, *, background: bool = False, full: bool = False) -> None:
        """As :meth:`OutputWriter._send`."""
        async with self._sending:
            try:
                await self._send_all(full)
            except Exception as exc:
                if not background:
                    raise
                self._batch.keep_error(exc)

    async def _send_all(self, full: bool) -> None:
        dropped = Dropped()
        while chunks := self._batch.take(full=full):  # a failed batch first, then the rest
            try:
                if self._batch.offset is None:
                    start = _start_offset(self._client, self.job_id)
                    self._batch.offset = await self._client._run(start)
                appending = _append_batch(
                    self._client, self.job_id, chunks, self._batch.offset, self._batch.moved
                )
                appended = await self._client._run(appending)
            except InvalidJobData as exc:  # refused: it did not land
                if self._batch.refused(chunks):
                    dropped.add(exc)
                continue
            except BaseException:
                self._batch.put_back(chunks)
                raise
            if self._batch.sent(appended):
                self._wake.set()
        dropped.raise_if_any()

    async def _time(self) -> None:
        """The timer task: append a batch once its oldest chunk has waited max_delay."""
        while not self._closed:
            due = self._batch.due_in()
            if due > 0:
                wake = self._wake
                with anyio.move_on_after(due):
                    await wake.wait()
                if wake.is_set():
                    self._wake = anyio.Event()
                continue
            await self._send(background=True)  # an error is the caller's, at its next write

    def _raise(self, error: Exception | None) -> None:
        """Raise a background append's error, now heard."""
        if error is not None:
            self._wake.set()
            raise error


@contextlib.contextmanager
def _noting(exc: BaseException, job_id: str) -> Iterator[None]:
    """Keep ``exc`` the error that propagates when appending the rest fails too; note why."""
    try:
        yield
    except JobcastError as error:
        exc.add_note(f"jobcast: the rest of job {job_id}'s output could not be appended: {error}")
