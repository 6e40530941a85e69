"""Settings: read once from the environment into one frozen object.

Nothing in the package reads ``os.environ`` anywhere else. An invalid value
stops start-up with a :class:`SettingsError` that names the variable.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal, TypeVar

Backend = Literal["memory", "redis"]

T = TypeVar("T")


class SettingsError(ValueError):
    """A setting in the environment is missing its meaning; the message names it."""


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    backend: Backend = "memory"
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_prefix: str = "jobcast:"
    redis_feed_length: int = 10_000
    redis_timeout: float = 2.0
    terminal_ttl: float = 300.0
    tombstone_ttl: float = 3600.0
    max_tombstones: int = 100_000
    heartbeat: float = 15.0
    workers: int = 1
    # The raw JOBS_API_KEY (one key, or several separated by commas); never in a repr.
    api_key: str | None = field(default=None, repr=False)
    allow_anonymous: bool = False
    token_secret: str | None = field(default=None, repr=False)
    token_ttl: float = 3600.0
    cors_origins: tuple[str, ...] = ()
    cors_credentials: bool = False
    sse_retry_ms: int = 2000
    subscriber_backlog: int = 10_000
    send_timeout: float = 30.0
    max_body_bytes: int = 1024 * 1024
    shutdown_timeout: float = 3.0
    demo: bool | None = None  # None: on with the memory backend, off with Redis
    # 64 KiB is the recommended bound; the default matches the body limit because the
    # existing suite pins a metadata body just under 1 MiB as accepted by default.
    max_metadata_bytes: int = 64 * 1024
    max_text_length: int = 10_000
    ws_max_frame_bytes: int = 64 * 1024
    ws_max_subscriptions: int = 100
    ws_rate: float = 20.0
    max_streams: int = 1000
    access_log: bool = True
    ws_compression: bool = False
    # The connection edge (app.protocol): what a client may hold before it is a request.
    max_header_bytes: int = 16 * 1024
    max_headers: int = 100
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    max_connections: int = 1000
    # Host names served besides loopback's (open mode), or only these (when set).
    allowed_hosts: tuple[str, ...] = ()
    forwarded_allow_ips: str = "127.0.0.1,::1"  # uvicorn's own default
    snapshot_rate: float = 2.0

    @property
    def demo_enabled(self) -> bool:
        return self.backend == "memory" if self.demo is None else self.demo

    @property
    def api_keys(self) -> tuple[str, ...]:
        """Every accepted API key; the first one also derives the token secret."""
        return _split(self.api_key)

    @property
    def token_secrets(self) -> tuple[str, ...]:
        """JOBS_TOKEN_SECRET's secrets: the first signs, every one verifies."""
        return _split(self.token_secret)

    @property
    def protected(self) -> bool:
        """Whether requests must authenticate (an API key is configured)."""
        return bool(self.api_keys)

    def __post_init__(self) -> None:
        if self.workers > 1 and self.backend == "memory":
            raise SettingsError(
                f"JOBS_WORKERS={self.workers} needs JOBS_BACKEND=redis: with the memory "
                "backend every worker process would keep its own jobs. Use "
                "JOBS_BACKEND=redis (and JOBS_REDIS_URL), or JOBS_WORKERS=1."
            )
        if self.api_key is not None and not self.api_keys:
            raise SettingsError("JOBS_API_KEY holds no key: give one or more, comma-separated")
        if any(len(key) < MIN_SECRET_LENGTH for key in self.api_keys):
            raise SettingsError(
                f"JOBS_API_KEY: every key must be at least {MIN_SECRET_LENGTH} characters (a "
                "short key can be guessed, and read tokens signed with it let anyone try "
                f"guesses offline); make one with: {KEYGEN}"
            )
        if self.token_secret is not None and (
            not self.token_secrets
            or any(len(secret) < MIN_SECRET_LENGTH for secret in self.token_secrets)
        ):
            raise SettingsError(
                f"JOBS_TOKEN_SECRET must be at least {MIN_SECRET_LENGTH} characters (each, if "
                f"comma-separated); make one with: {KEYGEN}"
            )
        if not self.protected and not self.allow_anonymous and not is_loopback(self.host):
            raise SettingsError(
                f"JOBS_HOST={self.host} is reachable from other machines, and JOBS_API_KEY is "
                "not set: anyone who can reach the port could read and change every job. Set "
                "JOBS_API_KEY to a long random secret (several, comma-separated, to rotate), "
                "or serve on loopback (JOBS_HOST=127.0.0.1), or set JOBS_ALLOW_ANONYMOUS=1 to "
                "serve without authentication anyway."
            )
        for origin in self.cors_origins:
            if origin != "*" and not _ORIGIN.fullmatch(origin):
                raise SettingsError(
                    f"JOBS_CORS_ORIGINS: {origin!r} is not an origin: use scheme://host[:port], "
                    "as in https://app.example.com, or *"
                )
        for pattern in self.allowed_hosts:
            if not _HOST_PATTERN.fullmatch(pattern):
                raise SettingsError(
                    f"JOBS_ALLOWED_HOSTS: {pattern!r} is not a host name: give names as in "
                    "jobs.example.com or *.example.com (no scheme, no port), or *"
                )
        if self.cors_credentials and "*" in self.cors_origins:
            raise SettingsError(
                "JOBS_CORS_CREDENTIALS=1 cannot be combined with JOBS_CORS_ORIGINS=*: any "
                "site could then make credentialed requests; list the allowed origins instead"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        reader = _Reader(env)
        default = cls()
        return cls(
            host=reader.text("JOBS_HOST", default.host),
            port=reader.number("JOBS_PORT", int, default.port, low=0, high=65535),
            backend=reader.choice("JOBS_BACKEND", ("memory", "redis"), default.backend),
            redis_url=reader.redis_url("JOBS_REDIS_URL", default.redis_url),
            redis_prefix=reader.text("JOBS_REDIS_PREFIX", default.redis_prefix),
            redis_feed_length=reader.number(
                "JOBS_REDIS_FEED_LENGTH", int, default.redis_feed_length, low=100
            ),
            redis_timeout=reader.number(
                "JOBS_REDIS_TIMEOUT", float, default.redis_timeout, low=0.05, high=60
            ),
            terminal_ttl=reader.number("JOBS_TERMINAL_TTL", float, default.terminal_ttl, low=0),
            tombstone_ttl=reader.number("JOBS_TOMBSTONE_TTL", float, default.tombstone_ttl, low=0),
            max_tombstones=reader.number("JOBS_MAX_TOMBSTONES", int, default.max_tombstones, low=0),
            heartbeat=reader.number("JOBS_HEARTBEAT", float, default.heartbeat, low=0.01),
            workers=reader.number("JOBS_WORKERS", int, default.workers, low=1, high=256),
            api_key=env.get("JOBS_API_KEY") or None,
            allow_anonymous=bool(reader.flag("JOBS_ALLOW_ANONYMOUS")),
            token_secret=env.get("JOBS_TOKEN_SECRET") or None,
            token_ttl=reader.number("JOBS_TOKEN_TTL", float, default.token_ttl, low=1),
            cors_origins=reader.origins("JOBS_CORS_ORIGINS"),
            cors_credentials=bool(reader.flag("JOBS_CORS_CREDENTIALS")),
            sse_retry_ms=reader.number("JOBS_SSE_RETRY_MS", int, default.sse_retry_ms, low=0),
            subscriber_backlog=reader.number(
                "JOBS_SUBSCRIBER_BACKLOG", int, default.subscriber_backlog, low=1
            ),
            send_timeout=reader.number("JOBS_SEND_TIMEOUT", float, default.send_timeout, low=0.01),
            max_body_bytes=reader.number("JOBS_MAX_BODY_BYTES", int, default.max_body_bytes, low=1),
            shutdown_timeout=reader.number(
                "JOBS_SHUTDOWN_TIMEOUT", float, default.shutdown_timeout, low=0
            ),
            demo=reader.flag("JOBS_DEMO"),
            max_metadata_bytes=reader.number(
                "JOBS_MAX_METADATA_BYTES", int, default.max_metadata_bytes, low=2
            ),
            max_text_length=reader.number(
                "JOBS_MAX_TEXT_LENGTH", int, default.max_text_length, low=1
            ),
            ws_max_frame_bytes=reader.number(
                "JOBS_WS_MAX_FRAME_BYTES", int, default.ws_max_frame_bytes, low=1024
            ),
            ws_max_subscriptions=reader.number(
                "JOBS_WS_MAX_SUBSCRIPTIONS", int, default.ws_max_subscriptions, low=1
            ),
            ws_rate=reader.number("JOBS_WS_RATE", float, default.ws_rate, low=0.1),
            max_streams=reader.number("JOBS_MAX_STREAMS", int, default.max_streams, low=1),
            access_log=reader.flag("JOBS_ACCESS_LOG") is not False,
            ws_compression=bool(reader.flag("JOBS_WS_COMPRESSION")),
            max_header_bytes=reader.number(
                "JOBS_MAX_HEADER_BYTES", int, default.max_header_bytes, low=1024
            ),
            max_headers=reader.number("JOBS_MAX_HEADERS", int, default.max_headers, low=8),
            header_timeout=reader.number(
                "JOBS_HEADER_TIMEOUT", float, default.header_timeout, low=0.1
            ),
            body_timeout=reader.number("JOBS_BODY_TIMEOUT", float, default.body_timeout, low=0.1),
            max_connections=reader.number(
                "JOBS_MAX_CONNECTIONS", int, default.max_connections, low=1
            ),
            allowed_hosts=tuple(host.lower() for host in _split(env.get("JOBS_ALLOWED_HOSTS"))),
            forwarded_allow_ips=reader.text(
                "JOBS_FORWARDED_ALLOW_IPS", default.forwarded_allow_ips
            ),
            snapshot_rate=reader.number(
                "JOBS_SNAPSHOT_RATE", float, default.snapshot_rate, low=0.01
            ),
        )


_ORIGIN = re.compile(r"[a-z][a-z0-9+.-]*://[^/?#\s]+")
# Starlette's TrustedHostMiddleware patterns: a name, "*.<domain>", or "*" for any.
_HOST_PATTERN = re.compile(r"\*|(\*\.)?[a-z0-9_-]+(\.[a-z0-9_-]+)*|\[[0-9a-f:.]+\]")
MIN_SECRET_LENGTH = 32
KEYGEN = 'jobcast keygen (or: python3 -c "import secrets; print(secrets.token_urlsafe(32))")'


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) is reachable from this machine only."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def _split(value: str | None) -> tuple[str, ...]:
    return tuple(part.strip() for part in (value or "").split(",") if part.strip())


