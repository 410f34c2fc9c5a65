"""Training data: loading CSV, Parquet and ``.npz`` files into a column table.

A ``Table`` holds named columns, each either numeric (float64, NaN for missing) or string
(an object array of ``str``, ``""`` for missing: a BYTES request carries an empty string
too), and optionally the target labels. Parquet needs ``pyarrow`` (the ``parquet`` extra).

``.npz`` files come in two shapes: ``X`` (2-D numeric) with optional ``y`` and
``feature_names``; or the column format written by ``save_table_npz`` (``names`` and
``c0``, ``c1``, ... with optional ``y``), which stores strings as unicode arrays so loading
never needs pickle.
"""

from __future__ import annotations

import csv
import hashlib
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from driftgate.core.errors import InvalidInput

__all__ = ["Table", "load_table", "save_table_npz", "table_from_object"]

Column = npt.NDArray[Any]


@dataclass(frozen=True)
class Table:
    """Named columns (float64 or object arrays of str) and optional target labels."""

    names: tuple[str, ...]
    columns: tuple[Column, ...]
    target: Column | None = None
    target_name: str | None = None

    @property
    def rows(self) -> int:
        return len(self.columns[0]) if self.columns else 0

    def is_numeric(self, name: str) -> bool:
        return bool(self.column(name).dtype.kind == "f")

    def column(self, name: str) -> Column:
        return self.columns[self.names.index(name)]

    def take(self, rows: npt.NDArray[np.intp]) -> Table:
        target = None if self.target is None else self.target[rows]
        return replace(self, columns=tuple(c[rows] for c in self.columns), target=target)

    def select(self, names: Sequence[str]) -> Table:
        """The given columns, in that order; InvalidInput naming any that are absent."""
        absent = [n for n in names if n not in self.names]
        if absent:
            raise InvalidInput(f"the data has no column(s) {absent}; it has {list(self.names)}")
        return replace(self, names=tuple(names), columns=tuple(self.column(n) for n in names))

    def fingerprint(self) -> str:
        """sha256 of the canonical data: names, kinds, float64 LE values, UTF-8 strings."""
        digest = hashlib.sha256()
        for name, column in zip(self.names, self.columns, strict=True):
            _hash_column(digest, name, column)
        if self.target is not None:
            _hash_column(digest, f"target:{self.target_name}", self.target)
        return digest.hexdigest()


def _hash_column(digest: Any, name: str, column: Column) -> None:
    digest.update(name.encode("utf-8") + b"\x00")
    if column.dtype.kind in "biuf":
        values = np.where(np.isnan(column.astype(np.float64)), np.nan, column)
        digest.update(b"f" + np.ascontiguousarray(values, dtype="<f8").tobytes())
    else:
        digest.update(b"s" + "\x00".join(str(v) for v in column).encode("utf-8"))


def _is_missing(value: Any) -> bool:
    return value is None or value == "" or (isinstance(value, float) and math.isnan(value))


def _string_column(values: Iterable[Any]) -> Column:
    return np.array(["" if _is_missing(v) else str(v) for v in values], dtype=object)


def _parse_floats(cells: Sequence[str]) -> Column | None:
    try:
        return np.array([float(c) if c.strip() else np.nan for c in cells], dtype=np.float64)
    except ValueError:
        return None


def _parse_labels(cells: Iterable[Any]) -> Column:
    """Labels as int64 when all are integers, float64 when all are numbers, else str."""
    texts = [str(c) for c in cells]
    try:
        return np.array([int(t) for t in texts], dtype=np.int64)
    except ValueError:
        pass
    floats = _parse_floats(texts)
    return floats if floats is not None else np.array(texts, dtype=object)


def _split_target(names: list[str], cells: list[Column], target: str | None) -> Table:
    if target is None:
        return Table(tuple(names), tuple(cells))
    if target not in names:
        raise InvalidInput(f"target column {target!r} is not in the data; it has {names}")
    index = names.index(target)
    labels = cells[index] if cells[index].dtype.kind in "biu" else _parse_labels(cells[index])
    rest = [i for i in range(len(names)) if i != index]
    return Table(
        tuple(names[i] for i in rest), tuple(cells[i] for i in rest), labels, target_name=target
    )


def _load_csv(path: Path, target: str | None) -> Table:
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    if not rows:
        raise InvalidInput(f"{path}: empty CSV file, expected a header row")
    header, body = rows[0], rows[1:]
    if any(len(row) != len(header) for row in body):
        raise InvalidInput(f"{path}: every row must have {len(header)} fields like the header")
    raw = [[row[i] for row in body] for i in range(len(header))]
    columns: list[Column] = []
    for name, cells in zip(header, raw, strict=True):
        parsed = cells if name == target else _parse_floats(cells)
        columns.append(parsed if isinstance(parsed, np.ndarray) else _string_column(cells))
    return _split_target(header, columns, target)


