"""The checks of the canary judge: each one's two one-sided tests on accumulated figures.

See ``monitor.canary`` for the design and the error rates. Each check takes both versions'
figures and the levels of this look (pass test, fail test) and returns a ``CheckResult``
with its outcome, both tests (statistic, p-value, level) and the sample sizes. The
statistics are computed from counts and histograms (``farrington_manning``, ``mann_whitney``)
or by ``scipy.stats`` (Fisher's exact test, chi-square of homogeneity, the normal tails).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from scipy import stats

from driftgate.monitor.drift import js_distance
from driftgate.monitor.policy import CanaryPolicy

__all__ = [
    "CanaryFigures",
    "CheckResult",
    "Outcome",
    "TestResult",
    "VersionFigures",
    "checks",
    "farrington_manning",
    "mann_whitney",
    "quantile",
]

Outcome = Literal["pass", "fail", "inconclusive", "insufficient"]
Histogram = Sequence[tuple[float, int]]


@dataclass(frozen=True)
class VersionFigures:
    """One version's figures summed from the analysis start to now."""

    requests: int = 0
    errors: int = 0
    latency: tuple[tuple[float, int], ...] = ()  # (upper bound in seconds, count), ascending
    labels: int = 0  # prediction records joined with a label
    correct: int = 0  # classifiers: labelled records predicted right
    absolute_error_sum: float = 0.0  # regressors: sum of |label - prediction|
    squared_error_sum: float = 0.0  # regressors: sum of (label - prediction)^2
    predictions: tuple[int, ...] = ()  # prediction counts on the stable version's bins

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.labels if self.labels else None

    @property
    def mae(self) -> float | None:
        return self.absolute_error_sum / self.labels if self.labels else None

    @property
    def latency_p99(self) -> float | None:
        return quantile(self.latency, 0.99)


@dataclass(frozen=True)
class CanaryFigures:
    """Canary and stable over the same buckets; ``task`` says which accuracy test applies."""

    canary: VersionFigures
    stable: VersionFigures
    task: str = "classification"  # or "regression"


@dataclass(frozen=True)
class TestResult:
    """One hypothesis test at one look."""

    test: str
    null: str  # the null hypothesis, in words
    statistic: float
    p_value: float
    level: float  # the level it was run at (this look's share of the spent alpha)
    rejected: bool


@dataclass(frozen=True)
class CheckResult:
    """One check at one look: its outcome, both tests and the sample sizes."""

    name: str
    required: bool
    canary_n: int
    stable_n: int
    margin: float
    canary_value: float | None
    stable_value: float | None
    detail: str
    outcome: Outcome = "insufficient"  # too little data for the tests to run
    tests: tuple[TestResult, ...] = ()

    def figures(self) -> dict[str, Any]:
        return asdict(self) | {"tests": [asdict(t) for t in self.tests]}


def checks(
    policy: CanaryPolicy,
    figures: CanaryFigures,
    required: Sequence[str],
    levels: tuple[float, float],
) -> tuple[CheckResult, ...]:
    """Every check, its pass test at ``levels[0]`` and its fail test at ``levels[1]``."""
    c, s = figures.canary, figures.stable
    accuracy = _regression if figures.task == "regression" else _classification
    return (
        _errors(policy, c, s, levels, "errors" in required),
        _latency(policy, c, s, levels, "latency" in required),
        accuracy(policy, c, s, levels, "accuracy" in required),
        _predictions(policy, c, s, levels, "predictions" in required),
    )


# -- the checks ---------------------------------------------------------------------------


def _errors(
    policy: CanaryPolicy,
    c: VersionFigures,
    s: VersionFigures,
    levels: tuple[float, float],
    required: bool,
) -> CheckResult:
    margin = policy.checks.max_error_rate_increase
    n = (c.requests, s.requests)
    base = _base("errors", required, n, margin, c.error_rate, s.error_rate)
    head = f"errors: {c.errors}/{c.requests} canary, {s.errors}/{s.requests} stable"
    if min(n) < policy.min_requests:
        return CheckResult(**base, detail=f"{head}; {policy.min_requests} requests each needed")
    tests = _proportion_tests(c.errors, c.requests, s.errors, s.requests, margin, levels)
    return _judged(base, tests, f"{head} (at most +{margin:.2%})")


