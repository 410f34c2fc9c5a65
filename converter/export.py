"""scikit-learn -> ONNX with skl2onnx: the input layout and the graph (``converter.support``
says what is supported).

Input layout. A purely numeric model gets one input ``input`` (FP32, ``[n_features]``). A
model with string columns gets grouped inputs: ``numeric`` (FP32, the numeric columns in the
estimator's column order) and ``categorical`` (BYTES, the string columns in that order); it
must start with a ColumnTransformer, whose column selections (names, indices, masks) are
rewritten to positions in the grouped layout before conversion. Grouping keeps a request to
two tensors however many columns there are, and parity is the same as with one input per
column. ``features`` in ``model.json`` says which column each input carries.

Outputs (named by ``converter.support.output_names``). Classifiers: ``label`` (``[]`` per row)
and ``probabilities`` (FP32, ``[n_classes]``), plain tensors without ZipMap, or ``scores``
(the decision function) for a classifier without probabilities. Regressors: ``variable``
(FP32, ``[1]`` per row). Outlier detectors: ``label`` (1 inlier, -1 outlier) and ``scores``.

Conversion works on copies, never on the caller's estimator: a subclass of a registered class
is converted as that class (the parity check then catches a subclass whose predictions
differ), and trees are converted from ``served_estimator``'s copy, whose split
thresholds are float32 values (see there), the values the ONNX graph holds.
"""

from __future__ import annotations

import copy
import importlib
import threading
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from driftgate.converter.data import Table
from driftgate.converter.support import (
    CLASSIFICATION,
    UnsupportedEstimator,
    check_supported,
    output_names,
    registered_base,
)
from driftgate.converter.trees import learned_missing_directions, served_estimator
from driftgate.core.errors import InvalidInput

__all__ = [
    "InputSpec",
    "Layout",
    "UnsupportedEstimator",
    "check_supported",  # re-exported: it lived here before converter.support
    "declare_output_shapes",
    "export_onnx",
    "make_layout",
    "served_estimator",
]

# skl2onnx keeps global registries and warnings.catch_warnings is process-wide.
_CONVERT_LOCK = threading.Lock()

# Third-party deprecations inside skl2onnx that driftgate cannot fix; ignored only here.
_IGNORED_WARNINGS = (
    (DeprecationWarning, "Field onnx.AttributeProto.ints: Expected an int, got a boolean"),
    (FutureWarning, "Attribute `prob[AB]_` was deprecated"),
)


@dataclass(frozen=True)
class InputSpec:
    """One ONNX input: name, KServe v2 datatype, and the feature each column carries."""

    name: str
    datatype: str
    features: tuple[str, ...]


@dataclass(frozen=True)
class Layout:
    """How the estimator's columns map onto ONNX inputs."""

    inputs: tuple[InputSpec, ...]
    features: tuple[str, ...]  # the estimator's own column order
    uses_names: bool  # fitted on a DataFrame: scikit-learn needs one to predict
    documents: bool = False  # a leading text vectorizer reads its one column as a 1-D sequence

    def flat_positions(self) -> dict[str, int]:
        ordered = [f for spec in self.inputs for f in spec.features]
        return {name: i for i, name in enumerate(ordered)}

    def feeds(self, table: Table) -> dict[str, npt.NDArray[Any]]:
        """ONNX Runtime feeds for the rows of ``table``."""
        feeds: dict[str, npt.NDArray[Any]] = {}
        for spec in self.inputs:
            columns = [table.column(name) for name in spec.features]
            dtype = np.float32 if spec.datatype == "FP32" else object
            feeds[spec.name] = np.stack(columns, axis=1).astype(dtype)
        return feeds

    def sklearn_input(self, table: Table) -> Any:
        """The rows of ``table`` as scikit-learn expects them (DataFrame or 2-D array)."""
        selected = table.select(self.features)
        if self.documents:
            return np.asarray(selected.columns[0], dtype=object)
        if self.uses_names:
            # pandas is optional: only estimators fitted on a DataFrame need it.
            pd: Any = importlib.import_module("pandas")
            return pd.DataFrame(dict(zip(self.features, selected.columns, strict=True)))
        dtype = np.float64 if all(s.datatype == "FP32" for s in self.inputs) else object
        return np.stack(selected.columns, axis=1).astype(dtype)


