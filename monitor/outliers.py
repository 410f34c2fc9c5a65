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

from collections.abc import Mapping, Sequence
from dataclasses import replace

from driftgate.monitor.drift import DatasetDrift, QualityDrift, Verdict, rate_rise

__all__ = [
    "OUTLIER_KIND",
    "OUTLIER_LABEL",
    "OutlierRate",
    "outlier_count",
    "outlier_rate_verdict",
    "with_outlier_rate",
]

OUTLIER_KIND = "outlier"
"""The kind of the outlier rate's test among the prediction's data-quality tests."""

OUTLIER_LABEL = "-1"
"""The label scikit-learn's outlier detectors give an outlier (the profile's category)."""


OutlierRate = QualityDrift
"""The outlier rate's verdict: the data-quality rate test, of kind ``"outlier"``."""


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
    return rate_rise(OUTLIER_KIND, window, reference, alpha, floor, min_rows)


def with_outlier_rate(result: DatasetDrift, rate: OutlierRate) -> DatasetDrift:
    """``result`` with the outlier rate as a data-quality test of the prediction, so every
    reader of drift (GetDrift, ``driftgate drift``, the report, the prediction alarm) sees
    it: the prediction is DRIFT when its distribution test or the outlier rate says so."""
    prediction = result.prediction
    if prediction is None:
        return result
    verdict = prediction.verdict
    if rate.verdict == Verdict.DRIFT:
        verdict = Verdict.DRIFT
    elif verdict == Verdict.INSUFFICIENT_DATA and rate.verdict == Verdict.NO_DRIFT:
        verdict = Verdict.NO_DRIFT
    tested = replace(
        prediction,
        verdict=verdict,
        quality=(*prediction.quality, rate),
        distribution=prediction.distribution_verdict,
    )
    return replace(result, prediction=tested)
