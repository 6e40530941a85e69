"""uvicorn's log as Jobcast filters it: tokens blanked, client faults re-leveled, and
(JOBS_ACCESS_LOG=0) no per-connection WebSocket lines.

The re-leveling is checked against a real uvicorn serving tiny ASGI apps on a
loopback port: the records are uvicorn's own, with their exact texts.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator, Iterator

import pytest
import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from app.logs import ClientFaults, RedactTokens, WebSocketAccessLines, cut_short
from tests.conftest import seconds

SECRET = "eyJhbGciOi.secret-token.value"
ACCESS = '%s - "%s %s HTTP/%s" %d'  # uvicorn 0.55's access line, then its WebSocket lines
ACCEPTED = '%s - "WebSocket %s" [accepted]'
DENIED = '%s - "WebSocket %s" %d'


def _record(msg: str, *args: object, name: str = "uvicorn.error") -> logging.LogRecord:
    return logging.LogRecord(name, logging.INFO, __file__, 1, msg, args, None)


def _redacted(msg: str, *args: object, name: str = "uvicorn.error") -> str:
    record = _record(msg, *args, name=name)
    assert RedactTokens().filter(record)
    return record.getMessage()


def test_per_connection_websocket_lines_are_dropped() -> None:
    """JOBS_ACCESS_LOG=0 drops uvicorn's accepted / open / closed line for each socket."""
    quiet = WebSocketAccessLines()
    assert not quiet.filter(_record(ACCEPTED, "1.2.3.4:5", "/api/jobs/ws"))
    assert not quiet.filter(_record("connection open"))
    assert not quiet.filter(_record("connection closed"))


def test_everything_else_is_kept() -> None:
    """JOBS_ACCESS_LOG=0 keeps start-up lines, errors and WebSocket denials."""
    quiet = WebSocketAccessLines()
    assert quiet.filter(_record("Uvicorn running on %s", "http://127.0.0.1:8000"))
    assert quiet.filter(_record("ASGI callable returned without completing response."))
    assert quiet.filter(_record('%s - "WebSocket %s" 403', "1.2.3.4:5", "/api/jobs/ws"))


@pytest.mark.parametrize(
    ("query", "logged"),
    [
        (f"?%74oken={SECRET}", "?%74oken=REDACTED"),
        (f"?a=1&%74%6Fken={SECRET}", "?a=1&%74%6Fken=REDACTED"),
        (f"?t%6fken={SECRET}&b=2", "?t%6fken=REDACTED&b=2"),
        (f"?%74%6F%6B%65%6E={SECRET}", "?%74%6F%6B%65%6E=REDACTED"),
        (f"?token={SECRET}", "?token=REDACTED"),
        (f"?token=x&token={SECRET}", "?token=REDACTED&token=REDACTED"),
        (f"?a=1#x&token={SECRET}", "?a=1#x&token=REDACTED"),  # a WebSocket query keeps '#'
        ("?token=a%2Eb%20c+d", "?token=REDACTED"),
        pytest.param(
            f"?status=queued&x=%41+b&tok+en=1&tokens=2&a=1;token=3&token=&token&=&&%74oken={SECRET}",
            "?status=queued&x=%41+b&tok+en=1&tokens=2&a=1;token=3&token=&token&=&&%74oken=REDACTED",
            id="every-other-parameter-as-sent",
        ),
    ],
)
def test_a_token_is_blanked_however_its_name_is_encoded(query: str, logged: str) -> None:
    """Each parameter the server reads as `token` logs as REDACTED; all else as it was sent."""
    line = _redacted(ACCESS, "1.2.3.4:5", "GET", "/api/jobs/events" + query, "1.1", 200)
    assert line == f'1.2.3.4:5 - "GET /api/jobs/events{logged} HTTP/1.1" 200'


def test_websocket_lines_are_redacted_too() -> None:
    """uvicorn's WebSocket accept and denial lines print the query: the token is blanked."""
    path = f"/api/jobs/ws?batch=1&%74oken={SECRET}"
    accepted = _redacted(ACCEPTED, "1.2.3.4:5", path)
    denied = _redacted(DENIED, "1.2.3.4:5", path, 401)
    assert accepted == '1.2.3.4:5 - "WebSocket /api/jobs/ws?batch=1&%74oken=REDACTED" [accepted]'
    assert denied == '1.2.3.4:5 - "WebSocket /api/jobs/ws?batch=1&%74oken=REDACTED" 401'


def test_a_url_written_into_the_message_is_redacted() -> None:
    """A message that embeds a URL itself is blanked up to the URL's end."""
    line = _redacted(f'"GET /api/jobs?%74oken={SECRET} HTTP/1.1" 200', name="uvicorn.access")
    assert line == '"GET /api/jobs?%74oken=REDACTED HTTP/1.1" 200'