def _load_parquet(path: Path, target: str | None) -> Table:
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise InvalidInput(
            f"{path}: reading Parquet needs pyarrow (pip install 'driftgate[parquet]')"
        ) from exc
    arrow = pq.read_table(path)
    columns: list[Column] = []
    for name in arrow.column_names:
        values = arrow.column(name).to_pylist()
        numeric = all(isinstance(v, int | float) or v is None for v in values)
        if name == target:
            columns.append(_parse_labels(values))
        elif numeric:
            columns.append(np.array([np.nan if v is None else v for v in values], np.float64))
        else:
            columns.append(_string_column(values))
    return _split_target(list(arrow.column_names), columns, target)


def _load_npz(path: Path, target: str | None) -> Table:
    with np.load(path, allow_pickle=False) as archive:
        files = dict(archive.items())
    labels_key = target or "y"
    labels = files.get(labels_key)
    if target is not None and labels is None:
        raise InvalidInput(f"{path}: no array {target!r} for the target in the .npz file")
    if "X" in files:
        matrix = np.asarray(files["X"], dtype=np.float64)
        if matrix.ndim != 2:
            raise InvalidInput(f"{path}: X must be 2-D, got shape {matrix.shape}")
        default = [f"x{i}" for i in range(matrix.shape[1])]
        names = [str(n) for n in files.get("feature_names", default)]
        columns = [matrix[:, i] for i in range(matrix.shape[1])]
    elif "names" in files:
        names = [str(n) for n in files["names"]]
        columns = [_from_stored(files[f"c{i}"]) for i in range(len(names))]
    else:
        raise InvalidInput(f"{path}: a .npz needs an 'X' array (or 'names' and 'c0', 'c1', ...)")
    return Table(tuple(names), tuple(columns), labels, labels_key if labels is not None else None)


def _from_stored(array: Column) -> Column:
    return array.astype(np.float64) if array.dtype.kind in "biuf" else _string_column(array)


def load_table(path: str | Path, target: str | None = None) -> Table:
    """Load training data by file suffix: ``.csv``, ``.parquet``/``.pq`` or ``.npz``."""
    path = Path(path)
    loaders = {".csv": _load_csv, ".parquet": _load_parquet, ".pq": _load_parquet}
    loader = loaders.get(path.suffix.lower(), _load_npz if path.suffix == ".npz" else None)
    if loader is None:
        raise InvalidInput(f"{path}: unknown data format, expected .csv, .parquet or .npz")
    try:
        table = loader(path, target)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"{path}: cannot read the data: {exc}") from exc
    if table.rows == 0:
        raise InvalidInput(f"{path}: the data has no rows")
    return table


def save_table_npz(table: Table, path: Path) -> None:
    """Write ``table`` in the column ``.npz`` format (unicode strings, no pickle needed)."""
    arrays: dict[str, Any] = {"names": np.array(table.names, dtype=str)}
    for i, column in enumerate(table.columns):
        arrays[f"c{i}"] = column if column.dtype.kind == "f" else column.astype(str)
    if table.target is not None:
        target = table.target
        arrays["y"] = target if target.dtype.kind in "biuf" else target.astype(str)
    with open(path, "wb") as handle:
        np.savez_compressed(handle, **arrays)


def table_from_object(data: Any, labels: Any = None) -> Table:
    """A Table from a 2-D array-like or a pandas DataFrame (duck-typed), with labels."""
    target = None if labels is None else np.asarray(labels)
    if hasattr(data, "columns") and hasattr(data, "dtypes"):
        names = [str(c) for c in data.columns]
        columns = [_frame_column(data[c]) for c in data.columns]
    else:
        matrix = np.asarray(data)
        if matrix.ndim != 2:
            raise InvalidInput(f"the data must be 2-D, got shape {matrix.shape}")
        names = [f"x{i}" for i in range(matrix.shape[1])]
        columns = [_array_column(matrix[:, i]) for i in range(matrix.shape[1])]
    if target is not None and len(target) != len(columns[0]):
        raise InvalidInput(f"{len(target)} labels for {len(columns[0])} rows of data")
    return Table(tuple(names), tuple(columns), target, None)


def _array_column(values: Column) -> Column:
    if values.dtype.kind in "biuf":
        return values.astype(np.float64)
    floats = _parse_floats([str(v) if not _is_missing(v) else "" for v in values])
    return floats if floats is not None else _string_column(values)


def _frame_column(series: Any) -> Column:
    if series.dtype.kind in "biuf":
        return np.asarray(series.to_numpy(dtype=np.float64, na_value=np.nan))
    return _string_column(series.tolist())
