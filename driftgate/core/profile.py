"""The reference profile of the training data (``reference.json``), and the binning rules.

Pure numpy, and the one binning implementation: the converter profiles training data with
``numeric_bins``/``categorical_bins`` and the gateway counts served values with
``numeric_counts``/``category_codes`` (through ``count_numeric``/``count_categories`` offline),
so training and serving bin the same values identically (DESIGN, invariant 8).

Numeric rule. Values are first cast to the dtype the model serves (``NumericBins.dtype``,
float32 for an FP32 input: what a request carries), on both sides, before edges are computed
and before anything is counted; non-finite values after the cast (NaN, +-Inf, and float64
values beyond the float32 range) are never binned. Then
``bin = np.searchsorted(edges, x, side="right")``: bin ``i`` holds ``edges[i-1] <= x <
edges[i]``. Edges are values of the cast training data, so they are exactly representable in
the served dtype and a value equal to an edge lands in the same bin on both sides:

- ``edges[0]`` is the training minimum, so no training value is "below minimum" (bin 0);
- a column with at most ``bins`` distinct values gets one edge per value (each value its own
  bin: integers, flags, decimals with ties); otherwise the interior edges are the empirical
  quantiles (``method="inverted_cdf"``, always a training value) at ``1/bins .. (bins-1)/bins``,
  ties collapsed, so every interior bin holds at least its own edge;
- ``edges[-1]`` is the next representable value after the training maximum, so the maximum
  falls in the last interior bin and the last bin holds only values above it.

A constant column ``v`` has edges ``[v, nextafter(v)]`` and three bins; a column with no finite
value has no edges and one bin.

Categorical rule. A value is read as its string (``category_text``: a ``str`` as is, anything
else through ``str()``, so None and NaN read "None" and "nan", as numpy's ``astype(str)`` spells
them); the strings in ``MISSING_CATEGORIES`` ("", "None", "nan") are missing, on both sides,
never a category. Everything else is a category by exact string match, or "other".

Compatibility. Profiles written before schema version 2 have no ``dtype`` (they were binned
against float32 edges and are read as float32) and their training counts came from the float64
values: they still load and serve, but only a profile written by this version has counts that
match the gateway's bin for bin; convert again to get one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

__all__ = [
    "MISSING_CATEGORIES",
    "SERVED_DTYPE",
    "MISSING_CODE",
    "MIN_CATEGORY_COUNT",
    "CategoricalBins",
    "CategoryIndex",
    "FeatureProfile",
    "NumericBins",
    "NumericCounts",
    "ReferenceProfile",
    "as_served",
    "bin_index",
    "categorical_bins",
    "category_codes",
    "category_text",
    "count_categories",
    "count_numeric",
    "is_missing_category",
    "numeric_bins",
    "numeric_counts",
    "quantile_edges",
]

SCHEMA_VERSION = 2
#: the dtype numeric values are binned in when a profile does not say (FP32 inputs)
SERVED_DTYPE = "float32"
#: categorical values (as ``category_text`` reads them) that count as missing, never a category
MISSING_CATEGORIES = frozenset({"", "None", "nan"})
#: the code ``category_codes`` gives a missing value
MISSING_CODE = -1
#: training rows a category needs to keep its own bin when a column has more distinct
#: values than ``max_categories`` (see ``categorical_bins``)
MIN_CATEGORY_COUNT = 30


def as_served(values: npt.ArrayLike, dtype: npt.DTypeLike = SERVED_DTYPE) -> npt.NDArray[Any]:
    """``values`` flattened and cast to the served floating ``dtype`` (overflow gives +-Inf)."""
    target = np.dtype(dtype)
    if target.kind != "f":
        raise ValueError(f"numeric features are binned in a floating dtype, not {target}")
    array = np.asarray(values)
    if array.dtype.kind not in "biuf":
        array = array.astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        return array.ravel().astype(target, copy=False)


def bin_index(edges: npt.ArrayLike, x: npt.ArrayLike) -> npt.NDArray[np.intp]:
    """Bin of each value of ``x`` (0 .. len(edges)); mask NaN out first, it lands last.

    ``x`` must already be in the served dtype (``as_served``); the comparison is exact (the
    served values and the edges are both exactly float64).
    """
    return np.searchsorted(np.asarray(edges, dtype=np.float64), np.asarray(x), side="right")


@dataclass(frozen=True)
class NumericCounts:
    """Counts per bin (len(edges) + 1) of the finite served values, and the NaN and Inf counts."""

    counts: npt.NDArray[np.int64]
    nan: int
    inf: int


def numeric_counts(
    edges: npt.ArrayLike, x: npt.ArrayLike, dtype: npt.DTypeLike = SERVED_DTYPE
) -> NumericCounts:
    """Bin ``x`` as served (cast to ``dtype``): counts per bin, NaN and +-Inf counts."""
    values = as_served(x, dtype)
    finite = np.isfinite(values)
    n_finite = int(finite.sum())
    nan = int(np.isnan(values).sum()) if n_finite < values.size else 0
    n_bins = len(np.asarray(edges)) + 1
    data = values if n_finite == values.size else values[finite]
    counts = np.bincount(bin_index(edges, data), minlength=n_bins).astype(np.int64)
    return NumericCounts(counts, nan, values.size - n_finite - nan)


def count_numeric(
    edges: npt.ArrayLike, x: npt.ArrayLike, dtype: npt.DTypeLike = SERVED_DTYPE
) -> tuple[npt.NDArray[np.int64], int]:
    """Counts per bin (len(edges)+1) of the finite served values of ``x``, and the non-finite
    count (NaN and Inf after the cast to ``dtype``)."""
    result = numeric_counts(edges, x, dtype)
    return result.counts, result.nan + result.inf


def category_text(value: Any) -> str:
    """A categorical value as the string it is matched by (None -> "None", NaN -> "nan")."""
    return value if type(value) is str else str(value)


def is_missing_category(value: Any) -> bool:
    """Whether a categorical value counts as missing (its text is in ``MISSING_CATEGORIES``)."""
    return category_text(value) in MISSING_CATEGORIES


class CategoryIndex:
    """Categorical value -> bin: the category's index, ``other`` (``len(categories)``) for
    anything else, ``MISSING_CODE`` for a missing value. Built once, applied per batch.

    A value longer than ``max_chars`` is "other" without being hashed or copied. Non-object
    arrays (numbers, booleans, fixed-width strings) are read through ``astype(str)``.
    """

    def __init__(self, categories: Sequence[Any], max_chars: int | None = None) -> None:
        index: dict[str, int] = {}
        for position, category in enumerate(categories):
            index.setdefault(category_text(category), position)
        for text in MISSING_CATEGORIES:
            index[text] = MISSING_CODE
        self._index = index
        self._limit = math.inf if max_chars is None else max_chars
        self.other = len(categories)

    def __call__(self, values: npt.ArrayLike) -> npt.NDArray[np.intp]:
        array = np.asarray(values)
        flat = (array if array.dtype == object else array.astype(str)).ravel()
        get, other, limit = self._index.get, self.other, self._limit
        return np.fromiter(
            (
                get(text, other) if len(text) <= limit else other
                for text in map(category_text, flat)
            ),
            dtype=np.intp,
            count=len(flat),
        )


def category_codes(categories: Sequence[Any], values: npt.ArrayLike) -> npt.NDArray[np.intp]:
    """Each value's bin under ``categories`` (see ``CategoryIndex``)."""
    return CategoryIndex(categories)(values)


