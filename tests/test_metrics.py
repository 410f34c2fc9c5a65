"""The metric families of both processes on fresh registries: names, label values and units.

What a dashboard or an alert reads: one unit per family, ratios 0-1, verdicts as state sets,
bounded causes instead of free text, no series left behind by a version that is gone, and
what a private registry would otherwise lack (``process_*``, ``driftgate_build_info``).
"""

from __future__ import annotations

import asyncio
import math
import platform
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

import driftgate
from driftgate.core.errors import InvalidInput, ResourceExhausted
from driftgate.core.telemetry import CAUSE_METADATA, PROMOTION_CAUSES, ROLLBACK_CAUSES
from driftgate.gateway.dataplane.record import VersionRecord
from driftgate.gateway.metrics import GatewayMetrics, ServingSnapshot, ServingView, cause_label
from driftgate.gateway.reconciler import ScanMetrics
from driftgate.gateway.reporter import LabelBuffer, MonitorReporter, StatisticsHub
from driftgate.gateway.statistics import VersionCollector
from driftgate.monitor.accuracy import Accuracy
from driftgate.monitor.drift import DatasetDrift, FeatureDrift, QualityDrift, Verdict
from driftgate.monitor.leader import Leadership
from driftgate.monitor.metrics import DRIFT_STATISTICS, MonitorMetrics
from driftgate.monitor.service import Monitor
from driftgate.monitor.settings import MonitorSettings
from driftgate.monitor.store import LabelIn, Store
from tests.test_reporter import REFERENCE, _label, _serve

VERDICT = "driftgate_monitor_drift_verdict"


def _view(version: int, role: str, weight: float) -> ServingView:
    return ServingView("m", version, role, weight, VersionRecord(), 0, 0)


def test_traffic_is_a_ratio_by_role_and_a_standby_has_none() -> None:
    registry = CollectorRegistry()
    metrics = GatewayMetrics(registry)
    views = [_view(1, "stable", 70.0), _view(2, "canary", 30.0), _view(3, "standby", 0.0)]
    metrics.watch(lambda: ServingSnapshot(versions=views, revisions={"m": 4}))

    def ratio(version: str, role: str) -> float | None:
        labels = {"model": "m", "version": version, "role": role}
        return registry.get_sample_value("driftgate_traffic_ratio", labels)

    assert ratio("1", "stable") == pytest.approx(0.7)
    assert ratio("2", "canary") == pytest.approx(0.3)
    assert ratio("3", "standby") is None
    assert registry.get_sample_value("driftgate_traffic_weight", {"model": "m"}) is None
    loaded = {"model": "m", "version": "3", "role": "standby"}
    assert registry.get_sample_value("driftgate_model_loaded", loaded) == 1


def test_causes_come_from_a_fixed_vocabulary() -> None:
    assert cause_label("Rollback", None) == cause_label("Promote", "") == "operator"
    assert cause_label("Rollback", "insufficient_evidence") == "insufficient_evidence"
    assert cause_label("Promote", "canary_passed") == "canary_passed"
    with pytest.raises(InvalidInput) as refused:
        cause_label("Promote", "canary_failed")  # a rollback's cause
    assert str(refused.value) == (
        f"Promote: metadata '{CAUSE_METADATA}' must be one of operator, canary_passed, "
        "got 'canary_failed'"
    )
    with pytest.raises(InvalidInput, match=r"got 'xxx.*\(100000 bytes\)"):
        cause_label("Rollback", "x" * 100_000)  # quoted short: a client's string never grows
    assert set(PROMOTION_CAUSES) | set(ROLLBACK_CAUSES) == {
        "operator",
        "canary_passed",
        "canary_failed",
        "insufficient_evidence",
    }


