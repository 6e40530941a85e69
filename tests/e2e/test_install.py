"""The server installs with what serving needs, and serves from wherever it is installed.

A fresh virtualenv gets ``pip install .`` (a wheel, as an operator's machine
would, from the package index), and none of the development tools or the
Python client come with it; its ``jobcast-server`` serves the page, the API
and a stream from a folder that is not this checkout.
"""

from __future__ import annotations

import subprocess
import time
import venv
from pathlib import Path

import httpx2
import pytest

from tests.conftest import seconds

from .conftest import ROOT, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

DEVELOPMENT_ONLY = ["pytest", "playwright", "mypy", "ruff", "hypothesis", "schemathesis"]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with the server installed from this checkout (no extras)."""
    home = tmp_path_factory.mktemp("server-venv")
    venv.create(home, with_pip=True)
    python = home / "bin" / "python"
    subprocess.run(
        [python, "-m", "pip", "install", "--quiet", str(ROOT)],
        check=True,
        timeout=seconds(300),
    )
    return home


def packages(home: Path) -> set[str]:
    listing = subprocess.run(
        [home / "bin" / "python", "-m", "pip", "list", "--format=freeze"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {line.partition("==")[0].lower() for line in listing.splitlines()}


def test_the_server_brings_only_what_serving_needs(installed: Path) -> None:
    """No test tool, no type checker, no Python client, no Redis client without its extra."""
    found = packages(installed)
    assert "jobcast-server" in found
    assert "uvicorn" in found
    assert found.isdisjoint([*DEVELOPMENT_ONLY, "jobcast-client", "redis"]), sorted(
        found & {*DEVELOPMENT_ONLY, "jobcast-client", "redis"}
    )


def test_the_installed_server_serves_the_page_the_api_and_streams(
    installed: Path, tmp_path: Path
) -> None:
    """jobcast-server, run outside the checkout, serves /, its static files, a job, a stream."""
    port = free_port()
    log = (tmp_path / "server.log").open("wb")
    server = subprocess.Popen(
        [installed / "bin" / "jobcast-server", "--port", str(port), "--no-access-log"],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin"},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx2.Client(base_url=base, timeout=seconds(5)) as client:
            _wait_for(client, server, tmp_path / "server.log")
            page = client.get("/")
            assert page.status_code == 200
            assert "Jobcast" in page.text
            assert client.get("/static/jobcast.js").status_code == 200
            job_id = client.post("/api/jobs", json={"message": "installed"}).json()["jobId"]
            client.post(f"/api/jobs/{job_id}/complete", json={})
            with client.stream("GET", f"/api/jobs/{job_id}/events") as stream:
                events = [line for line in stream.iter_lines() if line.startswith("event:")]
            assert events == ["event: job", "event: synced"]
    finally:
        server.terminate()
        server.wait(timeout=seconds(10))
        log.close()
    assert "Traceback" not in (tmp_path / "server.log").read_text()


def test_redis_without_its_extra_says_what_to_install(installed: Path, tmp_path: Path) -> None:
    """JOBS_BACKEND=redis on a server installed without [redis] stops with the pip command."""
    result = subprocess.run(
        [installed / "bin" / "jobcast-server", "--backend", "redis"],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=seconds(30),
        check=False,
    )
    assert result.returncode != 0
    assert "pip install 'redis>=5.0.1'" in result.stderr


def _wait_for(client: httpx2.Client, server: subprocess.Popen[bytes], log: Path) -> None:
    """Until /healthz answers (another process: there is no event to await)."""
    for _ in range(int(seconds(30) / 0.05)):
        if server.poll() is not None:
            raise AssertionError(f"the server exited:\n{log.read_text()}")
        try:
            if client.get("/healthz").status_code == 200:
                return
        except httpx2.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"the server did not answer:\n{log.read_text()}")
