"""A real ``redis-server`` for tests: started on a free loopback port, stoppable, restartable.

No persistence (``--save '' --appendonly no``): a restart comes back empty,
like a Redis that lost its data. The port stays the same across restarts,
so clients configured with its URL reconnect to the new process.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import seconds

START_DEADLINE = seconds(10)  # for redis-server to answer PING


def redis_server_binary() -> str:
    """The redis-server executable; fails the test under CI, skips it elsewhere."""
    path = shutil.which("redis-server")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("redis-server is not installed, and CI must run the Redis tests")
        pytest.skip("install redis-server: apt-get install redis-server")
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    def __init__(self, directory: Path) -> None:
        self.binary = redis_server_binary()
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + START_DEADLINE
        while not self._answers_ping():
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not answer PING in {START_DEADLINE:g}s")
            time.sleep(0.02)

    def stop(self) -> None:
        """Kill the server at once (as a crash would) and wait until it is gone."""
        if self.process is not None:
            self.process.send_signal(signal.SIGCONT)  # a paused server must not linger
            self.process.kill()
            self.process.wait(timeout=seconds(10))
            self.process = None

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections stay open and nothing answers."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def _answers_ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=seconds(0.5)) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False
