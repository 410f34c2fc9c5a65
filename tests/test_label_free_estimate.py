"""The label-free accuracy estimate: the converter's calibration and the monitor's estimate.

A calibrated model's estimate on fresh, undrifted rows matches its accuracy on them within
sampling error; the raw mean top-class probability of the same forest does not. The
estimate from histograms equals its record-level definition (``accuracy_of``).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.ensemble import RandomForestClassifier

from driftgate import converter
from driftgate.converter.calibration import MAX_BREAKPOINTS, fit_calibration
from driftgate.monitor.accuracy import (
    TOP_BINS,
    AccuracyTotals,
    Calibration,
    JoinedPrediction,
    accuracy_from,
    accuracy_of,
    expected_accuracy,
    expected_confusion,
    top_bin,
)


def test_calibration_recovers_a_known_confidence_map() -> None:
    """Rows whose top class is right with probability p^2: the fitted map is p^2 to within
    the isotonic fit's pointwise error on 20,000 rows (of order n^-1/3), and its mean over
    fresh rows is the expected accuracy to within half a point."""
    rng = np.random.default_rng(0)
    top = rng.uniform(0.5, 1.0, 20_000)
    probabilities = np.column_stack([top, 1 - top])
    correct = rng.uniform(size=top.size) < top**2
    truth = np.where(correct, "a", "b")  # column 0 ("a") is every row's top class
    block = fit_calibration(probabilities, truth, ["a", "b"], "split")
    assert block is not None
    assert block["method"] == "isotonic" and block["rows"] == 20_000
    assert 2 <= len(block["x"]) == len(block["y"]) <= MAX_BREAKPOINTS
    assert np.all(np.diff(block["x"]) > 0) and np.all(np.diff(block["y"]) >= 0)
    calibration = Calibration.from_model_json({"calibration": block})
    assert calibration is not None
    for p in (0.55, 0.7, 0.85, 0.95):
        assert calibration(p) == pytest.approx(p**2, abs=0.05)
    fresh = rng.uniform(0.5, 1.0, 20_000)
    mapped = np.mean([calibration(p) for p in fresh])
    assert mapped == pytest.approx(np.mean(fresh**2), abs=0.005)
    assert block["brier_calibrated"] < block["brier_raw"]
    # Every row is predicted "a": its class map is the pooled map, and "b" has none.
    assert set(block["classes"]) == {"a"} and block["classes"]["a"]["x"] == block["x"]
    assert block["confusion"] == {
        "a": {"a": int(correct.sum()), "b": int((~correct).sum())},
        "b": {"a": 0, "b": 0},
    }


def test_too_few_rows_fit_no_calibration() -> None:
    probabilities = np.full((49, 2), 0.5)
    assert fit_calibration(probabilities, np.zeros(49, dtype=int), [0, 1], "split") is None
    assert Calibration.from_model_json({"calibration": None}) is None
    assert Calibration.from_model_json({}) is None


def _data(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    x, y = make_classification(
        rows, 6, n_informative=4, n_redundant=0, class_sep=1.2, random_state=seed
    )
    return x.astype(np.float32), y


def test_calibrated_estimate_matches_accuracy_on_undrifted_rows(tmp_path: Path) -> None:
    """Fitted on the converter's split training rows, calibrated on cross-fitted
    probabilities of all 3,000 rows, then 2,000 fresh rows of the same distribution:
    estimate within 3 standard errors of the measured accuracy; the raw mean top-class
    probability is further off than that."""
    x, y = _data(10_000, 7)
    x_train, y_train, x_new, y_new = x[:3000], y[:3000], x[3000:5000], y[3000:5000]
    fit_rows, _ = converter.holdout_split(len(x_train), 0.2, 0)
    forest = RandomForestClassifier(40, max_depth=10, random_state=0)
    forest.fit(x_train[fit_rows], y_train[fit_rows])
    result = converter.convert(forest, x_train, "demo", tmp_path, labels=y_train)
    block = result.metadata["calibration"]
    assert block["source"] == "cross-fit" and block["rows"] == 3000
    calibration = Calibration.from_model_json(result.metadata)

    probabilities = forest.predict_proba(x_new)
    predicted = forest.classes_[probabilities.argmax(axis=1)]
    records = [
        JoinedPrediction(str(p), list(map(float, row)), str(label), 10.0)
        for p, row, label in zip(predicted, probabilities, y_new, strict=True)
    ]
    figures = accuracy_of(records, "classification", ["0", "1"], calibration)
    raw = accuracy_of(records, "classification", ["0", "1"])
    assert figures.accuracy is not None and figures.estimated_accuracy is not None
    assert figures.estimate_calibrated and not raw.estimate_calibrated
    se = math.sqrt(figures.accuracy * (1 - figures.accuracy) / len(records))
    assert abs(figures.estimated_accuracy - figures.accuracy) < 3 * se
    assert raw.estimated_accuracy is not None
    assert abs(raw.estimated_accuracy - figures.accuracy) > 3 * se  # the forest is timid
    # Every record is labelled: the labelled rows' estimate is the same figure.
    assert figures.estimated_accuracy_labelled == pytest.approx(figures.estimated_accuracy)


def test_regressor_has_no_calibration(tmp_path: Path) -> None:
    from sklearn.linear_model import LinearRegression

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 3))
    y = x @ np.array([1.0, -2.0, 0.5]) + rng.normal(size=300)
    result = converter.convert(LinearRegression().fit(x, y), x, "price", tmp_path, labels=y)
    assert result.metadata["calibration"] is None
    records = [JoinedPrediction(1.0, [], 2.0, 1.0)]
    figures = accuracy_of(records, "regression")
    assert figures.estimated_accuracy is None and figures.estimated_accuracy_labelled is None


def test_histogram_estimate_is_the_record_level_definition() -> None:
    """``accuracy_from`` over per-bin sums added in another order (as buckets and days add
    them) gives ``accuracy_of``'s estimate for all rows and for the labelled ones."""
    rng = np.random.default_rng(3)
    calibration = Calibration((0.5, 0.7, 0.9, 1.0), (0.45, 0.72, 0.93, 0.99))
    records = []
    for i in range(3000):
        top = float(rng.uniform(0.5, 1.0))
        label = None if i % 3 else ("a" if rng.uniform() < top else "b")
        records.append(JoinedPrediction("a", [top, 1 - top], label, 5.0 if label else None))
    totals = AccuracyTotals(records=len(records))
    for r in reversed(records):  # another order of addition
        top = max(r.probabilities)
        for labelled in (False, True) if r.label is not None else (False,):
            n, summed = totals.top_bins.get((labelled, top_bin(top)), (0, 0.0))
            totals.top_bins[labelled, top_bin(top)] = (n + 1, summed + top)
    by_records = accuracy_of(records, "classification", ["a", "b"], calibration)
    by_sums = accuracy_from(totals, "classification", ["a", "b"], calibration)
    assert by_sums.estimated_accuracy == pytest.approx(by_records.estimated_accuracy, rel=1e-12)
    assert by_sums.estimated_accuracy_labelled == pytest.approx(
        by_records.estimated_accuracy_labelled, rel=1e-12
    )
    # The labelled rows' estimate differs from all rows' (another sample of rows).
    assert by_records.estimated_accuracy != by_records.estimated_accuracy_labelled


