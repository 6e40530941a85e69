"""``jobcast``: serve Jobcast, or create, change, read, list and watch jobs from a shell.

    jobcast serve --port 8000
    JOB=$(jobcast create --type file_processing --message "Upload queued")
    jobcast update $JOB --status processing --progress 45 --message "Extracting..."
    jobcast watch $JOB            # a live progress bar; exit 0 on completed, 1 on error
    jobcast complete $JOB --document-id doc_123abc
    export JOBS_API_KEY=$(jobcast keygen)   # a new random secret; no server needed

The job commands take ``--json`` (one JSON object per line) for scripts.
Errors print one line to stderr (the server's reason), then one indented
line per offending field when several were refused: exit status 2 for a
usage error, 1 for anything else.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import sys
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn
from rich.table import Table

from app.__main__ import main as serve_main
from app.client import DEFAULT_URL, JobsClient, RetryPolicy
from app.errors import InvalidJobData, JobsError
from app.models import JOB_STATUSES, JOB_TYPES, Job, encode
from app.settings import Settings

F = TypeVar("F", bound=Callable[..., Any])

_STATUS_STYLE = {"queued": "yellow", "processing": "cyan", "completed": "green", "error": "red"}

# What each setting does, for `jobcast serve --help`; the flag is the field's name.
_SETTING_HELP = {
    "host": "Interface to listen on.",
    "port": "Port to listen on.",
    "backend": "Where jobs live: memory (one process) or redis.",
    "redis_url": "The Redis server (with --backend redis).",
    "redis_prefix": "Prefix of every Redis key (one per deployment).",
    "redis_feed_length": "Changes kept in the Redis stream for resuming.",
    "redis_timeout": "Seconds for a Redis connect or reply before 503.",
    "terminal_ttl": "Seconds a finished job is kept.",
    "tombstone_ttl": "Seconds a cleaned-up id answers 410.",
    "max_tombstones": "Cap on remembered cleaned-up ids.",
    "heartbeat": "Seconds between SSE ': ping' comments.",
    "workers": "Worker processes (more than 1 needs --backend redis).",
    "api_key": "API key(s), comma-separated; prefer the environment variable.",
    "allow_anonymous": "Serve without an API key on a non-loopback host.",
    "token_secret": "Signs read tokens; prefer the environment variable.",
    "token_ttl": "Default lifetime of a read token, in seconds.",
    "cors_origins": "Origins allowed to call the API from a browser, comma-separated.",
    "cors_credentials": "Allow credentialed cross-origin requests.",
    "sse_retry_ms": "The 'retry:' sent to EventSource clients, in ms.",
    "subscriber_backlog": "Jobs a connection may fall behind on before it is cut.",
    "send_timeout": "Seconds a socket may accept nothing before it is cut.",
    "max_body_bytes": "Request body limit (413 above it).",
    "shutdown_timeout": "Seconds open connections get to finish on shutdown.",
    "demo": "The demo panel's routes (default: on with memory).",
    "max_metadata_bytes": "Largest metadata of a job, in bytes of JSON.",
    "max_text_length": "Longest message or error, in characters.",
    "ws_max_frame_bytes": "Largest WebSocket frame accepted.",
    "ws_max_subscriptions": "Subscriptions one WebSocket may hold.",
    "ws_rate": "WebSocket frames a client may send per second.",
    "max_streams": "Open SSE and WebSocket streams one process allows.",
    "access_log": "One log line per request (uvicorn's access log).",
    "ws_compression": "Offer permessage-deflate to WebSocket clients (memory and CPU per socket).",
}


def setting_variable(name: str) -> str:
    """The environment variable of a :class:`Settings` field."""
    return "JOBS_" + name.upper()


def _setting_options(command: F) -> F:
    """One ``serve`` flag per field of :class:`Settings`, so none can be forgotten."""
    defaults, types = Settings(), typing.get_type_hints(Settings)
    for field in reversed(dataclasses.fields(Settings)):
        variable = setting_variable(field.name)
        flag = "--" + field.name.replace("_", "-")
        help_text = f"{_SETTING_HELP.get(field.name, '')} [{variable}]".strip()
        if types[field.name] in (bool, bool | None):
            option = click.option(
                f"{flag}/--no-{flag[2:]}", field.name, default=None, help=help_text
            )
        else:
            default = getattr(defaults, field.name)
            shown = f" (default: {default})" if default not in (None, ()) else ""
            option = click.option(flag, field.name, metavar="VALUE", help=help_text + shown)
        command = option(command)
    return command


@dataclass(frozen=True)
class _Options:
    url: str
    api_key: str | None
    retries: int


def _check_url(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise click.BadParameter(f"{value!r} is not an http:// or https:// URL")
    return value


def _json_object(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    if value is None:
        return None
    try:
        parsed = json.loads(value)
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        raise click.BadParameter(f"{value!r} is not a JSON object")
    return parsed


json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print JSON for scripts (one object per line)."
)


def _client() -> JobsClient:
    """A client for the global options, closed when the command ends."""
    ctx = click.get_current_context()
    options = ctx.find_object(_Options)
    assert options is not None
    client = JobsClient(
        options.url, api_key=options.api_key, retry=RetryPolicy(retries=options.retries)
    )
    return ctx.with_resource(client)


def _out() -> Console:
    return Console(highlight=False, soft_wrap=True)


def _status(job: Job) -> str:
    return f"[{_STATUS_STYLE[job.status]}]{job.status}[/]"


def _percent(job: Job) -> str:
    return f"{job.progress:g}%"


def _show(job: Job, as_json: bool) -> None:
    """One line per job: its JSON, or a summary for people."""
    if as_json:
        click.echo(encode(job).decode())
        return
    extra = f"  document {job.document_id}" if job.document_id else ""
    extra += f"  error: {job.error}" if job.error else ""
    _out().print(f"{job.job_id}  {_status(job)}  {_percent(job)}  {job.message}{extra}")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--url",
    envvar="JOBCAST_URL",
    default=DEFAULT_URL,
    show_default=True,
    callback=_check_url,
    help="The Jobcast server [JOBCAST_URL].",
)
@click.option("--api-key", envvar="JOBS_API_KEY", help="Sent as a Bearer token [JOBS_API_KEY].")
@click.option(
    "--retries",
    type=click.IntRange(min=0),
    default=3,
    show_default=True,
    help="Retries on connection errors and 503.",
)
@click.version_option(package_name="jobcast", prog_name="jobcast")
@click.pass_context
def cli(ctx: click.Context, url: str, api_key: str | None, retries: int) -> None:
    """Jobcast: track long-running jobs and watch them live."""
    ctx.obj = _Options(url, api_key or None, retries)


@cli.command()
@_setting_options
def serve(**settings: str | bool | None) -> None:
    """Run the server (as `make run`); each flag sets its JOBS_* variable."""
    for name, value in settings.items():
        if value is not None:
            text = ("1" if value else "0") if isinstance(value, bool) else value
            os.environ[setting_variable(name)] = text
    serve_main()


@cli.command()
@click.option("--type", "-t", "job_type", type=click.Choice(JOB_TYPES), default="generic")
@click.option("--message", "-m", default="", help="The first message.")
@click.option(
    "--metadata", callback=_json_object, help='A JSON object, e.g. \'{"fileName": "a.pdf"}\'.'
)
@click.option("--idempotency-key", help="Retrying with the same key never makes a second job.")
@json_option
def create(
    job_type: Any, message: str, metadata: Any, idempotency_key: str | None, as_json: bool
) -> None:
    """Create a job; print its id (or the whole job with --json)."""
    job = _client().create_job(
        job_type=job_type, message=message, metadata=metadata, idempotency_key=idempotency_key
    )
    click.echo(encode(job).decode() if as_json else job.job_id)


@cli.command()
@click.argument("job_id")
@click.option("--status", "-s", type=click.Choice(JOB_STATUSES))
@click.option("--progress", "-p", type=float, help="0 to 100.")
@click.option("--message", "-m")
@click.option("--metadata", callback=_json_object, help="A JSON object, merged into the job's.")
@json_option
def update(
    job_id: str,
    status: Any,
    progress: float | None,
    message: str | None,
    metadata: Any,
    as_json: bool,
) -> None:
    """Report progress: change a job's status, progress, message or metadata."""
    job = _client().update_job_with_notification(
        job_id, status=status, progress=progress, message=message, metadata=metadata
    )
    _show(job, as_json)


