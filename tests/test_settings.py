"""Settings.from_env: the defaults of SPEC section 6, parsing, and refusing bad values."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest
import uvicorn

from app import serve as cli
from app.settings import Settings, SettingsError

SECRET = "s3cret-" + "x" * 32


def test_defaults_match_the_spec() -> None:
    """With no variables set, every setting has the default SPEC section 6 gives it."""
    settings = Settings.from_env({})
    assert settings.host == "127.0.0.1"
    assert settings.port == 8000
    assert settings.backend == "memory"
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert settings.terminal_ttl == 300
    assert settings.heartbeat == 15
    assert settings.workers == 1
    assert settings.api_key is None


def test_default_retention_and_limits() -> None:
    """Tombstones last at least an hour, and bodies are capped at 1 MiB by default."""
    settings = Settings.from_env({})
    assert settings.tombstone_ttl >= 3600
    assert settings.max_body_bytes == 1024 * 1024
    assert settings.access_log  # uvicorn's default: one line per request
    assert not settings.ws_compression  # a deflate context per socket costs ~40 KiB
    assert settings.stale_ttl == 0  # off: only the operator knows how long a step may be silent


def test_from_env_reads_every_spec_variable() -> None:
    """Each variable of SPEC section 6 sets its field, parsed to the right type."""
    settings = Settings.from_env(
        {
            "JOBS_HOST": "0.0.0.0",
            "JOBS_PORT": "9000",
            "JOBS_BACKEND": "redis",
            "JOBS_REDIS_URL": "redis://cache:6379/1",
            "JOBS_TERMINAL_TTL": "2.5",
            "JOBS_HEARTBEAT": "1",
            "JOBS_WORKERS": "4",
            "JOBS_API_KEY": SECRET,
        }
    )
    assert settings == dataclasses.replace(
        Settings(backend="redis"),
        host="0.0.0.0",
        port=9000,
        redis_url="redis://cache:6379/1",
        terminal_ttl=2.5,
        heartbeat=1.0,
        workers=4,
        api_key=SECRET,
    )


@pytest.mark.parametrize(
    ("name", "field", "value", "expected"),
    [
        ("JOBS_TOMBSTONE_TTL", "tombstone_ttl", "60", 60.0),
        ("JOBS_MAX_TOMBSTONES", "max_tombstones", "10", 10),
        ("JOBS_SSE_RETRY_MS", "sse_retry_ms", "500", 500),
        ("JOBS_SUBSCRIBER_BACKLOG", "subscriber_backlog", "7", 7),
        ("JOBS_SEND_TIMEOUT", "send_timeout", "2", 2.0),
        ("JOBS_MAX_BODY_BYTES", "max_body_bytes", "2048", 2048),
        ("JOBS_SHUTDOWN_TIMEOUT", "shutdown_timeout", "0", 0.0),
        ("JOBS_PORT", "port", " 9001 ", 9001),
        ("JOBS_TERMINAL_TTL", "terminal_ttl", "0", 0.0),
        ("JOBS_ACCESS_LOG", "access_log", "0", False),
        ("JOBS_ACCESS_LOG", "access_log", "1", True),
        ("JOBS_WS_COMPRESSION", "ws_compression", "1", True),
        ("JOBS_MAX_HEADER_BYTES", "max_header_bytes", "4096", 4096),
        ("JOBS_MAX_HEADERS", "max_headers", "20", 20),
        ("JOBS_HEADER_TIMEOUT", "header_timeout", "2.5", 2.5),
        ("JOBS_BODY_TIMEOUT", "body_timeout", "5", 5.0),
        ("JOBS_MAX_CONNECTIONS", "max_connections", "50", 50),
        (
            "JOBS_ALLOWED_HOSTS",
            "allowed_hosts",
            "Jobs.Example.com, *.b.org",
            ("jobs.example.com", "*.b.org"),
        ),
        ("JOBS_FORWARDED_ALLOW_IPS", "forwarded_allow_ips", "10.0.0.0/8", "10.0.0.0/8"),
        ("JOBS_SNAPSHOT_RATE", "snapshot_rate", "0.5", 0.5),
        ("JOBS_STALE_TTL", "stale_ttl", "3600", 3600.0),
        ("JOBS_STALE_TTL", "stale_ttl", "0", 0.0),
    ],
)
def test_extra_variables_are_parsed(name: str, field: str, value: str, expected: object) -> None:
    """The additional tuning variables are read too (surrounding spaces ignored)."""
    assert getattr(Settings.from_env({name: value}), field) == expected


@pytest.mark.parametrize("name", ["JOBS_PORT", "JOBS_TERMINAL_TTL", "JOBS_API_KEY", "JOBS_HOST"])
def test_empty_variable_counts_as_unset(name: str) -> None:
    """A variable set to the empty string leaves the default in place."""
    assert Settings.from_env({name: ""}) == Settings()


def test_from_env_without_mapping_reads_the_process_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Settings.from_env() with no argument reads os.environ; a given mapping replaces it."""
    monkeypatch.setenv("JOBS_PORT", "9123")
    assert Settings.from_env().port == 9123
    assert Settings.from_env({}).port == 8000


