"""Jobcast behind a real nginx, configured by the block that docs/deployment.md documents.

The configuration under test is read from the doc's "Behind a reverse proxy"
section and changed in two places only, its listen port and its upstream's
port, so the doc cannot drift from what works. nginx runs in the foreground
as a child process with a prefix, pid file, logs and temp folders of its own,
on a free loopback port; Jobcast runs protected (``JOBS_API_KEY``), as the
doc says it must behind a proxy.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import httpx2
import pytest
from jobcast_client import JobsClient as PythonClient, RetryPolicy
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Origin

from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS
from tests.conftest import seconds
from tests.store.redis_server import RedisServer

from .conftest import ROOT, JobsClient, _die_with_parent, free_port, restart
from .sse_reader import SSEStream

if TYPE_CHECKING:
    from .conftest import RunningServer

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

DEPLOYMENT = ROOT / "docs" / "deployment.md"
KEY = "proxy-key-0123456789abcdefghij0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}
FOREIGN = "http://evil.example"
HOST_AS_SENT = "proxy_set_header Host $http_host;"
HOST_WITHOUT_PORT = "proxy_set_header Host $host;"

# What Debian's nginx.conf wraps around a conf.d file, pointed at this test's folder.
MAIN_CONFIG = """\
{user}worker_processes 1;
daemon off;
pid {folder}/nginx.pid;
error_log {folder}/error.log;
events {{
    worker_connections 128;
}}
http {{
    access_log {folder}/access.log;
    client_body_temp_path {folder}/client_body;
    proxy_temp_path {folder}/proxy;
    fastcgi_temp_path {folder}/fastcgi;
    uwsgi_temp_path {folder}/uwsgi;
    scgi_temp_path {folder}/scgi;

{site}
}}
"""


def nginx_binary() -> str:
    """The nginx executable; fails the test under CI, skips it elsewhere."""
    path = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("nginx is missing: .ci/run installs it (apt-get install nginx-light)")
        pytest.skip("install nginx to run the reverse-proxy tests: apt-get install nginx-light")
    return path


def documented_site() -> str:
    """The one nginx block of the "Behind a reverse proxy" section of docs/deployment.md."""
    text = DEPLOYMENT.read_text()
    section = text.partition("\n## Behind a reverse proxy\n")[2].partition("\n## ")[0]
    blocks = re.findall(r"^```nginx\n(.*?)^```$", section, re.MULTILINE | re.DOTALL)
    assert len(blocks) == 1, "the proxy section of docs/deployment.md holds one nginx block"
    site: str = blocks[0]
    return site


def with_ports(site: str, listen: int, upstreams: list[int], folder: Path) -> str:
    """The documented block, listening on loopback ``listen``, proxying to ``upstreams`` (a
    ``server`` line each, with the documented line's parameters), and logging into
    ``folder``."""
    site, listens = re.subn(r"\blisten 80;", f"listen 127.0.0.1:{listen};", site)

    def each(line: re.Match[str]) -> str:
        indent, parameters = line.group(1), line.group(2)
        return "\n".join(f"{indent}server 127.0.0.1:{port}{parameters};" for port in upstreams)

    pattern = r"^( *)server 127\.0\.0\.1:8000\b([^;]*);"
    site, servers = re.subn(pattern, each, site, flags=re.MULTILINE)
    assert (listens, servers) == (1, 1), "the block has one `listen 80;` and one upstream server"
    return site.replace("/var/log/nginx/", f"{folder}/")


def with_tls(site: str, port: int, folder: Path) -> str:
    """The block serving HTTPS and HTTP/2 (`listen … ssl http2;`, as the manual's HTTPS
    paragraph says), with a self-signed certificate made in ``folder``."""
    key, cert = folder / "key.pem", folder / "cert.pem"
    request = ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
    subprocess.run(
        ["openssl", *request, "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    listen = f"listen 127.0.0.1:{port};"
    assert site.count(listen) == 1
    return site.replace(
        listen,
        f"listen 127.0.0.1:{port} ssl http2;\n"
        f"    ssl_certificate {cert};\n    ssl_certificate_key {key};",
    )


@dataclass
class Nginx:
    """One nginx master process in the foreground, in its own folder."""

    port: int
    process: subprocess.Popen[bytes]
    folder: Path
    scheme: str = "http"

    @property
    def origin(self) -> str:
        """The origin a browser that loaded a page through this proxy sends."""
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def client(self, **kwargs: Any) -> JobsClient:
        """An HTTP client that reaches Jobcast through this proxy, with the API key."""
        return JobsClient(base_url=self.origin, headers=AUTH, timeout=seconds(10), **kwargs)

    def log(self) -> str:
        """nginx's error log so far."""
        path = self.folder / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def wait_until_listening(self, deadline: float) -> None:
        """Poll-connect to the port until nginx accepts; fail if it exits or never does."""
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"nginx exited at start-up:\n{self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=seconds(1)):
                    return
            except OSError:
                time.sleep(0.02)
        raise AssertionError(f"nginx did not listen on {self.port} in time:\n{self.log()}")

    def stop(self) -> None:
        """Fast shutdown (SIGTERM), then SIGKILL if it lingers."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=seconds(5))
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=seconds(5))


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[Callable[..., Nginx]]:
    """Start nginx in front of a server with a site config (the documented one by default)."""
    binary = nginx_binary()
    started: list[Nginx] = []

    def start(*upstreams: RunningServer, site: str | None = None, tls: bool = False) -> Nginx:
        """``tls``: HTTPS and HTTP/2 with a certificate of its own, as the manual says."""
        folder = tmp_path / f"nginx-{len(started)}"
        folder.mkdir()
        port = free_port()
        ports = [upstream.port for upstream in upstreams]
        site = with_ports(site or documented_site(), port, ports, folder)
        if tls:
            site = with_tls(site, port, folder)
        config = folder / "nginx.conf"
        config.write_text(
            MAIN_CONFIG.format(
                # Without `user`, a root master runs its workers as nobody, who cannot
                # enter pytest's private temp folder; a non-root one runs them as itself.
                user="user root;\n" if os.geteuid() == 0 else "",
                folder=folder,
                site=site,
            )
        )
        with (folder / "output.log").open("wb") as output:
            process = subprocess.Popen(
                [binary, "-p", f"{folder}/", "-c", str(config), "-e", str(folder / "error.log")],
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        proxy = Nginx(port, process, folder, "https" if tls else "http")
        started.append(proxy)
        proxy.wait_until_listening(time.monotonic() + seconds(10))
        return proxy

    yield start
    for proxy in started:
        proxy.stop()
        print(f"--- nginx error log ({proxy.origin}) ---\n{proxy.log()}")


@pytest.fixture
def proxy(nginx: Callable[..., Nginx], server: Callable[..., RunningServer]) -> Nginx:
    """The documented nginx in front of a protected Jobcast."""
    return nginx(server(JOBS_API_KEY=KEY))


async def next_job_event(stream: SSEStream, within: float) -> dict[str, Any]:
    """The next `job` event's job, skipping other kinds of event."""
    with anyio.fail_after(within):
        while (event := await stream.next_event(within)).event != "job":
            pass
    job: dict[str, Any] = event.json()
    return job


async def next_job_frame(ws: ClientConnection, within: float) -> dict[str, Any]:
    """The next `job` frame's job, skipping other kinds of frame."""
    with anyio.fail_after(within):
        while (frame := json.loads(await ws.recv()))["type"] != "job":
            pass
    job: dict[str, Any] = frame["job"]
    return job


async def test_sse_events_pass_through_as_they_happen(proxy: Nginx) -> None:
    """A change reaches an open SSE stream through the proxy at once, and the stream stays open."""
    async with proxy.client() as api:
        job_id = await api.create_job(message="queued")
        url = f"{proxy.origin}/api/jobs/{job_id}/events"
        headers = {**AUTH, "Accept-Encoding": "gzip"}  # as browsers send: a gzipped stream stalls
        async with await SSEStream.open(url, headers=headers, within=seconds(5)) as stream:
            assert stream.status == 200
            assert (await next_job_event(stream, seconds(5)))["message"] == "queued"
            await api.update(job_id, status="processing", progress=40)
            job = await next_job_event(stream, seconds(2))
            assert (job["version"], job["progress"]) == (2, 40)
            assert (stream.ended, stream.eof) == (False, False), "the stream stays open"


async def test_read_tokens_stay_out_of_the_proxys_access_log(proxy: Nginx) -> None:
    """A browser's read token travels in the URL: the documented log format leaves query
    strings (and referrers, the page's own URL) out, while it still logs the path."""
    async with proxy.client() as api:
        job_id = await api.create_job()
        minted = await api.post("/api/tokens", json={"jobId": job_id})
        token = minted.json()["token"]
    page = f"{proxy.origin}/?token={token}"
    async with JobsClient(base_url=proxy.origin, headers={"Referer": page}) as browser:
        polled = await browser.get(f"/api/jobs/{job_id}", params={"token": token})
        assert polled.status_code == 200, polled.text
    log = (proxy.folder / "jobcast.access.log").read_text()
    assert f'"GET /api/jobs/{job_id} HTTP/1.1" 200' in log
    assert token not in log
    assert "token=" not in log


def test_a_worker_rides_out_a_restart_behind_the_proxy(
    nginx: Callable[..., Nginx], server: Callable[..., RunningServer], tmp_path: Path
) -> None:
    """While Jobcast restarts behind nginx, nginx answers 502: the Python client retries
    through it, and its create lands once, when the server is back."""
    first = server(JOBS_API_KEY=KEY)
    proxy = nginx(first)
    first.stop()
    policy = RetryPolicy(retries=20, backoff=0.05, max_backoff=0.5)
    created: list[str] = []
    with PythonClient(proxy.origin, api_key=KEY, retry=policy) as worker:
        thread = threading.Thread(target=lambda: created.append(worker.create_job().job_id))
        thread.start()
        log = proxy.folder / "jobcast.access.log"
        deadline = time.monotonic() + seconds(10)
        while '"POST /api/jobs HTTP/1.1" 502' not in (log.read_text() if log.exists() else ""):
            assert time.monotonic() < deadline, "nginx never answered the create 502"
            time.sleep(0.02)
        again = restart(first, tmp_path / "again.log")
        try:
            thread.join(seconds(10))
            assert created, "the create gave up"
            assert [job.job_id for job in worker.list_jobs()] == created
        finally:
            again.stop()


def test_a_rolling_restart_behind_the_proxy_fails_no_write(
    nginx: Callable[..., Nginx], server: Callable[..., RunningServer], tmp_path: Path
) -> None:
    """Two workers on Redis in the documented upstream, restarted one at a time as the
    manual says (the next once the one before answers again): a worker with the Python
    client's default retries writes through it all, none of its writes answered 502."""
    redis = RedisServer(tmp_path)
    redis.start()
    settings = {"JOBS_API_KEY": KEY, "JOBS_BACKEND": "redis", "JOBS_REDIS_URL": redis.url}
    first, second = server(**settings), server(**settings)
    proxy = nginx(first, second)
    restarted: list[RunningServer] = []
    try:
        with PythonClient(proxy.origin, api_key=KEY) as worker:
            job_id = worker.create_job().job_id
            second.stop()
            # Round robin: one of these is sent to the stopped worker first.
            for progress in (10, 20):
                worker.update_job_with_notification(job_id, progress=progress)
            restarted.append(restart(second, tmp_path / "second-again.log"))
            first.stop()
            for progress in (30, 40, 50):
                worker.update_job_with_notification(job_id, progress=progress)
            restarted.append(restart(first, tmp_path / "first-again.log"))
            assert worker.get_job(job_id).progress == 50
    finally:
        for again in restarted:
            again.stop()
        redis.stop()
    log = (proxy.folder / "jobcast.access.log").read_text()
    assert '" 502 ' not in log, log


async def test_browser_on_the_proxys_origin_writes_and_opens_websockets(proxy: Nginx) -> None:
    """A page served by the proxy may PATCH a job and subscribe to it over a WebSocket."""
    async with proxy.client() as api:
        job_id = await api.create_job()
        response = await api.patch(
            f"/api/jobs/{job_id}", json={"progress": 10}, headers={"Origin": proxy.origin}
        )
        assert response.status_code == 200, response.text
        url = f"ws://127.0.0.1:{proxy.port}/api/jobs/ws"
        async with connect(
            url, origin=Origin(proxy.origin), additional_headers=AUTH, open_timeout=seconds(5)
        ) as ws:
            await ws.send(json.dumps({"type": "subscribe", "jobId": job_id}))
            job = await next_job_frame(ws, seconds(5))
            assert (job["jobId"], job["progress"]) == (job_id, 10)


async def test_reconnect_after_the_final_event_gets_204(proxy: Nginx) -> None:
    """An SSE reconnect whose Last-Event-ID is a finished job's last version gets 204."""
    async with proxy.client() as api:
        job_id = await api.create_job()
        final = (await api.complete(job_id))["version"]
        url = f"{proxy.origin}/api/jobs/{job_id}/events"
        headers = {**AUTH, "Last-Event-ID": str(final)}
        async with await SSEStream.open(url, headers=headers, within=seconds(5)) as stream:
            assert stream.status == 204


async def test_foreign_origin_is_still_refused(proxy: Nginx) -> None:
    """Through the proxy, a page on another origin can neither write nor open a WebSocket."""
    async with proxy.client() as api:
        job_id = await api.create_job()
        response = await api.patch(
            f"/api/jobs/{job_id}", json={"progress": 10}, headers={"Origin": FOREIGN}
        )
        assert response.status_code == 403, response.text
        url = f"ws://127.0.0.1:{proxy.port}/api/jobs/ws"
        with pytest.raises(InvalidStatus) as refused:
            await connect(
                url, origin=Origin(FOREIGN), additional_headers=AUTH, open_timeout=seconds(5)
            )
        assert refused.value.response.status_code == 403
        assert (await api.job(job_id))["version"] == 1


async def test_proxy_that_drops_the_port_from_host_gets_browser_writes_refused(
    nginx: Callable[..., Nginx], server: Callable[..., RunningServer]
) -> None:
    """Proxied with `Host $host` on a non-default port, the page's own PATCH is refused: 403."""
    site = documented_site()
    assert site.count(HOST_AS_SENT) == 1
    dropping = nginx(server(JOBS_API_KEY=KEY), site=site.replace(HOST_AS_SENT, HOST_WITHOUT_PORT))
    async with dropping.client() as api:
        job_id = await api.create_job()
        await api.update(job_id, progress=5)  # proxied fine: only the browser's Origin fails
        response = await api.patch(
            f"/api/jobs/{job_id}", json={"progress": 10}, headers={"Origin": dropping.origin}
        )
        assert response.status_code == 403, response.text


def test_the_page_streams_output_over_http2(
    nginx: Callable[..., Nginx], server: Callable[..., RunningServer]
) -> None:
    """Served over HTTPS with HTTP/2, every stream of the page shares one connection, so
    it streams a running job's output on the job's own SSE stream instead of polling it."""
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{CHROMIUM} is missing: CI must install Debian's chromium")
        pytest.skip("install Debian's chromium for the browser tests: apt-get install chromium")
    from playwright.sync_api import expect, sync_playwright

    jobcast = server()
    proxy = nginx(jobcast, tls=True)
    with httpx2.Client(base_url=jobcast.base_url, timeout=seconds(10)) as api:
        agent = api.post("/api/jobs", json={"jobType": "llm_agent"}).json()["jobId"]
        api.patch(f"/api/jobs/{agent}", json={"status": "processing", "message": "Answering"})
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
            )
            try:
                page = browser.new_context(ignore_https_errors=True).new_page()
                asked: list[str] = []
                page.on("request", lambda request: asked.append(request.url))
                page.goto(f"{proxy.origin}/")
                served = "() => performance.getEntriesByType('navigation')[0].nextHopProtocol"
                assert page.evaluate(served) == "h2"
                live = page.locator("#connection")
                expect(live).to_have_attribute("data-state", "live", timeout=seconds(10) * 1000)
                chunks = [{"data": word, "kind": "token"} for word in ("Hello", ", ", "world")]
                appended = api.post(f"/api/jobs/{agent}/output", json={"chunks": chunks})
                assert appended.status_code == 200, appended.text
                text = page.locator(f'.job[data-job-id="{agent}"] .job-output-text')
                expect(text).to_have_text("Hello, world", timeout=seconds(10) * 1000)
            finally:
                browser.close()
    streamed = [url for url in asked if f"/api/jobs/{agent}/events" in url]
    assert streamed, asked
    assert all("output=1" in url for url in streamed), asked
    polled = [url for url in asked if url.split("?")[0].endswith(f"/api/jobs/{agent}")]
    assert polled == [], "output streamed, not polled"
