"""The ``jobcast`` command line, run as a real process against the real server."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import pty
import re
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import anyio.to_thread
import pytest

from tests.conftest import seconds
from tests.e2e.conftest import free_port

from .fakes import FakeServer, in_order, job_answer, job_data

if TYPE_CHECKING:
    from tests.e2e.conftest import RunningServer

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

Start = Callable[..., "RunningServer"]
KEY = "k" * 40


def environment(**extra: str) -> dict[str, str]:
    """This process's environment without any JOBS_* or JOBCAST_* setting, plus ``extra``."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("JOBS_", "JOBCAST_"))
    }
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "jobcast_client", *args]


def jobcast(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``jobcast ARGS`` to the end; its exit status, stdout and stderr."""
    return subprocess.run(
        command(*args),
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


def test_create_prints_the_id_and_json_prints_the_job(shared_server: Start) -> None:
    """`create` prints the new job's id alone; with --json, the whole job as one JSON line."""
    srv = shared_server()
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
        "--owner",
        "alice",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    job = json.loads(result.stdout)
    assert (job["jobType"], job["status"], job["message"], job["metadata"], job["owner"]) == (
        "file_processing",
        "queued",
        "Upload queued",
        {"fileName": "contract.pdf"},
        "alice",
    )
    got = jobcast("--url", srv.base_url, "get", job["jobId"], "--json")
    assert json.loads(got.stdout) == job


def test_json_before_the_command_works_as_after_it(shared_server: Start) -> None:
    """`jobcast --json get ID` prints the same JSON as `jobcast get ID --json`."""
    srv = shared_server()
    job_id = jobcast("--url", srv.base_url, "create").stdout.strip()
    before = jobcast("--url", srv.base_url, "--json", "get", job_id)
    after = jobcast("--url", srv.base_url, "get", job_id, "--json")
    assert before.returncode == after.returncode == 0, before.stderr + after.stderr
    assert json.loads(before.stdout) == json.loads(after.stdout)
    assert json.loads(before.stdout)["jobId"] == job_id


def test_update_complete_and_fail_print_the_changed_job(shared_server: Start) -> None:
    """The worker commands change the job and print it (JSON with --json, a summary without)."""
    srv = shared_server()
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
    rows = {line.split()[0]: line.split()[1:] for line in shown.stdout.splitlines()}
    assert (rows["jobId"], rows["jobType"], rows["message"]) == (
        [first],
        ["llm_agent"],
        ["thinking"],
    )
    assert "\x1b[" not in shown.stdout, "no colours when stdout is not a terminal"
    listed = jobcast(*url, "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [json.loads(line)["jobId"] for line in listed.stdout.splitlines()] == [second, first]
    filtered = jobcast(*url, "list", "--type", "llm_agent", "--json")
    assert [json.loads(line)["jobId"] for line in filtered.stdout.splitlines()] == [first]
    limited = jobcast(*url, "list", "-n", "1", "--json")
    assert len(limited.stdout.splitlines()) == 1
    table = jobcast(*url, "list")
    assert table.returncode == 0, table.stderr
    assert [line.split()[:3] for line in table.stdout.splitlines()] == [
        ["job", "type", "status"],
        [second, "generic", "queued"],
        [first, "llm_agent", "queued"],
    ]
    empty = jobcast(*url, "list", "--status", "error")
    assert (empty.returncode, empty.stdout, empty.stderr) == (0, "", "no jobs\n")


def test_a_jobs_text_is_shown_on_one_line_with_control_characters_escaped(
    server: Start,
) -> None:
    """A job's message is anyone's text: a newline in it would break the line a job gets,
    an escape sequence would drive the terminal. get, list and update show them escaped;
    --json keeps them as they are."""
    srv = server()
    url = ("--url", srv.base_url)
    text = "line one\nline two \x1b]0;pwned\x07\x1b[2J"
    job_id = jobcast(*url, "create", "-m", text).stdout.strip()
    escaped = "line one\\x0aline two \\x1b]0;pwned\\x07\\x1b[2J"
    shown = jobcast(*url, "get", job_id).stdout.splitlines()
    assert [line.split(maxsplit=1)[1] for line in shown if line.startswith("message")] == [escaped]
    listed = jobcast(*url, "list").stdout.splitlines()
    assert len(listed) == 2
    assert listed[1].endswith(escaped)
    updated = jobcast(*url, "update", job_id, "--progress", "5").stdout
    assert updated.count("\n") == 1
    assert escaped in updated
    as_json = jobcast(*url, "get", job_id, "--json").stdout
    assert json.loads(as_json)["message"] == text


def test_get_json_keeps_the_fields_a_newer_server_adds(fake: Callable[..., FakeServer]) -> None:
    """`get --json` prints every field the server sent, known to this client or not."""
    newer = {"priority": "high", "shard": 2}
    answers = fake(in_order(then=job_answer(3, extra=newer)))
    result = jobcast("--url", answers.url, "get", "job_fake", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == job_data(3, extra=newer)
    people = jobcast("--url", answers.url, "get", "job_fake")
    assert "priority" in people.stdout


def test_cancel_prints_the_flagged_job_and_force_ends_it(server: Start) -> None:
    """`cancel` prints the job with its cancel request (JSON with --json); asking again changes
    nothing; `list` and `watch` show the request; --force ends the job; a finished job fails."""
    srv = server()
    url = ("--url", srv.base_url)
    job_id = jobcast(*url, "create").stdout.strip()
    jobcast(*url, "update", job_id, "-s", "processing", "-p", "40", "-m", "Reading")
    asked = jobcast(*url, "cancel", job_id, "--reason", "not needed")
    assert asked.returncode == 0, asked.stderr
    assert asked.stdout == f"{job_id}  processing  40%  Reading  cancel requested: not needed\n"
    again = jobcast(*url, "cancel", job_id, "--json")
    assert again.returncode == 0, again.stderr
    flagged = json.loads(again.stdout)
    assert (flagged["cancelRequested"], flagged["cancelReason"], flagged["version"]) == (
        True,
        "not needed",
        3,
    )
    listed = jobcast(*url, "list").stdout.splitlines()
    assert listed[1].split()[:2] == [job_id, "generic"]
    assert listed[1].endswith("cancel requested: not needed  Reading")
    forced = jobcast(*url, "cancel", job_id, "--force", "--json")
    assert forced.returncode == 0, forced.stderr
    ended = json.loads(forced.stdout)
    assert (ended["status"], ended["error"], ended["message"]) == ("error", "canceled", "Canceled")
    watched = jobcast(*url, "watch", job_id)
    assert watched.returncode == 1
    assert "error: canceled  cancel requested: not needed" in watched.stdout
    late = jobcast(*url, "cancel", job_id)
    assert late.returncode == 1
    assert (
        one_error_line(late) == f"jobcast: error: job {job_id} is error: there is nothing to cancel"
    )
    missing = jobcast(*url, "cancel", "job_nope", "--force")
    assert missing.returncode == 1
    assert one_error_line(missing) == "jobcast: error: no job with id 'job_nope'"


def test_delete_removes_the_job_and_prints_nothing(shared_server: Start) -> None:
    """`delete` prints nothing and exits 0; the job then reads as gone, and deleting it
    again, or an id that never existed, is one error line and exit 1."""
    srv = shared_server()
    url = ("--url", srv.base_url)
    job_id = jobcast(*url, "create").stdout.strip()
    jobcast(*url, "update", job_id, "-s", "processing")
    deleted = jobcast(*url, "delete", job_id)
    assert (deleted.returncode, deleted.stdout, deleted.stderr) == (0, "", "")
    gone = jobcast(*url, "get", job_id)
    assert gone.returncode == 1
    assert one_error_line(gone).startswith("jobcast: error: ")
    again = jobcast(*url, "delete", job_id)
    assert again.returncode == 1
    assert one_error_line(again) == one_error_line(gone)
    missing = jobcast(*url, "delete", "job_nope")
    assert missing.returncode == 1
    assert one_error_line(missing) == "jobcast: error: no job with id 'job_nope'"
    assert jobcast(*url, "delete").returncode == 2


def test_the_url_comes_from_jobcast_url(shared_server: Start) -> None:
    """Without --url the commands use JOBCAST_URL."""
    srv = shared_server()
    result = jobcast("create", JOBCAST_URL=srv.base_url)
    assert result.returncode == 0, result.stderr
    assert jobcast("get", result.stdout.strip(), JOBCAST_URL=srv.base_url).returncode == 0


def test_the_api_key_is_sent_as_a_bearer_token(
    shared_server: Start, fake: Callable[..., FakeServer]
) -> None:
    """--api-key (or JOBS_API_KEY) reaches the server as Authorization: Bearer."""
    srv = shared_server()
    recorder = fake(in_order(), upstream=srv.base_url)
    assert jobcast("--url", recorder.url, "--api-key", "k1", "create").returncode == 0
    assert jobcast("--url", recorder.url, "create", JOBS_API_KEY="k2").returncode == 0
    keys = [r.headers.get("authorization") for r in recorder.requests if r.method == "POST"]
    assert keys == ["Bearer k1", "Bearer k2"]


# --- token ----------------------------------------------------------------------------


def test_token_prints_a_read_token_for_one_job(shared_server: Start) -> None:
    """`token --job ID --ttl S` prints a token that reads that job and expires in S seconds."""
    srv = shared_server(JOBS_API_KEY=KEY)
    job_id = jobcast("--url", srv.base_url, "create", JOBS_API_KEY=KEY).stdout.strip()
    minted = jobcast("--url", srv.base_url, "token", "--job", job_id, JOBS_API_KEY=KEY)
    assert minted.returncode == 0, minted.stderr
    [token] = minted.stdout.splitlines()
    shown = jobcast("--url", srv.base_url, "--api-key", token, "get", job_id, "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["jobId"] == job_id
    before = datetime.now(UTC)
    timed = jobcast(
        "--url", srv.base_url, "token", "--job", job_id, "--ttl", "120", "--json", JOBS_API_KEY=KEY
    )
    after = datetime.now(UTC)
    assert timed.returncode == 0, timed.stderr
    answer = json.loads(timed.stdout)
    assert set(answer) == {"token", "expiresAt"}
    expires = datetime.fromisoformat(answer["expiresAt"])
    # Minted between the two readings of the clock, however long the command took
    # (a slow start under load took 5.5 s); expiry is rounded up to the second.
    assert before + timedelta(seconds=120) <= expires <= after + timedelta(seconds=121)


def test_token_for_an_owner_reads_that_owners_jobs(server: Start) -> None:
    """`token --owner NAME` prints a token that lists that owner's jobs and no others."""
    srv = server(JOBS_API_KEY=KEY)
    url = ("--url", srv.base_url)
    mine = jobcast(*url, "create", "--owner", "alice", JOBS_API_KEY=KEY).stdout.strip()
    jobcast(*url, "create", "--owner", "bob", JOBS_API_KEY=KEY)
    minted = jobcast(*url, "token", "--owner", "alice", JOBS_API_KEY=KEY)
    assert minted.returncode == 0, minted.stderr
    listed = jobcast(*url, "list", "--json", JOBS_API_KEY=minted.stdout.strip())
    assert listed.returncode == 0, listed.stderr
    assert [json.loads(line)["jobId"] for line in listed.stdout.splitlines()] == [mine]


@pytest.mark.parametrize("args", [[], ["--job", "job_1", "--owner", "alice"]])
def test_token_needs_exactly_one_of_job_and_owner(args: list[str]) -> None:
    """`token` with neither or both of --job and --owner is a usage error, exit 2."""
    result = jobcast("--url", f"http://127.0.0.1:{free_port()}", "token", *args)
    assert result.returncode == 2
    assert "exactly one of --job or --owner" in one_error_line(result)


def test_token_without_the_api_key_is_one_line_and_exit_1(shared_server: Start) -> None:
    """Minting needs the API key: without it, the server's reason on one line, exit 1."""
    srv = shared_server(JOBS_API_KEY=KEY)
    refused = jobcast("--url", srv.base_url, "token", "--owner", "alice")
    assert refused.returncode == 1
    assert one_error_line(refused).startswith("jobcast: error: ")


# --- errors -------------------------------------------------------------------------


def test_a_failed_call_prints_one_line_and_exits_1(shared_server: Start) -> None:
    """An error answer is one `jobcast: error:` line on stderr and exit status 1."""
    srv = shared_server()
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


def test_several_refused_fields_print_the_detail_then_one_line_each(shared_server: Start) -> None:
    """A change refused for several fields prints the server's detail, then each field's reason."""
    srv = shared_server()
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
        ["--url", "http://", "get", "job_1"],  # no host
        ["--url", "http://[::1", "get", "job_1"],  # not a URL at all
        ["update", "job_1", "--progress", "nan"],  # JSON has no NaN
        ["update", "job_1", "--progress", "inf"],
        ["create", "--metadata", '{"ratio": NaN}'],
        ["append", "job_1", "--json-data", "Infinity"],
        ["append", "job_1", "--json-data", "1e999"],  # too large: Python reads infinity
        ["update", "job_1", "--metadata", '{"x": 1e999}'],
        ["token", "--ttl", "0", "--job", "job_1"],
        ["frobnicate"],
    ],
)
def test_a_usage_error_prints_one_line_and_exits_2(args: list[str]) -> None:
    """Bad arguments exit with status 2 and one line naming the problem and the help."""
    result = jobcast(*args)
    assert result.returncode == 2
    assert "--help" in one_error_line(result)


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["get", ""], "job_id"),
        (["--api-key", "clé", "get", "job_1"], "api_key"),
    ],
)
def test_an_argument_the_client_refuses_prints_one_line_and_exits_2(
    args: list[str], named: str
) -> None:
    """What the client refuses before sending anything is one line naming it, no traceback."""
    result = jobcast("--url", f"http://127.0.0.1:{free_port()}", *args)
    assert result.returncode == 2
    line = one_error_line(result)
    assert line.startswith("jobcast: error: ")
    assert named in line


