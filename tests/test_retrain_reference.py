"""A shift that persists does not retrigger retraining: the retrained version's reference.

The stable version is trained before a shift; production traffic then stays shifted, and the
model is retrained on the labelled production rows. The new version's ``reference.json`` is
built from the production rows it was trained on, so the monitor's drift test (the policy's
level, the monitor's own ``drift_inputs`` and ``DriftTester`` on counts binned as the gateway
bins them) finds no drift in more of the same traffic, while the old version still does, and
so would a reference built from the whole training table (the old sample plus production).
A further change on top of the persistent shift is still seen. Through the monitor (a real
store, the autopilot's retrain, the worker in its subprocess), the production rows before the
holdout become the new reference and the event says so.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from driftgate import converter
from driftgate.converter import convert
from driftgate.converter.data import Table, save_table_npz, table_from_object
from driftgate.core.profile import NumericBins, ReferenceProfile, numeric_counts
from driftgate.monitor.drift import DatasetDrift, DriftTester, DriftThresholds, Verdict
from driftgate.monitor.policy import DriftPolicy, PolicyError, RetrainPolicy, parse_policy
from driftgate.monitor.retrain import RetrainJob, assemble, execute, reference_rows
from driftgate.monitor.service import drift_inputs

SHIFT = 1.0  # standard deviations feature x0 moves by, for good
FEATURES = 4


def _rows(rng: np.random.Generator, n: int, shift: float = 0.0) -> Table:
    x = rng.normal(size=(n, FEATURES))
    x[:, 0] += shift
    y = (x[:, 0] - 0.5 * x[:, 1] + 0.5 * rng.normal(size=n) > shift).astype(np.int64)
    return table_from_object(x, y)


def _job(root: Path, train: Table, holdout: Table, name: str, reference: int) -> RetrainJob:
    save_table_npz(train, root / f"{name}-train.npz")
    save_table_npz(holdout, root / f"{name}-holdout.npz")
    # A wide margin (5 points): the judge's power has tests of its own.
    return RetrainJob(
        "m", str(root / "models"), 1, str(root / f"{name}-train.npz"),
        str(root / f"{name}-holdout.npz"), trainer="", tolerance=0.05,
        task="classification", reference_rows=reference,
    )  # fmt: skip


def _drift(repository: Path, version: int, traffic: Table) -> DatasetDrift:
    """The monitor's verdict on ``traffic`` against the version's reference.json, at the
    default policy's level for one window."""
    path = repository / "m" / str(version) / "reference.json"
    profile = ReferenceProfile.from_dict(json.loads(path.read_text()))
    counts: dict[tuple[bool, str], dict[int, int]] = {}
    for feature in profile.features:
        assert isinstance(feature.bins, NumericBins)
        binned = numeric_counts(feature.bins.edges, traffic.column(feature.name), "float32")
        counts[(False, feature.name)] = dict(enumerate(int(c) for c in binned.counts))
    policy = DriftPolicy()
    tester = DriftTester(DriftThresholds(alpha=policy.alpha, min_rows=policy.min_rows))
    return tester.evaluate(*drift_inputs(profile, counts))


def _drifted(result: DatasetDrift) -> list[str]:
    return [f.name for f in result.features if f.verdict == Verdict.DRIFT]


