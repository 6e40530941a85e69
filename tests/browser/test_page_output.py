"""A running job's output on the status page: the streamed text of its tokens and the last
lines of its log, live under its row, bounded, over each transport; for a page opened with
a job's token too."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import Server, open_live, open_streams, row, screenshot, wait

TRANSPORTS = ["sse", "ws", "poll"]
KEY = "browser-test-key-" + "k" * 24
AUTH = {"Authorization": f"Bearer {KEY}"}


def append(server: Server, job_id: str, *chunks: dict[str, Any], key: bool = False) -> None:
    """Appends chunks to a job's output, as its worker would."""
    response = server.api.post(
        f"/api/jobs/{job_id}/output", json={"chunks": list(chunks)}, headers=AUTH if key else {}
    )
    assert response.status_code == 200, response.text


def tokens(*words: str) -> list[dict[str, Any]]:
    return [{"data": word, "kind": "token"} for word in words]


def lines(start: int, stop: int) -> list[dict[str, Any]]:
    return [{"data": f"line {n}", "kind": "log"} for n in range(start, stop)]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_streamed_tokens_and_log_lines_show_live_under_their_rows(
    page: Page, jobcast: Server, transport: str
) -> None:
    """An LLM agent's tokens show as text that grows as they stream, a file job's log as
    its last 20 lines; both stay on the row once the job is done."""
    open_live(page, jobcast, f"transport={transport}")
    agent = jobcast.create(jobType="llm_agent", message="Thinking...")
    files = jobcast.create(jobType="file_processing", message="Reading...")
    append(jobcast, agent, *tokens("The", " answer"))
    append(jobcast, files, *lines(0, 3))
    # Output changes no version: the list hears of it with the job's next change.
    jobcast.update(agent, status="processing", progress=10)
    jobcast.update(files, status="processing", progress=10)

    text = row(page, agent).locator(".job-output-text")
    log = row(page, files).locator(".job-output-lines")
    expect(text).to_have_text("The answer", timeout=wait(10))
    expect(log).to_have_text("line 0\nline 1\nline 2")
    expect(row(page, agent).locator(".job-output-lines")).to_be_hidden()
    expect(row(page, files).locator(".job-output-text")).to_be_hidden()

    # Live from here on, with no change of the job: each chunk as it comes.
    for word in [" is", " forty", "-two", "."]:
        append(jobcast, agent, *tokens(word))
    expect(text).to_have_text("The answer is forty-two.")
    for start in range(3, 30, 9):
        append(jobcast, files, *lines(start, start + 9))
    expect(log).to_have_text("\n".join(f"line {n}" for n in range(10, 30)))
    screenshot(page, f"output-{transport}")

    append(jobcast, agent, *tokens(" Done"))
    jobcast.complete(agent, documentId="doc_42")
    expect(row(page, agent)).to_have_attribute("data-status", "completed")
    expect(text).to_have_text("The answer is forty-two. Done")
    expect(row(page, files).locator(".job-output-lines")).to_contain_text("line 29")


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_worker_that_only_streams_shows_live(page: Page, jobcast: Server, transport: str) -> None:
    """A worker that reports `processing`, then streams tokens and reports nothing else
    until the end, has its tokens shown as they come: the list never tells of them."""
    agent = jobcast.create(jobType="llm_agent", message="Answering")
    jobcast.update(agent, status="processing")
    open_live(page, jobcast, f"transport={transport}")
    expect(row(page, agent)).to_have_attribute("data-status", "processing")
    text = row(page, agent).locator(".job-output-text")
    append(jobcast, agent, *tokens("Streaming"))
    expect(text).to_have_text("Streaming")
    append(jobcast, agent, *tokens(" on"))
    expect(text).to_have_text("Streaming on")
    assert jobcast.api.get(f"/api/jobs/{agent}").json()["version"] == 2


def test_jobs_that_write_nothing_give_their_place_up(page: Page, jobcast: Server) -> None:
    """Six running jobs that write no output hold every output watch; a newer job whose
    output the list tells of takes the place of one of them, and one that stays quiet for
    30 s gives its place up to a running job that waits, and is asked no more."""
    silent = [jobcast.create(jobType="file_processing") for _ in range(7)]
    for job_id in silent:
        jobcast.update(job_id, status="processing", progress=10)
    page.clock.install()
    open_live(page, jobcast)
    # Live comes before the list's snapshot: the silent jobs take their places first.
    for job_id in silent:
        expect(row(page, job_id)).to_be_visible()
    agent = jobcast.create(jobType="llm_agent", message="Answering")
    jobcast.update(agent, status="processing")
    append(jobcast, agent, *tokens("Hello"))
    jobcast.update(agent, progress=20)  # its outputSize: the list hears of its output
    expect(row(page, agent).locator(".job-output-text")).to_have_text("Hello")

    page.clock.run_for(31_000)  # the quiet ones give up: the oldest, unwatched, gets a turn
    append(jobcast, silent[0], *lines(0, 1))
    expect(row(page, silent[0]).locator(".job-output-lines")).to_have_text("line 0")
    asked: list[str] = []
    page.on("request", lambda request: asked.append(request.url))
    page.clock.run_for(2_000)
    assert [url for url in asked if any(job_id in url for job_id in silent[1:])] == []