@cli.command()
@click.argument("job_id")
@click.option("--document-id", "-d", help="The document the job produced.")
@click.option("--message", "-m", help="Default: Completed.")
@json_option
def complete(job_id: str, document_id: str | None, message: str | None, as_json: bool) -> None:
    """Mark a job completed (progress 100)."""
    _show(_client().complete_job(job_id, document_id, message), as_json)


@cli.command()
@click.argument("job_id")
@click.argument("error")
@click.option("--message", "-m", help="Default: Processing failed.")
@json_option
def fail(job_id: str, error: str, message: str | None, as_json: bool) -> None:
    """Mark a job failed with ERROR."""
    _show(_client().fail_job(job_id, error, message), as_json)


@cli.command()
@click.argument("job_id")
@json_option
def get(job_id: str, as_json: bool) -> None:
    """Show a job."""
    job = _client().get_job(job_id)
    if as_json:
        click.echo(encode(job).decode())
        return
    table = Table.grid(padding=(0, 2))
    wire = json.loads(encode(job))
    for name, value in wire.items():
        shown = _status(job) if name == "status" else value
        table.add_row(f"[bold]{name}[/]", shown if isinstance(shown, str) else json.dumps(shown))
    _out().print(table)


@cli.command(name="list")
@click.option("--status", "-s", type=click.Choice(JOB_STATUSES))
@click.option("--type", "-t", "job_type", type=click.Choice(JOB_TYPES))
@click.option("--limit", "-n", type=click.IntRange(min=1), help="At most this many (default: all).")
@json_option
def list_(status: Any, job_type: Any, limit: int | None, as_json: bool) -> None:
    """List jobs, newest first."""
    jobs = _client().list_jobs(status=status, job_type=job_type, limit=limit)
    if as_json:
        for job in jobs:
            click.echo(encode(job).decode())
        return
    table = Table(box=None)
    for column in ("job", "type", "status", "progress"):
        table.add_column(column, no_wrap=True)
    table.add_column("message", overflow="fold")
    for job in jobs:
        table.add_row(job.job_id, job.job_type, _status(job), _percent(job), job.message)
    if table.row_count:
        _out().print(table)
    else:
        click.echo("no jobs", err=True)


