"""Who may reach the routes: an open server serves this machine only, by address and by name."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient, WebSocketDenialResponse

from app.edge.reach import Reach
from app.main import create_app
from app.settings import Settings

KEY = "reach-key-" + "k" * 32
AUTH = {"Authorization": f"Bearer {KEY}"}
OUTSIDE = ("192.0.2.7", 50000)
HERE = ("127.0.0.1", 50000)


def client(
    settings: Settings, peer: tuple[str, int] = HERE, host: str = "127.0.0.1:8000"
) -> TestClient:
    return TestClient(create_app(settings), base_url=f"http://{host}", client=peer)


def test_an_open_server_refuses_other_machines_naming_the_key() -> None:
    """Without an API key, another machine's request gets 403 naming JOBS_API_KEY."""
    with client(Settings(), peer=OUTSIDE) as outsider:
        for response in (outsider.post("/api/jobs", json={}), outsider.get("/api/jobs")):
            assert response.status_code == 403
            assert response.headers["content-type"] == "application/problem+json"
            assert "JOBS_API_KEY" in response.json()["detail"]
        assert outsider.get("/healthz").status_code == 403


def test_an_open_server_refuses_sockets_from_other_machines() -> None:
    """The WebSocket handshake from another machine is refused the same way."""
    with client(Settings(), peer=OUTSIDE) as outsider:
        with (
            pytest.raises(WebSocketDenialResponse) as denied,
            outsider.websocket_connect("ws://127.0.0.1:8000/api/jobs/ws"),
        ):
            pass
        assert denied.value.status_code == 403
        assert "JOBS_API_KEY" in denied.value.json()["detail"]


@pytest.mark.parametrize("peer", ["127.0.0.1", "127.8.9.10", "::1"])
def test_an_open_server_serves_this_machine(peer: str) -> None:
    """Loopback peers, IPv4 and IPv6, are served without a key."""
    with client(Settings(), peer=(peer, 50000)) as local:
        assert local.post("/api/jobs", json={}).status_code == 201


def test_anonymous_access_opens_to_other_machines_on_purpose() -> None:
    """JOBS_ALLOW_ANONYMOUS=1 serves other machines without a key."""
    with client(Settings(allow_anonymous=True), peer=OUTSIDE) as outsider:
        assert outsider.post("/api/jobs", json={}).status_code == 201


def test_a_protected_server_serves_other_machines_with_the_key() -> None:
    """With an API key, the peer's address does not matter: the key does."""
    with client(Settings(api_key=KEY), peer=OUTSIDE, host="jobs.example.com") as outsider:
        assert outsider.post("/api/jobs", json={}, headers=AUTH).status_code == 201
        assert outsider.post("/api/jobs", json={}).status_code == 401


def test_a_unix_socket_counts_as_this_machine() -> None:
    """A connection without a peer address (a Unix socket) is local."""
    scope = {"type": "http", "path": "/", "client": None, "headers": [(b"host", b"localhost")]}
    assert Reach(Settings()).refusal(scope) is None


def test_dns_rebinding_is_refused_with_421() -> None:
    """A request naming a foreign host (a rebound DNS name) gets 421 and creates nothing."""
    with client(Settings(), host="attacker.example:8000") as rebound:
        created = rebound.post(
            "/api/jobs",
            content=b"{}",
            headers={"Origin": "http://attacker.example:8000", "Content-Type": "text/plain"},
        )
        assert created.status_code == 421
        assert created.headers["content-type"] == "application/problem+json"
        assert "attacker.example" in created.json()["detail"]
        assert "JOBS_ALLOWED_HOSTS" in created.json()["detail"]
        assert rebound.get("/api/jobs").status_code == 421
        with (
            pytest.raises(WebSocketDenialResponse) as denied,
            rebound.websocket_connect("ws://attacker.example:8000/api/jobs/ws"),
        ):
            pass
        assert denied.value.status_code == 421
    with client(Settings()) as local:
        assert local.get("/api/jobs").json()["jobs"] == []


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "127.0.0.1:1234", "localhost", "LOCALHOST:8000", "[::1]", "[::1]:80"]
)
def test_loopback_names_are_served_on_any_port(host: str) -> None:
    """127.0.0.1, localhost and [::1], with or without a port, are an open server's names."""
    with client(Settings(), host=host) as local:
        assert local.get("/api/jobs").status_code == 200


