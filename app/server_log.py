"""With JOBS_ACCESS_LOG=0, uvicorn's per-connection WebSocket lines go too.

uvicorn writes a line for each WebSocket handshake and its opening and closing
("... [accepted]", "connection open", "connection closed") to its error logger
at INFO, where its own access_log=False does not reach. They say what the
access log would: on a server with thousands of browsers, thousands of lines.
"""

from __future__ import annotations

import logging

_PER_CONNECTION = frozenset(
    {'%s - "WebSocket %s" [accepted]', "connection open", "connection closed"}
)


class WebSocketAccessLines(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg not in _PER_CONNECTION


def quiet_websocket_connections() -> None:
    """Drop those lines from uvicorn's error logger (once per process)."""
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(existing, WebSocketAccessLines) for existing in logger.filters):
        logger.addFilter(WebSocketAccessLines())
