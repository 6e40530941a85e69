"""Authentication and scope: every route by every kind of credential, over HTTP and WebSocket.

The app here runs with two API keys (rotation). Alice owns ``job_a`` and
``done_a`` (completed, so its SSE stream ends and TestClient can read it);
Bob owns ``job_b``. The all-jobs stream never ends, so its allowed cells
are read by a real client in ``tests/e2e/test_security_streams.py``.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import jwt
import pytest
from starlette.testclient import TestClient, WebSocketDenialResponse
from starlette.websockets import WebSocketDisconnect

from app.logs import RedactTokens
from app.main import create_app
from app.settings import Settings
from app.tokens import Tokens
from tests.conftest import local_client

KEY_ONE = "first-key-0123456789abcdef0123456789"
KEY_TWO = "second-key-0123456789abcdef0123456789"
KEYS = f"{KEY_ONE}, {KEY_TWO}"
PROBLEM = "application/problem+json"


@pytest.fixture
def settings() -> Settings:
    return Settings(api_key=KEYS)


@dataclass
class World:
    client: TestClient
    job_a: str
    job_b: str
    done_a: str
    creds: dict[str, str | None]  # credential name → bearer value (None: send nothing)

    def headers(self, cred: str) -> dict[str, str]:
        value = self.creds[cred]
        return {} if value is None else {"Authorization": f"Bearer {value}"}

    def mint(self, **body: Any) -> str:
        response = self.client.post("/api/tokens", json=body, headers=self.headers("key"))
        assert response.status_code == 200, response.text
        token: str = response.json()["token"]
        return token


def _create(client: TestClient, owner: str) -> str:
    response = client.post(
        "/api/jobs", json={"owner": owner}, headers={"Authorization": f"Bearer {KEY_ONE}"}
    )
    assert response.status_code == 201, response.text
    job_id: str = response.json()["jobId"]
    return job_id


def expired_token(settings: Settings, scope: str) -> str:
    """A token that was valid an hour ago, signed with the server's key."""
    kind, _, value = scope.partition(":")
    past = Tokens(settings, clock=lambda: time.time() - 7200)
    token, _ = past.mint("job" if kind == "job" else "owner", value, ttl=60)
    return token


@pytest.fixture
def world(client: TestClient, settings: Settings) -> World:
    job_a, job_b, done_a = (
        _create(client, "alice"),
        _create(client, "bob"),
        _create(client, "alice"),
    )
    key = {"Authorization": f"Bearer {KEY_ONE}"}
    assert client.post(f"/api/jobs/{done_a}/complete", json={}, headers=key).status_code == 200
    world = World(client, job_a, job_b, done_a, {"none": None, "key": KEY_ONE, "key2": KEY_TWO})
    world.creds["job"] = world.mint(jobId=job_a)
    world.creds["done_job"] = world.mint(jobId=done_a)
    world.creds["other_job"] = world.mint(jobId=job_b)
    world.creds["owner"] = world.mint(owner="alice")
    world.creds["other_owner"] = world.mint(owner="bob")
    world.creds["expired"] = expired_token(settings, "owner:alice")
    world.creds["garbage"] = "not.a.token"
    world.creds["foreign"] = jwt.encode(
        {"scope": "owner:alice", "aud": "jobcast", "iat": 1, "exp": 2**40},
        "someone-elses-secret-0123456789abcdef",
        algorithm="HS256",
    )
    return world


CREDS = [
    "none",
    "key",
    "key2",
    "job",
    "other_job",
    "owner",
    "other_owner",
    "expired",
    "garbage",
    "foreign",
]
KEY_ONLY = {
    "none": 401,
    "key": 0,
    "key2": 0,
    "job": 403,
    "other_job": 403,
    "owner": 403,
    "other_owner": 403,
    "expired": 401,
    "garbage": 401,
    "foreign": 401,
}
READ_JOB_A = {**KEY_ONLY, "job": 0, "owner": 0}
READ_LIST = {**KEY_ONLY, "owner": 0, "other_owner": 0}

Call = Callable[[World, dict[str, str]], Any]


def _route(method: str, path: str, body: dict[str, Any] | None = None) -> Call:
    def call(world: World, headers: dict[str, str]) -> Any:
        target = path.format(a=world.job_a, b=world.job_b, done=world.done_a)
        return world.client.request(method, target, json=body, headers=headers)

    return call


