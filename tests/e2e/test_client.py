"""The Python client (``app.client``), sync and async, against the real server.

Every test that takes ``flavor`` runs twice: once with :class:`JobsClient`
(called from worker threads) and once with :class:`AsyncJobsClient`, through
the same small adapter, so both clients pass the same checks. Faults come
from two helpers in this file: :class:`CutProxy`, a TCP proxy whose
connections a test can cut, and :class:`FakeServer`, an HTTP server that
answers from a script (canned answers, or forwarding to the real server,
optionally losing the answer on the way back).
"""

from __future__ import annotations

import contextlib
import functools
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
import httpx
import pytest

import app.client as client_module
from app.client import (
    AsyncJobsClient,
    ConnectionFailed,
    JobsClient,
    ResponseError,
    RetryPolicy,
    ServerError,
)
from app.errors import (
    BackendUnavailable,
    Forbidden,
    IdempotencyConflict,
    InvalidJobData,
    InvalidTransition,
    JobGone,
    JobNotFound,
    JobsError,
    MalformedJSON,
    MisdirectedRequest,
    RateLimited,
    TooManyStreams,
    Unauthenticated,
)
from app.models import Job, encode
from tests.conftest import seconds

from .conftest import free_port

if TYPE_CHECKING:
    from .conftest import RunningServer

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

Start = Callable[..., "RunningServer"]
FAST = RetryPolicy(retries=3, backoff=0.01, max_backoff=2)


# --- one adapter over both clients -----------------------------------------------------


async def _in_thread(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return await anyio.to_thread.run_sync(functools.partial(function, *args, **kwargs))


class SyncTracked:
    """A sync ``TrackedJob`` whose ``update`` runs in a worker thread."""

    def __init__(self, tracked: client_module.TrackedJob) -> None:
        object.__setattr__(self, "tracked", tracked)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.tracked, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self.tracked, name, value)

    async def update(self, **fields: Any) -> Job:
        job: Job = await _in_thread(self.tracked.update, **fields)
        return job


class SyncJobs:
    """The sync client, driven from async tests through worker threads."""

    def __init__(self, client: JobsClient) -> None:
        self.client = client

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self.client, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            return await _in_thread(method, *args, **kwargs)

        return call

    async def all_jobs(self, **filters: Any) -> list[Job]:
        jobs: list[Job] = await _in_thread(lambda: list(self.client.list_jobs(**filters)))
        return jobs

    async def watch(self, job_id: str, **options: Any) -> AsyncIterator[Job]:
        states = self.client.watch(job_id, **options)
        try:
            while (job := await _in_thread(next, states, None)) is not None:
                yield job
        finally:
            states.close()

    @contextlib.asynccontextmanager
    async def track(self, *args: Any, **kwargs: Any) -> AsyncIterator[SyncTracked]:
        manager = self.client.track(*args, **kwargs)
        tracked = await _in_thread(manager.__enter__)
        try:
            yield SyncTracked(tracked)
        except BaseException as exc:
            if not await _in_thread(manager.__exit__, type(exc), exc, exc.__traceback__):
                raise
        else:
            await _in_thread(manager.__exit__, None, None, None)


class AsyncJobs:
    """The async client, as it is."""

    def __init__(self, client: AsyncJobsClient) -> None:
        self.client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    async def all_jobs(self, **filters: Any) -> list[Job]:
        return [job async for job in self.client.list_jobs(**filters)]


@pytest.fixture(params=["sync", "async"])
def flavor(request: pytest.FixtureRequest) -> str:
    flavor: str = request.param
    return flavor


@contextlib.asynccontextmanager
async def connect(flavor: str, url: str, **options: Any) -> AsyncIterator[Any]:
    """A client of ``flavor`` on ``url`` (fast retries unless ``retry`` is given)."""
    options.setdefault("retry", FAST)
    options.setdefault("timeout", seconds(10))
    if flavor == "async":
        async with AsyncJobsClient(url, **options) as client:
            yield AsyncJobs(client)
    else:
        with JobsClient(url, **options) as sync_client:
            yield SyncJobs(sync_client)


# --- a TCP proxy whose connections can be cut ----------------------------------------------


