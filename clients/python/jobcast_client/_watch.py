"""``watch`` without the I/O: what to ask for, and what each answer and event means.

A watch reads ``GET /api/jobs/{jobId}/events`` and yields each new state of
the job; with ``output=True`` it reads ``...?output=1`` and yields the job's
output too, as lists of :class:`OutputChunk`, in the order they happened.
What the server sends there, and what the watch does with it:

- ``event: job``: the full job. Yielded unless its ``version`` is one the
  watch has yielded already (a reconnection may send it again). Until the
  watch yields a state, the version it holds is only the caller's ``since``:
  the first job event of a connection, the server's current state, is
  yielded even if older (a ``since`` ahead of the job, a backend restored
  from a backup), and the watch goes on from it rather than wait for a
  version the job may never reach. Once it yielded one, an older version is
  a repeat.
- ``event: synced``: the snapshot is over, what follows is live. Nothing to
  yield: a watch treats the snapshot's state like any other.
- ``event: reset``: the server could not resume from the ``Last-Event-ID``
  sent (all-jobs streams send it, with an empty ``id``, so that a browser
  forgets the cursor). A watch resumes from the version in the jobs it has
  read, never from an SSE ``id``, so there is nothing to forget: the
  snapshot after it is filtered by version like any other.
- ``event: removed``: the job was cleaned up or deleted: :class:`JobGone`.
- ``event: output`` (``{"jobId", "chunks"}``): with ``output=True``, the
  chunks the watch has not yielded yet (by offset: a reconnection may send
  some again); without it the server sends none.
- any other event (whatever a newer server adds): ignored.
- ``204 No Content`` on a reconnection: the watch already has the terminal
  state, so it ends (after reading the job, if the end it has is only a
  version it yielded before a Redis rolled back). A per-job stream ends after
  the terminal state anyway.

A dropped connection is reopened with ``Last-Event-ID: <last version>``
(``<last version>.<next offset>`` when following output: the server resumes
both) after a pause of the client's :class:`RetryPolicy`; every state yielded,
and every snapshot the server completes (``synced``), starts a fresh round of
retries, so only a stream that keeps failing without news gives up
(:class:`ConnectionFailed`).

Decision: SSE is decoded by httpx2's own ``httpx2.EventSource`` (with
``ServerSentEvent`` and ``SSEError``), not by the httpx-sse package and not
by a parser of ours. Why: httpx-sse is built on httpx, not httpx2: it
imports httpx, its ``connect_sse`` wants an ``httpx.Client`` and its
``SSEError`` is an ``httpx.TransportError``, so using it would install and
load a second HTTP client and mix two exception trees. httpx2 ships the
same code (derived from httpx-sse, MIT) built in: no extra dependency, the
same types and exceptions as the rest of the client, and a bound on the
size of one event (1 MiB by default, far above the largest job a server
accepts with its default limits; output comes in events of 64 KiB, however
large an append, one larger chunk alone). Writing our own decoder would mean
owning the corner cases (CR/LF/CRLF, split chunks, ``id`` with NUL) that
this one already handles. One thing to know: ``SSEError`` is an
``httpx2.TransportError``, so the clients catch it *before* transport
errors and raise :class:`ResponseError`: it means "this is not an event
stream", which retrying would not change.
"""

from __future__ import annotations

import json
from typing import Any

import httpx2

from ._core import Call, parse_job, raise_for
from ._exceptions import JobGone, ResponseError
from ._models import Job, OutputChunk
from ._retry import Attempts

# What a watch yields: a new state of the job, or (following output) chunks of its output.
Update = Job | list[OutputChunk]


