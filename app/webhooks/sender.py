"""One delivery attempt: the event as JSON, signed (Standard Webhooks, by the
``standardwebhooks`` library), POSTed once, no redirect followed.

A job's own URL (:attr:`Endpoint.guarded`) is resolved here, every address it
resolves to is checked, and the request goes to the checked address (the name
stays in ``Host`` and in TLS's SNI and certificate check): a name that resolves
to a public address when checked and to ``127.0.0.1`` when connecting cannot
turn a delivery into a request to this network. Addresses that are not public
(loopback, private, link-local, …) are refused unless the host is on
JOBS_WEBHOOK_HOSTS by that very name or address, not through a wildcard.

Connections to the operator's endpoints are kept and reused (the answer is
read, up to ``ANSWER_READ``, so the connection is free again): a delivery then
costs no new connection or TLS handshake. The status alone is the answer: a
body that does not come whole in time only costs its connection. A job's own
URL gets a connection of its own every time (``Connection: close``), from a
client of its own that keeps none: it goes to a checked address, and a client
finds kept connections by address, so a kept one (its own, or one to an
operator's endpoint at that address) could carry a delivery for another name
past that name's certificate check.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import ipaddress
import socket
import ssl
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx2
from pydantic import Field
from standardwebhooks import Webhook

from app.models import Job, Timestamp, WireModel, encode
from app.settings import Settings
from app.webhooks.policy import Endpoint
from app.webhooks.queue import QueuedEvent

USER_AGENT = "Jobcast-Webhooks/1"
# Bytes of an answer's body read so its connection can be reused; a longer one closes it.
ANSWER_READ = 64 * 1024
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class Payload(WireModel):
    """The body of every delivery: the event's type, when the job changed, the whole job."""

    type: str = Field(description="`job.` and the job's status: `job.completed`, `job.error`, …")
    timestamp: Timestamp
    data: Job


class Outcome(enum.Enum):
    DELIVERED = "delivered"  # a 2xx answer
    RETRY = "retry"  # any other answer, a timeout, a connection or name error
    REFUSED = "refused"  # never to be sent: the host resolves where it may not go


@dataclass(frozen=True, slots=True)
class Attempt:
    outcome: Outcome
    detail: str  # what happened, for the log


def body_of(job: Job) -> bytes:
    return encode(Payload(type=f"job.{job.status}", timestamp=job.updated_at, data=job))


class Sender:
    def __init__(self, settings: Settings) -> None:
        assert settings.webhook_secret is not None  # Settings refuses webhooks without one
        self._signers = [Webhook(key.strip()) for key in settings.webhook_secret.split(",")]
        self._timeout = settings.webhook_timeout
        self._kept = _client(settings, httpx2.Limits())  # the operator's endpoints
        self._fresh = _client(settings, httpx2.Limits(max_keepalive_connections=0))  # jobs' own

    async def aclose(self) -> None:
        await self._kept.aclose()
        await self._fresh.aclose()

    async def attempt(self, endpoint: Endpoint, event: QueuedEvent) -> Attempt:
        body = body_of(event.job)
        now = datetime.now(UTC)
        headers = {
            "content-type": "application/json",
            "webhook-id": event.webhook_id,
            "webhook-timestamp": str(int(now.timestamp())),
            # One signature per secret, space-separated: a receiver takes any it can check.
            "webhook-signature": " ".join(
                signer.sign(event.webhook_id, now, body) for signer in self._signers
            ),
        }
        deadline = asyncio.get_running_loop().time() + self._timeout
        try:
            async with asyncio.timeout_at(deadline):
                response = await self._post(endpoint, body, headers)
        except _Refused as refused:
            return Attempt(Outcome.REFUSED, str(refused))
        except TimeoutError:
            return Attempt(Outcome.RETRY, f"no answer within {self._timeout:g}s")
        except (httpx2.HTTPError, OSError) as exc:
            return Attempt(Outcome.RETRY, str(exc) or type(exc).__name__)
        try:
            if not endpoint.guarded:
                await _read_answer(response, deadline)
        finally:
            await response.aclose()
        status = response.status_code
        if 200 <= status < 300:
            return Attempt(Outcome.DELIVERED, str(status))
        return Attempt(Outcome.RETRY, f"answered {status}")

    async def _post(
        self, endpoint: Endpoint, body: bytes, headers: dict[str, str]
    ) -> httpx2.Response:
        """POST to the endpoint (a guarded one: to each checked address in turn, until one
        takes the connection); the answer, its body not read yet."""
        if not endpoint.guarded:
            return await self._send(self._kept, _Target(endpoint.url), body, headers)
        targets = await _pinned(endpoint)
        for target in targets[:-1]:
            with contextlib.suppress(httpx2.ConnectError):
                return await self._send(self._fresh, target, body, headers)
        return await self._send(self._fresh, targets[-1], body, headers)

    @staticmethod
    async def _send(
        client: httpx2.AsyncClient, target: _Target, body: bytes, headers: dict[str, str]
    ) -> httpx2.Response:
        request = client.build_request(
            "POST",
            target.url,
            content=body,
            headers={**headers, **target.headers},
            extensions=target.extensions,
        )
        return await client.send(request, stream=True)


