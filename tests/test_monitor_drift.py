"""Drift maths against scipy on the same bins, properties, and calibrated verdicts."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import jensenshannon
from scipy.special import ndtr
from scipy.stats import chi2_contingency

from driftgate.core.profile import numeric_bins
from driftgate.monitor.drift import (
    EPSILON,
    DriftTester,
    DriftThresholds,
    Verdict,
    chi_square,
    js_distance,
    ks_statistic,
    l_infinity,
    pooled,
    psi,
)

REF = np.array([0, 100, 120, 90, 110, 100, 80, 0])
WIN = np.array([3, 50, 70, 40, 60, 90, 20, 1])


def pairs() -> st.SearchStrategy[tuple[list[int], list[int]]]:
    return st.integers(2, 12).flatmap(
        lambda k: st.tuples(
            st.lists(st.integers(0, 1000), min_size=k, max_size=k).filter(lambda c: sum(c) > 0),
            st.lists(st.integers(0, 1000), min_size=k, max_size=k).filter(lambda c: sum(c) > 0),
        )
    )


def test_js_distance_matches_scipy() -> None:
    assert js_distance(REF, WIN) == pytest.approx(jensenshannon(REF, WIN, base=2), abs=1e-12)


def test_chi_square_matches_scipy_contingency_table() -> None:
    keep = (REF + WIN) > 0
    expected = chi2_contingency(np.vstack([REF, WIN])[:, keep], correction=False).statistic
    assert chi_square(REF, WIN) == pytest.approx(expected, rel=1e-12)


def test_ks_is_largest_binned_cdf_difference() -> None:
    cdf_ref, cdf_win = np.cumsum(REF) / REF.sum(), np.cumsum(WIN) / WIN.sum()
    assert ks_statistic(REF, WIN) == pytest.approx(np.max(np.abs(cdf_ref - cdf_win)))
    assert l_infinity(REF, WIN) == pytest.approx(np.max(np.abs(REF / REF.sum() - WIN / WIN.sum())))


def test_psi_uses_the_documented_smoothing() -> None:
    k = len(REF)
    p = (REF / REF.sum() + EPSILON) / (1 + k * EPSILON)
    q = (WIN / WIN.sum() + EPSILON) / (1 + k * EPSILON)
    assert psi(REF, WIN) == pytest.approx(np.sum((q - p) * np.log(q / p)))
    assert np.isfinite(psi([1, 0], [0, 1]))


def test_quarter_sd_shift_gives_psi_about_005_on_deciles() -> None:
    bins = numeric_bins(np.random.default_rng(0).standard_normal(200_000), bins=10)
    edges = np.asarray(bins.edges)
    shifted = np.diff(np.concatenate([[0.0], ndtr(edges - 0.25), [1.0]])) * 1e6
    assert 0.04 < psi(bins.counts, shifted) < 0.07
    assert ks_statistic(bins.counts, shifted) == pytest.approx(0.0995, abs=0.005)


@settings(max_examples=200, deadline=None)
@given(pairs())
def test_properties(pair: tuple[list[int], list[int]]) -> None:
    a, b = pair
    assert psi(a, b) >= 0
    assert 0.0 <= js_distance(a, b) <= 1.0
    assert js_distance(a, b) == pytest.approx(jensenshannon(a, b, base=2), abs=1e-9)
    for distance in (psi, js_distance, ks_statistic, l_infinity, chi_square):
        assert distance(a, b) == pytest.approx(distance(b, a), abs=1e-9)
    assert js_distance(a, a) == pytest.approx(0.0, abs=1e-7)
    assert psi(a, a) == pytest.approx(0.0, abs=1e-12)


def _profile(rng: np.random.Generator, features: int, n_ref: int) -> list[tuple[np.ndarray, ...]]:
    out = []
    for _ in range(features):
        bins = numeric_bins(rng.standard_normal(n_ref), bins=10)
        out.append((np.asarray(bins.edges), np.asarray(bins.counts)))
    return out


def _window(rng: np.random.Generator, edges: np.ndarray, n: int, shift: float) -> np.ndarray:
    return rng.multinomial(n, np.diff(np.concatenate([[0.0], ndtr(edges - shift), [1.0]])))


@pytest.mark.parametrize("rows", [500, 5_000, 50_000])
def test_no_false_alarms_on_undrifted_streams(rows: int) -> None:
    rng = np.random.default_rng(rows)
    tester = DriftTester()
    alarms = 0
    for _ in range(2):
        profile = _profile(rng, 20, 10_000)
        for _ in range(10):
            result = tester.evaluate(
                [
                    (f"f{i}", False, c, _window(rng, e, rows, 0.0))
                    for i, (e, c) in enumerate(profile)
                ]
            )
            alarms += result.verdict == Verdict.DRIFT
    assert alarms == 0


@pytest.mark.parametrize("rows", [500, 50_000])
def test_the_ks_critical_value_is_conservative_on_binned_tied_values(rows: int) -> None:
    # Decimals with ties (0.1 ... 0.9): few bins, a binned KS that moves in steps. The
    # asymptotic Kolmogorov critical value must not be exceeded more often than alpha by the
    # two-sample null (both samples drawn), at a small and a large window.
    rng = np.random.default_rng(rows)
    p = np.array([0.05, 0.1, 0.2, 0.3, 0.15, 0.1, 0.05, 0.03, 0.02])
    alpha = 0.05
    tester = DriftTester(DriftThresholds(floors={}))
    reference = rng.multinomial(10_000, p)
    critical = tester.test("x", False, reference, rng.multinomial(rows, p), alpha).critical_value
    trials = 4_000
    null = ks_statistic(rng.multinomial(10_000, p, size=trials), rng.multinomial(rows, p, trials))
    assert np.mean(null > critical) <= alpha
    # ... and it is the two-sample one: the window's noise alone would put it far lower.
    assert critical > 1.2 * float(np.quantile(null, 0.5))


def test_quarter_sd_shift_in_one_of_twenty_features_is_detected_at_2000_rows() -> None:
    rng = np.random.default_rng(7)
    profile = _profile(rng, 20, 10_000)
    tester = DriftTester()
    detected = 0
    for _ in range(10):
        result = tester.evaluate(
            [
                (f"f{i}", False, c, _window(rng, e, 2_000, 0.25 if i == 0 else 0.0))
                for i, (e, c) in enumerate(profile)
            ]
        )
        detected += result.features[0].verdict == Verdict.DRIFT
        assert result.verdict == Verdict.DRIFT
        assert result.share == pytest.approx(0.05)
    assert detected == 10


def test_small_windows_are_insufficient_data() -> None:
    tester = DriftTester(DriftThresholds(min_rows=100))
    result = tester.test("x", False, [100, 100], [10, 80], alpha=0.01)
    assert result.verdict == Verdict.INSUFFICIENT_DATA
    whole = tester.evaluate([("x", False, [100, 100], [10, 80])])
    assert whole.verdict == Verdict.INSUFFICIENT_DATA


def test_effect_size_floor_holds_back_negligible_differences_in_huge_windows() -> None:
    ref = np.array([50_000, 50_000]) * 100
    win = np.array([5_040_000, 4_960_000])  # 0.4 percentage points: significant, negligible
    floored = DriftTester().test("x", False, ref, win, alpha=0.01)
    assert floored.distances["ks_statistic"] > floored.critical_value
    assert floored.verdict == Verdict.NO_DRIFT
    unfloored = DriftTester(DriftThresholds(floors={})).test("x", False, ref, win, alpha=0.01)
    assert unfloored.verdict == Verdict.DRIFT


def test_categorical_features_use_chi_square_and_js() -> None:
    tester = DriftTester()
    result = tester.test("colour", True, [500, 300, 200, 0], [100, 300, 100, 20], alpha=0.01)
    assert result.statistic == "chi_square" and result.test == "chi_square"
    assert result.effect == "js_distance" and result.threshold == result.critical_value
    assert "js_distance" in result.distances and "ks_statistic" not in result.distances
    assert result.verdict == Verdict.DRIFT
    # Four cells (the new category's 20 rows are expected 6.8 times in the smaller sample),
    # 3 degrees of freedom, at half of alpha (the other half is the per-category test's).
    assert result.alpha == pytest.approx(0.005)
    assert result.critical_value == pytest.approx(12.8382, abs=1e-3)


def test_sparse_categories_are_pooled_before_the_chi_square_test() -> None:
    # In a 100-row window the last three categories are expected 4, 3 and 3 times (< 5): they
    # become one cell, expected 10 times; the table has 3 cells, chi-square with 2 df.
    a, b = pooled(np.array([5_000, 4_000, 400, 300, 300]), np.array([50, 40, 4, 3, 3]), 5.0)
    assert a.tolist() == [5_000, 4_000, 1_000] and b.tolist() == [50, 40, 10]
    # A pooled cell still too sparse (expected 4 times) joins the smallest other cell.
    a, b = pooled(np.array([6_000, 3_000, 600, 200, 200]), np.array([60, 30, 6, 2, 2]), 5.0)
    assert a.tolist() == [6_000, 3_000, 1_000] and b.tolist() == [60, 30, 10]


def test_mismatched_bins_are_refused() -> None:
    with pytest.raises(ValueError, match="3 window bins, the reference has 2"):
        DriftTester().test("x", False, [1, 2], [1, 2, 3], alpha=0.01)


# A categorical feature of 100 categories, Zipf-like shares; a 5-point rise of the top one.
CATEGORIES = 100
ZIPF = 1.0 / np.arange(1, CATEGORIES + 1)
ZIPF /= ZIPF.sum()
FEATURE_ALPHA = 0.005 / 20  # one feature's share of the default budget at 20 features


def _risen(p: np.ndarray, points: float) -> np.ndarray:
    q = p * (1.0 - p[0] - points) / (1.0 - p[0])
    q[0] = p[0] + points
    return q


@pytest.mark.statistical
def test_a_five_point_rise_of_one_category_among_100_is_detected() -> None:
    rng = np.random.default_rng(12)
    tester = DriftTester()
    reference = rng.multinomial(10_000, ZIPF)
    risen = _risen(ZIPF, 0.05)
    repetitions = 100
    detected = 0
    for _ in range(repetitions):
        result = tester.test("c", True, reference, rng.multinomial(5_000, risen), FEATURE_ALPHA)
        detected += result.verdict == Verdict.DRIFT
        assert result.category is not None
    assert detected / repetitions >= 0.9
    assert result.category.bin == 0 and result.category.difference > 0.03


@pytest.mark.statistical
def test_undrifted_100_category_windows_keep_the_feature_budget() -> None:
    rng = np.random.default_rng(13)
    tester = DriftTester()
    repetitions = 500
    # The per-category test alone (exact, no simulation): both samples drawn each time.
    category_alarms = 0
    for _ in range(repetitions):
        reference = rng.multinomial(10_000, ZIPF)
        shift = tester.test_categories(reference, rng.multinomial(5_000, ZIPF), FEATURE_ALPHA)
        category_alarms += shift.verdict == Verdict.DRIFT
    assert category_alarms == 0
    # The whole verdict (the simulated distance too) on one reference, whose critical value
    # the detection test shares.
    reference = np.random.default_rng(12).multinomial(10_000, ZIPF)
    alarms = 0
    for _ in range(repetitions):
        result = tester.test("c", True, reference, rng.multinomial(5_000, ZIPF), FEATURE_ALPHA)
        alarms += result.verdict == Verdict.DRIFT
    assert alarms / repetitions <= 0.01


def test_per_category_test_is_exact_on_small_counts() -> None:
    # Three rows of a category absent from the reference: no tail of a normal approximation
    # would call it at a 1e-6 level, neither does the exact test.
    tester = DriftTester()
    reference = np.array([5_000, 4_990, 10, 0])
    window = np.array([2_480, 2_500, 17, 3])
    shift = tester.test_categories(reference, window, 1e-4)
    assert shift.verdict == Verdict.NO_DRIFT
    assert shift.p_value > 1e-4 / 4
    # A concentrated rise on a large category is DRIFT; the alarm names it.
    window = np.array([3_000, 1_990, 10, 0])
    shift = tester.test_categories(reference, window, 1e-4)
    assert shift.verdict == Verdict.DRIFT and shift.bin in (0, 1)
    # A change within the floor is never DRIFT, however many rows.
    reference, window = np.array([500_000, 500_000]), np.array([504_000, 496_000])
    assert tester.test_categories(reference, window, 1e-4).verdict == Verdict.NO_DRIFT


def test_categorical_tests_have_bounded_memory_for_100_features_of_100_categories() -> None:
    import tracemalloc

    rng = np.random.default_rng(14)
    tester = DriftTester()
    features = [
        (rng.multinomial(10_000, ZIPF), rng.multinomial(5_000, _risen(ZIPF, 0.01)))
        for _ in range(100)
    ]
    tracemalloc.start()
    results = [tester.test("c", True, r, w, FEATURE_ALPHA) for r, w in features]
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(results) == 100
    assert peak < 100e6


@pytest.mark.statistical
def test_a_100_category_critical_value_has_bounded_memory() -> None:
    import tracemalloc

    tester = DriftTester(seed=99)
    reference = np.random.default_rng(15).multinomial(10_000, ZIPF)
    tracemalloc.start()
    tester.critical_value("js_distance", reference, 5_000, FEATURE_ALPHA / 2)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 100e6
