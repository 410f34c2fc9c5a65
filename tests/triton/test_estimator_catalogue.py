"""Every configuration of ``tests/estimator_catalogue.py`` end to end: converted with parity
on unrounded float64 data (ties, NaN where accepted), served by one gateway process watching
one repository, answered through tritonclient as scikit-learn answers fresh rows, profiled;
the ``retrain`` subset also retrains through the monitor's retrain path.

The gateway runs in another process (tritonclient's protos and driftgate's cannot share one).
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from sklearn.exceptions import ConvergenceWarning

from driftgate.converter import ConverterSettings, Tolerance, convert, load_table
from driftgate.converter.data import save_table_npz, table_from_object
from driftgate.monitor.retrain import RetrainJob, assemble, execute
from tests import estimator_catalogue as catalogue
from tests.estimator_catalogue import CLASSIFICATION, OUTLIERS, REGRESSION, Entry
from tests.triton.helpers import run_gateway

pytestmark = pytest.mark.integration

TRAIN_ROWS, FRESH_ROWS = 240, 40
TOLERANCE = Tolerance()
# Small data: parity on the 48 held-out rows. The confidence calibration (5 refits of each
# classifier) is tested elsewhere and off here: it would triple the time.
SETTINGS = ConverterSettings(calibration_folds=0)
ENTRIES = catalogue.entries()
CASES = [
    pytest.param(e, id=e.name, marks=pytest.mark.skipif(
        not e.available, reason=f"needs the optional package {e.requires}"
    ))
    for e in catalogue.CATALOGUE
]  # fmt: skip


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("catalogue")


@pytest.fixture(scope="module")
def triton(
    repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[grpcclient.InferenceServerClient]:
    """One gateway for the whole catalogue: it picks each model up as it is converted."""
    for gateway in run_gateway(repository, tmp_path_factory.mktemp("catalogue-gateway")):
        client = grpcclient.InferenceServerClient(gateway.address)
        yield client
        client.close()


def test_the_catalogue_covers_every_family_and_task():
    assert len(ENTRIES) >= 60
    tasks = {(e.family, e.task) for e in ENTRIES}
    assert {task for _, task in tasks} == {CLASSIFICATION, REGRESSION, OUTLIERS}
    assert len({e.family for e in ENTRIES if e.retrain}) >= 10
    assert any(e.nan for e in ENTRIES) and any(e.data == "mixed" for e in ENTRIES)
    assert len({e.name for e in ENTRIES}) == len(ENTRIES)  # names are model names


def _wait_ready(client: grpcclient.InferenceServerClient, model: str) -> None:
    deadline = time.monotonic() + 60
    while not client.is_model_ready(model):
        assert time.monotonic() < deadline, f"the gateway never loaded {model}"
        time.sleep(0.1)


def _column(features: Any, name: str) -> np.ndarray:
    if hasattr(features, "columns"):
        return features[name].to_numpy()
    return features[:, int(name[1:])]  # an array's columns are x0, x1, ...


def _served(features: Any) -> Any:
    """The rows as a FP32 request carries them: numeric values rounded to float32."""
    if hasattr(features, "columns"):
        rounded = features.copy()
        for name in catalogue.NUMERIC_COLUMNS:
            rounded[name] = rounded[name].astype(np.float32).astype(np.float64)
        return rounded
    return features.astype(np.float32).astype(np.float64)


def _request(meta: dict[str, Any], features: Any) -> list[grpcclient.InferInput]:
    inputs = []
    for spec in meta["inputs"]:
        columns = [_column(features, f) for f in spec["features"]]
        if spec["datatype"] == "FP32":
            values = np.column_stack(columns).astype(np.float32)
        else:
            values = np.column_stack(columns).astype(object)
        tensor = grpcclient.InferInput(spec["name"], list(values.shape), spec["datatype"])
        tensor.set_data_from_numpy(values)
        inputs.append(tensor)
    return inputs


def _expected(estimator: Any, features: Any, names: list[str]) -> dict[str, np.ndarray]:
    """scikit-learn's answers for the served rows, by output name."""
    # CatBoost predicts labels as a column: one label per row either way.
    expected = {"label": np.asarray(estimator.predict(features)).reshape(len(features))}
    if "probabilities" in names:
        expected["probabilities"] = estimator.predict_proba(features)
    if "scores" in names:
        expected["scores"] = np.asarray(estimator.decision_function(features))
    if "variable" in names:
        expected = {"variable": expected["label"]}
    return expected


