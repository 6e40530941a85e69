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

import difflib
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Self, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    computed_field,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import ErrorDetails

from app.errors import FieldError, InvalidJobData, MalformedJSON

JobType = Literal["file_processing", "document_analysis", "llm_agent", "generic"]
JobStatus = Literal["queued", "processing", "completed", "error"]

JOB_TYPES: tuple[JobType, ...] = ("file_processing", "document_analysis", "llm_agent", "generic")
JOB_STATUSES: tuple[JobStatus, ...] = ("queued", "processing", "completed", "error")
TERMINAL_STATUSES: frozenset[JobStatus] = frozenset({"completed", "error"})

MAX_METADATA_DEPTH = 32
MAX_TOKEN_TTL = 7 * 24 * 3600


def format_timestamp(moment: datetime) -> str:
    """ISO 8601 UTC with milliseconds and `Z`, as the seed's JavaScript clients print them."""
    return (
        moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    )


def _integral_as_int(value: float) -> float | int:
    # 45 stays 45 on the wire, as the seed shows it, not 45.0.
    return int(value) if float(value).is_integer() else value


def _check_metadata(value: dict[str, Any]) -> dict[str, Any]:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_METADATA_DEPTH:
            raise ValueError(f"may nest at most {MAX_METADATA_DEPTH} levels deep")
        if isinstance(item, float) and not math.isfinite(item):
            # JSON has no NaN or Infinity: it would be stored as one thing and sent as null.
            raise ValueError("may hold finite numbers only")
        if isinstance(item, dict):
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)
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


class NewJob(RequestModel):
    """Body of `POST /api/jobs`; every field is optional."""

    job_type: JobType = "generic"
    message: Text = ""
    metadata: Metadata = Field(default_factory=dict)
    owner: Owner | None = None


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
        if not self.model_fields_set - {name for name, v in self if v is None}:
            raise ValueError("give at least one of status, progress, message, metadata")
        return self


class Completion(RequestModel):
    """Body of `POST /api/jobs/{jobId}/complete`; may be empty."""

    document_id: Text | None = None
    message: Text | None = None


class Failure(RequestModel):
    """Body of `POST /api/jobs/{jobId}/fail`."""

    error: Text
    message: Text | None = None


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
    created_at: Timestamp
    updated_at: Timestamp
    version: int

    @computed_field  # type: ignore[prop-decorator]
    @property
    def timestamp(self) -> Timestamp:
        """The seed's name for the last update time (same value as `updatedAt`)."""
        return self.updated_at

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES


class JobCreated(WireModel):
    """Answer to `POST /api/jobs`, the seed's shape."""

    job_id: str
    status: JobStatus
    timestamp: Timestamp
    token: str | None = Field(
        default=None,
        description="A read token for this job only; present when API keys are configured.",
    )


class TokenRequest(RequestModel):
    """Body of `POST /api/tokens`: one of `jobId` or `owner`, and an optional lifetime."""

    job_id: str | None = Field(default=None, min_length=1, max_length=200)
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


class ProblemField(WireModel):
    """One offending field of a request and what is wrong with it."""

    field: str
    message: str


