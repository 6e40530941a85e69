"""How a refused request is explained (``app.validation.parse``, ``field_errors``, ``describe``):
short instructions keyed by wire names, one per field, never pydantic's own wording."""

from __future__ import annotations

from typing import Any, Literal

import pytest
from pydantic import BaseModel, Field, ValidationError
from starlette.testclient import TestClient

from app.errors import FieldError, InvalidJobData
from app.models import (
    Completion,
    ListQuery,
    NewJob,
    RequestModel,
    SubscribeAll,
    SubscribeJob,
    TokenRequest,
    Unsubscribe,
)
from app.streams.frames import FrameError, decode_frame
from app.validation import describe, field_errors, parse


class Sample(RequestModel):
    """A request with one field of each kind the messages cover."""

    name: str = Field(default="", max_length=3, pattern=r"^[a-z]*$")
    count: int = Field(default=0, lt=5)
    ratio: float = Field(default=1, gt=0)
    flag: bool = False
    tags: list[str] = Field(default_factory=list, max_length=2)
    pair: list[int] = Field(default_factory=lambda: [0], min_length=1, max_length=1)
    code: str = Field(default="x", max_length=1)
    extra_info: dict[str, int] = Field(default_factory=dict)
    kind: Literal["a", "b"] = "a"


MESSAGES = {
    "string": ({"name": 1}, "name", "must be a string"),
    "string-too-long": ({"name": "abcd"}, "name", "may hold at most 3 characters"),
    "pattern": ({"name": "A"}, "name", "must match the pattern ^[a-z]*$"),
    "integer": ({"count": "1"}, "count", "must be an integer"),
    "less-than": ({"count": 5}, "count", "must be less than 5"),
    "greater-than": ({"ratio": 0}, "ratio", "must be greater than 0"),
    "number": ({"ratio": "x"}, "ratio", "must be a number"),
    "bool": ({"flag": 1}, "flag", "must be true or false"),
    "array": ({"tags": "x"}, "tags", "must be an array"),
    "too-many-items": ({"tags": ["a", "b", "c"]}, "tags", "may hold at most 2 items"),
    "too-few-of-one": ({"pair": []}, "pair", "must hold at least 1 item"),
    "too-many-of-one": ({"pair": [1, 2]}, "pair", "may hold at most 1 item"),
    "one-character": ({"code": "xy"}, "code", "may hold at most 1 character"),
    "nested": ({"tags": [1]}, "tags.0", "must be a string"),
    "object": ({"extraInfo": []}, "extraInfo", "must be an object"),
    "nested-wire-path": ({"extraInfo": {"k": "v"}}, "extraInfo.k", "must be an integer"),
    "literal": ({"kind": "c"}, "kind", "must be one of: 'a', 'b'"),
    "snake-case": (
        {"extra_info": {}},
        "extra_info",
        "is not a field of this request; did you mean extraInfo?",
    ),
    "unknown": (
        {"zzz": 1},
        "zzz",
        "is not a field of this request; it takes name, count, ratio, flag, tags, pair, code, "
        "extraInfo, kind",
    ),
}


@pytest.mark.parametrize(("body", "field", "message"), MESSAGES.values(), ids=MESSAGES.keys())
def test_each_kind_of_error_gets_a_short_instruction(
    body: dict[str, Any], field: str, message: str
) -> None:
    """Each pydantic error type becomes a few words saying what the value must be."""
    with pytest.raises(InvalidJobData) as refused:
        parse(Sample, body)
    assert refused.value.errors == (FieldError(field, message),)
    assert str(refused.value) == f"{field}: {message}"


def test_a_validator_message_appears_as_itself() -> None:
    """A model validator's ValueError reads as its own text, without `Value error, `."""
    with pytest.raises(InvalidJobData) as refused:
        parse(TokenRequest, b"{}")
    assert str(refused.value) == "body: give exactly one of jobId or owner"


def test_several_errors_keep_one_entry_per_field_and_the_detail_counts_the_rest() -> None:
    """Every offending field is listed once; the detail is the first, and how many more."""
    with pytest.raises(InvalidJobData) as refused:
        parse(Sample, {"name": 1, "count": 9, "kind": "z"})
    assert [error.field for error in refused.value.errors] == ["name", "count", "kind"]
    assert str(refused.value) == "name: must be a string (and 2 more)"


def test_describe_is_the_first_error_and_a_count() -> None:
    """describe() words any list of field errors the way parse does."""
    errors = [FieldError("message", "may hold at most 10 characters"), FieldError("error", "x")]
    assert describe(errors[:1]) == "message: may hold at most 10 characters"
    assert describe(errors) == "message: may hold at most 10 characters (and 1 more)"


def test_field_errors_words_a_validation_error_for_any_caller() -> None:
    """field_errors() gives what parse raises, for callers that validate themselves (ws.py)."""
    with pytest.raises(ValidationError) as caught:
        SubscribeJob.model_validate({"type": "subscribe", "jobId": 7})
    assert field_errors(SubscribeJob, caught.value) == [FieldError("jobId", "must be a string")]


