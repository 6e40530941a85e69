"""Which job events are delivered, and where: the operator's endpoints for every job,
and a job's own ``webhookUrl`` when its host is on JOBS_WEBHOOK_HOSTS.

A job's own URL is someone else's input, so it is held to the list twice: when
the job is created (``422`` otherwise) and when each delivery connects (the name
may resolve elsewhere by then; see :mod:`app.webhooks.sender`).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

from app.errors import FieldError, InvalidJobData
from app.models import Job
from app.settings import Settings
from app.validation import describe


@dataclass(frozen=True, slots=True)
class Endpoint:
    url: str
    # A job's own URL: only public addresses, unless its host is listed by name or address.
    guarded: bool = False
    # Its host is on JOBS_WEBHOOK_HOSTS exactly (not through a wildcard).
    listed_exactly: bool = False


def wanted(job: Job, settings: Settings) -> bool:
    """Whether this state of ``job`` is an event to deliver anywhere."""
    if not (settings.webhook_urls or job.webhook_url):
        return False
    return settings.webhook_events == "all" or job.is_terminal


def endpoints(job: Job, settings: Settings) -> list[Endpoint]:
    """Where ``job``'s events go: the operator's endpoints, then the job's own (unless it
    is one of the operator's, which gets each event once)."""
    found = [Endpoint(url) for url in settings.webhook_urls]
    own = job.webhook_url
    if own and request_of(own) not in {request_of(url) for url in settings.webhook_urls}:
        listing = host_listing(urlsplit(own).hostname or "", settings.webhook_hosts)
        if listing is not None:  # a list shortened since the job was created drops it
            found.append(Endpoint(own, guarded=True, listed_exactly=listing))
    return found


def request_of(url: str) -> tuple[str, str, int, str, str]:
    """What a POST to ``url`` asks for, however the URL spells it: the scheme, host and
    port as compared, the path, and the query (a fragment is never sent)."""
    parts = urlsplit(url)  # scheme and hostname in lower case
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return parts.scheme, _canonical(parts.hostname or ""), port, parts.path or "/", parts.query


def check_job_url(url: str | None, settings: Settings) -> None:
    """Refuse (``422``) a job's own ``webhookUrl`` whose host is not on JOBS_WEBHOOK_HOSTS."""
    if url is None:
        return
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # an unclosed [ (an IPv6 address), a port that is not a number
        parts, port = urlsplit(""), -1
    if port == -1 or port == 0 or not parts.hostname:
        reason = "is not a URL with a valid host and port"
    elif (unfit := _why_no_lookup(parts.hostname)) is not None:
        reason = f"has a host no lookup takes: {unfit}"
    elif not settings.webhook_hosts:
        reason = "cannot be used: this server delivers to no job's own URL (JOBS_WEBHOOK_HOSTS)"
    elif host_listing(parts.hostname, settings.webhook_hosts) is None:
        reason = (
            f"points to {parts.hostname}, which is not on this server's JOBS_WEBHOOK_HOSTS; "
            "use a host on it, or ask the operator to add yours"
        )
    else:
        return
    errors = [FieldError("webhookUrl", reason)]
    raise InvalidJobData(describe(errors), errors)


def host_listing(host: str, hosts: tuple[str, ...]) -> bool | None:
    """How ``host`` is on ``hosts``: True exactly, False through a ``*.`` wildcard, None not."""
    host = _canonical(host)
    if host in (_canonical(listed) for listed in hosts):
        return True
    for listed in hosts:
        if listed.startswith("*.") and host.endswith(listed[1:]):
            return False
    return None


def _why_no_lookup(host: str) -> str | None:
    """Why ``host`` cannot be looked up, if it cannot: a name needs each of its labels 1 to
    63 characters, and an address with a dot after it names nothing."""
    try:
        ipaddress.ip_address(host)
        return None
    except ValueError:
        pass
    try:
        ipaddress.ip_address(host.rstrip("."))
        return "an address has no dot after it"
    except ValueError:
        pass
    try:
        host.encode("idna")
    except UnicodeError:
        return (
            "a name needs each part between dots 1 to 63 characters long, "
            "of letters, digits and hyphens"
        )
    return None


def _canonical(host: str) -> str:
    """A host as compared: lower case, an address in its one written form."""
    host = host.lower().strip("[]").rstrip(".")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host
