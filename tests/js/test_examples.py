"""The examples in ``clients/js/examples/`` run, against a real server, as the docs say."""

from __future__ import annotations

import subprocess
from collections.abc import Callable

import httpx2
import pytest

from tests.conftest import seconds
from tests.e2e.conftest import RunningServer
from tests.js.npm import JS, Node

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(seconds(600))]


def test_node_watch_prints_each_change_and_exits_at_the_end(
    node: Node, server: Callable[..., RunningServer]
) -> None:
    """node-watch.js prints the job as it changes and exits by itself once it completes."""
    running = server()
    with httpx2.Client(base_url=running.base_url, timeout=seconds(10)) as api:
        job_id = api.post("/api/jobs", json={"message": "Upload queued"}).json()["jobId"]
        with subprocess.Popen(
            [node.node, "examples/node-watch.js", running.base_url, job_id],
            cwd=JS,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        ) as process:
            assert process.stdout is not None
            try:
                assert process.stdout.readline() == "queued 0% Upload queued\n"
                api.patch(f"/api/jobs/{job_id}", json={"status": "processing", "progress": 50})
                assert process.stdout.readline() == "processing 50% Upload queued\n"
                api.post(f"/api/jobs/{job_id}/complete", json={"message": "Done"})
                assert process.stdout.readline() == "completed 100% Done\n"
                assert process.wait(timeout=seconds(10)) == 0
            finally:
                process.kill()


def test_node_watch_says_when_the_job_does_not_exist(
    node: Node, server: Callable[..., RunningServer]
) -> None:
    """For an unknown job id node-watch.js says so and exits."""
    running = server()
    result = subprocess.run(
        [node.node, "examples/node-watch.js", running.base_url, "job_unknown0000000000000"],
        cwd=JS,
        capture_output=True,
        text=True,
        timeout=seconds(30),
        check=False,
    )
    assert (result.returncode, result.stdout) == (0, "no such job\n"), result.stderr


def test_the_manual_shows_node_watch_word_for_word() -> None:
    """docs/javascript.md's Node program is examples/node-watch.js exactly, so what the
    manual shows is what this module runs."""
    example = (JS / "examples" / "node-watch.js").read_text()
    page = (JS.parent.parent / "docs" / "javascript.md").read_text()
    assert f"```js norun\n{example}```" in page
