"""Security headers on every response (:mod:`app.edge` adds them).

Every response the edge sees (and every answer of the connection edge's own, in
:mod:`app.edge.protocol`) gets ``X-Content-Type-Options: nosniff`` and
``Referrer-Policy: no-referrer`` (read tokens ride in URLs: a link followed
from the page must not carry them to another site); only CORS preflights,
answered by the CORS layer outside the edge with a bare ``OK``, go without.
The page and its static files also get a Content-Security-Policy that allows
no inline script, no foreign origin and no framing.
"""

from __future__ import annotations

from starlette.types import Scope

PAGE_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'"
)
# Pre-encoded: they go on every response, so appending them must cost next to nothing.
EVERY_RESPONSE = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer")]
_ON_PAGES = [*EVERY_RESPONSE, (b"content-security-policy", PAGE_POLICY.encode())]


def is_page(path: str) -> bool:
    return path == "/" or path.startswith("/static/")


def security_headers(scope: Scope) -> list[tuple[bytes, bytes]]:
    """The headers a response to ``scope`` gets (no route sets any of them itself)."""
    return _ON_PAGES if scope["type"] == "http" and is_page(scope["path"]) else EVERY_RESPONSE
