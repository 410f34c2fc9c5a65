"""A PostgreSQL server of a test's own, to stop and start under a running monitor.

The shared test server (``tests.postgres``) must stay up for the other tests; a test that
restarts PostgreSQL makes its own cluster from Debian's binaries (``initdb``, ``pg_ctl``) in a
temporary directory, on a free loopback port, as ``.ci/run`` does (as the ``postgres`` user
when run as root: PostgreSQL refuses to run as root).
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

__all__ = ["PostgresCluster"]


def _binaries() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_major)
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _major(path: str) -> int:
    part = Path(path).parent.parent.name
    return int(part) if part.isdigit() else 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresCluster:
    """``initdb`` in a new temporary directory (not under pytest's ``tmp_path``, which only
    root may enter); ``start()``, ``stop()`` (fast shutdown: every session ends), ``url``,
    ``remove()``. Skips the test without the binaries (fails it under CI)."""

    def __init__(self) -> None:
        binaries = _binaries()
        if binaries is None:
            if os.environ.get("CI"):
                pytest.fail("PostgreSQL's initdb is missing: .ci/run installs postgresql")
            pytest.skip("PostgreSQL's initdb is not installed (apt-get install postgresql)")
        self.bin = binaries
        directory = Path(tempfile.mkdtemp(prefix="driftgate-test-postgres."))
        self.directory = directory
        self.data = directory / "data"
        self.port = _free_port()
        if os.geteuid() == 0:
            shutil.chown(directory, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
                  "--no-sync")  # fmt: skip

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.directory}"
        log = str(self.directory / "postgres.log")
        self._run("pg_ctl", "-D", str(self.data), "-l", log, "-w", "-o", options, "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def remove(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def _run(self, program: str, *args: str) -> None:
        command = [str(self.bin / program), *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=60)
