"""Training and serving bin the same values identically (DESIGN, invariant 8).

The converter's profile (``convert._profile``, float64 training data) and the gateway's counts
(``VersionCollector``, the same rows sent as the float32 an FP32 request carries) come from
one implementation (``driftgate.core.profile``) and agree bin for bin, on tied data too; the
categorical missing-value rule is the same on both sides.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from driftgate.converter.convert import ConverterSettings, _profile
from driftgate.converter.data import Table, table_from_object
from driftgate.converter.export import InputSpec, Layout
from driftgate.core.profile import (
    MISSING_CATEGORIES,
    NumericBins,
    ReferenceProfile,
    categorical_bins,
    count_categories,
    numeric_bins,
)
from driftgate.gateway.statistics import VersionCollector
from driftgate.monitor.drift import DriftTester, Verdict

# -- helpers ---------------------------------------------------------------------------------


def _converter_profile(table: Table, bins: int = 10) -> ReferenceProfile:
    """The profile exactly as ``convert`` writes it for ``table`` (through JSON and back)."""
    numeric = tuple(n for n in table.names if table.is_numeric(n))
    strings = tuple(n for n in table.names if not table.is_numeric(n))
    specs = [InputSpec("numeric", "FP32", numeric)] if numeric else []
    if strings:
        specs.append(InputSpec("categorical", "BYTES", strings))
    layout = Layout(tuple(specs), tuple(table.names), uses_names=False)
    predictions = np.zeros(table.rows, dtype=np.int64)
    profile = _profile(table, layout, predictions, [0, 1], ConverterSettings(bins=bins))
    return ReferenceProfile.from_dict(json.loads(json.dumps(profile.to_dict())))


def _gateway_counts(
    profile: ReferenceProfile, feeds: dict[str, np.ndarray], chunk: int = 997
) -> list:
    """The gateway's counts of the rows in ``feeds``, sent in requests of ``chunk`` rows."""
    columns = {name: array.shape[1] for name, array in feeds.items()}
    collector = VersionCollector(profile.to_dict(), columns, ["label"], record_rate=0.0)
    rows = len(next(iter(feeds.values())))
    for start in range(0, rows, chunk):
        feed = {name: array[start : start + chunk] for name, array in feeds.items()}
        n = len(next(iter(feed.values())))
        collector.record.request_succeeded(n, 1000, 0, 0, 1000, 0)
        collector.observe(feed, [np.zeros(n, np.int64)], f"r{start}")
    counts, _ = collector.take()
    return [counts, collector]


# -- (a) numeric counts agree exactly, on tied data --------------------------------------------


def _column(kind: str, rng: np.random.Generator, rows: int) -> np.ndarray:
    if kind == "decimal":  # a CSV of decimals: 0.1 .. 0.9 and the like, float64
        return np.round(rng.uniform(-3, 3, rows), 1)
    if kind == "integer":
        return rng.integers(-5, 40, rows).astype(np.float64)
    if kind == "binary":
        return (rng.random(rows) < rng.uniform(0.01, 0.99)).astype(np.float64)
    if kind == "constant":
        return np.full(rows, rng.choice([0.1, 3.3, -7.77, 1e6 + 0.1]))
    if kind == "continuous":
        return rng.standard_normal(rows) * 10 ** rng.uniform(-8, 8)
    if kind == "cents":  # prices: two decimals, heavy ties at round values
        return np.round(
            rng.choice([0.99, 1.0, 9.99, 10.0, 19.95], rows) + rng.integers(0, 3, rows), 2
        )
    raise AssertionError(kind)


KINDS = ["decimal", "integer", "binary", "constant", "continuous", "cents"]


