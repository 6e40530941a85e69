"""Serving owns the process-wide effects: building or importing the app changes nothing else."""

from __future__ import annotations

import gc
import logging
import logging.config
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
from click.testing import CliRunner

from app import collector, serve
from app.logs import ClientFaults, RedactTokens, WebSocketAccessLines, configuration
from app.main import create_app
from app.settings import Settings, definitions
from tests.conftest import local_client

UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")


@pytest.fixture
def collector_restored() -> Iterator[None]:
    """The collector's thresholds and frozen objects as they were before the test."""
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("collector_restored")
def test_building_and_running_an_app_tunes_nothing() -> None:
    """create_app and its lifespan leave the collector and uvicorn's loggers alone."""
    gc.unfreeze()
    gc.set_threshold(700, 10, 10)
    filters = {name: list(logging.getLogger(name).filters) for name in UVICORN_LOGGERS}
    with local_client(create_app(Settings())) as client:
        assert client.get("/healthz").status_code == 200
    assert gc.get_threshold() == (700, 10, 10)
    assert gc.get_freeze_count() == 0
    assert {name: list(logging.getLogger(name).filters) for name in UVICORN_LOGGERS} == filters


@pytest.mark.usefixtures("collector_restored")
def test_a_serving_app_settles_the_collector_once_started(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The app each serving process runs freezes its start-up and spaces collections."""
    for name in [name for name in os.environ if name.startswith("JOBS_")]:
        monkeypatch.delenv(name)
    gc.unfreeze()
    gc.set_threshold(700, 10, 10)
    with local_client(serve.serving_app()) as client:
        assert client.get("/healthz").status_code == 200
        young, _, full = gc.get_threshold()
        assert (young, full) == (collector.YOUNG_EVERY, collector.FULL_EVERY)
        assert gc.get_freeze_count() > 10_000  # modules, classes, schemas: not walked again
        assert gc.isenabled()  # cycles are still collected


@pytest.mark.parametrize("access_log", [True, False])
def test_the_logging_configuration_carries_the_filters(access_log: bool) -> None:
    """Serving logs through filters that blank tokens and re-level client faults, and with
    JOBS_ACCESS_LOG=0 drops uvicorn's per-socket lines; Jobcast's lines have a handler."""
    config = configuration(access_log=access_log)
    logging.config.dictConfig(config)  # the configuration is valid as dictConfig reads it
    try:
        error_filters = {type(f) for f in logging.getLogger("uvicorn.error").filters}
        access_filters = {type(f) for f in logging.getLogger("uvicorn.access").filters}
        assert {RedactTokens, ClientFaults} <= error_filters
        assert (WebSocketAccessLines in error_filters) is not access_log
        assert access_filters == {RedactTokens}
        assert logging.getLogger("jobcast").handlers
    finally:
        for name in (*UVICORN_LOGGERS, "jobcast"):
            logger = logging.getLogger(name)
            logger.filters.clear()
            logger.handlers.clear()
            logger.propagate = True


def test_importing_app_loads_nothing_heavy() -> None:
    """`import app` costs nothing: the web framework, the server and the models load on use."""
    heavy = ("starlette", "uvicorn", "sse_starlette", "pydantic", "redis", "prometheus_client")
    script = f"import sys, app; print([m for m in {heavy!r} if m in sys.modules])"
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_building_an_app_patches_nothing_of_uvicorns() -> None:
    """Building and starting an app leaves uvicorn's exit handler as uvicorn wrote it
    (sse-starlette patches it when imported; Jobcast imports it only to frame an event)."""
    script = (
        "import uvicorn.server; original = uvicorn.server.Server.handle_exit; "
        "import app.main; from tests.conftest import local_client; "
        "client = local_client(app.main.create_app()); client.__enter__(); "
        "client.get('/healthz'); client.__exit__(None, None, None); "
        "print(uvicorn.server.Server.handle_exit is original)"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "True"


def test_every_setting_has_a_flag_that_sets_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """jobcast-server has one flag per setting, made from its definition, and each flag
    sets its JOBS_ variable before the server reads the environment."""
    seen: dict[str, str] = {}
    monkeypatch.setattr(serve, "main", lambda: seen.update(os.environ))
    for definition in definitions():
        monkeypatch.delenv(definition.variable, raising=False)
    help_text = CliRunner().invoke(serve.cli, ["--help"]).output
    for definition in definitions():
        assert definition.flag in help_text, definition.flag
    result = CliRunner().invoke(serve.cli, ["--port", "9123", "--no-access-log", "--demo"])
    assert result.exit_code == 0, result.output
    assert (seen["JOBS_PORT"], seen["JOBS_ACCESS_LOG"], seen["JOBS_DEMO"]) == ("9123", "0", "1")