class CutProxy:
    """Forwards loopback TCP connections to ``port``; :meth:`cut` drops every open one."""

    def __init__(self, port: int) -> None:
        self._port = port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self.heads: list[bytearray] = []  # what each client connection sent, in order
        self._accepting = threading.Thread(target=self._accept, daemon=True)
        self._accepting.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}"

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                downstream, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            downstream.settimeout(None)
            upstream = socket.create_connection(("127.0.0.1", self._port))
            head = bytearray()
            with self._lock:
                self._sockets += [downstream, upstream]
                self.heads.append(head)
                for source, sink, record in (
                    (downstream, upstream, head),
                    (upstream, downstream, None),
                ):
                    thread = threading.Thread(
                        target=self._pump, args=(source, sink, record), daemon=True
                    )
                    self._threads.append(thread)
                    thread.start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket, record: bytearray | None) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if record is not None:
                    record += data
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def cut(self) -> None:
        """Drop every open connection, both ways, as a network failure would."""
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        self._stopping.set()
        self._accepting.join(seconds(5))
        self._listener.close()
        self.cut()
        for thread in self._threads:
            thread.join(seconds(5))


@pytest.fixture
def proxy() -> Iterator[Callable[[int], CutProxy]]:
    """Start a :class:`CutProxy` in front of a port; closed at teardown."""
    started: list[CutProxy] = []

    def start(port: int) -> CutProxy:
        started.append(CutProxy(port))
        return started[-1]

    yield start
    for running in started:
        running.close()


# --- an HTTP server that answers from a script -------------------------------------------

FORWARD = "forward"  # pass the request to the real server and its answer back
FORWARD_THEN_DROP = "forward-then-drop"  # pass it on, then close without answering


@dataclass(frozen=True)
class Seen:
    """One request the fake server received."""

    method: str
    path: str
    headers: dict[str, str]  # names in lower case
    body: bytes