def test_promotions_and_rollbacks_are_counted_by_cause() -> None:
    registry = CollectorRegistry()
    metrics = GatewayMetrics(registry)
    metrics.rollbacks.labels("m", cause_label("Rollback", "canary_failed")).inc()
    metrics.promotions.labels("m", cause_label("Promote", None)).inc()
    counted = {
        (sample.name, tuple(sorted(sample.labels.items())))
        for family in registry.collect()
        if family.name in ("driftgate_rollbacks", "driftgate_promotions")
        for sample in family.samples
        if sample.name.endswith("_total")
    }
    assert counted == {
        ("driftgate_rollbacks_total", (("cause", "canary_failed"), ("model", "m"))),
        ("driftgate_promotions_total", (("cause", "operator"), ("model", "m"))),
    }


def test_forget_removes_every_series_of_a_released_version() -> None:
    registry = CollectorRegistry()
    metrics = GatewayMetrics(registry)
    for version in ("2", "3"):
        metrics.load_seconds.labels("m", version).observe(0.2)
        metrics.load_failures.labels("m", version).inc()
        metrics.shadow_requests.labels("m", version, "agree").inc()
        metrics.shadow_requests.labels("m", version, "dropped").inc()
        metrics.shadow_agreement.labels("m", version).set(0.9)
        metrics.shadow_seconds.labels("m", version).observe(0.01)
    metrics.forget("m", 3)
    metrics.forget("m", 4)  # never seen: nothing to remove, no error
    versions = {
        sample.labels.get("version")
        for family in registry.collect()
        for sample in family.samples
        if sample.labels.get("model") == "m"
    }
    assert versions == {"2"}


def test_both_registries_carry_process_metrics_and_build_info() -> None:
    for make in (GatewayMetrics, MonitorMetrics):
        registry = CollectorRegistry()
        make(registry)
        build = next(f for f in registry.collect() if f.name == "driftgate_build")
        (sample,) = build.samples
        assert sample.name == "driftgate_build_info" and sample.value == 1
        assert sample.labels["version"] == driftgate.__version__
        assert sample.labels["python"] == platform.python_version()
        assert sample.labels["numpy"] == np.__version__
        python = [
            sample.labels["version"]
            for family in registry.collect()
            if family.name == "python_info"
            for sample in family.samples
        ]
        assert python == [platform.python_version()]
        if sys.platform == "linux":  # ProcessCollector reads /proc
            assert (registry.get_sample_value("process_resident_memory_bytes") or 0) > 1e6
            assert registry.get_sample_value("process_cpu_seconds_total") is not None


def _feature(name: str, categorical: bool, verdict: Verdict) -> FeatureDrift:
    statistic = "chi_square" if categorical else "ks_statistic"
    distances = {"psi": 0.4, "js_distance": 0.2, "l_infinity": 0.1, statistic: 7.5}
    quality = QualityDrift("missing", 30, 1000, 10, 4000, 1e-6, 0.001, 0.01, Verdict.DRIFT)
    return FeatureDrift(
        name, categorical, 1000, distances, statistic, 3.0, 0.5, verdict, (quality,)
    )


def _drift() -> DatasetDrift:
    features = [
        _feature("age", False, Verdict.DRIFT),
        _feature("colour", True, Verdict.INSUFFICIENT_DATA),
    ]
    return DatasetDrift(1000, features, None, 0.5, Verdict.DRIFT)


