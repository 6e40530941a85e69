"""The collector is settled once the server has started: start-up frozen, collections spaced."""

from __future__ import annotations

import gc

from app import collector
from app.main import create_app
from app.settings import Settings
from tests.conftest import local_client


def test_a_started_server_has_frozen_its_start_up_and_spaced_collections() -> None:
    with local_client(create_app(Settings())):
        young, _, full = gc.get_threshold()
        assert (young, full) == (collector.YOUNG_EVERY, collector.FULL_EVERY)
        assert gc.get_freeze_count() > 10_000  # modules, classes, schemas: not walked again
        assert gc.isenabled()  # cycles are still collected
