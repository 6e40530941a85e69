"""No client input reaches outside the Redis key namespace: ids, Idempotency-Keys, owners."""

from __future__ import annotations

import re

import pytest
from redis.asyncio import Redis

from app import jobs
from app.errors import JobNotFound
from app.models import NewJob
from app.store import Idempotency
from tests.store.harness import Recorder, open_redis_store

pytestmark = pytest.mark.anyio

HOSTILE = [
    "../counts",
    "x:job:job_victim",
    "*",
    "a\nb\r\nDEL jobcast:feed",
    "{braces}",
    "k" * 255,
    "ünïcode",
]
KNOWN = re.compile(
    r"(job:job_[A-Za-z0-9_-]+|idem:[0-9a-f]{64}|owner:[0-9a-f]{64}|created|created:seq"
    r"|expiry|active|tombs|counts|feed|owners:indexed|owners:walked)"
)


async def test_hostile_inputs_only_make_keys_of_the_documented_shapes(
    redis_server: str, redis_prefix: str
) -> None:
    """Idempotency-Keys, owners and job ids shaped like key names make only documented keys."""
    store = await open_redis_store(redis_server, redis_prefix, Recorder())
    try:
        for number, key in enumerate(HOSTILE):
            # The store takes any owner; the API admits visible ASCII only.
            fresh = jobs.create(NewJob(message=f"{number}"), jobs.now()).model_copy(
                update={"owner": key}
            )
            job, created = await store.create(fresh, Idempotency(key, "fp"))
            assert created
            again, created_again = await store.create(fresh, Idempotency(key, "fp"))
            assert (again.job_id, created_again) == (job.job_id, False)
        for job_id in HOSTILE:
            with pytest.raises(JobNotFound):
                await store.get(job_id)
        client = Redis.from_url(redis_server)
        try:
            names = [name.decode() async for name in client.scan_iter(match="*")]
        finally:
            await client.aclose()
    finally:
        await store.aclose()
    ours = [name for name in names if name.startswith(redis_prefix)]
    assert len([name for name in ours if ":idem:" in name]) == len(HOSTILE)
    assert len([name for name in ours if ":owner:" in name]) == len(HOSTILE)
    for name in ours:
        assert KNOWN.fullmatch(name.removeprefix(redis_prefix)), name
