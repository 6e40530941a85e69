"""Cancel and Delete on the status page: offered only to a viewer who may write (a page
opened without a token, on a server without an API key), and shown only once the server's
change comes back over the live stream, as any other client's change is."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from playwright.sync_api import Locator, Page, Route, expect

from tests.browser.conftest import Console, Server, open_live, row, screenshot, settled, wait

TRANSPORTS = ["sse", "ws", "poll"]
KEY = "browser-test-key-" + "k" * 24
AUTH = {"Authorization": f"Bearer {KEY}"}
IDLE_AFTER_MS = 5 * 60_000  # app.js: an unfinished job this quiet looks abandoned
CONFIRM_AFTER_MS = 500  # app.js: a Delete's confirming click counts from this long after
CONFIRM_MS = 8_000  # app.js: and until this long after


def cancel_button(page: Page, job_id: str) -> Locator:
    return row(page, job_id).get_by_role("button", name="Cancel")


def delete_button(page: Page, job_id: str) -> Locator:
    return row(page, job_id).get_by_role("button", name="Delete")


def cancel(server: Server, job_id: str, **body: object) -> None:
    response = server.api.post(f"/api/jobs/{job_id}/cancel", json=body)
    assert response.status_code == 200, response.text


class Held:
    """The page's requests to one URL pattern, held unanswered until ``release()``."""

    def __init__(self, page: Page, pattern: str) -> None:
        self.routes: list[Route] = []
        self.released = False
        page.route(pattern, self.hold)

    def hold(self, route: Route) -> None:
        # The browser may have sent the request before the test hears of it: one heard
        # of after release() goes on at once, rather than being held for ever.
        if self.released:
            route.continue_()
        else:
            self.routes.append(route)

    def release(self) -> None:
        self.released = True
        for route in self.routes:
            route.continue_()


def test_cancel_shows_once_the_stream_brings_it(page: Page, jobcast: Server) -> None:
    """Cancel (a labelled button, used from the keyboard) asks the server; "Cancel
    requested" appears when the new version arrives on the stream, while the page's own
    request is still unanswered. Then the button goes, and focus stays in the row."""
    open_live(page, jobcast)
    job_id = jobcast.create(jobType="file_processing", message="Uploading")
    jobcast.update(job_id, status="processing", progress=20)
    button = cancel_button(page, job_id)
    expect(button).to_have_accessible_name(f"Cancel File processing job {job_id[4:12]}")
    expect(row(page, job_id).locator(".cancel-tag")).to_be_hidden()
    expect(delete_button(page, job_id)).to_have_count(0)  # running, and not idle

    # The page's request is held; the test makes the same cancel, which the stream carries.
    held = Held(page, "**/cancel")
    button.focus()
    page.keyboard.press("Enter")
    expect(button).to_have_attribute("aria-busy", "true")
    cancel(jobcast, job_id, reason="Wrong file")
    tag = row(page, job_id).locator(".cancel-tag")
    expect(tag).to_have_text("Cancel requested")
    expect(tag).to_have_attribute("title", "Reason: Wrong file")
    expect(row(page, job_id).locator(".job-reason")).to_have_text("Reason: Wrong file")
    expect(button).to_be_hidden()  # asking again would change nothing
    expect(row(page, job_id)).to_have_attribute("data-status", "processing")
    assert page.evaluate("() => document.activeElement.closest('.job') !== null")
    assert len(held.routes) == 1
    held.release()  # the second cancel: 200, the job unchanged
    expect(page.locator("#announcer")).to_contain_text("Cancel requested for file processing job")
    assert jobcast.api.get(f"/api/jobs/{job_id}").json()["version"] == 3


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_cancel_from_elsewhere_shows_and_the_click_cancels(
    page: Page, jobcast: Server, transport: str
) -> None:
    """A cancel another client makes shows on the row live over each transport; a click
    on another row's Cancel reaches the server, and comes back the same way."""
    open_live(page, jobcast, f"transport={transport}")
    theirs = jobcast.create(jobType="llm_agent", message="Thinking...")
    mine = jobcast.create(jobType="generic", message="Queued work")
    expect(cancel_button(page, theirs)).to_be_visible()

    cancel(jobcast, theirs, reason="The user closed the tab")
    expect(row(page, theirs).locator(".cancel-tag")).to_be_visible()
    expect(row(page, theirs).locator(".job-reason")).to_have_text("Reason: The user closed the tab")
    expect(cancel_button(page, theirs)).to_be_hidden()

    cancel_button(page, mine).click()
    expect(row(page, mine).locator(".cancel-tag")).to_be_visible()
    expect(row(page, mine).locator(".job-reason")).to_be_hidden()  # no reason given
    job = jobcast.api.get(f"/api/jobs/{mine}").json()
    assert job["cancelRequested"] is True
    assert job["status"] == "queued"  # a request to the worker, not an ending
    screenshot(page, f"cancel-requested-{transport}")


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_delete_removes_a_finished_row_once_removed_arrives(
    page: Page, jobcast: Server, transport: str
) -> None:
    """A finished row's Delete, clicked twice (the first asks to confirm), deletes the job:
    the row stays while the request is held (nothing is removed before the server
    confirms), goes when `removed` arrives, and the job then answers 410. A running row
    has no Delete."""
    page.clock.install()
    open_live(page, jobcast, f"transport={transport}")
    done = jobcast.create(jobType="document_analysis", message="Analysing")
    running = jobcast.create(message="Still going")
    jobcast.complete(done, documentId="doc_5")
    expect(row(page, done)).to_have_attribute("data-status", "completed")
    expect(delete_button(page, running)).to_have_count(0)
    expect(cancel_button(page, done)).to_have_count(0)
    screenshot(page, f"actions-{transport}")

    held = Held(page, f"**/api/jobs/{done}")
    button = delete_button(page, done)
    expect(button).to_have_accessible_name(f"Delete Document analysis job {done[4:12]}")
    button.click()
    expect(button).to_have_text("Confirm delete")
    expect(button).to_have_accessible_name(f"Confirm delete Document analysis job {done[4:12]}")
    assert held.routes == []  # one click sends nothing
    page.clock.run_for(CONFIRM_AFTER_MS)  # read, then confirmed
    button.click()
    expect(button).to_have_attribute("aria-busy", "true")
    expect(row(page, done)).to_have_count(1)
    assert jobcast.api.get(f"/api/jobs/{done}").status_code == 200
    held.release()
    expect(row(page, done)).to_have_count(0)
    assert jobcast.api.get(f"/api/jobs/{done}").status_code == 410
    expect(row(page, running)).to_have_count(1)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_deleted_elsewhere_the_row_goes(
    page: Page, jobcast: Server, console: Console, transport: str
) -> None:
    """A job another client deletes, queued or processing (its output followed), leaves
    the page at once, and its output watch ends with it. (A poll of its output may cross
    the deletion: the browser then logs the 410 it got, and nothing else is logged.)"""
    console.allow(r"status of 410 \(Gone\)")
    open_live(page, jobcast, f"transport={transport}")
    queued = jobcast.create(message="Queued")
    running = jobcast.create(message="Running")
    jobcast.update(running, status="processing", progress=5)
    expect(row(page, running)).to_have_attribute("data-status", "processing")
    for job_id in (queued, running):
        assert jobcast.api.delete(f"/api/jobs/{job_id}").status_code == 204
        expect(row(page, job_id)).to_have_count(0)
    asked: list[str] = []
    page.on("request", lambda request: asked.append(request.url))
    page.wait_for_timeout(wait(1))  # a poll of the job would have been made by now
    assert [url for url in asked if running in url] == []


