"""XGBoost, LightGBM and CatBoost: conversion with parity (standalone and in a Pipeline, on
unrounded float64 data with ties, near-ties and NaN), the graph on fresh rows, the LightGBM
threshold rounding, retraining a clone through the monitor's retrain path, and a base
install that never imports them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from driftgate import converter
from driftgate.converter import convert, make_layout, table_from_object
from driftgate.converter.boosters import _rounded_model_string, round_down_to_float32
from driftgate.converter.data import Table, save_table_npz
from driftgate.monitor.retrain import RetrainJob, assemble, execute, run_worker
from tests.booster_cases import CASES, CLASSIFICATION, BoosterCase, installed


def _fitted(case: BoosterCase, rows: int = 1500, seed: int = 0):
    x, y = case.data(rows, seed)
    return case.estimator().fit(x, y), x, y


def _graph_outputs(path: Path, fitted, x) -> tuple[list[np.ndarray], object]:
    """The served graph's outputs on ``x`` (sent as a request carries it: float32 numbers,
    strings), and the same rows as scikit-learn sees them."""
    table = table_from_object(x)
    layout = make_layout(fitted, table)
    session = ort.InferenceSession(str(path / "model.onnx"), providers=["CPUExecutionProvider"])
    feeds = layout.feeds(table)
    as_served = Table(table.names, tuple(
        c.astype(np.float32).astype(np.float64) if c.dtype.kind == "f" else c
        for c in table.columns
    ))  # fmt: skip
    return session.run(None, feeds), layout.sklearn_input(as_served)


@pytest.mark.parametrize("case", CASES)
def test_each_booster_converts_with_parity_and_predicts_fresh_rows_as_fitted(
    case: BoosterCase, tmp_path: Path
) -> None:
    fitted, x, y = _fitted(case)
    result = convert(fitted, x, "m", tmp_path / "models", labels=y)
    parity = result.parity
    assert parity.passed, parity.format()
    meta = json.loads((result.path / "model.json").read_text())
    assert meta["task"] == case.task and meta["parity"]["passed"]
    assert (result.path / "reference.json").is_file()
    # Fresh rows, NaN and near-tied values included: the graph answers as the fitted model.
    fresh, _ = case.data(800, seed=7)
    outputs, rows = _graph_outputs(result.path, fitted, fresh)
    if case.task == CLASSIFICATION:
        assert parity.label_agreement == 1.0
        assert np.array_equal(outputs[0].ravel(), fitted.predict(rows))
        np.testing.assert_allclose(outputs[1], fitted.predict_proba(rows), atol=1e-5)
    else:
        expected = fitted.predict(rows)
        np.testing.assert_allclose(outputs[0].ravel(), expected, atol=1e-4, rtol=1e-5)


@settings(max_examples=200, deadline=None)
@given(
    threshold=st.floats(-1e30, 1e30, allow_nan=False),
    steps=st.lists(st.integers(-3, 3), min_size=1, max_size=7),
)
def test_rounding_a_threshold_down_keeps_every_float32_comparison(
    threshold: float, steps: list[int]
) -> None:
    """For the float32 values around a float64 threshold, ``x <= t`` is unchanged."""
    rounded = float(round_down_to_float32([threshold])[0])
    assert rounded == np.float32(rounded)  # a float32 value, held exactly by the graph
    centre = np.float32(threshold)
    for step in steps:
        x = centre
        for _ in range(abs(step)):
            x = np.nextafter(x, np.float32(np.inf if step > 0 else -np.inf))
        assert (float(x) <= threshold) == (float(x) <= rounded)


@pytest.mark.skipif(not installed("lightgbm"), reason="lightgbm absent")
def test_a_lightgbm_copy_with_rounded_thresholds_predicts_float32_rows_exactly() -> None:
    import lightgbm

    fitted, x, _ = _fitted(BoosterCase("lightgbm", "regression", False))
    text = fitted.booster_.model_to_string()
    rounded = lightgbm.Booster(model_str=_rounded_model_string(text))
    thresholds = [
        float(v)
        for line in _rounded_model_string(text).splitlines()
        if line.startswith("threshold=")
        for v in line.removeprefix("threshold=").split()
    ]
    assert thresholds and all(t == np.float32(t) for t in thresholds)
    # The near-tied column splits between neighbouring float32 values: some threshold moved.
    assert _rounded_model_string(text) != text
    served = x.astype(np.float32).astype(np.float64)
    assert np.array_equal(rounded.predict(served), fitted.booster_.predict(served))


# -- retraining a clone through the monitor's retrain path ----------------------------------


def _retrain_job(tmp_path: Path, case: BoosterCase, tolerance: float) -> tuple[RetrainJob, Table]:
    """Version 1 fitted on 600 rows; a job on 800 production rows of the same distribution."""
    fitted, x, y = _fitted(case, rows=600)
    repository = tmp_path / "models"
    convert(fitted, x, "m", repository, labels=y)
    sample = converter.load_table(repository / "m" / "1" / "training_sample.npz")
    production = table_from_object(*case.data(800, seed=3))
    train, holdout = assemble(sample, production, holdout_fraction=0.5)
    save_table_npz(train, tmp_path / "train.npz")
    save_table_npz(holdout, tmp_path / "holdout.npz")
    job = RetrainJob("m", str(repository), 1, str(tmp_path / "train.npz"),
                     str(tmp_path / "holdout.npz"), trainer="", tolerance=tolerance,
                     task=case.task)  # fmt: skip
    return job, train


def _check_retrained(job: RetrainJob, train: Table, case: BoosterCase) -> None:
    version = Path(job.repository) / "m" / "2"
    meta = json.loads((version / "model.json").read_text())
    assert meta["parity"]["passed"]
    assert meta["estimator"]["class"].split(".")[0] in (case.library, "sklearn")
    assert json.loads((version / "reference.json").read_text())["rows"] == train.rows


@pytest.mark.parametrize(
    "case",
    [p for p in CASES if p.values[0].pipeline == (p.values[0].library == "xgboost")],
)
def test_a_clone_of_each_booster_retrains_and_converts(case: BoosterCase, tmp_path: Path) -> None:
    # Wide margins: this test is about cloning and converting; the judge has tests of its own.
    tolerance = 0.1 if case.task == CLASSIFICATION else 0.5
    job, train = _retrain_job(tmp_path, case, tolerance)
    result = execute(job)
    assert result.outcome == "succeeded" and result.version == 2, result.reason
    assert result.figures is not None and result.figures["trainer"].startswith("clone of ")
    _check_retrained(job, train, case)


@pytest.mark.integration  # the retraining worker is a subprocess
@pytest.mark.skipif(not installed("xgboost"), reason="xgboost absent")
def test_the_retrain_worker_retrains_an_xgboost_pipeline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    case = BoosterCase("xgboost", CLASSIFICATION, True)
    job, train = _retrain_job(tmp_path, case, tolerance=0.1)
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parent.parent))
    workdir = tmp_path / "work"
    workdir.mkdir()
    result = run_worker(job, workdir, timeout=240)
    assert result.outcome == "succeeded" and result.version == 2, result.reason
    _check_retrained(job, train, case)
    reloaded = converter.load_estimator(Path(job.repository) / "m" / "2" / "estimator.joblib")
    assert type(reloaded.steps[-1][1]).__name__ == "XGBClassifier"


def test_a_scikit_learn_model_converts_without_importing_any_booster(tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "import numpy as np\n"
        "from sklearn.ensemble import RandomForestClassifier\n"
        "from driftgate.converter import convert\n"
        "x = np.random.default_rng(0).normal(size=(200, 3)); y = (x[:, 0] > 0).astype(int)\n"
        f"convert(RandomForestClassifier(5).fit(x, y), x, 'm', {str(tmp_path)!r}, labels=y)\n"
        "loaded = {'xgboost', 'lightgbm', 'catboost', 'onnxmltools'} & set(sys.modules)\n"
        "print(sorted(loaded))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, check=True)  # fmt: skip
    assert done.stdout.strip() == "[]"


@pytest.mark.skipif(not installed("xgboost"), reason="xgboost absent")
def test_without_onnxmltools_an_xgboost_model_is_refused_with_the_extra_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from driftgate.converter import UnsupportedEstimator, boosters

    fitted, x, y = _fitted(BoosterCase("xgboost", CLASSIFICATION, False), rows=200)
    monkeypatch.setattr(boosters, "_REGISTERED", set())
    # A None entry makes every import of the package raise ImportError, as if absent.
    for name in [m for m in sys.modules if m.split(".")[0] == "onnxmltools"]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "onnxmltools", None)
    with pytest.raises(UnsupportedEstimator, match=r"pip install 'driftgate\[xgboost\]'"):
        convert(fitted, x, "m", tmp_path, labels=y)
    assert not (tmp_path / "m").exists()