def test_version_names_the_client_distribution() -> None:
    """`jobcast --version` prints the installed jobcast-client's version."""
    result = jobcast("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "jobcast, version 0.1.0"


# --- keygen ---------------------------------------------------------------------------


def test_keygen_prints_a_secret_the_server_accepts_as_its_api_key(server: Start) -> None:
    """`keygen` needs no server, prints one URL-safe secret long enough for JOBS_API_KEY."""
    result = jobcast("--url", f"http://127.0.0.1:{free_port()}", "keygen")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    [key] = result.stdout.splitlines()
    assert len(key) >= 32  # the server refuses shorter keys at start-up
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
    assert all(len(key) >= 32 for key in keys)
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
    shared_server: Start, watcher: Callable[..., subprocess.Popen[str]]
) -> None:
    """`watch --json` prints each state as a JSON line while the job runs, and exits 0."""
    srv = shared_server()
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
    assert stdout.split()[:3] == [job_id, "error", "30%"]
    assert "error: Invalid file format" in stdout
    assert stderr == "", "no progress bar when stderr is not a terminal"


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


@contextlib.contextmanager
def terminal() -> Iterator[tuple[int, bytearray]]:
    """A pseudo-terminal: its far end for a child's stderr, and what the child wrote to it."""
    leader, follower = pty.openpty()
    written = bytearray()

    def read() -> None:
        with contextlib.suppress(OSError):
            while data := os.read(leader, 4096):
                written.extend(data)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        yield follower, written
    finally:
        os.close(follower)
        reader.join(seconds(5))
        os.close(leader)