def test_settings_are_frozen() -> None:
    """A Settings object cannot be changed after it is built."""
    with pytest.raises(dataclasses.FrozenInstanceError):
        Settings().port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("JOBS_PORT", "http"),
        ("JOBS_PORT", "-1"),
        ("JOBS_PORT", "65536"),
        ("JOBS_PORT", "80.5"),
        ("JOBS_BACKEND", "postgres"),
        ("JOBS_BACKEND", "memory,redis"),
        ("JOBS_TERMINAL_TTL", "five"),
        ("JOBS_TERMINAL_TTL", "-1"),
        ("JOBS_TERMINAL_TTL", "nan"),
        ("JOBS_TERMINAL_TTL", "inf"),
        ("JOBS_HEARTBEAT", "inf"),
        ("JOBS_SEND_TIMEOUT", "-inf"),
        ("JOBS_DEMO", "maybe"),
        ("JOBS_ACCESS_LOG", "quiet"),
        ("JOBS_TOMBSTONE_TTL", "-1"),
        ("JOBS_TOMBSTONE_TTL", "soon"),
        ("JOBS_MAX_TOMBSTONES", "-1"),
        ("JOBS_MAX_TOMBSTONES", "1.5"),
        ("JOBS_HEARTBEAT", "0"),
        ("JOBS_HEARTBEAT", "-3"),
        ("JOBS_HEARTBEAT", "often"),
        ("JOBS_WORKERS", "0"),
        ("JOBS_WORKERS", "two"),
        ("JOBS_WORKERS", "1.5"),
        ("JOBS_SSE_RETRY_MS", "-1"),
        ("JOBS_SUBSCRIBER_BACKLOG", "0"),
        ("JOBS_SEND_TIMEOUT", "0"),
        ("JOBS_MAX_BODY_BYTES", "0"),
        ("JOBS_SHUTDOWN_TIMEOUT", "-1"),
        ("JOBS_MAX_HEADER_BYTES", "100"),
        ("JOBS_MAX_HEADERS", "0"),
        ("JOBS_HEADER_TIMEOUT", "0"),
        ("JOBS_BODY_TIMEOUT", "never"),
        ("JOBS_MAX_CONNECTIONS", "0"),
        ("JOBS_ALLOWED_HOSTS", "https://jobs.example.com"),
        ("JOBS_ALLOWED_HOSTS", "jobs.example.com:8000"),
        ("JOBS_ALLOWED_HOSTS", "jobs.*.com"),
        ("JOBS_SNAPSHOT_RATE", "0"),
        ("JOBS_STALE_TTL", "-1"),
        ("JOBS_STALE_TTL", "an hour"),
        ("JOBS_STALE_TTL", "inf"),
        ("JOBS_API_KEY", "hunter2"),
        ("JOBS_API_KEY", "x" * 31),
        ("JOBS_FORWARDED_ALLOW_IPS", "127.0.0.l"),
        ("JOBS_FORWARDED_ALLOW_IPS", "127.0.0.1/33"),
        ("JOBS_FORWARDED_ALLOW_IPS", "127.0.0.1;::1"),
        ("JOBS_FORWARDED_ALLOW_IPS", "proxy.example.com"),
        ("JOBS_FORWARDED_ALLOW_IPS", "::1,*"),
    ],
)
def test_invalid_value_names_the_variable(name: str, value: str) -> None:
    """Each invalid value raises SettingsError whose message names the variable."""
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("10.0.0.5", "10.0.0.5"),
        (" 10.0.0.0/24 , fd00::/8 ", "10.0.0.0/24,fd00::/8"),
        ("127.0.0.1/8,10.0.0.5/32", "127.0.0.0/8,10.0.0.5/32"),
        ("0:0:0:0:0:0:0:1", "::1"),
        ("*", "*"),
        ("", "127.0.0.1,::1"),
    ],
)
def test_forwarded_allow_ips_takes_addresses_and_networks(value: str, expected: str) -> None:
    """Proxies are addresses or networks (or * for every peer); empty is the default."""
    assert Settings.from_env({"JOBS_FORWARDED_ALLOW_IPS": value}).forwarded_allow_ips == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [("1", True), ("yes", True), ("ON", True), ("0", False), ("false", False), ("", None)],
)
def test_demo_flag_is_parsed(value: str, expected: bool | None) -> None:
    """JOBS_DEMO accepts the usual yes/no words; empty leaves the choice to the backend."""
    assert Settings.from_env({"JOBS_DEMO": value}).demo is expected


