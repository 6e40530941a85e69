"""Fixtures shared by every test: settings, an app, and a TestClient on it."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from app.main import create_app
from app.settings import Settings

# Slow machines (CI) can stretch every wait in the suite with one variable.
TIME_SCALE = float(os.environ.get("JOBCAST_TEST_TIME_SCALE", "1"))


def seconds(value: float) -> float:
    """A duration in the suite's time unit."""
    return value * TIME_SCALE


@pytest.fixture
def settings() -> Settings:
    return Settings()


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client