def count_categories(
    categories: Sequence[str], x: npt.ArrayLike
) -> tuple[npt.NDArray[np.int64], int]:
    """Counts per category plus a last "other" bin, and the missing count."""
    codes = category_codes(categories, x)
    present = codes != MISSING_CODE
    counts = np.bincount(codes[present], minlength=len(categories) + 1).astype(np.int64)
    return counts, int(codes.size - int(present.sum()))


def quantile_edges(
    values: npt.ArrayLike, bins: int = 10, dtype: npt.DTypeLike = SERVED_DTYPE
) -> npt.NDArray[np.float64]:
    """Frozen bin edges of the finite served values (see the module docstring)."""
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    served = as_served(values, dtype)
    finite = served[np.isfinite(served)]
    if finite.size == 0:
        return np.empty(0, dtype=np.float64)
    distinct = np.unique(finite)
    low, high = distinct[0], distinct[-1]
    with np.errstate(over="ignore"):  # the largest finite value is closed by +inf
        top = np.nextafter(high, high.dtype.type(np.inf))
    if distinct.size <= bins:
        interior = distinct
    else:
        quantiles = np.linspace(0.0, 1.0, bins + 1)[1:-1]
        interior = np.quantile(finite, quantiles, method="inverted_cdf").astype(finite.dtype)
    # Quantiles of tied data coincide: np.unique sorts and keeps one of each.
    candidates = np.concatenate([[low], interior, [top]]).astype(finite.dtype)
    return np.unique(candidates).astype(np.float64)


