"""A React app on ``jobcast/react`` in Chromium: a job's progress live with ``useJob``, every job
with ``useJobs``, and ``pauseWhenHidden`` in a real browser.

The app (``clients/js/test/browser/app.jsx``) is bundled with esbuild, React
included (all from ``clients/js/node_modules``, installed from the lock by
:func:`tests.js.npm.install`; nothing from a CDN), and served by a static
server of its own: another origin than Jobcast's, allowed by
``JOBS_CORS_ORIGINS``, under a Content-Security-Policy that lets it connect
to loopback only. The page fixture fails a test on any console error.
"""

from __future__ import annotations

import functools
import subprocess
import threading
from collections.abc import Callable, Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import REFUSED, Console, Server, eventually, open_streams, wait
from tests.conftest import seconds
from tests.js.npm import JS, install

pytestmark = pytest.mark.timeout(seconds(600))

PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta http-equiv="Content-Security-Policy"
        content="default-src 'self'; img-src data:; connect-src http://127.0.0.1:* ws://127.0.0.1:*">
  <title>Jobcast in React</title>
  <link rel="icon" href="data:,">
  <script type="module" src="/app.js"></script>
</head>
<body><div id="root"></div></body>
</html>
"""
HIDE = """(state) => {
  for (const [name, value] of [['visibilityState', state], ['hidden', state === 'hidden']]) {
    Object.defineProperty(document, name, { configurable: true, get: () => value });
  }
  document.dispatchEvent(new Event('visibilitychange'));
}"""


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The app bundled with esbuild (React in production mode) beside its index.html."""
    node = install()
    out = tmp_path_factory.mktemp("react-app")
    result = subprocess.run(
        [
            node.bin("esbuild"),
            "test/browser/app.jsx",
            "--bundle",
            "--format=esm",
            "--jsx=automatic",
            "--define:process.env.NODE_ENV='production'",
            f"--outfile={out / 'app.js'}",
            "--log-level=warning",
        ],
        cwd=JS,
        capture_output=True,
        text=True,
        timeout=seconds(120),
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (out / "index.html").write_text(PAGE)
    return out


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def origin(bundle: Path) -> Iterator[str]:
    """The app's own origin: a static server of the bundle."""
    handler = functools.partial(QuietHandler, directory=str(bundle))
    static = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=static.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{static.server_address[1]}"
    static.shutdown()
    static.server_close()


@pytest.fixture
def jobcast(server: Callable[..., Server], origin: str) -> Server:
    """Jobcast, letting the app's origin call it."""
    return server(JOBS_CORS_ORIGINS=origin, JOBS_DEMO="0")


def open_app(page: Page, origin: str, jobcast: Server, query: str) -> None:
    page.goto(f"{origin}/?server={jobcast.url}&{query}")


@pytest.mark.parametrize("transport", ["sse", "ws", "poll"])
def test_use_job_shows_a_jobs_progress_live(
    page: Page, origin: str, jobcast: Server, transport: str
) -> None:
    """useJob renders the job, each change as it lands, and stops at its terminal state."""
    job_id = jobcast.create(jobType="file_processing", message="Upload queued")
    open_app(page, origin, jobcast, f"job={job_id}&transport={transport}")
    view = page.locator("#job")
    expect(view).to_have_attribute("data-state", "live", timeout=wait(10))
    expect(page.locator("#message")).to_have_text("Upload queued")
    expect(view).to_have_attribute("data-transport", transport)

    jobcast.update(job_id, status="processing", progress=40, message="Extracting text...")
    expect(page.locator("#percent")).to_have_text("40%")
    expect(page.locator("#message")).to_have_text("Extracting text...")
    expect(page.locator("#progress")).to_have_js_property("value", 40)
    jobcast.complete(job_id, documentId="doc_123abc")
    expect(page.locator("#document")).to_have_text("doc_123abc")
    expect(view).to_have_attribute("data-closed", "true")
    expect(page.locator("#percent")).to_have_text("100%")
    assert page.evaluate("window.jobVersions") == [1, 2, 3]


def test_use_jobs_lists_every_job_live(page: Page, origin: str, jobcast: Server) -> None:
    """useJobs lists the jobs there are, then new ones and changes, over a WebSocket."""
    first = jobcast.create(message="First")
    open_app(page, origin, jobcast, "transport=ws")
    expect(page.locator("#jobs")).to_have_attribute("data-synced", "true", timeout=wait(10))
    expect(page.locator(f'li[data-job-id="{first}"]')).to_have_text("First 0%")
    second = jobcast.create(message="Second")
    jobcast.update(first, status="processing", progress=70)
    expect(page.locator("li").first).to_have_attribute("data-job-id", second)  # newest first
    expect(page.locator(f'li[data-job-id="{first}"]')).to_have_text("First 70%")
    expect(page.locator("#jobs")).to_have_attribute("data-state", "live")


@pytest.mark.parametrize("transport", ["sse", "ws"])
def test_use_jobs_renders_its_first_snapshot_whole(
    page: Page, origin: str, jobcast: Server, transport: str
) -> None:
    """A stream brings the jobs there are an event each; the list renders them together,
    once the snapshot is whole, not once per job."""
    made = [jobcast.create(message=f"Job {n}") for n in range(40)]
    open_app(page, origin, jobcast, f"transport={transport}")
    expect(page.locator("#jobs")).to_have_attribute("data-synced", "true", timeout=wait(10))
    expect(page.locator("li")).to_have_count(len(made))
    lengths = page.evaluate("window.listLengths")
    assert [length for length in lengths if 0 < length < len(made)] == [], lengths


@pytest.mark.parametrize("transport", ["sse", "ws"])
def test_use_jobs_renders_a_reset_snapshot_whole(
    page: Page, origin: str, jobcast: Server, console: Console, transport: str
) -> None:
    """A restarted server cannot resume the list: its snapshot (a reset) replaces the old
    jobs at once, not after showing each new job beside them."""
    console.allow(REFUSED)
    console.allow(r"ERR_INCOMPLETE_CHUNKED_ENCODING|ERR_EMPTY_RESPONSE")
    for n in range(40):
        jobcast.create(message=f"Old {n}")
    open_app(page, origin, jobcast, f"transport={transport}")
    expect(page.locator("li")).to_have_count(40, timeout=wait(10))
    jobcast.stop()
    expect(page.locator("#jobs")).not_to_have_attribute("data-state", "live", timeout=wait(10))
    jobcast.start()  # in memory: it starts with none of them
    for n in range(20):
        jobcast.create(message=f"New {n}")
    expect(page.locator("li")).to_have_count(20, timeout=wait(20))
    lengths = page.evaluate("window.listLengths")
    assert max(lengths) == 40, lengths  # never the old jobs and new ones side by side


@pytest.mark.parametrize("transport", ["sse", "ws"])
def test_hooks_on_one_job_share_one_connection(
    page: Page, origin: str, jobcast: Server, transport: str
) -> None:
    """Three components useJob the same job: one stream carries it to all three; one
    leaving keeps it for the others; the last leaving closes it."""
    job_id = jobcast.create(message="Shared")
    open_app(page, origin, jobcast, f"job={job_id}&transport={transport}&copies=3")
    views = [page.locator(f"#job-{n}") for n in (1, 2, 3)]
    for view in views:
        expect(view).to_have_attribute("data-state", "live", timeout=wait(10))
    eventually(lambda: open_streams(jobcast, transport) == 1, "one stream for the three")
    page.evaluate("window.showCopies(1)")
    expect(page.locator(".job")).to_have_count(1)
    jobcast.update(job_id, status="processing", progress=60, message="Still heard")
    expect(views[0].locator("#message")).to_have_text("Still heard")
    assert open_streams(jobcast, transport) == 1
    page.evaluate("window.showCopies(0)")
    expect(page.locator(".job")).to_have_count(0)
    eventually(lambda: open_streams(jobcast, transport) == 0, "the stream closed")


def test_hooks_with_get_token_keep_a_connection_each(
    page: Page, origin: str, jobcast: Server
) -> None:
    """Two getTokens may give tokens of two scopes: hooks given one share with no other."""
    job_id = jobcast.create(message="Mine")
    open_app(page, origin, jobcast, f"job={job_id}&copies=2&gettoken=1")
    for n in (1, 2):
        expect(page.locator(f"#job-{n}")).to_have_attribute("data-state", "live", timeout=wait(10))
    eventually(lambda: open_streams(jobcast, "sse") == 2, "a stream for each")


NETWORK = """(online) => {
  Object.defineProperty(navigator, 'onLine', { configurable: true, get: () => online });
  window.dispatchEvent(new Event(online ? 'online' : 'offline'));
}"""


@pytest.mark.parametrize("transport", ["sse", "ws", "poll"])
def test_the_browser_going_offline_is_said_at_once_and_recovered_from(
    page: Page, origin: str, jobcast: Server, transport: str
) -> None:
    """The browser says it lost its network (its connection may linger, silent, for half
    a minute before the watchdog gives up on it): the hook says offline at once, and is
    live again, with what changed meanwhile, once the network is back."""
    job_id = jobcast.create(message="Before")
    open_app(page, origin, jobcast, f"job={job_id}&transport={transport}")
    view = page.locator("#job")
    expect(view).to_have_attribute("data-state", "live", timeout=wait(10))
    page.evaluate(NETWORK, False)
    expect(view).to_have_attribute("data-state", "offline", timeout=2000)
    jobcast.update(job_id, status="processing", message="Meanwhile")
    page.evaluate(NETWORK, True)
    expect(view).to_have_attribute("data-state", "live", timeout=wait(20))
    expect(page.locator("#message")).to_have_text("Meanwhile")


@pytest.mark.parametrize("transport", ["sse", "ws"])
def test_use_jobs_filters_by_owner(
    page: Page, origin: str, jobcast: Server, transport: str
) -> None:
    """useJobs({owner}) lists that owner's jobs only, and only theirs as they change."""
    theirs = jobcast.create(message="Alice's", owner="alice")
    other = jobcast.create(message="Bob's", owner="bob")
    open_app(page, origin, jobcast, f"owner=alice&transport={transport}")
    expect(page.locator("#jobs")).to_have_attribute("data-synced", "true", timeout=wait(10))
    jobcast.update(other, progress=50)
    newer = jobcast.create(message="Alice's next", owner="alice")
    expect(page.locator(f'li[data-job-id="{newer}"]')).to_have_text("Alice's next 0%")
    items = page.locator("li")
    assert items.evaluate_all("(li) => li.map((item) => item.dataset.jobId)") == [newer, theirs]


@pytest.mark.parametrize("transport", ["sse", "ws"])
def test_pause_when_hidden_closes_the_stream_and_resumes_from_its_cursor(
    page: Page, origin: str, jobcast: Server, transport: str
) -> None:
    """Hidden, the page holds no stream and hears nothing; shown again, it resumes where it
    was (SSE: ``lastEventId``), gets what changed meanwhile once, and goes on live."""
    job_id = jobcast.create(jobType="llm_agent", message="Thinking...")
    asked: list[str] = []
    page.on("request", lambda request: asked.append(request.url))
    open_app(page, origin, jobcast, f"job={job_id}&transport={transport}&pause=1")
    view = page.locator("#job")
    expect(view).to_have_attribute("data-state", "live", timeout=wait(10))
    expect(view).to_have_attribute("data-version", "1")

    page.evaluate(HIDE, "hidden")
    expect(view).to_have_attribute("data-state", "paused")
    eventually(lambda: open_streams(jobcast, transport) == 0, "the stream to close while hidden")
    jobcast.update(job_id, status="processing", progress=30, message="Searching...")
    jobcast.update(job_id, progress=60, message="Writing...")
    page.wait_for_timeout(seconds(0.5) * 1000)
    expect(view).to_have_attribute("data-version", "1")
    before = len(asked)

    page.evaluate(HIDE, "visible")
    expect(view).to_have_attribute("data-version", "3")
    expect(page.locator("#message")).to_have_text("Writing...")
    expect(view).to_have_attribute("data-state", "live")
    if transport == "sse":
        resumed = [url for url in asked[before:] if "/events" in url]
        assert resumed, asked[before:]
        assert all("lastEventId=1" in url for url in resumed), resumed
    jobcast.update(job_id, progress=90, message="Almost done")
    expect(view).to_have_attribute("data-version", "4")
    assert page.evaluate("window.jobVersions") == [1, 3, 4]
