"""The benchmark models: made with scikit-learn from fixed seeds, converted with skl2onnx.

Every model takes FP32 ``[batch, 32]`` and answers ``label`` INT64 ``[batch]`` and
``probabilities`` FP32 ``[batch, 2]`` (zipmap off), so one request and one response shape
serve every model and every target.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

FEATURES = 32
MODEL_NAMES = ("lr", "forest", "heavy")
DESCRIPTIONS = {
    "lr": "logistic regression, 32 features",
    "forest": "random forest, 100 trees, depth 8, 32 features",
    "heavy": "MLP 3x2048 hidden units, 32 features (>= 0.5 ms per row in onnxruntime)",
}


@dataclass(frozen=True)
class ModelInfo:
    """One model written into the benchmark repository."""

    name: str
    input_name: str
    output_names: tuple[str, ...]
    path: Path  # model.onnx of the first version
    description: str


def training_data(seed: int = 0, rows: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import make_classification

    x, y = make_classification(
        n_samples=rows, n_features=FEATURES, n_informative=16, random_state=seed
    )
    return x.astype(np.float32), y


def build_estimator(name: str, seed: int = 0) -> Any:
    """A fitted estimator; ``seed`` varies the data and the fit (for distinct versions)."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier

    if name == "lr":
        x, y = training_data(seed)
        return LogisticRegression(max_iter=1000).fit(x, y)
    if name == "forest":
        x, y = training_data(seed)
        return RandomForestClassifier(n_estimators=100, max_depth=8, random_state=seed).fit(x, y)
    if name == "heavy":
        # The weights, not the accuracy, make it heavy: one epoch on a small sample is enough.
        x, y = training_data(seed, rows=1000)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            return MLPClassifier(
                hidden_layer_sizes=(2048, 2048, 2048), max_iter=1, random_state=seed
            ).fit(x, y)
    raise ValueError(f"unknown model {name!r}; expected one of {', '.join(MODEL_NAMES)}")


def to_onnx_bytes(estimator: Any) -> bytes:
    from skl2onnx import to_onnx

    sample = np.zeros((1, FEATURES), dtype=np.float32)
    onx = to_onnx(estimator, sample, options={id(estimator): {"zipmap": False}})
    return onx.SerializeToString()


def write_reference(directory: Path, seed: int = 0) -> None:
    """The reference profile a monitored gateway bins every row into (all 32 features)."""
    import json

    from driftgate.core.profile import (
        FeatureProfile,
        ReferenceProfile,
        categorical_bins,
        numeric_bins,
    )

    x, y = training_data(seed)
    profile = ReferenceProfile(
        rows=len(x),
        features=tuple(
            FeatureProfile(f"f{j}", "X", j, numeric_bins(x[:, j])) for j in range(FEATURES)
        ),
        prediction=categorical_bins(y.astype(str).astype(object)),
    )
    (directory / "reference.json").write_text(json.dumps(profile.to_dict()))


def write_model(root: Path, name: str, versions: tuple[int, ...] = (1,)) -> ModelInfo:
    """Write ``root/<name>/<version>/model.onnx`` (Triton-style layout) for each version."""
    import onnxruntime as ort

    first: Path | None = None
    for index, version in enumerate(versions):
        directory = root / name / str(version)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "model.onnx"
        path.write_bytes(to_onnx_bytes(build_estimator(name, seed=index)))
        write_reference(directory, seed=index)
        first = first or path
    assert first is not None
    session = ort.InferenceSession(str(first), providers=["CPUExecutionProvider"])
    return ModelInfo(
        name=name,
        input_name=session.get_inputs()[0].name,
        output_names=tuple(o.name for o in session.get_outputs()),
        path=first,
        description=DESCRIPTIONS[name],
    )


def sample_row(seed: int = 1) -> np.ndarray:
    """The one FP32 [1, 32] row every request carries."""
    return training_data(seed, rows=16)[0][:1].copy()


def ort_session(path: Path, threads: int = 1) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def measure_ort(info: ModelInfo, rows: int, duration: float) -> dict[str, Any]:
    """Raw onnxruntime in this process: ``rows`` rows per call, one thread, closed loop."""
    session = ort_session(info.path)
    batch = np.repeat(sample_row(), rows, axis=0)
    feed = {info.input_name: batch}
    warm_until = time.perf_counter() + min(1.0, duration / 4)
    while time.perf_counter() < warm_until:
        session.run(None, feed)
    latencies: list[float] = []
    start = time.perf_counter()
    end = start + duration
    now = start
    while now < end:
        session.run(None, feed)
        after = time.perf_counter()
        latencies.append(after - now)
        now = after
    elapsed = now - start
    return {
        "latencies": np.asarray(latencies),
        "requests": len(latencies) * rows,
        "elapsed": elapsed,
        "errors": {},
    }
