"""Accuracy of a model version from predictions joined with their labels. Pure numpy.

Classifiers: accuracy, macro F1 (binary: F1 of the positive class, the second class label),
log loss (probabilities clipped to [1e-15, 1 - 1e-15], as scikit-learn does), per-class
recall, and, beside the labelled figures, the label-free estimate of accuracy (confidence-based
performance estimation, as NannyML's CBPE): the mean over the window's predictions of the
calibrated probability that the top class is right, ``Calibration`` being the isotonic map
the converter fitted on held-out rows (``converter.calibration``, stored in model.json). It is
given for every prediction of the window (``estimated_accuracy``, needs no label) and for the
labelled ones alone (``estimated_accuracy_labelled``), which ``accuracy`` measures: the two
figures of the same rows, whose gap is concept drift or a miscalibrated map; and the expected
confusion matrix of both (``expected_confusion``: a predicted class's expected correct records
by its own map where the converter fitted one, its expected errors split as its cross-fitted
errors were), beside the labelled ``confusion``. Top-class
probabilities are counted in ``TOP_BINS`` fixed bins with their sum, and the map is applied
to each bin's mean probability (``expected_accuracy``): the estimate is defined on the bins,
so the store's histograms give it exactly. Without a map (a model.json written before
calibration, or too few held-out rows) the map is the identity: the mean top-class
probability. Regressors: MAE and RMSE; nothing is estimated without labels (a point
prediction carries no confidence to calibrate). Both: label coverage and label-lag
percentiles (p50, p90, p99) read from a fixed log-spaced histogram (``LAG_EDGES``: a lag
is known to within 6%).

Two ways to the same figures: ``accuracy_of`` from the records themselves (the definition),
and ``accuracy_from`` from ``AccuracyTotals``, sums that add up record by record and bucket
by bucket (what the store keeps, so that a window never reads its records). ``record_top``
and ``label_terms`` say what one record and one label add to those sums.
"""

from __future__ import annotations

import bisect
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "LAG_EDGES",
    "MAX_LOSS_COLUMNS",
    "Accuracy",
    "TOP_BINS",
    "AccuracyTotals",
    "Calibration",
    "JoinedPrediction",
    "LabelTerms",
    "Task",
    "accuracy_from",
    "accuracy_of",
    "expected_accuracy",
    "expected_confusion",
    "label_terms",
    "lag_bin",
    "lag_percentiles",
    "record_top",
    "top_bin",
]

_CLIP = 1e-15

LAG_EDGES: tuple[float, ...] = tuple(10 ** (k / 20) for k in range(141))
"""Label-lag histogram edges, 1 s to 10^7 s (116 days) in steps of 12%: bin 0 holds lags
under a second, bin i lags in [edge i-1, edge i), the last bin lags beyond 10^7 s."""

MAX_LOSS_COLUMNS = 64
"""Without the class list (no model.json), the log loss of every column of a labelled
record's probabilities is kept, as the window decides which column is the label's; wider
records get no log loss."""


TOP_BINS = 50
"""Top-class probability histogram bins: bin i holds [i / 50, (i + 1) / 50), the last 1.0 too."""


Map = tuple[tuple[float, ...], tuple[float, ...]]


@dataclass(frozen=True)
class Calibration:
    """The converter's map of top-class probability to the probability that the top class is
    right: linear interpolation through the breakpoints, constant beyond the ends; with, where
    the converter fitted them, one map per predicted class (``classes``) and the cross-fitted
    confusion counts (``confusion[predicted][actual]``) of the expected confusion matrix."""

    x: tuple[float, ...]
    y: tuple[float, ...]
    classes: Mapping[str, Map] = field(default_factory=dict)
    confusion: Mapping[str, Mapping[str, int]] = field(default_factory=dict)

    @classmethod
    def from_model_json(cls, meta: Mapping[str, object]) -> Calibration | None:
        """The map of a model.json's ``calibration`` block; None without one."""
        block = meta.get("calibration")
        if not isinstance(block, Mapping) or not block.get("x"):
            return None
        maps = block.get("classes") or {}
        confusion = block.get("confusion") or {}
        return cls(
            tuple(map(float, block["x"])),
            tuple(map(float, block["y"])),
            {
                str(k): (tuple(map(float, m["x"])), tuple(map(float, m["y"])))
                for k, m in maps.items()
            },
            {str(k): {str(a): int(n) for a, n in row.items()} for k, row in confusion.items()},
        )

    def __call__(self, probability: float, predicted: str | None = None) -> float:
        """P(top class right | its probability), by the predicted class's map if it has one."""
        x, y = self.classes.get(predicted, (self.x, self.y)) if predicted else (self.x, self.y)
        return float(np.interp(probability, x, y))


