"""The Redis settings, and a store that starts before its Redis does."""

from __future__ import annotations

import time

import anyio
import pytest

from app.errors import BackendUnavailable
from app.settings import Settings, SettingsError
from app.store.redis import RedisStore
from tests.conftest import seconds
from tests.store.harness import WAIT, Clock, Harness, Recorder, contract_settings
from tests.store.redis_server import RedisServer

pytestmark = pytest.mark.anyio


def test_redis_settings_have_defaults() -> None:
    """Unset, the Redis settings are a jobcast: prefix, a bounded feed and a short timeout."""
    settings = Settings.from_env({})
    assert settings.redis_prefix == "jobcast:"
    assert settings.redis_feed_length == 10_000
    assert 0 < settings.redis_timeout <= 2


def test_redis_settings_are_read_from_the_environment() -> None:
    """JOBS_REDIS_PREFIX, JOBS_REDIS_FEED_LENGTH and JOBS_REDIS_TIMEOUT set their fields."""
    settings = Settings.from_env(
        {
            "JOBS_REDIS_PREFIX": "staging:",
            "JOBS_REDIS_FEED_LENGTH": "5000",
            "JOBS_REDIS_TIMEOUT": "0.5",
        }
    )
    assert (settings.redis_prefix, settings.redis_feed_length, settings.redis_timeout) == (
        "staging:",
        5000,
        0.5,
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("JOBS_REDIS_FEED_LENGTH", "10"),
        ("JOBS_REDIS_FEED_LENGTH", "many"),
        ("JOBS_REDIS_TIMEOUT", "0"),
        ("JOBS_REDIS_TIMEOUT", "soon"),
    ],
)
def test_bad_redis_settings_are_refused_by_name(name: str, value: str) -> None:
    """An invalid Redis setting stops start-up with a message naming it."""
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})


def test_a_url_that_is_not_redis_is_refused_by_name() -> None:
    """A JOBS_REDIS_URL of another scheme is a settings error naming the variable."""
    with pytest.raises(SettingsError, match="JOBS_REDIS_URL"):
        RedisStore(contract_settings(redis_url="http://127.0.0.1:6379"), Recorder())


async def test_store_started_before_redis_works_once_it_is_up(
    private_redis: RedisServer, redis_prefix: str
) -> None:
    """A server may start while Redis is down: it answers 503 until Redis is up, then works."""
    private_redis.stop()
    sink = Recorder()
    settings = contract_settings(redis_url=private_redis.url, redis_prefix=redis_prefix)
    store = RedisStore(settings, sink)
    try:
        started = time.monotonic()
        await store.start()
        assert time.monotonic() - started < settings.redis_timeout + seconds(1)
        with pytest.raises(BackendUnavailable):
            await store.ping()

        private_redis.start()
        with anyio.fail_after(WAIT):
            while True:
                try:
                    await store.ping()
                    break
                except BackendUnavailable:
                    await anyio.sleep(0.05)
        job = await Harness(store, sink, Clock()).create()
        await sink.wait_for(lambda sink: [c.job_id for c in sink.changes] == [job.job_id])
    finally:
        await store.aclose()