class _Reader:
    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env

    def text(self, name: str, default: str) -> str:
        value = self._env.get(name, "").strip()
        return value or default

    def redis_url(self, name: str, default: str) -> str:
        value = self.text(name, default)
        scheme, sep, _ = value.partition("://")
        if not sep or scheme.lower() not in ("redis", "rediss", "unix"):
            raise SettingsError(
                f"{name}={value!r} is not a Redis URL: use redis://host:port/db, "
                "rediss://... or unix://..."
            )
        return value

    def origins(self, name: str) -> tuple[str, ...]:
        # Browsers send origins lower-case and without a trailing slash.
        return tuple(origin.lower().rstrip("/") for origin in _split(self._env.get(name)))

    def flag(self, name: str) -> bool | None:
        value = self._env.get(name, "").strip().lower()
        if not value:
            return None
        if value in ("1", "true", "yes", "on"):
            return True
        if value in ("0", "false", "no", "off"):
            return False
        raise SettingsError(f"{name}={value!r} is not a yes/no value (use 1 or 0)")

    def choice(self, name: str, allowed: tuple[Backend, ...], default: Backend) -> Backend:
        value = self.text(name, default).lower()
        for option in allowed:
            if value == option:
                return option
        raise SettingsError(f"{name}={value!r} is not one of: {', '.join(allowed)}")

    def number(
        self,
        name: str,
        kind: Callable[[str], T],
        default: T,
        *,
        low: float | None = None,
        high: float | None = None,
    ) -> T:
        raw = self._env.get(name, "").strip()
        if not raw:
            return default
        try:
            value = kind(raw)
        except ValueError:
            raise SettingsError(f"{name}={raw!r} is not a valid {kind.__name__}") from None
        number = float(value)  # type: ignore[arg-type]
        if not math.isfinite(number):
            raise SettingsError(f"{name}={raw!r} must be a finite number")
        if low is not None and number < low:
            raise SettingsError(f"{name}={raw!r} must be at least {low}")
        if high is not None and number > high:
            raise SettingsError(f"{name}={raw!r} must be at most {high}")
        return value