@dataclass(frozen=True)
class Answer:
    """A canned answer; ``truncated`` sends the body as one chunk, then drops the connection."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    truncated: bool = False


def problem(status: int, slug: str | None, detail: str, **headers: str) -> Answer:
    body = {
        "type": f"tag:jobcast,2026:{slug}" if slug else "about:blank",
        "title": "Problem",
        "status": status,
        "detail": detail,
    }
    return Answer(
        status,
        json.dumps(body).encode(),
        {"Content-Type": "application/problem+json", **headers},
    )


Script = Callable[[Seen], "Answer | str"]


def in_order(*answers: Answer | str, then: Answer | str = FORWARD) -> Script:
    """Answer the n-th request with the n-th answer, and every later one with ``then``."""
    left = list(answers)
    return lambda seen: left.pop(0) if left else then


class FakeServer:
    """A threaded HTTP/1.1 server on a free port that follows a :data:`Script`."""

    def __init__(self, script: Script, upstream: str | None) -> None:
        self.script = script
        self.requests: list[Seen] = []
        self.upstream = httpx.Client(base_url=upstream or "http://127.0.0.1:9")
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = seconds(10)

            def do_GET(self) -> None:
                fake._handle(self)

            do_POST = do_PATCH = do_GET

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._http.daemon_threads = True
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._http.server_address[1]}"

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        body = handler.rfile.read(int(handler.headers.get("content-length") or 0))
        headers = {name.lower(): value for name, value in handler.headers.items()}
        seen = Seen(handler.command, handler.path, headers, body)
        self.requests.append(seen)
        action = self.script(seen)
        if action in (FORWARD, FORWARD_THEN_DROP):
            kept = ("content-type", "idempotency-key", "authorization")
            response = self.upstream.request(
                seen.method,
                seen.path,
                content=body,
                headers={name: value for name, value in headers.items() if name in kept},
            )
            if action == FORWARD_THEN_DROP:
                handler.close_connection = True
                return
            action = Answer(response.status_code, response.content, dict(response.headers))
        assert isinstance(action, Answer)
        handler.send_response(action.status)
        for name, value in action.headers.items():
            if name.lower() not in ("content-length", "transfer-encoding", "connection", "date"):
                handler.send_header(name, value)
        if action.truncated:
            handler.send_header("Transfer-Encoding", "chunked")
            handler.end_headers()
            handler.wfile.write(b"%x\r\n%s\r\n" % (len(action.body), action.body))
            handler.wfile.flush()
            handler.close_connection = True
            return
        handler.send_header("Content-Length", str(len(action.body)))
        handler.end_headers()
        handler.wfile.write(action.body)

    def close(self) -> None:
        self._http.shutdown()
        self._http.server_close()
        self._thread.join(seconds(5))
        self.upstream.close()


@pytest.fixture
def fake() -> Iterator[Callable[..., FakeServer]]:
    """Start a :class:`FakeServer`: ``fake(script, upstream=url)``; closed at teardown."""
    started: list[FakeServer] = []

    def start(script: Script, upstream: str | None = None) -> FakeServer:
        started.append(FakeServer(script, upstream))
        return started[-1]

    yield start
    for running in started:
        running.close()


def job_wire(version: int, status: str = "processing", job_id: str = "job_fake") -> bytes:
    moment = datetime(2026, 1, 1, tzinfo=UTC)
    job = Job(
        job_id=job_id,
        job_type="generic",
        status=status,
        message=f"v{version}",
        progress=100 if status == "completed" else version,
        metadata={},
        created_at=moment,
        updated_at=moment,
        version=version,
    )
    return encode(job)


def sse(*versions_and_statuses: tuple[int, str]) -> bytes:
    return b"retry: 10\n\n" + b"".join(
        b"id: %d\nevent: job\ndata: %s\n\n" % (version, job_wire(version, status))
        for version, status in versions_and_statuses
    )


# --- the calls ------------------------------------------------------------------------


def test_the_public_names_are_pinned() -> None:
    """app.client exports exactly the documented clients, handles, policy and exceptions."""
    assert sorted(client_module.__all__) == [
        "AsyncJobsClient",
        "AsyncTrackedJob",
        "Changes",
        "ConnectionFailed",
        "DEFAULT_URL",
        "JobsClient",
        "ResponseError",
        "RetryPolicy",
        "ServerError",
        "TrackedJob",
    ]
    assert issubclass(ConnectionFailed, JobsError)
    assert issubclass(ServerError, ResponseError)
    assert issubclass(ResponseError, JobsError)


def test_a_base_url_that_is_not_http_is_refused_at_once() -> None:
    """Both clients refuse a URL they could never reach, before any request."""
    for client_class in (JobsClient, AsyncJobsClient):
        with pytest.raises(ValueError, match="http"):
            client_class("ftp://127.0.0.1")


async def test_create_and_get_return_the_servers_job(server: Start, flavor: str) -> None:
    """create_job returns the full queued Job, and get_job returns the same state."""
    srv = server()
    async with connect(flavor, srv.base_url) as jobs:
        metadata = {"fileName": "contract.pdf", "fileSize": 1024000}
        job = await jobs.create_job(
            job_type="file_processing", message="Upload queued", metadata=metadata
        )
        assert isinstance(job, Job)
        assert (job.job_type, job.status, job.message, job.progress, job.version) == (
            "file_processing",
            "queued",
            "Upload queued",
            0,
            1,
        )
        assert job.metadata == metadata
        assert await jobs.get_job(job.job_id) == job
        default = await jobs.create_job()
        assert (default.job_type, default.message, default.metadata) == ("generic", "", {})


async def test_update_complete_and_fail_change_the_job(server: Start, flavor: str) -> None:
    """The three worker calls each return the changed job, as the server stored it."""
    srv = server()
    async with connect(flavor, srv.base_url) as jobs, srv.client() as api:
        job_id = (await jobs.create_job(metadata={"a": 1})).job_id
        updated = await jobs.update_job_with_notification(
            job_id, status="processing", progress=45, message="Extracting...", metadata={"b": 2}
        )
        assert (updated.status, updated.progress, updated.message) == (
            "processing",
            45,
            "Extracting...",
        )
        assert updated.metadata == {"a": 1, "b": 2}
        done = await jobs.complete_job(job_id, "doc_123abc", "Document processed successfully")
        assert (done.status, done.progress, done.document_id, done.message) == (
            "completed",
            100,
            "doc_123abc",
            "Document processed successfully",
        )
        assert done == Job.model_validate(await api.job(job_id))
        other = (await jobs.create_job()).job_id
        failed = await jobs.fail_job(other, "Invalid file format")
        assert (failed.status, failed.error, failed.message) == (
            "error",
            "Invalid file format",
            "Processing failed",
        )


async def test_list_jobs_goes_through_every_page_newest_first(
    server: Start, flavor: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """list_jobs follows nextCursor across pages, keeps the filters, and stops at limit."""
    monkeypatch.setattr(client_module, "PAGE_SIZE", 2)
    srv = server()
    async with connect(flavor, srv.base_url) as jobs:
        made = [(await jobs.create_job(job_type="llm_agent")).job_id for _ in range(5)]
        other = (await jobs.create_job(job_type="generic")).job_id
        await jobs.update_job_with_notification(made[0], status="processing")
        assert [job.job_id for job in await jobs.all_jobs(job_type="llm_agent")] == made[::-1]
        assert [job.job_id for job in await jobs.all_jobs()] == [other, *made[::-1]]
        assert [job.job_id for job in await jobs.all_jobs(limit=3)] == [other, made[4], made[3]]
        processing = await jobs.all_jobs(status="processing")
        assert [job.job_id for job in processing] == [made[0]]


# --- watch ----------------------------------------------------------------------------


async def test_watch_yields_every_state_and_ends_at_the_terminal_one(
    server: Start, flavor: str
) -> None:
    """watch yields the current state, then each change live, and stops after completion."""
    srv = server()
    async with connect(flavor, srv.base_url) as jobs, srv.client() as api:
        job_id = await api.create_job(message="Upload queued")
        seen: list[Job] = []
        with anyio.fail_after(seconds(15)):
            async for job in jobs.watch(job_id):
                seen.append(job)
                if job.version == 1:
                    await api.update(job_id, status="processing", progress=50)
                elif job.version == 2:
                    await api.complete(job_id, documentId="doc_1")
        assert [(job.version, job.status, job.progress) for job in seen] == [
            (1, "queued", 0),
            (2, "processing", 50),
            (3, "completed", 100),
        ]
        assert seen[-1].document_id == "doc_1"


async def test_watch_of_a_failed_job_yields_its_final_state_once(
    server: Start, flavor: str
) -> None:
    """Watching a job that already failed yields that one state and ends."""
    srv = server()
    async with connect(flavor, srv.base_url) as jobs, srv.client() as api:
        job_id = await api.create_job()
        await api.fail(job_id, "Invalid file format")
        with anyio.fail_after(seconds(10)):
            seen = [job async for job in jobs.watch(job_id)]
        assert [(job.status, job.error) for job in seen] == [("error", "Invalid file format")]


async def test_watch_from_the_terminal_version_ends_on_the_204(server: Start, flavor: str) -> None:
    """watch(since=terminal version) gets 204 No Content and ends at once, yielding nothing."""
    srv = server()
    async with connect(flavor, srv.base_url) as jobs, srv.client() as api:
        job_id = await api.create_job()
        version = (await api.complete(job_id))["version"]
        with anyio.fail_after(seconds(10)):
            assert [job async for job in jobs.watch(job_id, since=version)] == []
            later = [job async for job in jobs.watch(job_id, since=version - 1)]
        assert [job.version for job in later] == [version]


async def test_watch_resumes_after_a_dropped_connection_without_repeats(
    server: Start, flavor: str, proxy: Callable[[int], CutProxy]
) -> None:
    """A cut stream is reopened with Last-Event-ID: the states go on, none twice, none lost."""
    srv = server()
    tunnel = proxy(srv.port)
    async with connect(flavor, tunnel.url) as jobs, srv.client() as api:
        job_id = await api.create_job()
        await api.update(job_id, status="processing", progress=10)
        with anyio.fail_after(seconds(15)):
            async with contextlib.aclosing(jobs.watch(job_id)) as states:
                first = await anext(states)
                tunnel.cut()
                await api.update(job_id, progress=60, message="after the cut")
                second = await anext(states)
                await api.complete(job_id)
                rest = [job async for job in states]
        versions = [job.version for job in (first, second, *rest)]
        assert versions == [2, 3, 4]
        assert (second.progress, second.message) == (60, "after the cut")
        assert rest[-1].status == "completed"
        assert len(tunnel.heads) == 2, "one reconnection"
        assert b"last-event-id: 2\r\n" in bytes(tunnel.heads[1]).lower()
        assert b"last-event-id" not in bytes(tunnel.heads[0]).lower()


async def test_watch_never_yields_a_version_twice_even_if_the_server_repeats(
    fake: Callable[..., FakeServer], flavor: str
) -> None:
    """States a reconnection sends again (a server ignoring Last-Event-ID) are skipped."""
    events = fake(
        in_order(
            Answer(
                200,
                sse((1, "queued"), (2, "processing")),
                {"Content-Type": "text/event-stream"},
                truncated=True,
            ),
            then=Answer(
                200,
                sse((1, "queued"), (2, "processing"), (3, "completed")),
                {"Content-Type": "text/event-stream"},
            ),
        )
    )
    async with connect(flavor, events.url) as jobs:
        with anyio.fail_after(seconds(10)):
            seen = [job.version async for job in jobs.watch("job_fake")]
    assert seen == [1, 2, 3]
    assert [request.headers.get("last-event-id") for request in events.requests] == [None, "2"]


async def test_watch_gives_up_after_the_retries_when_the_stream_keeps_dropping(
    fake: Callable[..., FakeServer], flavor: str
) -> None:
    """A stream that drops again and again without news ends in ConnectionFailed."""
    events = fake(in_order(then=Answer(200, sse(), {"Content-Type": "text/event-stream"})))
    async with connect(flavor, events.url, retry=RetryPolicy(retries=2, backoff=0.01)) as jobs:
        with anyio.fail_after(seconds(10)), pytest.raises(ConnectionFailed, match="3 attempt"):
            _ = [job async for job in jobs.watch("job_fake")]
    assert len(events.requests) == 3


async def test_watch_raises_for_an_unknown_or_removed_job(server: Start, flavor: str) -> None:
    """watch raises JobNotFound for an id that never existed, JobGone once it is cleaned up."""
    srv = server(JOBS_TERMINAL_TTL="0")
    async with connect(flavor, srv.base_url) as jobs, srv.client() as api:
        with pytest.raises(JobNotFound):
            _ = [job async for job in jobs.watch("job_nope")]
        job_id = await api.create_job()
        await api.complete(job_id)
        await wait_until_gone(jobs, job_id)
        with pytest.raises(JobGone):
            _ = [job async for job in jobs.watch(job_id)]


async def wait_until_gone(jobs: Any, job_id: str) -> None:
    with anyio.fail_after(seconds(10)):
        while True:
            try:
                await jobs.get_job(job_id)
            except JobGone:
                return
            await anyio.sleep(0.02)


# --- errors ---------------------------------------------------------------------------


async def test_server_errors_raise_the_servers_exceptions(server: Start, flavor: str) -> None:
    """404, 409, 410 and 422 raise JobNotFound, InvalidTransition, JobGone, InvalidJobData."""
    srv = server()
    async with connect(flavor, srv.base_url) as jobs:
        with pytest.raises(JobNotFound) as not_found:
            await jobs.get_job("job_nope")
        assert not_found.value.job_id == "job_nope"
        job_id = (await jobs.create_job()).job_id
        with pytest.raises(InvalidJobData) as invalid:
            await jobs.update_job_with_notification(job_id, progress=150)
        assert str(invalid.value) == "progress: must be at most 100"
        assert [(error.field, error.message) for error in invalid.value.errors] == [
            ("progress", "must be at most 100")
        ]
        await jobs.complete_job(job_id)
        with pytest.raises(InvalidTransition, match="completed and can no longer change"):
            await jobs.fail_job(job_id, "too late")
    short = server(JOBS_TERMINAL_TTL="0")
    async with connect(flavor, short.base_url) as jobs:
        job_id = (await jobs.create_job()).job_id
        await jobs.complete_job(job_id)
        await wait_until_gone(jobs, job_id)
        with pytest.raises(JobGone) as gone:
            await jobs.update_job_with_notification(job_id, progress=1)
        assert gone.value.job_id == job_id


async def test_each_exception_says_what_the_server_said(server: Start, flavor: str) -> None:
    """str() of every problem-mapped exception is the server's detail, field errors included."""
    key = "k" * 40
    srv = server(JOBS_API_KEY=key)
    deep: dict[str, Any] = {}
    for _ in range(40):
        deep = {"a": deep}
    refused_change = {"progress": 150, "metadata": deep}
    async with srv.client(headers={"Authorization": f"Bearer {key}"}) as http, srv.client() as bare:
        job_id = await http.create_job()
        said = {
            JobNotFound: await http.get("/api/jobs/job_nope"),
            InvalidJobData: await http.patch(f"/api/jobs/{job_id}", json=refused_change),
            Unauthenticated: await bare.get(f"/api/jobs/{job_id}"),
        }
        await http.complete(job_id)
        said[InvalidTransition] = await http.post(f"/api/jobs/{job_id}/fail", json={"error": "x"})
    raised: dict[type[JobsError], JobsError] = {}
    async with (
        connect(flavor, srv.base_url, api_key=key) as jobs,
        connect(flavor, srv.base_url) as anonymous,
    ):
        calls = {
            JobNotFound: lambda: jobs.get_job("job_nope"),
            InvalidJobData: lambda: jobs.update_job_with_notification(job_id, **refused_change),
            Unauthenticated: lambda: anonymous.get_job(job_id),
            InvalidTransition: lambda: jobs.fail_job(job_id, "x"),
        }
        for kind, call in calls.items():
            with pytest.raises(kind) as caught:
                await call()
            raised[kind] = caught.value
    assert {kind: str(exc) for kind, exc in raised.items()} == {
        kind: response.json()["detail"] for kind, response in said.items()
    }
    invalid = raised[InvalidJobData]
    assert isinstance(invalid, InvalidJobData)
    assert str(invalid) == "progress: must be at most 100 (and 1 more)"
    fields = [{"field": error.field, "message": error.message} for error in invalid.errors]
    assert fields == said[InvalidJobData].json()["errors"]
    assert [error.field for error in invalid.errors] == ["progress", "metadata"]


