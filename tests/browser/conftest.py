"""Browser fixtures: the real server (``python -m app``) and Debian's Chromium via Playwright.

``server`` is a factory: ``server(JOBS_DEMO="0")`` starts one process on a
free loopback port and waits for ``/healthz``; ``restart()`` stops it and
starts it again on the same port. ``page`` is a fresh Chromium page that
fails the test if the page logs a console error (a Content-Security-Policy
violation among them: the page declares ``default-src 'self'`` itself) or
throws, unless the test allowed that message.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import pytest
from playwright.sync_api import (
    Browser,
    ConsoleMessage,
    Error,
    Locator,
    Page,
    Playwright,
    expect,
    sync_playwright,
)

from tests.conftest import seconds

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "artifacts" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
# Every expect() waits at most this long unless a test says otherwise.
expect.set_options(timeout=seconds(10) * 1000)
# While the server is down, Chromium itself logs each refused connection, and, as it
# goes down, each request it cut (the favicon, still loading when a test stops it).
REFUSED = r"ERR_CONNECTION_REFUSED|ERR_CONNECTION_RESET|WebSocket connection to .* failed"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    """One ``python -m app`` process on a fixed port; restartable."""

    port: int
    env: dict[str, str]
    log: Path
    process: subprocess.Popen[bytes] | None = None
    api: httpx2.Client = field(init=False)

    def __post_init__(self) -> None:
        self.api = httpx2.Client(base_url=self.url, timeout=seconds(10))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {**os.environ, **self.env, "JOBS_HOST": "127.0.0.1", "JOBS_PORT": str(self.port)}
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "app"], cwd=ROOT, env=env, stdout=log, stderr=log
            )
        deadline = time.monotonic() + seconds(20)
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"the server exited at start-up:\n{self.log.read_text()}")
            try:
                if httpx2.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx2.TransportError:
                pass
            time.sleep(0.05)
        pytest.fail(f"the server did not answer /healthz in time:\n{self.log.read_text()}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=seconds(15))
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def crash(self) -> None:
        """Kill the process outright (SIGKILL): no goodbye to open streams."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def restart(self, *, crash: bool = False) -> None:
        if crash:
            self.crash()
        else:
            self.stop()
        self.start()

    # The job calls the tests repeat.

    def create(self, **body: Any) -> str:
        response = self.api.post("/api/jobs", json=body)
        assert response.status_code == 201, response.text
        job_id: str = response.json()["jobId"]
        return job_id

    def update(self, job_id: str, **fields: Any) -> None:
        response = self.api.patch(f"/api/jobs/{job_id}", json=fields)
        assert response.status_code == 200, response.text

    def complete(self, job_id: str, **body: Any) -> None:
        response = self.api.post(f"/api/jobs/{job_id}/complete", json=body)
        assert response.status_code == 200, response.text

    def fail(self, job_id: str, error: str) -> None:
        response = self.api.post(f"/api/jobs/{job_id}/fail", json={"error": error})
        assert response.status_code == 200, response.text


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    started: list[Server] = []

    def start(**env: str) -> Server:
        running = Server(free_port(), env, tmp_path / f"server-{len(started)}.log")
        started.append(running)
        running.start()
        return running

    yield start
    for running in started:
        running.stop()
        running.api.close()
        text = running.log.read_text()
        assert "Traceback" not in text, text


@pytest.fixture
def jobcast(server: Callable[..., Server]) -> Server:
    """A server with the default settings (memory backend, demo on)."""
    return server()


# Module scope, not session: Playwright's sync API keeps an event loop running
# in this thread while it is open, which would break the anyio tests after us.
@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as running:
        yield running


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    if not Path(CHROMIUM).exists() or shutil.which(CHROMIUM) is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{CHROMIUM} is missing: CI must install Debian's chromium")
        pytest.skip("install Debian's chromium: apt-get install chromium")
    launched = playwright.chromium.launch(
        executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
    )
    yield launched
    launched.close()


@dataclass
class Console:
    """Console errors and page errors, minus the ones a test expects."""

    errors: list[str] = field(default_factory=list)
    allowed: list[re.Pattern[str]] = field(default_factory=list)

    def allow(self, pattern: str) -> None:
        """Tolerate console errors matching ``pattern`` (e.g. refused connections)."""
        self.allowed.append(re.compile(pattern))

    def on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            where = message.location.get("url", "")
            self.errors.append(f"{message.text} ({where})")

    def on_page_error(self, error: Error) -> None:
        self.errors.append(f"page error: {error.message}\n{error.stack}")

    def unexpected(self) -> list[str]:
        return [e for e in self.errors if not any(p.search(e) for p in self.allowed)]


