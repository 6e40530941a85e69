"""The server's logging: uvicorn's, made to say what happened at the level it
deserves, without credentials, and Jobcast's own lines beside it.

:func:`configuration` is the ``logging.config.dictConfig`` that serving
(:mod:`app.serve`) hands uvicorn: uvicorn's own, plus the ``jobcast``
logger and three filters. Being part of the configuration, they are set up
in every worker process, and only when serving: building the app installs
nothing.

:class:`RedactTokens`, on uvicorn's access and error loggers: read tokens
ride in URLs (``EventSource`` cannot send headers), and uvicorn prints every
URL it serves.

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

import copy
import logging
import re
from contextvars import ContextVar
from typing import Any
from urllib.parse import unquote_plus

from uvicorn.config import LOGGING_CONFIG

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


_PER_CONNECTION = frozenset(
    {'%s - "WebSocket %s" [accepted]', "connection open", "connection closed"}
)


class WebSocketAccessLines(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg not in _PER_CONNECTION


class RedactTokens(logging.Filter):
    """Blanks read tokens in log lines: uvicorn prints every URL it serves, query and all.

    uvicorn's access lines (``'%s - "%s %s HTTP/%s" %d'``) and its WebSocket
    lines (``'%s - "WebSocket %s" [accepted]'``, ``... %d`` for a denial) carry
    the path with its raw query as one argument. A parameter is blanked when
    the server would read it as ``token``: its name decoded the way Starlette's
    ``query_params`` decode it, so ``?%74oken=`` and ``?t%6Fken=`` are caught
    as well as ``?token=``. Its value becomes ``REDACTED``; everything else in
    the line is kept as it was.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        # A line without "?" holds no query: most lines cost one scan per argument.
        if isinstance(args, tuple) and any(isinstance(arg, str) and "?" in arg for arg in args):
            record.args = tuple(redact_tokens(arg) if isinstance(arg, str) else arg for arg in args)
        if isinstance(record.msg, str):
            record.msg = redact_tokens(record.msg)
        return True


# A query in a log line: from "?" to the end of the URL, "#" included (uvicorn's WebSocket
# protocol gives the app everything after "?"). uvicorn escapes '"' in the paths it
# logs, and its parsers refuse whitespace in a request target.
_QUERY = re.compile(r"\?[^\s\"]+")


def redact_tokens(text: str) -> str:
    """``text`` with the value of every ``token`` query parameter replaced by REDACTED."""
    if "?" not in text:
        return text
    return _QUERY.sub(_redact_query, text)


def _redact_query(query: re.Match[str]) -> str:
    # urllib.parse.parse_qsl's reading, which Starlette's query_params use: pairs split
    # on "&" only (not ";"), a name ends at the first "=" and is decoded by unquote_plus.
    # Rewritten pair by pair, so every other parameter is logged byte for byte. An
    # empty value is left empty: there is nothing to hide.
    pairs = query[0][1:].split("&")
    for index, pair in enumerate(pairs):
        name, _, value = pair.partition("=")
        if value and unquote_plus(name) == "token":
            pairs[index] = name + "=REDACTED"
    return "?" + "&".join(pairs)


def configuration(*, access_log: bool) -> dict[str, Any]:
    """The logging configuration of a serving process (``JOBS_ACCESS_LOG`` is ``access_log``)."""
    config = copy.deepcopy(LOGGING_CONFIG)
    config["filters"] = {
        "redact": {"()": "app.logs.RedactTokens"},
        "client_faults": {"()": "app.logs.ClientFaults"},
        "websocket_lines": {"()": "app.logs.WebSocketAccessLines"},
    }
    error_filters = ["redact", "client_faults"] + ([] if access_log else ["websocket_lines"])
    loggers = config["loggers"]
    loggers["uvicorn.error"]["filters"] = error_filters
    loggers["uvicorn.access"]["filters"] = ["redact"]
    # Jobcast's own lines (outages, slow readers cut), formatted like uvicorn's.
    loggers["jobcast"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    return config
