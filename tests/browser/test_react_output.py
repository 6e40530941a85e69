"""``useJob(jobId, {output: true, keepOutput})`` in Chromium: a React component renders a job's
output as it streams, keeping only the newest chunks, over each transport.

The app and its fixtures are :mod:`tests.browser.test_react`'s (bundled with esbuild,
served from an origin of its own); ``&output=N`` makes its ``useJob`` follow the output
and keep N chunks.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.browser import test_react as app
from tests.browser.conftest import Server, wait
from tests.conftest import seconds

pytestmark = pytest.mark.timeout(seconds(600))

# The React app's fixtures: its bundle, its origin, and a Jobcast that lets it call.
bundle = app.bundle
origin = app.origin
jobcast = app.jobcast


def append(server: Server, job_id: str, *words: str) -> None:
    chunks = [{"data": word, "kind": "token"} for word in words]
    response = server.api.post(f"/api/jobs/{job_id}/output", json={"chunks": chunks})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("transport", ["sse", "ws", "poll"])
def test_use_job_renders_the_newest_output_chunks_live(
    page: Page, origin: str, jobcast: Server, transport: str
) -> None:
    """The component shows the job's tokens as they come; past keepOutput it shows the
    newest ones and counts them all; the output is whole when the job ends."""
    job_id = jobcast.create(jobType="llm_agent", message="Thinking...")
    append(jobcast, job_id, "Hello", ",")
    app.open_app(page, origin, jobcast, f"job={job_id}&transport={transport}&output=4")
    shown = page.locator("#output")
    expect(page.locator("#job")).to_have_attribute("data-state", "live", timeout=wait(10))
    expect(shown).to_have_text("Hello,")

    append(jobcast, job_id, " world")
    expect(shown).to_have_text("Hello, world")
    append(jobcast, job_id, "!", " Bye", ".")
    expect(shown).to_have_text(" world! Bye.")  # the newest four of six
    expect(shown).to_have_attribute("data-offset", "6")
    expect(shown).to_have_attribute("data-kept", "4")
    jobcast.complete(job_id)
    expect(page.locator("#job")).to_have_attribute("data-closed", "true")
    expect(shown).to_have_attribute("data-offset", "6")
