"""The ``jobcast`` command line, run as a real process against the real server."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
import httpx
import pytest

from app.cli import cli, setting_variable
from app.settings import MIN_SECRET_LENGTH, Settings
from tests.conftest import seconds

from .conftest import ROOT, free_port
from .test_client import FakeServer, in_order

if TYPE_CHECKING:
    from .conftest import RunningServer

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

Start = Callable[..., "RunningServer"]


def environment(**extra: str) -> dict[str, str]:
    """This process's environment without any JOBS_* or JOBCAST_* setting, plus ``extra``."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("JOBS_", "JOBCAST_"))
    }
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "app.cli", *args]


def jobcast(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``jobcast ARGS`` to the end; its exit status, stdout and stderr."""
    return subprocess.run(
        command(*args),
        cwd=ROOT,
        env=environment(**env),
        capture_output=True,
        text=True,
        timeout=seconds(30),
        check=False,
    )


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The single line a failed command printed on stderr (stdout stays empty)."""
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture
def watcher() -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Start ``jobcast`` processes that run on (watch, serve); each stopped at teardown."""
    started: list[subprocess.Popen[str]] = []

    def start(*args: str, **env: str) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            command(*args),
            cwd=ROOT,
            env=environment(**env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        if process.stdout is not None and not process.stdout.closed:
            process.communicate(timeout=seconds(10))


# --- job commands -------------------------------------------------------------------


def test_create_prints_the_id_and_json_prints_the_job(server: Start) -> None:
    """`create` prints the new job's id alone; with --json, the whole job as one JSON line."""
    srv = server()
    plain = jobcast("--url", srv.base_url, "create")
    assert plain.returncode == 0, plain.stderr
    job_id = plain.stdout.strip()
    assert job_id.startswith("job_")
    assert plain.stdout == job_id + "\n"
    result = jobcast(
        "--url",
        srv.base_url,
        "create",
        "--type",
        "file_processing",
        "--message",
        "Upload queued",
        "--metadata",
        '{"fileName": "contract.pdf"}',
        "--json",
    )
    assert result.returncode == 0, result.stderr
    job = json.loads(result.stdout)
    assert (job["jobType"], job["status"], job["message"], job["metadata"]) == (
        "file_processing",
        "queued",
        "Upload queued",
        {"fileName": "contract.pdf"},
    )
    got = jobcast("--url", srv.base_url, "get", job["jobId"], "--json")
    assert json.loads(got.stdout) == job


def test_update_complete_and_fail_print_the_changed_job(server: Start) -> None:
    """The worker commands change the job and print it (JSON with --json, a summary without)."""
    srv = server()
    url = ("--url", srv.base_url)
    job_id = jobcast(*url, "create").stdout.strip()
    updated = jobcast(
        *url, "update", job_id, "-s", "processing", "-p", "45", "-m", "Extracting...", "--json"
    )
    assert updated.returncode == 0, updated.stderr
    assert json.loads(updated.stdout)["progress"] == 45
    summary = jobcast(*url, "update", job_id, "--metadata", '{"pages": 3}')
    assert summary.returncode == 0, summary.stderr
    assert summary.stdout.split() == [job_id, "processing", "45%", "Extracting..."]
    done = jobcast(*url, "complete", job_id, "--document-id", "doc_1", "--json")
    assert done.returncode == 0, done.stderr
    completed = json.loads(done.stdout)
    assert (completed["status"], completed["documentId"], completed["metadata"]) == (
        "completed",
        "doc_1",
        {"pages": 3},
    )
    other = jobcast(*url, "create").stdout.strip()
    failed = jobcast(*url, "fail", other, "Invalid file format", "--json")
    assert failed.returncode == 0, failed.stderr
    assert (json.loads(failed.stdout)["status"], json.loads(failed.stdout)["error"]) == (
        "error",
        "Invalid file format",
    )


def test_get_and_list_show_jobs_for_people_and_scripts(server: Start) -> None:
    """`get` and `list` print a readable view, and JSON (one job per line) with --json."""
    srv = server()
    url = ("--url", srv.base_url)
    first = jobcast(*url, "create", "-t", "llm_agent", "-m", "thinking").stdout.strip()
    second = jobcast(*url, "create").stdout.strip()
    shown = jobcast(*url, "get", first)
    assert shown.returncode == 0, shown.stderr
    assert first in shown.stdout
    assert "llm_agent" in shown.stdout
    assert "thinking" in shown.stdout
    listed = jobcast(*url, "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [json.loads(line)["jobId"] for line in listed.stdout.splitlines()] == [second, first]
    filtered = jobcast(*url, "list", "--type", "llm_agent", "--json")
    assert [json.loads(line)["jobId"] for line in filtered.stdout.splitlines()] == [first]
    limited = jobcast(*url, "list", "-n", "1", "--json")
    assert len(limited.stdout.splitlines()) == 1
    table = jobcast(*url, "list")
    assert table.returncode == 0, table.stderr
    assert first in table.stdout
    assert second in table.stdout


def test_the_url_comes_from_jobcast_url(server: Start) -> None:
    """Without --url the commands use JOBCAST_URL."""
    srv = server()
    result = jobcast("create", JOBCAST_URL=srv.base_url)
    assert result.returncode == 0, result.stderr
    assert jobcast("get", result.stdout.strip(), JOBCAST_URL=srv.base_url).returncode == 0


def test_the_api_key_is_sent_as_a_bearer_token(server: Start) -> None:
    """--api-key (or JOBS_API_KEY) reaches the server as Authorization: Bearer."""
    srv = server()
    recorder = FakeServer(in_order(), upstream=srv.base_url)
    try:
        assert jobcast("--url", recorder.url, "--api-key", "k1", "create").returncode == 0
        assert jobcast("--url", recorder.url, "create", JOBS_API_KEY="k2").returncode == 0
    finally:
        recorder.close()
    keys = [r.headers.get("authorization") for r in recorder.requests if r.method == "POST"]
    assert keys == ["Bearer k1", "Bearer k2"]


# --- errors -------------------------------------------------------------------------


def test_a_failed_call_prints_one_line_and_exits_1(server: Start) -> None:
    """An error answer is one `jobcast: error:` line on stderr and exit status 1."""
    srv = server()
    missing = jobcast("--url", srv.base_url, "get", "job_nope")
    assert missing.returncode == 1
    assert one_error_line(missing) == "jobcast: error: no job with id 'job_nope'"
    job_id = jobcast("--url", srv.base_url, "create").stdout.strip()
    refused = jobcast("--url", srv.base_url, "update", job_id, "--progress", "150")
    assert refused.returncode == 1
    assert one_error_line(refused) == "jobcast: error: progress: must be at most 100"
    jobcast("--url", srv.base_url, "complete", job_id)
    conflict = jobcast("--url", srv.base_url, "fail", job_id, "late")
    assert conflict.returncode == 1
    assert "can no longer change" in one_error_line(conflict)


def test_several_refused_fields_print_the_detail_then_one_line_each(server: Start) -> None:
    """A change refused for several fields prints the server's detail, then each field's reason."""
    srv = server()
    job_id = jobcast("--url", srv.base_url, "create").stdout.strip()
    deep = '{"a": ' * 40 + "1" + "}" * 40
    refused = jobcast(
        "--url", srv.base_url, "update", job_id, "--progress", "150", "--metadata", deep
    )
    assert refused.returncode == 1
    assert refused.stdout == ""
    assert refused.stderr.splitlines() == [
        "jobcast: error: progress: must be at most 100 (and 1 more)",
        "  progress: must be at most 100",
        "  metadata: may nest at most 32 levels deep",
    ]
    unchanged = jobcast("--url", srv.base_url, "get", job_id, "--json")
    assert json.loads(unchanged.stdout)["version"] == 1


def test_no_server_is_one_line_and_exit_1() -> None:
    """An unreachable server fails after the retries with one line and exit status 1."""
    url = f"http://127.0.0.1:{free_port()}"
    result = jobcast("--url", url, "--retries", "0", "get", "job_1")
    assert result.returncode == 1
    assert "Connection refused" in one_error_line(result)


@pytest.mark.parametrize(
    "args",
    [
        ["get"],
        ["update", "job_1", "--status", "finished"],
        ["update", "job_1", "--progress", "half"],
        ["create", "--metadata", "[1, 2]"],
        ["create", "--type", "video"],
        ["--url", "ftp://example", "get", "job_1"],
        ["frobnicate"],
    ],
)
def test_a_usage_error_prints_one_line_and_exits_2(args: list[str]) -> None:
    """Bad arguments exit with status 2 and one line naming the problem and the help."""
    result = jobcast(*args)
    assert result.returncode == 2
    assert "--help" in one_error_line(result)


# --- keygen ---------------------------------------------------------------------------


def test_keygen_prints_a_secret_the_server_accepts_as_its_api_key(server: Start) -> None:
    """`keygen` needs no server, prints one URL-safe secret long enough for JOBS_API_KEY."""
    result = jobcast("--url", f"http://127.0.0.1:{free_port()}", "keygen")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    [key] = result.stdout.splitlines()
    assert len(key) >= MIN_SECRET_LENGTH
    assert re.fullmatch(r"[A-Za-z0-9_-]+", key)
    [secret] = jobcast("keygen").stdout.splitlines()
    srv = server(JOBS_API_KEY=key, JOBS_TOKEN_SECRET=secret)
    created = jobcast("--url", srv.base_url, "create", JOBS_API_KEY=key)
    assert created.returncode == 0, created.stderr
    assert created.stdout.startswith("job_")


def test_keygen_count_prints_that_many_different_secrets() -> None:
    """`keygen --count 3` prints three different secrets, one per line; 0 is a usage error."""
    result = jobcast("keygen", "--count", "3")
    assert result.returncode == 0, result.stderr
    keys = result.stdout.splitlines()
    assert len(keys) == len(set(keys)) == 3
    assert all(len(key) >= MIN_SECRET_LENGTH for key in keys)
    refused = jobcast("keygen", "--count", "0")
    assert refused.returncode == 2
    assert "--help" in one_error_line(refused)


# --- watch ----------------------------------------------------------------------------


async def next_line(process: subprocess.Popen[str], within: float = 10) -> str:
    """The next line the process prints on stdout; fails after ``within`` seconds."""
    assert process.stdout is not None
    with anyio.fail_after(seconds(within)):
        line = await anyio.to_thread.run_sync(process.stdout.readline, abandon_on_cancel=True)
    assert line, "stdout ended"
    return line


async def test_watch_json_prints_each_state_as_it_happens_and_exits_0(
    server: Start, watcher: Callable[..., subprocess.Popen[str]]
) -> None:
    """`watch --json` prints each state as a JSON line while the job runs, and exits 0."""
    srv = server()
    async with srv.client() as api:
        job_id = await api.create_job(message="Upload queued")
        process = watcher("--url", srv.base_url, "watch", job_id, "--json")
        states = [json.loads(await next_line(process))]
        await api.update(job_id, status="processing", progress=50, message="Extracting...")
        states.append(json.loads(await next_line(process)))
        await api.complete(job_id, documentId="doc_1")
        states.append(json.loads(await next_line(process)))
        assert process.wait(timeout=seconds(10)) == 0
    assert [(s["version"], s["status"], s["progress"]) for s in states] == [
        (1, "queued", 0),
        (2, "processing", 50),
        (3, "completed", 100),
    ]
    assert states[-1]["documentId"] == "doc_1"
    assert process.stdout is not None
    assert process.stdout.read() == ""


async def test_watch_exits_1_when_the_job_fails(
    server: Start, watcher: Callable[..., subprocess.Popen[str]]
) -> None:
    """`watch` (progress bar mode) exits 1 and shows the error when the job fails."""
    srv = server()
    async with srv.client() as api:
        job_id = await api.create_job()
        process = watcher("--url", srv.base_url, "watch", job_id)
        await api.wait_for_metric("jobcast_connections", lambda n: n == 1, transport="sse")
        await api.update(job_id, status="processing", progress=30)
        await api.fail(job_id, "Invalid file format")
        stdout, stderr = process.communicate(timeout=seconds(20))
    assert process.returncode == 1, stderr
    assert "error" in stdout
    assert "Invalid file format" in stdout


async def test_watch_exits_0_with_a_summary_when_the_job_completes(
    server: Start, watcher: Callable[..., subprocess.Popen[str]]
) -> None:
    """`watch` without --json ends with a one-line summary of the completed job, exit 0."""
    srv = server()
    async with srv.client() as api:
        job_id = await api.create_job()
        process = watcher("--url", srv.base_url, "watch", job_id)
        await api.wait_for_metric("jobcast_connections", lambda n: n == 1, transport="sse")
        await api.complete(job_id, documentId="doc_7", message="All done")
        stdout, stderr = process.communicate(timeout=seconds(20))
    assert process.returncode == 0, stderr
    assert stdout.split() == [job_id, "completed", "100%", "All", "done", "document", "doc_7"]


# --- serve ----------------------------------------------------------------------------


def test_every_setting_has_a_serve_flag() -> None:
    """`serve` has one option per Settings field, setting the variable from_env reads."""
    read: list[str] = []

    class Recording(dict[str, str]):
        def get(self, name: str, default: Any = None) -> Any:
            read.append(name)
            return super().get(name, default)

    Settings.from_env(Recording())
    serve = cli.commands["serve"]
    flags = {param.name for param in serve.params} - {"help"}
    fields = {field.name for field in dataclasses.fields(Settings)}
    assert flags == fields
    assert {setting_variable(name) for name in fields} == set(read)


def test_serve_starts_the_server_with_the_given_flags(
    watcher: Callable[..., subprocess.Popen[str]],
) -> None:
    """`serve --port` serves /healthz there, applies the other flags, and stops on SIGTERM."""
    port = free_port()
    process = watcher("serve", "--port", str(port), "--sse-retry-ms", "1234", "--no-demo")
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + seconds(15)
    with httpx.Client(base_url=base, timeout=seconds(2)) as http:
        while True:
            assert process.poll() is None, process.communicate()
            try:
                if http.get("/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "serve did not answer /healthz in time"
            time.sleep(0.05)
        job_id = http.post("/api/jobs").json()["jobId"]
        with http.stream("GET", f"/api/jobs/{job_id}/events") as stream:
            assert next(stream.iter_lines()) == "retry: 1234"
        assert http.get("/api/demo").json()["enabled"] is False, "--no-demo took effect"
        assert http.post("/api/demo/jobs", json={}).status_code in (404, 405)
    process.terminate()
    _, log = process.communicate(timeout=seconds(10))
    # uvicorn shuts down cleanly, then re-raises the signal (as `python -m app` does).
    assert process.returncode in (0, -signal.SIGTERM), log
    assert "Application shutdown complete" in log
    assert "Traceback" not in log


def test_serve_reports_a_bad_setting_exactly_as_python_m_app() -> None:
    """A bad flag value stops `serve` with the same message and status as `python -m app`."""
    flag = jobcast("serve", "--port", "eighty")
    module = subprocess.run(
        [sys.executable, "-m", "app"],
        cwd=ROOT,
        env=environment(JOBS_PORT="eighty"),
        capture_output=True,
        text=True,
        timeout=seconds(30),
        check=False,
    )
    assert flag.returncode == module.returncode == 1
    assert flag.stderr == module.stderr == "jobcast: JOBS_PORT='eighty' is not a valid int\n"
    refused = jobcast("serve", "--workers", "2")
    assert refused.returncode == 1
    assert "JOBS_WORKERS=2 needs JOBS_BACKEND=redis" in refused.stderr
