"""Schemathesis against /openapi.json of an in-process app: no 5xx, every answer as documented.

A bounded, deterministic run: every documented operation but the endless
all-jobs stream, a fixed number of generated requests each, a fixed seed
(derandomized). Each request must not answer 5xx, and its status code,
content type, headers and body must match what the document declares.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from app.main import create_app
from app.settings import Settings

if TYPE_CHECKING:
    from schemathesis.specs.openapi.schemas import OpenApiCase

EXAMPLES_PER_OPERATION = 25

# Schemathesis's client calls itself "testclient" at the host "testserver": an open server
# serves only this machine's names and addresses, so this one also answers to those.
REACHABLE = Settings(allowed_hosts=("testserver",), allow_anonymous=True)
# Short long-polls, so a generated `waitForVersion` on a real job cannot hold the run. The
# all-jobs stream never ends by itself; its errors are covered by the other suites.
schema = schemathesis.openapi.from_asgi(
    "/openapi.json", create_app(dataclasses.replace(REACHABLE, heartbeat=0.05))
).exclude(path="/api/jobs/events")

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_every_operation_answers_as_documented(case: OpenApiCase) -> None:
    """Generated requests to every documented operation get no 5xx and documented answers."""
    case.call_and_validate(checks=CHECKS)


KEY = "schemathesis-key-0123456789abcdef0123"
keyed = schemathesis.openapi.from_asgi(
    "/openapi.json",
    create_app(Settings(heartbeat=0.05, api_key=KEY, allowed_hosts=("testserver",))),
).exclude(path="/api/jobs/events")


@keyed.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION // 2,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_every_operation_answers_as_documented_with_keys(case: OpenApiCase) -> None:
    """With API keys configured, answers with the key (and without any) are as documented."""
    case.call_and_validate(checks=CHECKS, headers={"Authorization": f"Bearer {KEY}"})
    case.call_and_validate(checks=CHECKS, headers={"Authorization": "Bearer not-a-key"})