@settings(max_examples=60, deadline=None)
@given(
    kinds=st.lists(st.sampled_from(KINDS), min_size=1, max_size=4),
    rows=st.integers(1, 3000),
    nan_share=st.sampled_from([0.0, 0.0, 0.05, 0.5, 1.0]),
    extremes=st.booleans(),
    bins=st.integers(1, 20),
    seed=st.integers(0, 2**32 - 1),
)
def test_profile_counts_equal_gateway_counts_of_the_same_rows(
    kinds: list[str], rows: int, nan_share: float, extremes: bool, bins: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    columns = []
    for kind in kinds:
        values = _column(kind, rng, rows)
        values[rng.random(rows) < nan_share] = np.nan
        if extremes:  # +-Inf, and float64 values no float32 holds (they are served as Inf)
            values[rng.random(rows) < 0.01] = np.inf
            values[rng.random(rows) < 0.01] = -1e300
        columns.append(values)
    table = table_from_object(np.stack(columns, axis=1))
    profile = _converter_profile(table, bins)

    with np.errstate(over="ignore"):  # what an FP32 request carries: -1e300 is -Inf
        served = np.stack(columns, axis=1).astype(np.float32)
    counts, collector = _gateway_counts(profile, {"numeric": served})
    assert collector.errors == 0
    for j, feature in enumerate(profile.features):
        bins_ = feature.bins
        assert isinstance(bins_, NumericBins) and bins_.dtype == "float32"
        assert counts.features[j].tolist() == list(bins_.counts)
        assert counts.nan[j] + counts.inf[j] == bins_.missing
        # No training value falls outside the training range.
        assert bins_.counts[0] == 0 and bins_.counts[-1] == 0
        assert counts.out_of_range[j] == 0
        # Edges are served values: the minimum is the first edge, each edge a float32.
        edges = np.asarray(bins_.edges)
        assert np.array_equal(edges, edges.astype(np.float32).astype(np.float64))
        finite = served[:, j][np.isfinite(served[:, j])]
        if finite.size:
            assert edges[0] == finite.min()


def test_each_value_of_a_low_cardinality_column_has_its_own_bin() -> None:
    rng = np.random.default_rng(0)
    flags = (rng.random(10_000) < 0.03).astype(np.float64)  # 3% ones
    bins = numeric_bins(flags, bins=10)
    assert bins.edges[:2] == (0.0, 1.0)
    assert bins.counts[1:3] == (int((flags == 0).sum()), int((flags == 1).sum()))


# -- (b) an undrifted window of tied decimals is not drift ---------------------------------------

DECIMALS = np.round(np.arange(1, 10) / 10, 1)  # 0.1 .. 0.9, as float64 parsed from a CSV


@pytest.mark.parametrize("rows", [5_000, 50_000])
def test_undrifted_tied_decimals_are_no_drift(rows: int) -> None:
    rng = np.random.default_rng(12)
    weights = rng.uniform(0.5, 2.0, len(DECIMALS))
    train = rng.choice(DECIMALS, size=10_000, p=weights / weights.sum())
    profile = _converter_profile(table_from_object(train[:, None]))
    reference = np.asarray(profile.features[0].bins.counts)
    assert reference[0] == 0  # nothing "below the minimum"
    assert np.count_nonzero(reference) == len(DECIMALS)  # one bin per value
    tester = DriftTester()
    verdicts = []
    for seed in range(20):
        window_rows = np.random.default_rng([rows, seed]).choice(train, size=rows)
        counts, _ = _gateway_counts(
            profile, {"numeric": window_rows[:, None].astype(np.float32)}, chunk=4096
        )
        window = counts.features[0]
        assert window[0] == 0 and window[-1] == 0 and counts.out_of_range[0] == 0
        # Per-bin proportions match the reference's to within sampling noise.
        p_ref, p_win = reference / reference.sum(), window / window.sum()
        assert np.max(np.abs(p_ref - p_win)) < 5 * np.sqrt(0.25 / rows + 0.25 / 10_000)
        result = tester.test("x", False, reference, window, alpha=tester.thresholds.alpha)
        verdicts.append(result.verdict)
    assert verdicts == [Verdict.NO_DRIFT] * 20


# -- (c) the categorical missing-value rule is the same on both sides ----------------------------


def test_categorical_missing_values_are_missing_on_both_sides() -> None:
    rng = np.random.default_rng(3)
    pool = np.array(["a", "b", "c", "None", "nan", "", "NaN", "null"], dtype=object)
    raw = list(rng.choice(pool, size=2_000, p=[0.3, 0.2, 0.1, 0.1, 0.1, 0.1, 0.05, 0.05]))
    raw[::97] = [None] * len(raw[::97])  # Python None and NaN in a DataFrame-like column
    raw[1::89] = [float("nan")] * len(raw[1::89])
    table = table_from_object(np.array(raw, dtype=object)[:, None])
    profile = _converter_profile(table)
    bins = profile.features[0].bins
    assert not MISSING_CATEGORIES & set(bins.categories)
    assert set(bins.categories) == {"a", "b", "c", "NaN", "null"}  # only these three spellings

    # The gateway receives strings (BYTES): None and NaN arrive as "None"/"nan" or "".
    served = np.array(["" if v is None or v != v else v for v in raw], dtype=object)
    for wire in (served, np.array([str(v) for v in raw], dtype=object)):
        counts, _ = _gateway_counts(profile, {"categorical": wire[:, None]})
        assert counts.features[0].tolist() == list(bins.counts)
        assert counts.nan[0] == bins.missing
    # The profile's own counting function agrees with both.
    expected, missing = count_categories(list(bins.categories), np.array(raw, dtype=object))
    assert expected.tolist() == list(bins.counts) and missing == bins.missing
    direct = categorical_bins(np.array(raw, dtype=object))
    assert direct.counts == bins.counts and direct.missing == bins.missing


# -- older profiles still load ---------------------------------------------------------------


def test_a_schema_1_profile_loads_and_counts_as_float32() -> None:
    old = {
        "version": 1,
        "rows": 4,
        "features": [
            {"name": "x", "input": "input", "column": 0, "kind": "numeric",
             "edges": [0.10000000149011612, 0.5, 0.9000000357627869],
             "counts": [1, 1, 2, 0], "missing": 0, "mean": 0.5, "std": 0.3,
             "min": 0.1, "max": 0.9, "missing_rate": 0.0},
            {"name": "c", "input": "c", "column": 0, "kind": "categorical",
             "categories": ["u", "None"], "counts": [3, 1, 0], "missing": 0,
             "missing_rate": 0.0},
        ],
        "prediction": None,
    }  # fmt: skip
    profile = ReferenceProfile.from_dict(old)
    assert profile.version == 1
    feature = profile.features[0].bins
    assert isinstance(feature, NumericBins) and feature.dtype == "float32"
    counts, _ = _gateway_counts(
        profile,
        {
            "input": np.array([[0.1], [0.5], [0.9], [1.0]], np.float32),
            "c": np.array([["u"], ["None"], ["v"], [""]], dtype=object),
        },
    )
    assert counts.features[0].tolist() == [0, 1, 2, 1]
    assert counts.features[1].tolist() == [1, 0, 1]  # "None" reads as missing now
    assert counts.nan[1] == 2