def test_identity_map_is_the_mean_top_probability() -> None:
    histogram = {top_bin(0.62): (2, 1.25), top_bin(0.9): (1, 0.9), top_bin(1.0): (2, 1.99)}
    assert top_bin(1.0) == top_bin(0.99) == TOP_BINS - 1 and top_bin(0.0) == 0
    assert expected_accuracy(histogram, None) == pytest.approx((1.25 + 0.9 + 1.99) / 5)
    assert expected_accuracy({}, None) is None


def test_a_given_holdout_joins_the_cross_fitted_rows(tmp_path: Path) -> None:
    """As a retrain converts: the training rows and the rows given as the holdout are
    cross-fitted together (string class labels included); with cross-fitting off, the
    holdout alone calibrates, and the block says why."""
    x, y = _data(1500, 11)
    names = np.array(["stay", "leave"])[y]
    forest = RandomForestClassifier(20, max_depth=6, random_state=0).fit(x[:1000], names[:1000])
    holdout = converter.table_from_object(x[1000:], names[1000:])
    result = converter.convert(
        forest, x[:1000], "churn", tmp_path, labels=names[:1000], holdout=holdout
    )
    block = result.metadata["calibration"]
    assert (block["source"], block["rows"]) == ("cross-fit", 1500)
    assert sum(sum(row.values()) for row in block["confusion"].values()) == 1500
    assert set(block["classes"]) == {"stay", "leave"}

    off = converter.ConverterSettings(calibration_folds=0)
    result = converter.convert(
        forest, x[:1000], "churn", tmp_path, labels=names[:1000], holdout=holdout, settings=off
    )
    block = result.metadata["calibration"]
    assert (block["source"], block["rows"]) == ("holdout", 500)
    assert "folds < 2" in block["not_cross_fitted"]
    expected = np.mean(forest.predict(x[1000:]) == names[1000:])
    assert block["accuracy"] == pytest.approx(expected)
    assert block["accuracy"] == pytest.approx(result.metadata["holdout_metrics"]["accuracy"])