def test_a_persistent_shift_does_not_alarm_on_the_retrained_version(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    repository = tmp_path / "models"
    before = _rows(rng, 5000)
    stable = LogisticRegression(max_iter=1000).fit(np.column_stack(before.columns), before.target)
    convert(stable, before, "m", repository)
    sample = converter.load_table(repository / "m" / "1" / "training_sample.npz")
    production = _rows(rng, 2400, SHIFT)  # labelled rows of the shifted traffic, oldest first
    train, holdout = assemble(sample, production, holdout_fraction=0.25)
    trained_on = production.rows - holdout.rows
    default_minimum = RetrainPolicy().reference_min_rows
    assert reference_rows(trained_on, default_minimum) == trained_on == 1800

    own = execute(_job(tmp_path, train, holdout, "own", trained_on))
    assert own.outcome == "succeeded" and own.version == 2, own.reason
    assert own.figures is not None
    assert (own.figures["reference_source"], own.figures["reference_rows"]) == ("production", 1800)
    # Too few production rows for the policy's minimum: the whole training table, as before.
    mixed = execute(_job(tmp_path, train, holdout, "mixed", reference_rows(trained_on, 5000)))
    assert mixed.outcome == "succeeded" and mixed.version == 3, mixed.reason
    assert mixed.figures is not None and mixed.figures["reference_source"] == "training"
    assert mixed.figures["reference_rows"] == train.rows == 5000 + 1800

    written = [
        json.loads((repository / "m" / v / "model.json").read_text())["training_data"]
        for v in ("1", "2", "3")
    ]
    assert [(t["reference_source"], t["reference_rows"]) for t in written] == [
        ("data", 5000), ("reference", 1800), ("data", 6800),
    ]  # fmt: skip

    later = _rows(rng, 20_000, SHIFT)  # an hour of the same shifted traffic
    assert _drift(repository, 2, later).verdict == Verdict.NO_DRIFT
    assert _drifted(_drift(repository, 1, later)) == ["x0"]  # the old version still alarms
    assert _drifted(_drift(repository, 3, later)) == ["x0"]  # and so would the mixture

    # A further change on top of the persistent shift is still drift for the new version.
    moved = later.columns[1] + 0.5
    further = Table(later.names, (later.columns[0], moved, *later.columns[2:]), later.target, "y")
    assert _drifted(_drift(repository, 2, further)) == ["x1"]


def test_a_reference_beyond_the_training_rows_is_refused(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    data = _rows(rng, 600)
    fitted = LogisticRegression(max_iter=1000).fit(np.column_stack(data.columns), data.target)
    convert(fitted, data, "m", tmp_path / "models")
    train, holdout = data.take(np.arange(300)), data.take(np.arange(300, 600))
    with pytest.raises(ValueError, match="reference_rows 301 is not within the 300 training"):
        execute(_job(tmp_path, train, holdout, "over", 301))
    assert not (tmp_path / "models" / "m" / "2").exists()


def test_the_reference_minimum_is_a_retrain_policy_key() -> None:
    assert reference_rows(999, 1000) == 0 and reference_rows(1000, 1000) == 1000
    assert parse_policy({"retrain": {"reference_min_rows": 300}}).retrain.reference_min_rows == 300
    with pytest.raises(PolicyError, match=r"retrain\.reference_min_rows: expected a value >= 1"):
        parse_policy({"retrain": {"reference_min_rows": 0}})


@pytest.mark.integration  # the retraining worker runs in a subprocess
def test_the_monitor_retrains_with_the_production_reference(tmp_path: Path) -> None:
    """Through the monitor: labelled records in a real store, the autopilot's retrain (no
    gateway: the new version is written, not deployed) and its event."""
    import time

    from prometheus_client import CollectorRegistry

    from driftgate.monitor.autopilot import Autopilot
    from driftgate.monitor.metrics import MonitorMetrics
    from driftgate.monitor.service import Monitor
    from driftgate.monitor.settings import MonitorSettings
    from driftgate.monitor.store import LabelIn, PredictionIn, Report, Store, sqlite_url

    rng = np.random.default_rng(11)
    repository, data = tmp_path / "models", tmp_path / "data"
    before = _rows(rng, 3000)
    stable = LogisticRegression(max_iter=1000).fit(np.column_stack(before.columns), before.target)
    convert(stable, before, "m", repository)
    settings = MonitorSettings(data_dir=data, repository=repository)
    monitor = Monitor(settings, Store(sqlite_url(data)), MonitorMetrics(CollectorRegistry()))
    production, now = _rows(rng, 2400, SHIFT), time.time()
    x = np.column_stack(production.columns).astype(np.float32)
    predicted = stable.predict(x)
    for sequence, start in enumerate(range(0, production.rows, 400)):
        records = [
            PredictionIn(f"r{i}", now - 60 + i * 0.01, "m", 1, x[i].tolist(), [], int(predicted[i]))
            for i in range(start, start + 400)
        ]
        monitor.ingest(Report("gw", sequence + 1, now, [], records), None)
    assert production.target is not None
    labels = [LabelIn(f"r{i}", int(y), now, "m") for i, y in enumerate(production.target)]
    assert monitor.add_labels(labels).accepted == production.rows
    # A wide margin (5 points), so that 600 holdout rows are enough evidence.
    policy = "[retrain]\nreference_min_rows = 1000\ntolerance = 0.05\n"
    (repository / "m" / "policy.toml").write_text(policy)

    result = Autopilot(monitor, None, data / "retrain").retrain("m", "a persistent shift")
    assert result is not None and result.outcome == "succeeded", result
    (event,) = [e for e in monitor.store.events("m") if e.kind == "retrain_succeeded"]
    assert event.version == 2 and event.figures["holdout_rows"] == 600
    assert event.figures["reference_source"] == "production"
    assert event.figures["reference_rows"] == 1800  # the production rows before the holdout
    meta = json.loads((repository / "m" / "2" / "model.json").read_text())["training_data"]
    assert (meta["reference_source"], meta["reference_rows"]) == ("reference", 1800)
    assert _drift(repository, 2, _rows(rng, 20_000, SHIFT)).verdict == Verdict.NO_DRIFT
    monitor.store.close()