async def test_other_answers_raise_client_exceptions_with_the_problem(
    fake: Callable[..., FakeServer], flavor: str
) -> None:
    """401, 403, 400, 422 (idempotency), 500, 418 and a non-job body map to clear exceptions."""
    answers = fake(
        in_order(
            problem(401, "unauthenticated", "give an API key"),
            problem(403, "forbidden", "not yours"),
            problem(400, "malformed-json", "the body is not valid JSON"),
            problem(422, "idempotency-conflict", "key reused with another body"),
            problem(500, None, "the server hit an unexpected error"),
            Answer(418, b"I'm a teapot", {"Content-Type": "text/plain"}),
            Answer(200, b'{"hello": "world"}', {"Content-Type": "application/json"}),
            problem(404, None, "nothing at /api/jobs/x"),
        )
    )
    async with connect(flavor, answers.url, api_key="secret") as jobs:
        with pytest.raises(Unauthenticated, match="give an API key") as unauthenticated:
            await jobs.get_job("job_1")
        assert unauthenticated.value.presented
        with pytest.raises(Forbidden, match="not yours"):
            await jobs.get_job("job_1")
        with pytest.raises(MalformedJSON, match="not valid JSON"):
            await jobs.update_job_with_notification("job_1", progress=1)
        with pytest.raises(IdempotencyConflict, match="another body"):
            await jobs.create_job()
        with pytest.raises(ServerError, match="unexpected error") as server_error:
            await jobs.get_job("job_1")
        assert server_error.value.status_code == 500
        assert server_error.value.problem is not None
        assert server_error.value.problem.detail == "the server hit an unexpected error"
        with pytest.raises(ResponseError, match="418") as teapot:
            await jobs.get_job("job_1")
        assert (teapot.value.status_code, teapot.value.problem) == (418, None)
        with pytest.raises(ResponseError, match="not a Job"):
            await jobs.get_job("job_1")
        with pytest.raises(ResponseError, match="nothing at") as no_route:
            await jobs.get_job("job_1")
        assert not isinstance(no_route.value, JobNotFound)


