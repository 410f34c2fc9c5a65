"""Drift of binned distributions against a reference profile: distances and calibrated verdicts.

Pure numpy. Inputs are count vectors on the frozen bins of ``reference.json`` (see
``driftgate.core.profile``): the reference's training counts and a window's production counts.

Distances (``distances``), all on bin proportions:

- ``psi``: population stability index, sum((q - p) * ln(q / p)), with additive smoothing of
  the proportions: ``(c / n + EPSILON) / (1 + k * EPSILON)`` with ``EPSILON = 1e-4``, so an
  empty bin on either side gives a large but finite term (ln(0.1 / 1e-4) ~ 6.9) instead of
  infinity. PSI is symmetric in p and q.
- ``js_distance``: Jensen-Shannon distance, base 2, in [0, 1], on the raw proportions (it is
  finite without smoothing); equal to ``scipy.spatial.distance.jensenshannon(p, q, base=2)``.
- ``ks_statistic``: largest difference of the two binned CDFs (numeric features).
- ``chi_square``: Pearson's statistic of the 2 x k contingency table reference vs window
  (two-sample homogeneity, bins empty on both sides dropped), as ``chi2_contingency`` with
  ``correction=False`` computes it (categorical features).
- ``l_infinity``: largest absolute difference of bin proportions.

Verdicts (``DriftTester``): a window with fewer than ``min_rows`` rows is INSUFFICIENT_DATA.
Otherwise the verdict statistic (``ks_statistic`` for numeric, ``js_distance`` for categorical
values) is DRIFT when it exceeds both

1. its critical value at the window's size: the (1 - alpha') quantile of the statistic under
   no drift, found by two-sample simulation. The reference is itself a finite sample of
   ``n_ref`` rows, so both sides are drawn: reference counts ~ Multinomial(n_ref, p_ref) and
   window counts ~ Multinomial(n, p_ref), with p_ref the reference proportions. Simulating
   only the window puts the critical value near zero for large n and alarms on every
   feature of undrifted data. At least ``trials`` draws, and at least 50 / alpha' so that
   the tail quantile rests on ~50 exceedances. Results are cached per (reference
   proportions to 1e-3, n_ref and n rounded down to a ~5% grid, statistic, alpha');
   rounding n down only raises the critical value slightly.
2. a practical effect-size floor (``DriftThresholds``), so that a huge window does not call a
   negligible difference drift. Floors sit below the shifts users care about: a 0.25-SD mean
   shift gives KS ~ 0.10, JS ~ 0.09 and PSI ~ 0.05 on decile bins.

The false-alarm rate is controlled for the whole evaluation, not per feature: alpha' is
``alpha / number of features`` (Bonferroni), so an undrifted model raises a dataset-level
alarm in at most ``alpha`` of evaluations. The prediction distribution is tested on its own
at ``alpha``. Dataset drift is the share of features whose verdict is DRIFT; the dataset
verdict is DRIFT when that share is above ``dataset_share`` (default 0: any drifted feature).

A categorical feature's distribution test also splits its share: ``category_share`` (half) goes
to a per-category test (``DriftTester.test_categories``), so that a shift concentrated in one
category of many is not diluted in a distance over all of them (a 5-point rise of one category
among 100 at 5k rows: 26% detection by the distance alone, ~100% with it): each category's
share of the window against the reference's, ranked by its standardised difference
z = (q - p) / sqrt(s (1 - s) (1/n + 1/n_ref)) with s the pooled share, decided by Fisher's exact
test (two-sided) at ``category_share * alpha' / bins`` per category (Bonferroni), with the
``category_floor`` on the change of share. Exact at any count, no simulation, a fraction of a
millisecond a feature. The rest, ``(1 - category_share) * alpha'``, calibrates the distance as
above; the feature is DRIFT when either says so. Simulations run in chunks of
``_SIMULATION_CELLS`` cells (bounded memory whatever the trials and bins) and their critical
values live in one cache shared by every tester of the process.

Data quality is drift too (``DriftTester.test_quality``, counts and test in
``monitor.quality``): per feature, the rates of missing (NaN, +-Inf, None, empty), infinite and
out-of-range values of the window are compared with the reference's by Fisher's exact test,
one-sided (a rise), which treats both sides as the finite samples they are. A kind is DRIFT
when its p-value is below its share of the budget and the window's rate exceeds the
reference's by more than ``quality_floor`` (default 0.01, one point of the rows): on a window
of a million rows a rise of a few tenths of a point is significant and nobody's incident. A
feature is DRIFT when its distribution test or any of its quality tests says so, so a window
whose feature is all NaN (no value to bin, the distribution test has no data) is DRIFT for
that feature and counts in the dataset share. The budget stays ``alpha`` for the whole
evaluation: a feature with quality counts spends ``alpha / features`` as
``(1 - quality_share)`` on its distribution test and ``quality_share / 3`` on each kind.
"""