@pytest.mark.parametrize("host", ["", "[::1", "127.0.0.1:port", "localhost.attacker.example"])
def test_missing_or_malformed_hosts_are_refused(host: str) -> None:
    """No Host, a malformed one, or a name that only starts like a loopback one: 421."""
    headers = [(b"host", host.encode())] if host else []
    scope = {"type": "http", "path": "/api/jobs", "client": HERE, "headers": headers}
    refusal = Reach(Settings()).refusal(scope)
    assert refusal is not None
    assert type(refusal).__name__ == "MisdirectedRequest"


def test_allowed_hosts_add_names_to_an_open_server() -> None:
    """JOBS_ALLOWED_HOSTS names (and *.domain patterns) are served besides loopback's."""
    settings = Settings(allowed_hosts=("jobs.internal", "*.example.com"))
    for host in ("jobs.internal:8000", "a.example.com", "b.c.example.com", "127.0.0.1"):
        with client(settings, host=host) as named:
            assert named.get("/api/jobs").status_code == 200, host
    for host in ("example.com", "jobs.internal.evil", "attacker.example"):
        with client(settings, host=host) as other:
            assert other.get("/api/jobs").status_code == 421, host


def test_a_protected_server_checks_hosts_only_when_told() -> None:
    """With an API key any Host is served, unless JOBS_ALLOWED_HOSTS lists the names."""
    with client(Settings(api_key=KEY), host="anything.example") as named:
        assert named.get("/api/jobs", headers=AUTH).status_code == 200
    listed = Settings(api_key=KEY, allowed_hosts=("jobs.example.com",))
    with client(listed, host="anything.example") as other:
        assert other.get("/api/jobs", headers=AUTH).status_code == 421
    with client(listed, host="jobs.example.com") as named:
        assert named.get("/api/jobs", headers=AUTH).status_code == 200
    with client(listed, host="localhost") as local:
        assert local.get("/api/jobs", headers=AUTH).status_code == 421


def test_the_probes_answer_to_any_host_the_rest_names_the_one_to_add() -> None:
    """Load balancers ask /healthz and /readyz by address: served whatever JOBS_ALLOWED_HOSTS
    lists. Everything else is refused naming the host as the setting takes it (no port)."""
    listed = Settings(api_key=KEY, allowed_hosts=("jobs.example.com",))
    with client(listed, host="10.0.0.5:8000") as balancer:
        assert balancer.get("/healthz").status_code == 200
        assert balancer.get("/readyz").status_code == 200
        refused = balancer.get("/metrics", headers=AUTH)
        assert refused.status_code == 421
        assert "the host '10.0.0.5': add it to JOBS_ALLOWED_HOSTS" in refused.json()["detail"]
    with client(Settings(), host="attacker.example") as rebound:
        assert rebound.get("/healthz").status_code == 200
        assert rebound.get("/api/jobs").status_code == 421


def test_an_ipv6_address_is_listed_and_named_in_brackets() -> None:
    """JOBS_ALLOWED_HOSTS takes [fd00::5], which then serves Host: [fd00::5]:8000; a 421
    for another address names it in the form to add."""
    listed = Settings(api_key=KEY, allowed_hosts=("[fd00:0::5]",))
    for spelt in ("[fd00::5]:8000", "[FD00:0:0::5]"):  # one address, however written
        with client(listed, host=spelt) as named:
            assert named.get("/api/jobs", headers=AUTH).status_code == 200, spelt
    with client(listed, host="[fd00::6]:8000") as other:
        refused = other.get("/api/jobs", headers=AUTH)
        assert refused.status_code == 421
        assert "the host '[fd00::6]': add it to JOBS_ALLOWED_HOSTS" in refused.json()["detail"]


def test_a_star_serves_every_host() -> None:
    """JOBS_ALLOWED_HOSTS=* turns the Host check off, open mode included."""
    with client(Settings(allowed_hosts=("*",)), host="anything.example") as named:
        assert named.get("/api/jobs").status_code == 200
