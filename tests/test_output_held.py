"""A connection holds a bounded share of jobs' output, however much it asked for or
however far behind it is: the rest stays in the store, and its writer reads it back
a page at a time as the connection takes it."""

from __future__ import annotations

import contextlib
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from starlette.testclient import TestClient

from app import jobs
from app.auth import OPEN
from app.metrics import Metrics
from app.models import NewJob
from app.settings import Settings
from app.store.memory import MemoryStore
from app.streams.events import Backfill, Change, Event, Output, Position, Synced
from app.streams.follow import PAGE_BYTES, Lease, follow_job
from app.streams.hub import Hub
from app.streams.limits import StreamSlots
from app.streams.mailbox import OUTPUT_HELD_BYTES, Mailbox, Pending
from tests.test_output import append, new_job, stream

CHUNK = "x" * 60_000  # about as large as a chunk may be (64 KiB of JSON)
CHUNKS = 40  # about 2.4 MB: several times what a connection holds


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def output(offset: int, count: int = 1, version: int = 2, job_id: str = "job_a") -> Output:
    bodies = [orjson.dumps({"data": f"{offset + i:04d}{CHUNK}"}) for i in range(count)]
    return Output(job_id, version, offset, bodies)


def change(job_id: str, version: int) -> Change:
    job = jobs.create(NewJob(), jobs.now()).model_copy(
        update={"job_id": job_id, "version": version}
    )
    return Change.of(job, Position(0, version))


def held_bytes(pending: list[Pending]) -> int:
    return sum(event.size for event in pending if isinstance(event, Output))


def ranges(pending: list[Pending]) -> list[tuple[str, int, int]]:
    """The output pending as (kind, first offset, end), in order."""
    found = []
    for event in pending:
        if isinstance(event, Output):
            found.append(("held", event.offset, event.next_offset))
        elif isinstance(event, Backfill):
            found.append(("backfill", event.offset, event.end))
    return found


# -- the mailbox --------------------------------------------------------------------


def test_live_output_past_the_bound_is_left_in_the_store_as_one_backfill() -> None:
    mailbox = Mailbox(10_000)
    for offset in range(CHUNKS):
        mailbox.add_output(output(offset))
    pending = mailbox.take()
    assert mailbox.closed is None
    assert held_bytes(pending) <= OUTPUT_HELD_BYTES
    held = [event for event in pending if isinstance(event, Output)]
    assert held
    [backfill] = [event for event in pending if isinstance(event, Backfill)]
    assert (backfill.job_id, backfill.version) == ("job_a", 2)
    assert ranges(pending) == [
        *(("held", n, n + 1) for n in range(len(held))),
        ("backfill", len(held), CHUNKS),
    ]


def test_a_change_between_keeps_its_place_among_the_output_left_in_the_store() -> None:
    """A job event's outputSize is the output a client holds when it gets it: output
    after a change goes after it, in a backfill of its own at the new version."""
    mailbox = Mailbox(10_000)
    for offset in range(10):
        mailbox.add_output(output(offset))
    mailbox.put(change("job_a", 3))
    for offset in range(10, 20):
        mailbox.add_output(output(offset, version=3))
    pending = mailbox.take()
    kinds = [type(event).__name__ for event in pending]
    assert kinds[-3:] == ["Backfill", "Change", "Backfill"]
    first, _, second = pending[-3:]
    assert isinstance(first, Backfill)
    assert isinstance(second, Backfill)
    assert (first.version, first.end, second.version, second.offset, second.end) == (
        2,
        10,
        3,
        10,
        20,
    )


def test_a_snapshot_end_keeps_later_output_after_it() -> None:
    mailbox = Mailbox(10_000)
    for offset in range(10):
        mailbox.add_output(output(offset))
    mailbox.mark(Synced(job_id="job_a", version=2, head=None, offset=10))
    mailbox.add_output(output(10))
    kinds = [type(event).__name__ for event in mailbox.take()]
    assert kinds[-3:] == ["Backfill", "Synced", "Backfill"]


def test_taking_starts_the_count_again_and_dropping_a_job_frees_its_share() -> None:
    mailbox = Mailbox(10_000)
    for offset in range(10):
        mailbox.add_output(output(offset))
    mailbox.take()
    mailbox.add_output(output(10))
    assert ranges(mailbox.take()) == [("held", 10, 11)]
    for offset in range(4):
        mailbox.add_output(output(offset, job_id="job_b"))
    mailbox.retain(lambda event: event.job_id != "job_b")
    mailbox.add_output(output(0))
    assert ranges(mailbox.take()) == [("held", 0, 1)]


# -- a stream's snapshot and its writer ----------------------------------------------


