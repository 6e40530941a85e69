"""``jobcast``: create, change, cancel, delete, read, list and watch jobs, append to and
follow their output, and mint read tokens, from a shell.

    JOB=$(jobcast create --type file_processing --message "Upload queued")
    jobcast update $JOB --status processing --progress 45 --message "Extracting..."
    jobcast watch $JOB            # live; exit 0 on completed, 1 on error
    make 2>&1 | jobcast append $JOB --kind log   # each line a chunk of the job's output
    jobcast tail $JOB             # its output so far, then as it comes, until it ends
    jobcast complete $JOB --document-id doc_123abc
    jobcast cancel $JOB --reason "not needed"   # asks its worker to stop (--force: ends it)
    jobcast delete $JOB           # removes it now; prints nothing
    jobcast token --job $JOB --ttl 600      # a read token for a browser
    export JOBS_API_KEY=$(jobcast keygen)   # a new random secret; no server needed
    jobcast serve --port 8000     # hands over to jobcast-server, if it is installed

The job commands take ``--json`` (one JSON object per line) for scripts,
after the command or before it (``jobcast --json get $JOB``). Errors print
one line to stderr (the server's reason), then one indented line per
offending field when several were refused: exit status 2 for a usage error,
1 for anything else.

Its only dependency beyond the client's is click, imported when the command
runs, never by ``import jobcast_client``. Colours come from ``click.style``
(left out when the output is not a terminal) and ``watch`` draws its own
one-line progress bar on stderr, so the command needs nothing else (no rich).
"""

from __future__ import annotations

import base64
import io
import json
import math
import os
import re
import secrets
import shutil
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import IO, Any, NoReturn, TypeVar

import click
import httpx2

from ._client import JobsClient
from ._core import DEFAULT_URL
from ._exceptions import InvalidJobData, JobcastError
from ._models import JOB_STATUSES, JOB_TYPES, Job, OutputChunk
from ._retry import RetryPolicy

F = TypeVar("F", bound=Callable[..., Any])

SERVER_COMMAND = "jobcast-server"
_STATUS_COLOUR = {"queued": "yellow", "processing": "cyan", "completed": "green", "error": "red"}


@dataclass(frozen=True)
class _Options:
    url: str
    api_key: str | None
    retries: int
    as_json: bool


def _check_url(ctx: click.Context, param: click.Parameter, value: str) -> str:
    try:
        host = httpx2.URL(value).host if value.startswith(("http://", "https://")) else ""
    except httpx2.InvalidURL:
        host = ""
    if not host:
        raise click.BadParameter(f"{value!r} is not an http:// or https:// URL with a host")
    return value


