"""The npm package as a user gets it: what ``npm pack`` ships, and that it installs and imports.

The tarball holds the two modules, their types, the README and the licence,
nothing else. Installed into an empty folder it brings no dependency (React
is an optional peer): ``import('jobcast')`` works as it is, and
``import('jobcast/react')`` once React is installed beside it.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import seconds
from tests.js.npm import JS, Node

pytestmark = pytest.mark.timeout(seconds(600))

SHIPPED = {
    "package.json",
    "README.md",
    "LICENSE",
    "jobcast.js",
    "jobcast.d.ts",
    "react.js",
    "react.d.ts",
}


def run(*command: str, cwd: Path) -> str:
    result = subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, timeout=seconds(300), check=False
    )
    assert result.returncode == 0, f"{' '.join(command)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def react_version() -> str:
    version: str = json.loads((JS / "package.json").read_text())["devDependencies"]["react"]
    return version


def test_pack_lists_only_what_a_user_needs(node: Node) -> None:
    """``npm pack --dry-run`` lists the modules, their types, README, LICENSE, package.json."""
    packed = json.loads(run(node.npm, "pack", "--dry-run", "--json", "--loglevel=error", cwd=JS))
    assert {entry["path"] for entry in packed[0]["files"]} == SHIPPED


def test_the_tarball_installs_and_both_entry_points_import(node: Node, tmp_path: Path) -> None:
    """Installed from its tarball into an empty folder, ``jobcast`` and ``jobcast/react`` import."""
    quiet = ("--no-audit", "--no-fund", "--loglevel=error", "--prefer-offline")
    packed = run(node.npm, "pack", "--json", "--pack-destination", str(tmp_path), cwd=JS)
    tarball = tmp_path / json.loads(packed)[0]["filename"]
    app = tmp_path / "app"
    app.mkdir()
    (app / "package.json").write_text('{"name": "app", "private": true, "type": "module"}\n')
    run(node.npm, "install", *quiet, str(tarball), cwd=app)
    installed = [path.name for path in (app / "node_modules").iterdir() if path.name[0] != "."]
    assert installed == ["jobcast"], "no dependency comes with it"

    core = "const m = await import('jobcast'); console.log(Object.keys(m).sort().join())"
    assert run(node.node, "--input-type=module", "-e", core, cwd=app).strip() == (
        "createJobStore,isTerminal,watchJob,watchJobs"
    )

    run(node.npm, "install", *quiet, f"react@{react_version()}", cwd=app)
    hooks = "const m = await import('jobcast/react'); console.log(Object.keys(m).sort().join())"
    assert run(node.node, "--input-type=module", "-e", hooks, cwd=app).strip() == "useJob,useJobs"
