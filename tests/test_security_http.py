"""Protected mode, CORS, Origin checks and security headers."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
import uvicorn
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.testclient import TestClient, WebSocketDenialResponse

from app.edge.headers import PAGE_POLICY
from app.edge.origins import OriginPolicy
from app.main import create_app
from app.settings import Settings, SettingsError, is_loopback
from tests.conftest import LOCAL_URL, local_client, seconds

APP_ORIGIN = "https://app.example.com"
KEY_A = "key-a-" + "a" * 32
KEY_B = "key-b-" + "b" * 32


# -- protected mode ------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "jobs.example.com"])
def test_non_loopback_host_without_a_key_is_refused(host: str) -> None:
    """Binding beyond loopback without JOBS_API_KEY stops start-up, naming what to set."""
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({"JOBS_HOST": host})
    message = str(refused.value)
    assert "JOBS_API_KEY" in message
    assert "JOBS_ALLOW_ANONYMOUS=1" in message


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "::1", "[::1]", "localhost"])
def test_loopback_hosts_need_no_key(host: str) -> None:
    """Loopback addresses serve without a key, as the local default always has."""
    assert is_loopback(host)
    assert Settings.from_env({"JOBS_HOST": host}).protected is False


def test_a_key_or_an_explicit_override_allows_any_host() -> None:
    """A key protects a public bind; JOBS_ALLOW_ANONYMOUS=1 allows one without."""
    keys = Settings.from_env({"JOBS_HOST": "0.0.0.0", "JOBS_API_KEY": f"{KEY_A},{KEY_B}"})
    assert keys.api_keys == (KEY_A, KEY_B)
    anonymous = Settings.from_env({"JOBS_HOST": "0.0.0.0", "JOBS_ALLOW_ANONYMOUS": "1"})
    assert anonymous.allow_anonymous


def test_anonymous_mode_logs_a_loud_warning(caplog: pytest.LogCaptureFixture) -> None:
    """Serving anonymously beyond loopback logs a warning at start-up."""
    settings = Settings(host="0.0.0.0", allow_anonymous=True)
    with caplog.at_level(logging.WARNING, logger="jobcast"), local_client(create_app(settings)):
        pass
    assert any("WITHOUT AUTHENTICATION" in record.getMessage() for record in caplog.records)


def test_python_m_app_refuses_a_public_bind_without_a_key() -> None:
    """`python -m app` with JOBS_HOST=0.0.0.0 and no key exits, saying what to set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBS_")}
    result = subprocess.run(
        [sys.executable, "-m", "app"],
        env={**env, "JOBS_HOST": "0.0.0.0"},
        capture_output=True,
        text=True,
        timeout=seconds(30),
        check=False,
    )
    assert result.returncode != 0
    assert "JOBS_API_KEY" in result.stderr
    assert "Uvicorn running" not in result.stderr


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"JOBS_API_KEY": " , "}, "JOBS_API_KEY"),
        ({"JOBS_TOKEN_SECRET": "short"}, "JOBS_TOKEN_SECRET"),
        ({"JOBS_CORS_ORIGINS": "app.example.com"}, "JOBS_CORS_ORIGINS"),
        ({"JOBS_CORS_ORIGINS": "https://a.example/path"}, "JOBS_CORS_ORIGINS"),
        ({"JOBS_CORS_ORIGINS": "*", "JOBS_CORS_CREDENTIALS": "1"}, "JOBS_CORS_CREDENTIALS"),
        ({"JOBS_CORS_ORIGINS": "*"}, "JOBS_CORS_ORIGINS=\\* without JOBS_API_KEY"),
        ({"JOBS_TOKEN_TTL": "0"}, "JOBS_TOKEN_TTL"),
        ({"JOBS_MAX_STREAMS": "0"}, "JOBS_MAX_STREAMS"),
        ({"JOBS_WS_RATE": "0"}, "JOBS_WS_RATE"),
        ({"JOBS_WS_MAX_SUBSCRIPTIONS": "0"}, "JOBS_WS_MAX_SUBSCRIPTIONS"),
        ({"JOBS_WS_MAX_FRAME_BYTES": "10"}, "JOBS_WS_MAX_FRAME_BYTES"),
        ({"JOBS_MAX_METADATA_BYTES": "x"}, "JOBS_MAX_METADATA_BYTES"),
        ({"JOBS_MAX_TEXT_LENGTH": "0"}, "JOBS_MAX_TEXT_LENGTH"),
    ],
)
def test_invalid_security_settings_name_the_variable(env: dict[str, str], name: str) -> None:
    """Each invalid security or limit setting stops start-up with a message naming it."""
    with pytest.raises(SettingsError, match=name):
        Settings.from_env(env)


