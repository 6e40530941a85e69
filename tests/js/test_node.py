"""The JavaScript package against a real server: Node's test runner on clients/js/test/.

Each ``*.test.js`` file runs in ``node --test`` against a server of its own,
started with the settings :data:`SETTINGS` gives that file (none by default),
its URL in ``JOBCAST_URL``. A file that fails fails this test with Node's report.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable

import pytest

from tests.conftest import seconds
from tests.js.conftest import Control
from tests.js.npm import JS, Node

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(seconds(600))]

API_KEY = "node-test-api-key-" + "k" * 32
FILES = sorted(path.name for path in (JS / "test").glob("*.test.js"))
SETTINGS: dict[str, dict[str, str]] = {
    "tokens.test.js": {"JOBS_API_KEY": API_KEY},
    "snapshots.test.js": {"JOBS_SNAPSHOT_RATE": "0.2"},
    "silence.test.js": {"JOBS_HEARTBEAT": "0.5"},
    "heartbeat.test.js": {"JOBS_HEARTBEAT": "4"},
}


def test_every_file_with_settings_exists() -> None:
    """The Node tests are there, and every file given settings is one of them."""
    assert FILES
    assert set(SETTINGS) <= set(FILES)
    assert set(FILES) >= SLOW


# The files that wait out real timeouts (a minute and more): the suite starts them first.
SLOW = {"silence.test.js", "watch.test.js"}


@pytest.mark.parametrize(
    "name", [pytest.param(name, marks=pytest.mark.slow) if name in SLOW else name for name in FILES]
)
def test_node_file(name: str, node: Node, control: Callable[..., Control]) -> None:
    """The Node test file passes against a real Jobcast server."""
    settings = SETTINGS.get(name, {})
    controlled = control(**settings)
    env = {
        **os.environ,
        "JOBCAST_URL": controlled.current.base_url,
        "JOBCAST_CONTROL": controlled.url,
        "JOBCAST_API_KEY": settings.get("JOBS_API_KEY", ""),
    }
    result = subprocess.run(
        [node.node, "--test", "--test-reporter=spec", f"test/{name}"],
        cwd=JS,
        env=env,
        capture_output=True,
        text=True,
        timeout=seconds(500),
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(
            f"node --test test/{name} failed:\n{result.stdout}\n{result.stderr}", pytrace=False
        )
    ran = re.search(r"^\S tests (\d+)$", result.stdout, re.MULTILINE)
    assert ran is not None, result.stdout
    assert int(ran.group(1)) > 0, f"test/{name} ran no test:\n{result.stdout}"