def _client(settings: Settings, limits: httpx2.Limits) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(
        timeout=settings.webhook_timeout,
        limits=limits,
        follow_redirects=False,
        # Not the environment's: a proxy from it would skip the address checks (and its
        # SSL_CERT_FILE goes with it, so JOBS_WEBHOOK_CA_FILE says which CAs are added).
        trust_env=False,
        verify=_trusted(settings.webhook_ca_file),
        headers={"user-agent": USER_AGENT},
    )


def _trusted(ca_file: str | None) -> ssl.SSLContext:
    """The system's CAs (as httpx2 finds them, without the environment), and ``ca_file``'s."""
    context = httpx2.create_ssl_context(trust_env=False)
    if ca_file is not None:
        context.load_verify_locations(cafile=ca_file)
    return context


async def _read_answer(response: httpx2.Response, deadline: float) -> None:
    """Read the answer's body, which says nothing, so its connection can serve the next
    delivery: up to ANSWER_READ bytes, until the attempt's deadline. One that is longer,
    late or broken is left; its connection is closed instead of kept."""
    with contextlib.suppress(TimeoutError, httpx2.HTTPError, OSError):
        async with (
            asyncio.timeout_at(deadline),
            contextlib.aclosing(response.aiter_raw()) as chunks,
        ):
            read = 0
            async for chunk in chunks:
                read += len(chunk)
                if read > ANSWER_READ:
                    return


@dataclass(frozen=True, slots=True)
class _Target:
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    extensions: dict[str, Any] = field(default_factory=dict)


class _Refused(Exception):
    pass


async def _pinned(endpoint: Endpoint) -> list[_Target]:
    """The endpoint at each address its host resolves to, once every one is checked; the
    name stays in ``Host`` and, for https, in SNI and the certificate check."""
    parts = urlsplit(endpoint.url)
    host = parts.hostname or ""
    https = parts.scheme.lower() == "https"
    port = parts.port or (443 if https else 80)
    try:
        found = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except UnicodeError:  # an empty label, or one over 63 characters: no name to look up
        raise _Refused(f"{host} is not a host name that can be looked up") from None
    addresses = list(dict.fromkeys(_address(str(info[4][0])) for info in found))
    if not endpoint.listed_exactly:
        hidden = [address for address in addresses if not _public(address)]
        if hidden:
            raise _Refused(
                f"{host} resolves to {hidden[0]}, which is not a public address; list the "
                "host by name on JOBS_WEBHOOK_HOSTS to allow it"
            )
    extensions = {"sni_hostname": host} if https else {}
    targets = []
    for address in addresses:
        shown = f"[{address}]" if address.version == 6 else str(address)
        url = parts._replace(netloc=f"{shown}:{port}").geturl()
        targets.append(_Target(url, {"host": parts.netloc, "connection": "close"}, extensions))
    return targets


def _address(text: str) -> Address:
    return ipaddress.ip_address(text.split("%", 1)[0])  # no IPv6 zone index


# IPv6 prefixes whose last 32 bits are an IPv4 address reached through them: mapped,
# translated (SIIT), the deprecated IPv4-compatible, and NAT64's well-known one (a
# gateway on the network turns 64:ff9b::a9fe:a9fe into 169.254.169.254).
_CARRYING_IPV4 = tuple(
    ipaddress.IPv6Network(prefix)
    for prefix in ("::ffff:0:0/96", "::ffff:0:0:0/96", "::/96", "64:ff9b::/96")
)
# Never public: NAT64's local-use prefix (its IPv4 may sit anywhere in it), and the
# deprecated site-local one.
_LOCAL = (ipaddress.IPv6Network("64:ff9b:1::/48"), ipaddress.IPv6Network("fec0::/10"))


def _public(address: Address) -> bool:
    """Whether ``address`` is on the public internet; an IPv4 address carried inside an
    IPv6 one (mapped, translated, 6to4, NAT64) is judged as itself."""
    if isinstance(address, ipaddress.IPv6Address):
        if any(address in network for network in _CARRYING_IPV4):
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF).is_global
        if address.sixtofour is not None:
            return address.sixtofour.is_global
        if any(address in network for network in _LOCAL):
            return False
    return address.is_global
