"""``driftgate serve --workers 2`` under load: a worker SIGKILLed is started again.

Callers keep sending on fresh connections while one worker is killed. The parent notices,
starts it again after its backoff (counted in ``driftgate_gateway_worker_restarts_total``),
and once ``driftgate_gateway_workers_ready`` is back at 2 every request succeeds again. Only
requests that were on the killed worker's connections may fail, and only with UNAVAILABLE.
SIGTERM then stops the whole group cleanly.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import grpc
import numpy as np
import pytest

from tests.integration.control_client import infer_call, infer_request
from tests.processes import start_gateway
from tests.triton.helpers import logistic_model, scrape, write_deployment, write_version

pytestmark = pytest.mark.integration

MODEL = "m"
X = np.random.default_rng(0).normal(size=(1, 4)).astype(np.float32)
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]


def _read(path: Path) -> bytes:
    """A /proc file, or nothing when its thread or process ended meanwhile."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found |= {int(p) for p in _read(task / "children").split()}
    return found


def _workers(pid: int) -> set[int]:
    """The parent's serving children (multiprocessing's spawn also starts a tracker)."""
    workers = set()
    for child in _children(pid):
        command = _read(Path(f"/proc/{child}/cmdline"))
        if b"multiprocessing.spawn" in command and b"resource_tracker" not in command:
            workers.add(child)
    return workers


def _gauge(port: int, name: str) -> float:
    return sum(v for n, _, v in scrape(port) if n == name)


class Callers:
    """Threads sending one request per fresh connection until stopped; outcomes by code."""

    def __init__(self, address: str, threads: int = 4) -> None:
        self.address = address
        self.outcomes: Counter[str] = Counter()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run) for _ in range(threads)]

    def _run(self) -> None:
        while not self._stop.is_set():
            with grpc.insecure_channel(self.address, options=OWN_CONNECTION) as channel:
                try:
                    infer_call(channel)(infer_request(MODEL, X), timeout=10)
                    code = "OK"
                except grpc.RpcError as exc:
                    code = exc.code().name
            with self._lock:
                self.outcomes[code] += 1

    def __enter__(self) -> Callers:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)


def test_a_killed_worker_is_restarted_under_load(tmp_path: Path) -> None:
    repo = tmp_path / "models"
    write_version(repo, MODEL, 1, logistic_model(0).onnx, driftgate=True)
    write_deployment(repo, MODEL, {"stable": 1})
    gateway = start_gateway(repo, tmp_path, "--workers", "2")
    try:
        port = gateway.metrics_port
        before = _workers(gateway.info["pid"])
        assert len(before) == 2 and _gauge(port, "driftgate_gateway_workers_ready") == 2
        with Callers(gateway.address) as callers:
            time.sleep(1.0)
            victim = min(before)
            os.kill(victim, signal.SIGKILL)
            deadline = time.monotonic() + 60
            while _gauge(port, "driftgate_gateway_worker_restarts_total") < 1 or (
                _gauge(port, "driftgate_gateway_workers_ready") < 2
            ):
                assert time.monotonic() < deadline, gateway.log
                time.sleep(0.2)
            after = _workers(gateway.info["pid"])
            assert len(after) == 2 and victim not in after and len(after & before) == 1
            recovered = callers.outcomes["OK"]
            time.sleep(1.5)  # requests on fresh connections after the restart
        assert set(callers.outcomes) <= {"OK", "UNAVAILABLE"}, callers.outcomes
        assert callers.outcomes["OK"] > recovered
        # After the restart, fresh connections reach both workers and all succeed.
        for _ in range(20):
            with grpc.insecure_channel(gateway.address, options=OWN_CONNECTION) as channel:
                infer_call(channel)(infer_request(MODEL, X), timeout=10)
        assert "restarting in 0.5 s" in gateway.log
    finally:
        assert gateway.terminate() == 0, gateway.log
