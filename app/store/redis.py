"""The Redis store (not part of this build yet: start-up refuses JOBS_BACKEND=redis)."""

from __future__ import annotations

from app.settings import Settings, SettingsError
from app.store import FeedSink


class RedisStore:
    def __init__(self, settings: Settings, sink: FeedSink) -> None:
        raise SettingsError("JOBS_BACKEND=redis is not available in this build yet")