async def test_watch_draws_a_progress_bar_on_a_terminal_and_erases_it(server: Start) -> None:
    """On a terminal `watch` redraws one line (status, bar, percent, message), then clears it."""
    srv = server()
    async with srv.client() as api:
        job_id = await api.create_job()
        with terminal() as (tty, written):
            # Popen returns once the child is started: nothing here waits on it.
            process = subprocess.Popen(  # noqa: ASYNC220
                command("--url", srv.base_url, "watch", job_id),
                env=environment(),
                stdout=subprocess.PIPE,
                stderr=tty,
                stdin=subprocess.DEVNULL,
                text=True,
            )
            await api.wait_for_metric("jobcast_connections", lambda n: n == 1, transport="sse")
            await api.update(job_id, status="processing", progress=50, message="Halfway")
            await api.post(f"/api/jobs/{job_id}/cancel", json={})
            await api.complete(job_id)
            stdout, _ = process.communicate(timeout=seconds(20))
    assert process.returncode == 0
    assert stdout.split()[:3] == [job_id, "completed", "100%"]
    drawn = re.sub(rb"\x1b\[[0-9;]*m", b"", bytes(written)).decode()
    frames = drawn.split("\r\x1b[2K")
    assert "processing [###############---------------]   50%  Halfway" in frames
    assert "processing [###############---------------]   50%  cancel requested  Halfway" in frames
    assert drawn.endswith("\r\x1b[2K"), "the bar is erased at the end"