def _classification(
    policy: CanaryPolicy,
    c: VersionFigures,
    s: VersionFigures,
    levels: tuple[float, float],
    required: bool,
) -> CheckResult:
    margin = policy.checks.max_accuracy_drop
    n = (c.labels, s.labels)
    base = _base("accuracy", required, n, margin, c.accuracy, s.accuracy)
    head = f"accuracy: {c.correct}/{c.labels} canary, {s.correct}/{s.labels} stable labels right"
    if min(n) < policy.checks.min_labels:
        return CheckResult(**base, detail=f"{head}; {policy.checks.min_labels} labels each needed")
    wrong_c, wrong_s = c.labels - c.correct, s.labels - s.correct
    tests = _proportion_tests(wrong_c, c.labels, wrong_s, s.labels, margin, levels)
    return _judged(base, tests, f"{head} (at most {margin:g} lower)")


def _regression(
    policy: CanaryPolicy,
    c: VersionFigures,
    s: VersionFigures,
    levels: tuple[float, float],
    required: bool,
) -> CheckResult:
    ratio = policy.checks.max_mae_ratio
    n = (c.labels, s.labels)
    base = _base("accuracy", required, n, ratio, c.mae, s.mae)
    head = f"MAE: {_num(c.mae)} on {c.labels} canary, {_num(s.mae)} on {s.labels} stable labels"
    if min(n) < policy.checks.min_labels:
        return CheckResult(**base, detail=f"{head}; {policy.checks.min_labels} labels each needed")
    mean_c, var_c = _mean_var(c)
    mean_s, var_s = _mean_var(s)
    z_pass = (ratio * mean_s - mean_c) / _root(var_c / c.labels + ratio**2 * var_s / s.labels)
    z_fail = (mean_c - mean_s) / _root(var_c / c.labels + var_s / s.labels)
    tests = (
        _test("z_mean_absolute_error", f"canary MAE >= {ratio:g} x stable", z_pass, levels[0]),
        _test("welch_z_mean_absolute_error", "canary MAE <= stable", z_fail, levels[1]),
    )
    return _judged(base, tests, f"{head} (at most {ratio:g} x)")


def _latency(
    policy: CanaryPolicy,
    c: VersionFigures,
    s: VersionFigures,
    levels: tuple[float, float],
    required: bool,
) -> CheckResult:
    ratio, slack = policy.checks.max_latency_p99_ratio, policy.checks.latency_p99_slack_ms / 1000
    counts = [sum(n for _, n in v.latency) for v in (c, s)]
    p99_c, p99_s = c.latency_p99, s.latency_p99
    base = _base("latency", required, counts, ratio, p99_c, p99_s)
    head = f"latency p99 {_ms(p99_c)} canary ({counts[0]}), {_ms(p99_s)} stable ({counts[1]})"
    if min(counts) < policy.min_requests or p99_c is None or p99_s is None:
        return CheckResult(**base, detail=f"{head}; {policy.min_requests} observations each needed")
    limit = ratio * p99_s + slack
    bounds_c, n_c = _histogram(c.latency)
    bounds_s, n_s = _histogram(s.latency)
    z_pass, _ = mann_whitney((bounds_c - slack) / ratio, n_c, bounds_s, n_s)
    z_fail, _ = mann_whitney(bounds_c, n_c, bounds_s, n_s)
    within = p99_c <= limit
    tests = (
        _test(
            "mann_whitney_u",
            f"canary latency >= {ratio:g} x stable + {slack * 1000:g} ms",
            -z_pass,
            levels[0],
            extra=within,
        ),
        _test("mann_whitney_u", "canary latency <= stable", z_fail, levels[1], extra=not within),
    )
    return _judged(base, tests, f"{head} (p99 at most {_ms(limit)})")