from __future__ import annotations

import enum
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import special, stats

from driftgate.monitor.quality import KINDS, QualityCounts, rise_p_value
from driftgate.monitor.thresholds import DriftThresholds

_SIMULATION_CELLS = 1 << 19
"""Cells (trials x bins) simulated at a time: bounds a critical value's memory (~tens of MB)."""

_CACHE_LIMIT = 65_536
_CACHE_LOCK = threading.Lock()
_SHARED_CACHE: dict[tuple[Any, ...], float] = {}
"""Critical values shared by every ``DriftTester`` of the process (the gauges' and the
policy's testers pay once); keyed with the tester's seed and trials; a float per entry."""

__all__ = [
    "rate_rise",
    "CategoryShift",
    "DatasetDrift",
    "DriftTester",
    "DriftThresholds",
    "EFFECT_STATISTIC",
    "EPSILON",
    "FeatureDrift",
    "QualityCounts",
    "QualityDrift",
    "Verdict",
    "chi_square",
    "distances",
    "js_distance",
    "ks_statistic",
    "l_infinity",
    "pooled",
    "psi",
    "smoothed",
]

EPSILON = 1e-4
"""Additive smoothing of bin proportions for PSI (see the module docstring)."""

Counts = npt.NDArray[np.float64]

EFFECT_STATISTIC = {"chi_square": "js_distance"}
"""Verdict statistics whose effect-size floor is taken on another statistic of the window."""


class Verdict(enum.IntEnum):
    """Outcome of one test; values match ``driftgate.monitor.v1.DriftVerdict``."""

    UNSPECIFIED = 0
    INSUFFICIENT_DATA = 1
    NO_DRIFT = 2
    DRIFT = 3


def _proportions(counts: npt.ArrayLike) -> Counts:
    """Rows of ``counts`` divided by their sums (an all-zero row stays zero)."""
    c = np.asarray(counts, dtype=np.float64)
    total = c.sum(axis=-1, keepdims=True)
    out: Counts = np.divide(c, total, out=np.zeros_like(c), where=total > 0)
    return out


def smoothed(counts: npt.ArrayLike, epsilon: float = EPSILON) -> Counts:
    """Proportions with additive smoothing: (c / n + epsilon) / (1 + k * epsilon)."""
    p = _proportions(counts)
    out: Counts = (p + epsilon) / (1.0 + p.shape[-1] * epsilon)
    return out


def psi(reference: npt.ArrayLike, window: npt.ArrayLike, epsilon: float = EPSILON) -> Any:
    """Population stability index of the smoothed proportions (>= 0, symmetric)."""
    p, q = smoothed(reference, epsilon), smoothed(window, epsilon)
    return np.sum((q - p) * np.log(q / p), axis=-1)


def js_distance(reference: npt.ArrayLike, window: npt.ArrayLike) -> Any:
    """Jensen-Shannon distance, base 2, of the raw proportions: in [0, 1], symmetric."""
    p, q = _proportions(reference), _proportions(window)
    m = 0.5 * (p + q)

    def kl(a: Counts) -> Counts:
        ratio = np.divide(a, m, out=np.ones_like(a), where=a > 0)
        out: Counts = np.sum(a * np.log2(ratio), axis=-1)
        return out

    divergence = np.clip(0.5 * kl(p) + 0.5 * kl(q), 0.0, 1.0)
    return np.sqrt(divergence)


def ks_statistic(reference: npt.ArrayLike, window: npt.ArrayLike) -> Any:
    """Largest absolute difference of the binned CDFs."""
    p, q = _proportions(reference), _proportions(window)
    return np.max(np.abs(np.cumsum(p, axis=-1) - np.cumsum(q, axis=-1)), axis=-1)