def top_bin(probability: float) -> int:
    """The ``TOP_BINS`` bin of a top-class probability."""
    return min(max(int(probability * TOP_BINS), 0), TOP_BINS - 1)


def expected_accuracy(
    histogram: Mapping[int, tuple[int, float]], calibration: Calibration | None
) -> float | None:
    """The label-free estimate from a histogram (bin -> records, sum of their top-class
    probabilities): each bin's records weigh the map of their mean probability."""
    total = sum(n for n, _ in histogram.values())
    if not total:
        return None
    expected = 0.0
    for n, summed in histogram.values():
        if n:
            mean = summed / n
            expected += n * (calibration(mean) if calibration else mean)
    return expected / total


def expected_confusion(
    histogram: Mapping[tuple[str, int], tuple[int, float]],
    calibration: Calibration | None,
    classes: Sequence[str] = (),
) -> dict[tuple[str, str], float]:
    """The expected confusion matrix, (actual, predicted) -> records, from a histogram of
    (predicted class, bin) -> records, sum of their top-class probabilities: a predicted
    class's expected correct records weigh its map (``Calibration``, by class where fitted) of
    each bin's mean; its expected errors are split among the other classes as its
    cross-fitted errors were (evenly where it made none, or without a calibration). Without
    the class list, only the diagonal and what the cross-fitted errors name are known."""
    rows: dict[str, list[float]] = {}
    for (predicted, _), (n, summed) in histogram.items():
        if n:
            mean = summed / n
            right = calibration(mean, predicted) if calibration else mean
            row = rows.setdefault(predicted, [0.0, 0.0])
            row[0], row[1] = row[0] + n, row[1] + n * right
    cells: dict[tuple[str, str], float] = {}
    for predicted, (records, correct) in rows.items():
        cells[predicted, predicted] = correct
        for actual, share in _error_shares(predicted, calibration, classes).items():
            wrong = (records - correct) * share
            cells[actual, predicted] = cells.get((actual, predicted), 0.0) + wrong
    return cells


def _error_shares(
    predicted: str, calibration: Calibration | None, classes: Sequence[str]
) -> dict[str, float]:
    """How a predicted class's errors split among the true classes."""
    seen = calibration.confusion.get(predicted, {}) if calibration else {}
    weights = {a: float(n) for a, n in seen.items() if a != predicted and n > 0}
    if not weights:
        weights = {a: 1.0 for a in classes if a != predicted}
    total = sum(weights.values())
    return {a: w / total for a, w in weights.items()} if total else {}


@dataclass(frozen=True)
class Task:
    """What a version predicts: "classification" (with its class labels when model.json
    names them) or "regression"."""

    kind: str
    classes: tuple[str, ...] = ()


@dataclass(frozen=True)
class JoinedPrediction:
    """One prediction record of the window; ``label`` is None until a label arrived."""

    prediction: str | float
    probabilities: Sequence[float]
    label: str | float | None
    lag_seconds: float | None


