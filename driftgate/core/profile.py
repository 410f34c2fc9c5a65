"""The reference profile of the training data (``reference.json``), and the binning rule.

Pure numpy: the gateway imports ``bin_index``, ``count_numeric``, ``count_categories`` and
the dataclasses from here, so serving and the converter bin values the same way.

Binning rule: ``bin = np.searchsorted(edges, x, side="right")``. Bin 0 holds values below the
training minimum (``edges[0]``); the last bin holds values above the training maximum
(``edges[-1]`` is the next float32 after the maximum, so the maximum itself falls in the last
interior bin). Interior edges are training quantiles rounded to float32 and deduplicated, so
edges are strictly increasing even on heavily tied data: a constant column ``v`` has edges
``[v, nextafter(v)]`` and three bins. Non-finite values (NaN, and +-Inf in the training data)
are never binned; they count as ``missing``. A column with no finite value has no edges and a
single bin.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

__all__ = [
    "CategoricalBins",
    "FeatureProfile",
    "NumericBins",
    "ReferenceProfile",
    "bin_index",
    "categorical_bins",
    "count_categories",
    "count_numeric",
    "numeric_bins",
    "quantile_edges",
]

SCHEMA_VERSION = 1


def bin_index(edges: npt.ArrayLike, x: npt.ArrayLike) -> npt.NDArray[np.intp]:
    """Bin of each value of ``x`` (0 .. len(edges)); mask NaN out first, it lands last."""
    return np.searchsorted(np.asarray(edges, dtype=np.float64), np.asarray(x), side="right")


def count_numeric(edges: npt.ArrayLike, x: npt.ArrayLike) -> tuple[npt.NDArray[np.int64], int]:
    """Counts per bin (len(edges)+1) of the finite values of ``x``, and the non-finite count."""
    values = np.asarray(x, dtype=np.float64).ravel()
    finite = np.isfinite(values)
    n_bins = len(np.asarray(edges)) + 1
    counts = np.bincount(bin_index(edges, values[finite]), minlength=n_bins).astype(np.int64)
    return counts, int(values.size - finite.sum())


def count_categories(
    categories: Sequence[str], x: npt.ArrayLike
) -> tuple[npt.NDArray[np.int64], int]:
    """Counts per category plus a last "other" bin, and the missing (empty/None) count."""
    index = {category: i for i, category in enumerate(categories)}
    other = len(categories)
    counts = np.zeros(len(categories) + 1, dtype=np.int64)
    missing = 0
    for value in np.asarray(x, dtype=object).ravel():
        if value is None or value == "":
            missing += 1
        else:
            counts[index.get(str(value), other)] += 1
    return counts, missing


def quantile_edges(values: npt.ArrayLike, bins: int = 10) -> npt.NDArray[np.float64]:
    """Frozen bin edges of the finite values: [min, interior quantiles, nextafter32(max)]."""
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    data = np.asarray(values, dtype=np.float64).ravel()
    finite = data[np.isfinite(data)].astype(np.float32)
    if finite.size == 0:
        return np.empty(0, dtype=np.float64)
    low, high = finite.min(), finite.max()
    with np.errstate(over="ignore"):  # the largest float32 is closed by +inf
        top = np.nextafter(high, np.float32(np.inf))
    interior = np.quantile(finite.astype(np.float64), np.linspace(0.0, 1.0, bins + 1)[1:-1])
    candidates = np.concatenate([[low], interior.astype(np.float32), [top]]).astype(np.float32)
    # Quantiles of tied data coincide: np.unique sorts and keeps one of each.
    return np.unique(candidates).astype(np.float64)


@dataclass(frozen=True)
class NumericBins:
    """Frozen bins of a numeric value and its training statistics (None when no finite value)."""

    edges: tuple[float, ...]
    counts: tuple[int, ...]
    missing: int
    mean: float | None
    std: float | None
    min: float | None
    max: float | None
    missing_rate: float
    kind: ClassVar[str] = "numeric"

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "edges": list(self.edges),
            "counts": list(self.counts),
            "missing": self.missing,
            "mean": self.mean,
            "std": self.std,
            "min": self.min,
            "max": self.max,
            "missing_rate": self.missing_rate,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NumericBins:
        return cls(
            edges=tuple(float(e) for e in data["edges"]),
            counts=tuple(int(c) for c in data["counts"]),
            missing=int(data["missing"]),
            mean=data.get("mean"),
            std=data.get("std"),
            min=data.get("min"),
            max=data.get("max"),
            missing_rate=float(data.get("missing_rate", 0.0)),
        )


@dataclass(frozen=True)
class CategoricalBins:
    """Category list with training counts; ``counts`` has a last "other" bin."""

    categories: tuple[str, ...]
    counts: tuple[int, ...]
    missing: int
    missing_rate: float
    kind: ClassVar[str] = "categorical"

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "categories": list(self.categories),
            "counts": list(self.counts),
            "missing": self.missing,
            "missing_rate": self.missing_rate,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CategoricalBins:
        return cls(
            categories=tuple(str(c) for c in data["categories"]),
            counts=tuple(int(c) for c in data["counts"]),
            missing=int(data["missing"]),
            missing_rate=float(data.get("missing_rate", 0.0)),
        )


Bins = NumericBins | CategoricalBins


def _bins_from_dict(data: dict[str, Any]) -> Bins:
    if data["kind"] == "numeric":
        return NumericBins.from_dict(data)
    if data["kind"] == "categorical":
        return CategoricalBins.from_dict(data)
    raise ValueError(f"unknown profile kind {data['kind']!r}")


def numeric_bins(values: npt.ArrayLike, bins: int = 10) -> NumericBins:
    """Profile a numeric column: frozen edges, counts, moments and missing rate."""
    data = np.asarray(values, dtype=np.float64).ravel()
    edges = quantile_edges(data, bins)
    counts, missing = count_numeric(edges, data)
    finite = data[np.isfinite(data)]
    has = finite.size > 0
    return NumericBins(
        edges=tuple(float(e) for e in edges),
        counts=tuple(int(c) for c in counts),
        missing=missing,
        mean=float(finite.mean()) if has else None,
        std=float(finite.std()) if has else None,
        min=float(finite.min()) if has else None,
        max=float(finite.max()) if has else None,
        missing_rate=missing / data.size if data.size else 0.0,
    )


def categorical_bins(
    values: npt.ArrayLike, max_categories: int = 100, categories: Sequence[str] | None = None
) -> CategoricalBins:
    """Profile a string column: the most frequent categories (or the given ones) + "other"."""
    data = np.asarray(values, dtype=object).ravel()
    if categories is None:
        present = [str(v) for v in data if v is not None and v != ""]
        names, freq = np.unique(np.asarray(present, dtype=str), return_counts=True)
        # Most frequent first, ties by name, so the list is deterministic.
        order = sorted(range(len(names)), key=lambda i: (-int(freq[i]), str(names[i])))
        categories = [str(names[i]) for i in order[:max_categories]]
    counts, missing = count_categories(categories, data)
    return CategoricalBins(
        categories=tuple(categories),
        counts=tuple(int(c) for c in counts),
        missing=missing,
        missing_rate=missing / data.size if data.size else 0.0,
    )


@dataclass(frozen=True)
class FeatureProfile:
    """One feature: where it arrives (input name, column within its last dimension) and bins."""

    name: str
    input: str
    column: int
    bins: Bins

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "input": self.input, "column": self.column} | (
            self.bins.to_dict()
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureProfile:
        return cls(
            name=str(data["name"]),
            input=str(data["input"]),
            column=int(data["column"]),
            bins=_bins_from_dict(data),
        )


@dataclass(frozen=True)
class ReferenceProfile:
    """The whole ``reference.json``: features and the model's own prediction distribution."""

    rows: int
    features: tuple[FeatureProfile, ...]
    prediction: Bins | None
    version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "rows": self.rows,
            "features": [f.to_dict() for f in self.features],
            "prediction": None if self.prediction is None else self.prediction.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ReferenceProfile:
        prediction = data.get("prediction")
        return cls(
            rows=int(data["rows"]),
            features=tuple(FeatureProfile.from_dict(f) for f in data["features"]),
            prediction=None if prediction is None else _bins_from_dict(prediction),
            version=int(data.get("version", SCHEMA_VERSION)),
        )