def _check_answers(answer: Any, expected: dict[str, np.ndarray], model: str) -> None:
    rows = len(next(iter(expected.values())))
    agree = np.ones(rows, dtype=bool)
    if "label" in expected:
        served = answer.as_numpy("label").reshape(rows)
        served = np.array([v.decode() if isinstance(v, bytes) else v for v in served])
        agree = served.astype(str) == expected["label"].astype(str)
        assert (~agree).sum() <= TOLERANCE.allowed_mismatches(rows), (model, served)
    for name, values in expected.items():
        if name == "label":
            continue
        got = answer.as_numpy(name).astype(np.float64).reshape(rows, -1)
        want = np.asarray(values, dtype=np.float64).reshape(rows, -1)
        close = np.isclose(got, want, atol=TOLERANCE.atol, rtol=TOLERANCE.rtol)
        assert close[agree].all(), (model, name, np.abs(got - want).max())


def _check_reference(path: Path, meta: dict[str, Any]) -> None:
    reference = json.loads((path / "reference.json").read_text())
    assert reference["rows"] == TRAIN_ROWS
    features = [f for spec in meta["inputs"] for f in spec["features"]]
    assert [f["name"] for f in reference["features"]] == features
    for feature in reference["features"]:
        assert sum(feature["counts"]) + feature["missing"] == TRAIN_ROWS
    assert sum(reference["prediction"]["counts"]) == TRAIN_ROWS


def _fit(entry: Entry) -> tuple[Any, Any, np.ndarray]:
    return catalogue.fit(entry, TRAIN_ROWS, seed=0)


@pytest.mark.parametrize("entry", CASES)
def test_converts_serves_and_profiles(entry: Entry, repository: Path, triton) -> None:
    estimator, features, targets = _fit(entry)
    if entry.nan:
        assert np.isnan(_column(features, _first_numeric(features))).any()
    result = convert(estimator, features, entry.name, repository, labels=targets, settings=SETTINGS)
    meta = result.metadata
    assert result.parity.passed and meta["parity"]["rows"] == TRAIN_ROWS // 5
    assert meta["task"] == entry.task
    _check_reference(result.path, meta)
    fresh, _ = catalogue.dataset(entry, FRESH_ROWS, seed=1)
    served = _served(fresh)
    _wait_ready(triton, entry.name)
    names = [o["name"] for o in meta["outputs"]]
    answer = triton.infer(entry.name, _request(meta, served), outputs=[
        grpcclient.InferRequestedOutput(name) for name in names
    ])  # fmt: skip
    assert answer.get_response().model_version == "1"
    _check_answers(answer, _expected(estimator, served, names), entry.name)


def _first_numeric(features: Any) -> str:
    return catalogue.NUMERIC_COLUMNS[0] if hasattr(features, "columns") else "x0"


@pytest.mark.parametrize("entry", [c for c in CASES if c.values[0].retrain])
def test_retrains_through_the_monitor(entry: Entry, tmp_path: Path) -> None:
    """Version 1, then the retrain worker's own ``execute`` on labelled production rows:
    a clone fitted on the stored sample plus production, judged, converted as version 2."""
    estimator, features, targets = _fit(entry)
    repository = tmp_path / "models"
    convert(estimator, features, entry.name, repository, labels=targets, settings=SETTINGS)
    production_rows, production_targets = catalogue.dataset(entry, 400, seed=2)
    production = table_from_object(production_rows, production_targets)
    sample = load_table(repository / entry.name / "1" / "training_sample.npz")
    train, holdout = assemble(sample, production, holdout_fraction=0.5)
    save_table_npz(train, tmp_path / "train.npz")
    save_table_npz(holdout, tmp_path / "holdout.npz")
    # The monitor judges an outlier detector's -1/1 labels as a classifier's (autopilot).
    task = REGRESSION if entry.task == REGRESSION else CLASSIFICATION
    files = (str(tmp_path / "train.npz"), str(tmp_path / "holdout.npz"))
    job = RetrainJob(entry.name, str(repository), 1, *files, trainer="", tolerance=0.5, task=task)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # small refits, not the subject
        result = execute(job)
    assert result.outcome == "succeeded" and result.version == 2, result.reason
    meta = json.loads((repository / entry.name / "2" / "model.json").read_text())
    assert meta["parity"]["passed"] and meta["task"] == entry.task
    assert meta["training_data"]["rows"] == train.rows == TRAIN_ROWS + 200