class Watch:
    """The state of one ``watch``: the last version yielded, the output held (``offset``,
    when it follows output), and whether it is over."""

    def __init__(
        self,
        attempts: Attempts,
        call: Call,
        timeout: httpx2.Timeout,
        job_id: str,
        since: int | None,
        output: bool = False,
    ) -> None:
        self.attempts = attempts
        self.job_id = job_id
        self.version = since
        self.output = output
        self.offset = 0
        self.done = False
        self.broken = False  # the stream skipped output chunks: it is opened again
        self.end_unheard = False  # a 204 for an end it never yielded: read the job
        self._current = False  # the next job event is the server's current state
        self._claimed = since is not None  # the version held is the caller's word, unseen
        self._call = call
        self._timeout = timeout

    @property
    def path(self) -> str:
        return self._call.path

    @property
    def options(self) -> dict[str, Any]:
        """The keyword arguments of the next ``stream()``: it resumes after ``version``
        (and ``offset``, following output)."""
        headers = {**self._call.headers, "Accept": "text/event-stream", "Cache-Control": "no-store"}
        if self.output and self.offset > 0:
            # Version 0 comes before any job: "0.n" resumes the output alone.
            headers["Last-Event-ID"] = f"{self.version or 0}.{self.offset}"
        elif self.version is not None:
            headers["Last-Event-ID"] = str(self.version)  # with output: output from 0
        options: dict[str, Any] = {"headers": headers, "timeout": self._timeout}
        if self.output:
            options["params"] = {"output": "1"}
        return options

    def opened(self, response: httpx2.Response) -> float | None:
        """None to read the stream (or stop, on 204); else the pause before reconnecting.

        The body of an error answer must have been read.
        """
        if response.status_code == 204:  # the server holds that we have the terminal state
            self.done = True
            # From the caller's ``since`` that is their word. From a version this watch
            # yielded (not an end: it stops at one), a Redis rolled back ended the job at
            # that version again: the end is still to be read, and yielded.
            self.end_unheard = not self._claimed
            return None
        if response.status_code == 200:
            self._current = True
            self.broken = False
            return None
        pause = self.attempts.after_response(response)
        if pause is None:
            raise_for(response, self.job_id)
        return pause

    def gone(self) -> JobGone:
        """What the watch raises once the job is gone (removed, or a 404 for the job it
        watched: it was there)."""
        return JobGone(f"job {self.job_id!r} was removed while watched", job_id=self.job_id)

    def receive(self, event: httpx2.ServerSentEvent) -> Update | None:
        """The job an event carries, unless this watch has yielded that version already;
        or, following output, the chunks it carries that this watch has not yielded."""
        if event.event == "removed":
            raise self.gone()
        if event.event == "output" and self.output:
            return self._new_chunks(_decoded(event))
        if event.event == "synced":
            # The server answered and sent all it had: a later drop is not a failure
            # of this one (a proxy that ends quiet streams early, say).
            self.attempts.reset()
            return None
        if event.event != "job":
            return None  # reset, and whatever comes later
        job = parse_job(_decoded(event))
        current, self._current = self._current, False
        # Older than what it holds: a repeat, unless what it holds is only the caller's
        # word and this is the server's current state.
        older_is_news = current and self._claimed
        repeat = self.version is not None and (
            job.version == self.version or (job.version < self.version and not older_is_news)
        )
        if job.version == self.version:
            self._claimed = False  # the server's word now, not only the caller's
        # The watch has yielded no end (it stops at one): an end at a version it has seen
        # is news, from a Redis that rolled back and issued that version again.
        if repeat and not job.is_terminal:
            return None
        self.version = job.version
        self._claimed = False
        self.done = job.is_terminal
        self.attempts.reset()  # progress: a later drop starts a fresh round of retries
        return job

    def _new_chunks(self, data: Any) -> list[OutputChunk] | None:
        items = data.get("chunks") if isinstance(data, dict) else None
        if not isinstance(items, list):
            raise ResponseError("an output event carries no chunks", status_code=200)
        try:
            chunks = [OutputChunk.from_wire(item) for item in items]
        except ValueError as exc:
            raise ResponseError(
                f"an output event's chunk is not one ({exc})", status_code=200
            ) from None
        fresh: list[OutputChunk] = []
        for chunk in chunks:
            expected = self.offset + len(fresh)
            if chunk.offset > expected:
                # Chunks missing (a stream gone wrong on its way): what came before them is
                # yielded, and the stream opened again after it, as jobcast.js does.
                self.broken = True
                break
            if chunk.offset == expected:
                fresh.append(chunk)
        if not fresh:
            return None
        self.offset = fresh[-1].offset + 1
        self.attempts.reset()  # progress, as for a job
        return fresh

    def dropped(self, exc: Exception | None) -> float:
        """The pause before reconnecting after ``exc`` (None: the stream just ended)."""
        return self.attempts.after_error(exc)

    def pause_after(self, pause: float | None) -> float:
        """The pause once a connection is over: ``pause`` if it has one, else as a drop."""
        if pause is not None:
            return pause
        return 0.0 if self.done else self.dropped(None)

    def not_a_stream(self, exc: httpx2.SSEError) -> ResponseError:
        """What to raise for an answer that is not an event stream (or an event too large)."""
        return ResponseError(f"{exc} (from {self.attempts.what})", status_code=200)


def _decoded(event: httpx2.ServerSentEvent) -> Any:
    try:
        return json.loads(event.data)
    except ValueError:
        raise ResponseError("an event's data is not JSON", status_code=200) from None
