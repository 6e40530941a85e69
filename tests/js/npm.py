"""The JavaScript package's development dependencies, installed by the tests that need them.

:func:`install` runs ``npm ci`` in ``clients/js`` (from the committed
``package-lock.json``, so every machine gets the same TypeScript, React,
esbuild, ``ws`` and ``eventsource``) when ``node_modules`` is missing or was
installed from another lock: a stamp file in it records the lock's hash. One
process installs at a time (a file lock), others wait and reuse it. Without
Node.js 20+ and npm the tests skip with the install hint, and fail in CI
(``CI=true``), as the browser tests do without Chromium.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest

from tests.conftest import seconds

ROOT = Path(__file__).resolve().parents[2]
JS = ROOT / "clients" / "js"
NODE_MODULES = JS / "node_modules"
STAMP = NODE_MODULES / ".jobcast-lock-sha256"
MIN_NODE = 20


@dataclass(frozen=True)
class Node:
    """Where ``node`` and ``npm`` are, and the installed packages' ``.bin``."""

    node: str
    npm: str

    def bin(self, name: str) -> str:
        """A development tool that ``npm ci`` installed (``tsc``, ``esbuild``)."""
        return str(NODE_MODULES / ".bin" / name)


def unavailable(why: str) -> NoReturn:
    """Skip, with what to install; in CI, fail: CI must have installed it."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{why}: CI must install Node.js {MIN_NODE}+ and npm", pytrace=False)
    pytest.skip(f"{why}: install Node.js {MIN_NODE} or later and npm (apt-get install nodejs npm)")


def find_node() -> Node:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None:
        unavailable("node is missing")
    if npm is None:
        unavailable("npm is missing")
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True)
    major = int(version.stdout.strip().lstrip("v").split(".")[0])
    if major < MIN_NODE:
        unavailable(f"node is {version.stdout.strip()}")
    return Node(node, npm)


def install() -> Node:
    """Node, with ``clients/js/node_modules`` installed from the lock (once per lock)."""
    found = find_node()
    digest = hashlib.sha256((JS / "package-lock.json").read_bytes()).hexdigest()
    where = hashlib.sha256(str(JS).encode()).hexdigest()[:16]
    lock_path = Path(tempfile.gettempdir()) / f"jobcast-npm-{where}.lock"
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if STAMP.exists() and STAMP.read_text() == digest:
            return found
        result = subprocess.run(
            [found.npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=JS,
            capture_output=True,
            text=True,
            timeout=seconds(600),
            check=False,
        )
        if result.returncode != 0:
            pytest.fail(f"npm ci failed in {JS}:\n{result.stdout}\n{result.stderr}", pytrace=False)
        STAMP.write_text(digest)
    return found
