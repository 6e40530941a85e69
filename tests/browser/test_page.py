"""The status-indicator page in a real browser, against a real server process."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import REFUSED, Console, Server, open_live, row, screenshot, wait

TRANSPORTS = ["sse", "ws", "poll"]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_rows_follow_a_job_through_its_life(page: Page, jobcast: Server, transport: str) -> None:
    """A job created, updated, completed and another failed show up live over each transport."""
    open_live(page, jobcast, f"transport={transport}")
    expect(page.locator("#connection")).to_have_attribute("data-transport", transport)

    job_id = jobcast.create(
        jobType="file_processing", message="Upload queued", metadata={"fileName": "contract.pdf"}
    )
    job = row(page, job_id)
    expect(job).to_have_attribute("data-status", "queued")
    expect(job.locator(".job-type")).to_have_text("File processing")
    expect(job.locator(".job-message")).to_have_text("Upload queued")
    expect(job.locator(".badge")).to_have_text("Queued")

    jobcast.update(job_id, status="processing", progress=45, message="Extracting document data...")
    expect(job.locator(".job-message")).to_have_text("Extracting document data...")
    expect(job.locator(".badge")).to_have_text("Processing")
    expect(job.locator(".job-percent")).to_have_text("45%")
    expect(job.get_by_role("progressbar")).to_have_attribute("aria-valuenow", "45")
    other = jobcast.create(jobType="llm_agent", message="Agent queued")
    jobcast.update(other, status="processing", progress=70, message="Drafting response...")
    expect(row(page, other).locator(".job-percent")).to_have_text("70%")
    screenshot(page, f"mid-progress-{transport}")

    jobcast.complete(job_id, documentId="doc_123abc", message="Document processed successfully")
    expect(job).to_have_attribute("data-status", "completed")
    expect(job.locator(".badge")).to_have_text("Completed")
    expect(job.locator(".job-message")).to_have_text("Document processed successfully")
    expect(job.locator(".job-detail")).to_have_text("Document doc_123abc")
    expect(job.locator(".job-percent")).to_have_text("100%")

    jobcast.fail(other, "Invalid file format")
    expect(row(page, other)).to_have_attribute("data-status", "error")
    expect(row(page, other).locator(".badge")).to_have_text("Error")
    expect(row(page, other).locator(".job-detail")).to_have_text("Invalid file format")
    expect(row(page, other).locator(".job-message")).to_have_text("Processing failed")
    screenshot(page, f"end-{transport}")


@pytest.mark.parametrize("crash", [False, True], ids=["stopped", "killed"])
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_page_recovers_after_a_server_restart(
    page: Page, server: Callable[..., Server], console: Console, transport: str, crash: bool
) -> None:
    """After a restart the page reconnects by itself, shows new jobs and drops the lost ones."""
    console.allow(REFUSED)
    console.allow(r"ERR_INCOMPLETE_CHUNKED_ENCODING|ERR_EMPTY_RESPONSE|ERR_CONNECTION_RESET")
    # The lost job's output watch asks for it again, and the browser logs the 404 it gets,
    # or the poll the kill cut short.
    console.allow(r"status of 404 \(Not Found\)|ERR_CONTENT_LENGTH_MISMATCH")
    jobcast = server()
    open_live(page, jobcast, f"transport={transport}")
    old = jobcast.create(jobType="generic", message="Before the restart")
    jobcast.update(old, status="processing", progress=30)
    expect(row(page, old).locator(".job-percent")).to_have_text("30%")

    jobcast.restart(crash=crash)
    new = jobcast.create(jobType="document_analysis", message="After the restart")

    expect(row(page, new).locator(".job-message")).to_have_text(
        "After the restart", timeout=wait(20)
    )
    expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    expect(page.locator("#connection")).to_have_attribute("data-transport", transport)
    expect(row(page, old)).to_have_count(0)
    expect(page.locator(".job")).to_have_count(1)


def test_connection_indicator_shows_the_outage(
    page: Page, jobcast: Server, console: Console
) -> None:
    """While the server is down the indicator leaves 'live', and returns once it is back.
    Live, its dot pulses a few times and then rests: an idle page does not redraw forever."""
    console.allow(REFUSED)
    open_live(page, jobcast)
    pulses = page.locator("#connection").evaluate(
        "element => element.getAnimations({subtree: true}).map(a => a.effect.getTiming()"
        ".iterations)"
    )
    assert pulses == [3]
    jobcast.stop()
    expect(page.locator("#connection")).to_have_attribute(
        "data-state", re.compile("reconnecting|offline")
    )
    expect(page.locator("#connection-label")).to_have_text(re.compile("Reconnecting|Offline"))
    jobcast.start()
    expect(page.locator("#connection")).to_have_attribute("data-state", "live", timeout=wait(20))
    expect(page.locator("#connection-label")).to_have_text("Live")


def test_removed_jobs_leave_the_page(page: Page, server: Callable[..., Server]) -> None:
    """A job the server cleans up (`removed`) disappears without waiting for the linger."""
    jobcast = server(JOBS_TERMINAL_TTL="1")
    open_live(page, jobcast)
    job_id = jobcast.create(message="Short-lived")
    expect(row(page, job_id)).to_have_count(1)
    jobcast.complete(job_id)
    expect(row(page, job_id)).to_have_attribute("data-status", "completed")
    expect(row(page, job_id)).to_have_count(0, timeout=wait(8))


def test_finished_rows_fade_out_after_a_while(page: Page, jobcast: Server) -> None:
    """A finished row stays visible, then fades out about 20 seconds later; active rows stay."""
    page.clock.install()
    open_live(page, jobcast)
    done = jobcast.create(message="Finishing")
    active = jobcast.create(message="Still going")
    jobcast.complete(done, documentId="doc_1")
    expect(row(page, done)).to_have_attribute("data-status", "completed")
    page.clock.run_for(10_000)
    expect(row(page, done)).to_have_count(1)
    page.clock.run_for(12_000)
    expect(row(page, done)).to_have_count(0)
    expect(row(page, active)).to_have_count(1)


def test_updates_change_the_row_in_place(page: Page, jobcast: Server) -> None:
    """An update rewrites the job's existing row: the same DOM node, never a new one."""
    open_live(page, jobcast)
    job_id = jobcast.create(message="Starting")
    expect(row(page, job_id)).to_have_count(1)
    page.evaluate(
        "(id) => { window.__row = document.querySelector(`[data-job-id='${id}']`) }", job_id
    )
    for progress in (10, 20, 30, 40):
        jobcast.update(job_id, status="processing", progress=progress, message=f"Step {progress}")
    expect(row(page, job_id).locator(".job-percent")).to_have_text("40%")
    same = page.evaluate(
        "(id) => window.__row === document.querySelector(`[data-job-id='${id}']`)", job_id
    )
    assert same is True


