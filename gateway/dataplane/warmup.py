"""Warm-up rows for a new version, drawn from its reference profile.

Rows that look like the training data exercise the same tree paths and string lookups that
production traffic will, so the first real request does not pay for cold caches. A version
without a profile (a Triton-style directory) is warmed with zeros and empty strings.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from driftgate.gateway.dataplane.session import TensorSpec

__all__ = ["warmup_feeds"]


def _numeric_column(feature: Mapping[str, Any], rows: int, rng: np.random.Generator) -> np.ndarray:
    edges = np.asarray(feature["edges"], dtype=np.float64)
    interior = np.asarray(feature["counts"][1:-1], dtype=np.float64)
    if len(edges) < 2 or interior.sum() <= 0:
        return np.full(rows, float(edges[0]) if len(edges) else 0.0)
    bins = rng.choice(len(interior), size=rows, p=interior / interior.sum())
    return rng.uniform(edges[bins], edges[bins + 1])


def _categorical_column(
    feature: Mapping[str, Any], rows: int, rng: np.random.Generator
) -> np.ndarray:
    categories = list(feature["categories"]) or [""]
    counts = np.asarray(feature["counts"][: len(categories)], dtype=np.float64)
    p = counts / counts.sum() if counts.sum() > 0 else None
    picked = rng.choice(len(categories), size=rows, p=p)
    return np.array([str(categories[i]) for i in picked], dtype=object)


def _blank(spec: TensorSpec, rows: int) -> np.ndarray:
    shape = (rows, *[d if d > 0 else 1 for d in spec.shape])
    if spec.datatype == "BYTES":
        return np.full(shape, "", dtype=object)
    return np.zeros(shape, dtype=spec.dtype)


def warmup_feeds(
    inputs: Sequence[TensorSpec],
    reference: Mapping[str, Any] | None,
    rows: int = 32,
    seed: int = 0,
) -> list[dict[str, np.ndarray]]:
    """``rows`` one-row feeds for ``inputs``, sampled from the profile where it covers them."""
    rng = np.random.default_rng(seed)
    batch = {spec.name: _blank(spec, rows) for spec in inputs}
    for feature in (reference or {}).get("features", []):
        target = batch.get(feature.get("input", ""))
        if target is None or target.ndim != 2 or feature.get("column", 0) >= target.shape[1]:
            continue
        if feature.get("kind") == "categorical":
            values = _categorical_column(feature, rows, rng)
        else:
            values = _numeric_column(feature, rows, rng)
        target[:, feature["column"]] = values.astype(target.dtype)
    return [{name: array[i : i + 1] for name, array in batch.items()} for i in range(rows)]
