"""The retraining judge: is the candidate not worse than the stable version on the same rows?

Both versions predict the same holdout rows (the newest labelled production rows, which the
candidate was not trained on), so the comparison is paired, and the policy's
``retrain.tolerance`` is the non-inferiority margin. The burden of proof is on the candidate:
it is accepted only when the test rejects "the candidate is worse by the margin or more" at
level ``retrain.alpha``. So a candidate worse by the margin is accepted in at most ``alpha``
of judgements (whatever the rows), and an equally good one is accepted with probability
``retrain.power`` once the holdout has the rows the power calculation asks for; with fewer
rows the judge refuses to judge ("insufficient evidence", rows needed and rows had).

Classifiers: McNemar's exact test, non-inferiority form. With ``b`` rows only the candidate
gets right and ``c`` rows only the stable gets right out of ``n``, the accuracy difference is
``(b - c) / n``; given the ``m = b + c`` discordant rows, ``b`` is binomial with probability
``1/2 - margin / (2 p_d)`` at the null's boundary (accuracy lower by the margin), ``p_d`` the
discordant share (at margin 0 this is the classic exact McNemar test, ``b ~ Binomial(m,
1/2)``). ``p_d`` is unknown, and estimating it by ``m / n`` lets the test exceed its level
when the discordance is near the margin (12.9% instead of 5% at 3% discordance, measured), so
the boundary is taken at the Clopper-Pearson ``1 - GAMMA`` upper bound of ``p_d`` and GAMMA
is added to the p-value (Berger and Boos): the p-value grows with ``p_d``, so the level is at
most ``alpha`` whatever ``p_d`` is. When that bound is below the margin, no candidate worse by
the margin fits the rows: p = GAMMA. Rows needed: the fewest ``n`` for which the normal
approximation of the test's power against an equally accurate candidate, at the observed
discordance (at least the margin) and that bound at ``n`` rows, reaches ``power``; about
``((z(1-alpha) + z(power)) / margin)^2 p_d`` rows (2,982 at 15% discordance and a 2-point
margin).

Regressors: a one-sided paired t-test on the absolute errors, ``d = |e_stable| -
|e_candidate|`` against ``-margin``, where the margin is ``tolerance`` times the stable's
mean absolute error on the holdout (a relative margin: a tolerance of 0.02 lets the MAE be
2% worse, in any unit). Rows needed, with ``s`` the standard deviation of ``d``:
``n = ((z(1-alpha) + z(power)) s / margin)^2``.

At least ``MIN_ROWS`` rows are needed in any case (the normal approximations of the power
calculation). ``judge`` is pure: ``benchmarks/retrain_judge.py`` measures its error rates by
simulation.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import stats

__all__ = [
    "MIN_ROWS",
    "RetrainVerdict",
    "insufficient_reason",
    "judge",
    "judge_classifier",
    "judge_regressor",
    "rows_needed_classifier",
    "rows_needed_regressor",
]

MIN_ROWS = 20
"""Fewest holdout rows judged at all, whatever the power calculation says."""

GAMMA = 0.001
"""Berger-Boos: the discordant share is bounded at 1 - GAMMA confidence; GAMMA is added to the
classifier test's p-value, so its level stays alpha whatever the true discordance."""

_MCNEMAR = "McNemar exact, non-inferiority"
_PAIRED_T = "paired t-test on absolute errors, non-inferiority"


@dataclass(frozen=True)
class RetrainVerdict:
    """The judgement and its evidence (``figures()`` goes into the retrain events)."""

    accepted: bool
    insufficient: bool  # refused to judge: fewer holdout rows than needed
    reason: str
    test: str
    statistic: float | None  # accuracy difference (classifier) or t statistic (regressor)
    p_value: float | None
    holdout_rows: int
    rows_needed: int | None  # None: no number of rows gives the power (margin 0)
    margin: float
    alpha: float
    power: float
    metric: str  # accuracy or mae
    candidate_score: float
    stable_score: float
    details: dict[str, Any]

    def figures(self) -> dict[str, Any]:
        values: dict[str, Any] = asdict(self)
        details: dict[str, Any] = values.pop("details")
        values.pop("accepted")
        values.pop("reason")
        return values | details


