"""Which browser origins may use the server: CORS's allowlist, also checked where CORS is not.

Browsers enforce CORS on ``fetch`` and ``EventSource`` reads, but not on
WebSocket handshakes, and a "simple" cross-site ``POST`` reaches the server
before CORS can stop its answer being read. :meth:`OriginPolicy.admits`
(checked by :mod:`app.edge`) closes both gaps: a WebSocket handshake or a
write (any method but GET, HEAD and OPTIONS) whose ``Origin`` is neither the
server's own nor listed in ``JOBS_CORS_ORIGINS`` is refused with 403 before
the route runs. Requests without ``Origin`` (curl, the Python client, other
servers) are not browsers' and pass.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket

from app.errors import Forbidden
from app.problems import problem_for, refuse_websocket

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

    def admits(self, scope: Scope) -> bool:
        """Whether an HTTP request or WebSocket handshake may reach the routes."""
        if scope["type"] == "http" and scope["method"] in _SAFE_METHODS:
            return True
        headers = Headers(scope=scope)
        return self.allows(headers.get("origin"), headers.get("host"))


async def refuse(scope: Scope, receive: Receive, send: Send) -> None:
    """Answer a request :meth:`OriginPolicy.admits` refused: 403 problem+json."""
    refusal = Forbidden("requests from this origin are not allowed (JOBS_CORS_ORIGINS)")
    if scope["type"] == "websocket":
        await refuse_websocket(WebSocket(scope, receive, send), refusal)
    else:
        await problem_for(refusal)(scope, receive, send)


def _same_host(origin: str, host: str) -> bool:
    parts = urlsplit(origin)
    try:
        default = _DEFAULT_PORTS.get(parts.scheme)
        wanted = (parts.hostname, parts.port or default)
        served = urlsplit(f"//{host}")
        return wanted == (served.hostname, served.port or default) and parts.hostname is not None
    except ValueError:
        return False  # a malformed port
