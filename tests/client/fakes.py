"""What a real server cannot be made to do on demand, for the client's tests.

:class:`CutProxy` is a TCP proxy whose connections a test can cut.
:class:`FakeServer` is an HTTP server that answers from a script: canned
answers (a 503 with Retry-After, a teapot, a stream that repeats itself), or
forwarding to the real server, optionally losing the answer on the way back.
"""

from __future__ import annotations

import contextlib
import functools
import json
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast

import httpx2
from jobcast_client import Job, JobStatus

from tests.conftest import seconds

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
    """A problem+json answer as the server writes them."""
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
        self.upstream = httpx2.Client(base_url=upstream or "http://127.0.0.1:9")
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = seconds(10)

            def do_GET(self) -> None:
                fake._handle(self)

            do_POST = do_PATCH = do_DELETE = do_GET

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._http.daemon_threads = True
        # A short poll: shutdown() waits for the serving loop's next look (0.5 s by default).
        serve = functools.partial(self._http.serve_forever, poll_interval=0.02)
        self._thread = threading.Thread(target=serve, daemon=True)
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


# --- wire helpers ---------------------------------------------------------------------

EVENT_STREAM = {"Content-Type": "text/event-stream"}


def job_data(
    version: int, status: str = "processing", *, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The fake job as the server sends it, at ``version``; ``extra`` adds fields (camelCase)."""
    moment = datetime(2026, 1, 1, tzinfo=UTC)
    job = Job(
        job_id="job_fake",
        job_type="generic",
        status=cast(JobStatus, status),
        message=f"v{version}",
        progress=100 if status == "completed" else version,
        metadata={},
        created_at=moment,
        updated_at=moment,
        version=version,
    )
    return {**job.to_wire(), **(extra or {})}


def job_answer(
    version: int, status: str = "processing", *, extra: dict[str, Any] | None = None
) -> Answer:
    body = json.dumps(job_data(version, status, extra=extra)).encode()
    return Answer(200, body, {"Content-Type": "application/json"})


def sse(*versions_and_statuses: tuple[int, str], extra: bytes = b"") -> bytes:
    """An event stream of the fake job at these versions, then ``extra`` raw bytes."""
    return (
        b"retry: 10\n\n"
        + b"".join(
            b"id: %d\nevent: job\ndata: %s\n\n"
            % (version, json.dumps(job_data(version, status)).encode())
            for version, status in versions_and_statuses
        )
        + extra
    )
