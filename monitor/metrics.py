"""The monitor's Prometheus metrics, registered on a registry the caller owns.

Series and labels (the README lists them with their use):

- ``driftgate_monitor_drift{model, version, feature, method}``: a distance of the default
  window (method: psi, js_distance, ks_statistic, chi_square, l_infinity); the prediction
  distribution is feature ``__prediction__``.
- ``driftgate_monitor_drift_threshold{model, version, feature, method}``: the value the
  verdict statistic must exceed (max of calibrated critical value and effect-size floor).
- ``driftgate_monitor_drift_verdict{model, version, feature}``: 1 insufficient data,
  2 no drift, 3 drift.
- ``driftgate_monitor_dataset_drift_share{model, version}``: share of drifted features.
- ``driftgate_monitor_drift_alarm{model, version, signal}``: 1 while the drift policy's alarm
  is raised (``monitor.autopilot``), 0 otherwise; signal ``inputs`` (the dataset verdict) or
  ``prediction``. The policy tests consecutive windows once each, so this gauge's false
  alarms over time are bounded (``drift.false_alarms`` per 30 days); the verdict gauges above
  describe the sliding default window every ``evaluate_interval`` and are not: alert on this.
- ``driftgate_monitor_quality_rate{model, version, feature, kind}`` and
  ``driftgate_monitor_quality_reference_rate{model, version, feature, kind}``: the share of a
  feature's values in the default window (and in the training data) that are ``missing``
  (NaN, +-Inf, None, empty), ``infinite`` or ``out_of_range``; the reference's ``infinite``
  rate is its missing rate, the bound the test uses (``monitor.quality``).
- ``driftgate_monitor_quality_verdict{model, version, feature, kind}``: the data-quality
  test's verdict, 1 insufficient data, 2 no drift, 3 drift (a feature whose quality test says
  drift has ``driftgate_monitor_drift_verdict`` 3 too).
- ``driftgate_monitor_accuracy{model, version, metric, window}`` and
  ``driftgate_monitor_accuracy_estimate{model, version, metric, window}`` (window: the
  default window's length such as ``1h``, or ``total``): labelled figures, and the label-free
  estimate over every prediction of the window (``monitor.accuracy``: the calibrated expected
  accuracy; the raw mean top-class probability for a model.json without calibration).
- ``driftgate_monitor_accuracy_estimate_labelled{model, version, metric, window}``: the same
  estimate over the labelled predictions only, the rows ``driftgate_monitor_accuracy`` is
  measured on, so that the two compare like with like. A second gauge rather than a label on
  the first: the existing series keep their identity, and no ``sum``/``max`` over the estimate
  mixes two overlapping sets of rows.
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
- ``driftgate_monitor_events_total{model, kind}``: policy decisions (drift_alarm,
  accuracy_drop, retrain_started/succeeded/failed/rejected, canary_started, canary_step,
  canary_check_failed, promotion, rollback, canary_ended, action_superseded, stable_pinned,
  policy_error).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["EVENT_KINDS", "INVALID_MODEL", "PREDICTION_FEATURE", "MonitorMetrics"]

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
_VERSION = ("model", "version")


class MonitorMetrics:
    """Every monitor metric family."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.drift = Gauge(
            "driftgate_monitor_drift",
            "Distance of the default window from the reference profile",
            (*_VERSION, "feature", "method"),
            registry=registry,
        )
        self.drift_threshold = Gauge(
            "driftgate_monitor_drift_threshold",
            "Value the verdict statistic must exceed: max(calibrated critical value, floor)",
            (*_VERSION, "feature", "method"),
            registry=registry,
        )
        self.drift_verdict = Gauge(
            "driftgate_monitor_drift_verdict",
            "Drift verdict of the default window: 1 insufficient data, 2 no drift, 3 drift",
            (*_VERSION, "feature"),
            registry=registry,
        )
        self.drift_alarm = Gauge(
            "driftgate_monitor_drift_alarm",
            "1 while the drift policy's alarm is raised (signal: inputs, the dataset verdict; "
            "prediction, the predictions' verdict), from consecutive windows tested once each",
            (*_VERSION, "signal"),
            registry=registry,
        )
        self.dataset_drift_share = Gauge(
            "driftgate_monitor_dataset_drift_share",
            "Share of features whose verdict is drift, in the default window",
            _VERSION,
            registry=registry,
        )
        self.quality_rate = Gauge(
            "driftgate_monitor_quality_rate",
            "Share of a feature's values in the default window that are missing, infinite or "
            "out of range (kind)",
            (*_VERSION, "feature", "kind"),
            registry=registry,
        )
        self.quality_reference_rate = Gauge(
            "driftgate_monitor_quality_reference_rate",
            "The same share in the training data (for infinite: its missing rate, a bound)",
            (*_VERSION, "feature", "kind"),
            registry=registry,
        )
        self.quality_verdict = Gauge(
            "driftgate_monitor_quality_verdict",
            "Data-quality verdict of the default window: 1 insufficient data, 2 no drift, 3 drift",
            (*_VERSION, "feature", "kind"),
            registry=registry,
        )
        self.accuracy = Gauge(
            "driftgate_monitor_accuracy",
            "Labelled accuracy figures (accuracy, f1, log_loss, mae, rmse)",
            (*_VERSION, "metric", "window"),
            registry=registry,
        )
        self.accuracy_estimate = Gauge(
            "driftgate_monitor_accuracy_estimate",
            "Label-free accuracy estimate over every prediction of the window (calibrated "
            "expected accuracy, CBPE)",
            (*_VERSION, "metric", "window"),
            registry=registry,
        )
        self.accuracy_estimate_labelled = Gauge(
            "driftgate_monitor_accuracy_estimate_labelled",
            "The label-free accuracy estimate over the labelled predictions of the window, the "
            "rows driftgate_monitor_accuracy is measured on",
            (*_VERSION, "metric", "window"),
            registry=registry,
        )
        self.label_coverage = Gauge(
            "driftgate_monitor_label_coverage",
            "Share of prediction records with a label",
            (*_VERSION, "window"),
            registry=registry,
        )
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
        self.store_rows = Gauge(
            "driftgate_monitor_store_rows", "Rows per store table", ("table",), registry=registry
        )
        self.store_bytes = Gauge(
            "driftgate_monitor_store_bytes",
            "Size of the SQLite store files (0 for PostgreSQL)",
            registry=registry,
        )

    def expose_events(self, model: str) -> None:
        """Create the zero-valued event series of ``model`` (idempotent)."""
        for kind in EVENT_KINDS:
            self.events.labels(model, kind)