@pytest.fixture
def console() -> Console:
    return Console()


@pytest.fixture
def page_for(
    browser: Browser, console: Console, server: Callable[..., Server]
) -> Iterator[Callable[..., Page]]:
    """Factory: a new page (own context) watched for console errors.

    It asks for ``server`` so that the servers a test starts stop after its pages
    close: a page left open while its server stops (a polling page, say) would log a
    refused connection the test never caused."""
    contexts = []

    def open_page(**context_options: Any) -> Page:
        context = browser.new_context(**context_options)
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(seconds(10) * 1000)
        page.on("console", console.on_console)
        page.on("pageerror", console.on_page_error)
        return page

    yield open_page
    for context in contexts:
        context.close()
    assert console.unexpected() == []


@pytest.fixture
def page(page_for: Callable[..., Page]) -> Page:
    return page_for(viewport={"width": 1000, "height": 760})


def wait(value: float) -> float:
    """A Playwright timeout (ms) in the suite's time unit."""
    return seconds(value) * 1000


def row(page: Page, job_id: str) -> Locator:
    """The status page's row of one job."""
    return page.locator(f'.job[data-job-id="{job_id}"]')


def settled(locator: Locator) -> None:
    """Wait until nothing moves in ``locator``'s element: no animation or transition runs
    there but those that last as long as a state does (a processing row's dot). A new row
    reveals over 300 ms. Playwright checks that a target is still once per action, and a
    double-click is one action: its second click can land where a growing row has moved
    the target from. Under ``page.clock`` its check counts faked frames, and can pass
    mid-reveal."""
    locator.page.wait_for_function(
        """element => element.getAnimations({subtree: true}).every(
            (a) => a.playState !== 'running' || a.effect.getTiming().iterations === Infinity)""",
        arg=locator.element_handle(),
    )


def open_live(page: Page, server: Server, query: str = "") -> None:
    """Open the status page (``query`` like ``transport=ws``) and wait until it is live."""
    page.goto(server.url + (f"/?{query}" if query else "/"))
    expect(page.locator("#connection")).to_have_attribute("data-state", "live", timeout=wait(10))


def screenshot(page: Page, name: str, *, full_page: bool = True) -> None:
    """Save a screenshot to artifacts/screenshots/ (git-ignored) for a human to look at."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    # Let rows finish sliding in (the live dot's few pulses need not end first).
    rows = page.locator(".job-list")
    settled(rows if rows.count() else page.locator("body"))
    page.screenshot(path=SCREENSHOTS / f"{name}.png", full_page=full_page)


def eventually(check: Callable[[], bool], what: str, within: float = 10) -> None:
    deadline = time.monotonic() + seconds(within)
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def open_streams(jobcast: Server, transport: str) -> float:
    """``jobcast_connections{transport=…}``: the SSE or WebSocket connections open now."""
    metrics = jobcast.api.get("/metrics").text
    prefix = f'jobcast_connections{{transport="{transport}"}} '
    lines = metrics.splitlines()
    return next(float(line[len(prefix) :]) for line in lines if line.startswith(prefix))


def tab_beside(page: Page, console: Console) -> Page:
    """Another tab of ``page``'s browser window: the same context, so the same connections
    (six per origin over HTTP/1.1, for all its tabs), watched for console errors too."""
    tab = page.context.new_page()
    tab.set_default_timeout(seconds(10) * 1000)
    tab.on("console", console.on_console)
    tab.on("pageerror", console.on_page_error)
    return tab


def set_visibility(page: Page, state: str) -> None:
    """Show the page as the browser would when its tab is hidden (``"hidden"``) or shown
    again (``"visible"``): ``document.visibilityState`` and a ``visibilitychange``."""
    page.evaluate(
        """(state) => {
            const define = (name, get) => Object.defineProperty(document, name, {
                configurable: true, get });
            define('visibilityState', () => state);
            define('hidden', () => state === 'hidden');
            document.dispatchEvent(new Event('visibilitychange'));
        }""",
        state,
    )
