"""Who is asking, and what they may do: the access checks of every route, in one place.

A request presents at most one credential::

    Authorization: Bearer <API key or read token>     any client
    ?token=<read token>                               browsers (EventSource sets no headers)

and is one of these :class:`Access` kinds:

    open     no API key is configured: every route is open, credentials are ignored
    key      a JOBS_API_KEY: everything
    job      a read token for one job: that job (GET, its stream, WebSocket subscribe)
    owner    a read token for one owner: that owner's jobs (and lists and streams of them)
    nobody   no credential, while keys are configured

Bad credentials are 401 (:class:`Unauthenticated`); good ones asking for
something outside their scope are 403 (:class:`Forbidden`), and a 403 never
tells whether the job exists: a job token asking for another job, or an
owner token asking for another owner's job or a missing one, all get the
same answer. API keys are compared in constant time against every
configured key, and are refused in the URL, where access logs would keep
them.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import hmac
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, TypeVar
from urllib.parse import unquote_plus

from starlette.requests import HTTPConnection, Request
from starlette.responses import Response

from app.errors import Forbidden, JobGone, JobNotFound, Unauthenticated
from app.settings import Settings
from app.store import JobFilter
from app.tokens import Tokens

Kind = Literal["open", "key", "job", "owner", "nobody"]
T = TypeVar("T")

_NOT_YOURS = "this credential does not give access to that"


@dataclass(frozen=True, slots=True)
class Access:
    """Who is asking: a kind, what a token is scoped to, and when it expires."""

    kind: Kind
    scope: str | None = None  # the job id or the owner a token reads
    expires_at: float | None = None  # unix seconds, for tokens

    @property
    def everything(self) -> bool:
        return self.kind in ("open", "key")


OPEN = Access("open")
KEY = Access("key")
NOBODY = Access("nobody")


class Guard:
    """Identifies credentials against the configured API keys and token keys."""

    def __init__(self, settings: Settings, tokens: Tokens) -> None:
        self.protected = settings.protected
        self.tokens = tokens
        # Digests, so every comparison is over 32 bytes whatever the key's length.
        self._keys = [_digest(key) for key in settings.api_keys]

    def identify(self, connection: HTTPConnection) -> Access:
        """The caller's access; raises Unauthenticated for a credential that is not valid."""
        if not self.protected:
            return OPEN
        header = connection.headers.get("authorization")
        if header is not None:
            scheme, _, credential = header.strip().partition(" ")
            credential = credential.strip()
            if scheme.lower() != "bearer" or not credential:
                raise Unauthenticated(
                    "send credentials as Authorization: Bearer <API key or token>", presented=True
                )
            return KEY if self._is_key(credential) else self._token(credential)
        token = connection.query_params.get("token")
        if not token:
            return NOBODY
        if self._is_key(token):
            raise Unauthenticated(
                "an API key goes in the Authorization header, never in the URL, where logs "
                "keep it; ?token= takes read tokens",
                presented=True,
            )
        return self._token(token)

    def _is_key(self, credential: str) -> bool:
        given = _digest(credential)
        found = False
        for key in self._keys:  # every key, always: the time taken tells nothing
            found |= hmac.compare_digest(given, key)
        return found

    def _token(self, token: str) -> Access:
        scope = self.tokens.verify(token)
        return Access(scope.kind, scope.value, scope.expires_at)


def access_of(connection: HTTPConnection) -> Access:
    """The access of the request or WebSocket ``connection`` (see :class:`Guard`)."""
    guard: Guard = connection.state.auth
    return guard.identify(connection)


def require_key(access: Access) -> None:
    """Writes and reading everything: an API key (or the open mode) only."""
    if access.everything:
        return
    if access.kind == "nobody":
        raise Unauthenticated("this needs an API key: Authorization: Bearer <key>", presented=False)
    raise Forbidden("a read token cannot do this: it needs an API key")


def check_job(access: Access, job_id: str) -> None:
    """Refuse, without touching the store, what ``access`` can never read of ``job_id``."""
    if access.everything or access.kind == "owner":
        return  # an owner token is checked against the job once it is loaded
    if access.kind == "nobody":
        raise Unauthenticated(
            "this needs a token for the job (?token= or Authorization: Bearer) or an API key",
            presented=False,
        )
    if access.scope != job_id:
        raise Forbidden(_NOT_YOURS)


async def load_job(
    access: Access,
    job_id: str,
    load: Callable[[str], Awaitable[T]],
    owner_of: Callable[[T], str | None],
) -> T:
    """``load(job_id)`` if ``access`` may read that job; 401/403 otherwise.

    For an owner token a missing or cleaned-up job is 403, like another
    owner's job, so the answer never tells whether the id exists.
    """
    check_job(access, job_id)
    if access.kind != "owner":
        return await load(job_id)
    try:
        found = await load(job_id)
    except (JobNotFound, JobGone):
        raise Forbidden(_NOT_YOURS) from None
    if owner_of(found) != access.scope:
        raise Forbidden(_NOT_YOURS)
    return found


def scope_filter(access: Access, where: JobFilter) -> JobFilter:
    """The filter a list or all-jobs stream may use: an owner token sees only its owner's."""
    if access.everything:
        return where
    if access.kind == "owner":
        if where.owner not in (None, access.scope):
            raise Forbidden(_NOT_YOURS)
        return dataclasses.replace(where, owner=access.scope)
    if access.kind == "nobody":
        raise Unauthenticated(
            "this needs an API key, or an owner token (?token= or Authorization: Bearer)",
            presented=False,
        )
    raise Forbidden("a job token reads its one job; lists need an API key or an owner token")


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


def redact_tokens_in_server_logs() -> None:
    """Install :class:`RedactTokens` on uvicorn's loggers (once per process)."""
    for name in ("uvicorn.access", "uvicorn.error"):
        logger = logging.getLogger(name)
        if not any(isinstance(existing, RedactTokens) for existing in logger.filters):
            logger.addFilter(RedactTokens())


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()


Endpoint = Callable[[Request], Awaitable[Response]]


def key_required(endpoint: Endpoint) -> Endpoint:
    """``endpoint``, answering 401/403 unless the caller has an API key (or all is open)."""

    @functools.wraps(endpoint)
    async def guarded(request: Request) -> Response:
        require_key(access_of(request))
        return await endpoint(request)

    return guarded