def test_a_delete_not_confirmed_goes_back(page: Page, jobcast: Server) -> None:
    """A Delete double-clicked, or clicked once and not again within eight seconds, asks no
    more and deletes nothing; so does one that loses focus. The next click asks again."""
    page.clock.install()
    open_live(page, jobcast)
    done = jobcast.create(message="Done")
    jobcast.complete(done)
    button = delete_button(page, done)
    settled(row(page, done))
    button.dblclick()  # one gesture: it asks, and the second click is not the answer
    expect(button).to_have_text("Confirm delete")
    expect(page.locator("#announcer")).to_contain_text("press again to confirm")
    screenshot(page, "delete-confirm")
    page.clock.run_for(CONFIRM_MS)
    expect(button).to_have_text("Delete")
    button.click()
    expect(button).to_have_text("Confirm delete")
    page.keyboard.press("Tab")  # focus moves on: the question is withdrawn
    expect(button).to_have_text("Delete")
    assert jobcast.api.get(f"/api/jobs/{done}").status_code == 200


def test_an_idle_unfinished_job_can_be_deleted(page: Page, jobcast: Server) -> None:
    """An unfinished job without a change for five minutes looks abandoned: besides Cancel
    it gets Delete, which removes it. (The page's clock runs ahead here, the server's does
    not: every job ages alike, so one job is watched across the threshold.)"""
    page.clock.install()
    open_live(page, jobcast)
    idle = jobcast.create(jobType="llm_agent", message="Waiting for a worker")
    expect(cancel_button(page, idle)).to_be_visible()
    expect(delete_button(page, idle)).to_have_count(0)

    # Jumps, as a page's clock does across a sleep: run_for would also time out, in page
    # time, the question a quiet stream asks the server in real time.
    page.clock.fast_forward(IDLE_AFTER_MS - 30_000)
    expect(delete_button(page, idle)).to_have_count(0)
    page.clock.fast_forward(30_000)
    expect(delete_button(page, idle)).to_be_visible()
    expect(cancel_button(page, idle)).to_be_visible()

    delete_button(page, idle).click()
    page.clock.run_for(CONFIRM_AFTER_MS)
    delete_button(page, idle).click()
    expect(row(page, idle)).to_have_count(0)
    assert jobcast.api.get(f"/api/jobs/{idle}").status_code == 410


