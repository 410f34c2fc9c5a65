"""XGBoost, LightGBM and CatBoost estimators inside skl2onnx: their converters, registered on
demand (``register_for``), so that ``convert`` takes them standalone or as the last step of a
scikit-learn Pipeline like any registered estimator.

The packages are optional extras (``pip install 'driftgate[xgboost]'``, ``[lightgbm]``,
``[catboost]``): nothing here is imported unless the estimator holds such a model, and this
module itself imports none of them at import time.

- XGBoost and LightGBM: onnxmltools' converters, registered with skl2onnx's
  ``update_registered_converter`` with skl2onnx's linear shape calculators (the registration
  skl2onnx documents for "XGBoost/LightGBM in a pipeline"); classifiers accept the ``zipmap``
  and ``nocl`` options the converter passes.
- CatBoost: onnxmltools has no converter of its own for it (its ``convert_catboost`` calls
  CatBoost's exporter); CatBoost writes its own ONNX (``save_model(format="onnx")``, a single
  TreeEnsemble node with no initializer). ``_convert_catboost`` takes that node into the
  skl2onnx graph being built, wired to the operator's input and outputs, so a CatBoost model
  converts as the last step of a Pipeline too. Its classifier gets a parser of its own
  (``CatBoostClassifier`` is not a scikit-learn ``ClassifierMixin``, which skl2onnx's default
  parser looks for) declaring label and probabilities, without ZipMap (``convert`` never asks
  for one; asking is refused).

Thresholds. XGBoost and CatBoost cast inputs to float32 and split on float32 thresholds: the
ONNX graph compares the same values and agrees exactly. LightGBM compares float64 inputs with
float64 thresholds, which a graph holding float32 thresholds rounds to nearest, so a float32
request value just above a threshold may round onto it and take the other branch (measured:
a third of the rows of a column whose values differ by less than a float32 step). The
LightGBM converter therefore converts a copy whose thresholds are rounded *down* to float32:
for every float32 ``x``, ``x <= t`` exactly when ``x <= round_down(t)``, so the graph
predicts every served row as the fitted model does, and the parity check compares the graph
with the fitted model itself. NaN takes each split's default direction on both sides.
"""

from __future__ import annotations

import copy
import re
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["LIBRARIES", "libraries_of", "register_for", "round_down_to_float32"]

#: the optional libraries whose estimators this module registers, by top-level module name
LIBRARIES = ("xgboost", "lightgbm", "catboost")

_CLASSIFIER_OPTIONS: dict[str, Any] = {"zipmap": [True, False, "columns"], "nocl": [True, False]}
_LOCK = threading.Lock()
_REGISTERED: set[str] = set()


