"""The monitor's core: reference profiles, drift and accuracy of stored windows, gauges.

No grpc here: ``monitor.servicer`` converts protobuf to the dataclasses of ``monitor.store``
and back, and calls this. All methods are synchronous and run on the server's one store
thread.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from driftgate.core.errors import FailedPrecondition, InvalidInput, ModelNotFound, quote
from driftgate.core.objectstore import open_repository
from driftgate.core.profile import Bins, CategoricalBins, ReferenceProfile
from driftgate.core.repository import validate_model_name
from driftgate.monitor.accuracy import Accuracy, Calibration, accuracy_from
from driftgate.monitor.drift import DatasetDrift, DriftTester, QualityCounts
from driftgate.monitor.metrics import INVALID_MODEL, PREDICTION_FEATURE, MonitorMetrics
from driftgate.monitor.outliers import (
    OUTLIER_KIND,
    OutlierRate,
    outlier_count,
    outlier_rate_verdict,
    with_outlier_rate,
)
from driftgate.monitor.settings import MonitorSettings
from driftgate.monitor.store import (
    INF_BIN,
    NAN_BIN,
    OUT_OF_RANGE_BIN,
    LabelIn,
    LabelOutcome,
    Report,
    Store,
    Task,
)
from driftgate.monitor.validation import check_labels, check_report

__all__ = ["Monitor", "Window", "drift_inputs", "window_label"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Window:
    """[start, end) in epoch seconds; start None means the version's whole history."""

    start: float | None
    end: float


def window_label(seconds: float | None) -> str:
    """``3600`` -> ``1h``, None or 0 -> ``total``: the ``window`` label of the gauges."""
    if not seconds:
        return "total"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