async def test_api_key_and_read_token_are_sent_as_bearer(
    fake: Callable[..., FakeServer], server: Start, flavor: str
) -> None:
    """api_key goes with writes and token with reads, each as Authorization: Bearer."""
    srv = server()
    recorder = fake(in_order(), upstream=srv.base_url)
    async with connect(flavor, recorder.url, api_key="the-key", token="the-token") as jobs:
        job = await jobs.create_job()
        await jobs.update_job_with_notification(job.job_id, progress=5)
        await jobs.get_job(job.job_id)
    assert [(r.method, r.headers.get("authorization")) for r in recorder.requests] == [
        ("POST", "Bearer the-key"),
        ("GET", "Bearer the-token"),
        ("PATCH", "Bearer the-key"),
        ("GET", "Bearer the-token"),
    ]
    async with connect(flavor, recorder.url, token="only-token") as jobs:
        await jobs.update_job_with_notification(job.job_id, progress=6)
    assert recorder.requests[-1].headers.get("authorization") == "Bearer only-token"


# --- retries --------------------------------------------------------------------------


async def test_a_503_is_retried_after_retry_after_with_the_same_idempotency_key(
    fake: Callable[..., FakeServer], server: Start, flavor: str
) -> None:
    """A create answered 503 waits Retry-After, resends the same key, and makes one job."""
    srv = server()
    flaky = fake(
        in_order(problem(503, "backend-unavailable", "down", **{"Retry-After": "1"})),
        upstream=srv.base_url,
    )
    async with connect(flavor, flaky.url) as jobs, srv.client() as api:
        started = time.monotonic()
        job = await jobs.create_job(message="once")
        elapsed = time.monotonic() - started
        posts = [request for request in flaky.requests if request.method == "POST"]
        assert len(posts) == 2
        keys = {request.headers["idempotency-key"] for request in posts}
        assert len(keys) == 1
        assert "" not in keys
        assert elapsed >= 1.0, "waited for Retry-After, not just the 10 ms backoff"
        listed = (await api.get("/api/jobs")).json()["jobs"]
        assert [item["jobId"] for item in listed] == [job.job_id]