def make_layout(estimator: Any, table: Table) -> Layout:
    """The input layout for ``estimator`` on data shaped like ``table``."""
    names = getattr(estimator, "feature_names_in_", None)
    uses_names = names is not None
    features = [str(n) for n in names] if names is not None else list(table.names)
    # A CatBoost model loaded from a joblib file reports 0 (its model blob keeps no count).
    expected = getattr(estimator, "n_features_in_", None) or len(features)
    if len(features) != expected:
        raise InvalidInput(f"the estimator expects {expected} features, the data has {features}")
    table = table.select(features)
    numeric = tuple(f for f in features if table.is_numeric(f))
    strings = tuple(f for f in features if not table.is_numeric(f))
    if not strings:
        return Layout((InputSpec("input", "FP32", numeric),), tuple(features), uses_names)
    groups = [InputSpec("numeric", "FP32", numeric), InputSpec("categorical", "BYTES", strings)]
    documents = len(features) == 1 and _reads_documents(estimator)
    return Layout(tuple(g for g in groups if g.features), tuple(features), uses_names, documents)


def _reads_documents(estimator: Any) -> bool:
    """Whether ``estimator`` starts with a text vectorizer (fitted on a 1-D sequence of
    documents, as CountVectorizer and TfidfVectorizer are)."""
    steps = getattr(estimator, "steps", None)
    first = steps[0][1] if steps else estimator
    return hasattr(first, "vocabulary_") and hasattr(first, "build_analyzer")


def _column_positions(spec: Any, names: Sequence[str]) -> list[int]:
    if isinstance(spec, str):
        return [names.index(spec)]
    if isinstance(spec, int | np.integer):
        return [int(spec)]
    if isinstance(spec, slice):
        return list(range(len(names)))[spec]
    array = np.asarray(spec)
    if array.dtype == bool:
        return [int(i) for i in np.flatnonzero(array)]
    if array.dtype.kind in "UO":
        return [names.index(str(n)) for n in array]
    return [int(i) for i in array]


def _as_supported(part: Any) -> Any:
    base = registered_base(type(part))
    if base is None or base is type(part):
        return part
    swapped = copy.copy(part)
    swapped.__class__ = base
    return swapped


Remap = Callable[[Any], list[int]]


def _prepare(part: Any, remap: Remap | None) -> Any:
    """A copy ready for skl2onnx; ``remap`` rewrites the columns of a leading ColumnTransformer."""
    if isinstance(part, str) or part is None:
        return part
    if hasattr(part, "steps"):
        prepared = copy.copy(part)
        prepared.steps = [
            (name, _prepare(step, remap if i == 0 else None))
            for i, (name, step) in enumerate(part.steps)
        ]
        return _as_supported(prepared)
    if hasattr(part, "transformers_"):
        prepared = copy.copy(part)
        prepared.transformers_ = [
            (name, _prepare(t, None), cols if remap is None else remap(cols))
            for name, t, cols in part.transformers_
        ]
        return _as_supported(prepared)
    if remap is not None and not _all_numeric_remap(remap) and not _reads_documents(part):
        raise UnsupportedEstimator(
            f"string columns need a ColumnTransformer as the first step, not {type(part).__name__}"
        )
    if hasattr(part, "calibrated_classifiers_"):
        prepared = copy.copy(part)
        prepared.calibrated_classifiers_ = [copy.copy(c) for c in part.calibrated_classifiers_]
        for calibrated in prepared.calibrated_classifiers_:
            calibrated.estimator = _prepare(calibrated.estimator, None)
        return _as_supported(prepared)
    return _as_supported(part)


def _all_numeric_remap(remap: Remap) -> bool:
    return bool(getattr(remap, "numeric_only", False))


class _ColumnRemap:
    """Rewrites a ColumnTransformer column selection to positions in the ONNX layout."""

    def __init__(self, layout: Layout) -> None:
        self.features = list(layout.features)
        self.positions = layout.flat_positions()
        self.numeric_only = len(layout.inputs) == 1 and layout.inputs[0].datatype == "FP32"

    def __call__(self, spec: Any) -> list[int]:
        original = _column_positions(spec, self.features)
        return [self.positions[self.features[i]] for i in original]


