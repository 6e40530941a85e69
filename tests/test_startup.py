"""Start-up through `python -m app` (what `make run` runs): bad settings stop it, clearly."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import seconds
from tests.e2e.conftest import free_port


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


def test_a_misspelt_setting_is_named_with_the_one_meant() -> None:
    """An unknown JOBS_* name is said, with the setting it most likely meant: here beside
    the refusal it explains (the key looks unset because its name is misspelt)."""
    result = start(JOBS_HOST="0.0.0.0", JOBS_API_KEYS="k" * 40)
    assert result.returncode != 0
    assert "JOBS_API_KEY" in result.stderr.splitlines()[0]
    assert (
        "jobcast: JOBS_API_KEYS is not a setting of Jobcast and is ignored: "
        "did you mean JOBS_API_KEY?"
    ) in result.stderr.splitlines()


def test_a_server_that_starts_warns_of_an_unknown_setting() -> None:
    """Serving goes on, and the log says which name is no setting, before serving."""
    env = {**os.environ, "JOBS_PORT": str(free_port()), "JOBS_WEBHOOK_URL": "http://x"}
    with subprocess.Popen(
        [sys.executable, "-m", "app"], env=env, stderr=subprocess.PIPE, text=True
    ) as server:
        try:
            assert server.stderr is not None
            said = []
            for line in server.stderr:
                said.append(line)
                if "Uvicorn running" in line:
                    break
        finally:
            server.terminate()
    assert any(
        "JOBS_WEBHOOK_URL is not a setting of Jobcast and is ignored: "
        "did you mean JOBS_WEBHOOK_URLS?" in line
        for line in said
    ), said
