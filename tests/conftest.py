"""Fixtures shared by every test: settings, an app, and a TestClient on it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any
from urllib.parse import urljoin

import pytest
from starlette.testclient import TestClient, WebSocketTestSession
from starlette.types import ASGIApp

from app.main import create_app
from app.settings import Settings

# Slow machines (CI) can stretch every wait in the suite with one variable.
TIME_SCALE = float(os.environ.get("JOBCAST_TEST_TIME_SCALE", "1"))
LOCAL_URL = "http://127.0.0.1:8000"


def seconds(value: float) -> float:
    """A duration in the suite's time unit."""
    return value * TIME_SCALE


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Slow tests run first. Test processes share out what is left to do (xdist's
    worksteal), but none can share one test: a slow one started last keeps the whole run
    waiting for it alone."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture
def settings() -> Settings:
    return Settings()


class LocalClient(TestClient):
    """A TestClient that reaches its app as a client on this machine does: from a
    loopback address, naming a loopback host (an open server serves nobody else)."""

    def __init__(self, app: ASGIApp) -> None:
        super().__init__(app, base_url=LOCAL_URL, client=("127.0.0.1", 50000))

    def websocket_connect(self, url: str, *args: Any, **kwargs: Any) -> WebSocketTestSession:
        # TestClient names the host "testserver" for sockets, whatever its base URL.
        return super().websocket_connect(
            urljoin(LOCAL_URL.replace("http", "ws"), url), *args, **kwargs
        )


def local_client(app: ASGIApp) -> TestClient:
    return LocalClient(app)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with local_client(create_app(settings)) as test_client:
        yield test_client