def test_the_text_shown_is_the_end_of_a_long_stream(page: Page, jobcast: Server) -> None:
    """However much an agent streams, its row holds the last 4 096 characters of it, and
    the last 20 lines of a log, scrolled to the newest."""
    open_live(page, jobcast)
    agent = jobcast.create(jobType="llm_agent")
    words = [f"w{n:04d} " for n in range(2000)]  # 12 000 characters
    for start in range(0, len(words), 500):
        append(jobcast, agent, *tokens(*words[start : start + 500]))
    append(jobcast, agent, *lines(0, 100), {"data": {"rows": 3}})
    jobcast.update(agent, status="processing", progress=50)

    text = row(page, agent).locator(".job-output-text")
    expect(text).to_contain_text("w1999 ")
    shown = text.text_content() or ""
    assert len(shown) == 4096
    assert "".join(words).endswith(shown)
    expected = [f"line {n}" for n in range(81, 100)] + ['{"rows":3}']
    expect(row(page, agent).locator(".job-output-lines")).to_have_text("\n".join(expected))
    following = (
        row(page, agent)
        .locator(".job-output")
        .evaluate("(box) => box.scrollTop + box.clientHeight >= box.scrollHeight - 4")
    )
    assert following


def test_the_text_shown_never_starts_with_half_a_character(page: Page, jobcast: Server) -> None:
    """An emoji (two UTF-16 units) where the text is cut: the row's text starts after it,
    not with its second half (which showed as a replacement character)."""
    open_live(page, jobcast)
    agent = jobcast.create(jobType="llm_agent")
    append(jobcast, agent, *tokens("a" * 4097, "\U0001f600", "b" * 4095))
    jobcast.update(agent, status="processing", progress=50)
    text = row(page, agent).locator(".job-output-text")
    expect(text).to_contain_text("b" * 4095, timeout=wait(10))
    assert text.text_content() == "b" * 4095


def test_a_finished_job_shows_no_output_and_opens_no_stream(page: Page, jobcast: Server) -> None:
    """Output is followed only while a job runs: a job finished before the page opened
    shows its row without output, and the page asks for none."""
    done = jobcast.create(jobType="llm_agent")
    append(jobcast, done, *tokens("old"))
    jobcast.complete(done)
    asked: list[str] = []
    page.on("request", lambda request: asked.append(request.url))
    open_live(page, jobcast)
    expect(row(page, done)).to_have_attribute("data-status", "completed")
    page.wait_for_timeout(wait(0.5))
    expect(row(page, done).locator(".job-output")).to_have_count(0)
    assert [url for url in asked if done in url] == []


def test_a_job_token_page_streams_its_job_output(page: Page, server: Callable[..., Server]) -> None:
    """A page opened with a job's token follows that job's output on its one watch."""
    jobcast = server(JOBS_API_KEY=KEY)
    created = jobcast.api.post("/api/jobs", json={"jobType": "llm_agent"}, headers=AUTH)
    assert created.status_code == 201, created.text
    job_id, token = created.json()["jobId"], created.json()["token"]
    append(jobcast, job_id, *tokens("Hello"), key=True)

    page.goto(f"{jobcast.url}/?token={token}")
    expect(page.locator("#connection")).to_have_attribute("data-state", "live", timeout=wait(10))
    text = row(page, job_id).locator(".job-output-text")
    expect(text).to_have_text("Hello")
    append(jobcast, job_id, *tokens(",", " world"), key=True)
    expect(text).to_have_text("Hello, world")


def test_output_watches_are_capped_and_handed_on(page: Page, jobcast: Server) -> None:
    """The page follows the output of the six newest running jobs at most; when one of them
    ends, the next job's output comes. Over SSE it polls output, so the page holds one
    stream (a browser keeps six connections per origin, for all its tabs)."""
    jobs = [jobcast.create(jobType="llm_agent", message=f"Agent {n}") for n in range(7)]
    for n, job_id in enumerate(jobs):
        append(jobcast, job_id, *tokens(f"answer {n}"))
        jobcast.update(job_id, status="processing", progress=10)
    open_live(page, jobcast)
    for n in range(1, 7):  # the newest six
        expect(row(page, jobs[n]).locator(".job-output-text")).to_have_text(f"answer {n}")
    page.wait_for_timeout(wait(0.5))
    expect(row(page, jobs[0]).locator(".job-output")).to_have_count(0)
    assert open_streams(jobcast, "sse") == 1

    append(jobcast, jobs[6], *tokens(" more"))  # polled, with no change of the job
    expect(row(page, jobs[6]).locator(".job-output-text")).to_have_text("answer 6 more")
    jobcast.complete(jobs[6])
    expect(row(page, jobs[0]).locator(".job-output-text")).to_have_text("answer 0")
    expect(row(page, jobs[6]).locator(".job-output-text")).to_have_text("answer 6 more")
