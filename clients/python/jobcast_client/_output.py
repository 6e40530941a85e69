"""A job's output without the I/O: appending chunks exactly once, and reading them back.

A worker appends chunks (``POST /api/jobs/{jobId}/output``); the server
numbers them from 0 per job. Appending is not idempotent by itself: an
append whose answer was lost and that is sent again would add its chunks
twice. ``expectedOffset`` is what makes it safe: the server appends only if
the job holds exactly that many chunks, else it answers 409 with the count
it holds (``nextOffset``). So a retry of an append that landed gets a 409
whose ``nextOffset`` is the expected offset plus the chunks sent, and the
chunks at the expected offset are the ones sent: the append is recognised
as applied (:attr:`OutputAppended.already_applied`), not made again. The
chunks are compared as well as counted, so that another writer's append of
as many other chunks is never taken for this one's. Equal chunks cannot be
told apart: an output writer compares only when its batch may have landed
before (a retry, or a batch it sends again), so another writer's equal
chunks (a repeated token, a heartbeat line) never stand in for its own.

Decision: an append *without* ``expected_offset`` is sent as it is and is
not retried once it may have reached the server (a timeout or a reset
after sending, a 503): the client cannot tell whether it landed, and
fetching the count first would only move the race (two writers fetch the
same count, one of them fails) and cost a request per append. It is
retried when it surely did not arrive (the connection was refused, a 429).
Callers who want retries pass ``expected_offset``, or use an output writer
(:mod:`._writer`), which always does.

Like the calls of :mod:`._core`, each function here is a generator of
requests that either client runs.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

from ._core import Call, Core, Operation, Reply, expect_json, given, job_path, problem_of
from ._exceptions import OffsetMismatch, ResponseError
from ._models import Chunk, OutputAppended, OutputChunk

# The server's largest page (``limit`` of GET /api/jobs/{jobId}/output).
OUTPUT_PAGE_SIZE: Final = 1000


class _Nothing:
    """The ``data`` of an append that gives ``chunks`` instead (None is a JSON value: null)."""

    def __repr__(self) -> str:
        return "NOTHING"


NOTHING: Final = _Nothing()


def wire_chunks(data: Any, chunks: Iterable[Any] | None, kind: str | None) -> list[dict[str, Any]]:
    """The ``chunks`` of an append's body: one for ``data``, or one per item of ``chunks``.

    Plain items get ``kind``; :class:`Chunk` and :class:`OutputChunk` items keep their own.
    """
    if (data is NOTHING) == (chunks is None):
        raise ValueError("give exactly one of data or chunks")
    if isinstance(chunks, str | bytes | Mapping):
        # Each would append one chunk per letter (or key): surely not what was meant.
        raise ValueError(
            f"chunks is a list (or other iterable) of chunks, not a {type(chunks).__name__}: "
            "append one chunk with data="
        )
    items = [data] if chunks is None else list(chunks)
    if not items:
        raise ValueError("chunks is empty: an append needs at least one chunk")
    return [_wire_chunk(item, kind) for item in items]


def _wire_chunk(item: Any, kind: str | None) -> dict[str, Any]:
    if isinstance(item, Chunk | OutputChunk):
        return Chunk(item.data, item.kind).to_wire()
    return Chunk(item, kind).to_wire()


def _append_output(
    core: Core[Any],
    job_id: str,
    data: Any = NOTHING,
    *,
    chunks: Iterable[Any] | None = None,
    kind: str | None = None,
    expected_offset: int | None = None,
    landed_maybe: bool = True,
) -> Operation[OutputAppended]:
    """Append one chunk (``data``, any JSON value) or several (``chunks``) to the job's output.

    ``kind`` labels them (``token``, ``log``, ...; at most 64 characters).
    ``chunks`` items are plain values, which get ``kind``, or :class:`Chunk`
    items with their own kind; a ``dict`` item is data. Returns where they
    went: ``offset`` of the first, ``next_offset`` after the last.

    ``expected_offset`` appends only if the job holds exactly that many chunks
    (else :class:`OffsetMismatch`), which makes retrying safe: an append whose
    first attempt landed (its answer lost) is recognised on the retry and
    returned with ``already_applied``, never appended twice, and so is a
    second call with the same chunks and the same ``expected_offset``.
    Without it an append is retried only if it surely did not reach the
    server. Refused: a job that has ended (:class:`InvalidTransition`), output
    over a server limit (:class:`OutputTooLarge`), a kind that is too long
    (:class:`InvalidJobData`).
    """
    sent = wire_chunks(data, chunks, kind)
    if expected_offset is not None and (
        isinstance(expected_offset, bool)
        or not isinstance(expected_offset, int)
        or expected_offset < 0
    ):
        raise ValueError(
            f"expected_offset must be a count of chunks, 0 or more, not {expected_offset!r}"
        )
    reply = yield core._request(
        "POST",
        job_path(job_id, "/output"),
        json=given(chunks=sent, expectedOffset=expected_offset),
        job_id=job_id,
        replayable=expected_offset is not None,
    )
    held = _mismatch(reply)
    if held is not None and expected_offset is not None:
        # Landed already (its answer lost)? Then the chunks at the expected offset are
        # these, whatever other writers appended after them since.
        # Only an append that may have landed before can tell so: a first attempt refused
        # is not one, and equal chunks there are another writer's (``landed_maybe``: the
        # caller may have sent these before; a writer knows which it did).
        end = expected_offset + len(sent)
        if held >= end and (landed_maybe or reply.reached_before):
            there = yield from _read_range(core, job_id, expected_offset, len(sent))
            if _same(there, sent):
                # The lost answer carried the job's cancel flag: the job tells it now.
                job = yield from core._get_job(job_id)
                return OutputAppended(
                    expected_offset,
                    end,
                    already_applied=True,
                    cancel_requested=job.cancel_requested,
                    cancel_reason=job.cancel_reason,
                )
        raise OffsetMismatch(_detail(reply), expected_offset=expected_offset, next_offset=held)
    answer = expect_json(reply, "append's answer", job_id)
    try:
        return OutputAppended.from_wire(answer)
    except ValueError as exc:
        raise ResponseError(
            f"the server's answer is not an append's answer ({exc})",
            status_code=reply.response.status_code,
        ) from None


def _mismatch(reply: Reply) -> int | None:
    """The ``nextOffset`` of a 409 ``offset-mismatch`` answer; None for any other answer."""
    if reply.response.status_code != 409:
        return None
    problem = problem_of(reply.response)
    if problem is None or not str(problem.get("type", "")).endswith(":offset-mismatch"):
        return None
    held = problem.get("nextOffset")
    if isinstance(held, bool) or not isinstance(held, int):
        raise ResponseError(
            "the server's offset-mismatch answer has no nextOffset",
            status_code=409,
            problem=problem,
        )
    return held


def _detail(reply: Reply) -> str:
    problem = problem_of(reply.response) or {}
    detail = problem.get("detail")
    return detail if isinstance(detail, str) and detail else "409 Conflict (offset-mismatch)"


def _same(there: list[OutputChunk], sent: list[dict[str, Any]]) -> bool:
    """Whether the chunks held are the ones sent (compared as JSON: a tuple sent is a list)."""
    wanted = json.loads(json.dumps(sent))
    return len(there) == len(wanted) and all(
        (chunk.data, chunk.kind) == (item["data"], item.get("kind"))
        for chunk, item in zip(there, wanted, strict=True)
    )


def _read_range(
    core: Core[Any], job_id: str, after: int, count: int
) -> Operation[list[OutputChunk]]:
    """The ``count`` chunks from offset ``after`` (fewer if the job holds fewer)."""
    pages = OutputPages(core, job_id, after, limit=count)
    found: list[OutputChunk] = []
    while (call := pages.next_call()) is not None:
        found += pages.take((yield call))
    return found


class OutputPages:
    """``output`` without the I/O: which page of a job's output to ask for next, and its chunks.

    It reads what the job holds when each page is asked for, and stops at the
    first empty page or once the job has ended and nothing is left
    (``complete``), or after ``limit`` chunks.
    """

    def __init__(self, core: Core[Any], job_id: str, after: int, limit: int | None = None) -> None:
        if after < 0:
            raise ValueError("after must not be negative")
        self._core = core
        self._job_id = job_id
        self._next = after
        self._left = limit
        self._done = limit == 0

    def next_call(self) -> Call | None:
        if self._done:
            return None
        size = OUTPUT_PAGE_SIZE if self._left is None else min(OUTPUT_PAGE_SIZE, self._left)
        return self._core._request(
            "GET",
            job_path(self._job_id, "/output"),
            params={"after": self._next, "limit": size},
            job_id=self._job_id,
        )

    def take(self, reply: Reply) -> list[OutputChunk]:
        page = expect_json(reply, "page of output", self._job_id)
        try:
            if not isinstance(page, dict) or not isinstance(page.get("chunks"), list):
                raise ValueError("chunks: missing")
            chunks = [OutputChunk.from_wire(item) for item in page["chunks"]]
        except ValueError as exc:
            raise ResponseError(
                f"the server's answer is not a page of output ({exc})",
                status_code=reply.response.status_code,
            ) from None
        if self._left is not None:
            chunks = chunks[: self._left]
            self._left -= len(chunks)
        if chunks:
            self._next = chunks[-1].offset + 1
        self._done = not chunks or page.get("complete") is True or self._left == 0
        return chunks


def _start_offset(core: Core[Any], job_id: str) -> Operation[int]:
    """Where a writer's first append goes: the job's chunk count (``outputSize``)."""
    job = yield from core._get_job(job_id)
    return job.output_size


def _append_batch(
    core: Core[Any],
    job_id: str,
    chunks: list[Chunk],
    offset: int,
    *,
    moved: Callable[[int], None],
    resent: bool,
) -> Operation[OutputAppended]:
    """An output writer's append at ``offset``, moved past what other writers appended.

    With ``expectedOffset`` a batch lands at that offset or nowhere, so a
    mismatch that is not this batch itself (:func:`_append_output` checks)
    means another writer got there first: appending at the count the server
    gave cannot duplicate anything. ``moved`` hears of each new offset before
    the batch goes there: should that append's answer be lost, the batch is
    sent again there, where its retry can tell it landed. ``resent``: the
    batch was sent before (its answer lost), so it may be there already.

    It moves as often as other writers' appends land (two `jobcast append` on one
    job, a process's stdout and stderr, take turns by the hundred), and gives up
    only when refused where nobody appended: the server's count did not move.
    """
    while True:
        try:
            return (
                yield from _append_output(
                    core, job_id, chunks=chunks, expected_offset=offset, landed_maybe=resent
                )
            )
        except OffsetMismatch as mismatch:
            if mismatch.next_offset <= offset:
                raise
            offset = mismatch.next_offset
            moved(offset)
            resent = False  # never sent at this offset
