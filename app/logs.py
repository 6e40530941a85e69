"""What uvicorn logs, made to say what happened, at the level it deserves.

Two filters on uvicorn's ``uvicorn.error`` logger, installed once per process
(see :mod:`app.main`); the third, which blanks tokens in URLs, lives with the
tokens in :mod:`app.auth`.

:class:`ClientFaults`, always. uvicorn logs at ERROR two things that are no
error of this server; operators read ERROR as "something is broken". Each is
matched by uvicorn's exact text (uvicorn 0.55.0's, websockets-sansio and
httptools/h11 protocols) and rewritten as one line at a lower level, without
a traceback:

- ``Invalid UTF-8 sequence received from client.`` (ERROR, with the
  ``UnicodeDecodeError`` traceback) becomes WARNING "WebSocket client sent
  invalid UTF-8 in a text frame; closed with 1007". The client broke the
  protocol and uvicorn answered as RFC 6455 says; uvicorn itself logs a
  malformed HTTP request ("Invalid HTTP request received.") at WARNING.
- ``ASGI callable returned without completing response.`` (ERROR) becomes
  INFO "closed the connection of a response the application cut short", but
  only for a response whose task called :func:`cut_short` first. ASGI has no
  message that aborts a response: an app that must stop one (an SSE stream
  whose reader stopped reading, whose end it could never write) returns
  before the last body message, and uvicorn closes the connection. The app
  says why at WARNING itself. For any other response it stays an ERROR:
  there it means a bug.

Left at ERROR on purpose: ``Exception in ASGI application`` with its
traceback (an exception raised by the app is a bug), ``ASGI callable returned
without completing handshake.`` and ``... without starting response.``
(Jobcast answers every handshake: an accept, a close, or a denial response,
whose start completes the handshake as far as uvicorn is concerned). A
record whose text a later uvicorn changes is no longer matched, so it is
logged as uvicorn logs it: never hidden.

:class:`WebSocketAccessLines`, with ``JOBS_ACCESS_LOG=0`` only. uvicorn writes
a line for each WebSocket handshake and its opening and closing ("...
[accepted]", "connection open", "connection closed") to its error logger at
INFO, where its own ``access_log=False`` does not reach. They say what the
access log would: on a server with thousands of browsers, thousands of lines.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar

# uvicorn 0.55.0, protocols/websockets/websockets_sansio_impl.py (send_receive_event_to_app).
_INVALID_UTF8 = "Invalid UTF-8 sequence received from client."
# uvicorn 0.55.0, protocols/http/httptools_impl.py and h11_impl.py (run_asgi).
_INCOMPLETE = "ASGI callable returned without completing response."

# Set in a request's own task: uvicorn runs each request in a task of its own, created
# from a copy of a context where this is never set, so it marks that request only.
_CUT_SHORT: ContextVar[bool] = ContextVar("jobcast_cut_short", default=False)


def cut_short() -> None:
    """Say, from the task serving it, that this response ends early on purpose.

    Call it before returning without the last body message: uvicorn's
    "returned without completing response" for it is then logged at INFO.
    """
    _CUT_SHORT.set(True)


class ClientFaults(logging.Filter):
    """Re-levels uvicorn's ERRORs that are a client's doing (see the module docstring)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.ERROR:
            return True
        if record.msg == _INVALID_UTF8:
            return _relevel(
                record,
                logging.WARNING,
                "WebSocket client sent invalid UTF-8 in a text frame; closed with 1007",
            )
        if record.msg == _INCOMPLETE and _CUT_SHORT.get():
            return _relevel(
                record,
                logging.INFO,
                "closed the connection of a response the application cut short",
            )
        return True


def _relevel(record: logging.LogRecord, level: int, message: str) -> bool:
    """Make ``record`` one line at ``level``; whether its logger logs that level."""
    record.levelno = level
    record.levelname = logging.getLevelName(level)
    record.msg = message
    record.args = ()
    record.exc_info = None
    record.exc_text = None
    record.stack_info = None
    return logging.getLogger(record.name).isEnabledFor(level)


def relevel_client_faults() -> None:
    """Install :class:`ClientFaults` on uvicorn's error logger (once per process)."""
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(existing, ClientFaults) for existing in logger.filters):
        logger.addFilter(ClientFaults())


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
