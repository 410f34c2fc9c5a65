"""The monitor's Prometheus metrics, registered on a registry the caller owns.

Figures of a model version (drift, data quality, accuracy, the policy's alarm) are not kept in
metric objects: ``MonitorMetrics`` holds the last evaluation of each version active in the
default window, and ``VersionCollector`` turns it into series when Prometheus scrapes (the
documented way to export state that comes and goes). ``retain`` drops the versions that left
the window, so their series disappear instead of showing their last value forever.

Each family has one unit: a distance or statistic per family (``..._drift_psi``,
``..._drift_js_distance``...), accuracy apart from F1, log loss and the regression errors.
Verdicts are state sets (one 0/1 series per state, the state in a label named after the
family, as OpenMetrics defines them). Series and labels (the README lists them with their use):

- ``driftgate_monitor_drift_<statistic>{model, version, feature}`` for statistic in psi,
  js_distance, ks_statistic, chi_square, l_infinity: that distance of the default window from
  the reference; the prediction distribution is feature ``__prediction__``.
- ``driftgate_monitor_drift_<statistic>_threshold{model, version, feature}``: the value the
  verdict statistic must exceed (max of calibrated critical value and effect-size floor).
- ``driftgate_monitor_drift_verdict{model, version, feature, driftgate_monitor_drift_verdict}``:
  1 for the state the window is in (insufficient_data, no_drift, drift), 0 for the others.
- ``driftgate_monitor_dataset_drift_share{model, version}``: share of drifted features (0-1).
- ``driftgate_monitor_drift_alarm{model, version, signal}``: 1 while the drift policy's alarm
  is raised (``monitor.autopilot``), 0 otherwise; signal ``inputs`` (the dataset verdict) or
  ``prediction``. The policy tests consecutive windows once each, so this gauge's false
  alarms over time are bounded (``drift.false_alarms`` per 30 days); the verdicts above
  describe the sliding default window every ``evaluate_interval`` and are not: alert on this.
- ``driftgate_monitor_quality_rate{model, version, feature, kind}`` and
  ``driftgate_monitor_quality_reference_rate{model, version, feature, kind}``: the share of a
  feature's values in the default window (and in the training data) that are ``missing``
  (NaN, +-Inf, None, empty), ``infinite`` or ``out_of_range``; the reference's ``infinite``
  rate is its missing rate, the bound the test uses (``monitor.quality``).
- ``driftgate_monitor_quality_verdict{model, version, feature, kind,
  driftgate_monitor_quality_verdict}``: the data-quality test's state set (a feature whose
  quality test says drift has the drift state of ``driftgate_monitor_drift_verdict`` too).
- ``driftgate_monitor_accuracy``, ``..._f1_score``, ``..._log_loss``,
  ``..._mean_absolute_error``, ``..._root_mean_squared_error``, all
  ``{model, version, window}`` (window: the default window's length such as ``1h``, or
  ``total``): labelled figures. ``driftgate_monitor_accuracy_estimate{model, version, window}``:
  the label-free estimate over every prediction of the window (``monitor.accuracy``: the
  calibrated expected accuracy); ``..._accuracy_estimate_labelled``: the same over the labelled
  predictions only, the rows ``driftgate_monitor_accuracy`` is measured on.
- ``driftgate_monitor_label_coverage{model, version, window}``,
  ``driftgate_monitor_labels_total{result}`` (accepted, duplicate, unknown: held,
  ambiguous: named no model while several models have the request id, invalid: in a batch
  refused with INVALID_ARGUMENT).
- ``driftgate_monitor_reports_total{result}`` (applied, duplicate, invalid: refused with
  INVALID_ARGUMENT), ``driftgate_monitor_report_lag_seconds`` (receipt minus the gateway's
  send time).
- ``driftgate_monitor_evaluation_failures_total{model}``: drift and accuracy evaluations of a
  model version that failed (logged; the other versions are evaluated all the same); a model
  name the repository would refuse is counted as ``__invalid__``.
- ``driftgate_monitor_store_rows{table}``, ``driftgate_monitor_store_bytes``.
- ``driftgate_monitor_pruned_rows_total{table}``: rows deleted by retention; those of
  ``pending_labels`` are labels whose prediction never arrived, dropped unjoined.
- ``driftgate_monitor_events_total{model, kind}``: policy decisions (``EVENT_KINDS``).
- ``process_*``, ``python_info`` and ``driftgate_build_info`` (``driftgate.core.telemetry``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric, StateSetMetricFamily
from prometheus_client.registry import Collector

from driftgate.core.telemetry import register_process_metrics
from driftgate.monitor.accuracy import Accuracy
from driftgate.monitor.drift import DatasetDrift, FeatureDrift, Verdict
from driftgate.monitor.outliers import OutlierRate

__all__ = [
    "ACCURACY_FAMILIES",
    "DRIFT_STATISTICS",
    "EVENT_KINDS",
    "INVALID_MODEL",
    "PREDICTION_FEATURE",
    "MonitorMetrics",
    "VersionCollector",
    "VersionFigures",
]

PREDICTION_FEATURE = "__prediction__"
# The ``model`` label of a failure whose model name is not a valid one (stored before reports
# were checked): a client's string never becomes a label.
INVALID_MODEL = "__invalid__"
# Every kind of policy event (monitor.autopilot writes them); each model gets a zero series per
# kind from the start, so rates and alerts see a counter before its first increment.
EVENT_KINDS = (
    "drift_alarm",
    "accuracy_drop",
    "retrain_started",
    "retrain_succeeded",
    "retrain_failed",
    "retrain_rejected",
    "canary_started",
    "canary_step",
    "canary_check_failed",
    "promotion",
    "rollback",
    "canary_ended",
    "action_superseded",
    "stable_pinned",
    "policy_error",
)
#: each distance and statistic of ``monitor.drift``, with what its family documents
DRIFT_STATISTICS = {
    "psi": "Population stability index (smoothed proportions)",
    "js_distance": "Jensen-Shannon distance, base 2, 0-1",
    "ks_statistic": "Kolmogorov-Smirnov statistic on the binned CDFs, 0-1 (numeric features)",
    "chi_square": "Chi-square homogeneity statistic (categorical features)",
    "l_infinity": "Largest absolute difference of bin proportions, 0-1",
}
#: Accuracy attribute -> (family, documentation): one unit per family
ACCURACY_FAMILIES = {
    "accuracy": ("driftgate_monitor_accuracy", "Share of labelled predictions that were right"),
    "f1": ("driftgate_monitor_f1_score", "F1 score (binary: of the second class; else macro)"),
    "log_loss": ("driftgate_monitor_log_loss", "Mean log loss of the labelled predictions, nats"),
    "mae": ("driftgate_monitor_mean_absolute_error", "Mean absolute error, in the target's unit"),
    "rmse": (
        "driftgate_monitor_root_mean_squared_error",
        "Root mean squared error, in the target's unit",
    ),
}
_STATES = {
    Verdict.INSUFFICIENT_DATA: "insufficient_data",
    Verdict.NO_DRIFT: "no_drift",
    Verdict.DRIFT: "drift",
}
_VERSION = ("model", "version")
_FEATURE = (*_VERSION, "feature")
_WINDOW = (*_VERSION, "window")
Key = tuple[str, int]


@dataclass
class VersionFigures:
    """The last evaluation of one model version, as the collector exports it."""

    drift: DatasetDrift | None = None
    accuracy: dict[str, Accuracy] = field(default_factory=dict)  # by window label
    alarm: dict[str, bool] = field(default_factory=dict)  # by signal
    outliers: OutlierRate | None = None  # an outlier detector's outlier rate (default window)


class MonitorMetrics:
    """Every monitor metric family; per-version figures through ``publish_*``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self._versions: dict[Key, VersionFigures] = {}
        self.labels = Counter(
            "driftgate_monitor_labels",
            "Labels received, by result (accepted, duplicate, unknown, ambiguous, invalid)",
            ("result",),
            registry=registry,
        )
        self.reports = Counter(
            "driftgate_monitor_reports",
            "Reports received, by result (applied, duplicate, invalid)",
            ("result",),
            registry=registry,
        )
        self.evaluation_failures = Counter(
            "driftgate_monitor_evaluation_failures",
            "Drift and accuracy evaluations of a model version that failed, by model",
            ("model",),
            registry=registry,
        )
        self.report_lag = Histogram(
            "driftgate_monitor_report_lag_seconds",
            "Time from a gateway sending a report to the monitor committing it",
            buckets=(0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0),
            registry=registry,
        )
        self.events = Counter(
            "driftgate_monitor_events",
            "Policy decisions recorded as events, by model and kind",
            ("model", "kind"),
            registry=registry,
        )
        self.scheduler_restarts = Counter(
            "driftgate_monitor_scheduler_restarts",
            "Restarts of the policy scheduler after its thread ended on an error",
            registry=registry,
        )
        self.store_rows = Gauge(
            "driftgate_monitor_store_rows", "Rows per store table", ("table",), registry=registry
        )
        self.pruned_rows = Counter(
            "driftgate_monitor_pruned_rows",
            "Rows deleted by retention, by table (pending_labels: labels held for a prediction "
            "that never arrived, dropped unjoined)",
            ("table",),
            registry=registry,
        )
        self.store_bytes = Gauge(
            "driftgate_monitor_store_bytes",
            "Size of the SQLite store files (0 for PostgreSQL)",
            registry=registry,
        )
        registry.register(VersionCollector(self))
        register_process_metrics(registry)

    def expose_events(self, model: str) -> None:
        """Create the zero-valued event series of ``model`` (idempotent)."""
        for kind in EVENT_KINDS:
            self.events.labels(model, kind)

    def _figures(self, model: str, version: int) -> VersionFigures:
        found = self._versions.get((model, version))
        if found is None:
            found = self._versions[(model, version)] = VersionFigures()
        return found

    def publish_drift(self, model: str, version: int, result: DatasetDrift) -> None:
        self._figures(model, version).drift = result

    def publish_accuracy(self, model: str, version: int, window: str, result: Accuracy) -> None:
        self._figures(model, version).accuracy[window] = result

    def publish_outliers(self, model: str, version: int, result: OutlierRate) -> None:
        self._figures(model, version).outliers = result

    def show_alarm(self, model: str, version: int, signal: str, raised: bool) -> None:
        self._figures(model, version).alarm[signal] = raised

    def retain(self, keep: Iterable[Key]) -> None:
        """Forget every version but those in ``keep``: their series leave ``/metrics``."""
        wanted = set(keep)
        for key in [k for k in list(self._versions) if k not in wanted]:
            self._versions.pop(key, None)

    def versions(self) -> list[tuple[Key, VersionFigures]]:
        """A copy of what is exported, for the collector (another thread) and tests."""
        return sorted(list(self._versions.items()))


