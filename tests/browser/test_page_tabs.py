"""Several tabs of one browser on the status page. Over HTTP/1.1 a browser keeps six
connections per origin for all its tabs together: each tab in view holds one stream, and a
hidden tab none, so no tab, and no write, waits for another's connection."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from tests.browser.conftest import (
    Console,
    Server,
    eventually,
    open_live,
    open_streams,
    row,
    set_visibility,
    tab_beside,
    wait,
)
from tests.browser.test_page_output import append, tokens


def running_agents(jobcast: Server, count: int) -> list[str]:
    """LLM agent jobs that run and have output: `answer n`."""
    jobs = [jobcast.create(jobType="llm_agent", message=f"Agent {n}") for n in range(count)]
    for n, job_id in enumerate(jobs):
        append(jobcast, job_id, *tokens(f"answer {n}"))
        jobcast.update(job_id, status="processing", progress=10)
    return jobs


def test_four_tabs_in_view_are_each_live_and_can_write(
    page: Page, jobcast: Server, console: Console
) -> None:
    """Four tabs side by side, with three jobs streaming output: every tab shows every
    job's output as it grows, and a Cancel clicked in the last tab reaches the server."""
    jobs = running_agents(jobcast, 3)
    tabs = [page, *(tab_beside(page, console) for _ in range(3))]
    for tab in tabs:
        open_live(tab, jobcast)
    for tab in tabs:
        for n, job_id in enumerate(jobs):
            expect(row(tab, job_id).locator(".job-output-text")).to_have_text(f"answer {n}")
    assert open_streams(jobcast, "sse") == len(tabs)

    append(jobcast, jobs[0], *tokens(" and more"))
    tabs[-1].get_by_role("button", name=f"Cancel LLM agent job {jobs[1][4:12]}").click()
    for tab in tabs:
        expect(row(tab, jobs[0]).locator(".job-output-text")).to_have_text("answer 0 and more")
        expect(row(tab, jobs[1]).locator(".cancel-tag")).to_be_visible()
    assert jobcast.api.get(f"/api/jobs/{jobs[1]}").json()["cancelRequested"] is True


def test_a_hidden_tab_lets_go_of_its_streams_and_catches_up_when_shown(
    page: Page, jobcast: Server
) -> None:
    """Hidden for ten seconds, the page closes its stream and stops polling output; shown
    again, even after a long while, it resumes where it was, with no "Not connected" note
    on the way."""
    (job_id,) = running_agents(jobcast, 1)
    page.clock.install()
    open_live(page, jobcast)
    text = row(page, job_id).locator(".job-output-text")
    expect(text).to_have_text("answer 0")
    page.evaluate(
        """() => {
            const note = document.getElementById('stale-note');
            window.staleShown = false;
            new MutationObserver(() => { if (!note.hidden) window.staleShown = true; })
                .observe(note, { attributes: true });
        }"""
    )

    set_visibility(page, "hidden")
    page.clock.run_for(9_000)  # a glance at another tab: still connected
    expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    page.clock.run_for(1_000)  # hidden ten seconds: it lets go
    expect(page.locator("#connection")).to_have_attribute("data-state", "paused")
    eventually(lambda: open_streams(jobcast, "sse") == 0, "the hidden tab's stream to close")
    asked: list[str] = []
    page.on("request", lambda request: asked.append(request.url))
    jobcast.update(job_id, progress=60, message="Halfway there")
    append(jobcast, job_id, *tokens(" grows"))
    page.clock.run_for(60_000)
    page.wait_for_timeout(wait(0.5))  # polls would have asked by now
    assert [url for url in asked if "/api/" in url] == []

    set_visibility(page, "visible")
    expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    expect(row(page, job_id).locator(".job-message")).to_have_text("Halfway there")
    expect(text).to_have_text("answer 0 grows")
    assert page.evaluate("() => window.staleShown") is False
    assert open_streams(jobcast, "sse") == 1
