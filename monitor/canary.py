"""Canary analysis: a sequential statistical judge, a pure function of accumulated figures.

An analysis begins when a canary appears (``begin``: its weight goes to the first step). Then,
once per ``interval`` (a *look*), ``analyse`` receives the figures of both versions summed
from the analysis start to now, over the same buckets for both (evidence accumulates over the
whole analysis; it is never reset), and decides:

- ``wait``: less than ``interval`` since the last look;
- ``rollback``: a check *failed* (the canary is worse than the stable, below);
- ``promote``: at the last step, every required check has *passed*;
- ``step``: to the next weight, when every required check has enough data and none failed;
- ``hold``: otherwise; the canary stays at its step (the state still changes: the look is
  counted and passed checks are remembered);
- at the deadline (``deadline`` after the start, or the last planned look), an analysis that
  cannot promote is rolled back with the reason "insufficient evidence".

Each check runs two one-sided tests on the accumulated figures, the policy's tolerance being
the non-inferiority margin ``m`` of the canary's excess ``d`` (canary worse minus stable):

- *pass* (non-inferiority), H0: ``d >= m``; rejecting it shows the canary is within tolerance;
- *fail* (inferiority), H0: ``d <= 0``; rejecting it shows the canary is worse than the stable.

- ``errors``: pass, the Farrington-Manning score test of the difference of error rates
  against ``max_error_rate_increase``; fail, Fisher's exact test, one-sided.
- ``latency``: pass, Mann-Whitney U of (canary - slack) / ratio against the stable, one-sided,
  with the canary p99 at most ratio x stable p99 + slack; fail, Mann-Whitney U, one-sided, with
  the canary p99 above that limit (the practical floor: a slower but acceptable canary stays).
- ``accuracy``, classifiers: the error-rate pair on the misclassification rates of the joined
  labels, margin ``max_accuracy_drop``; regressors: z-tests of mean absolute errors, pass when
  the canary MAE is below ``max_mae_ratio`` x the stable's, fail when above the stable's.
- ``predictions``: fail, chi-square homogeneity on the stable version's bins with the
  Jensen-Shannon distance above ``max_prediction_drift`` (floor); there is no pass test, the
  check passes on that distance alone (with no stated error rate: not required by default).

Mann-Whitney is computed from the two latency histograms (midranks over bucket bounds, the
tie-corrected variance; the same figures as ``scipy.stats.mannwhitneyu`` on the expanded
values without continuity correction). A check with fewer observations than its minimum
(``min_requests``, ``min_labels`` per version, ``min_prediction_rows``) is *insufficient* at
that look: neither test runs.

Sequential design and error rates. The analysis plans ``K = ceil(deadline / interval)``
looks (30 at the defaults) and spends each test's level evenly over them: the pass test runs
at ``false_promotion / K`` per look, the fail test at ``false_rollback / K``. By the union
bound over looks (Bonferroni alpha spending, valid however the cumulative statistics are
correlated and however many looks actually happen, at most K):

- a canary worse than the margin on a required check (``d >= m``) is promoted with
  probability at most ``false_promotion`` (0.01): promotion needs that check's pass test to
  reject at some look;
- a canary no worse than the stable on every check (``d <= 0``) is rolled back by the tests
  with probability at most ``false_rollback`` (0.0025) per check that runs: at most 1% over
  the four checks; a rollback for insufficient evidence at the deadline comes on top (the
  benchmark measures the whole rate).

The error-rate pass test is asymptotic (score test with the restricted maximum likelihood
variance, the usual non-inferiority test, also where few errors are seen); every other bound
is as stated, conservatively (the union bound ignores the correlation between looks).
``benchmarks/canary_judge.py`` measures the rates through this code. A check passed at one
look stays passed (its error was spent when it passed); a later failure still rolls back.

A check whose pass test and fail test both reject (a canary worse than the stable but within
the margin, seen on much data) fails: production is protected first.

Which checks must pass is ``AnalysisState.required`` (from ``canary.required``, decided at
``begin``); the others can only fail. The state is a plain dataclass stored (``to_dict``)
after every look, so an analysis survives a restart of the monitor at the look it reached.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import numpy as np
from scipy import stats

from driftgate.monitor.drift import js_distance
from driftgate.monitor.policy import CHECK_NAMES, CanaryPolicy

__all__ = [
    "CHECK_NAMES",
    "AnalysisState",
    "CanaryFigures",
    "CheckResult",
    "Decision",
    "TestResult",
    "VersionFigures",
    "analyse",
    "begin",
    "farrington_manning",
    "mann_whitney",
    "planned_looks",
    "quantile",
    "run_checks",
]

# "retry" is no longer decided (the sequential judge holds instead); kept for callers' matches.
Action = Literal["start", "wait", "hold", "retry", "step", "promote", "rollback"]
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
class AnalysisState:
    """Where an analysis stands; stored after every look."""

    model: str
    canary: int
    stable: int
    step: int  # index into the policy's steps
    started_at: float
    last_look_at: float
    looks: int = 0
    required: tuple[str, ...] = ("errors", "latency")
    passed: tuple[str, ...] = ()  # checks whose pass test rejected at some look

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"required": list(self.required), "passed": list(self.passed)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AnalysisState:
        values = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        for name in ("required", "passed"):
            if name in values:
                values[name] = tuple(str(c) for c in values[name])
        if "last_look_at" not in values:  # a state stored by the per-round analysis
            values["last_look_at"] = float(data.get("round_started_at", data["started_at"]))
        return cls(**values)


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


@dataclass(frozen=True)
class Decision:
    """What to do now, the state to store, and why."""

    action: Action
    state: AnalysisState
    reason: str
    weight: float | None = None  # the canary weight to set (start, step)
    checks: tuple[CheckResult, ...] = ()
    figures: dict[str, Any] = field(default_factory=dict)


def planned_looks(policy: CanaryPolicy) -> int:
    """K, the looks the alpha of each test is spread over."""
    return max(1, math.ceil(policy.deadline / policy.interval - 1e-9))


def required_checks(policy: CanaryPolicy, labels_expected: bool) -> tuple[str, ...]:
    """The policy's ``required``, or by default errors and latency, plus accuracy when labels
    are expected (the caller says whether the stable version has been receiving them)."""
    if policy.required is not None:
        return policy.required
    return ("errors", "latency", "accuracy") if labels_expected else ("errors", "latency")


def begin(
    policy: CanaryPolicy,
    model: str,
    canary: int,
    stable: int,
    now: float,
    labels_expected: bool = False,
) -> Decision:
    """A new analysis at the first step."""
    required = required_checks(policy, labels_expected)
    state = AnalysisState(model, canary, stable, 0, now, now, required=required)
    weight = policy.steps[0]
    return Decision(
        "start",
        state,
        f"canary analysis of version {canary} against stable {stable} begins at {weight:g}%; "
        f"required checks: {', '.join(required) or 'none'}",
        weight=weight,
        figures={
            "steps": list(policy.steps),
            "interval": policy.interval,
            "deadline": policy.deadline,
            "planned_looks": planned_looks(policy),
            "required": list(required),
            "false_promotion": policy.false_promotion,
            "false_rollback": policy.false_rollback,
        },
    )


def analyse(
    policy: CanaryPolicy, state: AnalysisState, figures: CanaryFigures, now: float
) -> Decision:
    """Decide one look (see the module docstring)."""
    if now - state.last_look_at < policy.interval:
        return Decision("wait", state, f"next look {policy.interval:g} s after the last")
    planned = planned_looks(policy)
    look = state.looks + 1
    checks = run_checks(policy, figures, state.required, planned)
    passed = tuple(c for c in CHECK_NAMES if c in state.passed or _outcome(checks, c) == "pass")
    new = replace(state, looks=look, last_look_at=now, passed=passed)
    numbers = _numbers(policy, new, checks, figures, planned)
    last_step = state.step + 1 >= len(policy.steps)
    failed = [c for c in checks if c.outcome == "fail"]
    if failed:
        why = "; ".join(c.detail for c in failed)
        return Decision("rollback", new, f"canary worse than stable: {why}", None, checks, numbers)
    missing = [c for c in state.required if c not in passed]
    if last_step and not missing:
        return Decision(
            "promote",
            new,
            f"every required check passed ({', '.join(state.required) or 'none'}) at "
            f"{policy.steps[-1]:g}% after {look} looks: {_details(checks, state.required)}",
            None,
            checks,
            numbers,
        )
    lacking = [c for c in checks if c.required and c.outcome == "insufficient"]
    if look >= planned or now - state.started_at >= policy.deadline:
        undecided = [c for c in checks if c.name in missing]
        return Decision(
            "rollback",
            new,
            f"insufficient evidence by the deadline ({policy.deadline:g} s, {look} looks): "
            + ("; ".join(c.detail for c in undecided) or "the last step was not reached"),
            None,
            checks,
            numbers,
        )
    if not last_step and not lacking:
        weight = policy.steps[state.step + 1]
        stepped = replace(new, step=state.step + 1)
        numbers["step"] = stepped.step
        return Decision(
            "step",
            stepped,
            f"no check failed at {policy.steps[state.step]:g}%, canary to {weight:g}%: "
            f"{_details(checks, CHECK_NAMES)}",
            weight,
            checks,
            numbers,
        )
    waiting = lacking or [c for c in checks if c.name in missing]
    return Decision(
        "hold",
        new,
        f"held at {policy.steps[state.step]:g}% (look {look} of {planned}): "
        + "; ".join(c.detail for c in waiting),
        None,
        checks,
        numbers,
    )


def run_checks(
    policy: CanaryPolicy,
    figures: CanaryFigures,
    required: Sequence[str] = (),
    planned: int | None = None,
) -> tuple[CheckResult, ...]:
    """Every check at one look, its tests at this look's levels."""
    looks = planned or planned_looks(policy)
    levels = (policy.false_promotion / looks, policy.false_rollback / looks)
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


def _outcome(checks: Sequence[CheckResult], name: str) -> Outcome | None:
    return next((c.outcome for c in checks if c.name == name), None)


def _details(checks: Sequence[CheckResult], names: Sequence[str]) -> str:
    return "; ".join(c.detail for c in checks if c.name in names) or "-"


def _numbers(
    policy: CanaryPolicy,
    state: AnalysisState,
    checks: Sequence[CheckResult],
    figures: CanaryFigures,
    planned: int,
) -> dict[str, Any]:
    """An event's figures: each check with its tests, statistics, p-values and sample sizes."""
    return {
        "look": state.looks,
        "planned_looks": planned,
        "step": state.step,
        "weight": policy.steps[state.step],
        "elapsed_seconds": state.last_look_at - state.started_at,
        "required": list(state.required),
        "passed": list(state.passed),
        "task": figures.task,
        "checks": {c.name: c.figures() for c in checks},
    }


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f} ms"


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.3g}"
