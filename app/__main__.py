"""``python -m app``: serve Jobcast with uvicorn, configured from the environment."""

from __future__ import annotations

import logging
import logging.config
import resource
import sys

import uvicorn
from uvicorn.config import LOGGING_CONFIG

from app.edge.protocol import open_files_warning
from app.settings import Settings, SettingsError

logger = logging.getLogger("uvicorn.error")


def main() -> None:
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        sys.exit(f"jobcast: {exc}")
    # uvicorn's own logging, set up now rather than in run(), so what is said before
    # serving looks like what uvicorn says (run() applies the same configuration again).
    logging.config.dictConfig(LOGGING_CONFIG)
    warning = open_files_warning(settings, raise_open_file_limit())
    if warning is not None:
        logger.warning(warning)
    uvicorn.run(
        "app.main:create_app_from_env",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        # The connection edge: bounds on head size, slow clients and idle connections.
        http="app.edge.protocol:HttpProtocol",
        forwarded_allow_ips=settings.forwarded_allow_ips,
        timeout_graceful_shutdown=max(1, round(settings.shutdown_timeout)),
        ws_max_size=settings.ws_max_frame_bytes,
        # Deflate keeps a compressor per connection (about 40 KiB) and compresses
        # every frame once per subscriber: off unless asked for.
        ws_per_message_deflate=settings.ws_compression,
        log_level="info",
        access_log=settings.access_log,
    )


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


if __name__ == "__main__":
    main()