def test_a_class_too_rare_to_cross_fit_falls_back_to_the_holdout(tmp_path: Path) -> None:
    """Three rows of a class cannot be split into five stratified folds: the map is fitted on
    the split's held-out rows, and model.json says why."""
    x, y = _data(1000, 5)
    y = y.copy()
    y[:3] = 2
    forest = RandomForestClassifier(10, max_depth=4, random_state=0).fit(x, y)
    result = converter.convert(forest, x, "rare", tmp_path, labels=y)
    block = result.metadata["calibration"]
    assert block["source"] == "split" and block["rows"] == 200
    assert "fewer than 5 folds" in block["not_cross_fitted"]


def test_expected_confusion_by_hand() -> None:
    """Three classes; "a" has its own map, "b" the pooled one, "c" no cross-fitted errors."""
    calibration = Calibration(
        (0.0, 1.0),
        (0.0, 1.0),  # pooled: the identity
        classes={"a": ((0.0, 1.0), (0.5, 0.5))},  # "a" is right half the time
        confusion={"a": {"a": 10, "b": 3, "c": 1}, "b": {"b": 5}, "c": {"c": 4, "a": 0}},
    )
    histogram = {("a", top_bin(0.9)): (4, 3.6), ("b", top_bin(0.8)): (10, 8.0), ("c", 0): (2, 1.0)}
    cells = expected_confusion(histogram, calibration, ["a", "b", "c"])
    # "a": 4 predictions, 2 expected right, 2 wrong split 3:1 between "b" and "c".
    assert cells["a", "a"] == pytest.approx(2.0)
    assert cells["b", "a"] == pytest.approx(1.5) and cells["c", "a"] == pytest.approx(0.5)
    # "b": the identity map of mean 0.8 -> 8 right; no cross-fitted errors: 2 split evenly.
    assert cells["b", "b"] == pytest.approx(8.0)
    assert cells["a", "b"] == pytest.approx(1.0) and cells["c", "b"] == pytest.approx(1.0)
    # "c": mean 0.5 -> 1 right, 1 wrong split evenly (its cross-fitted "a" count is 0).
    assert cells["c", "c"] == pytest.approx(1.0)
    assert cells["a", "c"] == pytest.approx(0.5) and cells["b", "c"] == pytest.approx(0.5)
    assert sum(cells.values()) == pytest.approx(16.0)
    # Without a calibration the map is the identity and errors split evenly.
    plain = expected_confusion(histogram, None, ["a", "b", "c"])
    assert plain["a", "a"] == pytest.approx(3.6) and plain["b", "a"] == pytest.approx(0.2)
    assert expected_confusion({}, calibration, ["a", "b"]) == {}


def test_expected_confusion_matches_the_measured_one_on_undrifted_rows(tmp_path: Path) -> None:
    """The demo's forest, calibrated at conversion: on 2,000 fresh rows each cell of the
    expected confusion matrix is within 4 standard errors of the measured count."""
    x, y = _data(10_000, 7)
    forest = RandomForestClassifier(40, max_depth=10, random_state=0).fit(x[:3000], y[:3000])
    result = converter.convert(forest, x[:3000], "demo", tmp_path, labels=y[:3000])
    calibration = Calibration.from_model_json(result.metadata)
    assert calibration is not None and set(calibration.classes) == {"0", "1"}
    probabilities = forest.predict_proba(x[3000:5000])
    predicted = forest.classes_[probabilities.argmax(axis=1)]
    records = [
        JoinedPrediction(str(p), list(map(float, row)), str(label), 10.0)
        for p, row, label in zip(predicted, probabilities, y[3000:5000], strict=True)
    ]
    figures = accuracy_of(records, "classification", ["0", "1"], calibration)
    assert sum(figures.confusion.values()) == 2000
    for cell, expected in figures.expected_confusion.items():
        measured = figures.confusion.get(cell, 0)
        share = expected / 2000
        se = math.sqrt(2000 * share * (1 - share)) + 1
        assert abs(expected - measured) < 4 * se, (cell, expected, measured)
    assert figures.expected_confusion == figures.expected_confusion_labelled