def _z(q: float) -> float:
    return NormalDist().inv_cdf(q)


def _discordance_bound(discordance: float, rows: int) -> float:
    """About the (1 - GAMMA) upper confidence limit of the discordant share (normal)."""
    spread = math.sqrt(max(discordance * (1 - discordance), 0.0) / rows)
    return min(1.0, discordance + _z(1 - GAMMA) * spread)


def rows_needed_classifier(
    discordance: float, margin: float, alpha: float, power: float
) -> int | None:
    """Holdout rows for ``power`` against an equally accurate candidate whose predictions
    are right where the stable's are wrong, or the reverse, on a ``discordance`` share of the
    rows (see the module; the bound on the discordance depends on the rows, so iterate)."""
    if margin <= 0:
        return None
    p = max(discordance, margin)
    level = max(alpha - GAMMA, 1e-12)

    def enough(rows: int) -> bool:  # more rows, a tighter bound: monotone in rows
        boundary = 0.5 - margin / (2 * _discordance_bound(p, rows))
        if boundary <= 0:  # the bound is below the margin
            return True
        root = _z(1 - level) * math.sqrt(boundary * (1 - boundary)) + _z(power) / 2
        return rows * p >= (root / (0.5 - boundary)) ** 2

    low, high = MIN_ROWS, MIN_ROWS
    while not enough(high):
        low, high = high, high * 2
    while low < high:  # the fewest rows that are enough
        middle = (low + high) // 2
        low, high = (low, middle) if enough(middle) else (middle + 1, high)
    return high


def rows_needed_regressor(spread: float, margin: float, alpha: float, power: float) -> int | None:
    """Holdout rows for ``power`` against an equally good candidate; ``spread`` is the
    standard deviation of the paired differences of absolute errors."""
    if spread == 0:
        return MIN_ROWS
    if margin <= 0:
        return None
    return max(MIN_ROWS, math.ceil(((_z(1 - alpha) + _z(power)) * spread / margin) ** 2))


def _mcnemar_p(b: int, c: int, n: int, margin: float) -> float:
    m = b + c
    bound = 1.0 if m >= n else float(stats.beta.ppf(1 - GAMMA, m + 1, n - m))
    if bound <= margin:  # no null point (discordance >= margin) within the bound
        return GAMMA
    if m == 0:
        return 1.0
    boundary = 0.5 - margin / (2 * bound)
    p_value = float(stats.binomtest(b, m, boundary, alternative="greater").pvalue)
    return min(1.0, p_value + GAMMA)


def insufficient_reason(needed: int | None, rows: int) -> str:
    """The reason of a refusal to judge: rows needed and rows had."""
    if needed is None:
        return (
            f"insufficient evidence: a tolerance of 0 leaves no margin, so no number of rows "
            f"gives the power; {rows} holdout rows"
        )
    return f"insufficient evidence: {needed} holdout rows needed, {rows} had"


def _agrees(truth: npt.NDArray[Any], predicted: npt.NDArray[Any]) -> npt.NDArray[np.bool_]:
    """Row by row: is the prediction the label? Compared as text unless both are numbers."""
    if truth.dtype.kind in "biu" and predicted.dtype.kind in "biu":
        return np.asarray(truth.ravel() == predicted.ravel())
    return np.asarray(truth.astype(str).ravel() == predicted.astype(str).ravel())


