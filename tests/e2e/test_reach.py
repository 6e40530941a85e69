"""An open server, however it is served, answers this machine only: by address and by name."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx2
import pytest

from tests.conftest import seconds

from .conftest import ROOT, free_port

if TYPE_CHECKING:
    from .conftest import RunningServer

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

Start = Callable[..., "RunningServer"]


def outside_address() -> str | None:
    """This machine's address on a network interface other than loopback, if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # sends nothing: picks the route's own address
            address: str = probe.getsockname()[0]
        except OSError:
            return None
    return None if ipaddress.ip_address(address).is_loopback else address


@pytest.fixture
def plain_uvicorn(tmp_path: Path) -> Iterator[tuple[str, int]]:
    """`uvicorn app.main:app --host 0.0.0.0`, no JOBS_* setting: no start-up check runs."""
    address = outside_address()
    if address is None:
        if os.environ.get("CI") == "true":
            pytest.fail("this machine has no address beside loopback to test from")
        pytest.skip("needs a network interface besides loopback")
    port = free_port()
    env = {name: value for name, value in os.environ.items() if not name.startswith("JOBS_")}
    log = (tmp_path / "uvicorn.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "0.0.0.0", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        with httpx2.Client(timeout=seconds(1)) as client:
            for _ in range(int(seconds(15) / 0.05)):
                try:
                    client.get(f"http://127.0.0.1:{port}/healthz")
                    break
                except httpx2.TransportError:
                    assert process.poll() is None, (tmp_path / "uvicorn.log").read_text()
                    # Waiting for a child process to listen: there is no event to await.
                    time.sleep(0.05)
        yield address, port
    finally:
        process.terminate()
        process.wait(timeout=seconds(10))
        log.close()


async def test_plain_uvicorn_without_a_key_refuses_other_machines(
    plain_uvicorn: tuple[str, int],
) -> None:
    """Served by uvicorn directly on every interface, an open app still refuses other
    machines' reads, writes and sockets with 403 naming JOBS_API_KEY, and serves loopback."""
    address, port = plain_uvicorn
    async with httpx2.AsyncClient(base_url=f"http://{address}:{port}") as outsider:
        for response in (
            await outsider.post("/api/jobs", json={}),
            await outsider.get("/api/jobs"),
        ):
            assert response.status_code == 403
            assert "JOBS_API_KEY" in response.json()["detail"]
    status = await handshake(address, port, f"{address}:{port}")
    assert status == 403
    async with httpx2.AsyncClient(base_url=f"http://127.0.0.1:{port}") as local:
        assert (await local.post("/api/jobs", json={})).status_code == 201
        assert len((await local.get("/api/jobs")).json()["jobs"]) == 1


async def test_dns_rebinding_cannot_write_read_or_subscribe(server: Start) -> None:
    """The reported reproduction: a loopback request naming attacker.example gets 421, for a
    text/plain POST with a matching Origin, a list, and a WebSocket handshake."""
    jobcast = server()
    rebound = {"Host": f"attacker.example:{jobcast.port}"}
    async with jobcast.client() as client:
        created = await client.post(
            "/api/jobs",
            content=b"{}",
            headers={
                **rebound,
                "Origin": f"http://attacker.example:{jobcast.port}",
                "Content-Type": "text/plain",
            },
        )
        assert created.status_code == 421
        assert created.headers["content-type"] == "application/problem+json"
        assert (await client.get("/api/jobs", headers=rebound)).status_code == 421
        assert await handshake("127.0.0.1", jobcast.port, rebound["Host"]) == 421
        assert (await client.get("/api/jobs")).json()["jobs"] == []


async def handshake(address: str, port: int, host: str) -> int:
    """The HTTP status a WebSocket handshake to /api/jobs/ws naming ``host`` gets."""
    reader, writer = await asyncio.open_connection(address, port)
    try:
        writer.write(
            (
                "GET /api/jobs/ws HTTP/1.1\r\n"
                f"Host: {host}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        status_line = await asyncio.wait_for(reader.readline(), seconds(10))
        return int(status_line.split()[1])
    finally:
        writer.close()


@pytest.mark.parametrize("proxies", ["127.0.0.1", "127.0.0.1/8", "::1, 127.0.0.0/24"])
async def test_a_proxy_named_any_way_has_its_forwarded_client_believed(
    server: Start, proxies: str
) -> None:
    """However JOBS_FORWARDED_ALLOW_IPS names the loopback proxy (an address, a network
    with host bits, a list), the client it forwards for is the one checked: without a key
    a remote client is refused, and a local one served."""
    srv = server(JOBS_FORWARDED_ALLOW_IPS=proxies)
    async with srv.client() as api:
        remote = await api.get("/api/jobs", headers={"X-Forwarded-For": "203.0.113.9"})
        assert remote.status_code == 403, remote.text
        assert "JOBS_API_KEY" in remote.json()["detail"]
        local = await api.get("/api/jobs", headers={"X-Forwarded-For": "127.0.0.1"})
        assert local.status_code == 200, local.text
