"""An outlier detector's outlier rate as a drift signal.

Pure scipy. An outlier detector (IsolationForest, OneClassSVM, LocalOutlierFactor with
``novelty=True``...) labels each row 1 (inlier) or -1 (outlier); its reference profile holds
the training rows' labels as the prediction distribution (categories ``"-1"`` and ``"1"``),
and the gateway counts every served label into the same bins. More outliers than in training
is what an operator of such a model watches: new kinds of input, or a changed population.

The test is the one ``monitor.quality`` runs on missing rates: Fisher's exact test, one-sided,
of "the window's outlier rate is above the reference's" (``rise_p_value``), conditional on the
total count of both samples, so both finite samples are accounted for, with no simulation,
and a false-alarm rate at most ``alpha`` for every n and every rate. DRIFT when the p-value
is below ``alpha`` and the rise exceeds ``floor`` (default one point of the rows: on a million
rows a rise of a tenth of a point is significant and nobody's incident); a window with fewer
than ``min_rows`` rows is INSUFFICIENT_DATA.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from driftgate.monitor.drift import Verdict
from driftgate.monitor.quality import rise_p_value

__all__ = ["OUTLIER_LABEL", "OutlierRate", "outlier_count", "outlier_rate_verdict"]

OUTLIER_LABEL = "-1"
"""The label scikit-learn's outlier detectors give an outlier (the profile's category)."""


@dataclass(frozen=True)
class OutlierRate:
    """The outlier rate of a window against the reference's, and the test's verdict."""

    window: int  # outliers in the window
    rows: int  # rows of the window
    reference: int  # outliers among the training rows
    reference_rows: int
    p_value: float
    alpha: float
    floor: float
    verdict: Verdict
    test: str = "fisher_exact_rise"

    @property
    def rate(self) -> float:
        return self.window / self.rows if self.rows else math.nan

    @property
    def reference_rate(self) -> float:
        return self.reference / self.reference_rows if self.reference_rows else math.nan

    def figures(self) -> dict[str, Any]:
        """The test, its statistic and sample sizes, as an event records them."""
        return {
            "test": self.test,
            "rate": self.rate,
            "reference_rate": self.reference_rate,
            "outliers": self.window,
            "rows": self.rows,
            "reference_outliers": self.reference,
            "reference_rows": self.reference_rows,
            "p_value": self.p_value,
            "alpha": self.alpha,
            "floor": self.floor,
            "verdict": self.verdict.name.lower(),
        }


def outlier_count(categories: Sequence[str], counts: Sequence[int] | Mapping[int, int]) -> int:
    """Rows labelled outlier, from prediction counts on the profile's categories (a list of
    counts per bin, or the store's bin -> count)."""
    if OUTLIER_LABEL not in categories:
        return 0
    index = list(categories).index(OUTLIER_LABEL)
    if isinstance(counts, Mapping):
        return int(counts.get(index, 0))
    return int(counts[index]) if index < len(counts) else 0


def outlier_rate_verdict(
    window: tuple[int, int],
    reference: tuple[int, int],
    alpha: float = 0.005,
    floor: float = 0.01,
    min_rows: int = 100,
) -> OutlierRate:
    """The verdict on ``window`` (outliers, rows) against ``reference`` (outliers, rows)."""
    (x, n), (x_ref, n_ref) = window, reference
    if n < min_rows or n_ref == 0:
        return OutlierRate(x, n, x_ref, n_ref, math.nan, alpha, floor, Verdict.INSUFFICIENT_DATA)
    p = rise_p_value(x, n, x_ref, n_ref)
    drifted = p < alpha and x / n - x_ref / n_ref > floor
    verdict = Verdict.DRIFT if drifted else Verdict.NO_DRIFT
    return OutlierRate(x, n, x_ref, n_ref, p, alpha, floor, verdict)