@dataclass
class Accuracy:
    """Figures of one window; metrics are None when there is no label or they do not apply."""

    prediction_count: int
    label_count: int
    coverage: float
    accuracy: float | None = None
    f1: float | None = None
    log_loss: float | None = None
    recall: dict[str, float] = field(default_factory=dict)
    estimated_accuracy: float | None = None
    """Label-free estimate over every prediction of the window."""
    estimated_accuracy_labelled: float | None = None
    """The same estimate over the labelled predictions, the rows ``accuracy`` is measured on."""
    estimate_calibrated: bool = False
    """Whether the estimate applied the converter's calibration (else the identity map)."""
    confusion: dict[tuple[str, str], int] = field(default_factory=dict)
    """Labelled records by (label, prediction)."""
    expected_confusion: dict[tuple[str, str], float] = field(default_factory=dict)
    """The label-free estimate of the confusion matrix over every prediction of the window,
    (label, prediction) -> records (``expected_confusion``)."""
    expected_confusion_labelled: dict[tuple[str, str], float] = field(default_factory=dict)
    """The same over the labelled predictions, beside ``confusion`` on the same rows."""
    mae: float | None = None
    rmse: float | None = None
    label_lag_seconds: dict[str, float] = field(default_factory=dict)


@dataclass
class AccuracyTotals:
    """Sums over the records of a window, from which ``accuracy_from`` computes the figures.

    ``confusion`` counts labelled records by (label, prediction) as strings (classifiers);
    ``losses`` holds, per (label, number of probabilities, column), the records and the sum
    of their log loss were that column the label's (-1: none applies); ``lags`` counts
    labels per ``lag_bin``; ``top_bins`` holds, per (labelled, ``top_bin``), the records and
    the sum of their top-class probabilities (labelled False: every record with
    probabilities; True: those whose label joined); ``class_bins`` the same per (labelled,
    predicted class, ``top_bin``).
    """

    records: int = 0
    labels: int = 0
    top_count: int = 0
    top_sum: float = 0.0
    error_count: int = 0
    absolute_error_sum: float = 0.0
    squared_error_sum: float = 0.0
    confusion: dict[tuple[str, str], int] = field(default_factory=dict)
    losses: dict[tuple[str, int, int], tuple[int, float]] = field(default_factory=dict)
    lags: dict[int, int] = field(default_factory=dict)
    top_bins: dict[tuple[bool, int], tuple[int, float]] = field(default_factory=dict)
    class_bins: dict[tuple[bool, str, int], tuple[int, float]] = field(default_factory=dict)


@dataclass(frozen=True)
class LabelTerms:
    """What one joined label adds to ``AccuracyTotals``."""

    lag_bin: int
    confusion: tuple[str, str] | None = None
    losses: tuple[tuple[int, int, float], ...] = ()
    """(number of probabilities, column, log loss)."""
    error: float | None = None


def accuracy_of(
    records: Sequence[JoinedPrediction],
    task: str,
    class_labels: Sequence[str] = (),
    calibration: Calibration | None = None,
) -> Accuracy:
    """Figures for ``records``; ``task`` is "classification" or "regression"."""
    labelled = [r for r in records if r.label is not None]
    result = Accuracy(
        prediction_count=len(records),
        label_count=len(labelled),
        coverage=len(labelled) / len(records) if records else 0.0,
    )
    lags = Counter(lag_bin(r.lag_seconds) for r in labelled if r.lag_seconds is not None)
    result.label_lag_seconds = lag_percentiles(lags)
    if task == "regression":
        _regression(result, labelled)
    else:
        names = [str(c) for c in class_labels]
        _classification(result, labelled, names)
        top_bins, class_bins = _top_histograms(records)
        _estimate(result, top_bins, class_bins, calibration, names)
    return result


def _top_histograms(
    records: Sequence[JoinedPrediction],
) -> tuple[
    dict[tuple[bool, int], tuple[int, float]], dict[tuple[bool, str, int], tuple[int, float]]
]:
    """``AccuracyTotals.top_bins`` and ``class_bins`` of ``records``, record by record."""
    bins: dict[tuple[bool, int], tuple[int, float]] = {}
    by_class: dict[tuple[bool, str, int], tuple[int, float]] = {}
    for r in records:
        if not len(r.probabilities):
            continue
        top = float(max(r.probabilities))
        b = top_bin(top)
        for labelled in (False, True) if r.label is not None else (False,):
            n, summed = bins.get((labelled, b), (0, 0.0))
            bins[labelled, b] = (n + 1, summed + top)
            n, summed = by_class.get((labelled, str(r.prediction), b), (0, 0.0))
            by_class[labelled, str(r.prediction), b] = (n + 1, summed + top)
    return bins, by_class


