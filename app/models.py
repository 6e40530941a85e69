"""Wire models: what goes over HTTP, SSE and WebSocket, in camelCase.

These models validate every request (HTTP bodies and the in-process
library calls alike) and generate `/openapi.json`, so the documentation
cannot drift from what the server accepts. :class:`Job` is both the wire
shape and the stored state: one model for one thing.

A request body or WebSocket frame knows its fields by their wire names only
(`jobType`, never `job_type`): a Python name there is an unknown field, refused
with a hint. Python code (the library, the server's own calls) keeps using
Python names. :func:`parse` turns pydantic's errors into :class:`FieldError`
lines a person can act on (`progress: must be at most 100`).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    computed_field,
    model_validator,
)
from pydantic.alias_generators import to_camel

from app.errors import FieldError

JobType = Literal["file_processing", "document_analysis", "llm_agent", "generic"]
JobStatus = Literal["queued", "processing", "completed", "error"]

JOB_TYPES: tuple[JobType, ...] = ("file_processing", "document_analysis", "llm_agent", "generic")
JOB_STATUSES: tuple[JobStatus, ...] = ("queued", "processing", "completed", "error")
TERMINAL_STATUSES: frozenset[JobStatus] = frozenset({"completed", "error"})

MAX_METADATA_DEPTH = 32
# Versions and offsets a request may name: at most the largest integer every JSON
# client holds exactly (JavaScript's Number.MAX_SAFE_INTEGER); Redis takes them as 64-bit.
MAX_COUNT = 2**53 - 1
MAX_TOKEN_TTL = 7 * 24 * 3600


def format_timestamp(moment: datetime) -> str:
    """ISO 8601 UTC with milliseconds and `Z`, as the Jobs API's JavaScript clients print them."""
    return (
        moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    )


def _integral_as_int(value: float) -> float | int:
    # 45 stays 45 on the wire, as the Jobs API shows it, not 45.0.
    return int(value) if float(value).is_integer() else value


def _check_json(value: Any, max_depth: int | None) -> None:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if max_depth is not None and depth > max_depth:
            raise ValueError(f"may nest at most {max_depth} levels deep")
        if isinstance(item, float) and not math.isfinite(item):
            # The parser takes NaN and Infinity literals (and 1e400), which JSON has not:
            # sent on as they came, they would break every reader's JSON.parse.
            raise ValueError("may hold finite numbers only (JSON has no NaN or Infinity)")
        if isinstance(item, dict):
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)


def _check_metadata(value: dict[str, Any]) -> dict[str, Any]:
    _check_json(value, MAX_METADATA_DEPTH)
    return value


def _check_chunk_data(value: Any) -> Any:
    _check_json(value, None)  # how deep the parser nests is its own limit
    return value


Timestamp = Annotated[datetime, PlainSerializer(format_timestamp, return_type=str)]
Progress = Annotated[
    float,
    Field(ge=0, le=100, allow_inf_nan=False, strict=True),
    PlainSerializer(_integral_as_int),
]
# Text and metadata sizes are settings (JOBS_MAX_TEXT_LENGTH, JOBS_MAX_METADATA_BYTES),
# checked in one place on the job a change produces: app.service.
Text = str
Metadata = Annotated[dict[str, Any], AfterValidator(_check_metadata)]
OWNER_PATTERN = r"^[!-~]+$"
JOB_ID_PATTERN = r"^job_[A-Za-z0-9_-]{1,64}$"  # what the server makes: new_job_id
Owner = Annotated[
    str,
    Field(
        min_length=1,
        max_length=200,
        pattern=OWNER_PATTERN,
        description="Who the job belongs to (visible ASCII); owner tokens read only theirs.",
    ),
]


class WireModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        frozen=True,
    )


class RequestModel(WireModel):
    """A request body: exact JSON types, no unknown fields; :func:`parse` reads the wire
    names only (Python code may still build one by its Python names)."""

    model_config = ConfigDict(strict=True, extra="forbid")


class FrameModel(RequestModel):
    """A WebSocket client frame: only ever read off the wire, so wire names only, always."""

    model_config = ConfigDict(validate_by_name=False)


# No whitespace or control characters (a URL goes into log lines as it is).
WEBHOOK_URL_PATTERN = (
    r"^[hH][tT][tT][pP][sS]?://[^/?#\s@\x00-\x1f\x7f-\x9f]+(/[^\s\x00-\x1f\x7f-\x9f]*)?$"
)
WebhookUrl = Annotated[
    str,
    Field(
        max_length=2048,
        pattern=WEBHOOK_URL_PATTERN,
        description="Where this job's events are POSTed to (signed): an http(s) URL on a host "
        "of JOBS_WEBHOOK_HOSTS. Visible to whoever reads the job: put no secret in it.",
    ),
]