async def test_a_create_whose_answer_was_lost_makes_one_job(
    fake: Callable[..., FakeServer], server: Start, flavor: str
) -> None:
    """When the connection drops after the server made the job, the retry gets that same job."""
    srv = server()
    lossy = fake(in_order(FORWARD_THEN_DROP), upstream=srv.base_url)
    async with connect(flavor, lossy.url) as jobs, srv.client() as api:
        job = await jobs.create_job(job_type="llm_agent")
        listed = (await api.get("/api/jobs")).json()["jobs"]
        assert [item["jobId"] for item in listed] == [job.job_id]
        first, second = (r for r in lossy.requests if r.method == "POST")
        assert first.headers["idempotency-key"] == second.headers["idempotency-key"]
        another = await jobs.create_job(job_type="llm_agent")
        posts = [r.headers["idempotency-key"] for r in lossy.requests if r.method == "POST"]
        assert len(set(posts)) == 2, "a new call gets a new key"
        assert another.job_id != job.job_id


async def test_a_completion_whose_answer_was_lost_is_not_a_conflict(
    fake: Callable[..., FakeServer], server: Start, flavor: str
) -> None:
    """complete_job retried after its first attempt landed returns the completed job, no 409."""
    srv = server()
    lossy = fake(in_order(FORWARD_THEN_DROP), upstream=srv.base_url)
    async with connect(flavor, lossy.url) as jobs, srv.client() as api:
        job_id = await api.create_job()
        done = await jobs.complete_job(job_id, "doc_9")
        assert (done.status, done.document_id, done.version) == ("completed", "doc_9", 2)
        assert [r.method for r in lossy.requests] == ["POST", "POST", "GET"]
        other = await api.create_job()
        await api.fail(other, "someone else failed it")
        with pytest.raises(InvalidTransition):
            await jobs.complete_job(other)