@dataclass(frozen=True)
class NumericBins:
    """Frozen bins of a numeric value and its training statistics (None when no finite value).

    ``dtype`` is the dtype the values were binned in, and that served values are cast to
    before they are counted; the statistics are of the values in that dtype.
    """

    edges: tuple[float, ...]
    counts: tuple[int, ...]
    missing: int
    mean: float | None
    std: float | None
    min: float | None
    max: float | None
    missing_rate: float
    dtype: str = SERVED_DTYPE
    kind: ClassVar[str] = "numeric"

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "dtype": self.dtype,
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
            # Profiles before schema 2 have no dtype: their edges are float32 values.
            dtype=str(data.get("dtype") or SERVED_DTYPE),
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


def numeric_bins(
    values: npt.ArrayLike, bins: int = 10, dtype: npt.DTypeLike = SERVED_DTYPE
) -> NumericBins:
    """Profile a numeric column as served in ``dtype``: edges, counts, moments, missing rate."""
    served = as_served(values, dtype)
    edges = quantile_edges(served, bins, served.dtype)
    counts, missing = count_numeric(edges, served, served.dtype)
    finite = served[np.isfinite(served)].astype(np.float64)
    has = finite.size > 0
    return NumericBins(
        edges=tuple(float(e) for e in edges),
        counts=tuple(int(c) for c in counts),
        missing=missing,
        mean=float(finite.mean()) if has else None,
        std=float(finite.std()) if has else None,
        min=float(finite.min()) if has else None,
        max=float(finite.max()) if has else None,
        missing_rate=missing / served.size if served.size else 0.0,
        dtype=served.dtype.name,
    )


def categorical_bins(
    values: npt.ArrayLike,
    max_categories: int = 100,
    categories: Sequence[str] | None = None,
    min_count: int = MIN_CATEGORY_COUNT,
) -> CategoricalBins:
    """Profile a string column: the most frequent categories (or the given ones) + "other".

    A column with more distinct values than ``max_categories`` (high cardinality: ids, zip
    codes, free text) keeps at most ``max_categories`` of them, each with at least
    ``min_count`` (``MIN_CATEGORY_COUNT``) training rows; every other value counts in
    "other", whose share the monitor tests like any bin (and as the out-of-range rate).

    Missing values (``is_missing_category``) are counted apart and never become a category.
    """
    data = np.asarray(values, dtype=object).ravel()
    if categories is None:
        texts = (category_text(v) for v in data)
        present = [t for t in texts if t not in MISSING_CATEGORIES]
        names, freq = np.unique(np.asarray(present, dtype=str), return_counts=True)
        # Most frequent first, ties by name, so the list is deterministic.
        order = sorted(range(len(names)), key=lambda i: (-int(freq[i]), str(names[i])))
        if len(order) > max_categories:
            # Keeping the most frequent selects categories whose training counts are high
            # partly by chance: near the cut they are inflated (the winner's curse), and
            # undrifted traffic then "drifts" (measured: 35% of 200k-row windows of a
            # 200-category column profiled on 10k rows). A category kept from a truncated
            # list needs MIN_CATEGORY_COUNT rows, where that bias is small (0 of 60).
            order = [i for i in order[:max_categories] if freq[i] >= min_count]
        categories = [str(names[i]) for i in order]
    counts, missing = count_categories(categories, data)
    return CategoricalBins(
        categories=tuple(categories),
        counts=tuple(int(c) for c in counts),
        missing=missing,
        missing_rate=missing / data.size if data.size else 0.0,
    )


@dataclass(frozen=True)
class FeatureProfile:
    """One feature: where it arrives (input name, column within its last dimension) and bins.

    A feature ``derived`` from a text column (``driftgate.core.text``: "tokens", "chars",
    "oov") bins a measure of each document of that column, not the value itself; ``text``
    holds the analyzer (and for "oov" the vocabulary) the measure needs. Derived features are
    counted and tested like any numeric feature, and never carried in prediction records
    (the column itself is, as its categorical feature)."""

    name: str
    input: str
    column: int
    bins: Bins
    derived: str | None = None
    text: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        extra = {} if self.derived is None else {"derived": self.derived, "text": self.text}
        return {"name": self.name, "input": self.input, "column": self.column} | (
            self.bins.to_dict() | extra
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureProfile:
        derived = data.get("derived")
        return cls(
            name=str(data["name"]),
            input=str(data["input"]),
            column=int(data["column"]),
            bins=_bins_from_dict(data),
            derived=None if derived is None else str(derived),
            text=data.get("text") if derived is not None else None,
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
            version=int(data.get("version", 1)),
        )
