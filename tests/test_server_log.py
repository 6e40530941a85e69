"""JOBS_ACCESS_LOG=0 quiets uvicorn's per-connection WebSocket lines, and only those."""

from __future__ import annotations

import logging

from app.server_log import WebSocketAccessLines


def _record(msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("uvicorn.error", logging.INFO, __file__, 1, msg, args, None)


def test_per_connection_websocket_lines_are_dropped() -> None:
    quiet = WebSocketAccessLines()
    assert not quiet.filter(_record('%s - "WebSocket %s" [accepted]', "1.2.3.4:5", "/api/jobs/ws"))
    assert not quiet.filter(_record("connection open"))
    assert not quiet.filter(_record("connection closed"))


def test_everything_else_is_kept() -> None:
    quiet = WebSocketAccessLines()
    assert quiet.filter(_record("Uvicorn running on %s", "http://127.0.0.1:8000"))
    assert quiet.filter(_record("ASGI callable returned without completing response."))
    assert quiet.filter(_record('%s - "WebSocket %s" 403', "1.2.3.4:5", "/api/jobs/ws"))
