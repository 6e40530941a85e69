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
import hashlib
import hmac
from dataclasses import dataclass
from typing import Literal

from starlette.requests import HTTPConnection

from app.errors import Forbidden, JobGone, JobNotFound, Unauthenticated
from app.jobs import JobFilter
from app.settings import Settings
from app.store import JobStore
from app.streams.events import Change
from app.tokens import Tokens

Kind = Literal["open", "key", "job", "owner", "nobody"]

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


async def load_job(access: Access, job_id: str, store: JobStore) -> Change:
    """The job's latest change from ``store``, if ``access`` may read it; 401/403 otherwise.

    For an owner token a missing or cleaned-up job is 403, like another
    owner's job, so the answer never tells whether the id exists.
    """
    check_job(access, job_id)
    if access.kind != "owner":
        return await store.get_change(job_id)
    try:
        found = await store.get_change(job_id)
    except (JobNotFound, JobGone):
        raise Forbidden(_NOT_YOURS) from None
    if found.owner != access.scope:
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


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()