def test_any_origin_needs_a_key_or_anonymous_access_on_purpose() -> None:
    """JOBS_CORS_ORIGINS=* is refused only where it would open the machine's own server."""
    assert Settings.from_env({"JOBS_CORS_ORIGINS": "*", "JOBS_API_KEY": KEY_A}).cors_origins
    anonymous = {"JOBS_CORS_ORIGINS": "*", "JOBS_ALLOW_ANONYMOUS": "1"}
    assert Settings.from_env(anonymous).cors_origins == ("*",)


def test_security_settings_are_read() -> None:
    """The security and limit variables set their fields."""
    settings = Settings.from_env(
        {
            "JOBS_API_KEY": KEY_A,
            "JOBS_TOKEN_SECRET": "s" * 32,
            "JOBS_TOKEN_TTL": "60",
            "JOBS_CORS_ORIGINS": "https://A.example.com/, http://localhost:3000",
            "JOBS_CORS_CREDENTIALS": "1",
            "JOBS_MAX_METADATA_BYTES": "65536",
            "JOBS_MAX_TEXT_LENGTH": "500",
            "JOBS_WS_MAX_FRAME_BYTES": "4096",
            "JOBS_WS_MAX_SUBSCRIPTIONS": "5",
            "JOBS_WS_RATE": "3.5",
            "JOBS_MAX_STREAMS": "9",
        }
    )
    assert settings.cors_origins == ("https://a.example.com", "http://localhost:3000")
    assert (settings.token_ttl, settings.cors_credentials) == (60, True)
    assert (settings.max_metadata_bytes, settings.max_text_length) == (65536, 500)
    assert (settings.ws_max_frame_bytes, settings.ws_max_subscriptions) == (4096, 5)
    assert (settings.ws_rate, settings.max_streams) == (3.5, 9)


def test_server_is_started_with_the_frame_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """`python -m app` hands JOBS_WS_MAX_FRAME_BYTES to uvicorn as ws_max_size."""
    from app import serve as cli

    seen: dict[str, object] = {}
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: seen.update(kwargs))
    monkeypatch.setenv("JOBS_WS_MAX_FRAME_BYTES", "2048")
    monkeypatch.setenv("JOBS_HOST", "127.0.0.1")
    cli.main()
    assert seen["ws_max_size"] == 2048


# -- security headers ----------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/static/app.js", "/static/jobcast.js"])
def test_page_and_static_files_carry_a_strict_csp(client: TestClient, path: str) -> None:
    """The page and its files come with a CSP without inline script, nosniff, no referrer."""
    response = client.get(path)
    assert response.status_code == 200
    policy = response.headers["content-security-policy"]
    assert policy == PAGE_POLICY
    assert "'unsafe-inline'" not in policy
    assert "frame-ancestors 'none'" in policy
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"


@pytest.mark.parametrize("path", ["/api/jobs", "/healthz", "/api/jobs/job_missing", "/nowhere"])
def test_every_response_carries_nosniff(client: TestClient, path: str) -> None:
    """Every answer, errors included, says nosniff and no-referrer."""
    response = client.get(path)
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"


# -- CORS and Origin -----------------------------------------------------------------------


@pytest.fixture
def cors() -> Iterator[TestClient]:
    with local_client(create_app(Settings(cors_origins=(APP_ORIGIN,)))) as client:
        yield client


def test_listed_origin_gets_cors_headers(cors: TestClient) -> None:
    """A listed origin's request and preflight get Access-Control-Allow-Origin, no credentials."""
    response = cors.get("/api/jobs", headers={"Origin": APP_ORIGIN})
    assert response.headers["access-control-allow-origin"] == APP_ORIGIN
    assert "access-control-allow-credentials" not in response.headers
    preflight = cors.options(
        "/api/jobs",
        headers={
            "Origin": APP_ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert preflight.status_code == 200
    assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
    # As docs/deployment.md lists them: what the page itself does (Delete too).
    methods = preflight.headers["access-control-allow-methods"].split(", ")
    assert sorted(methods) == ["DELETE", "GET", "PATCH", "POST"]


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("GET", "/api/jobs/job_missing", 404), ("PATCH", "/api/jobs/job_missing", 404),
     ("GET", "/api/jobs?limit=0", 422), ("DELETE", "/api/jobs", 405)],
)  # fmt: skip
def test_a_listed_origin_can_read_error_answers(
    cors: TestClient, method: str, path: str, status: int
) -> None:
    """Problems carry CORS headers too, so the page can show what went wrong."""
    response = cors.request(method, path, json={"progress": 5}, headers={"Origin": APP_ORIGIN})
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["access-control-allow-origin"] == APP_ORIGIN
    assert response.headers["x-content-type-options"] == "nosniff"


