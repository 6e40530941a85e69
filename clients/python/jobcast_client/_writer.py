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
kept as it was sent. The next append sends it again first, alone (it may have
landed with its answer lost: sent as it was, where it went, its retry can
tell), then what was written since. ``flush()`` and close raise the failure
of the append they made; a failure in the background (the timer's append,
or the one a full ``write`` makes) is raised by the next ``write`` (which
then keeps nothing of its chunk), ``flush`` or close, unless an append in
between went through, which makes it moot. While such a failure waits to be
heard, the timer sends nothing. Closing gives up on what it could not send.

A batch the server refuses for what it holds (:class:`InvalidJobData`)
surely did not land, and what the refusal says decides what comes next:

- chunks it names in ``errors`` (one too large, a ``kind`` too long) are
  dropped, and the others go first in the next append;
- too many chunks at once (:class:`OutputTooLarge` naming ``chunks``), or too
  large a body (:class:`BodyTooLarge`), make the writer send batches half the
  size from then on;
- the job's output full (:class:`OutputTooLarge` naming nothing) drops the
  batch and all that waits, and the writer takes no more (each ``write``
  raises): the output stays a start of what was written, with no hole;
- anything else splits the batch in halves, sent as they are, until the
  chunk it is about goes alone, and is dropped.

The refusal of what was dropped is raised as a failure is (by ``flush`` or
close once the rest has gone, or by the next call), with a note of how many
chunks were dropped. So one bad chunk costs itself, never the chunks around
it, and a ``max_chunks`` or ``max_bytes`` above the server's limits settles
below them.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import math
import re
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Self

import anyio
from anyio.abc import TaskGroup