def test_each_drift_statistic_has_its_own_family_and_verdicts_are_state_sets() -> None:
    registry = CollectorRegistry()
    metrics = MonitorMetrics(registry)
    metrics.publish_drift("m", 1, _drift())
    age = {"model": "m", "version": "1", "feature": "age"}
    colour = {**age, "feature": "colour"}

    def value(name: str, labels: dict[str, str]) -> float | None:
        return registry.get_sample_value(name, labels)

    assert value("driftgate_monitor_drift_psi", age) == 0.4
    assert value("driftgate_monitor_drift_js_distance", colour) == 0.2
    assert value("driftgate_monitor_drift_ks_statistic", age) == 7.5
    assert value("driftgate_monitor_drift_ks_statistic", colour) is None
    assert value("driftgate_monitor_drift_chi_square", colour) == 7.5
    assert value("driftgate_monitor_drift_ks_statistic_threshold", age) == 3.0  # max(3, 0.5)
    assert value("driftgate_monitor_drift_chi_square_threshold", colour) == 3.0
    assert value("driftgate_monitor_drift_psi_threshold", age) is None
    states = {"insufficient_data": 0.0, "no_drift": 0.0, "drift": 1.0}
    assert {s: value(VERDICT, {**age, VERDICT: s}) for s in states} == states
    assert value(VERDICT, {**colour, VERDICT: "insufficient_data"}) == 1.0
    quality = "driftgate_monitor_quality_verdict"
    assert value(quality, {**age, "kind": "missing", quality: "drift"}) == 1.0
    assert value("driftgate_monitor_quality_rate", {**age, "kind": "missing"}) == 0.03
    assert value("driftgate_monitor_dataset_drift_share", {"model": "m", "version": "1"}) == 0.5
    labels = {
        tuple(sorted(sample.labels))
        for family in registry.collect()
        if family.name.startswith("driftgate_monitor_drift_")
        and family.name not in (VERDICT, "driftgate_monitor_drift_alarm")
        for sample in family.samples
    }
    assert labels == {("feature", "model", "version")}  # no method label: one unit a family


def test_accuracy_figures_of_each_unit_have_their_own_family() -> None:
    registry = CollectorRegistry()
    metrics = MonitorMetrics(registry)
    classifier = Accuracy(100, 80, 0.8, accuracy=0.9, f1=0.85, log_loss=0.31)
    classifier.estimated_accuracy, classifier.estimated_accuracy_labelled = 0.88, 0.92
    metrics.publish_accuracy("c", 1, "1h", classifier)
    metrics.publish_accuracy("r", 1, "total", Accuracy(50, 50, 1.0, mae=1.5, rmse=2.5))
    hour = {"model": "c", "version": "1", "window": "1h"}
    total = {"model": "r", "version": "1", "window": "total"}
    expected = {
        ("driftgate_monitor_accuracy", "c"): 0.9,
        ("driftgate_monitor_f1_score", "c"): 0.85,
        ("driftgate_monitor_log_loss", "c"): 0.31,
        ("driftgate_monitor_accuracy_estimate", "c"): 0.88,
        ("driftgate_monitor_accuracy_estimate_labelled", "c"): 0.92,
        ("driftgate_monitor_label_coverage", "c"): 0.8,
        ("driftgate_monitor_mean_absolute_error", "r"): 1.5,
        ("driftgate_monitor_root_mean_squared_error", "r"): 2.5,
        ("driftgate_monitor_label_coverage", "r"): 1.0,
    }
    found = {
        (sample.name, sample.labels["model"]): sample.value
        for family in registry.collect()
        for sample in family.samples
        if sample.labels.get("version") == "1"
    }
    assert found == expected
    assert registry.get_sample_value("driftgate_monitor_accuracy", hour) == 0.9
    assert registry.get_sample_value("driftgate_monitor_accuracy", total) is None  # regressor


def test_retain_drops_every_series_of_the_versions_that_left() -> None:
    registry = CollectorRegistry()
    metrics = MonitorMetrics(registry)
    for version in (1, 2):
        metrics.publish_drift("m", version, _drift())
        metrics.publish_accuracy("m", version, "total", Accuracy(10, 5, 0.5, accuracy=0.6))
        metrics.show_alarm("m", version, "inputs", True)
    metrics.retain([("m", 2)])
    versions = {
        sample.labels["version"]
        for family in registry.collect()
        for sample in family.samples
        if "version" in sample.labels and sample.labels.get("model") == "m"
    }
    assert versions == {"2"}
    alarm = {"model": "m", "version": "2", "signal": "inputs"}
    assert registry.get_sample_value("driftgate_monitor_drift_alarm", alarm) == 1.0