def test_a_line_without_a_query_is_left_alone() -> None:
    """Lines with no `?` keep their very arguments: most access lines cost one scan."""
    record = _record(ACCESS, "1.2.3.4:5", "GET", "/api/jobs/token=x", "1.1", 200)
    args = record.args
    assert RedactTokens().filter(record)
    assert record.args is args


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Captured(logging.Handler):
    """Keeps the records uvicorn's error logger lets through, after its filters."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.format(record)  # renders the traceback, if the record still has one
        self.records.append(record)

    def find(self, text: str) -> logging.LogRecord:
        matches = [record for record in self.records if text in record.getMessage()]
        assert len(matches) == 1, [record.getMessage() for record in self.records]
        return matches[0]


@pytest.fixture
def captured() -> Iterator[Captured]:
    """uvicorn's error logger at INFO, with :class:`ClientFaults`, captured."""
    logger = logging.getLogger("uvicorn.error")
    handler, faults, level = Captured(), ClientFaults(), logger.level
    logger.addHandler(handler)
    logger.addFilter(faults)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.setLevel(level)
        logger.removeFilter(faults)
        logger.removeHandler(handler)


@contextlib.asynccontextmanager
async def serving(app: ASGIApp) -> AsyncIterator[int]:
    """Run ``app`` under uvicorn (httptools, websockets-sansio) on a loopback port."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()  # connections wait in the backlog until uvicorn accepts them
    config = uvicorn.Config(
        app, http="httptools", ws="websockets-sansio", lifespan="off", log_config=None
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, seconds(10))
        sock.close()


async def read_all(port: int, request: bytes, then: bytes = b"") -> bytes:
    """Send ``request`` raw (and ``then`` once the answer's head is in); all the server
    sends until it closes the connection: uvicorn logs before it closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        async with asyncio.timeout(seconds(10)):
            head = await reader.readuntil(b"\r\n\r\n")
            writer.write(then)
            return head + await reader.read()
    finally:
        writer.close()


def get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()


async def streams(scope: Scope, receive: Receive, send: Send) -> None:
    """/cut and /forgot start a body and return before its end; /boom raises."""
    if scope["path"] == "/boom":
        raise RuntimeError("a bug in the app")
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
    if scope["path"] == "/cut":
        cut_short()


async def echo_socket(scope: Scope, receive: Receive, send: Send) -> None:
    """Accepts a WebSocket, then reads until the client is gone."""
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    while (await receive())["type"] != "websocket.disconnect":
        pass


@pytest.mark.anyio
async def test_invalid_utf8_from_a_websocket_client_is_one_warning_line(
    captured: Captured,
) -> None:
    """Invalid UTF-8 in a text frame: closed with 1007, one WARNING line, no traceback."""
    key = base64.b64encode(os.urandom(16)).decode()
    handshake = (
        "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()
    mask = os.urandom(4)
    payload = bytes(byte ^ mask[index % 4] for index, byte in enumerate(b"\xff\xfe"))
    frame = bytes([0x81, 0x80 | 2]) + mask + payload  # FIN + text, masked, 2 bytes
    async with serving(echo_socket) as port:
        answer = await read_all(port, handshake, then=frame)
    assert answer.startswith(b"HTTP/1.1 101 ")
    assert answer.endswith(b"\x88\x02" + (1007).to_bytes(2, "big"))  # the close frame
    record = captured.find("invalid UTF-8")
    assert (record.levelno, record.levelname) == (logging.WARNING, "WARNING")
    assert record.exc_info is None
    assert record.exc_text is None
    assert all(r.levelno < logging.ERROR for r in captured.records)


@pytest.mark.anyio
async def test_a_response_cut_short_on_purpose_is_logged_at_info(captured: Captured) -> None:
    """A response the app ends early after cut_short() is an INFO line, not an ERROR."""
    async with serving(streams) as port:
        answer = await read_all(port, get("/cut"))
    assert answer.startswith(b"HTTP/1.1 200 ")
    record = captured.find("cut short")
    assert record.levelno == logging.INFO
    assert all(r.levelno < logging.WARNING for r in captured.records)


@pytest.mark.anyio
async def test_a_response_left_incomplete_by_mistake_stays_an_error(captured: Captured) -> None:
    """Without cut_short(), uvicorn's "returned without completing response" stays an ERROR."""
    async with serving(streams) as port:
        await read_all(port, get("/cut"))  # marks its own request only
        await read_all(port, get("/forgot"))
    record = captured.find("ASGI callable returned without completing response.")
    assert record.levelno == logging.ERROR


@pytest.mark.anyio
async def test_an_exception_in_the_app_stays_an_error_with_its_traceback(
    captured: Captured,
) -> None:
    """An exception raised by the application is still logged at ERROR, traceback and all."""
    async with serving(streams) as port:
        answer = await read_all(port, get("/boom"))
    assert answer.startswith(b"HTTP/1.1 500 ")
    record = captured.find("Exception in ASGI application")
    assert record.levelno == logging.ERROR
    assert record.exc_text is not None
    assert "RuntimeError: a bug in the app" in record.exc_text


def test_a_re_leveled_line_obeys_the_logger_level() -> None:
    """Re-leveled below the logger's level, a record is dropped like any record at that level."""
    logger = logging.getLogger("uvicorn.error")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        record = _record("Invalid UTF-8 sequence received from client.")
        record.levelno, record.levelname = logging.ERROR, "ERROR"
        assert not ClientFaults().filter(record)
        assert record.levelno == logging.WARNING
    finally:
        logger.setLevel(level)
