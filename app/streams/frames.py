"""WebSocket frames: reading what a client sends, and writing what it is sent.

Client frames are JSON text, one message each (:func:`decode_frame`: an
error that says what is wrong with one that is not). What the server sends
is one message per frame, or with ``?batch=1`` (:func:`batch_mode`) what is
pending joined into ``{"type":"batch","messages":[…]}`` frames
(:func:`frames`).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import orjson
import pydantic_core
from pydantic import ValidationError
from websockets.frames import Frame, Opcode

from app.errors import FieldError, InvalidJobData
from app.models import Ping, SubscribeAll, SubscribeJob, Unsubscribe
from app.streams.events import Event, Latest, encoded, grouped, ws_frame
from app.validation import describe, field_errors

ClientFrame = SubscribeAll | SubscribeJob | Unsubscribe | Ping
BATCH_CHARS = 64 * 1024
FEW = 32  # pending changes encoded at once; a snapshot's are encoded one by one


class FrameError(ValueError):
    """A client frame that is not one of the protocol's; the message says why, and
    ``about`` which subscription it meant (``jobId``, or ``all``), when it named one."""

    def __init__(self, message: str, about: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.about = about or {}


def decode_frame(text: str) -> ClientFrame:
    data = _json(text)
    if not isinstance(data, dict):
        raise FrameError("a frame is a JSON object with a `type`")
    kind = data.get("type")
    model: type[ClientFrame] | None
    job_id = data.get("jobId")
    # Named back as sent, even if it is no job id ("*"), but not at any length.
    named = isinstance(job_id, str) and len(job_id) <= 200
    about = {"all": True} if data.get("all") is True else {"jobId": job_id} if named else {}
    if kind == "subscribe":
        if "all" in data and "jobId" in data:
            raise FrameError("subscribe: give jobId, or all: true, not both")
        model = SubscribeAll if "all" in data else SubscribeJob
    else:
        model = Unsubscribe if kind == "unsubscribe" else Ping if kind == "ping" else None
    if model is None:
        said = "a frame needs a `type`" if kind is None else f"unknown frame type {_shown(kind)}"
        raise FrameError(f"{said}: use subscribe, unsubscribe or ping")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise FrameError(f"{kind}: {describe(field_errors(model, exc))}", about) from None


def _json(text: str) -> Any:
    """The frame's JSON. orjson refuses a number too large for a double: the parser of
    request bodies reads it as infinity, for validation to name its field, and refuses
    what is not JSON (a lone surrogate, NaN) as orjson does."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        pass
    try:
        return pydantic_core.from_json(text, allow_inf_nan=False)
    except ValueError:
        raise FrameError("the frame is not JSON") from None


def _shown(value: Any) -> str:
    """A frame's value as JSON, cut short: what the client sent, in its own terms."""
    shown = orjson.dumps(value).decode()
    return shown if len(shown) <= 60 else shown[:57] + "..."


def frames(replies: list[str], changes: list[Event], *, batch: bool) -> list[str] | Iterator[str]:
    """The text frames for what is pending: replies first, then changes.

    Batching joins what is pending into ``{"type":"batch","messages":[…]}``
    frames of about BATCH_CHARS: one write per frame is what a fan-out pays
    for, so a client that reads batches is fed several times faster. A lone
    message is always sent as itself.
    """
    if len(changes) <= FEW and not replies:  # live changes: encoded all at once
        messages = [change.ws_frame() for change in changes]
        if not batch:
            return messages
        last = _last_batches
        if not last.made_from(messages):
            last.keep(messages, [_batch(group) for group in grouped(messages, BATCH_CHARS)])
        return last.made
    return _many_frames(replies, changes, batch=batch)


def _many_frames(replies: list[str], changes: list[Event], *, batch: bool) -> Iterator[str]:
    """:func:`frames` for a snapshot: changes are encoded, and let go, one at a time."""
    messages = itertools.chain(replies, encoded(changes, ws_frame))
    if not batch:
        yield from messages
        return
    yield from (_batch(group) for group in grouped(messages, BATCH_CHARS))


_last_batches: Latest[list[str]] = Latest([])


def text_frame(text: str) -> bytes:
    """``text`` as one WebSocket text frame, unmasked (as a server sends it)."""
    return Frame(Opcode.TEXT, text.encode()).serialize(mask=False)


def _batch(messages: list[str]) -> str:
    if len(messages) == 1:
        return messages[0]
    return '{"type":"batch","messages":[' + ",".join(messages) + "]}"


def batch_mode(value: str | None) -> bool:
    """``?batch=``: 1/true or 0/false (or absent); anything else is refused with 422."""
    if value is None or value in ("0", "false"):
        return False
    if value in ("1", "true"):
        return True
    reason = "must be 1, true, 0 or false"
    raise InvalidJobData(f"batch: {reason}", [FieldError("batch", reason)])