class NewJob(RequestModel):
    """Body of `POST /api/jobs`; every field is optional."""

    job_type: JobType = "generic"
    message: Text = ""
    metadata: Metadata = Field(default_factory=dict)
    owner: Owner | None = None
    webhook_url: WebhookUrl | None = None


class JobUpdate(RequestModel):
    """Body of `PATCH /api/jobs/{jobId}`: any of these, at least one."""

    status: JobStatus | None = None
    progress: Progress | None = None
    message: Text | None = None
    metadata: Metadata | None = Field(
        default=None, description="Shallow-merged into the job's metadata."
    )

    @model_validator(mode="after")
    def _not_empty(self) -> Self:
        given = self.model_fields_set
        if not given - {name for name, v in self if v is None}:
            # A null is taken as "not given" (a field left as it is): say so when all were.
            nulls = " (null leaves a field as it is)" if given else ""
            raise ValueError(f"give at least one of status, progress, message, metadata{nulls}")
        return self


class Completion(RequestModel):
    """Body of `POST /api/jobs/{jobId}/complete`; may be empty."""

    document_id: Text | None = None
    message: Text | None = None


class Failure(RequestModel):
    """Body of `POST /api/jobs/{jobId}/fail`."""

    error: Text
    message: Text | None = None


class CancelRequest(RequestModel):
    """Body of `POST /api/jobs/{jobId}/cancel`; may be empty."""

    reason: Text | None = Field(default=None, description="Why: shown to the worker and viewers.")
    force: bool = Field(
        default=False,
        description='End the job now, as `error` with `error: "canceled"`, for a job whose '
        "worker is gone; without it the worker is asked to stop and ends the job itself.",
    )


class Job(WireModel):
    """A tracked job: the full state every response and every event carries."""

    job_id: str
    job_type: JobType
    status: JobStatus
    message: str
    progress: Progress
    document_id: str | None = None
    error: str | None = None
    metadata: dict[str, Any]
    owner: str | None = None
    webhook_url: str | None = None
    cancel_requested: bool | None = Field(
        default=None, description="Present, true, once a cancel was asked for."
    )
    cancel_reason: str | None = None
    output_size: int | None = Field(
        default=None,
        description="Output chunks appended so far; present once the job has output. "
        "Appending does not change `version`.",
    )
    created_at: Timestamp
    updated_at: Timestamp
    version: int

    @computed_field  # type: ignore[prop-decorator]
    @property
    def timestamp(self) -> Timestamp:
        """The Jobs API's name for the last update time (same value as `updatedAt`)."""
        return self.updated_at

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES


OutputKind = Annotated[
    str,
    Field(
        min_length=1,
        max_length=64,
        description="A label the worker chooses: `token`, `log`, `result`, …",
    ),
]


class NewChunk(RequestModel):
    data: Annotated[Any, AfterValidator(_check_chunk_data)] = Field(
        description="Any JSON value: a token, a log line, a partial result."
    )
    kind: OutputKind | None = None


class OutputAppend(RequestModel):
    """Body of `POST /api/jobs/{jobId}/output`."""

    chunks: list[NewChunk] = Field(min_length=1, description="Appended in this order.")
    expected_offset: int | None = Field(
        default=None,
        ge=0,
        le=MAX_COUNT,
        description="Append only if the job has exactly this many chunks (else 409 with "
        "`nextOffset`): a retried append is then applied once.",
    )


class OutputAppended(WireModel):
    """Answer to an append: where its chunks went, and whether the job's worker was asked
    to stop (the cancel flag every write's answer carries)."""

    job_id: str
    offset: int = Field(description="The offset of the first chunk appended.")
    next_offset: int = Field(description="The job's chunks now: the next chunk's offset.")
    cancel_requested: bool | None = Field(
        default=None,
        description="Present, true, once a cancel was asked for: the worker's cue to stop.",
    )
    cancel_reason: str | None = None


class OutputChunk(WireModel):
    offset: int
    data: Any
    kind: str | None = None


class OutputPage(WireModel):
    """Answer to `GET /api/jobs/{jobId}/output`."""

    job_id: str
    chunks: list[OutputChunk]
    next_offset: int = Field(description="Ask `after` this next: the chunks held after this page.")
    complete: bool = Field(description="The job has ended and there is no output after this page.")


class JobCreated(WireModel):
    """Answer to `POST /api/jobs`, the Jobs API's shape."""

    job_id: str
    status: JobStatus
    timestamp: Timestamp
    token: str | None = Field(
        default=None,
        description="A read token for this job only; present when API keys are configured.",
    )