# (name, call, expectations, the success status)
ROUTES: list[tuple[str, Call, dict[str, int], int]] = [
    ("create", _route("POST", "/api/jobs", {}), KEY_ONLY, 201),
    ("list", _route("GET", "/api/jobs"), READ_LIST, 200),
    ("get", _route("GET", "/api/jobs/{a}"), READ_JOB_A, 200),
    ("long-poll", _route("GET", "/api/jobs/{a}?waitForVersion=0&timeout=1"), READ_JOB_A, 200),
    ("patch", _route("PATCH", "/api/jobs/{a}", {"progress": 5}), KEY_ONLY, 200),
    ("complete", _route("POST", "/api/jobs/{a}/complete", {}), KEY_ONLY, 200),
    ("fail", _route("POST", "/api/jobs/{a}/fail", {"error": "x"}), KEY_ONLY, 200),
    ("cancel", _route("POST", "/api/jobs/{a}/cancel", {}), KEY_ONLY, 200),
    ("delete", _route("DELETE", "/api/jobs/{a}"), KEY_ONLY, 204),
    (
        "append-output",
        _route("POST", "/api/jobs/{a}/output", {"chunks": [{"data": 1}]}),
        KEY_ONLY,
        200,
    ),
    ("read-output", _route("GET", "/api/jobs/{a}/output"), READ_JOB_A, 200),
    ("tokens", _route("POST", "/api/tokens", {"owner": "carol"}), KEY_ONLY, 200),
    ("metrics", _route("GET", "/metrics"), KEY_ONLY, 200),
    ("demo-start", _route("POST", "/api/demo/jobs", {}), KEY_ONLY, 201),
    ("job-events", _route("GET", "/api/jobs/{done}/events"), {}, 200),
    ("all-events", _route("GET", "/api/jobs/events"), {}, 200),
]
JOB_EVENTS = {**KEY_ONLY, "owner": 0, "done_job": 0}
ALL_EVENTS_DENIED = {cred: status for cred, status in READ_LIST.items() if status}


def _cells() -> Iterator[Any]:
    for name, call, expected, success in ROUTES:
        if name == "job-events":
            for cred in [*CREDS, "done_job"]:
                yield pytest.param(call, cred, JOB_EVENTS[cred] or success, id=f"{name}-{cred}")
        elif name == "all-events":
            for cred, status in ALL_EVENTS_DENIED.items():
                yield pytest.param(call, cred, status, id=f"{name}-{cred}")
        else:
            for cred in CREDS:
                yield pytest.param(call, cred, expected[cred] or success, id=f"{name}-{cred}")


@pytest.mark.parametrize(("call", "cred", "status"), list(_cells()))
def test_route_answers_each_credential_as_its_scope_says(
    world: World, call: Call, cred: str, status: int
) -> None:
    """Each route gives 2xx, 401 or 403 to each kind of credential, as the scope rules say."""
    response = call(world, world.headers(cred))
    assert response.status_code == status, response.text
    if status in (401, 403):
        assert response.headers["content-type"] == PROBLEM
        assert response.json()["status"] == status
    if status == 401:
        assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "path", ["/healthz", "/readyz", "/openapi.json", "/", "/static/app.css", "/api/demo"]
)
@pytest.mark.parametrize("cred", ["none", "garbage", "expired"])
def test_public_routes_answer_anyone(world: World, path: str, cred: str) -> None:
    """Health, readiness, the OpenAPI document, the page, its files and demo probe are public."""
    assert world.client.get(path, headers=world.headers(cred)).status_code == 200


def test_missing_job_is_403_for_tokens_and_404_for_keys(world: World) -> None:
    """Out-of-scope answers never reveal existence: tokens get 403 for a missing job too."""
    missing = "/api/jobs/job_doesNotExist0000000000"
    assert world.client.get(missing, headers=world.headers("key")).status_code == 404
    for cred, not_theirs in (
        ("job", world.job_b),
        ("owner", world.job_b),
        ("other_owner", world.job_a),
    ):
        response = world.client.get(missing, headers=world.headers(cred))
        assert response.status_code == 403, cred
        other = world.client.get(f"/api/jobs/{not_theirs}", headers=world.headers(cred))
        assert other.status_code == 403
        assert response.json()["detail"] == other.json()["detail"]
    events = world.client.get(missing + "/events", headers=world.headers("owner"))
    assert events.status_code == 403


