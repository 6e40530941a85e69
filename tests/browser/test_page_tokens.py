"""The status page on a protected server: opened with an owner's read token, it shows that owner."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import Server
from tests.conftest import seconds

KEY = "browser-test-key-" + "k" * 24
AUTH = {"Authorization": f"Bearer {KEY}"}


def create(server: Server, **body: object) -> str:
    response = server.api.post("/api/jobs", json=body, headers=AUTH)
    assert response.status_code == 201, response.text
    job_id: str = response.json()["jobId"]
    return job_id


@pytest.mark.parametrize("transport", ["sse", "ws", "poll"])
def test_owner_token_page_shows_exactly_that_owners_jobs_live(
    page: Page, server: Callable[..., Server], transport: str
) -> None:
    """With JOBS_API_KEY set, /?token=<owner token> shows the owner's jobs live, and no others."""
    jobcast = server(JOBS_API_KEY=KEY)
    mine = create(jobcast, jobType="llm_agent", message="Thinking...", owner="alice")
    theirs = create(jobcast, jobType="generic", message="Not yours", owner="bob")
    minted = jobcast.api.post("/api/tokens", json={"owner": "alice"}, headers=AUTH)
    assert minted.status_code == 200, minted.text

    page.goto(f"{jobcast.url}/?transport={transport}&token={minted.json()['token']}")
    expect(page.locator("#connection")).to_have_attribute(
        "data-state", "live", timeout=seconds(10) * 1000
    )
    expect(page.locator(f'.job[data-job-id="{mine}"]')).to_contain_text("Thinking...")
    response = jobcast.api.patch(
        f"/api/jobs/{mine}",
        json={"status": "processing", "progress": 40, "message": "Searching knowledge base..."},
        headers=AUTH,
    )
    assert response.status_code == 200, response.text
    expect(page.locator(f'.job[data-job-id="{mine}"]')).to_contain_text(
        "Searching knowledge base...", timeout=seconds(10) * 1000
    )
    expect(page.locator(f'.job[data-job-id="{theirs}"]')).to_have_count(0)
    expect(page.locator("#demo")).to_be_hidden()