def l_infinity(reference: npt.ArrayLike, window: npt.ArrayLike) -> Any:
    """Largest absolute difference of bin proportions."""
    p, q = _proportions(reference), _proportions(window)
    return np.max(np.abs(p - q), axis=-1)


def chi_square(reference: npt.ArrayLike, window: npt.ArrayLike) -> Any:
    """Pearson chi-square of the 2 x k table (reference, window); empty columns dropped."""
    a = np.asarray(reference, dtype=np.float64)
    b = np.asarray(window, dtype=np.float64)
    columns = a + b
    total = columns.sum(axis=-1, keepdims=True)
    expected_a = columns * a.sum(axis=-1, keepdims=True) / total
    expected_b = columns * b.sum(axis=-1, keepdims=True) / total
    keep = columns > 0
    terms = np.where(
        keep,
        np.divide((a - expected_a) ** 2, expected_a, out=np.zeros_like(a), where=expected_a > 0)
        + np.divide((b - expected_b) ** 2, expected_b, out=np.zeros_like(b), where=expected_b > 0),
        0.0,
    )
    return np.sum(terms, axis=-1)


_STATISTICS: dict[str, Callable[[Any, Any], Any]] = {
    "psi": psi,
    "js_distance": js_distance,
    "ks_statistic": ks_statistic,
    "l_infinity": l_infinity,
    "chi_square": chi_square,
}


def distances(
    reference: npt.ArrayLike, window: npt.ArrayLike, categorical: bool
) -> dict[str, float]:
    """Every distance of one window against the reference; KS for numeric, chi-square else."""
    names = ["psi", "js_distance", "l_infinity"]
    names.append("chi_square" if categorical else "ks_statistic")
    return {name: float(_STATISTICS[name](reference, window)) for name in names}


@dataclass(frozen=True)
class QualityDrift:
    """One data-quality test of one feature: a kind's rate in the window against the
    reference's, by Fisher's exact test (one-sided) at ``alpha``, with the effect floor."""

    kind: str
    window: int
    rows: int
    reference: int
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
            "count": self.window,
            "rows": self.rows,
            "reference_count": self.reference,
            "reference_rows": self.reference_rows,
            "p_value": self.p_value,
            "alpha": self.alpha,
            "floor": self.floor,
            "verdict": self.verdict.name.lower(),
        }


def rate_rise(
    kind: str,
    window: tuple[int, int],
    reference: tuple[int, int],
    alpha: float,
    floor: float,
    min_rows: int,
) -> QualityDrift:
    """Whether ``kind``'s rate in ``window`` (count, rows) rose above ``reference``'s:
    Fisher's exact test, one-sided (``quality.rise_p_value``), at ``alpha``, DRIFT only for
    a rise above ``floor``; INSUFFICIENT_DATA under ``min_rows`` rows or without reference."""
    (x, n), (x_ref, n_ref) = window, reference
    if n < min_rows or n_ref == 0:
        return QualityDrift(
            kind, x, n, x_ref, n_ref, math.nan, alpha, floor, Verdict.INSUFFICIENT_DATA
        )
    p = rise_p_value(x, n, x_ref, n_ref)
    drifted = p < alpha and x / n - x_ref / n_ref > floor
    verdict = Verdict.DRIFT if drifted else Verdict.NO_DRIFT
    return QualityDrift(kind, x, n, x_ref, n_ref, p, alpha, floor, verdict)


@dataclass(frozen=True)
class CategoryShift:
    """The per-category test of a categorical feature: the category that drifted most
    clearly (else the one with the largest standardised difference ``z``), its exact
    two-sided p-value, and the level ``alpha`` it was tested at (its weighted Bonferroni
    share of the test's budget, over ``bins`` categories)."""

    bin: int
    z: float
    difference: float
    p_value: float
    alpha: float
    bins: int
    floor: float
    verdict: Verdict

    def figures(self) -> dict[str, Any]:
        return {
            "test": "fisher_exact_per_category",
            "weights": "sqrt(s(1-s))",
            "bin": self.bin,
            "z": self.z,
            "difference": self.difference,
            "p_value": self.p_value,
            "alpha": self.alpha,
            "bins": self.bins,
            "floor": self.floor,
        }