def test_request_bodies_take_wire_names_only_and_python_callers_python_names() -> None:
    """parse() refuses `document_id` from the wire but takes it with by_name=True."""
    with pytest.raises(InvalidJobData) as refused:
        parse(Completion, b'{"document_id": "doc_1"}')
    assert [error.field for error in refused.value.errors] == ["document_id"]
    assert parse(Completion, {"document_id": "doc_1"}, by_name=True).document_id == "doc_1"
    assert parse(Completion, b'{"documentId": "doc_1"}').document_id == "doc_1"
    assert parse(NewJob, {"jobType": "llm_agent"}).job_type == "llm_agent"


def test_query_strings_still_understand_python_names() -> None:
    """Queries ignore unknown names, so `?job_type=` keeps filtering instead of being dropped."""
    assert parse(ListQuery, {"job_type": "llm_agent"}).job_type == "llm_agent"
    assert parse(ListQuery, {"jobType": "llm_agent"}).job_type == "llm_agent"


@pytest.mark.parametrize(
    "frame",
    [
        '{"type": "subscribe", "job_id": "job_1"}',
        '{"type": "subscribe", "all": true, "job_type": "generic"}',
        '{"type": "unsubscribe", "job_id": "job_1"}',
    ],
)
def test_websocket_frames_take_wire_names_only(frame: str) -> None:
    """A frame with a snake_case field is refused, as a body with one is, naming the fix."""
    with pytest.raises(FrameError, match="did you mean"):
        decode_frame(frame)


def test_frame_models_refuse_python_names_even_when_validated_directly() -> None:
    """The frame models hold the wire rule themselves: model_validate refuses `job_id`."""
    cases: list[tuple[type[BaseModel], dict[str, object]]] = [
        (SubscribeJob, {"type": "subscribe", "job_id": "j"}),
        (SubscribeAll, {"type": "subscribe", "all": True, "job_type": "generic"}),
        (Unsubscribe, {"type": "unsubscribe", "job_id": "j"}),
    ]
    for model, body in cases:
        with pytest.raises(ValidationError) as caught:
            model.model_validate(body)
        [error] = field_errors(model, caught.value)
        assert error.field in ("job_id", "job_type")
        assert error.message.endswith(("did you mean jobId?", "did you mean jobType?"))


def test_a_snake_case_frame_gets_an_error_frame_and_the_socket_stays_usable(
    client: TestClient,
) -> None:
    """Over a real socket, `job_id` gets an error frame (no subscription); ping still pongs."""
    job_id = client.post("/api/jobs", json={}).json()["jobId"]
    with client.websocket_connect("/api/jobs/ws") as socket:
        socket.send_json({"type": "subscribe", "job_id": job_id})
        reply = socket.receive_json()
        assert reply["type"] == "error"
        assert "jobId" in reply["error"]
        socket.send_json({"type": "ping"})
        assert socket.receive_json() == {"type": "pong"}


@pytest.mark.parametrize(
    ("frame", "error", "about"),
    [
        ("{}", "a frame needs a `type`: use subscribe, unsubscribe or ping", {}),
        ('{"type": 5}', "unknown frame type 5: use subscribe, unsubscribe or ping", {}),
        (
            '{"type": "subscribe", "jobId": "job_abc", "since": "abc"}',
            "subscribe: since: must be an integer",
            {"jobId": "job_abc"},
        ),
        (
            '{"type": "subscribe", "jobId": "job_abc", "since": 1e400}',
            "subscribe: since: must be an integer",
            {"jobId": "job_abc"},
        ),
        (
            '{"type": "subscribe", "all": true, "since": 5}',
            "subscribe: since: must be a string",
            {"all": True},
        ),
        (
            '{"type": "subscribe", "all": true, "jobId": "job_abc"}',
            "subscribe: give jobId, or all: true, not both",
            {},
        ),
        (
            '{"type": "unsubscribe", "jobId": "*"}',
            "unsubscribe: jobId: must be a job id (job_…)",
            {"jobId": "*"},
        ),
        ('{"type": "\\ud800"}', "the frame is not JSON", {}),  # a lone surrogate
        ('{"type": "subscribe", "jobId": "\\ud800", "since": 1e400}', "the frame is not JSON", {}),
    ],
)
def test_a_refused_frame_says_why_and_names_the_subscription_it_meant(
    client: TestClient, frame: str, error: str, about: dict[str, object]
) -> None:
    """An error frame says what to fix in the client's terms, and names the subscription
    (jobId, or all) the frame asked for: a client with several pending can tell which."""
    with client.websocket_connect("/api/jobs/ws") as socket:
        socket.send_text(frame)
        assert socket.receive_json() == {
            "type": "error",
            "code": "bad_request",
            "error": error,
            **about,
        }