def _rename_outputs(model: Any, names: Sequence[str]) -> None:
    renames = {out.name: new for out, new in zip(model.graph.output, names, strict=False)}
    # An intermediate value may already carry a wanted name (a KNN regressor's "variable"):
    # it moves aside first, or the graph would define the name twice.
    taken = {v for node in model.graph.node for v in (*node.input, *node.output)}
    for wanted in set(renames.values()) & (taken - set(renames)):
        renames[wanted] = f"{wanted}_intermediate"
    for node in model.graph.node:
        node.output[:] = [renames.get(o, o) for o in node.output]
        node.input[:] = [renames.get(i, i) for i in node.input]
    for out in model.graph.output:
        out.name = renames.get(out.name, out.name)


def _zipmap_options(estimator: Any) -> dict[str, Any] | None:
    """``{"zipmap": False}`` (a classifier's probabilities as a plain tensor) unless the final
    predictor's converter declares options without ZipMap (LinearSVC, RidgeClassifier...)."""
    from skl2onnx.common._registration import get_converter

    final = estimator
    while hasattr(final, "steps") or hasattr(final, "best_estimator_"):
        final = final.steps[-1][1] if hasattr(final, "steps") else final.best_estimator_
    base = registered_base(type(final))
    allowed = None if base is None else get_converter(_registry_alias(base)).get_allowed_options()
    return {"zipmap": False} if allowed is None or "zipmap" in allowed else None


def _registry_alias(cls: type) -> str:
    from skl2onnx._supported_operators import sklearn_operator_name_map

    alias: str = sklearn_operator_name_map[cls]
    return alias


def _to_onnx(prepared: Any, initial_types: Any, task: str, opset: int) -> Any:
    from skl2onnx import to_onnx

    options = _zipmap_options(prepared) if task == CLASSIFICATION else None
    return to_onnx(
        prepared,
        initial_types=initial_types,
        options=options,
        target_opset={"": opset, "ai.onnx.ml": 3},
    )


def export_onnx(estimator: Any, layout: Layout, task: str, opset: int) -> Any:
    """The ONNX ModelProto for ``estimator``; UnsupportedEstimator with skl2onnx's reason if
    it refuses. Outputs are renamed to ``support.output_names``.

    Pass ``served_estimator(fitted)``: the graph then holds exactly that copy's thresholds.
    """
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    tensor_types = {"FP32": FloatTensorType, "BYTES": StringTensorType}
    prepared = _prepare(estimator, _ColumnRemap(layout))
    initial_types = [
        (s.name, tensor_types[s.datatype]([None, len(s.features)])) for s in layout.inputs
    ]
    with _CONVERT_LOCK, warnings.catch_warnings():
        for category, message in _IGNORED_WARNINGS:
            warnings.filterwarnings("ignore", message=message, category=category)
        try:
            model = _to_onnx(prepared, initial_types, task, opset)
        except Exception as exc:  # skl2onnx raises many kinds; each one means "cannot convert"
            name = type(estimator).__name__
            raise UnsupportedEstimator(
                f"skl2onnx cannot convert {name}: {type(exc).__name__}: {exc}. Replace the "
                "part it names with a supported one (driftgate.converter.supported_names()), "
                "or register a converter with skl2onnx.update_registered_converter"
            ) from exc
    _rename_outputs(model, output_names(estimator, task))
    _portable_locale(model)
    learned_missing_directions(model, estimator)
    return model


def _portable_locale(model: Any) -> None:
    """Lowercase text in the C.UTF-8 locale: skl2onnx leaves a vectorizer's StringNormalizer
    to ONNX Runtime's default, en_US.UTF-8, which the session must construct and which
    minimal images (Debian slim) lack; C.UTF-8 ships with the C library."""
    from onnx import helper

    for node in model.graph.node:
        if node.op_type == "StringNormalizer":
            kept = [a for a in node.attribute if a.name != "locale"]
            del node.attribute[:]
            node.attribute.extend([*kept, helper.make_attribute("locale", "C.UTF-8")])


def declare_output_shapes(model: Any, outputs: dict[str, npt.NDArray[Any]]) -> bool:
    """Make the graph's declared output shapes say what ONNX Runtime returned (skl2onnx
    declares ``[N, 2]`` for a binary linear classifier's scores, which are ``[N, 1]``), so
    that ModelMetadata tells clients the truth. True if a declaration changed."""
    changed = False
    for out in model.graph.output:
        actual = outputs.get(out.name)
        dims = out.type.tensor_type.shape.dim
        if actual is None or actual.ndim != len(dims):
            continue
        for dim, size in list(zip(dims, actual.shape, strict=True))[1:]:
            if dim.HasField("dim_value") and dim.dim_value != size:
                dim.dim_value = int(size)
                changed = True
    return changed
