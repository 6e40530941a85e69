"""The ``jobcast`` commands for a job's output (``append``, ``tail``, ``watch --output``),
run as real processes against the real server."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest

from tests.conftest import seconds

from .test_cli import (
    command,
    environment,
    jobcast,
    next_line,
    one_error_line,
    terminal,
    watcher as watcher,
)

if TYPE_CHECKING:
    from tests.e2e.conftest import RunningServer

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

Start = Callable[..., "RunningServer"]
Watcher = Callable[..., subprocess.Popen[str]]


async def append(api: Any, job_id: str, *chunks: dict[str, Any]) -> None:
    """Append straight to the server (the tests' own HTTP client)."""
    response = await api.post(f"/api/jobs/{job_id}/output", json={"chunks": list(chunks)})
    assert response.status_code == 200, response.text


def jobcast_reading(stdin: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``jobcast ARGS`` with ``stdin`` as its standard input, to the end."""
    return subprocess.run(
        command(*args),
        input=stdin,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=seconds(30),
        check=False,
    )


def run_bytes(stdin: bytes, *args: str) -> subprocess.CompletedProcess[bytes]:
    """Run ``jobcast ARGS`` with ``stdin`` (bytes, any) as its standard input, to the end."""
    return subprocess.run(
        command(*args),
        input=stdin,
        env=environment(),
        capture_output=True,
        timeout=seconds(30),
        check=False,
    )


def on_a_terminal(*args: str) -> tuple[subprocess.CompletedProcess[bytes], bytes]:
    """Run ``jobcast ARGS`` to the end with a pseudo-terminal as its stdout; what it wrote."""
    with terminal() as (tty, written):
        ran = subprocess.run(
            command(*args),
            env=environment(),
            stdout=tty,
            stderr=subprocess.PIPE,
            timeout=seconds(30),
            check=False,
        )
    return ran, bytes(written)


def token(text: str) -> dict[str, Any]:
    return {"data": text, "kind": "token"}


async def output_of(api: Any, job_id: str) -> list[dict[str, Any]]:
    response = await api.get(f"/api/jobs/{job_id}/output")
    assert response.status_code == 200, response.text
    chunks: list[dict[str, Any]] = response.json()["chunks"]
    return chunks


async def test_append_takes_each_argument_as_a_chunk(shared_server: Start) -> None:
    """`append JOB DATA...` appends one chunk per argument (as JSON with --json-data), with
    --kind; --json prints where they went; --expected-offset makes a second run a no-op."""
    srv = shared_server()
    url = ("--url", srv.base_url)
    async with srv.client() as api:
        job_id = await api.create_job()
        plain = jobcast(*url, "append", job_id, "Hello", "world", "--kind", "token")
        assert (plain.returncode, plain.stdout, plain.stderr) == (0, "", "")
        typed = jobcast(*url, "append", job_id, '{"rows": 3}', "null", "--json-data", "--json")
        assert typed.returncode == 0, typed.stderr
        assert json.loads(typed.stdout) == {"jobId": job_id, "offset": 2, "nextOffset": 4}
        for _ in range(2):
            once = jobcast(*url, "append", job_id, "done", "--expected-offset", "4", "--json")
            assert once.returncode == 0, once.stderr
            assert json.loads(once.stdout)["nextOffset"] == 5
        assert [
            (c["offset"], c.get("data"), c.get("kind")) for c in await output_of(api, job_id)
        ] == [
            (0, "Hello", "token"),
            (1, "world", "token"),
            (2, {"rows": 3}, None),
            (3, None, None),
            (4, "done", None),
        ]
        stale = jobcast(*url, "append", job_id, "late", "--expected-offset", "1")
        assert stale.returncode == 1
        assert "expectedOffset is 1 but the job has 5" in one_error_line(stale)
        bad = jobcast(*url, "append", job_id, "{oops", "--json-data")
        assert bad.returncode == 2
        assert "is not JSON" in one_error_line(bad)
        long_kind = jobcast(*url, "append", job_id, "x", "--kind", "k" * 65)
        assert long_kind.returncode == 1
        assert one_error_line(long_kind) == (
            "jobcast: error: chunks.0.kind: may hold at most 64 characters"
        )


async def test_append_without_data_appends_each_line_of_stdin(shared_server: Start) -> None:
    """`cmd | jobcast append JOB --kind log` appends one chunk per line, in batches."""
    srv = shared_server()
    async with srv.client() as api:
        job_id = await api.create_job()
        lines = "".join(f"line {number}\n" for number in range(250))
        result = jobcast_reading(
            lines, "--url", srv.base_url, "append", job_id, "-k", "log", "--json"
        )
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout) == {"jobId": job_id, "nextOffset": 250}
        got = await output_of(api, job_id)
        assert [chunk["data"] for chunk in got] == [f"line {number}" for number in range(250)]
        assert {chunk["kind"] for chunk in got} == {"log"}
        quiet = jobcast_reading(
            '{"n": 1}\n', "--url", srv.base_url, "append", job_id, "--json-data"
        )
        assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "", "")
        assert (await output_of(api, job_id))[-1] == {"offset": 250, "data": {"n": 1}}
        nothing = jobcast_reading("", "--url", srv.base_url, "--json", "append", job_id)
        assert json.loads(nothing.stdout) == {"jobId": job_id, "nextOffset": 251}
        mixed = jobcast_reading(
            "x\n", "--url", srv.base_url, "append", job_id, "--expected-offset", "1"
        )
        assert mixed.returncode == 2
        assert "--expected-offset goes with DATA" in one_error_line(mixed)


async def test_a_line_the_server_refuses_costs_itself_not_the_rest_of_the_pipe(
    shared_server: Start,
) -> None:
    """A line over the server's chunk limit is said on stderr, with how many were dropped;
    every other line is appended, in order, and the command exits 1."""
    srv = shared_server()
    async with srv.client() as api:
        job_id = await api.create_job()
        lines = [f"line {number}" for number in range(300)]
        lines[10] = "x" * 70_000  # over JOBS_OUTPUT_MAX_CHUNK_BYTES (64 KiB)
        result = jobcast_reading(
            "".join(f"{line}\n" for line in lines), "--url", srv.base_url, "append", job_id
        )
        assert result.returncode == 1
        assert "dropped 1 chunk(s)" in result.stderr, result.stderr
        got = [chunk["data"] for chunk in await output_of(api, job_id)]
        assert got == lines[:10] + lines[11:]


async def test_a_line_that_is_not_utf8_costs_itself_not_the_rest_of_the_pipe(
    shared_server: Start,
) -> None:
    """A Latin-1 byte in a piped log: that line is said on stderr and left out, the lines
    after it are appended, and the command exits 1 (it stopped at the line, with status 2)."""
    srv = shared_server()
    async with srv.client() as api:
        job_id = await api.create_job()
        result = run_bytes(
            b"first\nlatin1 caf\xe9\nafter\r50%\r\n",  # a lone \r ends a line too
            "--url",
            srv.base_url,
            "append",
            job_id,
            "--kind",
            "log",
        )
        assert result.returncode == 1
        assert result.stderr == b"jobcast: error: line 2 is not UTF-8; not appended\n"
        got = [chunk["data"] for chunk in await output_of(api, job_id)]
        assert got == ["first", "after", "50%"]


async def test_tail_on_a_terminal_shows_control_characters_escaped(shared_server: Start) -> None:
    """Output is anyone's text: on a terminal, an escape sequence in it is shown, not obeyed
    (it would retitle the terminal, clear it); piped, it passes as it is."""
    srv = shared_server()
    async with srv.client() as api:
        job_id = await api.create_job()
        await append(api, job_id, token("a\x1b]0;pwned\x07\x1b[2Jb\tc\x9b"))
        await api.complete(job_id)
    shown, written = on_a_terminal("--url", srv.base_url, "tail", job_id)
    assert shown.returncode == 0, shown.stderr
    assert written.decode() == "a\\x1b]0;pwned\\x07\\x1b[2Jb\tc\\x9b\r\n"
    piped = jobcast("--url", srv.base_url, "tail", job_id)
    assert piped.stdout == "a\x1b]0;pwned\x07\x1b[2Jb\tc\x9b"


async def test_tail_prints_the_output_so_far_then_follows_it_to_the_end(
    shared_server: Start, watcher: Watcher
) -> None:
    """`tail` prints what the job has, then each append as it comes: token chunks run on,
    others a line each; it exits 0 when the job completes, printing nothing else."""
    srv = shared_server()
    async with srv.client() as api:
        job_id = await api.create_job(jobType="llm_agent")
        await append(api, job_id, {"data": "Thinking...", "kind": "log"})
        process = watcher("--url", srv.base_url, "tail", job_id)
        assert await next_line(process) == "Thinking...\n"
        await append(api, job_id, token("Hello"), token(", "))
        await append(api, job_id, token("world"))
        await append(api, job_id, {"data": {"answer": 42}, "kind": "result"})
        assert await next_line(process) == "Hello, world\n"
        assert await next_line(process) == '{"answer":42}\n'
        await append(api, job_id, token("bye"))
        await api.complete(job_id)
        stdout, stderr = process.communicate(timeout=seconds(20))
    assert process.returncode == 0, stderr
    assert (stdout, stderr) == ("bye", ""), "piped, the output as it was, no newline added"


async def test_tail_of_a_failed_job_exits_1_with_its_error(shared_server: Start) -> None:
    """`tail` of a job that failed prints all its output, the error on stderr, and exits 1;
    with --json, one chunk per line."""
    srv = shared_server()
    async with srv.client() as api:
        job_id = await api.create_job()
        await append(api, job_id, token("par"), token("tial"))
        await api.fail(job_id, "out of tokens")
    result = jobcast("--url", srv.base_url, "tail", job_id)
    assert (result.returncode, result.stdout) == (1, "partial")
    assert result.stderr == f"jobcast: job {job_id} failed: out of tokens\n"
    as_json = jobcast("--url", srv.base_url, "tail", job_id, "--json")
    assert as_json.returncode == 1
    assert [json.loads(line) for line in as_json.stdout.splitlines()] == [
        {"offset": 0, "data": "par", "kind": "token"},
        {"offset": 1, "data": "tial", "kind": "token"},
    ]
    missing = jobcast("--url", srv.base_url, "tail", "job_nope")
    assert missing.returncode == 1
    assert "job_nope" in one_error_line(missing)


async def test_watch_output_prints_states_and_output_as_they_happen(
    shared_server: Start, watcher: Watcher
) -> None:
    """`watch --output` prints each state as a line and the output between them, in the order
    it happened; with --json, jobs and chunks as JSON lines. Exit 0 once completed."""
    srv = shared_server()
    async with srv.client() as api:
        job_id = await api.create_job(message="Queued")
        process = watcher("--url", srv.base_url, "watch", "--output", job_id)
        assert (await next_line(process)).split()[:3] == [job_id, "queued", "0%"]
        await api.update(job_id, status="processing", progress=50, message="Writing")
        assert (await next_line(process)).split()[:3] == [job_id, "processing", "50%"]
        await append(api, job_id, token("Hello"), token(" world"))
        await append(api, job_id, {"data": "a log line", "kind": "log"})
        assert await next_line(process) == "Hello world\n"
        assert await next_line(process) == "a log line\n"
        await append(api, job_id, token("the end"))
        await api.complete(job_id)
        stdout, stderr = process.communicate(timeout=seconds(20))
    assert process.returncode == 0, stderr
    first, last = stdout.splitlines()
    assert first == "the end"
    assert last.split()[:3] == [job_id, "completed", "100%"]
    as_json = jobcast("--url", srv.base_url, "--json", "watch", "-o", job_id)
    assert as_json.returncode == 0, as_json.stderr
    lines = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert [line.get("data") for line in lines[:4]] == ["Hello", " world", "a log line", "the end"]
    assert (lines[-1]["status"], lines[-1]["outputSize"]) == ("completed", 4)
    assert len(lines) == 5
