"""The reference profile: frozen bin edges, counts, categorical bins, JSON round trip."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from driftgate.core.profile import (
    ReferenceProfile,
    bin_index,
    categorical_bins,
    count_numeric,
    numeric_bins,
    quantile_edges,
)


def test_bins_follow_the_contract_rule():
    values = np.arange(1.0, 101.0)
    prof = numeric_bins(values, bins=10)
    edges = np.asarray(prof.edges)
    assert edges[0] == 1.0
    assert edges[-1] == float(np.nextafter(np.float32(100.0), np.float32(np.inf)))
    assert len(edges) == 11
    assert bin_index(edges, [0.5])[0] == 0  # below the training minimum
    assert bin_index(edges, [1.0])[0] == 1  # the minimum is interior
    assert bin_index(edges, [100.0])[0] == len(edges) - 1  # the maximum: last interior bin
    assert bin_index(edges, [100.5])[0] == len(edges)  # above the maximum
    assert prof.counts[0] == 0 and prof.counts[-1] == 0
    assert sum(prof.counts) == 100
    assert prof.mean == 50.5 and prof.min == 1.0 and prof.max == 100.0
    assert abs(prof.std - np.std(values)) < 1e-12


def test_constant_column_has_two_edges_and_three_bins():
    prof = numeric_bins(np.full(50, 3.25), bins=10)
    assert prof.edges == (3.25, float(np.nextafter(np.float32(3.25), np.float32(np.inf))))
    assert prof.counts == (0, 50, 0)


def test_nan_counts_as_missing():
    values = np.array([1.0, np.nan, 2.0, np.nan, 3.0])
    prof = numeric_bins(values, bins=4)
    assert prof.missing == 2
    assert prof.missing_rate == 0.4
    assert sum(prof.counts) == 3


def test_all_missing_column_has_no_edges():
    prof = numeric_bins(np.full(4, np.nan))
    assert prof.edges == ()
    assert prof.counts == (0,)
    assert prof.missing == 4 and prof.mean is None


tied_values = st.lists(
    st.one_of(
        st.sampled_from([0.0, 1.0, 1.0, 1.0, 2.5, -7.0, 1e6]),
        st.just(float("nan")),
        st.floats(-1e9, 1e9, allow_nan=False, width=32),
    ),
    min_size=1,
    max_size=300,
)


@settings(max_examples=200, deadline=None)
@given(values=tied_values, bins=st.integers(1, 30))
def test_edges_strictly_increasing_and_counts_sum_to_rows(values, bins):
    data = np.asarray(values, dtype=np.float64)
    prof = numeric_bins(data, bins=bins)
    edges = np.asarray(prof.edges)
    assert np.all(np.diff(edges) > 0)
    assert np.all(np.diff(edges.astype(np.float32)) > 0)  # still distinct as float32
    assert len(prof.counts) == len(edges) + 1
    assert sum(prof.counts) + prof.missing == len(data)
    finite = data[np.isfinite(data)]
    if finite.size:
        assert prof.counts[0] == 0 and prof.counts[-1] == 0
        assert edges[0] == np.float32(finite.min())
        assert len(edges) <= bins + 1


@settings(max_examples=50, deadline=None)
@given(value=st.floats(allow_nan=False, allow_infinity=False, width=32), rows=st.integers(1, 50))
def test_constant_columns_always_give_three_bins(value, rows):
    edges = quantile_edges(np.full(rows, value), bins=10)
    assert len(edges) == 2
    counts, missing = count_numeric(edges, np.full(rows, value))
    assert counts.tolist() == [0, rows, 0] and missing == 0


def test_categorical_bins_have_other_and_missing():
    values = np.array(["a", "b", "a", "", "c", "a", "b"], dtype=object)
    prof = categorical_bins(values, max_categories=2, min_count=1)  # tiny counts kept
    assert prof.categories == ("a", "b")
    assert prof.counts == (3, 2, 1)  # "c" falls into other
    assert prof.missing == 1
    assert sum(prof.counts) + prof.missing == len(values)


def test_reference_profile_round_trips_through_json_dicts():
    features = [
        {"name": "x", "input": "input", "column": 0} | numeric_bins([1.0, 2.0, 3.0]).to_dict(),
        {"name": "c", "input": "categorical", "column": 0}
        | categorical_bins(np.array(["u", "v"], dtype=object)).to_dict(),
    ]
    data = {"version": 1, "rows": 3, "features": features, "prediction": None}
    profile = ReferenceProfile.from_dict(data)
    assert profile.to_dict() == data
    assert profile.features[1].bins.kind == "categorical"