def _finite(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    if value is not None and not math.isfinite(value):
        raise click.BadParameter(f"{value} is not a finite number")
    return value


def _strict_json(text: str) -> Any:
    """``text`` as JSON, which has no NaN or Infinity (Python's reader takes them, and
    reads a number too large for a float, 1e999, as infinity)."""

    def refuse(constant: str) -> Any:
        raise ValueError(f"{constant} is not JSON")

    def number(digits: str) -> float:
        value = float(digits)
        if not math.isfinite(value):
            raise ValueError(f"{digits} is too large a number")
        return value

    return json.loads(text, parse_constant=refuse, parse_float=number)


def _json_object(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    if value is None:
        return None
    try:
        parsed = _strict_json(value)
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        raise click.BadParameter(f"{value!r} is not a JSON object")
    return parsed


def json_option(command: F) -> F:
    return click.option(
        "--json", "as_json", is_flag=True, help="Print JSON for scripts (one object per line)."
    )(command)


def _options() -> _Options:
    options = click.get_current_context().find_object(_Options)
    assert options is not None
    return options


def _wants_json(as_json: bool) -> bool:
    """--json after the command, or before it."""
    return as_json or _options().as_json


def _client() -> JobsClient:
    """A client for the global options, closed when the command ends."""
    options = _options()
    client = JobsClient(
        options.url, api_key=options.api_key, retry=RetryPolicy(retries=options.retries)
    )
    return click.get_current_context().with_resource(client)


def _dumps(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def _status(job: Job) -> str:
    return click.style(job.status, fg=_STATUS_COLOUR.get(job.status))


def _percent(job: Job) -> str:
    return f"{job.progress:g}%"


# What surrogateescape makes of a byte that is not UTF-8.
_SURROGATE = re.compile(r"[\udc80-\udcff]")
# Control characters but newline and tab: C0, DEL and C1.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# Every control character: C0 (newline and tab too), DEL and C1.
_ANY_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _cancel_note(job: Job) -> str:
    """``cancel requested`` (with its reason) once someone asked the job to stop; else empty."""
    if not job.cancel_requested:
        return ""
    reason = job.cancel_reason
    note = "cancel requested" + (f": {_one_line(reason)}" if reason else "")
    return click.style(note, fg="magenta")


def _escaped(controls: re.Pattern[str], text: str) -> str:
    """``text`` with the characters ``controls`` matches shown as ``\\xNN``."""
    return controls.sub(lambda found: f"\\x{ord(found[0]):02x}", text)


def _one_line(text: str) -> str:
    """A job's text as a line for people: every control character shown escaped. A job's
    text is anyone's (who may write it): a newline would break the line a job gets, an
    escape sequence would drive the terminal."""
    return _escaped(_ANY_CONTROL, text)


def _summary(job: Job) -> str:
    extra = f"  document {_one_line(job.document_id)}" if job.document_id else ""
    extra += f"  error: {_one_line(job.error)}" if job.error else ""
    extra += f"  {_cancel_note(job)}" if job.cancel_requested else ""
    return f"{job.job_id}  {_status(job)}  {_percent(job)}  {_one_line(job.message)}{extra}"


def _listed_message(job: Job) -> str:
    """The message column of ``list``: the cancel request first, when there is one."""
    return "  ".join(part for part in (_cancel_note(job), _one_line(job.message)) if part)


def _show(job: Job, as_json: bool) -> None:
    """One line per job: its JSON, or a summary for people."""
    click.echo(_dumps(job.to_wire()) if as_json else _summary(job))


def _table(rows: Iterable[Sequence[str]], header: Sequence[str] | None = None) -> None:
    """Columns padded to their widest cell (the last one is not padded); styles kept."""
    lines = [list(header)] if header else []
    lines += [list(row) for row in rows]
    if not lines:
        return
    widths = [max(len(click.unstyle(line[i])) for line in lines) for i in range(len(lines[0]))]
    for number, line in enumerate(lines):
        cells = [
            cell + " " * (width - len(click.unstyle(cell)))
            for cell, width in zip(line[:-1], widths, strict=False)
        ]
        text = "  ".join([*cells, line[-1]])
        click.echo(click.style(text, bold=True) if header and number == 0 else text)


class _ProgressLine:
    """A one-line progress bar redrawn in place on a terminal; nothing elsewhere."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self._live = stream.isatty()
        self._drawn = False

    def show(self, job: Job) -> None:
        if not self._live:
            return
        try:
            columns = os.get_terminal_size(self._stream.fileno()).columns
        except (OSError, ValueError):
            columns = 0
        columns = columns or 80  # a terminal that does not say its size (a fresh pty)
        done = round(max(0.0, min(job.progress, 100.0)) * 30 / 100)
        bar = "#" * done + "-" * (30 - done)
        head = f"{job.status:<10} [{bar}] {_percent(job):>5}  "
        if job.cancel_requested:
            head += "cancel requested  "
        message = _one_line(job.message)[: max(0, columns - len(head) - 1)]
        styled = click.style(f"{job.status:<10}", fg=_STATUS_COLOUR.get(job.status)) + head[10:]
        click.echo(f"\r\x1b[2K{styled}{message}", file=self._stream, nl=False)
        self._drawn = True

    def clear(self) -> None:
        if self._drawn:
            click.echo("\r\x1b[2K", file=self._stream, nl=False)
            self._drawn = False


class _OutputLines:
    """A job's output on stdout as it comes: ``token`` chunks run on, as an LLM's text does;
    any other chunk is a line of its own. Text data is printed as it is, other data as JSON;
    on a terminal, control characters are shown escaped (``\x1b``): output is anyone's text,
    and an escape sequence in it would drive the terminal (retitle it, clear it)."""

    def __init__(self, as_json: bool) -> None:
        self._as_json = as_json
        self._mid_line = False  # a token run left the cursor after text
        self.terminal = sys.stdout.isatty()

    def show(self, chunks: Iterable[OutputChunk]) -> None:
        for chunk in chunks:
            if self._as_json:
                click.echo(_dumps(chunk.to_wire()))
                continue
            text = chunk.data if isinstance(chunk.data, str) else _dumps(chunk.data)
            if self.terminal:
                text = _escaped(_CONTROL, text)
            # color=True: piped, click would strip what looks like a colour code from the
            # text, and the output must pass as it was.
            if chunk.kind == "token":
                click.echo(text, nl=False, color=True)
                self._mid_line = not text.endswith("\n") if text else self._mid_line
            else:
                self.end_line()
                click.echo(text, color=True)

    def end_line(self) -> None:
        """End a token run's line, so that what follows starts a line of its own."""
        if self._mid_line:
            click.echo()
            self._mid_line = False


def _exit_code(last: Job | None) -> int:
    """A watch's exit status: 0 once the job completed, 1 otherwise."""
    return 0 if last is not None and last.status == "completed" else 1


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
    help="Retries on connection errors, 429, 503 and a proxy's 502 and 504.",
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print JSON for scripts, whatever the command."
)
@click.version_option(package_name="jobcast-client", prog_name="jobcast")
@click.pass_context
def cli(ctx: click.Context, url: str, api_key: str | None, retries: int, as_json: bool) -> None:
    """Jobcast: track long-running jobs and watch them live."""
    ctx.obj = _Options(url, api_key or None, retries, as_json)


@cli.command()
@click.option("--type", "-t", "job_type", type=click.Choice(JOB_TYPES), default="generic")
@click.option("--message", "-m", default="", help="The first message.")
@click.option(
    "--metadata", callback=_json_object, help='A JSON object, e.g. \'{"fileName": "a.pdf"}\'.'
)
@click.option("--owner", help="Who the job belongs to (an owner's read token reads its jobs).")
@click.option("--webhook-url", help="Where the server also POSTs this job's events (signed).")
@click.option("--idempotency-key", help="Retrying with the same key never makes a second job.")
@json_option
def create(
    job_type: Any,
    message: str,
    metadata: Any,
    owner: str | None,
    webhook_url: str | None,
    idempotency_key: str | None,
    as_json: bool,
) -> None:
    """Create a job; print its id (or the whole job with --json)."""
    job = _client().create_job(
        job_type=job_type,
        message=message,
        metadata=metadata,
        owner=owner,
        webhook_url=webhook_url,
        idempotency_key=idempotency_key,
    )
    click.echo(_dumps(job.to_wire()) if _wants_json(as_json) else job.job_id)


@cli.command()
@click.argument("job_id")
@click.option("--status", "-s", type=click.Choice(JOB_STATUSES))
@click.option("--progress", "-p", type=float, callback=_finite, help="0 to 100.")
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
    _show(job, _wants_json(as_json))


@cli.command()
@click.argument("job_id")
@click.option("--document-id", "-d", help="The document the job produced.")
@click.option("--message", "-m", help="Default: Completed.")
@json_option
def complete(job_id: str, document_id: str | None, message: str | None, as_json: bool) -> None:
    """Mark a job completed (progress 100)."""
    _show(_client().complete_job(job_id, document_id, message), _wants_json(as_json))


@cli.command()
@click.argument("job_id")
@click.argument("error")
@click.option("--message", "-m", help="Default: Processing failed.")
@json_option
def fail(job_id: str, error: str, message: str | None, as_json: bool) -> None:
    """Mark a job failed with ERROR."""
    _show(_client().fail_job(job_id, error, message), _wants_json(as_json))


@cli.command()
@click.argument("job_id")
@click.option("--reason", "-r", help="Why: shown to the worker and to anyone watching.")
@click.option(
    "--force",
    is_flag=True,
    help="End the job now (error: canceled), for a job whose worker is gone.",
)
@json_option
def cancel(job_id: str, reason: str | None, force: bool, as_json: bool) -> None:
    """Ask a job's worker to stop; --force ends the job now.

    The worker sees cancelRequested in the answer to its next update, and ends
    the job itself; asking again changes nothing.
    """
    _show(_client().cancel_job(job_id, reason, force=force), _wants_json(as_json))


@cli.command()
@click.argument("job_id")
def delete(job_id: str) -> None:
    """Remove a job now, whatever its state; print nothing.

    Its watchers are told it is gone; reading it afterwards is an error.
    """
    _client().delete_job(job_id)


@cli.command()
@click.argument("job_id")
@json_option
def get(job_id: str, as_json: bool) -> None:
    """Show a job."""
    job = _client().get_job(job_id)
    if _wants_json(as_json):
        click.echo(_dumps(job.to_wire()))
        return
    rows = []
    for name, value in job.to_wire().items():
        if name == "status":
            cell = _status(job)
        else:
            cell = _one_line(value) if isinstance(value, str) else _dumps(value)
        rows.append((click.style(name, bold=True), cell))
    _table(rows)


@cli.command(name="list")
@click.option("--status", "-s", type=click.Choice(JOB_STATUSES))
@click.option("--type", "-t", "job_type", type=click.Choice(JOB_TYPES))
@click.option("--limit", "-n", type=click.IntRange(min=1), help="At most this many (default: all).")
@json_option
def list_(status: Any, job_type: Any, limit: int | None, as_json: bool) -> None:
    """List jobs, newest first."""
    jobs = _client().list_jobs(status=status, job_type=job_type, limit=limit)
    if _wants_json(as_json):
        for job in jobs:
            click.echo(_dumps(job.to_wire()))
        return
    rows = [
        (job.job_id, job.job_type, _status(job), _percent(job), _listed_message(job))
        for job in jobs
    ]
    if rows:
        _table(rows, header=("job", "type", "status", "progress", "message"))
    else:
        click.echo("no jobs", err=True)


@cli.command()
@click.argument("job_id")
@click.option(
    "--output",
    "-o",
    "with_output",
    is_flag=True,
    help="Print the job's output too, and each state as a line of its own.",
)
@json_option
@click.pass_context
def watch(ctx: click.Context, job_id: str, with_output: bool, as_json: bool) -> None:
    """Follow a job live until it ends; exit 0 if it completed, 1 if it failed.

    Without --json: a progress bar on the terminal, then the final state.
    With --output: the job's output as it comes (token chunks run on, others
    a line each) between lines that show each new state.
    """
    as_json = _wants_json(as_json)
    if with_output:
        ctx.exit(_follow_output(job_id, as_json, show_states=True))
    states = _client().watch(job_id)
    last: Job | None = None
    if as_json:
        for last in states:
            click.echo(_dumps(last.to_wire()))
    else:
        bar = _ProgressLine(sys.stderr)
        try:
            for last in states:
                bar.show(last)
        finally:
            bar.clear()
        if last is not None:
            _show(last, as_json=False)
    ctx.exit(_exit_code(last))


@cli.command()
@click.argument("job_id")
@json_option
@click.pass_context
def tail(ctx: click.Context, job_id: str, as_json: bool) -> None:
    """Print a job's output so far, then as it comes, until the job ends.

    Token chunks run on, as an LLM's text does; other chunks are a line each
    (with --json: one chunk per line, as JSON). Exit 0 if the job completed;
    1 if it failed, with its error on stderr.
    """
    ctx.exit(_follow_output(job_id, _wants_json(as_json), show_states=False))


def _follow_output(job_id: str, as_json: bool, *, show_states: bool) -> int:
    """Print the job's output (and its states) until it ends; the exit status."""
    lines = _OutputLines(as_json)
    last: Job | None = None
    for update in _client().watch(job_id, output=True):
        if not isinstance(update, Job):
            lines.show(update)
            continue
        last = update
        if show_states:
            lines.end_line()
            _show(last, as_json)
    if show_states or lines.terminal:  # piped, `tail` adds nothing to the output as it was
        lines.end_line()
    if not show_states and last is not None and last.status == "error":
        click.echo(f"jobcast: job {job_id} failed: {_one_line(last.error or '')}", err=True)
    return _exit_code(last)


@cli.command()
@click.argument("job_id")
@click.argument("data", nargs=-1)
@click.option("--kind", "-k", help="The chunks' label: token, log, result, ... (64 characters).")
@click.option("--json-data", is_flag=True, help="Read each DATA (or line) as JSON, not as text.")
@click.option(
    "--expected-offset",
    type=click.IntRange(min=0),
    help="Append only if the job has this many chunks: running it again appends nothing.",
)
@json_option
def append(
    job_id: str,
    data: tuple[str, ...],
    kind: str | None,
    json_data: bool,
    expected_offset: int | None,
    as_json: bool,
) -> None:
    """Append to a job's output: each DATA is one chunk; without DATA, each line of stdin.

    Lines of stdin are appended as they come, in batches (a log piped in
    shows up live). Prints nothing; with --json, where the chunks went.
    """

    def parse(text: str) -> Any:
        return _json_value(text) if json_data else text

    client = _client()
    if data:
        done = client.append_output(
            job_id,
            chunks=[parse(item) for item in data],
            kind=kind,
            expected_offset=expected_offset,
        )
        if _wants_json(as_json):
            click.echo(
                _dumps({"jobId": job_id, "offset": done.offset, "nextOffset": done.next_offset})
            )
        return
    if expected_offset is not None:
        raise click.UsageError("--expected-offset goes with DATA, not with lines of stdin")
    refused = False
    try:
        with client.output_writer(job_id, kind=kind) as out:
            # Lines as text mode splits them (\n, \r\n, or a lone \r, as progress bars
            # write), bytes that are not UTF-8 kept as surrogates to be found below.
            lines = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="surrogateescape")
            for number, line in enumerate(lines, 1):
                text = line.removesuffix("\n")
                if _SURROGATE.search(text):
                    # Refused alone, as the server refuses a line: the rest of the pipe goes on.
                    refused = True
                    click.echo(
                        f"jobcast: error: line {number} is not UTF-8; not appended", err=True
                    )
                    continue
                data = parse(text)
                try:
                    out.write(data)
                except InvalidJobData as refusal:
                    # Lines the server refused (one too large, say) cost themselves, not
                    # the rest of the pipe: said, and the reading goes on.
                    refused = True
                    click.echo(_error_lines(refusal, notes=True), err=True)
                    out.write(data)
    except InvalidJobData as refusal:  # refused in the last batch, heard on closing
        refused = True
        click.echo(_error_lines(refusal, notes=True), err=True)
    if _wants_json(as_json):
        held = out.offset if out.offset is not None else client.get_job(job_id).output_size
        click.echo(_dumps({"jobId": job_id, "nextOffset": held}))
    if refused:
        sys.exit(1)


def _json_value(text: str) -> Any:
    try:
        return _strict_json(text)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not JSON", param_hint="DATA") from None


@cli.command()
@click.option("--job", "job_id", metavar="ID", help="A token that reads this job.")
@click.option("--owner", metavar="NAME", help="A token that reads every job of this owner.")
@click.option(
    "--ttl",
    type=click.IntRange(min=1),
    metavar="SECONDS",
    help="How long it lasts (default: the server's JOBS_TOKEN_TTL).",
)
@json_option
def token(job_id: str | None, owner: str | None, ttl: int | None, as_json: bool) -> None:
    """Print a read token for one job or one owner's jobs.

    Minting needs the API key; the token only reads. With --json: the token and
    when it expires.
    """
    if (job_id is None) == (owner is None):
        raise click.UsageError("give exactly one of --job or --owner")
    minted = _client().mint_token(job_id=job_id, owner=owner, ttl=ttl)
    click.echo(_dumps(minted.to_wire()) if _wants_json(as_json) else minted.token)


@cli.command()
@click.option(
    "--count",
    "-n",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="How many secrets to print.",
)
@click.option(
    "--webhook-secret",
    is_flag=True,
    help="A webhook signing secret instead (whsec_..., for JOBS_WEBHOOK_SECRET).",
)
def keygen(count: int, webhook_secret: bool) -> None:
    """Print a new random secret (JOBS_API_KEY, JOBS_TOKEN_SECRET, JOBS_WEBHOOK_SECRET).

    One per line; no server needed.
    """
    for _ in range(count):
        if webhook_secret:
            # The Standard Webhooks format: whsec_ and the key's bytes in base64.
            click.echo("whsec_" + base64.b64encode(secrets.token_bytes(32)).decode())
        else:
            click.echo(secrets.token_urlsafe(32))


@cli.command(
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
    add_help_option=False,
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def serve(args: tuple[str, ...]) -> None:
    """Run the server (hands over to jobcast-server).

    ARGS go to jobcast-server as they are: see jobcast-server --help.
    """
    if shutil.which(SERVER_COMMAND) is None:
        _fail(
            f"jobcast: {SERVER_COMMAND} is not installed: in a checkout of Jobcast, "
            "pip install . (or run `make run` there)",
            1,
        )
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvp(SERVER_COMMAND, [SERVER_COMMAND, *args])


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
    except JobcastError as exc:
        _fail(_error_lines(exc), 1)
    except ValueError as exc:  # the client refused an argument before sending anything
        _fail(f"jobcast: error: {exc}", 2)
    sys.exit(code if isinstance(code, int) else 0)


def _error_lines(exc: JobcastError, *, notes: bool = False) -> str:
    """The server's reason; then each refused field, when there are several (and with
    ``notes``, what the client noted on the error)."""
    lines = [f"jobcast: error: {exc}"]
    if isinstance(exc, InvalidJobData) and len(exc.errors) > 1:
        lines += [f"  {error.field}: {error.message}" for error in exc.errors]
    if notes:
        lines += [f"  {note}" for note in getattr(exc, "__notes__", ())]
    return "\n".join(lines)


def _fail(message: str, code: int) -> NoReturn:
    click.echo(message, err=True)
    sys.exit(code)


if __name__ == "__main__":
    main()
