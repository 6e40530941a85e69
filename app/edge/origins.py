"""Which browser origins may use the server: CORS's allowlist, also checked where CORS is not.

Browsers enforce CORS on ``fetch`` and ``EventSource`` reads, but not on
WebSocket handshakes, and a "simple" cross-site ``POST`` reaches the server
before CORS can stop its answer being read. :meth:`OriginPolicy.admits`
(checked by :mod:`app.edge`) closes both gaps: a WebSocket handshake or a
write (any method but GET, HEAD and OPTIONS) whose ``Origin`` is neither the
server's own (the one ``Host`` names) nor listed in ``JOBS_CORS_ORIGINS`` is
refused with 403 before the route runs. Requests without ``Origin`` (curl,
the Python client, other servers) are not browsers' and pass.

Behind a reverse proxy, ``Host`` must reach the server as the browser sent
it (nginx: ``proxy_set_header Host $http_host``; ``$host`` drops the port);
where it cannot, the public origin goes in ``JOBS_CORS_ORIGINS``.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.types import Scope

from app.errors import Forbidden

_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


class OriginPolicy:
    def __init__(self, allowed: Iterable[str]) -> None:
        self._allowed = frozenset(allowed)
        self._any = "*" in self._allowed

    def allows(self, origin: str | None, host: str | None) -> bool:
        """Whether a request from ``origin`` to the server named ``host`` is allowed."""
        if origin is None:
            return True  # not a browser
        origin = origin.strip().lower()
        if self._any or origin in self._allowed:
            return True
        return host is not None and _same_host(origin, host.strip().lower())

    def refusal(self, scope: Scope) -> Forbidden | None:
        """Why an HTTP request or WebSocket handshake may not reach the routes; None if it may."""
        if scope["type"] == "http" and scope["method"] in _SAFE_METHODS:
            return None
        headers = Headers(scope=scope)
        origin, host = headers.get("origin"), headers.get("host")
        if self.allows(origin, host):
            return None
        return Forbidden(
            f"requests from the origin {origin!r} are not allowed here: it is not this server's "
            f"(Host: {host!r}) nor listed in JOBS_CORS_ORIGINS. Behind a proxy, pass the Host "
            "header through as the browser sent it (nginx: proxy_set_header Host $http_host), "
            "or list the origin in JOBS_CORS_ORIGINS"
        )


def _same_host(origin: str, host: str) -> bool:
    parts = urlsplit(origin)
    try:
        default = _DEFAULT_PORTS.get(parts.scheme)
        wanted = (parts.hostname, parts.port or default)
        served = urlsplit(f"//{host}")
        return wanted == (served.hostname, served.port or default) and parts.hostname is not None
    except ValueError:
        return False  # a malformed port
