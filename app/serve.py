"""Serving Jobcast: ``python -m app``, ``make run`` and the ``jobcast-server`` command.

Everything that touches the whole process happens here, once, where an
operator can see it; building the app (:func:`app.main.create_app`, as the
tests do many times in one process) does none of it:

- the settings come from the ``JOBS_*`` environment (``jobcast-server``'s
  flags set those variables first), and a bad one stops start-up naming it;
- the soft open-file limit is raised to the hard limit, and a warning says
  when the limits cannot fit it (:mod:`app.edge.protocol`);
- logging is uvicorn's, plus Jobcast's own logger and the filters of
  :mod:`app.logs` (set up in every worker process);
- uvicorn serves with the connection edge's HTTP protocol
  (:class:`app.edge.protocol.HttpProtocol`), which also ends open streams
  the moment shutdown begins (uvicorn waits for open responses before the
  lifespan's shutdown, so streams would otherwise hold it until its
  graceful timeout);
- once the app has started, the cyclic garbage collector is settled for
  many long-lived connections (:mod:`app.collector`).

Importing ``sse_starlette`` (which :mod:`app.streams.events` does, lazily,
for its event framing) patches uvicorn's exit handler for sse-starlette's
own streams; Jobcast neither needs nor reads that patch.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import logging.config
import os
import resource
import sys
from collections.abc import AsyncIterator
from typing import Any

import click
import uvicorn
from starlette.types import ASGIApp

from app import collector
from app.edge.protocol import open_files_warning
from app.logs import configuration
from app.main import Jobcast, create_app
from app.settings import Settings, SettingsError, definitions, unknown_variables

logger = logging.getLogger("uvicorn.error")


def main() -> None:
    """Serve with the settings of the environment, until interrupted."""
    unknown = unknown_variables()
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        # A misspelt name is often why a setting looks unset: said with the refusal.
        sys.exit("\n".join(f"jobcast: {line}" for line in (str(exc), *unknown)))
    if settings.backend == "redis" and importlib.util.find_spec("redis") is None:
        sys.exit("jobcast: JOBS_BACKEND=redis needs redis-py: pip install 'redis>=5.0.1'")
    log_config = configuration(access_log=settings.access_log)
    # uvicorn applies it again in run(): done now too, so what is said before serving
    # looks like what uvicorn says.
    logging.config.dictConfig(log_config)
    for line in unknown:
        logger.warning(line)
    warning = open_files_warning(settings, raise_open_file_limit())
    if warning is not None:
        logger.warning(warning)
    uvicorn.run(
        "app.serve:serving_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        http="app.edge.protocol:HttpProtocol",
        forwarded_allow_ips=settings.forwarded_allow_ips,
        timeout_graceful_shutdown=max(1, round(settings.shutdown_timeout)),
        ws_max_size=settings.ws_max_frame_bytes,
        # Deflate keeps a compressor per connection (about 40 KiB) and compresses
        # every frame once per subscriber: off unless asked for.
        ws_per_message_deflate=settings.ws_compression,
        log_config=log_config,
        access_log=settings.access_log,
    )


def serving_app() -> ASGIApp:
    """The app each serving process runs (uvicorn's factory, called in every worker)."""
    app = create_app(Settings.from_env())
    app.router.lifespan_context = _settled(app, app.router.lifespan_context)
    return app


def _settled(app: Jobcast, lifespan: Any) -> Any:
    """``lifespan``, with the collector settled once the app has started."""

    @contextlib.asynccontextmanager
    async def settled(_: Any) -> AsyncIterator[Any]:
        async with lifespan(app) as state:
            collector.settle()
            yield state

    return settled


def raise_open_file_limit() -> int:
    """Raise this process's soft limit on open files to its hard limit (worker processes
    inherit it); return the limit now in force (``sys.maxsize`` for none)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass  # e.g. macOS refuses more than OPEN_MAX: keep what was allowed
    return sys.maxsize if soft == resource.RLIM_INFINITY else soft


def _setting_flags(command: Any) -> Any:
    """One flag per setting (``--port`` for ``JOBS_PORT``), made from its definition."""
    for definition in reversed(definitions()):
        help_text = (
            f"{definition.doc} [{definition.variable}; default {definition.shown_default()}]"
        )
        if definition.is_flag:
            flag = f"{definition.flag}/--no-{definition.flag[2:]}"
            option = click.option(flag, definition.name, default=None, help=help_text)
        else:
            option = click.option(definition.flag, definition.name, metavar="VALUE", help=help_text)
        command = option(command)
    return command


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@_setting_flags
@click.version_option(package_name="jobcast-server", prog_name="jobcast-server")
def cli(**given: str | bool | None) -> None:
    """Serve Jobcast. Each flag sets its JOBS_* variable; unset ones keep the environment's."""
    by_name = {definition.name: definition for definition in definitions()}
    for name, value in given.items():
        if value is not None:
            text = ("1" if value else "0") if isinstance(value, bool) else value
            os.environ[by_name[name].variable] = text
    main()