def _estimate(
    result: Accuracy,
    top_bins: Mapping[tuple[bool, int], tuple[int, float]],
    class_bins: Mapping[tuple[bool, str, int], tuple[int, float]],
    calibration: Calibration | None,
    classes: Sequence[str],
) -> None:
    for labelled, name in ((False, "estimated_accuracy"), (True, "estimated_accuracy_labelled")):
        histogram = {b: v for (flag, b), v in top_bins.items() if flag is labelled}
        setattr(result, name, expected_accuracy(histogram, calibration))
        by_class = {(k, b): v for (flag, k, b), v in class_bins.items() if flag is labelled}
        matrix = expected_confusion(by_class, calibration, classes)
        setattr(result, name.replace("estimated_accuracy", "expected_confusion"), matrix)
    result.estimate_calibrated = calibration is not None


def _regression(result: Accuracy, labelled: Sequence[JoinedPrediction]) -> None:
    if not labelled:
        return
    error = np.array([float(r.prediction) - float(r.label) for r in labelled])  # type: ignore[arg-type]
    result.mae = float(np.mean(np.abs(error)))
    result.rmse = float(math.sqrt(np.mean(error**2)))


def _classification(
    result: Accuracy,
    labelled: Sequence[JoinedPrediction],
    classes: list[str],
) -> None:
    if not labelled:
        return
    truth = np.array([str(r.label) for r in labelled])
    predicted = np.array([str(r.prediction) for r in labelled])
    result.confusion = dict(Counter(zip(truth.tolist(), predicted.tolist(), strict=True)))
    result.accuracy = float(np.mean(truth == predicted))
    names = classes or sorted(set(truth) | set(predicted))
    f1s = []
    for name in names:
        tp = float(np.sum((truth == name) & (predicted == name)))
        actual, called = float(np.sum(truth == name)), float(np.sum(predicted == name))
        if actual:
            result.recall[name] = tp / actual
        f1s.append(2 * tp / (actual + called) if actual + called else 0.0)
    result.f1 = f1s[1] if len(names) == 2 else float(np.mean(f1s))
    result.log_loss = _log_loss(labelled, names)


def _log_loss(labelled: Sequence[JoinedPrediction], names: list[str]) -> float | None:
    index = {name: i for i, name in enumerate(names)}
    losses = []
    for r in labelled:
        column = index.get(str(r.label))
        if len(r.probabilities) != len(names) or column is None:
            return None
        losses.append(_loss(r.probabilities, column))
    return float(np.mean(losses))


def _loss(probabilities: Sequence[float], column: int) -> float:
    p = np.clip(np.asarray(probabilities, dtype=np.float64), _CLIP, 1 - _CLIP)
    return -math.log(p[column] / p.sum())


# -- the same figures from sums -----------------------------------------------------------


def lag_bin(seconds: float) -> int:
    """The ``LAG_EDGES`` bin of a label lag in seconds."""
    return bisect.bisect_right(LAG_EDGES, seconds)


def lag_percentiles(histogram: Mapping[int, int]) -> dict[str, float]:
    """p50, p90 and p99 of the lags counted in ``histogram`` (bin -> labels): the geometric
    middle of the bin holding the percentile's rank (0.5 s under a second), {} when empty."""
    total = sum(histogram.values())
    if not total:
        return {}
    bins = sorted(b for b, n in histogram.items() if n)
    result = {}
    for name, q in (("p50", 50), ("p90", 90), ("p99", 99)):
        rank, seen = q / 100 * (total - 1), 0
        for b in bins:
            seen += histogram[b]
            if seen > rank:
                break
        result[name] = _lag_middle(b)
    return result


