"""One delivery attempt against a real receiver: the signature, where a job's own URL
may and may not connect, and what counts as a failure."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import trustme

from app import jobs
from app.models import NewJob
from app.settings import Settings, SettingsError
from app.webhooks.policy import Endpoint
from app.webhooks.queue import QueuedEvent
from app.webhooks.sender import ANSWER_READ, Outcome, Sender

from .receiver import SECRET, Receiver, serve

pytestmark = pytest.mark.anyio


@pytest.fixture
async def sender() -> AsyncIterator[Sender]:
    sending = Sender(Settings(webhook_secret=SECRET, webhook_timeout=1.0))
    yield sending
    await sending.aclose()


def own_url(receiver: Receiver) -> Endpoint:
    """The receiver as a job's own URL, by a name listed exactly (``localhost``)."""
    port = urlsplit(receiver.url).port
    return Endpoint(f"http://localhost:{port}/hooks", guarded=True, listed_exactly=True)


def event() -> QueuedEvent:
    job = jobs.create(NewJob(job_type="llm_agent"), jobs.now())
    return QueuedEvent("1", job, 0.0)


async def test_an_operator_endpoint_gets_a_signed_delivery(
    sender: Sender, receiver: Receiver
) -> None:
    sent = event()
    attempt = await sender.attempt(Endpoint(receiver.url), sent)
    assert (attempt.outcome, attempt.detail) == (Outcome.DELIVERED, "200")
    [delivery] = receiver.deliveries
    assert delivery.verified
    assert delivery.webhook_id == sent.webhook_id == f"msg_{sent.job.job_id}_1"
    assert delivery.body["type"] == "job.queued"


async def test_a_forged_or_foreign_signature_does_not_verify(receiver: Receiver) -> None:
    """The receiver's check is real: a server with another secret is not believed."""
    other = Sender(Settings(webhook_secret="whsec_" + "QUFB" * 8))
    try:
        await other.attempt(Endpoint(receiver.url), event())
    finally:
        await other.aclose()
    assert [d.verified for d in receiver.deliveries] == [False]


@pytest.mark.parametrize("order", ["new first", "old first"])
async def test_several_secrets_sign_each_delivery_with_each(receiver: Receiver, order: str) -> None:
    """Rotating the secret: the receiver, which checks the one it knows, takes a delivery
    signed by it and another, whichever comes first."""
    other = "whsec_" + "QUFB" * 8
    secrets = [other, SECRET] if order == "new first" else [SECRET, other]
    sending = Sender(Settings(webhook_secret=", ".join(secrets)))
    try:
        attempt = await sending.attempt(Endpoint(receiver.url), event())
    finally:
        await sending.aclose()
    assert attempt.outcome is Outcome.DELIVERED
    [delivery] = receiver.deliveries
    assert delivery.verified
    assert [part[:3] for part in delivery.headers["webhook-signature"].split(" ")] == ["v1,"] * 2


async def test_a_jobs_own_url_to_a_private_address_is_refused(
    sender: Sender, receiver: Receiver
) -> None:
    """Listed only through a wildcard, a host resolving to loopback is never called."""
    guarded = Endpoint(receiver.url, guarded=True, listed_exactly=False)
    attempt = await sender.attempt(guarded, event())
    assert attempt.outcome is Outcome.REFUSED
    assert "127.0.0.1" in attempt.detail
    assert "JOBS_WEBHOOK_HOSTS" in attempt.detail
    assert receiver.deliveries == []


async def test_a_jobs_own_url_whose_name_no_lookup_takes_is_refused(sender: Sender) -> None:
    """Refused at creation now; one stored before (on Redis) is refused, not a traceback."""
    name = "a" * 64 + ".partner.example"
    attempt = await sender.attempt(Endpoint(f"http://{name}/x", guarded=True), event())
    assert attempt.outcome is Outcome.REFUSED
    assert "not a host name that can be looked up" in attempt.detail