from ._core import Core, Operation
from ._exceptions import BodyTooLarge, InvalidJobData, JobCanceled, JobcastError, OutputTooLarge
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
    """What a writer holds, without the I/O: chunks waiting, since when, where they go, what
    the server taught it of its limits, and the errors the caller has yet to hear."""

    def __init__(
        self,
        kind: str | None,
        max_chunks: int,
        max_delay: float,
        max_bytes: int,
        on_cancel: Callable[[OutputAppended], JobCanceled] | None = None,
    ) -> None:
        if max_chunks < 1:
            raise ValueError("max_chunks must be at least 1")
        if max_delay < 0:
            raise ValueError("max_delay must not be negative")
        if max_bytes <= ENVELOPE_BYTES:
            raise ValueError(f"max_bytes must be more than {ENVELOPE_BYTES}")
        self.kind = kind
        self.max_delay = max_delay
        self.limit = max_chunks  # chunks one append carries: less once the server said so
        self.budget = max_bytes - ENVELOPE_BYTES  # bytes of chunks one append carries: ditto
        self.chunks: list[Chunk] = []
        self.sizes: list[int] = []  # each waiting chunk's JSON, in bytes, and a comma
        self.bytes = 0  # their sum
        # A batch whose append failed: it may have landed (its answer lost), so it goes
        # again alone, as it was sent, where its retry can tell.
        self.failed: list[Chunk] = []
        self.resending = False  # the batch taken last is the failed one
        # Parts of a refused batch, sent as they are, to find what the server refuses.
        self.pieces: list[list[Chunk]] = []
        # The refusal that said the job's output is full: nothing more goes, ever.
        self.full: OutputTooLarge | None = None
        self.offset: int | None = None  # where the next batch goes; None until read
        # A background send's failure: its batch is the failed one, which waits for the
        # caller to hear of it; moot once a later send goes through.
        self.error: Exception | None = None
        # The first refusal of chunks dropped since the caller last heard, and how many.
        self.dropped: InvalidJobData | None = None
        self.dropped_count = 0
        # A tracked job's writer: the first answer that carried the cancel flag, for the
        # caller to hear once (a plain writer leaves the flag to whoever reads the job).
        # on_cancel turns it into the job's state on the caller's own thread, never the
        # timer's, so it cannot overwrite a newer state the caller kept meanwhile.
        self.on_cancel = on_cancel
        self.canceled: OutputAppended | None = None
        self._cancel_heard = False
        self._since: float | None = None  # when the oldest waiting chunk was written

    def add(self, data: Any, kind: str | None) -> bool:
        """Keep one chunk; whether the batch is full.

        A value JSON cannot carry raises here (TypeError, ValueError), at the
        write that gave it, rather than in every append of the batch it would block.
        """
        if self.full is not None:
            raise OutputTooLarge(f"the job's output is full: {self.full}", self.full.errors)
        chunk = Chunk(data, kind if kind is not None else self.kind)
        size = _size(chunk)
        self.chunks.append(chunk)
        self.sizes.append(size)
        self.bytes += size
        if self._since is None:
            self._since = time.monotonic()
        return len(self.chunks) >= self.limit or self.bytes >= self.budget

    def take(self, *, full: bool = False) -> list[Chunk]:
        """The next batch to append: a failed one as it was, a piece of a refused one, else
        the waiting chunks, as many as fit in ``limit`` and ``budget`` (at least one);
        with ``full``, only a batch that is full (the rest waits for more, or its time)."""
        self.resending = bool(self.failed)
        if self.failed or self.pieces:
            taken = self.failed or self.pieces.pop(0)
            self.failed = []
            if not self.chunks and not self.pieces:
                self._since = None
            return taken
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

    def append(
        self, core: Core[Any], job_id: str, chunks: list[Chunk]
    ) -> Operation[OutputAppended]:
        """The append of ``chunks`` just taken (the job's output size read first, the first
        time), moved past other writers' appends."""
        if self.offset is None:
            self.offset = yield from _start_offset(core, job_id)
        return (
            yield from _append_batch(
                core, job_id, chunks, self.offset, moved=self.moved, resent=self.resending
            )
        )

    def moved(self, offset: int) -> None:
        """Another writer appended first: the batch goes at ``offset`` now (so that, should
        its answer be lost, it is sent again where it may have landed)."""
        self.offset = offset

    def sent(self, appended: OutputAppended) -> None:
        self.offset = appended.next_offset
        if appended.cancel_requested and self.on_cancel is not None and self.canceled is None:
            self.canceled = appended

    def cancel_news(self) -> JobCanceled | None:
        """The cancel a tracked job's appends heard, once: ``write`` and ``flush`` raise it
        (closing does not: the work that reaches the end of its block is done)."""
        if self.canceled is None or self.on_cancel is None or self._cancel_heard:
            return None
        self._cancel_heard = True
        return self.on_cancel(self.canceled)

    def refused(self, chunks: list[Chunk], refusal: InvalidJobData) -> None:
        """The server refused the batch for what it holds (it did not land); what it
        says decides. Chunks it names are dropped, and the others go as they are. Too
        many chunks at once, or too large a body, teach the writer smaller batches. The
        job's output full drops the batch and all that waits, and takes no more. Any
        other refusal splits the batch in halves, sent as they are, to find the chunk
        it is about, which goes alone, and is dropped."""
        fields = [error.field for error in refusal.errors]
        named = {int(m[1]) for f in fields if (m := _CHUNK_FIELD.match(f))}
        named &= set(range(len(chunks)))
        many = len(chunks) > 1
        if named:
            self._drop(refusal, len(named))
            rest = [chunk for i, chunk in enumerate(chunks) if i not in named]
            self.pieces[:0] = [rest] if rest else []
        elif many and isinstance(refusal, OutputTooLarge) and "chunks" in fields:
            self.limit = min(self.limit, len(chunks) // 2)
            self._wait_first(chunks)
        elif many and isinstance(refusal, BodyTooLarge):
            self.budget = min(self.budget, sum(map(_size, chunks)) // 2)
            self._wait_first(chunks)
        elif isinstance(refusal, OutputTooLarge) and not fields:  # the job's output is full
            self.full = refusal
            waiting = sum(map(len, self.pieces)) + len(self.chunks)
            self._drop(refusal, len(chunks) + waiting)
            self.give_up()
        elif many:
            half = len(chunks) // 2
            self.pieces[:0] = [chunks[:half], chunks[half:]]
        else:
            self._drop(refusal, 1)

    def _wait_first(self, chunks: list[Chunk]) -> None:
        """``chunks`` wait first, to go in batches of the limits learned; so do the pieces
        that were to go after them, in their order."""
        chunks = chunks + [chunk for piece in self.pieces for chunk in piece]
        self.pieces = []
        sizes = [_size(chunk) for chunk in chunks]
        self.chunks[:0], self.sizes[:0] = chunks, sizes
        self.bytes += sum(sizes)
        if self.chunks and self._since is None:
            self._since = time.monotonic()

    def _drop(self, refusal: InvalidJobData, count: int) -> None:
        self.dropped = self.dropped or refusal
        self.dropped_count += count

    def put_back(self, chunks: list[Chunk]) -> None:
        """A batch an append could not send: next again, alone, and waited for anew."""
        self.failed = chunks
        self._since = time.monotonic() if chunks or self.chunks else None

    def heard(self) -> Exception | None:
        """An error the caller has yet to hear, forgotten now: a background send's first,
        then the refusal of the chunks dropped (with a note of how many)."""
        if self.error is not None:
            error, self.error = self.error, None
            return error
        refusal = self.dropped
        if refusal is not None:
            refusal.add_note(f"{self._dropped_words()}, and appended the others")
            self.dropped, self.dropped_count = None, 0
        return refusal

    def note_dropped(self, failure: BaseException) -> None:
        """Closing failed with ``failure``: say on it what was dropped too, which the caller
        will not hear otherwise."""
        if self.dropped is not None:
            failure.add_note(f"{self._dropped_words()}: {self.dropped}")
            self.dropped, self.dropped_count = None, 0

    def _dropped_words(self) -> str:
        return (
            f"jobcast: the output writer dropped {self.dropped_count} chunk(s) the server refused"
        )

    def give_up(self) -> None:
        """Forget every chunk (the writer closed with what it could not send)."""
        self.chunks, self.sizes, self.bytes, self._since = [], [], 0, None
        self.failed, self.pieces = [], []

    def due_in(self) -> float:
        """Seconds until the oldest waiting chunk must go (inf when nothing waits, or when
        a failed batch waits for the caller to hear why)."""
        if self._since is None or self.error is not None:
            return math.inf
        return max(0.0, self._since + self.max_delay - time.monotonic())


# A 413 or 422 that names one chunk: "chunks.3.data", "chunks.3.kind".
_CHUNK_FIELD = re.compile(r"chunks[.\[](\d+)")


def _size(chunk: Chunk) -> int:
    """A chunk's bytes in an append's body, at most (and a comma). Encoding it here also
    refuses, at the write, what cannot be sent: NaN, a lone surrogate."""
    text = json.dumps(chunk.to_wire(), ensure_ascii=False, allow_nan=False)
    return len(text.encode()) + 1


# Sync writers written to and not closed yet. Their timer is a daemon thread, which
# the interpreter's exit stops mid-wait: the client's close, or the exit itself,
# appends what they hold, as closing a file flushes it.
_UNCLOSED: weakref.WeakSet[OutputWriter] = weakref.WeakSet()
_UNCLOSED_LOCK = threading.Lock()  # a first write on another thread adds to it meanwhile


def _unclosed() -> list[OutputWriter]:
    with _UNCLOSED_LOCK:
        return list(_UNCLOSED)


def close_writers(client: JobsClient) -> None:
    """Close ``client``'s writers left open; raise the first failure once all are closed."""
    failure: Exception | None = None
    for writer in [writer for writer in _unclosed() if writer._client is client]:
        try:
            writer.close()
        except Exception as exc:
            failure = failure or exc
    if failure is not None:
        raise failure


@atexit.register
def _close_at_exit() -> None:
    for writer in _unclosed():
        try:
            writer.close()
        except Exception as exc:
            print(f"jobcast: {writer!r} was never closed, and at exit {exc}", file=sys.stderr)


class OutputWriter:
    """Appends the chunks written to one job's output in batches (``JobsClient.output_writer``).

    A context manager: leaving the block appends what is left. ``write(data)``
    keeps one chunk (``kind`` overrides the writer's); :meth:`flush` appends
    now; :meth:`close` appends the rest and stops. Safe to share between threads. One
    left open is closed by its client's ``close``, or at the interpreter's exit.
    """

    def __init__(self, client: JobsClient, job_id: str, batch: Batch) -> None:
        self.job_id = job_id
        self._client = client
        self._batch = batch
        self._lock = threading.Lock()  # guards the batch and the flags
        self._wake = threading.Condition(self._lock)  # the timer's: something to look at
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

        Raises, keeping nothing of this write, what the caller has yet to hear: a
        background append's failure, or the refusal of chunks the writer dropped. The
        append a full batch makes is such a background append.
        """
        with self._lock:
            if self._closed:
                raise ValueError("write to a closed output writer")
            error = self._batch.cancel_news() or self._batch.heard()
            if error is not None:
                self._wake.notify()
                raise error
            full = self._batch.add(data, kind)
            if self._timer is None:
                self._timer = threading.Thread(
                    target=self._time, name=f"jobcast output {self.job_id}", daemon=True
                )
                self._timer.start()
                with _UNCLOSED_LOCK:
                    _UNCLOSED.add(self)
            self._wake.notify()
        if full:
            self._send(background=True, full=True)

    def flush(self) -> None:
        """Append every waiting chunk now (and any a failed append left); raise what
        failed, or the refusal of chunks dropped."""
        self._send()
        with self._lock:
            error = self._batch.cancel_news() or self._batch.heard()
            self._wake.notify()  # a failure heard: the timer may send again
        if error is not None:
            raise error

    def close(self) -> None:
        """Append what is left and stop; a closed writer takes no more chunks."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._wake.notify()
        with _UNCLOSED_LOCK:
            _UNCLOSED.discard(self)
        if self._timer is not None:
            self._timer.join()
        try:
            self._send()
        except JobcastError as exc:
            with self._lock:
                self._batch.note_dropped(exc)
            raise
        finally:
            with self._lock:
                self._batch.give_up()  # what could not be sent
        with self._lock:
            error = self._batch.heard()
        if error is not None:
            raise error

    def _send(self, *, background: bool = False, full: bool = False) -> None:
        """Append until nothing waits (with ``full``, until no full batch waits). In the
        ``background`` (the timer, a full write) a failure is kept for the caller's next
        call rather than raised; whatever happens is news that replaces an older failure."""
        with self._sending:
            try:
                self._send_all(full)
            except Exception as exc:
                with self._lock:
                    self._batch.error = exc if background else None
                if not background:
                    raise
            else:
                with self._lock:
                    self._batch.error = None  # moot: its batch went
            finally:
                with self._lock:
                    self._wake.notify()  # chunks may wait again, and the timer must see them

    def _send_all(self, full: bool) -> None:
        while True:  # a failed batch first, then what was written since
            with self._lock:
                chunks = self._batch.take(full=full)
            if not chunks:
                return
            try:
                appended = self._client._run(self._batch.append(self._client, self.job_id, chunks))
            except InvalidJobData as refusal:  # it did not land
                with self._lock:
                    self._batch.refused(chunks, refusal)
                continue
            except BaseException:
                with self._lock:
                    self._batch.put_back(chunks)
                raise
            with self._lock:
                self._batch.sent(appended)

    def _time(self) -> None:
        """The timer thread: append a batch once its oldest chunk has waited max_delay."""
        while True:
            with self._lock:
                while not self._closed and (due := self._batch.due_in()) > 0:
                    self._wake.wait(None if due == math.inf else due)
                if self._closed:
                    return
            self._send(background=True)


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
        self._wake = anyio.Event()  # set when the timer has something to look at
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
        error = self._batch.cancel_news() or self._batch.heard()
        if error is not None:
            self._wake.set()
            raise error
        if self._batch.add(data, kind):
            await self._send(background=True, full=True)
        else:
            self._wake.set()

    async def flush(self) -> None:
        """As :meth:`OutputWriter.flush`."""
        await self._send()
        error = self._batch.cancel_news() or self._batch.heard()
        if error is not None:
            raise error

    async def aclose(self) -> None:
        """Append what is left and stop; a closed writer takes no more chunks."""
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        try:
            await self._send()  # after the timer's send, if one is under way
        except JobcastError as exc:
            self._batch.note_dropped(exc)
            raise
        finally:
            self._batch.give_up()  # what could not be sent
        error = self._batch.heard()
        if error is not None:
            raise error

    async def _send(self, *, background: bool = False, full: bool = False) -> None:
        """As :meth:`OutputWriter._send`."""
        async with self._sending:
            try:
                await self._send_all(full)
            except Exception as exc:
                self._batch.error = exc if background else None
                if not background:
                    raise
            else:
                self._batch.error = None  # moot: its batch went
            finally:
                self._wake.set()  # chunks may wait again, and the timer must see them

    async def _send_all(self, full: bool) -> None:
        while chunks := self._batch.take(full=full):  # a failed batch first, then the rest
            try:
                appending = self._batch.append(self._client, self.job_id, chunks)
                appended = await self._client._run(appending)
            except InvalidJobData as refusal:  # it did not land
                self._batch.refused(chunks, refusal)
                continue
            except BaseException:
                self._batch.put_back(chunks)
                raise
            self._batch.sent(appended)

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
            await self._send(background=True)


@contextlib.contextmanager
def _noting(exc: BaseException, job_id: str) -> Iterator[None]:
    """Keep ``exc`` the error that propagates when appending the rest fails too; note why."""
    try:
        yield
    except JobcastError as error:
        exc.add_note(f"jobcast: the rest of job {job_id}'s output could not be appended: {error}")
