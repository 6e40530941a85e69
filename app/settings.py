"""Settings: read once from the environment into one frozen object.

Each setting is defined once, as a field of :class:`Settings`: its type, its
default, what it means, its bounds. The environment reader
(:meth:`Settings.from_env`), the ``jobcast-server`` flags and the settings
table of the manual (:func:`markdown_table`) are all derived from those
fields, so none of them can forget one. Nothing in the package reads
``os.environ`` anywhere else. An invalid value stops start-up with a
:class:`SettingsError` that names the variable and what to do.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import difflib
import functools
import ipaddress
import math
import os
import re
import ssl
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

Backend = Literal["memory", "redis"]
Reader = Callable[[str, str], Any]  # (variable, raw value) → the setting's value

PREFIX = "JOBS_"
MIN_SECRET_LENGTH = 32
KEYGEN = 'jobcast keygen (or: python3 -c "import secrets; print(secrets.token_urlsafe(32))")'
WEBHOOK_KEYGEN = "jobcast keygen --webhook-secret"


class SettingsError(ValueError):
    """A setting in the environment is missing its meaning; the message names it."""


def setting(
    default: Any,
    doc: str,
    *,
    low: float | None = None,
    high: float | None = None,
    read: Reader | None = None,
    shown: str | None = None,
    secret: bool = False,
) -> Any:
    """One setting: its default, what it means (one line, for ``--help`` and the manual),
    the bounds of a number, a reader for values with a shape of their own, how the
    manual shows its default when ``repr`` would not say it, and whether it is secret
    (never in a ``repr``)."""
    meta = {"doc": doc, "low": low, "high": high, "read": read, "shown": shown}
    return dataclasses.field(default=default, repr=not secret, metadata=meta)


def _origins(name: str, raw: str) -> tuple[str, ...]:
    # Browsers send origins lower-case and without a trailing slash.
    return tuple(origin.lower().rstrip("/") for origin in split(raw))


def _hosts(name: str, raw: str) -> tuple[str, ...]:
    return tuple(host.lower() for host in split(raw))


def _proxies(name: str, raw: str) -> str:
    """Proxy addresses or networks, written as uvicorn reads them. What it cannot read (a
    typo, a network with host bits, a ``*`` among others) it would take for a name that
    matches no peer: every client would look like the proxy, so refused or mended here."""
    proxies = split(raw)
    if proxies == ("*",):
        return "*"
    written = []
    for proxy in proxies:
        try:
            network = ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            alone = " (* believes every peer, and goes alone)" if proxy == "*" else ""
            raise SettingsError(
                f"{name}: {proxy!r} is not an address or network{alone}: give the proxies' "
                "addresses or networks, comma-separated, as in 127.0.0.1,::1 or 10.0.0.0/24, "
                "or * alone to believe every peer"
            ) from None
        # 127.0.0.1/8 is the network 127.0.0.0/8; a lone address is written without a mask.
        single = network.num_addresses == 1 and "/" not in proxy
        written.append(str(network.network_address) if single else str(network))
    return ",".join(written)


def _redis_url(name: str, raw: str) -> str:
    scheme, sep, _ = raw.partition("://")
    if not sep or scheme.lower() not in ("redis", "rediss", "unix"):
        raise SettingsError(
            f"{name}={raw!r} is not a Redis URL: use redis://host:port/db, rediss://... or unix://..."
        )
    return raw


def _secret(name: str, raw: str) -> str:
    return raw  # kept as given: the keys are split (and checked) by Settings itself


def _webhook_urls(name: str, raw: str) -> tuple[str, ...]:
    urls = split(raw)
    for url in urls:
        if not _WEBHOOK_URL.fullmatch(url):
            raise SettingsError(
                f"{name}: {url!r} is not a webhook URL: give absolute http:// or https:// URLs, "
                "comma-separated, as in https://hooks.example.com/jobcast"
            )
    return urls


def _webhook_hosts(name: str, raw: str) -> tuple[str, ...]:
    hosts = tuple(host.lower() for host in split(raw))
    for host in hosts:
        if host == "*" or not _HOST_PATTERN.fullmatch(host):
            raise SettingsError(
                f"{name}: {host!r} is not a host name: give names as in hooks.example.com or "
                "*.example.com, or addresses as in 10.0.0.5 or [fd00::5] (no scheme, no port)"
            )
    return hosts


def _webhook_secret(name: str, raw: str) -> str:
    """One ``whsec_`` secret, or several comma-separated (the new one first) while receivers
    move to it: each delivery is signed with each."""
    secrets = [secret.strip() for secret in raw.split(",")]
    for secret in secrets:
        key = secret.removeprefix("whsec_")
        try:
            size = len(base64.b64decode(key, validate=True))
        except (binascii.Error, ValueError):
            size = 0
        if not secret.startswith("whsec_") or not 24 <= size <= 64:
            raise SettingsError(
                f"{name} must be whsec_ and 24 to 64 random bytes in base64, as the Standard "
                "Webhooks specification says (or several such, comma-separated, to rotate "
                f"them); make one with: {WEBHOOK_KEYGEN}"
            )
    return ",".join(secrets)


def _ca_file(name: str, raw: str) -> str:
    try:
        ssl.create_default_context().load_verify_locations(cafile=raw)
    except (OSError, ssl.SSLError) as exc:
        raise SettingsError(
            f"{name}={raw!r}: no CA certificates can be read from it ({exc}); give a PEM "
            "file of the certificates that sign your receivers"
        ) from None
    return raw


@dataclass(frozen=True)
class Settings:
    host: str = setting("127.0.0.1", "Interface to listen on.")
    port: int = setting(8000, "Port to listen on.", low=0, high=65535)
    backend: Backend = setting("memory", "Where jobs live: `memory` (one process) or `redis`.")
    redis_url: str = setting(
        "redis://127.0.0.1:6379/0", "The Redis server, with `JOBS_BACKEND=redis`.", read=_redis_url
    )
    redis_prefix: str = setting("jobcast:", "Every Redis key lives under it (one per deployment).")
    redis_feed_length: int = setting(
        10_000, "Changes kept in the Redis stream for resuming.", low=100
    )
    redis_timeout: float = setting(
        2.0, "Seconds a Redis operation may take, all included, before `503`.", low=0.05, high=60
    )
    terminal_ttl: float = setting(300.0, "Seconds a finished job is kept.", low=0)
    stale_ttl: float = setting(
        0.0,
        'Seconds an unfinished job may go without a change before it fails with `error: "stale"`;'
        " `0`: never.",
        low=0,
    )
    tombstone_ttl: float = setting(3600.0, "Seconds a cleaned-up id answers `410`.", low=0)
    max_tombstones: int = setting(
        100_000, "Cleaned-up ids remembered at most (oldest forgotten first).", low=0
    )
    heartbeat: float = setting(15.0, "Seconds between SSE `: ping` comments.", low=0.01)
    workers: int = setting(
        1, "Worker processes; more than 1 needs `JOBS_BACKEND=redis`.", low=1, high=256
    )
    api_key: str | None = setting(
        None,
        "API keys, comma-separated, at least 32 characters each (`jobcast keygen`); "
        "unset: no authentication, this machine only.",
        read=_secret,
        secret=True,
    )
    allow_anonymous: bool = setting(
        False, "Serve other machines without an API key (logged loudly at start)."
    )
    token_secret: str | None = setting(
        None,
        "Secrets signing read tokens (at least 32 characters; the first signs); "
        "unset: derived from the first API key.",
        read=_secret,
        secret=True,
    )
    token_ttl: float = setting(3600.0, "Seconds a read token lives by default.", low=1)
    cors_origins: tuple[str, ...] = setting(
        (),
        "Origins whose pages may call the server (CORS, WebSocket handshakes and writes), or `*`.",
        read=_origins,
    )
    cors_credentials: bool = setting(False, "Allow credentialed CORS requests (not with `*`).")
    sse_retry_ms: int = setting(2000, "The `retry:` sent to EventSource clients, in ms.", low=0)
    subscriber_backlog: int = setting(
        10_000, "Jobs a connection may fall behind on before it is disconnected.", low=1
    )
    send_timeout: float = setting(
        30.0, "Seconds a socket may accept nothing before it is disconnected.", low=0.01
    )
    max_body_bytes: int = setting(1024 * 1024, "Request body, bytes at most (`413`).", low=1)
    shutdown_timeout: float = setting(
        3.0, "Seconds open connections get to finish on shutdown.", low=0
    )
    demo: bool | None = setting(
        None, "The demo panel's routes (`/api/demo/…`).", shown="on with `memory`"
    )
    output_max_chunks: int = setting(
        1000, "Output chunks one append may carry at most (`413`).", low=1
    )
    output_max_chunk_bytes: int = setting(
        64 * 1024, "One output chunk's `data`, bytes of JSON at most (`413`).", low=2
    )
    output_max_bytes: int = setting(
        4 * 1024 * 1024, "A job's whole output, bytes of chunk JSON at most (`413`).", low=2
    )
    max_metadata_bytes: int = setting(
        64 * 1024, "A job's metadata, bytes of JSON at most, after merging.", low=2
    )
    max_text_length: int = setting(
        10_000, "`message`, `error`, `documentId`: characters at most.", low=1
    )
    ws_max_frame_bytes: int = setting(
        64 * 1024, "Largest WebSocket frame accepted (close `1009` beyond).", low=1024
    )
    ws_max_subscriptions: int = setting(100, "Subscriptions one WebSocket may hold.", low=1)
    ws_rate: float = setting(
        20.0, "WebSocket frames a client may send per second (bursts of 5 s' worth).", low=0.1
    )
    max_streams: int = setting(1000, "SSE and WebSocket connections per process.", low=1)
    access_log: bool = setting(True, "One log line per request (uvicorn's access log).")
    ws_compression: bool = setting(
        False, "Offer WebSocket `permessage-deflate` (about 40 KiB and CPU per socket)."
    )
    max_header_bytes: int = setting(
        16 * 1024, "Request line and headers, bytes at most (`431`).", low=1024
    )
    max_headers: int = setting(100, "Headers per request at most (`431`).", low=8)
    header_timeout: float = setting(
        10.0, "Seconds a client has to send a request's line and headers (`408`).", low=0.1
    )
    body_timeout: float = setting(
        30.0, "Seconds a client has to send a body after its headers (`408`).", low=0.1
    )
    max_connections: int = setting(
        1000, "Connections per process that are not streams (requests, long-polls).", low=1
    )
    allowed_hosts: tuple[str, ...] = setting(
        (),
        "Host names served besides loopback's without a key; with a key, the only ones "
        "once set (`*.example.com`, `*`).",
        read=_hosts,
    )
    forwarded_allow_ips: str = setting(
        "127.0.0.1,::1",
        "Proxies whose `X-Forwarded-For`/`-Proto` are believed: addresses or networks.",
        read=_proxies,
    )
    snapshot_rate: float = setting(
        2.0, "All-jobs snapshots per second per client address (bursts of 10 s' worth).", low=0.01
    )
    webhook_urls: tuple[str, ...] = setting(
        (), "Endpoints every job's events are POSTed to, comma-separated.", read=_webhook_urls
    )
    webhook_secret: str | None = setting(
        None,
        "Signs every delivery (`whsec_…`, `jobcast keygen --webhook-secret`); needed with "
        "webhooks. Several, comma-separated, sign each delivery with each (to rotate them).",
        read=_webhook_secret,
        secret=True,
    )
    webhook_events: Literal["terminal", "all"] = setting(
        "terminal", "Which events are delivered: `terminal` (completed, error) or `all`."
    )
    webhook_hosts: tuple[str, ...] = setting(
        (),
        "Hosts a job's own `webhookUrl` may point to (`*.example.com`); unset: none.",
        read=_webhook_hosts,
    )
    webhook_retry_for: float = setting(
        86_400.0, "Seconds a delivery is retried before it is given up.", low=1
    )
    webhook_timeout: float = setting(
        10.0, "Seconds one delivery attempt may take.", low=0.1, high=300
    )
    webhook_backoff_max: float = setting(
        60.0, "Seconds at most between two attempts of a delivery.", low=0.1
    )
    webhook_ca_file: str | None = setting(
        None,
        "A PEM file of CA certificates that https receivers may be signed by too (an "
        "internal CA), beside the system's.",
        read=_ca_file,
    )

    @property
    def demo_enabled(self) -> bool:
        return self.backend == "memory" if self.demo is None else self.demo

    @property
    def api_keys(self) -> tuple[str, ...]:
        """Every accepted API key; the first one also derives the token secret."""
        return split(self.api_key)

    @property
    def token_secrets(self) -> tuple[str, ...]:
        """JOBS_TOKEN_SECRET's secrets: the first signs, every one verifies."""
        return split(self.token_secret)

    @property
    def webhooks(self) -> bool:
        """Whether events may be delivered anywhere (an endpoint, or hosts for jobs' own)."""
        return bool(self.webhook_urls or self.webhook_hosts)

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
                    "jobs.example.com or *.example.com (no scheme, no port), an IPv6 address "
                    "in brackets ([fd00::5]), or *"
                )
        if self.webhooks and self.webhook_secret is None:
            raise SettingsError(
                "JOBS_WEBHOOK_URLS and JOBS_WEBHOOK_HOSTS need JOBS_WEBHOOK_SECRET: every "
                "delivery is signed, so that receivers can tell it comes from this server; "
                f"make one with: {WEBHOOK_KEYGEN}, and give it to the receivers"
            )
        if self.cors_credentials and "*" in self.cors_origins:
            raise SettingsError(
                "JOBS_CORS_CREDENTIALS=1 cannot be combined with JOBS_CORS_ORIGINS=*: any "
                "site could then make credentialed requests; list the allowed origins instead"
            )
        if "*" in self.cors_origins and not self.protected and not self.allow_anonymous:
            # Without a key the Origin check is what keeps web pages off this machine's
            # server: * would let any page a user visits read and write its jobs.
            raise SettingsError(
                "JOBS_CORS_ORIGINS=* without JOBS_API_KEY would let any web page its users "
                "visit read and write this server's jobs: list the origins allowed instead "
                "(as in http://localhost:3000), or set JOBS_API_KEY (or JOBS_ALLOW_ANONYMOUS=1 "
                "to open the server to everyone on purpose)"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """The settings the ``JOBS_*`` variables of ``environ`` (the process's) give."""
        env = os.environ if environ is None else environ
        given: dict[str, Any] = {}
        for definition in definitions():
            raw = env.get(definition.variable, "")
            if raw.strip():
                given[definition.name] = definition.read(raw)
        if "redis_url" in given and "backend" not in given:
            # Most likely a deployment that meant Redis: each of its processes would keep
            # jobs of its own, unseen by the others, and nothing would say so.
            raise SettingsError(
                "JOBS_REDIS_URL is set but JOBS_BACKEND is not: jobs would be kept in this "
                "process's memory and the URL ignored. Set JOBS_BACKEND=redis to keep them in "
                "Redis (or JOBS_BACKEND=memory if memory is meant)."
            )
        return cls(**given)


@dataclass(frozen=True)
class Definition:
    """One setting as the environment, the command line and the manual see it."""

    name: str  # the field of Settings
    kind: Any  # its type
    default: Any
    doc: str
    low: float | None
    high: float | None
    reader: Reader | None
    shown: str | None

    @property
    def variable(self) -> str:
        return PREFIX + self.name.upper()

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def is_flag(self) -> bool:
        """A yes/no setting (``1``/``0``; ``--x/--no-x`` on the command line)."""
        return self.kind in (bool, bool | None)

    def read(self, raw: str) -> Any:
        """The value of the variable set to ``raw``; SettingsError naming it if it is not one."""
        name = self.variable
        if self.reader is not None:
            return self.reader(name, raw.strip())
        if self.is_flag:
            return _flag(name, raw)
        if self.kind in (int, float):
            return _number(name, raw, self.kind, self.low, self.high)
        choices = typing.get_args(self.kind)
        if choices:
            value = raw.strip().lower()
            if value not in choices:
                raise SettingsError(f"{name}={value!r} is not one of: {', '.join(choices)}")
            return value
        return raw.strip()

    def shown_default(self) -> str:
        """The default as the manual shows it (Markdown)."""
        if self.shown is not None:
            return self.shown
        if self.default is None or self.default == ():
            return "unset"
        if isinstance(self.default, bool):
            return "`1`" if self.default else "`0`"
        if isinstance(self.default, float) and self.default.is_integer():
            return f"`{int(self.default)}`"
        return f"`{self.default}`"


@functools.cache
def definitions() -> tuple[Definition, ...]:
    """Every setting, in the order :class:`Settings` declares them."""
    kinds = typing.get_type_hints(Settings)
    return tuple(
        Definition(
            name=field.name,
            kind=kinds[field.name],
            default=field.default,
            doc=field.metadata["doc"],
            low=field.metadata["low"],
            high=field.metadata["high"],
            reader=field.metadata["read"],
            shown=field.metadata["shown"],
        )
        for field in dataclasses.fields(Settings)
    )


def markdown_table() -> str:
    """The manual's table of settings (docs/deployment.md), made from the definitions."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    rows += [f"| `{d.variable}` | {d.shown_default()} | {d.doc} |" for d in definitions()]
    return "\n".join(rows) + "\n"


def variables() -> Iterator[str]:
    return (definition.variable for definition in definitions())


def unknown_variables(environ: Mapping[str, str] | None = None) -> list[str]:
    """A warning for each ``JOBS_*`` variable that is no setting: a misspelt one is
    otherwise ignored, and its setting left at its default (``JOBS_API_KEYS``: no key)."""
    env = os.environ if environ is None else environ
    known = list(variables())
    warnings = []
    for name in sorted(variable for variable in env if variable.startswith(PREFIX)):
        if name in known:
            continue
        meant = difflib.get_close_matches(name, known, n=1)
        hint = f"did you mean {meant[0]}?" if meant else "see docs/deployment.md for the settings"
        warnings.append(f"{name} is not a setting of Jobcast and is ignored: {hint}")
    return warnings


# The manual's table sits between these lines; `make docs` rewrites what is between.
TABLE_START = "<!-- settings: `make docs` writes this table from app/settings.py -->"
TABLE_END = "<!-- /settings -->"


def with_table(text: str) -> str:
    """``text`` (the manual's page) with its settings table made anew."""
    before, start, rest = text.partition(TABLE_START)
    _, end, after = rest.partition(TABLE_END)
    if not start or not end:
        raise ValueError(f"no settings table: mark its place with {TABLE_START} and {TABLE_END}")
    return f"{before}{TABLE_START}\n{markdown_table()}{TABLE_END}{after}"


if __name__ == "__main__":  # python -m app.settings PAGE: rewrite PAGE's settings table
    import pathlib
    import sys

    page = pathlib.Path(sys.argv[1])
    page.write_text(with_table(page.read_text()))


_ORIGIN = re.compile(r"[a-z][a-z0-9+.-]*://[^/?#\s]+")
_WEBHOOK_URL = re.compile(r"https?://[^/?#\s@]+(/\S*)?", re.IGNORECASE)
# Starlette's TrustedHostMiddleware patterns: a name, "*.<domain>", or "*" for any.
_HOST_PATTERN = re.compile(r"\*|(\*\.)?[a-z0-9_-]+(\.[a-z0-9_-]+)*|\[[0-9a-f:.]+\]")


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) is reachable from this machine only."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def split(value: str | None) -> tuple[str, ...]:
    """A comma-separated list, without blanks."""
    return tuple(part.strip() for part in (value or "").split(",") if part.strip())


def _flag(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name}={value!r} is not a yes/no value (use 1 or 0)")


def _number(name: str, raw: str, kind: type[float], low: float | None, high: float | None) -> float:
    try:
        value = kind(raw.strip())
    except ValueError:
        raise SettingsError(f"{name}={raw.strip()!r} is not a valid {kind.__name__}") from None
    if not math.isfinite(value):
        raise SettingsError(f"{name}={raw.strip()!r} must be a finite number")
    if low is not None and value < low:
        raise SettingsError(f"{name}={raw.strip()!r} must be at least {low:g}")
    if high is not None and value > high:
        raise SettingsError(f"{name}={raw.strip()!r} must be at most {high:g}")
    return value
