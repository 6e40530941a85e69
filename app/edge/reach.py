"""Who may reach the routes at all: the peer, and the host name it asked for.

Without ``JOBS_API_KEY`` the server is open, and open means *this machine
only*. Start-up refuses a non-loopback ``JOBS_HOST``, but the app can be
served other ways (``uvicorn app.main:app --host 0.0.0.0``), so every
request is also checked where it came from: a peer that is not loopback is
refused with 403 naming ``JOBS_API_KEY``, however the app is served.
``JOBS_ALLOW_ANONYMOUS=1`` lifts this on purpose. Behind a proxy the peer is
the client uvicorn read from ``X-Forwarded-For`` (trusted from
``JOBS_FORWARDED_ALLOW_IPS``); a Unix socket has no address and counts as
this machine.

DNS rebinding: a page on ``attacker.example`` whose name is re-pointed at
127.0.0.1 is same-origin with itself, so a browser lets it read what the
local server answers. Its requests name its own host in ``Host``. So in
open mode only loopback names (``127.0.0.1``, ``localhost``, ``[::1]``, any
port) and the names in ``JOBS_ALLOWED_HOSTS`` are served; with an API key
the attacker's page has no credential, and ``JOBS_ALLOWED_HOSTS`` applies
only when set. Anything else gets 421 (Misdirected Request). Patterns
follow Starlette's ``TrustedHostMiddleware``: a name, ``*.example.com``
for its subdomains, or ``*``. The liveness and readiness probes answer to
any name: load balancers and orchestrators ask them by address, and they
tell a rebinding page nothing.

Both answers are the same for every request with the same peer or Host
header, so each is cached (bounded): the check costs a poll two dict look-ups.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import TypeVar
from urllib.parse import urlsplit

from starlette.types import Scope

from app.errors import Forbidden, JobsError, MisdirectedRequest
from app.settings import Settings, is_loopback

_CACHE_SIZE = 1024
PROBES = frozenset({"/healthz", "/readyz"})
K = TypeVar("K")

LOCAL_ONLY = Forbidden(
    "this server has no JOBS_API_KEY, so it serves this machine only: set JOBS_API_KEY to "
    "serve other machines (or JOBS_ALLOW_ANONYMOUS=1 to serve them without authentication)"
)


class Reach:
    def __init__(self, settings: Settings) -> None:
        self.local_only = not settings.protected and not settings.allow_anonymous
        patterns = settings.allowed_hosts
        self.any_host = "*" in patterns or (settings.protected and not patterns)
        self.patterns = tuple(_as_listed(pattern) for pattern in patterns)
        self.loopback_names = not settings.protected
        self._peers: dict[str | None, bool] = {}
        self._hosts: dict[bytes | None, bool] = {}

    def refusal(self, scope: Scope) -> JobsError | None:
        """Why a request or WebSocket handshake may not reach the routes; None if it may."""
        if self.local_only:
            client = scope.get("client")
            peer = client[0] if client else None
            if not _cached(self._peers, peer, _is_local):
                return LOCAL_ONLY
        if self.any_host or scope["path"] in PROBES:
            return None
        host = _host_header(scope)
        if not _cached(self._hosts, host, self._serves):
            named = _name(host)
            return MisdirectedRequest(
                f"this server does not answer to the host {named!r}: add it to "
                "JOBS_ALLOWED_HOSTS if it is one of this server's names"
                if named
                else "name this server in the Host header"
            )
        return None

    def _serves(self, host: bytes | None) -> bool:
        if not host:
            return False
        try:
            parts = urlsplit("//" + host.decode("latin-1"))
            name = parts.hostname
            if not name or parts.port == 0:
                return False
        except ValueError:
            return False  # a port that is not a number, an unclosed bracket
        if self.loopback_names and is_loopback(name):
            return True
        name = _as_listed(name)
        # TrustedHostMiddleware's rule: the name itself, or a subdomain of "*.<domain>".
        return any(
            name == pattern or (pattern.startswith("*") and name.endswith(pattern[1:]))
            for pattern in self.patterns
        )


def _name(host: bytes | None) -> str | None:
    """The name a Host header asks for, as JOBS_ALLOWED_HOSTS would hold it (no port)."""
    if not host:
        return None
    text = host.decode("latin-1")
    try:
        name = urlsplit("//" + text).hostname
    except ValueError:
        return text
    return _as_listed(name) if name else text


def _as_listed(name: str) -> str:
    """A host name as JOBS_ALLOWED_HOSTS lists it: an IPv6 address in brackets, in its
    shortest form (``[fd00:0::5]`` is ``[fd00::5]``)."""
    address = name.strip("[]")
    if ":" not in address:
        return name
    try:
        return f"[{ipaddress.IPv6Address(address).compressed}]"
    except ValueError:
        return f"[{address}]"


def _is_local(peer: str | None) -> bool:
    return peer is None or is_loopback(peer)


def _host_header(scope: Scope) -> bytes | None:
    for name, value in scope["headers"]:
        if name == b"host":
            return bytes(value)
    return None


def _cached(cache: dict[K, bool], key: K, compute: Callable[[K], bool]) -> bool:
    try:
        return cache[key]
    except KeyError:
        if len(cache) >= _CACHE_SIZE:
            cache.clear()  # many distinct values: an attack, or a very busy proxy
        value = cache[key] = compute(key)
        return value
