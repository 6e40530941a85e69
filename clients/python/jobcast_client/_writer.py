"""Output writers: chunks written one by one (an LLM's tokens), appended in batches.

    with jobs.output_writer(job_id, kind="token") as out:
        for token in llm.stream(prompt):
            out.write(token)       # buffered; appended every 100 chunks or 0.1 s

A writer keeps the chunks written since its last append and appends them
when ``max_chunks`` are waiting, when the oldest has waited ``max_delay``
seconds (a background thread, or a task of the ``async with`` block, sees
to that even when no write comes), on :meth:`flush`, and on close. No append
carries more than ``max_chunks`` chunks or ``max_bytes`` bytes of chunk JSON
(one chunk larger than that goes alone), so a burst of large chunks goes in
several appends, each under the server's ``JOBS_MAX_BODY_BYTES``.

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
what it could not send. A batch the server refuses for what it holds
(:class:`InvalidJobData`: a chunk or the job's output over a limit) is not
kept: sent again, it would be refused again, and hold back every chunk
behind it. An error a later append made moot (the batch went after all) is
not raised.
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
from ._models import Chunk
from ._output import _append_batch, _start_offset

if TYPE_CHECKING:
    from ._client import AsyncJobsClient, JobsClient

DEFAULT_MAX_CHUNKS = 100
DEFAULT_MAX_DELAY = 0.1  # seconds
# Half the server's default JOBS_MAX_BODY_BYTES (1 MiB): room for the body around the chunks.
DEFAULT_MAX_BYTES = 512 * 1024


class Batch:
    """What a writer holds, without the I/O: chunks waiting, since when, and where they go."""

    def __init__(self, kind: str | None, max_chunks: int, max_delay: float, max_bytes: int) -> None:
        if max_chunks < 1:
            raise ValueError("max_chunks must be at least 1")
        if max_delay < 0:
            raise ValueError("max_delay must not be negative")
        if max_bytes < 1:
            raise ValueError("max_bytes must be at least 1")
        self.kind = kind
        self.max_chunks = max_chunks
        self.max_delay = max_delay
        self.max_bytes = max_bytes
        self.chunks: list[Chunk] = []
        self.sizes: list[int] = []  # each waiting chunk's JSON, in bytes at most
        self.bytes = 0  # their sum
        # A batch whose append failed: it may have landed (its answer lost), so it goes
        # again alone, as it was sent, where its retry can tell.
        self.failed: list[Chunk] = []
        self.offset: int | None = None  # where the next batch goes; None until read
        self._since: float | None = None  # when the oldest waiting chunk was written

    def add(self, data: Any, kind: str | None) -> bool:
        """Keep one chunk; whether the batch is full.

        A value JSON cannot carry raises here (TypeError, ValueError), at the
        write that gave it, rather than in every append of the batch it would block.
        """
        chunk = Chunk(data, kind if kind is not None else self.kind)
        # ASCII-escaped, so its length bounds the UTF-8 bytes sent; one more for the comma.
        size = len(json.dumps(chunk.to_wire(), allow_nan=False)) + 1
        self.chunks.append(chunk)
        self.sizes.append(size)
        self.bytes += size
        if self._since is None:
            self._since = time.monotonic()
        return len(self.chunks) >= self.max_chunks or self.bytes >= self.max_bytes

    def take(self, *, full: bool = False) -> list[Chunk]:
        """The next batch to append: a failed one as it was, else the waiting chunks, as
        many as fit in ``max_chunks`` and ``max_bytes`` (at least one); with ``full``,
        only a batch that is full (the rest waits for more, or for its time)."""
        if self.failed:
            failed, self.failed = self.failed, []
            if not self.chunks:
                self._since = None
            return failed
        count, total = 0, 0
        for size in self.sizes[: self.max_chunks]:
            if count and total + size > self.max_bytes:
                break
            count, total = count + 1, total + size
        if full and count == len(self.chunks) < self.max_chunks and total < self.max_bytes:
            return []
        chunks, self.chunks = self.chunks[:count], self.chunks[count:]
        del self.sizes[:count]
        self.bytes -= total
        if not self.chunks:
            self._since = None
        return chunks

    def put_back(self, chunks: list[Chunk]) -> None:
        """A batch an append could not send: next again, alone, and waited for anew."""
        self.failed = chunks
        self._since = time.monotonic() if chunks or self.chunks else None

    def give_up(self) -> None:
        """Forget every chunk (the writer closed with what it could not send)."""
        self.chunks, self.sizes, self.bytes, self.failed, self._since = [], [], 0, [], None

    def due_in(self) -> float:
        """Seconds until the oldest waiting chunk must go (inf when nothing waits)."""
        if self._since is None:
            return math.inf
        return max(0.0, self._since + self.max_delay - time.monotonic())


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
        self._lock = threading.Lock()  # guards the batch, the error and the flags
        self._wake = threading.Condition(self._lock)  # the timer's: a write, an error raised
        self._sending = threading.Lock()  # one append at a time: batches stay in order
        self._error: Exception | None = None  # the background flush's, for the caller
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
            self._raise_error()
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
        try:
            self._send()
        finally:
            with self._lock:
                self._batch.give_up()  # what could not be sent

    def _send(self, *, background: bool = False, full: bool = False) -> None:
        """Append until nothing waits (with ``full``, until no full batch waits); in the
        ``background`` (the timer), an error is kept for the caller's next call rather
        than raised."""
        with self._sending:
            # Every append is new news: an error kept from an earlier one is either made
            # again here (raised, or kept anew) or moot, its batch gone after all.
            with self._lock:
                self._error = None
            try:
                self._send_all(full)
            except Exception as exc:
                if not background:
                    raise
                with self._lock:
                    self._error = exc

    def _send_all(self, full: bool) -> None:
        while True:  # a failed batch first, then what was written since
            with self._lock:
                chunks = self._batch.take(full=full)
            if not chunks:
                return
            try:
                if self._batch.offset is None:
                    start = _start_offset(self._client, self.job_id)
                    self._batch.offset = self._client._run(start)
                batch = _append_batch(self._client, self.job_id, chunks, self._batch.offset)
                self._batch.offset = self._client._run(batch).next_offset
            except BaseException as exc:
                if not isinstance(exc, InvalidJobData):  # refused: it would be refused again
                    with self._lock:
                        self._batch.put_back(chunks)
                raise

    def _time(self) -> None:
        """The timer thread: append a batch once its oldest chunk has waited max_delay."""
        while True:
            with self._lock:
                while not self._closed and (self._error is not None or self._batch.due_in() > 0):
                    due = self._batch.due_in() if self._error is None else math.inf
                    self._wake.wait(None if due == math.inf else due)
                if self._closed:
                    return
            self._send(background=True)  # an error is the caller's to hear, at its next write

    def _raise_error(self) -> None:
        """Raise (once) the error of a background append; the lock is held."""
        error, self._error = self._error, None
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
        self._wake = anyio.Event()  # set on a write: the timer looks again
        self._error: Exception | None = None
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
        error, self._error = self._error, None
        if error is not None:
            raise error
        if self._batch.add(data, kind):
            await self._send(full=True)
        else:
            self._wake.set()

    async def flush(self) -> None:
        """Append every waiting chunk now (and any a failed append left)."""
        await self._send()

    async def _send(self, *, background: bool = False, full: bool = False) -> None:
        """As :meth:`OutputWriter._send`."""
        async with self._sending:
            self._error = None  # made again here, or moot (see OutputWriter._send)
            try:
                await self._send_all(full)
            except Exception as exc:
                if not background:
                    raise
                self._error = exc

    async def _send_all(self, full: bool) -> None:
        while chunks := self._batch.take(full=full):  # a failed batch first, then the rest
            try:
                if self._batch.offset is None:
                    start = _start_offset(self._client, self.job_id)
                    self._batch.offset = await self._client._run(start)
                batch = _append_batch(self._client, self.job_id, chunks, self._batch.offset)
                self._batch.offset = (await self._client._run(batch)).next_offset
            except BaseException as exc:
                if not isinstance(exc, InvalidJobData):  # refused: it would be refused again
                    self._batch.put_back(chunks)
                raise

    async def aclose(self) -> None:
        """Append what is left and stop; a closed writer takes no more chunks."""
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        try:
            await self.flush()
        finally:
            self._batch.give_up()  # what could not be sent

    async def _time(self) -> None:
        """The timer task: append a batch once its oldest chunk has waited max_delay."""
        while not self._closed:
            due = self._batch.due_in() if self._error is None else math.inf
            if due > 0:
                wake = self._wake
                with anyio.move_on_after(due):
                    await wake.wait()
                if wake.is_set():
                    self._wake = anyio.Event()
                continue
            await self._send(background=True)  # an error is the caller's, at its next write


@contextlib.contextmanager
def _noting(exc: BaseException, job_id: str) -> Iterator[None]:
    """Keep ``exc`` the error that propagates when appending the rest fails too; note why."""
    try:
        yield
    except JobcastError as error:
        exc.add_note(f"jobcast: the rest of job {job_id}'s output could not be appended: {error}")