def test_owner_token_lists_exactly_its_owners_jobs(world: World) -> None:
    """The list under an owner token holds that owner's jobs and no one else's."""
    listed = world.client.get("/api/jobs", headers=world.headers("owner")).json()["jobs"]
    assert {job["jobId"] for job in listed} == {world.job_a, world.done_a}
    assert all(job["owner"] == "alice" for job in listed)
    bobs = world.client.get("/api/jobs", headers=world.headers("other_owner")).json()["jobs"]
    assert [job["jobId"] for job in bobs] == [world.job_b]
    asked_other = world.client.get("/api/jobs?owner=bob", headers=world.headers("owner"))
    assert asked_other.status_code == 403
    everyone = world.client.get("/api/jobs", headers=world.headers("key")).json()["jobs"]
    assert len(everyone) == 3


def test_key_may_filter_the_list_by_owner(world: World) -> None:
    """With an API key, ?owner= narrows the list to one owner's jobs."""
    response = world.client.get("/api/jobs?owner=bob", headers=world.headers("key"))
    assert [job["jobId"] for job in response.json()["jobs"]] == [world.job_b]


@pytest.mark.parametrize("path", ["/api/jobs/{a}", "/api/jobs/{done}/events", "/api/jobs?limit=1"])
def test_read_token_is_accepted_in_the_query(world: World, path: str) -> None:
    """Every read route the page uses accepts ?token= (EventSource cannot set headers)."""
    token = world.creds["owner"]
    target = path.format(a=world.job_a, done=world.done_a)
    joiner = "&" if "?" in target else "?"
    assert world.client.get(f"{target}{joiner}token={token}").status_code == 200


def test_api_key_in_the_url_is_refused(world: World) -> None:
    """An API key in ?token= is a 401 telling to use the header (logs keep URLs)."""
    response = world.client.get(f"/api/jobs?token={KEY_ONE}")
    assert response.status_code == 401
    assert "Authorization header" in response.json()["detail"]


@pytest.mark.parametrize("header", ["Basic abc", "Bearer", "Token x", "bearer"])
def test_malformed_authorization_header_is_401(world: World, header: str) -> None:
    """An Authorization header that is not `Bearer <credential>` is a 401 with a challenge."""
    response = world.client.get("/api/jobs", headers={"Authorization": header})
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["www-authenticate"]


def test_created_job_comes_with_a_token_for_it_alone(world: World) -> None:
    """POST /api/jobs answers a token that reads that job and nothing else."""
    created = world.client.post("/api/jobs", json={}, headers=world.headers("key")).json()
    token = {"Authorization": f"Bearer {created['token']}"}
    assert world.client.get(f"/api/jobs/{created['jobId']}", headers=token).status_code == 200
    assert world.client.get(f"/api/jobs/{world.job_a}", headers=token).status_code == 403
    assert world.client.get("/api/jobs", headers=token).status_code == 403


def test_minted_token_reports_its_expiry(world: World) -> None:
    """POST /api/tokens answers the token and an ISO expiry `ttl` seconds ahead."""
    response = world.client.post(
        "/api/tokens", json={"jobId": world.job_a, "ttl": 120}, headers=world.headers("key")
    )
    body = response.json()
    assert set(body) == {"token", "expiresAt"}
    assert response.headers["cache-control"] == "no-store"
    claims = jwt.decode(body["token"], options={"verify_signature": False})
    assert claims["aud"] == "jobcast"
    assert claims["scope"] == f"job:{world.job_a}"
    assert claims["exp"] - claims["iat"] in (120, 121)  # whole seconds: iat down, exp up


@pytest.mark.parametrize(
    "body",
    [{}, {"jobId": "job_x", "owner": "a"}, {"owner": "a", "ttl": 0}, {"owner": "a b"}],
    ids=["neither", "both", "zero-ttl", "space-in-owner"],
)
def test_token_request_needs_exactly_one_scope(world: World, body: dict[str, Any]) -> None:
    """A token request with no scope, two scopes or a bad value is 422."""
    response = world.client.post("/api/tokens", json=body, headers=world.headers("key"))
    assert response.status_code == 422