def _lag_middle(b: int) -> float:
    if b == 0:
        return 0.5
    if b >= len(LAG_EDGES):
        return LAG_EDGES[-1]
    return math.sqrt(LAG_EDGES[b - 1] * LAG_EDGES[b])


def record_top(task: Task, probabilities: Sequence[float]) -> float | None:
    """A record's top-class probability (the estimated accuracy's term); None if it has none."""
    if task.kind == "regression" or not len(probabilities):
        return None
    return float(max(probabilities))


def label_terms(
    task: Task,
    prediction: str | float,
    probabilities: Sequence[float],
    label: str | float,
    lag_seconds: float,
) -> LabelTerms:
    """What a label joined to its record adds to the sums of the record's bucket."""
    lag = lag_bin(lag_seconds)
    if task.kind == "regression":
        try:
            return LabelTerms(lag, error=float(prediction) - float(label))
        except (TypeError, ValueError):  # not a number: no MAE or RMSE for its window
            return LabelTerms(lag)
    actual = str(label)
    width = len(probabilities)
    if task.classes:
        fits = actual in task.classes and width == len(task.classes)
        columns = [task.classes.index(actual)] if fits else []
    else:
        columns = list(range(width)) if width <= MAX_LOSS_COLUMNS else []
    losses = tuple((width, c, _loss(probabilities, c)) for c in columns) or ((width, -1, 0.0),)
    return LabelTerms(lag, confusion=(actual, str(prediction)), losses=losses)


def accuracy_from(
    totals: AccuracyTotals,
    task: str,
    class_labels: Sequence[str] = (),
    calibration: Calibration | None = None,
) -> Accuracy:
    """The figures ``accuracy_of`` gives for the records summed in ``totals``."""
    t = totals
    result = Accuracy(
        prediction_count=t.records,
        label_count=t.labels,
        coverage=t.labels / t.records if t.records else 0.0,
        label_lag_seconds=lag_percentiles(t.lags),
    )
    if task == "regression":
        if t.labels and t.error_count == t.labels:
            result.mae = t.absolute_error_sum / t.labels
            result.rmse = math.sqrt(t.squared_error_sum / t.labels)
        return result
    names = [str(c) for c in class_labels]
    _estimate(result, t.top_bins, t.class_bins, calibration, names)
    confusion = {k: n for k, n in t.confusion.items() if n}
    result.confusion = dict(confusion)
    labelled = sum(confusion.values())
    if not labelled:
        return result
    result.accuracy = sum(n for (a, p), n in confusion.items() if a == p) / labelled
    names = names or sorted({x for pair in confusion for x in pair})
    f1s = []
    for name in names:
        tp = float(confusion.get((name, name), 0))
        actual = float(sum(n for (a, _), n in confusion.items() if a == name))
        called = float(sum(n for (_, p), n in confusion.items() if p == name))
        if actual:
            result.recall[name] = tp / actual
        f1s.append(2 * tp / (actual + called) if actual + called else 0.0)
    result.f1 = f1s[1] if len(names) == 2 else float(np.mean(f1s))
    result.log_loss = _log_loss_from(t.losses, names, labelled)
    return result


def _log_loss_from(
    losses: Mapping[tuple[str, int, int], tuple[int, float]], names: list[str], labelled: int
) -> float | None:
    """Every labelled record must have one probability per name and a label among them."""
    groups: dict[tuple[str, int], int] = {}
    for (actual, width, _), (n, _) in losses.items():
        groups[actual, width] = max(groups.get((actual, width), 0), n)
    index = {name: i for i, name in enumerate(names)}
    total, counted = 0.0, 0
    for (actual, width), n in groups.items():
        if not n:
            continue
        column = index.get(actual)
        if width != len(names) or column is None:
            return None
        found, loss = losses.get((actual, width, column), (0, 0.0))
        if found != n:
            return None
        total, counted = total + loss, counted + n
    return total / counted if counted == labelled else None
