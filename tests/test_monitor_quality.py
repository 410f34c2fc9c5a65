"""Data-quality drift: the exact test against scipy, error rates by simulation, the monitor's
verdicts and gauges for a window whose feature went missing (no socket)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import ndtr
from scipy.stats import fisher_exact

from driftgate.core._proto.driftgate.monitor.v1 import monitor_pb2 as pb
from driftgate.core.profile import numeric_bins
from driftgate.monitor.drift import DriftTester, QualityCounts, Verdict
from driftgate.monitor.quality import rise_p_value
from tests.test_monitor_validation import MODEL, Harness, good_report

N_REF = 10_000
FEATURES = 20


@settings(max_examples=300, deadline=None)
@given(
    st.integers(1, 5_000).flatmap(
        lambda n_ref: st.tuples(st.just(n_ref), st.integers(0, n_ref), st.integers(1, 5_000))
    ),
    st.floats(0.0, 1.0),
)
def test_p_value_is_fishers_exact_one_sided(ref: tuple[int, int, int], share: float) -> None:
    # Fisher's test of the 2 x 2 table (window, reference) x (with the trait, without),
    # one-sided "the window's rate is greater".
    n_ref, x_ref, n = ref
    x = int(round(share * n))
    expected = fisher_exact([[x, n - x], [x_ref, n_ref - x_ref]], alternative="greater").pvalue
    assert rise_p_value(x, n, x_ref, n_ref) == pytest.approx(expected, rel=1e-6, abs=1e-12)


def test_p_value_on_a_small_table_by_enumeration() -> None:
    # 3 of 5 window rows and 1 of 10 training rows: P(X >= 3), X the window's share of the 4.
    def term(k: int) -> float:
        return math.comb(4, k) * math.comb(11, 5 - k) / math.comb(15, 5)

    assert rise_p_value(3, 5, 1, 10) == pytest.approx(term(3) + term(4), rel=1e-12)
    assert rise_p_value(0, 5, 1, 10) == pytest.approx(1.0)


class Table:
    """A 20-feature numeric table: standard normal values with ``missing`` of them NaN and
    ``infinite`` of them +-Inf, profiled at ``N_REF`` rows as the converter does; windows are
    drawn on its bins (the mass beyond the training extremes lands in the open end bins, so
    out-of-range values occur as they would in production)."""

    def __init__(self, rng: np.random.Generator, missing: float, infinite: float) -> None:
        self.rng = rng
        self.missing, self.infinite = missing, infinite
        self.bins = []
        for _ in range(FEATURES):
            x = rng.standard_normal(N_REF)
            x[rng.random(N_REF) < missing] = np.nan
            x[rng.random(N_REF) < infinite] = np.inf
            self.bins.append(numeric_bins(x, 10))

    def reference(self, i: int) -> QualityCounts:
        b = self.bins[i]
        rows = sum(b.counts) + b.missing
        return QualityCounts(rows, b.missing, b.missing, b.counts[0] + b.counts[-1])

    def window(self, rows: int, changed: dict[str, float] | None = None) -> list[Any]:
        """(feature tuple, (reference, window) quality counts) for each feature; feature 0's
        rates of ``changed`` ("nan", "inf", "out_of_range") replace the training's."""
        out = []
        for i, b in enumerate(self.bins):
            nan, inf, beyond = self.missing, self.infinite, 0.0
            if i == 0 and changed:
                nan = changed.get("nan", nan)
                inf = changed.get("inf", inf)
                beyond = changed.get("out_of_range", 0.0)
            edges = np.asarray(b.edges)
            p = np.diff(np.concatenate([[0.0], ndtr(edges), [1.0]]))
            p = p * (1 - beyond) + beyond * np.eye(len(p))[-1]  # pushed above the maximum
            n_nan, n_inf, n_finite = self.rng.multinomial(rows, [nan, inf, 1 - nan - inf])
            counts = self.rng.multinomial(n_finite, p)
            window = QualityCounts(
                rows, int(n_nan + n_inf), int(n_inf), int(counts[0] + counts[-1])
            )
            feature = (f"f{i}", False, np.asarray(b.counts), counts)
            out.append((feature, (self.reference(i), window)))
        return out

    def evaluate(self, tester: DriftTester, rows: int, changed: dict[str, float] | None = None):
        features, quality = zip(*self.window(rows, changed), strict=True)
        return tester.evaluate(list(features), None, list(quality))


SIZES = [500, 5_000, 50_000]


@pytest.mark.statistical
@pytest.mark.parametrize("rows", SIZES)
@pytest.mark.parametrize(
    ("missing", "infinite", "changed", "kind"),
    [
        (0.0, 0.0, {"nan": 0.5}, "missing"),
        (0.0, 0.0, {"inf": 0.5}, "infinite"),
        (0.0, 0.0, {"out_of_range": 0.5}, "out_of_range"),
        (0.03, 0.0, {"nan": 0.5}, "missing"),
    ],
)
def test_half_of_one_feature_gone_bad_is_detected(
    rows: int, missing: float, infinite: float, changed: dict[str, float], kind: str
) -> None:
    rng = np.random.default_rng(rows)
    table = Table(rng, missing, infinite)
    tester = DriftTester()
    for _ in range(10):
        result = table.evaluate(tester, rows, changed)
        first = result.features[0]
        assert first.verdict == Verdict.DRIFT
        tests = {q.kind: q for q in first.quality}
        assert tests[kind].verdict == Verdict.DRIFT
        assert tests[kind].rate == pytest.approx(0.5, abs=0.1)
        assert result.verdict == Verdict.DRIFT
        assert result.share == pytest.approx(1 / FEATURES)


