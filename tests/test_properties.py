"""Property-based tests of the job rules: no sequence of operations breaks them.

Hypothesis drives ``app.jobs`` directly, and the service over the memory
store (clean-up included), with random operations in random order, and
checks after every step: only the allowed transitions happen, every
accepted change adds exactly one to ``version``, a refused change stores
and publishes nothing, and a terminal job never changes again.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from hypothesis import HealthCheck, assume, given, settings, strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule

from app import jobs
from app.errors import InvalidJobData, InvalidTransition, JobGone
from app.models import (
    Completion,
    Failure,
    Job,
    JobStatus,
    JobUpdate,
    NewJob,
    RequestModel,
    TokenRequest,
)
from app.service import JobService
from app.settings import Settings
from app.store.memory import MemoryStore
from app.streams.events import Change
from app.validation import describe, parse

T = TypeVar("T")

# The lifecycle as SPEC section 1 states it, written out here on purpose (not imported).
ALLOWED: dict[str, set[str]] = {
    "queued": {"queued", "processing", "completed", "error"},
    "processing": {"processing", "completed", "error"},
    "completed": set(),
    "error": set(),
}
TERMINAL = {"completed", "error"}
TTL = 300.0

statuses = st.sampled_from(["queued", "processing", "completed", "error"])
texts = st.text(max_size=20)
progresses = st.floats(min_value=0, max_value=100, allow_nan=False)
metadata = st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=5), max_size=3)
PROPERTY_SETTINGS = settings(
    max_examples=60,
    stateful_step_count=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def _update(
    status: str | None, progress: float | None, message: str | None, meta: dict[str, Any] | None
) -> JobUpdate:
    fields = {"status": status, "progress": progress, "message": message, "metadata": meta}
    given_fields = {name: value for name, value in fields.items() if value is not None}
    assume(given_fields)
    return JobUpdate.model_validate(given_fields)


def _job(status: JobStatus, version: int) -> Job:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    return Job(
        job_id="job_x",
        job_type="generic",
        status=status,
        message="",
        progress=0.0,
        metadata={},
        created_at=at,
        updated_at=at,
        version=version,
    )


@PROPERTY_SETTINGS
@given(
    start=statuses,
    version=st.integers(min_value=1, max_value=10_000),
    status=st.none() | statuses,
    progress=st.none() | progresses,
    message=st.none() | texts,
    meta=st.none() | metadata,
)
def test_one_update_is_refused_or_moves_one_version_along_an_allowed_edge(
    start: JobStatus,
    version: int,
    status: str | None,
    progress: float | None,
    message: str | None,
    meta: dict[str, Any] | None,
) -> None:
    """Any update of any job either raises InvalidTransition or is version+1 on an allowed edge."""
    before = _job(start, version)
    change = _update(status, progress, message, meta)
    later = before.updated_at + timedelta(seconds=1)
    try:
        after = jobs.update(before, change, later)
    except InvalidTransition:
        assert (status or start) not in ALLOWED[start]
        return
    assert after.status in ALLOWED[start]
    assert after.version == version + 1
    assert after.updated_at == later
    assert after.job_id == before.job_id
    assert after.created_at == before.created_at


BODY_MODELS: list[type[RequestModel]] = [NewJob, JobUpdate, Completion, Failure, TokenRequest]
WIRE_NAMES = ["jobType", "message", "metadata", "owner", "status", "progress", "documentId"]
WIRE_NAMES += ["error", "jobId", "ttl"]
SNAKE_NAMES = ["job_type", "document_id", "job_id"]
field_names = st.sampled_from(WIRE_NAMES + SNAKE_NAMES) | st.text(max_size=8)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=12,
)
PYDANTIC_WORDING = ("Value error", "Input should", "Field required", "Extra inputs")


@settings(PROPERTY_SETTINGS, max_examples=400)
@given(
    model=st.sampled_from(BODY_MODELS),
    body=st.dictionaries(field_names, json_values, max_size=5) | json_values,
)
def test_any_json_body_parses_or_is_refused_field_by_field_in_our_words(
    model: type[RequestModel], body: Any
) -> None:
    """Any JSON body parses or raises InvalidJobData: one worded error per field, snake_case too."""
    refused: InvalidJobData | None = None
    try:
        parse(model, json.dumps(body).encode())
    except InvalidJobData as exc:
        refused = exc
    snake = {name for name in SNAKE_NAMES if isinstance(body, dict) and name in body}
    if refused is None:
        assert isinstance(body, dict)
        assert not snake
        return
    fields = [error.field for error in refused.errors]
    assert fields
    assert len(set(fields)) == len(fields)
    assert snake <= set(fields)
    assert str(refused) == describe(refused.errors)
    for error in refused.errors:
        assert error.message
        assert not any(words in error.message for words in PYDANTIC_WORDING), error


def _run(loop: asyncio.AbstractEventLoop, coroutine: Coroutine[Any, Any, T]) -> T:
    return loop.run_until_complete(coroutine)


class JobLifecycle(RuleBasedStateMachine):
    """Random creates, updates, completions, failures and clean-ups against the memory store."""

    job_ids = Bundle("job_ids")

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.now = 1_000_000.0
        self.published: list[Change] = []
        self.store = MemoryStore(
            Settings(terminal_ttl=TTL), self.published.append, clock=lambda: self.now
        )
        self.service = JobService(self.store)
        self.known: dict[str, Job] = {}  # the last state each job was seen in
        self.deadlines: dict[str, float] = {}  # when each finished job is due for clean-up
        self.gone: set[str] = set()

    def teardown(self) -> None:
        self.loop.close()

    @rule(target=job_ids, message=texts, meta=metadata)
    def create(self, message: str, meta: dict[str, Any]) -> str:
        job, created = _run(self.loop, self.service.create(NewJob(message=message, metadata=meta)))
        assert created
        assert (job.status, job.version, job.progress) == ("queued", 1, 0)
        self.known[job.job_id] = job
        return job.job_id

    @rule(
        job_id=job_ids,
        status=st.none() | statuses,
        progress=st.none() | progresses,
        message=st.none() | texts,
        meta=st.none() | metadata,
    )
    def update(
        self,
        job_id: str,
        status: str | None,
        progress: float | None,
        message: str | None,
        meta: dict[str, Any] | None,
    ) -> None:
        change = _update(status, progress, message, meta)
        self._attempt(job_id, status, self.service.update(job_id, change))

    @rule(job_id=job_ids, document=st.none() | texts)
    def complete(self, job_id: str, document: str | None) -> None:
        done = self._attempt(
            job_id, "completed", self.service.complete(job_id, Completion(document_id=document))
        )
        if done is not None:
            assert done.progress == 100
            assert done.document_id == document

    @rule(job_id=job_ids, error=texts)
    def fail(self, job_id: str, error: str) -> None:
        failed = self._attempt(job_id, "error", self.service.fail(job_id, Failure(error=error)))
        if failed is not None:
            assert failed.error == (error if error.strip() else "Processing failed")

    @rule(seconds=st.sampled_from([1.0, TTL / 2, TTL + 1]))
    def time_passes(self, seconds: float) -> None:
        self.now += seconds
        _run(self.loop, self.store.sweep())
        self.gone |= {job_id for job_id, due in self.deadlines.items() if due <= self.now}

    def _attempt(
        self, job_id: str, target: str | None, call: Coroutine[Any, Any, Job]
    ) -> Job | None:
        before = self.known[job_id]
        published = len(self.published)
        try:
            after = _run(self.loop, call)
        except JobGone:
            assert job_id in self.gone
            assert len(self.published) == published
            return None
        except (InvalidTransition, InvalidJobData):
            assert (target or before.status) not in ALLOWED[before.status]
            assert _run(self.loop, self.store.get(job_id)) == before
            assert len(self.published) == published
            return None
        assert job_id not in self.gone
        assert before.status not in TERMINAL, "a terminal job changed"
        assert after.status in ALLOWED[before.status]
        assert after.version == before.version + 1
        assert [change.job for change in self.published[published:]] == [after]
        self.known[job_id] = after
        if after.is_terminal:
            self.deadlines[job_id] = self.now + TTL
        return after

    @invariant()
    def published_versions_only_grow_and_stop_at_the_end(self) -> None:
        last: dict[str, Change] = {}
        for change in self.published:
            previous = last.get(change.job_id)
            if change.job is None:
                assert previous is not None
                assert previous.is_final
            elif previous is None:
                assert change.version == 1
            else:
                assert previous.job is not None
                assert not previous.is_final
                assert change.version == previous.version + 1
            last[change.job_id] = change

    @invariant()
    def the_store_holds_what_was_last_seen(self) -> None:
        for job_id, job in self.known.items():
            if job_id not in self.gone:
                assert _run(self.loop, self.store.get(job_id)) == job


JobLifecycle.TestCase.settings = PROPERTY_SETTINGS
test_no_sequence_of_operations_breaks_the_job_rules = JobLifecycle.TestCase
test_no_sequence_of_operations_breaks_the_job_rules.__doc__ = (
    "Random operations in any order keep transitions, versions and the terminal freeze."
)