def judge_classifier(
    y_true: Any, stable: Any, candidate: Any, tolerance: float, alpha: float, power: float
) -> RetrainVerdict:
    """Paired non-inferiority of the candidate's accuracy (McNemar exact)."""
    truth = np.asarray(y_true)
    right_s, right_c = _agrees(truth, np.asarray(stable)), _agrees(truth, np.asarray(candidate))
    n = int(truth.size)
    b, c = int(np.sum(right_c & ~right_s)), int(np.sum(right_s & ~right_c))
    acc_c, acc_s = (float(right_c.mean()), float(right_s.mean())) if n else (0.0, 0.0)
    needed = rows_needed_classifier((b + c) / n if n else 0.0, tolerance, alpha, power)
    details = {"candidate_only_right": b, "stable_only_right": c, "discordant": b + c}
    base = (_MCNEMAR, None, None, n, needed, tolerance, alpha, power, "accuracy", acc_c, acc_s)
    if needed is None or n < needed:
        return RetrainVerdict(False, True, insufficient_reason(needed, n), *base, details)
    p_value = _mcnemar_p(b, c, n, tolerance)
    accepted = p_value < alpha
    what = (
        f"holdout accuracy {acc_c:.3f} vs stable {acc_s:.3f} on the same {n} rows "
        f"({b} right only by the candidate, {c} only by the stable), {_MCNEMAR} "
        f"p={p_value:.3g} (alpha {alpha:g}, margin {tolerance:g})"
    )
    reason = what if accepted else f"not shown to be no worse than the stable: {what}"
    statistic = (b - c) / n
    return RetrainVerdict(
        accepted, False, reason, _MCNEMAR, statistic, p_value, n, needed, tolerance, alpha,
        power, "accuracy", acc_c, acc_s, details,
    )  # fmt: skip


def _paired_t_p(shifted: npt.NDArray[np.float64]) -> tuple[float, float]:
    if np.all(shifted == shifted[0]):  # no spread: the sign decides
        return (math.inf if shifted[0] > 0 else -math.inf), (0.0 if shifted[0] > 0 else 1.0)
    # scipy.stats.ttest_1samp(shifted, 0, alternative="greater"), without its per-call overhead
    n = shifted.size
    statistic = float(shifted.mean() / (shifted.std(ddof=1) / math.sqrt(n)))
    return statistic, float(stats.t.sf(statistic, n - 1))


def judge_regressor(
    y_true: Any, stable: Any, candidate: Any, tolerance: float, alpha: float, power: float
) -> RetrainVerdict:
    """Paired non-inferiority of the candidate's absolute errors (one-sided t-test)."""
    truth = np.asarray(y_true, dtype=np.float64)
    error_s = np.abs(truth - np.asarray(stable, dtype=np.float64).ravel())
    error_c = np.abs(truth - np.asarray(candidate, dtype=np.float64).ravel())
    n = int(truth.size)
    mae_c, mae_s = (float(error_c.mean()), float(error_s.mean())) if n else (0.0, 0.0)
    margin = tolerance * mae_s
    difference = error_s - error_c  # positive: the candidate is closer
    spread = float(difference.std(ddof=1)) if n > 1 else 0.0
    needed = rows_needed_regressor(spread, margin, alpha, power)
    details = {"relative_tolerance": tolerance, "difference_sd": spread}
    base = (_PAIRED_T, None, None, n, needed, margin, alpha, power, "mae", mae_c, mae_s)
    if needed is None or n < needed:
        return RetrainVerdict(False, True, insufficient_reason(needed, n), *base, details)
    statistic, p_value = _paired_t_p(difference + margin)
    accepted = p_value < alpha
    what = (
        f"holdout MAE {mae_c:.4g} vs stable {mae_s:.4g} on the same {n} rows, {_PAIRED_T} "
        f"p={p_value:.3g} (alpha {alpha:g}, margin {margin:.4g} = {tolerance:g} x stable MAE)"
    )
    reason = what if accepted else f"not shown to be no worse than the stable: {what}"
    return RetrainVerdict(
        accepted, False, reason, _PAIRED_T, statistic, p_value, n, needed, margin, alpha,
        power, "mae", mae_c, mae_s, details,
    )  # fmt: skip


def judge(
    task: str,
    y_true: Any,
    stable: Any,
    candidate: Any,
    tolerance: float,
    alpha: float = 0.05,
    power: float = 0.8,
) -> RetrainVerdict:
    """The verdict on the candidate's predictions against the stable's, row by row."""
    judge_task = judge_classifier if task == "classification" else judge_regressor
    return judge_task(y_true, stable, candidate, tolerance, alpha, power)
