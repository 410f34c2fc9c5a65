"""A report is acknowledged while the monitor's evaluation is stuck.

The monitor runs on PostgreSQL, where the test can hold an evaluation still without touching
the monitor's code: it locks the tables only the evaluation reads (records, held labels,
events; a report without records writes none of them), waits until PostgreSQL shows the
monitor's SELECT waiting for that lock, and then sends a report. The report must be
committed and acknowledged while the evaluation still waits; once the lock goes, the
evaluation finishes and its gauges show the new report.
"""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
import sqlalchemy as sa
from google.protobuf.duration_pb2 import Duration

from driftgate.core._proto.driftgate.monitor.v1 import monitor_pb2 as pb
from driftgate.core._proto.driftgate.monitor.v1 import monitor_pb2_grpc as pb_grpc
from driftgate.core.profile import ReferenceProfile
from tests.monitor_profiles import churn_profile
from tests.postgres import scratch_database
from tests.processes import DriftgateProcess

pytestmark = pytest.mark.integration

MODEL = "churn"
# Sessions of this database waiting for a lock in a SELECT: the held evaluation.
WAITING = sa.text(
    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
    "AND wait_event_type = 'Lock' AND state = 'active' AND query ILIKE 'select%'"
)


def _repository(root: Path, profile: ReferenceProfile) -> Path:
    version = root / MODEL / "1"
    version.mkdir(parents=True)
    (version / "model.onnx").write_bytes(b"not read by the monitor")
    (version / "reference.json").write_text(json.dumps(profile.to_dict()))
    (version / "model.json").write_text(
        json.dumps({"task": "classification", "class_labels": ["no", "yes"]})
    )
    return root


def _report(profile: ReferenceProfile, sequence: int, start: float) -> pb.ReportRequest:
    features = [
        pb.BinCounts(name=f.name, counts=np.asarray(f.bins.counts).tolist())
        for f in profile.features
    ]
    rows = int(sum(profile.features[0].bins.counts))
    request = pb.ReportRequest(
        instance_id="gateway-1",
        sequence=sequence,
        versions=[pb.VersionStats(model=MODEL, version=1, features=features, requests=rows,
                                  rows=rows)],
    )  # fmt: skip
    request.sent_time.FromNanoseconds(int(time.time() * 1e9))
    request.window_start.FromNanoseconds(int(start * 1e9))
    return request


def _gauge(process: DriftgateProcess, line_start: str) -> float | None:
    url = f"http://127.0.0.1:{process.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    for line in text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.split()[-1])
    return None


def _until(condition: object, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.05)


def test_a_report_is_acknowledged_while_an_evaluation_waits(tmp_path: Path) -> None:
    profile = churn_profile()
    root = _repository(tmp_path / "models", profile)
    with scratch_database("driftgate_evaluation") as url:
        monitor = DriftgateProcess(
            "monitor",
            ["--store-url", url, "--repository", str(root), "--data-dir", str(tmp_path / "d"),
             "--host", "127.0.0.1", "--grpc-port", "0", "--metrics-port", "0",
             "--evaluate-interval", "0.2", "--no-scheduler"],
            tmp_path, {},
        ).wait_ready()  # fmt: skip
        engine = sa.create_engine(url)
        channel = grpc.insecure_channel(monitor.address)
        try:
            stub = pb_grpc.MonitorStub(channel)
            now = time.time()
            assert stub.Report(_report(profile, 1, now), timeout=10).committed_sequence == 1
            rows = int(sum(profile.features[0].bins.counts))
            traffic = 'driftgate_monitor_store_rows{table="traffic"}'
            _until(lambda: _gauge(monitor, traffic) == 1, "the first evaluation")
            with engine.connect() as blocker, engine.connect() as observer:
                # Outside a transaction: one would read pg_stat_activity's first snapshot.
                observer.execution_options(isolation_level="AUTOCOMMIT")
                blocker.execute(
                    sa.text(
                        "LOCK TABLE predictions, pending_labels, events IN ACCESS EXCLUSIVE MODE"
                    )
                )
                try:
                    _until(lambda: observer.execute(WAITING).scalar_one() >= 1,
                           "an evaluation waiting for the lock")  # fmt: skip
                    # A minute earlier: a bucket of its own, so the gauges can tell.
                    reply = stub.Report(_report(profile, 2, now - 60), timeout=10)
                    assert reply.committed_sequence == 2
                    drift = stub.GetDrift(
                        pb.GetDriftRequest(model=MODEL, window=Duration(seconds=0)), timeout=10
                    )
                    assert drift.features[0].rows == 2 * rows
                    assert observer.execute(WAITING).scalar_one() >= 1  # still waiting
                    assert _gauge(monitor, traffic) == 1  # its gauges not refreshed yet
                finally:
                    blocker.rollback()
            _until(lambda: _gauge(monitor, traffic) == 2, "the evaluation after the lock")
        finally:
            channel.close()
            engine.dispose()
            monitor.terminate()
