"""Scoped read tokens: short-lived JWTs (HS256) that read one job, or one owner's jobs.

    {"scope": "job:job_…" | "owner:<owner>", "aud": "jobcast", "iat": …, "exp": …}

The signing key comes from ``JOBS_TOKEN_SECRET`` (the first secret signs,
each verifies, so a secret can be rotated), or, when that is unset, is
derived from the first API key: rotating that key then ends every token
issued with it. Either way the key PyJWT sees is an HMAC-SHA256 of the
secret, always 32 bytes. With no secret and no key (the open local mode)
a random per-process key is used: tokens are issued but nothing needs them.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import jwt

from app.errors import Unauthenticated
from app.settings import Settings

AUDIENCE = "jobcast"
ALGORITHM = "HS256"
_KEY_CONTEXT = b"jobcast read tokens v1"

ScopeKind = Literal["job", "owner"]


@dataclass(frozen=True, slots=True)
class Scope:
    """What a token reads: one job (``job``) or every job of one owner (``owner``)."""

    kind: ScopeKind
    value: str
    expires_at: float

    @classmethod
    def parse(cls, claim: object, expires_at: float) -> Scope | None:
        if not isinstance(claim, str):
            return None
        kind, sep, value = claim.partition(":")
        if not sep or not value:
            return None
        if kind == "job":
            return cls("job", value, expires_at)
        if kind == "owner":
            return cls("owner", value, expires_at)
        return None


class Tokens:
    """Mints and verifies read tokens with the keys ``settings`` give."""

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.time) -> None:
        material = settings.token_secrets or settings.api_keys[:1]
        if not material:
            material = (secrets.token_urlsafe(32),)
        self._keys = [_signing_key(secret) for secret in material]
        self.ttl = settings.token_ttl
        self._clock = clock

    def mint(self, kind: ScopeKind, value: str, ttl: float | None = None) -> tuple[str, float]:
        """A token for ``kind:value`` and when it expires (unix seconds)."""
        now = self._clock()
        issued = int(now)
        # The claims are whole seconds: rounded up, a token lasts at least what was asked
        # (rounded down, a one-second token could be expired when it is first used).
        expires = math.ceil(now + max(1, round(self.ttl if ttl is None else ttl)))
        claims = {"scope": f"{kind}:{value}", "aud": AUDIENCE, "iat": issued, "exp": expires}
        return jwt.encode(claims, self._keys[0], algorithm=ALGORITHM), float(expires)

    def verify(self, token: str) -> Scope:
        """The token's scope; raises Unauthenticated if it is not one of ours or expired."""
        expired = False
        for key in self._keys:
            try:
                claims = jwt.decode(
                    token,
                    key,
                    algorithms=[ALGORITHM],
                    audience=AUDIENCE,
                    options={"require": ["exp", "iat", "aud", "scope"]},
                )
            except jwt.ExpiredSignatureError:
                expired = True  # signed by us: a later key cannot make it valid
                break
            except jwt.InvalidTokenError:
                continue
            scope = Scope.parse(claims.get("scope"), float(claims["exp"]))
            if scope is not None:
                return scope
            break
        if expired:
            raise Unauthenticated("the token has expired: ask for a new one", presented=True)
        # Said of any Bearer credential that is no key too: name both, as the caller may
        # have sent either.
        raise Unauthenticated(
            "the credential is neither an API key of this server nor a read token it issued",
            presented=True,
        )


def _signing_key(secret: str) -> bytes:
    return hmac.new(secret.encode(), _KEY_CONTEXT, hashlib.sha256).digest()
