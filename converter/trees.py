"""Trees as the graph holds them: float32 split thresholds and learned NaN directions.

``served_estimator`` rounds every split threshold down to float32 on a copy (why: see there);
``learned_missing_directions`` writes scikit-learn's learned side for missing values into
the graph. Both keep the served graph answering every float32 row, NaN included, as the
fitted trees do.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import numpy.typing as npt

from driftgate.converter.support import components

__all__ = ["learned_missing_directions", "served_estimator"]


def _round_down_to_float32(threshold: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """The largest float32 value <= each threshold, as float64: for every float32 x,
    ``x <= t`` exactly when ``x <= round_down(t)``."""
    single = threshold.astype(np.float32)
    lower = np.nextafter(single, np.float32(-np.inf))
    return np.where(single.astype(np.float64) > threshold, lower, single).astype(np.float64)


def _has_trees(part: Any) -> bool:
    return hasattr(part, "_predictors") or getattr(part, "tree_", None) is not None


def _round_thresholds(part: Any) -> None:
    """Round the split thresholds of one tree or one HistGradientBoosting model (in place:
    ``part`` is a private copy). Ensembles need nothing more: ``components`` reaches every
    tree of a forest, of gradient boosting, bagging, AdaBoost or an isolation forest."""
    for predictors in getattr(part, "_predictors", None) or []:  # HistGradientBoosting
        for predictor in predictors:
            nodes = predictor.nodes
            down = _round_down_to_float32(nodes["num_threshold"])
            nodes["num_threshold"] = np.where(nodes["is_leaf"] == 1, nodes["num_threshold"], down)
    inner = getattr(part, "tree_", None)
    if inner is not None:
        # Leaves carry -2 (TREE_UNDEFINED), a float32 value: rounding keeps it.
        inner.threshold[:] = _round_down_to_float32(inner.threshold)


def served_estimator(estimator: Any) -> Any:
    """A deep copy of ``estimator`` whose trees split on float32 thresholds, at any depth (the
    estimator itself when it holds no tree: nothing to round, nothing copied).

    The ONNX graph holds float32 thresholds and compares them with the float32 values a
    request carries, whereas scikit-learn holds float64 thresholds: a threshold rounded to
    the nearest float32 can land on a served value and send it down the other branch (a
    forest fitted on unrounded data then fails the parity check). Every threshold is rounded
    *down* to float32 instead, which keeps ``x <= t`` unchanged for every float32 ``x``, so
    the copy predicts every float32 input exactly as the fitted estimator does: forests,
    extra trees and gradient boosting cast their inputs to float32 before any split, so the
    copy predicts *every* input as the original; HistGradientBoosting compares float64
    inputs, so the copy equals the original on float32 inputs (all the gateway serves).

    Why not refit on float32-cast values instead: that is another model (other splits,
    other bins) than the one the user fitted and validated, and ``convert`` never refits a
    user's estimator; rounding changes no prediction the model can be asked for. The parity
    check compares the ONNX graph with this copy, and ``convert`` checks that the copy and the
    fitted estimator agree exactly on the parity rows.
    """
    if not any(_has_trees(part) for _, part in components(estimator)):
        return estimator
    copied = copy.deepcopy(estimator)
    for _, part in components(copied):
        _round_thresholds(part)
    return copied


def _forest_trees(estimator: Any) -> list[Any] | None:
    """The trees of the one forest or lone tree in ``estimator``, in skl2onnx's tree order
    (None when there are several, or boosting, whose graphs number trees otherwise)."""
    parts = [part for _, part in components(estimator)]
    forests = [
        p for p in parts
        if isinstance(getattr(p, "estimators_", None), list)
        and all(getattr(t, "tree_", None) is not None for t in p.estimators_)
    ]  # fmt: skip
    if forests:
        return list(forests[0].estimators_) if len(forests) == 1 else None
    trees = [p for p in parts if getattr(p, "tree_", None) is not None]
    return trees if len(trees) == 1 else None


def learned_missing_directions(model: Any, estimator: Any) -> None:
    """Send NaN where scikit-learn sends it: a tree fitted on data with NaN learns per split
    which side missing values go (``tree_.missing_go_to_left``); skl2onnx 1.20 writes other
    directions on some splits (4 of 48 labels differed on a tree fitted with 5% NaN). The
    graph's ``nodes_missing_value_tracks_true`` is rewritten from the fitted trees."""
    from onnx.helper import make_attribute

    nodes = [n for n in model.graph.node if n.op_type.startswith("TreeEnsemble")]
    trees = _forest_trees(estimator) if len(nodes) == 1 else None
    if trees is None or not all(hasattr(t.tree_, "missing_go_to_left") for t in trees):
        return
    attributes = {a.name: a for a in nodes[0].attribute}
    if "nodes_treeids" not in attributes or "nodes_nodeids" not in attributes:
        return
    ids = zip(attributes["nodes_treeids"].ints, attributes["nodes_nodeids"].ints, strict=True)
    learned = [int(trees[t].tree_.missing_go_to_left[n]) for t, n in ids]
    tracks = attributes.get("nodes_missing_value_tracks_true")
    if tracks is None:
        nodes[0].attribute.append(make_attribute("nodes_missing_value_tracks_true", learned))
    else:
        del tracks.ints[:]
        tracks.ints.extend(learned)
