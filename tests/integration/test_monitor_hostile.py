"""The hostile monitor requests of ``tests/hostile_monitor_cases.py`` against a real
``driftgate monitor``, on SQLite and on PostgreSQL (where a BIGINT overflow or a 257-character
request id once broke every later report).

Each case must be answered with its status within ``BUDGET`` seconds and a short message, and
the legitimate gateway's next report must still commit. Afterwards the store holds exactly the
good reports, the gauges are fresh (no evaluation failed), and the process grew by less than
``GROWTH`` bytes of resident memory.
"""

from __future__ import annotations

import re
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from driftgate.core._proto.driftgate.monitor.v1 import monitor_pb2 as pb
from driftgate.core._proto.driftgate.monitor.v1 import monitor_pb2_grpc as pb_grpc
from driftgate.core.profile import ReferenceProfile
from tests.hostile_monitor_cases import MONITOR_CASES, MonitorCase
from tests.integration.test_monitor_server import MODEL, TOTAL, _report
from tests.integration.test_monitor_server import repository as repository  # the fixture
from tests.postgres import scratch_database
from tests.processes import DriftgateProcess

pytestmark = pytest.mark.integration

BUDGET = 5.0  # seconds per hostile request
GROWTH = 150 * 2**20  # resident bytes the whole catalogue may add


@dataclass
class Running:
    process: DriftgateProcess
    stub: pb_grpc.MonitorStub
    profile: ReferenceProfile
    good: int = 0  # good reports committed so far
    timings: dict[str, float] = field(default_factory=dict)

    def good_report(self) -> None:
        """The legitimate gateway's next report: it commits."""
        sequence = self.good + 1
        request = _report(self.profile, sequence, [f"good-{sequence}"])
        assert self.stub.Report(request, timeout=10).committed_sequence == sequence
        self.good = sequence

    def rss(self) -> int:
        status = Path(f"/proc/{self.process.process.pid}/status").read_text()
        match = re.search(r"VmRSS:\s+(\d+) kB", status)
        assert match is not None
        return int(match.group(1)) * 1024


def store_url(kind: str) -> Iterator[str | None]:
    """None for SQLite; for PostgreSQL, a new database on the test server, dropped after."""
    if kind == "sqlite":
        yield None
        return
    with scratch_database("driftgate_hostile") as url:
        yield url


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def hostile_monitor(
    request: pytest.FixtureRequest,
    repository: tuple[Path, ReferenceProfile],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Running]:
    workdir = tmp_path_factory.mktemp(f"hostile-{request.param}")
    for url in store_url(request.param):
        args = [
            "--repository", str(repository[0]), "--data-dir", str(workdir / "data"),
            "--host", "127.0.0.1", "--grpc-port", "0", "--metrics-port", "0",
            "--evaluate-interval", "0.3", *(["--store-url", url] if url else []),
        ]  # fmt: skip
        process = DriftgateProcess("monitor", args, workdir, {}).wait_ready()
        channel = grpc.insecure_channel(
            process.address, options=[("grpc.max_send_message_length", 64 * 2**20)]
        )
        running = Running(process, pb_grpc.MonitorStub(channel), repository[1])
        try:
            running.good_report()
            yield running
        finally:
            channel.close()
            assert process.terminate() == 0, process.log


@pytest.mark.parametrize("case", MONITOR_CASES, ids=lambda c: c.name)
def test_hostile_request_is_refused_quickly_and_the_gateway_goes_on(
    hostile_monitor: Running, case: MonitorCase
) -> None:
    running = hostile_monitor
    rpc = getattr(running.stub, case.method)
    request = case.build(MODEL, 1)
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as caught:
        rpc(request, timeout=30)
    elapsed = time.monotonic() - started
    running.timings[case.name] = elapsed
    error = caught.value
    assert error.code().name == case.expected, error.details()
    assert len(error.details()) < 400, error.details()  # client strings quoted short
    assert elapsed < BUDGET
    running.good_report()


def _metrics(process: DriftgateProcess) -> str:
    url = f"http://127.0.0.1:{process.metrics_port}/metrics"
    return str(urllib.request.urlopen(url, timeout=5).read().decode())


def test_the_store_holds_the_good_reports_only_and_gauges_stay_fresh(
    hostile_monitor: Running,
) -> None:
    running = hostile_monitor
    started = running.rss()
    for case in MONITOR_CASES:  # the whole catalogue once more, for memory
        with pytest.raises(grpc.RpcError):
            getattr(running.stub, case.method)(case.build(MODEL, 1), timeout=30)
    running.good_report()
    growth = running.rss() - started
    assert growth < GROWTH
    drift = running.stub.GetDrift(pb.GetDriftRequest(model=MODEL, version=1, window=TOTAL))
    age = sum(running.profile.features[0].bins.counts)
    assert {f.name: f.rows for f in drift.features}["age"] == running.good * age
    accuracy = running.stub.GetAccuracy(pb.GetAccuracyRequest(model=MODEL, version=1, window=TOTAL))
    assert accuracy.prediction_count == running.good  # one record per good report
    deadline = time.monotonic() + 20
    text = _metrics(running.process)
    while time.monotonic() < deadline and "driftgate_monitor_dataset_drift_share{" not in text:
        time.sleep(0.3)
        text = _metrics(running.process)
    assert f'driftgate_monitor_dataset_drift_share{{model="{MODEL}",version="1"}}' in text
    assert "driftgate_monitor_evaluation_failures_total{" not in text  # no version failed
    reports = [c for c in MONITOR_CASES if c.method == "Report"]
    refused = len(reports) + sum(c.name in running.timings for c in reports)
    assert f'driftgate_monitor_reports_total{{result="invalid"}} {refused}.0' in text
    slowest = max(running.timings.items(), key=lambda item: item[1], default=("", 0.0))
    print(f"slowest hostile request {slowest[0]}: {slowest[1]:.3f} s; RSS growth {growth} B")