@pytest.mark.parametrize("job_id", ["nonsense", "", "job_", "job_a b", "job_" + "x" * 65])
def test_a_token_for_what_is_no_job_id_is_refused(world: World, job_id: str) -> None:
    """A token's jobId is one the server could have made, as a WebSocket's must be."""
    body = {"jobId": job_id}
    response = world.client.post("/api/tokens", json=body, headers=world.headers("key"))
    assert response.status_code == 422
    assert response.json()["detail"] == "jobId: must be a job id (job_…)"


def test_expired_token_says_it_expired(world: World) -> None:
    """An expired token is 401 whose detail says it expired, so a client knows to renew it."""
    response = world.client.get("/api/jobs", headers=world.headers("expired"))
    assert response.status_code == 401
    assert "expired" in response.json()["detail"]


# -- WebSocket ---------------------------------------------------------------------------


def _ws_path(world: World, cred: str) -> str:
    value = world.creds[cred]
    return "/api/jobs/ws" + ("" if value is None else f"?token={value}")


@pytest.mark.parametrize("cred", ["none", "expired", "garbage", "foreign"])
def test_socket_without_a_valid_credential_is_refused_with_401(world: World, cred: str) -> None:
    """The handshake is refused with 401 problem+json when the credential is missing or bad."""
    with (
        pytest.raises(WebSocketDenialResponse) as denied,
        world.client.websocket_connect(_ws_path(world, cred)),
    ):
        pass
    assert denied.value.status_code == 401
    assert denied.value.headers["content-type"] == PROBLEM


WS_JOB_A = {"key": True, "key2": True, "job": True, "other_job": False, "owner": True}
WS_JOB_A |= {"other_owner": False}


@pytest.mark.parametrize(("cred", "allowed"), WS_JOB_A.items())
def test_socket_subscribes_only_to_jobs_in_scope(world: World, cred: str, allowed: bool) -> None:
    """Subscribing to a job answers `subscribed` in scope and an error frame outside it."""
    headers = world.headers(cred)
    with world.client.websocket_connect("/api/jobs/ws", headers=headers) as socket:
        socket.send_json({"type": "subscribe", "jobId": world.job_a})
        reply = socket.receive_json()
        if allowed:
            assert reply == {"type": "subscribed", "jobId": world.job_a, "version": 1}
            assert socket.receive_json()["job"]["jobId"] == world.job_a
        else:
            assert reply["type"] == "error"
            assert reply["jobId"] == world.job_a
            socket.send_json({"type": "ping"})
            assert socket.receive_json() == {"type": "pong"}


def test_socket_all_needs_a_key_or_an_owner_token(world: World) -> None:
    """`all` is refused to a job token and narrowed to the owner for an owner token."""
    with world.client.websocket_connect(_ws_path(world, "job")) as socket:
        socket.send_json({"type": "subscribe", "all": True})
        assert socket.receive_json()["type"] == "error"
    with world.client.websocket_connect(_ws_path(world, "owner")) as socket:
        socket.send_json({"type": "subscribe", "all": True})
        subscribed = socket.receive_json()
        assert subscribed["type"] == "subscribed"
        assert subscribed["owner"] == "alice"
        seen = {socket.receive_json()["job"]["jobId"] for _ in range(2)}
        assert seen == {world.job_a, world.done_a}
        assert socket.receive_json()["type"] == "synced"
        # A change to Bob's job must not reach Alice; a change to hers must, and only it.
        world.client.patch(
            f"/api/jobs/{world.job_b}", json={"progress": 9}, headers=world.headers("key")
        )
        world.client.patch(
            f"/api/jobs/{world.job_a}", json={"progress": 7}, headers=world.headers("key")
        )
        assert socket.receive_json()["job"]["jobId"] == world.job_a


def test_socket_missing_job_is_refused_alike_for_owner_tokens(world: World) -> None:
    """An owner token subscribing to a missing job gets the same error as for another's job."""
    with world.client.websocket_connect(_ws_path(world, "owner")) as socket:
        socket.send_json({"type": "subscribe", "jobId": "job_doesNotExist0000000000"})
        missing = socket.receive_json()
        socket.send_json({"type": "subscribe", "jobId": world.job_b})
        other = socket.receive_json()
    assert missing["error"] == other["error"]


