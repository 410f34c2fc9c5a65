"""Accuracy of a model version from predictions joined with their labels. Pure numpy.

Classifiers: accuracy, macro F1 (binary: F1 of the positive class, the second class label),
log loss (probabilities clipped to [1e-15, 1 - 1e-15], as scikit-learn does), per-class
recall, and, beside the labelled figures, an estimate from the model's own probabilities:
the mean top-class probability over every prediction of the window, labelled or not (it is
the model's expected accuracy if it is calibrated, and needs no label). Regressors: MAE and
RMSE. Both: label coverage and label-lag percentiles (p50, p90, p99).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Accuracy", "JoinedPrediction", "accuracy_of"]

_CLIP = 1e-15


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
    mae: float | None = None
    rmse: float | None = None
    label_lag_seconds: dict[str, float] = field(default_factory=dict)


def accuracy_of(
    records: Sequence[JoinedPrediction], task: str, class_labels: Sequence[str] = ()
) -> Accuracy:
    """Figures for ``records``; ``task`` is "classification" or "regression"."""
    labelled = [r for r in records if r.label is not None]
    result = Accuracy(
        prediction_count=len(records),
        label_count=len(labelled),
        coverage=len(labelled) / len(records) if records else 0.0,
    )
    lags = np.array([r.lag_seconds for r in labelled if r.lag_seconds is not None])
    if lags.size:
        for name, q in (("p50", 50), ("p90", 90), ("p99", 99)):
            result.label_lag_seconds[name] = float(np.percentile(lags, q))
    if task == "regression":
        _regression(result, labelled)
    else:
        _classification(result, records, labelled, [str(c) for c in class_labels])
    return result


def _regression(result: Accuracy, labelled: Sequence[JoinedPrediction]) -> None:
    if not labelled:
        return
    error = np.array([float(r.prediction) - float(r.label) for r in labelled])  # type: ignore[arg-type]
    result.mae = float(np.mean(np.abs(error)))
    result.rmse = float(math.sqrt(np.mean(error**2)))


def _classification(
    result: Accuracy,
    records: Sequence[JoinedPrediction],
    labelled: Sequence[JoinedPrediction],
    classes: list[str],
) -> None:
    top = [max(r.probabilities) for r in records if len(r.probabilities)]
    if top:
        result.estimated_accuracy = float(np.mean(top))
    if not labelled:
        return
    truth = np.array([str(r.label) for r in labelled])
    predicted = np.array([str(r.prediction) for r in labelled])
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
        p = np.clip(np.asarray(r.probabilities, dtype=np.float64), _CLIP, 1 - _CLIP)
        losses.append(-math.log(p[column] / p.sum()))
    return float(np.mean(losses))
