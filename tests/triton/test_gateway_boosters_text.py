"""Converted XGBoost, LightGBM and CatBoost models and a text pipeline, served by a real gateway
process and asked with tritonclient: the answers on fresh rows (NaN and near-tied values,
unseen documents) are the fitted models' own."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from driftgate.converter import convert
from tests.booster_cases import CLASSIFICATION, BoosterCase, installed
from tests.processes import DriftgateProcess
from tests.test_text_features import _pipeline, reviews
from tests.triton.helpers import run_gateway, tensor

pytestmark = pytest.mark.integration

SERVED = [
    BoosterCase(library, task, pipeline)
    for library, task, pipeline in (
        ("xgboost", CLASSIFICATION, True),
        ("xgboost", "regression", False),
        ("lightgbm", CLASSIFICATION, False),
        ("lightgbm", "regression", True),
        ("catboost", CLASSIFICATION, True),
        ("catboost", "regression", False),
    )
    if installed(library)
]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DriftgateProcess, dict]]:
    """Every model converted into one repository, and a gateway serving it."""
    repo = tmp_path_factory.mktemp("models")
    fitted = {}
    for case in SERVED:
        x, y = case.data(1000, seed=0)
        fitted[case.id] = case.estimator().fit(x, y)
        convert(fitted[case.id], x, case.id, repo, labels=y)
    frame, y = reviews(1500, seed=0)
    fitted["reviews"] = _pipeline("tfidf").fit(frame, y)
    convert(fitted["reviews"], frame, "reviews", repo, labels=y)
    for gateway in run_gateway(repo, tmp_path_factory.mktemp("gateway")):
        yield gateway, fitted


def _inputs(case: BoosterCase, x) -> tuple[list, object]:
    """The request's tensors and the rows as scikit-learn sees the float32 values sent."""
    if not case.pipeline:
        values = np.asarray(x, dtype=np.float32)
        return [tensor("input", values, "FP32")], values.astype(np.float64)
    numbers = x[[f"x{i}" for i in range(4)]].to_numpy(np.float32)
    strings = x[["city"]].to_numpy(object)
    as_sent = x.copy()
    as_sent[[f"x{i}" for i in range(4)]] = numbers.astype(np.float64)
    return [tensor("numeric", numbers, "FP32"), tensor("categorical", strings, "BYTES")], as_sent


@pytest.mark.parametrize("case", SERVED, ids=[c.id for c in SERVED])
def test_each_served_booster_answers_as_the_fitted_model(served, case: BoosterCase) -> None:
    gateway, fitted = served
    model = fitted[case.id]
    fresh, _ = case.data(300, seed=11)
    inputs, rows = _inputs(case, fresh)
    with grpcclient.InferenceServerClient(gateway.address) as client:
        result = client.infer(case.id, inputs, model_version="1")
    if case.task == CLASSIFICATION:
        assert np.array_equal(result.as_numpy("label").ravel(), model.predict(rows))
        np.testing.assert_allclose(
            result.as_numpy("probabilities"), model.predict_proba(rows), atol=1e-5
        )
    else:
        np.testing.assert_allclose(
            result.as_numpy("variable").ravel(), model.predict(rows), atol=1e-4, rtol=1e-5
        )


def test_a_text_pipeline_answers_documents_sent_as_bytes(served) -> None:
    gateway, fitted = served
    frame, _ = reviews(200, seed=12, new_words=0.5)
    numbers = frame[["x"]].to_numpy(np.float32)
    documents = frame[["review"]].to_numpy(object)
    inputs = [tensor("numeric", numbers, "FP32"), tensor("categorical", documents, "BYTES")]
    with grpcclient.InferenceServerClient(gateway.address) as client:
        metadata = client.get_model_metadata("reviews", as_json=True)
        result = client.infer("reviews", inputs)
    datatypes = {i["name"]: i["datatype"] for i in metadata["inputs"]}
    assert datatypes == {"numeric": "FP32", "categorical": "BYTES"}
    sent = frame.assign(x=numbers[:, 0].astype(np.float64))
    model = fitted["reviews"]
    assert np.array_equal(result.as_numpy("label").ravel(), model.predict(sent))
    np.testing.assert_allclose(
        result.as_numpy("probabilities"), model.predict_proba(sent), atol=1e-5
    )


def test_the_repository_holds_every_model(served) -> None:
    gateway, _ = served
    with grpcclient.InferenceServerClient(gateway.address) as client:
        names = {m["name"] for m in client.get_model_repository_index(as_json=True)["models"]}
    assert {c.id for c in SERVED} | {"reviews"} <= names