def _predictions(
    policy: CanaryPolicy,
    c: VersionFigures,
    s: VersionFigures,
    levels: tuple[float, float],
    required: bool,
) -> CheckResult:
    limit = policy.checks.max_prediction_drift
    a, b = _padded(c.predictions, s.predictions)
    n = (int(a.sum()), int(b.sum()))
    distance = float(js_distance(b, a)) if min(n) else None
    base = _base("predictions", required, n, limit, distance, 0.0)
    head = f"predictions: JS distance {_num(distance)} on the stable's bins, rows {n[0]}/{n[1]}"
    if distance is None or min(n) < policy.checks.min_prediction_rows:
        return CheckResult(
            **base, detail=f"{head}; {policy.checks.min_prediction_rows} rows each needed"
        )
    statistic, p = _chi_square(a, b)
    far = distance > limit
    fail = TestResult(
        "chi_square_homogeneity",
        "same prediction distribution",
        statistic,
        p,
        levels[1],
        far and p <= levels[1],
    )
    outcome: Outcome = "fail" if fail.rejected else ("inconclusive" if far else "pass")
    return CheckResult(
        **base, detail=f"{head} (at most {limit:g}): {outcome}", outcome=outcome, tests=(fail,)
    )


# -- tests --------------------------------------------------------------------------------


def _proportion_tests(
    x_c: int, n_c: int, x_s: int, n_s: int, margin: float, levels: tuple[float, float]
) -> tuple[TestResult, TestResult]:
    """Non-inferiority (Farrington-Manning) and inferiority (Fisher) of a bad-outcome rate."""
    z = farrington_manning(x_c, n_c, x_s, n_s, margin)
    pass_test = _test("farrington_manning", f"canary rate >= stable + {margin:g}", -z, levels[0])
    odds, p = stats.fisher_exact([[x_c, n_c - x_c], [x_s, n_s - x_s]], alternative="greater")
    fail = TestResult(
        "fisher_exact", "canary rate <= stable", _finite(odds), float(p), levels[1], p <= levels[1]
    )
    return pass_test, fail


def farrington_manning(x1: int, n1: int, x2: int, n2: int, margin: float) -> float:
    """Score statistic of H0: p1 - p2 = margin (Farrington and Manning 1990): the observed
    difference minus the margin over its standard error at the restricted maximum likelihood
    estimates; negative when p1 - p2 is below the margin."""
    p1, p2, theta, d = x1 / n1, x2 / n2, n2 / n1, margin
    a = 1.0 + theta
    b = -(1.0 + theta + p1 + theta * p2 + d * (theta + 2.0))
    c = d * d + d * (2.0 * p1 + theta + 1.0) + p1 + theta * p2
    e = -p1 * d * (1.0 + d)
    v = b**3 / (27.0 * a**3) - b * c / (6.0 * a**2) + e / (2.0 * a)
    u = math.copysign(math.sqrt(max(b * b / (9.0 * a * a) - c / (3.0 * a), 0.0)), v)
    cosine = max(-1.0, min(1.0, v / u**3)) if u else 0.0
    w = (math.pi + math.acos(cosine)) / 3.0
    r1 = min(max(2.0 * u * math.cos(w) - b / (3.0 * a), 0.0), 1.0)
    r2 = min(max(r1 - d, 0.0), 1.0)
    variance = r1 * (1.0 - r1) / n1 + r2 * (1.0 - r2) / n2
    return (p1 - p2 - d) / _root(variance)


