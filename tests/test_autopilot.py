"""The autopilot over a real store and a fake Control service: a canary analysis survives a
restart of the monitor, and the scheduler keeps its jobs in the monitor's database."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from sklearn.linear_model import LogisticRegression

from driftgate.converter import convert
from driftgate.monitor.autopilot import Autopilot
from driftgate.monitor.control_client import DeploymentView
from driftgate.monitor.metrics import MonitorMetrics
from driftgate.monitor.scheduler import PolicyScheduler
from driftgate.monitor.service import Monitor
from driftgate.monitor.settings import MonitorSettings
from driftgate.monitor.store import Store, sqlite_url

MODEL = "m"
POLICY = "[canary]\ninterval = 10\nsteps = [10, 25, 50]\ndeadline = 60\n"


@dataclass
class FakeControl:
    stable: int = 1
    canary: int = 2
    weight: float = 5.0
    revision: int = 1
    calls: list[tuple[Any, ...]] = field(default_factory=list)

    def status(self, model: str) -> DeploymentView:
        return DeploymentView(model, self.stable, self.canary, self.weight, self.revision)

    def deploy_canary(self, model: str, version: int, weight: float, reason: str) -> None:
        self.canary, self.weight = version, weight
        self.calls.append(("deploy", version, weight))

    def pin_stable(self, model: str, version: int, reason: str) -> None:
        self.calls.append(("pin", version))

    def set_traffic(self, model: str, weight: float, reason: str, revision: int) -> None:
        self.weight, self.revision = weight, self.revision + 1
        self.calls.append(("traffic", weight))

    def promote(self, model: str, reason: str, revision: int, cause: str = "") -> None:
        self.stable, self.canary, self.weight = self.canary, 0, 0.0
        self.calls.append(("promote",))

    def rollback(self, model: str, reason: str, revision: int, cause: str = "") -> None:
        self.canary, self.weight = 0, 0.0
        self.calls.append(("rollback",))


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def _repository(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    x = np.random.default_rng(0).normal(size=(200, 3)).astype(np.float32)
    y = (x[:, 0] > 0).astype(int)
    for _ in range(2):
        convert(LogisticRegression().fit(x, y), x, MODEL, root, labels=y)
    (root / MODEL / "policy.toml").write_text(POLICY)
    return root


def _autopilot(root: Path, data: Path, control: FakeControl, clock: Clock) -> Autopilot:
    settings = MonitorSettings(data_dir=data, repository=root)
    store = Store(sqlite_url(data), bucket_seconds=1)
    registry = CollectorRegistry()
    monitor = Monitor(settings, store, MonitorMetrics(registry))
    return Autopilot(monitor, control, data / "retrain", clock=clock)


def _served(pilot: Autopilot, sequence: int, time: float, canary: int, stable: int) -> None:
    """A gateway's report: requests of the canary (2) and the stable (1), no errors, the same
    latencies (a quarter each at 1, 2.5, 5 and 10 ms)."""
    from driftgate.monitor.store import Report, VersionCounts

    bounds = (0.001, 0.0025, 0.005, 0.01)
    versions = [
        VersionCounts(MODEL, v, requests=n, rows=n, latency_bounds=bounds,
                      latency_counts=[n // 4] * 4 + [0])
        for v, n in ((2, canary), (1, stable))
    ]  # fmt: skip
    pilot.store.ingest(Report("gateway-1", sequence, time, versions))


def test_a_restart_mid_analysis_resumes_at_the_step_it_reached(tmp_path: Path) -> None:
    root, data = _repository(tmp_path), tmp_path / "data"
    control, clock = FakeControl(), Clock()
    first = _autopilot(root, data, control, clock)
    assert first.analyse_canary(MODEL).action == "start"  # type: ignore[union-attr]
    # 1200 canary requests without an error: enough for the error rate's non-inferiority
    # test (margin 1 point) at its level per look, 0.01 over 6 planned looks.
    _served(first, 1, clock.now + 2, canary=1200, stable=4800)
    clock.now += 11
    looked = first.analyse_canary(MODEL)
    assert looked is not None and looked.action == "step"
    assert looked.figures["checks"]["errors"]["outcome"] == "pass"
    assert looked.figures["checks"]["errors"]["canary_n"] == 1200
    assert control.weight == 25.0
    first.store.close()  # the monitor stops (or dies) here

    second = _autopilot(root, data, control, clock)  # a new process on the same store
    clock.now += 5
    assert second.analyse_canary(MODEL).action == "wait"  # type: ignore[union-attr]
    clock.now += 6
    resumed = second.analyse_canary(MODEL)
    assert resumed is not None and resumed.action == "step"
    assert resumed.state.looks == 2 and "errors" in resumed.state.passed
    clock.now += 11
    assert second.analyse_canary(MODEL).action == "promote"  # type: ignore[union-attr]
    assert control.calls == [("traffic", 10.0), ("traffic", 25.0), ("traffic", 50.0), ("promote",)]
    kinds = [e.kind for e in reversed(second.store.events(MODEL))]
    assert kinds == ["canary_started", "canary_step", "canary_step", "promotion"]
    assert second.store.get_state(MODEL, "canary") is None
    registry_value = second.monitor.metrics.events.labels(MODEL, "promotion")._value.get()
    assert registry_value == 1.0


def test_scheduler_jobs_live_in_the_store_and_survive_a_restart(tmp_path: Path) -> None:
    root, data = _repository(tmp_path), tmp_path / "data"
    control, clock = FakeControl(), Clock()
    pilot = _autopilot(root, data, control, clock)
    scheduler = PolicyScheduler(pilot, sync_interval=60)
    scheduler.start()
    try:
        assert scheduler.job_ids() == [f"{MODEL}:canary", f"{MODEL}:drift"]
    finally:
        scheduler.shutdown()
    pilot.store.close()
    reopened = Store(sqlite_url(data))
    with reopened.engine.connect() as connection:
        import sqlalchemy as sa

        ids = sorted(r[0] for r in connection.execute(sa.text("SELECT id FROM apscheduler_jobs")))
    assert f"{MODEL}:canary" in ids and f"{MODEL}:drift" in ids
    reopened.close()


def _report(pilot: Autopilot, sequence: int, time: float, drifted: bool) -> None:
    """A report of 400 rows of version 1: in the training proportions, or every value of
    every feature in its top bin."""
    from driftgate.monitor.store import Distribution, Report, VersionCounts

    profile = pilot.monitor.profile(MODEL, 1)
    distributions = []
    for feature in profile.features:
        reference = np.asarray(feature.bins.counts, dtype=np.float64)
        if drifted:
            counts = np.zeros(reference.size, dtype=np.int64)
            counts[-1] = 400
        else:
            counts = np.random.default_rng(sequence).multinomial(400, reference / reference.sum())
        distributions.append(Distribution(feature.name, [int(c) for c in counts]))
    version = VersionCounts(MODEL, 1, distributions, requests=400, rows=400)
    pilot.store.ingest(Report("gateway-1", sequence, time, [version]))


def test_drift_windows_are_consecutive_and_each_is_tested_once(tmp_path: Path) -> None:
    root, data = _repository(tmp_path), tmp_path / "data"
    (root / MODEL / "policy.toml").write_text(
        "[drift]\nwindow = 60\nmin_rows = 100\n[retrain]\nenabled = false\n"
    )
    control, clock = FakeControl(canary=0, weight=0.0), Clock()
    pilot = _autopilot(root, data, control, clock)
    start = 1_700_000_040.0  # a multiple of the 60 s window
    registry = pilot.monitor.metrics.registry
    labels = {"model": MODEL, "version": "1", "signal": "inputs"}

    _report(pilot, 1, start + 10, drifted=True)
    clock.now = start + 61  # the window [start, start + 60) ended a bucket (1 s) ago
    first = pilot.evaluate_drift(MODEL)
    assert first["evaluated"] and first["window_end"] == start + 60
    assert first["drift"]["rows"] == 400 and first["streak"] == 1
    (event,) = pilot.store.events(MODEL)
    assert event.kind == "drift_alarm"
    figures = event.figures["drifted"]["x0"]["distribution"]
    assert figures["test"] == "kolmogorov_smirnov" and figures["rows"] == 400
    assert figures["reference_rows"] == 200 and figures["value"] > figures["critical_value"]
    assert event.figures["alpha"] == pytest.approx(0.5 * 60 / (30 * 86400))
    assert registry.get_sample_value("driftgate_monitor_drift_alarm", labels) == 1.0

    # The same window is not tested again, however often the policy looks.
    for _ in range(5):
        clock.now += 10
        assert not pilot.evaluate_drift(MODEL)["evaluated"]
    assert len(pilot.store.events(MODEL)) == 1

    # The next window holds undrifted rows only: no drift, the alarm clears.
    _report(pilot, 2, start + 70, drifted=False)
    clock.now = start + 121
    second = pilot.evaluate_drift(MODEL)
    assert second["evaluated"] and second["streak"] == 0 and second["drift"]["drifted"] == {}
    assert registry.get_sample_value("driftgate_monitor_drift_alarm", labels) == 0.0


def test_canary_predictions_are_counted_on_the_stable_versions_bins(tmp_path: Path) -> None:
    """Two regressors with different prediction edges: the canary's predictions are binned
    again from its records on the stable's edges, so the two count vectors are comparable."""
    from sklearn.linear_model import LinearRegression

    from driftgate.core.profile import numeric_counts
    from driftgate.monitor.canary import AnalysisState
    from driftgate.monitor.store import PredictionIn, Report

    root, data = tmp_path / "models", tmp_path / "data"
    x = np.random.default_rng(1).normal(size=(300, 3)).astype(np.float32)
    for scale, shift in ((2.0, 0.0), (5.0, 3.0)):
        target = x[:, 0] * scale + shift
        convert(LinearRegression().fit(x, target), x, MODEL, root, labels=target)
    clock = Clock()
    pilot = _autopilot(root, data, FakeControl(), clock)
    values = [float(v) for v in np.linspace(-10, 10, 41)]
    records = [
        PredictionIn(f"r{i}", clock.now + 1, MODEL, 2, [0.0, 0.0, 0.0], [], value)
        for i, value in enumerate(values)
    ]
    pilot.store.ingest(Report("gateway-1", 1, clock.now + 1, [], records))
    state = AnalysisState(MODEL, 2, 1, 0, clock.now, clock.now)
    figures = pilot.canary_figures(MODEL, state, clock.now + 5)
    stable_bins = pilot.monitor.profile(MODEL, 1).prediction
    own_bins = pilot.monitor.profile(MODEL, 2).prediction
    assert stable_bins != own_bins and figures.task == "regression"
    expected = numeric_counts(stable_bins.edges, values, stable_bins.dtype).counts  # type: ignore[union-attr]
    assert figures.canary.predictions == tuple(int(c) for c in expected)
    assert sum(figures.canary.predictions) == 41