class VersionCollector(Collector):
    """Exports the last evaluation of every retained version, read when Prometheus scrapes."""

    def __init__(self, metrics: MonitorMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        families = _Families()
        for (model, version), figures in self._metrics.versions():
            labels = [model, str(version)]
            if figures.drift is not None:
                families.add_drift(labels, figures.drift)
            for window, accuracy in list(figures.accuracy.items()):
                families.add_accuracy([*labels, window], accuracy)
            for signal, raised in list(figures.alarm.items()):
                families.alarm.add_metric([*labels, signal], int(raised))
            if figures.outliers is not None:
                families.add_outliers(labels, figures.outliers)
        yield from families.all()


class _Families:
    """The per-version families of one scrape."""

    def __init__(self) -> None:
        self.distance = {
            name: GaugeMetricFamily(
                f"driftgate_monitor_drift_{name}", f"{doc}, default window", labels=_FEATURE
            )
            for name, doc in DRIFT_STATISTICS.items()
        }
        self.threshold = {
            name: GaugeMetricFamily(
                f"driftgate_monitor_drift_{name}_threshold",
                f"Value driftgate_monitor_drift_{name} must exceed for a drift verdict, where "
                "it is the verdict statistic: max(calibrated critical value, floor)",
                labels=_FEATURE,
            )
            for name in DRIFT_STATISTICS
        }
        self.verdict = StateSetMetricFamily(
            "driftgate_monitor_drift_verdict",
            "Drift verdict of the default window (insufficient_data, no_drift, drift)",
            labels=_FEATURE,
        )
        self.share = GaugeMetricFamily(
            "driftgate_monitor_dataset_drift_share",
            "Share of features whose verdict is drift, in the default window",
            labels=_VERSION,
        )
        self.alarm = GaugeMetricFamily(
            "driftgate_monitor_drift_alarm",
            "1 while the drift policy's alarm is raised (signal: inputs, the dataset verdict; "
            "prediction, the predictions' verdict), from consecutive windows tested once each",
            labels=(*_VERSION, "signal"),
        )
        self._quality_families()
        self._accuracy_families()
        self._outlier_families()

    def _outlier_families(self) -> None:
        self.outlier_rate = GaugeMetricFamily(
            "driftgate_monitor_outlier_rate",
            "Share of an outlier detector's predictions in the default window that are outliers",
            labels=_VERSION,
        )
        self.outlier_reference_rate = GaugeMetricFamily(
            "driftgate_monitor_outlier_reference_rate",
            "The same share among the training rows (the reference profile)",
            labels=_VERSION,
        )
        self.outlier_verdict = StateSetMetricFamily(
            "driftgate_monitor_outlier_verdict",
            "Outlier-rate verdict of the default window, Fisher's exact test of a rise "
            "(insufficient_data, no_drift, drift)",
            labels=_VERSION,
        )

    def add_outliers(self, labels: list[str], o: OutlierRate) -> None:
        self.outlier_verdict.add_metric(labels, _state_set(o.verdict))
        if o.rows:
            self.outlier_rate.add_metric(labels, o.rate)
        if o.reference_rows:
            self.outlier_reference_rate.add_metric(labels, o.reference_rate)

    def _quality_families(self) -> None:
        kind = (*_FEATURE, "kind")
        self.quality_rate = GaugeMetricFamily(
            "driftgate_monitor_quality_rate",
            "Share of a feature's values in the default window that are missing, infinite or "
            "out of range (kind)",
            labels=kind,
        )
        self.quality_reference_rate = GaugeMetricFamily(
            "driftgate_monitor_quality_reference_rate",
            "The same share in the training data (for infinite: its missing rate, a bound)",
            labels=kind,
        )
        self.quality_verdict = StateSetMetricFamily(
            "driftgate_monitor_quality_verdict",
            "Data-quality verdict of the default window (insufficient_data, no_drift, drift)",
            labels=kind,
        )

    def _accuracy_families(self) -> None:
        self.accuracy = {
            attribute: GaugeMetricFamily(name, doc, labels=_WINDOW)
            for attribute, (name, doc) in ACCURACY_FAMILIES.items()
        }
        self.estimate = GaugeMetricFamily(
            "driftgate_monitor_accuracy_estimate",
            "Label-free accuracy estimate over every prediction of the window (calibrated "
            "expected accuracy, CBPE)",
            labels=_WINDOW,
        )
        self.estimate_labelled = GaugeMetricFamily(
            "driftgate_monitor_accuracy_estimate_labelled",
            "The label-free accuracy estimate over the labelled predictions of the window, the "
            "rows driftgate_monitor_accuracy is measured on",
            labels=_WINDOW,
        )
        self.coverage = GaugeMetricFamily(
            "driftgate_monitor_label_coverage",
            "Share of prediction records with a label",
            labels=_WINDOW,
        )

    def add_drift(self, labels: list[str], result: DatasetDrift) -> None:
        every = [*result.features, *([result.prediction] if result.prediction else [])]
        for feature in every:
            self._add_feature([*labels, feature.name], feature)
        self.share.add_metric(labels, result.share)

    def _add_feature(self, labels: list[str], f: FeatureDrift) -> None:
        for name, value in f.distances.items():
            if name in self.distance:
                self.distance[name].add_metric(labels, value)
        if not math.isnan(f.critical_value) and f.statistic in self.threshold:
            self.threshold[f.statistic].add_metric(labels, f.threshold)
        self.verdict.add_metric(labels, _state_set(f.verdict))
        for q in f.quality:
            kind = [*labels, q.kind]
            self.quality_verdict.add_metric(kind, _state_set(q.verdict))
            if q.rows:
                self.quality_rate.add_metric(kind, q.rate)
            if q.reference_rows:
                self.quality_reference_rate.add_metric(kind, q.reference_rate)

    def add_accuracy(self, labels: list[str], a: Accuracy) -> None:
        self.coverage.add_metric(labels, a.coverage)
        for attribute, family in self.accuracy.items():
            value = getattr(a, attribute)
            if value is not None:
                family.add_metric(labels, value)
        if a.estimated_accuracy is not None:
            self.estimate.add_metric(labels, a.estimated_accuracy)
        if a.estimated_accuracy_labelled is not None:
            self.estimate_labelled.add_metric(labels, a.estimated_accuracy_labelled)

    def all(self) -> Iterator[Metric]:
        yield from self.distance.values()
        yield from self.threshold.values()
        yield from (self.verdict, self.share, self.alarm)
        yield from (self.quality_rate, self.quality_reference_rate, self.quality_verdict)
        yield from self.accuracy.values()
        yield from (self.estimate, self.estimate_labelled, self.coverage)
        yield from (self.outlier_rate, self.outlier_reference_rate, self.outlier_verdict)


def _state_set(verdict: Verdict) -> dict[str, bool]:
    return {state: verdict == value for value, state in _STATES.items()}