def test_records_dropped_and_labels_refused_are_counted_by_cause() -> None:
    registry = CollectorRegistry()
    hub, labels = StatisticsHub(), LabelBuffer(capacity=2)
    collector = VersionCollector(REFERENCE, {"x": 1, "c": 1}, ["label"])
    hub.add("m", 1, 1, collector)
    # Nothing listens at port 1: the monitor is away, and records wait in a bounded buffer.
    reporter = MonitorReporter(
        "127.0.0.1:1", hub, labels, interval=3600, max_records=3, registry=registry
    )

    async def main() -> None:
        reporter.start()
        try:
            for i in range(5):
                _serve(collector, 1, f"r{i}")
            _serve(collector, 1, "x" * 300)  # an id over the 256 bytes a record keeps
            await reporter.flush()
        finally:
            await reporter.stop(final_flush_seconds=0)

    asyncio.run(main())
    dropped = "driftgate_reporting_dropped_records_total"
    assert registry.get_sample_value(dropped, {"cause": "buffer_full"}) == 2
    assert registry.get_sample_value(dropped, {"cause": "too_large"}) == 1
    assert registry.get_sample_value(dropped, {"cause": "count_failed"}) == 0
    labels.add([_label("a"), _label("b")])
    with pytest.raises(ResourceExhausted):
        labels.add([_label("c"), _label("d"), _label("e")])
    assert registry.get_sample_value("driftgate_feedback_refused_labels_total") == 3
    assert math.isclose(reporter.dropped_records, 3)


def _readme_section(readme: str, title: str) -> str:
    start = readme.index(f"\n### {title}\n")
    return readme[start : readme.index("\n#", start + 1)]


def _exported(registry: CollectorRegistry) -> set[str]:
    suffixes = {"counter": ("_total",), "histogram": ("", "_bucket", "_sum", "_count")}
    suffixes["info"] = ("_info",)
    return {
        family.name + suffix
        for family in registry.collect()
        if family.name.startswith("driftgate_")
        for suffix in suffixes.get(family.type, ("",))
    }


def test_the_readme_metrics_tables_name_exactly_what_the_code_exports(tmp_path: Path) -> None:
    gateway, monitor = CollectorRegistry(), CollectorRegistry()
    GatewayMetrics(gateway).watch(ServingSnapshot)
    ScanMetrics(gateway)
    MonitorReporter("127.0.0.1:1", StatisticsHub(), LabelBuffer(), registry=gateway)
    MonitorMetrics(monitor)
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    Leadership(store, "test", 5.0, monitor, lambda leading: None)  # never started
    store.close()
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    name = re.compile(r"`(driftgate_[a-z0-9_<>]+)")
    for registry, title in ((gateway, "Metrics"), (monitor, "Monitor metrics")):
        documented = set()
        for found in name.findall(_readme_section(readme, title)):
            if found.endswith("_"):
                continue  # a prefix: `driftgate_monitor_...`
            statistics = DRIFT_STATISTICS if "<statistic>" in found else ("",)
            documented |= {found.replace("<statistic>", s) for s in statistics}
        exported = _exported(registry)
        histograms = {n.removesuffix("_bucket") for n in exported if n.endswith("_bucket")}
        expected = {n for n in exported if not n.endswith(("_bucket", "_sum", "_count"))}
        assert documented - exported == set(), title  # the README names nothing that is not
        assert expected - histograms - documented == set(), title  # nor leaves one out


def test_held_labels_dropped_by_retention_are_counted(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    settings = MonitorSettings(
        data_dir=tmp_path, repository=tmp_path / "models", record_retention_seconds=60,
        label_delay_seconds=60,
    )  # fmt: skip
    registry = CollectorRegistry()
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    monitor = Monitor(settings, store, MonitorMetrics(registry))
    start = 1_700_000_000.0
    try:
        # a label whose prediction never arrives: held, then deleted past the label window
        assert store.add_labels([LabelIn("never", "yes", start, "churn")], start).unknown == 1
        assert monitor.prune(now=start + 2 * 86400)["pending_labels"] == 1
    finally:
        store.close()
    pruned = "driftgate_monitor_pruned_rows_total"
    assert registry.get_sample_value(pruned, {"table": "pending_labels"}) == 1
    assert registry.get_sample_value(pruned, {"table": "predictions"}) == 0
