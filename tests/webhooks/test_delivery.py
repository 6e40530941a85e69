"""Webhook deliveries from a real server (memory backend) to a real receiver that checks
every signature with ``standardwebhooks``."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest

from .receiver import SECRET, Delivery, Receiver, failing_for

if TYPE_CHECKING:
    from tests.e2e.conftest import JobsClient, RunningServer

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

Start = Callable[..., "RunningServer"]


def hooked(receiver: Receiver, **settings: str) -> dict[str, str]:
    return {"JOBS_WEBHOOK_URLS": receiver.url, "JOBS_WEBHOOK_SECRET": SECRET, **settings}


def versions(deliveries: list[Delivery], job_id: str) -> list[int]:
    return [d.job["version"] for d in deliveries if d.job["jobId"] == job_id]


async def finish(api: JobsClient, job_id: str, ending: str) -> dict[str, Any]:
    await api.update(job_id, status="processing", progress=50)
    if ending == "complete":
        return await api.complete(job_id, documentId="doc_1")
    return await api.fail(job_id, "disk full")


async def test_terminal_events_are_delivered_signed_with_the_whole_job(
    server: Start, receiver: Receiver
) -> None:
    srv = server(**hooked(receiver))
    async with srv.client() as api:
        done_id, failed_id = await api.create_job(), await api.create_job()
        completed = await finish(api, done_id, "complete")
        failed = await finish(api, failed_id, "fail")
        await receiver.wait_for(lambda r: len(r.deliveries) == 2)
    by_job = {d.job["jobId"]: d for d in receiver.deliveries}
    for job, kind in ((completed, "job.completed"), (failed, "job.error")):
        delivery = by_job[job["jobId"]]
        assert delivery.verified
        assert delivery.webhook_id == f"msg_{job['jobId']}_{job['version']}"
        assert delivery.body == {"type": kind, "timestamp": job["updatedAt"], "data": job}
        assert delivery.headers["content-type"] == "application/json"
        assert delivery.headers["user-agent"].startswith("Jobcast-Webhooks/")
        assert delivery.headers["webhook-timestamp"].isdigit()
    # Nothing but the terminal events (JOBS_WEBHOOK_EVENTS=terminal, the default).
    assert sorted(len(versions(receiver.deliveries, j)) for j in by_job) == [1, 1]


async def test_every_event_arrives_in_order_per_job_with_events_all(
    server: Start, receiver: Receiver
) -> None:
    srv = server(**hooked(receiver, JOBS_WEBHOOK_EVENTS="all"))
    async with srv.client() as api:
        jobs = [await api.create_job() for _ in range(5)]
        for progress in (10, 20, 30):
            for job_id in jobs:
                await api.update(job_id, progress=progress)
        for job_id in jobs:
            await api.complete(job_id)
        await receiver.wait_for(lambda r: len(r.deliveries) == 5 * 5)
    assert all(d.verified for d in receiver.deliveries)
    for job_id in jobs:
        assert versions(receiver.deliveries, job_id) == [1, 2, 3, 4, 5]
    kinds = [d.body["type"] for d in receiver.deliveries if d.job["jobId"] == jobs[0]]
    assert kinds == ["job.queued"] * 4 + ["job.completed"]


async def test_a_jobs_own_url_gets_its_events(server: Start, receiver: Receiver) -> None:
    """A job created with a `webhookUrl` on JOBS_WEBHOOK_HOSTS gets its events there."""
    srv = server(JOBS_WEBHOOK_HOSTS="127.0.0.1", JOBS_WEBHOOK_SECRET=SECRET)
    async with srv.client() as api:
        own = await api.create_job(webhookUrl=receiver.url + "/document-42")
        assert (await api.job(own))["webhookUrl"] == receiver.url + "/document-42"
        other = await api.create_job()
        await api.complete(other)
        done = await api.complete(own)
        await receiver.wait_for(lambda r: len(r.deliveries) >= 1)
        # The next terminal event is the other job's, if it had a URL: there is none.
        marker = await api.create_job(webhookUrl=receiver.url + "/marker")
        await api.complete(marker)
        await receiver.wait_for(lambda r: len(r.deliveries) == 2)
    first, second = receiver.deliveries
    assert (first.path, first.job, first.verified) == ("/hooks/document-42", done, True)
    assert (second.path, second.job["jobId"]) == ("/hooks/marker", marker)


async def test_failing_deliveries_are_retried_until_the_receiver_answers(
    server: Start, receiver: Receiver
) -> None:
    receiver.status = failing_for(2.0)
    srv = server(**hooked(receiver, JOBS_WEBHOOK_BACKOFF_MAX="0.3"))
    async with srv.client() as api:
        jobs = [await api.create_job() for _ in range(20)]
        for job_id in jobs:
            await api.complete(job_id)
        await receiver.wait_for(lambda r: len(r.accepted()) == len(jobs), within=20)
        assert await api.metric("jobcast_webhooks_retried_total") > 0
        # The receiver has answered the last one; the server counts it once it reads that.
        await api.wait_for_metric("jobcast_webhooks_sent_total", lambda sent: sent == len(jobs))
        assert await api.metric("jobcast_webhooks_failed_total") == 0
        await api.wait_for_metric("jobcast_webhooks_pending", lambda value: value == 0)
    accepted = receiver.accepted()
    assert sorted(d.job["jobId"] for d in accepted) == sorted(jobs)
    assert all(d.verified for d in receiver.deliveries)
    # While the receiver was down it got probes, not every event again and again.
    refused = [d for d in receiver.deliveries if d.answered == 500]
    assert 0 < len(refused) < 2 * len(jobs)


async def test_a_delivery_is_given_up_after_the_retry_window(
    server: Start, receiver: Receiver
) -> None:
    receiver.status = lambda: 503
    srv = server(**hooked(receiver, JOBS_WEBHOOK_RETRY_FOR="1", JOBS_WEBHOOK_BACKOFF_MAX="0.2"))
    async with srv.client() as api:
        job_id = await api.create_job()
        await api.fail(job_id)
        await api.wait_for_metric("jobcast_webhooks_failed_total", lambda value: value == 1)
        assert await api.metric("jobcast_webhooks_sent_total") == 0
        await api.wait_for_metric("jobcast_webhooks_pending", lambda value: value == 0)
    assert len(receiver.deliveries) >= 1
    given_up = [line for line in srv.log().splitlines() if "given up" in line]
    assert len(given_up) == 1
    assert f"msg_{job_id}_2" in given_up[0]


async def test_redirects_are_not_followed(server: Start, receiver: Receiver) -> None:
    """A 3xx is a failed attempt: retried at the same URL, its Location never visited."""
    answers = iter([307, 308])
    receiver.status = lambda: next(answers, 200)
    srv = server(**hooked(receiver, JOBS_WEBHOOK_BACKOFF_MAX="0.2"))
    async with srv.client() as api:
        job_id = await api.create_job()
        await api.complete(job_id)
        await receiver.wait_for(lambda r: len(r.accepted()) == 1)
    assert [(d.path, d.answered) for d in receiver.deliveries] == [
        ("/hooks", 307),
        ("/hooks", 308),
        ("/hooks", 200),
    ]
    assert len({d.webhook_id for d in receiver.deliveries}) == 1


async def test_a_memory_server_stopping_says_how_many_events_it_loses(
    server: Start, receiver: Receiver
) -> None:
    """The memory backend keeps undelivered events in its process only: stopping, it says
    how many go with it (they went without a word)."""
    receiver.status = lambda: 500
    srv = server(**hooked(receiver))
    async with srv.client() as api:
        for _ in range(3):
            await api.complete(await api.create_job())
        await receiver.wait_for(lambda r: len(r.deliveries) >= 1)
    srv.stop()
    assert "webhooks: 3 event(s) not delivered yet are lost with this process" in srv.log()