def test_socket_closes_with_1008_when_its_token_expires(world: World) -> None:
    """A socket opened with a read token is closed with 1008 once the token expires."""
    token = world.mint(owner="alice", ttl=1)
    with world.client.websocket_connect(f"/api/jobs/ws?token={token}") as socket:
        closed = _receive_until_closed(socket)
    assert closed.code == 1008
    assert closed.reason == "token expired"


def _receive_until_closed(socket: Any, frames: int = 100) -> WebSocketDisconnect:
    """Read frames until the server closes the socket (at most ``frames`` of them)."""
    for _ in range(frames):
        try:
            socket.receive_json()
        except WebSocketDisconnect as closed:
            return closed
    raise AssertionError(f"the socket sent {frames} frames and did not close")


# -- open mode, settings, logs -----------------------------------------------------------


def test_without_keys_everything_is_open_and_no_token_is_sent() -> None:
    """With no API key, credentials are ignored and POST /api/jobs answers no token."""
    with local_client(create_app(Settings())) as client:
        created = client.post("/api/jobs", json={}, headers={"Authorization": "Bearer junk"})
        assert created.status_code == 201
        assert "token" not in created.json()
        assert client.get("/metrics?token=junk").status_code == 200
        assert client.post("/api/tokens", json={"owner": "a"}).status_code == 200


def test_keys_never_appear_in_the_settings_repr() -> None:
    """Neither an API key nor the token secret shows in repr(Settings)."""
    settings = Settings(api_key=KEYS, token_secret="t" * 40)
    text = repr(settings)
    assert KEY_ONE not in text
    assert KEY_TWO not in text
    assert "t" * 40 not in text


def test_every_key_is_compared_in_constant_time(
    monkeypatch: pytest.MonkeyPatch, world: World
) -> None:
    """Checking a credential compares it with every key, even after a match."""
    calls: list[int] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append(1)
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)
    assert world.client.get("/metrics", headers=world.headers("key")).status_code == 200
    assert len(calls) == 2


def test_token_query_is_redacted_in_log_lines() -> None:
    """Log lines that print a URL show `token=REDACTED`, never the token."""
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s"',
        ("1.2.3.4", "GET", "/api/jobs/events?status=queued&token=abc.def.ghi&x=1"),
        None,
    )
    RedactTokens().filter(record)
    assert "abc.def.ghi" not in record.getMessage()
    assert "token=REDACTED&x=1" in record.getMessage()


def test_token_secret_rotation_keeps_old_tokens_valid() -> None:
    """With JOBS_TOKEN_SECRET=new,old a token signed with the old secret still reads."""
    old, new = "o" * 32, "n" * 32
    token, _ = Tokens(Settings(api_key=KEY_ONE, token_secret=old)).mint("owner", "alice")
    rotated = Tokens(Settings(api_key=KEY_ONE, token_secret=f"{new},{old}"))
    assert rotated.verify(token).value == "alice"


def test_rotating_the_first_key_ends_derived_tokens() -> None:
    """Without JOBS_TOKEN_SECRET, a new first API key invalidates tokens signed before."""
    from app.errors import Unauthenticated

    token, _ = Tokens(Settings(api_key=f"{KEY_ONE},{KEY_TWO}")).mint("owner", "alice")
    assert Tokens(Settings(api_key=f"{KEY_ONE},{KEY_TWO}")).verify(token).value == "alice"
    with pytest.raises(Unauthenticated):
        Tokens(Settings(api_key=f"{KEY_TWO},{KEY_ONE}")).verify(token)


@pytest.mark.parametrize("fraction", [0.0, 0.001, 0.999])
def test_a_token_lasts_at_least_its_ttl(fraction: float) -> None:
    """Its claims are whole seconds, rounded up: minted late in a second, a one-second
    token still lasts a second."""
    now = 1_800_000_000 + fraction
    token, expires = Tokens(Settings(api_key=KEY_ONE), clock=lambda: now).mint("owner", "al", 1)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["exp"] == expires
    assert now + 1 <= expires < now + 2
    assert claims["iat"] <= now
