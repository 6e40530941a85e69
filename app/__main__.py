"""``python -m app``: serve Jobcast with uvicorn, configured from the environment."""

from __future__ import annotations

import sys

import uvicorn

from app.settings import Settings, SettingsError


def main() -> None:
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        sys.exit(f"jobcast: {exc}")
    uvicorn.run(
        "app.main:create_app_from_env",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        timeout_graceful_shutdown=max(1, round(settings.shutdown_timeout)),
        ws_max_size=settings.ws_max_frame_bytes,
        # Deflate keeps a compressor per connection (about 40 KiB) and compresses
        # every frame once per subscriber: off unless asked for.
        ws_per_message_deflate=settings.ws_compression,
        log_level="info",
        access_log=settings.access_log,
    )


if __name__ == "__main__":
    main()