class Problem(WireModel):
    """An RFC 9457 problem document."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[ProblemField] | None = None


def encode(model: BaseModel) -> bytes:
    """JSON bytes with absent optional fields omitted, never `null`."""
    return model.__pydantic_serializer__.to_json(model, exclude_none=True)


M = TypeVar("M", bound=BaseModel)


def parse(model: type[M], data: bytes | Mapping[str, Any], *, by_name: bool = False) -> M:
    """Validate a JSON body (bytes) or a mapping; raise InvalidJobData naming each bad field.

    A request body knows its fields by their wire names only; ``by_name=True``
    also takes the Python names, for Python callers (:mod:`app.library`). Query
    strings ignore what they do not know, so they keep understanding both rather
    than silently dropping a ``job_type`` filter.
    """
    names = by_name or not issubclass(model, RequestModel)
    try:
        if isinstance(data, bytes):
            return model.model_validate_json(data, by_alias=True, by_name=names)
        return model.model_validate(data, by_alias=True, by_name=names)
    except ValidationError as exc:
        for error in exc.errors(include_url=False, include_input=False):
            if error["type"] == "json_invalid":
                raise MalformedJSON(f"the body is not valid JSON: {error['msg']}") from None
        errors = field_errors(model, exc)
        raise InvalidJobData(describe(errors), errors) from None


def describe(errors: Sequence[FieldError]) -> str:
    """The one-line detail of a refused request: its first field error, as ``field: why``."""
    if not errors:
        return "the request is not valid"
    first, more = errors[0], len(errors) - 1
    return f"{first.field}: {first.message}" + (f" (and {more} more)" if more else "")


def field_errors(model: type[BaseModel], exc: ValidationError) -> list[FieldError]:
    """One :class:`FieldError` per offending field of ``model``, worded for people.

    Paths are the names as sent (camelCase on the wire), dotted when nested;
    ``body`` is the request as a whole.
    """
    details = exc.errors(include_url=False, include_input=False)
    fields = _wire_names(model)
    # A snake_case name already says "did you mean jobType?"; "jobId is required" is noise.
    hinted = {
        _suggestion(str(error["loc"][0]), fields)
        for error in details
        if error["type"] == "extra_forbidden" and len(error["loc"]) == 1
    }
    found: dict[str, FieldError] = {}
    for error in details:
        where = ".".join(str(part) for part in error["loc"]) or "body"
        if error["type"] == "missing" and where in hinted:
            continue
        if where not in found:
            found[where] = FieldError(where, _message(error, fields))
    return list(found.values())


def _wire_names(model: type[BaseModel]) -> list[str]:
    return [field.alias or name for name, field in model.model_fields.items()]


def _suggestion(name: str, fields: Sequence[str]) -> str | None:
    """The wire name someone who sent ``name`` most likely meant, if any."""
    camel = to_camel(name)
    if camel != name and camel in fields:
        return camel
    close = difflib.get_close_matches(name, fields, n=1, cutoff=0.75)
    return close[0] if close else None


_TYPE_WORDS = {
    "missing": "is required",
    "string_type": "must be a string",
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be an integer",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "finite_number": "must be a finite number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "dict_type": "must be an object",
    "model_type": "must be a JSON object",
    "list_type": "must be an array",
}
# (ctx key, words) for the errors that carry a bound or a size in their context.
_BOUND_WORDS = {
    "less_than_equal": ("le", "must be at most {}"),
    "greater_than_equal": ("ge", "must be at least {}"),
    "less_than": ("lt", "must be less than {}"),
    "greater_than": ("gt", "must be greater than {}"),
    "string_too_long": ("max_length", "may hold at most {} characters"),
    "string_too_short": ("min_length", "must hold at least {} characters"),
    "too_long": ("max_length", "may hold at most {} items"),
    "too_short": ("min_length", "must hold at least {} items"),
}
_PATTERN_WORDS = {OWNER_PATTERN: "must be visible ASCII characters, without spaces"}


def _message(error: ErrorDetails, fields: Sequence[str]) -> str:
    """What is wrong, in a few words; pydantic's own message for anything unusual."""
    kind, ctx = error["type"], error.get("ctx", {})
    if kind in _TYPE_WORDS:
        return _TYPE_WORDS[kind]
    if kind in _BOUND_WORDS and _BOUND_WORDS[kind][0] in ctx:
        key, words = _BOUND_WORDS[kind]
        if kind == "string_too_short" and ctx[key] == 1:
            return "must not be empty"
        return words.format(_number(ctx[key]))
    if kind == "literal_error" and "expected" in ctx:
        expected = str(ctx["expected"])
        if expected in ("True", "False"):
            return f"must be {expected.lower()}"
        if " or " not in expected:
            return f"must be {expected}"
        return "must be one of: " + ", ".join(expected.rsplit(" or ", 1))
    if kind == "string_pattern_mismatch" and "pattern" in ctx:
        return _PATTERN_WORDS.get(ctx["pattern"], f"must match the pattern {ctx['pattern']}")
    if kind in ("value_error", "assertion_error") and "error" in ctx:
        return str(ctx["error"])
    if kind == "extra_forbidden":
        hint = _suggestion(str(error["loc"][-1]), fields) if len(error["loc"]) == 1 else None
        if hint is not None:
            return f"is not a field of this request; did you mean {hint}?"
        return "is not a field of this request; it takes " + ", ".join(fields)
    return error["msg"]


def _number(value: Any) -> Any:
    """``100`` rather than ``100.0`` in a message."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


class QueryModel(WireModel):
    """Query strings arrive as text: coerce `"10"` to 10, ignore unknown parameters."""

    model_config = ConfigDict(strict=False, extra="ignore")


class ListQuery(QueryModel):
    status: JobStatus | None = None
    job_type: JobType | None = None
    owner: str | None = Field(default=None, max_length=200)
    limit: int = Field(default=100, ge=1, le=1000)
    cursor: str | None = Field(default=None, max_length=200)


class StreamQuery(QueryModel):
    status: JobStatus | None = None
    job_type: JobType | None = None
    owner: str | None = Field(default=None, max_length=200)
    last_event_id: str | None = Field(
        default=None,
        max_length=200,
        description="Resume after this event id, for clients that cannot set `Last-Event-ID`.",
    )


class JobQuery(QueryModel):
    wait_for_version: int | None = Field(
        default=None, ge=0, description="Long-poll: answer once the job's version exceeds this."
    )
    timeout: float = Field(default=30, gt=0, le=60, description="Long-poll wait, in seconds.")


class SubscribeJob(FrameModel):
    type: Literal["subscribe"]
    job_id: str = Field(max_length=200)
    since: int | None = Field(default=None, ge=0)


class SubscribeAll(FrameModel):
    type: Literal["subscribe"]
    all: Literal[True]
    job_type: JobType | None = None
    status: JobStatus | None = None
    owner: str | None = Field(default=None, max_length=200)
    since: str | None = Field(default=None, max_length=200)


class Unsubscribe(FrameModel):
    type: Literal["unsubscribe"]
    job_id: str | None = Field(default=None, max_length=200)
    all: bool = False


class Ping(FrameModel):
    type: Literal["ping"]


class Health(WireModel):
    """Liveness or readiness: `ok`, or `unavailable` with the reason."""

    status: Literal["ok", "unavailable"]
    detail: str | None = None
