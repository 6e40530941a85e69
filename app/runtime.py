"""The running app's parts, as one typed object that every request finds.

The lifespan builds a :class:`Runtime` once the store is open and yields it
as the one entry of the ASGI lifespan state, so ``runtime_of(request)``
gives routes, streams and the connection edge the same parts with their
types. One entry also keeps cheap what uvicorn does with that state: it
copies it into every request.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from starlette.requests import HTTPConnection

from app.auth import Guard
from app.metrics import Metrics
from app.service import JobService
from app.settings import Settings
from app.store import JobStore
from app.streams.hub import Hub
from app.streams.limits import StreamSlots

KEY = "jobcast"


@dataclass(frozen=True, slots=True, eq=False)
class Runtime:
    settings: Settings
    service: JobService
    hub: Hub
    guard: Guard
    streams: StreamSlots

    @property
    def store(self) -> JobStore:
        return self.service.store

    @property
    def metrics(self) -> Metrics:
        return self.service.metrics

    def state(self) -> dict[str, Runtime]:
        """The lifespan state that carries it."""
        return {KEY: self}


def runtime_of(connection: HTTPConnection) -> Runtime:
    """The runtime serving a request or WebSocket."""
    runtime: Runtime = connection.scope["state"][KEY]
    return runtime


def found_in(state: Mapping[str, Any]) -> Runtime | None:
    """The runtime in a lifespan state, if the app that filled it is Jobcast's."""
    runtime = state.get(KEY)
    return runtime if isinstance(runtime, Runtime) else None