@pytest.mark.integration
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_scheduler_ended_by_a_locked_store_is_restarted_with_its_jobs(tmp_path: Path) -> None:
    import sqlite3
    import threading
    import time

    root, data = _repository(tmp_path), tmp_path / "data"
    pilot = _autopilot(root, data, FakeControl(), Clock())
    scheduler = PolicyScheduler(pilot, sync_interval=60)
    scheduler.start()  # the canary job runs every 2.5 s

    def next_run(job: str) -> float:
        with sqlite3.connect(data / "monitor.db") as db:
            query = "SELECT next_run_time FROM apscheduler_jobs WHERE id = ?"
            return float(db.execute(query, (job,)).fetchone()[0])

    # Another writer holds the store for 13 s, past the busy timeout (10 s): the scheduler's
    # write of a job's next run time fails, and APScheduler's thread ends with it.
    writer = sqlite3.connect(data / "monitor.db", isolation_level=None, check_same_thread=False)
    writer.execute("BEGIN IMMEDIATE")
    release = threading.Timer(13.0, writer.rollback)
    release.start()
    try:
        deadline = time.monotonic() + 30
        restarted = False
        while not restarted and time.monotonic() < deadline:
            time.sleep(0.5)
            restarted = scheduler.ensure_running()
        release.join()
        assert restarted, "the scheduler's thread never ended: the test did not lock the store"
        counter = pilot.monitor.metrics.scheduler_restarts._value.get()
        assert counter == 1
        assert scheduler.job_ids() == [f"{MODEL}:canary", f"{MODEL}:drift"]
        before = next_run(f"{MODEL}:canary")
        time.sleep(6)
        assert next_run(f"{MODEL}:canary") > before  # its jobs run again
        assert not scheduler.ensure_running()  # and its thread is alive
    finally:
        release.cancel()
        writer.close()
        scheduler.shutdown()
        pilot.store.close()