# --- serve ----------------------------------------------------------------------------


def fake_server_command(directory: Path, exit_status: int = 0) -> Path:
    """A `jobcast-server` on ``directory`` that prints its pid and arguments, then exits."""
    program = directory / "jobcast-server"
    program.write_text(f'#!/bin/sh\necho "pid=$$ argv0=$0 args=$*"\nexit {exit_status}\n')
    program.chmod(0o755)
    return program


def test_serve_hands_over_to_jobcast_server_with_its_arguments(tmp_path: Path) -> None:
    """`jobcast serve ARGS` becomes `jobcast-server ARGS` (the same process), flags and all."""
    fake_server_command(tmp_path, exit_status=3)
    process = subprocess.Popen(
        command("serve", "--port", "8001", "--no-demo", "--help"),
        env=environment(PATH=str(tmp_path)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    stdout, stderr = process.communicate(timeout=seconds(30))
    assert stderr == ""
    assert process.returncode == 3, "the server's exit status is the command's"
    assert (
        stdout
        == f"pid={process.pid} argv0={tmp_path}/jobcast-server args=--port 8001 --no-demo --help\n"
    )


def test_serve_without_the_server_says_how_to_get_it(tmp_path: Path) -> None:
    """Without jobcast-server on PATH, `serve` prints one line on how to run it, and exits 1."""
    result = jobcast("serve", "--port", "8001", PATH=str(tmp_path))
    assert result.returncode == 1
    line = one_error_line(result)
    assert "in a checkout of Jobcast, pip install ." in line  # it is on no package index
    assert "make run" in line


def test_serve_is_listed_in_the_help() -> None:
    """`jobcast --help` lists serve with the other commands."""
    result = jobcast("--help")
    assert result.returncode == 0, result.stderr
    listed = {line.split()[0] for line in result.stdout.split("Commands:")[1].splitlines() if line}
    assert listed == {
        "append",
        "cancel",
        "complete",
        "create",
        "delete",
        "fail",
        "get",
        "keygen",
        "list",
        "serve",
        "tail",
        "token",
        "update",
        "watch",
    }


def test_keygen_webhook_secret_prints_a_secret_the_server_signs_with(server: Start) -> None:
    """`keygen --webhook-secret` prints whsec_ and 32 bytes in base64, which the server
    takes as JOBS_WEBHOOK_SECRET."""
    result = jobcast("keygen", "--webhook-secret", "--count", "2")
    assert result.returncode == 0, result.stderr
    secrets = result.stdout.splitlines()
    assert len(set(secrets)) == 2
    for secret in secrets:
        assert secret.startswith("whsec_")
        assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) == 32
    srv = server(JOBS_WEBHOOK_SECRET=secrets[0], JOBS_WEBHOOK_HOSTS="hooks.example.com")
    created = jobcast(
        "--url", srv.base_url, "--json", "create", "--webhook-url", "https://hooks.example.com/x"
    )
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["webhookUrl"] == "https://hooks.example.com/x"
    refused = jobcast("--url", srv.base_url, "create", "--webhook-url", "https://evil.example/x")
    assert refused.returncode == 1
    assert "JOBS_WEBHOOK_HOSTS" in refused.stderr
