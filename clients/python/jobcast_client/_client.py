"""The two clients: :class:`JobsClient` (blocking) and :class:`AsyncJobsClient` (``await``).

    from jobcast_client import JobsClient

    with JobsClient("http://127.0.0.1:8000") as jobs:
        with jobs.track(job_type="file_processing", message="Upload queued") as job:
            job.update(status="processing", progress=50, message="Extracting document data...")
            job.document_id = "doc_123abc"  # completed on success, failed on an exception

Both offer the same calls (``create_job``, ``update_job_with_notification``,
``complete_job``, ``fail_job``, ``cancel_job``, ``delete_job``, ``get_job``,
``list_jobs``, ``watch``, ``mint_token``, ``track``, and for a job's output
``append_output``, ``output``, ``output_writer``), made from the generators
of :mod:`._core`, :mod:`._output` and :mod:`._watch`: the clients only send
requests and wait, each its own way.

Every call is safe to repeat, so every call is retried (:class:`RetryPolicy`):
a create carries an ``Idempotency-Key`` (one per call, the same on each of
its retries), an update sets the same values again, so does a cancel (asking
twice changes nothing), a complete, fail or forced cancel whose first attempt
landed before its answer was lost is recognised on the ``409`` of the retry,
a delete on the ``410`` of the retry, an output append with an
``expected_offset`` on the ``409`` of the retry (one without is retried only
when it surely did not arrive: :mod:`._output`), and a watch resumes after
the last version (and output chunk) it yielded.

Only a tracked job's ``update``, ``append_output`` and output writer raise
:class:`JobCanceled`: the plain calls return the job (or an append's answer),
``cancel_requested`` and all, and leave the decision to the caller.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Callable,
    Coroutine,
    Generator,
    Iterable,
    Iterator,
)
from dataclasses import replace
from typing import Any, Concatenate, Literal, ParamSpec, Self, TypeVar, Unpack, cast, overload

import anyio
import httpx2

from ._core import Call, Core, Operation, Reply, job_path
from ._exceptions import InvalidTransition, JobCanceled, JobcastError, JobNotFound
from ._models import CANCELED, Changes, Job, JobStatus, JobType, OutputAppended, OutputChunk
from ._output import NOTHING, OutputPages, _append_output
from ._watch import Update, Watch
from ._writer import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_CHUNKS,
    DEFAULT_MAX_DELAY,
    AsyncOutputWriter,
    Batch,
    OutputWriter,
    close_writers,
)

__all__ = ["AsyncJobsClient", "AsyncTrackedJob", "JobsClient", "TrackedJob"]

T = TypeVar("T")
P = ParamSpec("P")
# Of an exception's text, as its job's error: the server takes 10 000 characters by
# default, and whoever reads the job wants the start of it.
REASON_CHARS = 1000


def _public(call: Callable[..., Any], operation: Callable[..., Any]) -> None:
    """Give ``call`` the name, docstring and signature (less the return) of ``operation``."""
    functools.update_wrapper(call, operation)
    call.__name__ = call.__qualname__ = operation.__name__.removeprefix("_")
    signature = inspect.signature(operation).replace(return_annotation=inspect.Signature.empty)
    call.__signature__ = signature  # type: ignore[attr-defined]
    del call.__wrapped__  # type: ignore[attr-defined]


def _blocking(
    operation: Callable[Concatenate[Any, P], Operation[T]],
) -> Callable[Concatenate[JobsClient, P], T]:
    """A method of :class:`JobsClient` that runs ``operation`` to its result."""

    def call(self: JobsClient, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._run(operation(self, *args, **kwargs))

    _public(call, operation)
    return call


def _awaiting(
    operation: Callable[Concatenate[Any, P], Operation[T]],
) -> Callable[Concatenate[AsyncJobsClient, P], Coroutine[Any, Any, T]]:
    """A coroutine method of :class:`AsyncJobsClient` that runs ``operation``."""

    async def call(self: AsyncJobsClient, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._run(operation(self, *args, **kwargs))

    _public(call, operation)
    return call


# --- tracked jobs --------------------------------------------------------------------


class _Tracked:
    def __init__(self, state: Job) -> None:
        self.state = state
        """The job as of its last change through this handle."""
        self.document_id: str | None = None
        """Given to ``complete_job`` when the block succeeds."""
        self.completion_message: str | None = None
        """Given to ``complete_job`` when the block succeeds (the server's default if None)."""

    @property
    def job_id(self) -> str:
        return self.state.job_id

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.job_id} {self.state.status}>"

    def _keep(self, state: Job) -> Job:
        """Keep ``state``; JobCanceled if it asks the worker to stop."""
        self.state = state
        if state.cancel_requested:
            raise JobCanceled(state)
        return state

    def _heard(self, appended: OutputAppended) -> OutputAppended:
        """An append's answer; JobCanceled if it says the job was canceled."""
        if appended.cancel_requested:
            raise self._canceled(appended)
        return appended

    def _canceled(self, appended: OutputAppended) -> JobCanceled:
        """What an append's cancel flag means for the worker: the job as last seen, with
        the flag (an append's answer carries no more of the job)."""
        reason = appended.cancel_reason
        self.state = replace(self.state, cancel_requested=True, cancel_reason=reason)
        return JobCanceled(self.state)


