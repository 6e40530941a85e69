"""The Redis owner index: an owner's reads cost what that owner has, and older jobs join it."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable

import pytest
from redis.asyncio import Redis

from app import jobs
from app.jobs import JobFilter
from app.models import Job, NewJob
from app.store.redis import RedisStore
from tests.store.harness import Harness, Recorder, contract_settings

pytestmark = pytest.mark.anyio


@pytest.fixture
def harness(deaf: Harness) -> Harness:
    """A store without its feed listener: only the test's own calls reach Redis."""
    return deaf


async def create(harness: Harness, owner: str | None) -> Job:
    job, _ = await harness.store.create(jobs.create(NewJob(owner=owner), jobs.now()), None)
    return job


async def commands_run(raw: Redis, call: Callable[[], Awaitable[object]]) -> int:
    """How many commands the server ran during ``call`` (INFO itself excluded)."""

    async def total() -> int:
        stats = await raw.info("commandstats")
        return sum(int(stat["calls"]) for name, stat in stats.items() if name != "cmdstat_info")

    before = await total()
    await call()
    return await total() - before


def owner_key(prefix: str, owner: str) -> str:
    return f"{prefix}owner:{hashlib.sha256(owner.encode()).hexdigest()}"


async def test_owner_reads_do_not_grow_with_other_owners_jobs(harness: Harness, raw: Redis) -> None:
    """An owner's snapshot and list run as many commands with 3,000 other jobs as without."""
    store = harness.store
    alice = [await create(harness, "alice") for _ in range(3)]
    reads: list[Callable[[], Awaitable[object]]] = [
        lambda: store.replay(JobFilter(owner="alice"), None),
        lambda: store.list(JobFilter(owner="alice"), 10, None),
        lambda: store.list(JobFilter(owner="alice", status="queued"), 2, None),
    ]
    for read in reads:
        await read()  # anything a first read learns once
    alone = [await commands_run(raw, read) for read in reads]
    everyone_alone = await commands_run(raw, lambda: store.replay(JobFilter(), None))

    for start in range(0, 3000, 100):
        await asyncio.gather(
            *(
                create(harness, f"owner-{n % 700}" if n % 4 else None)
                for n in range(start, start + 100)
            )
        )
    crowded = [await commands_run(raw, read) for read in reads]
    assert crowded == alone
    # The measure has teeth: a snapshot of everyone's jobs does grow.
    assert await commands_run(raw, lambda: store.replay(JobFilter(), None)) > everyone_alone + 3000

    replay = await store.replay(JobFilter(owner="alice"), None)
    assert [change.job_id for change in replay.changes] == [job.job_id for job in alice]
    listed = await store.list(JobFilter(owner="alice"), 10, None)
    assert [job.job_id for job in listed.jobs] == [job.job_id for job in reversed(alice)]


async def test_sweeps_take_removed_jobs_out_of_the_owner_index(
    harness: Harness, raw: Redis, redis_prefix: str
) -> None:
    """The owner index holds exactly the owner's live jobs; jobs without an owner are in none."""
    made = [await create(harness, "alice") for _ in range(4)]
    await create(harness, None)
    key = owner_key(redis_prefix, "alice")
    assert await raw.zrange(key, 0, -1) == [job.job_id for job in made]
    for job in made[:3]:
        await harness.complete(job.job_id)
    await harness.expire_terminal_jobs()
    assert await raw.zrange(key, 0, -1) == [made[3].job_id]
    await harness.complete(made[3].job_id)
    await harness.expire_terminal_jobs()
    assert not await raw.exists(key)
    owner_keys = [name async for name in raw.scan_iter(match=f"{redis_prefix}owner:*")]
    assert owner_keys == []


async def test_jobs_older_than_the_index_are_found_and_then_indexed(
    harness: Harness,
    raw: Redis,
    redis_server: str,
    redis_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Jobs older than the owner index are found all along, and sweeps index them in batches."""
    made = {owner: [await create(harness, owner) for _ in range(5)] for owner in ("alice", "bob")}
    await create(harness, None)
    # What an earlier version left behind: no owner indexes, no marker, no `owned` fields.
    await raw.delete(
        owner_key(redis_prefix, "alice"),
        owner_key(redis_prefix, "bob"),
        f"{redis_prefix}owners:indexed",
    )
    for job in made["alice"] + made["bob"]:
        await raw.hdel(f"{redis_prefix}job:{job.job_id}", "owned")
    monkeypatch.setattr("app.store.redis._WALK_BATCH", 3)
    sink = Recorder()
    settings = contract_settings(backend="redis", redis_url=redis_server, redis_prefix=redis_prefix)
    store = RedisStore(settings, sink, clock=harness.clock)  # a process of the new version
    try:
        alice = [job.job_id for job in made["alice"]]

        async def alice_is_found() -> None:
            replay = await store.replay(JobFilter(owner="alice"), None)
            assert [change.job_id for change in replay.changes] == alice
            listed = await store.list(JobFilter(owner="alice"), 2, None)
            assert [job.job_id for job in listed.jobs] == alice[::-1][:2]

        await alice_is_found()
        await store.sweep()
        assert await raw.get(f"{redis_prefix}owners:walked") == "3"
        assert not await raw.exists(f"{redis_prefix}owners:indexed")
        await alice_is_found()
        for _ in range(3):
            await store.sweep()
        assert await raw.exists(f"{redis_prefix}owners:indexed")
        assert not await raw.exists(f"{redis_prefix}owners:walked")
        for owner, owned in made.items():
            members = await raw.zrange(owner_key(redis_prefix, owner), 0, -1)
            assert members == [job.job_id for job in owned]
        await alice_is_found()

        # Indexed, they leave the index when they are swept away like any other.
        await Harness(store, sink, harness.clock).complete(alice[0])
        harness.clock.advance(3600)
        await store.sweep()
        assert await raw.zrange(owner_key(redis_prefix, "alice"), 0, -1) == alice[1:]
    finally:
        await store.aclose()


async def test_a_new_deployment_needs_no_walk(
    harness: Harness, raw: Redis, redis_prefix: str
) -> None:
    """The first job of a deployment marks it indexed: nothing older can exist."""
    assert not await raw.exists(f"{redis_prefix}owners:indexed")
    await create(harness, "alice")
    assert await raw.exists(f"{redis_prefix}owners:indexed")


async def test_an_owner_resume_decodes_only_that_owners_changes(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Resuming an owner's stream skips other owners' feed entries without decoding them."""
    alice = await create(harness, "alice")
    cursor = (await harness.store.replay(JobFilter(owner="alice"), None)).head
    for n in range(300):
        await create(harness, f"owner-{n}" if n % 2 else None)
    await harness.update(alice.job_id, progress=10)
    decoded: list[object] = []
    decode = Job.model_validate_json

    def counting(data: str | bytes) -> Job:
        decoded.append(data)
        return decode(data)

    monkeypatch.setattr(Job, "model_validate_json", counting)
    resumed = await harness.store.replay(JobFilter(owner="alice"), cursor)
    assert [(change.job_id, change.version) for change in resumed.changes] == [(alice.job_id, 2)]
    assert len(decoded) == 1
    everyone = await harness.store.replay(JobFilter(), cursor)
    assert len(everyone.changes) == 301