@cli.command()
@click.argument("job_id")
@json_option
@click.pass_context
def watch(ctx: click.Context, job_id: str, as_json: bool) -> None:
    """Follow a job live until it ends; exit 0 if it completed, 1 if it failed."""
    states = _client().watch(job_id)
    last: Job | None = None
    if as_json:
        for last in states:
            click.echo(encode(last).decode())
    else:
        columns = (
            TextColumn("{task.fields[status]}"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("{task.description}"),
        )
        with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
            task = bar.add_task("connecting...", total=100, status="")
            for last in states:
                bar.update(
                    task, completed=last.progress, description=last.message, status=_status(last)
                )
        if last is not None:
            _show(last, as_json=False)
    ctx.exit(0 if last is not None and last.status == "completed" else 1)


@cli.command()
@click.option(
    "--count",
    "-n",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="How many secrets to print.",
)
def keygen(count: int) -> None:
    """Print a new random secret for JOBS_API_KEY or JOBS_TOKEN_SECRET, one per line."""
    for _ in range(count):
        click.echo(secrets.token_urlsafe(32))


def main(argv: Sequence[str] | None = None) -> None:
    """The ``jobcast`` console script."""
    try:
        code = cli.main(args=argv, prog_name="jobcast", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:
        exc.show()
        sys.exit(2)
    except click.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx is not None else "jobcast"
        _fail(f"{where}: {exc.format_message()} (see: {where} --help)", 2)
    except click.ClickException as exc:
        _fail(f"jobcast: error: {exc.format_message()}", exc.exit_code)
    except click.Abort:
        _fail("jobcast: interrupted", 130)
    except JobsError as exc:
        _fail(_error_lines(exc), 1)
    sys.exit(code if isinstance(code, int) else 0)


def _error_lines(exc: JobsError) -> str:
    """The server's reason; then each refused field, when there are several."""
    lines = [f"jobcast: error: {exc}"]
    if isinstance(exc, InvalidJobData) and len(exc.errors) > 1:
        lines += [f"  {error.field}: {error.message}" for error in exc.errors]
    return "\n".join(lines)


def _fail(message: str, code: int) -> NoReturn:
    click.echo(message, err=True)
    sys.exit(code)


if __name__ == "__main__":
    main()
