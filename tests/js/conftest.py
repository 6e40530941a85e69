"""Fixtures of the JavaScript package's tests.

``node`` installs ``clients/js``'s development dependencies (``npm ci``, once
per lock; see :mod:`tests.js.npm`) and gives the tools' paths. ``server`` is
the end-to-end fixture of :mod:`tests.e2e.conftest` (a real ``python -m app``
per test); ``control`` serves the one request a Node test cannot make by
itself: ``POST /restart``, which restarts its server and answers the new URL.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

# The e2e server fixture, and the hook its teardown reads (a passing test's server log
# must hold no traceback; a failing test's is printed).
from tests.e2e.conftest import (  # noqa: F401
    RunningServer,
    pytest_runtest_makereport,
    server,
)
from tests.js.npm import Node, install


@pytest.fixture(scope="session")
def node() -> Node:
    return install()


@dataclass
class Control:
    """A server that a Node test may have restarted: ``current`` is the one running now."""

    current: RunningServer
    settings: dict[str, str]
    start: Callable[..., RunningServer]
    url: str = ""
    restarts: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def restart(self) -> RunningServer:
        """Stop the server and start a fresh one with the same settings (a new port)."""
        with self.lock:
            self.current.stop()
            self.current = self.start(**self.settings)
            self.restarts += 1
            return self.current


@pytest.fixture
def control(request: pytest.FixtureRequest) -> Iterator[Callable[..., Control]]:
    """Factory: ``control(**settings)`` starts a server and the endpoint that restarts it."""
    start: Callable[..., RunningServer] = request.getfixturevalue("server")
    endpoints: list[HTTPServer] = []

    def open_control(**settings: str) -> Control:
        controlled = Control(start(**settings), settings, start)

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                if self.path != "/restart":
                    self.send_error(404)
                    return
                body = json.dumps({"url": controlled.restart().base_url}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass  # quiet: the test's output is Node's

        # One thread serves every request, and lives as long as the test: the servers it
        # starts get SIGTERM when the thread that started them ends (the e2e fixture's
        # PR_SET_PDEATHSIG), as they would from a thread per request.
        endpoint = HTTPServer(("127.0.0.1", 0), Handler)
        endpoints.append(endpoint)
        threading.Thread(target=endpoint.serve_forever, daemon=True).start()
        controlled.url = f"http://127.0.0.1:{endpoint.server_address[1]}"
        return controlled

    yield open_control
    for endpoint in endpoints:
        endpoint.shutdown()
        endpoint.server_close()
