"""Start-up through `python -m app` (what `make run` runs): bad settings stop it, clearly."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import seconds


def start(**env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=seconds(30),
        check=False,
    )


def test_many_workers_on_memory_are_refused_with_a_pointer_to_redis() -> None:
    """JOBS_WORKERS=2 with the memory backend exits at once and says to use Redis."""
    result = start(JOBS_WORKERS="2", JOBS_BACKEND="memory")
    assert result.returncode != 0
    assert "JOBS_BACKEND=redis" in result.stderr
    assert "Uvicorn running" not in result.stderr


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("JOBS_PORT", "eighty"),
        ("JOBS_PORT", "70000"),
        ("JOBS_TERMINAL_TTL", "-1"),
        ("JOBS_HEARTBEAT", "0"),
        ("JOBS_TERMINAL_TTL", "inf"),
        ("JOBS_BACKEND", "postgres"),
        ("JOBS_DEMO", "maybe"),
    ],
)
def test_an_invalid_setting_stops_start_up_naming_it(name: str, value: str) -> None:
    """An invalid environment value stops start-up with a message that names the variable."""
    result = start(**{name: value})
    assert result.returncode != 0
    assert f"jobcast: {name}=" in result.stderr
