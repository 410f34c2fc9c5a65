"""Faults of the repository under a serving gateway: nothing half-written, nothing dropped.

- ``deployment.json`` overwritten with garbage while a canary takes traffic: every request
  still succeeds on the versions already routed, the scan failure is counted, and a valid
  file written after it is followed within a few polls.
- The disk holding the repository fills during ``convert`` (a 768 KiB tmpfs mounted by the
  test; skipped where mounting is not permitted): ``convert`` fails with the error naming the
  device, no version directory or temporary directory is left, and the gateway serving from
  that repository answers every request with the version it had.
"""

from __future__ import annotations

import contextlib
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression

from driftgate.converter import convert
from driftgate.core.repository import TEMP_PREFIX, Repository
from tests.integration.control_client import infer_call, infer_request
from tests.processes import start_gateway
from tests.triton.helpers import logistic_model, scrape, write_deployment, write_version

pytestmark = pytest.mark.integration

X = np.random.default_rng(0).normal(size=(1, 4)).astype(np.float32)


class Traffic:
    """A thread sending requests on one channel until stopped; answers by version."""

    def __init__(self, address: str, model: str, features: int = 4, name: str = "X") -> None:
        self.versions: Counter[str] = Counter()
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._row = np.zeros((1, features), dtype=np.float32)
        self._model = model
        self._name = name
        self._thread = threading.Thread(target=self._run, args=(address,))

    def _run(self, address: str) -> None:
        with grpc.insecure_channel(address) as channel:
            call = infer_call(channel)
            while not self._stop.is_set():
                try:
                    request = infer_request(self._model, self._row)
                    request.inputs[0].name = self._name
                    reply = call(request, timeout=10)
                    self.versions[reply.model_version] += 1
                except grpc.RpcError as exc:
                    self.failures.append(f"{exc.code().name}: {exc.details()}")
                time.sleep(0.005)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)


def _scan_failures(port: int) -> float:
    return sum(v for n, _, v in scrape(port) if n == "driftgate_repository_scan_failures_total")


def test_corrupt_deployment_json_changes_nothing_until_it_is_valid(tmp_path: Path) -> None:
    repo = tmp_path / "models"
    for version, seed in ((1, 0), (2, 1), (3, 2)):
        write_version(repo, "m", version, logistic_model(seed).onnx, driftgate=True)
    write_deployment(repo, "m", {"stable": 1, "canary": {"version": 2, "weight": 50}})
    gateway = start_gateway(repo, tmp_path)
    try:
        with Traffic(gateway.address, "m") as traffic:
            time.sleep(1.0)
            failures = _scan_failures(gateway.metrics_port)
            (repo / "m" / "deployment.json").write_text('{"stable": 3, "canary": {"vers')
            time.sleep(2.0)  # ten polls of a garbled file
            garbled = dict(traffic.versions)
            assert _scan_failures(gateway.metrics_port) > failures
            write_deployment(repo, "m", {"stable": 3})
            deadline = time.monotonic() + 30
            while traffic.versions["3"] == 0:
                assert time.monotonic() < deadline, gateway.log
                time.sleep(0.1)
        assert traffic.failures == []
        assert set(garbled) == {"1", "2"}  # the routing of before, while the file was garbage
        assert "deployment.json unreadable" in gateway.log
    finally:
        assert gateway.terminate() == 0, gateway.log


@contextlib.contextmanager
def _small_disk(path: Path, size: str) -> Iterator[Path]:
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_a_full_disk_during_convert_leaves_nothing_half_written(tmp_path: Path) -> None:
    x, y = make_classification(3000, 8, random_state=0)
    x = x.astype(np.float32)
    small = LogisticRegression().fit(x, y)
    big = RandomForestClassifier(100, random_state=0).fit(x, y)  # several MB
    with _small_disk(tmp_path / "disk", "768k") as repo:
        convert(small, x[:200], "m", repo, labels=y[:200])
        gateway = start_gateway(repo, tmp_path)
        try:
            with Traffic(gateway.address, "m", features=8, name="input") as traffic:
                with pytest.raises(OSError) as raised:
                    convert(big, x, "m", repo, labels=y)
                time.sleep(1.0)  # a few polls after the failure
            assert "No space left on device" in str(raised.value)
            assert Repository(repo).versions("m") == [1]
            leftovers = [p.name for p in (repo / "m").iterdir() if p.name.startswith(TEMP_PREFIX)]
            assert leftovers == []
            assert traffic.failures == [] and set(traffic.versions) == {"1"}
        finally:
            assert gateway.terminate() == 0, gateway.log
