"""Reading input: a body, a query or a frame becomes a wire model, or errors a person can act on.

:func:`parse` validates with the wire models (:mod:`app.models`) and turns
pydantic's errors into :class:`~app.errors.FieldError` lines in the server's
own words (``progress: must be at most 100``), one per offending field, named
as they are sent (camelCase, dotted when nested). A request body or a frame
knows its fields by their wire names only: a Python name there (``job_type``)
is an unknown field, refused with the name to use.
"""

from __future__ import annotations

import collections
import difflib
import typing
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic.alias_generators import to_camel
from pydantic_core import ErrorDetails
from starlette.datastructures import QueryParams

from app.errors import FieldError, InvalidJobData, MalformedJSON
from app.models import JOB_ID_PATTERN, OWNER_PATTERN, WEBHOOK_URL_PATTERN, RequestModel

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


def parse_query(model: type[M], params: QueryParams) -> M:
    """:func:`parse` for a query string. A parameter of ``model`` given twice
    (``?status=queued&status=processing``), or under both its names (``jobType`` and
    ``job_type``), is refused: one of them would silently win. Other parameters (a
    cache-buster, the token) are not the model's to judge."""
    counts = collections.Counter(key for key, _ in params.multi_items())
    errors = []
    for name, field in model.model_fields.items():
        wire = field.alias or name
        given = counts[wire] + (counts[name] if name != wire else 0)
        if given > 1:
            twice = name != wire and counts[name] and counts[wire]
            said = f"is given as {wire} and as {name}" if twice else f"is given {given} times"
            errors.append(FieldError(wire, f"{said}: give it once"))
    if errors:
        raise InvalidJobData(describe(errors), errors)
    return parse(model, dict(params))


def whole_number(text: str, most_digits: int) -> int | None:
    """``text`` as a whole number if it is ASCII digits only, at most ``most_digits`` of
    them; None for anything else (a header or a cursor is never an error to read).

    ``str.isdigit()`` alone lets through what int() refuses (``"²"``), and int()
    refuses more than 4300 digits.
    """
    if text.isascii() and text.isdigit() and len(text) <= most_digits:
        return int(text)
    return None


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
            found[where] = FieldError(where, _message(error, fields, model))
    return list(found.values())


def _wire_names(model: type[BaseModel]) -> list[str]:
    return [field.alias or name for name, field in model.model_fields.items()]


def _fields_at(model: type[BaseModel], path: Sequence[int | str]) -> list[str] | None:
    """The wire names of the object at ``path`` in ``model`` (``chunks.0``: a chunk's),
    if it is a model."""
    for part in path:
        if isinstance(part, int):
            continue  # an item of a list: the list's model
        fields = model.model_fields.items()
        field = next((f for name, f in fields if (f.alias or name) == part), None)
        inner = _model_in(field.annotation) if field is not None else None
        if inner is None:
            return None
        model = inner
    return _wire_names(model)


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The model a field's type holds (``list[Chunk] | None``: Chunk), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for argument in typing.get_args(annotation):
        if (found := _model_in(argument)) is not None:
            return found
    return None


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
# (ctx key, words, what is counted) for the errors that carry a bound or a size.
_BOUND_WORDS = {
    "less_than_equal": ("le", "must be at most {}", ""),
    "greater_than_equal": ("ge", "must be at least {}", ""),
    "less_than": ("lt", "must be less than {}", ""),
    "greater_than": ("gt", "must be greater than {}", ""),
    "string_too_long": ("max_length", "may hold at most {}", "character"),
    "string_too_short": ("min_length", "must hold at least {}", "character"),
    "too_long": ("max_length", "may hold at most {}", "item"),
    "too_short": ("min_length", "must hold at least {}", "item"),
}
_PATTERN_WORDS = {
    JOB_ID_PATTERN: "must be a job id (job_…)",
    OWNER_PATTERN: "must be visible ASCII characters, without spaces",
    WEBHOOK_URL_PATTERN: "must be an absolute http:// or https:// URL, with no user or "
    "password, spaces or control characters",
}


def _message(error: ErrorDetails, fields: Sequence[str], model: type[BaseModel]) -> str:
    """What is wrong, in a few words; pydantic's own message for anything unusual."""
    kind, ctx = error["type"], error.get("ctx", {})
    if kind in _TYPE_WORDS:
        return _TYPE_WORDS[kind]
    if kind in _BOUND_WORDS and _BOUND_WORDS[kind][0] in ctx:
        key, words, unit = _BOUND_WORDS[kind]
        bound = _number(ctx[key])
        if kind == "string_too_short" and bound == 1:
            return "must not be empty"
        if unit:
            return words.format(f"{bound} {unit}" if bound == 1 else f"{bound} {unit}s")
        return words.format(bound)
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
        where = error["loc"]
        if len(where) == 1:
            hint = _suggestion(str(where[0]), fields)
            if hint is not None:
                return f"is not a field of this request; did you mean {hint}?"
            return "is not a field of this request; it takes " + ", ".join(fields)
        inner = _fields_at(model, where[:-1])
        if inner is None:
            return error["msg"]
        hint = _suggestion(str(where[-1]), inner)
        if hint is not None:
            return f"is not a field here; did you mean {hint}?"
        return "is not a field here; it takes " + ", ".join(inner)
    return error["msg"]


def _number(value: Any) -> Any:
    """``100`` rather than ``100.0`` in a message."""
    return int(value) if isinstance(value, float) and value.is_integer() else value
