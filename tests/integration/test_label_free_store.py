"""The label-free estimate from the store's top-class histograms, on SQLite and PostgreSQL.

The histograms (overall and per predicted class) are added in the transaction that stores a
record or joins its label, and migrations 5 and 6 backfill them from the stored records;
either way the estimate of a window (accuracy and the expected confusion matrix, over all
rows and over the labelled rows, calibrated by the version's model.json) is the one
``accuracy_of`` computes from the records themselves. The monitor publishes both gauges.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry

from driftgate.monitor.accuracy import Accuracy, Calibration, JoinedPrediction, accuracy_of
from driftgate.monitor.metrics import MonitorMetrics
from driftgate.monitor.service import Monitor
from driftgate.monitor.settings import MonitorSettings
from driftgate.monitor.store import (
    MIGRATIONS,
    LabelIn,
    PredictionIn,
    Report,
    Store,
    VersionCounts,
    sqlite_url,
)
from tests.postgres import scratch_database

pytestmark = pytest.mark.integration

T0 = 1_700_000_000.0
HOUR = 3600.0
ALIGNED = T0 // 3600 * 3600  # windows of whole buckets: the records' window is the buckets'
CALIBRATION = {
    "x": [0.5, 0.7, 0.9, 1.0],
    "y": [0.4, 0.75, 0.9, 0.97],
    "classes": {"yes": {"x": [0.5, 1.0], "y": [0.3, 0.99]}},  # "no" uses the pooled map
    "confusion": {"no": {"no": 50, "yes": 10}, "yes": {"no": 5, "yes": 40}},
}


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield sqlite_url(tmp_path)
        return
    with scratch_database() as value:
        yield value


def _traffic(store: Store, rows: int, seed: int) -> None:
    """``rows`` answers of churn v1 spread over two days (bucket and day rows both used);
    every third is labelled, half of those labels before their record arrives (held)."""
    rng = np.random.default_rng(seed)
    early, late, records = [], [], []
    for i in range(rows):
        top = float(rng.uniform(0.5, 1.0))
        value = "yes" if rng.uniform() < 0.5 else "no"
        other = "no" if value == "yes" else "yes"
        at = T0 + i * (2 * 86400 / rows)
        ordered = [top, 1 - top] if value == "no" else [1 - top, top]
        records.append(PredictionIn(f"s{seed}-{i}", at, "churn", 1, [1.0], ["a"], value, ordered))
        if i % 3 == 0:
            label = LabelIn(f"s{seed}-{i}", value if rng.uniform() < top else other, at + 60)
            (early if i % 2 else late).append(label)
    store.add_labels(early, now=T0)
    for n, start in enumerate(range(0, rows, 100)):
        chunk = records[start : start + 100]
        store.ingest(Report(f"gw-{seed}", n + 1, chunk[0].time, [], chunk))
    store.add_labels(late, now=T0 + 3 * 86400)


def _by_records(store: Store, start: float | None, end: float | None) -> Accuracy:
    joined = [
        JoinedPrediction(r.value, r.probabilities, r.label, None)
        for r in store.predictions("churn", 1, start, end)
    ]
    return accuracy_of(joined, "classification", ["no", "yes"], _calibration())


def _calibration() -> Calibration | None:
    return Calibration.from_model_json({"calibration": CALIBRATION})


def _estimates(store: Store, start: float | None, end: float | None) -> tuple[float, float]:
    a = _by_sums(store, start, end)
    assert a.estimated_accuracy is not None and a.estimated_accuracy_labelled is not None
    return a.estimated_accuracy, a.estimated_accuracy_labelled


def _by_sums(store: Store, start: float | None, end: float | None) -> Accuracy:
    from driftgate.monitor.accuracy import accuracy_from

    totals = store.accuracy_totals("churn", 1, start, end)
    return accuracy_from(totals, "classification", ["no", "yes"], _calibration())


def _assert_same_as_records(store: Store) -> None:
    windows = ((None, None), (ALIGNED + 5 * HOUR, ALIGNED + 30 * HOUR), (ALIGNED + 86400, None))
    for start, end in windows:
        expected = _by_records(store, start, end)
        assert expected.label_count > 0
        assert _estimates(store, start, end) == pytest.approx(
            (expected.estimated_accuracy, expected.estimated_accuracy_labelled), rel=1e-12
        )
        got = _by_sums(store, start, end)
        assert got.confusion == expected.confusion
        for name in ("expected_confusion", "expected_confusion_labelled"):
            matrix, wanted = getattr(got, name), getattr(expected, name)
            assert (
                set(matrix) == set(wanted) == {(a, p) for a in ("no", "yes") for p in ("no", "yes")}
            )
            for cell, n in wanted.items():
                assert matrix[cell] == pytest.approx(n, rel=1e-9)
        # Every prediction is in one row of the matrix; the labelled rows' matrix counts
        # the labelled records, as the measured one does.
        assert sum(got.expected_confusion.values()) == pytest.approx(got.prediction_count)
        assert sum(got.expected_confusion_labelled.values()) == pytest.approx(got.label_count)


def test_histograms_give_the_record_level_estimate(url: str) -> None:
    store = Store(url)
    try:
        _traffic(store, 600, seed=1)
        _assert_same_as_records(store)
    finally:
        store.close()


def test_migration_5_backfills_the_histograms_of_stored_records(url: str) -> None:
    store = Store(url)
    _traffic(store, 600, seed=2)
    expected = _estimates(store, None, None)
    with store.engine.begin() as connection:  # back to schema 4
        connection.execute(sa.text("DROP TABLE top_histograms"))
        connection.execute(sa.text("DROP TABLE class_histograms"))
        connection.execute(sa.text("UPDATE schema_version SET version = 4"))
    store.close()
    migrated = Store(url)
    try:
        assert migrated.schema_version == len(MIGRATIONS) == 6
        assert _estimates(migrated, None, None) == pytest.approx(expected, rel=1e-12)
        # Records and labels after the migration add to the backfilled histograms.
        _traffic(migrated, 300, seed=3)
        _assert_same_as_records(migrated)
        assert migrated.table_rows()["class_histograms"] > 0
        reopened = Store(url)  # migrates nothing again
        assert _estimates(reopened, None, None) == _estimates(migrated, None, None)
        reopened.close()
    finally:
        migrated.close()


def test_migration_6_backfills_the_class_histograms(url: str) -> None:
    store = Store(url)
    _traffic(store, 600, seed=5)
    expected = _by_sums(store, None, None).expected_confusion
    with store.engine.begin() as connection:  # back to schema 5
        connection.execute(sa.text("DROP TABLE class_histograms"))
        connection.execute(sa.text("UPDATE schema_version SET version = 5"))
    store.close()
    migrated = Store(url)
    try:
        assert migrated.schema_version == 6
        got = _by_sums(migrated, None, None).expected_confusion
        assert got.keys() == expected.keys()
        for cell, n in expected.items():
            assert got[cell] == pytest.approx(n, rel=1e-9)
        _traffic(migrated, 300, seed=6)
        _assert_same_as_records(migrated)
    finally:
        migrated.close()


def test_monitor_publishes_both_estimates(url: str, tmp_path: Path) -> None:
    version = tmp_path / "models" / "churn" / "1"
    version.mkdir(parents=True)
    meta = {"task": "classification", "class_labels": ["no", "yes"], "calibration": CALIBRATION}
    (version / "model.json").write_text(json.dumps(meta))
    (version / "model.onnx").write_bytes(b"not read by the monitor")  # a complete version
    settings = MonitorSettings(data_dir=tmp_path, repository=tmp_path / "models")
    registry = CollectorRegistry()
    store = Store(url)
    monitor = Monitor(settings, store, MonitorMetrics(registry))
    try:
        _traffic(store, 300, seed=4)
        now = T0 + 3 * 86400  # after every record
        # A report of the version's traffic in the last hour makes it active.
        store.ingest(Report("gw", 1, now - 60, [VersionCounts("churn", 1, requests=1)]))
        monitor.evaluate(now=now)
        labels = {"model": "churn", "version": "1", "window": "total"}
        expected = _by_records(store, None, None)
        every = registry.get_sample_value("driftgate_monitor_accuracy_estimate", labels)
        labelled = registry.get_sample_value("driftgate_monitor_accuracy_estimate_labelled", labels)
        assert every == pytest.approx(expected.estimated_accuracy, rel=1e-12)
        assert labelled == pytest.approx(expected.estimated_accuracy_labelled, rel=1e-12)
        assert every != labelled  # two sets of rows
    finally:
        store.close()
