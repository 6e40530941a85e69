"""Security headers on every response, as a small pure ASGI middleware.

Every response gets ``X-Content-Type-Options: nosniff`` and
``Referrer-Policy: no-referrer`` (read tokens ride in URLs: a link followed
from the page must not carry them to another site). The page and its
static files also get a Content-Security-Policy that allows no inline
script, no foreign origin and no framing.
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

PAGE_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'"
)
_EVERYWHERE = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}
_STARTS = ("http.response.start", "websocket.http.response.start")


def is_page(path: str) -> bool:
    return path == "/" or path.startswith("/static/")


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        page = scope["type"] == "http" and is_page(scope["path"])

        async def send_with_headers(message: Message) -> None:
            if message["type"] in _STARTS:
                headers = MutableHeaders(scope=message)
                for name, value in _EVERYWHERE.items():
                    headers.setdefault(name, value)
                if page:
                    headers.setdefault("Content-Security-Policy", PAGE_POLICY)
            await send(message)

        await self.app(scope, receive, send_with_headers)
