"""While the page cannot hear the server, its rows say they show the last known state and
stand still; once the connection is back they are live again."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import (
    REFUSED,
    Console,
    Server,
    open_live,
    row,
    screenshot,
    set_visibility,
)


def a_running_job_on_a_live_page(
    page: Page, server: Callable[..., Server], console: Console
) -> tuple[Server, str]:
    """A page live on a fresh server (its clock the test's) and a job running there. The
    server may go away: the console may then tell of connections cut, and (the memory
    backend restarted) of an output poll asking for the job it lost."""
    console.allow(REFUSED)
    console.allow(r"ERR_INCOMPLETE_CHUNKED_ENCODING|ERR_EMPTY_RESPONSE|ERR_CONNECTION_RESET")
    console.allow(r"status of 404 \(Not Found\)|ERR_CONTENT_LENGTH_MISMATCH")
    jobcast = server()
    page.clock.install()
    open_live(page, jobcast)
    running = jobcast.create(jobType="file_processing", message="Uploading")
    jobcast.update(running, status="processing", progress=30)
    return jobcast, running


@pytest.mark.parametrize("cut", ["browser-offline", "server-down"])
def test_rows_go_stale_while_disconnected_and_come_back(
    page: Page, server: Callable[..., Server], console: Console, cut: str
) -> None:
    """Offline (the browser's network, or the server gone for a while) active rows are
    dimmed, tagged "Stale" and their elapsed timers stop; back online all of it clears."""
    console.allow(r"ERR_INTERNET_DISCONNECTED")  # the running job's output poll, offline
    jobcast, running = a_running_job_on_a_live_page(page, server, console)
    done = jobcast.create(message="Finished")
    jobcast.complete(done)
    elapsed = row(page, running).locator(".job-elapsed")
    page.clock.run_for(2_000)
    expect(elapsed).to_have_text("2s")
    expect(row(page, running).locator(".stale-tag")).to_be_hidden()

    if cut == "browser-offline":
        page.context.set_offline(True)
        expect(page.locator("#connection")).to_have_attribute("data-state", "offline")
    else:
        jobcast.stop()
        expect(page.locator("#connection")).not_to_have_attribute("data-state", "live")
        page.clock.run_for(3_000)  # a short outage is not marked; this one lasts
    note = page.locator("#stale-note")
    expect(note).to_be_visible()
    expect(note).to_contain_text("last known state")
    expect(row(page, running).locator(".stale-tag")).to_be_visible()
    expect(row(page, running).locator(".stale-tag")).to_have_text("Stale")
    expect(row(page, done).locator(".stale-tag")).to_be_hidden()  # a finished job cannot change
    frozen = elapsed.inner_text()
    page.clock.run_for(5_000)
    expect(elapsed).to_have_text(frozen)
    screenshot(page, f"stale-{cut}")

    if cut == "browser-offline":
        page.context.set_offline(False)
        expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    else:
        jobcast.start()
        # Past the longest backoff the outage can have reached, in one jump: run_for would
        # also time out, in page time, the question the next attempt asks in real time.
        page.clock.fast_forward(30_000)
        expect(page.locator("#connection")).to_have_attribute("data-state", "live")
        # The restarted memory backend has lost the job; a new one shows the page live again.
        running = jobcast.create(jobType="file_processing", message="After the restart")
        jobcast.update(running, status="processing", progress=10)
        elapsed = row(page, running).locator(".job-elapsed")
        expect(elapsed).to_have_text(re.compile(r"\d+s"))
        frozen = elapsed.inner_text()
    expect(note).to_be_hidden()
    expect(row(page, running).locator(".stale-tag")).to_be_hidden()
    page.clock.run_for(2_000)
    expect(elapsed).not_to_have_text(frozen)


def test_rows_stale_before_a_tab_is_hidden_stay_stale_when_it_is_shown(
    page: Page, server: Callable[..., Server], console: Console
) -> None:
    """Rows that went stale while the tab was in view are still stale when it is shown
    again and the server is still away: the note never lapses on the way, and it clears
    only once the connection is live."""
    jobcast, running = a_running_job_on_a_live_page(page, server, console)
    expect(row(page, running).locator(".job-message")).to_have_text("Uploading")
    jobcast.stop()
    page.clock.run_for(3_000)
    note = page.locator("#stale-note")
    expect(note).to_be_visible()
    page.evaluate(
        """() => {
            const note = document.getElementById('stale-note');
            window.staleLapsed = false;
            new MutationObserver(() => { if (note.hidden) window.staleLapsed = true; })
                .observe(note, { attributes: true });
        }"""
    )

    set_visibility(page, "hidden")
    page.clock.run_for(10_000)
    expect(page.locator("#connection")).to_have_attribute("data-state", "paused")
    set_visibility(page, "visible")
    expect(page.locator("#connection")).not_to_have_attribute("data-state", "paused")
    page.clock.run_for(1_000)  # well within the grace a fresh reconnect gets
    expect(note).to_be_visible()
    expect(row(page, running).locator(".stale-tag")).to_be_visible()
    assert page.evaluate("() => window.staleLapsed") is False

    jobcast.start()
    page.clock.fast_forward(30_000)  # past the longest backoff, in one jump (see above)
    expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    expect(note).to_be_hidden()
