"""``convert``: a fitted estimator + its training data -> the next version of a model.

Steps: check the estimator is supported; load the data; export ``served_estimator``'s copy
to ONNX (see ``converter.export`` for the input layout, the output names and why tree
thresholds are rounded down to float32 on that copy); run the parity check (see
``converter.parity`` for the tolerance) of the graph against that copy, and check that the
copy predicts the same float32 rows exactly as the fitted estimator; profile the data and the
model's own predictions (``driftgate.core.profile``); compute holdout metrics when labels are
given, and for a classifier the calibration of its confidence on the same held-out rows
(``converter.calibration``, the monitor's label-free estimate); then write
``model.onnx``, ``model.json``, ``reference.json``, ``estimator.joblib`` and
``training_sample.npz`` atomically through ``Repository.write_version``. Any failure before
the final rename leaves nothing in the repository.

Holdout metrics (``model.json`` ``holdout_metrics``, the accuracy baseline the monitor
compares production with) are computed on rows the estimator was not fitted on whenever
``convert`` can know it: given ``holdout`` (a retrain passes the worker's holdout, the newest
labelled production rows, which the candidate never saw), the metrics are that table's
(``"source": "holdout"``). ``convert`` fits nothing itself, so without ``holdout`` it cannot
know which rows the caller fitted on: the metrics are then those of a seeded random
``holdout_fraction`` of ``data`` (``"source": "split"``), held out only if the caller fitted on
``holdout_split``'s training rows, as ``model.json`` says. The parity rows come from that
split (or from all rows); the profile and the stored training sample use all rows of
``data``, the rows the model was trained on, unless ``reference`` names the rows to profile.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib.metadata
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from driftgate.converter.calibration import (
    CROSS_FIT_ROWS,
    cross_fitted_probabilities,
    fit_calibration,
)
from driftgate.converter.data import Table, load_table, save_table_npz, table_from_object
from driftgate.converter.export import (
    Layout,
    declare_output_shapes,
    export_onnx,
    make_layout,
    served_estimator,
)
from driftgate.converter.parity import ParityError, ParityReport, Tolerance, check_parity
from driftgate.converter.parity import float32_rows as _float32_rows
from driftgate.converter.support import (
    CLASSIFICATION,
    OUTLIER_DETECTION,
    UnsupportedEstimator,
    check_supported,
    has_probabilities,
)
from driftgate.converter.text_profile import with_text_features
from driftgate.core.errors import InvalidInput
from driftgate.core.profile import (
    FeatureProfile,
    ReferenceProfile,
    categorical_bins,
    numeric_bins,
)
from driftgate.core.repository import Repository, tensor_schema, validate_model_name

__all__ = ["ConversionResult", "ConverterSettings", "convert", "holdout_split", "load_estimator"]

SAMPLE_FILE = "training_sample.npz"
_LIBRARIES = ("scikit-learn", "skl2onnx", "onnx", "onnxruntime", "numpy")


@dataclass(frozen=True)
class ConverterSettings:
    """Settings of one conversion (the ``driftgate convert`` flags)."""

    bins: int = 10  # bins per numeric feature: quantiles (ties collapse), or one per value
    sample_rows: int = 10_000  # training rows stored in the version for retraining
    holdout_fraction: float = 0.2  # share of rows held out for parity and metrics
    parity_rows: int = 2_000  # at most this many rows go through the parity check
    max_categories: int = 100  # categories kept per string feature; the rest count as other
    opset: int = 17  # ONNX opset of the default domain
    seed: int = 0  # seed of the holdout split and the samples
    calibration_folds: int = 5  # cross-fitting folds of the confidence calibration; 0: holdout
    tolerance: Tolerance = field(default_factory=Tolerance)  # parity tolerance

    def __post_init__(self) -> None:
        if self.bins < 1 or self.sample_rows < 0 or self.parity_rows < 1:
            raise InvalidInput("bins and parity rows must be >= 1, sample rows >= 0")
        if not 0.0 <= self.holdout_fraction < 1.0:
            raise InvalidInput(f"holdout fraction must be in [0, 1), got {self.holdout_fraction}")


@dataclass(frozen=True)
class ConversionResult:
    """What ``convert`` wrote."""

    model: str
    version: int
    path: Path
    metadata: dict[str, Any]
    parity: ParityReport


def load_estimator(source: Any) -> Any:
    """The estimator itself, or one unpickled from a joblib file (trusted input only)."""
    if not isinstance(source, str | Path):
        return source
    import joblib

    try:
        return joblib.load(source)
    except (OSError, EOFError, ValueError, ImportError, AttributeError) as exc:
        raise InvalidInput(f"{source}: cannot load the estimator: {exc}") from exc
    except Exception as exc:  # unpickling can raise anything; report it as bad input
        raise InvalidInput(f"{source}: not a joblib estimator file: {exc}") from exc


def holdout_split(
    rows: int, fraction: float, seed: int
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """(train, holdout) row indices, each sorted; the holdout has ``fraction`` of the rows."""
    if not 0.0 <= fraction < 1.0:
        raise InvalidInput(f"holdout fraction must be in [0, 1), got {fraction}")
    order = np.random.default_rng(seed).permutation(rows)
    count = min(max(round(rows * fraction), 1), rows - 1) if fraction > 0 and rows > 1 else 0
    return np.sort(order[count:]), np.sort(order[:count])


def _load_data(data: Any, target: str | None, labels: Any) -> Table:
    if isinstance(data, Table):
        table = data
    elif isinstance(data, str | Path):
        table = load_table(data, target)
    else:
        table = table_from_object(data, labels)
        return table
    if labels is not None:
        table = Table(table.names, table.columns, np.asarray(labels), table.target_name)
    return table


def _session(onnx_bytes: bytes, estimator: Any) -> Any:
    import onnxruntime as ort

    try:
        return ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped errors
        raise UnsupportedEstimator(
            f"ONNX Runtime cannot load the converted {type(estimator).__name__}: {exc}"
        ) from exc


def _parity_rows(rows: int, holdout: npt.NDArray[np.intp], s: ConverterSettings) -> Any:
    rng = np.random.default_rng(s.seed + 1)
    pool = holdout if holdout.size else np.arange(rows)
    if pool.size <= s.parity_rows:
        return pool
    return np.sort(rng.choice(pool, s.parity_rows, replace=False))


#: the dtype a numeric value is served (and so profiled) in, per KServe v2 datatype
_SERVED_DTYPES = {"FP32": "float32"}


def _profile(
    table: Table, layout: Layout, predictions: Any, classes: list[Any] | None, s: ConverterSettings
) -> ReferenceProfile:
    """The reference profile, binned as served: numeric values cast to the input's dtype
    (float32 for FP32) before edges and counts, so the gateway's counts of the same rows are
    the training counts exactly (``driftgate.core.profile``)."""
    features = []
    for spec in layout.inputs:
        for column, name in enumerate(spec.features):
            values = table.column(name)
            bins = (
                numeric_bins(values, s.bins, _SERVED_DTYPES[spec.datatype])
                if spec.datatype in _SERVED_DTYPES
                else categorical_bins(values, s.max_categories)
            )
            features.append(FeatureProfile(name, spec.name, column, bins))
    if classes is not None:
        labels = [str(c) for c in classes]
        prediction: Any = categorical_bins([str(p) for p in predictions], categories=labels)
    else:
        # The regressor's output ("variable") is FP32.
        prediction = numeric_bins(np.asarray(predictions, dtype=np.float64), s.bins, "float32")
    return ReferenceProfile(table.rows, tuple(features), prediction)


_SOURCES = {
    "holdout": "rows given as the holdout, which the estimator was not fitted on",
    "split": "a seeded random split of the data (holdout_split); held out only if the "
    "estimator was fitted on the split's training rows",
}


def _holdout_metrics(
    y_true: Any, y_pred: Any, task: str, classes: list[Any] | None, source: str
) -> dict[str, Any]:
    from sklearn import metrics

    provenance = {"source": source, "source_description": _SOURCES[source]}
    if task == "classification":
        if classes is not None and isinstance(classes[0], str):
            y_true = np.asarray([str(v) for v in y_true], dtype=object)
        return provenance | {
            "rows": len(y_true),
            "accuracy": float(metrics.accuracy_score(y_true, y_pred)),
            "f1": float(metrics.f1_score(y_true, y_pred, average="macro")),
            "f1_average": "macro",
        }
    y_true = np.asarray(y_true, dtype=np.float64)
    return provenance | {
        "rows": len(y_true),
        "mae": float(metrics.mean_absolute_error(y_true, y_pred)),
        "rmse": float(math.sqrt(metrics.mean_squared_error(y_true, y_pred))),
        "r2": float(metrics.r2_score(y_true, y_pred)) if len(y_true) > 1 else None,
    }


def _json_scalar(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return repr(value)


def _library_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in _LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


@dataclass(frozen=True)
class _Artifacts:
    onnx_model: Any
    onnx_bytes: bytes
    layout: Layout
    task: str
    classes: list[Any] | None
    parity: ParityReport
    profile: ReferenceProfile
    metrics: dict[str, Any] | None
    sample: Table
    calibration: dict[str, Any] | None = None


def _metadata(model: str, estimator: Any, table: Table, a: _Artifacts) -> dict[str, Any]:
    opset = next(o.version for o in a.onnx_model.opset_import if o.domain in ("", "ai.onnx"))
    inputs = [
        {"name": s.name, "datatype": s.datatype, "shape": [len(s.features)],
         "features": list(s.features)}
        for s in a.layout.inputs
    ]  # fmt: skip
    cls = type(estimator)
    return {
        "name": model,
        "version": 0,  # stamped by Repository.write_version
        "sha256": hashlib.sha256(a.onnx_bytes).hexdigest(),
        "created_at": dt.datetime.now(dt.UTC).isoformat(),
        "task": a.task,
        "estimator": {
            "class": f"{cls.__module__}.{cls.__qualname__}",
            "params": {k: _json_scalar(v) for k, v in estimator.get_params(deep=False).items()},
        },
        "libraries": _library_versions(),
        "opset": opset,
        "inputs": inputs,
        "outputs": [tensor_schema(o) for o in a.onnx_model.graph.output],
        "class_labels": a.classes,
        "parity": a.parity.to_dict(),
        "training_data": {
            "fingerprint": table.fingerprint(),
            "rows": table.rows,
            "columns": list(table.names),
            "target": table.target_name,
            "sample": {"file": SAMPLE_FILE, "rows": a.sample.rows},
        },
        "holdout_metrics": a.metrics,
        # The label-free estimate's map of confidence to accuracy (converter.calibration).
        "calibration": a.calibration,
    }


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2, allow_nan=False) + "\n", encoding="utf-8")


def _metrics(
    estimator: Any, layout: Layout, table: Table, held: Table | None, split: Any, task: str,
    classes: list[Any] | None, predictions: Any,
) -> dict[str, Any] | None:  # fmt: skip
    if held is not None:
        if held.target is None or not held.rows:
            return None
        held = held.select(layout.features)
        predicted = estimator.predict(layout.sklearn_input(held))
        return _holdout_metrics(held.target, predicted, task, classes, "holdout")
    if table.target is None or not split.size:
        return None
    return _holdout_metrics(table.target[split], predictions[split], task, classes, "split")


def _classes(estimator: Any, task: str) -> list[Any] | None:
    """The labels a version predicts: a classifier's classes, an outlier detector's -1
    (outlier) and 1 (inlier), None for a regressor."""
    if task == OUTLIER_DETECTION:
        return [-1, 1]
    return [_json_scalar(c) for c in estimator.classes_] if task == CLASSIFICATION else None


def _build(
    estimator: Any,
    table: Table,
    held: Table | None,
    s: ConverterSettings,
    reference: Table | None = None,
) -> _Artifacts:
    task = check_supported(estimator)
    layout = make_layout(estimator, table)
    table = table.select(layout.features)
    served = served_estimator(estimator)
    onnx_model = export_onnx(served, layout, task, s.opset)
    onnx_bytes = onnx_model.SerializeToString()
    session = _session(onnx_bytes, estimator)
    _, split = holdout_split(table.rows, 0.0 if held else s.holdout_fraction, s.seed)
    parity_rows = table.take(_parity_rows(table.rows, split, s))
    report, answered = check_parity(
        session, estimator, served, layout, parity_rows, task, s.tolerance
    )
    if not report.passed:
        raise ParityError(report)
    if declare_output_shapes(onnx_model, answered):
        onnx_bytes = onnx_model.SerializeToString()
    predictions = estimator.predict(layout.sklearn_input(table))
    classes = _classes(estimator, task)
    metrics = _metrics(estimator, layout, table, held, split, task, classes, predictions)
    sample_rng = np.random.default_rng(s.seed + 2)
    sample_size = min(table.rows, s.sample_rows)
    sample = table.take(np.sort(sample_rng.choice(table.rows, sample_size, replace=False)))
    if reference is None:
        profile = _profile(table, layout, predictions, classes, s)
        profile = with_text_features(profile, estimator, table, layout, s.bins)
    else:
        # The rows the monitor compares traffic with: the caller's, not all of ``data``.
        rows = reference.select(layout.features)
        produced = estimator.predict(layout.sklearn_input(rows))
        profile = _profile(rows, layout, produced, classes, s)
        profile = with_text_features(profile, estimator, rows, layout, s.bins)
    # The label-free estimate needs a classifier's probabilities (not scores, not outliers).
    calibrated = task == CLASSIFICATION and has_probabilities(estimator)
    calibration = _calibration(estimator, layout, table, held, split, s) if calibrated else None
    return _Artifacts(
        onnx_model, onnx_bytes, layout, task, classes, report, profile, metrics, sample,
        calibration,
    )  # fmt: skip


def _calibration(
    estimator: Any,
    layout: Layout,
    table: Table,
    held: Table | None,
    split: Any,
    s: ConverterSettings,
) -> dict[str, Any] | None:
    """The calibration block (``converter.calibration``), as served (float32): fitted on the
    cross-fitted probabilities of the labelled rows (``table`` and ``held``), else on the rows
    of the holdout metrics."""
    rows = table if held is None else _concat_rows(table, held.select(layout.features))
    why: str | None = "no labelled rows"
    if rows.target is not None and rows.rows:
        if rows.rows > CROSS_FIT_ROWS:
            rng = np.random.default_rng(s.seed + 3)
            rows = rows.take(np.sort(rng.choice(rows.rows, CROSS_FIT_ROWS, replace=False)))
        inputs = layout.sklearn_input(_float32_rows(rows))
        probabilities, why = cross_fitted_probabilities(
            estimator, inputs, rows.target, s.calibration_folds, s.seed
        )
        if probabilities is not None:
            return fit_calibration(probabilities, rows.target, estimator.classes_, "cross-fit")
    rows, source = (
        (held.select(layout.features), "holdout") if held else (table.take(split), "split")
    )
    if rows.target is None or not rows.rows:
        return None
    probabilities = estimator.predict_proba(layout.sklearn_input(_float32_rows(rows)))
    block = fit_calibration(probabilities, rows.target, estimator.classes_, source)
    if block is not None:
        block["not_cross_fitted"] = why  # why the map was fitted on these rows alone
    return block


def _concat_rows(a: Table, b: Table) -> Table:
    columns = tuple(np.concatenate([x, y]) for x, y in zip(a.columns, b.columns, strict=True))
    target = None if a.target is None or b.target is None else np.concatenate([a.target, b.target])
    return Table(a.names, columns, target, a.target_name)


def convert(
    estimator: Any,
    data: Any,
    model: str,
    repository: Repository | str | Path,
    *,
    target: str | None = None,
    labels: Any = None,
    settings: ConverterSettings | None = None,
    holdout: Table | None = None,
    reference: Table | None = None,
) -> ConversionResult:
    """Convert ``estimator`` and write it as the next version of ``model``.

    ``estimator`` is a fitted scikit-learn object or a joblib file (trusted input: loading
    it runs code). ``data`` is a CSV (with a header), Parquet or ``.npz`` path, a 2-D array,
    a DataFrame or a ``Table``; ``target`` names its label column, or pass ``labels``.
    ``holdout``: labelled rows the estimator was not fitted on, for the holdout metrics
    (otherwise a seeded split of ``data``; see the module docstring).
    ``reference``: the rows to profile as ``reference.json`` instead of all rows of ``data``
    (a retrain gives the production rows the candidate was trained on); ``model.json``
    ``training_data`` says which (``reference_source``: ``"data"`` or ``"reference"``).
    Raises UnsupportedEstimator, ParityError or InvalidInput, writing nothing.

    Usage: ``convert(clf, "train.csv", "churn", "models", target="churned")``.
    """
    validate_model_name(model)
    settings = settings or ConverterSettings()
    fitted = load_estimator(estimator)
    check_supported(fitted)
    table = _load_data(data, target, labels)
    artifacts = _build(fitted, table, holdout, settings, reference)
    table = table.select(artifacts.layout.features)
    metadata = _metadata(model, fitted, table, artifacts)
    metadata["training_data"] |= {
        "reference_source": "data" if reference is None else "reference",
        "reference_rows": artifacts.profile.rows,
    }
    repo = repository if isinstance(repository, Repository) else Repository(Path(repository))

    def populate(directory: Path) -> None:
        import joblib

        (directory / "model.onnx").write_bytes(artifacts.onnx_bytes)
        _write_json(directory / "reference.json", artifacts.profile.to_dict())
        save_table_npz(artifacts.sample, directory / SAMPLE_FILE)
        joblib.dump(fitted, directory / "estimator.joblib")
        _write_json(directory / "model.json", metadata)

    version = repo.write_version(model, populate)
    path = repo.version_dir(model, version)
    metadata = repo.metadata(model, version)
    return ConversionResult(model, version, path, metadata, artifacts.parity)