@pytest.mark.statistical
@pytest.mark.parametrize("rows", [*SIZES, 1_000_000])
@pytest.mark.parametrize(("missing", "infinite"), [(0.03, 0.0), (0.02, 0.01), (0.0, 0.0)])
def test_undrifted_windows_with_the_training_rates_do_not_alarm(
    rows: int, missing: float, infinite: float
) -> None:
    # Every kind and the distribution tests too: the dataset verdict of a whole evaluation.
    rng = np.random.default_rng([rows, int(missing * 100), int(infinite * 100)])
    tester = DriftTester()
    alarms = quality_alarms = 0
    repetitions = 100
    table = Table(rng, missing, infinite)
    for _ in range(repetitions):
        result = table.evaluate(tester, rows)
        alarms += result.verdict == Verdict.DRIFT
        quality_alarms += any(
            q.verdict == Verdict.DRIFT for f in result.features for q in f.quality
        )
    assert alarms <= repetitions // 100
    assert quality_alarms == 0


def test_a_feature_all_nan_is_drift_not_insufficient_data() -> None:
    table = Table(np.random.default_rng(1), 0.0, 0.0)
    tester = DriftTester()
    result = table.evaluate(tester, 5_000, {"nan": 1.0})
    first = result.features[0]
    assert first.rows == 0  # nothing to bin:
    assert first.distribution_verdict == Verdict.INSUFFICIENT_DATA
    assert first.verdict == Verdict.DRIFT  # but the quality test has 5,000 values
    assert result.verdict == Verdict.DRIFT
    assert result.share == pytest.approx(1 / FEATURES)
    figures = first.figures()
    assert set(figures) == {"missing"}
    assert figures["missing"]["rate"] == 1.0
    assert figures["missing"]["rows"] == 5_000
    assert figures["missing"]["reference_rows"] == N_REF
    assert figures["missing"]["p_value"] < figures["missing"]["alpha"]


def test_the_floor_holds_back_a_significant_but_tiny_rise() -> None:
    tester = DriftTester()
    # 3.0% in training, 3.6% in a window of 4M values: p ~ 1e-9, a rise of 0.6 points.
    reference = QualityCounts(1_000_000, 30_000)
    window = QualityCounts(4_000_000, 144_000)
    missing = tester.test_quality(reference, window, alpha=1e-5)[0]
    assert missing.p_value < 1e-5
    assert missing.verdict == Verdict.NO_DRIFT
    window = QualityCounts(4_000_000, 164_000)  # 4.1%
    assert tester.test_quality(reference, window, alpha=1e-5)[0].verdict == Verdict.DRIFT


def test_a_fall_in_the_missing_rate_is_not_a_quality_alarm() -> None:
    reference, window = QualityCounts(10_000, 3_000), QualityCounts(10_000, 0)
    missing = DriftTester().test_quality(reference, window, alpha=0.01)[0]
    assert missing.verdict == Verdict.NO_DRIFT
    assert missing.p_value == pytest.approx(1.0)


# -- through the monitor: stored tallies, GetDrift and the gauges -------------------------


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path)
    yield h
    h.close()


def test_the_monitor_reports_a_feature_gone_nan(harness: Harness) -> None:
    request = good_report(harness.profile)
    age = request.versions[0].features[0]
    del age.counts[:]
    age.counts.extend([0] * len(harness.profile.features[0].bins.counts))
    age.nan_count = 5_000
    for feature in request.versions[0].features[1:]:  # the others as in training
        feature.nan_count = 0
    harness.report(request)
    response = harness.call("GetDrift", pb.GetDriftRequest(model=MODEL, version=1))
    features = {f.name: f for f in response.features}
    assert features["age"].verdict == pb.DRIFT
    assert features["age"].distribution_verdict == pb.INSUFFICIENT_DATA
    missing = next(q for q in features["age"].quality if q.kind == "missing")
    assert (missing.count, missing.rows, missing.rate) == (5_000, 5_000, 1.0)
    assert missing.reference_rows == 5_000
    assert missing.test == "fisher_exact_rise"
    assert missing.verdict == pb.DRIFT
    assert features["spend"].verdict == pb.NO_DRIFT
    assert response.dataset_verdict == pb.DRIFT
    assert response.dataset_drift_share == pytest.approx(1 / 3)

    harness.monitor.evaluate()
    labels = {"model": MODEL, "version": "1", "feature": "age"}
    assert harness.sample("driftgate_monitor_quality_rate", **labels, kind="missing") == 1.0
    # verdicts are state sets: 1 for the state the test is in, 0 for the others
    quality, drift = "driftgate_monitor_quality_verdict", "driftgate_monitor_drift_verdict"
    assert harness.sample(quality, **labels, kind="missing", **{quality: "drift"}) == 1
    for state, value in (("no_drift", 1), ("drift", 0), ("insufficient_data", 0)):
        assert harness.sample(quality, **labels, kind="infinite", **{quality: state}) == value
    assert harness.sample("driftgate_monitor_quality_reference_rate", **labels, kind="missing") == 0
    assert harness.sample(drift, **labels, **{drift: "drift"}) == 1
    assert harness.sample(drift, **labels, **{drift: "no_drift"}) == 0
    assert harness.sample("driftgate_monitor_dataset_drift_share", model=MODEL, version="1") == (
        pytest.approx(1 / 3)
    )
