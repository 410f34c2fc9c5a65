"""An outlier detector's outlier rate as a drift signal: the test, and the monitor's gauges."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from scipy.stats import fisher_exact
from sklearn.ensemble import IsolationForest

from driftgate.converter import convert
from driftgate.core._proto.driftgate.monitor.v1 import monitor_pb2 as pb
from driftgate.core.profile import ReferenceProfile
from driftgate.monitor.drift import Verdict
from driftgate.monitor.metrics import MonitorMetrics
from driftgate.monitor.outliers import outlier_count, outlier_rate_verdict
from driftgate.monitor.service import Monitor
from driftgate.monitor.servicer import MonitorServicer
from driftgate.monitor.settings import MonitorSettings
from driftgate.monitor.store import Store


def test_a_doubled_outlier_rate_is_drift_with_its_figures() -> None:
    result = outlier_rate_verdict((200, 2000), (250, 5000), alpha=0.005)
    assert result.verdict == Verdict.DRIFT
    figures = result.figures()
    assert figures["test"] == "fisher_exact_rise" and figures["verdict"] == "drift"
    assert (figures["rate"], figures["reference_rate"]) == (0.1, 0.05)
    assert (figures["rows"], figures["reference_rows"]) == (2000, 5000)
    # Fisher's exact test, one-sided: the window (row 0) has more outliers than training.
    _, expected = fisher_exact([[200, 1800], [250, 4750]], alternative="greater")
    assert figures["p_value"] == pytest.approx(expected, rel=1e-9)


def test_the_training_rate_a_fall_or_a_tiny_rise_is_no_drift() -> None:
    assert outlier_rate_verdict((100, 2000), (250, 5000)).verdict == Verdict.NO_DRIFT
    assert outlier_rate_verdict((20, 2000), (250, 5000)).verdict == Verdict.NO_DRIFT
    # Significant on a million rows, but under the one-point floor.
    tiny = outlier_rate_verdict((55_000, 1_000_000), (50_000, 1_000_000))
    assert tiny.p_value < 1e-6 and tiny.verdict == Verdict.NO_DRIFT
    few = outlier_rate_verdict((50, 60), (250, 5000))
    assert few.verdict == Verdict.INSUFFICIENT_DATA and few.rows == 60


@pytest.mark.statistical
def test_undrifted_windows_alarm_at_most_alpha() -> None:
    """Both samples drawn at the same 5% rate: the share of DRIFT verdicts stays at alpha."""
    rng = np.random.default_rng(7)
    alpha, trials = 0.05, 2000
    alarms = sum(
        outlier_rate_verdict(
            (int(rng.binomial(1000, 0.05)), 1000), (int(rng.binomial(3000, 0.05)), 3000),
            alpha=alpha, floor=0.0,
        ).verdict == Verdict.DRIFT
        for _ in range(trials)
    )  # fmt: skip
    # Fisher's test is exact (conservative on discrete counts); 3 standard errors of the
    # simulation's own noise allowed.
    assert alarms / trials <= alpha + 3 * np.sqrt(alpha * (1 - alpha) / trials)


def test_outlier_count_reads_the_profile_and_the_store() -> None:
    assert outlier_count(("-1", "1"), (30, 70, 0)) == 30
    assert outlier_count(("-1", "1"), {0: 12, 1: 88, -1: 3}) == 12
    assert outlier_count(("no", "yes"), (30, 70, 0)) == 0


def _report(profile: ReferenceProfile, outliers: int, inliers: int) -> pb.ReportRequest:
    rows = outliers + inliers
    stats = pb.VersionStats(model="guard", version=1, requests=rows, rows=rows)
    for feature in profile.features:
        counts = np.asarray(feature.bins.counts, dtype=np.float64)
        scaled = np.floor(counts / counts.sum() * rows).astype(int).tolist()
        stats.features.add(name=feature.name, counts=scaled)
    stats.predictions.CopyFrom(pb.BinCounts(name="prediction", counts=[outliers, inliers, 0]))
    request = pb.ReportRequest(instance_id="gateway-1", sequence=1, versions=[stats])
    now = time.time_ns()
    request.sent_time.FromNanoseconds(now)
    request.window_start.FromNanoseconds(now - 5 * 10**9)
    return request


def test_the_monitor_exports_an_outlier_detectors_rate_and_verdict(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 3))
    detector = IsolationForest(n_estimators=20, contamination=0.05, random_state=0).fit(x)
    convert(detector, x, "guard", tmp_path / "models")
    settings = MonitorSettings(repository=tmp_path / "models", data_dir=tmp_path / "data")
    store, registry = Store(settings.url), CollectorRegistry()
    monitor = Monitor(settings, store, MonitorMetrics(registry))
    executor = ThreadPoolExecutor(1)
    try:
        profile = monitor.profile("guard", 1)
        # A window of 3,000 rows with 20% outliers, against the training's 5%.
        servicer = MonitorServicer(monitor, executor)
        asyncio.run(servicer.Report(_report(profile, 600, 2400), None))
        monitor.evaluate()
        labels = {"model": "guard", "version": "1"}
        assert registry.get_sample_value("driftgate_monitor_outlier_rate", labels) == 0.2
        reference = registry.get_sample_value("driftgate_monitor_outlier_reference_rate", labels)
        assert reference == pytest.approx(0.05, abs=0.002)
        verdict = "driftgate_monitor_outlier_verdict"
        assert registry.get_sample_value(verdict, {**labels, verdict: "drift"}) == 1
        assert registry.get_sample_value(verdict, {**labels, verdict: "no_drift"}) == 0
        # GetDrift (and so `driftgate drift`, the report and the prediction alarm) carries
        # it as a test of the prediction, with its figures.
        drift = asyncio.run(servicer.GetDrift(pb.GetDriftRequest(model="guard", version=1), None))
        (rate,) = [q for q in drift.prediction.quality if q.kind == "outlier"]
        assert (rate.count, rate.rows, rate.test) == (600, 3000, "fisher_exact_rise")
        assert rate.verdict == pb.DRIFT
        assert drift.prediction.verdict == pb.DRIFT
    finally:
        executor.shutdown()
        store.close()