async def test_a_host_listed_by_name_may_be_private_and_keeps_its_name(
    sender: Sender, receiver: Receiver
) -> None:
    """`localhost`, listed exactly, resolves to loopback: delivered, the name in Host."""
    attempt = await sender.attempt(own_url(receiver), event())
    assert attempt.outcome is Outcome.DELIVERED
    [delivery] = receiver.deliveries
    assert delivery.headers["host"] == f"localhost:{urlsplit(receiver.url).port}"
    assert delivery.verified


@pytest.mark.parametrize(
    "address",
    [
        "64:ff9b::a9fe:a9fe",  # NAT64 to 169.254.169.254, a cloud's metadata service
        "64:ff9b:1::a00:5",  # NAT64's local-use prefix
        "::ffff:0:7f00:1",  # translated (SIIT) 127.0.0.1
        "::7f00:1",  # IPv4-compatible 127.0.0.1
        "2002:a00:5::1",  # 6to4 of 10.0.0.5
        "fec0::1",  # site-local
    ],
)
async def test_an_ipv4_address_inside_an_ipv6_one_is_judged_as_itself(
    sender: Sender, monkeypatch: pytest.MonkeyPatch, address: str
) -> None:
    """A name listed through a wildcard that resolves to an IPv6 address carrying a private
    IPv4 one (which a gateway on the network would reach) is refused, never called."""

    async def resolve(*_: object, **__: object) -> list[Any]:
        return [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", (address, 80, 0, 0))]

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", resolve)
    guarded = Endpoint("http://hooks.rebind.test/hooks", guarded=True, listed_exactly=False)
    attempt = await sender.attempt(guarded, event())
    assert attempt.outcome is Outcome.REFUSED
    assert address in attempt.detail


async def test_each_checked_address_is_tried_until_one_connects(
    sender: Sender, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A name with two addresses, the first refusing connections: the second gets it.
    (This machine's resolver is told the answer: DNS cannot be set up for a test.)"""
    port = urlsplit(receiver.url).port
    answer = [
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.2", port)),
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port)),
    ]

    async def resolve(*_: object, **__: object) -> list[Any]:
        return answer

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", resolve)
    url = f"http://hooks.test:{port}/hooks"
    attempt = await sender.attempt(Endpoint(url, guarded=True, listed_exactly=True), event())
    assert attempt.outcome is Outcome.DELIVERED
    assert [d.headers["host"] for d in receiver.deliveries] == [f"hooks.test:{port}"]


async def test_an_operator_endpoint_keeps_its_connection(
    sender: Sender, receiver: Receiver
) -> None:
    """Deliveries one after another to the operator's endpoint come on one connection."""
    receiver.answer = b'{"ok": true}'
    for _ in range(3):
        assert (await sender.attempt(Endpoint(receiver.url), event())).outcome is Outcome.DELIVERED
    peers = {delivery.peer for delivery in receiver.deliveries}
    assert len(receiver.deliveries) == 3
    assert len(peers) == 1


async def test_a_long_answer_is_not_read_to_its_end(sender: Sender, receiver: Receiver) -> None:
    """An answer longer than what is read to free the connection: delivered all the same,
    and that connection is not used again."""
    receiver.answer = b"x" * (ANSWER_READ * 4)
    for _ in range(2):
        assert (await sender.attempt(Endpoint(receiver.url), event())).outcome is Outcome.DELIVERED
    assert len({delivery.peer for delivery in receiver.deliveries}) == 2


async def test_a_jobs_own_url_gets_a_connection_of_its_own_each_time(
    sender: Sender, receiver: Receiver
) -> None:
    """A job's own URL goes to a checked address, and connections are pooled by address:
    none is kept, so none can carry another name's delivery past its certificate check."""
    own = own_url(receiver)
    for _ in range(3):
        assert (await sender.attempt(own, event())).outcome is Outcome.DELIVERED
    assert len({delivery.peer for delivery in receiver.deliveries}) == 3
    assert {delivery.headers["connection"] for delivery in receiver.deliveries} == {"close"}


async def test_a_jobs_own_url_never_takes_an_operators_kept_connection(
    sender: Sender, receiver: Receiver
) -> None:
    """The operator's endpoint, by address, keeps its connection; a job's own URL that
    resolves to that address still connects afresh (no certificate check skipped)."""
    own = own_url(receiver)
    for endpoint in (Endpoint(receiver.url), own, Endpoint(receiver.url)):
        assert (await sender.attempt(endpoint, event())).outcome is Outcome.DELIVERED
    operator, job_url, operator_again = (delivery.peer for delivery in receiver.deliveries)
    assert operator == operator_again
    assert job_url != operator


@pytest.mark.parametrize("then", ["waits", "hangs up"])
async def test_a_2xx_whose_body_never_comes_whole_is_delivered(sender: Sender, then: str) -> None:
    """The status is the answer: a body cut short, or never finished, costs only its
    connection."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )
        await reader.readexactly(length)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc")
        await writer.drain()
        if then == "waits":
            await reader.read()  # until the client gives up on the rest and closes
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        attempt = await sender.attempt(Endpoint(f"http://127.0.0.1:{port}/hooks"), event())
    assert (attempt.outcome, attempt.detail) == (Outcome.DELIVERED, "200")


@pytest.mark.parametrize("status", [301, 400, 404, 500, 503])
async def test_any_answer_but_2xx_is_retried(
    sender: Sender, receiver: Receiver, status: int
) -> None:
    receiver.status = lambda: status
    attempt = await sender.attempt(Endpoint(receiver.url), event())
    assert (attempt.outcome, attempt.detail) == (Outcome.RETRY, f"answered {status}")


async def test_a_receiver_that_does_not_answer_in_time_is_retried(
    sender: Sender, receiver: Receiver
) -> None:
    receiver.hold = asyncio.Event()
    attempt = await sender.attempt(Endpoint(receiver.url), event())
    assert attempt.outcome is Outcome.RETRY
    assert attempt.detail == "no answer within 1s"


async def test_a_receiver_that_is_not_there_is_retried(sender: Sender) -> None:
    attempt = await sender.attempt(Endpoint("http://127.0.0.1:9/hooks"), event())
    assert attempt.outcome is Outcome.RETRY


async def test_an_https_receiver_signed_by_the_ca_file_is_trusted(tmp_path: Path) -> None:
    """An internal CA: its receivers are refused unless JOBS_WEBHOOK_CA_FILE names it, and
    then delivered to (the system's CAs are still trusted beside it)."""
    authority = trustme.CA()
    served = authority.issue_cert("localhost")
    key, chain, ca = tmp_path / "key.pem", tmp_path / "chain.pem", tmp_path / "ca.pem"
    served.private_key_pem.write_to_path(str(key))
    served.cert_chain_pems[0].write_to_path(str(chain))
    authority.cert_pem.write_to_path(str(ca))
    receiver = Receiver()
    server, task = await serve(receiver, tls=(str(key), str(chain)), host="localhost")
    try:
        endpoint = Endpoint(receiver.url)
        for ca_file, outcome in [(None, Outcome.RETRY), (str(ca), Outcome.DELIVERED)]:
            sending = Sender(Settings(webhook_secret=SECRET, webhook_ca_file=ca_file))
            try:
                attempt = await sending.attempt(endpoint, event())
            finally:
                await sending.aclose()
            assert attempt.outcome is outcome, attempt.detail
        assert [d.verified for d in receiver.deliveries] == [True]
    finally:
        server.should_exit = True
        await task


def test_a_ca_file_that_holds_no_certificates_stops_start_up(tmp_path: Path) -> None:
    empty = tmp_path / "empty.pem"
    empty.write_text("not a certificate\n")
    for path in (str(empty), str(tmp_path / "missing.pem")):
        with pytest.raises(SettingsError, match=r"JOBS_WEBHOOK_CA_FILE.*no CA certificates"):
            Settings.from_env({"JOBS_WEBHOOK_CA_FILE": path})