class Monitor:
    """Ingest, labels and queries over one store and one model repository."""

    def __init__(self, settings: MonitorSettings, store: Store, metrics: MonitorMetrics) -> None:
        self.settings = settings
        self.store = store
        self.metrics = metrics
        self.repository = open_repository(settings.repository)
        self._profiles: dict[tuple[str, int], ReferenceProfile] = {}
        self._testers: dict[str, DriftTester] = {}
        self._failing: set[tuple[str, int]] = set()
        self._metadata: dict[tuple[str, int], dict[str, Any]] = {}

    # -- writes ---------------------------------------------------------------------------

    def ingest(self, report: Report, sent_time: float | None) -> int:
        """Commit ``report`` once (``monitor.validation`` checks it first); the highest
        sequence committed for its instance."""
        check_report(report, sent_time, self.reference, time.time())
        committed, applied = self.store.ingest(report, self._tasks(report))
        self.metrics.reports.labels("applied" if applied else "duplicate").inc()
        if applied and sent_time:
            self.metrics.report_lag.observe(max(time.time() - sent_time, 0.0))
        return committed

    def add_labels(self, labels: list[LabelIn]) -> LabelOutcome:
        """Join ``labels`` by (model, request id); see ``Store.add_labels``."""
        check_labels(labels, time.time())
        outcome = self.store.add_labels(labels, time.time())
        self.metrics.labels.labels("accepted").inc(outcome.accepted)
        self.metrics.labels.labels("duplicate").inc(outcome.duplicates)
        self.metrics.labels.labels("unknown").inc(outcome.unknown)
        self.metrics.labels.labels("ambiguous").inc(outcome.ambiguous)
        return outcome

    # -- lookups --------------------------------------------------------------------------

    def resolve_version(self, model: str, version: int | None) -> int:
        """``version``, or the stable version of ``deployment.json``, or the highest one."""
        if version is not None:
            return version
        deployment = self.repository.deployment(model) or {}
        stable = deployment.get("stable")
        if stable is not None:
            return int(stable)
        versions = self.repository.versions(model)
        if not versions:
            raise ModelNotFound(f"model {model!r} has no version in {self.repository.location}")
        return versions[-1]

    def profile(self, model: str, version: int) -> ReferenceProfile:
        profile = self.reference(model, version)
        if profile is None:
            raise FailedPrecondition(
                f"model {model!r} version {version} has no reference.json to measure "
                "drift against; convert it with `driftgate convert`"
            )
        return profile

    def reference(self, model: str, version: int) -> ReferenceProfile | None:
        """The version's reference profile, None when it has none; ModelNotFound when the
        repository has no such version, FailedPrecondition when its profile is unreadable."""
        key = (model, version)
        if key not in self._profiles:
            try:
                data = self.repository.reference(model, version)
                if data is None:
                    return None
                self._profiles[key] = ReferenceProfile.from_dict(data)
            except (KeyError, TypeError, ValueError) as exc:  # JSON or profile malformed
                raise FailedPrecondition(
                    f"reference.json of model {model!r} version {version} is unreadable: "
                    f"{type(exc).__name__}"
                ) from exc
        return self._profiles[key]

    def window(self, seconds: float | None, end: float | None) -> Window:
        """The window of a query: ``seconds`` None is the default, 0 the whole history."""
        end = time.time() if end is None else end
        length = self.settings.default_window_seconds if seconds is None else seconds
        if length < 0:
            raise InvalidInput(f"window must not be negative, got {length} s")
        return Window(None if length == 0 else end - length, end)

    def tester(self, model: str) -> DriftTester:
        if model not in self._testers:
            self._testers[model] = DriftTester(self.settings.thresholds(model))
        return self._testers[model]

    # -- queries --------------------------------------------------------------------------

    def drift(self, model: str, version: int, window: Window) -> DatasetDrift:
        return self.drift_with(self.tester(model), model, version, window)

    def drift_with(
        self, tester: DriftTester, model: str, version: int, window: Window
    ) -> DatasetDrift:
        """``drift`` with the verdicts of ``tester`` (a policy's thresholds)."""
        profile = self.profile(model, version)
        counts = self.store.counts(model, version, window.start, window.end)
        result = tester.evaluate(*drift_inputs(profile, counts))
        outliers = self.outlier_rate(model, version, window, tester, counts)
        return result if outliers is None else with_outlier_rate(result, outliers)

    def outlier_rate(
        self,
        model: str,
        version: int,
        window: Window,
        tester: DriftTester | None = None,
        counts: dict[tuple[bool, str], dict[int, int]] | None = None,
    ) -> OutlierRate | None:
        """An outlier detector's outlier rate in ``window`` against its training rows'
        (``monitor.outliers``) at the thresholds of ``tester`` (the model's by default);
        None for a version that is not an outlier detector."""
        if self._model_json(model, version).get("task") != "outlier_detection":
            return None
        bins = self.profile(model, version).prediction
        if not isinstance(bins, CategoricalBins):
            return None
        if counts is None:
            counts = self.store.counts(model, version, window.start, window.end)
        stored = next((c for (p, _), c in counts.items() if p), {})
        rows = sum(c for index, c in stored.items() if index >= 0)
        t = (tester or self.tester(model)).thresholds
        return outlier_rate_verdict(
            (outlier_count(bins.categories, stored), rows),
            (outlier_count(bins.categories, bins.counts), int(sum(bins.counts))),
            alpha=t.alpha, floor=t.quality_floor, min_rows=t.min_rows,
        )  # fmt: skip

    def accuracy(self, model: str, version: int, window: Window) -> Accuracy:
        """Figures of the records made in the window's buckets, from the store's per-bucket
        accuracy aggregates (no record is read)."""
        totals = self.store.accuracy_totals(model, version, window.start, window.end)
        meta = self._model_json(model, version)
        stored = self.store.version_task(model, version)
        task = str(meta.get("task") or (stored.kind if stored else "classification"))
        classes = [str(c) for c in meta.get("class_labels") or ()]
        return accuracy_from(totals, task, classes, Calibration.from_model_json(meta))

    def _model_json(self, model: str, version: int) -> dict[str, Any]:
        """The version's model.json ({} without one); read once found, as versions are
        immutable (a version may be written after its first mention)."""
        key = (model, version)
        if key not in self._metadata:
            with contextlib.suppress(ModelNotFound):
                # model.json only: the monitor never opens the ONNX graph.
                path = self.repository.version_dir(model, version) / "model.json"
                if path.is_file():
                    self._metadata[key] = json.loads(path.read_text(encoding="utf-8"))
        return self._metadata.get(key, {})

    def _tasks(self, report: Report) -> dict[tuple[str, int], Task]:
        """What each version of the report's records predicts, as its model.json says."""
        tasks = {}
        for key in {(r.model, r.version) for r in report.records}:
            meta = self._model_json(*key)
            if meta.get("task"):
                classes = tuple(str(c) for c in meta.get("class_labels") or ())
                kind = "regression" if meta["task"] == "regression" else "classification"
                tasks[key] = Task(kind, classes)
        return tasks

    # -- periodic work --------------------------------------------------------------------

    def evaluate(self, now: float | None = None) -> None:
        """Refresh the drift and accuracy gauges of every version active in the window."""
        now = time.time() if now is None else now
        length = self.settings.default_window_seconds
        since = now - length
        for model in self.repository.models():
            self.metrics.expose_events(model)
        active = self.store.active_versions(since)
        # Versions that left the window leave /metrics: no gauge shows a stale last value.
        self.metrics.retain(active)
        for model, version in active:
            # One version's failure (a corrupt profile, rows stored before reports were
            # checked) must not freeze the gauges of every other one.
            try:
                self.show_alarm(model, version)
                self._evaluate_version(model, version, since, now)
            except Exception:
                self._evaluation_failed(model, version)
            else:
                self._failing.discard((model, version))
        self.refresh_store_size()

    def _evaluate_version(self, model: str, version: int, since: float, now: float) -> None:
        # Counts for a version whose profile is gone have nothing to compare against.
        with contextlib.suppress(ModelNotFound, FailedPrecondition):
            result = self.drift(model, version, Window(since, now))
            self.metrics.publish_drift(model, version, result)
            tests = () if result.prediction is None else result.prediction.quality
            for outliers in (q for q in tests if q.kind == OUTLIER_KIND):
                self.metrics.publish_outliers(model, version, outliers)
        for seconds in (self.settings.default_window_seconds, 0.0):
            window = self.window(seconds, now)
            self.metrics.publish_accuracy(
                model, version, window_label(seconds), self.accuracy(model, version, window)
            )

    def show_alarm(self, model: str, version: int, state: dict[str, Any] | None = None) -> None:
        """``driftgate_monitor_drift_alarm`` of a version from the drift policy's state (the
        store's, unless given): 1 while its alarm is raised, 0 otherwise."""
        if state is None:
            state = self.store.get_state(model, "drift") or {}
        mine = state.get("version") == version
        for signal, key in (("inputs", "alarm"), ("prediction", "prediction_alarm")):
            raised = mine and bool(state.get(key))
            self.metrics.show_alarm(model, version, signal, raised)

    def _evaluation_failed(self, model: str, version: int) -> None:
        """Count and log a failed evaluation: the traceback once, then a line per retry."""
        key = (model, version)
        name = quote(model)
        if key in self._failing:
            log.warning("evaluating model %s version %d failed again", name, version)
        else:
            self._failing.add(key)
            log.exception("evaluating model %s version %d failed", name, version)
        try:
            label = validate_model_name(model)
        except InvalidInput:
            label = INVALID_MODEL
        self.metrics.evaluation_failures.labels(label).inc()

    def refresh_store_size(self) -> None:
        for table, rows in self.store.table_rows().items():
            self.metrics.store_rows.labels(table).set(rows)
        self.metrics.store_bytes.set(_sqlite_bytes(self.store.url))

    def prune(self, now: float | None = None) -> dict[str, int]:
        """Apply retention; the rows deleted per table, also counted on
        ``driftgate_monitor_pruned_rows_total`` (held labels deleted there never joined)."""
        s = self.settings
        deleted = self.store.prune(
            time.time() if now is None else now,
            s.max_records,
            s.record_retention_seconds,
            s.counts_retention_seconds,
            s.label_window_seconds,
        )
        for table, rows in deleted.items():
            self.metrics.pruned_rows.labels(table).inc(rows)
        return deleted


