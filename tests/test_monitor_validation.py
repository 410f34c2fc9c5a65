"""What the monitor ingests: reports and labels checked before the store, no socket.

Requests go through ``MonitorServicer`` methods called directly (protobuf in, the store of a
temporary SQLite file behind), so the conversion, the checks and the store are those a real
monitor runs; ``evaluate()`` runs over a store holding rows no check would let in today.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from driftgate.core._proto.driftgate.feedback.v1 import feedback_pb2 as fpb
from driftgate.core._proto.driftgate.monitor.v1 import monitor_pb2 as pb
from driftgate.core.errors import DriftgateError, FailedPrecondition, InvalidInput, quote
from driftgate.core.profile import (
    ReferenceProfile,
)
from driftgate.monitor.metrics import MonitorMetrics
from driftgate.monitor.service import Monitor
from driftgate.monitor.servicer import MonitorServicer
from driftgate.monitor.settings import MonitorSettings
from driftgate.monitor.store import Distribution, LabelIn, Report, Store, VersionCounts
from driftgate.monitor.validation import MAX_LABELS, check_labels
from tests.hostile_monitor_cases import MONITOR_CASES, MonitorCase
from tests.monitor_profiles import churn_profile

MODEL = "churn"
PLAIN = "plain"  # a version without reference.json: traffic counts only


def write_versions(root: Path) -> ReferenceProfile:
    """``churn`` 1 with a profile (age, spend numeric, plan categorical, no/yes predictions),
    ``plain`` 1 without one, ``broken`` 1 whose reference.json is not JSON."""
    profile = churn_profile()
    for model, reference in (
        (MODEL, json.dumps(profile.to_dict())),
        (PLAIN, None),
        ("broken", "{"),
    ):
        version = root / model / "1"
        version.mkdir(parents=True)
        (version / "model.onnx").write_bytes(b"not read by the monitor")
        if reference is not None:
            (version / "reference.json").write_text(reference)
    return profile


def good_report(profile: ReferenceProfile, sequence: int = 1, records: int = 2) -> Any:
    """A report as a gateway sends it: every feature on its bins, predictions, latency, rows."""
    stats = pb.VersionStats(model=MODEL, version=1, requests=10, errors=1, rows=100)
    for feature in profile.features:
        stats.features.add(name=feature.name, counts=list(feature.bins.counts), nan_count=1)
    assert profile.prediction is not None
    stats.predictions.CopyFrom(pb.BinCounts(name="prediction", counts=[60, 40, 0]))
    stats.latency.CopyFrom(
        pb.LatencyHistogram(upper_bounds_seconds=[0.01, 0.1], counts=[7, 2, 1], sum_seconds=0.5)
    )
    request = pb.ReportRequest(instance_id="gateway-1", sequence=sequence, versions=[stats])
    request.versions.add(model=PLAIN, version=1, requests=5, rows=5)  # no profile: no features
    now = time.time_ns()
    request.sent_time.FromNanoseconds(now)
    request.window_start.FromNanoseconds(now - 5 * 10**9)
    for i in range(records):
        record = request.records.add(request_id=f"{sequence}-{i}", model=MODEL, version=1)
        record.time.FromNanoseconds(now - 10**9)
        record.numeric_values.extend([0.1, float("nan")])
        record.categorical_values.append("a")
        record.prediction.string_value = "yes"
        record.prediction.probabilities.extend([0.3, 0.7])
    return request


class Harness:
    """A monitor on a temporary repository and store (SQLite unless ``store_url``), called
    without a socket."""

    def __init__(self, root: Path, store_url: str | None = None) -> None:
        self.profile = write_versions(root / "models")
        self.registry = CollectorRegistry()
        settings = MonitorSettings(
            repository=root / "models", data_dir=root / "data", store_url=store_url
        )
        self.store = Store(settings.url)
        self.monitor = Monitor(settings, self.store, MonitorMetrics(self.registry))
        self.executor = ThreadPoolExecutor(1)
        self.servicer = MonitorServicer(self.monitor, self.executor)
        self.sequence = 0

    def call(self, method: str, request: Any) -> Any:
        return asyncio.run(getattr(self.servicer, method)(request, None))

    def report(self, request: Any) -> Any:
        self.sequence += 1
        request.sequence = self.sequence
        return self.call("Report", request)

    def refused(self, method: str, request: Any) -> DriftgateError:
        before = self.store.table_rows()
        with pytest.raises(DriftgateError) as caught:
            self.call(method, request)
        assert self.store.table_rows() == before  # nothing of it reached the store
        return caught.value

    def sample(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0

    def close(self) -> None:
        self.executor.shutdown()
        self.store.close()


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path)
    yield h
    h.close()


def test_a_gateway_report_is_stored(harness: Harness) -> None:
    assert harness.report(good_report(harness.profile)).committed_sequence == 1
    counts = harness.store.counts(MODEL, 1, None, None)
    age = harness.profile.features[0].bins.counts
    assert age[0] == 0  # no training value is below the training minimum
    assert counts[(False, "age")][1] == age[1]
    assert counts[(True, "prediction")] == {0: 60, 1: 40}
    assert harness.store.traffic(PLAIN, 1, None, None)["requests"] == 5
    assert harness.store.table_rows()["predictions"] == 2
    assert harness.sample("driftgate_monitor_reports_total", result="applied") == 1


@pytest.mark.parametrize("case", MONITOR_CASES, ids=lambda c: c.name)
def test_hostile_case_is_refused_and_stores_nothing(harness: Harness, case: MonitorCase) -> None:
    started = time.perf_counter()
    error = harness.refused(case.method, case.build(MODEL, 1))
    assert error.code.name == case.expected
    assert len(error.message) < 400, error.message  # client strings quoted short
    assert time.perf_counter() - started < 5.0
    result = "reports_total" if case.method == "Report" else "labels_total"
    assert harness.sample(f"driftgate_monitor_{result}", result="invalid") >= 1


def _mutated(harness: Harness, change: Any) -> Any:
    request = good_report(harness.profile)
    change(request)
    return request


def _set_counts(feature: Any, counts: list[int]) -> None:
    del feature.counts[:]
    feature.counts.extend(counts)


# (what is wrong, the change to a good report, what the message says)
PROFILE_CASES = [
    (
        "feature bins",
        lambda r: _set_counts(r.versions[0].features[1], [1, 2, 3]),
        "versions[0].features[1].counts: 3 counts, expected 12: the bins of 'spend' in the "
        "reference profile of model churn version 1",
    ),
    (
        "a feature twice",
        lambda r: setattr(r.versions[0].features[1], "name", "age"),
        "versions[0].features[1].name: 'age' is not a feature of the reference profile of model "
        "churn version 1, or appears twice",
    ),
    (
        "a feature missing",
        lambda r: r.versions[0].features.pop(),
        "versions[0].features: 2 features, expected none or all 3 of the reference profile of "
        "model churn version 1; missing 'plan'",
    ),
    (
        "features without a profile",
        lambda r: r.versions[1].features.add(name="age", counts=[1]),
        "versions[1].features: 1 features, expected none: model plain version 1 has no "
        "reference profile",
    ),
    (
        "prediction bins",
        lambda r: r.versions[0].predictions.counts.append(1),
        "versions[0].predictions.counts: 4 counts, expected none or the 3 prediction bins",
    ),
    (
        "prediction name with NUL",
        lambda r: setattr(r.versions[0].predictions, "name", "pre\x00diction"),
        "versions[0].predictions.name: 'pre\\x00diction' contains NUL",
    ),
    (
        "record numeric values",
        lambda r: r.records[1].numeric_values.append(1.0),
        "records[1].numeric_values: 3 values, expected 2 (the numeric features of model churn "
        "version 1)",
    ),
    (
        "record categorical values",
        lambda r: r.records[0].categorical_values.append("b"),
        "records[0].categorical_values: 2 values, expected 1",
    ),
    (
        "record of a version not in the repository",
        lambda r: setattr(r.records[0], "version", 7),
        "records[0]: model churn has no version 7 in the monitor's repository",
    ),
    (
        "record time before 2000",
        lambda r: r.records[0].time.FromSeconds(5),
        "records[0].time: 5 s since the epoch, expected a time between 2000-01-01",
    ),
    (
        "latency sum",
        lambda r: setattr(r.versions[0].latency, "sum_seconds", -1.0),
        "versions[0].latency.sum_seconds: -1.0, expected a finite sum >= 0",
    ),
    (
        "latency bound past 1e6 s",
        lambda r: r.versions[0].latency.upper_bounds_seconds.__setitem__(1, 1e301),
        "versions[0].latency.upper_bounds_seconds[1]: 1e+301, expected bounds increasing",
    ),
    (
        "a 100 KB model name",
        lambda r: setattr(r.versions[0], "model", "x" * 100_000),
        f"versions[0].model: invalid model name {quote('x' * 100_000)}: expected",
    ),
]


@pytest.mark.parametrize(
    ("change", "message"), [c[1:] for c in PROFILE_CASES], ids=[c[0] for c in PROFILE_CASES]
)
def test_a_report_off_its_profile_is_refused_naming_the_field(
    harness: Harness, change: Any, message: str
) -> None:
    error = harness.refused("Report", _mutated(harness, change))
    assert isinstance(error, InvalidInput)
    assert message in error.message


def test_limits_hold_at_their_edges(harness: Harness) -> None:
    def with_id(request_id: str) -> Any:
        return _mutated(harness, lambda r: setattr(r.records[0], "request_id", request_id))

    harness.report(with_id("r" * 256))
    harness.report(with_id("é" * 128))  # 256 bytes
    harness.refused("Report", with_id("é" * 129))  # 258 bytes, 129 characters
    only = pb.ReportRequest(instance_id="gateway-2", sequence=1)
    only.versions.add(model=PLAIN, version=1, requests=2**53 - 1)
    assert harness.call("Report", only).committed_sequence == 1
    only.sequence, only.versions[0].requests = 2, 2**53 - 1
    only.versions[0].rows = 1
    error = harness.refused("Report", only)
    assert "versions: the counts add up to 9007199254740992" in error.message
    batch = [LabelIn(f"r{i}", 1, time.time()) for i in range(MAX_LABELS)]
    check_labels(batch, time.time())
    with pytest.raises(InvalidInput, match="labels: 10001 entries, expected at most 10000"):
        check_labels([*batch, batch[0]], time.time())


def test_labels_are_checked_before_the_join(harness: Harness) -> None:
    harness.report(good_report(harness.profile))
    ok = fpb.SendLabelsRequest(labels=[fpb.Label(request_id="1-0", model=MODEL, string_value="no")])
    assert harness.call("SendLabels", ok).accepted == 1
    bad = fpb.SendLabelsRequest(
        labels=[fpb.Label(request_id="1-1", string_value="no"), fpb.Label(request_id="x" * 300)]
    )
    error = harness.refused("SendLabels", bad)
    assert (
        error.message == "labels[1]: no value, expected string_value, int64_value or double_value"
    )
    bad.labels[1].int64_value = 1
    assert "labels[1].request_id: 'xxxxxxxx" in harness.refused("SendLabels", bad).message
    assert harness.sample("driftgate_monitor_labels_total", result="invalid") == 4


def test_an_unreadable_profile_fails_the_precondition(harness: Harness) -> None:
    request = pb.ReportRequest(instance_id="gateway-1", sequence=1)
    request.versions.add(model="broken", version=1, requests=1)
    error = harness.refused("Report", request)
    assert isinstance(error, FailedPrecondition)
    assert "reference.json of model 'broken' version 1 is unreadable" in error.message


def _stored_before_checks(store: Store, now: float) -> None:
    """Rows a monitor stored before reports were checked: they stay until retention ends."""
    rows = [Distribution("age", [5, 5])]
    versions = [VersionCounts(m, v, rows) for m, v in (("", 1), (MODEL, -1), ("broken", 1))]
    store.ingest(Report("old-gateway", 1, now - 60, versions))


def test_evaluate_goes_on_past_a_failing_version(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    now = time.time()
    _stored_before_checks(harness.store, now)
    harness.report(good_report(harness.profile, records=20))
    with caplog.at_level(logging.WARNING, logger="driftgate.monitor.service"):
        harness.monitor.evaluate(now + 1)
        harness.monitor.evaluate(now + 2)
    labels = {"model": MODEL, "version": "1"}
    assert harness.sample("driftgate_monitor_dataset_drift_share", **labels) == 0.0
    verdict = "driftgate_monitor_drift_verdict"
    states = [
        harness.sample(verdict, feature="age", **labels, **{verdict: state})
        for state in ("insufficient_data", "no_drift", "drift")
    ]
    assert sorted(states) == [0.0, 0.0, 1.0]
    coverage = {"model": MODEL, "version": "1", "window": "total"}
    assert harness.registry.get_sample_value("driftgate_monitor_label_coverage", coverage) == 0.0
    # '' fails its name check, churn -1 its version check; broken (unreadable profile) has no
    # drift to compare and its accuracy is still evaluated.
    failures = "driftgate_monitor_evaluation_failures_total"
    assert harness.sample(failures, model="__invalid__") == 2
    assert harness.sample(failures, model=MODEL) == 2
    assert harness.sample(failures, model="broken") == 0
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 2  # once per failing version; the second round logs a line
    assert sum("failed again" in r.getMessage() for r in caplog.records) == 2
