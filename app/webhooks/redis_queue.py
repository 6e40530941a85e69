"""The Redis backend's webhook queue: the ``{p}hooks`` stream, read by one process.

The store's scripts append an event to the stream in the same step as the
change itself, so an event is never lost between the two, and the stream
survives restarts of Jobcast (and of Redis, as far as its persistence goes).

Exactly one process delivers: the holder of ``{p}hooks:leader``, a key with a
short TTL that its holder renews. Delivering in one process is what keeps a
job's events in order for every endpoint. The holder reads through the consumer
group ``deliverers``; what it read stays pending there until delivered, and
then is acknowledged and deleted. A process that takes over (its predecessor
stopped, or died: the key then expires within :data:`LEASE` seconds) first
claims every pending entry, and delivers those before anything newer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from typing import Any

from redis.exceptions import RedisError, ResponseError

from app.errors import BackendUnavailable
from app.models import Job
from app.settings import Settings
from app.store.redis_client import connect
from app.store.redis_keys import Keys
from app.webhooks.queue import LeadershipLost, QueuedEvent

logger = logging.getLogger("jobcast")

LEASE = 5.0  # seconds a dead deliverer holds up delivery at most
RENEW_EVERY = LEASE / 5
GROUP = "deliverers"
BLOCK_MS = 1000  # how long one read waits for new events

# Renew or release the lease only if this process still holds it.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisQueue:
    def __init__(self, settings: Settings) -> None:
        self._keys = Keys(settings.redis_prefix)
        timeout = settings.redis_timeout
        self._redis = connect(settings.redis_url, timeout, timeout + BLOCK_MS / 1000)
        self._renew = self._redis.register_script(_RENEW)
        self._release = self._redis.register_script(_RELEASE)
        self.name = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._leading = False
        self._lost = False
        self._backlog: str | None = None  # the last pending entry read back, while catching up
        self._renewer: asyncio.Task[None] | None = None

    @property
    def delivering(self) -> bool:
        return self._leading

    @property
    def pending(self) -> int:
        return 0  # entries wait in Redis until read: XLEN would need a round trip

    async def take(self, most: int) -> list[QueuedEvent]:
        if self._lost:
            self._lost = False
            raise LeadershipLost
        try:
            if not self._leading and not await self._lead():
                await asyncio.sleep(RENEW_EVERY)  # the holder is alive: look again later
                return []
            return await self._read(most)
        except ResponseError as exc:
            if "NOGROUP" in str(exc):  # the stream was deleted under us: start it again
                await self._make_group()
                return []
            raise BackendUnavailable(str(exc)) from exc
        except RedisError as exc:
            raise BackendUnavailable(str(exc) or type(exc).__name__) from exc

    async def done(self, event: QueuedEvent) -> None:
        try:
            await self._forget(event.key)
        except RedisError as exc:
            raise BackendUnavailable(str(exc) or type(exc).__name__) from exc

    async def _forget(self, entry_id: str) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.xack(self._keys.hooks, GROUP, entry_id)
            pipe.xdel(self._keys.hooks, entry_id)
            await pipe.execute()

    async def aclose(self) -> None:
        renewer, self._renewer = self._renewer, None
        if renewer is not None:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
        if self._leading:
            # Hand over at once rather than after the lease runs out.
            with contextlib.suppress(RedisError):
                await self._release(keys=[self._keys.hooks_leader], args=[self.name])
        await self._redis.aclose()

    async def _lead(self) -> bool:
        """Take the lead if nobody holds it; then claim what the previous holder left."""
        lease_ms = int(LEASE * 1000)
        taken = await self._redis.set(self._keys.hooks_leader, self.name, nx=True, px=lease_ms)
        if not taken:
            return False
        await self._make_group()
        start = "0-0"
        while True:  # every pending entry is ours now: only the holder reads the group
            reply: Any = await self._redis.xautoclaim(
                self._keys.hooks, GROUP, self.name, 0, start_id=start, count=1000
            )
            start = _text(reply[0])
            if start == "0-0":
                break
        self._leading, self._backlog = True, "0"
        self._renewer = asyncio.create_task(self._keep_lead(), name="jobcast-webhook-lease")
        logger.info("webhooks: this process delivers (%s)", self.name)
        return True

    async def _make_group(self) -> None:
        with contextlib.suppress(ResponseError):  # BUSYGROUP: it exists already
            await self._redis.xgroup_create(self._keys.hooks, GROUP, id="0", mkstream=True)

    async def _keep_lead(self) -> None:
        lease_ms = int(LEASE * 1000)
        loop = asyncio.get_running_loop()
        renewed = loop.time()
        while True:
            await asyncio.sleep(RENEW_EVERY)
            unreachable = False
            try:
                held = await self._renew(keys=[self._keys.hooks_leader], args=[self.name, lease_ms])
            except RedisError:
                unreachable = True
                held = loop.time() - renewed < LEASE  # unknown: held until it would have expired
            else:
                renewed = loop.time() if held else renewed
            if not held:
                logger.warning(
                    "webhooks: this process lost the lead; %s",
                    "Redis is unreachable: whichever process reaches it first delivers"
                    if unreachable
                    else "another one delivers",
                )
                self._leading, self._lost, self._renewer = False, True, None
                return

    async def _read(self, most: int) -> list[QueuedEvent]:
        keys = self._keys
        if self._backlog is not None:
            # What this process holds pending (claimed, or read before a restart of the lead).
            reply: Any = await self._redis.xreadgroup(
                GROUP, self.name, {keys.hooks: self._backlog}, count=most
            )
            entries = reply[0][1] if reply else []
            if not entries:
                self._backlog = None
                return []
            self._backlog = _text(entries[-1][0])
        else:
            reply = await self._redis.xreadgroup(
                GROUP, self.name, {keys.hooks: ">"}, count=most, block=BLOCK_MS
            )
            entries = reply[0][1] if reply else []
        events = []
        for entry in entries:
            entry_id, fields = _text(entry[0]), entry[1]
            # A stream id starts with Redis's clock at the append, in milliseconds.
            queued_at = int(entry_id.partition("-")[0]) / 1000
            try:
                events.append(QueuedEvent(entry_id, _job(fields), queued_at))
            except (KeyError, ValueError, TypeError):
                logger.error("webhooks: dropped queue entry %s, which is no job", entry_id)
                await self._forget(entry_id)
        return events


def _job(fields: dict[bytes, bytes] | None) -> Job:
    if fields is None:
        raise KeyError("job")  # deleted from the stream while pending
    return Job.model_validate_json(fields[b"job"])


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