def round_down_to_float32(values: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """The largest float32 value <= each value, as float64: for every float32 ``x``,
    ``x <= t`` exactly when ``x <= round_down(t)``."""
    exact = np.asarray(values, dtype=np.float64)
    single = exact.astype(np.float32)
    lower = np.nextafter(single, np.float32(-np.inf))
    return np.where(single.astype(np.float64) > exact, lower, single).astype(np.float64)


def _parts(estimator: Any) -> list[Any]:
    """``estimator`` and every estimator among its parameters, at any depth (Pipeline steps,
    ColumnTransformer transformers, a meta-estimator's ``estimator``)."""
    get_params = getattr(estimator, "get_params", None)
    if get_params is None:
        return [estimator]
    try:
        nested = list(get_params(deep=True).values())
    except TypeError:  # a get_params without ``deep``
        nested = []
    return [estimator, *(p for p in nested if hasattr(p, "fit"))]


def libraries_of(estimator: Any) -> set[str]:
    """Which of ``LIBRARIES`` the parts of ``estimator`` come from (by their module)."""
    roots = {type(part).__module__.partition(".")[0] for part in _parts(estimator)}
    return roots & set(LIBRARIES)


def register_for(estimator: Any) -> None:
    """Register with skl2onnx the converters of the boosting libraries ``estimator`` uses
    (once per process); a no-op for anything else, which then needs none of them."""
    for library in sorted(libraries_of(estimator)):
        with _LOCK:
            if library not in _REGISTERED:
                _register(library)
                _REGISTERED.add(library)


def _register(library: str) -> None:
    try:
        _REGISTRARS[library]()
    except ImportError as exc:  # onnxmltools (or the library's ONNX part) is not installed
        from driftgate.converter.support import UnsupportedEstimator

        raise UnsupportedEstimator(
            f"converting a {library} model needs {exc.name or 'a package'} ({exc}): "
            f"pip install 'driftgate[{library}]'"
        ) from exc


def _register_xgboost() -> None:
    from onnxmltools.convert.xgboost.operator_converters.XGBoost import convert_xgboost
    from skl2onnx import update_registered_converter
    from skl2onnx.common.shape_calculator import (
        calculate_linear_classifier_output_shapes,
        calculate_linear_regressor_output_shapes,
    )
    from xgboost import XGBClassifier, XGBRegressor

    update_registered_converter(
        XGBClassifier, "XGBoostXGBClassifier", calculate_linear_classifier_output_shapes,
        convert_xgboost, options=_CLASSIFIER_OPTIONS,
    )  # fmt: skip
    update_registered_converter(
        XGBRegressor, "XGBoostXGBRegressor", calculate_linear_regressor_output_shapes,
        convert_xgboost,
    )  # fmt: skip


# A LightGBM model file holds each tree's thresholds on one line: "threshold=t1 t2 ...".
_THRESHOLDS = re.compile(r"^threshold=(.*)$", re.MULTILINE)
_TREE_SIZES = re.compile(r"^tree_sizes=.*\n", re.MULTILINE)


def _rounded_model_string(model: str) -> str:
    """LightGBM's model text with every split threshold rounded down to float32.

    Categorical splits keep an integer index into ``cat_threshold`` in the same line; an
    integer below 2**24 is a float32 value, which rounding keeps."""

    def rounded(match: re.Match[str]) -> str:
        values = round_down_to_float32([float(v) for v in match.group(1).split()])
        return "threshold=" + " ".join(repr(float(v)) for v in values)

    # The header's "tree_sizes" gives each tree's length in bytes, which rounding changes;
    # without it LightGBM finds the trees by their "Tree=" lines instead.
    return _TREE_SIZES.sub("", _THRESHOLDS.sub(rounded, model))


def _float32_thresholds(model: Any) -> Any:
    """A shallow copy of a fitted LGBMClassifier/LGBMRegressor whose booster splits on the
    thresholds rounded down to float32 (see the module docstring)."""
    import lightgbm

    text = model.booster_.model_to_string()
    rounded = copy.copy(model)
    rounded._Booster = lightgbm.Booster(model_str=_rounded_model_string(text))
    return rounded


def _convert_lightgbm(scope: Any, operator: Any, container: Any) -> None:
    from onnxmltools.convert.lightgbm.operator_converters.LightGbm import convert_lightgbm

    # The operator is this conversion's own; the caller's estimator is left as it is.
    operator.raw_operator = _float32_thresholds(operator.raw_operator)
    convert_lightgbm(scope, operator, container)


def _register_lightgbm() -> None:
    from lightgbm import LGBMClassifier, LGBMRegressor
    from skl2onnx import update_registered_converter
    from skl2onnx.common.shape_calculator import (
        calculate_linear_classifier_output_shapes,
        calculate_linear_regressor_output_shapes,
    )

    update_registered_converter(
        LGBMClassifier, "LightGbmLGBMClassifier", calculate_linear_classifier_output_shapes,
        _convert_lightgbm, options=_CLASSIFIER_OPTIONS,
    )  # fmt: skip
    update_registered_converter(
        LGBMRegressor, "LightGbmLGBMRegressor", calculate_linear_regressor_output_shapes,
        _convert_lightgbm, options={"split": None},
    )  # fmt: skip


def _catboost_node(model: Any) -> tuple[Any, dict[str, int]]:
    """The tree-ensemble node of CatBoost's own ONNX export, and the export's opsets."""
    from catboost.utils import convert_to_onnx_object

    exported = convert_to_onnx_object(model)
    opsets = {o.domain: o.version for o in exported.opset_import}
    if exported.graph.initializer or exported.graph.sparse_initializer:
        raise NotImplementedError("CatBoost's ONNX export holds initializers; expected none")
    node = exported.graph.node[0]
    if not node.op_type.startswith("TreeEnsemble"):
        raise NotImplementedError(f"CatBoost's ONNX export starts with {node.op_type}")
    return node, opsets


def _convert_catboost(scope: Any, operator: Any, container: Any) -> None:
    """CatBoost's exported node, wired to the operator: label and probabilities for a
    classifier (its ZipMap left out), the prediction for a regressor."""
    from onnx.helper import get_attribute_value

    node, opsets = _catboost_node(operator.raw_operator)
    wanted = 2 if node.op_type == "TreeEnsembleClassifier" else 1
    container.add_node(
        node.op_type,
        [operator.inputs[0].full_name],
        [output.full_name for output in operator.outputs[:wanted]],
        op_domain=node.domain,
        op_version=opsets.get(node.domain),
        name=scope.get_unique_operator_name("CatBoost"),
        **{attribute.name: get_attribute_value(attribute) for attribute in node.attribute},
    )


def _parse_catboost_classifier(
    scope: Any, model: Any, inputs: list[Any], custom_parsers: Any = None
) -> list[Any]:
    """A CatBoostClassifier (not a ClassifierMixin, so skl2onnx would parse it as a
    regressor) declares the classifier's two outputs; the shape calculator types them."""
    from skl2onnx.common.data_types import FloatTensorType, Int64TensorType

    operator = scope.declare_local_operator("CatBoostCatBoostClassifier", model)
    operator.inputs = inputs
    operator.outputs.append(scope.declare_local_variable("label", Int64TensorType()))
    operator.outputs.append(scope.declare_local_variable("probabilities", FloatTensorType()))
    outputs: list[Any] = operator.outputs
    return outputs


def _register_catboost() -> None:
    from catboost import CatBoostClassifier, CatBoostRegressor
    from skl2onnx import update_registered_converter
    from skl2onnx.common.shape_calculator import (
        calculate_linear_classifier_output_shapes,
        calculate_linear_regressor_output_shapes,
    )

    update_registered_converter(
        CatBoostClassifier, "CatBoostCatBoostClassifier",
        calculate_linear_classifier_output_shapes, _convert_catboost,
        parser=_parse_catboost_classifier, options={"zipmap": [False], "nocl": [False]},
    )  # fmt: skip
    update_registered_converter(
        CatBoostRegressor, "CatBoostCatBoostRegressor",
        calculate_linear_regressor_output_shapes, _convert_catboost,
    )  # fmt: skip


_REGISTRARS: dict[str, Callable[[], None]] = {
    "xgboost": _register_xgboost,
    "lightgbm": _register_lightgbm,
    "catboost": _register_catboost,
}
