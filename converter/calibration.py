"""Calibration of a classifier's confidence on held-out rows, for the label-free estimate.

The monitor estimates a window's accuracy without labels as the mean, over its records, of
P(the predicted class is right | the top-class probability), in the spirit of NannyML's
confidence-based performance estimation (CBPE). Raw probabilities are rarely that
probability (a random forest is under-confident, a boosted model over-confident), so the
converter fits it: an isotonic regression (scikit-learn's ``IsotonicRegression``, increasing,
clipped to [0, 1]) of "top class correct" (0 or 1) on the top-class probability, over the
held-out rows, and stores it in ``model.json`` as breakpoints: the map is the linear
interpolation through them, constant beyond the first and the last (``numpy.interp``).

One map of the top class, not one per class: it is fitted on every held-out row (a per-class
map sees a class's rows only, so a minority class is fitted on a few dozen), it is all that
accuracy needs, and the monitor's histogram stays one per bucket rather than one per class.
The price: no expected confusion matrix, only expected accuracy.

The estimate is only as good as the assumption behind it (CBPE's): the relation between the
inputs and the label does not change. Under covariate shift it holds; under concept drift
the model stays confident and wrong, which is what the labelled accuracy beside it shows.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["MAX_BREAKPOINTS", "MIN_CALIBRATION_ROWS", "fit_calibration"]

MAX_BREAKPOINTS = 128
"""At most this many breakpoints are stored (model.json stays small whatever the holdout)."""

MIN_CALIBRATION_ROWS = 50
"""Fewer held-out rows fit no map: model.json then has ``"calibration": null`` and the monitor
falls back to the raw top-class probability."""


def fit_calibration(probabilities: Any, correct: Any, source: str) -> dict[str, Any] | None:
    """The ``model.json`` ``calibration`` block from held-out rows: each row's probabilities
    (rows x classes) and whether its top class is the label; None under
    ``MIN_CALIBRATION_ROWS``.

    ``source`` says which rows ("holdout" or "split", as ``holdout_metrics``).
    """
    from sklearn.isotonic import IsotonicRegression

    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] < MIN_CALIBRATION_ROWS:
        return None
    top = p.max(axis=1)
    correct = np.asarray(correct, dtype=np.float64)
    iso = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip")
    iso.fit(top, correct)
    x, y = _bounded(np.asarray(iso.X_thresholds_), np.asarray(iso.y_thresholds_))
    calibrated = np.interp(top, x, y)
    return {
        "method": "isotonic",
        "target": "top class correct",
        "source": source,
        "rows": int(p.shape[0]),
        "x": [float(v) for v in x],
        "y": [float(v) for v in y],
        "holdout_accuracy": float(correct.mean()),
        "mean_top_probability": float(top.mean()),
        "brier_raw": float(np.mean((top - correct) ** 2)),
        "brier_calibrated": float(np.mean((calibrated - correct) ** 2)),
    }


def _bounded(x: Any, y: Any) -> tuple[Any, Any]:
    """At most ``MAX_BREAKPOINTS`` of the isotonic breakpoints, the first and the last kept:
    the interpolation through a subset of a monotone map's points is monotone too."""
    if x.size <= MAX_BREAKPOINTS:
        return x, y
    keep = np.unique(np.linspace(0, x.size - 1, MAX_BREAKPOINTS).round().astype(int))
    return x[keep], y[keep]