def test_a_refused_write_says_why_and_the_buttons_go(
    page: Page, server: Callable[..., Server], console: Console
) -> None:
    """When the server refuses a write after all (here: it takes the request for another
    machine's), the row shows the server's own words and the page offers no more writes."""
    console.allow(r"status of 403")
    jobcast = server(JOBS_FORWARDED_ALLOW_IPS="127.0.0.1")
    open_live(page, jobcast)
    job_id = jobcast.create(message="Running")
    other = jobcast.create(message="Another")
    page.route(
        "**/cancel",
        lambda route: route.continue_(
            headers={**route.request.headers, "x-forwarded-for": "203.0.113.9"}
        ),
    )
    cancel_button(page, job_id).click()
    problem = row(page, job_id).locator(".job-problem")
    expect(problem).to_contain_text("Could not cancel: this server has no JOBS_API_KEY")
    expect(page.locator("#announcer")).to_contain_text("Could not cancel")
    expect(page.locator(".job-action")).to_have_count(2)
    expect(page.locator(".job-action:visible")).to_have_count(0)
    expect(cancel_button(page, other)).to_be_hidden()
    assert "cancelRequested" not in jobcast.api.get(f"/api/jobs/{job_id}").json()


@pytest.mark.parametrize("scope", ["owner", "job"])
def test_read_tokens_get_no_buttons(page: Page, server: Callable[..., Server], scope: str) -> None:
    """On a server with an API key the page reads with a token, which cannot write: no
    Cancel, no Delete, on running and finished jobs alike."""
    jobcast = server(JOBS_API_KEY=KEY)
    created = jobcast.api.post("/api/jobs", json={"owner": "alice"}, headers=AUTH)
    running, job_token = created.json()["jobId"], created.json()["token"]
    done = jobcast.api.post("/api/jobs", json={"owner": "alice"}, headers=AUTH).json()["jobId"]
    assert jobcast.api.post(f"/api/jobs/{done}/complete", headers=AUTH).status_code == 200
    token = job_token
    if scope == "owner":
        minted = jobcast.api.post("/api/tokens", json={"owner": "alice"}, headers=AUTH)
        token = minted.json()["token"]

    open_live(page, jobcast, f"token={token}")
    expect(row(page, running)).to_have_count(1)
    if scope == "owner":
        expect(row(page, done)).to_have_attribute("data-status", "completed")
    response = jobcast.api.post(f"/api/jobs/{running}/cancel", json={}, headers=AUTH)
    assert response.status_code == 200, response.text
    expect(row(page, running).locator(".cancel-tag")).to_be_visible()  # it still reads
    expect(page.locator(".job-action")).to_have_count(0)
    expect(page.locator(".job.has-actions")).to_have_count(0)


def test_a_token_on_an_open_server_gets_no_buttons(page: Page, jobcast: Server) -> None:
    """An open server ignores the token, but whoever was handed one was handed reading."""
    open_live(page, jobcast, "token=a-read-token")
    job_id = jobcast.create(message="Running")
    expect(row(page, job_id)).to_have_count(1)
    expect(page.locator(".job-action")).to_have_count(0)


def test_buttons_fit_a_phone(page_for: Callable[..., Page], jobcast: Server) -> None:
    """At 360 px a row's buttons get a line of their own, a long reason wraps, and nothing
    overflows the screen."""
    page = page_for(viewport={"width": 360, "height": 740}, color_scheme="dark")
    open_live(page, jobcast)
    running = jobcast.create(jobType="document_analysis", metadata={"title": "Quarterly"})
    jobcast.update(running, status="processing", progress=40, message="Extracting key terms...")
    asked = jobcast.create(jobType="file_processing", message="Uploading")
    cancel(jobcast, asked, reason="Superseded by " + "a-much-newer-upload-" * 5)
    done = jobcast.create(jobType="llm_agent", message="Agent queued")
    jobcast.fail(done, "Model timed out")
    expect(cancel_button(page, running)).to_be_visible()
    expect(row(page, asked).locator(".cancel-tag")).to_be_visible()
    expect(delete_button(page, done)).to_be_visible()

    screenshot(page, "phone-actions-dark")  # once the rows have stopped moving
    for job_id in (running, done):
        box = page.evaluate(
            """(id) => {
                const row = document.querySelector(`.job[data-job-id="${id}"]`);
                const rect = (selector) => row.querySelector(selector).getBoundingClientRect();
                const body = rect('.job-body');
                const progress = rect('.job-progress');
                const button = rect('.job-action:not([hidden])');
                return { body: body.bottom, progress: progress.bottom, top: button.top,
                         bottom: button.bottom, height: button.height };
            }""",
            job_id,
        )
        assert box["top"] >= box["progress"]  # a line of their own, under the progress bar
        assert box["bottom"] <= box["body"]
        assert box["height"] >= 30  # a comfortable target for a finger
    outside = page.evaluate(
        """() => [...document.querySelectorAll('.page *')]
            .filter((el) => el.getBoundingClientRect().right > innerWidth + 0.5)
            .map((el) => `${el.tagName}.${el.className.baseVal ?? el.className}`)"""
    )
    assert outside == []
