"""Counts a gateway held through an outage: the monitor takes a report whose window starts
hours ago and files its counts in that bucket; counts older than the counts retention are
taken too, and the next prune deletes them like any other counts of that age."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from driftgate.monitor.metrics import MonitorMetrics
from driftgate.monitor.service import Monitor, Window
from driftgate.monitor.settings import MonitorSettings
from driftgate.monitor.store import Distribution, Report, Store, VersionCounts, sqlite_url
from tests.monitor_profiles import churn_profile

MODEL = "churn"
HOUR = 3600.0


@pytest.fixture
def monitor(tmp_path: Path) -> Iterator[Monitor]:
    version = tmp_path / "models" / MODEL / "1"
    version.mkdir(parents=True)
    (version / "model.onnx").write_bytes(b"not read by the monitor")
    (version / "reference.json").write_text(json.dumps(churn_profile().to_dict()))
    settings = MonitorSettings(
        data_dir=tmp_path, repository=tmp_path / "models", counts_retention_seconds=3 * HOUR
    )
    store = Store(sqlite_url(tmp_path), settings.bucket_seconds)
    yield Monitor(settings, store, MonitorMetrics(CollectorRegistry()))
    store.close()


def _report(sequence: int, start: float, rows: int) -> Report:
    distributions = [
        Distribution(f.name, [rows] + [0] * (len(f.bins.counts) - 1))
        for f in churn_profile().features
    ]
    counts = VersionCounts(MODEL, 1, distributions, requests=rows, rows=rows)
    return Report("gateway-1", sequence, start, [counts])


def _rows(monitor: Monitor, start: float, end: float) -> int:
    return monitor.drift(MODEL, 1, Window(start, end)).features[0].rows


def test_counts_hours_old_land_in_their_bucket_and_past_retention_are_pruned(
    monitor: Monitor,
) -> None:
    now = time.time()
    minute = (now - 2 * HOUR) // 60 * 60  # a bucket two hours ago, within retention
    stale = (now - 5 * HOUR) // 60 * 60  # five hours ago, past the 3 h retention
    assert monitor.ingest(_report(1, stale + 7, 4), now) == 1
    assert monitor.ingest(_report(2, minute + 12.5, 10), now) == 2
    assert monitor.ingest(_report(3, minute + 40, 5), now) == 3
    assert _rows(monitor, minute, minute + 60) == 15  # one bucket, two hours ago
    assert _rows(monitor, minute + 60, now + 60) == 0  # nothing moved to the present
    assert _rows(monitor, stale, stale + 60) == 4
    monitor.prune(now)
    assert _rows(monitor, stale, stale + 60) == 0  # past the counts retention: pruned
    assert _rows(monitor, minute, minute + 60) == 15