def mann_whitney(
    values_a: np.ndarray, counts_a: np.ndarray, values_b: np.ndarray, counts_b: np.ndarray
) -> tuple[float, float]:
    """Mann-Whitney U of sample a (``counts_a`` observations at ``values_a``) against b, from
    counts: (z, U / (n_a n_b)). z > 0 when a tends to be larger; ties get midranks and the
    tie-corrected variance, as ``scipy.stats.mannwhitneyu(method="asymptotic",
    use_continuity=False)`` on the expanded values."""
    values, where = np.unique(np.concatenate([values_a, values_b]), return_inverse=True)
    in_a = np.bincount(where[: len(values_a)], weights=counts_a, minlength=len(values))
    in_b = np.bincount(where[len(values_a) :], weights=counts_b, minlength=len(values))
    tied = in_a + in_b
    n_a, n_b = float(in_a.sum()), float(in_b.sum())
    total = n_a + n_b
    midranks = np.cumsum(tied) - (tied - 1.0) / 2.0
    u = float(in_a @ midranks) - n_a * (n_a + 1.0) / 2.0
    ties = float(np.sum(tied**3 - tied))
    variance = n_a * n_b / 12.0 * ((total + 1.0) - ties / (total * (total - 1.0)))
    z = (u - n_a * n_b / 2.0) / math.sqrt(variance) if variance > 0 else 0.0
    return z, u / (n_a * n_b)


def _chi_square(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Chi-square of homogeneity of two count vectors; bins expected to hold fewer than 5 of
    the smaller sample are pooled (Cochran)."""
    total = a + b
    small = total * min(a.sum(), b.sum()) / total.sum() < 5
    table = np.stack([a[~small], b[~small]], axis=0)
    if small.any():
        table = np.column_stack([table, [a[small].sum(), b[small].sum()]])
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2:
        return 0.0, 1.0
    result = stats.chi2_contingency(table, correction=False)
    return float(result.statistic), float(result.pvalue)


def _test(name: str, null: str, z: float, level: float, extra: bool = True) -> TestResult:
    """A one-sided z test: rejects H0 for large ``z`` (and only where ``extra`` holds)."""
    p = float(stats.norm.sf(z))
    return TestResult(name, null, z, p, level, extra and p <= level)


def _judged(base: dict[str, Any], tests: tuple[TestResult, TestResult], head: str) -> CheckResult:
    pass_test, fail_test = tests
    outcome: Outcome = (
        "fail" if fail_test.rejected else "pass" if pass_test.rejected else "inconclusive"
    )
    p = fail_test.p_value if outcome == "fail" else pass_test.p_value
    return CheckResult(
        **base, detail=f"{head}: {outcome} (p {p:.2g})", outcome=outcome, tests=tests
    )


def _base(
    name: str,
    required: bool,
    n: Sequence[int],
    margin: float,
    canary_value: float | None,
    stable_value: float | None,
) -> dict[str, Any]:
    return {
        "name": name,
        "required": required,
        "canary_n": int(n[0]),
        "stable_n": int(n[1]),
        "margin": margin,
        "canary_value": canary_value,
        "stable_value": stable_value,
    }


# -- figures ------------------------------------------------------------------------------


def quantile(histogram: Histogram, q: float) -> float | None:
    """The q-quantile of a cumulative-free histogram [(upper bound, count)], linear within a
    bucket as Prometheus' ``histogram_quantile`` does; None without observations."""
    total = sum(n for _, n in histogram)
    if total == 0:
        return None
    rank, seen, previous = q * total, 0, 0.0
    for le, n in histogram:
        if seen + n >= rank:
            if le >= 1e299:
                return previous
            return previous + (le - previous) * ((rank - seen) / n if n else 1.0)
        seen += n
        previous = le
    return previous


def _histogram(histogram: Histogram) -> tuple[np.ndarray, np.ndarray]:
    bounds = np.array([min(le, math.inf) for le, _ in histogram], dtype=np.float64)
    bounds[bounds >= 1e299] = math.inf
    return bounds, np.array([n for _, n in histogram], dtype=np.float64)


def _padded(a: Sequence[int], b: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    size = max(len(a), len(b))
    x, y = np.zeros(size), np.zeros(size)
    x[: len(a)], y[: len(b)] = a, b
    return x, y


def _mean_var(v: VersionFigures) -> tuple[float, float]:
    mean = v.absolute_error_sum / v.labels
    return mean, max(v.squared_error_sum / v.labels - mean * mean, 0.0)


def _root(variance: float) -> float:
    return math.sqrt(max(variance, 1e-300))


def _finite(x: float) -> float:
    return float(x) if math.isfinite(x) else 1e300


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f} ms"


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.3g}"