def test_other_origins_get_no_cors_headers(cors: TestClient) -> None:
    """An unlisted origin gets no CORS headers, so its page cannot read the answer."""
    response = cors.get("/api/jobs", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in response.headers


@pytest.mark.parametrize(
    ("origin", "method", "refused"),
    [("https://evil.example", "POST", "origin"), (APP_ORIGIN, "PUT", "method")],
)
def test_a_refused_preflight_says_why_as_a_problem(
    cors: TestClient, origin: str, method: str, refused: str
) -> None:
    preflight = cors.options(
        "/api/jobs", headers={"Origin": origin, "Access-Control-Request-Method": method}
    )
    assert preflight.status_code == 400
    assert preflight.headers["content-type"] == "application/problem+json"
    detail = preflight.json()["detail"]
    assert f"({refused})" in detail
    assert "JOBS_CORS_ORIGINS" in detail


def test_cross_site_write_from_an_unlisted_origin_is_403(cors: TestClient) -> None:
    """A browser POST from an unlisted origin is refused before it creates anything."""
    evil = cors.post("/api/jobs", content=b"{}", headers={"Origin": "https://evil.example"})
    assert evil.status_code == 403
    assert evil.headers["content-type"] == "application/problem+json"
    assert cors.get("/api/jobs").json()["jobs"] == []
    listed = cors.post("/api/jobs", json={}, headers={"Origin": APP_ORIGIN})
    assert listed.status_code == 201


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        (None, True),
        (LOCAL_URL, True),
        (APP_ORIGIN, True),
        ("https://evil.example", False),
        ("null", False),
        ("http://127.0.0.1.evil.example", False),
    ],
)
def test_websocket_origin_is_checked_before_accepting(
    cors: TestClient, origin: str | None, allowed: bool
) -> None:
    """A socket from the server's origin, a listed one or no browser connects; others get 403."""
    headers = {} if origin is None else {"Origin": origin}
    if allowed:
        with cors.websocket_connect("/api/jobs/ws", headers=headers) as socket:
            socket.send_json({"type": "ping"})
            assert socket.receive_json() == {"type": "pong"}
    else:
        with (
            pytest.raises(WebSocketDenialResponse) as denied,
            cors.websocket_connect("/api/jobs/ws", headers=headers),
        ):
            pass
        assert denied.value.status_code == 403


@pytest.mark.parametrize(
    ("origin", "host", "allowed"),
    [
        ("http://127.0.0.1:8000", "127.0.0.1:8000", True),
        ("https://jobs.example.com", "jobs.example.com", True),
        ("https://jobs.example.com", "jobs.example.com:443", True),
        ("http://127.0.0.1:9000", "127.0.0.1:8000", False),
        ("http://localhost:8000", "127.0.0.1:8000", False),
        ("http://127.0.0.1:bad", "127.0.0.1:8000", False),
    ],
)
def test_same_origin_means_same_host_and_port(origin: str, host: str, allowed: bool) -> None:
    """The server's own origin is its Host header, default ports included."""
    assert OriginPolicy(()).allows(origin, host) is allowed


def test_star_allows_any_origin() -> None:
    """JOBS_CORS_ORIGINS=* lets every origin through (tokens still decide what they read)."""
    assert OriginPolicy(("*",)).allows("https://anything.example", "jobs.example.com")


def test_an_internal_error_gets_the_headers_and_is_timed(caplog: pytest.LogCaptureFixture) -> None:
    """A 500 from a bug passes the edge like any answer: security headers, a timing,
    and one log record with the traceback and the request."""
    app = create_app(Settings())

    async def broken(_: Request) -> Response:
        raise RuntimeError("a bug")

    app.router.routes.insert(0, Route("/broken", broken))
    with local_client(app) as client:  # nothing reaches the server: the edge answered
        response = client.get("/broken")
        metrics = client.get("/metrics").text
    [record] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert record.getMessage() == "unexpected error on GET /broken"
    assert record.exc_info is not None
    assert str(record.exc_info[1]) == "a bug"
    assert response.status_code == 500
    assert response.json()["status"] == 500
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert 'route="/broken",status="500"' in metrics


# -- redirects and caching -------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/jobs/", "/static", "/api/jobs/events/"])
def test_a_path_with_a_slash_too_many_or_few_is_a_404_not_a_redirect(
    client: TestClient, path: str
) -> None:
    """A redirect would be built from the request's Host header, whatever it names."""
    response = client.get(path, follow_redirects=False)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert "location" not in response.headers


def test_answers_with_a_credential_or_a_callers_reads_are_kept_by_no_shared_cache() -> None:
    key = "k" * 32
    with local_client(create_app(Settings(api_key=key))) as keyed:
        keyed.headers["Authorization"] = f"Bearer {key}"
        created = keyed.post("/api/jobs", json={})
        assert created.json()["token"]
        assert created.headers["cache-control"] == "no-store"
        job_id = created.json()["jobId"]
        token = created.json()["token"]
        for path in [f"/api/jobs/{job_id}", f"/api/jobs/{job_id}/output", "/api/jobs"]:
            read = keyed.get(path, params={"token": token} if "list" not in path else None)
            assert read.headers["cache-control"] == "private, no-cache", path
        assert keyed.get("/metrics").headers["cache-control"] == "no-store"
