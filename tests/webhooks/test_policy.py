"""Who gets which events: the webhook settings, a job's own `webhookUrl` and its host
list, and what bad values get back."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from app import jobs
from app.main import create_app
from app.models import NewJob
from app.settings import Settings, SettingsError
from app.webhooks.policy import Endpoint, endpoints, host_listing, wanted
from tests.conftest import local_client

from .receiver import SECRET

HOSTS = "hooks.example.com, *.partner.example, 10.0.0.5, [fd00::5]"


def settings(**values: Any) -> Settings:
    return Settings(webhook_secret=SECRET, **values)


@pytest.fixture
def client() -> Iterator[TestClient]:
    configured = Settings.from_env({"JOBS_WEBHOOK_HOSTS": HOSTS, "JOBS_WEBHOOK_SECRET": SECRET})
    with local_client(create_app(configured)) as test_client:
        yield test_client


# -- settings --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("JOBS_WEBHOOK_URLS", "hooks.example.com/x"),
        ("JOBS_WEBHOOK_URLS", "ftp://hooks.example.com/x"),
        ("JOBS_WEBHOOK_URLS", "https://user:pw@hooks.example.com/x"),
        ("JOBS_WEBHOOK_URLS", "https:///x"),
        ("JOBS_WEBHOOK_HOSTS", "https://hooks.example.com"),
        ("JOBS_WEBHOOK_HOSTS", "hooks.example.com:8443"),
        ("JOBS_WEBHOOK_HOSTS", "*"),
        ("JOBS_WEBHOOK_HOSTS", "hooks.*.com"),
        ("JOBS_WEBHOOK_SECRET", "not-a-secret"),
        ("JOBS_WEBHOOK_SECRET", "whsec_c2hvcnQ="),  # 5 bytes
        ("JOBS_WEBHOOK_SECRET", "whsec_!!!!notbase64!!!!notbase64!!!!"),
        ("JOBS_WEBHOOK_SECRET", f"{SECRET},not-a-secret"),  # each of several is checked
        ("JOBS_WEBHOOK_SECRET", f"{SECRET},"),
        ("JOBS_WEBHOOK_EVENTS", "some"),
        ("JOBS_WEBHOOK_RETRY_FOR", "0"),
        ("JOBS_WEBHOOK_RETRY_FOR", "a day"),
        ("JOBS_WEBHOOK_TIMEOUT", "0"),
        ("JOBS_WEBHOOK_TIMEOUT", "301"),
        ("JOBS_WEBHOOK_BACKOFF_MAX", "0"),
    ],
)
def test_a_bad_webhook_setting_names_its_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value, "JOBS_WEBHOOK_SECRET": SECRET} | {name: value})


@pytest.mark.parametrize("name", ["JOBS_WEBHOOK_URLS", "JOBS_WEBHOOK_HOSTS"])
def test_webhooks_without_a_secret_say_how_to_make_one(name: str) -> None:
    value = "https://hooks.example.com/x" if name.endswith("URLS") else "hooks.example.com"
    with pytest.raises(SettingsError, match="jobcast keygen --webhook-secret"):
        Settings.from_env({name: value})


def test_webhook_settings_are_read() -> None:
    read = Settings.from_env(
        {
            "JOBS_WEBHOOK_URLS": "https://a.example/hook, http://b.example:8080/x?y=1",
            "JOBS_WEBHOOK_SECRET": SECRET,
            "JOBS_WEBHOOK_EVENTS": "ALL",
            "JOBS_WEBHOOK_HOSTS": "Hooks.Example.com, *.Partner.example",
            "JOBS_WEBHOOK_RETRY_FOR": "3600",
        }
    )
    assert read.webhook_urls == ("https://a.example/hook", "http://b.example:8080/x?y=1")
    assert read.webhook_events == "all"
    assert read.webhook_hosts == ("hooks.example.com", "*.partner.example")
    assert read.webhook_retry_for == 3600
    assert read.webhooks
    assert SECRET not in repr(read)


def test_webhooks_are_off_by_default() -> None:
    defaults = Settings.from_env({})
    assert not defaults.webhooks
    assert (defaults.webhook_events, defaults.webhook_retry_for) == ("terminal", 86_400)


# -- which events, where ------------------------------------------------------------


def test_only_terminal_states_are_wanted_by_default() -> None:
    job = jobs.create(NewJob(), jobs.now())
    hooked = settings(webhook_urls=("https://a.example/h",))
    assert not wanted(job, hooked)
    assert wanted(job, settings(webhook_urls=("https://a.example/h",), webhook_events="all"))
    assert not wanted(job, settings(webhook_events="all"))  # nowhere to send it


def test_endpoints_are_the_operators_then_the_jobs_own() -> None:
    own = "https://x.partner.example/done"
    job = jobs.create(NewJob(webhook_url=own), jobs.now())
    found = endpoints(
        job, settings(webhook_urls=("https://a.example/h",), webhook_hosts=("*.partner.example",))
    )
    assert found == [
        Endpoint("https://a.example/h"),
        Endpoint(own, guarded=True, listed_exactly=False),
    ]
    # A host taken off the list since: the job's own URL is dropped, not called.
    assert endpoints(job, settings(webhook_hosts=("hooks.example.com",))) == []


@pytest.mark.parametrize(
    "own",
    [
        "https://x.partner.example/done",
        "https://x.partner.example/done?",  # an empty query asks for the same
        "https://x.partner.example/done#part",  # a fragment is never sent
        "HTTPS://X.Partner.Example:443/done",
    ],
)
def test_a_jobs_own_url_that_is_the_operators_gets_each_event_once(own: str) -> None:
    operators = "https://x.partner.example/done"
    job = jobs.create(NewJob(webhook_url=own), jobs.now())
    both = settings(webhook_urls=(operators,), webhook_hosts=("*.partner.example",))
    assert endpoints(job, both) == [Endpoint(operators)]
    other = jobs.create(NewJob(webhook_url=operators + "?id=1"), jobs.now())
    assert len(endpoints(other, both)) == 2, "another query is another endpoint"


@pytest.mark.parametrize(
    ("host", "listing"),
    [
        ("hooks.example.com", True),
        ("HOOKS.example.com.", True),
        ("a.partner.example", False),
        ("a.b.partner.example", False),
        ("partner.example", None),
        ("evilpartner.example", None),
        ("10.0.0.5", True),
        ("fd00:0::5", True),
        ("10.0.0.6", None),
    ],
)
def test_host_listing(host: str, listing: bool | None) -> None:
    hosts = tuple(part.strip() for part in HOSTS.split(","))
    assert host_listing(host, hosts) is listing


# -- a job's own URL through the API ------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.com/jobs/42",
        "http://a.partner.example:8080/x?token=1",
        "http://10.0.0.5/hook",
        "http://[fd00::5]:9000/hook",
    ],
)
def test_a_url_on_the_host_list_is_taken(client: TestClient, url: str) -> None:
    response = client.post("/api/jobs", json={"webhookUrl": url})
    assert response.status_code == 201, response.text
    job = client.get(f"/api/jobs/{response.json()['jobId']}").json()
    assert job["webhookUrl"] == url


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("https://evil.example/steal", "not on this server's JOBS_WEBHOOK_HOSTS"),
        ("http://127.0.0.1:6379/", "not on this server's JOBS_WEBHOOK_HOSTS"),
        ("http://169.254.169.254/latest/meta-data", "not on this server's JOBS_WEBHOOK_HOSTS"),
        ("http://partner.example/x", "not on this server's JOBS_WEBHOOK_HOSTS"),
        ("http://hooks.example.com:99999/x", "valid host and port"),
        ("http://hooks.example.com:0/x", "valid host and port"),
        ("https://[hooks.example.com/x", "valid host and port"),  # an unclosed IPv6 bracket
        # Names no lookup takes: a label over 63 characters, an empty one, an address with
        # a dot after it (each failed every delivery with a traceback).
        (f"http://{'a' * 64}.partner.example/x", "1 to 63 characters long"),
        ("http://b..partner.example/x", "1 to 63 characters long"),
        ("http://10.0.0.5./hook", "an address has no dot after it"),
        ("ftp://hooks.example.com/x", "absolute http:// or https:// URL"),
        ("https://user@hooks.example.com/x", "absolute http:// or https:// URL"),
        ("hooks.example.com/x", "absolute http:// or https:// URL"),
        ("https://hooks.example.com/" + "x" * 2100, "at most 2048"),
        # Control characters would reach log lines as they are (a forged line, say).
        ("https://hooks.example.com/\x1b[2KWARNING:forged", "absolute http:// or https:// URL"),
        ("https://hooks.example.com/\x9b2K", "absolute http:// or https:// URL"),  # C1 CSI
        ("https://hooks.example.com\x7f/x", "absolute http:// or https:// URL"),
    ],
)
def test_a_url_off_the_host_list_or_malformed_is_422(
    client: TestClient, url: str, why: str
) -> None:
    before = client.get("/api/jobs").json()
    response = client.post("/api/jobs", json={"webhookUrl": url})
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert [error["field"] for error in problem["errors"]] == ["webhookUrl"]
    assert why in problem["detail"] or why in problem["errors"][0]["message"]
    assert client.get("/api/jobs").json() == before


def test_a_server_without_a_host_list_refuses_every_own_url() -> None:
    with local_client(create_app(Settings())) as client:
        response = client.post("/api/jobs", json={"webhookUrl": "https://hooks.example.com/x"})
    assert response.status_code == 422
    assert "JOBS_WEBHOOK_HOSTS" in response.json()["detail"]