@dataclass(frozen=True)
class FeatureDrift:
    """Drift of one feature (or of the predictions) in one window."""

    name: str
    categorical: bool
    rows: int
    distances: dict[str, float]
    statistic: str
    critical_value: float
    floor: float
    verdict: Verdict
    """DRIFT when the distribution test or a data-quality test says so."""
    quality: tuple[QualityDrift, ...] = ()
    distribution: Verdict | None = None
    """The distribution test's own verdict (None: ``verdict``, no quality tests)."""
    category: CategoryShift | None = None
    """Categorical features: the per-category test, part of the distribution verdict."""

    test: str = ""
    """How ``critical_value`` was found: ``kolmogorov_smirnov`` (asymptotic Kolmogorov
    distribution), ``chi_square`` (chi-square distribution, sparse categories pooled) or
    ``simulated`` (two-sample simulation of the null)."""
    effect: str = ""
    """The statistic ``floor`` applies to (``statistic`` itself unless EFFECT_STATISTIC)."""
    reference_rows: int = 0
    alpha: float = math.nan
    """Level of the distribution test (its share of the evaluation's budget)."""
    reference_counts: tuple[int, ...] = ()
    window_counts: tuple[int, ...] = ()
    """Rows per frozen bin in the reference and in the window (what a report draws)."""

    @property
    def threshold(self) -> float:
        """The value ``statistic`` must exceed for DRIFT: max(critical value, floor) when the
        floor is on the statistic itself, else the critical value."""
        if self.effect in ("", self.statistic):
            return max(self.critical_value, self.floor)
        return self.critical_value

    @property
    def distribution_verdict(self) -> Verdict:
        return self.verdict if self.distribution is None else self.distribution

    def figures(self) -> dict[str, Any]:
        """What each test that found DRIFT saw (the distribution test, quality kinds)."""
        out: dict[str, Any] = {}
        if self.category is not None and self.category.verdict == Verdict.DRIFT:
            out["category"] = self.category.figures()
        value = self.distances.get(self.statistic)
        if (
            self.distribution_verdict == Verdict.DRIFT
            and value is not None
            and (value > self.threshold)
        ):
            out["distribution"] = {
                "test": self.test,
                "statistic": self.statistic,
                "value": value,
                "critical_value": self.critical_value,
                "alpha": self.alpha,
                "effect": self.effect or self.statistic,
                "effect_value": self.distances.get(self.effect or self.statistic),
                "floor": self.floor,
                "rows": self.rows,
                "reference_rows": self.reference_rows,
            }
        for q in self.quality:
            if q.verdict == Verdict.DRIFT:
                out[q.kind] = q.figures()
        return out


@dataclass(frozen=True)
class DatasetDrift:
    """Drift of every feature of a model version in one window."""

    rows: int
    features: list[FeatureDrift]
    prediction: FeatureDrift | None
    share: float
    verdict: Verdict


