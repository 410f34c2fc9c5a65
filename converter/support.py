"""What the converter accepts: every estimator skl2onnx has a converter registered for.

Breadth comes from skl2onnx's own registry, not from a list of ours: a class is supported
when it, or a base class of it, is registered with skl2onnx, the built-in scikit-learn
converters and anything registered later with ``skl2onnx.update_registered_converter`` (how
onnxmltools plugs in XGBoost, LightGBM and CatBoost) alike. Every part of the estimator is
checked, at any depth: Pipeline steps, ColumnTransformer and FeatureUnion transformers, and
the estimators inside meta-estimators (Voting, Stacking, Bagging, AdaBoost, one-vs-rest,
calibration, feature selection by a model, searches).

The task is read from the estimator (scikit-learn's tags through ``is_classifier``,
``is_regressor``, ``is_outlier_detector``), never from its class name:

- ``classification``: outputs ``label`` and ``probabilities`` (``predict_proba``), or, for a
  classifier without probabilities (LinearSVC, RidgeClassifier, a hinge-loss SGDClassifier),
  ``label`` and ``scores`` (``decision_function``);
- ``regression``: output ``variable``;
- ``outlier_detection`` (IsolationForest, OneClassSVM, LocalOutlierFactor(novelty=True)...):
  outputs ``label`` (1 inlier, -1 outlier, as scikit-learn) and ``scores``
  (``decision_function``: negative for outliers).

Refused, with the reason: transformer-only pipelines and clusterers (nothing to predict, so no
prediction to monitor, no label to join, no holdout metric to retrain against: end the
pipeline with an estimator, or serve the transform inside one), and outlier detectors that
cannot score new rows (``LocalOutlierFactor`` without ``novelty=True``).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from typing import Any

import numpy as np

from driftgate.converter.boosters import register_for
from driftgate.core.errors import InvalidInput

__all__ = [
    "CLASSIFICATION",
    "OUTLIER_DETECTION",
    "REGRESSION",
    "UnsupportedEstimator",
    "check_supported",
    "components",
    "has_probabilities",
    "output_names",
    "registered_base",
    "supported_names",
]

CLASSIFICATION = "classification"
REGRESSION = "regression"
OUTLIER_DETECTION = "outlier_detection"

# Shown when nothing registered resembles a refused class's name.
_DEFAULT_ALTERNATIVES = {
    CLASSIFICATION: "HistGradientBoostingClassifier or LogisticRegression",
    REGRESSION: "HistGradientBoostingRegressor or Ridge",
    OUTLIER_DETECTION: "IsolationForest",
    None: "a Pipeline of registered transformers ending in a registered estimator",
}
_HOOK = (
    "or register a converter for it with skl2onnx.update_registered_converter({name}, "
    "alias, shape_calculator, converter) before converting (how onnxmltools adds XGBoost "
    "and LightGBM)"
)


class UnsupportedEstimator(InvalidInput):
    """The estimator (or a part of it) cannot be converted or served; the message says why
    and what to use instead."""


def _registry() -> dict[type, str]:
    """skl2onnx's map of estimator classes to converter aliases, the one that
    ``update_registered_converter`` writes to (read at each call: registrations made after
    import count)."""
    from skl2onnx._supported_operators import sklearn_operator_name_map

    registry: dict[type, str] = sklearn_operator_name_map
    return registry


def supported_names() -> list[str]:
    """Class names of every estimator and transformer with a registered converter."""
    return sorted({cls.__name__ for cls in _registry()} - {"_ConstantPredictor"})


def registered_base(cls: type) -> type | None:
    """``cls`` or its nearest base class with a registered converter (None: neither)."""
    registry = _registry()
    return next((base for base in cls.__mro__ if base in registry), None)


def _children(estimator: Any) -> Iterator[tuple[str, Any]]:
    """(name, part) of the fitted parts one level down."""
    if hasattr(estimator, "steps"):
        yield from estimator.steps
    elif hasattr(estimator, "transformers_"):
        yield from ((name, t) for name, t, _ in estimator.transformers_)
    elif hasattr(estimator, "transformer_list"):
        yield from estimator.transformer_list
    if hasattr(estimator, "calibrated_classifiers_"):
        for i, calibrated in enumerate(estimator.calibrated_classifiers_):
            yield f"calibrated_classifiers_[{i}]", calibrated.estimator
    for attribute in ("estimator_", "best_estimator_", "final_estimator_"):
        part = getattr(estimator, attribute, None)
        if part is not None:
            yield attribute, part
    fitted = getattr(estimator, "estimators_", None)
    if fitted is not None:
        for i, part in enumerate(np.asarray(fitted, dtype=object).ravel()):
            yield f"estimators_[{i}]", part


def components(estimator: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Every part of ``estimator`` with its path ("Pipeline > 'clf'"), itself first."""
    here = path or type(estimator).__name__
    yield here, estimator
    for name, child in _children(estimator):
        if child is not None and not isinstance(child, str):
            yield from components(child, f"{here} > {name!r}")