class TokenRequest(RequestModel):
    """Body of `POST /api/tokens`: one of `jobId` or `owner`, and an optional lifetime."""

    job_id: str | None = Field(default=None, pattern=JOB_ID_PATTERN)
    owner: Owner | None = None
    ttl: int | None = Field(
        default=None, ge=1, le=MAX_TOKEN_TTL, description="Seconds (default JOBS_TOKEN_TTL)."
    )

    @model_validator(mode="after")
    def _one_scope(self) -> Self:
        if (self.job_id is None) == (self.owner is None):
            raise ValueError("give exactly one of jobId or owner")
        return self


class TokenIssued(WireModel):
    """A read token (`Authorization: Bearer …` or `?token=`) and when it expires."""

    token: str
    expires_at: Timestamp


class JobList(WireModel):
    """A page of jobs, newest first."""

    jobs: list[Job]
    next_cursor: str | None = Field(
        default=None, description="Pass as `cursor` for the next page; absent on the last one."
    )


class Problem(WireModel):
    """An RFC 9457 problem document."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[FieldError] | None = None
    next_offset: int | None = Field(
        default=None, description="`offset-mismatch` only: the job's output chunks now."
    )


def encode(model: BaseModel) -> bytes:
    """JSON bytes with absent optional fields omitted, never `null`."""
    return model.__pydantic_serializer__.to_json(model, exclude_none=True)


class QueryModel(WireModel):
    """Query strings arrive as text: coerce `"10"` to 10, ignore unknown parameters."""

    model_config = ConfigDict(strict=False, extra="ignore")


def _in_digits(value: Any) -> Any:
    # pydantic's lax int takes "1_0" (10) and "1.0" (1) from text; a count is digits.
    if isinstance(value, str) and not (value.isascii() and value.isdigit()):
        raise ValueError("must be a whole number, written in digits")
    return value


# A count in a query string: 0, 1, 2, … written in ASCII digits.
QueryCount = Annotated[int, BeforeValidator(_in_digits)]


class ListQuery(QueryModel):
    status: JobStatus | None = None
    job_type: JobType | None = None
    owner: Owner | None = None
    limit: QueryCount = Field(default=100, ge=1, le=1000)
    cursor: str | None = Field(default=None, max_length=200)


class StreamQuery(QueryModel):
    status: JobStatus | None = None
    job_type: JobType | None = None
    owner: Owner | None = None
    last_event_id: str | None = Field(
        default=None,
        max_length=200,
        description="Resume after this event id, for clients that cannot set `Last-Event-ID`.",
    )
    ping: bool = Field(
        default=False,
        description='Heartbeats as `event: ping` with `data: {"every": <seconds>}` (one '
        "first of all), not comments: for clients that cannot see comments (EventSource) "
        "and would notice a stream that died silently.",
    )


class JobStreamQuery(StreamQuery):
    output: bool = Field(
        default=False,
        description="Also stream the job's output (`event: output`); event ids become "
        "`<version>.<nextOffset>`.",
    )


class OutputQuery(QueryModel):
    after: QueryCount = Field(
        default=0,
        ge=0,
        le=MAX_COUNT,
        description="Chunks already held: the page starts at this offset.",
    )
    limit: QueryCount = Field(default=1000, ge=1, le=1000)


class JobQuery(QueryModel):
    wait_for_version: QueryCount | None = Field(
        default=None,
        ge=0,
        le=MAX_COUNT,
        description="Long-poll: answer once the job's version exceeds this.",
    )
    timeout: float = Field(
        default=30, gt=0, le=60, allow_inf_nan=False, description="Long-poll wait, in seconds."
    )


class SubscribeJob(FrameModel):
    type: Literal["subscribe"]
    job_id: str = Field(pattern=JOB_ID_PATTERN)
    since: int | None = Field(default=None, ge=0, le=MAX_COUNT)
    output: bool = False
    since_offset: int | None = Field(default=None, ge=0, le=MAX_COUNT)


class SubscribeAll(FrameModel):
    type: Literal["subscribe"]
    all: Literal[True]
    job_type: JobType | None = None
    status: JobStatus | None = None
    owner: Owner | None = None
    since: str | None = Field(default=None, max_length=200)


class Unsubscribe(FrameModel):
    type: Literal["unsubscribe"]
    job_id: str | None = Field(default=None, pattern=JOB_ID_PATTERN)
    all: bool = False


class Ping(FrameModel):
    type: Literal["ping"]


class Health(WireModel):
    """Liveness or readiness: `ok`, or `unavailable` with the reason."""

    status: Literal["ok", "unavailable"]
    detail: str | None = None