@pytest.fixture
def runtime() -> Any:
    """What a stream's lease and follow_job use of a runtime: a memory store and its hub."""
    hub = Hub()
    store = MemoryStore(Settings(), hub.publish, publish_output=hub.publish_output)
    settings = Settings()
    return SimpleNamespace(
        store=store, hub=hub, settings=settings, streams=StreamSlots(10), metrics=Metrics()
    )


async def long_output(store: MemoryStore) -> str:
    job, _ = await store.create(jobs.create(NewJob(), jobs.now()), None)
    for start in range(0, CHUNKS, 5):
        await store.append_output(job.job_id, output(start, 5).bodies, None)
    return job.job_id


@pytest.mark.anyio
async def test_a_snapshot_of_a_long_output_holds_a_page_and_reads_the_rest_back(
    runtime: Any,
) -> None:
    job_id = await long_output(runtime.store)
    lease = Lease(runtime, runtime.metrics.sse)
    followed = await follow_job(runtime, OPEN, lease.mailbox, job_id, None, 0)
    pending = lease.mailbox.take()
    assert held_bytes(pending) <= OUTPUT_HELD_BYTES
    assert ranges(pending)[-1] == ("backfill", ranges(pending)[-1][1], CHUNKS)

    sent: list[Event] = []
    async with contextlib.aclosing(lease.sendable(pending)) as batches:
        async for batch in batches:
            assert held_bytes(list(batch)) <= PAGE_BYTES + 64 * 1024  # a page, a chunk over
            sent += batch
    chunks = [body for event in sent if isinstance(event, Output) for body in event.bodies]
    numbers = [orjson.loads(body)["data"][:4] for body in chunks]
    assert numbers == [f"{n:04d}" for n in range(CHUNKS)]
    last = sent[-1]
    assert isinstance(last, Synced)
    assert last.offset == CHUNKS
    lease.end(followed.subscription)


@pytest.mark.anyio
async def test_output_of_a_job_deleted_before_it_was_read_back_is_skipped(runtime: Any) -> None:
    job_id = await long_output(runtime.store)
    lease = Lease(runtime, runtime.metrics.sse)
    after = Synced(job_id=job_id, version=1, head=None, offset=CHUNKS)
    await runtime.store.delete(job_id)
    batches = [batch async for batch in lease.sendable([Backfill(job_id, 1, 0, CHUNKS), after])]
    assert batches == [[after]]
    lease.end()


# -- end to end -----------------------------------------------------------------------


def test_every_chunk_of_a_long_output_reaches_an_sse_reader_in_order(client: TestClient) -> None:
    job_id = new_job(client)
    words = [f"{n:04d}{CHUNK}" for n in range(CHUNKS)]
    for start in range(0, CHUNKS, 5):
        append(client, job_id, *words[start : start + 5])
    client.post(f"/api/jobs/{job_id}/complete", json={})
    events = stream(client, f"/api/jobs/{job_id}/events?output=1")
    pieces = [event for event in events if event.event == "output"]
    chunks = [chunk for event in pieces for chunk in event.json()["chunks"]]
    assert [chunk["offset"] for chunk in chunks] == list(range(CHUNKS))
    assert [chunk["data"] for chunk in chunks] == words
    assert [event.event for event in events[-2:]] == ["job", "synced"]
    # A reader that dropped halfway resumes from the id of the last event it got.
    middle = pieces[len(pieces) // 2]
    resumed = stream(client, f"/api/jobs/{job_id}/events?output=1", middle.id)
    rest = [c["offset"] for e in resumed if e.event == "output" for c in e.json()["chunks"]]
    assert rest == list(range(int(middle.id.split(".")[1]), CHUNKS))


def test_every_chunk_of_a_long_output_reaches_a_websocket_in_order(client: TestClient) -> None:
    job_id = new_job(client)
    for start in range(0, CHUNKS, 5):
        append(client, job_id, *[f"{n:04d}{CHUNK}" for n in range(start, start + 5)])
    with client.websocket_connect("/api/jobs/ws") as ws:
        ws.send_json({"type": "subscribe", "jobId": job_id, "output": True})
        assert ws.receive_json()["type"] == "subscribed"
        offsets: list[int] = []
        frame = ws.receive_json()
        while frame["type"] == "output":
            offsets += [chunk["offset"] for chunk in frame["chunks"]]
            frame = ws.receive_json()
        assert frame["type"] == "job"
        assert ws.receive_json() == {
            "type": "synced",
            "jobId": job_id,
            "version": 1,
            "nextOffset": CHUNKS,
        }
    assert offsets == list(range(CHUNKS))
