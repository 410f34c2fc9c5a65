"""The README's Quickstart, run as a newcomer would: in a fresh virtualenv holding exactly
what the README's install line installs (``requirements.lock`` and driftgate, no extras),
every block of the section in order, from an empty directory.

The install is made with uv (``uv pip`` reads the same lock and caches the wheels, so the
venv takes seconds); the ports of ``driftgate up`` are free ones instead of 8001-8004, which
the blocks' addresses follow. The tritonclient block is left out: the README says it needs
its own install."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.processes import ROOT

pytestmark = pytest.mark.integration

INSTALL = ["pip install -r requirements.lock", "pip install --no-deps ."]


def _blocks(markdown: str) -> list[tuple[str, str]]:
    return re.findall(r"```(sh|python)\n(.*?)```", markdown, flags=re.DOTALL)


def _quickstart(readme: str) -> list[tuple[str, str]]:
    section = readme.split("\n## Quickstart\n", 1)[1].split("\n## ", 1)[0]
    return _blocks(section)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=240, **kwargs)
    assert result.returncode == 0, f"{argv}:\n{result.stdout}\n{result.stderr}"
    return result


def test_the_install_line_installs_the_lock_and_driftgate_only() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    line = next(code for kind, code in _blocks(readme) if "requirements.lock" in code)
    installs = [c.strip() for c in line.split("&&") if c.strip().startswith("pip install")]
    assert installs == INSTALL


def test_the_quickstart_runs_after_the_install_line(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    uv = [sys.executable, "-m", "uv"]
    _run([*uv, "venv", "-q", str(venv), "--python", sys.executable])
    python = str(venv / "bin" / "python")
    _run([*uv, "pip", "install", "-q", "--python", python, "-r", str(ROOT / "requirements.lock")])
    _run([*uv, "pip", "install", "-q", "--python", python, "--no-deps", str(ROOT)])

    gateway, monitor = _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "DRIFTGATE_"))}
    env |= {
        "PATH": f"{venv / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}",
        "VIRTUAL_ENV": str(venv),
        "DRIFTGATE_GATEWAY": f"127.0.0.1:{gateway}",
        "DRIFTGATE_MONITOR": f"127.0.0.1:{monitor}",
    }
    work = tmp_path / "newcomer"
    work.mkdir()
    ports = ["--grpc-port", str(gateway), "--metrics-port", "0",
             "--monitor-grpc-port", str(monitor), "--monitor-metrics-port", "0"]  # fmt: skip
    ready = tmp_path / "up.json"
    up = None
    outputs = []
    try:
        for kind, code in _quickstart((ROOT / "README.md").read_text(encoding="utf-8")):
            if "tritonclient" in code:
                continue
            if code.startswith("driftgate up"):
                command = code.split("#")[0].split()
                up = subprocess.Popen(
                    [*command, *ports, "--ready-file", str(ready)], cwd=work, env=env,
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )  # fmt: skip
                deadline = time.monotonic() + 60
                while not ready.exists():
                    assert up.poll() is None and time.monotonic() < deadline, "up did not start"
                    time.sleep(0.1)
                continue
            if kind == "python":
                code = code.replace("localhost:8001", f"127.0.0.1:{gateway}")
                argv = [python, "-c", code]
            else:
                argv = ["bash", "-e", "-c", code]
            outputs.append(_run(argv, cwd=work, env=env).stdout)
    finally:
        if up is not None:
            up.terminate()
            up.wait(30)
    assert json.loads(ready.read_text())["grpc"] == gateway
    assert "wrote forest version 1" in outputs[0] and "parity passed" in outputs[0]
    assert outputs[1].split()[0] == "1"  # the version that answered
    accuracy = outputs[-1]
    assert "predictions 50, labels 50, coverage 100.0%" in accuracy, accuracy
    assert re.search(r"accuracy\s+0\.9\d+|accuracy\s+1\.0000", accuracy), accuracy