class TrackedJob(_Tracked):
    """The job of a ``JobsClient.track()`` block: report progress with :meth:`update`."""

    def __init__(self, client: JobsClient, state: Job) -> None:
        super().__init__(state)
        self._client = client

    def update(self, **changes: Unpack[Changes]) -> Job:
        """``update_job_with_notification`` for this job; JobCanceled once it was canceled."""
        return self._keep(self._client._run(_report(self._client, self.job_id, changes)))

    def append_output(
        self,
        data: Any = NOTHING,
        *,
        chunks: Iterable[Any] | None = None,
        kind: str | None = None,
        expected_offset: int | None = None,
    ) -> OutputAppended:
        """``append_output`` for this job; JobCanceled once it was canceled (the chunks
        are appended all the same)."""
        return self._heard(
            self._client.append_output(
                self.job_id, data, chunks=chunks, kind=kind, expected_offset=expected_offset
            )
        )

    def output_writer(
        self,
        *,
        kind: str | None = None,
        max_chunks: int = DEFAULT_MAX_CHUNKS,
        max_delay: float = DEFAULT_MAX_DELAY,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> OutputWriter:
        """``output_writer`` for this job: close it (``with``) before the block ends. Once
        the job was canceled, its next ``write`` or ``flush`` raises JobCanceled."""
        batch = Batch(kind, max_chunks, max_delay, max_bytes, on_cancel=self._canceled)
        return OutputWriter(self._client, self.job_id, batch)


class AsyncTrackedJob(_Tracked):
    """The job of an ``AsyncJobsClient.track()`` block: ``await job.update(...)``."""

    def __init__(self, client: AsyncJobsClient, state: Job) -> None:
        super().__init__(state)
        self._client = client

    async def update(self, **changes: Unpack[Changes]) -> Job:
        """``update_job_with_notification`` for this job; JobCanceled once it was canceled."""
        return self._keep(await self._client._run(_report(self._client, self.job_id, changes)))

    async def append_output(
        self,
        data: Any = NOTHING,
        *,
        chunks: Iterable[Any] | None = None,
        kind: str | None = None,
        expected_offset: int | None = None,
    ) -> OutputAppended:
        """``append_output`` for this job; JobCanceled once it was canceled (the chunks
        are appended all the same)."""
        return self._heard(
            await self._client.append_output(
                self.job_id, data, chunks=chunks, kind=kind, expected_offset=expected_offset
            )
        )

    def output_writer(
        self,
        *,
        kind: str | None = None,
        max_chunks: int = DEFAULT_MAX_CHUNKS,
        max_delay: float = DEFAULT_MAX_DELAY,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> AsyncOutputWriter:
        """``output_writer`` for this job: ``async with`` it inside the block. Once the job
        was canceled, its next ``write`` or ``flush`` raises JobCanceled."""
        batch = Batch(kind, max_chunks, max_delay, max_bytes, on_cancel=self._canceled)
        return AsyncOutputWriter(self._client, self.job_id, batch)


def _report(core: Core[Any], job_id: str, changes: Changes) -> Operation[Job]:
    """A tracked job's update: the changed job, or the job a cancel ended before it."""
    try:
        return (yield from core._update_job_with_notification(job_id, **changes))
    except InvalidTransition:
        # A forced cancel ends the job under its worker: its worker must hear
        # "canceled" (JobCanceled, from the job returned), not "refused".
        current = yield from core._get_job(job_id)
        if not (current.is_terminal and current.cancel_requested):
            raise
        return current


def _settle(core: Core[Any], tracked: _Tracked, exc: BaseException | None) -> Operation[Job | None]:
    """Complete the tracked job, or fail it with the exception; nothing if it has ended.

    A job a forced cancel ended under its worker (the block went on, or a write of it
    was refused for it) raises JobCanceled: what the worker hears of any cancel.
    """
    if tracked.state.is_terminal:
        return None
    try:
        if exc is None:
            document_id, message = tracked.document_id, tracked.completion_message
            return (yield from core._complete_job(tracked.job_id, document_id, message))
        cancel = _cancel_in(exc, tracked.job_id)
        if cancel is not None:
            reason = cancel.reason or "Canceled"
            return (yield from core._fail_job(tracked.job_id, CANCELED, reason))
        return (yield from core._fail_job(tracked.job_id, _reason(exc)))
    except InvalidTransition:
        current = yield from core._get_job(tracked.job_id)
        canceled = current.is_terminal and current.cancel_requested
        if canceled and (exc is None or isinstance(exc, InvalidTransition)):
            raise JobCanceled(current) from exc
        raise


def _cancel_in(exc: BaseException, job_id: str) -> JobCanceled | None:
    """The cancel of this job that ``exc`` is, or holds (a TaskGroup's error), if any."""
    if isinstance(exc, BaseExceptionGroup):
        found = exc.subgroup(lambda inner: isinstance(inner, JobCanceled))
        exc = _first(found) if found is not None else exc
    return exc if isinstance(exc, JobCanceled) and exc.job_id == job_id else None


def _reason(exc: BaseException) -> str:
    """What a failed block's job says went wrong: the exception's text (a TaskGroup's
    first), cut short, and with what JSON cannot carry escaped (a lone surrogate of a file
    name): failing the job must not fail for its reason."""
    exc = _first(exc)
    text = (str(exc) or type(exc).__name__).encode("utf-8", "backslashreplace").decode()
    return text if len(text) <= REASON_CHARS else text[: REASON_CHARS - 1] + "…"


def _first(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


@contextlib.contextmanager
def _noting(exc: BaseException, job_id: str) -> Iterator[None]:
    """Keep ``exc`` the error that propagates when failing its job fails too; note why."""
    try:
        yield
    except JobCanceled:
        raise  # the job was canceled under its worker: that is what the worker hears
    except JobcastError as error:
        exc.add_note(f"jobcast: job {job_id} could not be marked as failed: {error}")


def _watch(core: Core[Any], job_id: str, since: int | None, output: bool) -> Watch:
    call = core._request("GET", job_path(job_id, "/events"), job_id=job_id)
    attempts = core._attempts(call, watch=True)
    return Watch(attempts, call, core._stream_timeout, job_id, since, output)


# --- the clients ---------------------------------------------------------------------


class JobsClient(Core[httpx2.BaseTransport]):
    """A blocking Jobcast client (httpx2); use it as a context manager, or close() it."""

    create_job = _blocking(Core._create_job)
    update_job_with_notification = _blocking(Core._update_job_with_notification)
    complete_job = _blocking(Core._complete_job)
    fail_job = _blocking(Core._fail_job)
    cancel_job = _blocking(Core._cancel_job)
    delete_job = _blocking(Core._delete_job)
    get_job = _blocking(Core._get_job)
    mint_token = _blocking(Core._mint_token)
    append_output = _blocking(_append_output)

    def _open(self, headers: dict[str, str], transport: httpx2.BaseTransport | None) -> None:
        self._http = httpx2.Client(
            base_url=self.base_url, timeout=self._timeout, headers=headers, transport=transport
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Append what this client's unclosed output writers hold, then close the
        connections (a client cannot be used afterwards). Raises a writer's failure."""
        try:
            close_writers(self)
        finally:
            self._http.close()

    def list_jobs(
        self,
        status: JobStatus | None = None,
        job_type: JobType | None = None,
        limit: int | None = None,
    ) -> Generator[Job, None, None]:
        """Every matching job, newest first, fetching pages as the iteration needs them.

        ``limit`` caps how many jobs are yielded in all (default: every one).
        """
        pages = self._pages(status, job_type, limit)
        while (call := pages.next_call()) is not None:
            yield from pages.take(self._send(call))

    def output(self, job_id: str, after: int = 0) -> Generator[OutputChunk, None, None]:
        """The job's output chunks from offset ``after`` on, as many as it holds now.

        Pages are fetched as the iteration needs them. To follow output as it
        is appended, use ``watch(job_id, output=True)``.
        """
        pages = OutputPages(self, job_id, after)
        while (call := pages.next_call()) is not None:
            yield from pages.take(self._send(call))

    def output_writer(
        self,
        job_id: str,
        *,
        kind: str | None = None,
        max_chunks: int = DEFAULT_MAX_CHUNKS,
        max_delay: float = DEFAULT_MAX_DELAY,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> OutputWriter:
        """A writer that appends the chunks written to the job's output in batches.

        ``with jobs.output_writer(job_id, kind="token") as out: out.write(token)``:
        a batch is appended once ``max_chunks`` chunks wait, once the oldest
        has waited ``max_delay`` seconds, on ``out.flush()`` and when the block
        ends. Each append is exactly once (it carries ``expected_offset``), and
        carries at most ``max_chunks`` chunks in a body of at most ``max_bytes``
        bytes: keep that under the server's ``JOBS_MAX_BODY_BYTES``.
        """
        return OutputWriter(self, job_id, Batch(kind, max_chunks, max_delay, max_bytes))

    @overload
    def watch(
        self, job_id: str, *, since: int | None = None, output: Literal[False] = False
    ) -> Generator[Job, None, None]: ...

    @overload
    def watch(
        self, job_id: str, *, since: int | None = None, output: bool
    ) -> Generator[Update, None, None]: ...

    def watch(
        self, job_id: str, *, since: int | None = None, output: bool = False
    ) -> Generator[Update, None, None]:
        """Each new state of the job, live over SSE, ending with its terminal state.

        The first is the job as it is now (or the first change after version
        ``since``). A dropped connection is resumed from the last version
        received (``Last-Event-ID``), so no state is yielded twice. To stop
        early, close it (``states.close()``, or ``with contextlib.closing(...)``):
        that closes the connection at once.

        ``output=True`` yields the job's output too, from its first chunk: lists
        of :class:`OutputChunk` between the states, in the order they happened
        (every chunk appended before a change comes before that change's state,
        so all of it has come when the terminal state does). A reconnection
        resumes the output after the last chunk yielded.
        """
        watch = _watch(self, job_id, since, output)
        while not watch.done:
            try:
                with self._http.stream("GET", watch.path, **watch.options) as response:
                    if response.status_code not in (200, 204):
                        response.read()
                    pause = watch.opened(response)
                    if pause is None and not watch.done:
                        for event in httpx2.EventSource(response):
                            if (job := watch.receive(event)) is not None:
                                yield job
                            if watch.done:
                                return
                            if watch.broken:
                                break
            except httpx2.SSEError as exc:  # a RequestError: it must come first
                raise watch.not_a_stream(exc) from exc
            except httpx2.RequestError as exc:
                pause = watch.dropped(exc)
            if watch.end_unheard:  # read once its stream is closed
                try:
                    ended = self.get_job(job_id)
                except JobNotFound as exc:
                    raise watch.gone() from exc
                if ended.is_terminal:
                    yield ended
                return
            time.sleep(watch.pause_after(pause))

    @contextlib.contextmanager
    def track(
        self,
        job_id: str | None = None,
        *,
        job_type: JobType = "generic",
        message: str = "",
        metadata: dict[str, Any] | None = None,
        owner: str | None = None,
    ) -> Iterator[TrackedJob]:
        """Create a job (or take ``job_id``), complete it when the block ends, fail it on error.

        On an exception the job fails with ``str(exc)`` (or the exception's type
        name) and the exception propagates. Set ``job.document_id`` and
        ``job.completion_message`` inside the block for the completion.
        Once the job is canceled, ``job.update()`` raises :class:`JobCanceled`;
        the job then fails with ``error="canceled"`` and the reason as its
        message (unless a forced cancel ended it already), and the exception
        propagates: catch it around the block.
        """
        begin = self._begin(job_id, job_type, message, metadata, owner)
        tracked = TrackedJob(self, self._run(begin))
        try:
            yield tracked
        except BaseException as exc:
            with _noting(exc, tracked.job_id):
                self._run(_settle(self, tracked, exc))
            raise
        self._run(_settle(self, tracked, None))

    def _run(self, operation: Operation[T]) -> T:
        try:
            call = next(operation)
            while True:
                call = operation.send(self._send(call))
        except StopIteration as stop:
            result: T = stop.value
            return result

    def _send(self, call: Call) -> Reply:
        attempts = self._attempts(call)
        while True:
            try:
                response = self._http.request(call.method, call.path, **call.options)
            except httpx2.RequestError as exc:
                pause = attempts.after_error(exc)
            else:
                if (retry := attempts.after_response(response)) is None:
                    return Reply(response, attempts.count, attempts.reached > 0)
                pause = retry
            time.sleep(pause)


class AsyncJobsClient(Core[httpx2.AsyncBaseTransport]):
    """An asyncio (or trio) Jobcast client; use it with ``async with``, or aclose() it."""

    create_job = _awaiting(Core._create_job)
    update_job_with_notification = _awaiting(Core._update_job_with_notification)
    complete_job = _awaiting(Core._complete_job)
    fail_job = _awaiting(Core._fail_job)
    cancel_job = _awaiting(Core._cancel_job)
    delete_job = _awaiting(Core._delete_job)
    get_job = _awaiting(Core._get_job)
    mint_token = _awaiting(Core._mint_token)
    append_output = _awaiting(_append_output)

    def _open(self, headers: dict[str, str], transport: httpx2.AsyncBaseTransport | None) -> None:
        self._http = httpx2.AsyncClient(
            base_url=self.base_url, timeout=self._timeout, headers=headers, transport=transport
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections (a client cannot be used afterwards)."""
        await self._http.aclose()

    async def list_jobs(
        self,
        status: JobStatus | None = None,
        job_type: JobType | None = None,
        limit: int | None = None,
    ) -> AsyncGenerator[Job, None]:
        """As :meth:`JobsClient.list_jobs`, with ``async for``."""
        pages = self._pages(status, job_type, limit)
        while (call := pages.next_call()) is not None:
            for job in pages.take(await self._send(call)):
                yield job

    async def output(self, job_id: str, after: int = 0) -> AsyncGenerator[OutputChunk, None]:
        """As :meth:`JobsClient.output`, with ``async for``."""
        pages = OutputPages(self, job_id, after)
        while (call := pages.next_call()) is not None:
            for chunk in pages.take(await self._send(call)):
                yield chunk

    def output_writer(
        self,
        job_id: str,
        *,
        kind: str | None = None,
        max_chunks: int = DEFAULT_MAX_CHUNKS,
        max_delay: float = DEFAULT_MAX_DELAY,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> AsyncOutputWriter:
        """As :meth:`JobsClient.output_writer`: ``async with`` it, ``await out.write(token)``."""
        return AsyncOutputWriter(self, job_id, Batch(kind, max_chunks, max_delay, max_bytes))

    @overload
    def watch(
        self, job_id: str, *, since: int | None = None, output: Literal[False] = False
    ) -> AsyncGenerator[Job, None]: ...

    @overload
    def watch(
        self, job_id: str, *, since: int | None = None, output: bool
    ) -> AsyncGenerator[Update, None]: ...

    async def watch(
        self, job_id: str, *, since: int | None = None, output: bool = False
    ) -> AsyncGenerator[Update, None]:
        """As :meth:`JobsClient.watch`, with ``async for``.

        To stop early without leaving the connection open, close it:
        ``async with contextlib.aclosing(client.watch(job_id)) as states: ...``.
        """
        watch = _watch(self, job_id, since, output)
        while not watch.done:
            try:
                async with self._http.stream("GET", watch.path, **watch.options) as response:
                    if response.status_code not in (200, 204):
                        await response.aread()
                    pause = watch.opened(response)
                    if pause is None and not watch.done:
                        events = cast(
                            AsyncGenerator[httpx2.ServerSentEvent, None],
                            aiter(httpx2.EventSource(response)),
                        )
                        async with contextlib.aclosing(events):
                            async for event in events:
                                if (job := watch.receive(event)) is not None:
                                    yield job
                                if watch.done:
                                    return
                                if watch.broken:
                                    break
            except httpx2.SSEError as exc:  # a RequestError: it must come first
                raise watch.not_a_stream(exc) from exc
            except httpx2.RequestError as exc:
                pause = watch.dropped(exc)
            if watch.end_unheard:  # read once its stream is closed
                try:
                    ended = await self.get_job(job_id)
                except JobNotFound as exc:
                    raise watch.gone() from exc
                if ended.is_terminal:
                    yield ended
                return
            await anyio.sleep(watch.pause_after(pause))

    @contextlib.asynccontextmanager
    async def track(
        self,
        job_id: str | None = None,
        *,
        job_type: JobType = "generic",
        message: str = "",
        metadata: dict[str, Any] | None = None,
        owner: str | None = None,
    ) -> AsyncIterator[AsyncTrackedJob]:
        """As :meth:`JobsClient.track`, with ``async with``.

        A cancelled block fails the job too (shielded from the cancellation,
        for at most ``timeout`` seconds), then the cancellation goes on.
        """
        begin = self._begin(job_id, job_type, message, metadata, owner)
        tracked = AsyncTrackedJob(self, await self._run(begin))
        try:
            yield tracked
        except BaseException as exc:
            with anyio.move_on_after(self._timeout, shield=True) as scope:
                with _noting(exc, tracked.job_id):
                    await self._run(_settle(self, tracked, exc))
            if scope.cancelled_caught:
                exc.add_note(f"jobcast: job {tracked.job_id} could not be marked as failed in time")
            raise
        await self._run(_settle(self, tracked, None))

    async def _run(self, operation: Operation[T]) -> T:
        try:
            call = next(operation)
            while True:
                call = operation.send(await self._send(call))
        except StopIteration as stop:
            result: T = stop.value
            return result

    async def _send(self, call: Call) -> Reply:
        attempts = self._attempts(call)
        while True:
            try:
                response = await self._http.request(call.method, call.path, **call.options)
            except httpx2.RequestError as exc:
                pause = attempts.after_error(exc)
            else:
                if (retry := attempts.after_response(response)) is None:
                    return Reply(response, attempts.count, attempts.reached > 0)
                pause = retry
            await anyio.sleep(pause)