def _task(estimator: Any) -> str | None:
    from sklearn.base import is_classifier, is_outlier_detector, is_regressor

    if is_outlier_detector(estimator):
        return OUTLIER_DETECTION
    if is_classifier(estimator):
        return CLASSIFICATION
    if is_regressor(estimator):
        return REGRESSION
    return None


def _same_task(task: str | None) -> list[str]:
    """Registered class names of ``task``'s kind (by scikit-learn's mixins)."""
    from sklearn.base import ClassifierMixin, OutlierMixin, RegressorMixin

    mixin = {CLASSIFICATION: ClassifierMixin, REGRESSION: RegressorMixin}.get(
        task or "", OutlierMixin if task == OUTLIER_DETECTION else None
    )
    names = {c.__name__ for c in _registry() if mixin is None or issubclass(c, mixin)}
    return sorted(names - {"_ConstantPredictor"})


def _alternative(cls: type, task: str | None) -> str:
    close = difflib.get_close_matches(cls.__name__, _same_task(task), n=2, cutoff=0.6)
    return " or ".join(close) if close else _DEFAULT_ALTERNATIVES[task]


def _refuse_unregistered(path: str, part: Any, task: str | None) -> UnsupportedEstimator:
    cls = type(part)
    where = "" if path == cls.__name__ else f" (at {path})"
    return UnsupportedEstimator(
        f"unsupported estimator {cls.__name__}{where}: skl2onnx has no converter registered "
        f"for {cls.__module__}.{cls.__qualname__} or a base class of it. Use "
        f"{_alternative(cls, task)} instead, " + _HOOK.format(name=cls.__name__)
    )


def check_supported(estimator: Any) -> str:
    """The task of ``estimator`` (``CLASSIFICATION``, ``REGRESSION``, ``OUTLIER_DETECTION``),
    or UnsupportedEstimator naming the part that cannot be converted or served and why."""
    register_for(estimator)  # XGBoost, LightGBM, CatBoost: their converters, when present
    task = _task(estimator)
    for path, part in components(estimator):
        if registered_base(type(part)) is None:
            raise _refuse_unregistered(path, part, task)
    name = type(estimator).__name__
    if task is None:
        from sklearn.utils import get_tags

        kind = get_tags(estimator).estimator_type or "transformer-only"
        raise UnsupportedEstimator(
            f"{name} is a {kind} estimator: driftgate serves classifiers, regressors and "
            "outlier detectors, whose predictions it monitors and retrains against; end the "
            "Pipeline with one of those (the transformers then run inside the served graph)"
        )
    if not hasattr(estimator, "predict"):
        raise UnsupportedEstimator(
            f"{name} cannot predict new rows: an outlier detector must score unseen data "
            "(use LocalOutlierFactor(novelty=True), IsolationForest or OneClassSVM)"
        )
    return task


def has_probabilities(estimator: Any) -> bool:
    """Whether a classifier exports probabilities (else its decision scores)."""
    return hasattr(estimator, "predict_proba")


def output_names(estimator: Any, task: str) -> list[str]:
    """The served output names, in the order of skl2onnx's outputs."""
    if task == REGRESSION:
        return ["variable"]
    if task == CLASSIFICATION and has_probabilities(estimator):
        return ["label", "probabilities"]
    return ["label", "scores"]
