"""The status page on a protected server: opened with an owner's read token, it shows that
owner; with a job's token, that job; with no token or a bad one, it says what is needed."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from playwright.sync_api import Page, expect

from app.settings import Settings
from app.tokens import Tokens
from tests.browser.conftest import Console, Server, row, screenshot, wait

KEY = "browser-test-key-" + "k" * 24
AUTH = {"Authorization": f"Bearer {KEY}"}
TRANSPORTS = ["sse", "ws", "poll"]
# What Chromium logs by itself when the server refuses a request, a stream or a handshake.
REFUSALS = r"status of 40[13]|WebSocket connection to .* failed|EventSource"


def create(server: Server, **body: object) -> str:
    response = server.api.post("/api/jobs", json=body, headers=AUTH)
    assert response.status_code == 201, response.text
    job_id: str = response.json()["jobId"]
    return job_id


def owner_token(server: Server, owner: str) -> str:
    minted = server.api.post("/api/tokens", json={"owner": owner}, headers=AUTH)
    assert minted.status_code == 200, minted.text
    token: str = minted.json()["token"]
    return token


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_owner_token_page_shows_exactly_that_owners_jobs_live(
    page: Page, server: Callable[..., Server], transport: str
) -> None:
    """With JOBS_API_KEY set, /?token=<owner token> shows the owner's jobs live, and no others."""
    jobcast = server(JOBS_API_KEY=KEY)
    mine = create(jobcast, jobType="llm_agent", message="Thinking...", owner="alice")
    theirs = create(jobcast, jobType="generic", message="Not yours", owner="bob")

    page.goto(f"{jobcast.url}/?transport={transport}&token={owner_token(jobcast, 'alice')}")
    expect(page.locator("#connection")).to_have_attribute("data-state", "live", timeout=wait(10))
    expect(row(page, mine)).to_contain_text("Thinking...")
    response = jobcast.api.patch(
        f"/api/jobs/{mine}",
        json={"status": "processing", "progress": 40, "message": "Searching knowledge base..."},
        headers=AUTH,
    )
    assert response.status_code == 200, response.text
    expect(row(page, mine)).to_contain_text("Searching knowledge base...", timeout=wait(10))
    expect(row(page, theirs)).to_have_count(0)
    expect(page.locator("#demo")).to_be_hidden()
    expect(page.locator("#gate")).to_be_hidden()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_protected_page_without_a_token_says_how_to_get_one_and_stops(
    page: Page, server: Callable[..., Server], console: Console, transport: str
) -> None:
    """Opened without a token, a protected server's page says a read token is needed and
    how to pass it, and stops asking (no endless "Reconnecting…")."""
    console.allow(REFUSALS)
    jobcast = server(JOBS_API_KEY=KEY)
    create(jobcast, message="Somebody's job", owner="alice")
    page.clock.install()
    page.goto(f"{jobcast.url}/?transport={transport}")

    gate = page.locator("#gate")
    expect(gate.get_by_role("heading")).to_have_text("This server needs a token")
    expect(gate).to_contain_text("/?token=<read token>")
    expect(gate).to_contain_text("/api/tokens")
    expect(gate).to_contain_text("POST /api/jobs")
    expect(page.locator("#connection")).to_have_attribute("data-state", "unauthorized")
    expect(page.locator("#connection-label")).to_have_text("Token needed")
    expect(page.locator("#empty")).to_be_hidden()
    screenshot(page, f"token-needed-{transport}")

    asked: list[str] = []
    page.on("request", lambda request: asked.append(request.url))
    page.on("websocket", lambda socket: asked.append(socket.url))
    page.clock.run_for(120_000)  # two minutes of backoff timers, had the page kept trying
    expect(page.locator("#connection-label")).to_have_text("Token needed")
    assert [url for url in asked if "/api/jobs" in url] == []


def test_protected_page_with_a_bad_or_expired_token_says_so(
    page: Page, server: Callable[..., Server], console: Console
) -> None:
    """A token the server does not accept (malformed, or expired) is named as the problem,
    with the server's own words, instead of an endless reconnect."""
    console.allow(REFUSALS)
    jobcast = server(JOBS_API_KEY=KEY)
    page.goto(f"{jobcast.url}/?token=not-a-token")
    gate = page.locator("#gate")
    expect(gate.get_by_role("heading")).to_have_text("This token is not valid")
    expect(gate.locator(".gate-detail")).to_have_text(
        "The server says: the credential is neither an API key of this server nor a read "
        "token it issued"
    )
    expect(page.locator("#connection-label")).to_have_text("Token invalid")

    # Signed with the server's key, but two hours ago for one minute.
    past = Tokens(Settings(api_key=KEY), clock=lambda: time.time() - 7200)
    expired, _ = past.mint("owner", "alice", ttl=60)
    page.goto(f"{jobcast.url}/?transport=ws&token={expired}")
    expect(gate.get_by_role("heading")).to_have_text("This token is not valid")
    expect(gate.locator(".gate-detail")).to_contain_text("expired")
    expect(page.locator("#connection")).to_have_attribute("data-state", "unauthorized")


def test_job_token_page_shows_that_one_job(page: Page, server: Callable[..., Server]) -> None:
    """The token a job's creation answers opens a page that follows that job to its end,
    and keeps it on screen once finished."""
    jobcast = server(JOBS_API_KEY=KEY)
    created = jobcast.api.post("/api/jobs", json={"message": "Mine"}, headers=AUTH)
    assert created.status_code == 201, created.text
    mine, token = created.json()["jobId"], created.json()["token"]
    other = create(jobcast, message="Another job")

    page.clock.install()
    page.goto(f"{jobcast.url}/?token={token}")
    expect(page.locator("#connection")).to_have_attribute("data-state", "live", timeout=wait(10))
    expect(row(page, mine).locator(".job-message")).to_have_text("Mine")
    response = jobcast.api.post(
        f"/api/jobs/{mine}/complete", json={"documentId": "doc_7"}, headers=AUTH
    )
    assert response.status_code == 200, response.text
    expect(row(page, mine)).to_have_attribute("data-status", "completed")
    page.clock.run_for(60_000)  # past the 20 s a finished row lingers on the all-jobs page
    expect(row(page, mine)).to_have_count(1)
    expect(row(page, other)).to_have_count(0)
    expect(page.locator("#gate")).to_be_hidden()
