"""The client installs and imports on its own: no server, none of the server's dependencies.

The slow test builds a fresh virtualenv, installs ``clients/python`` into it
from the package index (as a worker's machine would), and drives a real
server with that venv's Python and its ``jobcast`` script.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.conftest import seconds
from tests.e2e.conftest import ROOT

if TYPE_CHECKING:
    from tests.e2e.conftest import RunningServer

Start = Callable[..., "RunningServer"]
CLIENT = ROOT / "clients" / "python"
# The server's own modules and dependencies: none may come with the client.
SERVER_MODULES = [
    "app",
    "starlette",
    "uvicorn",
    "sse_starlette",
    "prometheus_client",
    "jwt",
    "redis",
    "pydantic",
]


def clean_environment() -> dict[str, str]:
    """This environment without the dev venv's traces or the suite's settings."""
    dropped = ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")
    return {
        name: value
        for name, value in os.environ.items()
        if name not in dropped and not name.startswith(("JOBS_", "JOBCAST_"))
    }


def test_importing_the_client_loads_nothing_of_the_servers(tmp_path: Path) -> None:
    """`import jobcast_client` loads none of the server's modules, nor click (the CLI's)."""
    script = "import json, sys, jobcast_client; print(json.dumps(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env=clean_environment(),
        capture_output=True,
        text=True,
        timeout=seconds(30),
        check=True,
    )
    loaded = {name.partition(".")[0] for name in json.loads(result.stdout)}
    assert "httpx2" in loaded
    assert loaded.isdisjoint([*SERVER_MODULES, "click", "rich", "httpx", "httpx_sse"]), sorted(
        loaded & {*SERVER_MODULES, "click", "rich", "httpx", "httpx_sse"}
    )


# What the fresh venv's Python runs against the server: create, watch in a thread while
# it updates and completes, and print what the watch saw. Its second argument is one
# second in the suite's time unit (it cannot import the suite's seconds()).
DRIVE = textwrap.dedent(
    """
    import json, queue, sys, threading
    import jobcast_client
    from jobcast_client import JobsClient

    url, unit = sys.argv[1], float(sys.argv[2])
    seen = queue.Queue()
    with JobsClient(url, timeout=10 * unit) as jobs:
        job = jobs.create_job(job_type="file_processing", message="Upload queued")

        def follow():
            with JobsClient(url, timeout=10 * unit) as watcher:
                for state in watcher.watch(job.job_id):
                    seen.put(state)

        thread = threading.Thread(target=follow)
        thread.start()
        states = [seen.get(timeout=20 * unit)]
        jobs.update_job_with_notification(
            job.job_id, status="processing", progress=50, message="Extracting..."
        )
        states.append(seen.get(timeout=20 * unit))
        jobs.complete_job(job.job_id, "doc_123abc")
        states.append(seen.get(timeout=20 * unit))
        thread.join(20 * unit)
        print(json.dumps({
            "file": jobcast_client.__file__,
            "jobId": job.job_id,
            "states": [[s.version, s.status, s.progress] for s in states],
            "watchEnded": not thread.is_alive(),
        }))
    """
)


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.timeout(600)
def test_a_fresh_virtualenv_installs_the_client_alone_and_it_works(
    server: Start, tmp_path: Path
) -> None:
    """pip install clients/python into a new venv brings no server dependency, and its
    Python and its `jobcast` script drive a real server (create, watch, update, complete)."""
    venv = tmp_path / "venv"
    environment = clean_environment()
    subprocess.run(
        [sys.executable, "-m", "venv", str(venv)],
        env=environment,
        check=True,
        timeout=seconds(120),
    )
    python, jobcast = venv / "bin" / "python", venv / "bin" / "jobcast"
    installed = subprocess.run(
        [str(python), "-m", "pip", "install", "--disable-pip-version-check", str(CLIENT)],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=seconds(400),
        check=False,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    # The build backend's own complaints (a license table, a classifier) would show here;
    # other warnings (this machine's pip configuration) are not the package's doing.
    assert "deprecat" not in (installed.stdout + installed.stderr).lower(), installed.stderr
    absent = subprocess.run(
        [
            str(python),
            "-c",
            "import importlib.util, json, sys; "
            "print(json.dumps([n for n in sys.argv[1:] if importlib.util.find_spec(n)]))",
            *SERVER_MODULES,
        ],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=seconds(30),
        check=True,
    )
    assert json.loads(absent.stdout) == []

    srv = server()
    script = tmp_path / "drive.py"
    script.write_text(DRIVE)
    driven = subprocess.run(
        [str(python), str(script), srv.base_url, str(seconds(1))],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=seconds(60),
        check=False,
    )
    assert driven.returncode == 0, driven.stderr
    report = json.loads(driven.stdout)
    assert Path(report["file"]).is_relative_to(venv), "imported from the fresh venv"
    assert report["states"] == [[1, "queued", 0], [2, "processing", 50], [3, "completed", 100]]
    assert report["watchEnded"]

    shown = subprocess.run(
        [str(jobcast), "--url", srv.base_url, "get", report["jobId"]],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=seconds(30),
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    rows = {line.split()[0]: line.split()[1:] for line in shown.stdout.splitlines()}
    assert (rows["jobId"], rows["status"], rows["documentId"]) == (
        [report["jobId"]],
        ["completed"],
        ["doc_123abc"],
    )