class DriftTester:
    """Calibrated drift verdicts; holds the cache of simulated critical values.

    Usage::

        tester = DriftTester(DriftThresholds())
        result = tester.evaluate([(name, categorical, ref_counts, window_counts), ...])
    """

    def __init__(self, thresholds: DriftThresholds | None = None, seed: int = 20240601) -> None:
        self.thresholds = thresholds or DriftThresholds()
        self._seed = seed
        self._cache = _SHARED_CACHE

    def critical_value(
        self, statistic: str, reference: npt.ArrayLike, rows: int, alpha: float
    ) -> float:
        """The (1 - alpha) quantile of ``statistic`` under no drift at ``rows`` window rows."""
        ref = np.asarray(reference, dtype=np.int64)
        n = _round_down(rows)
        # References whose proportions agree to 1e-3 share a null distribution to within
        # simulation noise; keying on the rounded proportions lets the features of one
        # profile (decile bins all alike) share one simulation.
        shape = np.round(ref / max(int(ref.sum()), 1) * 1000).astype(np.int64)
        key = (
            self._seed, self.thresholds.trials, statistic, shape.tobytes(),
            _round_down(int(ref.sum())), n, round(alpha, 12),
        )  # fmt: skip
        with _CACHE_LOCK:
            cached = self._cache.get(key)
        if cached is None:
            cached = self._simulate(statistic, ref, n, alpha)
            with _CACHE_LOCK:  # the gauges' and the policy's threads share the cache
                if len(self._cache) >= _CACHE_LIMIT:
                    self._cache.pop(next(iter(self._cache)))
                self._cache[key] = cached
        return cached

    def _simulate(self, statistic: str, ref: npt.NDArray[np.int64], n: int, alpha: float) -> float:
        n_ref = int(ref.sum())
        if n_ref == 0:
            return math.inf
        # At least ~50 simulated exceedances, so the tail quantile is not noise.
        trials = int(min(max(self.thresholds.trials, math.ceil(50 / alpha)), 400_000))
        rng = np.random.default_rng([self._seed, n, n_ref, len(ref)])
        p = ref / n_ref
        chunk = max(_SIMULATION_CELLS // max(len(ref), 1), 1)
        values = np.empty(trials, dtype=np.float64)
        for start in range(0, trials, chunk):
            size = min(chunk, trials - start)
            null_ref = rng.multinomial(n_ref, p, size=size)
            null_window = rng.multinomial(n, p, size=size)
            values[start : start + size] = _STATISTICS[statistic](null_ref, null_window)
        return float(np.quantile(values, 1.0 - alpha, method="higher"))

    def test(
        self,
        name: str,
        categorical: bool,
        reference: npt.ArrayLike,
        window: npt.ArrayLike,
        alpha: float,
    ) -> FeatureDrift:
        """Distances and verdict of one feature at false-alarm rate ``alpha``."""
        t = self.thresholds
        ref = np.asarray(reference, dtype=np.int64)
        win = np.asarray(window, dtype=np.int64)
        if ref.shape != win.shape:
            raise ValueError(
                f"feature {name!r}: {win.size} window bins, the reference has {ref.size}"
            )
        rows = int(win.sum())
        statistic = t.categorical_statistic if categorical else t.numeric_statistic
        effect = EFFECT_STATISTIC.get(statistic, statistic)
        floor = t.floors.get(effect, 0.0)
        values = distances(ref, win, categorical) if rows > 0 else {}
        if rows < t.min_rows or ref.sum() == 0:
            return FeatureDrift(
                name, categorical, rows, values, statistic, math.nan, floor,
                Verdict.INSUFFICIENT_DATA, test="", effect=effect,
                reference_rows=int(ref.sum()), alpha=alpha,
                reference_counts=tuple(ref.tolist()), window_counts=tuple(win.tolist()),
            )  # fmt: skip
        shift = None
        if categorical and t.category_share > 0.0:
            shift = self.test_categories(ref, win, alpha * t.category_share)
            values["category_z"] = abs(shift.z)
            alpha *= 1.0 - t.category_share
        value, critical, test = self._distribution_test(statistic, ref, win, values, alpha)
        if effect not in values:
            values[effect] = float(_STATISTICS[effect](ref, win))
        drifted = value > critical and values[effect] > floor
        drifted = drifted or (shift is not None and shift.verdict == Verdict.DRIFT)
        verdict = Verdict.DRIFT if drifted else Verdict.NO_DRIFT
        return FeatureDrift(
            name, categorical, rows, values, statistic, critical, floor, verdict,
            category=shift, test=test, effect=effect, reference_rows=int(ref.sum()),
            alpha=alpha, reference_counts=tuple(ref.tolist()), window_counts=tuple(win.tolist()),
        )  # fmt: skip

    def _distribution_test(
        self,
        statistic: str,
        ref: npt.NDArray[np.int64],
        win: npt.NDArray[np.int64],
        values: dict[str, float],
        alpha: float,
    ) -> tuple[float, float, str]:
        """(value, critical value, test) of the verdict statistic at level ``alpha``.

        KS: the asymptotic Kolmogorov distribution, critical value
        ``K^-1(alpha) * sqrt(1/n + 1/n_ref)`` (``scipy.special.kolmogi``). On binned values the
        statistic is a maximum over the bin edges only, never above the continuous one, so the
        critical value is conservative (a smaller false-alarm rate than ``alpha``), the more so
        the fewer the bins. Chi-square: the 2 x k table with sparse categories pooled
        (``pooled``) against the chi-square distribution with (cells - 1) degrees of freedom.
        Any other statistic: the simulated critical value."""
        n, n_ref = int(win.sum()), int(ref.sum())
        if alpha <= 0.0:
            return values.get(statistic, 0.0), math.inf, ""
        if statistic == "ks_statistic":
            scale = math.sqrt(1.0 / n + 1.0 / n_ref)
            return values[statistic], float(special.kolmogi(alpha)) * scale, "kolmogorov_smirnov"
        if statistic == "chi_square":
            a, b = pooled(ref, win, self.thresholds.min_expected)
            if a.size < 2:
                values[statistic] = 0.0
                return 0.0, math.inf, "chi_square"
            chi2 = float(chi_square(a, b))
            values[statistic] = chi2
            return chi2, float(stats.chi2.isf(alpha, a.size - 1)), "chi_square"
        if statistic not in values:
            values[statistic] = float(_STATISTICS[statistic](ref, win))
        return values[statistic], self.critical_value(statistic, ref, n, alpha), "simulated"

    def test_categories(
        self, reference: npt.ArrayLike, window: npt.ArrayLike, alpha: float
    ) -> CategoryShift:
        """Each category's share of the window against the reference's, at ``alpha`` in all.

        z_k = (q_k - p_k) / sqrt(s_k (1 - s_k) (1/n + 1/n_ref)), s_k the pooled share, ranks
        the categories; the verdict rests on exact two-sided p-values (Fisher's test, twice
        the smaller one-sided tail, ``monitor.quality.rise_p_value``), valid at any count.
        The budget is shared by weighted Bonferroni: category k is tested at
        ``alpha * w_k / sum(w)`` with w_k = sqrt(s_k (1 - s_k)), the scale of its standard
        error, so that a move of so many points, which is fewer standard errors in a common
        category than in a rare one, is seen as well in either. Fisher's test conditions on
        each category's pooled count, which fixes the weights: the family's false-alarm rate
        stays at most ``alpha``. P-values are computed only for the categories whose |z|
        could reach their level. DRIFT when some category's p-value is under its level and
        its share moved by more than ``category_floor``."""
        ref = np.asarray(reference, dtype=np.int64)
        win = np.asarray(window, dtype=np.int64)
        n_ref, n = int(ref.sum()), int(win.sum())
        bins = max(len(ref), 1)
        floor = self.thresholds.category_floor
        if n_ref == 0 or n == 0:
            level = alpha / bins
            return CategoryShift(-1, 0.0, 0.0, 1.0, level, bins, floor, Verdict.INSUFFICIENT_DATA)
        p, q = ref / n_ref, win / n
        pooled = (ref + win) / (n_ref + n)
        spread = np.sqrt(pooled * (1.0 - pooled))
        weights = spread / spread.sum() if spread.sum() > 0 else np.full(bins, 1.0 / bins)
        levels = alpha * weights
        se = spread * math.sqrt(1.0 / n + 1.0 / n_ref)
        diff = q - p
        z = np.divide(diff, se, out=np.zeros_like(diff), where=se > 0)
        best = int(np.argmax(np.abs(z)))
        # A two-sided p-value under its level needs |z| near the normal quantile of the level;
        # the exact test is computed from a margin below it.
        reach = 0.8 * float(special.ndtri(1.0 - min(float(levels.max()), 0.5) / 2.0))
        ratio_best, p_best, k_drift = math.inf, 1.0, -1
        for k in np.flatnonzero((np.abs(z) >= reach) & (levels > 0)):
            if abs(diff[k]) <= floor:
                continue
            x, x_ref = int(win[k]), int(ref[k])
            one_sided = (
                rise_p_value(x, n, x_ref, n_ref)
                if diff[k] > 0
                else rise_p_value(x_ref, n_ref, x, n)
            )
            p_value = min(2.0 * one_sided, 1.0)
            if p_value / levels[k] < ratio_best:
                ratio_best, p_best, k_drift = p_value / levels[k], p_value, int(k)
        shown = k_drift if k_drift >= 0 else best
        verdict = Verdict.DRIFT if ratio_best < 1.0 else Verdict.NO_DRIFT
        return CategoryShift(
            shown, float(z[shown]), float(diff[shown]), p_best, float(levels[shown]), bins,
            floor, verdict,
        )  # fmt: skip

    def test_quality(
        self, reference: QualityCounts, window: QualityCounts, alpha: float
    ) -> tuple[QualityDrift, ...]:
        """Each data-quality kind of one feature, at ``alpha`` each."""
        t = self.thresholds
        return tuple(
            rate_rise(
                kind,
                (window.count(kind), window.rows),
                (reference.count(kind), reference.rows),
                alpha,
                t.quality_floor,
                t.min_rows,
            )
            for kind in KINDS
        )

    def _test_feature(
        self,
        feature: tuple[str, bool, npt.ArrayLike, npt.ArrayLike],
        quality: tuple[QualityCounts, QualityCounts] | None,
        alpha: float,
    ) -> FeatureDrift:
        """The distribution test and, with ``quality`` (reference, window), the quality tests:
        DRIFT if any says so, else NO_DRIFT if any had data."""
        if quality is None:
            return self.test(*feature, alpha=alpha)
        share = self.thresholds.quality_share
        result = self.test(*feature, alpha=alpha * (1.0 - share))
        tests = self.test_quality(*quality, alpha=alpha * share / len(KINDS))
        verdicts = {result.verdict, *(q.verdict for q in tests)}
        verdict = next(
            (v for v in (Verdict.DRIFT, Verdict.NO_DRIFT) if v in verdicts),
            Verdict.INSUFFICIENT_DATA,
        )
        return replace(result, verdict=verdict, quality=tests, distribution=result.verdict)

    def evaluate(
        self,
        features: Sequence[tuple[str, bool, npt.ArrayLike, npt.ArrayLike]],
        prediction: tuple[str, bool, npt.ArrayLike, npt.ArrayLike] | None = None,
        quality: Sequence[tuple[QualityCounts, QualityCounts] | None] | None = None,
    ) -> DatasetDrift:
        """Every feature at alpha / len(features) (Bonferroni), the prediction at alpha.

        ``quality``, when given, holds per feature (same order) the reference's and the
        window's data-quality counts, or None for a feature without them."""
        t = self.thresholds
        per_feature = t.alpha / max(len(features), 1)
        counts = list(quality) if quality is not None else [None] * len(features)
        if len(counts) != len(features):
            raise ValueError(f"{len(counts)} quality counts for {len(features)} features")
        results = [
            self._test_feature(feature, q, per_feature)
            for feature, q in zip(features, counts, strict=True)
        ]
        predicted = None if prediction is None else self.test(*prediction, alpha=t.alpha)
        rows = max((max([r.rows, *(q.rows for q in r.quality)]) for r in results), default=0)
        tested = [r for r in results if r.verdict != Verdict.INSUFFICIENT_DATA]
        if not tested:
            return DatasetDrift(rows, results, predicted, 0.0, Verdict.INSUFFICIENT_DATA)
        share = sum(r.verdict == Verdict.DRIFT for r in results) / len(results)
        verdict = Verdict.DRIFT if share > t.dataset_share else Verdict.NO_DRIFT
        return DatasetDrift(rows, results, predicted, share, verdict)


def pooled(
    reference: npt.ArrayLike, window: npt.ArrayLike, min_expected: float
) -> tuple[Counts, Counts]:
    """The 2 x k table (reference, window) with its sparse categories pooled.

    A category is sparse when its expected count in the smaller sample, min(n, n_ref) times
    its pooled share, is under ``min_expected``. Sparse categories become one cell; if that
    cell is itself sparse, it joins the smallest other cell. Empty categories are dropped."""
    a = np.asarray(reference, dtype=np.float64)
    b = np.asarray(window, dtype=np.float64)
    columns = a + b
    total = float(columns.sum())
    if total <= 0:
        return a[:0], b[:0]
    smaller = min(float(a.sum()), float(b.sum()))
    expected = smaller * columns / total
    keep = expected >= min_expected
    sparse = ~keep & (columns > 0)
    out_a, out_b = a[keep], b[keep]
    if sparse.any():
        rest_a, rest_b = float(a[sparse].sum()), float(b[sparse].sum())
        if smaller * (rest_a + rest_b) / total >= min_expected or out_a.size == 0:
            out_a, out_b = np.append(out_a, rest_a), np.append(out_b, rest_b)
        else:
            smallest = int(np.argmin(out_a + out_b))
            out_a[smallest] += rest_a
            out_b[smallest] += rest_b
    return out_a, out_b


def _round_down(n: int) -> int:
    """``n`` rounded down to a grid of ~5% steps (exact below 100)."""
    if n < 100:
        return max(int(n), 1)
    step = 10 ** math.floor(math.log10(n)) / 20
    return int(max(math.floor(n / step) * step, 1))
