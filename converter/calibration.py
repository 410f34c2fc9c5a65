"""Calibration of a classifier's confidence on held-out rows, for the label-free estimate.

The monitor estimates a window's accuracy without labels as the mean, over its records, of
P(the predicted class is right | the top-class probability), in the spirit of NannyML's
confidence-based performance estimation (CBPE). Raw probabilities are rarely that
probability (a random forest is under-confident, a boosted model over-confident), so the
converter fits it: an isotonic regression (scikit-learn's ``IsotonicRegression``, increasing,
clipped to [0, 1]) of "top class correct" (0 or 1) on the top-class probability, over the
held-out rows, and stores it in ``model.json`` as breakpoints: the map is the linear
interpolation through them, constant beyond the first and the last (``numpy.interp``).

The estimated accuracy uses one map of the top class, fitted on every row (a per-class map
sees a class's rows only, so a minority class is fitted on fewer).

Which rows: cross-fitted, as scikit-learn's ``CalibratedClassifierCV(ensemble=False)`` fits
its calibrator. Clones of the estimator (``sklearn.base.clone``) are fitted on ``folds - 1``
folds of the labelled rows (at most ``CROSS_FIT_ROWS``) and predict the fold left out
(``cross_val_predict``), so every row gets a probability from a model that did not see it, and
the map is fitted on all of them rather than on the 20% holdout alone. That matters: a holdout
of 600 rows at 95% accuracy holds 30 errors, and the map's error then dominates the estimate's
under shift (``benchmarks/label_free_estimate.py`` measured 3.4 points mean error at the demo's
shift calibrated on the holdout, 1.3 cross-fitted). When the rows cannot be cross-fitted (the
estimator does not clone or refit, a class has fewer rows than folds, or ``folds`` is 0) the
map is fitted on the held-out rows, and the block says which (``source``).

Beside the pooled map, one map per predicted class (the same isotonic fit on the rows
predicted as that class, where there are ``MIN_CALIBRATION_ROWS`` of them) and the
cross-fitted confusion counts: the monitor's expected confusion matrix (a class's expected
correct predictions from its map, its expected errors split among the true classes as the
cross-fitted rows split them).

The estimate is only as good as the assumption behind it (CBPE's): the relation between the
inputs and the label does not change. Under covariate shift it holds; under concept drift
the model stays confident and wrong, which is what the labelled accuracy beside it shows.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

__all__ = [
    "CROSS_FIT_ROWS",
    "MAX_BREAKPOINTS",
    "MAX_CLASS_MAPS",
    "MIN_CALIBRATION_ROWS",
    "cross_fitted_probabilities",
    "fit_calibration",
]

MAX_BREAKPOINTS = 128
"""At most this many breakpoints are stored (model.json stays small whatever the holdout)."""

MIN_CALIBRATION_ROWS = 50
"""Fewer held-out rows fit no map: model.json then has ``"calibration": null`` and the monitor
falls back to the raw top-class probability."""

CROSS_FIT_ROWS = 20_000
"""At most this many rows (a seeded sample) are cross-fitted: the folds' fits cost
``folds - 1`` times a fit on them."""

MAX_CLASS_MAPS = 20
"""Classifiers with more classes get no per-class maps nor confusion counts (model.json stays
small); their expected confusion matrix is not estimated."""


def fit_calibration(
    probabilities: Any, truth: Any, classes: Any, source: str
) -> dict[str, Any] | None:
    """The ``model.json`` ``calibration`` block from rows the model did not see: each row's
    probabilities (rows x classes, columns in ``classes`` order) and its label; None under
    ``MIN_CALIBRATION_ROWS``.

    ``source`` says which rows ("cross-fit", "holdout" or "split", as ``holdout_metrics``).
    """
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] < MIN_CALIBRATION_ROWS:
        return None
    labels = np.asarray(classes)
    truth = np.asarray(truth)
    if labels.dtype.kind in "OUS":  # string classes: compare as strings
        labels, truth = labels.astype(str), truth.astype(str)
    names = [str(c.item() if hasattr(c, "item") else c) for c in labels]
    predicted = p.argmax(axis=1)
    actual = np.full(len(truth), -1)
    for j, label in enumerate(labels):
        actual[truth == label] = j
    correct = predicted == actual
    top = p.max(axis=1)
    x, y = _isotonic(top, correct)
    calibrated = np.interp(top, x, y)
    block: dict[str, Any] = {
        "method": "isotonic",
        "target": "top class correct",
        "source": source,
        "rows": int(p.shape[0]),
        "x": [float(v) for v in x],
        "y": [float(v) for v in y],
        "accuracy": float(correct.mean()),  # of these rows
        "mean_top_probability": float(top.mean()),
        "brier_raw": float(np.mean((top - correct) ** 2)),
        "brier_calibrated": float(np.mean((calibrated - correct) ** 2)),
    }
    if len(names) <= MAX_CLASS_MAPS:
        block["classes"] = _class_maps(top, correct, predicted, names)
        block["confusion"] = {
            k: {t: int(np.sum((predicted == i) & (actual == j))) for j, t in enumerate(names)}
            for i, k in enumerate(names)
        }
    return block


def _isotonic(top: Any, correct: Any) -> tuple[Any, Any]:
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip")
    iso.fit(top, correct.astype(np.float64))
    return _bounded(np.asarray(iso.X_thresholds_), np.asarray(iso.y_thresholds_))


def _class_maps(top: Any, correct: Any, predicted: Any, names: list[str]) -> dict[str, Any]:
    """Per predicted class with ``MIN_CALIBRATION_ROWS`` rows: its map and its rows."""
    maps = {}
    for i, name in enumerate(names):
        rows = predicted == i
        if rows.sum() >= MIN_CALIBRATION_ROWS:
            x, y = _isotonic(top[rows], correct[rows])
            maps[name] = {
                "rows": int(rows.sum()),
                "x": [float(v) for v in x],
                "y": [float(v) for v in y],
            }
    return maps


def cross_fitted_probabilities(
    estimator: Any, inputs: Any, target: Any, folds: int, seed: int
) -> tuple[Any, str | None]:
    """(out-of-fold probabilities of clones of ``estimator``, None) over ``inputs``, or (None,
    the reason) when they cannot be had: ``folds`` < 2, a class with fewer rows than folds,
    or an estimator that does not clone or refit."""
    from sklearn.base import clone
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    if folds < 2:
        return None, "cross-fitting is off (calibration folds < 2)"
    _, counts = np.unique(np.asarray(target).astype(str), return_counts=True)
    if counts.min() < folds:
        return None, f"a class has {counts.min()} rows, fewer than {folds} folds"
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    try:
        with warnings.catch_warnings():
            # The caller's own fit already showed its convergence warnings.
            warnings.simplefilter("ignore", ConvergenceWarning)
            probabilities = cross_val_predict(
                clone(estimator), inputs, target, cv=cv, method="predict_proba"
            )
    except Exception as exc:  # any estimator's fit: fall back to the held-out rows
        return None, f"the estimator could not be refitted on folds: {type(exc).__name__}: {exc}"
    return probabilities, None


def _bounded(x: Any, y: Any) -> tuple[Any, Any]:
    """At most ``MAX_BREAKPOINTS`` of the isotonic breakpoints, the first and the last kept:
    the interpolation through a subset of a monotone map's points is monotone too."""
    if x.size <= MAX_BREAKPOINTS:
        return x, y
    keep = np.unique(np.linspace(0, x.size - 1, MAX_BREAKPOINTS).round().astype(int))
    return x[keep], y[keep]