@pytest.mark.parametrize("transport", ["sse", "ws"])
def test_hundreds_of_jobs_at_once(page: Page, jobcast: Server, transport: str) -> None:
    """Three hundred jobs, half there before the page opens and half created while it
    watches, then all updated, end up as 300 current rows. Over WebSocket the
    snapshot arrives as batch frames (changes pending together share a frame)."""
    ids = [jobcast.create(jobType="generic", message=f"Batch item {n}") for n in range(150)]
    open_live(page, jobcast, f"transport={transport}")
    ids += [jobcast.create(jobType="generic", message=f"Batch item {n}") for n in range(150, 300)]
    expect(page.locator(".job")).to_have_count(300, timeout=wait(20))
    for job_id in ids:
        jobcast.update(job_id, status="processing", progress=50, message="Halfway")
    expect(page.locator('.job[data-status="processing"]')).to_have_count(300, timeout=wait(20))
    expect(row(page, ids[0]).locator(".job-percent")).to_have_text("50%")
    expect(row(page, ids[-1]).locator(".job-percent")).to_have_text("50%")


def test_demo_button_starts_a_job(page: Page, jobcast: Server) -> None:
    """A demo button creates a sample job whose simulated worker moves it along to the end."""
    open_live(page, jobcast)
    button = page.get_by_role("button", name="File processing")
    with page.expect_response("**/api/demo/jobs") as created:
        button.click()
    assert created.value.status == 201
    job_id = created.value.json()["jobId"]
    job = row(page, job_id)
    expect(job.locator(".job-type")).to_have_text("File processing")
    expect(job).to_have_attribute("data-status", "processing", timeout=wait(10))
    expect(job).to_have_attribute("data-status", re.compile("completed|error"), timeout=wait(20))
    if job.get_attribute("data-status") == "completed":
        expect(job.locator(".job-message")).to_have_text("Document processed successfully")
        expect(job.locator(".job-detail")).to_have_text(re.compile(r"Document doc_\w+"))
    else:
        expect(job.locator(".job-detail")).not_to_be_empty()


def test_demo_panel_is_hidden_without_demo_routes(
    page: Page, server: Callable[..., Server], console: Console
) -> None:
    """With JOBS_DEMO=0 the page's probe says the demo is off (no 404, no console error)."""
    jobcast = server(JOBS_DEMO="0")
    with page.expect_response("**/api/demo") as probe:
        open_live(page, jobcast)
    assert probe.value.status == 200
    assert probe.value.json() == {"enabled": False, "jobTypes": []}
    assert jobcast.api.post("/api/demo/jobs", json={}).status_code in (404, 405)
    expect(page.locator("#demo")).to_be_hidden()
    expect(page.get_by_role("button", name="File processing")).to_have_count(0)


