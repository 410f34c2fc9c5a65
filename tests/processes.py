"""Real driftgate processes for integration tests: started on free ports, stopped by signal."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


class DriftgateProcess:
    """``python -m driftgate <command> ... --ready-file F``, waited on until it is serving.

    ``python`` and ``cwd`` default to this interpreter and the repository root; the packaging
    test runs an installed wheel from a directory of its own."""

    def __init__(
        self,
        command: str,
        args: list[str],
        workdir: Path,
        env: dict[str, str],
        *,
        python: str = sys.executable,
        cwd: Path = ROOT,
    ) -> None:
        self.ready_file = workdir / f"{command}-{time.monotonic_ns()}.ready.json"
        self.log_path = workdir / f"{command}-{time.monotonic_ns()}.log"
        self._log = self.log_path.open("wb")
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **env}
        self.process = subprocess.Popen(
            [
                python,
                "-m",
                "driftgate",
                command,
                *args,
                "--ready-file",
                str(self.ready_file),
            ],
            cwd=cwd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=full_env,
        )
        self.info: dict[str, Any] = {}

    def wait_ready(self, timeout: float = 60.0) -> DriftgateProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"process exited early ({self.process.returncode}):\n{self.log}")
            if self.ready_file.exists():
                self.info = json.loads(self.ready_file.read_text())
                return self
            time.sleep(0.05)
        raise TimeoutError(f"not ready within {timeout} s:\n{self.log}")

    @property
    def grpc_port(self) -> int:
        return int(self.info["grpc_port"])

    @property
    def metrics_port(self) -> int:
        return int(self.info["metrics_port"])

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def terminate(self, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._log.close()
        return self.process.returncode


def start_gateway(
    repository: Path, workdir: Path, *extra: str, env: dict[str, str] | None = None
) -> DriftgateProcess:
    args = [
        "--repository",
        str(repository),
        "--host",
        "127.0.0.1",
        "--grpc-port",
        "0",
        "--metrics-port",
        "0",
        "--poll-interval",
        "0.2",
        *extra,
    ]
    return DriftgateProcess("serve", args, workdir, env or {}).wait_ready()


SHADOWING_MODULES = ("gateway.py", "monitor/__init__.py", "converter.py")
_SHADOWING_SOURCE = """from pathlib import Path

Path(__file__ + ".imported").touch()
raise RuntimeError("the user's {name} was imported where driftgate's own module was meant")
"""


def shadowing_directory(path: Path) -> Path:
    """A user's working directory with its own ``gateway.py``, ``monitor/`` package and
    ``converter.py``, each of which fails on import and leaves ``<file>.imported`` behind (so
    that an import caught by a broad ``except`` is still seen: see ``shadowed_imports``).

    Run from there, ``python -m driftgate`` has the directory first on ``sys.path``: driftgate
    must import none of them."""
    for name in SHADOWING_MODULES:
        module = path / name
        module.parent.mkdir(parents=True, exist_ok=True)
        module.write_text(_SHADOWING_SOURCE.format(name=name), encoding="utf-8")
    return path


def shadowed_imports(path: Path) -> list[str]:
    """The modules of ``shadowing_directory(path)`` that something imported."""
    return sorted(str(p.relative_to(path)) for p in path.rglob("*.imported"))