def test_demo_defaults_follow_the_backend() -> None:
    """The demo panel is on by default with memory, off with Redis, and JOBS_DEMO overrides."""
    assert Settings().demo_enabled is True
    assert Settings(backend="redis").demo_enabled is False
    assert Settings(demo=False).demo_enabled is False
    assert Settings(backend="redis", demo=True).demo_enabled is True


def test_a_redis_url_without_a_backend_is_refused() -> None:
    """JOBS_REDIS_URL alone would be ignored (memory is the default): start-up says so, and
    an explicit JOBS_BACKEND takes either choice."""
    url = {"JOBS_REDIS_URL": "redis://cache:6379/0"}
    with pytest.raises(SettingsError, match="JOBS_REDIS_URL is set but JOBS_BACKEND is not"):
        Settings.from_env(url)
    assert Settings.from_env({**url, "JOBS_BACKEND": "memory"}).backend == "memory"
    assert Settings.from_env({**url, "JOBS_BACKEND": "redis"}).backend == "redis"


@pytest.mark.parametrize("url", ["localhost:6379", "http://127.0.0.1:6379/0", "not a url"])
def test_invalid_redis_url_names_the_variable(url: str) -> None:
    """With the Redis backend, a JOBS_REDIS_URL that is not a redis URL is refused by name."""
    with pytest.raises(SettingsError, match="JOBS_REDIS_URL"):
        Settings.from_env({"JOBS_BACKEND": "redis", "JOBS_REDIS_URL": url})


def test_settings_error_is_a_value_error() -> None:
    """SettingsError is a ValueError, so generic config handling catches it."""
    assert issubclass(SettingsError, ValueError)


@pytest.mark.parametrize(
    "build",
    [
        lambda: Settings.from_env({"JOBS_WORKERS": "2"}),
        lambda: Settings.from_env({"JOBS_WORKERS": "8", "JOBS_BACKEND": "memory"}),
        lambda: Settings(workers=2),
    ],
    ids=["env", "env-explicit-memory", "constructor"],
)
def test_several_workers_with_memory_backend_refused(build: Callable[[], Settings]) -> None:
    """More than one worker on the memory backend is refused with a message pointing to Redis."""
    with pytest.raises(SettingsError) as caught:
        build()
    message = str(caught.value)
    assert "JOBS_WORKERS" in message
    assert "JOBS_BACKEND=redis" in message


def test_several_workers_with_redis_backend_allowed() -> None:
    """More than one worker is fine once the backend is Redis."""
    settings = Settings.from_env({"JOBS_WORKERS": "4", "JOBS_BACKEND": "redis"})
    assert (settings.workers, settings.backend) == (4, "redis")


def test_cli_refuses_several_memory_workers_before_serving(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`python -m app` with JOBS_WORKERS=2 on memory exits with the message and never serves."""
    served: list[object] = []
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: served.append(args))
    monkeypatch.setenv("JOBS_WORKERS", "2")
    monkeypatch.delenv("JOBS_BACKEND", raising=False)
    with pytest.raises(SystemExit) as caught:
        cli.main()
    assert "JOBS_BACKEND=redis" in str(caught.value.code)
    assert served == []


def test_a_short_api_key_says_how_to_make_a_good_one() -> None:
    """A key under 32 characters stops start-up with the command that prints a good one."""
    with pytest.raises(SettingsError, match="at least 32 characters") as refused:
        Settings.from_env({"JOBS_API_KEY": f"{SECRET},hunter2"})
    assert "jobcast keygen" in str(refused.value)
