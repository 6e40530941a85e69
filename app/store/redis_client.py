"""How Jobcast talks to Redis: pooled clients, one deadline per operation, errors told
plainly to clients and in full to the log.

- **Fail fast, within one deadline.** Each operation, all included (the
  wait for a pooled connection, connecting, every round trip, the retries
  of a version conflict, the wait for local delivery), runs under one
  deadline of JOBS_REDIS_TIMEOUT (:meth:`RedisClient.call`); one that reads
  in pages (a snapshot, a long resume, a sweep of many jobs) gets it afresh
  after each page (:func:`progressed`), so the bound is on waiting for
  Redis, not on how much there is to read. The deadline is the only read
  timeout of the connections operations use: with a socket timeout,
  redis-py sends through ``asyncio.wait_for``, which on Python 3.11 can
  swallow the deadline's cancellation and let the call run a whole socket
  timeout longer. (The feed listener runs under no deadline; its
  connections keep their socket timeouts.) A command cut short never leaves
  its reply to the next user of the connection: redis-py closes a
  connection whose command is cancelled mid-way (since redis/redis-py#2624),
  and the pool reconnects it on its next use. No client-side retries: a
  retried write could apply twice, and a write cut short may have been
  applied all the same (as with any lost reply; an Idempotency-Key makes
  the client's retry safe).
- **Say little outside, enough in the log.** Every Redis error becomes
  ``BackendUnavailable`` (503) at the store's boundary, with a message that
  does not say where Redis is (``/readyz`` is public). Where it is and
  redis-py's detail go to the log: a warning when an outage starts, at most
  one a minute while it lasts, and one line when Redis answers again; the
  feed listener logs its own outage the same way (without the reminders).
  Pooled connections that Redis closed are replaced on their next use, so
  a restarted Redis is used again without restarting the server.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextvars import ContextVar

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import OutOfMemoryError, RedisError

from app.errors import BackendUnavailable, JobsError
from app.settings import SettingsError
from app.store.outage import Outage

POOL_SIZE = 64  # connections to Redis per client, so per process two (commands, the feed)

# What a client is told; where Redis is and what went wrong go to the log.
UNAVAILABLE = "the job store is unavailable; retry shortly"

# The deadline of the operation under way in this task, and its length.
_DEADLINE: ContextVar[tuple[asyncio.Timeout, float] | None] = ContextVar(
    "jobcast_redis_deadline", default=None
)


class RedisClient:
    """A client of the Redis at ``url`` for operations, each under a deadline of
    ``timeout`` seconds (:meth:`call`)."""

    def __init__(self, url: str, timeout: float) -> None:
        # Operations run under a deadline, which bounds their reads.
        self.redis = connect(url, timeout, None)
        self.where = where(self.redis)
        self._timeout = timeout
        self._outage = Outage(
            f"Redis at {self.where} is unavailable, requests get 503",
            f"Redis at {self.where} answers again",
        )
        # Reachable, but out of memory (maxmemory): it refuses writes, and answers reads,
        # which say nothing of whether it takes writes again.
        self._full = Outage(
            f"Redis at {self.where} is out of memory (maxmemory), writes get 503",
            f"Redis at {self.where} takes writes again",
        )

    @contextlib.asynccontextmanager
    async def call(self, writes: bool = False) -> AsyncIterator[asyncio.Timeout]:
        """One operation against Redis: under one deadline, its errors translated.

        Yields the deadline, for a wait that follows the operation (delivery).
        ``writes``: the operation writes, so its success ends a lack of memory.
        """
        seconds = self._timeout
        deadline = asyncio.timeout(seconds)
        token = _DEADLINE.set((deadline, seconds))
        try:
            async with deadline:
                yield deadline
        except OutOfMemoryError as exc:
            self._outage.over()  # it answered
            self._full.failed(str(exc))
            raise BackendUnavailable(UNAVAILABLE) from exc
        except (RedisError, OSError) as exc:  # the deadline's TimeoutError is an OSError
            self._outage.failed(
                f"no reply within {seconds:g}s" if deadline.expired() else str(exc) or repr(exc)
            )
            raise BackendUnavailable(UNAVAILABLE) from exc
        except JobsError:
            self._outage.over()  # Redis answered; what it said is refused
            raise
        else:
            self._outage.over()
            if writes:
                self._full.over()
        finally:
            _DEADLINE.reset(token)

    async def aclose(self) -> None:
        await self.redis.aclose()


def progressed() -> None:
    """A page arrived: the operation under way gets its whole timeout again for the next."""
    current = _DEADLINE.get()
    if current is not None and not current[0].expired():
        deadline, seconds = current
        deadline.reschedule(asyncio.get_running_loop().time() + seconds)


def connect(url: str, connect_timeout: float, read_timeout: float | None) -> Redis:
    """A client with its own pool; ``read_timeout`` None: no socket timeout (see above)."""
    try:
        pool = BlockingConnectionPool.from_url(
            url,
            # Requests beyond the pool wait their turn (as long as connecting may take)
            # rather than fail: a thousand browsers reconnecting at once is normal.
            max_connections=POOL_SIZE,
            timeout=connect_timeout,
            # RESP2: the same reply shapes from every redis-py >= 5 and every server.
            protocol=2,
            socket_connect_timeout=connect_timeout,
            socket_timeout=read_timeout,
            # No silent retries: a write retried after a lost reply could apply twice.
            retry=Retry(NoBackoff(), 0),
        )
    except ValueError as exc:
        raise SettingsError(f"JOBS_REDIS_URL={url!r} is not a Redis URL: {exc}") from None
    return Redis.from_pool(pool)


def where(client: Redis) -> str:
    """Where ``client`` finds Redis, for the log: host and port (or socket), and database."""
    options = client.connection_pool.connection_kwargs
    place = options.get("path") or f"{options.get('host')}:{options.get('port')}"
    return f"{place}/{options.get('db', 0)}"
