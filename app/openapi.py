"""Operations: each route's contract, from which ``/openapi.json`` is written.

An :class:`Operation` names its route's method, path, body, query and
answers by the same pydantic models the route parses its input with and
encodes its answers with (:mod:`app.models`), so the document describes what
is enforced. Whether each route keeps to its document is checked from
outside: the suite runs schemathesis against every operation.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from app.models import Problem

PROBLEM = "application/problem+json"

# Who may call an operation when API keys are configured (with none, every route is open):
# public: anyone; key: an API key; read: an API key or a read token in scope.
Auth = Literal["public", "key", "read"]
_SECURITY: dict[Auth, list[dict[str, list[str]]]] = {
    "public": [],
    "key": [{"bearer": []}],
    "read": [{"bearer": []}, {"token": []}],
}
SECURITY_SCHEMES = {
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key (JOBS_API_KEY), or a read token from `POST /api/tokens`.",
    },
    "token": {
        "type": "apiKey",
        "in": "query",
        "name": "token",
        "description": "A read token, for clients that cannot set headers (EventSource). "
        "API keys are refused here.",
    },
}


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    summary: str
    responses: Mapping[int, type[BaseModel] | str]
    body: type[BaseModel] | None = None
    body_required: bool = False
    query: type[BaseModel] | None = None
    description: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    media_type: str = "application/json"
    auth: Auth = "key"


def openapi_document(
    operations: Iterable[Operation], *, title: str, version: str
) -> dict[str, Any]:
    operations = list(operations)
    models: set[type[BaseModel]] = {Problem}
    for op in operations:
        models.update(m for m in op.responses.values() if isinstance(m, type))
        if op.body is not None:
            models.add(op.body)
    keyed = [(m, "validation" if _is_request(m, operations) else "serialization") for m in models]
    refs, defs = models_json_schema(
        sorted(keyed, key=lambda pair: pair[0].__name__),  # type: ignore[arg-type]
        ref_template="#/components/schemas/{model}",
    )
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        item: dict[str, Any] = {
            "summary": op.summary,
            "operationId": _operation_id(op),
            "responses": {
                str(status): _response(status, target, refs, op)
                for status, target in _responses(op).items()
            },
        }
        if op.description:
            item["description"] = op.description
        item["security"] = _SECURITY[op.auth]
        parameters = (
            _path_parameters(op.path)
            + _query_parameters(op.query)
            + [
                {
                    "name": name,
                    "in": "header",
                    "required": False,
                    "description": text,
                    "schema": {"type": "string"},
                }
                for name, text in op.headers.items()
            ]
        )
        if parameters:
            item["parameters"] = parameters
        if op.body is not None:
            item["requestBody"] = {
                "required": op.body_required,
                "content": {"application/json": {"schema": refs[(op.body, "validation")]}},
            }
        paths.setdefault(op.path, {})[op.method.lower()] = item
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {
            "schemas": defs.get("$defs", {}),
            "securitySchemes": SECURITY_SCHEMES,
        },
    }


def _responses(op: Operation) -> dict[int, type[BaseModel] | str]:
    """The operation's responses, plus 401 and 403 wherever credentials are checked."""
    responses = dict(op.responses)
    if op.auth != "public":
        responses.setdefault(401, Problem)
        responses.setdefault(403, Problem)
    return dict(sorted(responses.items()))


def _is_request(model: type[BaseModel], operations: list[Operation]) -> bool:
    return any(op.body is model for op in operations)


def _operation_id(op: Operation) -> str:
    words = [part.strip("{}") for part in op.path.split("/") if part and part != "api"]
    return op.method.lower() + "_" + ("_".join(words) or "index")


def _response(
    status: int, target: type[BaseModel] | str, refs: Any, op: Operation
) -> dict[str, Any]:
    if isinstance(target, str):
        if status in (204, 304, 101):
            return {"description": target}
        return {"description": target, "content": {op.media_type: {"schema": {"type": "string"}}}}
    mode = "validation" if (target, "validation") in refs else "serialization"
    media = PROBLEM if target is Problem else "application/json"
    return {
        "description": (target.__doc__ or target.__name__).strip().splitlines()[0],
        "content": {media: {"schema": refs[(target, mode)]}},
    }


def _path_parameters(path: str) -> list[dict[str, Any]]:
    return [
        {"name": part[1:-1], "in": "path", "required": True, "schema": {"type": "string"}}
        for part in path.split("/")
        if part.startswith("{")
    ]


def _query_parameters(model: type[BaseModel] | None) -> list[dict[str, Any]]:
    if model is None:
        return []
    schema = model.model_json_schema()
    required = set(schema.get("required", []))
    return [
        {
            "name": name,
            "in": "query",
            "required": name in required,
            "schema": {k: v for k, v in prop.items() if k != "title"},
        }
        for name, prop in schema["properties"].items()
    ]