async def test_503_on_every_attempt_raises_backend_unavailable(
    fake: Callable[..., FakeServer], flavor: str
) -> None:
    """After retries + 1 answers of 503 the call raises BackendUnavailable with the detail."""
    down = fake(
        in_order(then=problem(503, "backend-unavailable", "redis is down", **{"Retry-After": "0"}))
    )
    async with connect(flavor, down.url, retry=RetryPolicy(retries=2, backoff=0.01)) as jobs:
        with pytest.raises(BackendUnavailable, match="redis is down"):
            await jobs.get_job("job_1")
        assert len(down.requests) == 3
        down.script = in_order(then=problem(503, "too-many-streams", "full"))
        with pytest.raises(TooManyStreams, match="full"):
            _ = [job async for job in jobs.watch("job_1")]
        assert len(down.requests) == 6


async def test_a_429_is_retried_then_raised_as_rate_limited(
    fake: Callable[..., FakeServer], flavor: str
) -> None:
    """A 429 waits its Retry-After like a 503; once the retries are spent, RateLimited."""
    busy = fake(in_order(then=problem(429, "rate-limited", "too often", **{"Retry-After": "0"})))
    async with connect(flavor, busy.url, retry=RetryPolicy(retries=2, backoff=0.01)) as jobs:
        with pytest.raises(RateLimited, match="too often"):
            await jobs.get_job("job_1")
    assert len(busy.requests) == 3


async def test_a_421_raises_misdirected_request_at_once(
    fake: Callable[..., FakeServer], flavor: str
) -> None:
    """A server that does not answer to the URL's host name is not asked again."""
    other = fake(in_order(then=problem(421, "host-not-served", "not this host")))
    async with connect(flavor, other.url, retry=RetryPolicy(retries=2, backoff=0.01)) as jobs:
        with pytest.raises(MisdirectedRequest, match="not this host"):
            await jobs.get_job("job_1")
    assert len(other.requests) == 1


async def test_a_retry_after_beyond_max_backoff_is_not_waited_for(
    fake: Callable[..., FakeServer], flavor: str
) -> None:
    """A 503 asking for longer than the client's max_backoff is raised at once."""
    down = fake(
        in_order(then=problem(503, "backend-unavailable", "later", **{"Retry-After": "60"}))
    )
    policy = RetryPolicy(retries=5, backoff=0.01, max_backoff=1)
    async with connect(flavor, down.url, retry=policy) as jobs:
        with anyio.fail_after(seconds(5)), pytest.raises(BackendUnavailable):
            await jobs.get_job("job_1")
    assert len(down.requests) == 1


async def test_no_server_raises_connection_failed_after_the_retries(flavor: str) -> None:
    """Connection refused on every attempt ends in ConnectionFailed, naming the attempts."""
    url = f"http://127.0.0.1:{free_port()}"
    async with connect(flavor, url, retry=RetryPolicy(retries=2, backoff=0.01)) as jobs:
        with pytest.raises(ConnectionFailed, match="after 3 attempt") as failed:
            await jobs.create_job()
        assert isinstance(failed.value.__cause__, httpx.ConnectError)