def test_falls_back_to_polling_when_streaming_fails(
    page: Page, jobcast: Server, console: Console
) -> None:
    """When the event stream keeps failing while the API answers, the page switches to polling."""
    console.allow(r"status of 502")
    page.route("**/api/jobs/events*", lambda route: route.fulfill(status=502, body="bad gateway"))
    page.goto(jobcast.url + "/")
    expect(page.locator("#connection")).to_have_attribute(
        "data-transport", "poll", timeout=wait(20)
    )
    expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    job_id = jobcast.create(message="Seen by polling")
    expect(row(page, job_id).locator(".job-message")).to_have_text("Seen by polling")


def test_accessible_and_fits_a_phone(page_for: Callable[..., Page], jobcast: Server) -> None:
    """Progress bars and the live region speak, controls take keyboard focus, 375 px fits."""
    page = page_for(viewport={"width": 375, "height": 740}, color_scheme="dark")
    open_live(page, jobcast)
    job_id = jobcast.create(
        jobType="document_analysis", message="Starting analysis...", metadata={"title": "NDA"}
    )
    jobcast.update(job_id, status="processing", progress=62, message="Extracting key terms...")
    bar = row(page, job_id).get_by_role("progressbar", name="Document analysis progress")
    expect(bar).to_have_attribute("aria-valuenow", "62")
    expect(bar).to_have_attribute("aria-valuemin", "0")
    expect(bar).to_have_attribute("aria-valuemax", "100")
    failed = jobcast.create(jobType="file_processing", message="Upload queued")
    expect(page.locator("#announcer")).to_contain_text("New file processing job queued")
    jobcast.fail(failed, "Invalid file format")
    expect(page.locator("#announcer")).to_contain_text("File processing job failed")
    expect(page.locator("#announcer")).to_have_attribute("aria-live", "polite")

    page.keyboard.press("Tab")
    focused = page.evaluate("() => document.activeElement.textContent.trim()")
    assert focused == "File processing"
    outline = page.evaluate("() => getComputedStyle(document.activeElement).outlineStyle")
    assert outline == "solid"

    width = page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= 375
    screenshot(page, "phone-dark")


WATCH_ONE = """async ([jobId, transport]) => {
    const { watchJob } = await import('/static/jobcast.js');
    window.seen = [];
    window.states = [];
    window.watch = watchJob(jobId, {
        transport,
        onJob: (job) => window.seen.push(job),
        onState: (state) => window.states.push(state),
    });
}"""


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_watch_job_follows_one_job_to_the_end(page: Page, jobcast: Server, transport: str) -> None:
    """jobcast.js watchJob delivers each new version of one job, in order, up to its end."""
    page.goto(jobcast.url + "/")
    job_id = jobcast.create(jobType="file_processing", message="Upload queued")
    page.evaluate(WATCH_ONE, [job_id, transport])
    page.wait_for_function("() => window.states.some((s) => s.state === 'live')")
    page.wait_for_function("() => window.seen.length === 1")
    jobcast.update(job_id, status="processing", progress=50, message="Extracting document data...")
    page.wait_for_function("() => window.seen.at(-1).progress === 50")
    jobcast.complete(job_id, documentId="doc_9")
    page.wait_for_function("() => window.seen.at(-1).status === 'completed'")

    seen = page.evaluate("() => window.seen")
    versions = [job["version"] for job in seen]
    assert versions == sorted(set(versions))
    assert seen[-1]["documentId"] == "doc_9"
    assert seen[-1]["jobId"] == job_id
    states = page.evaluate("() => window.states")
    assert {"state": "live", "transport": transport} in states


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_token_goes_on_every_url(page: Page, jobcast: Server, transport: str) -> None:
    """A `token` option is appended as ?token= to every request the client makes."""
    # A bare document of the server's origin, so the page's own client stays out of it.
    page.route("**/favicon.ico", lambda route: route.fulfill(status=204))
    page.goto(jobcast.url + "/static/favicon.svg")
    urls: list[str] = []
    page.on("request", lambda request: urls.append(request.url))
    page.on("websocket", lambda socket: urls.append(socket.url))
    page.evaluate(
        """async (transport) => {
            const { watchJobs } = await import('/static/jobcast.js');
            window.states = [];
            watchJobs({ transport, token: 's3cret', onState: (s) => window.states.push(s.state) });
        }""",
        transport,
    )
    page.wait_for_function("() => window.states.includes('live')")
    api = [url for url in urls if "/api/" in url]
    assert api
    assert all("token=s3cret" in url for url in api), api


def test_page_runs_under_a_strict_content_security_policy(page: Page, jobcast: Server) -> None:
    """The page declares CSP default-src 'self' and still works: no inline code, no eval."""
    open_live(page, jobcast)
    policy = page.locator('meta[http-equiv="Content-Security-Policy"]')
    expect(policy).to_have_attribute("content", "default-src 'self'")
    job_id = jobcast.create(jobType="llm_agent", message="Agent queued")
    expect(row(page, job_id).locator(".job-icon svg")).to_have_count(1)
    expect(row(page, job_id).locator(".badge")).to_have_css("color", re.compile(r"rgb\(\d+"))
