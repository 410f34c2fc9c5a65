"""A repository whose listings fail with EIO for a few polls, under a serving gateway.

The repository is mounted through FUSE (tests/fuse_repository.py) so that the gateway's own
listings of it fail with EIO, as a network filesystem's do when its server goes away, while
traffic runs: every request is still answered by the version already loaded, the failed scans
are counted in driftgate_repository_scan_failures_total, and once listings work again a change
written meanwhile is followed. Skipped, with the reason, where FUSE cannot mount.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fuse_repository import failing_listings
from tests.integration.test_repository_faults import Traffic
from tests.processes import start_gateway
from tests.triton.helpers import logistic_model, scrape, write_deployment, write_version

pytestmark = pytest.mark.integration


def _scan_failures(port: int) -> float:
    return sum(v for n, _, v in scrape(port) if n == "driftgate_repository_scan_failures_total")


def _wait(condition: Callable[[], bool], failure: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, failure
        time.sleep(0.1)


def test_listings_failing_with_eio_keep_serving_and_recover(tmp_path: Path) -> None:
    source = tmp_path / "models"
    for version, seed in ((1, 0), (2, 1)):
        write_version(source, "m", version, logistic_model(seed).onnx, driftgate=True)
    write_deployment(source, "m", {"stable": 1})
    with failing_listings(source, tmp_path / "mounted") as switch:
        gateway = start_gateway(switch.parent / "mounted", tmp_path)
        try:
            with Traffic(gateway.address, "m") as traffic:
                time.sleep(1.0)
                before = _scan_failures(gateway.metrics_port)
                switch.touch()  # listings fail from now on
                time.sleep(2.0)  # ten polls
                failed = _scan_failures(gateway.metrics_port) - before
                during = dict(traffic.versions)
                write_deployment(source, "m", {"stable": 2})
                switch.unlink()
                _wait(lambda: traffic.versions["2"] > 0, f"not recovered:\n{gateway.log}")
            assert failed >= 3, gateway.log
            assert set(during) == {"1"} and traffic.failures == [], traffic.failures[:5]
        finally:
            assert gateway.terminate() == 0, gateway.log
