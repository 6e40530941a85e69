"""What a row offers its user: the job's id to copy, a close button once the job is
finished, and room for long messages and ids on a phone."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import Server, open_live, row, screenshot

NO_CLIPBOARD_API = (
    "Object.defineProperty(Navigator.prototype, 'clipboard', { get: () => undefined })"
)


def test_row_shows_a_short_id_that_copies_the_full_one(
    page_for: Callable[..., Page], jobcast: Server
) -> None:
    """A row shows the start of its job's id; its button copies the whole id to the
    clipboard and says "Copied". Without the Clipboard API the full id is shown selected."""
    page = page_for(
        viewport={"width": 1000, "height": 760},
        color_scheme="dark",
        permissions=["clipboard-read", "clipboard-write"],
    )
    open_live(page, jobcast)
    job_id = jobcast.create(jobType="file_processing", message="Upload queued")
    # Said first, so that the copy's own words come after it in the one live region.
    expect(page.locator("#announcer")).to_have_text("New file processing job queued.")
    button = row(page, job_id).get_by_role("button", name=f"Copy job ID {job_id}")
    expect(button).to_have_text(job_id.removeprefix("job_")[:8])
    expect(button).to_have_attribute("title", f"{job_id} (copy)")

    button.click()
    expect(button).to_have_text("Copied")
    screenshot(page, "copied-dark")
    assert page.evaluate("() => navigator.clipboard.readText()") == job_id
    expect(page.locator("#announcer")).to_have_text(f"Job ID {job_id} copied.")
    expect(button).to_have_text(job_id.removeprefix("job_")[:8])  # back after a moment

    bare = page_for(viewport={"width": 1000, "height": 760})
    bare.add_init_script(NO_CLIPBOARD_API)
    open_live(bare, jobcast)
    button = row(bare, job_id).get_by_role("button", name=f"Copy job ID {job_id}")
    button.focus()
    bare.keyboard.press("Enter")
    expect(row(bare, job_id).locator(".job-id-full")).to_have_text(job_id)
    expect(row(bare, job_id).locator(".job-id-full")).to_be_visible()
    assert bare.evaluate("() => getSelection().toString()") == job_id
    # Whether the browser let the page copy the selection itself decides the word.
    expect(button).to_have_text(re.compile("^(Copied|Selected)$"))


def test_finished_rows_can_be_dismissed_for_the_session(page: Page, jobcast: Server) -> None:
    """A finished row has a close button (mouse or keyboard); a closed row stays hidden
    after a reload in the same tab, while other finished rows still show."""
    open_live(page, jobcast)
    done = jobcast.create(message="Done")
    jobcast.complete(done, documentId="doc_1")
    failed = jobcast.create(message="Broken")
    jobcast.fail(failed, "Invalid file format")
    kept = jobcast.create(message="Kept")
    jobcast.complete(kept)
    active = jobcast.create(message="Running")
    expect(row(page, active)).to_have_count(1)
    expect(row(page, active).get_by_role("button", name="Dismiss")).to_have_count(0)
    expect(page.locator("#summary")).to_contain_text("2 completed")

    close = row(page, done).get_by_role("button", name="Dismiss")
    close.focus()
    page.keyboard.press("Enter")
    expect(row(page, done)).to_have_count(0)
    expect(page.locator("#summary")).to_contain_text("1 completed")
    # Focus moved on to a neighbour's control, not lost to the page.
    assert page.evaluate("() => document.activeElement.closest('.job') !== null")

    row(page, failed).get_by_role("button", name="Dismiss").click()
    expect(row(page, failed)).to_have_count(0)
    expect(page.locator("#summary")).not_to_contain_text("error")

    page.reload()
    expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    expect(row(page, kept)).to_have_attribute("data-status", "completed")
    expect(row(page, active)).to_have_count(1)
    expect(row(page, done)).to_have_count(0)
    expect(row(page, failed)).to_have_count(0)

    other_tab = page.context.new_page()  # its own session: nothing dismissed there
    open_live(other_tab, jobcast)
    expect(row(other_tab, done)).to_have_attribute("data-status", "completed")
    other_tab.close()


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_phone_wraps_long_messages_and_ids(
    page_for: Callable[..., Page], jobcast: Server, scheme: str
) -> None:
    """At 360 px messages, errors and document ids wrap, unbroken strings too: nothing is
    cut off and nothing overflows the screen."""
    page = page_for(viewport={"width": 360, "height": 740}, color_scheme=scheme)
    open_live(page, jobcast)
    message = "Extracting tables from the quarterly report " + "Q" * 90 + " and more words after it"
    document_id = "doc_" + "7f3a" * 30
    error = "Could not parse /uploads/" + "very-long-file-name-" * 6 + ".pdf"
    running = jobcast.create(jobType="document_analysis", metadata={"title": "T" * 200})
    jobcast.update(running, status="processing", progress=35, message=message)
    done = jobcast.create(jobType="file_processing", message="Upload queued")
    jobcast.complete(done, documentId=document_id, message="Document processed successfully")
    failed = jobcast.create(jobType="llm_agent", message="Agent queued")
    jobcast.fail(failed, error)
    expect(row(page, running).locator(".job-message")).to_have_text(message)
    expect(row(page, done).locator(".detail-id")).to_have_text(document_id)
    expect(row(page, failed).locator(".job-detail")).to_have_text(error)

    clipped = page.evaluate(
        """() => [...document.querySelectorAll('.job-line, .job-message, .job-detail, .detail-id')]
            .filter((el) => el.scrollWidth > el.clientWidth + 1 && el.clientWidth > 0)
            .map((el) => el.className)"""
    )
    assert clipped == []
    outside = page.evaluate(
        """() => [...document.querySelectorAll('.page *')]
            .filter((el) => el.getBoundingClientRect().right > innerWidth + 0.5)
            .map((el) => `${el.tagName}.${el.className.baseVal ?? el.className}`)"""
    )
    assert outside == []
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 360
    screenshot(page, f"phone-wrap-{scheme}")