def test_backoff_grows_exponentially_with_jitter_up_to_its_cap() -> None:
    """Retry n waits between half and all of backoff * 2**(n-1), capped, and Retry-After wins."""
    policy = RetryPolicy(retries=6, backoff=0.5, max_backoff=4)
    for retry, ceiling in [(1, 0.5), (2, 1), (3, 2), (4, 4), (5, 4)]:
        pauses = {policy.pause(retry) for _ in range(50)}
        assert all(p is not None and ceiling / 2 <= p <= ceiling for p in pauses), retry
        assert len(pauses) > 1, "jittered"
    assert policy.pause(7) is None
    assert policy.pause(1, retry_after=3) == 3
    assert policy.pause(1, retry_after=5) is None
    assert RetryPolicy(retries=0).pause(1) is None


# --- track ----------------------------------------------------------------------------


async def test_track_completes_the_job_when_the_block_succeeds(server: Start, flavor: str) -> None:
    """A track() block that ends normally completes its job with the document id it set."""
    srv = server()
    async with connect(flavor, srv.base_url) as jobs, srv.client() as api:
        async with jobs.track(job_type="file_processing", message="Upload queued") as job:
            assert (await api.job(job.job_id))["status"] == "queued"
            state = await job.update(status="processing", progress=50, message="Extracting...")
            assert (state.progress, job.state.progress) == (50, 50)
            job.document_id = "doc_123abc"
            job.completion_message = "Document processed successfully"
        stored = await api.job(job.job_id)
        assert (stored["status"], stored["progress"], stored["documentId"]) == (
            "completed",
            100,
            "doc_123abc",
        )
        assert stored["message"] == "Document processed successfully"
        assert stored["jobType"] == "file_processing"


async def test_track_fails_the_job_with_the_exception_and_reraises(
    server: Start, flavor: str
) -> None:
    """An exception in the block fails the job with its message (or type) and propagates."""
    srv = server()
    async with connect(flavor, srv.base_url) as jobs, srv.client() as api:
        tracked: list[Any] = []

        async def work() -> None:
            async with jobs.track(message="Upload queued") as job:
                tracked.append(job)
                await job.update(status="processing", progress=20)
                raise ValueError("Invalid file format")

        with pytest.raises(ValueError, match="Invalid file format"):
            await work()
        stored = await api.job(tracked[0].job_id)
        assert (stored["status"], stored["error"], stored["progress"]) == (
            "error",
            "Invalid file format",
            20,
        )
        with pytest.raises(KeyError):
            async with jobs.track() as silent:
                raise KeyError
        assert (await api.job(silent.job_id))["error"] == "KeyError"


async def test_track_takes_an_existing_job_by_id(server: Start, flavor: str) -> None:
    """track(job_id) reports on a job created elsewhere, and completes it at the end."""
    srv = server()
    async with connect(flavor, srv.base_url) as jobs, srv.client() as api:
        job_id = await api.create_job(jobType="document_analysis")
        async with jobs.track(job_id) as job:
            assert (job.job_id, job.state.job_type) == (job_id, "document_analysis")
        assert (await api.job(job_id))["status"] == "completed"
        with pytest.raises(JobNotFound):
            async with jobs.track("job_nope"):
                pytest.fail("the block runs only for a job that exists")


async def test_track_keeps_the_original_error_when_failing_the_job_fails(
    server: Start, flavor: str
) -> None:
    """If the job cannot be failed (it already ended), the block's own exception still wins."""
    srv = server()
    async with connect(flavor, srv.base_url) as jobs, srv.client() as api:
        tracked: list[Any] = []

        async def work() -> None:
            async with jobs.track() as job:
                tracked.append(job)
                await api.complete(job.job_id)  # someone else ends it meanwhile
                raise RuntimeError("work broke")

        with pytest.raises(RuntimeError, match="work broke") as raised:
            await work()
        assert any("could not be marked as failed" in note for note in raised.value.__notes__)
        assert (await api.job(tracked[0].job_id))["status"] == "completed"


async def test_a_cancelled_async_block_fails_its_job_and_stays_cancelled(server: Start) -> None:
    """Cancelling an async track() block fails the job (shielded), then the cancel goes on."""
    srv = server()
    async with AsyncJobsClient(srv.base_url, retry=FAST) as jobs, srv.client() as api:
        with anyio.CancelScope() as scope:
            async with jobs.track() as job:
                scope.cancel()
                await anyio.sleep_forever()
        assert scope.cancelled_caught
        assert (await api.job(job.job_id))["status"] == "error"