def drift_inputs(
    profile: ReferenceProfile, counts: dict[tuple[bool, str], dict[int, int]]
) -> tuple[list[Any], Any, list[tuple[QualityCounts, QualityCounts]]]:
    """What ``DriftTester.evaluate`` takes, from a profile and a window's stored counts (as
    ``Store.counts`` returns them: per (is prediction, name), bin -> count, with the special
    bins of ``monitor.store``): each feature's reference and window counts, the prediction's,
    and each feature's data-quality counts."""
    features = [
        (f.name, _categorical(f.bins), _array(f.bins.counts), _window_counts(
            counts.get((False, f.name), {}), len(f.bins.counts)
        ))
        for f in profile.features
    ]  # fmt: skip
    quality = [
        (_reference_quality(f.bins), _window_quality(counts.get((False, f.name), {}), f.bins))
        for f in profile.features
    ]
    prediction = None
    if profile.prediction is not None:
        stored = next((c for (p, _), c in counts.items() if p), {})
        prediction = (
            PREDICTION_FEATURE,
            _categorical(profile.prediction),
            _array(profile.prediction.counts),
            _window_counts(stored, len(profile.prediction.counts)),
        )
    return features, prediction, quality


def _categorical(bins: Bins) -> bool:
    return isinstance(bins, CategoricalBins)


def _array(counts: Any) -> Any:
    return np.asarray(counts, dtype=np.int64)


def _window_counts(stored: dict[int, int], size: int) -> Any:
    counts = np.zeros(size, dtype=np.int64)
    for index, count in stored.items():
        if 0 <= index < size:  # negative bins are missing/inf/out-of-range tallies
            counts[index] += count
    return counts


def _out_of_range(bins: Bins) -> int:
    """Training values in the open end bins (numeric) or in "other" (categorical)."""
    counts = bins.counts
    if _categorical(bins) or len(counts) < 2:
        return int(counts[-1]) if counts else 0
    return int(counts[0]) + int(counts[-1])


def _reference_quality(bins: Bins) -> QualityCounts:
    """The training data's quality counts; its +-Inf are not counted apart from NaN, so its
    ``missing`` count stands as the bound of its ``infinite`` one (``monitor.quality``)."""
    rows = int(sum(bins.counts)) + bins.missing
    return QualityCounts(rows, bins.missing, bins.missing, _out_of_range(bins))


def _window_quality(stored: dict[int, int], bins: Bins) -> QualityCounts:
    """A window's quality counts from the stored tallies (bins -1 NaN or missing category,
    -2 +-Inf, -3 out of range, which is also counted in the bins)."""
    size = len(bins.counts)
    binned = sum(count for index, count in stored.items() if 0 <= index < size)
    nan, inf = stored.get(NAN_BIN, 0), stored.get(INF_BIN, 0)
    return QualityCounts(binned + nan + inf, nan + inf, inf, stored.get(OUT_OF_RANGE_BIN, 0))


def _sqlite_bytes(url: str) -> int:
    if not url.startswith("sqlite:///"):
        return 0
    path = Path(url.removeprefix("sqlite:///"))
    files = [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]
    return sum(p.stat().st_size for p in files if p.exists())
