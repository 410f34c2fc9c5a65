"""High-cardinality categorical columns: the profile keeps a bounded top-k (each kept category
with enough training rows) plus "other", the gateway counts unseen values as "other", an
undrifted window is not drift, and a shift of one frequent category still is."""

from __future__ import annotations

import numpy as np
import pytest

from driftgate.core.profile import (
    MIN_CATEGORY_COUNT,
    CategoricalBins,
    FeatureProfile,
    ReferenceProfile,
    categorical_bins,
    count_categories,
)
from driftgate.gateway.statistics import VersionCollector
from driftgate.monitor.drift import DriftTester, QualityCounts, Verdict


def zipf_column(categories: int, rows: int, seed: int) -> np.ndarray:
    """Values of a long-tailed column (Zipf, exponent 1.1): ids, products, zip codes."""
    p = 1.0 / np.arange(1, categories + 1) ** 1.1
    rng = np.random.default_rng(seed)
    names = np.array([f"id{i}" for i in range(categories)], dtype=object)
    return names[rng.choice(categories, rows, p=p / p.sum())]


def test_thousands_of_categories_keep_a_bounded_top_k_plus_other() -> None:
    train = zipf_column(5000, 20_000, seed=0)
    bins = categorical_bins(train, max_categories=100)
    assert 0 < len(bins.categories) <= 100
    counts = np.asarray(bins.counts)
    assert counts[:-1].min() >= MIN_CATEGORY_COUNT
    assert counts.sum() == 20_000 and counts[-1] > 0.2 * 20_000  # the long tail is "other"
    # A column with few categories keeps every one, however rare.
    few = categorical_bins(np.array(["a"] * 500 + ["b"] * 3, dtype=object))
    assert few.categories == ("a", "b") and few.counts == (500, 3, 0)


def test_the_gateway_counts_unseen_values_as_other() -> None:
    train = zipf_column(5000, 20_000, seed=0)
    bins = categorical_bins(train, max_categories=100)
    profile = ReferenceProfile(20_000, (FeatureProfile("product", "categorical", 0, bins),), None)
    collector = VersionCollector(profile.to_dict(), {"categorical": 1}, ["label"], record_rate=0)
    served = np.array([f"new{i}" for i in range(300)] + list(bins.categories[:5]), dtype=object)
    collector.observe({"categorical": served[:, None]}, [np.zeros(len(served))], "r")
    counts, _ = collector.take()
    assert counts.features[0][-1] == 300 and counts.out_of_range[0] == 300
    assert counts.features[0][:5].tolist() == [1] * 5


def _verdict(bins: CategoricalBins, window: np.ndarray) -> Verdict:
    counts, _ = count_categories(list(bins.categories), window)
    reference = np.asarray(bins.counts)
    quality = (
        QualityCounts(int(reference.sum()), 0, 0, int(reference[-1])),
        QualityCounts(int(counts.sum()), 0, 0, int(counts[-1])),
    )
    result = DriftTester().evaluate([("product", True, reference, counts)], quality=[quality])
    return result.features[0].verdict


@pytest.mark.statistical
def test_undrifted_windows_of_a_truncated_column_are_not_drift() -> None:
    """200 categories profiled on 10k rows, windows of 100k rows of the same distribution:
    keeping the 100 most frequent regardless of their counts alarmed on a third of such
    windows (the kept counts are inflated by their selection)."""
    verdicts = []
    for seed in range(20):
        bins = categorical_bins(zipf_column(200, 10_000, seed), max_categories=100)
        verdicts.append(_verdict(bins, zipf_column(200, 100_000, 1000 + seed)))
    assert verdicts.count(Verdict.DRIFT) <= 1, verdicts


def test_a_shift_of_one_frequent_category_is_drift() -> None:
    bins = categorical_bins(zipf_column(5000, 20_000, seed=0), max_categories=100)
    window = zipf_column(5000, 20_000, seed=1)
    assert _verdict(bins, window) == Verdict.NO_DRIFT
    rng = np.random.default_rng(2)
    window[rng.random(window.size) < 0.05] = bins.categories[3]  # +5 points for one product
    assert _verdict(bins, window) == Verdict.DRIFT
