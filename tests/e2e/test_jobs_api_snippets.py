"""The Jobs API description's `fetch` snippets, run by Node against the real server."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import seconds
from tests.e2e.conftest import RunningServer

pytestmark = pytest.mark.e2e

# The Jobs API's snippets, verbatim but for `fetch` taking the server's base URL.
SNIPPETS = r"""
const BASE = process.env.BASE;
const fetch = (path, init) => globalThis.fetch(BASE + path, init);
const out = {};

{
  const response = await fetch('/api/jobs', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({
      jobType: 'file_processing',
      message: 'Upload queued',
      metadata: {
        fileName: 'contract.pdf',
        fileSize: 1024000,
      },
    }),
  });
  out.createStatus = response.status;
  out.location = response.headers.get('location');
  out.created = await response.clone().json();
  const { jobId } = await response.json();
  out.jobId = jobId;
}
{
  const jobId = out.jobId;
  const response = await fetch(`/api/jobs/${jobId}`);
  const jobState = await response.json();

  console.log(`Status: ${jobState.status} - ${jobState.message}`);
  console.log(`Progress: ${jobState.progress}%`);
  out.polled = jobState;
}
{
  // The old, removed API: a multipart upload to /api/jobs.
  const formData = new FormData();
  formData.append('file', new Blob(['%PDF-1.4']), 'contract.pdf');
  formData.append('documentType', 'contract');
  formData.append('parentId', 'contract_1');

  const response = await fetch('/api/jobs', {
    method: 'POST',
    body: formData, // FormData
  });
  out.legacyStatus = response.status;
  out.legacyType = response.headers.get('content-type');
  out.legacy = await response.json();
}
console.log(JSON.stringify(out));
"""


def run_snippets(tmp_path: Path, base_url: str) -> tuple[list[str], dict[str, Any]]:
    node = shutil.which("node")
    if node is None:
        if os.environ.get("CI") == "true":
            pytest.fail("node is missing: .ci/run installs it (apt-get install nodejs)")
        pytest.skip("install Node.js to run the Jobs API's fetch snippets: apt-get install nodejs")
    script = tmp_path / "jobs_api.mjs"
    script.write_text(SNIPPETS)
    result = subprocess.run(
        [node, str(script)],
        env={**os.environ, "BASE": base_url},
        capture_output=True,
        text=True,
        timeout=seconds(30),
        check=False,
    )
    assert result.returncode == 0, result.stderr
    *printed, last = result.stdout.strip().splitlines()
    return printed, json.loads(last)


def test_jobs_api_fetch_snippets_get_its_shapes(
    server: Callable[..., RunningServer], tmp_path: Path
) -> None:
    """Create, poll and the old multipart upload behave as the Jobs API shows, from Node's fetch."""
    running = server()
    printed, out = run_snippets(tmp_path, running.base_url)

    assert out["createStatus"] == 201
    assert set(out["created"]) == {"jobId", "status", "timestamp"}
    assert out["created"]["status"] == "queued"
    assert out["location"] == f"/api/jobs/{out['jobId']}"

    polled = out["polled"]
    assert polled["status"] == "queued"
    assert polled["message"] == "Upload queued"
    assert polled["progress"] == 0
    assert polled["metadata"] == {"fileName": "contract.pdf", "fileSize": 1024000}
    assert polled["jobType"] == "file_processing"
    assert "documentId" not in polled
    assert "error" not in polled
    assert polled["timestamp"] == polled["updatedAt"]
    assert printed == ["Status: queued - Upload queued", "Progress: 0%"]

    assert out["legacyStatus"] == 415
    assert out["legacyType"] == "application/problem+json"
    assert "JSON" in out["legacy"]["detail"]
